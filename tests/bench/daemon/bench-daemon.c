/* SPDX-License-Identifier: MIT */
/*
 * memguardd under many connected clients (not a test: it prints figures;
 * tests/bench/daemon/run runs it against a peer daemon and says met or
 * MISSED).
 *
 * The daemon runs on a fixture cgroup tree (tests/integration/fixture.h)
 * with one service, "web", and CLIENTS clients on it, all held by this
 * process.  Calm, each client sends a REPORT once per report interval
 * (staggered, as the client library does) and answers PINGs.
 *
 * Fan-out: the stimulus is a budget change through SET_BUDGET; it moves
 * the service's utilization and the daemon decides at once and sends a
 * new directive to every client.  Each client socket has SO_TIMESTAMPNS,
 * so the kernel stamps every directive when the daemon's send() queues it
 * on the client's socket: the fan-out is timed from the daemon's sends,
 * not from when this single reader gets round to each socket.  Times are
 * CLOCK_REALTIME (the kernel's stamps are), taken on one host within a few
 * ms, so a clock step is the only thing that could spoil a round.  Per
 * round: change -> each client's directive queued, change -> the last one
 * queued, first -> last queued (the daemon's send loop), change -> the
 * last one read here, and the daemon's own CPU time and run-queue wait in
 * that round from /proc/PID/schedstat.
 *
 * Clients announce MG_CAP_BOARD (-m: they do not).  A daemon that gives
 * them a directive board puts each directive's state into the client's
 * slot and wakes the board's pipe once (a release demand follows as a
 * DIRECTIVE): the slot's stamp
 * (CLOCK_REALTIME, written with the slot) is then the moment the
 * directive reached the client, and "read" the moment this process (or
 * the client's) looked at the slot after the wake-up.  A daemon without
 * boards (the baseline, which the runner runs with -m) sends DIRECTIVEs
 * as before.
 *
 * With -p every client is a process of its own (forked from this one,
 * mapped to "web" in the fixture's /proc), as on a real host: each
 * directive then wakes a process that competes with the daemon for a CPU
 * while it is still sending.  The children write the stamps into memory
 * shared with this process; the figures are the same.
 *
 * Output: a line "key value" per figure (for the runner).
 *
 * Usage: bench-daemon [-p] [-m] MEMGUARDD [CLIENTS [SWEEPS [CALM_SECONDS]]]
 * Environment: BENCH_DAEMON_NICE, the daemon's nice value (default: ours).
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
#include <sys/mman.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/proto.h"
#include "tests/bench/daemon/bench-util.h"
#include "tests/integration/fixture.h"

#define MiB FIXTURE_MiB
#define ROUNDS_PER_SWEEP 12

static struct fixture fx;
static int n_clients;
static int *fds;
static int ep;
static uint32_t report_ms = 1000;
static uint32_t hello_caps = MG_CAP_BOARD;

/* The board: each client's slot (NULL: it has none) and the seq last seen
 * there.  Epoll events of a board's wake-up carry BOARD_EV | i. */
#define BOARD_EV (UINT32_C(1) << 31)
static const struct mg_board_slot **slots;
static uint64_t *slot_owner;             /* the client's id (WELCOME) */
static uint32_t *slot_seq;

/* -p: what the client processes share with this one. */
#define MAX_ROUNDS 1200
struct shared {
	_Atomic int round;               /* the round being timed, -1 between */
	_Atomic int got[MAX_ROUNDS];     /* clients that recorded it */
	_Atomic int stop;
	_Atomic int ready;               /* clients welcomed */
	_Atomic int on_board;            /* clients that took a board */
	double stamp[];                  /* [round * n_clients + i]: queued, read */
};
static struct shared *sh;
static pid_t *kids;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

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

static double real_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}

/*
 * One message from `fd` without waiting, with the kernel's receive stamp
 * (ms, CLOCK_REALTIME) in *ret_stamp: 0, -ETIMEDOUT when none is queued,
 * -ECONNRESET when closed, or the decoder's error.
 */
static int recv_stamped(int fd, struct mg_msg *m, double *ret_stamp)
{
	uint8_t buf[MG_MSG_MAX];
	union {
		char buf[CMSG_SPACE(sizeof(struct timespec))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};
	ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT);

	if (n < 0 && errno == EAGAIN)
		return -ETIMEDOUT;
	if (n <= 0)
		return -ECONNRESET;
	*ret_stamp = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
			struct timespec ts;

			memcpy(&ts, CMSG_DATA(c), sizeof(ts));
			*ret_stamp = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
		}
	return proto_msg_decode(buf, (size_t)n, m);
}

/*
 * After WELCOME: BOARD (map the slot, return the wake-up's descriptor) or
 * the first DIRECTIVE of a daemon without boards (-1).
 */
static int take_board(int i, int fd, const struct mg_board_slot **ret)
{
	struct mg_msg m;
	int bfd[2], n;
	void *p;

	*ret = NULL;
	/* -m, or a daemon from before boards: the directive in force follows
	 * WELCOME (or was in it) and drain() drops it. */
	if (!(hello_caps & MG_CAP_BOARD))
		return -1;
	if (fixture_recv_fds(fd, &m, 5000, bfd, 2, &n) < 0)
		die("client %d: nothing after WELCOME", i);
	if (m.hdr.type != MG_MSG_BOARD) {
		while (n > 0)
			close(bfd[--n]);
		return -1;
	}
	if (n != 2)
		die("client %d: BOARD with %d descriptors", i, n);
	p = mmap(NULL, (size_t)m.board.slots * MG_BOARD_SLOT_SIZE, PROT_READ, MAP_SHARED, bfd[0],
		 0);
	if (p == MAP_FAILED)
		die("client %d: cannot map the board: %s", i, strerror(errno));
	close(bfd[0]);
	*ret = (const struct mg_board_slot *)p + m.board.slot;
	return bfd[1];
}

/* Whether `slot` holds a directive other than the one seen last (*seq);
 * its stamp in ms (CLOCK_REALTIME). */
static bool slot_news(const struct mg_board_slot *slot, uint64_t owner, uint32_t *seq,
		      double *ret_stamp)
{
	struct mg_directive d;
	uint64_t ns;
	uint32_t got;

	if (!slot || proto_slot_read(slot, owner, &d, &got, &ns) < 0 || got == *seq)
		return false;
	*seq = got;
	*ret_stamp = (double)ns / 1e6;
	return true;
}

static void set_budget(int admin, uint64_t budget)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_SET_BUDGET } };

	m.set_budget.budget = budget;
	strcpy(m.set_budget.service, "web");
	fixture_send(admin, &m);
}

static void send_report(int fd)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_REPORT } };

	m.report.heap_sys = 8 * MiB;
	m.report.heap_inuse = 6 * MiB;
	m.report.heap_idle = 1 * MiB;
	m.report.heap_released = 1 * MiB;
	m.report.gc_percent = MG_GC_DEFAULT;
	fixture_send(fd, &m);
}

struct proc_sample {
	double cpu_s;                    /* utime + stime */
	double run_ms, wait_ms;          /* schedstat: on CPU, runnable but waiting */
	unsigned long long wakeups;      /* voluntary + involuntary context switches */
	unsigned long long rss_kb;
};

static struct proc_sample sample(pid_t pid)
{
	struct proc_sample s = { 0 };
	char path[64], line[256];
	unsigned long long ut = 0, st = 0, v = 0, nv = 0, run = 0, wait = 0;
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
	snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
	f = fopen(path, "re");
	if (f) {
		if (fscanf(f, "%llu %llu", &run, &wait) != 2)
			run = wait = 0;
		fclose(f);
	}
	s.run_ms = (double)run / 1e6;
	s.wait_ms = (double)wait / 1e6;
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

/* Drain what client `i` has queued: PINGs answered, anything else
 * dropped. */
static void drain(uint32_t ev)
{
	int i = (int)(ev & ~BOARD_EV);
	struct mg_msg m;
	double stamp;
	int r;

	if (ev & BOARD_EV) {
		(void)slot_news(slots[i], slot_owner[i], &slot_seq[i], &stamp);
		return;
	}
	while ((r = recv_stamped(fds[i], &m, &stamp)) == 0)
		fixture_pong(fds[i], &m);
	if (r != -ETIMEDOUT)
		die("client %d: %s", i, strerror(-r));
}

/*
 * Be calm clients for `ms`: client i reports at i/n of each report
 * interval, PINGs are answered, the admin socket drained.
 */
static void calm_for(int admin, double ms)
{
	double start = mono_ms(), now;
	long long sent = 0;

	while ((now = mono_ms()) - start < ms) {
		struct epoll_event evs[256];
		struct mg_msg m;
		long long due = (long long)((now - start) * n_clients / report_ms);
		int n;

		for (; sent < due; sent++)
			send_report(fds[sent % n_clients]);
		n = epoll_wait(ep, evs, 256, 2);
		for (int k = 0; k < n; k++)
			drain(evs[k].data.u32);
		while (fixture_recv(admin, &m, 0) == 0)
			;
	}
}

/* One reader: client i's first directive of the round, if it had none
 * (`seen`): its stamp and now into `stamps`, counted in *got. */
static void take_first(int i, double stamp, char *seen, double *stamps, int *got)
{
	if (seen[i])
		return;
	seen[i] = 1;
	stamps[2 * i] = stamp;
	stamps[2 * i + 1] = real_ms();
	(*got)++;
}

/* -p: client i's first directive of the timed round, if one is timed
 * and it had none: its stamp and now. */
static void record_first(int i, double stamp)
{
	int round = atomic_load(&sh->round);
	double *rec;

	if (round < 0)
		return;
	rec = &sh->stamp[2 * ((size_t)round * n_clients + i)];
	if (rec[0] != 0)
		return;
	rec[0] = stamp;
	rec[1] = real_ms();
	atomic_fetch_add(&sh->got[round], 1);
}

/*
 * A client process (-p): welcomed, it reports once per report interval,
 * answers PINGs and records the first DIRECTIVE of each timed round.
 */
static void child(int i)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_HELLO, .seq = 1 } };
	struct epoll_event ev = { .events = EPOLLIN };
	const struct mg_board_slot *slot;
	double next, stamp;
	uint32_t seq = 0;
	uint64_t id;
	int fd, wake, cep, on = 1, r;

	fd = fixture_connect(&fx, NULL);
	if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) < 0)
		_exit(2);
	m.hello.capabilities = hello_caps;
	strcpy(m.hello.process, "bench");
	fixture_send(fd, &m);
	if (fixture_recv(fd, &m, 10000) < 0 || m.hdr.type != MG_MSG_WELCOME)
		_exit(3);
	if (m.welcome.report_interval_ms > 0)
		report_ms = m.welcome.report_interval_ms;
	id = m.welcome.client_id;
	wake = take_board(i, fd, &slot);
	if (slot)
		atomic_fetch_add(&sh->on_board, 1);
	(void)slot_news(slot, id, &seq, &stamp);
	/* The socket level-triggered, the board's pipe edge-triggered (it
	 * always holds the last wake-up's byte). */
	cep = epoll_create1(EPOLL_CLOEXEC);
	ev.data.u32 = 0;
	if (cep < 0 || epoll_ctl(cep, EPOLL_CTL_ADD, fd, &ev) < 0)
		_exit(2);
	ev.events = EPOLLIN | EPOLLET;
	ev.data.u32 = 1;
	if (wake >= 0 && epoll_ctl(cep, EPOLL_CTL_ADD, wake, &ev) < 0)
		_exit(2);
	atomic_fetch_add(&sh->ready, 1);
	next = mono_ms() + (double)report_ms * i / n_clients;
	while (!atomic_load(&sh->stop)) {
		struct epoll_event evs[2];
		double now = mono_ms();

		if (now >= next) {
			send_report(fd);
			next += report_ms;
			continue;
		}
		if (epoll_wait(cep, evs, 2, (int)(next - now) + 1) <= 0)
			continue;
		if (slot_news(slot, id, &seq, &stamp))
			record_first(i, stamp);
		while ((r = recv_stamped(fd, &m, &stamp)) == 0)
			if (!fixture_pong(fd, &m) && m.hdr.type == MG_MSG_DIRECTIVE)
				record_first(i, stamp);
		if (r != -ETIMEDOUT)
			_exit(r == -ECONNRESET ? 0 : 4);
	}
	_exit(0);
}

/* Start the client processes and wait until all are welcomed. */
static void start_children(int rounds)
{
	size_t size = sizeof(*sh) + 2 * sizeof(double) * (size_t)rounds * n_clients;

	if (rounds > MAX_ROUNDS)
		die("too many rounds");
	sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	kids = calloc((size_t)n_clients, sizeof(*kids));
	if (sh == MAP_FAILED || !kids)
		die("out of memory");
	atomic_store(&sh->round, -1);
	for (int i = 0; i < n_clients; i++) {
		int go[2];
		char c;

		/* The fixture's /proc must map the child before its HELLO. */
		if (pipe(go) < 0)
			die("pipe: %s", strerror(errno));
		kids[i] = fork();
		if (kids[i] < 0)
			die("fork: %s", strerror(errno));
		if (kids[i] == 0) {
			close(go[1]);
			if (read(go[0], &c, 1) != 1)
				_exit(1);
			close(go[0]);
			child(i);
		}
		close(go[0]);
		fixture_map_pid(&fx, kids[i], "web");
		if (write(go[1], "g", 1) != 1)
			die("cannot start client %d", i);
		close(go[1]);
	}
	for (int w = 0; atomic_load(&sh->ready) < n_clients; w++) {
		if (w > 6000)
			die("only %d of %d clients welcomed", atomic_load(&sh->ready), n_clients);
		usleep(10000);
	}
}

static void stop_children(void)
{
	atomic_store(&sh->stop, 1);
	for (int i = 0; i < n_clients; i++)
		kill(kids[i], SIGTERM);
	for (int i = 0; i < n_clients; i++)
		waitpid(kids[i], NULL, 0);
}

/* -p: the admin socket drained for `ms`; the children do the rest. */
static void idle_for(int admin, double ms)
{
	double start = mono_ms();
	struct mg_msg m;

	while (mono_ms() - start < ms) {
		usleep(20000);
		while (fixture_recv(admin, &m, 0) == 0)
			;
	}
}

int main(int argc, char **argv)
{
	bool procs = argc > 1 && strcmp(argv[1], "-p") == 0, board_off;
	const char *exe, *arg_clients, *arg_sweeps, *arg_calm;
	int sweeps;
	double calm_s;
	struct rlimit rl = { 0 };
	struct proc_sample a, b;
	double *lat, *last, *spread, *read_last, *run, *wait, *stamps;
	size_t n_lat = 0, n_rounds = 0, nr;
	char *seen;
	int admin, on = 1;

	argv += procs;
	argc -= procs;
	board_off = argc > 1 && strcmp(argv[1], "-m") == 0;
	argv += board_off;
	argc -= board_off;
	if (board_off)
		hello_caps = 0;
	exe = argc > 1 ? argv[1] : "daemon/memguardd";
	arg_clients = argc > 2 ? argv[2] : "1000";
	arg_sweeps = argc > 3 ? argv[3] : "5";
	arg_calm = argc > 4 ? argv[4] : "20";
	n_clients = atoi(arg_clients);
	sweeps = atoi(arg_sweeps);
	calm_s = atof(arg_calm);
	if (n_clients < 1 || n_clients > 4000)
		die("CLIENTS must be 1..4000");
	if (sweeps < 1 || calm_s < 1)
		die("SWEEPS and CALM_SECONDS must be at least 1");
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	signal(SIGPIPE, SIG_IGN);

	fixture_init(&fx, "bench-daemon", "web");
	fixture_cgroup(&fx, "web", 85 * MiB);
	fixture_put(&fx, "memguard.conf", "[daemon]\ntick = 1s\nlog_level = warning\n"
					  "[web]\ncgroup = web\nbudget = 1G\n");
	setenv("MEMGUARDD", exe, 1);
	fixture_start(&fx, NULL, "/dev/null", NULL);
	/* BENCH_DAEMON_NICE: the daemon's nice value (a unit's Nice=). */
	if (getenv("BENCH_DAEMON_NICE") &&
	    setpriority(PRIO_PROCESS, (id_t)fx.daemon, atoi(getenv("BENCH_DAEMON_NICE"))) < 0)
		die("setpriority: %s", strerror(errno));

	nr = ROUNDS_PER_SWEEP * (size_t)sweeps;
	fds = calloc((size_t)n_clients, sizeof(*fds));
	lat = calloc((size_t)n_clients * nr, sizeof(*lat));
	last = calloc(nr, sizeof(*last));
	spread = calloc(nr, sizeof(*spread));
	read_last = calloc(nr, sizeof(*read_last));
	run = calloc(nr, sizeof(*run));
	wait = calloc(nr, sizeof(*wait));
	stamps = calloc(2 * (size_t)n_clients, sizeof(*stamps));
	seen = calloc((size_t)n_clients, 1);
	slots = calloc((size_t)n_clients, sizeof(*slots));
	slot_seq = calloc((size_t)n_clients, sizeof(*slot_seq));
	slot_owner = calloc((size_t)n_clients, sizeof(*slot_owner));
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (!fds || !lat || !last || !spread || !read_last || !run || !wait || !stamps ||
	    !seen || !slots || !slot_seq || !slot_owner || ep < 0)
		die("out of memory");
	if (procs)
		start_children((int)nr);
	for (int i = 0; !procs && i < n_clients; i++) {
		struct mg_msg m = { .hdr = { .type = MG_MSG_HELLO, .seq = 1 } };
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
		double stamp;
		int r, wake;

		fds[i] = fixture_connect(&fx, NULL);
		if (setsockopt(fds[i], SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) < 0)
			die("SO_TIMESTAMPNS: %s", strerror(errno));
		m.hello.capabilities = hello_caps;
		strcpy(m.hello.process, "bench");
		fixture_send(fds[i], &m);
		r = fixture_recv(fds[i], &m, 5000);
		if (r < 0)
			die("client %d: no WELCOME: %s", i, strerror(-r));
		if (m.hdr.type != MG_MSG_WELCOME)
			die("client %d not welcomed: %s", i, m.error.text);
		if (m.welcome.report_interval_ms > 0)
			report_ms = m.welcome.report_interval_ms;
		slot_owner[i] = m.welcome.client_id;
		wake = take_board(i, fds[i], &slots[i]);
		(void)slot_news(slots[i], slot_owner[i], &slot_seq[i], &stamp);
		epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
		ev.events = EPOLLIN | EPOLLET;
		ev.data.u32 = BOARD_EV | (uint32_t)i;
		if (wake >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, wake, &ev) < 0)
			die("epoll_ctl: %s", strerror(errno));
	}
	admin = fixture_connect(&fx, NULL);

	/* Calm: the clients report, the daemon ticks. */
	if (procs)
		idle_for(admin, 1000);
	else
		calm_for(admin, 1000);
	a = sample(fx.daemon);
	if (procs)
		idle_for(admin, calm_s * 1000);
	else
		calm_for(admin, calm_s * 1000);
	b = sample(fx.daemon);

	/* Storm: each round lowers the budget a little, which changes the GC
	 * percent, so every client gets a new directive. */
	for (int sweep = 0; sweep < sweeps; sweep++) {
		for (int r = 0; r < ROUNDS_PER_SWEEP; r++) {
			double start, first = 0, lastq = 0, lastr = 0;
			struct proc_sample s0, s1;
			struct mg_msg m;
			int got = 0;

			memset(seen, 0, (size_t)n_clients);
			if (procs)
				atomic_store(&sh->round, (int)n_rounds);
			s0 = sample(fx.daemon);
			start = real_ms();
			set_budget(admin, (106 - (uint64_t)r) * MiB);
			while (procs && atomic_load(&sh->got[n_rounds]) < n_clients) {
				if (real_ms() - start > 10000)
					die("directives stopped after %d of %d clients",
					    atomic_load(&sh->got[n_rounds]), n_clients);
				usleep(500);
			}
			while (!procs && got < n_clients) {
				struct epoll_event evs[256];
				int n = epoll_wait(ep, evs, 256, 3000);

				if (n <= 0)
					die("directives stopped after %d of %d clients", got,
					    n_clients);
				for (int k = 0; k < n; k++) {
					int i = (int)(evs[k].data.u32 & ~BOARD_EV), rr;
					double stamp;

					if (evs[k].data.u32 & BOARD_EV) {
						if (slot_news(slots[i], slot_owner[i], &slot_seq[i],
							      &stamp))
							take_first(i, stamp, seen, stamps, &got);
						continue;
					}
					while ((rr = recv_stamped(fds[i], &m, &stamp)) == 0)
						if (!fixture_pong(fds[i], &m) &&
						    m.hdr.type == MG_MSG_DIRECTIVE)
							take_first(i, stamp, seen, stamps, &got);
					if (rr != -ETIMEDOUT)
						die("client %d: %s", i, strerror(-rr));
				}
			}
			if (procs) {
				atomic_store(&sh->round, -1);
				memcpy(stamps, &sh->stamp[2 * n_rounds * (size_t)n_clients],
				       2 * sizeof(double) * (size_t)n_clients);
			}
			/* The admin answer ends the daemon's work on the change. */
			if (fixture_recv(admin, &m, 5000) < 0)
				die("no answer to SET_BUDGET");
			s1 = sample(fx.daemon);
			for (int i = 0; i < n_clients; i++) {
				double q = stamps[2 * i];

				if (q == 0)
					die("no stamp on a directive (SO_TIMESTAMPNS or the slot's)");
				lat[n_lat++] = q - start;
				if (i == 0 || q < first)
					first = q;
				if (q > lastq)
					lastq = q;
				if (stamps[2 * i + 1] > lastr)
					lastr = stamps[2 * i + 1];
			}
			last[n_rounds] = lastq - start;
			spread[n_rounds] = lastq - first;
			read_last[n_rounds] = lastr - start;
			run[n_rounds] = s1.run_ms - s0.run_ms;
			wait[n_rounds] = s1.wait_ms - s0.wait_ms;
			n_rounds++;
		}
		/* Back to NORMAL before the next sweep (two calm ticks). */
		set_budget(admin, 1024 * MiB);
		if (procs)
			idle_for(admin, 3500);
		else
			calm_for(admin, 3500);
	}
	if (procs)
		stop_children();

	printf("mode %s\nclients %d\nrounds %zu\n", procs ? "processes" : "one-reader", n_clients,
	       n_rounds);
	{
		int on_board = 0;

		for (int i = 0; i < n_clients; i++)
			on_board += slots[i] != NULL;
		printf("board_clients %d\n", procs ? atomic_load(&sh->on_board) : on_board);
	}
	printf("calm_seconds %.1f\n", calm_s);
	printf("calm_cpu_pct %.3f\n", 100.0 * (b.cpu_s - a.cpu_s) / calm_s);
	printf("calm_run_pct %.3f\n", 100.0 * (b.run_ms - a.run_ms) / (calm_s * 1000));
	printf("calm_wakeups_per_s %.2f\n", (double)(b.wakeups - a.wakeups) / calm_s);
	printf("rss_mib %.1f\n", (double)b.rss_kb / 1024.0);
	printf("client_p50_ms %.3f\nclient_p99_ms %.3f\n", pct(lat, n_lat, 0.50),
	       pct(lat, n_lat, 0.99));
	printf("last_p50_ms %.3f\nlast_p99_ms %.3f\nlast_max_ms %.3f\n",
	       pct(last, n_rounds, 0.50), pct(last, n_rounds, 0.99), pct(last, n_rounds, 1));
	printf("spread_p50_ms %.3f\nspread_p99_ms %.3f\n", pct(spread, n_rounds, 0.50),
	       pct(spread, n_rounds, 0.99));
	printf("read_last_p50_ms %.3f\nread_last_p99_ms %.3f\n", pct(read_last, n_rounds, 0.50),
	       pct(read_last, n_rounds, 0.99));
	printf("round_cpu_p50_ms %.3f\nround_cpu_p99_ms %.3f\n", pct(run, n_rounds, 0.50),
	       pct(run, n_rounds, 0.99));
	printf("round_wait_p50_ms %.3f\nround_wait_p99_ms %.3f\n", pct(wait, n_rounds, 0.50),
	       pct(wait, n_rounds, 0.99));

	fixture_done(&fx);
	free(fds);
	free(lat);
	free(last);
	free(spread);
	free(read_last);
	free(run);
	free(wait);
	free(stamps);
	free(seen);
	free(slots);
	free(slot_seq);
	free(slot_owner);
	free(kids);
	return 0;
}
