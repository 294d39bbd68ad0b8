/* SPDX-License-Identifier: MIT */
/*
 * PSI and cgroup readers for memguardd: a service's cgroup files held
 * open and re-read, PSI triggers, the host reader and discovery.  The
 * parsing is monitor-parse.c's.  See monitor.h for the contracts.
 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "daemon/monitor.h"
#include "proto/macro.h"

#define CGROUP_READ_BUF 16384          /* bytes; memory.stat is ~2 KiB */

/* --- reading files ----------------------------------------------------- */

/* The whole of a held file from offset 0.  -EFBIG when it fills `size`:
 * a cut-off file would parse as a different, wrong one.  A short read is
 * the end: kernfs gives a whole seq_file to one read with room for it, as
 * a regular file does, so a sample costs one read per file, not two. */
static int pread_all(int fd, char *buf, size_t size, size_t *ret_len)
{
	size_t n = 0;

	for (;;) {
		ssize_t k;

		if (n == size)
			return -EFBIG;
		k = pread(fd, buf + n, size - n, (off_t)n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		n += (size_t)k;
		if (k == 0 || n < size)
			break;
	}
	*ret_len = n;
	return 0;
}

/* A whole file, read sequentially into a new buffer (not NUL-terminated). */
static int read_file(const char *path, char **ret_buf, size_t *ret_len)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	size_t n = 0, size = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t k;

		if (n == size) {
			char *nb;

			if (size >= MONITOR_READ_MAX)
				return -EFBIG;
			size = size ? size * 2 : 4096;
			nb = realloc(buf, size);
			if (!nb)
				return -ENOMEM;
			buf = nb;
		}
		k = read(fd, buf + n, size - n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	*ret_buf = TAKE_PTR(buf);
	*ret_len = n;
	return 0;
}

/* --- a service's cgroup ------------------------------------------------ */

enum {
	CG_CURRENT,              /* memory.current / memory.usage_in_bytes */
	CG_STAT,                 /* memory.stat */
	CG_EVENTS,               /* v2 memory.events */
	CG_MAX,                  /* memory.max / memory.limit_in_bytes */
	CG_HIGH,                 /* v2 memory.high */
	CG_FAILCNT,              /* v1 memory.failcnt */
	CG_MEMSW_FAILCNT,        /* v1 memory.memsw.failcnt, with swap accounting */
	CG_OOM_CONTROL,          /* v1 memory.oom_control */
	CG_PRESSURE,             /* memory.pressure of the v2 directory */
	_CG_FILE_MAX,
};

static const char *const cg_v2_files[_CG_FILE_MAX] = {
	[CG_CURRENT] = "memory.current",
	[CG_STAT] = "memory.stat",
	[CG_EVENTS] = "memory.events",
	[CG_MAX] = "memory.max",
	[CG_HIGH] = "memory.high",
	[CG_PRESSURE] = "memory.pressure",
};

static const char *const cg_v1_files[_CG_FILE_MAX] = {
	[CG_CURRENT] = "memory.usage_in_bytes",
	[CG_STAT] = "memory.stat",
	[CG_MAX] = "memory.limit_in_bytes",
	[CG_FAILCNT] = "memory.failcnt",
	[CG_MEMSW_FAILCNT] = "memory.memsw.failcnt",
	[CG_OOM_CONTROL] = "memory.oom_control",
};

struct monitor_cgroup {
	char *v2_path;
	char *v1_path;                   /* NULL unless hybrid */
	int fd[_CG_FILE_MAX];            /* -1 where not used */
	bool have_prev;
	bool prev_has_psi;
	struct monitor_memory_events prev_events;
	uint64_t prev_some_total;
	uint64_t prev_full_total;
};

struct monitor_cgroup *monitor_cgroup_free(struct monitor_cgroup *cg)
{
	if (!cg)
		return NULL;
	for (size_t i = 0; i < _CG_FILE_MAX; i++)
		if (cg->fd[i] >= 0)
			close(cg->fd[i]);
	free(cg->v2_path);
	free(cg->v1_path);
	free(cg);
	return NULL;
}

/* `root` joined with the relative `path`; NULL with *ret_err on failure. */
static char *cg_join(const char *root, const char *path, int *ret_err)
{
	const char *p;
	char *s;

	while (*path == '/')
		path++;
	/* Paths come from configuration and from /proc; never climb out. */
	for (p = path; *p;) {
		size_t n = strcspn(p, "/");

		if (n == 2 && p[0] == '.' && p[1] == '.') {
			*ret_err = -EINVAL;
			return NULL;
		}
		p += n;
		while (*p == '/')
			p++;
	}
	if (asprintf(&s, "%s%s%s", root, *path ? "/" : "", path) < 0) {
		*ret_err = -ENOMEM;
		return NULL;
	}
	return s;
}

static bool is_gone(int err)
{
	return err == -ENOENT || err == -ENODEV || err == -ENOTDIR;
}

/* Open `names` (those not NULL) in directory `dir` into `fds`. */
static int cg_open_files(const char *dir, const char *const names[_CG_FILE_MAX],
			 int fds[_CG_FILE_MAX])
{
	_cleanup_close_ int dfd = -1;

	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		int err = -errno;

		return is_gone(err) ? -ENODEV : err;
	}

	for (size_t i = 0; i < _CG_FILE_MAX; i++) {
		if (!names[i])
			continue;
		fds[i] = openat(dfd, names[i], O_RDONLY | O_CLOEXEC);
		if (fds[i] >= 0)
			continue;
		if (errno != ENOENT)
			return -errno;
		/* PSI is compiled out or disabled: work from usage alone.
		 * No swap accounting (swapaccount=0): no memsw files. */
		if (i == CG_PRESSURE || i == CG_MEMSW_FAILCNT)
			continue;
		/*
		 * A file missing from a live directory means the memory
		 * controller is not enabled there; from a directory removed
		 * meanwhile, that the service went away.
		 */
		return access(dir, F_OK) < 0 ? -ENODEV : -EOPNOTSUPP;
	}
	return 0;
}

int monitor_cgroup_open(const char *v2_root, const char *v1_memory_root,
			const char *path, struct monitor_cgroup **ret)
{
	static const char *const pressure[_CG_FILE_MAX] = {
		[CG_PRESSURE] = "memory.pressure",
	};
	_cleanup_(monitor_cgroup_freep) struct monitor_cgroup *cg = NULL;
	int r = 0;

	assert(v2_root && path && ret);

	cg = calloc(1, sizeof(*cg));
	if (!cg)
		return -ENOMEM;
	for (size_t i = 0; i < _CG_FILE_MAX; i++)
		cg->fd[i] = -1;

	cg->v2_path = cg_join(v2_root, path, &r);
	if (!cg->v2_path)
		return r;
	if (v1_memory_root) {
		cg->v1_path = cg_join(v1_memory_root, path, &r);
		if (!cg->v1_path)
			return r;
		/* Hybrid: memory numbers from v1, only PSI from the v2 side. */
		r = cg_open_files(cg->v1_path, cg_v1_files, cg->fd);
		if (r >= 0)
			r = cg_open_files(cg->v2_path, pressure, cg->fd);
	} else
		r = cg_open_files(cg->v2_path, cg_v2_files, cg->fd);
	if (r < 0)
		return r;

	*ret = TAKE_PTR(cg);
	return 0;
}

int monitor_cgroup_events_fd(const struct monitor_cgroup *cg)
{
	return cg ? cg->fd[CG_EVENTS] : -1;
}

const char *monitor_cgroup_v2_path(const struct monitor_cgroup *cg)
{
	return cg ? cg->v2_path : NULL;
}

/* Growth of a cumulative counter; one that went backwards was reset, and
 * all of its new value is growth since then. */
static uint64_t delta(uint64_t now, uint64_t prev)
{
	return now >= prev ? now - prev : now;
}

/* Read held file `which` into buf and hand it to `parse`-style callers. */
static int cg_read(const struct monitor_cgroup *cg, int which, char *buf,
		   size_t size, size_t *ret_len)
{
	int r = pread_all(cg->fd[which], buf, size, ret_len);

	/* kernfs answers ENODEV on the fds of a removed cgroup. */
	return is_gone(r) ? -ENODEV : r;
}

static int cg_read_v2(const struct monitor_cgroup *cg, char *buf, size_t size,
		      struct monitor_sample *s)
{
	size_t n;
	int r;

	r = cg_read(cg, CG_CURRENT, buf, size, &n);
	if (r >= 0)
		r = monitor_parse_u64(buf, n, &s->current);
	if (r >= 0)
		r = cg_read(cg, CG_STAT, buf, size, &n);
	if (r >= 0)
		r = monitor_parse_memory_stat(buf, n, /* v1= */ false,
					      &s->stat);
	if (r >= 0)
		r = cg_read(cg, CG_EVENTS, buf, size, &n);
	if (r >= 0)
		r = monitor_parse_memory_events(buf, n, &s->events);
	if (r >= 0)
		r = cg_read(cg, CG_MAX, buf, size, &n);
	if (r >= 0)
		r = monitor_parse_limit(buf, n, &s->max);
	if (r >= 0)
		r = cg_read(cg, CG_HIGH, buf, size, &n);
	if (r >= 0)
		r = monitor_parse_limit(buf, n, &s->high);
	s->high_known = true;
	return r;
}

static int cg_read_v1(const struct monitor_cgroup *cg, char *buf, size_t size,
		      struct monitor_sample *s)
{
	struct monitor_oom_control oc;
	size_t n;
	int r;

	s->v1 = true;
	s->high = MONITOR_UNLIMITED;
	s->high_known = false;

	r = cg_read(cg, CG_CURRENT, buf, size, &n);
	if (r >= 0)
		r = monitor_parse_u64(buf, n, &s->current);
	if (r >= 0)
		r = cg_read(cg, CG_STAT, buf, size, &n);
	if (r >= 0)
		r = monitor_parse_memory_stat(buf, n, /* v1= */ true,
					      &s->stat);
	if (r >= 0)
		r = cg_read(cg, CG_MAX, buf, size, &n);
	if (r >= 0)
		r = monitor_parse_limit(buf, n, &s->max);
	/* failcnt counts charges refused at the limit: v2's "max" events. */
	if (r >= 0)
		r = cg_read(cg, CG_FAILCNT, buf, size, &n);
	if (r >= 0)
		r = monitor_parse_u64(buf, n, &s->events.max);
	/* With memory.memsw.limit_in_bytes set as low as the memory limit,
	 * the charges refused at it are counted here instead. */
	if (r >= 0 && cg->fd[CG_MEMSW_FAILCNT] >= 0) {
		uint64_t memsw;

		r = cg_read(cg, CG_MEMSW_FAILCNT, buf, size, &n);
		if (r >= 0)
			r = monitor_parse_u64(buf, n, &memsw);
		if (r >= 0)
			s->events.max += memsw;
	}
	if (r >= 0)
		r = cg_read(cg, CG_OOM_CONTROL, buf, size, &n);
	if (r >= 0)
		r = monitor_parse_oom_control(buf, n, &oc);
	if (r < 0)
		return r;
	s->events.oom_kill = oc.oom_kill;
	s->under_oom = oc.under_oom;
	return 0;
}

int monitor_cgroup_read(struct monitor_cgroup *cg, struct monitor_sample *ret)
{
	struct monitor_sample s = {};
	char buf[CGROUP_READ_BUF];
	int r;

	assert(cg && ret);

	r = cg->v1_path ? cg_read_v1(cg, buf, sizeof(buf), &s)
			: cg_read_v2(cg, buf, sizeof(buf), &s);
	if (r < 0)
		return r;

	if (cg->fd[CG_PRESSURE] >= 0) {
		size_t n;

		r = cg_read(cg, CG_PRESSURE, buf, sizeof(buf), &n);
		if (r >= 0) {
			r = monitor_parse_psi(buf, n, &s.psi);
			if (r < 0)
				return r;
			s.has_psi = true;
		} else if (r == -ENODEV) {
			/* The memory files answered: the cgroup is there, and
			 * its PSI was switched off (cgroup.pressure) since. */
			close(cg->fd[CG_PRESSURE]);
			cg->fd[CG_PRESSURE] = -1;
		} else if (r != -EOPNOTSUPP)
			/* EOPNOTSUPP: PSI switched off for this cgroup. */
			return r;
	}

	/*
	 * current and memory.stat are read a moment apart, so inactive_file
	 * can exceed current; the working set is then 0, never a wrapped u64.
	 */
	s.working_set = s.current > s.stat.inactive_file ?
				s.current - s.stat.inactive_file : 0;

	s.first = !cg->have_prev;
	if (cg->have_prev) {
		const struct monitor_memory_events *p = &cg->prev_events;

		s.events_delta = (struct monitor_memory_events){
			.low = delta(s.events.low, p->low),
			.high = delta(s.events.high, p->high),
			.max = delta(s.events.max, p->max),
			.oom = delta(s.events.oom, p->oom),
			.oom_kill = delta(s.events.oom_kill, p->oom_kill),
			.oom_group_kill = delta(s.events.oom_group_kill,
						p->oom_group_kill),
			.has_oom_group_kill = s.events.has_oom_group_kill,
		};
		/* Stall time is only comparable between two PSI reads. */
		if (s.has_psi && cg->prev_has_psi) {
			s.some_total_delta = delta(s.psi.some.total,
						   cg->prev_some_total);
			s.full_total_delta = delta(s.psi.full.total,
						   cg->prev_full_total);
		}
	} else
		s.events_delta.has_oom_group_kill = s.events.has_oom_group_kill;

	cg->have_prev = true;
	cg->prev_has_psi = s.has_psi;
	cg->prev_events = s.events;
	cg->prev_some_total = s.psi.some.total;
	cg->prev_full_total = s.psi.full.total;
	*ret = s;
	return 0;
}

int monitor_cgroup_read_current(struct monitor_cgroup *cg, uint64_t *ret_current)
{
	char buf[64];
	uint64_t v;
	size_t n;
	int r;

	assert(cg && ret_current);
	r = cg_read(cg, CG_CURRENT, buf, sizeof(buf), &n);
	if (r < 0)
		return r;
	r = monitor_parse_u64(buf, n, &v);
	if (r < 0)
		return r;
	*ret_current = v;
	return 0;
}

int monitor_cgroup_threshold_open(const struct monitor_cgroup *cg, uint64_t bytes,
				  int *ret_fd)
{
	_cleanup_close_ int efd = -1, ctl = -1, dfd = -1;
	char line[96];
	int n;

	assert(cg && ret_fd);
	if (!cg->v1_path)
		return -EOPNOTSUPP;
	dfd = open(cg->v1_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return is_gone(-errno) ? -ENODEV : -errno;
	ctl = openat(dfd, "cgroup.event_control", O_WRONLY | O_CLOEXEC);
	if (ctl < 0)
		return is_gone(-errno) ? -ENODEV : -errno;
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0)
		return -errno;
	/* "<eventfd> <fd of memory.usage_in_bytes> <threshold>": the kernel
	 * only looks the usage file up while handling the write, so the held
	 * fd serves, and nothing else stays open. */
	n = snprintf(line, sizeof(line), "%d %d %" PRIu64, efd, cg->fd[CG_CURRENT], bytes);
	if (write(ctl, line, (size_t)n) < 0)
		return is_gone(-errno) ? -ENODEV : -errno;
	*ret_fd = TAKE_FD(efd);
	return 0;
}

/* --- PSI triggers ------------------------------------------------------ */

static int psi_arm_default(const char *path, const char *trigger,
			   _unused_ void *userdata)
{
	_cleanup_close_ int fd = -1;
	size_t n = strlen(trigger) + 1;
	ssize_t k;

	struct statfs sfs;

	fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Only the kernel's files take triggers; a regular file (a fixture
	 * tree) would just be overwritten. */
	if (fstatfs(fd, &sfs) < 0)
		return -errno;
	if (sfs.f_type != CGROUP2_SUPER_MAGIC && sfs.f_type != PROC_SUPER_MAGIC)
		return -EOPNOTSUPP;
	/*
	 * The NUL goes too: the files in /proc/pressure overwrite the last
	 * byte written with one, which would otherwise eat the window's
	 * last digit.
	 */
	k = write(fd, trigger, n);
	if (k < 0)
		return -errno;
	if ((size_t)k != n)
		return -EIO;
	return TAKE_FD(fd);
}

/* Arm "some <threshold> <window>"; the fd or -errno. */
static int psi_arm(const struct monitor_psi_ops *ops, const char *path,
		   uint32_t threshold_us, uint32_t window_us)
{
	char trigger[64];

	snprintf(trigger, sizeof(trigger), "some %" PRIu32 " %" PRIu32,
		 threshold_us, window_us);
	return ops->arm(path, trigger, ops->userdata);
}

/* Errors after which polling the averages is all that is left. */
static bool psi_refused(int err)
{
	return err == -EINVAL || err == -EACCES || err == -EPERM ||
	       err == -EROFS || err == -EOPNOTSUPP;
}

int monitor_psi_trigger_open_with(const struct monitor_psi_ops *ops,
				  const char *path, uint32_t threshold_us,
				  uint32_t window_us, int *ret_fd,
				  enum mg_psi_mode *ret_mode)
{
	static const struct monitor_psi_ops default_ops = {
		.arm = psi_arm_default,
	};
	enum mg_psi_mode mode = MG_PSI_TRIGGER;
	uint64_t rounded;
	int fd;

	assert(path && ret_fd && ret_mode);
	if (threshold_us == 0 || window_us == 0 || threshold_us > window_us)
		return -EINVAL;
	if (!ops)
		ops = &default_ops;

	fd = psi_arm(ops, path, threshold_us, window_us);
	if (fd == -EINVAL) {
		/*
		 * Without CAP_SYS_RESOURCE the kernel takes only windows that
		 * are a multiple of 2 s: unprivileged triggers ride on its 2 s
		 * averaging work instead of a polling thread of their own.  A
		 * slightly longer window still catches the stalls; when the
		 * window already is a multiple, there is nothing to retry.
		 */
		rounded = ((uint64_t)window_us + MONITOR_PSI_WINDOW_STEP - 1) /
			  MONITOR_PSI_WINDOW_STEP * MONITOR_PSI_WINDOW_STEP;
		if (rounded != window_us && rounded <= UINT32_MAX) {
			/* The threshold is stall time per window: scale it
			 * with the window so the trigger still means the same
			 * share of time stalled. */
			uint64_t scaled = (uint64_t)threshold_us * rounded / window_us;

			mode = MG_PSI_TRIGGER_ROUNDED;
			fd = psi_arm(ops, path, (uint32_t)scaled, (uint32_t)rounded);
		}
	}
	if (fd < 0) {
		if (is_gone(fd))
			return -ENODEV;
		if (!psi_refused(fd))
			return fd;
		fd = -1;
		mode = MG_PSI_POLLING;
	}
	*ret_fd = fd;
	*ret_mode = mode;
	return 0;
}

int monitor_psi_trigger_open(const char *path, uint32_t threshold_us,
			     uint32_t window_us, int *ret_fd,
			     enum mg_psi_mode *ret_mode)
{
	return monitor_psi_trigger_open_with(NULL, path, threshold_us,
					     window_us, ret_fd, ret_mode);
}

/* --- host and discovery ------------------------------------------------ */

int monitor_host_read(const char *pressure_path, const char *meminfo_path,
		      struct monitor_host *ret)
{
	struct monitor_host h = {};
	_cleanup_free_ char *buf = NULL;
	size_t n;
	int r;

	assert(pressure_path && meminfo_path && ret);

	r = read_file(pressure_path, &buf, &n);
	if (r >= 0) {
		r = monitor_parse_psi(buf, n, &h.psi);
		if (r < 0)
			return r;
		h.has_psi = true;
	} else if (r != -ENOENT && r != -EOPNOTSUPP)
		/* ENOENT: kernel without PSI (or booted psi=0). */
		return r;
	free(TAKE_PTR(buf));

	r = read_file(meminfo_path, &buf, &n);
	if (r < 0)
		return r;
	r = monitor_parse_meminfo(buf, n, &h.mem);
	if (r < 0)
		return r;
	*ret = h;
	return 0;
}

int monitor_discover(const char *mountinfo_path, struct monitor_roots *ret)
{
	_cleanup_free_ char *buf = NULL;
	size_t n;
	int r;

	assert(mountinfo_path && ret);
	r = read_file(mountinfo_path, &buf, &n);
	if (r < 0)
		return r;
	return monitor_parse_mountinfo(buf, n, ret);
}

int monitor_pid_cgroup(const char *proc_root, pid_t pid, char **ret_v2_path,
		       char **ret_v1_path)
{
	_cleanup_free_ char *path = NULL, *buf = NULL;
	size_t n;
	int r;

	assert(proc_root && ret_v2_path && ret_v1_path);
	/* A peer in another pid namespace is pid 0 to us. */
	if (pid <= 0)
		return -EINVAL;
	if (asprintf(&path, "%s/%d/cgroup", proc_root, (int)pid) < 0)
		return -ENOMEM;
	r = read_file(path, &buf, &n);
	if (r == -ENOENT)
		return -ESRCH;
	if (r < 0)
		return r;
	return monitor_parse_pid_cgroup(buf, n, ret_v2_path, ret_v1_path);
}
