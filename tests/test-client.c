/* SPDX-License-Identifier: MIT */
/*
 * libmemguard-client against an in-process fake daemon: the test holds
 * the daemon's end of a socketpair() (and, for reconnects, a listening
 * socket) and speaks proto/ on it.  Directives reach the right hooks with
 * the right values and in the right order; RELEASED carries what the hooks
 * and the heap gave back; malformed messages make the client reconnect;
 * mg_admit() follows the throttle; fork() children keep off the parent's
 * connection.
 *
 * The heap here is a fake (mg_heap_* below) that records its calls, so the
 * goal and the release asked of the allocator can be checked exactly.
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
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syslog.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/alloc/alloc.h"
#include "client/client-internal.h"
#include "proto/macro.h"
#include "tests/asan-fork.h"

#define MiB (1024ULL * 1024)

/* ---- a fake heap: the allocator's three calls, recorded --------------- */

static pthread_mutex_t trace_lock = PTHREAD_MUTEX_INITIALIZER;
static char trace[2048];                 /* "goal=N level=W gc=60 …" in call order */

static struct {
	size_t goal;
	size_t releasable;                   /* what mg_heap_release() can give */
	struct mg_heap_stats stats;
} heap;

static void tracef(const char *fmt, ...)
{
	char item[128];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(item, sizeof(item), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&trace_lock);
	if (strlen(trace) + strlen(item) + 2 < sizeof(trace)) {
		if (trace[0])
			strcat(trace, " ");
		strcat(trace, item);
	}
	pthread_mutex_unlock(&trace_lock);
}

static void trace_take(char *buf, size_t size)
{
	pthread_mutex_lock(&trace_lock);
	snprintf(buf, size, "%s", trace);
	trace[0] = 0;
	pthread_mutex_unlock(&trace_lock);
}

void mg_heap_stats(struct mg_heap_stats *ret)
{
	pthread_mutex_lock(&trace_lock);
	*ret = heap.stats;
	pthread_mutex_unlock(&trace_lock);
}

size_t mg_heap_release(size_t bytes)
{
	size_t give;

	pthread_mutex_lock(&trace_lock);
	give = bytes == 0 || bytes > heap.releasable ? heap.releasable : bytes;
	heap.releasable -= give;
	pthread_mutex_unlock(&trace_lock);
	tracef("heap_release=%zu", bytes);
	return give;
}

/* The allocator's look at the process's threads: this test's program
 * always has its own. */
bool alloc_lone_claim(void)
{
	return false;
}

void mg_heap_set_goal(size_t bytes)
{
	pthread_mutex_lock(&trace_lock);
	heap.goal = bytes;
	pthread_mutex_unlock(&trace_lock);
	tracef("goal=%zu", bytes);
}

/* The allocator's growth watch, as the client sets it; the tests call
 * `fn` where the allocator would, after a refill past `bytes`. */
static struct {
	uint64_t bytes;
	void (*fn)(uint64_t resident);
} watch;

void alloc_watch_set(uint64_t bytes, void (*fn)(uint64_t resident))
{
	pthread_mutex_lock(&trace_lock);
	watch.bytes = bytes;
	watch.fn = fn;
	pthread_mutex_unlock(&trace_lock);
}

/* The heap's resident bytes (sys − released) are now `mib` MiB. */
static void heap_resident(uint64_t mib)
{
	pthread_mutex_lock(&trace_lock);
	heap.stats.sys = mib * MiB;
	heap.stats.released = 0;
	heap.stats.inuse = mib * MiB;
	pthread_mutex_unlock(&trace_lock);
}

/* ---- hooks that record ------------------------------------------------- */

static struct {
	size_t give;                         /* what the release hook frees */
	pthread_t thread;                    /* where the last hook ran */
	struct mg_client *free_me;           /* the level hook frees it */
	bool freed;                          /* ...and has */
	bool log_after_free;                 /* the log function ran after that */
	char log[8192];
} hooks;

static void on_gc(void *data, unsigned gc)
{
	hooks.thread = pthread_self();
	tracef("gc=%u", gc);
}

static size_t on_release(void *data, size_t bytes)
{
	hooks.thread = pthread_self();
	if (bytes == SIZE_MAX)
		tracef("release=all");
	else
		tracef("release=%zu", bytes);
	return hooks.give;
}

static void on_level(void *data, enum mg_level level)
{
	hooks.thread = pthread_self();
	tracef("level=%s", proto_level_name(level));
	if (hooks.free_me) {
		mg_client_free(TAKE_PTR(hooks.free_me));
		hooks.freed = true;
	}
}

static void on_log(void *data, int priority, const char *msg)
{
	size_t n = strlen(hooks.log);

	if (hooks.freed)
		hooks.log_after_free = true;
	snprintf(hooks.log + n, sizeof(hooks.log) - n, "<%d>%s\n", priority, msg);
}

/* ---- the fake daemon ---------------------------------------------------- */

static struct {
	char dir[64];
	char path[128];                      /* where it listens for reconnects */
	int listen_fd;
	int fd;                              /* the daemon's end of the connection */
	struct mg_client *c;
	uint32_t seq;
} d;

static uint64_t now_ms(void)
{
	return now_usec() / 1000;
}

static void send_raw(int fd, const void *buf, size_t n)
{
	assert_int_equal(send(fd, buf, n, MSG_NOSIGNAL), (ssize_t)n);
}

static int encode(struct mg_msg *m, uint8_t *buf)
{
	int n;

	if (!m->hdr.seq)
		m->hdr.seq = ++d.seq;
	n = proto_msg_encode(m, buf, MG_MSG_MAX);
	assert_true(n > 0);
	return n;
}

static void send_msg(int fd, struct mg_msg *m)
{
	uint8_t buf[MG_MSG_MAX];

	send_raw(fd, buf, (size_t)encode(m, buf));
}

/* Let the client run (event-loop mode) and wait up to `ms` for a message
 * on `fd`.  0, -ETIMEDOUT, or -ECONNRESET when the client closed. */
static int next_msg(struct mg_client *c, int fd, struct mg_msg *ret, int ms)
{
	uint64_t end = now_ms() + (uint64_t)ms;

	do {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint8_t buf[MG_MSG_MAX];
		ssize_t n;

		if (c)
			assert_true(mg_client_dispatch(c) >= 0);
		if (poll(&p, 1, 5) == 1) {
			n = recv(fd, buf, sizeof(buf), 0);
			if (n <= 0)
				return -ECONNRESET;
			assert_int_equal(proto_msg_decode(buf, (size_t)n, ret), 0);
			return 0;
		}
	} while (now_ms() < end);
	return -ETIMEDOUT;
}

/* The next message of `type`, skipping others (REPORTs, mostly). */
static void await_msg(struct mg_client *c, int fd, uint16_t type, struct mg_msg *ret)
{
	for (int i = 0; i < 100; i++) {
		assert_int_equal(next_msg(c, fd, ret, 2000), 0);
		if (ret->hdr.type == type)
			return;
	}
	fail_msg("no %s", proto_type_name(type));
}

/* Wait until the client closes `fd`. */
static void await_close(struct mg_client *c, int fd)
{
	struct mg_msg m;
	int r;

	for (int i = 0; i < 100; i++) {
		r = next_msg(c, fd, &m, 2000);
		if (r == -ECONNRESET)
			return;
		assert_int_equal(r, 0);
	}
	fail_msg("the client did not close the connection");
}

/* What memguardd does for an accepted HELLO: WELCOME, then a DIRECTIVE
 * with the state in force (`dir`, or NORMAL when NULL). */
static void welcome(int fd, uint32_t hello_seq, const struct mg_directive *dir)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_WELCOME, .seq = hello_seq } };
	struct mg_msg in_force = { .hdr = { .type = MG_MSG_DIRECTIVE, .seq = 7 } };

	m.welcome.client_id = 42;
	m.welcome.budget = 100 * MiB;
	m.welcome.report_interval_ms = 60000;  /* REPORTs only when we cause them */
	strcpy(m.welcome.service, "web");
	send_msg(fd, &m);
	if (dir)
		in_force.directive = *dir;
	send_msg(fd, &in_force);
}

static void directive(int fd, uint32_t seq, uint8_t level, uint16_t gc, uint16_t throttle,
		      uint64_t soft, uint64_t release)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_DIRECTIVE, .seq = seq } };

	m.directive.level = level;
	m.directive.gc_percent = gc;
	m.directive.throttle = throttle;
	m.directive.soft_limit = soft;
	m.directive.release = release;
	m.directive.deadline_ms = release ? 200 : 0;
	send_msg(fd, &m);
}

/* Accept the client's reconnection and answer its HELLO. */
static int accept_hello(struct mg_client *c, struct mg_msg *hello_ret)
{
	struct pollfd p = { .fd = d.listen_fd, .events = POLLIN };
	uint64_t end = now_ms() + 3000;
	int fd;

	while (poll(&p, 1, 5) == 0) {
		if (c)
			assert_true(mg_client_dispatch(c) >= 0);
		assert_true(now_ms() < end);
	}
	fd = accept4(d.listen_fd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(fd >= 0);
	await_msg(c, fd, MG_MSG_HELLO, hello_ret);
	return fd;
}

static struct mg_client_opts opts(enum mg_threading t)
{
	return (struct mg_client_opts){ .size = sizeof(struct mg_client_opts),
					 .socket_path = d.path,
					 .process = "test-client",
					 .threading = t };
}

/* A client on a socketpair, welcomed at NORMAL, with recording hooks. */
static void connect_client(enum mg_threading t)
{
	struct mg_client_opts o = opts(t);
	struct mg_msg m;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(client_new_fd(sv[0], &o, &d.c), 0);
	d.fd = sv[1];
	mg_client_set_log_fn(d.c, on_log, NULL);
	mg_client_set_gc_hook(d.c, on_gc, NULL);
	mg_client_set_release_hook(d.c, on_release, NULL);
	mg_client_set_level_hook(d.c, on_level, NULL);
	await_msg(t == MG_THREAD_NONE ? d.c : NULL, d.fd, MG_MSG_HELLO, &m);
	welcome(d.fd, m.hdr.seq, NULL);
	await_msg(t == MG_THREAD_NONE ? d.c : NULL, d.fd, MG_MSG_REPORT, &m);
}

static int setup(void **state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	memset(&hooks, 0, sizeof(hooks));
	memset(&heap, 0, sizeof(heap));
	memset(&watch, 0, sizeof(watch));
	trace[0] = 0;
	strcpy(d.dir, "/tmp/mg-test-client-XXXXXX");
	assert_non_null(mkdtemp(d.dir));
	snprintf(d.path, sizeof(d.path), "%s/memguardd.sock", d.dir);
	d.listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_true(d.listen_fd >= 0);
	strcpy(sa.sun_path, d.path);
	assert_int_equal(bind(d.listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(d.listen_fd, 8), 0);
	d.fd = -1;
	d.c = NULL;
	d.seq = 1000;
	return 0;
}

static int teardown(void **state)
{
	mg_client_free(TAKE_PTR(d.c));
	if (d.fd >= 0)
		close(d.fd);
	close(d.listen_fd);
	unlink(d.path);
	rmdir(d.dir);
	return 0;
}

/* ---- tests ---------------------------------------------------------------- */

/* The next REPORT; `local` whether it says MG_FLAG_LOCAL_LIMIT. */
static void await_report(bool local)
{
	struct mg_msg m;

	await_msg(d.c, d.fd, MG_MSG_REPORT, &m);
	if (!!(m.hdr.flags & MG_FLAG_LOCAL_LIMIT) != local)
		fail_msg("REPORT flags %#x, want local %d", m.hdr.flags, local);
}

/*
 * The local limit: the allocator's watch follows the soft limit at every
 * level; a refill past it acts as WARN at once (GC target, goal), past
 * 9/8 of it as CRITICAL (throttle too), and says so in the REPORT; the
 * daemon's directives cannot lower it; it ends on NORMAL with the heap
 * back under the limit.
 */
static void test_local_limit(void **state)
{
	char t[sizeof(trace)];

	heap_resident(50);
	connect_client(MG_THREAD_NONE);
	assert_int_equal(watch.bytes, 0);        /* no soft limit yet */
	trace_take(t, sizeof(t));

	directive(d.fd, 70, MG_LEVEL_NORMAL, 0, 0, 80 * MiB, 0);
	await_report(false);
	assert_int_equal(watch.bytes, 80 * MiB);
	assert_non_null(watch.fn);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "goal=83886080");

	/* 90 MiB: the allocator calls the watch; WARN's actions at once */
	heap_resident(90);
	watch.fn(90 * MiB);
	watch.fn(91 * MiB);                      /* once per crossing */
	await_report(true);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_WARN);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "goal=83886080 level=WARN gc=50");
	assert_int_equal(atomic_load(&d.c->throttle), 0);
	assert_non_null(strstr(hooks.log, "Local limit: WARN"));
	/* the watch moves on to what would change something: 9/8 of it */
	assert_int_equal(watch.bytes, 90 * MiB);

	/* 95 MiB > 90 (9/8 of 80): CRITICAL, throttling */
	heap_resident(95);
	watch.fn(95 * MiB);
	await_report(true);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_CRITICAL);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "goal=83886080 level=CRITICAL gc=25");
	assert_int_equal(atomic_load(&d.c->throttle), LIMIT_CRIT_THROTTLE);
	assert_int_equal(watch.bytes, 0);        /* nothing higher to watch for */

	/* the daemon's WARN does not lower what the local limit holds */
	directive(d.fd, 71, MG_LEVEL_WARN, 92, 0, 80 * MiB, 0);
	await_report(true);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_CRITICAL);
	assert_int_equal(d.c->applied.gc_percent, 25);
	assert_int_equal(d.c->applied.throttle, LIMIT_CRIT_THROTTLE);

	/* 88 MiB: under 9/8 (90) but not under 17/16 (85): still shedding */
	heap_resident(88);
	directive(d.fd, 76, MG_LEVEL_WARN, 92, 0, 80 * MiB, 0);
	await_report(true);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_CRITICAL);

	/* under the limit again, but the daemon still says WARN: no more
	 * shedding of its own, WARN's actions held */
	heap_resident(70);
	directive(d.fd, 72, MG_LEVEL_WARN, 92, 0, 80 * MiB, 0);
	await_report(true);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_WARN);
	assert_int_equal(d.c->applied.gc_percent, LIMIT_WARN_GC);
	assert_int_equal(atomic_load(&d.c->throttle), 0);

	/* NORMAL and under the limit: the local action ends */
	directive(d.fd, 73, MG_LEVEL_NORMAL, 0, 0, 80 * MiB, 0);
	await_report(false);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_NORMAL);
	assert_int_equal(d.c->applied.gc_percent, MG_GC_DEFAULT);
	assert_int_equal(atomic_load(&d.c->throttle), 0);
	trace_take(t, sizeof(t));
	/* (the hooks kept CRITICAL's values through the first WARN) */
	assert_string_equal(t, "goal=83886080 goal=83886080 goal=83886080 level=WARN gc=50 "
			       "goal=83886080 level=NORMAL gc=0");

	/* NORMAL but over the limit: it does not end, and a directive that
	 * arrives over the limit starts it by itself */
	heap_resident(85);
	directive(d.fd, 74, MG_LEVEL_NORMAL, 0, 0, 80 * MiB, 0);
	await_report(true);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_WARN);

	/* the daemon raises the soft limit: the watch follows, and the next
	 * REPORT's look ends the local action */
	directive(d.fd, 75, MG_LEVEL_NORMAL, 0, 0, 160 * MiB, 0);
	await_report(false);
	assert_int_equal(watch.bytes, 160 * MiB);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_NORMAL);
}

/* A heap the library does not own, reported through
 * mg_client_set_external_bytes(), counts with the allocator's. */
static void test_local_limit_external(void **state)
{
	heap_resident(50);
	connect_client(MG_THREAD_NONE);
	directive(d.fd, 80, MG_LEVEL_NORMAL, 0, 0, 80 * MiB, 0);
	await_report(false);

	mg_client_set_external_bytes(d.c, 20 * MiB);     /* 70: under */
	assert_int_equal(mg_client_dispatch(d.c) >= 0, true);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_NORMAL);

	mg_client_set_external_bytes(d.c, 40 * MiB);     /* 90: over */
	await_report(true);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_WARN);
	assert_int_equal(d.c->applied.gc_percent, LIMIT_WARN_GC);

	/* at WARN only 9/8 of the limit (90) would change something: no
	 * wake-up below it, one above */
	mg_client_set_external_bytes(d.c, 39 * MiB);     /* 89 */
	assert_false(limit_pending(d.c));
	mg_client_set_external_bytes(d.c, 41 * MiB);     /* 91 */
	assert_true(limit_pending(d.c));
	await_report(true);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_CRITICAL);
	/* at CRITICAL nothing would */
	mg_client_set_external_bytes(d.c, 42 * MiB);
	assert_false(limit_pending(d.c));

	/* the runtime gave it back, the daemon says NORMAL: over */
	mg_client_set_external_bytes(d.c, 0);
	directive(d.fd, 81, MG_LEVEL_NORMAL, 0, 0, 80 * MiB, 0);
	await_report(false);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_NORMAL);
}

static void test_hello_and_report(void **state)
{
	struct mg_client_opts o = opts(MG_THREAD_NONE);
	struct mg_msg m;
	int sv[2];

	heap.stats = (struct mg_heap_stats){ .sys = 64 * MiB, .inuse = 40 * MiB,
					     .idle = 20 * MiB, .released = 4 * MiB };
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	o.service = "web";
	assert_int_equal(client_new_fd(sv[0], &o, &d.c), 0);
	d.fd = sv[1];
	mg_client_set_gc_hook(d.c, on_gc, NULL);
	assert_true(mg_client_fd(d.c) >= 0);

	await_msg(d.c, d.fd, MG_MSG_HELLO, &m);
	assert_true(m.hdr.seq != 0);
	assert_string_equal(m.hello.service, "web");
	assert_string_equal(m.hello.process, "test-client");
	assert_int_equal(m.hello.capabilities,
			 MG_CAP_GC_HOOK | MG_CAP_ADMIT | MG_CAP_HEAP | MG_CAP_BOARD);

	mg_client_set_external_bytes(d.c, 7 * MiB);
	welcome(d.fd, m.hdr.seq, NULL);
	/* A REPORT at once, with the heap as the allocator states it. */
	assert_int_equal(next_msg(d.c, d.fd, &m, 2000), 0);
	assert_int_equal(m.hdr.type, MG_MSG_REPORT);
	assert_int_equal(m.report.heap_sys, 64 * MiB);
	assert_int_equal(m.report.heap_inuse, 40 * MiB);
	assert_int_equal(m.report.heap_idle, 20 * MiB);
	assert_int_equal(m.report.heap_released, 4 * MiB);
	assert_int_equal(m.report.external, 7 * MiB);
	assert_int_equal(m.report.gc_percent, 0);
	assert_int_equal(m.report.released_total, 0);
	assert_int_equal(d.c->state, CONN_READY);
	assert_int_equal(d.c->client_id, 42);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_NORMAL);
	assert_int_equal(mg_client_dispatch(d.c) > 0, true);
}

/* The order: goal, hooks, release (hook, then heap), RELEASED,
 * REPORT. */
static void test_directives_reach_hooks(void **state)
{
	char t[sizeof(trace)];
	struct mg_msg m;

	connect_client(MG_THREAD_NONE);
	trace_take(t, sizeof(t));
	heap.releasable = 10 * MiB;
	hooks.give = 2 * MiB;

	/* WARN: everything changes, and 5 MiB are demanded. */
	directive(d.fd, 77, MG_LEVEL_WARN, 60, 0, 80 * MiB, 5 * MiB);
	assert_int_equal(next_msg(d.c, d.fd, &m, 2000), 0);
	assert_int_equal(m.hdr.type, MG_MSG_RELEASED);
	assert_int_equal(m.released.directive_seq, 77);
	assert_int_equal(m.released.bytes, 5 * MiB);  /* 2 from the hook, 3 from the heap */
	assert_true(m.released.usec < 1000000);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "goal=83886080 level=WARN gc=60 release=5242880 "
			       "heap_release=3145728");
	assert_int_equal(next_msg(d.c, d.fd, &m, 2000), 0);
	assert_int_equal(m.hdr.type, MG_MSG_REPORT);
	assert_int_equal(m.report.released_total, 5 * MiB);
	assert_int_equal(m.report.gc_percent, 60);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_WARN);

	/* CRITICAL with the same gc: only the level hook; no demand, so no
	 * RELEASED, but a REPORT. */
	directive(d.fd, 78, MG_LEVEL_CRITICAL, 60, 300, 70 * MiB, 0);
	assert_int_equal(next_msg(d.c, d.fd, &m, 2000), 0);
	assert_int_equal(m.hdr.type, MG_MSG_REPORT);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "goal=73400320 level=CRITICAL");
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_CRITICAL);

	/* EMERGENCY, release everything: the hook is asked for all it has,
	 * the heap for all it has (0). */
	hooks.give = 1 * MiB;
	heap.releasable = 6 * MiB;
	directive(d.fd, 79, MG_LEVEL_EMERGENCY, 25, 500, 50 * MiB, UINT64_MAX);
	await_msg(d.c, d.fd, MG_MSG_RELEASED, &m);
	assert_int_equal(m.released.directive_seq, 79);
	assert_int_equal(m.released.bytes, 7 * MiB);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "goal=52428800 level=EMERGENCY gc=25 release=all heap_release=0");
	assert_int_equal(next_msg(d.c, d.fd, &m, 2000), 0);
	assert_int_equal(m.hdr.type, MG_MSG_REPORT);

	/* The hook frees more than asked: the heap is not asked at all. */
	hooks.give = 9 * MiB;
	directive(d.fd, 80, MG_LEVEL_EMERGENCY, 25, 500, 50 * MiB, 4 * MiB);
	await_msg(d.c, d.fd, MG_MSG_RELEASED, &m);
	assert_int_equal(m.released.bytes, 9 * MiB);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "goal=52428800 release=4194304");
	assert_int_equal(next_msg(d.c, d.fd, &m, 2000), 0);
	assert_int_equal(m.hdr.type, MG_MSG_REPORT);

	/* NORMAL ("cleared"): defaults back, caches may grow. */
	directive(d.fd, 81, MG_LEVEL_NORMAL, 0, 0, 0, 0);
	assert_int_equal(next_msg(d.c, d.fd, &m, 2000), 0);
	assert_int_equal(m.hdr.type, MG_MSG_REPORT);
	assert_int_equal(m.report.released_total, 21 * MiB);
	assert_int_equal(m.report.gc_percent, 0);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "goal=0 level=NORMAL gc=0");
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_NORMAL);
}

/* ---- the directive board -------------------------------------------------- */

/* The fake daemon's board: a memfd it writes, a pipe it wakes through. */
static struct {
	int memfd, rd, wr;
	struct mg_board_slot *slots;
	size_t len;
} fb;

static void fake_board(uint32_t slots, size_t memfd_bytes)
{
	int p[2];

	fb.memfd = memfd_create("test-board", MFD_CLOEXEC);
	assert_true(fb.memfd >= 0);
	assert_int_equal(ftruncate(fb.memfd, (off_t)memfd_bytes), 0);
	fb.len = (size_t)slots * MG_BOARD_SLOT_SIZE;
	fb.slots = mmap(NULL, fb.len, PROT_READ | PROT_WRITE, MAP_SHARED, fb.memfd, 0);
	assert_true(fb.slots != MAP_FAILED);
	assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	fb.rd = p[0];
	fb.wr = p[1];
}

static void fake_board_done(void)
{
	munmap(fb.slots, fb.len);
	close(fb.memfd);
	close(fb.rd);
	close(fb.wr);
}

/* BOARD {slot, slots} with the first `n_fds` of (memfd, wake-up). */
static void send_board(uint32_t slot, uint32_t slots, int n_fds)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_BOARD } };
	uint8_t buf[MG_MSG_MAX];
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} ctl = { 0 };
	struct iovec iov = { .iov_base = buf };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			     .msg_controllen = CMSG_SPACE(n_fds * sizeof(int)) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	int fds[2] = { fb.memfd, fb.rd };

	m.board.slot = slot;
	m.board.slots = slots;
	iov.iov_len = (size_t)encode(&m, buf);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
	memcpy(CMSG_DATA(cm), fds, n_fds * sizeof(int));
	assert_true(sendmsg(d.fd, &mh, MSG_NOSIGNAL) > 0);
}

/* What memguardd does on a change without a demand: the slot, then one
 * byte in the pipe (the last one emptied first). */
static void board_set_for(uint64_t owner, uint32_t slot, uint32_t seq, uint8_t level,
			  uint16_t gc, uint16_t throttle, uint64_t soft)
{
	struct mg_directive dir = { .level = level, .gc_percent = gc, .throttle = throttle,
				    .soft_limit = soft };
	char b[8];

	proto_slot_write(&fb.slots[slot], &dir, owner, seq, 1);
	while (read(fb.rd, b, sizeof(b)) > 0)
		;
	assert_int_equal(write(fb.wr, "", 1), 1);
}

/* The same for our client (welcome() says client_id 42). */
static void board_set(uint32_t slot, uint32_t seq, uint8_t level, uint16_t gc,
		      uint16_t throttle, uint64_t soft)
{
	board_set_for(42, slot, seq, level, gc, throttle, soft);
}

/* A board client acts on its slot without a DIRECTIVE, keeps the newer
 * of slot and message (by seq), still answers a demand that comes by
 * message, and its descriptor is quiet again once it dispatched. */
static void test_board(void **state)
{
	struct pollfd p = { .events = POLLIN };
	char t[sizeof(trace)];
	struct mg_msg m;

	connect_client(MG_THREAD_NONE);
	fake_board(4, 4 * MG_BOARD_SLOT_SIZE);
	send_board(2, 4, 2);
	assert_int_equal(mg_client_dispatch(d.c) >= 0, true);
	assert_non_null(d.c->board);
	assert_true(d.c->board_fd >= 0);
	trace_take(t, sizeof(t));

	/* WARN through the slot alone. */
	board_set(2, 100, MG_LEVEL_WARN, 60, 0, 80 * MiB);
	p.fd = mg_client_fd(d.c);
	assert_int_equal(poll(&p, 1, 2000), 1);
	await_msg(d.c, d.fd, MG_MSG_REPORT, &m);
	assert_int_equal(m.report.gc_percent, 60);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "goal=83886080 level=WARN gc=60");
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_WARN);
	/* The wake-up is collected: the byte left in the pipe does not keep
	 * the client's descriptor readable. */
	assert_true(mg_client_dispatch(d.c) >= 0);
	assert_int_equal(poll(&p, 1, 0), 0);

	/* Another client's slot is not ours; nor is ours once it names
	 * another client (given to a newcomer after we were dropped). */
	board_set(1, 101, MG_LEVEL_EMERGENCY, 25, 900, 10 * MiB);
	assert_true(mg_client_dispatch(d.c) >= 0);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_WARN);
	board_set_for(43, 2, 104, MG_LEVEL_EMERGENCY, 25, 900, 10 * MiB);
	assert_true(mg_client_dispatch(d.c) >= 0);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_WARN);

	/* A DIRECTIVE older than the slot: only its demand is met. */
	heap.releasable = 3 * MiB;
	directive(d.fd, 99, MG_LEVEL_CRITICAL, 30, 500, 50 * MiB, 3 * MiB);
	await_msg(d.c, d.fd, MG_MSG_RELEASED, &m);
	assert_int_equal(m.released.directive_seq, 99);
	assert_int_equal(m.released.bytes, 3 * MiB);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "goal=83886080 release=3145728 heap_release=3145728");
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_WARN);

	/* A newer DIRECTIVE wins over the slot; the slot's next change
	 * wins over that. */
	directive(d.fd, 105, MG_LEVEL_CRITICAL, 30, 500, 50 * MiB, 0);
	await_msg(d.c, d.fd, MG_MSG_REPORT, &m);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_CRITICAL);
	board_set(2, 106, MG_LEVEL_NORMAL, 0, 0, 0);
	await_msg(d.c, d.fd, MG_MSG_REPORT, &m);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_NORMAL);
	fake_board_done();
}

/* A BOARD the client cannot take (a descriptor missing, a memfd shorter
 * than the slots) ends the connection; the next HELLO does without
 * MG_CAP_BOARD, so directives come by message. */
static void test_board_refused(void **state)
{
	struct mg_msg m;
	int fd;

	connect_client(MG_THREAD_NONE);
	fake_board(4, 4 * MG_BOARD_SLOT_SIZE);
	send_board(0, 4, 1);
	await_close(d.c, d.fd);
	assert_null(d.c->board);
	fd = accept_hello(d.c, &m);
	assert_int_equal(m.hello.capabilities & MG_CAP_BOARD, 0);
	close(fd);
	fake_board_done();

	d.c->no_board = false;
	close(d.fd);
	d.fd = accept_hello(d.c, &m);
	assert_true(m.hello.capabilities & MG_CAP_BOARD);
	welcome(d.fd, m.hdr.seq, NULL);
	fake_board(4, MG_BOARD_SLOT_SIZE);
	send_board(3, 4, 2);
	await_close(d.c, d.fd);
	assert_null(d.c->board);
	assert_true(d.c->no_board);
	fake_board_done();
}

/* A second BOARD on a connection is the daemon's error: the client
 * drops the connection, and still asks for a board next time. */
static void test_board_twice(void **state)
{
	struct mg_msg m;

	connect_client(MG_THREAD_NONE);
	fake_board(1, MG_BOARD_SLOT_SIZE);
	send_board(0, 1, 2);
	assert_true(mg_client_dispatch(d.c) >= 0);
	assert_non_null(d.c->board);
	send_board(0, 1, 2);
	await_close(d.c, d.fd);
	assert_null(d.c->board);
	assert_false(d.c->no_board);
	close(d.fd);
	d.fd = accept_hello(d.c, &m);
	assert_true(m.hello.capabilities & MG_CAP_BOARD);
	fake_board_done();
}

/* A slot holding a value out of range is the daemon's error: the client
 * drops the connection rather than act on it. */
static void test_board_bad_slot(void **state)
{
	connect_client(MG_THREAD_NONE);
	fake_board(1, MG_BOARD_SLOT_SIZE);
	send_board(0, 1, 2);
	assert_true(mg_client_dispatch(d.c) >= 0);
	assert_non_null(d.c->board);
	board_set(0, 50, MG_LEVEL_WARN, 60, 0, 0);
	fb.slots[0].throttle = MG_THROTTLE_MAX + 1;
	await_close(d.c, d.fd);
	assert_null(d.c->board);
	assert_int_equal(d.c->board_fd, -1);
	fake_board_done();
}

static void test_release_without_hook(void **state)
{
	char t[sizeof(trace)];
	struct mg_msg m;

	connect_client(MG_THREAD_NONE);
	mg_client_set_release_hook(d.c, NULL, NULL);
	heap.releasable = 1 * MiB;
	trace_take(t, sizeof(t));
	directive(d.fd, 90, MG_LEVEL_WARN, 0, 0, 0, 4 * MiB);
	await_msg(d.c, d.fd, MG_MSG_RELEASED, &m);
	assert_int_equal(m.released.directive_seq, 90);
	assert_int_equal(m.released.bytes, 1 * MiB);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "goal=0 level=WARN heap_release=4194304");
}

/* Hooks set after registering still learn the directive in force. */
static void test_late_hooks_are_told(void **state)
{
	struct mg_directive warn = { .level = MG_LEVEL_WARN, .gc_percent = 50, .throttle = 0,
				     .soft_limit = 30 * MiB };
	struct mg_client_opts o = opts(MG_THREAD_NONE);
	char t[sizeof(trace)];
	struct mg_msg m;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(client_new_fd(sv[0], &o, &d.c), 0);
	d.fd = sv[1];
	await_msg(d.c, d.fd, MG_MSG_HELLO, &m);
	assert_int_equal(m.hello.capabilities, MG_CAP_ADMIT | MG_CAP_HEAP | MG_CAP_BOARD);
	welcome(d.fd, m.hdr.seq, &warn);
	await_msg(d.c, d.fd, MG_MSG_REPORT, &m);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "goal=31457280");
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_WARN);

	mg_client_set_level_hook(d.c, on_level, NULL);
	mg_client_set_gc_hook(d.c, on_gc, NULL);
	/* Woken: the fd is readable, and one dispatch tells them. */
	{
		struct pollfd p = { .fd = mg_client_fd(d.c), .events = POLLIN };

		assert_int_equal(poll(&p, 1, 1000), 1);
	}
	assert_true(mg_client_dispatch(d.c) >= 0);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "level=WARN gc=50");
	/* Told once. */
	assert_true(mg_client_dispatch(d.c) >= 0);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "");
	/* A hook replaced by itself starts over from the defaults. */
	mg_client_set_gc_hook(d.c, on_gc, NULL);
	assert_true(mg_client_dispatch(d.c) >= 0);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "gc=50");
}

static void test_ping_pong(void **state)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_PING } };

	connect_client(MG_THREAD_NONE);
	m.ping.cookie = 0x1122334455667788ULL;
	send_msg(d.fd, &m);
	await_msg(d.c, d.fd, MG_MSG_PONG, &m);
	assert_int_equal(m.ping.cookie, 0x1122334455667788ULL);
}

/* Each of these makes the client hang up and come back with HELLO. */
static void test_malformed_messages_reconnect(void **state)
{
	uint8_t buf[MG_MSG_MAX + 1000];
	struct mg_msg m, hello;
	int n;

	connect_client(MG_THREAD_NONE);
	for (int i = 0;; i++) {
		memset(buf, 0, sizeof(buf));
		switch (i) {
		case 0: /* garbage shorter than a header */
			n = 5;
			memcpy(buf, "\x01\x02\x03\x04\x05", 5);
			break;
		case 1: /* a header whose length disagrees */
			m = (struct mg_msg){ .hdr = { .type = MG_MSG_PING } };
			m.ping.cookie = 1;
			n = encode(&m, buf) + 3;
			break;
		case 2: /* another protocol version */
			m = (struct mg_msg){ .hdr = { .type = MG_MSG_PING } };
			m.ping.cookie = 1;
			n = encode(&m, buf);
			buf[2] = 2;
			break;
		case 3: /* a DIRECTIVE cut short */
			m = (struct mg_msg){ .hdr = { .type = MG_MSG_DIRECTIVE } };
			n = encode(&m, buf) - 4;
			buf[4] = (uint8_t)(n - MG_HEADER_SIZE);
			break;
		case 4: /* throttle over 1000 */
			m = (struct mg_msg){ .hdr = { .type = MG_MSG_DIRECTIVE } };
			n = encode(&m, buf);
			buf[MG_HEADER_SIZE + 3] = 0xe9;
			buf[MG_HEADER_SIZE + 4] = 0x03;
			break;
		case 5: /* an unknown type */
			m = (struct mg_msg){ .hdr = { .type = MG_MSG_PING } };
			m.ping.cookie = 1;
			n = encode(&m, buf);
			buf[0] = 0x77;
			break;
		case 6: /* a type the daemon does not send */
			m = (struct mg_msg){ .hdr = { .type = MG_MSG_REPORT } };
			n = encode(&m, buf);
			break;
		case 7: /* an admin answer */
			m = (struct mg_msg){ .hdr = { .type = MG_MSG_RESULT } };
			n = encode(&m, buf);
			break;
		case 8: /* a second WELCOME */
			m = (struct mg_msg){ .hdr = { .type = MG_MSG_WELCOME, .seq = 1 } };
			strcpy(m.welcome.service, "web");
			n = encode(&m, buf);
			break;
		case 9: /* a datagram over 4096 bytes */
			m = (struct mg_msg){ .hdr = { .type = MG_MSG_PING } };
			m.ping.cookie = 1;
			encode(&m, buf);
			n = MG_MSG_MAX + 500;
			break;
		case 10: /* an empty datagram */
			n = 0;
			break;
		case 11: /* a name with a control character */
			m = (struct mg_msg){ .hdr = { .type = MG_MSG_WELCOME, .seq = 1 } };
			strcpy(m.welcome.service, "web");
			n = encode(&m, buf);
			buf[n - 1] = 0x07;
			break;
		default:
			n = -1;
			break;
		}
		if (n < 0)
			break;
		send_raw(d.fd, buf, (size_t)n);
		await_close(d.c, d.fd);
		close(d.fd);
		assert_int_equal(d.c->state, CONN_IDLE);
		assert_int_equal(mg_admit(), true);

		d.fd = accept_hello(d.c, &hello);
		welcome(d.fd, hello.hdr.seq, NULL);
		await_msg(d.c, d.fd, MG_MSG_REPORT, &m);
		assert_int_equal(d.c->state, CONN_READY);
	}
	assert_non_null(strstr(hooks.log, "Malformed message from memguardd"));
	assert_non_null(strstr(hooks.log, "over 4096 bytes"));
	assert_non_null(strstr(hooks.log, "Unexpected REPORT message"));
	assert_non_null(strstr(hooks.log, "Unexpected WELCOME"));
}

static void test_directive_before_welcome(void **state)
{
	struct mg_client_opts o = opts(MG_THREAD_NONE);
	struct mg_msg m;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(client_new_fd(sv[0], &o, &d.c), 0);
	d.fd = sv[1];
	await_msg(d.c, d.fd, MG_MSG_HELLO, &m);
	directive(d.fd, 5, MG_LEVEL_WARN, 50, 0, 0, 0);
	await_close(d.c, d.fd);
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_NORMAL);
}

static void test_error_and_bye(void **state)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_ERROR } }, hello;
	uint64_t wait;

	/* A refusal the daemon would repeat: the longest backoff. */
	connect_client(MG_THREAD_NONE);
	m.error.code = MG_ERR_SERVICE;
	strcpy(m.error.text, "pid 1 is not in cgroup x\x01");
	send_msg(d.fd, &m);
	await_close(d.c, d.fd);
	close(d.fd);
	d.fd = -1;
	wait = d.c->next_connect_us - now_usec();
	assert_true(wait >= 1000ULL * CONN_REFUSED_MS / 2 - 100000);
	assert_true(wait <= 1000ULL * CONN_REFUSED_MS);
	assert_non_null(strstr(hooks.log, "<4>memguardd refused this client (service does not "
					  "match the peer's cgroup: pid 1 is not in cgroup x?)"));

	/* Refused again (sooner, for this test): said once is enough. */
	d.c->next_connect_us = now_usec();
	d.fd = accept_hello(d.c, &hello);
	m.hdr.seq = 0;
	send_msg(d.fd, &m);
	await_close(d.c, d.fd);
	close(d.fd);
	assert_non_null(strstr(hooks.log, "<7>memguardd refused this client"));

	/* Accepted, then BYE SHUTDOWN: back quickly. */
	d.c->next_connect_us = now_usec();
	d.fd = accept_hello(d.c, &hello);
	welcome(d.fd, hello.hdr.seq, NULL);
	await_msg(d.c, d.fd, MG_MSG_REPORT, &m);
	m = (struct mg_msg){ .hdr = { .type = MG_MSG_BYE } };
	m.bye.reason = MG_BYE_SHUTDOWN;
	send_msg(d.fd, &m);
	await_close(d.c, d.fd);
	close(d.fd);
	wait = d.c->next_connect_us - now_usec();
	assert_true(wait <= 1000ULL * CONN_BACKOFF_MIN_MS);
	d.fd = accept_hello(d.c, &hello);
	assert_non_null(strstr(hooks.log, "memguardd is stopping"));
}

/* The backoff: 100 ms doubling to 1.6 s, each delay jittered in its second
 * half. */
static void test_backoff(void **state)
{
	struct mg_client_opts o = opts(MG_THREAD_NONE);
	uint32_t nominal = CONN_BACKOFF_MIN_MS;

	close(d.listen_fd);
	d.listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	unlink(d.path);
	assert_int_equal(mg_client_new(&d.c, &o), 0);
	mg_client_set_log_fn(d.c, on_log, NULL);
	for (int i = 0; i < 10; i++) {
		uint64_t wait;

		d.c->next_connect_us = now_usec();
		assert_true(mg_client_dispatch(d.c) >= 0);
		assert_int_equal(d.c->state, CONN_IDLE);
		wait = d.c->next_connect_us - now_usec();
		assert_true(wait <= 1000ULL * nominal);
		assert_true(wait + 2000 >= 1000ULL * nominal / 2);
		nominal = nominal * 2 > CONN_BACKOFF_MAX_MS ? CONN_BACKOFF_MAX_MS : nominal * 2;
	}
	/* One message per outage, not per attempt. */
	assert_non_null(strstr(hooks.log, "<6>memguardd is not reachable"));
	assert_null(strstr(strstr(hooks.log, "<6>memguardd is not reachable") + 1,
			   "<6>memguardd is not reachable"));
	/* And the dispatch asks to be called back by then. */
	assert_true(mg_client_dispatch(d.c) <= CONN_BACKOFF_MAX_MS);
}

/* No daemon at all: nothing fails, admission is open, level NORMAL. */
static void test_no_daemon(void **state)
{
	struct mg_client_opts o = opts(MG_THREAD_OWN);
	char t[sizeof(trace)];

	unlink(d.path);
	assert_int_equal(mg_client_new(&d.c, &o), 0);
	mg_client_set_level_hook(d.c, on_level, NULL);
	usleep(300000);
	for (int i = 0; i < 1000; i++)
		assert_true(mg_admit());
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_NORMAL);
	assert_int_equal(mg_client_fd(d.c), -EINVAL);
	assert_int_equal(mg_client_dispatch(d.c), -EINVAL);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "");
	mg_client_free(TAKE_PTR(d.c));
}

struct admit_run {
	unsigned calls;
	unsigned rejected;
};

static void *admit_thread(void *p)
{
	struct admit_run *r = p;

	for (unsigned i = 0; i < r->calls; i++)
		if (!mg_admit())
			r->rejected++;
	return NULL;
}

static void admit_share(unsigned throttle)
{
	struct admit_run a = { .calls = 50000 }, b = { .calls = 50000 };
	uint64_t adm0, rej0, adm1, rej1;
	pthread_t ta, tb;
	struct mg_msg m;
	double share;

	directive(d.fd, 0, MG_LEVEL_CRITICAL, 50, (uint16_t)throttle, 0, 0);
	await_msg(d.c, d.fd, MG_MSG_REPORT, &m);
	admit_counts(&adm0, &rej0);
	assert_int_equal(pthread_create(&ta, NULL, admit_thread, &a), 0);
	assert_int_equal(pthread_create(&tb, NULL, admit_thread, &b), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	share = 100.0 * (a.rejected + b.rejected) / (a.calls + b.calls);
	assert_true(share >= throttle / 10.0 - 3.0 && share <= throttle / 10.0 + 3.0);
	/* The exited threads' counts are kept. */
	admit_counts(&adm1, &rej1);
	assert_int_equal(rej1 - rej0, a.rejected + b.rejected);
	assert_int_equal(adm1 - adm0 + rej1 - rej0, a.calls + b.calls);
}

static void test_admit_follows_throttle(void **state)
{
	uint64_t adm, rej;
	struct mg_msg m;

	connect_client(MG_THREAD_NONE);
	for (int i = 0; i < 1000; i++)
		assert_true(mg_admit());
	admit_share(250);
	admit_share(10);
	admit_share(700);
	admit_share(1000);
	admit_share(0);

	/* The REPORT carries the process's totals. */
	admit_counts(&adm, &rej);
	directive(d.fd, 0, MG_LEVEL_NORMAL, 0, 0, 0, 0);
	await_msg(d.c, d.fd, MG_MSG_REPORT, &m);
	assert_int_equal(m.report.admitted, adm);
	assert_int_equal(m.report.rejected, rej);
}

/* The daemon gone: admission opens at once; the rest of the directive
 * after the grace period. */
static void test_orphan_grace(void **state)
{
	char t[sizeof(trace)];

	connect_client(MG_THREAD_NONE);
	directive(d.fd, 3, MG_LEVEL_CRITICAL, 40, 1000, 10 * MiB, 0);
	assert_int_equal(next_msg(d.c, d.fd, &(struct mg_msg){ 0 }, 2000), 0);
	assert_false(mg_admit());
	trace_take(t, sizeof(t));

	close(d.fd);
	d.fd = -1;
	assert_true(mg_client_dispatch(d.c) >= 0);
	assert_true(mg_admit());
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_CRITICAL);
	assert_true(d.c->orphan_us > now_usec() + 1000ULL * (CLIENT_ORPHAN_GRACE_MS - 500));
	trace_take(t, sizeof(t));
	assert_string_equal(t, "");

	d.c->orphan_us = now_usec();
	assert_true(mg_client_dispatch(d.c) >= 0);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "goal=0 level=NORMAL gc=0");
	assert_int_equal(mg_client_level(d.c), MG_LEVEL_NORMAL);
	assert_non_null(strstr(hooks.log, "back to the local policy"));
}

/* The daemon gone, the heap crosses the local limit within the grace
 * period: the local action starts, but the departed daemon's throttle
 * does not come back with it. */
static void test_orphan_local_limit(void **state)
{
	heap_resident(50);
	connect_client(MG_THREAD_NONE);
	directive(d.fd, 3, MG_LEVEL_CRITICAL, 40, 1000, 80 * MiB, 0);
	assert_int_equal(next_msg(d.c, d.fd, &(struct mg_msg){ 0 }, 2000), 0);
	assert_false(mg_admit());

	close(d.fd);
	d.fd = -1;
	assert_true(mg_client_dispatch(d.c) >= 0);
	assert_true(mg_admit());

	/* 90 MiB: past the soft limit, under 9/8 of it: WARN, no shedding */
	heap_resident(90);
	watch.fn(90 * MiB);
	assert_true(mg_client_dispatch(d.c) >= 0);
	assert_non_null(strstr(hooks.log, "Local limit: WARN"));
	assert_int_equal(atomic_load(&d.c->throttle), 0);
	assert_true(mg_admit());

	/* 95 MiB: local CRITICAL sheds its own share, not the daemon's */
	heap_resident(95);
	watch.fn(95 * MiB);
	assert_true(mg_client_dispatch(d.c) >= 0);
	assert_int_equal(atomic_load(&d.c->throttle), LIMIT_CRIT_THROTTLE);
}

/* A daemon that does not read: REPORTs are skipped, and anything else
 * that does not fit drops the connection. */
static void test_daemon_not_reading(void **state)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_PING } };
	int small = 1, pongs = 0, r;

	connect_client(MG_THREAD_NONE);
	assert_int_equal(setsockopt(d.c->sock, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	for (int i = 0; i < 200 && d.c->state == CONN_READY; i++) {
		m.ping.cookie = (uint64_t)i + 1;
		m.hdr.seq = 0;
		send_msg(d.fd, &m);
		assert_true(mg_client_dispatch(d.c) >= 0);
	}
	assert_int_equal(d.c->state, CONN_IDLE);
	while ((r = next_msg(NULL, d.fd, &m, 100)) == 0)
		pongs += m.hdr.type == MG_MSG_PONG;
	assert_int_equal(r, -ECONNRESET);
	assert_true(pongs > 0);
	assert_non_null(strstr(hooks.log, "does not read its socket"));
}

/*
 * mg_client_free() with answers still queued (the socket was full) and
 * PINGs it never read: the daemon reads every answer, in order, then the
 * BYE, then the end; not ECONNRESET, which a Unix socket closed with
 * unread messages would give it instead.
 */
static void test_bye_after_queue_and_unread(void **state)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_PING } };
	uint64_t sent = 0, next = 1;
	int small = 1;

	connect_client(MG_THREAD_NONE);
	assert_int_equal(setsockopt(d.c->sock, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	while (d.c->out_len < 2) {
		assert_true(sent < 500);
		m.ping.cookie = ++sent;
		m.hdr.seq = 0;
		send_msg(d.fd, &m);
		assert_true(mg_client_dispatch(d.c) >= 0);
		assert_int_equal(d.c->state, CONN_READY);
	}
	/* Three it will never read. */
	for (int i = 0; i < 3; i++) {
		m.ping.cookie = 1000 + (uint64_t)i;
		m.hdr.seq = 0;
		send_msg(d.fd, &m);
	}
	/* Read what was sent, so that the queue fits, then free. */
	for (;;) {
		uint8_t buf[MG_MSG_MAX];
		ssize_t n = recv(d.fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n < 0) {
			assert_int_equal(errno, EAGAIN);
			break;
		}
		assert_int_equal(proto_msg_decode(buf, (size_t)n, &m), 0);
		if (m.hdr.type == MG_MSG_PONG)
			assert_int_equal(m.ping.cookie, next++);
	}
	assert_true(next <= sent);
	mg_client_free(TAKE_PTR(d.c));
	for (;;) {
		uint8_t buf[MG_MSG_MAX];
		ssize_t n = recv(d.fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n < 0)
			fail_msg("recv after the client's BYE: %s", strerror(errno));
		assert_true(n > 0);
		assert_int_equal(proto_msg_decode(buf, (size_t)n, &m), 0);
		if (m.hdr.type == MG_MSG_BYE)
			break;
		if (m.hdr.type == MG_MSG_PONG)
			assert_int_equal(m.ping.cookie, next++);
	}
	assert_int_equal(m.bye.reason, MG_BYE_NORMAL);
	assert_int_equal(next, sent + 1);
	assert_int_equal(recv(d.fd, &m, sizeof(m), MSG_DONTWAIT), 0);
}

/* The library's own thread runs the hooks; BYE on free. */
static void test_own_thread(void **state)
{
	char t[sizeof(trace)];
	struct mg_msg m;

	connect_client(MG_THREAD_OWN);
	trace_take(t, sizeof(t));
	directive(d.fd, 12, MG_LEVEL_WARN, 80, 0, 0, 0);
	await_msg(NULL, d.fd, MG_MSG_REPORT, &m);
	trace_take(t, sizeof(t));
	assert_string_equal(t, "goal=0 level=WARN gc=80");
	assert_false(pthread_equal(hooks.thread, pthread_self()));
	assert_int_equal(mg_client_fd(d.c), -EINVAL);

	/* PING answered without the application doing anything. */
	m = (struct mg_msg){ .hdr = { .type = MG_MSG_PING } };
	m.ping.cookie = 9;
	send_msg(d.fd, &m);
	await_msg(NULL, d.fd, MG_MSG_PONG, &m);

	mg_client_free(TAKE_PTR(d.c));
	await_msg(NULL, d.fd, MG_MSG_BYE, &m);
	assert_int_equal(m.bye.reason, MG_BYE_NORMAL);
}

/* mg_client_free() from a hook: finished when the dispatch unwinds. */
static void test_free_from_hook(void **state)
{
	struct mg_msg m;

	connect_client(MG_THREAD_OWN);
	hooks.free_me = d.c;
	d.c = NULL;
	directive(d.fd, 12, MG_LEVEL_WARN, 80, 0, 0, 0);
	await_msg(NULL, d.fd, MG_MSG_BYE, &m);
	assert_int_equal(next_msg(NULL, d.fd, &m, 2000), -ECONNRESET);

	assert_false(hooks.log_after_free);

	/* And in event-loop mode. */
	hooks.freed = false;
	close(d.fd);
	connect_client(MG_THREAD_NONE);
	hooks.free_me = d.c;
	directive(d.fd, 13, MG_LEVEL_WARN, 80, 0, 0, 4 * MiB);
	{
		struct pollfd p = { .fd = mg_client_fd(d.c), .events = POLLIN };

		assert_int_equal(poll(&p, 1, 1000), 1);
	}
	assert_int_equal(mg_client_dispatch(d.c), 0);
	d.c = NULL;
	/* No hook after the free (the application may be tearing down what
	 * they use); the heap still answers the demand, then BYE. */
	await_msg(NULL, d.fd, MG_MSG_RELEASED, &m);
	await_msg(NULL, d.fd, MG_MSG_BYE, &m);
	{
		char t[sizeof(trace)];

		trace_take(t, sizeof(t));
		assert_non_null(strstr(t, "level=WARN"));
		assert_null(strstr(t, "gc="));
		assert_null(strstr(t, " release="));     /* heap_release= is expected */
	}
	/* The log function is a hook too. */
	assert_false(hooks.log_after_free);
}

static void test_options(void **state)
{
	struct mg_client_opts o = opts(MG_THREAD_NONE);
	char longpath[200];
	struct mg_client *c;
	struct {
		struct mg_client_opts o;
		uint64_t extra;
	} bigger = { .o = opts(MG_THREAD_NONE) };

	assert_int_equal(mg_client_new(NULL, &o), -EINVAL);
	o.size = 0;
	assert_int_equal(mg_client_new(&c, &o), -EINVAL);
	o = opts(MG_THREAD_NONE);
	o.threading = 7;
	assert_int_equal(mg_client_new(&c, &o), -EINVAL);
	o = opts(MG_THREAD_NONE);
	o.service = "bad\nname";
	assert_int_equal(mg_client_new(&c, &o), -EINVAL);
	o = opts(MG_THREAD_NONE);
	o.process = "";
	assert_int_equal(mg_client_new(&c, &o), 0);
	mg_client_free(c);
	memset(longpath, 'x', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = 0;
	o.socket_path = longpath;
	assert_int_equal(mg_client_new(&c, &o), -EINVAL);
	o.socket_path = "";
	assert_int_equal(mg_client_new(&c, &o), -EINVAL);

	/* A newer caller's longer struct: fine while the rest is zero. */
	bigger.o.size = sizeof(bigger);
	assert_int_equal(mg_client_new(&c, &bigger.o), 0);
	mg_client_free(c);
	bigger.extra = 1;
	assert_int_equal(mg_client_new(&c, &bigger.o), -EINVAL);

	/* Defaults: the environment, then the built-in path. */
	setenv("MEMGUARD_SOCKET", "/tmp/elsewhere.sock", 1);
	setenv("MEMGUARD_SERVICE", "batch", 1);
	o = (struct mg_client_opts){ .size = sizeof(o), .threading = MG_THREAD_NONE };
	assert_int_equal(mg_client_new(&c, &o), 0);
	assert_string_equal(c->socket_path, "/tmp/elsewhere.sock");
	assert_string_equal(c->service, "batch");
	assert_string_equal(c->process, program_invocation_short_name);
	mg_client_free(c);
	setenv("MEMGUARD_SERVICE", "no\tgood", 1);
	assert_int_equal(mg_client_new(&c, &o), -EINVAL);
	unsetenv("MEMGUARD_SOCKET");
	unsetenv("MEMGUARD_SERVICE");
	assert_int_equal(mg_client_new(&c, &o), 0);
	assert_string_equal(c->socket_path, CLIENT_DEFAULT_SOCKET);
	assert_string_equal(c->service, "");
	mg_client_free(c);

	/* NULL everywhere is harmless. */
	mg_client_free(NULL);
	mg_client_set_gc_hook(NULL, on_gc, NULL);
	mg_client_set_external_bytes(NULL, 1);
	assert_int_equal(mg_client_level(NULL), MG_LEVEL_NORMAL);
	assert_int_equal(mg_client_fd(NULL), -EINVAL);
	assert_int_equal(mg_client_dispatch(NULL), -EINVAL);
}

/* A child's exit code: which check failed, 0 when none. */
static int child_checks(int parent_fd_number, int listen_fd)
{
	struct pollfd p;
	int fd;

	if (!mg_admit())                     /* the parent's throttle is not the child's */
		return 10;
	if (mg_client_fd(d.c) != parent_fd_number)
		return 11;
	if (d.c->state != CONN_IDLE || d.c->sock != -1)
		return 12;
	/* Its fd is readable: the next dispatch reconnects. */
	p = (struct pollfd){ .fd = mg_client_fd(d.c), .events = POLLIN };
	if (poll(&p, 1, 1000) != 1)
		return 13;
	for (int i = 0; i < 200 && d.c->state == CONN_IDLE; i++) {
		mg_client_dispatch(d.c);
		usleep(5000);
	}
	if (d.c->state != CONN_HELLO)
		return 14;
	/* REPORT's counters are the process's since it started: this one's */
	if (d.c->released_total != 0)
		return 15;
	(void)listen_fd;
	fd = d.c->sock;
	mg_client_free(d.c);
	(void)fd;
	return 0;
}

static void test_fork_child_reconnects(void **state)
{
	struct mg_msg m, hello;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int status, fd;
	pid_t pid;

	connect_client(MG_THREAD_NONE);
	hooks.give = 1 * MiB;
	directive(d.fd, 3, MG_LEVEL_CRITICAL, 40, 1000, 0, 1 * MiB);
	await_msg(d.c, d.fd, MG_MSG_REPORT, &m);
	assert_int_equal(m.report.released_total, 1 * MiB);
	assert_false(mg_admit());

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(child_checks(mg_client_fd(d.c), d.listen_fd));

	/* The child comes on a connection of its own. */
	fd = accept_hello(NULL, &hello);
	assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len), 0);
	assert_int_equal(cred.pid, pid);
	assert_string_equal(hello.hello.process, "test-client");
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* It said BYE there, not on ours. */
	await_msg(NULL, fd, MG_MSG_BYE, &m);
	close(fd);

	/* The parent's connection, untouched. */
	assert_false(mg_admit());
	m = (struct mg_msg){ .hdr = { .type = MG_MSG_PING } };
	m.ping.cookie = 5;
	send_msg(d.fd, &m);
	await_msg(d.c, d.fd, MG_MSG_PONG, &m);
	assert_int_equal(m.ping.cookie, 5);
	assert_int_equal(d.c->state, CONN_READY);
}

/* MG_THREAD_OWN in a child: the thread comes back on first use. */
static void test_fork_own_thread_resumes(void **state)
{
	struct mg_msg m, hello;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int status, fd;
	pid_t pid;

	SKIP_FORK_UNDER_ASAN();
	connect_client(MG_THREAD_OWN);
	directive(d.fd, 3, MG_LEVEL_CRITICAL, 40, 1000, 0, 0);
	await_msg(NULL, d.fd, MG_MSG_REPORT, &m);

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Nothing connects before the library is used. */
		usleep(300000);
		if (d.c->state != CONN_IDLE || d.c->thread_running)
			_exit(20);
		if (!mg_admit())
			_exit(21);
		for (int i = 0; i < 300 && d.c->state != CONN_READY; i++)
			usleep(10000);
		if (d.c->state != CONN_READY || mg_client_level(d.c) != MG_LEVEL_WARN)
			_exit(22);
		mg_client_free(d.c);
		_exit(0);
	}
	{
		struct pollfd p = { .fd = d.listen_fd, .events = POLLIN };

		/* Lazily: not within the child's first 300 ms. */
		assert_int_equal(poll(&p, 1, 250), 0);
	}
	fd = accept_hello(NULL, &hello);
	assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len), 0);
	assert_int_equal(cred.pid, pid);
	welcome(fd, hello.hdr.seq, &(struct mg_directive){ .level = MG_LEVEL_WARN });
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(fd);

	m = (struct mg_msg){ .hdr = { .type = MG_MSG_PING } };
	m.ping.cookie = 6;
	send_msg(d.fd, &m);
	await_msg(NULL, d.fd, MG_MSG_PONG, &m);
	assert_false(mg_admit());
}

/* Descriptors open at MG_FD_FLOOR and the 64 numbers above it. */
static int high_fds(void)
{
	int n = 0;

	for (int fd = MG_FD_FLOOR; fd < MG_FD_FLOOR + 64; fd++)
		n += fcntl(fd, F_GETFD) >= 0;
	return n;
}

/* The preload library's client: nothing (no descriptor, no connection)
 * before its delay, then its descriptors above the floor and a HELLO;
 * stopped within its delay, it ends at once. */
static void test_auto_client_delay(void **state)
{
	struct pollfd p = { .fd = -1, .events = POLLIN };
	uint64_t t0;
	struct mg_msg m;
	int fd;

	setenv("MEMGUARD_SOCKET", d.path, 1);
	assert_int_equal(high_fds(), 0);
	t0 = now_ms();
	assert_int_equal(client_auto_start(/* delay_ms= */ 400), 0);
	p.fd = d.listen_fd;
	assert_int_equal(poll(&p, 1, 200), 0);
	if (now_ms() - t0 < 390)
		assert_int_equal(high_fds(), 0);
	fd = accept_hello(NULL, &m);
	assert_true(now_ms() - t0 >= 400);
	assert_true(high_fds() >= 4);        /* epoll, timerfd, eventfd, socket */
	client_auto_stop();
	await_msg(NULL, fd, MG_MSG_BYE, &m);
	close(fd);
	assert_int_equal(high_fds(), 0);

	t0 = now_ms();
	assert_int_equal(client_auto_start(/* delay_ms= */ 60000), 0);
	usleep(50000);
	client_auto_stop();
	assert_true(now_ms() - t0 < 30000);
	assert_int_equal(poll(&p, 1, 0), 0);
	assert_int_equal(high_fds(), 0);
	unsetenv("MEMGUARD_SOCKET");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
		T(test_hello_and_report),
		T(test_local_limit),
		T(test_local_limit_external),
		T(test_directives_reach_hooks),
		T(test_release_without_hook),
		T(test_board),
		T(test_board_refused),
		T(test_board_twice),
		T(test_board_bad_slot),
		T(test_late_hooks_are_told),
		T(test_ping_pong),
		T(test_malformed_messages_reconnect),
		T(test_directive_before_welcome),
		T(test_error_and_bye),
		T(test_backoff),
		T(test_no_daemon),
		T(test_admit_follows_throttle),
		T(test_orphan_grace),
		T(test_orphan_local_limit),
		T(test_daemon_not_reading),
		T(test_bye_after_queue_and_unread),
		T(test_own_thread),
		T(test_free_from_hook),
		T(test_options),
		T(test_fork_child_reconnects),
		T(test_fork_own_thread_resumes),
		T(test_auto_client_delay),
#undef T
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
