/* SPDX-License-Identifier: MIT */
/*
 * The pure parsers of monitor.h: PSI, memory.stat, memory.events,
 * oom_control, limits, meminfo, /proc/PID/cgroup and mountinfo.  No I/O:
 * the tests and the fuzzer (tests/fuzz/fuzz-monitor.c) reach them directly.
 *
 * The parsers walk (pointer, length) buffers and never assume a NUL, so
 * anything the kernel, a fixture or the fuzzer hands them is safe to
 * parse; numbers are checked for overflow before they are built.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/monitor.h"
#include "proto/macro.h"


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
