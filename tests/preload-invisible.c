/* SPDX-License-Identifier: MIT */
/*
 * What a program may assume of libc alone, checked from inside a program
 * that knows nothing of memguard.  tests/test-preload.sh runs it without
 * libmemguard-malloc.so, with it, and with it registering the program
 * (MEMGUARD_SOCKET): every mode must pass in all three.
 *
 *   lone     The process ends when the program's last thread ends through
 *            pthread_exit(), whatever the library's own threads do: a
 *            child whose leader calls pthread_exit() after its other
 *            thread ended, and a child forked from a worker thread whose
 *            last thread (that worker, the child's leader) starts and
 *            joins one more thread, then returns.  The parent waits for
 *            each with a generous bound (LONE_TIMEOUT_S) and fails when a
 *            child outlives it; it never asserts a speed.
 *   fds      The first descriptor main() opens is 3 (in a copy of the
 *            program started again with only 0, 1 and 2).  With REGISTERED as
 *            the second argument, again once the library has connected
 *            (a socket among the process's descriptors), and no
 *            descriptor but 0, 1 and 2 is below 64.
 *   errno    errno is 0 when main() starts, and every allocation function
 *            that succeeds leaves it as it was, in the process and in a
 *            child of fork() (whose first allocations resume the
 *            library's client).  Failures set ENOMEM.
 *
 * Usage: preload-invisible lone | fds [REGISTERED] | errno
 * Exits 0 when every check held, 1 (saying which failed) when one did not.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/close_range.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LONE_TIMEOUT_S 60                /* s a child may take to end: a hang, not a speed */
#define REGISTER_TIMEOUT_S 30            /* s the library may take to connect */
#define LOW_FDS 64                       /* no descriptor of the library below this */
#define ERRNO_MARK 4242                  /* an errno no call sets */

static int failed;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("FAIL ", stdout);
	vprintf(fmt, ap);
	putchar('\n');
	va_end(ap);
	fflush(stdout);
	failed = 1;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- lone --------------------------------------------------------------- */

/* Allocation that reaches the allocator's slow paths, as a program's does
 * (it resumes the library's client in a child of fork()). */
static void allocate(void)
{
	void *v[64];

	for (unsigned i = 0; i < 64; i++)
		v[i] = malloc(((size_t)i << 14) + 100);
	for (unsigned i = 0; i < 64; i++)
		free(v[i]);
}

static void *nothing(void *arg)
{
	allocate();
	return arg;
}

/* Wait for `pid` at most LONE_TIMEOUT_S; false (and the child killed) when
 * it outlived that or did not exit 0. */
static bool wait_bounded(pid_t pid, const char *what)
{
	double t0 = now_s();
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			break;
		if (r < 0) {
			fail("%s: waitpid: %m", what);
			return false;
		}
		if (now_s() - t0 > LONE_TIMEOUT_S) {
			fail("%s: the child %d is still there after %d s (its program's threads "
			     "have all ended)", what, (int)pid, LONE_TIMEOUT_S);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return false;
		}
		usleep(10000);
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fail("%s: the child ended with status 0x%x, not exit 0", what, (unsigned)status);
		return false;
	}
	return true;
}

/* In a child: the library's thread, if it runs here, has started (the
 * check means something only then), within a bound. */
static void settle(void)
{
	allocate();
	usleep(100000);
}

static void *fork_from_worker(void *arg)
{
	pthread_t t;
	pid_t pid;

	(void)arg;
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		fail("fork-from-thread: fork: %m");
		return NULL;
	}
	if (pid == 0) {
		/* The child's only thread is this one, its leader now.  It
		 * starts and joins one more, then returns: the child's last
		 * thread ends through pthread_exit(). */
		settle();
		if (pthread_create(&t, NULL, nothing, NULL) == 0)
			pthread_join(t, NULL);
		return NULL;
	}
	(void)wait_bounded(pid, "fork-from-thread");
	return NULL;
}

static void lone(void)
{
	pthread_t t;
	pid_t pid;

	/* The leader leaves first, its worker after it. */
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		fail("leader-exit: fork: %m");
		return;
	}
	if (pid == 0) {
		settle();
		if (pthread_create(&t, NULL, nothing, NULL) == 0)
			pthread_detach(t);
		pthread_exit(NULL);
	}
	if (wait_bounded(pid, "leader-exit"))
		printf("ok   leader-exit: the process ended with its program's last thread\n");

	if (pthread_create(&t, NULL, fork_from_worker, NULL)) {
		fail("fork-from-thread: pthread_create");
		return;
	}
	pthread_join(t, NULL);
	if (!failed)
		printf("ok   fork-from-thread: the child ended with its last thread's return\n");
}

/* ---- fds ---------------------------------------------------------------- */

static int first_fd(void)
{
	int fd = open("/dev/null", O_RDONLY);

	if (fd >= 0)
		close(fd);
	return fd;
}

/* Some descriptor of this process is a socket. */
static bool has_socket(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	bool found = false;

	if (!d)
		return false;
	while ((e = readdir(d)) && !found) {
		struct stat st;

		if (e->d_name[0] != '.' && fstatat(dirfd(d), e->d_name, &st, 0) == 0 &&
		    S_ISSOCK(st.st_mode))
			found = true;
	}
	closedir(d);
	return found;
}

/* Descriptors other than 0, 1, 2 (and the directory's own) below LOW_FDS. */
static void check_low_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	if (!d) {
		fail("fds: /proc/self/fd: %m");
		return;
	}
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);

		if (e->d_name[0] != '.' && fd > 2 && fd < LOW_FDS && fd != dirfd(d))
			fail("fds: descriptor %d is open, below %d, and not the program's", fd,
			     LOW_FDS);
	}
	closedir(d);
}

static void fds(bool registered)
{
	/* Before anything else of main(). */
	int fd = first_fd();
	double t0;

	if (fd != 3)
		fail("fds: the first descriptor main() opened is %d, not 3", fd);
	else
		printf("ok   fds: the first descriptor main() opens is 3\n");
	if (!registered)
		return;
	t0 = now_s();
	while (!has_socket()) {
		if (now_s() - t0 > REGISTER_TIMEOUT_S) {
			fail("fds: no socket among our descriptors after %d s: never connected",
			     REGISTER_TIMEOUT_S);
			return;
		}
		allocate();
		usleep(20000);
	}
	check_low_fds();
	fd = first_fd();
	if (fd != 3)
		fail("fds: once connected, the first free descriptor is %d, not 3", fd);
	else if (!failed)
		printf("ok   fds: connected, with no descriptor below %d; the next one is 3\n",
		       LOW_FDS);
}

/* ---- errno -------------------------------------------------------------- */

#define KEEP(what, expr)                                                             \
	do {                                                                         \
		errno = ERRNO_MARK;                                                  \
		expr;                                                                \
		if (errno != ERRNO_MARK)                                             \
			fail("errno: %s changed errno to %d (%s)", what, errno,      \
			     strerror(errno));                                       \
	} while (0)

/* Every allocation function, on small, large and huge blocks, succeeding. */
static void errno_round(const char *where)
{
	static const size_t sizes[] = { 1, 24, 1000, 5000, 70000, 300000, 3u << 20, 40u << 20 };
	char what[96];

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];
		void *p = NULL, *q = NULL;

#define NAME(fn) (snprintf(what, sizeof(what), "%s %s(%zu)", where, fn, n), what)
		KEEP(NAME("malloc"), p = malloc(n));
		if (!p)
			continue;
		memset(p, 1, n);
		KEEP(NAME("malloc_usable_size"), (void)malloc_usable_size(p));
		KEEP(NAME("realloc up"), q = realloc(p, 2 * n + 100));
		if (q)
			p = q;
		KEEP(NAME("realloc down"), q = realloc(p, n / 2 + 1));
		if (q)
			p = q;
		KEEP(NAME("free"), free(p));
		KEEP(NAME("calloc"), p = calloc(1, n));
		KEEP(NAME("reallocarray"), q = reallocarray(p, 2, n));
		KEEP(NAME("free"), free(q ? q : p));
		KEEP(NAME("posix_memalign"), (void)posix_memalign(&p, 64, n));
		KEEP(NAME("free"), free(p));
		KEEP(NAME("aligned_alloc"), p = aligned_alloc(4096, n));
		KEEP(NAME("free"), free(p));
		KEEP(NAME("memalign"), p = memalign(1u << 16, n));
		KEEP(NAME("free"), free(p));
		KEEP(NAME("valloc"), p = valloc(n));
		KEEP(NAME("free"), free(p));
		KEEP(NAME("pvalloc"), p = pvalloc(n));
		KEEP(NAME("free"), free(p));
#undef NAME
	}
	snprintf(what, sizeof(what), "%s free(NULL)", where);
	KEEP(what, free(NULL));
	snprintf(what, sizeof(what), "%s malloc_trim(0)", where);
	KEEP(what, (void)malloc_trim(0));
}

/* Many blocks freed at once: the caches overflow, the heap gets pages to
 * release, the scavenger starts. */
static void errno_churn(const char *where)
{
	enum { N = 20000 };
	static void *v[N];
	char what[96];

	snprintf(what, sizeof(what), "%s malloc (churn)", where);
	for (unsigned i = 0; i < N; i++)
		KEEP(what, v[i] = malloc(100 + i % 3000));
	snprintf(what, sizeof(what), "%s free (churn)", where);
	for (unsigned i = 0; i < N; i++)
		KEEP(what, free(v[i]));
}

static void errno_check(void)
{
	volatile size_t too_big = SIZE_MAX / 2;
	pid_t pid;

	if (errno != 0)
		fail("errno: %d when main() starts, not 0", errno);
	errno_round("process:");
	errno_churn("process:");

	/* (volatile: the compiler would refuse sizes it sees are too big) */
	errno = 0;
	if (malloc(too_big) != NULL || errno != ENOMEM)
		fail("errno: malloc(SIZE_MAX / 2) did not fail with ENOMEM (errno %d)", errno);
	errno = 0;
	if (calloc(too_big, 4) != NULL || errno != ENOMEM)
		fail("errno: calloc overflow did not fail with ENOMEM (errno %d)", errno);
	/* No power of two is that large: glibc says EINVAL.  (Rounding it
	 * up shifted 1 by 64, and gave a block aligned to nothing.) */
	errno = 0;
	if (memalign(too_big + 2, 1) != NULL || errno != EINVAL)
		fail("errno: memalign(SIZE_MAX / 2 + 2) did not fail with EINVAL (errno %d)", errno);

	/* A child's first allocations start the library's client again. */
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		errno_round("fork child:");
		errno_churn("fork child:");
		fflush(stdout);
		_exit(failed);
	}
	if (pid < 0 || !wait_bounded(pid, "errno in a fork child"))
		failed = 1;
	if (!failed)
		printf("ok   errno: kept by every allocation function, in a process and its fork child\n");
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";

	if (strcmp(mode, "fds") == 0 && (argc < 4 || strcmp(argv[3], "CLEAN") != 0)) {
		/* What we inherited (a make's jobserver pipe) is not the
		 * question: start again with 0, 1 and 2 only. */
		char *args[] = { argv[0], "fds", argc > 2 ? argv[2] : "-", "CLEAN", NULL };

		close_range(3, ~0U, 0);
		execv("/proc/self/exe", args);
		fail("fds: exec /proc/self/exe: %m");
	} else if (strcmp(mode, "fds") == 0)
		fds(strcmp(argv[2], "REGISTERED") == 0);
	else if (strcmp(mode, "errno") == 0)
		errno_check();
	else if (strcmp(mode, "lone") == 0)
		lone();
	else {
		fprintf(stderr, "Usage: preload-invisible lone | fds [REGISTERED] | errno\n");
		return 2;
	}
	fflush(stdout);
	return failed;
}
