# SPDX-License-Identifier: MIT
"""The client against a daemon played by the test: every directive's effect,
the answers the protocol requires, fork(), refusals, garbage, restarts and
the admission share."""
import asyncio
import gc
import os
import select
import signal
import threading
import time
import unittest

import memguard

import fake
from fake import directive, wait_for

MiB = 1024 * 1024


class FakeDaemonTest(fake.ClientTestCase):
    def setUp(self):
        super().setUp()
        self.daemon = fake.FakeDaemon()

    def tearDown(self):
        super().tearDown()
        self.daemon.close()

    def start(self, **kw):
        memguard.start(service="web", socket=self.daemon.path, process="pytest", **kw)
        return self.daemon.accept()

    def test_hello_welcome_report(self):
        memguard.set_external(lambda: 12345)
        peer = self.start()
        hello = peer.register(client_id=42)
        self.assertEqual(hello["service"], b"web")
        self.assertEqual(hello["process"], b"pytest")
        self.assertTrue(hello["caps"] & 0x4 and hello["caps"] & 0x1)
        t, _, report = peer.recv(skip=())
        self.assertEqual(t, 0x0002)
        self.assertEqual(report["external"], 12345)
        self.assertEqual(report["gc_percent"], 0)
        self.assertGreater(report["heap_sys"], 0)
        st = wait_for(lambda: memguard.state()["connected"] and memguard.state(),
                      what="registration")
        self.assertEqual(st["client_id"], 42)
        self.assertEqual(st["service"], "web")
        self.assertEqual(st["budget"], 1 << 30)

    def test_gc_percent_scales_thresholds_and_normal_restores(self):
        collections = []

        def cb(phase, info):
            if phase == "start" and info["generation"] == 2:
                collections.append(1)
        gc.callbacks.append(cb)
        try:
            peer = self.start()
            peer.register()
            wait_for(lambda: memguard.state()["directives"] == 1, what="the first directive")
            self.assertEqual(gc.get_threshold(), (700, 10, 10))
            full_before = len(collections)
            peer.send(directive(peer.next_seq(), level=1, gc=50))
            wait_for(lambda: gc.get_threshold() == (350, 5, 5), what="thresholds at 50 %")
            wait_for(lambda: len(collections) > full_before, what="a full collection")
            # Same level, lower percent: thresholds move, no new collection
            # is owed for a level that did not rise.
            peer.send(directive(peer.next_seq(), level=1, gc=20))
            wait_for(lambda: gc.get_threshold() == (140, 2, 2), what="thresholds at 20 %")
            t, _, report = peer.recv(skip=())
            while report.get("gc_percent") != 20:
                t, _, report = peer.recv(skip=())
            peer.send(directive(peer.next_seq(), level=0, gc=0))
            wait_for(lambda: gc.get_threshold() == (700, 10, 10), what="the program's thresholds")
            # A program that disabled automatic collection keeps it disabled.
            gc.set_threshold(0, 10, 10)
            peer.send(directive(peer.next_seq(), level=1, gc=50))
            wait_for(lambda: gc.get_threshold() == (0, 5, 5), what="threshold 0 kept")
            memguard.stop()
            self.assertEqual(gc.get_threshold(), (0, 10, 10))
        finally:
            gc.callbacks.remove(cb)

    def test_release_demand_runs_hooks_and_answers_measured_bytes(self):
        cache = [b"x" * (64 * MiB)]
        asked = []

        def drop(nbytes):
            asked.append(nbytes)
            cache.clear()
            return 64 * MiB
        second = []
        memguard.on_release(drop)
        memguard.on_release(lambda n: second.append(n) or 0)
        peer = self.start()
        hello = peer.register()
        self.assertTrue(hello["caps"] & 0x2)
        seq = peer.next_seq()
        peer.send(directive(seq, level=2, gc=30, release=32 * MiB, deadline=500))
        t, _, rel = peer.recv()
        self.assertEqual(t, 0x0003)
        self.assertEqual(rel["directive_seq"], seq)
        self.assertEqual(asked, [32 * MiB])
        self.assertEqual(second, [], "the first hook freed enough")
        self.assertGreaterEqual(rel["bytes"], 32 * MiB, "64 MiB of RSS went away")
        self.assertLess(rel["bytes"], 256 * MiB)
        # Everything: every hook is asked for ALL.
        seq = peer.next_seq()
        peer.send(directive(seq, level=3, release=2 ** 64 - 1))
        t, _, rel = peer.recv()
        self.assertEqual((t, rel["directive_seq"]), (0x0003, seq))
        self.assertEqual(asked[-1], memguard.ALL)
        self.assertEqual(second, [memguard.ALL])
        self.assertGreaterEqual(memguard.state()["released_total"], 32 * MiB)

    def test_level_hooks_once_per_change(self):
        seen = []
        memguard.on_level(seen.append)
        peer = self.start()
        peer.register(level=1, gc=80)
        for lv in (1, 2, 2, 0):
            peer.send(directive(peer.next_seq(), level=lv, gc=80 if lv else 0))
        wait_for(lambda: memguard.state()["directives"] == 5, what="five directives")
        self.assertEqual(seen, [1, 2, 0])
        self.assertEqual(memguard.level(), memguard.NORMAL)

    def test_level_hook_added_above_normal_learns_the_level(self):
        peer = self.start()
        peer.register(level=2, gc=75)
        wait_for(lambda: memguard.level() == memguard.CRITICAL, what="CRITICAL")
        late, calm = [], []
        memguard.on_level(late.append)
        wait_for(lambda: late == [memguard.CRITICAL], what="the late hook told CRITICAL")
        peer.send(directive(peer.next_seq(), level=0, gc=0))
        wait_for(lambda: late == [memguard.CRITICAL, memguard.NORMAL], what="NORMAL told")
        # added at NORMAL: told nothing until the level changes
        memguard.on_level(calm.append)
        peer.send(directive(peer.next_seq(), level=1, gc=90))
        wait_for(lambda: late[-1] == memguard.WARN, what="WARN told")
        self.assertEqual(calm, [memguard.WARN])
        self.assertEqual(late, [memguard.CRITICAL, memguard.NORMAL, memguard.WARN])

    def test_ping_pong(self):
        peer = self.start()
        peer.register()
        peer.send(fake.ping(peer.next_seq(), 0xDEADBEEFCAFE))
        t, _, pong = peer.recv()
        self.assertEqual((t, pong["cookie"]), (0x0004, 0xDEADBEEFCAFE))

    def test_throttle_sheds_its_share(self):
        peer = self.start()
        peer.register(level=2, throttle=300)
        wait_for(lambda: memguard.admission.throttle() == 300, what="throttle 300")

        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        wsgi = memguard.WSGIMiddleware(app, retry_after=2)
        statuses = []

        def start_response(status, headers):
            statuses.append((status, dict(headers)))
        n = 5000
        for _ in range(n):
            wsgi({}, start_response)
        shed = [h for s, h in statuses if s.startswith("503")]
        self.assertTrue(0.25 < len(shed) / n < 0.35, "shed %d of %d" % (len(shed), n))
        self.assertEqual(shed[0]["Retry-After"], "2")

        async def asgi_app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        asgi = memguard.ASGIMiddleware(asgi_app)

        async def run():
            codes = []

            async def send(msg):
                if msg["type"] == "http.response.start":
                    codes.append((msg["status"], dict(msg["headers"])))
            for _ in range(n):
                await asgi({"type": "http"}, None, send)
            await asgi({"type": "lifespan"}, None, send)
            return codes
        codes = asyncio.run(run())
        self.assertEqual(len(codes), n + 1)
        rejected = [h for c, h in codes if c == 503]
        self.assertTrue(0.25 < len(rejected) / n < 0.35)
        self.assertEqual(rejected[0][b"retry-after"], b"1")

        @memguard.shed
        def task():
            return "ran"

        @memguard.shed(on_reject=lambda: "later")
        def task2():
            return "ran"
        results = []
        for _ in range(1000):
            try:
                results.append(task())
            except memguard.Rejected:
                results.append("rejected")
        self.assertTrue(200 < results.count("rejected") < 400)
        self.assertIn("later", [task2() for _ in range(200)])

        admitted, rejected_n = memguard.admission.counts()
        peer.send(directive(peer.next_seq(), level=0))
        wait_for(lambda: memguard.admission.throttle() == 0, what="throttle 0")
        self.assertTrue(all(memguard.admit() for _ in range(1000)))
        # The REPORT counts what admit() did.
        while True:
            t, _, report = peer.recv(skip=())
            if t == 0x0002 and report["admitted"] >= admitted + 1000:
                break
        self.assertGreaterEqual(report["rejected"], rejected_n)

    def test_garbage_is_logged_and_reconnects(self):
        body = b"\x01" + b"\0" * 24
        garbage = [
            b"\x01\x02\x03",                                     # shorter than a header
            fake.pack(0x0102, 5, body, length=99),               # length disagrees
            fake.pack(0x0102, 5, body, version=2),               # unknown version
            fake.pack(0x0999, 5, b""),                           # unknown type
            fake.pack(0x0001, 5, b"\0" * 8),                     # a client's type
            fake.pack(0x0102, 5, b"\x01\0\0"),                   # short DIRECTIVE
            directive(5, level=9),                               # level out of range
            directive(5, throttle=1001),                         # throttle out of range
            fake.pack(0x0104, 5, b"\1\0\0\0\xff\xff"),           # string past the end
            fake.pack(0x0104, 5, b"\1\0\0\0\2\0a\0"),            # NUL in a text
            fake.pack(0x0103, 5, b"\1\2\3"),                     # short PING
            fake.welcome(5),                                     # a WELCOME out of turn
        ]
        peer = self.start()
        peer.register()
        for g in garbage:
            with self.assertLogs("memguard", "WARNING") as logs:
                peer.send(g)
                self.assertTrue(peer.closed(), "the client closed after %r" % g)
                peer = self.daemon.accept()
                peer.register()
                wait_for(lambda: memguard.state()["connected"], what="registered again")
            self.assertTrue(any("reconnecting" in line for line in logs.output), logs.output)
        # A WELCOME whose service is not a name.
        peer.close()
        peer = self.daemon.accept()
        _, seq, _ = peer.recv()
        with self.assertLogs("memguard", "WARNING") as logs:
            peer.send(fake.welcome(seq, service=b"we\x01b"))
            self.assertTrue(peer.closed())
            # The client closes, then logs.
            wait_for(lambda: logs.records, what="the log line")
        peer = self.daemon.accept()
        peer.register()
        wait_for(lambda: memguard.state()["connected"], what="registered again")

    def test_refusals(self):
        peer = self.start()
        _, seq, _ = peer.recv()
        t0 = time.monotonic()
        with self.assertLogs("memguard", "WARNING") as logs:
            peer.send(fake.error(seq, 3, b"pid 1 is not in cgroup x"))
            self.assertTrue(peer.closed())
            wait_for(lambda: logs.records, what="the log line")
        self.assertIn("service does not match", logs.output[0])
        peer = self.daemon.accept(timeout=10)
        self.assertGreaterEqual(time.monotonic() - t0, 2.5, "a refusal waits 5 s (jittered)")
        # An internal error is no refusal of this HELLO: the usual backoff.
        _, seq, _ = peer.recv()
        peer.send(fake.error(seq, 8, b"oops"))
        self.assertTrue(peer.closed())
        peer = self.daemon.accept(timeout=5)
        peer.register()
        wait_for(lambda: memguard.state()["connected"], what="registered")

    def test_daemon_restart_reconnects_and_keeps_state_through_the_grace(self):
        peer = self.start()
        peer.register(level=1, gc=50)
        wait_for(lambda: gc.get_threshold() == (350, 5, 5), what="WARN thresholds")
        peer.send(fake.bye(peer.next_seq(), reason=1))
        self.assertTrue(peer.closed())
        self.daemon.unlisten()
        time.sleep(1.0)
        st = memguard.state()
        self.assertFalse(st["connected"])
        self.assertEqual((st["level"], gc.get_threshold()), (1, (350, 5, 5)),
                         "the directive holds for the grace period")
        self.daemon.listen()
        peer = self.daemon.accept(timeout=5)
        peer.register(level=0)
        wait_for(lambda: gc.get_threshold() == (700, 10, 10), what="NORMAL again")
        self.assertEqual(memguard.state()["registrations"], 2)

    def test_fork_child_registers_on_its_own_connection(self):
        peer = self.start()
        peer.register(level=1, gc=50)
        wait_for(lambda: memguard.state()["directives"] == 1, what="directive")
        pid, r = fake.fork_child(lambda: memguard.state()["registrations"] == 1 and
                                 memguard.state()["client_id"] == 99, timeout=10)
        try:
            child = self.daemon.accept()
            self.assertEqual(child.pid, pid)
            child.register(client_id=99)
            self.assertEqual(os.read(r, 1), b"y", "the child saw its own registration")
            # The parent's conversation is intact and only the parent's.
            peer.send(fake.ping(peer.next_seq(), 5))
            t, _, pong = peer.recv()
            self.assertEqual((t, pong["cookie"]), (0x0004, 5))
            self.assertEqual(memguard.state()["client_id"], 7)
        finally:
            os.close(r)
            os.waitpid(pid, 0)

    def test_fork_while_a_hook_waits_for_the_forking_thread(self):
        held = threading.Lock()
        entered = threading.Event()

        def hook(nbytes):
            entered.set()
            with held:         # held by the thread that forks
                return 0
        memguard.on_release(hook)
        peer = self.start()
        peer.register()
        with held:
            peer.send(directive(peer.next_seq(), level=2, release=MiB))
            self.assertTrue(entered.wait(5))
            with self.assertLogs("memguard", "WARNING"):
                pid, r = fake.fork_child(lambda: memguard.state()["registrations"] == 1,
                                         timeout=10)
        try:
            child = self.daemon.accept()
            self.assertEqual(child.pid, pid)
            child.register()
            self.assertEqual(os.read(r, 1), b"y", "the child registered")
            t, _, rel = peer.recv()
            self.assertEqual(t, 0x0003, "the parent answered once the hook could go on")
        finally:
            os.close(r)
            os.waitpid(pid, 0)

    def fork_and_wait(self, check, timeout=8.0):
        """fork(); the child reports check() through a pipe.  Returns what
        it reported, or None when it hung (it is killed then)."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            ok = b"n"
            try:
                ok = b"y" if check() else b"n"
            finally:
                os.write(w, ok)
                os._exit(0)
        os.close(w)
        try:
            ready = select.select([r], [], [], timeout)[0]
            if not ready:
                os.kill(pid, signal.SIGKILL)
                return None
            return os.read(r, 1)
        finally:
            os.close(r)
            os.waitpid(pid, 0)

    def test_fork_while_another_thread_holds_a_lock_of_the_package(self):
        # A thread of the parent inside on_release() or admit() when
        # another forks: the child has the lock but not the thread.
        peer = self.start()
        peer.register()
        wait_for(lambda: memguard.state()["connected"], what="registration")
        for lock in (lambda: memguard.client.hooks.lock, lambda: memguard.admission._lock):
            got, done = threading.Event(), threading.Event()

            def hold():
                with lock():
                    got.set()
                    done.wait()
            t = threading.Thread(target=hold)
            t.start()
            got.wait()

            def child():
                memguard.on_release(lambda n: 0)
                memguard.admit()
                return memguard.state() is not None
            try:
                answer = self.fork_and_wait(child)
            finally:
                done.set()
                t.join()
            self.assertEqual(answer, b"y", "the child hung on a lock its parent's thread held")
        # Without memguard running too: admit() is for every process.
        memguard.stop()
        got, done = threading.Event(), threading.Event()

        def hold_admission():
            with memguard.admission._lock:
                got.set()
                done.wait()
        t = threading.Thread(target=hold_admission)
        t.start()
        got.wait()
        try:
            answer = self.fork_and_wait(memguard.admit)
        finally:
            done.set()
            t.join()
        self.assertEqual(answer, b"y", "admit() hung in a child of a process not running memguard")

    def test_stop_says_bye(self):
        peer = self.start()
        peer.register()
        memguard.stop()
        t, _, bye = peer.recv(skip=(0x0002,))
        self.assertEqual((t, bye["reason"]), (0x0005, 0))
        self.assertIsNone(peer.recv())

    def test_stop_says_bye_after_what_was_queued_and_whatever_crosses_it(self):
        peer = self.start()
        peer.register()
        wait_for(lambda: memguard.state()["connected"], what="registration")
        c = memguard._instance
        # A PONG still queued (the socket was full a moment ago) goes first.
        with c._lock:
            c._seq += 1
            c._out.append(memguard.protocol.encode_pong(c._seq, 77))
        real = memguard.protocol.encode_bye

        def bye_crossed_by_a_ping(seq, reason=0):
            # The daemon's PING arrives while the client says goodbye: a
            # socket closed with it unread resets the connection, and the
            # daemon would read that instead of the BYE.
            peer.send(fake.ping(peer.next_seq(), 5))
            time.sleep(0.05)
            return real(seq, reason)
        memguard.protocol.encode_bye = bye_crossed_by_a_ping
        try:
            memguard.stop()
        finally:
            memguard.protocol.encode_bye = real
        m = peer.recv(skip=(0x0002,))
        self.assertIsNotNone(m, "the daemon read a reset, not the PONG")
        self.assertEqual((m[0], m[2]), (0x0004, {"cookie": 77}))
        m = peer.recv(skip=(0x0002,))
        self.assertIsNotNone(m, "the daemon read a reset, not the BYE")
        self.assertEqual((m[0], m[2]), (0x0005, {"reason": 0}))
        self.assertIsNone(peer.recv())

    def test_no_daemon_is_no_error(self):
        memguard.start(socket=os.path.join(self.daemon.dir, "absent.sock"))
        time.sleep(0.3)
        self.assertTrue(memguard.admit())
        self.assertFalse(memguard.state()["connected"])
        self.assertEqual(memguard.level(), memguard.NORMAL)

    def test_bad_names(self):
        for bad in ("caf\u00e9", "a\x01", "x" * 256):
            with self.assertRaises(ValueError):
                memguard.start(service=bad, socket=self.daemon.path)
        with self.assertRaises(ValueError):
            memguard.start(socket="/" + "s" * 200)
        self.assertFalse(memguard.running())
        # From the environment: logged, not raised.
        os.environ["MEMGUARD_SERVICE"] = "caf\u00e9"
        try:
            with self.assertLogs("memguard", "ERROR"):
                memguard.start(socket=self.daemon.path)
        finally:
            del os.environ["MEMGUARD_SERVICE"]
        self.assertFalse(memguard.running())
        # A wrong argument raises even when the environment has a value of
        # its own (good or bad) for the other one.
        for var, value, kw in (("MEMGUARD_SOCKET", self.daemon.path, {"service": "caf\u00e9"}),
                               ("MEMGUARD_SERVICE", "web", {"socket": "/" + "s" * 200}),
                               ("MEMGUARD_SOCKET", "/" + "s" * 200, {"service": "a\x01"})):
            os.environ[var] = value
            try:
                with self.assertRaises(ValueError, msg="%s=%r, %r" % (var, value, kw)):
                    memguard.start(**kw)
            finally:
                del os.environ[var]
            self.assertFalse(memguard.running())

    def test_hook_that_raises_is_logged(self):
        def bad(n):
            raise RuntimeError("boom")
        memguard.on_release(bad)
        memguard.on_level(lambda lv: 1 / 0)
        peer = self.start()
        peer.register()
        with self.assertLogs("memguard", "ERROR"):
            seq = peer.next_seq()
            peer.send(directive(seq, level=2, release=MiB))
            t, _, rel = peer.recv()
        self.assertEqual((t, rel["directive_seq"]), (0x0003, seq))
        self.assertTrue(memguard.state()["connected"])

    def test_stop_from_a_hook(self):
        memguard.on_level(lambda lv: memguard.stop())
        peer = self.start()
        peer.register()
        peer.send(directive(peer.next_seq(), level=1, gc=50))
        t, _, bye = peer.recv(skip=(0x0002,))
        self.assertEqual((t, bye["reason"]), (0x0005, 0))
        self.assertFalse(memguard.running())
        # The BYE goes out first, then the thresholds come back.
        wait_for(lambda: gc.get_threshold() == (700, 10, 10), what="the program's thresholds")
        with self.assertRaises(TimeoutError):
            self.daemon.accept(timeout=1.5)

if __name__ == "__main__":
    unittest.main()
