/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdio.h>
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
