/* SPDX-License-Identifier: MIT */
/*
 * What waking many processes costs on this machine, with no daemon at all
 * (not a test: it prints figures; tests/bench/daemon/run prints them as
 * the floor beside bench-daemon's fan-out).
 *
 * PROCESSES children each wait in epoll_wait() on two things: their end of
 * a SOCK_SEQPACKET socketpair, and one eventfd shared by all of them
 * (EPOLLET, never read: every write wakes every watcher).  One more child,
 * the reader, holds the far ends of PROCESSES other socketpairs in one
 * epoll set, as bench-daemon holds its 1000 clients.  Each round this
 * process wakes them in three ways, and each wakee stamps the moment it
 * has the message (CLOCK_MONOTONIC) into memory shared with this one:
 *
 *   sends   one 40-byte message on each child's socketpair, as memguardd's
 *           fan-out sends one DIRECTIVE per client process;
 *   write   one write() to the eventfd, as a broadcast channel would;
 *   reader  one 40-byte message on each of the reader's socketpairs, as
 *           the fan-out to 1000 clients held by one process.
 *
 * Per way: start -> the last message had (p50, p99 over the rounds), and
 * the waker's own time in its send loop or write() (p50, p99; the kernel
 * queues each message and wakes its watcher inside the call).  Nothing
 * here depends on memguard: it is the cost that any fan-out of this shape
 * pays on these CPUs.
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

#include "tests/bench/daemon/bench-util.h"

#define MAX_ROUNDS 1000
#define WAYS 3
#define WAY_SENDS 0
#define WAY_WRITE 1
#define WAY_READER 2
#define SETTLE_US 20000                 /* between rounds: the wakees back in epoll_wait */
#define ROUND_TIMEOUT_MS 10000.0

struct shared {
	_Atomic int ready;                   /* wakees in their loop */
	_Atomic int awake[WAYS][MAX_ROUNDS]; /* messages had in a round */
	double stamp[];                      /* [(way * rounds + round) * n + i], ms */
};

static struct shared *sh;
static int n, rounds;

static void __attribute__((noreturn)) die(const char *what)
{
	fprintf(stderr, "wake-floor: %s: %s\n", what, strerror(errno));
	exit(1);
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

/* The reader: the far ends of n socketpairs in one epoll set, read as
 * they come, until one of them is closed. */
static void __attribute__((noreturn)) reader(const int *far)
{
	struct epoll_event got[64];
	int ep = epoll_create1(0), *round = calloc((unsigned)n, sizeof(int));

	if (ep < 0 || !round)
		_exit(1);
	for (int i = 0; i < n; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };

		if (epoll_ctl(ep, EPOLL_CTL_ADD, far[i], &ev) < 0)
			_exit(1);
	}
	atomic_fetch_add(&sh->ready, 1);
	for (;;) {
		int k = epoll_wait(ep, got, 64, -1);

		for (int j = 0; j < k; j++) {
			int i = (int)got[j].data.u32;
			char buf[64];

			if (recv(far[i], buf, sizeof(buf), 0) <= 0)
				_exit(0);
			stamp(WAY_READER, &round[i], i);
		}
	}
}

/* n socketpairs, each to a child of its own; our ends in socks[]. */
static void spawn_children(int *socks, pid_t *kids, int efd)
{
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
}

/* n socketpairs, all to one reader; our ends in near[], its pid returned. */
static pid_t spawn_reader(int *near, const int *socks)
{
	int *far = calloc((unsigned)n, sizeof(int));
	pid_t pid;

	if (!far)
		die("calloc");
	for (int i = 0; i < n; i++) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
			die("socketpair");
		near[i] = sv[0];
		far[i] = sv[1];
	}
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		for (int i = 0; i < n; i++) {
			close(socks[i]);
			close(near[i]);
		}
		reader(far);
	}
	for (int i = 0; i < n; i++)
		close(far[i]);
	free(far);
	return pid;
}

/* Wait until all n had round `round` of `way`: the last stamp, or -1 after
 * ROUND_TIMEOUT_MS. */
static double last_had(int way, int round, double start)
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

/* One round of one way: the waker's time in *ret_call, start -> the last
 * message had in *ret_last; 0, or -ETIMEDOUT. */
static int wake(int way, int round, const int *socks, const int *near, int efd,
		double *ret_call, double *ret_last)
{
	static const char msg[40] = { 1 };
	const int *fds = way == WAY_READER ? near : socks;
	uint64_t one = 1;
	double start, last;

	usleep(SETTLE_US);
	start = mono_ms();
	if (way == WAY_WRITE) {
		if (write(efd, &one, sizeof(one)) != sizeof(one))
			die("write");
	} else {
		for (int i = 0; i < n; i++)
			send(fds[i], msg, sizeof(msg), MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	*ret_call = mono_ms() - start;
	last = last_had(way, round, start);
	if (last < 0) {
		fprintf(stderr, "wake-floor: round %d: %d of %d had it within %.0f ms\n",
			round, atomic_load(&sh->awake[way][round]), n, ROUND_TIMEOUT_MS);
		return -ETIMEDOUT;
	}
	*ret_last = last - start;
	return 0;
}

int main(int argc, char **argv)
{
	static const char *const names[WAYS] = { "sends", "write", "reader" };
	double *last[WAYS], *call[WAYS];
	int *socks, *near, efd, rc = 0;
	struct rlimit rl;
	pid_t *kids, rd;

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
	sh = mmap(NULL, sizeof(*sh) + WAYS * sizeof(double) * (size_t)rounds * n,
		  PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	socks = calloc((unsigned)n, sizeof(*socks));
	near = calloc((unsigned)n, sizeof(*near));
	kids = calloc((unsigned)n, sizeof(*kids));
	if (sh == MAP_FAILED || !socks || !near || !kids)
		die("memory");
	for (int w = 0; w < WAYS; w++) {
		last[w] = calloc((size_t)rounds, sizeof(double));
		call[w] = calloc((size_t)rounds, sizeof(double));
		if (!last[w] || !call[w])
			die("calloc");
	}
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (efd < 0)
		die("eventfd");

	spawn_children(socks, kids, efd);
	rd = spawn_reader(near, socks);
	for (int w = 0; atomic_load(&sh->ready) < n + 1; w++) {
		if (w > 6000) {
			fprintf(stderr, "wake-floor: only %d of %d processes started\n",
				atomic_load(&sh->ready), n + 1);
			return 1;               /* they read EOF and exit */
		}
		usleep(10000);
	}
	for (int r = 0; r < rounds && rc == 0; r++)
		for (int w = 0; w < WAYS && rc == 0; w++)
			rc = wake(w, r, socks, near, efd, &call[w][r], &last[w][r]);

	for (int i = 0; i < n; i++) {
		close(socks[i]);
		close(near[i]);
		kill(kids[i], SIGKILL);
	}
	kill(rd, SIGKILL);
	for (int i = 0; i < n; i++)
		waitpid(kids[i], NULL, 0);
	waitpid(rd, NULL, 0);
	if (rc)
		return 1;
	printf("processes %d\nrounds %d\n", n, rounds);
	for (int w = 0; w < WAYS; w++) {
		printf("%s_last_p50_ms %.3f\n", names[w], pct(last[w], (size_t)rounds, 0.50));
		printf("%s_last_p99_ms %.3f\n", names[w], pct(last[w], (size_t)rounds, 0.99));
		printf("%s_call_p50_ms %.3f\n", names[w], pct(call[w], (size_t)rounds, 0.50));
		printf("%s_call_p99_ms %.3f\n", names[w], pct(call[w], (size_t)rounds, 0.99));
	}
	return 0;
}
