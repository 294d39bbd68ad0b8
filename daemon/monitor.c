/* SPDX-License-Identifier: MIT */
/*
 * PSI and cgroup readers for memguardd.  See monitor.h for the contracts.
 *
 * The parsers walk (pointer, length) buffers and never assume a NUL, so
 * anything the kernel, a fixture or the fuzzer hands them is safe to
 * parse; numbers are checked for overflow before they are built.
 */
#include "config.h"

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

/* --- tokens ------------------------------------------------------------ */

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* The next line of [*pos, end) without its '\n'; false at the end. */
static bool line_next(const char **pos, const char *end, const char **ret_s,
		      size_t *ret_n)
{
	const char *p = *pos, *nl;

	if (p >= end)
		return false;
	nl = memchr(p, '\n', (size_t)(end - p));
	*ret_s = p;
	if (nl) {
		*ret_n = (size_t)(nl - p);
		*pos = nl + 1;
	} else {
		*ret_n = (size_t)(end - p);
		*pos = end;
	}
	return true;
}

/* The next blank-separated token of [*pos, end); false when none is left. */
static bool tok_next(const char **pos, const char *end, const char **ret_s,
		     size_t *ret_n)
{
	const char *p = *pos, *s;

	while (p < end && is_blank(*p))
		p++;
	if (p >= end) {
		*pos = p;
		return false;
	}
	s = p;
	while (p < end && !is_blank(*p))
		p++;
	*ret_s = s;
	*ret_n = (size_t)(p - s);
	*pos = p;
	return true;
}

static bool tok_eq(const char *s, size_t n, const char *lit)
{
	return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* Whether the comma-separated list [s, s+n) holds `item`. */
static bool list_has(const char *s, size_t n, const char *item)
{
	const char *end = s + n;

	while (s < end) {
		const char *comma = memchr(s, ',', (size_t)(end - s));
		const char *e = comma ? comma : end;

		if (tok_eq(s, (size_t)(e - s), item))
			return true;
		s = e + 1;
	}
	return false;
}

static bool all_digits(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* Plain decimal digits into a u64: -EBADMSG for anything else, -ERANGE
 * when it does not fit.  The shape is checked first, so garbage with many
 * digits is -EBADMSG, not -ERANGE. */
static int parse_digits(const char *s, size_t n, uint64_t *ret)
{
	uint64_t v = 0;

	if (!all_digits(s, n))
		return -EBADMSG;
	for (size_t i = 0; i < n; i++) {
		unsigned d = (unsigned)(s[i] - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*ret = v;
	return 0;
}

/*
 * "12.34" into 1234 hundredths, exactly: the kernel prints a PSI average
 * as an integer part and two decimals, so integers say it without the
 * rounding of a float.  "12" and "12.3" are accepted too.
 */
static int parse_centi(const char *s, size_t n, uint32_t *ret)
{
	const char *dot = memchr(s, '.', n);
	size_t ni = dot ? (size_t)(dot - s) : n;
	uint64_t ip, frac = 0;
	int r;

	if (dot) {
		const char *f = dot + 1;
		size_t nf = n - ni - 1;

		if (nf == 0 || nf > 2 || !all_digits(f, nf))
			return -EBADMSG;
		frac = (uint64_t)(f[0] - '0') * 10;
		if (nf == 2)
			frac += (uint64_t)(f[1] - '0');
	}
	r = parse_digits(s, ni, &ip);
	if (r < 0)
		return r;
	if (ip > (UINT32_MAX - frac) / 100)
		return -ERANGE;
	*ret = (uint32_t)(ip * 100 + frac);
	return 0;
}

/* Strip blanks and newlines from both ends of [*s, *s + *n). */
static void trim(const char **s, size_t *n)
{
	while (*n > 0 && (is_blank(**s) || **s == '\n')) {
		(*s)++;
		(*n)--;
	}
	while (*n > 0 && (is_blank((*s)[*n - 1]) || (*s)[*n - 1] == '\n'))
		(*n)--;
}

/* --- key/value files --------------------------------------------------- */

struct kv_field {
	const char *key;
	uint64_t *dst;
	bool required;
	bool seen;
};

/*
 * Lines of "key value" or, with a `unit`, "key value unit" (meminfo's
 * "MemTotal:   123 kB").  Known keys must be well formed and appear at
 * most once; unknown lines are skipped whatever they hold, so a kernel
 * that adds keys, or a value format we do not use, does not break us.
 */
static int parse_kv(const char *buf, size_t len, struct kv_field *fields,
		    size_t n_fields, const char *unit)
{
	const char *pos = buf, *end = buf + len, *line;
	size_t line_n;

	while (line_next(&pos, end, &line, &line_n)) {
		const char *lp = line, *lend = line + line_n, *t;
		struct kv_field *f = NULL;
		size_t tn;
		int r;

		if (!tok_next(&lp, lend, &t, &tn))
			continue;
		for (size_t i = 0; i < n_fields; i++)
			if (tok_eq(t, tn, fields[i].key)) {
				f = &fields[i];
				break;
			}
		if (!f)
			continue;
		if (f->seen)
			return -EBADMSG;
		if (!tok_next(&lp, lend, &t, &tn))
			return -EBADMSG;
		r = parse_digits(t, tn, f->dst);
		if (r < 0)
			return r;
		if (unit && (!tok_next(&lp, lend, &t, &tn) ||
			     !tok_eq(t, tn, unit)))
			return -EBADMSG;
		if (tok_next(&lp, lend, &t, &tn))
			return -EBADMSG;
		f->seen = true;
	}

	for (size_t i = 0; i < n_fields; i++)
		if (fields[i].required && !fields[i].seen)
			return -EBADMSG;
	return 0;
}

/* --- parsers ----------------------------------------------------------- */

enum {
	PSI_AVG10 = 1 << 0,
	PSI_AVG60 = 1 << 1,
	PSI_AVG300 = 1 << 2,
	PSI_TOTAL = 1 << 3,
	PSI_ALL = PSI_AVG10 | PSI_AVG60 | PSI_AVG300 | PSI_TOTAL,
};

/* The "key=value" tokens after "some" or "full". */
static int parse_psi_line(const char *pos, const char *end,
			  struct monitor_psi_line *ret)
{
	struct monitor_psi_line l = {};
	unsigned seen = 0;
	const char *t;
	size_t tn;

	while (tok_next(&pos, end, &t, &tn)) {
		const char *eq = memchr(t, '=', tn);
		const char *v;
		size_t kn, vn;
		unsigned bit;
		int r;

		if (!eq)
			return -EBADMSG;
		kn = (size_t)(eq - t);
		v = eq + 1;
		vn = tn - kn - 1;

		if (tok_eq(t, kn, "avg10"))
			bit = PSI_AVG10, r = parse_centi(v, vn, &l.avg10);
		else if (tok_eq(t, kn, "avg60"))
			bit = PSI_AVG60, r = parse_centi(v, vn, &l.avg60);
		else if (tok_eq(t, kn, "avg300"))
			bit = PSI_AVG300, r = parse_centi(v, vn, &l.avg300);
		else if (tok_eq(t, kn, "total"))
			bit = PSI_TOTAL, r = parse_digits(v, vn, &l.total);
		else
			continue;       /* a key a newer kernel added */
		if (r < 0)
			return r;
		if (seen & bit)
			return -EBADMSG;
		seen |= bit;
	}
	if (seen != PSI_ALL)
		return -EBADMSG;
	*ret = l;
	return 0;
}

int monitor_parse_psi(const char *buf, size_t len, struct monitor_psi *ret)
{
	struct monitor_psi psi = {};
	const char *pos = buf, *end = buf + len, *line;
	bool have_some = false;
	size_t line_n;

	while (line_next(&pos, end, &line, &line_n)) {
		const char *lp = line, *lend = line + line_n, *t;
		size_t tn;
		int r;

		if (!tok_next(&lp, lend, &t, &tn))
			continue;
		if (tok_eq(t, tn, "some")) {
			if (have_some)
				return -EBADMSG;
			r = parse_psi_line(lp, lend, &psi.some);
			have_some = true;
		} else if (tok_eq(t, tn, "full")) {
			if (psi.has_full)
				return -EBADMSG;
			r = parse_psi_line(lp, lend, &psi.full);
			psi.has_full = true;
		} else
			continue;
		if (r < 0)
			return r;
	}
	if (!have_some)
		return -EBADMSG;
	*ret = psi;
	return 0;
}

int monitor_parse_memory_stat(const char *buf, size_t len, bool v1,
			      struct monitor_memory_stat *ret)
{
	struct monitor_memory_stat st = {};
	/*
	 * v1 prints both the cgroup's own counters ("inactive_file") and the
	 * hierarchical ones ("total_inactive_file"); a service's cgroup has
	 * children (systemd's scopes), so only the total_ ones are its usage.
	 */
	struct kv_field fields[] = {
		{ v1 ? "total_rss" : "anon", &st.anon, true, false },
		{ v1 ? "total_cache" : "file", &st.file, true, false },
		{ v1 ? "total_inactive_file" : "inactive_file", &st.inactive_file,
		  true, false },
	};
	int r;

	r = parse_kv(buf, len, fields, ARRAY_SIZE(fields), /* unit= */ NULL);
	if (r < 0)
		return r;
	*ret = st;
	return 0;
}

int monitor_parse_memory_events(const char *buf, size_t len,
				struct monitor_memory_events *ret)
{
	struct monitor_memory_events ev = {};
	struct kv_field fields[] = {
		{ "low", &ev.low, true, false },
		{ "high", &ev.high, true, false },
		{ "max", &ev.max, true, false },
		{ "oom", &ev.oom, true, false },
		{ "oom_kill", &ev.oom_kill, true, false },
		{ "oom_group_kill", &ev.oom_group_kill, false, false },
	};
	int r;

	r = parse_kv(buf, len, fields, ARRAY_SIZE(fields), /* unit= */ NULL);
	if (r < 0)
		return r;
	ev.has_oom_group_kill = fields[5].seen;
	*ret = ev;
	return 0;
}

int monitor_parse_oom_control(const char *buf, size_t len,
			      struct monitor_oom_control *ret)
{
	uint64_t disable = 0, under = 0, kills = 0;
	struct kv_field fields[] = {
		{ "oom_kill_disable", &disable, false, false },
		{ "under_oom", &under, true, false },
		{ "oom_kill", &kills, false, false },
	};
	int r;

	r = parse_kv(buf, len, fields, ARRAY_SIZE(fields), /* unit= */ NULL);
	if (r < 0)
		return r;
	*ret = (struct monitor_oom_control){
		.oom_kill_disable = disable != 0,
		.under_oom = under != 0,
		.oom_kill = kills,
	};
	return 0;
}

int monitor_parse_u64(const char *buf, size_t len, uint64_t *ret)
{
	trim(&buf, &len);
	return parse_digits(buf, len, ret);
}

int monitor_parse_limit(const char *buf, size_t len, uint64_t *ret)
{
	uint64_t v;
	int r;

	trim(&buf, &len);
	if (tok_eq(buf, len, "max")) {
		*ret = MONITOR_UNLIMITED;
		return 0;
	}
	r = parse_digits(buf, len, &v);
	if (r < 0)
		return r;
	/*
	 * v1 says "no limit" with PAGE_COUNTER_MAX in bytes, which depends on
	 * the page size (9223372036854771712 with 4 KiB pages); nothing real
	 * comes near 2^62 bytes, so everything above counts as unlimited.
	 */
	*ret = v >= MONITOR_LIMIT_HUGE ? MONITOR_UNLIMITED : v;
	return 0;
}

int monitor_parse_meminfo(const char *buf, size_t len,
			  struct monitor_meminfo *ret)
{
	uint64_t total = 0, avail = 0;
	struct kv_field fields[] = {
		{ "MemTotal:", &total, true, false },
		{ "MemAvailable:", &avail, true, false },
	};
	int r;

	r = parse_kv(buf, len, fields, ARRAY_SIZE(fields), /* unit= */ "kB");
	if (r < 0)
		return r;
	if (total > UINT64_MAX / 1024 || avail > UINT64_MAX / 1024)
		return -ERANGE;
	*ret = (struct monitor_meminfo){
		.total = total * 1024,
		.available = avail * 1024,
	};
	return 0;
}

int monitor_parse_pid_cgroup(const char *buf, size_t len, char **ret_v2,
			     char **ret_v1)
{
	const char *pos = buf, *end = buf + len, *line;
	const char *v2 = NULL, *v1 = NULL;
	size_t v2_n = 0, v1_n = 0, line_n;
	_cleanup_free_ char *s2 = NULL, *s1 = NULL;

	while (line_next(&pos, end, &line, &line_n)) {
		const char *c1, *c2, *path, *lend = line + line_n;
		uint64_t id;
		size_t path_n;

		if (line_n == 0)
			continue;
		/* "ID:controller-list:path"; the path may hold ':'. */
		c1 = memchr(line, ':', line_n);
		if (!c1)
			return -EBADMSG;
		c2 = memchr(c1 + 1, ':', (size_t)(lend - c1 - 1));
		if (!c2)
			return -EBADMSG;
		if (parse_digits(line, (size_t)(c1 - line), &id) < 0)
			return -EBADMSG;
		path = c2 + 1;
		path_n = (size_t)(lend - path);
		if (path_n == 0 || path[0] != '/' || memchr(path, '\0', path_n))
			return -EBADMSG;

		if (id == 0) {
			/* The unified hierarchy: ID 0, no controllers. */
			if (c2 != c1 + 1 || v2)
				return -EBADMSG;
			v2 = path;
			v2_n = path_n;
		} else if (list_has(c1 + 1, (size_t)(c2 - c1 - 1), "memory")) {
			if (v1)
				return -EBADMSG;
			v1 = path;
			v1_n = path_n;
		}
	}
	if (!v2 && !v1)
		return -ENOENT;

	if (v2) {
		s2 = strndup(v2, v2_n);
		if (!s2)
			return -ENOMEM;
	}
	if (v1) {
		s1 = strndup(v1, v1_n);
		if (!s1)
			return -ENOMEM;
	}
	*ret_v2 = TAKE_PTR(s2);
	*ret_v1 = TAKE_PTR(s1);
	return 0;
}

static bool is_octal(char c, char max)
{
	return c >= '0' && c <= max;
}

/* A mountinfo path field with the kernel's octal escapes (\040 for a space)
 * decoded, as a new string; NULL with *ret_err set on failure. */
static char *unescape(const char *s, size_t n, int *ret_err)
{
	_cleanup_free_ char *out = malloc(n + 1);
	size_t o = 0;

	if (!out) {
		*ret_err = -ENOMEM;
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\' && n - i >= 4 && is_octal(s[i + 1], '3') &&
		    is_octal(s[i + 2], '7') && is_octal(s[i + 3], '7')) {
			out[o++] = (char)((s[i + 1] - '0') * 64 +
					  (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
			i += 3;
		} else
			out[o++] = s[i];
		/* A NUL, raw or escaped, would cut the path short. */
		if (out[o - 1] == '\0') {
			*ret_err = -EBADMSG;
			return NULL;
		}
	}
	out[o] = '\0';
	return TAKE_PTR(out);
}

int monitor_parse_mountinfo(const char *buf, size_t len,
			    struct monitor_roots *ret)
{
	const char *pos = buf, *end = buf + len, *line;
	_cleanup_free_ char *v2 = NULL, *v1 = NULL;
	size_t line_n;
	int r;

	while (line_next(&pos, end, &line, &line_n)) {
		/*
		 * "36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:15 -
		 *  cgroup cgroup rw,memory": six fields, optional fields, "-",
		 *  then fstype, source and super options.
		 */
		const char *lp = line, *lend = line + line_n;
		const char *f[6], *fs[3], *t;
		size_t fn[6], fsn[3], tn;
		uint64_t num;
		bool sep = false;
		char **dst;

		if (!tok_next(&lp, lend, &t, &tn))
			continue;
		f[0] = t;
		fn[0] = tn;
		for (size_t i = 1; i < 6; i++)
			if (!tok_next(&lp, lend, &f[i], &fn[i]))
				return -EBADMSG;
		while (tok_next(&lp, lend, &t, &tn))
			if (tok_eq(t, tn, "-")) {
				sep = true;
				break;
			}
		if (!sep)
			return -EBADMSG;
		for (size_t i = 0; i < 3; i++)
			if (!tok_next(&lp, lend, &fs[i], &fsn[i]))
				return -EBADMSG;
		if (tok_next(&lp, lend, &t, &tn))
			return -EBADMSG;
		if (parse_digits(f[0], fn[0], &num) < 0 ||
		    parse_digits(f[1], fn[1], &num) < 0)
			return -EBADMSG;
		if (fn[4] == 0 || f[4][0] != '/')
			return -EBADMSG;

		if (tok_eq(fs[0], fsn[0], "cgroup2"))
			dst = &v2;
		else if (tok_eq(fs[0], fsn[0], "cgroup") &&
			 list_has(fs[2], fsn[2], "memory"))
			dst = &v1;
		else
			continue;
		/* A subtree mount does not match /proc/PID/cgroup's paths. */
		if (*dst || !tok_eq(f[3], fn[3], "/"))
			continue;
		*dst = unescape(f[4], fn[4], &r);
		if (!*dst)
			return r;
	}
	if (!v2 && !v1)
		return -ENOENT;
	*ret = (struct monitor_roots){
		.v2 = TAKE_PTR(v2),
		.v1_memory = TAKE_PTR(v1),
	};
	return 0;
}

void monitor_roots_done(struct monitor_roots *r)
{
	if (!r)
		return;
	free(r->v2);
	free(r->v1_memory);
	r->v2 = r->v1_memory = NULL;
}

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

	if (!v2_root || !path || !ret)
		return -EINVAL;

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

	if (!cg || !ret)
		return -EINVAL;

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

	if (!cg || !ret_current)
		return -EINVAL;
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

	if (!cg || !ret_fd)
		return -EINVAL;
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

	if (!path || !ret_fd || !ret_mode)
		return -EINVAL;
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

	if (!pressure_path || !meminfo_path || !ret)
		return -EINVAL;

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

	if (!mountinfo_path || !ret)
		return -EINVAL;
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

	if (!proc_root || pid <= 0 || !ret_v2_path || !ret_v1_path)
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
