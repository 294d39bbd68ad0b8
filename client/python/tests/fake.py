# SPDX-License-Identifier: MIT
"""A daemon's side of the socket, written independently of memguard.protocol
(struct formats taken from docs/protocol.md), so the tests do not check the
package's encoders against themselves."""
import gc
import os
import select
import shutil
import socket
import struct
import tempfile
import time
import unittest

import memguard
from memguard import client as mgclient

HDR = struct.Struct("<HHIII")


def pack(type_, seq, body, version=1, length=None):
    return HDR.pack(type_, version, len(body) if length is None else length, seq, 0) + body


def s16(b):
    return struct.pack("<H", len(b)) + b


def welcome(seq, client_id=7, budget=1 << 30, interval_ms=1000, service=b"web"):
    return pack(0x0101, seq, struct.pack("<QQI", client_id, budget, interval_ms) + s16(service))


def directive(seq, level=0, gc=0, throttle=0, soft=0, release=0, deadline=0):
    return pack(0x0102, seq, struct.pack("<BHHQQI", level, gc, throttle, soft, release, deadline))


def ping(seq, cookie):
    return pack(0x0103, seq, struct.pack("<Q", cookie))


def error(seq, code, text=b""):
    return pack(0x0104, seq, struct.pack("<I", code) + s16(text))


def bye(seq, reason=1):
    return pack(0x0005, seq, struct.pack("<I", reason))


def parse(data):
    """(type, seq, fields) of a client's datagram; asserts the header."""
    type_, version, length, seq, flags = HDR.unpack_from(data)
    assert version == 1 and length == len(data) - 16 and flags == 0, data
    body = data[16:]
    if type_ == 0x0001:
        caps, = struct.unpack_from("<I", body)
        n, = struct.unpack_from("<H", body, 4)
        svc = body[6:6 + n]
        m, = struct.unpack_from("<H", body, 6 + n)
        proc = body[8 + n:8 + n + m]
        assert 8 + n + m == len(body)
        return type_, seq, {"caps": caps, "service": svc, "process": proc}
    if type_ == 0x0002:
        assert len(body) == 66
        f = struct.unpack("<QQQQQQQQH", body)
        keys = ("heap_sys", "heap_inuse", "heap_idle", "heap_released", "external",
                "admitted", "rejected", "released_total", "gc_percent")
        return type_, seq, dict(zip(keys, f))
    if type_ == 0x0003:
        assert len(body) == 20
        d, b, us = struct.unpack("<IQQ", body)
        return type_, seq, {"directive_seq": d, "bytes": b, "usec": us}
    if type_ == 0x0004:
        return type_, seq, {"cookie": struct.unpack("<Q", body)[0]}
    if type_ == 0x0005:
        return type_, seq, {"reason": struct.unpack("<I", body)[0]}
    raise AssertionError("a client sent type 0x%04x" % type_)


class Peer:
    """One accepted connection."""

    def __init__(self, sock):
        self.sock = sock
        cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        self.pid, self.uid, self.gid = struct.unpack("3i", cred)
        self.seq = 1000

    def send(self, data):
        self.sock.send(data)

    def next_seq(self):
        self.seq += 1
        return self.seq

    def recv(self, timeout=5.0, skip=(0x0002,)):
        """The next message not of a type in `skip` (REPORTs by default);
        None when the peer closed; raises TimeoutError."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise TimeoutError("no message from the client in %.1f s" % timeout)
            try:
                data = self.sock.recv(4096)
            except ConnectionResetError:
                return None
            if not data:
                return None
            m = parse(data)
            if m[0] not in skip:
                return m

    def closed(self, timeout=5.0):
        """True once the client closed its side (messages before are skipped)."""
        try:
            while self.recv(timeout, skip=(0x0002, 0x0003, 0x0004)) is not None:
                pass
        except TimeoutError:
            return False
        return True

    def register(self, client_id=7, **kw):
        """Take the HELLO, answer WELCOME and the DIRECTIVE in force."""
        t, seq, hello = self.recv()
        assert t == 0x0001, t
        self.send(welcome(seq, client_id=client_id))
        self.send(directive(self.next_seq(), **kw))
        return hello

    def close(self):
        self.sock.close()


class FakeDaemon:
    """A listening socket in a private directory."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mg-pytest-")
        self.path = os.path.join(self.dir, "memguardd.sock")
        self.listener = None
        self.peers = []
        self.listen()

    def listen(self):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(self.path)
        self.listener.listen(16)

    def unlisten(self):
        self.listener.close()
        os.unlink(self.path)

    def accept(self, timeout=5.0):
        if not select.select([self.listener], [], [], timeout)[0]:
            raise TimeoutError("no connection in %.1f s" % timeout)
        s, _ = self.listener.accept()
        self.peers.append(Peer(s))
        return self.peers[-1]

    def close(self):
        for p in self.peers:
            p.close()
        if self.listener:
            self.listener.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for(pred, timeout=5.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError("timed out waiting for %s" % what)


class ClientTestCase(unittest.TestCase):
    """Each test starts from the program's thresholds (700, 10, 10) and no
    hooks, and leaves memguard stopped and the thresholds as it found them."""

    def setUp(self):
        self.saved_threshold = gc.get_threshold()
        gc.set_threshold(700, 10, 10)

    def tearDown(self):
        memguard.stop()
        with mgclient.hooks.lock:
            mgclient.hooks.release.clear()
            mgclient.hooks.level.clear()
            mgclient.hooks.new_level.clear()
            mgclient.hooks.external = None
        gc.set_threshold(*self.saved_threshold)


def fork_child(check, timeout, linger=0.0):
    """fork(); the child polls `check()` (its memguard state) until it is
    true or `timeout` passes, tells the parent y or n through a pipe, stays
    `linger` seconds and exits.  Returns (child pid, the pipe's read end)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        return pid, r
    os.close(r)
    ok = b"n"
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if check():
                ok = b"y"
                break
            time.sleep(0.01)
    finally:
        os.write(w, ok)
        time.sleep(linger)
        os._exit(0)
