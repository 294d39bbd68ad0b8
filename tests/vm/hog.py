#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# tests/vm/hog.py: a service that ignores memguard's directives, for
# tests/vm/inside.  It holds --hold MiB of touched memory (through malloc,
# so under the preload library its allocator's), drops it on SIGUSR1 and
# takes it again on SIGUSR2.  --churn: every 50 ms it maps, touches and
# unmaps 1 MiB more, so that new charges keep meeting the cgroup's
# memory.high or memory.max.  --reader FILE: a child process in a child
# cgroup "reader" of its own (the unit needs Delegate=yes) reads FILE over
# and over, so that page cache charges meet memory.max.
import argparse
import mmap
import os
import signal
import subprocess
import time

p = argparse.ArgumentParser()
p.add_argument("--hold", type=int, default=0)
p.add_argument("--churn", action="store_true")
p.add_argument("--reader")
a = p.parse_args()

held = []


def take():
    for _ in range(a.hold):
        held.append(b"\x01" * (1 << 20))


def drop(*_):
    held.clear()


signal.signal(signal.SIGUSR1, drop)
signal.signal(signal.SIGUSR2, lambda *_: take())
take()

if a.reader:
    own = open("/proc/self/cgroup").read().strip().split("::", 1)[1]
    child = "/sys/fs/cgroup%s/reader" % own
    os.mkdir(child)
    r = subprocess.Popen(["sh", "-c", 'echo $$ > %s/cgroup.procs && '
                          'while :; do cat "$1" >/dev/null; done' % child, "sh", a.reader])
print("hog: holding %d MiB" % a.hold, flush=True)
while True:
    if a.churn:
        m = mmap.mmap(-1, 1 << 20)
        m.write(b"\x02" * (1 << 20))
        m.close()
    time.sleep(0.05)
