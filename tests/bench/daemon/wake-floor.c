/* SPDX-License-Identifier: MIT */
/*
 * What waking many processes costs on this machine, with no daemon at all
 * (not a test: it prints figures; tests/bench/daemon/run prints them as
 * the floor beside bench-daemon -p's fan-out).
 *
 * PROCESSES children each wait in epoll_wait() on two things: their end of
 * a SOCK_SEQPACKET socketpair, and one eventfd shared by all of them
 * (EPOLLET, never read: every write wakes every watcher).  Each round this
 * process wakes them all in one of two ways, and every child stamps the
 * moment it is awake (CLOCK_MONOTONIC) into memory shared with this one:
 *
 *   sends  one 40-byte message on each socketpair, as memguardd's fan-out
 *          sends one DIRECTIVE per client;
 *   write  one write() to the eventfd, as a broadcast channel would.
 *
 * Per way: start -> the last child awake (p50, p99 over the rounds), and
 * the waker's own time in its send loop or write() (the kernel wakes the
 * watchers inside it).  Nothing here depends on memguard: it is the bound
 * that any design which wakes every client process meets on these CPUs.
 *
 * Output: a line "key value" per figure (for the runner).
 *
 * Usage: wake-floor [PROCESSES [ROUNDS]]   (defaults 1000 and 36)
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ROUNDS 1000
#define WAY_SENDS 0
#define WAY_WRITE 1
#define SETTLE_US 20000                 /* between rounds: the children back in epoll_wait */
#define ROUND_TIMEOUT_MS 10000.0

struct shared {
	_Atomic int ready;                   /* children in their loop */
	_Atomic int awake[2][MAX_ROUNDS];    /* children that stamped a round */
	double stamp[];                      /* [(way * rounds + round) * n + i], ms */
};

static struct shared *sh;
static int n, rounds;

static void __attribute__((noreturn)) die(const char *what)
{
	fprintf(stderr, "wake-floor: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void stamp(int way, int *round, int i)
{
	if (*round < rounds) {
		sh->stamp[((size_t)way * rounds + *round) * n + i] = mono_ms();
		atomic_fetch_add(&sh->awake[way][*round], 1);
	}
	(*round)++;
}

/* Child `i`: wait, stamp, wait again, until its socket is closed. */
static void __attribute__((noreturn)) child(int i, int sock, int efd)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.u32 = WAY_WRITE };
	int ep = epoll_create1(0), round[2] = { 0, 0 };

	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) < 0)
		_exit(1);
	ev = (struct epoll_event){ .events = EPOLLIN, .data.u32 = WAY_SENDS };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, sock, &ev) < 0)
		_exit(1);
	atomic_fetch_add(&sh->ready, 1);
	for (;;) {
		struct epoll_event got[2];
		int k = epoll_wait(ep, got, 2, -1);

		for (int j = 0; j < k; j++) {
			char buf[64];

			if (got[j].data.u32 == WAY_WRITE) {
				stamp(WAY_WRITE, &round[WAY_WRITE], i);
				continue;
			}
			if (recv(sock, buf, sizeof(buf), 0) <= 0)
				_exit(0);
			stamp(WAY_SENDS, &round[WAY_SENDS], i);
		}
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile (sorts v). */
static double pct(double *v, int len, double p)
{
	int k = (int)((double)len * p + 0.999999);

	qsort(v, (size_t)len, sizeof(*v), cmp_double);
	return v[k == 0 ? 0 : k - 1];
}

/* Wait until every child stamped `round` of `way`; the last stamp, or -1
 * on a timeout. */
static double last_awake(int way, int round, double start)
{
	double last = 0;

	while (atomic_load(&sh->awake[way][round]) < n) {
		if (mono_ms() - start > ROUND_TIMEOUT_MS)
			return -1;
		usleep(200);
	}
	for (int i = 0; i < n; i++) {
		double t = sh->stamp[((size_t)way * rounds + round) * n + i];

		last = t > last ? t : last;
	}
	return last;
}

int main(int argc, char **argv)
{
	static const char *const names[2] = { "sends", "write" };
	const char msg[40] = { 1 };
	struct rlimit rl;
	double *last[2], *call[2];
	int *socks, efd, rc = 0;
	pid_t *kids;

	n = argc > 1 ? atoi(argv[1]) : 1000;
	rounds = argc > 2 ? atoi(argv[2]) : 36;
	if (n < 1 || n > 4000 || rounds < 2 || rounds > MAX_ROUNDS) {
		fprintf(stderr, "usage: wake-floor [PROCESSES (1..4000) [ROUNDS (2..%d)]]\n",
			MAX_ROUNDS);
		return 2;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	sh = mmap(NULL, sizeof(*sh) + 2 * sizeof(double) * (size_t)rounds * n,
		  PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	socks = calloc((size_t)n, sizeof(*socks));
	kids = calloc((size_t)n, sizeof(*kids));
	for (int w = 0; w < 2; w++) {
		last[w] = calloc((size_t)rounds, sizeof(double));
		call[w] = calloc((size_t)rounds, sizeof(double));
		if (!last[w] || !call[w])
			die("calloc");
	}
	if (sh == MAP_FAILED || !socks || !kids)
		die("memory");
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (efd < 0)
		die("eventfd");

	for (int i = 0; i < n; i++) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
			die("socketpair");
		kids[i] = fork();
		if (kids[i] < 0)
			die("fork");
		if (kids[i] == 0) {
			/* Only this process's end: when the parent ends,
			 * however, every child reads EOF and exits. */
			for (int j = 0; j < i; j++)
				close(socks[j]);
			close(sv[0]);
			child(i, sv[1], efd);
		}
		close(sv[1]);
		socks[i] = sv[0];
	}
	for (int w = 0; atomic_load(&sh->ready) < n; w++) {
		if (w > 6000) {
			fprintf(stderr, "wake-floor: only %d of %d children started\n",
				atomic_load(&sh->ready), n);
			return 1;               /* they read EOF and exit */
		}
		usleep(10000);
	}

	for (int r = 0; r < rounds && rc == 0; r++) {
		double start, l;
		uint64_t one = 1;

		usleep(SETTLE_US);
		start = mono_ms();
		for (int i = 0; i < n; i++)
			send(socks[i], msg, sizeof(msg), MSG_DONTWAIT | MSG_NOSIGNAL);
		call[WAY_SENDS][r] = mono_ms() - start;
		l = last_awake(WAY_SENDS, r, start);
		last[WAY_SENDS][r] = l - start;

		usleep(SETTLE_US);
		start = mono_ms();
		if (write(efd, &one, sizeof(one)) != sizeof(one))
			rc = 1;
		call[WAY_WRITE][r] = mono_ms() - start;
		if (l < 0 || (l = last_awake(WAY_WRITE, r, start)) < 0) {
			fprintf(stderr, "wake-floor: round %d: %d and %d of %d children woke within %.0f ms\n",
				r, atomic_load(&sh->awake[WAY_SENDS][r]),
				atomic_load(&sh->awake[WAY_WRITE][r]), n, ROUND_TIMEOUT_MS);
			rc = 1;
		}
		last[WAY_WRITE][r] = l - start;
	}

	for (int i = 0; i < n; i++) {
		close(socks[i]);
		kill(kids[i], SIGKILL);
	}
	for (int i = 0; i < n; i++)
		waitpid(kids[i], NULL, 0);
	if (rc)
		return rc;
	printf("processes %d\nrounds %d\n", n, rounds);
	for (int w = 0; w < 2; w++) {
		printf("%s_last_p50_ms %.3f\n", names[w], pct(last[w], rounds, 0.50));
		printf("%s_last_p99_ms %.3f\n", names[w], pct(last[w], rounds, 0.99));
		printf("%s_call_p50_ms %.3f\n", names[w], pct(call[w], rounds, 0.50));
	}
	return 0;
}
