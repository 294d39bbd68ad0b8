/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libcgroup.h>
#include <linux/magic.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "cgrp.h"
#include "proto/macro.h"

static int write_file(const char *dir, const char *name, const char *value)
{
	_cleanup_close_ int fd = -1;
	char path[4096];
	size_t n = strlen(value);
	struct statfs sfs;
	ssize_t w;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return -ENAMETOOLONG;
	/* No O_CREAT: in a real cgroup the file exists or the feature does
	 * not; creating one would hide that. */
	fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	w = write(fd, value, n);
	if (w < 0)
		return -errno;
	if ((size_t)w != n)
		return -EIO;
	/* A control file takes the value whole; a regular file of a fixture
	 * tree would keep stale bytes past the new end. */
	if (fstatfs(fd, &sfs) == 0 && sfs.f_type != CGROUP2_SUPER_MAGIC &&
	    sfs.f_type != CGROUP_SUPER_MAGIC && ftruncate(fd, (off_t)n) < 0)
		return -errno;
	return 0;
}

int cgrp_write_high(const char *dir, uint64_t bytes)
{
	char v[32];

	if (bytes == UINT64_MAX)
		snprintf(v, sizeof(v), "max\n");
	else
		snprintf(v, sizeof(v), "%" PRIu64 "\n", bytes);
	return write_file(dir, "memory.high", v);
}

int cgrp_kill(const char *dir)
{
	_cleanup_fclose_ FILE *f = NULL;
	char path[4096];
	int n = 0, r, pid;

	r = write_file(dir, "cgroup.kill", "1\n");
	if (r == 0)
		return 1;
	if (r != -ENOENT)
		return r;

	if ((size_t)snprintf(path, sizeof(path), "%s/cgroup.procs", dir) >= sizeof(path))
		return -ENAMETOOLONG;
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fscanf(f, "%d", &pid) == 1)
		if (pid > 0 && kill(pid, SIGKILL) == 0)
			n++;
	return n;
}

/* libcgroup's codes as errno values. */
static int ecg_to_errno(int ecg)
{
	switch (ecg) {
	case 0:
		return 0;
	case ECGROUPNOTMOUNTED:
	case ECGROUPSUBSYSNOTMOUNTED:
	case ECGROUPNOTEXIST:
		return -ENOENT;
	case ECGROUPNOTALLOWED:
	case ECGROUPNOTOWNER:
		return -EPERM;
	case ECGINVAL:
		return -EINVAL;
	case ECGROUPUNSUPP:
		return -EOPNOTSUPP;
	case ECGOTHER: {
		int e = cgroup_get_last_errno();

		return e > 0 ? -e : -EIO;
	}
	default:
		return -EIO;
	}
}

int cgrp_pid_v1_memory(pid_t pid, char **ret)
{
	static int init_result = 1;      /* 1: not tried yet */
	char *path = NULL;
	int r;

	/* cgroup_init() reads the mount table once; the daemon is single
	 * threaded, so no lock. */
	if (init_result == 1)
		init_result = ecg_to_errno(cgroup_init());
	if (init_result < 0)
		return init_result;

	r = cgroup_get_current_controller_path(pid, "memory", &path);
	if (r != 0) {
		r = ecg_to_errno(r);
		/* A vanished /proc/PID/cgroup comes back as ECGOTHER/ENOENT. */
		if (r == -ENOENT && kill(pid, 0) < 0 && errno == ESRCH)
			r = -ESRCH;
		free(path);
		return r;
	}
	if (!path)
		return -ENOENT;
	*ret = path;
	return 0;
}
