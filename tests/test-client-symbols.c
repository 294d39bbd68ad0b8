/* SPDX-License-Identifier: MIT */
/*
 * The ABI of the built libmemguard-client.so, read with `nm -D`: it exports
 * only mg_ symbols, exactly those of the version script, each under a
 * version node, and every function the installed header declares.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SYMS 256

struct names {
	char name[MAX_SYMS][64];
	unsigned n;
};

static struct names exported, listed, declared;

static bool has(const struct names *s, const char *name)
{
	for (unsigned i = 0; i < s->n; i++)
		if (!strcmp(s->name[i], name))
			return true;
	return false;
}

static void add(struct names *s, const char *name, size_t len)
{
	assert_true(s->n < MAX_SYMS);
	assert_true(len < sizeof(s->name[0]));
	memcpy(s->name[s->n], name, len);
	s->name[s->n++][len] = 0;
}

/* The .so that libtool built, from the .la's dlname. */
static void library_path(char *buf, size_t size)
{
	char line[512], dlname[256] = "";
	FILE *f = fopen("client/libmemguard-client.la", "re");

	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "dlname='%255[^']'", dlname) == 1)
			break;
	fclose(f);
	assert_true(dlname[0]);
	snprintf(buf, size, "client/.libs/%s", dlname);
}

static int setup(void **state)
{
	char so[512], cmd[600], line[512], path[1024], *p;
	FILE *f;

	/* nm -D: "ADDR T name@@NODE", and "0 A NODE" for each version node. */
	library_path(so, sizeof(so));
	snprintf(cmd, sizeof(cmd), "nm -D --defined-only '%s'", so);
	f = popen(cmd, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char type, name[256];

		assert_int_equal(sscanf(line, "%*s %c %255s", &type, name), 2);
		if (type == 'A') {
			assert_string_equal(name, "MEMGUARD_0.1");
			continue;
		}
		p = strstr(name, "@@");
		if (!p)
			fail_msg("%s is exported without a version", name);
		assert_string_equal(p, "@@MEMGUARD_0.1");
		add(&exported, name, (size_t)(p - name));
	}
	assert_int_equal(pclose(f), 0);

	/* The version script's global: names. */
	snprintf(path, sizeof(path), "%s/client/libmemguard-client.sym", MG_TOP_SRCDIR);
	f = fopen(path, "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		size_t n;

		p = line + strspn(line, " \t");
		if (strncmp(p, "mg_", 3))
			continue;
		n = strcspn(p, ";");
		assert_int_equal(p[n], ';');
		add(&listed, p, n);
	}
	fclose(f);

	/* The header's prototypes: lines that start with a type and name an
	 * mg_ function ("void *mg_malloc(size_t size);"). */
	snprintf(path, sizeof(path), "%s/client/memguard/client.h", MG_TOP_SRCDIR);
	f = fopen(path, "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *open = strchr(line, '('), *start;

		if (!isalpha((unsigned char)line[0]) || !strncmp(line, "typedef", 7) || !open)
			continue;
		start = open;
		while (start > line && (isalnum((unsigned char)start[-1]) || start[-1] == '_'))
			start--;
		if (!strncmp(start, "mg_", 3))
			add(&declared, start, (size_t)(open - start));
	}
	fclose(f);
	return 0;
}

static void test_only_mg_symbols(void **state)
{
	assert_true(exported.n > 0);
	for (unsigned i = 0; i < exported.n; i++)
		if (strncmp(exported.name[i], "mg_", 3))
			fail_msg("exported: %s", exported.name[i]);
}

static void test_exports_match_version_script(void **state)
{
	for (unsigned i = 0; i < exported.n; i++)
		if (!has(&listed, exported.name[i]))
			fail_msg("%s is exported but not in the version script", exported.name[i]);
	for (unsigned i = 0; i < listed.n; i++)
		if (!has(&exported, listed.name[i]))
			fail_msg("%s is in the version script but not exported", listed.name[i]);
}

static void test_header_is_exported(void **state)
{
	/* client.h declares 21 functions today: a parser gone blind would
	 * pass vacuously. */
	assert_true(declared.n >= 21);
	for (unsigned i = 0; i < declared.n; i++)
		if (!has(&exported, declared.name[i]))
			fail_msg("%s is declared in client.h but not exported", declared.name[i]);
	for (unsigned i = 0; i < exported.n; i++)
		if (!has(&declared, exported.name[i]))
			fail_msg("%s is exported but not declared in client.h", exported.name[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_only_mg_symbols),
		cmocka_unit_test(test_exports_match_version_script),
		cmocka_unit_test(test_header_is_exported),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
