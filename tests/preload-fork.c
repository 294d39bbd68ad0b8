/* SPDX-License-Identifier: MIT */
/*
 * A program that knows nothing of memguard and forks in every way while
 * threads of it allocate: fork() without exec (the children allocate,
 * start a thread of their own, fork again, leave through exit() or
 * _exit()), fork() from a thread that is not the main one, fork() + exec,
 * vfork() + exec and posix_spawn().  Its output depends only on its
 * argument, so tests/test-preload.sh compares it with and without
 * libmemguard-malloc.so (and with the preload library registering it).
 * Exits 0 when every child did its work and exited 0.
 *
 * Usage: preload-fork [CHILDREN]
 */
#include "config.h"

#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHURN_THREADS 4

extern char **environ;

static atomic_bool stop;
static int failed;

/* Allocation-heavy and deterministic: a hash of what was stored, through
 * small, medium, reallocated and huge blocks. */
static uint64_t work(unsigned seed, unsigned n)
{
	uint64_t h = 1469598103934665603ULL;
	char **v = calloc(n, sizeof(*v)), *big;

	if (!v)
		abort();
	for (unsigned i = 0; i < n; i++) {
		size_t len = (seed * 2654435761u + i * 40503u) % 5000 + 1;

		v[i] = malloc(len);
		if (!v[i])
			abort();
		memset(v[i], (int)(i + seed), len);
		if (i % 5 == 0) {
			char *r = realloc(v[i], 3 * len);

			if (!r)
				abort();
			v[i] = r;
			memset(v[i] + len, 7, 2 * len);
			len *= 3;
		}
		h = (h ^ (uint8_t)v[i][len - 1] ^ len) * 1099511628211ULL;
		if (i % 3 == 2) {
			free(v[i - 1]);
			v[i - 1] = NULL;
		}
	}
	big = malloc(8 << 20);
	if (!big)
		abort();
	memset(big, (int)seed, 8 << 20);
	h = (h ^ (uint8_t)big[(seed * 7919) % (8 << 20)]) * 1099511628211ULL;
	free(big);
	for (unsigned i = 0; i < n; i++)
		free(v[i]);
	free(v);
	return h;
}

/* Threads that allocate and free all along, so that every fork() finds
 * some of them inside the allocator. */
static void *churn(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	void *keep[128] = { 0 };

	for (unsigned long n = 1; !atomic_load(&stop); n++) {
		unsigned i;

		/* Busy, but leaving the forks some of the machine. */
		if (n % 256 == 0)
			usleep(200);
		seed = seed * 1103515245u + 12345u;
		i = (seed >> 8) % 128;
		free(keep[i]);
		keep[i] = malloc(seed % 20000 + 1);
		if (!keep[i])
			abort();
		memset(keep[i], 1, 1);
	}
	for (unsigned i = 0; i < 128; i++)
		free(keep[i]);
	return NULL;
}

static void *child_thread(void *arg)
{
	*(uint64_t *)arg = work(7, 500);
	return NULL;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
	char line[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* write(), not stdio: a child's buffer is never flushed twice. */
	if (n < 0 || write(STDOUT_FILENO, line, (size_t)n) != n)
		_exit(4);
}

/* A child that never execs.  Odd ones leave through exit(), so atexit
 * handlers and destructors run in a child; even ones through _exit(). */
static void __attribute__((noreturn)) child(unsigned i)
{
	uint64_t h = work(i, 2000), th = 0;
	pthread_t t;

	if (pthread_create(&t, NULL, child_thread, &th) || pthread_join(t, NULL))
		_exit(3);
	say("child %u %016llx %016llx\n", i, (unsigned long long)h, (unsigned long long)th);
	if (i % 2)
		exit(0);
	_exit(0);
}

static void reap(pid_t pid, const char *what, unsigned i)
{
	int status;

	if (pid < 0) {
		printf("%s %u: cannot start: %m\n", what, i);
		failed = 1;
		return;
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
		printf("%s %u: failed (status %#x)\n", what, i, (unsigned)status);
		failed = 1;
	}
}

static pid_t fork_child(unsigned i)
{
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0)
		child(i);
	return pid;
}

/* fork() from a thread that is not the main one. */
static void *forker(void *arg)
{
	unsigned base = (unsigned)(uintptr_t)arg;

	for (unsigned i = 0; i < 4; i++)
		reap(fork_child(base + i), "thread's child", base + i);
	return NULL;
}

int main(int argc, char **argv)
{
	unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 40;
	pthread_t threads[CHURN_THREADS], t;
	char num[16];
	pid_t pid;

	for (unsigned i = 0; i < CHURN_THREADS; i++)
		if (pthread_create(&threads[i], NULL, churn, (void *)(uintptr_t)(i + 1)))
			return 2;

	/* fork() without exec. */
	for (unsigned i = 0; i < n; i++)
		reap(fork_child(i), "child", i);

	/* A child that forks children of its own. */
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		int bad = 0;

		for (unsigned i = 0; i < 3; i++) {
			pid_t g = fork_child(1000 + i);
			int status;

			if (g < 0 || waitpid(g, &status, 0) != g || !WIFEXITED(status) ||
			    WEXITSTATUS(status))
				bad = 1;
		}
		_exit(bad);
	}
	reap(pid, "parent of grandchildren", 0);

	/* fork() from another thread. */
	if (pthread_create(&t, NULL, forker, (void *)(uintptr_t)2000) || pthread_join(t, NULL))
		return 2;

	/* fork() + exec, after the child allocated. */
	for (unsigned i = 0; i < 10; i++) {
		fflush(stdout);
		pid = fork();
		if (pid == 0) {
			snprintf(num, sizeof(num), "%u", i);
			say("exec %u %016llx\n", i, (unsigned long long)work(i, 100));
			execl("/bin/echo", "echo", "exec'd", num, (char *)NULL);
			_exit(127);
		}
		reap(pid, "fork+exec", i);
	}

	/* vfork() + exec: nothing but exec in the child. */
	for (unsigned i = 0; i < 10; i++) {
		snprintf(num, sizeof(num), "%u", i);
		fflush(stdout);
		pid = vfork();
		if (pid == 0) {
			execl("/bin/echo", "echo", "vfork", num, (char *)NULL);
			_exit(127);
		}
		reap(pid, "vfork", i);
	}

	/* posix_spawn(). */
	for (unsigned i = 0; i < 10; i++) {
		char *args[] = { "echo", "spawned", num, NULL };
		int r;

		snprintf(num, sizeof(num), "%u", i);
		fflush(stdout);
		r = posix_spawn(&pid, "/bin/echo", NULL, NULL, args, environ);
		reap(r ? -1 : pid, "posix_spawn", i);
	}

	atomic_store(&stop, true);
	for (unsigned i = 0; i < CHURN_THREADS; i++)
		pthread_join(threads[i], NULL);
	printf("done: %u children, %s\n", n, failed ? "some failed" : "all exited 0");
	return failed;
}
