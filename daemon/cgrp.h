/* SPDX-License-Identifier: MIT */
/*
 * The daemon's writes to cgroups: memory.high and killing a cgroup.  Every
 * path is a directory given by the caller, so tests use fixture trees.
 */
#pragma once

#include <stdint.h>

/*
 * Write `bytes` to <dir>/memory.high ("max" for UINT64_MAX).  Returns 0 or
 * -errno (-ENOENT: no memory.high there, e.g. cgroup v1).
 */
int cgrp_write_high(const char *dir, uint64_t bytes);

/*
 * Kill every process of the cgroup at `dir`: write "1" to cgroup.kill
 * (Linux 5.14+) or, without it, SIGKILL each pid of cgroup.procs.  Returns
 * the number of processes signalled (cgroup.kill: 1 when written), or
 * -errno.
 */
int cgrp_kill(const char *dir);
