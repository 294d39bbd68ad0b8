#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# tests/vm/hog.py: a service that ignores memguard's directives, for
# tests/vm/inside (under the preload library, which registers it).  It
# holds --hold MiB of touched anonymous memory, mapped directly so that
# dropping it (SIGUSR1) gives it back to the kernel at once, even while
# memory.high throttles the process (its allocator's free pages would wait
# for the scavenger, which the throttle stalls too); SIGUSR2 takes it
# again.  --churn: every 50 ms it maps, touches and unmaps 1 MiB more, so
# that new charges keep meeting the cgroup's memory.high or memory.max;
# SIGUSR1 stops that too, SIGUSR2 starts it again.  --reader FILE: a child process in a child
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
churn = a.churn


def take(*_):
    global churn
    for _ in range(a.hold):
        m = mmap.mmap(-1, 1 << 20)
        m.write(b"\x01" * (1 << 20))
        held.append(m)
    churn = a.churn


def drop(*_):
    global churn
    churn = False
    for m in held:
        m.close()
    held.clear()


signal.signal(signal.SIGUSR1, drop)
signal.signal(signal.SIGUSR2, take)
take()

if a.reader:
    own = open("/proc/self/cgroup").read().strip().split("::", 1)[1]
    child = "/sys/fs/cgroup%s/reader" % own
    os.mkdir(child)
    r = subprocess.Popen(["sh", "-c", 'echo $$ > %s/cgroup.procs && '
                          'while :; do cat "$1" >/dev/null; done' % child, "sh", a.reader])
print("hog: holding %d MiB" % a.hold, flush=True)
while True:
    if churn:
        m = mmap.mmap(-1, 1 << 20)
        m.write(b"\x02" * (1 << 20))
        m.close()
    time.sleep(0.05)
