# SPDX-License-Identifier: MIT
"""memguard for Python: keep a Python service inside its memory budget.

::

    import memguard
    memguard.on_release(my_cache.cache_clear_bytes)   # fn(bytes) -> bytes freed
    memguard.start()                                  # registers with memguardd

The process registers with memguardd (docs/protocol.md) from a daemon
thread.  The daemon's directives lower the collector's thresholds, call the
release hooks, collect, and hand free heap pages back to the kernel
(``malloc_trim`` with glibc, the memguard heap's release when
libmemguard-malloc.so is preloaded), and set the share of new work that
:func:`admit` and the WSGI/ASGI middlewares shed.  A missing daemon, a
refusal or a malformed message is logged to ``logging.getLogger("memguard")``
and never raises into the application.
"""
import logging
import os
import threading

from . import admission, client as _client, memory, protocol
from .admission import ASGIMiddleware, Rejected, WSGIMiddleware, admit, shed

__all__ = ["start", "stop", "running", "on_release", "on_level", "remove_hook",
           "set_external", "state", "level", "admit", "shed", "Rejected",
           "WSGIMiddleware", "ASGIMiddleware", "stats",
           "NORMAL", "WARN", "CRITICAL", "EMERGENCY", "ALL"]
__version__ = "0.1.0"

NORMAL = protocol.NORMAL
"""Level: within budget; the program's own GC thresholds; grow caches back."""
WARN = protocol.WARN
"""Level: above the warn threshold or under pressure: collect more often."""
CRITICAL = protocol.CRITICAL
"""Level: above the critical threshold: a share of new work is shed too."""
EMERGENCY = protocol.EMERGENCY
"""Level: at or over budget: release everything releasable now."""
ALL = protocol.RELEASE_ALL
"""What a release hook is asked for when the daemon wants everything (2^64 - 1)."""

# A library logs only where the application routes it.
logging.getLogger("memguard").addHandler(logging.NullHandler())

_lock = threading.Lock()
_instance = None


def _before_fork():
    c = _instance
    if c is not None:
        c.before_fork()


def _after_fork_parent():
    c = _instance
    if c is not None:
        c.after_fork_parent()


def _after_fork_child():
    global _lock
    # A thread of the parent may have held these (in start(), on_release(),
    # admit()); the child does not have that thread, so it gets locks of
    # its own, whether memguard runs or not.
    _lock = threading.Lock()
    _client.hooks.lock = threading.Lock()
    admission.renew_lock()
    c = _instance
    if c is not None:
        c.after_fork_child()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent,
                    after_in_child=_after_fork_child)


def start(service=None, socket=None, *, process=None, external=None):
    """Register this process with memguardd, from a daemon thread.

    `service`: the service's name (default ``$MEMGUARD_SERVICE``, else the
    daemon finds it from the process's cgroup).  `socket`: the daemon's
    socket (default ``$MEMGUARD_SOCKET``, else
    ``/run/memguard/memguardd.sock``).  `process`: the name shown by
    ``memguardctl clients`` (default: the script's name).  `external`: a
    callable returning the bytes the application holds in caches it can
    drop, sent in every REPORT (see :func:`set_external`).

    A daemon that is absent is not an error: the thread keeps trying
    (0.1 s doubling to 0.8 s).  A second call while running does nothing.
    Raises ValueError only for an argument that is wrong: a name that is
    not printable ASCII of at most 255 characters, a socket path of 108
    bytes or more.  When such a value comes from the environment instead,
    memguard logs an error and does not start.  After
    ``os.fork()`` the child registers as itself, on its own connection.
    """
    global _instance
    with _lock:
        if _instance is not None:
            return
        if external is not None:
            set_external(external)
        try:
            c = _client.Client(service=service, socket_path=socket, process=process)
        except _client.BadEnvironment as e:
            # The environment's fault, not the caller's: the service runs on.
            logging.getLogger("memguard").error(
                "memguard not started: $MEMGUARD_SERVICE or $MEMGUARD_SOCKET: %s", e)
            return
        c.start()
        _instance = c


def stop():
    """Say BYE to memguardd and stop the thread.  The program's own GC
    thresholds come back, admission opens.  Does nothing when not running."""
    global _instance
    with _lock:
        c, _instance = _instance, None
    if c is not None:
        c.stop()


def running():
    """True between :func:`start` and :func:`stop`."""
    return _instance is not None


def _wake():
    c = _instance
    if c is not None:
        c.wake()


def on_release(fn):
    """Add a release hook: ``fn(nbytes) -> bytes freed``.

    When the daemon demands memory, the hooks run in the order they were
    added (until they report `nbytes` freed), then ``gc.collect()``, then
    the C allocator returns free pages.  `nbytes` is :data:`ALL` when the
    daemon wants everything releasable.  What the daemon is told is
    measured from the resident set before and after, so the return value
    only decides whether the next hook is needed.  A hook that raises is
    logged and skipped.  Returns `fn`, so it works as a decorator.
    """
    with _client.hooks.lock:
        _client.hooks.release.append(fn)
    _wake()
    return fn


def on_level(fn):
    """Add a level hook: ``fn(level)`` with :data:`NORMAL` ... :data:`EMERGENCY`,
    called from memguard's thread each time the level changes (a cache
    shrinks its capacity above NORMAL and grows back at NORMAL), and once
    soon after it is added if the level is above NORMAL then.  Returns
    `fn`, so it works as a decorator."""
    with _client.hooks.lock:
        _client.hooks.new_level.append(fn)
    c = _instance
    if c is not None:
        c.wake()
    return fn


def remove_hook(fn):
    """Remove `fn` from the release and level hooks (no error if absent)."""
    with _client.hooks.lock:
        for lst in (_client.hooks.release, _client.hooks.level, _client.hooks.new_level):
            while fn in lst:
                lst.remove(fn)


def set_external(fn):
    """Set the callable (no arguments, returns bytes) whose figure each
    REPORT sends as memory the application accounts for itself; None
    clears it."""
    with _client.hooks.lock:
        _client.hooks.external = fn


def state():
    """The client's view, as a dict: ``connected``, ``client_id``,
    ``service``, ``budget`` (bytes, 0 = unknown), ``level``, ``gc_percent``,
    ``throttle`` (per mille), ``soft_limit`` (bytes, 0 = none),
    ``released_total`` (bytes), ``registrations`` and ``directives``
    (counts on this process).  None when not running."""
    c = _instance
    return c.snapshot() if c is not None else None


def level():
    """The level in force (:data:`NORMAL` when not running or not told yet)."""
    c = _instance
    return c.applied.level if c is not None else NORMAL


def stats():
    """What memguard sees of the process now, as a dict: ``rss``,
    ``allocator`` (``"memguard"``, ``"glibc"`` or ``"other"``), ``heap_sys``,
    ``heap_inuse``, ``heap_idle``, ``heap_released`` (bytes),
    ``allocated_blocks`` (``sys.getallocatedblocks()``), ``admitted`` and
    ``rejected`` (:func:`admit` counts)."""
    c = _instance
    alloc = c.alloc if c is not None else memory.Allocator()
    hsys, inuse, idle, released = alloc.heap()
    admitted, rejected = admission.counts()
    return {"rss": memory.rss(), "allocator": alloc.kind, "heap_sys": hsys,
            "heap_inuse": inuse, "heap_idle": idle, "heap_released": released,
            "allocated_blocks": memory.allocated_blocks(), "admitted": admitted,
            "rejected": rejected}
