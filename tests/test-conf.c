/* SPDX-License-Identifier: MIT */
/*
 * conf/: the value parsers, good files down to every field of the result,
 * a table of bad files each with its exact message and line, and the
 * sample conf/memguard.conf with and without its examples.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "proto/macro.h"

DEFINE_FREE_FUNC(struct mg_conf, conf_free)

#define REPORTS_MAX 32

struct report {
	char file[256];
	unsigned line;
	char message[1024];
};

struct reports {
	struct report r[REPORTS_MAX];
	size_t n;
};

static void collect(void *userdata, const char *file, unsigned line, const char *message)
{
	struct reports *rs = userdata;

	assert_non_null(file);
	assert_non_null(message);
	assert_true(rs->n < REPORTS_MAX);
	snprintf(rs->r[rs->n].file, sizeof(rs->r[rs->n].file), "%s", file);
	rs->r[rs->n].line = line;
	snprintf(rs->r[rs->n].message, sizeof(rs->r[rs->n].message), "%s", message);
	rs->n++;
}

static void print_reports(const struct reports *rs)
{
	for (size_t i = 0; i < rs->n; i++)
		print_message("  %s:%u: %s\n", rs->r[i].file, rs->r[i].line, rs->r[i].message);
}

/* Parse `len` bytes of `text` as the file "test.conf". */
static int parse_mem(const char *text, size_t len, struct reports *rs, struct mg_conf **ret)
{
	_cleanup_fclose_ FILE *f = NULL;

	f = fmemopen((void *)text, len, "r");
	assert_non_null(f);
	return conf_parse(f, "test.conf", rs ? collect : NULL, rs, ret);
}

static int parse_str(const char *text, struct reports *rs, struct mg_conf **ret)
{
	return parse_mem(text, strlen(text), rs, ret);
}

/* A file under $MG_TEST_DATA, which `make check` sets. */
static char *data_path(const char *name)
{
	const char *dir = getenv("MG_TEST_DATA");
	char *path;

	if (!dir)
		dir = "tests/data";
	assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
	return path;
}

/* A text that parses with no report; returns the result. */
static struct mg_conf *parse_good(const char *text, size_t len)
{
	struct reports rs = {};
	struct mg_conf *c = NULL;
	int r;

	r = parse_mem(text, len, &rs, &c);
	if (r != 0 || rs.n != 0) {
		print_message("unexpected problems (r=%d):\n", r);
		print_reports(&rs);
	}
	assert_int_equal(r, 0);
	assert_int_equal(rs.n, 0);
	assert_non_null(c);
	return c;
}

static void assert_daemon_defaults(const struct conf_daemon *d)
{
	assert_string_equal(d->socket, CONF_DEFAULT_SOCKET);
	assert_string_equal(d->socket_group, "memguard");
	assert_string_equal(d->admin_group, "");
	assert_null(d->cgroup_root);
	assert_int_equal(d->tick_ms, 1000);
	assert_int_equal(d->report_interval_ms, 1000);
	assert_int_equal(d->log_level, 6);
	assert_int_equal(d->host_pressure, 2000);
	assert_int_equal(d->max_connections, 4096);
	assert_int_equal(d->max_connections_per_uid, 1024);
	assert_int_equal(d->admin_reserved_connections, 16);
}

/* Every field but name, cgroup, line and those in `except` has its default. */
enum {
	X_BUDGET = 1 << 0,
	X_GUARANTEE = 1 << 1,
	X_WARN = 1 << 2,
	X_CRITICAL = 1 << 3,
	X_PRESSURE = 1 << 4,
	X_GC = 1 << 5,
	X_THROTTLE = 1 << 6,
	X_DEADLINE = 1 << 7,
	X_ENFORCE = 1 << 8,
	X_PRIORITY = 1 << 9,
};

static void assert_service_defaults(const struct conf_service *s, unsigned except)
{
	if (!(except & X_BUDGET)) {
		assert_int_equal(s->budget.kind, CONF_SIZE_MAX);
		assert_int_equal(s->budget.bytes, 0);
		assert_int_equal(s->budget.percent, 0);
	}
	if (!(except & X_GUARANTEE)) {
		assert_int_equal(s->guarantee.kind, CONF_SIZE_BYTES);
		assert_int_equal(s->guarantee.bytes, 0);
		assert_int_equal(s->guarantee.percent, 0);
	}
	if (!(except & X_WARN))
		assert_int_equal(s->warn, 8000);
	if (!(except & X_CRITICAL))
		assert_int_equal(s->critical, 9000);
	if (!(except & X_PRESSURE)) {
		assert_int_equal(s->pressure_some, 1000);
		assert_int_equal(s->pressure_full, 500);
	}
	if (!(except & X_GC))
		assert_int_equal(s->min_gc_percent, 25);
	if (!(except & X_THROTTLE))
		assert_int_equal(s->max_throttle, 500);
	if (!(except & X_DEADLINE))
		assert_int_equal(s->release_deadline_ms, 5000);
	if (!(except & X_ENFORCE))
		assert_int_equal(s->enforce, MG_ENFORCE_NOTIFY);
	if (!(except & X_PRIORITY))
		assert_int_equal(s->priority, 0);
}

/* ---- value parsers ------------------------------------------------------ */

static void test_parse_size(void **state)
{
	static const struct {
		const char *s;
		int r;
		uint64_t v;
	} t[] = {
		{ "0", 0, 0 },
		{ "4096", 0, 4096 },
		{ "4096B", 0, 4096 },
		{ "512K", 0, 512 * 1024 },
		{ "512k", 0, 512 * 1024 },
		{ "512KB", 0, 512 * 1024 },
		{ "512KiB", 0, 512 * 1024 },
		{ "512kib", 0, 512 * 1024 },
		{ "64MiB", 0, 64 << 20 },
		{ "1.5G", 0, UINT64_C(3) << 29 },
		{ "0.5K", 0, 512 },
		{ "1.1K", 0, 1126 },            /* 1126.4, truncated */
		{ "2T", 0, UINT64_C(2) << 40 },
		{ "3P", 0, UINT64_C(3) << 50 },
		{ "15E", 0, UINT64_C(15) << 60 },
		{ "2 G", 0, UINT64_C(2) << 30 },
		{ "18446744073709551615", 0, UINT64_MAX },
		{ "15.999999999E", 0, UINT64_C(18446744072556630111) },
		{ "18446744073709551616", -ERANGE, 0 },
		{ "99999999999999999999999", -ERANGE, 0 },
		{ "16E", -ERANGE, 0 },
		{ "16384P", -ERANGE, 0 },
		{ "17179869184G", -ERANGE, 0 },
		{ "", -EINVAL, 0 },
		{ "G", -EINVAL, 0 },
		{ "-1", -EINVAL, 0 },
		{ "-1G", -EINVAL, 0 },
		{ "+1G", -EINVAL, 0 },
		{ " 1G", -EINVAL, 0 },
		{ "1G ", -EINVAL, 0 },
		{ "1 ", -EINVAL, 0 },
		{ "1.5", -EINVAL, 0 },          /* bytes are whole */
		{ "1.", -EINVAL, 0 },
		{ ".5G", -EINVAL, 0 },
		{ "1.0000000001G", -EINVAL, 0 }, /* ten decimals */
		{ "2X", -EINVAL, 0 },
		{ "2GG", -EINVAL, 0 },
		{ "2Gi", -EINVAL, 0 },
		{ "2iB", -EINVAL, 0 },
		{ "1e3", -EINVAL, 0 },
		{ "0x10", -EINVAL, 0 },
		{ "max", -EINVAL, 0 },
		{ "10%", -EINVAL, 0 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint64_t v = 4242;
		int r = conf_parse_size(t[i].s, &v);

		if (r != t[i].r || (r == 0 && v != t[i].v))
			print_message("conf_parse_size(\"%s\") = %d, %" PRIu64 "\n", t[i].s, r, v);
		assert_int_equal(r, t[i].r);
		if (r == 0)
			assert_true(v == t[i].v);
		else
			assert_int_equal(v, 4242);      /* untouched on failure */
	}
}

static void test_parse_duration(void **state)
{
	static const struct {
		const char *s;
		int r;
		uint32_t ms;
	} t[] = {
		{ "0ms", 0, 0 },
		{ "10ms", 0, 10 },
		{ "250ms", 0, 250 },
		{ "5s", 0, 5000 },
		{ "5sec", 0, 5000 },
		{ "1.5s", 0, 1500 },
		{ "0.0015s", 0, 1 },            /* 1.5 ms, truncated */
		{ "2m", 0, 120000 },
		{ "2min", 0, 120000 },
		{ "1h", 0, 3600000 },
		{ "5 s", 0, 5000 },
		{ "4294967295ms", 0, UINT32_MAX },
		{ "4294967296ms", -ERANGE, 0 },
		{ "4294968s", -ERANGE, 0 },
		{ "99999999999999999999999s", -ERANGE, 0 },
		{ "250", -EINVAL, 0 },          /* the unit is required */
		{ "", -EINVAL, 0 },
		{ "s", -EINVAL, 0 },
		{ "-5s", -EINVAL, 0 },
		{ "5S", -EINVAL, 0 },
		{ "5ss", -EINVAL, 0 },
		{ "5 ", -EINVAL, 0 },
		{ "5s ", -EINVAL, 0 },
		{ "1m30s", -EINVAL, 0 },
		{ "5d", -EINVAL, 0 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint32_t v = 4242;
		int r = conf_parse_duration(t[i].s, &v);

		if (r != t[i].r || (r == 0 && v != t[i].ms))
			print_message("conf_parse_duration(\"%s\") = %d, %u\n", t[i].s, r, v);
		assert_int_equal(r, t[i].r);
		assert_int_equal(v, r == 0 ? t[i].ms : 4242);
	}
}

static void test_parse_percent(void **state)
{
	static const struct {
		const char *s;
		int r;
		uint32_t bp;
	} t[] = {
		{ "0", 0, 0 },
		{ "0%", 0, 0 },
		{ "80", 0, 8000 },
		{ "80%", 0, 8000 },
		{ "80 %", 0, 8000 },
		{ "12.5%", 0, 1250 },
		{ "12.50%", 0, 1250 },
		{ "0.01%", 0, 1 },
		{ "0.8", 0, 80 },
		{ "99.99%", 0, 9999 },
		{ "100%", 0, 10000 },
		{ "100.00", 0, 10000 },
		{ "100.01%", -ERANGE, 0 },
		{ "101%", -ERANGE, 0 },
		{ "18446744073709551617%", -ERANGE, 0 },
		{ "12.345%", -EINVAL, 0 },
		{ "", -EINVAL, 0 },
		{ "%", -EINVAL, 0 },
		{ "-1%", -EINVAL, 0 },
		{ "80%%", -EINVAL, 0 },
		{ "80% ", -EINVAL, 0 },
		{ "80 ", -EINVAL, 0 },
		{ "eighty", -EINVAL, 0 },
		{ ".5", -EINVAL, 0 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint32_t v = 4242;
		int r = conf_parse_percent(t[i].s, &v);

		if (r != t[i].r || (r == 0 && v != t[i].bp))
			print_message("conf_parse_percent(\"%s\") = %d, %u\n", t[i].s, r, v);
		assert_int_equal(r, t[i].r);
		assert_int_equal(v, r == 0 ? t[i].bp : 4242);
	}
}

static void test_parse_log_level(void **state)
{
	static const struct {
		const char *s;
		int r;
		int level;
	} t[] = {
		{ "emerg", 0, 0 },   { "alert", 0, 1 },   { "crit", 0, 2 },   { "err", 0, 3 },
		{ "error", 0, 3 },   { "warning", 0, 4 }, { "warn", 0, 4 },   { "notice", 0, 5 },
		{ "info", 0, 6 },    { "debug", 0, 7 },   { "DEBUG", 0, 7 },  { "Info", 0, 6 },
		{ "0", 0, 0 },       { "7", 0, 7 },       { "8", -EINVAL, 0 }, { "-1", -EINVAL, 0 },
		{ "+3", -EINVAL, 0 }, { "", -EINVAL, 0 },  { "loud", -EINVAL, 0 },
		{ "info ", -EINVAL, 0 }, { "emergency", -EINVAL, 0 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		int v = 4242;
		int r = conf_parse_log_level(t[i].s, &v);

		if (r != t[i].r || (r == 0 && v != t[i].level))
			print_message("conf_parse_log_level(\"%s\") = %d, %d\n", t[i].s, r, v);
		assert_int_equal(r, t[i].r);
		assert_int_equal(v, r == 0 ? t[i].level : 4242);
	}
}

/* ---- good files --------------------------------------------------------- */

static void test_full_fixture(void **state)
{
	_cleanup_free_ char *path = data_path("conf/full.conf");
	_cleanup_(conf_freep) struct mg_conf *c = NULL;
	struct reports rs = {};
	const struct conf_service *s;

	assert_int_equal(conf_load(path, collect, &rs, &c), 0);
	assert_int_equal(rs.n, 0);
	assert_string_equal(c->path, path);

	assert_string_equal(c->daemon.socket, "/run/mg-test/mg.sock");
	assert_string_equal(c->daemon.socket_group, "mgtest");
	assert_string_equal(c->daemon.admin_group, "wheel");
	assert_string_equal(c->daemon.cgroup_root, "/sys/fs/cgroup/unified");
	assert_int_equal(c->daemon.tick_ms, 250);
	assert_int_equal(c->daemon.report_interval_ms, 500);
	assert_int_equal(c->daemon.log_level, 7);
	assert_int_equal(c->daemon.host_pressure, 1250);
	assert_int_equal(c->daemon.max_connections, 2000);
	assert_int_equal(c->daemon.max_connections_per_uid, 100);
	assert_int_equal(c->daemon.admin_reserved_connections, 8);

	assert_int_equal(c->n_services, 3);

	s = &c->services[0];
	assert_string_equal(s->name, "web-api");
	assert_string_equal(s->cgroup, "system.slice/web-api.service");
	assert_int_equal(s->line, 15);
	assert_int_equal(s->budget.kind, CONF_SIZE_BYTES);
	assert_true(s->budget.bytes == UINT64_C(1610612736));
	assert_int_equal(s->budget.percent, 0);
	assert_int_equal(s->guarantee.kind, CONF_SIZE_BYTES);
	assert_true(s->guarantee.bytes == UINT64_C(536870912));
	assert_int_equal(s->guarantee.percent, 0);
	assert_int_equal(s->warn, 7500);
	assert_int_equal(s->critical, 9500);
	assert_int_equal(s->pressure_some, 725);
	assert_int_equal(s->pressure_full, 0);
	assert_int_equal(s->min_gc_percent, 50);
	assert_int_equal(s->max_throttle, 123);         /* 12.34 % → 123 ‰ */
	assert_int_equal(s->release_deadline_ms, 120000);
	assert_int_equal(s->enforce, MG_ENFORCE_KILL);
	assert_int_equal(s->priority, -1000);

	s = &c->services[1];
	assert_string_equal(s->name, "batch@1");
	assert_string_equal(s->cgroup, "system.slice/batch@1.service");
	assert_int_equal(s->line, 29);
	assert_int_equal(s->budget.kind, CONF_SIZE_PERCENT);
	assert_int_equal(s->budget.bytes, 0);
	assert_int_equal(s->budget.percent, 2500);
	assert_int_equal(s->guarantee.kind, CONF_SIZE_PERCENT);
	assert_int_equal(s->guarantee.bytes, 0);
	assert_int_equal(s->guarantee.percent, 1000);
	assert_int_equal(s->enforce, MG_ENFORCE_HIGH);
	assert_int_equal(s->priority, 1000);
	assert_service_defaults(s, X_BUDGET | X_GUARANTEE | X_ENFORCE | X_PRIORITY);

	s = &c->services[2];
	assert_string_equal(s->name, "idle");
	assert_string_equal(s->cgroup, "system.slice/idle.service");
	assert_int_equal(s->line, 35);
	assert_service_defaults(s, 0);

	assert_ptr_equal(conf_find_service(c, "batch@1"), &c->services[1]);
	assert_ptr_equal(conf_find_service(c, "idle"), &c->services[2]);
	assert_null(conf_find_service(c, "web"));
	assert_null(conf_find_service(c, "daemon"));
	assert_null(conf_find_service(NULL, "idle"));
}

static void test_defaults(void **state)
{
	_cleanup_(conf_freep) struct mg_conf *c = NULL, *d = NULL;

	c = parse_good("\n\n[web]\n", 8);
	assert_string_equal(c->path, "test.conf");
	assert_daemon_defaults(&c->daemon);
	assert_int_equal(c->n_services, 1);
	assert_string_equal(c->services[0].name, "web");
	assert_string_equal(c->services[0].cgroup, "system.slice/web.service");
	assert_int_equal(c->services[0].line, 3);
	assert_service_defaults(&c->services[0], 0);

	assert_int_equal(conf_new_default(&d), 0);
	assert_null(d->path);
	assert_daemon_defaults(&d->daemon);
	assert_int_equal(d->n_services, 0);
	assert_null(d->services);
	assert_null(conf_find_service(d, "web"));

	assert_null(conf_free(NULL));
}

static void test_empty_and_comments(void **state)
{
	static const char *const files[] = { "conf/empty.conf", "conf/comments.conf" };

	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		_cleanup_free_ char *path = data_path(files[i]);
		_cleanup_(conf_freep) struct mg_conf *c = NULL;
		struct reports rs = {};

		assert_int_equal(conf_load(path, collect, &rs, &c), 0);
		assert_int_equal(rs.n, 0);
		assert_daemon_defaults(&c->daemon);
		assert_int_equal(c->n_services, 0);
	}

	/* In memory too, and with only blank lines. */
	conf_free(parse_good("", 0));
	conf_free(parse_good("\n \n\t\n", 5));
	conf_free(parse_good("# x", 3));
}

/* Layouts inih would misread without the reader's help. */
static void test_layout(void **state)
{
	static const char indented[] = "[web]\n"
				       "    budget = 1G\n"
				       "\twarn = 50%\n"
				       "  \t critical=60%\n"
				       "  [db]  \n"
				       "  ; comment\n"
				       "    enforce=high   ; why\n";
	static const char crlf_bom[] = "\xef\xbb\xbf[daemon]\r\n"
				       "tick = 2s\r\n"
				       "\r\n"
				       "[web]\r\n"
				       "budget = 2G\r\n";
	_cleanup_(conf_freep) struct mg_conf *a = NULL, *b = NULL, *c = NULL;
	_cleanup_free_ char *long_section = NULL;

	a = parse_good(indented, strlen(indented));
	assert_int_equal(a->n_services, 2);
	assert_string_equal(a->services[0].name, "web");
	assert_true(a->services[0].budget.bytes == UINT64_C(1) << 30);
	assert_int_equal(a->services[0].warn, 5000);
	assert_int_equal(a->services[0].critical, 6000);
	assert_string_equal(a->services[1].name, "db");
	assert_int_equal(a->services[1].line, 5);
	assert_int_equal(a->services[1].enforce, MG_ENFORCE_HIGH);

	b = parse_good(crlf_bom, strlen(crlf_bom));
	assert_int_equal(b->daemon.tick_ms, 2000);
	assert_int_equal(b->n_services, 1);
	assert_int_equal(b->services[0].line, 4);
	assert_true(b->services[0].budget.bytes == UINT64_C(2) << 30);

	/* A section name longer than inih's own 50-byte buffer. */
	assert_true(asprintf(&long_section, "[%0120d]\nbudget = 1G\n", 7) > 0);
	c = parse_good(long_section, strlen(long_section));
	assert_int_equal(c->n_services, 1);
	assert_int_equal(strlen(c->services[0].name), 120);
	assert_true(c->services[0].budget.bytes == UINT64_C(1) << 30);
}

/* "The words max, auto, the enforce modes and the log levels are not"
 * case-sensitive (memguard.conf(5), SYNTAX). */
static void test_words_any_case(void **state)
{
	static const char text[] = "[daemon]\n"
				   "cgroup_root = AUTO\n"
				   "log_level = Debug\n"
				   "[web]\n"
				   "budget = MAX\n"
				   "enforce = High\n";
	_cleanup_(conf_freep) struct mg_conf *c = NULL;

	c = parse_good(text, strlen(text));
	assert_null(c->daemon.cgroup_root);
	assert_int_equal(c->daemon.log_level, 7);
	assert_int_equal(c->services[0].budget.kind, CONF_SIZE_MAX);
	assert_int_equal(c->services[0].enforce, MG_ENFORCE_HIGH);
}

/* The longest line that fits, and comment lines longer than any. */
static void test_line_length(void **state)
{
	char text[1024];
	_cleanup_(conf_freep) struct mg_conf *c = NULL, *d = NULL;
	struct reports rs = {};
	struct mg_conf *e = (struct mg_conf *)&rs;      /* never written */
	int n;

	/* "cgroup = " and 189 bytes of path: 198 characters. */
	n = snprintf(text, sizeof(text), "[web]\r\ncgroup = %0189d\r\n# %0700d\n", 0, 0);
	c = parse_good(text, (size_t)n);
	assert_int_equal(strlen(c->services[0].cgroup), 189);

	/* Trailing blanks count: 198 then 199 characters. */
	n = snprintf(text, sizeof(text), "[web]\ncgroup = %0188d \n", 0);
	d = parse_good(text, (size_t)n);
	n = snprintf(text, sizeof(text), "[web]\ncgroup = %0188d  \nbudget = x\n", 0);
	assert_int_equal(parse_mem(text, (size_t)n, &rs, &e), -EINVAL);
	assert_ptr_equal(e, (struct mg_conf *)&rs);
	assert_int_equal(rs.n, 2);
	assert_int_equal(rs.r[0].line, 2);
	assert_string_equal(rs.r[0].message, "line too long (at most 198 characters)");
	/* The next line is read as a line of its own, not as the rest. */
	assert_int_equal(rs.r[1].line, 3);
	assert_string_equal(rs.r[1].message, "invalid budget 'x': expected a size (512M, 2G), "
					     "a percentage (25%) or 'max'");
}

static void test_max_services(void **state)
{
	size_t size = (CONF_MAX_SERVICES + 2) * 16;
	_cleanup_free_ char *text = malloc(size);
	_cleanup_(conf_freep) struct mg_conf *c = NULL;
	struct reports rs = {};
	size_t len = 0;

	assert_non_null(text);
	for (int i = 0; i < CONF_MAX_SERVICES; i++)
		len += (size_t)snprintf(text + len, size - len, "[s%d]\n", i);
	c = parse_good(text, len);
	assert_int_equal(c->n_services, CONF_MAX_SERVICES);
	assert_string_equal(c->services[CONF_MAX_SERVICES - 1].cgroup,
			    "system.slice/s1023.service");
	c = conf_free(c);

	/* One more, and another: reported once, on the first one too many. */
	len += (size_t)snprintf(text + len, size - len, "[s%d]\n[s%d]\n", CONF_MAX_SERVICES,
				CONF_MAX_SERVICES + 1);
	assert_int_equal(parse_mem(text, len, &rs, &c), -EINVAL);
	assert_null(c);
	assert_int_equal(rs.n, 1);
	assert_int_equal(rs.r[0].line, CONF_MAX_SERVICES + 1);
	assert_string_equal(rs.r[0].message, "too many services (at most 1024)");
}

/* ---- bad files ---------------------------------------------------------- */

#define X10 "xxxxxxxxxx"
#define X100 X10 X10 X10 X10 X10 X10 X10 X10 X10 X10

struct bad {
	const char *name;
	const char *text;
	size_t len;             /* 0: strlen(text) */
	unsigned line;
	const char *message;
};

static const struct bad bad[] = {
	{ "unknown key, suggestion", "[web]\nbudgt = 1G\n", 0, 2,
	  "unknown key 'budgt' in [web]; did you mean 'budget'?" },
	{ "unknown key, suggestion, case", "[web]\nCritcal = 95%\n", 0, 2,
	  "unknown key 'Critcal' in [web]; did you mean 'critical'?" },
	{ "unknown key, no suggestion", "[web]\ncolour = red\n", 0, 2,
	  "unknown key 'colour' in [web]" },
	{ "unknown key, too far for a suggestion", "[web]\nwarning = 80%\n", 0, 2,
	  "unknown key 'warning' in [web]" },
	{ "unknown daemon key, suggestion", "[daemon]\ntik = 1s\n", 0, 2,
	  "unknown key 'tik' in [daemon]; did you mean 'tick'?" },
	{ "daemon key in a service", "[web]\ntick = 1s\n", 0, 2,
	  "unknown key 'tick' in [web]; 'tick' belongs in [daemon]" },
	{ "service key in [daemon]", "[daemon]\nbudget = 1G\n", 0, 2,
	  "unknown key 'budget' in [daemon]; 'budget' belongs in a service section" },
	{ "bad size unit", "[web]\nbudget = 2X\n", 0, 2,
	  "invalid budget '2X': expected a size (512M, 2G), a percentage (25%) or 'max'" },
	{ "negative size", "[web]\nguarantee = -1G\n", 0, 2,
	  "invalid guarantee '-1G': expected a size (512M, 2G) or a percentage (25%)" },
	{ "guarantee max", "[web]\nguarantee = max\n", 0, 2,
	  "invalid guarantee 'max': expected a size (512M, 2G) or a percentage (25%)" },
	{ "duration without unit", "[daemon]\ntick = 250\n", 0, 2,
	  "tick '250' needs a unit (ms, s or m)" },
	{ "bad duration", "[web]\nrelease_deadline = soon\n", 0, 2,
	  "invalid release_deadline 'soon': expected a duration (250ms, 5s, 2m)" },
	{ "size overflow", "[web]\nbudget = 16E\n", 0, 2, "budget '16E' is too large" },
	{ "size overflow, digits", "[web]\nbudget = 99999999999999999999\n", 0, 2,
	  "budget '99999999999999999999' is too large" },
	{ "budget 0", "[web]\nbudget = 0\n", 0, 2, "budget '0' must be greater than 0" },
	{ "budget 0%", "[web]\nbudget = 0%\n", 0, 2, "budget '0%' must be greater than 0" },
	{ "budget over 100%", "[web]\nbudget = 150%\n", 0, 2,
	  "budget '150%' out of range (0.01%..100%)" },
	{ "percent over 100", "[web]\npressure_some = 101%\n", 0, 2,
	  "pressure_some '101%' out of range (0%..100%)" },
	{ "percent, three decimals", "[web]\nwarn = 12.345%\n", 0, 2,
	  "invalid warn '12.345%': expected a percentage (80%, 12.5%)" },
	{ "host_pressure over 100", "[daemon]\nhost_pressure = 150\n", 0, 2,
	  "host_pressure '150' out of range (0%..100%)" },
	{ "0.8 hint", "[web]\nwarn = 0.8\n", 0, 2,
	  "warn '0.8' out of range (1%..99%) (did you mean 80%?)" },
	{ "0.95 hint on critical", "[web]\ncritical = 0.95\n", 0, 2,
	  "critical '0.95' out of range (1%..100%) (did you mean 95%?)" },
	{ "warn 100%", "[web]\nwarn = 100%\n", 0, 2, "warn '100%' out of range (1%..99%)" },
	{ "warn >= critical, critical later", "[web]\nwarn = 90%\ncritical = 85%\n", 0, 3,
	  "critical '85%' must be above warn '90%' (line 2)" },
	{ "warn == critical, warn later", "[web]\ncritical = 85%\nwarn = 85\n", 0, 3,
	  "warn '85' must be below critical '85%' (line 2)" },
	{ "warn above default critical", "[web]\nwarn = 95%\n", 0, 2,
	  "warn '95%' must be below critical 90% (default)" },
	{ "critical below default warn", "[web]\ncritical = 70%\n", 0, 2,
	  "critical '70%' must be above warn 80% (default)" },
	{ "max_connections under the admins' default reserve",
	  "[daemon]\nmax_connections = 10\n", 0, 2,
	  "max_connections '10' must be above admin_reserved_connections 16 (default), "
	  "or no client could connect" },
	{ "admin_reserved_connections equal to max_connections, set later",
	  "[daemon]\nmax_connections = 20\nadmin_reserved_connections = 20\n", 0, 3,
	  "admin_reserved_connections '20' must be below max_connections '20' (line 2), "
	  "or no client could connect" },
	{ "guarantee > budget", "[web]\nbudget = 1G\nguarantee = 2G\n", 0, 3,
	  "guarantee '2G' is above budget '1G' (line 2)" },
	{ "guarantee > budget, in percent", "[web]\nguarantee = 30%\nbudget = 20%\n", 0, 3,
	  "budget '20%' is below guarantee '30%' (line 2)" },
	{ "duplicate service", "[web]\n[db]\n[web]\n", 0, 3,
	  "duplicate section [web], first on line 1" },
	{ "duplicate [daemon]", "[daemon]\ntick = 1s\n[daemon]\n", 0, 3,
	  "duplicate section [daemon], first on line 1" },
	{ "[Daemon]", "[Daemon]\ntick = 1s\n", 0, 1,
	  "unknown section [Daemon]; did you mean [daemon]?" },
	{ "two services on one cgroup",
	  "[a]\ncgroup = x.slice/a.service\n[b]\ncgroup = /x.slice/a.service/\n", 0, 4,
	  "cgroup 'x.slice/a.service' is already used by [a] on line 1" },
	{ "a cgroup that is another's default",
	  "[web]\n\n[other]\ncgroup = system.slice/web.service\n", 0, 4,
	  "cgroup 'system.slice/web.service' is already used by [web] on line 1" },
	{ "a default cgroup that is another's",
	  "[a]\ncgroup = system.slice/web.service\n[web]\n", 0, 3,
	  "cgroup 'system.slice/web.service' is already used by [a] on line 1" },
	{ "a duplicate section's cgroup is not checked again",
	  "[web]\n[web]\ncgroup = system.slice/web.service\n", 0, 2,
	  "duplicate section [web], first on line 1" },
	{ "key outside any section", "# c\ntick = 1s\n[daemon]\n", 0, 2,
	  "key 'tick' outside any section" },
	{ "duplicate key", "[web]\nbudget = 1G\nbudget = 2G\n", 0, 3,
	  "'budget' already set on line 2" },
	{ "duplicate key in [daemon]", "[daemon]\nsocket_group = a\nsocket_group = a\n", 0, 3,
	  "'socket_group' already set on line 2" },
	{ "invalid service name", "[we b]\n", 0, 1,
	  "invalid service name 'we b': use 1 to 255 of A-Z a-z 0-9 _ . @ : -, "
	  "not starting with '.' or '-'" },
	{ "service name starting with '.'", "[.web]\n", 0, 1,
	  "invalid service name '.web': use 1 to 255 of A-Z a-z 0-9 _ . @ : -, "
	  "not starting with '.' or '-'" },
	{ "empty service name", "[]\n", 0, 1,
	  "invalid service name '': use 1 to 255 of A-Z a-z 0-9 _ . @ : -, "
	  "not starting with '.' or '-'" },
	{ "'..' in cgroup", "[web]\ncgroup = system.slice/../etc\n", 0, 2,
	  "cgroup 'system.slice/../etc' has a '..' component" },
	{ "'.' in cgroup", "[web]\ncgroup = ./web.service\n", 0, 2,
	  "cgroup './web.service' has a '.' component" },
	{ "'//' in cgroup", "[web]\ncgroup = system.slice//web.service\n", 0, 2,
	  "cgroup 'system.slice//web.service' has an empty component ('//')" },
	{ "two trailing slashes in cgroup", "[web]\ncgroup = system.slice//\n", 0, 2,
	  "cgroup 'system.slice//' has an empty component ('//')" },
	{ "root cgroup", "[web]\ncgroup = /\n", 0, 2,
	  "cgroup '/' is the root cgroup; name a cgroup below it" },
	{ "control character in cgroup", "[web]\ncgroup = a\tb\n", 0, 2,
	  "cgroup 'a\tb' contains a control character" },
	{ "empty value", "[web]\nbudget =\n", 0, 2, "empty value for 'budget'" },
	{ "empty value before a comment", "[web]\nenforce = ; later\n", 0, 2,
	  "empty value for 'enforce'" },
	{ "'#' after a value", "[web]\nbudget = 2G # two gigs\n", 0, 2,
	  "budget '2G # two gigs' contains a '#' comment; comments after a value start with ';'" },
	{ "bad enforce", "[web]\nenforce = block\n", 0, 2,
	  "invalid enforce 'block': expected notify, high or kill" },
	{ "bad log level", "[daemon]\nlog_level = loud\n", 0, 2,
	  "invalid log_level 'loud': expected emerg, alert, crit, err, warning, notice, info, "
	  "debug or 0..7" },
	{ "log level 8", "[daemon]\nlog_level = 8\n", 0, 2,
	  "invalid log_level '8': expected emerg, alert, crit, err, warning, notice, info, "
	  "debug or 0..7" },
	{ "priority out of range", "[web]\npriority = 1001\n", 0, 2,
	  "priority '1001' out of range (-1000..1000)" },
	{ "priority overflow", "[web]\npriority = -99999999999999999999\n", 0, 2,
	  "priority '-99999999999999999999' out of range (-1000..1000)" },
	{ "priority not an integer", "[web]\npriority = 1.5\n", 0, 2,
	  "invalid priority '1.5': expected an integer" },
	{ "min_gc_percent 0", "[web]\nmin_gc_percent = 0\n", 0, 2,
	  "min_gc_percent '0' out of range (1..1000)" },
	{ "max_throttle 100%", "[web]\nmax_throttle = 100%\n", 0, 2,
	  "max_throttle '100%' out of range (0%..99%)" },
	{ "release_deadline too long", "[web]\nrelease_deadline = 11m\n", 0, 2,
	  "release_deadline '11m' out of range (10ms..10m)" },
	{ "tick too short", "[daemon]\ntick = 5ms\n", 0, 2, "tick '5ms' out of range (10ms..60s)" },
	{ "report_interval too long", "[daemon]\nreport_interval = 2m\n", 0, 2,
	  "report_interval '2m' out of range (10ms..60s)" },
	{ "tick too long", "[daemon]\ntick = 61s\n", 0, 2, "tick '61s' out of range (10ms..60s)" },
	{ "tick overflow", "[daemon]\ntick = 5000000s\n", 0, 2,
	  "tick '5000000s' out of range (10ms..60s)" },
	{ "socket not absolute", "[daemon]\nsocket = run/memguard.sock\n", 0, 2,
	  "socket 'run/memguard.sock' is not an absolute path" },
	{ "socket path too long", "[daemon]\nsocket = /" X100 "xxxxxxx\n", 0, 2,
	  "socket '/" X100 "xxxxxxx' is too long (at most 107 bytes)" },
	{ "bad group name", "[daemon]\nsocket_group = mem guard\n", 0, 2,
	  "invalid socket_group 'mem guard': expected a group name" },
	{ "bad cgroup_root", "[daemon]\ncgroup_root = sys/fs/cgroup\n", 0, 2,
	  "cgroup_root 'sys/fs/cgroup' is neither an absolute path nor 'auto'" },
	{ "line too long",      /* 9 + 190 characters */
	  "[web]\nbudget = " X100 X10 X10 X10 X10 X10 X10 X10 X10 X10 "\n", 0, 2,
	  "line too long (at most 198 characters)" },
	{ "section line too long, its keys ignored",
	  "[" X100 X100 "]\nnonsense = 1\n", 0, 1,
	  "line too long (at most 198 characters)" },
	{ "NUL byte", "[web]\nbud\0get = 1G\n", 19, 2, "NUL byte in line" },
	{ "NUL byte in a comment", "# a\0b\n", 6, 1, "NUL byte in line" },
	{ "syntax error", "[web]\njust some words\n", 0, 2,
	  "expected 'key = value' or '[section]'" },
	{ "no key before '='", "[web]\n = 5\n", 0, 2, "expected 'key = value' or '[section]'" },
	{ "';' before '='", "[web]\nbudget ;= 5\n", 0, 2, "expected 'key = value' or '[section]'" },
	{ "missing ']'", "[web\nbudget = 0\n", 0, 1,
	  "expected ']' at the end of the section header" },
	{ "text after ']'", "[web] x\n", 0, 1, "unexpected text after '[web]'" },
};

static void test_bad(void **state)
{
	const struct bad *b = *state;
	struct reports rs = {};
	struct mg_conf *c = (struct mg_conf *)&rs; /* a canary: conf_parse must not write it */
	int r;

	r = parse_mem(b->text, b->len ?: strlen(b->text), &rs, &c);
	if (rs.n != 1 || rs.r[0].line != b->line || strcmp(rs.r[0].message, b->message) != 0) {
		print_message("%s: expected\n  test.conf:%u: %s\ngot:\n", b->name, b->line,
			      b->message);
		print_reports(&rs);
	}
	assert_int_equal(r, -EINVAL);
	assert_ptr_equal(c, (struct mg_conf *)&rs);
	assert_int_equal(rs.n, 1);
	assert_string_equal(rs.r[0].file, "test.conf");
	assert_int_equal(rs.r[0].line, b->line);
	assert_string_equal(rs.r[0].message, b->message);

	/* Without a report callback: the same verdict. */
	r = parse_mem(b->text, b->len ?: strlen(b->text), NULL, &c);
	assert_int_equal(r, -EINVAL);
	assert_ptr_equal(c, (struct mg_conf *)&rs);
}

static void test_all_errors_reported(void **state)
{
	static const struct {
		unsigned line;
		const char *message;
	} want[] = {
		{ 2, "key 'tick' outside any section" },
		{ 5, "tick '5' needs a unit (ms, s or m)" },
		{ 6, "invalid log_level 'chatty': expected emerg, alert, crit, err, warning, "
		     "notice, info, debug or 0..7" },
		{ 9, "unknown key 'budgt' in [web]; did you mean 'budget'?" },
		{ 11, "guarantee '2G' is above budget '1G' (line 10)" },
		{ 13, "duplicate section [web], first on line 8" },
		{ 14, "invalid enforce 'block': expected notify, high or kill" },
		{ 17, "cgroup 'system.slice/web.service' is already used by [web] on line 8" },
		{ 18, "warn '0.8' out of range (1%..99%) (did you mean 80%?)" },
	};
	_cleanup_free_ char *path = data_path("conf/errors.conf");
	struct mg_conf *c = NULL;
	struct reports rs = {};

	assert_int_equal(conf_load(path, collect, &rs, &c), -EINVAL);
	assert_null(c);
	if (rs.n != ARRAY_SIZE(want))
		print_reports(&rs);
	assert_int_equal(rs.n, ARRAY_SIZE(want));
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		assert_string_equal(rs.r[i].file, path);
		assert_int_equal(rs.r[i].line, want[i].line);
		assert_string_equal(rs.r[i].message, want[i].message);
	}
}

/* A dropped section's keys are still checked. */
static void test_dropped_sections_checked(void **state)
{
	static const char text[] = "[daemon]\n[daemon]\ntick = 1\n[web]\n[web]\nbudget = 0\n"
				   "[bad name]\nwarn = 0.5\n[DAEMON]\ntick = 1\n";
	struct mg_conf *c = NULL;
	struct reports rs = {};

	assert_int_equal(parse_str(text, &rs, &c), -EINVAL);
	if (rs.n != 7)
		print_reports(&rs);
	assert_int_equal(rs.n, 7);
	assert_int_equal(rs.r[1].line, 3);
	assert_string_equal(rs.r[1].message, "tick '1' needs a unit (ms, s or m)");
	assert_int_equal(rs.r[3].line, 6);
	assert_string_equal(rs.r[3].message, "budget '0' must be greater than 0");
	assert_int_equal(rs.r[5].line, 8);
	assert_string_equal(rs.r[5].message,
			    "warn '0.5' out of range (1%..99%) (did you mean 50%?)");
	assert_int_equal(rs.r[6].line, 9);
}

/* ---- files -------------------------------------------------------------- */

static void test_load_errors(void **state)
{
	struct reports rs = {};
	struct mg_conf *c = (struct mg_conf *)&rs;

	assert_int_equal(conf_load("/nonexistent/memguard.conf", collect, &rs, &c), -ENOENT);
	assert_int_equal(rs.n, 0);
	assert_ptr_equal(c, (struct mg_conf *)&rs);

	/* A directory opens, and then fails to read: the errno, no report. */
	assert_int_equal(conf_load("/", collect, &rs, &c), -EISDIR);
	assert_int_equal(rs.n, 0);
	assert_ptr_equal(c, (struct mg_conf *)&rs);
}

/* The sample installed as /etc/memguard.conf. */
static char *read_sample(size_t *ret_len)
{
	_cleanup_free_ char *path = data_path("../../conf/memguard.conf");
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	char *text;
	long len;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	assert_true(len > 0);
	rewind(f);
	text = malloc((size_t)len + 1);
	assert_non_null(text);
	assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
	text[len] = '\0';
	*ret_len = (size_t)len;
	return text;
}

static void test_sample(void **state)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_(conf_freep) struct mg_conf *c = NULL;
	size_t len;

	text = read_sample(&len);
	c = parse_good(text, len);
	assert_daemon_defaults(&c->daemon);
	assert_int_equal(c->n_services, 0);
}

/*
 * The sample with every "#key = value" and "#[section]" line uncommented
 * ("# text" stays a comment): the shown defaults must be the defaults, and
 * the examples must parse.
 */
static void test_sample_uncommented(void **state)
{
	_cleanup_free_ char *text = NULL, *out = NULL;
	_cleanup_(conf_freep) struct mg_conf *c = NULL;
	const struct conf_service *s;
	size_t len, n = 0;

	text = read_sample(&len);
	out = malloc(len + 1);
	assert_non_null(out);
	for (const char *line = text; *line;) {
		const char *eol = strchrnul(line, '\n');

		if (line[0] == '#' && line + 1 < eol && line[1] != ' ' && line[1] != '#')
			line++;
		memcpy(out + n, line, (size_t)(eol - line));
		n += (size_t)(eol - line);
		if (*eol)
			out[n++] = '\n';
		line = *eol ? eol + 1 : eol;
	}

	c = parse_good(out, n);

	/* [daemon]: the defaults, but for the example admin group. */
	assert_string_equal(c->daemon.socket, CONF_DEFAULT_SOCKET);
	assert_string_equal(c->daemon.socket_group, CONF_DEFAULT_SOCKET_GROUP);
	assert_string_equal(c->daemon.admin_group, "memguard-admin");
	assert_null(c->daemon.cgroup_root);
	assert_int_equal(c->daemon.tick_ms, CONF_DEFAULT_TICK_MS);
	assert_int_equal(c->daemon.log_level, CONF_DEFAULT_LOG_LEVEL);
	assert_int_equal(c->daemon.host_pressure, CONF_DEFAULT_HOST_PRESSURE);

	assert_int_equal(c->n_services, 3);

	s = conf_find_service(c, "web-api");
	assert_non_null(s);
	assert_string_equal(s->cgroup, "system.slice/web-api.service");
	assert_int_equal(s->budget.kind, CONF_SIZE_BYTES);
	assert_true(s->budget.bytes == UINT64_C(2) << 30);
	assert_int_equal(s->guarantee.kind, CONF_SIZE_BYTES);
	assert_true(s->guarantee.bytes == UINT64_C(1) << 30);
	assert_int_equal(s->warn, 7500);
	assert_int_equal(s->critical, 9000);
	assert_int_equal(s->release_deadline_ms, 2000);
	assert_int_equal(s->enforce, MG_ENFORCE_HIGH);
	assert_int_equal(s->priority, 100);
	assert_service_defaults(s, X_BUDGET | X_GUARANTEE | X_WARN | X_DEADLINE | X_ENFORCE |
				   X_PRIORITY);

	s = conf_find_service(c, "reports-batch");
	assert_non_null(s);
	assert_int_equal(s->budget.kind, CONF_SIZE_PERCENT);
	assert_int_equal(s->budget.percent, 2500);
	assert_int_equal(s->max_throttle, 0);
	assert_int_equal(s->enforce, MG_ENFORCE_NOTIFY);
	assert_int_equal(s->priority, -500);
	assert_service_defaults(s, X_BUDGET | X_THROTTLE | X_PRIORITY);

	s = conf_find_service(c, "lua-worker");
	assert_non_null(s);
	assert_string_equal(s->cgroup, "user.slice/user-1000.slice/user@1000.service/"
				       "app.slice/lua-worker.service");
	assert_true(s->budget.bytes == UINT64_C(512) << 20);
	assert_int_equal(s->warn, 7000);
	assert_int_equal(s->critical, 8500);
	assert_int_equal(s->pressure_some, 1500);
	assert_int_equal(s->pressure_full, CONF_DEFAULT_PRESSURE_FULL);
	assert_int_equal(s->min_gc_percent, 50);
	assert_int_equal(s->max_throttle, 200);
	assert_service_defaults(s, X_BUDGET | X_WARN | X_CRITICAL | X_PRESSURE | X_GC |
				   X_THROTTLE);
}

int main(void)
{
	static const struct CMUnitTest fixed[] = {
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_parse_percent),
		cmocka_unit_test(test_parse_log_level),
		cmocka_unit_test(test_full_fixture),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_empty_and_comments),
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_words_any_case),
		cmocka_unit_test(test_line_length),
		cmocka_unit_test(test_max_services),
		cmocka_unit_test(test_all_errors_reported),
		cmocka_unit_test(test_dropped_sections_checked),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_sample),
		cmocka_unit_test(test_sample_uncommented),
	};
	struct CMUnitTest tests[ARRAY_SIZE(fixed) + ARRAY_SIZE(bad)];
	char names[ARRAY_SIZE(bad)][96];
	size_t n = 0;

	for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
		tests[n++] = fixed[i];
	/* One test per bad file, named after it. */
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		snprintf(names[i], sizeof(names[i]), "bad: %s", bad[i].name);
		tests[n++] = (struct CMUnitTest){
			.name = names[i],
			.test_func = test_bad,
			.initial_state = (void *)&bad[i],
		};
	}
	return _cmocka_run_group_tests("conf", tests, n, NULL, NULL);
}
