# SPDX-License-Identifier: MIT
"""The client against the real memguardd ($MEMGUARDD), started on a private
socket with a fixture cgroup tree of regular files that plays the kernel,
as tests/integration/fixture.c does: usage written to the tree moves the
service's level, and the directives' effects are read back from Python."""
import ctypes
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import memguard

import fake
from fake import wait_for

MiB = 1024 * 1024
BUDGET = 100 * MiB
EXE = os.environ.get("MEMGUARDD", "")
PRELOAD = os.environ.get("MG_PRELOAD", "")


def _die_with_parent():
    # A test run that is killed takes its daemon along (PR_SET_PDEATHSIG).
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def put(path, text):
    # In place: the daemon preads the file it opened.
    with open(path, "w") as f:
        f.write(text)


class Fixture:
    """The tree: cg/ (the cgroup2 root), proc/ (mountinfo, meminfo, PSI and
    the cgroup of each pid the daemon will see), memguard.conf."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mg-py-")
        self.sock = os.path.join(self.dir, "memguardd.sock")
        self.log = os.path.join(self.dir, "memguardd.log")
        self.proc = None
        for d in ("cg", "proc", "proc/self", "proc/pressure"):
            os.mkdir(os.path.join(self.dir, d))
        put(self.path("proc/self/mountinfo"),
            "41 31 0:38 / %s/cg rw,relatime - cgroup2 cgroup2 rw\n" % self.dir)
        put(self.path("proc/meminfo"), "MemTotal:       16000000 kB\n"
            "MemAvailable:    8000000 kB\n")
        psi = ("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
               "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
        put(self.path("proc/pressure/memory"), psi)
        os.mkdir(self.path("cg/web"))
        for name, text in (("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"),
                           ("memory.max", "max\n"), ("memory.high", "max\n"),
                           ("cgroup.kill", "0\n"), ("memory.pressure", psi)):
            put(self.path("cg/web/" + name), text)
        self.set_usage(10 * MiB)
        self.map_pid(os.getpid())
        put(self.path("memguard.conf"), "[daemon]\ntick = 50ms\n[web]\ncgroup = web\n"
            "budget = %d\nrelease_deadline = 500ms\n" % BUDGET)

    def path(self, rel):
        return os.path.join(self.dir, rel)

    def map_pid(self, pid, cgroup="web"):
        os.makedirs(self.path("proc/%d" % pid), exist_ok=True)
        put(self.path("proc/%d/cgroup" % pid), "0::/%s\n" % cgroup)

    def set_usage(self, current):
        put(self.path("cg/web/memory.current"), "%d\n" % current)
        put(self.path("cg/web/memory.stat"), "anon %d\nfile 0\ninactive_file 0\n" % current)

    def start(self):
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [EXE, "--config", self.path("memguard.conf"), "--socket", self.sock,
                 "--cgroup-root", self.path("cg"), "--proc-root", self.path("proc"),
                 "--log-level", "debug"], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=log, preexec_fn=_die_with_parent)
        for _ in range(500):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                s.connect(self.sock)
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError("memguardd exited at start: %s" % self.daemon_log())
                time.sleep(0.01)
            finally:
                s.close()
        raise AssertionError("memguardd did not listen on %s" % self.sock)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("memguardd did not stop on signal %d" % sig)
        self.proc = None

    def daemon_log(self):
        with open(self.log, errors="replace") as f:
            return f.read()[-3000:]

    def done(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@unittest.skipUnless(EXE and os.access(EXE, os.X_OK),
                     "no memguardd: set MEMGUARDD to the built daemon (tests/run BUILDDIR does)")
class RealDaemonTest(fake.ClientTestCase):
    def setUp(self):
        super().setUp()
        self.fx = Fixture()
        self.fx.start()

    def tearDown(self):
        super().tearDown()
        if self.failed():
            print("\n--- memguardd log ---\n" + self.fx.daemon_log())
        self.fx.done()

    def failed(self):
        o = self._outcome
        if hasattr(o, "errors"):             # Python 3.9, 3.10
            return any(e for _, e in o.errors)
        r = o.result
        return any(t is self for t, _ in r.failures + r.errors)

    def register(self):
        memguard.start(socket=self.fx.sock, process="test-daemon")
        return wait_for(lambda: memguard.state()["connected"] and memguard.state(),
                        timeout=10, what="registration with memguardd")

    def test_directives_end_to_end(self):
        levels, asked = [], []
        ballast = [b"r" * (8 * MiB)]

        def release(nbytes):
            asked.append(nbytes)
            n = sum(len(b) for b in ballast)
            ballast.clear()
            return n
        memguard.on_level(levels.append)
        memguard.on_release(release)
        st = self.register()
        self.assertEqual((st["service"], st["budget"]), ("web", BUDGET))
        self.assertEqual(gc.get_threshold(), (700, 10, 10))

        # 85 %: WARN, a GC percent under 100, and 5 MiB demanded of us.
        self.fx.set_usage(BUDGET * 85 // 100)
        wait_for(lambda: memguard.level() == memguard.WARN, what="WARN")
        pct = wait_for(lambda: memguard.state()["gc_percent"], what="a GC percent")
        self.assertTrue(0 < pct < 100, pct)
        self.assertEqual(gc.get_threshold(), (700 * pct // 100, max(1, 10 * pct // 100),
                                              max(1, 10 * pct // 100)))
        wait_for(lambda: asked, what="a release demand")
        self.assertEqual(asked[0], BUDGET * 85 // 100 - BUDGET * 80 // 100)
        # RELEASED reached the daemon as the RSS the ballast gave back.
        wait_for(lambda: memguard.state()["released_total"] >= 4 * MiB, what="released bytes")

        # 93 %: CRITICAL, admit() and the middleware shed the throttle share.
        self.fx.set_usage(BUDGET * 93 // 100)
        wait_for(lambda: memguard.level() == memguard.CRITICAL, what="CRITICAL")
        t1 = wait_for(lambda: memguard.state()["throttle"], what="a throttle")
        statuses = []
        app = memguard.WSGIMiddleware(lambda e, sr: sr("200 OK", []) or [b"ok"])
        n = 20000
        for _ in range(n):
            app({}, lambda status, headers: statuses.append(status))
        t2 = memguard.state()["throttle"]
        share = 100.0 * sum(s.startswith("503") for s in statuses) / n
        self.assertGreaterEqual(share, min(t1, t2) / 10 - 3)
        self.assertLessEqual(share, max(t1, t2) / 10 + 3)

        # 40 %: NORMAL, the program's thresholds back, everything admitted.
        self.fx.set_usage(BUDGET * 40 // 100)
        wait_for(lambda: memguard.level() == memguard.NORMAL, timeout=10, what="NORMAL")
        wait_for(lambda: gc.get_threshold() == (700, 10, 10), what="the program's thresholds")
        self.assertTrue(all(memguard.admit() for _ in range(5000)))
        self.assertEqual(levels[0], memguard.WARN)
        self.assertIn(memguard.CRITICAL, levels)
        self.assertEqual(levels[-1], memguard.NORMAL)

    def test_fork_child_registers_as_itself(self):
        parent = self.register()

        def registered_as_itself():
            st = memguard.state()
            return st["connected"] and st["registrations"] == 1 and \
                st["client_id"] != parent["client_id"]
        # It stays until the parent has looked at the daemon's side.
        pid, r = fake.fork_child(registered_as_itself, timeout=15, linger=1.5)
        try:
            # The daemon learns the child's cgroup now; until then it
            # refuses it with a retryable error and the child backs off.
            self.fx.map_pid(pid)
            self.assertEqual(os.read(r, 1), b"y", "the child registered with an id of its own")
            self.assertTrue(memguard.state()["connected"])
            self.assertEqual(memguard.state()["client_id"], parent["client_id"])
            self.assertEqual(memguard.state()["registrations"], 1)
            log = self.fx.daemon_log()
            self.assertIn("(pid %d," % pid, log)
        finally:
            os.close(r)
            os.waitpid(pid, 0)

    def test_reconnects_after_restart(self):
        self.register()
        self.fx.set_usage(BUDGET * 85 // 100)
        wait_for(lambda: memguard.level() == memguard.WARN, what="WARN")
        threshold = gc.get_threshold()
        self.fx.stop(signal.SIGKILL)
        time.sleep(0.3)
        # Working meanwhile: admission open, the directive held.
        self.assertTrue(memguard.admit())
        self.assertEqual(memguard.level(), memguard.WARN)
        self.assertEqual(gc.get_threshold(), threshold)
        self.fx.set_usage(BUDGET * 40 // 100)
        self.fx.start()
        wait_for(lambda: memguard.state()["registrations"] == 2, timeout=10,
                 what="registration with the restarted daemon")
        wait_for(lambda: memguard.level() == memguard.NORMAL, timeout=10, what="NORMAL")
        wait_for(lambda: gc.get_threshold() == (700, 10, 10), what="the program's thresholds")

    @unittest.skipUnless(PRELOAD and os.access(PRELOAD, os.R_OK),
                         "no libmemguard-malloc.so: set MG_PRELOAD (tests/run BUILDDIR does)")
    def test_preload_process_registers_once(self):
        # The preload library registers the process by itself when
        # MEMGUARD_SOCKET is set; start() retires that client.
        script = ("import memguard, sys, time\n"
                  "time.sleep(1.5)\n"
                  "memguard.start(process='py-preload')\n"
                  "end = time.monotonic() + 15\n"
                  "while not memguard.state()['connected'] and time.monotonic() < end:\n"
                  "    time.sleep(0.01)\n"
                  "print(memguard.stats()['allocator'], memguard.state()['connected'], flush=True)\n"
                  "sys.stdin.read()\n")
        env = dict(os.environ, MEMGUARD_SOCKET=self.fx.sock, LD_PRELOAD=PRELOAD,
                   PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env.pop("MEMGUARD_SERVICE", None)
        p = subprocess.Popen([sys.executable, "-c", script], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        try:
            self.fx.map_pid(p.pid)
            self.assertEqual(p.stdout.readline().split(), ["memguard", "True"])
            time.sleep(0.3)
            log = self.fx.daemon_log()
            lines = log.splitlines()
            registered = sum("registered (pid %d," % p.pid in ln for ln in lines)
            dropped = sum("(pid %d," % p.pid in ln and ln.endswith("; dropped") for ln in lines)
            self.assertIn("registered (pid %d, py-preload)" % p.pid, log)
            self.assertEqual(registered - dropped, 1, log)
        finally:
            p.stdin.close()
            p.wait(10)

if __name__ == "__main__":
    unittest.main()
