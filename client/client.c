/* SPDX-License-Identifier: MIT */
/*
 * libmemguard-client: the public mg_client_* API, the library thread, the
 * dispatch of the daemon's messages, directives applied in the order the
 * daemon expects, and fork() safety.  The socket itself is conn.c's, the
 * admission gate admit.c's.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syslog.h>
#include <unistd.h>

#include "client-internal.h"
#include "client/alloc/alloc.h"
#include "proto/macro.h"

/* Every client of the process, for fork() and the gate.  Modified with
 * both registry_lock and gate_lock held, so either lock is enough to walk
 * it. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mg_client *registry;
static struct mg_client *automatic;      /* the preload library's, under registry_lock */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_result;                /* of pthread_atfork(), as -errno */
static atomic_bool resume_pending;       /* fork() child: threads to restart */

static int client_start_thread(struct mg_client *c);
static void orphan(struct mg_client *c, uint64_t now);

static size_t to_size(uint64_t v)
{
	return v > SIZE_MAX ? SIZE_MAX : (size_t)v;
}

/* ---- logging ------------------------------------------------------------ */

void client_log(struct mg_client *c, int priority, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	/* The log function is a hook: none is called after mg_client_free(). */
	if (!c->log_fn || c->free_pending)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	c->log_fn(c->log_data, priority, msg);
}

/* The daemon's texts may hold any byte but NUL: make them printable. */
static void printable(char *dst, size_t size, const char *src)
{
	proto_name_copy(dst, size, src, '?');
}

/* ---- options ------------------------------------------------------------ */

static bool valid_name(const char *s)
{
	return strlen(s) <= MG_NAME_MAX && proto_name_ok(s);
}

/* A fallback string that must not fail: keep what the wire allows. */
static void copy_name(char *dst, const char *src)
{
	proto_name_copy(dst, MG_NAME_MAX + 1, src, '_');
}

static const char *env(const char *name)
{
	/* secure_getenv: a set-uid program must not be pointed at a socket of
	 * the invoking user's choosing. */
	const char *v = secure_getenv(name);

	return v && *v ? v : NULL;
}

static int opts_apply(struct mg_client *c, const struct mg_client_opts *in)
{
	struct mg_client_opts o = { 0 };
	const char *path, *service;

	if (in) {
		/* `size` lets the struct grow: an older caller's shorter struct
		 * gets defaults for the new fields; a newer caller's longer one
		 * is accepted when what we do not know is zero. */
		if (in->size < sizeof(in->size))
			return -EINVAL;
		memcpy(&o, in, MIN(in->size, sizeof(o)));
		for (size_t i = sizeof(o); i < in->size; i++)
			if (((const uint8_t *)in)[i])
				return -EINVAL;
	}

	path = o.socket_path ? o.socket_path : env("MEMGUARD_SOCKET");
	if (!path)
		path = CLIENT_DEFAULT_SOCKET;
	if (!*path || strlen(path) >= sizeof(c->socket_path))
		return -EINVAL;
	strcpy(c->socket_path, path);

	service = o.service ? o.service : env("MEMGUARD_SERVICE");
	if (service) {
		if (!valid_name(service))
			return -EINVAL;
		strcpy(c->service, service);
	}

	if (o.process) {
		if (!valid_name(o.process))
			return -EINVAL;
		strcpy(c->process, o.process);
	} else
		copy_name(c->process, program_invocation_short_name);

	if (o.threading != MG_THREAD_OWN && o.threading != MG_THREAD_NONE)
		return -EINVAL;
	c->threading = o.threading;
	return 0;
}

/* ---- registry and fork() ------------------------------------------------ */

void client_gate_update(void)
{
	unsigned max = 0;

	pthread_mutex_lock(&gate_lock);
	for (struct mg_client *c = registry; c; c = c->next)
		max = MAX(max, atomic_load(&c->throttle));
	admit_set_throttle(max);
	pthread_mutex_unlock(&gate_lock);
}

void client_wake_all(void)
{
	/* From an allocating thread: never wait for the registry (its
	 * holder may be allocating too). */
	if (pthread_mutex_trylock(&gate_lock) != 0)
		return;
	for (struct mg_client *c = registry; c; c = c->next)
		if (c->evfd >= 0)
			conn_wake(c);
	pthread_mutex_unlock(&gate_lock);
}

uint64_t client_soft_limit_min(void)
{
	uint64_t min = 0;

	pthread_mutex_lock(&gate_lock);
	for (struct mg_client *c = registry; c; c = c->next) {
		uint64_t s = limit_next(c);

		if (s && (!min || s < min))
			min = s;
	}
	pthread_mutex_unlock(&gate_lock);
	return min;
}

static void registry_add(struct mg_client *c)
{
	pthread_mutex_lock(&registry_lock);
	pthread_mutex_lock(&gate_lock);
	c->next = registry;
	registry = c;
	pthread_mutex_unlock(&gate_lock);
	pthread_mutex_unlock(&registry_lock);
}

static void registry_remove(struct mg_client *c)
{
	pthread_mutex_lock(&registry_lock);
	pthread_mutex_lock(&gate_lock);
	for (struct mg_client **p = &registry; *p; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			break;
		}
	if (automatic == c)
		automatic = NULL;
	pthread_mutex_unlock(&gate_lock);
	pthread_mutex_unlock(&registry_lock);
}

/*
 * Take every lock before fork(), so the child finds each client between
 * two dispatches rather than halfway through one.  A dispatch holding a
 * client's lock finishes first (hooks included).
 */
static void atfork_prepare(void)
{
	pthread_mutex_lock(&registry_lock);
	for (struct mg_client *c = registry; c; c = c->next)
		pthread_mutex_lock(&c->lock);
	pthread_mutex_lock(&gate_lock);
	admit_atfork_prepare();
}

static void atfork_parent(void)
{
	admit_atfork_parent();
	pthread_mutex_unlock(&gate_lock);
	for (struct mg_client *c = registry; c; c = c->next)
		pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&registry_lock);
}

/* Waits on CLOCK_MONOTONIC, as now_usec() counts. */
static void cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t a;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &a);
	pthread_condattr_destroy(&a);
}

static void lock_init(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;

	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
}

/*
 * The child: the locks belong to threads of the parent (a recursive
 * mutex cannot be unlocked by another thread), so they are made anew.
 * Each client gets its own descriptors and no connection; its thread, if
 * it had one, is not there: it is started again by the child's first use
 * of the library (client_resume_after_fork()), so a child that only execs
 * never registers.  An event-loop client finds its fd readable and
 * reconnects from its next dispatch.
 */
static void atfork_child(void)
{
	uint64_t now = now_usec();
	bool resume = false;

	pthread_mutex_init(&registry_lock, NULL);
	pthread_mutex_init(&gate_lock, NULL);
	for (struct mg_client *c = registry; c; c = c->next) {
		lock_init(&c->lock);
		cond_init(&c->wake);
		atomic_store(&c->dispatcher, 0);
		atomic_store(&c->throttle, 0);
		c->daemon.throttle = 0;
		c->applied.throttle = 0;
		/* A REPORT's counters are since the process started, as
		 * admit_atfork_child() says: this one did not release. */
		c->released_total = 0;
		c->next_connect_us = now;
		c->seq = 0;
		c->failures = 0;
		c->backoff_ms = CONN_BACKOFF_MIN_MS;
		c->rng ^= (uint64_t)getpid() << 17;
		orphan(c, now);
		if (c->delay_ms) {
			/* A child gets the same delay as a new process: one
			 * that execs or exits within it never registers, and
			 * it has none of our descriptors until then. */
			conn_fds_close(c);
			c->state = CONN_IDLE;
			c->out_len = 0;
			c->out_armed = false;
			c->start_us = now + 1000ULL * c->delay_ms;
		} else if (conn_fds_renew(c) < 0) {
			c->thread_running = false;
			continue;
		}
		/* A child that forks again before its thread came back
		 * passes the resume on. */
		if (c->thread_running || c->resume_thread) {
			c->thread_running = false;
			c->resume_thread = true;
			resume = true;
		} else if (c->epfd >= 0)
			conn_arm(c, now);
	}
	atomic_store(&resume_pending, resume);
	admit_atfork_child(resume);
}

static void atfork_register(void)
{
	struct mg_heap_stats hs;

	/*
	 * The allocator registers its own fork handlers when it starts; it
	 * must start first.  Prepare handlers run in the reverse order of
	 * registration, so ours then take every client's lock before the
	 * allocator's prepare takes its locks: the order of a dispatch,
	 * which holds its client's lock while it asks the heap (a REPORT's
	 * mg_heap_stats(), a release).  The other way round, a fork() that
	 * holds the allocator's locks waits for a client thread that waits
	 * for them.  (The preload library's constructor starts a client
	 * before anything allocated, so the allocator would start after.)
	 */
	mg_heap_stats(&hs);
	/* Only fails with ENOMEM.  Clients would work, but a child would use
	 * its parent's connection: mg_client_new() fails instead. */
	atfork_result = -pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

void client_resume_after_fork(void)
{
	if (!atomic_load_explicit(&resume_pending, memory_order_relaxed))
		return;
	if (!atomic_exchange(&resume_pending, false))
		return;
	pthread_mutex_lock(&registry_lock);
	for (struct mg_client *c = registry; c; c = c->next) {
		int r;

		if (!c->resume_thread)
			continue;
		c->resume_thread = false;
		r = client_start_thread(c);
		if (r < 0) {
			pthread_mutex_lock(&c->lock);
			client_log(c, LOG_ERR,
				   "Failed to restart the client thread after fork(): %s",
				   strerror(-r));
			pthread_mutex_unlock(&c->lock);
		}
	}
	pthread_mutex_unlock(&registry_lock);
	admit_resume_done();
	client_gate_update();
}

/* ---- directives --------------------------------------------------------- */

/*
 * Tell the hooks what they have not been told yet.  Each hook remembers
 * the value it last got (a new hook has got the defaults), so a hook set
 * after the first DIRECTIVE still learns the directive in force, and none is
 * called twice for the same value.
 */
static void sync_hooks(struct mg_client *c)
{
	if (c->level_fn && !c->free_pending && c->told_level != c->applied.level) {
		c->told_level = c->applied.level;
		c->level_fn(c->level_data, (enum mg_level)c->applied.level);
	}
	if (c->gc_fn && !c->free_pending && c->told_gc != c->applied.gc_percent) {
		c->told_gc = c->applied.gc_percent;
		c->gc_fn(c->gc_data, c->applied.gc_percent);
	}
}

static int send_report(struct mg_client *c)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_REPORT } };
	struct mg_heap_stats hs = { 0 };

	mg_heap_stats(&hs);
	m.report.heap_sys = hs.sys;
	m.report.heap_inuse = hs.inuse;
	m.report.heap_idle = hs.idle;
	m.report.heap_released = hs.released;
	m.report.external = atomic_load(&c->external);
	admit_counts(&m.report.admitted, &m.report.rejected);
	m.report.released_total = c->released_total;
	m.report.gc_percent = c->applied.gc_percent;
	if (c->local_level != MG_LEVEL_NORMAL)
		m.hdr.flags |= MG_FLAG_LOCAL_LIMIT;
	c->next_report_us = now_usec() + 1000ULL * c->report_ms;
	return conn_send(c, &m);
}

/*
 * Release what a directive demands: first the application's caches
 * through the release hook, then free heap pages for what is still owed.
 * Returns the bytes both gave back.
 */
static uint64_t release(struct mg_client *c, uint64_t want)
{
	bool all = want == UINT64_MAX;
	uint64_t freed = 0, heap = 0;

	if (c->release_fn && !c->free_pending)
		freed = c->release_fn(c->release_data, all ? SIZE_MAX : to_size(want));
	/* What the hook freed went back to the heap (or to whatever
	 * allocator it came from); pages become free to return only now. */
	if (all)
		heap = mg_heap_release(0);
	else if (freed < want)
		heap = mg_heap_release(to_size(want - freed));
	client_log(c, LOG_DEBUG, "Released %llu bytes: %llu by the application, %llu heap pages",
		   (unsigned long long)add_sat(freed, heap), (unsigned long long)freed,
		   (unsigned long long)heap);
	return add_sat(freed, heap);
}

/*
 * Apply a directive, in the order the daemon expects: the scavenger's goal
 * and the gate, the hooks, the release of what is owed, RELEASED (for a
 * DIRECTIVE that demanded bytes, `seq` naming it) and a REPORT showing the
 * result.  The local fallback's directive demands nothing (`seq` 0).
 */
static void apply(struct mg_client *c, const struct mg_directive *d, uint32_t seq)
{
	uint64_t t0 = now_usec();
	uint8_t before = c->applied.level;
	struct mg_directive e;

	/* The daemon's directive, with what the local limit holds on top. */
	c->daemon = *d;
	limit_evaluate(c);
	limit_merge(c, d, &e);
	c->applied = e;
	limit_watch_update();
	mg_heap_set_goal(to_size(e.soft_limit));
	atomic_store(&c->throttle, e.throttle);
	client_gate_update();
	atomic_store(&c->level, e.level);
	if (e.level != before)
		client_log(c, e.level > before ? LOG_NOTICE : LOG_INFO,
			   "Level %s -> %s: gc %u%%, throttle %u.%u%%, soft limit %llu bytes%s",
			   proto_level_name(before), proto_level_name(e.level), e.gc_percent,
			   e.throttle / 10, e.throttle % 10, (unsigned long long)e.soft_limit,
			   c->local_level ? " (local limit)" : "");

	sync_hooks(c);

	if (seq && d->release > 0) {
		struct mg_msg m = { .hdr = { .type = MG_MSG_RELEASED } };
		uint64_t us;

		m.released.bytes = release(c, d->release);
		us = now_usec() - t0;
		if (d->deadline_ms && us > 1000ULL * d->deadline_ms)
			client_log(c, LOG_NOTICE,
				   "Release took %llu ms, over the deadline of %u ms",
				   (unsigned long long)us / 1000, d->deadline_ms);
		c->released_total = add_sat(c->released_total, m.released.bytes);
		m.released.directive_seq = seq;
		m.released.usec = us;
		if (conn_send(c, &m) < 0)
			return;
	}
	if (c->state == CONN_READY)
		(void)send_report(c);
}

/* The local limit moved: act on the daemon's last directive again, with
 * nothing demanded, and REPORT at once. */
static void reapply(struct mg_client *c)
{
	struct mg_directive d = c->daemon;

	d.release = 0;
	d.deadline_ms = 0;
	apply(c, &d, 0);
}

/* Without a daemon, the directive in force holds for a grace period (a
 * daemon restart takes about a second), then lapses to the defaults. */
static void orphan(struct mg_client *c, uint64_t now)
{
	if (!c->orphan_us && (c->applied.level != MG_LEVEL_NORMAL ||
			      c->applied.gc_percent != MG_GC_DEFAULT || c->applied.soft_limit))
		c->orphan_us = now + 1000ULL * CLIENT_ORPHAN_GRACE_MS;
}

void client_disconnected(struct mg_client *c)
{
	/* Nobody is left to lift a throttle: admission opens now, and the
	 * local limit acting again (reapply()) in the grace period does not
	 * bring the daemon's share back. */
	c->daemon.throttle = 0;
	c->applied.throttle = 0;
	atomic_store(&c->throttle, 0);
	client_gate_update();
	orphan(c, now_usec());
}

static void lapse(struct mg_client *c)
{
	const struct mg_directive normal = { .level = MG_LEVEL_NORMAL };

	c->orphan_us = 0;
	client_log(c, LOG_NOTICE, "No memguardd for %u s: back to the local policy",
		   CLIENT_ORPHAN_GRACE_MS / 1000);
	apply(c, &normal, 0);
}

/* ---- messages ----------------------------------------------------------- */

static int on_welcome(struct mg_client *c, const struct mg_msg *m)
{
	const struct mg_welcome *w = &m->welcome;

	if (c->state != CONN_HELLO || m->hdr.seq != c->hello_seq) {
		conn_drop(c, LOG_WARNING, 0, false, "Unexpected WELCOME from memguardd");
		return -EPROTO;
	}
	c->state = CONN_READY;
	c->client_id = w->client_id;
	c->report_ms = w->report_interval_ms ? w->report_interval_ms : CONN_REPORT_DEFAULT_MS;
	c->report_ms = MIN(MAX(c->report_ms, CONN_REPORT_MIN_MS), CONN_REPORT_MAX_MS);
	c->orphan_us = 0;
	c->refusals = 0;
	c->have_dseq = false;
	conn_backoff_reset(c);
	client_log(c, LOG_INFO,
		   "Registered with memguardd as client %llu of service '%s' (budget %llu bytes)",
		   (unsigned long long)w->client_id, w->service, (unsigned long long)w->budget);
	/* The directive in force comes next, in a DIRECTIVE of its own; until
	 * then what was applied stays (after a daemon restart, the state the
	 * last daemon set, within its grace period), so that no hook hears a
	 * value twice.  Applying it sends the first REPORT. */
	c->next_report_us = now_usec() + 1000ULL * c->report_ms;
	return 0;
}

static int on_error(struct mg_client *c, const struct mg_error *e)
{
	char text[MG_TEXT_MAX + 1], why[MG_TEXT_MAX + 128];
	const char *name = proto_err_name(e->code);
	/* These refusals come back for the same HELLO: wait the longest. */
	bool give_up = e->code == MG_ERR_VERSION || e->code == MG_ERR_SERVICE ||
		       e->code == MG_ERR_NO_SERVICE || e->code == MG_ERR_PERMISSION;

	printable(text, sizeof(text), e->text);
	snprintf(why, sizeof(why), "memguardd refused this client (%s%s%s)",
		 name ? name : "unknown error", text[0] ? ": " : "", text);
	/* Loud once; a refusal repeated every few seconds is no news. */
	conn_drop(c, c->refusals++ ? LOG_DEBUG : LOG_WARNING, 0, give_up, why);
	return -ECONNREFUSED;
}

/* Whether daemon seq `a` comes after `b` (32 bits, wrapping). */
static bool seq_after(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) > 0;
}

/* A directive with `seq` from the daemon: whether it is newer than the
 * one in force.  With a board, a slot and a DIRECTIVE can say the same
 * thing, and a slot can be ahead of a message still queued; the daemon's
 * numbers grow (docs/protocol.md §5.4).  Without one, every DIRECTIVE is
 * news, in the order it came. */
static bool directive_is_new(struct mg_client *c, uint32_t seq)
{
	if (c->board && c->have_dseq && !seq_after(seq, c->dseq))
		return false;
	c->dseq = seq;
	c->have_dseq = true;
	return true;
}

static int on_directive(struct mg_client *c, const struct mg_msg *m)
{
	struct mg_directive d;

	if (directive_is_new(c, m->hdr.seq)) {
		apply(c, &m->directive, m->hdr.seq);
	} else if (m->directive.release > 0) {
		/* The board is ahead with a newer state: keep it, and answer
		 * the demand. */
		d = c->daemon;
		d.release = m->directive.release;
		d.deadline_ms = m->directive.deadline_ms;
		apply(c, &d, m->hdr.seq);
	}
	return c->sock >= 0 ? 0 : -ENOTCONN;
}

/* Act on the board slot when it holds a directive newer than the one in
 * force.  Cheap (a 64-byte read): every dispatch looks. */
static void board_check(struct mg_client *c)
{
	struct mg_directive d;
	uint32_t seq;
	int r;

	if (!c->board || c->state != CONN_READY)
		return;
	r = proto_slot_read(&c->board[c->board_slot], c->client_id, &d, &seq, NULL);
	if (r == -EBADMSG)
		conn_drop(c, LOG_WARNING, 0, false,
			  "memguardd's board slot holds a value out of range");
	else if (r == 0 && directive_is_new(c, seq))
		apply(c, &d, 0);
}

static int on_board(struct mg_client *c, const struct mg_board *b)
{
	int r;

	if (c->board) {
		conn_drop(c, LOG_WARNING, 0, false, "memguardd sent a second BOARD");
		return -EPROTO;
	}
	r = conn_board_open(c, b);
	if (r < 0) {
		/* Directives would wait in a slot we cannot see: go on by
		 * message, from a new connection. */
		c->no_board = true;
		conn_drop(c, LOG_WARNING, r, false,
			  "Failed to take memguardd's directive board (directives come by "
			  "message from now on)");
		return -EPROTO;
	}
	client_log(c, LOG_DEBUG, "Took slot %u of %u on the directive board", b->slot, b->slots);
	board_check(c);
	return c->sock >= 0 ? 0 : -ENOTCONN;
}

int client_handle(struct mg_client *c, const struct mg_msg *m)
{
	struct mg_msg a = { 0 };
	char why[96];

	switch (m->hdr.type) {
	case MG_MSG_WELCOME:
		return on_welcome(c, m);
	case MG_MSG_DIRECTIVE:
		if (c->state != CONN_READY)
			break;
		return on_directive(c, m);
	case MG_MSG_BOARD:
		if (c->state != CONN_READY)
			break;
		return on_board(c, &m->board);
	case MG_MSG_PING:
		a.hdr.type = MG_MSG_PONG;
		a.ping.cookie = m->ping.cookie;
		return conn_send(c, &a);
	case MG_MSG_ERROR:
		return on_error(c, &m->error);
	case MG_MSG_BYE:
		conn_drop(c, m->bye.reason == MG_BYE_SHUTDOWN ? LOG_INFO : LOG_NOTICE, 0, false,
			  m->bye.reason == MG_BYE_SHUTDOWN ? "memguardd is stopping"
							   : "memguardd said BYE");
		return -ECONNRESET;
	default:
		break;
	}
	snprintf(why, sizeof(why), "Unexpected %s message from memguardd",
		 proto_type_name(m->hdr.type));
	conn_drop(c, LOG_WARNING, 0, false, why);
	return -EPROTO;
}

/* ---- dispatch ----------------------------------------------------------- */

static void drop_on_recv_error(struct mg_client *c, int r)
{
	switch (r) {
	case -ECONNRESET:
		conn_drop(c, LOG_NOTICE, 0, false, "memguardd closed the connection");
		break;
	case -EMSGSIZE:
		conn_drop(c, LOG_WARNING, 0, false, "memguardd sent a datagram over 4096 bytes");
		break;
	case -EBADMSG:
	case -EPROTONOSUPPORT:
	case -EOPNOTSUPP:
		conn_drop(c, LOG_WARNING, r, false, "Malformed message from memguardd");
		break;
	default:
		conn_drop(c, LOG_NOTICE, r, false, "Failed to receive from memguardd");
		break;
	}
}

/* What is due now; returns the next deadline. */
static uint64_t run_timers(struct mg_client *c)
{
	uint64_t now = now_usec(), next;

	if (c->state == CONN_IDLE && c->adopt_fd >= 0)
		(void)conn_adopt(c, TAKE_FD(c->adopt_fd));
	else if (c->state == CONN_IDLE && now >= c->next_connect_us)
		(void)conn_open(c);
	else if (c->state == CONN_HELLO && now >= c->hello_deadline_us)
		conn_drop(c, LOG_WARNING, 0, false, "memguardd did not answer HELLO in time");
	else if (c->state == CONN_READY && now >= c->next_report_us) {
		/* Each REPORT looks at the local limit: it may end now. */
		if (limit_evaluate(c))
			reapply(c);
		else
			(void)send_report(c);
	}
	if (c->orphan_us && c->state != CONN_READY && now_usec() >= c->orphan_us)
		lapse(c);

	switch (c->state) {
	case CONN_IDLE:
		next = c->next_connect_us;
		break;
	case CONN_HELLO:
		next = c->hello_deadline_us;
		break;
	default:
		next = c->next_report_us;
		break;
	}
	if (c->orphan_us && c->state != CONN_READY)
		next = MIN(next, c->orphan_us);
	return next;
}

/* One round: messages, then timers.  Returns ms until the next round is
 * due at the latest, or -errno. */
static int client_dispatch(struct mg_client *c)
{
	unsigned n = 0;
	uint64_t next, now;
	int ms;

	pthread_mutex_lock(&c->lock);
	if (c->epfd < 0) {
		pthread_mutex_unlock(&c->lock);
		return -EBADF;
	}
	atomic_store(&c->dispatcher, gettid());
	conn_drain(c);
	if (c->sock >= 0 && c->out_len > 0)
		(void)conn_flush(c);
	while (c->sock >= 0 && n < CONN_RECV_BATCH && !c->free_pending) {
		struct mg_msg m;
		int r = conn_recv(c, &m);

		if (r == 0)
			break;
		if (r < 0) {
			conn_rx_fds_close(c);
			drop_on_recv_error(c, r);
			break;
		}
		n++;
		r = client_handle(c, &m);
		conn_rx_fds_close(c);
		if (r < 0)
			break;
	}
	/* The board's wake-up is edge-triggered: collect it, then look. */
	conn_board_collect(c);
	if (!c->free_pending)
		board_check(c);
	/* The heap crossed the local limit: act now, not at the next tick. */
	if (!c->free_pending && limit_pending(c) && limit_evaluate(c))
		reapply(c);
	/* New hooks learn the directive in force. */
	sync_hooks(c);

	next = run_timers(c);
	conn_arm(c, next);
	now = now_usec();
	if (n == CONN_RECV_BATCH)
		ms = 0;
	else
		ms = next <= now ? 0 : (int)MIN((next - now + 999) / 1000, (uint64_t)INT32_MAX);
	atomic_store(&c->dispatcher, 0);
	pthread_mutex_unlock(&c->lock);
	return ms;
}

/* ---- lifecycle ---------------------------------------------------------- */

/* The last of a client: every thread of it is gone or is the caller. */
static void client_destroy(struct mg_client *c)
{
	registry_remove(c);
	pthread_mutex_lock(&c->lock);
	conn_bye(c);
	conn_fds_close(c);
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->wake);
	free(c);
	/* Its throttle and its soft limit no longer count. */
	client_gate_update();
	limit_watch_update();
}

/*
 * Called from our thread with no lock held: when the program is gone, this
 * thread must not keep the process alive (alloc_lone_claim()).  It ends
 * the process as glibc would have after the program's last thread:
 * exit(0), whose exit handlers (ours among them: BYE, close) run here.
 */
static void client_exit_if_lone(struct mg_client *c, uint64_t *next_check)
{
	uint64_t now = now_usec();

	if (now < *next_check)
		return;
	*next_check = now + 1000ULL * CLIENT_LONE_CHECK_MS;
	if (!alloc_lone_claim())
		return;
	pthread_mutex_lock(&c->lock);
	/* Nobody joins us: mg_client_free() from our exit handler sees this. */
	c->thread_running = false;
	pthread_detach(pthread_self());
	pthread_mutex_unlock(&c->lock);
	exit(0);
}

/*
 * The delay of the preload library's client: no descriptor, no connection
 * until it has passed.  Returns false when the thread is to end instead
 * (stopped, or no descriptors).
 */
static bool client_wait_start(struct mg_client *c, uint64_t *next_check)
{
	bool ok = true;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		uint64_t now = now_usec(), until;
		struct timespec ts;

		if (atomic_load(&c->stop) || now >= c->start_us)
			break;
		until = MIN(c->start_us, now + 1000ULL * CLIENT_LONE_CHECK_MS);
		ts.tv_sec = (time_t)(until / 1000000);
		ts.tv_nsec = (long)(until % 1000000) * 1000;
		(void)pthread_cond_timedwait(&c->wake, &c->lock, &ts);
		if (atomic_load(&c->stop))
			break;
		pthread_mutex_unlock(&c->lock);
		client_exit_if_lone(c, next_check);
		pthread_mutex_lock(&c->lock);
	}
	if (atomic_load(&c->stop))
		ok = false;
	else if (c->epfd < 0) {
		/* Made here, by the thread: a process that ended sooner never
		 * had them. */
		if (conn_fds_open(c) < 0)
			ok = false;
		else {
			c->next_connect_us = now_usec();
			conn_arm(c, c->next_connect_us);
		}
	}
	pthread_mutex_unlock(&c->lock);
	return ok;
}

static void *client_thread(void *p)
{
	struct mg_client *c = p;
	uint64_t next_check = now_usec() + 1000ULL * CLIENT_LONE_CHECK_MS;

	(void)pthread_setname_np(pthread_self(), "memguard");
	if (!client_wait_start(c, &next_check))
		return NULL;
	while (!atomic_load(&c->stop)) {
		struct pollfd pfd = { .fd = c->epfd, .events = POLLIN };
		int ms = client_dispatch(c);

		if (c->free_pending) {
			/* mg_client_free() from one of our hooks: nobody will
			 * join this thread. */
			pthread_detach(pthread_self());
			client_destroy(c);
			return NULL;
		}
		if (atomic_load(&c->stop))
			break;
		if (ms < 0 || ms > CLIENT_LONE_CHECK_MS)
			ms = CLIENT_LONE_CHECK_MS;
		if (poll(&pfd, 1, ms) > 0 && (pfd.revents & POLLNVAL)) {
			/* Someone closed our descriptor (a "close every fd"
			 * loop): stop rather than spin, or touch what reuses
			 * the number. */
			pthread_mutex_lock(&c->lock);
			client_log(c, LOG_ERR, "The client's descriptor %d was closed under it; "
				   "the client stops", c->epfd);
			pthread_mutex_unlock(&c->lock);
			break;
		}
		client_exit_if_lone(c, &next_check);
	}
	return NULL;
}

static int client_start_thread(struct mg_client *c)
{
	sigset_t all, old;
	int r;

	/* The process's signals are for the application's threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = -pthread_create(&c->thread, NULL, client_thread, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r == 0)
		c->thread_running = true;
	return r;
}

static int client_create(int fd, const struct mg_client_opts *opts, uint32_t delay_ms,
			 struct mg_client **ret)
{
	struct mg_client *c;
	struct timespec ts;
	int r;

	pthread_once(&atfork_once, atfork_register);
	if (atfork_result < 0) {
		if (fd >= 0)
			close(fd);
		return atfork_result;
	}
	client_resume_after_fork();

	c = calloc(1, sizeof(*c));
	if (!c) {
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	lock_init(&c->lock);
	cond_init(&c->wake);
	c->epfd = c->timerfd = c->evfd = c->sock = c->adopt_fd = c->board_fd = -1;
	c->state = CONN_IDLE;
	c->report_ms = CONN_REPORT_DEFAULT_MS;
	c->backoff_ms = CONN_BACKOFF_MIN_MS;
	clock_gettime(CLOCK_REALTIME, &ts);
	c->rng = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)c;
	c->rng |= 1;

	r = opts_apply(c, opts);
	if (r == 0 && delay_ms && c->threading == MG_THREAD_OWN) {
		/* The thread makes the descriptors when the delay is over. */
		c->delay_ms = delay_ms;
		c->start_us = now_usec() + 1000ULL * delay_ms;
	} else if (r == 0)
		r = conn_fds_open(c);
	if (r == 0)
		c->adopt_fd = TAKE_FD(fd);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		conn_fds_close(c);
		pthread_mutex_destroy(&c->lock);
		pthread_cond_destroy(&c->wake);
		free(c);
		return r;
	}
	/* Connect at the first dispatch: now. */
	c->next_connect_us = now_usec();
	if (c->epfd >= 0)
		conn_arm(c, c->next_connect_us);

	registry_add(c);
	if (c->threading == MG_THREAD_OWN) {
		r = client_start_thread(c);
		if (r < 0) {
			registry_remove(c);
			conn_fds_close(c);
			pthread_mutex_destroy(&c->lock);
			pthread_cond_destroy(&c->wake);
			free(c);
			return r;
		}
	}
	*ret = c;
	return 0;
}

int client_new_fd(int fd, const struct mg_client_opts *opts, struct mg_client **ret)
{
	if (fd < 0 || !ret) {
		if (fd >= 0)
			close(fd);
		return -EINVAL;
	}
	return client_create(fd, opts, /* delay_ms= */ 0, ret);
}

_public_ int mg_client_new(struct mg_client **ret, const struct mg_client_opts *opts)
{
	struct mg_client *c, *old;
	int r;

	if (!ret)
		return -EINVAL;
	r = client_create(-1, opts, /* delay_ms= */ 0, &c);
	if (r < 0)
		return r;

	/* The application speaks for the process now: the client the
	 * preload library started on its own says BYE. */
	pthread_mutex_lock(&registry_lock);
	old = TAKE_PTR(automatic);
	pthread_mutex_unlock(&registry_lock);
	mg_client_free(old);

	*ret = c;
	return 0;
}

int client_auto_start(uint32_t delay_ms)
{
	struct mg_client *c;
	int r;

	r = client_create(-1, NULL, delay_ms, &c);
	if (r < 0)
		return r;
	pthread_mutex_lock(&registry_lock);
	automatic = c;
	pthread_mutex_unlock(&registry_lock);
	return 0;
}

void client_auto_stop(void)
{
	struct mg_client *c;

	pthread_mutex_lock(&registry_lock);
	c = TAKE_PTR(automatic);
	pthread_mutex_unlock(&registry_lock);
	mg_client_free(c);
}

_public_ void mg_client_free(struct mg_client *c)
{
	if (!c)
		return;
	if (atomic_load(&c->dispatcher) == gettid()) {
		/* From a hook: the dispatch on our stack still uses `c`.  It
		 * finishes the job when it unwinds. */
		c->free_pending = true;
		return;
	}
	if (c->thread_running) {
		atomic_store(&c->stop, true);
		/* In its delay, or past it and polling its descriptors. */
		pthread_mutex_lock(&c->lock);
		pthread_cond_broadcast(&c->wake);
		if (c->evfd >= 0)
			conn_wake(c);
		pthread_mutex_unlock(&c->lock);
		pthread_join(c->thread, NULL);
		c->thread_running = false;
	}
	client_destroy(c);
}

_public_ int mg_client_fd(struct mg_client *c)
{
	if (!c || c->threading != MG_THREAD_NONE)
		return -EINVAL;
	client_resume_after_fork();
	return c->epfd >= 0 ? c->epfd : -EBADF;
}

_public_ int mg_client_dispatch(struct mg_client *c)
{
	int r;

	if (!c || c->threading != MG_THREAD_NONE)
		return -EINVAL;
	if (atomic_load(&c->dispatcher) == gettid())
		return -EDEADLK;
	client_resume_after_fork();
	r = client_dispatch(c);
	if (c->free_pending) {
		client_destroy(c);
		return 0;
	}
	return r;
}

/* ---- hooks and state ---------------------------------------------------- */

/*
 * A setter waits for a hook call in progress (the lock is held across
 * it), so once it returns the old hook is never called again.  A new hook
 * counts as told the defaults; the next dispatch, woken here, tells it the
 * directive in force if that differs.
 */
#define SET_HOOK(c, field, fn, data, reset)               \
	do {                                              \
		if (!(c))                                 \
			return;                           \
		client_resume_after_fork();               \
		pthread_mutex_lock(&(c)->lock);           \
		(c)->field##_fn = (fn);                   \
		(c)->field##_data = (data);               \
		reset;                                    \
		pthread_mutex_unlock(&(c)->lock);         \
		if ((c)->evfd >= 0)                       \
			conn_wake(c);                     \
	} while (0)

_public_ void mg_client_set_gc_hook(struct mg_client *c, mg_gc_fn fn, void *data)
{
	SET_HOOK(c, gc, fn, data, c->told_gc = MG_GC_DEFAULT);
}

_public_ void mg_client_set_release_hook(struct mg_client *c, mg_release_fn fn, void *data)
{
	SET_HOOK(c, release, fn, data, (void)0);
}

_public_ void mg_client_set_level_hook(struct mg_client *c, mg_level_fn fn, void *data)
{
	SET_HOOK(c, level, fn, data, c->told_level = MG_LEVEL_NORMAL);
}

_public_ void mg_client_set_log_fn(struct mg_client *c, mg_log_fn fn, void *data)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->log_fn = fn;
	c->log_data = data;
	pthread_mutex_unlock(&c->lock);
}

_public_ void mg_client_set_external_bytes(struct mg_client *c, uint64_t bytes)
{
	if (!c)
		return;
	client_resume_after_fork();
	atomic_store(&c->external, bytes);
	limit_external(c, bytes);
}

_public_ enum mg_level mg_client_level(const struct mg_client *c)
{
	if (!c)
		return MG_LEVEL_NORMAL;
	client_resume_after_fork();
	return (enum mg_level)atomic_load(&c->level);
}
