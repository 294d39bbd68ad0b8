# SPDX-License-Identifier: MIT
"""The connection to memguardd and the directives applied to Python.

One :class:`Client` per process, run by a daemon thread.  It follows the C
library's rules (client/conn.c, client/client.c): reconnect with backoff
from 0.1 s doubling to 0.8 s with jitter while no daemon answers, 5 s
after a refusal the same HELLO would meet again; the state of a directive
held for 10 s without a daemon, then back to NORMAL; one RELEASED per
DIRECTIVE that demands bytes; a fork() child registers as itself on a
connection of its own.  Nothing here raises into the application: every
problem goes to ``logging.getLogger("memguard")`` and, when it concerns
the connection, leads to a reconnect.
"""
import gc
import logging
import os
import random
import select
import socket
import sys
import threading
import time

from . import admission, memory, protocol

log = logging.getLogger("memguard")

DEFAULT_SOCKET = "/run/memguard/memguardd.sock"
BACKOFF_MIN = 0.1          # s, first reconnect delay
BACKOFF_MAX = 0.8          # s, longest reconnect delay while no daemon answers
REFUSED_DELAY = 5.0        # s, after a refusal that would repeat
HELLO_TIMEOUT = 5.0        # s a WELCOME may take
REPORT_DEFAULT = 1.0       # s, until WELCOME says otherwise
REPORT_MIN = 0.01          # s, floor on the daemon's interval
REPORT_MAX = 60.0          # s, ceiling on the daemon's interval
ORPHAN_GRACE = 10.0        # s a directive outlives its daemon
RECV_BATCH = 32            # datagrams handled per round
FORK_WAIT = 2.0            # s fork() waits for a round in progress
OUT_SLOTS = 8              # datagrams queued while the socket is full

# Refusals that come back for the same HELLO: wait the longest.
_GIVE_UP = (protocol.ERR_VERSION, protocol.ERR_SERVICE, protocol.ERR_PERMISSION,
            protocol.ERR_NO_SERVICE)

IDLE, HELLO, READY = "idle", "hello", "ready"


class Hooks:
    """The application's callbacks; shared by every client of the process
    and settable before :func:`memguard.start`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.release = []
        self.level = []
        self.new_level = []      # level hooks not yet told the level in force
        self.external = None

    def snapshot(self):
        """(release hooks, level hooks, external callback), copied under the lock."""
        with self.lock:
            return list(self.release), list(self.level), self.external

    def adopt_new_level(self):
        """The level hooks added since the last call, now among the others."""
        with self.lock:
            new, self.new_level = self.new_level, []
            self.level.extend(new)
        return new


hooks = Hooks()


def _tell_level(fns, level):
    for fn in fns:
        try:
            fn(level)
        except Exception:
            log.exception("memguard level hook %r failed", fn)


class GCTuner:
    """Scales the collector's thresholds from the program's own by a GC
    percent (like Go's GOGC: 100 = the program's thresholds, 50 = collect
    twice as often), and puts the program's own back at 0."""

    def __init__(self):
        self.percent = 0
        self.original = None

    def apply(self, percent):
        """Set the thresholds for `percent` (0: the program's own)."""
        if percent == self.percent:
            return
        if self.percent == 0:
            # The program's thresholds as they are now, changes included.
            self.original = gc.get_threshold()
        if percent == 0:
            gc.set_threshold(*self.original)
        else:
            t0, t1, t2 = self.original
            # Threshold 0 means the program turned automatic collection off:
            # that stays so.
            gc.set_threshold(max(1, t0 * percent // 100) if t0 else 0,
                             max(1, t1 * percent // 100), max(1, t2 * percent // 100))
        self.percent = percent

    def restore(self):
        """The program's own thresholds again."""
        self.apply(0)


def _env(name):
    # As secure_getenv(): a set-id program is not pointed elsewhere by its caller.
    if os.getuid() != os.geteuid() or os.getgid() != os.getegid():
        return None
    return os.environ.get(name) or None


def _process_name():
    base = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    name = "".join(c if 0x20 <= ord(c) <= 0x7E else "_" for c in base)[:protocol.NAME_MAX]
    return name.encode("ascii") or b"python"


class BadEnvironment(ValueError):
    """$MEMGUARD_SOCKET or $MEMGUARD_SERVICE holds a value memguard cannot use."""


def _name(value, what, error=ValueError):
    try:
        b = value.encode("ascii", "strict") if isinstance(value, str) else bytes(value)
    except UnicodeEncodeError:
        b = b"\x80"
    if not protocol.is_name(b):
        raise error("%s must be at most 255 printable ASCII characters" % what)
    return b


def _socket_path(path, error=ValueError):
    if len(os.fsencode(path)) >= 108:
        raise error("socket path too long: %r" % path)
    return path


class Client:
    """A registration of this process with memguardd.  Use
    :func:`memguard.start` rather than this class.  Raises ValueError for
    a wrong argument, else :class:`BadEnvironment` for a wrong value from
    the environment."""

    def __init__(self, service=None, socket_path=None, process=None):
        # The arguments first: the caller's mistake is the caller's to
        # hear, whatever the environment holds.
        path = _socket_path(socket_path) if socket_path else None
        self.service = _name(service, "service") if service else b""
        self.process = _name(process, "process") if process else _process_name()
        if path is None:
            path = _socket_path(_env("MEMGUARD_SOCKET") or DEFAULT_SOCKET, BadEnvironment)
        self.socket_path = path
        if service is None and _env("MEMGUARD_SERVICE"):
            self.service = _name(_env("MEMGUARD_SERVICE"), "$MEMGUARD_SERVICE", BadEnvironment)
        self.alloc = memory.Allocator()
        self.gc = GCTuner()
        self._lock = threading.RLock()
        self._rng = random.Random()
        self._stop = False
        self._thread = None
        self._wake_r = self._wake_w = -1
        self._fork_locked = False
        self._init_connection_state()
        self.applied = protocol.NORMAL_DIRECTIVE
        self.released_total = 0
        self.client_id = 0
        self.budget = 0
        self.service_name = ""
        self.registrations = 0
        self.directives = 0

    def _init_connection_state(self):
        self._sock = None
        self._state = IDLE
        self._seq = 0
        self._hello_seq = 0
        self._out = []
        self._backoff = BACKOFF_MIN
        self._failures = 0
        self._refusals = 0
        self._next_connect = time.monotonic()
        self._hello_deadline = 0.0
        self._next_report = 0.0
        self._report_s = REPORT_DEFAULT
        self._orphan_at = None

    # ---- lifecycle --------------------------------------------------------

    def start(self):
        """Start the client's daemon thread; it connects at once."""
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.alloc.retire_preload_client()
        self._start_thread()

    def _start_thread(self):
        self._thread = threading.Thread(target=self._run, name="memguard", daemon=True)
        self._thread.start()

    def stop(self):
        """Say BYE, stop the thread, put the program's GC thresholds back
        and open admission."""
        self._stop = True
        self.wake()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(10)
        with self._lock:
            if self._sock is not None:
                # As conn_bye(): what was queued goes first, so the BYE
                # comes last, in order; best effort and without waiting.
                try:
                    while self._out:
                        self._sock.send(self._out[0], socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
                        self._out.pop(0)
                    seq = self._seq + 1 if self._seq < 2 ** 32 - 1 else 1
                    self._sock.send(protocol.encode_bye(seq),
                                    socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
                except OSError:
                    pass
                # Closing with unread datagrams resets the connection, and the
                # daemon would read that ahead of the BYE: shut the socket
                # (nothing more can arrive), take what is there, then close.
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                    while self._sock.recv(protocol.MSG_MAX, socket.MSG_DONTWAIT):
                        pass
                except OSError:
                    pass
                self._sock.close()
                self._sock = None
            self._state = IDLE
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
            self.gc.restore()
            admission.set_throttle(0)
            self.alloc.set_goal(0)

    def wake(self):
        """Make the thread run a round now (e.g. after a hook changed)."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # fork(): the child must not touch the parent's conversation.
    def before_fork(self):
        """os.fork() is coming: wait for a round in progress to end, so the
        child finds the client between two rounds.  A round that does not
        end within FORK_WAIT (a hook waiting for something the forking
        thread holds) is not waited for: the child starts its client afresh
        anyway, and a deadlock would be worse."""
        self._fork_locked = self._lock.acquire(timeout=FORK_WAIT)
        if not self._fork_locked:
            log.warning("fork() while a memguard hook runs for over %.0f s; "
                        "not waiting for it", FORK_WAIT)

    def after_fork_parent(self):
        """The parent goes on as before."""
        if self._fork_locked:
            self._lock.release()

    def after_fork_child(self):
        """A new process: its own lock, pipe and connection, counters from
        zero; the directive in force holds through the grace period until
        the child's own registration replaces it."""
        self._lock = threading.RLock()
        if self._sock is not None:
            # Only this process's reference: no BYE, no shutdown().
            os.close(self._sock.detach())
            self._sock = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._init_connection_state()
        self._rng = random.Random()
        self.released_total = 0
        self.registrations = self.directives = 0
        admission.reset_after_fork()
        self._orphan(time.monotonic())
        if self._stop or self._thread is None:
            return
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._start_thread()

    # ---- the thread -------------------------------------------------------

    def _run(self):
        while not self._stop:
            try:
                with self._lock:
                    timeout = self._round()
                    sock, want_out = self._sock, bool(self._out)
            except Exception:
                # A bug of ours must not end the thread: start afresh.
                log.exception("memguard client failed; reconnecting")
                with self._lock:
                    self._drop("after an internal error", logging.DEBUG)
                timeout, sock, want_out = BACKOFF_MIN, None, False
            if self._stop:
                break
            try:
                p = select.poll()
                p.register(self._wake_r, select.POLLIN)
                if sock is not None:
                    p.register(sock, select.POLLIN | (select.POLLOUT if want_out else 0))
                p.poll(max(0, timeout) * 1000)
            except (OSError, ValueError):
                time.sleep(BACKOFF_MIN)

    def _round(self):
        """One round: messages, then timers; returns seconds to the next."""
        try:
            while os.read(self._wake_r, 512):
                pass
        except OSError:
            pass
        # A hook added above NORMAL learns the level now, not at the next
        # change (sync_hooks() in C).
        new = hooks.adopt_new_level()
        if new and self.applied.level != protocol.NORMAL:
            _tell_level(new, self.applied.level)
        if self._sock is not None and self._out:
            self._flush()
        n = 0
        while self._sock is not None and n < RECV_BATCH:
            try:
                data, _, flags, _ = self._sock.recvmsg(protocol.MSG_MAX, 0, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._drop("Failed to receive from memguardd: %s" % e.strerror, logging.INFO)
                break
            if not data:
                self._drop("memguardd closed the connection", logging.INFO)
                break
            if flags & socket.MSG_TRUNC:
                self._drop("memguardd sent a datagram over 4096 bytes", logging.WARNING)
                break
            n += 1
            try:
                m = protocol.decode(data)
            except protocol.MalformedError as e:
                self._drop("Malformed message from memguardd (%s)" % e, logging.WARNING)
                break
            self._handle(m)
        return self._timers()

    def _timers(self):
        now = time.monotonic()
        if self._state == IDLE and now >= self._next_connect:
            self._open()
        elif self._state == HELLO and now >= self._hello_deadline:
            self._drop("memguardd did not answer HELLO in time", logging.WARNING)
        elif self._state == READY and now >= self._next_report:
            self._report()
        if self._orphan_at is not None and self._state != READY and \
                time.monotonic() >= self._orphan_at:
            self._orphan_at = None
            log.warning("No memguardd for %d s: back to the program's own settings",
                        ORPHAN_GRACE)
            self._apply(protocol.NORMAL_DIRECTIVE, 0)
        nxt = {IDLE: self._next_connect, HELLO: self._hello_deadline,
               READY: self._next_report}[self._state]
        if self._orphan_at is not None and self._state != READY:
            nxt = min(nxt, self._orphan_at)
        return nxt - time.monotonic()

    # ---- the connection ---------------------------------------------------

    def _schedule(self, give_up):
        d = REFUSED_DELAY if give_up else self._backoff
        # "Equal jitter": somewhere in the second half of the nominal delay,
        # so clients that lost the same daemon do not come back together.
        self._next_connect = time.monotonic() + d / 2 + self._rng.uniform(0, d / 2)
        if not give_up:
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _open(self):
        if self._stop:
            return      # stop() from a hook: no new connection
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.setblocking(False)
        try:
            s.connect(self.socket_path)
        except OSError as e:
            s.close()
            # Once per outage; the retries are routine.
            log.log(logging.DEBUG if self._failures else logging.INFO,
                    "memguardd is not reachable at %s (%s); retrying with backoff",
                    self.socket_path, e.strerror or e)
            self._failures += 1
            self._schedule(False)
            return
        self._sock = s
        self._seq = 0
        self._out = []
        caps = protocol.CAP_ADMIT | protocol.CAP_GC_HOOK
        if hooks.release:
            caps |= protocol.CAP_RELEASE_HOOK
        if self.alloc.kind == "memguard":
            caps |= protocol.CAP_HEAP
        self._state = HELLO
        self._hello_deadline = time.monotonic() + HELLO_TIMEOUT
        self._hello_seq = self._send(lambda seq: protocol.encode_hello(
            seq, caps, self.service, self.process), "HELLO")

    def _drop(self, why, level, give_up=False):
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._out = []
        self._state = IDLE
        self._schedule(give_up)
        log.log(level, "%s; reconnecting in %d ms", why,
                max(0, (self._next_connect - time.monotonic()) * 1000))
        # Nobody is left to lift a throttle: admission opens now.
        admission.set_throttle(0)
        self._orphan(time.monotonic())

    def _orphan(self, now):
        a = self.applied
        if self._orphan_at is None and (a.level != protocol.NORMAL or a.gc_percent or
                                        a.soft_limit):
            self._orphan_at = now + ORPHAN_GRACE

    def _send(self, build, what):
        """Send one message numbered by the connection's counter; returns
        its seq, or 0 when it was not sent."""
        if self._sock is None:
            return 0
        self._seq = self._seq + 1 if self._seq < 2 ** 32 - 1 else 1
        data = build(self._seq)
        if not self._out:
            try:
                self._sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
                return self._seq
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                self._drop("Failed to send %s to memguardd: %s" % (what, e.strerror),
                           logging.INFO)
                return 0
        if len(self._out) >= OUT_SLOTS:
            if what == "REPORT":
                return 0        # the next one replaces it anyway
            self._drop("memguardd does not read its socket", logging.WARNING)
            return 0
        self._out.append(data)
        return self._seq

    def _flush(self):
        while self._sock is not None and self._out:
            try:
                self._sock.send(self._out[0], socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._drop("Failed to send to memguardd: %s" % e.strerror, logging.INFO)
                return
            self._out.pop(0)

    # ---- messages ---------------------------------------------------------

    def _handle(self, m):
        if m.type == protocol.WELCOME:
            if self._state != HELLO or m.seq != self._hello_seq:
                self._drop("Unexpected WELCOME from memguardd", logging.WARNING)
                return
            w = m.body
            self._state = READY
            self.client_id, self.budget, self.service_name = w.client_id, w.budget, w.service
            iv = w.report_interval_ms / 1000 if w.report_interval_ms else REPORT_DEFAULT
            self._report_s = min(max(iv, REPORT_MIN), REPORT_MAX)
            self._orphan_at = None
            self._refusals = self._failures = 0
            self._backoff = BACKOFF_MIN
            self.registrations += 1
            log.info("Registered with memguardd as client %d of service '%s' "
                     "(budget %d bytes)", w.client_id, w.service, w.budget)
            # The directive in force follows in a DIRECTIVE of its own; a
            # state held from the last connection stays until it comes, so
            # an unchanged state calls no hook twice.
            self._report()
        elif m.type == protocol.DIRECTIVE:
            if self._state != READY:
                self._drop("DIRECTIVE from memguardd before WELCOME", logging.WARNING)
                return
            self.directives += 1
            self._apply(m.body, m.seq)
        elif m.type == protocol.PING:
            self._send(lambda seq: protocol.encode_pong(seq, m.body), "PONG")
        elif m.type == protocol.ERROR:
            code, text = m.body
            text = "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in text)
            name = protocol.ERROR_NAMES.get(code, "unknown error")
            level = logging.DEBUG if self._refusals else logging.WARNING
            self._refusals += 1
            self._drop("memguardd refused this client (%s%s%s)" %
                       (name, ": " if text else "", text), level, code in _GIVE_UP)
        elif m.type == protocol.BYE:
            if m.body == protocol.BYE_SHUTDOWN:
                self._drop("memguardd is stopping", logging.INFO)
            else:
                self._drop("memguardd said BYE", logging.INFO)

    def _apply(self, d, seq):
        """Apply a directive: admission, the preload heap's goal, the GC
        thresholds (and a collection when the level rises), the level hooks,
        the release a DIRECTIVE demands with its RELEASED, and a REPORT."""
        t0 = time.monotonic()
        before = self.applied.level
        self.applied = d
        admission.set_throttle(d.throttle)
        self.alloc.set_goal(d.soft_limit)
        try:
            self.gc.apply(d.gc_percent)
        except (ValueError, TypeError) as e:
            log.warning("Cannot set the GC thresholds: %s", e)
        if d.level != before:
            log.log(logging.WARNING if d.level > before else logging.INFO,
                    "Level %s -> %s: gc %d%%, throttle %.1f%%, soft limit %d bytes",
                    protocol.LEVEL_NAMES[before], protocol.LEVEL_NAMES[d.level],
                    d.gc_percent, d.throttle / 10, d.soft_limit)
            if d.level > before:
                gc.collect()
            _tell_level(hooks.snapshot()[1], d.level)
        if seq and d.release > 0:
            freed = self._release(d.release)
            us = int((time.monotonic() - t0) * 1e6)
            if d.deadline_ms and us > d.deadline_ms * 1000:
                log.info("Release took %d ms, over the deadline of %d ms",
                         us // 1000, d.deadline_ms)
            self.released_total += freed
            if not self._send(lambda s: protocol.encode_released(s, seq, freed, us), "RELEASED"):
                return
        if self._state == READY:
            self._report()

    def _release(self, want):
        """The application's release hooks, the collector, then the C
        allocator; returns the bytes the resident set shrank by."""
        every = want == protocol.RELEASE_ALL
        r0 = memory.rss()
        by_hooks = 0
        for fn in hooks.snapshot()[0]:
            if not every and by_hooks >= want:
                break
            try:
                by_hooks += max(0, int(fn(want if every else want - by_hooks) or 0))
            except Exception:
                log.exception("memguard release hook %r failed", fn)
        gc.collect()
        if every:
            self.alloc.release(0)
        else:
            self.alloc.release(max(1, want - max(0, r0 - memory.rss())))
        freed = max(0, r0 - memory.rss())
        log.debug("Released %d bytes (asked %s; the hooks reported %d)", freed,
                  "everything" if every else want, by_hooks)
        return freed

    def _report(self):
        self._next_report = time.monotonic() + self._report_s
        hsys, inuse, idle, released = self.alloc.heap()
        external = 0
        ext = hooks.snapshot()[2]
        if ext is not None:
            try:
                external = int(ext())
            except Exception:
                log.exception("memguard external bytes callback %r failed", ext)
        admitted, rejected = admission.counts()
        self._send(lambda seq: protocol.encode_report(
            seq, hsys, inuse, idle, released, external, admitted, rejected,
            self.released_total, self.applied.gc_percent), "REPORT")

    # ---- for the API ------------------------------------------------------

    def snapshot(self):
        """The client's state as a dict (see :func:`memguard.state`)."""
        with self._lock:
            d = self.applied
            return {"connected": self._state == READY, "client_id": self.client_id,
                    "service": self.service_name, "budget": self.budget,
                    "level": d.level, "gc_percent": d.gc_percent, "throttle": d.throttle,
                    "soft_limit": d.soft_limit, "released_total": self.released_total,
                    "registrations": self.registrations, "directives": self.directives}
