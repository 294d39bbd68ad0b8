/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/service.c through its crash record: the memory.high
 * values a daemon replaced, written beside its socket and put back by the
 * next daemon on the same socket.  Services are literal structs and the
 * cgroups a temporary directory with a memory.high file each.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/service.h"
#include "proto/macro.h"

#define SOCKET "/run/memguard/memguardd.sock"

struct tree {
	char root[64];                   /* the cgroup root */
	char record[96];                 /* the record's path */
	char a[96], b[96];               /* two service cgroups below root */
};

static void put(const char *dir, const char *name, const char *text)
{
	_cleanup_free_ char *p = NULL;
	FILE *f;

	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	f = fopen(p, "we");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

/* The file's text, or "" when it does not exist. */
static char *get(const char *path)
{
	static char buf[512];
	FILE *f = fopen(path, "re");
	size_t n;

	buf[0] = 0;
	if (!f)
		return buf;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

static char *high_of(const char *dir)
{
	_cleanup_free_ char *p = NULL;

	assert_true(asprintf(&p, "%s/memory.high", dir) > 0);
	return get(p);
}

static int setup(void **state)
{
	struct tree *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	snprintf(t->root, sizeof(t->root), "/tmp/mg-test-service-XXXXXX");
	assert_non_null(mkdtemp(t->root));
	snprintf(t->record, sizeof(t->record), "%s/memguardd.sock.escalations", t->root);
	snprintf(t->a, sizeof(t->a), "%s/a.slice", t->root);
	snprintf(t->b, sizeof(t->b), "%s/b.slice", t->root);
	assert_int_equal(mkdir(t->a, 0755), 0);
	assert_int_equal(mkdir(t->b, 0755), 0);
	put(t->a, "memory.high", "max\n");
	put(t->b, "memory.high", "max\n");
	*state = t;
	return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int teardown(void **state)
{
	struct tree *t = *state;

	nftw(t->root, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	free(t);
	return 0;
}

static void test_parse_high(void **state)
{
	uint64_t v = 7;

	assert_true(escalations_parse_high("max", &v));
	assert_true(v == MONITOR_UNLIMITED);
	assert_true(escalations_parse_high("1", &v));
	assert_int_equal(v, 1);
	/* The kernel's largest (PAGE_COUNTER_MAX pages of 4 KiB). */
	assert_true(escalations_parse_high("9223372036854771712", &v));
	assert_true(v == UINT64_C(9223372036854771712));
	v = 7;
	/* No 0, no sign, no space, no overflow, nothing empty. */
	assert_false(escalations_parse_high("0", &v));
	assert_false(escalations_parse_high("-5", &v));
	assert_false(escalations_parse_high("+5", &v));
	assert_false(escalations_parse_high(" 5", &v));
	assert_false(escalations_parse_high("5 ", &v));
	assert_false(escalations_parse_high("", &v));
	assert_false(escalations_parse_high("18446744073709551616", &v));
	assert_false(escalations_parse_high("Max", &v));
	assert_int_equal(v, 7);
}

/* What the record holds: the socket, then one line per replaced value;
 * no record at all when nothing is replaced. */
static void test_save(void **state)
{
	struct tree *t = *state;
	struct service a = { .v2_dir = t->a, .saved_high_valid = true, .saved_high = 123456789 };
	struct service b = { .v2_dir = t->b, .saved_high_valid = true,
			     .saved_high = MONITOR_UNLIMITED };
	struct service *list[] = { &a, &b };
	char want[512];

	escalations_save(t->record, SOCKET, list, ARRAY_SIZE(list));
	snprintf(want, sizeof(want), "socket " SOCKET "\n123456789 %s\nmax %s\n", t->a, t->b);
	assert_string_equal(get(t->record), want);

	a.saved_high_valid = b.saved_high_valid = false;
	escalations_save(t->record, SOCKET, list, ARRAY_SIZE(list));
	assert_int_equal(access(t->record, F_OK), -1);
	assert_int_equal(errno, ENOENT);
}

/* A record saved by one daemon is put back by the next on its socket,
 * and removed. */
static void test_restore(void **state)
{
	struct tree *t = *state;
	struct service a = { .v2_dir = t->a, .saved_high_valid = true, .saved_high = 4096 };
	struct service b = { .v2_dir = t->b, .saved_high_valid = true,
			     .saved_high = MONITOR_UNLIMITED };
	struct service *list[] = { &a, &b };

	escalations_save(t->record, SOCKET, list, ARRAY_SIZE(list));
	put(t->a, "memory.high", "1000\n");
	put(t->b, "memory.high", "1000\n");
	escalations_restore(t->record, SOCKET, t->root, list, ARRAY_SIZE(list));
	assert_string_equal(high_of(t->a), "4096\n");
	assert_string_equal(high_of(t->b), "max\n");
	assert_int_equal(access(t->record, F_OK), -1);
}

/* The record of another socket, an entry for a cgroup that is not a
 * configured service's (an implicit one, one outside the root, one going
 * upwards) and a value that does not parse are not followed. */
static void test_restore_untrusted(void **state)
{
	struct tree *t = *state;
	struct service a = { .v2_dir = t->a };
	struct service b = { .v2_dir = t->b, .implicit = true };
	struct service *list[] = { &a, &b };
	char text[1024];

	put(t->a, "memory.high", "1000\n");
	put(t->b, "memory.high", "1000\n");
	assert_int_equal(chmod(t->root, 0755), 0);

	snprintf(text, sizeof(text), "socket /run/other.sock\n4096 %s\n", t->a);
	put(t->root, "memguardd.sock.escalations", text);
	assert_int_equal(chmod(t->record, 0600), 0);
	escalations_restore(t->record, SOCKET, t->root, list, ARRAY_SIZE(list));
	assert_string_equal(high_of(t->a), "1000\n");

	snprintf(text, sizeof(text),
		 "socket " SOCKET "\n4096 %s\n0 %s\n4096x %s\n4096 %s/../a.slice\n4096 /etc\n"
		 "garbage\n",
		 t->b, t->a, t->a, t->b);
	put(t->root, "memguardd.sock.escalations", text);
	assert_int_equal(chmod(t->record, 0600), 0);
	escalations_restore(t->record, SOCKET, t->root, list, ARRAY_SIZE(list));
	assert_string_equal(high_of(t->a), "1000\n");
	assert_string_equal(high_of(t->b), "1000\n");
	/* Read through: gone. */
	assert_int_equal(access(t->record, F_OK), -1);

	/* A record others may write is not read at all, nor removed. */
	snprintf(text, sizeof(text), "socket " SOCKET "\n4096 %s\n", t->a);
	put(t->root, "memguardd.sock.escalations", text);
	assert_int_equal(chmod(t->record, 0666), 0);
	escalations_restore(t->record, SOCKET, t->root, list, ARRAY_SIZE(list));
	assert_string_equal(high_of(t->a), "1000\n");
	assert_int_equal(access(t->record, F_OK), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_high),
		cmocka_unit_test_setup_teardown(test_save, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_untrusted, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
