/* SPDX-License-Identifier: MIT */
/*
 * The daemon's hands on cgroups: writing memory.high, killing a cgroup,
 * and asking libcgroup where a process is.  This is the only file that
 * includes <libcgroup.h>; its ECG* codes become -errno here.  Writes take
 * a directory from the caller, so tests use fixture trees.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Write `bytes` to <dir>/memory.high ("max" for UINT64_MAX).  Returns 0 or
 * -errno (-ENOENT: no memory.high there, e.g. cgroup v1).
 */
int cgrp_write_high(const char *dir, uint64_t bytes);

#define CGRP_KILL_ROUNDS 10             /* walks of the subtree, at most */
#define CGRP_KILL_DEPTH 32              /* nested cgroups walked, at most */

/*
 * Kill every process of the cgroup at `dir` and of every cgroup below it:
 * write "1" to cgroup.kill (Linux 5.14+, which takes the subtree); or,
 * without it (cgroup v1), freeze the subtree with cgroup.freeze of
 * `freeze_dir` (its cgroup2 mirror on a hybrid host; NULL or absent: no
 * freezing), SIGKILL each pid of each cgroup.procs of the subtree, walking
 * it again until a walk finds nobody new (at most CGRP_KILL_ROUNDS: a process
 * that forks while not frozen is caught by the next walk), then thaw.
 * Returns the number of processes signalled (cgroup.kill: 1 when written),
 * or -errno.  `*ret_frozen` (may be NULL) says whether the subtree was
 * frozen.
 */
int cgrp_kill(const char *dir, const char *freeze_dir, bool *ret_frozen);

/*
 * The cgroup v1 memory controller path of `pid` ("/system.slice/x.service",
 * relative to the controller's mount), from libcgroup, which knows the
 * controller mounts of hybrid hosts.  The caller frees it.  Returns 0,
 * -ENOENT when the memory controller is not mounted on v1 (pure cgroup2:
 * libcgroup 2.0 cannot map a pid to a unified path, so the caller reads
 * /proc/PID/cgroup), -ESRCH when the process is gone, or another -errno.
 */
int cgrp_pid_v1_memory(pid_t pid, char **ret);
