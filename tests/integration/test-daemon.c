/* SPDX-License-Identifier: MIT */
/*
 * The real memguardd on a fixture cgroup tree: regular files that this
 * test rewrites to play the kernel.  Registration, directives with the
 * control law's numbers, the NORMAL directive, enforce=high writing and
 * restoring memory.high, reload (good and broken), refusals, a client that
 * dies, clean shutdown.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "daemon/policy.h"
#include "proto/proto.h"
#include "tests/integration/fixture.h"

#define MiB FIXTURE_MiB
#define BUDGET (100 * MiB)

static struct fixture fx;

static const char *config_good =
	"[daemon]\n"
	"tick = 50ms\n"
	"log_level = debug\n"
	"[web]\n"
	"cgroup = web\n"
	"budget = 100M\n"
	"release_deadline = 200ms\n"
	"enforce = high\n"
	"[batch]\n"
	"cgroup = batch\n"
	"budget = 100M\n"
	"release_deadline = 200ms\n"
	"enforce = kill\n";

static int setup(void **state)
{
	/* This test process plays every client: it sits in cgroup "web". */
	fixture_init(&fx, "test-daemon", "web");
	fixture_cgroup(&fx, "web", 10 * MiB);
	fixture_cgroup(&fx, "batch", 10 * MiB);
	fixture_put(&fx, "memguard.conf", "%s", config_good);
	fixture_start(&fx, NULL, NULL, NULL);
	return 0;
}

static int teardown(void **state)
{
	fixture_done(&fx);
	return 0;
}

/* Wait for a DIRECTIVE at `level`, skipping others and PINGs. */
static void await_level(int fd, enum mg_level level, struct mg_directive *ret)
{
	struct mg_msg m;

	for (int i = 0; i < 100; i++) {
		assert_int_equal(fixture_recv(fd, &m, 3000), 0);
		if (m.hdr.type == MG_MSG_DIRECTIVE && m.directive.level == level) {
			*ret = m.directive;
			return;
		}
	}
	fail_msg("no %s directive", proto_level_name(level));
}

/* Wait for a DIRECTIVE at `level` or above. */
static void await_level_from(int fd, enum mg_level level, struct mg_directive *ret)
{
	struct mg_msg m;

	for (int i = 0; i < 100; i++) {
		assert_int_equal(fixture_recv(fd, &m, 3000), 0);
		if (m.hdr.type == MG_MSG_DIRECTIVE && m.directive.level >= level) {
			*ret = m.directive;
			return;
		}
	}
	fail_msg("no directive at %s or above", proto_level_name(level));
}

static int hello(const char *service, struct mg_msg *ret)
{
	int fd = fixture_hello(&fx, service, "test-daemon", MG_CAP_ALL);

	assert_int_equal(fixture_recv(fd, ret, 3000), 0);
	return fd;
}

/* memguardctl set-budget SERVICE BUDGET, answered OK. */
static void set_budget(const char *service, uint64_t budget)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_SET_BUDGET, .seq = 4 } };
	int a = fixture_connect(&fx, NULL);

	strcpy(m.set_budget.service, service);
	m.set_budget.budget = budget;
	fixture_send(a, &m);
	assert_int_equal(fixture_recv(a, &m, 3000), 0);
	assert_int_equal(m.result.code, MG_ERR_OK);
	close(a);
}

static void status(struct mg_status_service *web, struct mg_status_daemon *d)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_STATUS, .seq = 9 } };
	int fd = fixture_connect(&fx, NULL);

	fixture_send(fd, &m);
	for (;;) {
		assert_int_equal(fixture_recv(fd, &m, 3000), 0);
		assert_int_equal(m.hdr.seq, 9);
		if (m.hdr.type == MG_MSG_STATUS_DAEMON && d)
			*d = m.status_daemon;
		if (m.hdr.type == MG_MSG_STATUS_SERVICE && !strcmp(m.status_service.name, "web"))
			*web = m.status_service;
		if (m.hdr.type == MG_MSG_RESULT)
			break;
	}
	assert_int_equal(m.result.code, MG_ERR_OK);
	close(fd);
}

static void test_register_and_levels(void **state)
{
	struct conf_service svc = { .warn = CONF_DEFAULT_WARN, .critical = CONF_DEFAULT_CRITICAL,
				    .min_gc_percent = CONF_DEFAULT_MIN_GC_PERCENT,
				    .max_throttle = CONF_DEFAULT_MAX_THROTTLE };
	struct mg_status_service web = { 0 };
	struct mg_directive d;
	struct mg_msg m;
	double out;
	int fd = hello("", &m);

	assert_int_equal(m.hdr.type, MG_MSG_WELCOME);
	assert_string_equal(m.welcome.service, "web");
	assert_int_equal(m.welcome.budget, BUDGET);
	/* The directive in force follows WELCOME, and demands nothing. */
	assert_int_equal(fixture_recv(fd, &m, 3000), 0);
	assert_int_equal(m.hdr.type, MG_MSG_DIRECTIVE);
	assert_int_equal(m.directive.level, MG_LEVEL_NORMAL);
	assert_int_equal(m.directive.release, 0);

	/* 85 % of the budget: WARN with the law's gc percent. */
	fixture_set_usage(&fx, "web", BUDGET * 85 / 100);
	await_level(fd, MG_LEVEL_WARN, &d);
	out = policy_output(POLICY_DEFAULT_CP, svc.warn, BUDGET * 85 / 100, BUDGET);
	assert_int_equal(d.gc_percent, policy_gc_percent(MG_LEVEL_WARN, out, svc.min_gc_percent));
	assert_int_equal(d.throttle, 0);
	assert_int_equal(d.soft_limit, BUDGET * 80 / 100);
	assert_int_equal(d.release, BUDGET * 85 / 100 - BUDGET * 80 / 100);

	/* 93 %: CRITICAL, throttling, with a deadline.  Reached a few ms
	 * after 85 %, which is fast growth: when the daemon saw both steps
	 * in a row, the look-ahead says EMERGENCY, and that directive acts as
	 * one (gc floor, throttle ceiling). */
	fixture_set_usage(&fx, "web", BUDGET * 93 / 100);
	await_level_from(fd, MG_LEVEL_CRITICAL, &d);
	out = policy_output(POLICY_DEFAULT_CP, svc.warn, BUDGET * 93 / 100, BUDGET);
	if (d.level == MG_LEVEL_EMERGENCY)
		out = POLICY_OUT_MAX;
	assert_int_equal(d.gc_percent, policy_gc_percent(d.level, out, svc.min_gc_percent));
	assert_int_equal(d.throttle, policy_throttle(d.level, out, svc.max_throttle));
	assert_true(d.throttle > 0);
	assert_int_equal(d.deadline_ms, 200);

	status(&web, NULL);
	assert_true(web.level >= MG_LEVEL_CRITICAL);
	assert_int_equal(web.clients, 1);
	assert_int_equal(web.working_set, BUDGET * 93 / 100);
	assert_int_equal(web.utilization, 9300);

	/* Back down: the NORMAL ("cleared") directive restores defaults. */
	fixture_set_usage(&fx, "web", BUDGET * 40 / 100);
	await_level(fd, MG_LEVEL_NORMAL, &d);
	assert_int_equal(d.gc_percent, MG_GC_DEFAULT);
	assert_int_equal(d.throttle, 0);
	assert_int_equal(d.release, 0);
	close(fd);
}

/* Wait (through the board's wake-up `ep`) until `slot` holds a directive
 * at `level` newer than *seq; its seq in *seq. */
static void await_slot(const struct mg_board_slot *slot, uint64_t owner, int ep,
		       enum mg_level level, uint32_t *seq, struct mg_directive *ret)
{
	uint64_t end = fixture_now_ms() + 3000;

	while (fixture_now_ms() < end) {
		struct epoll_event ev;
		uint32_t got;

		if (proto_slot_read(slot, owner, ret, &got, NULL) == 0 && ret->level == level &&
		    (int32_t)(got - *seq) > 0) {
			*seq = got;
			return;
		}
		(void)epoll_wait(ep, &ev, 1, 100);
	}
	fail_msg("no %s in the board slot", proto_level_name(level));
}

/* No DIRECTIVE arrives on `fd` within `ms` (PINGs are answered). */
static void assert_no_directive(int fd, int ms)
{
	uint64_t end = fixture_now_ms() + (uint64_t)ms;
	struct mg_msg m;

	while (fixture_now_ms() < end)
		if (fixture_recv(fd, &m, 20) == 0 && !fixture_pong(fd, &m))
			assert_int_not_equal(m.hdr.type, MG_MSG_DIRECTIVE);
}

/*
 * A client that can take a board gets BOARD after WELCOME, with a sealed,
 * read-only memfd (no descriptor, however opened, can write it) and a
 * pipe's read end.  A change without a demand reaches it in its slot and
 * a wake-up, with no DIRECTIVE; a demand still comes by message, after
 * the slot got the same state.  Its slot is cleared when it goes.
 */
static void test_board(void **state)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET };
	const struct mg_board_slot *slots;
	struct mg_directive d, sd;
	uint32_t seq = 0, sseq, slot;
	uint64_t id;
	struct mg_msg m;
	int fds[2], n, fd, ep, rw;
	char path[64];
	struct stat st;
	size_t len;

	fd = fixture_hello(&fx, "web", "board", MG_CAP_ALL | MG_CAP_BOARD);
	assert_int_equal(fixture_recv(fd, &m, 3000), 0);
	assert_int_equal(m.hdr.type, MG_MSG_WELCOME);
	id = m.welcome.client_id;
	assert_int_equal(fixture_recv_fds(fd, &m, 3000, fds, 2, &n), 0);
	assert_int_equal(m.hdr.type, MG_MSG_BOARD);
	assert_int_equal(n, 2);
	assert_int_equal(m.board.slots, CONF_DEFAULT_MAX_CONNECTIONS);
	slot = m.board.slot;
	len = (size_t)m.board.slots * MG_BOARD_SLOT_SIZE;

	assert_int_equal(fstat(fds[0], &st), 0);
	assert_true((size_t)st.st_size >= len);
	assert_int_equal(fcntl(fds[0], F_GETFL) & O_ACCMODE, O_RDONLY);
	assert_true(mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0) == MAP_FAILED);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fds[0]);
	rw = open(path, O_RDWR | O_CLOEXEC);
	assert_true(rw >= 0);
	assert_true(mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0) == MAP_FAILED);
	assert_int_equal(write(rw, "x", 1), -1);
	assert_int_equal(ftruncate(rw, 0), -1);
	close(rw);
	assert_int_equal(fstat(fds[1], &st), 0);
	assert_true(S_ISFIFO(st.st_mode));
	assert_int_equal(write(fds[1], "x", 1), -1);

	slots = mmap(NULL, len, PROT_READ, MAP_SHARED, fds[0], 0);
	assert_true(slots != MAP_FAILED);
	ep = epoll_create1(EPOLL_CLOEXEC);
	assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, fds[1], &ev), 0);

	/* The directive in force: in the slot, not in a DIRECTIVE. */
	await_slot(&slots[slot], id, ep, MG_LEVEL_NORMAL, &seq, &d);
	assert_no_directive(fd, 200);

	/* 85 %: WARN demands bytes, so it also comes by message, after the
	 * slot got its state under an earlier seq. */
	fixture_set_usage(&fx, "web", BUDGET * 85 / 100);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(fixture_recv(fd, &m, 3000), 0);
		if (m.hdr.type == MG_MSG_DIRECTIVE)
			break;
	}
	assert_int_equal(m.hdr.type, MG_MSG_DIRECTIVE);
	assert_int_equal(m.directive.level, MG_LEVEL_WARN);
	assert_true(m.directive.release > 0);
	assert_int_equal(proto_slot_read(&slots[slot], id, &sd, &sseq, NULL), 0);
	assert_true((int32_t)(m.hdr.seq - sseq) > 0);
	assert_true((int32_t)(sseq - seq) > 0);
	assert_int_equal(sd.level, MG_LEVEL_WARN);
	assert_int_equal(sd.gc_percent, m.directive.gc_percent);
	assert_int_equal(sd.soft_limit, m.directive.soft_limit);
	assert_int_equal(sd.release, 0);
	seq = m.hdr.seq;

	/* Another client's requests numbered 0 take numbers of its own
	 * connection, never of ours: our next directive's seq is close to
	 * the last one however many it sends. */
	{
		struct mg_msg r = { .hdr = { .type = MG_MSG_REPORT } };
		int other = hello("web", &m);

		for (int i = 0; i < 2000; i++)
			fixture_send(other, &r);
		for (int i = 0; i < 100 && fixture_recv(other, &m, 1) == 0; i++)
			;
		close(other);
	}

	/* 40 %: NORMAL demands nothing: the slot and the wake-up only. */
	fixture_set_usage(&fx, "web", BUDGET * 40 / 100);
	sseq = seq;
	await_slot(&slots[slot], id, ep, MG_LEVEL_NORMAL, &seq, &d);
	assert_true(seq - sseq < 100);
	assert_int_equal(d.gc_percent, MG_GC_DEFAULT);
	assert_int_equal(d.throttle, 0);
	assert_no_directive(fd, 200);

	/* Gone: the slot is cleared for its next owner. */
	close(fd);
	for (int i = 0; i < 300 && proto_slot_read(&slots[slot], id, &d, NULL, NULL) != -ENODATA; i++)
		usleep(10000);
	assert_int_equal(proto_slot_read(&slots[slot], id, &d, NULL, NULL), -ENODATA);
	munmap((void *)slots, len);
	close(ep);
	close(fds[0]);
	close(fds[1]);
}

#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83                /* Linux 6.16 */
#endif

/* A peer that takes no descriptors (SO_PASSRIGHTS off) cannot get BOARD:
 * it gets its directives by message, and the daemon goes on. */
static void test_board_refused_by_peer(void **state)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_HELLO, .seq = 1 } };
	struct mg_status_service web = { 0 };
	int zero = 0, fd = fixture_connect(&fx, NULL);

	if (setsockopt(fd, SOL_SOCKET, SO_PASSRIGHTS, &zero, sizeof(zero)) < 0) {
		printf("SKIP: SO_PASSRIGHTS is not in this kernel (%s)\n", strerror(errno));
		close(fd);
		skip();
	}
	m.hello.capabilities = MG_CAP_ALL | MG_CAP_BOARD;
	strcpy(m.hello.service, "web");
	fixture_send(fd, &m);
	assert_int_equal(fixture_recv(fd, &m, 3000), 0);
	assert_int_equal(m.hdr.type, MG_MSG_WELCOME);
	assert_int_equal(fixture_recv(fd, &m, 3000), 0);
	assert_int_equal(m.hdr.type, MG_MSG_DIRECTIVE);
	assert_int_equal(m.directive.level, MG_LEVEL_NORMAL);
	status(&web, NULL);
	assert_int_equal(web.clients, 1);
	close(fd);
}

static void test_released_is_recorded(void **state)
{
	struct mg_status_service web = { 0 };
	struct mg_msg m;
	int fd = hello("web", &m);
	uint32_t seq = 0;

	fixture_set_usage(&fx, "web", BUDGET * 85 / 100);
	for (int i = 0; i < 100 && !seq; i++) {
		assert_int_equal(fixture_recv(fd, &m, 3000), 0);
		if (m.hdr.type == MG_MSG_DIRECTIVE && m.directive.release > 0)
			seq = m.hdr.seq;
	}
	assert_true(seq != 0);
	m = (struct mg_msg){ .hdr = { .type = MG_MSG_RELEASED } };
	m.released.directive_seq = seq;
	m.released.bytes = 4 * MiB;
	m.released.usec = 1500;
	fixture_send(fd, &m);
	usleep(200000);
	status(&web, NULL);
	assert_int_equal(web.released_total, 4 * MiB);
	close(fd);
}

/* enforce=high: past the deadline at EMERGENCY, memory.high = budget; back
 * at NORMAL, the old value returns. */
static void test_enforce_high_writes_and_restores(void **state)
{
	char buf[64];
	struct mg_msg m;
	struct mg_directive d;
	int fd = hello("web", &m);

	fixture_set_usage(&fx, "web", BUDGET * 105 / 100);
	await_level(fd, MG_LEVEL_EMERGENCY, &d);
	for (int i = 0; i < 100 && !strcmp(fixture_get(&fx, "cg/web/memory.high", buf, sizeof(buf)), "max\n");
	     i++)
		usleep(20000);
	assert_int_equal(strtoull(buf, NULL, 10), BUDGET);

	fixture_set_usage(&fx, "web", BUDGET * 30 / 100);
	await_level(fd, MG_LEVEL_NORMAL, &d);
	for (int i = 0; i < 100 && strcmp(fixture_get(&fx, "cg/web/memory.high", buf, sizeof(buf)), "max\n");
	     i++)
		usleep(20000);
	assert_string_equal(buf, "max\n");
	close(fd);
}

/* Wait until the fixture file `rel` no longer holds `was`. */
static char *await_change(const char *rel, const char *was, char *buf, size_t size)
{
	for (int i = 0; i < 150 && !strcmp(fixture_get(&fx, rel, buf, size), was); i++)
		usleep(20000);
	return buf;
}

/* A budget changed while memory.high is in force: memory.high follows it,
 * and the value from before the escalation still comes back at NORMAL. */
static void test_memory_high_follows_budget(void **state)
{
	char buf[64], was[64];
	struct mg_msg m;
	struct mg_directive d;
	int fd = hello("web", &m);

	fixture_set_usage(&fx, "web", BUDGET * 105 / 100);
	await_level(fd, MG_LEVEL_EMERGENCY, &d);
	assert_int_equal(strtoull(await_change("cg/web/memory.high", "max\n", buf, sizeof(buf)),
				  NULL, 10), BUDGET);

	set_budget("web", BUDGET * 90 / 100);
	strcpy(was, buf);
	assert_int_equal(strtoull(await_change("cg/web/memory.high", was, buf, sizeof(buf)),
				  NULL, 10), BUDGET * 90 / 100);

	fixture_set_usage(&fx, "web", BUDGET * 20 / 100);
	await_level(fd, MG_LEVEL_NORMAL, &d);
	strcpy(was, buf);
	assert_string_equal(await_change("cg/web/memory.high", was, buf, sizeof(buf)), "max\n");
	close(fd);
}

/* memory.high already under the budget (a MemoryHigh= of its own): the
 * escalation never raises it. */
static void test_memory_high_never_raised(void **state)
{
	char buf[64];
	struct mg_msg m;
	struct mg_directive d;
	int fd = hello("web", &m);

	fixture_put(&fx, "cg/web/memory.high", "%llu\n", 80 * MiB);
	fixture_set_usage(&fx, "web", BUDGET * 105 / 100);
	await_level(fd, MG_LEVEL_EMERGENCY, &d);
	/* Past the 200 ms deadline by many 50 ms ticks. */
	usleep(800000);
	assert_int_equal(strtoull(fixture_get(&fx, "cg/web/memory.high", buf, sizeof(buf)),
				  NULL, 10), 80 * MiB);
	close(fd);
}

/* A budget raised while memory.high is in force follows it only as far as
 * the value from before the escalation: never above what was there. */
static void test_memory_high_follows_budget_up_to_the_old_value(void **state)
{
	char buf[64], was[64];
	struct mg_msg m;
	struct mg_directive d;
	int fd = hello("web", &m);

	fixture_put(&fx, "cg/web/memory.high", "%llu\n", 150 * MiB);
	fixture_set_usage(&fx, "web", BUDGET * 105 / 100);
	await_level(fd, MG_LEVEL_EMERGENCY, &d);
	snprintf(was, sizeof(was), "%llu\n", 150 * MiB);
	assert_int_equal(strtoull(await_change("cg/web/memory.high", was, buf, sizeof(buf)),
				  NULL, 10), BUDGET);

	/* 140M of 160M: WARN, the escalation holds. */
	fixture_set_usage(&fx, "web", 140 * MiB);
	set_budget("web", 160 * MiB);
	strcpy(was, buf);
	assert_int_equal(strtoull(await_change("cg/web/memory.high", was, buf, sizeof(buf)),
				  NULL, 10), 150 * MiB);
	/* and no higher on the ticks that follow */
	usleep(300000);
	assert_int_equal(strtoull(fixture_get(&fx, "cg/web/memory.high", buf, sizeof(buf)),
				  NULL, 10), 150 * MiB);
	close(fd);
}

/* enforce=kill: memory.high first; the kill only when usage stays above
 * the budget a further deadline while memory.events max grows. */
static void test_enforce_kill_needs_growth(void **state)
{
	char buf[64];

	fixture_set_usage(&fx, "batch", BUDGET * 110 / 100);
	assert_int_equal(strtoull(await_change("cg/batch/memory.high", "max\n", buf,
						 sizeof(buf)), NULL, 10), BUDGET);
	/* No max/oom growth: no kill, however long. */
	usleep(600000);
	assert_string_equal(fixture_get(&fx, "cg/batch/cgroup.kill", buf, sizeof(buf)), "0\n");

	fixture_put(&fx, "cg/batch/memory.events", "low 0\nhigh 3\nmax 7\noom 0\noom_kill 0\n");
	assert_string_equal(await_change("cg/batch/cgroup.kill", "0\n", buf, sizeof(buf)), "1\n");
}

/* Admin requests over the real socket from a peer that is not root. */
static void test_non_admin_refused(void **state)
{
	char sock[128];
	int status;
	pid_t pid;

	snprintf(sock, sizeof(sock), "%s/memguardd.sock", fx.dir);
	assert_int_equal(chmod(fx.dir, 0755), 0);
	assert_int_equal(chmod(sock, 0666), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		static const uint16_t types[] = { MG_MSG_STATUS, MG_MSG_CLIENTS, MG_MSG_RELEASE,
						  MG_MSG_RELOAD, MG_MSG_SET_BUDGET };

		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(10);
		for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
			struct mg_msg m = { .hdr = { .type = types[i], .seq = 5 } };
			int fd = fixture_connect(&fx, NULL);

			strcpy(m.release.service, "web");
			if (types[i] == MG_MSG_SET_BUDGET) {
				strcpy(m.set_budget.service, "web");
				m.set_budget.budget = 1;
			}
			fixture_send(fd, &m);
			if (fixture_recv(fd, &m, 3000) < 0 || m.hdr.type != MG_MSG_RESULT ||
			    m.result.code != MG_ERR_PERMISSION)
				_exit(11 + (int)i);
			if (fixture_recv(fd, &m, 3000) != -ECONNRESET)
				_exit(20 + (int)i);
			close(fd);
		}
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_wrong_service_refused(void **state)
{
	struct mg_msg m;
	int fd = hello("batch", &m);

	assert_int_equal(m.hdr.type, MG_MSG_ERROR);
	assert_int_equal(m.error.code, MG_ERR_SERVICE);
	assert_non_null(strstr(m.error.text, "batch"));
	assert_int_equal(fixture_recv(fd, &m, 3000), -ECONNRESET);
	close(fd);

	fd = hello("nosuch", &m);
	assert_int_equal(m.hdr.type, MG_MSG_ERROR);
	assert_int_equal(m.error.code, MG_ERR_NO_SERVICE);
	close(fd);
}

/* CLIENTS of a service that does not exist: RESULT NO_SERVICE alone. */
static void test_clients_unknown_service(void **state)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_CLIENTS, .seq = 6 } };
	int fd = fixture_connect(&fx, NULL);

	strcpy(m.clients.service, "nosuch");
	fixture_send(fd, &m);
	assert_int_equal(fixture_recv(fd, &m, 3000), 0);
	assert_int_equal(m.hdr.type, MG_MSG_RESULT);
	assert_int_equal(m.hdr.seq, 6);
	assert_int_equal(m.result.code, MG_ERR_NO_SERVICE);
	close(fd);
}

static void test_dead_client_removed(void **state)
{
	struct mg_status_service web = { 0 };
	struct mg_msg m;
	int a = hello("web", &m), b = hello("web", &m);

	usleep(100000);
	status(&web, NULL);
	assert_int_equal(web.clients, 2);
	close(a);
	usleep(200000);
	status(&web, NULL);
	assert_int_equal(web.clients, 1);
	close(b);
}

static void test_reload_good_and_broken(void **state)
{
	struct mg_status_daemon d = { 0 };
	struct mg_status_service web = { 0 };
	struct mg_msg m;
	int fd = hello("web", &m);

	/* Broken: reported, and the running config stays. */
	fixture_put(&fx, "memguard.conf", "%s[web2]\nbudget = 12X\n", config_good);
	kill(fx.daemon, SIGHUP);
	usleep(300000);
	status(&web, &d);
	assert_int_equal(d.services, 2);

	/* A runtime budget lasts until the next reload. */
	set_budget("web", 42 * MiB);
	status(&web, NULL);
	assert_int_equal(web.budget, 42 * MiB);

	/* Good: a service added, web's budget changed, the client kept. */
	fixture_cgroup(&fx, "extra", MiB);
	fixture_put(&fx, "memguard.conf", "%s[extra]\ncgroup = extra\nbudget = 10M\n",
	    "[daemon]\ntick = 50ms\n[web]\ncgroup = web\nbudget = 200M\n"
	    "[batch]\ncgroup = batch\nbudget = 100M\n");
	kill(fx.daemon, SIGHUP);
	usleep(300000);
	status(&web, &d);
	assert_int_equal(d.services, 3);
	assert_int_equal(web.budget, 200 * MiB);
	assert_int_equal(web.clients, 1);

	/* The connection survived. */
	m = (struct mg_msg){ .hdr = { .type = MG_MSG_REPORT } };
	fixture_send(fd, &m);
	usleep(100000);
	status(&web, NULL);
	assert_int_equal(web.clients, 1);
	close(fd);
}

/* An empty file means the embedded default: the client's own cgroup is
 * a service, its budget the cgroup's memory.high. */
static void test_empty_config_is_the_default(void **state)
{
	struct mg_msg m;
	int fd;

	fixture_put(&fx, "memguard.conf", "# nothing configured\n");
	fixture_put(&fx, "cg/web/memory.high", "%llu\n", 50 * MiB);
	kill(fx.daemon, SIGHUP);
	usleep(300000);
	fd = hello("", &m);
	assert_int_equal(m.hdr.type, MG_MSG_WELCOME);
	assert_string_equal(m.welcome.service, "web");
	assert_int_equal(m.welcome.budget, 50 * MiB);
	close(fd);
}

/* A service removed by a reload: its client stays connected, told NORMAL. */
static void test_reload_removes_service(void **state)
{
	struct mg_status_daemon d = { 0 };
	struct mg_status_service web = { 0 };
	struct mg_directive d_;
	struct mg_msg m;
	int fd = hello("web", &m);

	fixture_set_usage(&fx, "web", BUDGET * 85 / 100);
	await_level(fd, MG_LEVEL_WARN, &d_);
	fixture_put(&fx, "memguard.conf", "[daemon]\ntick = 50ms\n[batch]\ncgroup = batch\nbudget = 100M\n");
	kill(fx.daemon, SIGHUP);
	await_level(fd, MG_LEVEL_NORMAL, &d_);
	status(&web, &d);
	assert_int_equal(d.services, 1);
	assert_int_equal(d.clients, 1);
	close(fd);
}

/* SIGTERM puts back the memory.high the daemon changed. */
static void test_sigterm_restores_memory_high(void **state)
{
	char buf[64];
	struct mg_directive d;
	struct mg_msg m;
	int status_code, fd = hello("web", &m);

	fixture_set_usage(&fx, "web", BUDGET * 105 / 100);
	await_level(fd, MG_LEVEL_EMERGENCY, &d);
	assert_int_equal(strtoull(await_change("cg/web/memory.high", "max\n", buf, sizeof(buf)),
				  NULL, 10), BUDGET);
	kill(fx.daemon, SIGTERM);
	assert_int_equal(waitpid(fx.daemon, &status_code, 0), fx.daemon);
	fx.daemon = 0;
	assert_string_equal(fixture_get(&fx, "cg/web/memory.high", buf, sizeof(buf)), "max\n");
	close(fd);
}

/* After a kill, memory.high = budget from the step before is still in
 * force: SIGTERM puts it back all the same. */
static void test_sigterm_after_kill_restores_memory_high(void **state)
{
	char buf[64];
	int status_code;

	fixture_set_usage(&fx, "batch", BUDGET * 110 / 100);
	assert_int_equal(strtoull(await_change("cg/batch/memory.high", "max\n", buf,
						 sizeof(buf)), NULL, 10), BUDGET);
	fixture_put(&fx, "cg/batch/memory.events", "low 0\nhigh 3\nmax 7\noom 0\noom_kill 0\n");
	assert_string_equal(await_change("cg/batch/cgroup.kill", "0\n", buf, sizeof(buf)), "1\n");
	kill(fx.daemon, SIGTERM);
	assert_int_equal(waitpid(fx.daemon, &status_code, 0), fx.daemon);
	fx.daemon = 0;
	assert_string_equal(fixture_get(&fx, "cg/batch/memory.high", buf, sizeof(buf)), "max\n");
}

/* A daemon killed while memory.high is escalated: the next one puts the
 * old value back. */
static void test_sigkill_then_restart_puts_memory_high_back(void **state)
{
	char buf[64], state_file[160];
	struct mg_directive d;
	struct mg_msg m;
	int status_code, fd = hello("web", &m);

	fixture_set_usage(&fx, "web", BUDGET * 105 / 100);
	await_level(fd, MG_LEVEL_EMERGENCY, &d);
	assert_int_equal(strtoull(await_change("cg/web/memory.high", "max\n", buf, sizeof(buf)),
				  NULL, 10), BUDGET);
	snprintf(state_file, sizeof(state_file), "%s.escalations", fx.sock);
	assert_int_equal(access(state_file, F_OK), 0);
	close(fd);

	kill(fx.daemon, SIGKILL);
	assert_int_equal(waitpid(fx.daemon, &status_code, 0), fx.daemon);
	assert_int_equal(strtoull(fixture_get(&fx, "cg/web/memory.high", buf, sizeof(buf)), NULL, 10), BUDGET);

	fixture_set_usage(&fx, "web", BUDGET * 30 / 100);
	fixture_start(&fx, NULL, NULL, NULL);
	/* fixture_start() returns once the socket accepts, which it does
	 * from listen() on, before the record is read: the daemon removes
	 * the record after it has put every value back. */
	for (int i = 0; i < 150 && access(state_file, F_OK) == 0; i++)
		usleep(20000);
	assert_int_equal(access(state_file, F_OK), -1);
	assert_string_equal(fixture_get(&fx, "cg/web/memory.high", buf, sizeof(buf)), "max\n");
}

static void test_sigterm_says_bye_and_cleans_up(void **state)
{
	char sock[128];
	struct mg_msg m;
	int status_code;
	int fd = hello("web", &m);

	kill(fx.daemon, SIGTERM);
	for (;;) {
		int r = fixture_recv(fd, &m, 3000);

		assert_int_equal(r, 0);
		if (m.hdr.type == MG_MSG_BYE)
			break;
	}
	assert_int_equal(m.bye.reason, MG_BYE_SHUTDOWN);
	assert_int_equal(waitpid(fx.daemon, &status_code, 0), fx.daemon);
	fx.daemon = 0;
	assert_true(WIFEXITED(status_code));
	assert_int_equal(WEXITSTATUS(status_code), 0);
	snprintf(sock, sizeof(sock), "%s/memguardd.sock", fx.dir);
	assert_int_equal(access(sock, F_OK), -1);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_register_and_levels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_released_is_recorded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_board, setup, teardown),
		cmocka_unit_test_setup_teardown(test_board_refused_by_peer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enforce_high_writes_and_restores, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_enforce_kill_needs_growth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_non_admin_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_service_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clients_unknown_service, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_client_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload_good_and_broken, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_config_is_the_default, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload_removes_service, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_high_follows_budget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_high_never_raised, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_high_follows_budget_up_to_the_old_value,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigterm_restores_memory_high, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigterm_after_kill_restores_memory_high, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_sigkill_then_restart_puts_memory_high_back, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_sigterm_says_bye_and_cleans_up, setup,
						teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
