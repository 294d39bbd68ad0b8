/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/monitor-parse.c and daemon/monitor.c: the parsers on
 * fixture files from tests/data/monitor/ and on literal strings, whole fake
 * cgroup trees (pure v2 and hybrid) read through monitor_cgroup_open/read, the PSI trigger
 * ladder with injected kernel answers, discovery, and one test on a real
 * cgroup below our own.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/monitor.h"
#include "proto/macro.h"

#define MIB (UINT64_C(1) << 20)

/* --- helpers ----------------------------------------------------------- */

static char *data_path(const char *rel)
{
	const char *dir = getenv("MG_TEST_DATA");
	char *p;

	/* 'make check' sets MG_TEST_DATA; by hand, run from the source tree. */
	if (!dir)
		dir = "tests/data";
	assert_true(asprintf(&p, "%s/monitor/%s", dir, rel) > 0);
	return p;
}

/* Read a fixture into a new buffer (NUL-terminated for convenience). */
static char *slurp(const char *rel, size_t *ret_len)
{
	_cleanup_free_ char *path = data_path(rel);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t size = 0;

	if (!f)
		fail_msg("cannot open fixture %s: %s (set MG_TEST_DATA)", path, strerror(errno));
	assert_int_equal(getdelim(&buf, &size, '\0', f) >= 0, 1);
	*ret_len = strlen(buf);
	return buf;
}

/* Replace the contents of an existing file in place (same inode), as the
 * kernel's view of a cgroup file changes under a held fd. */
static void rewrite(const char *dir, const char *name, const char *text)
{
	_cleanup_free_ char *p = NULL;
	_cleanup_close_ int fd = -1;

	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	fd = open(p, O_WRONLY | O_TRUNC | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
}

static void copy_file(const char *src, const char *dst)
{
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
	_cleanup_close_ int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	char buf[4096];
	ssize_t n;

	assert_true(in >= 0);
	assert_true(out >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		assert_int_equal(write(out, buf, (size_t)n), n);
	assert_int_equal(n, 0);
}

static void copy_tree(const char *src, const char *dst)
{
	DIR *d = opendir(src);
	struct dirent *de;

	assert_non_null(d);
	while ((de = readdir(d))) {
		_cleanup_free_ char *s = NULL, *t = NULL;
		struct stat st;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		assert_true(asprintf(&s, "%s/%s", src, de->d_name) > 0);
		assert_true(asprintf(&t, "%s/%s", dst, de->d_name) > 0);
		assert_int_equal(lstat(s, &st), 0);
		if (S_ISDIR(st.st_mode)) {
			assert_int_equal(mkdir(t, 0755), 0);
			copy_tree(s, t);
		} else
			copy_file(s, t);
	}
	closedir(d);
}

static int rm_one(const char *path, _unused_ const struct stat *st, _unused_ int type,
		  _unused_ struct FTW *ftw)
{
	return remove(path);
}

/* A scratch copy of fixture tree `name`, in a new mkdtemp directory. */
struct tree {
	char root[64];
};

static int tree_setup(void **state, const char *name)
{
	struct tree *t = calloc(1, sizeof(*t));
	_cleanup_free_ char *src = data_path(name);

	assert_non_null(t);
	strcpy(t->root, "/tmp/test-monitor-XXXXXX");
	assert_non_null(mkdtemp(t->root));
	copy_tree(src, t->root);
	*state = t;
	return 0;
}

static int tree_setup_v2(void **state)
{
	return tree_setup(state, "tree-v2");
}

static int tree_setup_hybrid(void **state)
{
	return tree_setup(state, "tree-hybrid");
}

static int tree_teardown(void **state)
{
	struct tree *t = *state;

	if (t) {
		nftw(t->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
		free(t);
	}
	return 0;
}

/* --- PSI --------------------------------------------------------------- */

static void test_psi_fixture(_unused_ void **state)
{
	_cleanup_free_ char *buf = NULL;
	struct monitor_psi p;
	size_t n;

	buf = slurp("psi-memory", &n);
	assert_int_equal(monitor_parse_psi(buf, n, &p), 0);
	assert_int_equal(p.some.avg10, 123);
	assert_int_equal(p.some.avg60, 45);
	assert_int_equal(p.some.avg300, 6);
	assert_int_equal(p.some.total, 123456);
	assert_true(p.has_full);
	assert_int_equal(p.full.avg10, 50);
	assert_int_equal(p.full.avg60, 10);
	assert_int_equal(p.full.avg300, 1);
	assert_int_equal(p.full.total, 65432);
}

static void test_psi_some_only(_unused_ void **state)
{
	_cleanup_free_ char *buf = NULL;
	struct monitor_psi p;
	size_t n;

	memset(&p, 0xaa, sizeof(p));
	buf = slurp("psi-cpu-old", &n);
	assert_int_equal(monitor_parse_psi(buf, n, &p), 0);
	assert_false(p.has_full);
	assert_int_equal(p.full.avg10, 0);
	assert_int_equal(p.full.total, 0);
	assert_int_equal(p.some.total, 0);
}

static void test_psi_local(_unused_ void **state)
{
	_cleanup_free_ char *buf = NULL;
	struct monitor_psi p;
	size_t n;

	/* Captured from this kind of host's /proc/pressure/memory. */
	buf = slurp("psi-host-local", &n);
	assert_int_equal(monitor_parse_psi(buf, n, &p), 0);
	assert_true(p.has_full);
	assert_true(p.some.total >= p.full.total);
}

struct psi_case {
	const char *in;
	int r;
	uint32_t avg10, avg60, avg300;
	uint64_t total;
};

/* A whole valid line, and the rest of one after its avg10. */
#define SOME0 "some avg10=0 avg60=0 avg300=0 total=0"
#define FULL0 "full avg10=0 avg60=0 avg300=0 total=0"
#define REST0 " avg60=0 avg300=0 total=0"
#define BAD(s) { .in = (s), .r = -EBADMSG }
#define RANGE(s) { .in = (s), .r = -ERANGE }

static void test_psi_literals(_unused_ void **state)
{
	static const struct psi_case cases[] = {
		/* decimals: 0, 1 or 2 digits, exactly */
		{ "some avg10=5 avg60=5.1 avg300=99.99 total=1",
		  0, 500, 510, 9999, 1 },
		{ "some avg10=100.00 avg60=0.01 avg300=0.10 total=7\n",
		  0, 10000, 1, 10, 7 },
		/* unknown keys and lines are a newer kernel's, not errors */
		{ "some avg10=1.00 avg60=0 avg300=0 total=5 future=x\nnew 1\n",
		  0, 100, 0, 0, 5 },
		{ "\n\nsome  avg10=0.00\tavg60=0.00 avg300=0.00 total=9\n\n",
		  0, 0, 0, 0, 9 },
		/* largest values that fit */
		{ "some avg10=42949672.95 avg60=0 avg300=0 total=18446744073709551615",
		  0, UINT32_MAX, 0, 0, UINT64_MAX },
		/* overflow */
		RANGE("some avg10=42949672.96" REST0),
		RANGE("some avg10=99999999999999999999999" REST0),
		RANGE("some avg10=0 avg60=0 avg300=0 total=18446744073709551616"),
		/* truncated */
		BAD(""),
		BAD("som"),
		BAD("some"),
		BAD("some avg10=0.12 avg60="),
		BAD("some avg10=0.12 avg60=0.1 avg300=0.00"),
		BAD("some avg10=0.12 avg60=0.1 avg300=0.00 total"),
		/* missing "some" */
		BAD(FULL0 "\n"),
		/* garbage */
		BAD("\xff\xfe\x01"),
		BAD("some avg10=1.234" REST0),
		BAD("some avg10=-1" REST0),
		BAD("some avg10=+1" REST0),
		BAD("some avg10=.5" REST0),
		BAD("some avg10=1." REST0),
		BAD("some avg10=1e2" REST0),
		BAD("some avg10=1.2.3" REST0),
		BAD("some avg10 0.00" REST0),
		BAD("some avg10=0 avg60=0 avg300=0 total=0x10"),
		BAD("some avg10=0 avg60=0 avg300=0 total=99999999999999999999x"),
		/* repeated */
		BAD("some avg10=0 avg10=0" REST0),
		BAD(SOME0 "\n" SOME0),
		BAD(SOME0 "\n" FULL0 "\n" FULL0),
		/* a broken "full" line spoils the file */
		BAD(SOME0 "\nfull avg10=0 avg60=0"),
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const struct psi_case *c = &cases[i];
		struct monitor_psi p, sentinel;
		int r;

		memset(&p, 0x5a, sizeof(p));
		sentinel = p;
		r = monitor_parse_psi(c->in, strlen(c->in), &p);
		if (r != c->r)
			fail_msg("case %zu \"%s\": got %d, want %d", i, c->in, r, c->r);
		if (r < 0) {
			/* ret_* untouched on failure */
			assert_memory_equal(&p, &sentinel, sizeof(p));
			continue;
		}
		assert_int_equal(p.some.avg10, c->avg10);
		assert_int_equal(p.some.avg60, c->avg60);
		assert_int_equal(p.some.avg300, c->avg300);
		assert_int_equal(p.some.total, c->total);
	}

	/* Only the length bounds the input: a NUL is just a bad byte, and
	 * nothing past `len` is read (the tail here would be valid). */
	struct monitor_psi p;
	const char nul[] = "some avg10=0\0 avg60=0 avg300=0 total=0";
	const char *ok = "some avg10=0 avg60=0 avg300=0 total=12345";

	assert_int_equal(monitor_parse_psi(nul, sizeof(nul) - 1, &p), -EBADMSG);
	assert_int_equal(monitor_parse_psi(ok, strlen(ok) - 4, &p), 0);
	assert_int_equal(p.some.total, 1);
}

/* --- memory.stat, memory.events, oom_control -------------------------- */

static void test_memory_stat_fixtures(_unused_ void **state)
{
	_cleanup_free_ char *v2 = NULL, *v1 = NULL;
	struct monitor_memory_stat st;
	size_t n2, n1;

	v2 = slurp("memory.stat.v2", &n2);
	v1 = slurp("memory.stat.v1", &n1);

	assert_int_equal(monitor_parse_memory_stat(v2, n2, /* v1= */ false, &st), 0);
	assert_int_equal(st.anon, 104857600);
	assert_int_equal(st.file, 52428800);
	assert_int_equal(st.inactive_file, 41943040);

	/* Real v1 file from the test host: total_* are the hierarchical sums. */
	assert_int_equal(monitor_parse_memory_stat(v1, n1, /* v1= */ true, &st), 0);
	assert_int_equal(st.anon, 2043904);
	assert_int_equal(st.file, 276643840);
	assert_int_equal(st.inactive_file, 162394112);

	/* The wrong flavour lacks required keys. */
	assert_int_equal(monitor_parse_memory_stat(v1, n1, /* v1= */ false, &st), -EBADMSG);
	assert_int_equal(monitor_parse_memory_stat(v2, n2, /* v1= */ true, &st), -EBADMSG);

	/* Every truncation of the v2 file before its inactive_file line fails. */
	const char *cut = strstr(v2, "inactive_file ");
	assert_non_null(cut);
	for (size_t k = 0; k < (size_t)(cut - v2) + strlen("inactive_file "); k++)
		assert_int_equal(monitor_parse_memory_stat(v2, k, false, &st), -EBADMSG);
}

static void test_memory_stat_literals(_unused_ void **state)
{
	static const struct {
		const char *in;
		bool v1;
		int r;
	} cases[] = {
		{ "anon 1\nfile 2\ninactive_file 3", false, 0 },
		{ "total_rss 1\ntotal_cache 2\ntotal_inactive_file 3\ninactive_file 9\n", true, 0 },
		/* prefixes and suffixes of a key are other keys */
		{ "anon 1\nfile 2\ninactive_file_x 3\nx_inactive_file 4\n", false, -EBADMSG },
		{ "anon 1\nfile 2\ninactive_file 3\nweird line ! here\n\xff\n", false, 0 },
		{ "anon 1\nfile 2\n", false, -EBADMSG },
		{ "anon 1\nfile 2\ninactive_file\n", false, -EBADMSG },
		{ "anon 1\nfile 2\ninactive_file 3 4\n", false, -EBADMSG },
		{ "anon 1\nfile 2\ninactive_file -3\n", false, -EBADMSG },
		{ "anon 1\nfile 2\ninactive_file 3\nanon 4\n", false, -EBADMSG },
		{ "anon 1\nfile 2\ninactive_file 18446744073709551616\n", false, -ERANGE },
		{ "anon 18446744073709551615\nfile 2\ninactive_file 3\n", false, 0 },
		{ "", false, -EBADMSG },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct monitor_memory_stat st = { 7, 7, 7 };
		int r = monitor_parse_memory_stat(cases[i].in, strlen(cases[i].in), cases[i].v1,
						  &st);

		if (r != cases[i].r)
			fail_msg("case %zu: got %d, want %d", i, r, cases[i].r);
		if (r < 0)
			assert_int_equal(st.anon + st.file + st.inactive_file, 21);
	}
	{
		struct monitor_memory_stat st;
		const char *s = "total_rss 1\ntotal_cache 2\n"
				"total_inactive_file 3\ninactive_file 9\n";

		assert_int_equal(monitor_parse_memory_stat(s, strlen(s), true, &st), 0);
		assert_int_equal(st.inactive_file, 3);
	}
}

static void test_memory_events(_unused_ void **state)
{
	_cleanup_free_ char *buf = NULL;
	struct monitor_memory_events ev;
	const char *old = "low 0\nhigh 1\nmax 2\noom 3\noom_kill 4\n";
	size_t n;

	buf = slurp("memory.events", &n);
	assert_int_equal(monitor_parse_memory_events(buf, n, &ev), 0);
	assert_int_equal(ev.low, 0);
	assert_int_equal(ev.high, 17);
	assert_int_equal(ev.max, 3);
	assert_int_equal(ev.oom, 1);
	assert_int_equal(ev.oom_kill, 1);
	assert_true(ev.has_oom_group_kill);

	/* Kernels before 5.17 have no oom_group_kill. */
	assert_int_equal(monitor_parse_memory_events(old, strlen(old), &ev), 0);
	assert_false(ev.has_oom_group_kill);
	assert_int_equal(ev.oom_group_kill, 0);
	assert_int_equal(ev.oom_kill, 4);

	/* Missing (oom_kill cut off; then oom_group_kill's value cut off),
	 * repeated, overflowing, garbage. */
	size_t no_kill = strlen(old) - strlen("oom_kill 4\n");
	assert_int_equal(monitor_parse_memory_events(old, no_kill, &ev), -EBADMSG);
	assert_int_equal(monitor_parse_memory_events(buf, n - 3, &ev), -EBADMSG);
	const char *dup = "low 0\nhigh 1\nmax 2\noom 3\noom_kill 4\nhigh 5\n";
	assert_int_equal(monitor_parse_memory_events(dup, strlen(dup), &ev), -EBADMSG);
	const char *big = "low 0\nhigh 99999999999999999999\nmax 2\noom 3\noom_kill 4\n";
	assert_int_equal(monitor_parse_memory_events(big, strlen(big), &ev), -ERANGE);
	assert_int_equal(monitor_parse_memory_events("\x01\x02\x03", 3, &ev), -EBADMSG);
}

static void test_oom_control(_unused_ void **state)
{
	_cleanup_free_ char *buf = NULL;
	struct monitor_oom_control oc;
	size_t n;

	buf = slurp("memory.oom_control", &n);
	assert_int_equal(monitor_parse_oom_control(buf, n, &oc), 0);
	assert_false(oc.oom_kill_disable);
	assert_false(oc.under_oom);
	assert_int_equal(oc.oom_kill, 2);

	/* Before 4.13 there is no oom_kill line. */
	const char *pre413 = "oom_kill_disable 1\nunder_oom 1\n";
	assert_int_equal(monitor_parse_oom_control(pre413, strlen(pre413), &oc), 0);
	assert_true(oc.oom_kill_disable);
	assert_true(oc.under_oom);
	assert_int_equal(oc.oom_kill, 0);

	assert_int_equal(monitor_parse_oom_control("oom_kill 3\n", 11, &oc), -EBADMSG);
	assert_int_equal(monitor_parse_oom_control("under_oom yes\n", 14, &oc), -EBADMSG);
}

/* --- single values ----------------------------------------------------- */

static void test_single_values(_unused_ void **state)
{
	static const struct {
		const char *in;
		int r_u64;
		uint64_t u64;
		int r_limit;
		uint64_t limit;
	} cases[] = {
		{ "123\n", 0, 123, 0, 123 },
		{ " 7 \n", 0, 7, 0, 7 },
		{ "0", 0, 0, 0, 0 },
		{ "268435456\n", 0, 268435456, 0, 268435456 },
		{ "max\n", -EBADMSG, 0, 0, MONITOR_UNLIMITED },
		{ "max", -EBADMSG, 0, 0, MONITOR_UNLIMITED },
		/* v1's "no limit" and everything from 2^62 up */
		{ "9223372036854771712\n", 0, UINT64_C(9223372036854771712), 0, MONITOR_UNLIMITED },
		{ "4611686018427387904\n", 0, UINT64_C(1) << 62, 0, MONITOR_UNLIMITED },
		{ "4611686018427387903\n", 0, (UINT64_C(1) << 62) - 1, 0, (UINT64_C(1) << 62) - 1 },
		{ "18446744073709551615\n", 0, UINT64_MAX, 0, MONITOR_UNLIMITED },
		{ "18446744073709551616\n", -ERANGE, 0, -ERANGE, 0 },
		{ "99999999999999999999999999\n", -ERANGE, 0, -ERANGE, 0 },
		{ "", -EBADMSG, 0, -EBADMSG, 0 },
		{ "\n", -EBADMSG, 0, -EBADMSG, 0 },
		{ "12 34\n", -EBADMSG, 0, -EBADMSG, 0 },
		{ "12\n34\n", -EBADMSG, 0, -EBADMSG, 0 },
		{ "-1\n", -EBADMSG, 0, -EBADMSG, 0 },
		{ "maxx\n", -EBADMSG, 0, -EBADMSG, 0 },
		{ "0x10\n", -EBADMSG, 0, -EBADMSG, 0 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t v = 42, l = 42;
		int r;

		r = monitor_parse_u64(cases[i].in, strlen(cases[i].in), &v);
		if (r != cases[i].r_u64)
			fail_msg("u64 case %zu: got %d, want %d", i, r, cases[i].r_u64);
		assert_int_equal(v, r < 0 ? 42 : cases[i].u64);
		r = monitor_parse_limit(cases[i].in, strlen(cases[i].in), &l);
		if (r != cases[i].r_limit)
			fail_msg("limit case %zu: got %d, want %d", i, r, cases[i].r_limit);
		assert_int_equal(l, r < 0 ? 42 : cases[i].limit);
	}
	/* The length bounds the parse: "12" out of "1234". */
	uint64_t v;
	assert_int_equal(monitor_parse_u64("1234", 2, &v), 0);
	assert_int_equal(v, 12);
}

/* --- meminfo ----------------------------------------------------------- */

static void test_meminfo(_unused_ void **state)
{
	_cleanup_free_ char *buf = NULL;
	struct monitor_meminfo m;
	size_t n;

	buf = slurp("meminfo", &n);
	assert_int_equal(monitor_parse_meminfo(buf, n, &m), 0);
	assert_int_equal(m.total, UINT64_C(24684092) * 1024);
	assert_int_equal(m.available, UINT64_C(24351656) * 1024);

	static const struct {
		const char *in;
		int r;
	} cases[] = {
		{ "MemTotal: 4 kB\nMemAvailable: 2 kB\n", 0 },
		{ "MemTotal: 4 kB\n", -EBADMSG },
		{ "MemTotal: 4\nMemAvailable: 2 kB\n", -EBADMSG },
		{ "MemTotal: 4 MB\nMemAvailable: 2 kB\n", -EBADMSG },
		{ "MemTotal 4 kB\nMemAvailable: 2 kB\n", -EBADMSG },
		{ "MemTotal: 18014398509481983 kB\nMemAvailable: 2 kB\n", 0 },
		/* fits in u64 as kB, not as bytes */
		{ "MemTotal: 18014398509481984 kB\nMemAvailable: 2 kB\n", -ERANGE },
		{ "MemTotal: 4 kB\nMemAvailable: 2 kB\nMemTotal: 4 kB\n", -EBADMSG },
		{ "HugePages_Total: 0\nMemTotal: 4 kB\nMemAvailable: 2 kB\n", 0 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int r = monitor_parse_meminfo(cases[i].in, strlen(cases[i].in), &m);

		if (r != cases[i].r)
			fail_msg("case %zu: got %d, want %d", i, r, cases[i].r);
	}
	assert_int_equal(monitor_parse_meminfo(cases[0].in, strlen(cases[0].in), &m), 0);
	assert_int_equal(m.total, 4096);
	assert_int_equal(m.available, 2048);
}

/* --- /proc/PID/cgroup -------------------------------------------------- */

static void check_pid(pid_t pid, const char *v2, const char *v1)
{
	_cleanup_free_ char *proc = data_path("proc");
	_cleanup_free_ char *p2 = NULL, *p1 = NULL;

	assert_int_equal(monitor_pid_cgroup(proc, pid, &p2, &p1), 0);
	if (v2)
		assert_string_equal(p2, v2);
	else
		assert_null(p2);
	if (v1)
		assert_string_equal(p1, v1);
	else
		assert_null(p1);
}

static void test_pid_cgroup_fixtures(_unused_ void **state)
{
	_cleanup_free_ char *proc = data_path("proc");
	char *p2 = (char *)"untouched", *p1 = (char *)"untouched";

	check_pid(100, "/system.slice/app.service", NULL);                /* pure v2 */
	check_pid(200, "/system.slice/app.service", "/system.slice/app.service"); /* hybrid */
	check_pid(300, NULL, "/batch/job:7");        /* combined controllers, ':' in path */
	check_pid(400, "/system.slice/gone.service (deleted)", NULL);

	assert_int_equal(monitor_pid_cgroup(proc, 999, &p2, &p1), -ESRCH);
	assert_int_equal(monitor_pid_cgroup(proc, 0, &p2, &p1), -EINVAL);
	assert_string_equal(p2, "untouched");
	assert_string_equal(p1, "untouched");
}

static void test_pid_cgroup_literals(_unused_ void **state)
{
	static const struct {
		const char *in;
		size_t len;                  /* 0: strlen */
		int r;
	} cases[] = {
		{ "0::/\n", 0, 0 },
		{ "4:memory:/a\n0::/b", 0, 0 },
		{ "", 0, -ENOENT },
		{ "1:name=systemd:/x\n", 0, -ENOENT },
		{ "11:memoryx:/a\n", 0, -ENOENT },
		{ "garbage\n", 0, -EBADMSG },
		{ "0:/x\n", 0, -EBADMSG },
		{ "0::relative\n", 0, -EBADMSG },
		{ "0::\n", 0, -EBADMSG },
		{ "0:memory:/x\n", 0, -EBADMSG },
		{ "x::/a\n", 0, -EBADMSG },
		{ ":memory:/a\n", 0, -EBADMSG },
		{ "99999999999999999999999:memory:/a\n", 0, -EBADMSG },
		{ "0::/a\n0::/b\n", 0, -EBADMSG },
		{ "3:memory:/a\n4:cpu,memory:/b\n", 0, -EBADMSG },
		{ "0::/a\0b\n", 7, -EBADMSG },
		{ "0::/truncat", 0, 0 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *p2 = NULL, *p1 = NULL;
		size_t len = cases[i].len ? cases[i].len : strlen(cases[i].in);
		int r = monitor_parse_pid_cgroup(cases[i].in, len, &p2, &p1);

		if (r != cases[i].r)
			fail_msg("case %zu: got %d, want %d", i, r, cases[i].r);
		if (r < 0) {
			assert_null(p2);
			assert_null(p1);
		}
		free(p2);
		free(p1);
	}
}

/* --- mountinfo --------------------------------------------------------- */

static void check_mounts(const char *fixture, int r, const char *v2, const char *v1)
{
	_cleanup_free_ char *path = data_path(fixture);
	_cleanup_(monitor_roots_done) struct monitor_roots roots = {};

	assert_int_equal(monitor_discover(path, &roots), r);
	if (v2)
		assert_string_equal(roots.v2, v2);
	else
		assert_null(roots.v2);
	if (v1)
		assert_string_equal(roots.v1_memory, v1);
	else
		assert_null(roots.v1_memory);
}

static void test_discover_fixtures(_unused_ void **state)
{
	check_mounts("mountinfo-v2", 0, "/sys/fs/cgroup", NULL);
	check_mounts("mountinfo-hybrid", 0, "/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory");
	/* This test host's own mountinfo. */
	check_mounts("mountinfo-hybrid-local", 0, "/sys/fs/cgroup/unified",
		     "/sys/fs/cgroup/memory");
	/* Subtree mounts are skipped; escapes decoded; combined v1 lists. */
	check_mounts("mountinfo-subtree", 0, "/mnt/host cgroup", "/mnt/mem");
	check_mounts("mountinfo-none", -ENOENT, NULL, NULL);
	check_mounts("does-not-exist", -ENOENT, NULL, NULL);
}

static void test_mountinfo_literals(_unused_ void **state)
{
	static const struct {
		const char *in;
		int r;
	} cases[] = {
		{ "1 0 0:1 / /c rw - cgroup2 cgroup2 rw", 0 },
		{ "1 0 0:1 / /c rw shared:1 master:2 - cgroup2 cgroup2 rw\n", 0 },
		{ "1 0 0:1 / /c\\134x rw - cgroup2 cgroup2 rw\n", 0 },   /* "\134" = '\' */
		{ "1 0 0:1 / /c\\04 rw - cgroup2 cgroup2 rw\n", 0 },     /* short escape kept */
		{ "1 0 0:1 / /c rw - cgroup2 cgroup2\n", -EBADMSG },
		{ "1 0 0:1 / /c rw - cgroup2\n", -EBADMSG },
		{ "1 0 0:1 / /c rw cgroup2 cgroup2 rw\n", -EBADMSG },
		{ "1 0 0:1 / /c\n", -EBADMSG },
		{ "1 0 0:1 / /c rw - cgroup2 cgroup2 rw extra\n", -EBADMSG },
		{ "x 0 0:1 / /c rw - cgroup2 cgroup2 rw\n", -EBADMSG },
		{ "1 0 0:1 / rel rw - cgroup2 cgroup2 rw\n", -EBADMSG },
		{ "1 0 0:1 / /c\\000 rw - cgroup2 cgroup2 rw\n", -EBADMSG },
		{ "1 0 0:1 / /c rw - cgroup cgroup rw,memoryx\n", -ENOENT },
		{ "\xff\xff\xff", -EBADMSG },
		{ "", -ENOENT },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct monitor_roots roots = {};
		int r = monitor_parse_mountinfo(cases[i].in, strlen(cases[i].in), &roots);

		if (r != cases[i].r)
			fail_msg("case %zu: got %d, want %d", i, r, cases[i].r);
		if (r < 0) {
			assert_null(roots.v2);
			assert_null(roots.v1_memory);
		}
		if (i == 2)
			assert_string_equal(roots.v2, "/c\\x");
		if (i == 3)
			assert_string_equal(roots.v2, "/c\\04");
		monitor_roots_done(&roots);
	}
}

/* --- cgroup trees ------------------------------------------------------ */

static void test_cgroup_v2(void **state)
{
	struct tree *t = *state;
	_cleanup_(monitor_cgroup_freep) struct monitor_cgroup *cg = NULL;
	_cleanup_free_ char *dir = NULL, *moved = NULL, *mc = NULL;
	struct monitor_sample s;

	assert_true(asprintf(&dir, "%s/system.slice/app.service", t->root) > 0);
	assert_int_equal(monitor_cgroup_open(t->root, NULL, "system.slice/app.service", &cg), 0);
	assert_string_equal(monitor_cgroup_v2_path(cg), dir);
	assert_true(monitor_cgroup_events_fd(cg) >= 0);

	assert_int_equal(monitor_cgroup_read(cg, &s), 0);
	assert_true(s.first);
	assert_false(s.v1);
	assert_int_equal(s.current, 200 * MIB);
	assert_int_equal(s.stat.inactive_file, 40 * MIB);
	assert_int_equal(s.working_set, 160 * MIB);
	assert_int_equal(s.max, 256 * MIB);
	assert_int_equal(s.high, MONITOR_UNLIMITED);
	assert_true(s.high_known);
	assert_false(s.under_oom);
	assert_int_equal(s.events.high, 0);
	assert_int_equal(s.events_delta.max, 0);
	assert_true(s.events.has_oom_group_kill);
	assert_true(s.has_psi);
	assert_int_equal(s.psi.some.avg10, 250);
	assert_int_equal(s.psi.full.avg10, 75);
	assert_int_equal(s.some_total_delta, 0);

	/* The kernel updates the files; the held fds see it. */
	rewrite(dir, "memory.current", "230686720\n");
	rewrite(dir, "memory.events",
		"low 0\nhigh 5\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n");
	rewrite(dir, "memory.high", "251658240\n");
	rewrite(dir, "memory.pressure",
		"some avg10=12.00 avg60=3.00 avg300=1.00 total=1600000\n"
		"full avg10=4.00 avg60=1.00 avg300=0.50 total=500000\n");
	assert_int_equal(monitor_cgroup_read(cg, &s), 0);
	assert_false(s.first);
	assert_int_equal(s.current, 220 * MIB);
	assert_int_equal(s.working_set, 180 * MIB);
	assert_int_equal(s.high, 240 * MIB);
	assert_int_equal(s.events.high, 5);
	assert_int_equal(s.events_delta.high, 5);
	assert_int_equal(s.events_delta.max, 2);
	assert_int_equal(s.events_delta.oom, 1);
	assert_int_equal(s.events_delta.oom_kill, 1);
	assert_int_equal(s.events_delta.low, 0);
	assert_int_equal(s.psi.some.avg10, 1200);
	assert_int_equal(s.some_total_delta, 600000);
	assert_int_equal(s.full_total_delta, 100000);

	/* No change: deltas fall back to 0. */
	assert_int_equal(monitor_cgroup_read(cg, &s), 0);
	assert_int_equal(s.events_delta.high, 0);
	assert_int_equal(s.some_total_delta, 0);

	/* A garbled file fails the read and leaves the previous read as base. */
	rewrite(dir, "memory.events", "low 0\nhigh 9\nmax");
	memset(&s, 0x77, sizeof(s));
	assert_int_equal(monitor_cgroup_read(cg, &s), -EBADMSG);
	assert_int_equal(s.current, UINT64_C(0x7777777777777777));
	rewrite(dir, "memory.events",
		"low 0\nhigh 9\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n");
	assert_int_equal(monitor_cgroup_read(cg, &s), 0);
	assert_int_equal(s.events_delta.high, 4);

	/* inactive_file above current (read a moment apart): 0, not a wrap. */
	rewrite(dir, "memory.current", "1048576\n");
	assert_int_equal(monitor_cgroup_read(cg, &s), 0);
	assert_int_equal(s.working_set, 0);

	/*
	 * Held, not reopened: a file replaced by a new inode is invisible to
	 * the reader, while in-place updates (above) are seen.
	 */
	assert_true(asprintf(&moved, "%s/memory.current.new", dir) > 0);
	assert_true(asprintf(&mc, "%s/memory.current", dir) > 0);
	{
		FILE *f = fopen(moved, "we");

		assert_non_null(f);
		fputs("999\n", f);
		fclose(f);
	}
	assert_int_equal(rename(moved, mc), 0);
	assert_int_equal(monitor_cgroup_read(cg, &s), 0);
	assert_int_equal(s.current, MIB);
}

static void test_cgroup_v2_variants(void **state)
{
	struct tree *t = *state;
	struct monitor_cgroup *cg = (struct monitor_cgroup *)0x1;
	struct monitor_sample s;

	/* Leading '/', as /proc/PID/cgroup gives it. */
	assert_int_equal(monitor_cgroup_open(t->root, NULL, "/system.slice/app.service", &cg), 0);
	assert_int_equal(monitor_cgroup_read(cg, &s), 0);
	assert_int_equal(s.current, 200 * MIB);
	cg = monitor_cgroup_free(cg);
	assert_null(cg);
	assert_null(monitor_cgroup_free(NULL));

	cg = (struct monitor_cgroup *)0x1;
	assert_int_equal(monitor_cgroup_open(t->root, NULL, "system.slice/gone.service", &cg),
			 -ENODEV);
	assert_int_equal(monitor_cgroup_open(t->root, NULL, "system.slice/../../etc", &cg),
			 -EINVAL);
	assert_int_equal(monitor_cgroup_open(t->root, NULL, "..", &cg), -EINVAL);
	/* The memory controller is not enabled there: no memory.current. */
	assert_int_equal(monitor_cgroup_open(t->root, NULL, "system.slice/nomem.service", &cg),
			 -EOPNOTSUPP);
	/* A file where a directory should be. */
	assert_int_equal(monitor_cgroup_open(t->root, NULL,
					     "system.slice/app.service/memory.stat", &cg),
			 -ENODEV);
	assert_ptr_equal(cg, (struct monitor_cgroup *)0x1);

	/* No PSI in the kernel: usage still works. */
	assert_int_equal(monitor_cgroup_open(t->root, NULL, "system.slice/nopsi.service", &cg), 0);
	assert_int_equal(monitor_cgroup_read(cg, &s), 0);
	assert_false(s.has_psi);
	assert_int_equal(s.psi.some.avg10, 0);
	assert_int_equal(s.working_set, 160 * MIB);
	cg = monitor_cgroup_free(cg);
}

static void test_cgroup_hybrid(void **state)
{
	struct tree *t = *state;
	_cleanup_(monitor_cgroup_freep) struct monitor_cgroup *cg = NULL;
	_cleanup_free_ char *v2 = NULL, *v1 = NULL, *mem = NULL, *dir = NULL, *udir = NULL;
	struct monitor_sample s;

	assert_true(asprintf(&v2, "%s/unified", t->root) > 0);
	assert_true(asprintf(&v1, "%s/memory", t->root) > 0);
	assert_true(asprintf(&dir, "%s/system.slice/app.service", v1) > 0);
	assert_true(asprintf(&udir, "%s/system.slice/app.service", v2) > 0);

	assert_int_equal(monitor_cgroup_open(v2, v1, "/system.slice/app.service", &cg), 0);
	/* v1 changes are seen only on the tick. */
	assert_int_equal(monitor_cgroup_events_fd(cg), -1);
	assert_string_equal(monitor_cgroup_v2_path(cg), udir);

	assert_int_equal(monitor_cgroup_read(cg, &s), 0);
	assert_true(s.first);
	assert_true(s.v1);
	assert_int_equal(s.current, 150 * MIB);
	assert_int_equal(s.stat.inactive_file, 50 * MIB);
	assert_int_equal(s.stat.anon, 90 * MIB);
	assert_int_equal(s.stat.file, 60 * MIB);
	assert_int_equal(s.working_set, 100 * MIB);
	assert_int_equal(s.max, MONITOR_UNLIMITED);   /* 9223372036854771712 */
	assert_false(s.high_known);
	assert_int_equal(s.high, MONITOR_UNLIMITED);
	assert_int_equal(s.events.max, 0);
	assert_false(s.under_oom);
	assert_true(s.has_psi);
	assert_int_equal(s.psi.some.total, 5000);

	rewrite(dir, "memory.failcnt", "4\n");
	rewrite(dir, "memory.oom_control", "oom_kill_disable 0\nunder_oom 1\noom_kill 1\n");
	rewrite(dir, "memory.limit_in_bytes", "209715200\n");
	rewrite(udir, "memory.pressure",
		"some avg10=0.10 avg60=0.00 avg300=0.00 total=7500\n"
		"full avg10=0.00 avg60=0.00 avg300=0.00 total=2500\n");
	assert_int_equal(monitor_cgroup_read(cg, &s), 0);
	assert_false(s.first);
	assert_int_equal(s.max, 200 * MIB);
	assert_int_equal(s.events.max, 4);
	assert_int_equal(s.events_delta.max, 4);
	assert_int_equal(s.events_delta.oom_kill, 1);
	assert_int_equal(s.events_delta.oom, 0);
	assert_int_equal(s.events_delta.high, 0);
	assert_true(s.under_oom);
	assert_int_equal(s.some_total_delta, 2500);
	assert_int_equal(s.full_total_delta, 500);

	/* An admin reset failcnt (echo 0 > memory.failcnt) and it grew to 1. */
	rewrite(dir, "memory.failcnt", "1\n");
	assert_int_equal(monitor_cgroup_read(cg, &s), 0);
	assert_int_equal(s.events.max, 1);
	assert_int_equal(s.events_delta.max, 1);

	/* A v1 file that does not parse. */
	rewrite(dir, "memory.oom_control", "oom_kill_disable 0\n");
	assert_int_equal(monitor_cgroup_read(cg, &s), -EBADMSG);
	cg = monitor_cgroup_free(cg);

	/* Present in one hierarchy only: absent, whichever one it is. */
	assert_true(asprintf(&mem, "%s/system.slice/app.service.away", v2) > 0);
	assert_int_equal(rename(udir, mem), 0);
	assert_int_equal(monitor_cgroup_open(v2, v1, "system.slice/app.service", &cg), -ENODEV);
	assert_int_equal(rename(mem, udir), 0);
	assert_int_equal(monitor_cgroup_open(v2, v1, "system.slice/app.service.away", &cg),
			 -ENODEV);
	assert_int_equal(monitor_cgroup_open(v2, v1, "system.slice/none.service", &cg), -ENODEV);
	assert_null(cg);
	/* Both there again: opens. */
	assert_int_equal(monitor_cgroup_open(v2, v1, "system.slice/app.service", &cg), 0);
	cg = monitor_cgroup_free(cg);

	/* With swap accounting, charges refused at memory.memsw.limit_in_bytes
	 * count as well. */
	rewrite(dir, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n");
	free(mem);
	assert_true(asprintf(&mem, "%s/memory.memsw.failcnt", dir) > 0);
	close(open(mem, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
	rewrite(dir, "memory.memsw.failcnt", "3\n");
	assert_int_equal(monitor_cgroup_open(v2, v1, "system.slice/app.service", &cg), 0);
	assert_int_equal(monitor_cgroup_read(cg, &s), 0);
	assert_int_equal(s.events.max, 1 + 3);
	rewrite(dir, "memory.memsw.failcnt", "10\n");
	assert_int_equal(monitor_cgroup_read(cg, &s), 0);
	assert_int_equal(s.events_delta.max, 7);
}

/* --- PSI trigger ladder ------------------------------------------------ */

struct fake_kernel {
	int answers[4];                  /* per call: 0 = accept, else -errno */
	unsigned calls;
	char triggers[4][64];
};

static int fake_arm(_unused_ const char *path, const char *trigger, void *userdata)
{
	struct fake_kernel *k = userdata;
	unsigned i = k->calls++;

	assert_true(i < ARRAY_SIZE(k->answers));
	snprintf(k->triggers[i], sizeof(k->triggers[i]), "%s", trigger);
	if (k->answers[i] < 0)
		return k->answers[i];
	return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

struct ladder_case {
	uint32_t threshold, window;
	int answers[2];
	int r;
	enum mg_psi_mode mode;
	unsigned calls;
	const char *last;                /* trigger written last */
};

static void test_psi_ladder(_unused_ void **state)
{
	static const struct ladder_case cases[] = {
		/* the kernel takes the configured window */
		{ 150000, 1000000, { 0 }, 0, MG_PSI_TRIGGER, 1, "some 150000 1000000" },
		/* EINVAL, then the rounded window is taken */
		{ 150000, 1000000, { -EINVAL, 0 }, 0, MG_PSI_TRIGGER_ROUNDED, 2,
		  "some 300000 2000000" },
		/* the threshold scales with the window, rounded down */
		{ 100000, 3000001, { -EINVAL, 0 }, 0, MG_PSI_TRIGGER_ROUNDED, 2,
		  "some 133333 4000000" },
		/* EINVAL twice: polling */
		{ 150000, 1000000, { -EINVAL, -EINVAL }, 0, MG_PSI_POLLING, 2,
		  "some 300000 2000000" },
		/* already a multiple of 2 s: nothing to retry */
		{ 150000, 2000000, { -EINVAL }, 0, MG_PSI_POLLING, 1, "some 150000 2000000" },
		/* rounding would overflow the kernel's u32 */
		{ 1, UINT32_MAX, { -EINVAL }, 0, MG_PSI_POLLING, 1, NULL },
		/* not writable */
		{ 150000, 1000000, { -EACCES }, 0, MG_PSI_POLLING, 1, NULL },
		{ 150000, 1000000, { -EINVAL, -EPERM }, 0, MG_PSI_POLLING, 2, NULL },
		/* gone */
		{ 150000, 1000000, { -ENOENT }, -ENODEV, 0, 1, NULL },
		{ 150000, 1000000, { -EINVAL, -ENODEV }, -ENODEV, 0, 2, NULL },
		/* other errors are the caller's to report */
		{ 150000, 1000000, { -EMFILE }, -EMFILE, 0, 1, NULL },
		/* configuration errors are not hidden behind polling */
		{ 0, 1000000, { 0 }, -EINVAL, 0, 0, NULL },
		{ 150000, 0, { 0 }, -EINVAL, 0, 0, NULL },
		{ 2000001, 2000000, { 0 }, -EINVAL, 0, 0, NULL },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const struct ladder_case *c = &cases[i];
		struct fake_kernel k = { .answers = { c->answers[0], c->answers[1] } };
		struct monitor_psi_ops ops = { .arm = fake_arm, .userdata = &k };
		enum mg_psi_mode mode = 99;
		int fd = -99, r;

		r = monitor_psi_trigger_open_with(&ops, "/fake/memory.pressure", c->threshold,
						  c->window, &fd, &mode);
		if (r != c->r || k.calls != c->calls)
			fail_msg("case %zu: r=%d calls=%u, want r=%d calls=%u", i, r, k.calls,
				 c->r, c->calls);
		if (c->last)
			assert_string_equal(k.triggers[k.calls - 1], c->last);
		if (r < 0) {
			assert_int_equal(fd, -99);
			assert_int_equal(mode, 99);
			continue;
		}
		assert_int_equal(mode, c->mode);
		if (mode == MG_PSI_POLLING)
			assert_int_equal(fd, -1);
		else {
			assert_true(fd >= 0);
			close(fd);
		}
	}
}

/* --- host -------------------------------------------------------------- */

static void test_host_read(_unused_ void **state)
{
	_cleanup_free_ char *psi = data_path("psi-memory");
	_cleanup_free_ char *mi = data_path("meminfo");
	_cleanup_free_ char *none = data_path("no-such-file");
	_cleanup_free_ char *bad = data_path("memory.events");
	struct monitor_host h;

	assert_int_equal(monitor_host_read(psi, mi, &h), 0);
	assert_true(h.has_psi);
	assert_int_equal(h.psi.some.avg10, 123);
	assert_int_equal(h.psi.full.total, 65432);
	assert_int_equal(h.mem.total, UINT64_C(24684092) * 1024);
	assert_int_equal(h.mem.available, UINT64_C(24351656) * 1024);

	/* No PSI in the kernel: memory alone. */
	assert_int_equal(monitor_host_read(none, mi, &h), 0);
	assert_false(h.has_psi);
	assert_int_equal(h.psi.some.total, 0);
	assert_int_equal(h.mem.available, UINT64_C(24351656) * 1024);

	assert_int_equal(monitor_host_read(psi, none, &h), -ENOENT);
	assert_int_equal(monitor_host_read(bad, mi, &h), -EBADMSG);
	assert_int_equal(monitor_host_read(psi, bad, &h), -EBADMSG);
}

/* --- the real machine -------------------------------------------------- */

/* Everything the real test holds lives here, so that teardown frees it
 * even when skip() or a failed assertion longjmps out of the test. */
struct real {
	struct monitor_roots roots;
	char *self_v2, *self_v1;         /* our own cgroup paths */
	char *dir;                       /* the nested cgroup we made */
	char *pressure;                  /* its memory.pressure */
	int fd;
};

static int real_setup(void **state)
{
	struct real *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	r->fd = -1;
	*state = r;
	return 0;
}

static int real_teardown(void **state)
{
	struct real *r = *state;

	if (r->fd >= 0)
		close(r->fd);
	/* Remove the test cgroup however the test ended. */
	if (r->dir && rmdir(r->dir) < 0 && errno != ENOENT)
		print_error("could not remove %s: %s\n", r->dir, strerror(errno));
	monitor_roots_done(&r->roots);
	free(r->self_v2);
	free(r->self_v1);
	free(r->dir);
	free(r->pressure);
	free(r);
	return 0;
}

/* Whether CAP_SYS_RESOURCE (bit 24) is in our effective set. */
static bool have_cap_sys_resource(void)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	unsigned long long eff;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1)
			return eff & (1ULL << 24);
	fail_msg("no CapEff in /proc/self/status");
	return false;
}

static void test_real_psi_trigger(void **state)
{
	struct real *real = *state;
	enum mg_psi_mode mode, host_mode;
	struct pollfd pfd;
	char c;
	int r;

	r = monitor_discover("/proc/self/mountinfo", &real->roots);
	if (r < 0 || !real->roots.v2) {
		print_message("SKIP: no cgroup2 mount found in /proc/self/mountinfo (%s)\n",
			      r < 0 ? strerror(-r) : "only cgroup v1");
		skip();
	}
	assert_int_equal(monitor_pid_cgroup("/proc", getpid(), &real->self_v2,
					    &real->self_v1), 0);
	if (!real->self_v2) {
		print_message("SKIP: /proc/self/cgroup has no cgroup2 (0::) line\n");
		skip();
	}

	/* Nested below our own cgroup, never elsewhere. */
	assert_true(asprintf(&real->dir, "%s%s/memguard-test-monitor-%d",
			     real->roots.v2,
			     strcmp(real->self_v2, "/") == 0 ? "" : real->self_v2,
			     (int)getpid()) > 0);
	if (mkdir(real->dir, 0755) < 0) {
		print_message("SKIP: cannot create test cgroup %s: %s\n", real->dir,
			      strerror(errno));
		free(real->dir);
		real->dir = NULL;
		skip();
	}
	assert_true(asprintf(&real->pressure, "%s/memory.pressure", real->dir) > 0);
	if (access(real->pressure, F_OK) < 0) {
		print_message("SKIP: %s missing: kernel without PSI\n", real->pressure);
		skip();
	}

	/* 100 ms of stall in a 1 s window: not a multiple of 2 s. */
	r = monitor_psi_trigger_open(real->pressure, /* threshold_us= */ 100000,
				     /* window_us= */ 1000000, &real->fd, &mode);
	assert_int_equal(r, 0);
	print_message("real kernel: PSI mode %s on %s\n",
		      mode == MG_PSI_TRIGGER ? "TRIGGER" :
		      mode == MG_PSI_TRIGGER_ROUNDED ? "TRIGGER_ROUNDED" : "POLLING",
		      real->pressure);
	if (have_cap_sys_resource())
		assert_int_equal(mode, MG_PSI_TRIGGER);
	else
		assert_int_equal(mode, MG_PSI_TRIGGER_ROUNDED);
	assert_true(real->fd >= 0);

	/* Armed and quiet: no error condition while the cgroup lives. */
	pfd = (struct pollfd){ .fd = real->fd, .events = POLLPRI };
	assert_true(poll(&pfd, 1, 0) >= 0);
	assert_false(pfd.revents & POLLERR);

	/* What monitor.h promises: POLLERR once the cgroup is removed. */
	assert_int_equal(rmdir(real->dir), 0);
	pfd.revents = 0;
	assert_int_equal(poll(&pfd, 1, 0), 1);
	assert_true(pfd.revents & POLLERR);
	/* And a held fd reads ENODEV, which monitor_cgroup_read maps to -ENODEV. */
	assert_int_equal(pread(real->fd, &c, 1, 0), -1);
	assert_int_equal(errno, ENODEV);
	close(real->fd);
	real->fd = -1;

	/*
	 * The host file follows the same rule, and it overwrites the last
	 * byte written with a NUL: a trigger written without its NUL would
	 * lose a digit of its window and never be accepted.
	 */
	if (access("/proc/pressure/memory", W_OK) < 0)
		return;
	r = monitor_psi_trigger_open("/proc/pressure/memory", /* threshold_us= */ 100000,
				     /* window_us= */ 1000000, &real->fd, &host_mode);
	assert_int_equal(r, 0);
	print_message("real kernel: PSI mode %s on /proc/pressure/memory\n",
		      host_mode == MG_PSI_TRIGGER ? "TRIGGER" :
		      host_mode == MG_PSI_TRIGGER_ROUNDED ? "TRIGGER_ROUNDED" : "POLLING");
	assert_int_equal(host_mode, mode);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_psi_fixture),
		cmocka_unit_test(test_psi_some_only),
		cmocka_unit_test(test_psi_local),
		cmocka_unit_test(test_psi_literals),
		cmocka_unit_test(test_memory_stat_fixtures),
		cmocka_unit_test(test_memory_stat_literals),
		cmocka_unit_test(test_memory_events),
		cmocka_unit_test(test_oom_control),
		cmocka_unit_test(test_single_values),
		cmocka_unit_test(test_meminfo),
		cmocka_unit_test(test_pid_cgroup_fixtures),
		cmocka_unit_test(test_pid_cgroup_literals),
		cmocka_unit_test(test_discover_fixtures),
		cmocka_unit_test(test_mountinfo_literals),
		cmocka_unit_test_setup_teardown(test_cgroup_v2, tree_setup_v2, tree_teardown),
		cmocka_unit_test_setup_teardown(test_cgroup_v2_variants, tree_setup_v2,
						tree_teardown),
		cmocka_unit_test_setup_teardown(test_cgroup_hybrid, tree_setup_hybrid,
						tree_teardown),
		cmocka_unit_test(test_psi_ladder),
		cmocka_unit_test(test_host_read),
		cmocka_unit_test_setup_teardown(test_real_psi_trigger, real_setup, real_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
