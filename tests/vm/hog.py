#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# tests/vm/hog.py: a service that ignores memguard's directives, for
# tests/vm/inside (under the preload library, which registers it).
#
# It holds --hold MiB of anonymous memory, mapped and populated directly,
# and then only sleeps.  --churn: a child process (oom_score_adj 1000) maps
# and populates --churn-mb MiB every 50 ms and unmaps it, so that new
# charges keep meeting the cgroup's memory.high or memory.max (and, over
# memory.max, the kernel's OOM killer picks that child, which the holder
# starts again); it starts before the memory is held.  --reader FILE:
# started first, a child process in a child
# cgroup "reader" of its own (the unit needs Delegate=yes), not under the
# preload library, reads FILE over and over.
import argparse
import mmap
import os
import subprocess
import sys
import time

FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE

p = argparse.ArgumentParser()
p.add_argument("--hold", type=int, default=0)
p.add_argument("--churn", action="store_true")
p.add_argument("--churn-mb", type=int, default=1)
p.add_argument("--churn-child", action="store_true", help=argparse.SUPPRESS)
p.add_argument("--reader")
a = p.parse_args()

if a.churn_child:
    while True:
        m = mmap.mmap(-1, a.churn_mb << 20, flags=FLAGS)
        m.close()
        time.sleep(0.05)


def lowest_priority():
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")


held = []
churner = None


def start_churn():
    global churner
    churner = subprocess.Popen([sys.executable, __file__, "--churn-child",
                                "--churn-mb", str(a.churn_mb)], preexec_fn=lowest_priority)


if a.reader:
    own = open("/proc/self/cgroup").read().strip().split("::", 1)[1]
    child = "/sys/fs/cgroup%s/reader" % own
    os.mkdir(child)
    # Not under the preload library: a client for every cat would come
    # and go many times a second.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MEMGUARD_SOCKET")}
    subprocess.Popen(["sh", "-c", 'echo $$ > %s/cgroup.procs && '
                      'while :; do cat "$1" >/dev/null; done' % child, "sh", a.reader],
                     preexec_fn=lowest_priority, env=env)
# The churner starts before the memory is held: a new process under
# memory.high, over it, hardly gets through its start.
if a.churn:
    start_churn()
for _ in range(a.hold):
    held.append(mmap.mmap(-1, 1 << 20, flags=FLAGS))
print("hog: holding %d MiB" % a.hold, flush=True)
while True:
    # A churner the OOM killer took.
    if a.churn and (churner is None or churner.poll() is not None):
        start_churn()
    time.sleep(0.2)
