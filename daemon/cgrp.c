/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <dirent.h>
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

/* The pids signalled so far: a dead process stays listed until it is
 * reaped, and must not count twice nor make the walk go on. */
struct killed {
	pid_t *pids;
	size_t n, cap;
};

static bool killed_has(const struct killed *k, pid_t pid)
{
	for (size_t i = 0; i < k->n; i++)
		if (k->pids[i] == pid)
			return true;
	return false;
}

static void killed_add(struct killed *k, pid_t pid)
{
	if (k->n == k->cap) {
		size_t cap = k->cap ? 2 * k->cap : 64;
		pid_t *p = realloc(k->pids, cap * sizeof(*p));

		if (!p)
			return;         /* counted again next walk, at worst */
		k->pids = p;
		k->cap = cap;
	}
	k->pids[k->n++] = pid;
}

/* SIGKILL the pids not signalled yet of `dirfd`'s cgroup.procs and of the
 * cgroups below it; the count signalled, or -errno when `dirfd`'s own list
 * cannot be read. */
static int kill_tree(int dirfd, unsigned depth, struct killed *k)
{
	_cleanup_fclose_ FILE *f = NULL;
	DIR *d;
	struct dirent *e;
	int n = 0, fd, pid;

	fd = openat(dirfd, "cgroup.procs", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "re");
	if (!f) {
		close(fd);
		return -errno;
	}
	while (fscanf(f, "%d", &pid) == 1)
		if (pid > 0 && !killed_has(k, pid) && kill(pid, SIGKILL) == 0) {
			killed_add(k, pid);
			n++;
		}
	if (depth >= CGRP_KILL_DEPTH)
		return n;

	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return n;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return n;
	}
	while ((e = readdir(d))) {
		int sub, r;

		if (e->d_name[0] == '.' || (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN))
			continue;
		/* Never through a symlink: only the cgroups below. */
		sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			continue;
		r = kill_tree(sub, depth + 1, k);
		close(sub);
		if (r > 0)
			n += r;
	}
	closedir(d);
	return n;
}

int cgrp_kill(const char *dir, const char *freeze_dir, bool *ret_frozen)
{
	_cleanup_close_ int dirfd = -1;
	struct killed k = { 0 };
	bool frozen = false;
	int total = 0, r;

	r = write_file(dir, "cgroup.kill", "1\n");
	if (r == 0) {
		if (ret_frozen)
			*ret_frozen = false;
		return 1;
	}
	if (r != -ENOENT)
		return r;

	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	/* Frozen, nobody forks a new process between the walk and the
	 * kill; SIGKILL still ends a frozen process. */
	frozen = freeze_dir && write_file(freeze_dir, "cgroup.freeze", "1\n") == 0;
	for (int round = 0; round < CGRP_KILL_ROUNDS; round++) {
		r = kill_tree(dirfd, 0, &k);
		if (r < 0) {
			if (round == 0)
				total = r;
			break;
		}
		total += r;
		if (r == 0)
			break;
	}
	free(k.pids);
	if (frozen)
		(void)write_file(freeze_dir, "cgroup.freeze", "0\n");
	if (ret_frozen)
		*ret_frozen = frozen;
	return total;
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
