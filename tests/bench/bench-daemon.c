/* SPDX-License-Identifier: MIT */
/*
 * memguardd under 1000 connected clients (not a test: it prints figures).
 *
 * The daemon runs on a fixture cgroup tree.  The stimulus is a budget
 * change through SET_BUDGET: it moves every client's utilization and the
 * daemon decides at once, so what is timed is the daemon's own work —
 * deciding and sending 1000 directives — not the tick period (a change
 * in memory.current is seen at the next tick or PSI/events wake-up).
 *
 * Prints: time from the change to each client's directive and to the last
 * one (p50, p99), the daemon's RSS, its CPU and wake-ups while idle and
 * during a storm of changes; and whether each target is met
 * (p99 ≤ 5 ms, idle wake-ups only the tick, RSS ≤ 8 MiB).
 *
 * Usage: bench-daemon [MEMGUARDD] [CLIENTS]
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/proto.h"
#include "tests/integration/fixture.h"

#define MiB FIXTURE_MiB
#define ROUNDS_PER_SWEEP 12
#define SWEEPS 5
#define IDLE_SECONDS 8                 /* < the daemon's 10 s PING interval */

static struct fixture fx;

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "bench-daemon: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	fixture_done(&fx);
	exit(1);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Wait for a message on `fd`. */
static void recv_wait(int fd, struct mg_msg *m)
{
	int r = fixture_recv(fd, m, 5000);

	if (r < 0)
		die("no answer from the daemon: %s", strerror(-r));
}

static void set_budget(int admin, uint64_t budget)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_SET_BUDGET } };

	m.set_budget.budget = budget;
	strcpy(m.set_budget.service, "web");
	fixture_send(admin, &m);
}

struct proc_sample {
	double cpu_s;                    /* utime + stime */
	unsigned long long wakeups;      /* voluntary + involuntary context switches */
	unsigned long long rss_kb;
};

static struct proc_sample sample(pid_t pid)
{
	struct proc_sample s = { 0 };
	char path[64], line[256];
	unsigned long long ut = 0, st = 0, v = 0, nv = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (f) {
		/* Fields 14 and 15 after the ")" of the comm. */
		char buf[1024], *p;

		if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')))
			sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
			       &st);
		fclose(f);
	}
	s.cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (f) {
		while (fgets(line, sizeof(line), f)) {
			sscanf(line, "VmRSS: %llu", &s.rss_kb);
			sscanf(line, "voluntary_ctxt_switches: %llu", &v);
			sscanf(line, "nonvoluntary_ctxt_switches: %llu", &nv);
		}
		fclose(f);
	}
	s.wakeups = v + nv;
	return s;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double pct(double *v, size_t n, double p)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return v[(size_t)((double)(n - 1) * p)];
}

int main(int argc, char **argv)
{
	const char *exe = argc > 1 ? argv[1] : "daemon/memguardd";
	int n_clients = argc > 2 ? atoi(argv[2]) : 1000;
	struct rlimit rl = { 0 };
	struct proc_sample a, b, c;
	double *lat, *last, t0, storm_ms;
	size_t n_lat = 0, n_last = 0;
	int *fds, admin, ep;
	bool ok;

	if (n_clients < 1 || n_clients > 4000)
		die("CLIENTS must be 1..4000");
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	signal(SIGPIPE, SIG_IGN);

	fixture_init(&fx, "bench-daemon", "web");
	fixture_cgroup(&fx, "web", 85 * MiB);
	fixture_put(&fx, "memguard.conf", "[daemon]\ntick = 1s\nlog_level = warning\n"
					  "[web]\ncgroup = web\nbudget = 1G\n");
	setenv("MEMGUARDD", exe, 1);
	fixture_start(&fx, NULL, NULL, NULL);

	fds = calloc((size_t)n_clients, sizeof(*fds));
	lat = calloc((size_t)n_clients * ROUNDS_PER_SWEEP * SWEEPS, sizeof(*lat));
	last = calloc(ROUNDS_PER_SWEEP * SWEEPS, sizeof(*last));
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (!fds || !lat || !last || ep < 0)
		die("out of memory");
	for (int i = 0; i < n_clients; i++) {
		struct mg_msg m = { .hdr = { .type = MG_MSG_HELLO, .seq = 1 } };
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };

		fds[i] = fixture_connect(&fx, NULL);
		strcpy(m.hello.process, "bench");
		fixture_send(fds[i], &m);
		recv_wait(fds[i], &m);
		if (m.hdr.type != MG_MSG_WELCOME)
			die("client %d not welcomed: %s", i, m.error.text);
		recv_wait(fds[i], &m);  /* the directive in force follows */
		if (m.hdr.type != MG_MSG_DIRECTIVE)
			die("client %d: no DIRECTIVE after WELCOME", i);
		epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
	}
	admin = fixture_connect(&fx, NULL);

	/* Idle: no client traffic, only the daemon's own tick. */
	usleep(500000);
	a = sample(fx.daemon);
	sleep(IDLE_SECONDS);
	b = sample(fx.daemon);

	/* Storm: each round lowers the budget a little, which changes the
	 * GC percent, so every client gets a new directive. */
	t0 = now_ms();
	for (int sweep = 0; sweep < SWEEPS; sweep++) {
		for (int r = 0; r < ROUNDS_PER_SWEEP; r++) {
			int got = 0;
			double start;
			struct mg_msg m;

			char *seen = calloc((size_t)n_clients, 1);

			if (!seen)
				die("out of memory");
			start = now_ms();
			set_budget(admin, (106 - (uint64_t)r) * MiB);
			while (got < n_clients) {
				struct epoll_event evs[256];
				int n = epoll_wait(ep, evs, 256, 3000);

				if (n <= 0)
					die("directives stopped after %d of %d clients", got,
					    n_clients);
				for (int k = 0; k < n; k++) {
					int i = (int)evs[k].data.u32, rr;

					while ((rr = fixture_recv(fds[i], &m, 0)) == 0) {
						if (fixture_pong(fds[i], &m) ||
						    m.hdr.type != MG_MSG_DIRECTIVE || seen[i])
							continue;
						seen[i] = 1;
						lat[n_lat++] = now_ms() - start;
						got++;
					}
					if (rr != -ETIMEDOUT)
						die("client %d: %s", i, strerror(-rr));
				}
			}
			last[n_last++] = now_ms() - start;
			free(seen);
			/* The admin answer. */
			recv_wait(admin, &m);
		}
		/* Back to NORMAL before the next sweep (two calm ticks). */
		set_budget(admin, 1024 * MiB);
		for (int w = 0; w < 40; w++) {
			struct epoll_event evs[256];
			struct mg_msg m;
			int n = epoll_wait(ep, evs, 256, 100);

			for (int k = 0; k < n; k++) {
				int fd = fds[evs[k].data.u32], r;

				while ((r = fixture_recv(fd, &m, 0)) == 0)
					fixture_pong(fd, &m);
				if (r != -ETIMEDOUT)
					die("a client: %s", strerror(-r));
			}
			while (fixture_recv(admin, &m, 0) == 0)
				;
		}
	}
	storm_ms = now_ms() - t0;
	c = sample(fx.daemon);

	printf("memguardd with %d clients (%d directive rounds)\n", n_clients,
	       ROUNDS_PER_SWEEP * SWEEPS);
	printf("  change -> a client's directive    p50 %7.3f ms   p99 %7.3f ms\n",
	       pct(lat, n_lat, 0.50), pct(lat, n_lat, 0.99));
	printf("  change -> the last client's one   p50 %7.3f ms   p99 %7.3f ms\n",
	       pct(last, n_last, 0.50), pct(last, n_last, 0.99));
	printf("  daemon RSS                        %7.1f MiB\n", b.rss_kb / 1024.0);
	printf("  idle: CPU %.3f %% of a core, %.2f wake-ups/s (tick: 1/s)\n",
	       100.0 * (b.cpu_s - a.cpu_s) / IDLE_SECONDS,
	       (double)(b.wakeups - a.wakeups) / IDLE_SECONDS);
	printf("  storm: CPU %.1f %% of a core over %.1f s\n",
	       100.0 * (c.cpu_s - b.cpu_s) / (storm_ms / 1000.0), storm_ms / 1000.0);
	printf("targets:\n");
	ok = pct(last, n_last, 0.99) <= 5.0;
	printf("  p99 change -> last client <= 5 ms: %s\n", ok ? "met" : "MISSED");
	ok = (double)(b.wakeups - a.wakeups) / IDLE_SECONDS <= 1.5;
	printf("  idle wake-ups only the tick:       %s\n", ok ? "met" : "MISSED");
	ok = b.rss_kb <= 8 * 1024;
	printf("  RSS <= 8 MiB:                      %s\n", ok ? "met" : "MISSED");

	fixture_done(&fx);
	return 0;
}
