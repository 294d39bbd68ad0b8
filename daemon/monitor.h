/* SPDX-License-Identifier: MIT */
/*
 * memguardd's eyes: readers of PSI and cgroup memory files.
 *
 * Three layers, each usable alone:
 *   - pure parsers over a buffer (no I/O, no allocation except where a
 *     string is returned), so tests and the fuzzer reach them directly;
 *   - struct monitor_cgroup: one service's cgroup with its files held
 *     open and re-read with pread() on every tick;
 *   - PSI triggers, the host reader and cgroup discovery.
 *
 * Every /proc or /sys path is a parameter, so tests run on fixture trees.
 * Nothing here logs: functions return 0 (or a count) or -errno, and write
 * their ret_* arguments only on success.
 *
 * Units: sizes in bytes, PSI averages in hundredths of a percent
 * (12.34 % = 1234), PSI totals and trigger times in microseconds.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/macro.h"
#include "proto/proto.h"

#define MONITOR_UNLIMITED UINT64_MAX          /* a limit of "max" */
#define MONITOR_LIMIT_HUGE (UINT64_C(1) << 62) /* bytes; limits ≥ this are "max" */
#define MONITOR_PSI_WINDOW_STEP 2000000       /* us; unprivileged window granule */
#define MONITOR_READ_MAX (4 * 1024 * 1024)    /* bytes; largest /proc file read */

/* One line of a PSI file ("some avg10=0.12 avg60=0.05 avg300=0.01 total=N"). */
struct monitor_psi_line {
	uint32_t avg10;                  /* hundredths of a percent */
	uint32_t avg60;                  /* hundredths of a percent */
	uint32_t avg300;                 /* hundredths of a percent */
	uint64_t total;                  /* us stalled since boot / cgroup birth */
};

struct monitor_psi {
	struct monitor_psi_line some;
	struct monitor_psi_line full;    /* all 0 when has_full is false */
	bool has_full;                   /* false on old kernels' host cpu file */
};

/* Counters of memory.events (cumulative since the cgroup was created). */
struct monitor_memory_events {
	uint64_t low;
	uint64_t high;
	uint64_t max;
	uint64_t oom;
	uint64_t oom_kill;
	uint64_t oom_group_kill;         /* 0 when has_oom_group_kill is false */
	bool has_oom_group_kill;         /* printed by newer kernels only */
};

/* The memory.stat fields the daemon uses, in bytes. */
struct monitor_memory_stat {
	uint64_t anon;                   /* v2 "anon", v1 "total_rss" */
	uint64_t file;                   /* v2 "file", v1 "total_cache" */
	uint64_t inactive_file;          /* v2 "inactive_file", v1 "total_inactive_file" */
};

/* cgroup v1 memory.oom_control. */
struct monitor_oom_control {
	bool oom_kill_disable;           /* false when absent */
	bool under_oom;
	uint64_t oom_kill;               /* 0 on kernels before 4.13 that lack it */
};

struct monitor_meminfo {
	uint64_t total;                  /* bytes, MemTotal */
	uint64_t available;              /* bytes, MemAvailable */
};

/* Where the cgroup hierarchies are mounted. */
struct monitor_roots {
	char *v2;                        /* cgroup2 mount point; NULL if none */
	char *v1_memory;                 /* v1 memory mount point; NULL on pure v2 */
};

/* One tick's view of a service's cgroup; see monitor_cgroup_read(). */
struct monitor_sample {
	bool v1;                         /* memory numbers came from cgroup v1 */
	bool first;                      /* first read: every *_delta is 0 */
	uint64_t current;                /* bytes: memory.current (v1 usage_in_bytes) */
	uint64_t working_set;            /* bytes: current − inactive_file, ≥ 0 */
	struct monitor_memory_stat stat;
	uint64_t max;                    /* bytes: memory.max (v1 limit_in_bytes);
					  * MONITOR_UNLIMITED = none */
	uint64_t high;                   /* bytes: memory.high; MONITOR_UNLIMITED =
					  * none, or unknown (v1: high_known false) */
	bool high_known;                 /* false on v1, which has no memory.high */
	bool under_oom;                  /* v1 oom_control; always false on v2 */
	/*
	 * Totals and growth since the previous successful read.  On v1,
	 * events.max is memory.failcnt plus memory.memsw.failcnt (with swap
	 * accounting), events.oom_kill comes from oom_control, and low,
	 * high and oom stay 0.  A counter that went
	 * backwards (v1 failcnt can be reset by writing 0) counts its whole
	 * new value as growth.
	 */
	struct monitor_memory_events events;
	struct monitor_memory_events events_delta;
	bool has_psi;                    /* memory.pressure exists and was read */
	struct monitor_psi psi;          /* all 0 when has_psi is false */
	uint64_t some_total_delta;       /* us stalled (some) since the previous read */
	uint64_t full_total_delta;       /* us stalled (full) since the previous read */
};

struct monitor_host {
	bool has_psi;                    /* false when the kernel has no PSI */
	struct monitor_psi psi;          /* /proc/pressure/memory; 0 when !has_psi */
	struct monitor_meminfo mem;
};

/* monitor-parse.c: pure parsers */

/*
 * The buffers need not be NUL-terminated and may hold any bytes.  A last
 * line without '\n' is parsed like the others.  Numbers are plain decimal
 * digits (no sign, no spaces inside).  Unless said otherwise, parsers
 * return 0, -EBADMSG when the input is malformed or a required field is
 * missing or repeated, and -ERANGE when a number does not fit its field.
 * Lines with unknown keys are ignored, so newer kernels still parse.
 */

/*
 * A PSI file: a "some" line and an optional "full" line, each with avg10,
 * avg60, avg300 (a percentage with 0 to 2 decimals, e.g. "1.5" = 150) and
 * total (us).  More than 2 decimals is -EBADMSG (the kernel prints 2).
 */
int monitor_parse_psi(const char *buf, size_t len, struct monitor_psi *ret);

/*
 * memory.stat.  `v1` selects the hierarchical v1 keys (total_rss,
 * total_cache, total_inactive_file) instead of v2's (anon, file,
 * inactive_file).  All three are required.
 */
int monitor_parse_memory_stat(const char *buf, size_t len, bool v1,
			      struct monitor_memory_stat *ret);

/* memory.events (or memory.events.local): low, high, max, oom and oom_kill
 * are required, oom_group_kill optional. */
int monitor_parse_memory_events(const char *buf, size_t len,
				struct monitor_memory_events *ret);

/* v1 memory.oom_control: under_oom required; oom_kill and oom_kill_disable
 * optional (0 / false). */
int monitor_parse_oom_control(const char *buf, size_t len,
			      struct monitor_oom_control *ret);

/*
 * A file holding one number, with blanks or newlines around it (e.g.
 * memory.current, memory.usage_in_bytes, memory.failcnt).  "max" is
 * -EBADMSG here; use monitor_parse_limit() for limits.
 */
int monitor_parse_u64(const char *buf, size_t len, uint64_t *ret);

/*
 * A limit file (memory.max, memory.high, v1 memory.limit_in_bytes): "max"
 * or a number of bytes.  Both "max" and numbers ≥ MONITOR_LIMIT_HUGE (v1
 * prints 9223372036854771712 for "no limit") give MONITOR_UNLIMITED.  A
 * number too big for 64 bits is still -ERANGE.
 */
int monitor_parse_limit(const char *buf, size_t len, uint64_t *ret);

/* /proc/meminfo: MemTotal and MemAvailable, both required and in kB (the
 * unit must be present), returned in bytes. */
int monitor_parse_meminfo(const char *buf, size_t len,
			  struct monitor_meminfo *ret);

/*
 * /proc/PID/cgroup: the cgroup2 path (the "0::/path" line) and the v1
 * memory path (the line whose controller list contains "memory").  The
 * paths are returned as found, starting with '/' (a removed v2 cgroup
 * keeps the " (deleted)" the kernel appends), in new strings the caller
 * frees; the one not present is set to NULL.  Returns 0 when at least one
 * was found, -ENOENT when neither was, -EBADMSG on a malformed line or
 * when either line appears twice, -ENOMEM.
 */
int monitor_parse_pid_cgroup(const char *buf, size_t len, char **ret_v2,
			     char **ret_v1);

/*
 * /proc/self/mountinfo: the mount points of cgroup2 (/sys/fs/cgroup on
 * pure v2 hosts, /sys/fs/cgroup/unified on hybrid ones) and of the v1
 * hierarchy whose super options contain "memory".  Only mounts of a
 * hierarchy's root are considered (a bind mount of a subtree would not
 * match the paths of /proc/PID/cgroup); the first of each kind wins.
 * Octal escapes (\040) are decoded.  Fills `ret` with new strings (free
 * with monitor_roots_done()); returns 0 when at least one was found,
 * -ENOENT when neither was, -EBADMSG on a malformed line, -ENOMEM.
 */
int monitor_parse_mountinfo(const char *buf, size_t len,
			    struct monitor_roots *ret);

/* Free the strings of `r` and set them to NULL.  Accepts NULL. */
void monitor_roots_done(struct monitor_roots *r);

/* monitor.c: a service's cgroup */

struct monitor_cgroup;

/*
 * Open the cgroup at `path` (relative, with or without a leading '/';
 * "" or "/" is the root) below `v2_root`, and, when `v1_memory_root` is
 * not NULL (hybrid host), below it as well.  Memory numbers come from the
 * v1 directory when there is one and from the v2 directory otherwise;
 * memory.pressure always comes from the v2 directory.  The files are
 * opened once, O_RDONLY|O_CLOEXEC, and held.
 *
 * Returns 0; -ENODEV when a directory does not exist (the service is
 * absent); -EOPNOTSUPP when a directory exists but lacks a memory file
 * (memory controller not enabled for it); -EINVAL when `path` has a ".."
 * component; -ENOMEM; or another -errno from open().  A missing
 * memory.pressure (kernel without PSI) is not an error: samples then say
 * has_psi = false.
 */
int monitor_cgroup_open(const char *v2_root, const char *v1_memory_root,
			const char *path, struct monitor_cgroup **ret);

/* Close the files and free.  Accepts NULL; returns NULL. */
struct monitor_cgroup *monitor_cgroup_free(struct monitor_cgroup *cg);
DEFINE_FREE_FUNC(struct monitor_cgroup, monitor_cgroup_free)

/*
 * Read every held file (pread at offset 0, no reopening) into `ret`, with
 * the counters' growth since the previous successful read.  Returns 0;
 * -ENODEV when the cgroup has been removed (the caller marks the service
 * absent and later opens it anew); -EBADMSG/-ERANGE when a file does not
 * parse; another -errno from pread().  On failure the previous read stays
 * the base of the next deltas.
 */
int monitor_cgroup_read(struct monitor_cgroup *cg, struct monitor_sample *ret);

/*
 * The held memory.events fd (v2 only; -1 on hybrid hosts, where the tick
 * alone notices v1 failcnt/oom_kill growth).  The caller adds it to its
 * event loop for EPOLLPRI and calls monitor_cgroup_read() when it fires.
 * kernfs reports a change of the file as POLLPRI|POLLERR, and the removal
 * of the cgroup the same way, so on this fd POLLERR does not mean the
 * cgroup is gone: the read tells the two apart (0, or -ENODEV).  The read
 * through this fd is also what re-arms the notification; until then the
 * fd stays ready.
 * Owned by `cg`; do not close.
 */
int monitor_cgroup_events_fd(const struct monitor_cgroup *cg);

/*
 * Between ticks: re-read only memory.current (v1 memory.usage_in_bytes)
 * into `*ret_current`, one pread.  The working set is then that less the
 * inactive_file of the last monitor_cgroup_read(); counters and deltas are
 * left alone.  Returns 0, -ENODEV when the cgroup has been removed,
 * -EBADMSG/-ERANGE, or another -errno.
 */
int monitor_cgroup_read_current(struct monitor_cgroup *cg, uint64_t *ret_current);

/*
 * cgroup v1 only: a kernel notification when memory.usage_in_bytes crosses
 * `bytes`, upwards or downwards (cgroup.event_control with an eventfd).
 * The returned eventfd (O_CLOEXEC|O_NONBLOCK) becomes readable at each
 * crossing; read its 8-byte counter to re-arm.  Closing it removes the
 * threshold.  Returns 0; -EOPNOTSUPP without a v1 directory (pure v2:
 * use memory.events and PSI); -ENODEV when the cgroup is gone; another
 * -errno from open(), eventfd() or the write (EPERM, EACCES: not allowed).
 * Usage counts page cache that the working set does not, so the
 * notification comes no later than the working set's crossing.
 */
int monitor_cgroup_threshold_open(const struct monitor_cgroup *cg, uint64_t bytes,
				  int *ret_fd);

/* The cgroup's v2 directory, e.g. to build the path of memory.pressure for
 * monitor_psi_trigger_open(); valid until monitor_cgroup_free(). */
const char *monitor_cgroup_v2_path(const struct monitor_cgroup *cg);

/* monitor.c: PSI triggers */

/*
 * How a trigger is armed; tests replace it to inject the kernel's answers.
 * arm() opens `path` O_RDWR|O_NONBLOCK|O_CLOEXEC and writes the
 * NUL-terminated `trigger` to it; it returns the fd, or -errno from
 * open() or write() (having closed the fd).
 */
struct monitor_psi_ops {
	int (*arm)(const char *path, const char *trigger, void *userdata);
	void *userdata;
};

/*
 * Arm a PSI trigger "some <threshold_us> <window_us>" on `path` (a
 * cgroup's memory.pressure or /proc/pressure/memory), going down the
 * ladder: the configured window (mode MG_PSI_TRIGGER); when the kernel
 * answers EINVAL, which it does without CAP_SYS_RESOURCE for windows not a
 * multiple of 2 s, the window rounded up to the next multiple of 2 s
 * and the threshold scaled with it (the same share of time stalled)
 * (MG_PSI_TRIGGER_ROUNDED; skipped when the window already is one); when
 * that fails too, or the file is not writable (EACCES, EPERM, EROFS) or
 * not the kernel's (not on cgroup2 or proc, e.g. a fixture tree), no
 * trigger (MG_PSI_POLLING, *ret_fd = -1): the caller reads the averages on
 * every tick.
 *
 * The caller polls the fd for POLLPRI (the stall threshold was crossed
 * within a window; the kernel fires at most once per window) and closes it
 * when done.  POLLERR on the fd means the cgroup was removed (the kernel
 * then sets POLLPRI too, so test POLLERR first): close it and treat the
 * service as absent.  Unlike memory.events, a live trigger never reports
 * POLLERR.
 *
 * Returns 0 and sets *ret_fd and *ret_mode; -EINVAL when threshold_us or
 * window_us is 0 or threshold_us > window_us (a configuration error,
 * reported rather than hidden behind polling); -ENODEV when `path` does
 * not exist (cgroup gone, or no PSI in the kernel); another -errno
 * (EMFILE, ENOMEM…).
 */
int monitor_psi_trigger_open(const char *path, uint32_t threshold_us,
			     uint32_t window_us, int *ret_fd,
			     enum mg_psi_mode *ret_mode);

/* The same with injected `ops`; NULL ops means the real open()/write(). */
int monitor_psi_trigger_open_with(const struct monitor_psi_ops *ops,
				  const char *path, uint32_t threshold_us,
				  uint32_t window_us, int *ret_fd,
				  enum mg_psi_mode *ret_mode);

/* monitor.c: host and discovery */

/*
 * Read host PSI from `pressure_path` (/proc/pressure/memory) and MemTotal
 * and MemAvailable from `meminfo_path` (/proc/meminfo).  A missing
 * pressure file (kernel without PSI) gives has_psi = false, not an error.
 * Returns 0, -errno from reading, or a parser's error.
 */
int monitor_host_read(const char *pressure_path, const char *meminfo_path,
		      struct monitor_host *ret);

/*
 * Find the cgroup mount points from `mountinfo_path` (/proc/self/mountinfo);
 * see monitor_parse_mountinfo() for what is returned.  Returns 0, -errno
 * from reading, or the parser's error (-ENOENT: no cgroup mounted).
 */
int monitor_discover(const char *mountinfo_path, struct monitor_roots *ret);

/*
 * The cgroup paths of process `pid` from `<proc_root>/<pid>/cgroup`; see
 * monitor_parse_pid_cgroup() for the strings returned.  Returns 0, -ESRCH
 * when the process does not exist, -errno from reading, or the parser's
 * error.
 */
int monitor_pid_cgroup(const char *proc_root, pid_t pid, char **ret_v2_path,
		       char **ret_v1_path);
