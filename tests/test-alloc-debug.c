/* SPDX-License-Identifier: MIT */
/*
 * The debug heap (MG_DEBUG_HEAP): correct use works, and a double free,
 * the free of a pointer the heap never handed out and a write past the
 * end of a block each abort with a message that says which.  The bad
 * cases run in a forked child whose stderr is read back.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/alloc/alloc.h"

#define MIB ((size_t)1 << 20)

/* Run `fn` in a child; return what it wrote to stderr and whether it died
 * of SIGABRT. */
static bool dies_saying(void (*fn)(size_t), size_t arg, const char *expect)
{
	char buf[512];
	int fds[2], status;
	ssize_t n, len = 0;
	pid_t pid;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(fds[1], STDERR_FILENO);
		close(fds[0]);
		signal(SIGABRT, SIG_DFL);
		fn(arg);
		_exit(0);
	}
	close(fds[1]);
	while ((n = read(fds[0], buf + len, sizeof(buf) - 1 - (size_t)len)) > 0)
		len += n;
	buf[len] = '\0';
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	print_message("size %zu: %s", arg, buf);
	return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && strstr(buf, expect);
}

static void double_free(size_t size)
{
	void *p = mg_malloc(size), *q;

	mg_free(p);
	/* Another block between the two frees, as in real programs. */
	q = mg_malloc(size == 16 ? 32 : 16);
	mg_free(p);
	mg_free(q);
}

static void foreign_free(size_t kind)
{
	static char not_heap[64];
	char on_stack[64];

	if (kind == 0)
		mg_free(not_heap + 16);
	else if (kind == 1)
		mg_free(on_stack + 16);
	else
		mg_free((char *)mg_malloc(100) + 32);  /* into the middle */
}

static void overflow(size_t size)
{
	char *p = mg_malloc(size);

	p[size] = 'x';                           /* one byte too far */
	mg_free(p);
}

static void overflow_realloc(size_t size)
{
	char *p = mg_malloc(size);

	memset(p, 'y', size + 3);
	p = mg_realloc(p, size * 2);
	mg_free(p);
}

static void test_double_free(void **state)
{
	static const size_t sizes[] = { 16, 100, 4000, 100000, 300000, 5 * MIB };
	size_t i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		assert_true(dies_saying(double_free, sizes[i], "double free") ||
			    (sizes[i] >= HUGE_MIN &&
			     dies_saying(double_free, sizes[i], "freed twice")));
}

static void test_foreign_free(void **state)
{
	assert_true(dies_saying(foreign_free, 0, "never handed out"));
	assert_true(dies_saying(foreign_free, 1, "never handed out"));
	assert_true(dies_saying(foreign_free, 2, "middle of a block"));
}

static void test_overflow(void **state)
{
	static const size_t sizes[] = { 1, 16, 127, 4096, 70000, 300000, 5 * MIB };
	size_t i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		assert_true(dies_saying(overflow, sizes[i], "guard byte overwritten"));
		assert_true(dies_saying(overflow_realloc, sizes[i], "guard byte overwritten"));
	}
}

static void test_correct_use(void **state)
{
	size_t sizes[] = { 0, 1, 15, 16, 17, 1000, 40000, 300000, 5 * MIB };
	size_t i, a;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char *p = mg_malloc(sizes[i]), *q;
		size_t j;

		assert_non_null(p);
		assert_int_equal((uintptr_t)p % MG_MIN_ALIGN, 0);
		/* Exactly the requested bytes are usable: the rest are guards. */
		assert_int_equal(mg_usable_size(p), sizes[i]);
		memset(p, 'a', sizes[i]);
		q = mg_realloc(p, sizes[i] + 10);
		for (j = 0; j < sizes[i]; j++)
			assert_int_equal(q[j], 'a');
		mg_free(q);
		q = mg_calloc(1, sizes[i]);
		for (j = 0; j < sizes[i]; j++)
			assert_int_equal(q[j], 0);
		mg_free(q);
		for (a = 32; a <= 2 * MIB; a *= 4) {
			q = mg_aligned_alloc(a, sizes[i]);
			assert_non_null(q);
			assert_int_equal((uintptr_t)q % a, 0);
			memset(q, 'b', sizes[i]);
			mg_free(q);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_correct_use),
		cmocka_unit_test(test_double_free),
		cmocka_unit_test(test_foreign_free),
		cmocka_unit_test(test_overflow),
	};

#ifndef MG_DEBUG_HEAP
#error "tests/test-alloc-debug.c needs MG_DEBUG_HEAP"
#endif
	return cmocka_run_group_tests(tests, NULL, NULL);
}
