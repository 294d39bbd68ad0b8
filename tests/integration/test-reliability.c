/* SPDX-License-Identifier: MIT */
/*
 * memguardd under load and faults, on a fixture cgroup tree (regular files
 * this test rewrites to play the kernel, as in test-daemon.c):
 *
 *  - 1000 clients at once: each says HELLO and is welcomed, one change (a
 *    SET_BUDGET) reaches every one of them as a DIRECTIVE, and once they
 *    are gone the daemon is alive with the descriptors it started with.
 *  - memguardd SIGKILLed and restarted under 20 processes of the real
 *    libmemguard-client that were given a level and a release demand:
 *    each registers again within 2 s of the new socket, none dies, and no
 *    hook is told the same thing twice.
 *
 * What "the same directive" means here: a DIRECTIVE is one message of one
 * daemon, named by its seq (which a restarted daemon numbers afresh).  The
 * state it carries (level, GC target, throttle, soft limit) is idempotent:
 * a client told it again — by the DIRECTIVE that follows a restarted
 * daemon's WELCOME, which carries the directive in force — applies it
 * without telling its hooks anything they were told already.  A release
 * demand is an event: the release hook runs once per DIRECTIVE with
 * release > 0 that the client received, which is exactly what the daemons
 * counted as asked of it; the first DIRECTIVE after a WELCOME never demands
 * bytes, so a demand answered before the restart is not answered again
 * after it.
 *
 * Figures (registration times, the spread of the 1000 directives) are
 * printed, not asserted, beyond generous bounds.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/param.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <memguard/client.h>

#include "proto/proto.h"
#include "tests/integration/fixture.h"

#define MiB FIXTURE_MiB

#define MANY_CLIENTS 1000
#define MANY_DIRECTIVE_MS 30000          /* bound for all 1000 directives */
#define KIDS 20                          /* client processes in the restart test */
#define REREGISTER_MS 2000               /* bound on registering again */
#define DOWN_MS 3000                     /* no daemon: RestartSec=1s, and a slow start */

static struct fixture fx;
static int listen_fd = -1;               /* the socket systemd would hold */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* The daemon has not exited. */
static bool daemon_alive(void)
{
	return fx.daemon > 0 && waitpid(fx.daemon, NULL, WNOHANG) == 0;
}

/* ---- admin requests ------------------------------------------------------ */

struct answers {
	struct mg_status_daemon daemon;
	struct mg_client_info info[KIDS + 8];
	unsigned n;
};

/* Send `req` on a new admin connection and keep the answers up to RESULT,
 * which must be OK. */
static void admin(struct mg_msg *req, struct answers *ret)
{
	int fd = fixture_connect(&fx, NULL);
	struct mg_msg m;

	memset(ret, 0, sizeof(*ret));
	fixture_send(fd, req);
	for (;;) {
		assert_int_equal(fixture_recv(fd, &m, 5000), 0);
		if (m.hdr.type == MG_MSG_RESULT)
			break;
		if (m.hdr.type == MG_MSG_STATUS_DAEMON)
			ret->daemon = m.status_daemon;
		else if (m.hdr.type == MG_MSG_CLIENT_INFO && ret->n < KIDS + 8)
			ret->info[ret->n++] = m.client_info;
	}
	assert_int_equal(m.result.code, MG_ERR_OK);
	close(fd);
}

static struct answers clients(void)
{
	struct mg_msg req = { .hdr = { .type = MG_MSG_CLIENTS, .seq = 7 } };
	struct answers a;

	admin(&req, &a);
	return a;
}

static const struct mg_client_info *info_of(const struct answers *a, pid_t pid)
{
	for (unsigned i = 0; i < a->n; i++)
		if (a->info[i].pid == (uint32_t)pid)
			return &a->info[i];
	return NULL;
}

/* ---- 1000 clients at once ------------------------------------------------ */

static void test_thousand_clients(void **state)
{
	static int fds[MANY_CLIENTS];
	static uint64_t got_ms[MANY_CLIENTS];
	struct rlimit rl;
	struct mg_msg m;
	struct answers a;
	uint64_t t0, hello_ms;
	int admin_fd, ep, base, fd_peak, got = 0, left;

	/* Ours and the daemon's (it inherits ours, and raises its soft limit
	 * to the hard one by itself, as the unit's LimitNOFILE=16384 lets it):
	 * 1000 clients, an admin peer, the fixture's files. */
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < MANY_CLIENTS + 100) {
		print_message("SKIP: RLIMIT_NOFILE's hard limit %llu is below %d\n",
			      (unsigned long long)rl.rlim_max, MANY_CLIENTS + 100);
		skip();
	}
	rl.rlim_cur = rl.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);

	fixture_init(&fx, "test-rel-many", "web");
	fixture_cgroup(&fx, "web", 85 * MiB);
	fixture_put(&fx, "memguard.conf", "[daemon]\ntick = 1s\nlog_level = warning\n"
					  "[web]\ncgroup = web\nbudget = 1G\n");
	fixture_start(&fx, NULL, NULL, NULL);
	/* The connection fixture_start() probed with may still be open, and
	 * a tick may hold a file for a moment: the fewest of a few looks. */
	usleep(200000);
	base = fixture_count_fds(fx.daemon);
	for (int i = 0; i < 10; i++) {
		usleep(20000);
		base = MIN(base, fixture_count_fds(fx.daemon));
	}

	ep = epoll_create1(EPOLL_CLOEXEC);
	assert_true(ep >= 0);
	t0 = fixture_now_ms();
	for (int i = 0; i < MANY_CLIENTS; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };

		fds[i] = fixture_hello(&fx, "", "many", 0);
		assert_int_equal(fixture_recv(fds[i], &m, 5000), 0);
		if (m.hdr.type != MG_MSG_WELCOME)
			fail_msg("client %d not welcomed: %s %s", i, proto_type_name(m.hdr.type),
				 m.hdr.type == MG_MSG_ERROR ? m.error.text : "");
		assert_int_equal(fixture_recv(fds[i], &m, 5000), 0);
		assert_int_equal(m.hdr.type, MG_MSG_DIRECTIVE);
		assert_int_equal(m.directive.level, MG_LEVEL_NORMAL);
		assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev), 0);
	}
	hello_ms = fixture_now_ms() - t0;
	fd_peak = fixture_count_fds(fx.daemon);
	assert_true(fd_peak >= base + MANY_CLIENTS);

	/* One change: 85 MiB of 100 MiB is WARN, a new directive for all. */
	admin_fd = fixture_connect(&fx, NULL);
	m = (struct mg_msg){ .hdr = { .type = MG_MSG_SET_BUDGET, .seq = 2 } };
	m.set_budget.budget = 100 * MiB;
	strcpy(m.set_budget.service, "web");
	t0 = fixture_now_ms();
	fixture_send(admin_fd, &m);
	for (uint64_t end = t0 + MANY_DIRECTIVE_MS; got < MANY_CLIENTS && fixture_now_ms() < end;) {
		struct epoll_event evs[256];
		int n = epoll_wait(ep, evs, 256, 1000);

		for (int k = 0; k < n; k++) {
			int i = (int)evs[k].data.u32, r;

			while ((r = fixture_recv(fds[i], &m, 0)) == 0) {
				if (fixture_pong(fds[i], &m) || m.hdr.type != MG_MSG_DIRECTIVE)
					continue;
				/* A NORMAL one still on its way moves a client's share
				 * of the soft limit as the others registered. */
				if (m.directive.level == MG_LEVEL_NORMAL)
					continue;
				assert_int_equal(m.directive.level, MG_LEVEL_WARN);
				if (!got_ms[i]) {
					got_ms[i] = fixture_now_ms() - t0 + 1;
					got++;
				}
			}
			if (r != -ETIMEDOUT)
				fail_msg("client %d: %s", i, strerror(-r));
		}
	}
	if (got < MANY_CLIENTS)
		fail_msg("only %d of %d clients got a directive within %d ms", got, MANY_CLIENTS,
			 MANY_DIRECTIVE_MS);
	assert_int_equal(fixture_recv(admin_fd, &m, 5000), 0);
	assert_int_equal(m.hdr.type, MG_MSG_RESULT);
	assert_int_equal(m.result.code, MG_ERR_OK);
	qsort(got_ms, MANY_CLIENTS, sizeof(got_ms[0]), cmp_u64);
	print_message("%d clients welcomed in %llu ms; SET_BUDGET -> directive: first %llu ms, "
		      "median %llu ms, last %llu ms; daemon fds %d -> %d\n",
		      MANY_CLIENTS, (unsigned long long)hello_ms,
		      (unsigned long long)got_ms[0] - 1,
		      (unsigned long long)got_ms[MANY_CLIENTS / 2] - 1,
		      (unsigned long long)got_ms[MANY_CLIENTS - 1] - 1, base, fd_peak);

	/* All gone: the daemon is alive and back to its descriptors. */
	for (int i = 0; i < MANY_CLIENTS; i++)
		close(fds[i]);
	close(admin_fd);
	close(ep);
	left = -1;
	for (int i = 0; i < 500 && (left = fixture_count_fds(fx.daemon)) != base; i++)
		usleep(10000);
	assert_true(daemon_alive());
	assert_int_equal(left, base);
	m = (struct mg_msg){ .hdr = { .type = MG_MSG_STATUS, .seq = 3 } };
	admin(&m, &a);
	assert_int_equal(a.daemon.clients, 0);
	assert_int_equal(a.daemon.services, 1);
}

/* ---- SIGKILL and restart under real client processes --------------------- */

/* What each client process saw, in memory shared with this test.  Each
 * field has one writer (the process's library thread, through the hooks)
 * and is read here with atomics. */
struct kid {
	pid_t pid;
	int registrations;               /* "Registered with memguardd" log lines */
	uint64_t registered_ms;          /* CLOCK_MONOTONIC of the last one */
	int n_levels, n_gcs, n_releases;
	uint8_t levels[64];              /* every level hook call, in order */
	uint16_t gcs[64];                /* every GC hook call, in order */
	int level;                       /* mg_client_level(), sampled */
};

static struct {
	int stop;                        /* set: the processes leave */
	struct kid kid[KIDS];
} *shm;

#define GET(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define PUT(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

static void kid_log(void *data, int priority, const char *message)
{
	struct kid *k = data;

	if (!strncmp(message, "Registered with memguardd", 25)) {
		PUT(k->registered_ms, fixture_now_ms());
		PUT(k->registrations, GET(k->registrations) + 1);
	}
}

static void kid_level(void *data, enum mg_level level)
{
	struct kid *k = data;
	int n = GET(k->n_levels);

	if (n < 64) {
		k->levels[n] = (uint8_t)level;
		PUT(k->n_levels, n + 1);
	}
}

static void kid_gc(void *data, unsigned gc)
{
	struct kid *k = data;
	int n = GET(k->n_gcs);

	if (n < 64) {
		k->gcs[n] = (uint16_t)gc;
		PUT(k->n_gcs, n + 1);
	}
}

static size_t kid_release(void *data, size_t bytes)
{
	struct kid *k = data;

	PUT(k->n_releases, GET(k->n_releases) + 1);
	return bytes / 2;
}

/* A process of the service: the real library with its own thread and all
 * three hooks, until the test says stop.  Exit codes say what failed. */
static void __attribute__((noreturn)) kid_main(struct kid *k, int go)
{
	struct mg_client_opts o = { .size = sizeof(o), .socket_path = fx.sock,
				    .process = "reliability" };
	struct mg_client *c;
	char b;

	if (listen_fd >= 0)
		close(listen_fd);
	if (read(go, &b, 1) != 1)
		_exit(10);
	if (mg_client_new(&c, &o) < 0)
		_exit(11);
	mg_client_set_log_fn(c, kid_log, k);
	mg_client_set_level_hook(c, kid_level, k);
	mg_client_set_gc_hook(c, kid_gc, k);
	mg_client_set_release_hook(c, kid_release, k);
	while (!GET(shm->stop)) {
		PUT(k->level, (int)mg_client_level(c));
		usleep(5000);
	}
	mg_client_free(c);
	_exit(0);
}

static bool kids_alive(void)
{
	for (int i = 0; i < KIDS; i++)
		if (waitpid(shm->kid[i].pid, NULL, WNOHANG) != 0)
			return false;
	return true;
}

/* Wait up to `ms` for CLIENTS to list every process; ms it took or -1. */
static int await_all_kids(int ms)
{
	uint64_t start = fixture_now_ms();

	do {
		struct answers a = clients();
		int found = 0;

		for (int i = 0; i < KIDS; i++)
			found += info_of(&a, shm->kid[i].pid) != NULL;
		if (found == KIDS && a.n == KIDS)
			return (int)(fixture_now_ms() - start);
		usleep(10000);
	} while (fixture_now_ms() - start < (uint64_t)ms);
	return -1;
}

/*
 * `activated`: as under systemd's memguardd.socket, the socket outlives the
 * daemon (this test holds it, as systemd does), so the processes connect
 * while no daemon runs and wait in its backlog.  Otherwise memguardd binds
 * the socket itself, and they retry with backoff until it is back.  Either
 * way the daemon is down for DOWN_MS, longer than the unit's RestartSec=1s
 * (a slow start, or a restart by hand): the bound on registering again
 * must not depend on how long the daemon was away.
 */
static void restart_under_clients(bool activated)
{
	struct kid before[KIDS];
	struct answers a0, a1;
	uint64_t up_ms, took[KIDS];
	int status, all_ms, gc_after = 0;

	shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(shm != MAP_FAILED);
	memset(shm, 0, sizeof(*shm));

	fixture_init(&fx, "test-rel-restart", "web");
	fixture_cgroup(&fx, "web", 10 * MiB);
	/* A long release deadline: the one demand, when the level rises, is
	 * the only one either daemon makes while this test watches. */
	fixture_put(&fx, "memguard.conf", "[daemon]\ntick = 100ms\n"
		    "[web]\ncgroup = web\nbudget = 100M\nrelease_deadline = 60s\n");
	if (activated) {
		listen_fd = fixture_listen(&fx);
		fixture_start_activated(&fx, listen_fd, NULL, NULL);
	} else
		fixture_start(&fx, NULL, NULL, NULL);

	for (int i = 0; i < KIDS; i++) {
		int go[2];
		pid_t pid;

		assert_int_equal(pipe2(go, O_CLOEXEC), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(go[1]);
			kid_main(&shm->kid[i], go[0]);
		}
		close(go[0]);
		shm->kid[i].pid = pid;
		fixture_map_pid(&fx, pid, "web");
		assert_int_equal(write(go[1], "g", 1), 1);
		close(go[1]);
	}
	/* None of them reports anything releasable (no heap, no external
	 * bytes), so the daemon asks each the same share of a demand. */
	assert_true(await_all_kids(5000) >= 0);

	/* 85 %: WARN, a lower GC target, and a release demand for each. */
	fixture_set_usage(&fx, "web", 85 * MiB);
	for (int t = 0; t < 500; t++) {
		int done = 0;

		for (int i = 0; i < KIDS; i++)
			done += GET(shm->kid[i].level) == MG_LEVEL_WARN &&
				GET(shm->kid[i].n_releases) >= 1;
		if (done == KIDS)
			break;
		usleep(10000);
	}
	/* The RELEASED answers reach the daemon. */
	for (int t = 0; t < 200; t++) {
		int answered = 0;

		a0 = clients();
		for (unsigned i = 0; i < a0.n; i++)
			answered += a0.info[i].answered == a0.info[i].asked;
		if (answered == KIDS)
			break;
		usleep(10000);
	}
	for (int i = 0; i < KIDS; i++) {
		const struct mg_client_info *ci = info_of(&a0, shm->kid[i].pid);

		assert_non_null(ci);
		assert_int_equal(GET(shm->kid[i].level), MG_LEVEL_WARN);
		assert_int_equal(ci->asked, 1);
		assert_int_equal(ci->answered, 1);
		assert_int_equal(GET(shm->kid[i].n_releases), 1);
	}
	/* Let the GC target settle (the daemon smooths it over ticks). */
	usleep(1000000);
	for (int i = 0; i < KIDS; i++) {
		memcpy(&before[i], &shm->kid[i], sizeof(before[i]));
		assert_int_equal(before[i].n_levels, 1);
		assert_int_equal(before[i].levels[0], MG_LEVEL_WARN);
		assert_true(before[i].n_gcs >= 1);
		assert_true(before[i].registrations <= 1);
	}

	/* SIGKILL: no BYE.  The processes keep their directive meanwhile. */
	fixture_stop(&fx, SIGKILL);
	usleep(DOWN_MS * 1000);
	assert_true(kids_alive());
	for (int i = 0; i < KIDS; i++)
		assert_int_equal(GET(shm->kid[i].level), MG_LEVEL_WARN);

	/* A new daemon on the same socket: on the one this test holds, or on
	 * the path where it finds the stale socket file. */
	if (activated) {
		up_ms = fixture_now_ms();
		fixture_start_activated(&fx, listen_fd, NULL, NULL);
	} else {
		fixture_start(&fx, NULL, NULL, NULL);
		up_ms = fixture_now_ms();
	}
	all_ms = await_all_kids(5000);
	assert_true(all_ms >= 0);
	/* The daemon lists a process once it sent WELCOME; the process
	 * counts its registration once it has read it. */
	for (int t = 0, done = 0; t < 300 && !done; t++) {
		done = 1;
		for (int i = 0; i < KIDS; i++)
			done &= GET(shm->kid[i].registrations) > before[i].registrations;
		if (!done)
			usleep(10000);
	}
	for (int i = 0; i < KIDS; i++) {
		struct kid *k = &shm->kid[i];

		assert_int_equal(GET(k->registrations), before[i].registrations + 1);
		took[i] = GET(k->registered_ms) > up_ms ? GET(k->registered_ms) - up_ms : 0;
	}
	qsort(took, KIDS, sizeof(took[0]), cmp_u64);
	print_message("%s: %d processes registered again: median %llu ms, last %llu ms after "
		      "the new daemon %s (CLIENTS listed all after %d ms)\n",
		      activated ? "socket activation" : "own socket", KIDS, (unsigned long long)took[KIDS / 2],
		      (unsigned long long)took[KIDS - 1],
		      activated ? "started" : "accepted connections", all_ms);
	if (took[KIDS - 1] > REREGISTER_MS)
		fail_msg("a process took %llu ms to register again (bound %d ms)",
			 (unsigned long long)took[KIDS - 1], REREGISTER_MS);

	/* Watch the new daemon direct them for a while. */
	usleep(2000000);
	assert_true(daemon_alive());
	assert_true(kids_alive());
	a1 = clients();
	for (int i = 0; i < KIDS; i++)
		gc_after += GET(shm->kid[i].n_gcs) - before[i].n_gcs;
	print_message("hook calls since the restart: GC %d (each a new value), level and "
		      "release 0\n", gc_after);
	for (int i = 0; i < KIDS; i++) {
		struct kid *k = &shm->kid[i];
		const struct mg_client_info *ci = info_of(&a1, k->pid);
		int n_gcs = GET(k->n_gcs);

		assert_non_null(ci);
		/* Still WARN, and the level hook was not told it again (nor
		 * NORMAL in between). */
		assert_int_equal(GET(k->level), MG_LEVEL_WARN);
		assert_int_equal(GET(k->n_levels), before[i].n_levels);
		/* A GC target is never told twice in a row. */
		for (int g = 1; g < n_gcs; g++)
			if (k->gcs[g] == k->gcs[g - 1])
				fail_msg("process %d: GC hook told %u twice", (int)k->pid,
					 k->gcs[g]);
		/* One release per demand either daemon made: the one answered
		 * before the restart is not answered again. */
		assert_int_equal(GET(k->n_releases), before[i].n_releases + (int)ci->asked);
		assert_int_equal(ci->asked, 0);
		assert_int_equal(ci->answered, 0);
	}

	/* They leave cleanly. */
	PUT(shm->stop, 1);
	for (int i = 0; i < KIDS; i++) {
		pid_t pid = shm->kid[i].pid;

		assert_int_equal(waitpid(pid, &status, 0), pid);
		shm->kid[i].pid = 0;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			fail_msg("process %d ended with status %#x", (int)pid, status);
	}
}

static void test_restart_own_socket(void **state)
{
	restart_under_clients(/* activated= */ false);
}

static void test_restart_socket_activated(void **state)
{
	restart_under_clients(/* activated= */ true);
}

/* Whatever a failed test left: its processes, the daemon, the tree. */
static int teardown(void **state)
{
	if (shm) {
		PUT(shm->stop, 1);
		for (int i = 0; i < KIDS; i++) {
			pid_t pid = shm->kid[i].pid;

			if (pid <= 0)
				continue;
			for (int t = 0; t < 200 && waitpid(pid, NULL, WNOHANG) == 0; t++)
				usleep(10000);
			if (kill(pid, SIGKILL) == 0)
				waitpid(pid, NULL, 0);
		}
		munmap(shm, sizeof(*shm));
		shm = NULL;
	}
	if (fx.dir[0])
		fixture_done(&fx);
	memset(&fx, 0, sizeof(fx));
	if (listen_fd >= 0)
		close(listen_fd);
	listen_fd = -1;
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_thousand_clients, teardown),
		cmocka_unit_test_teardown(test_restart_own_socket, teardown),
		cmocka_unit_test_teardown(test_restart_socket_activated, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	if (getenv("MG_TEST_FILTER"))
		cmocka_set_test_filter(getenv("MG_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
