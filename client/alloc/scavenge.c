/* SPDX-License-Identifier: MIT */
/*
 * The scavenger: a thread that gives free pages back to the kernel until
 * the heap's resident bytes (sys − released) are down to a goal, at a
 * bounded CPU cost, and mg_heap_release(), the same work done now.
 *
 * Pacing: the thread may spend a share of wall time in CPU time (its own
 * CLOCK_THREAD_CPUTIME_ID, so the madvise work in the kernel counts): 1 %
 * while the heap is churning (spans were allocated since the last tick:
 * pages released now may be faulted back in soon, or more than
 * SCAV_BUSY_FREES objects went back to their spans), and then it releases
 * only free runs of ≥ 64 KiB; SCAV_DUTY_IDLE_PPM once it has gone quiet
 * (a burst ended; what is free now stays free, and returning it quickly
 * is the point), and then every free 4 KiB page goes: free runs of any
 * length, large blocks' tails (the pages of their spans past their end),
 * and the pages of partly used small spans that hold no live byte
 * (a sweep over them, central.c), after the transfer caches are emptied
 * into their spans.  A sweep that is over is not begun again until
 * SCAV_RESWEEP_OBJS objects went back to their spans, or some did and
 * then none for a tick, or the heap churns.
 * The work to do is the same whatever the share; releasing a quiet
 * burst's ~1 GiB costs ~0.3–0.4 s of CPU, mostly the kernel's (unmapping
 * and freeing ~200 000 pages), so a quiet heap gets a quarter of a core
 * to be back near its floor within about 2 s, and only until it is.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "client/alloc/alloc.h"
#include "proto/macro.h"

#define SCAV_STACK (256u << 10)          /* bytes of stack for the thread */
#define SCAV_MAX_FAILURES 3              /* pthread_create failures before giving up */

enum {
	SCAV_NONE,
	SCAV_STARTING,
	SCAV_RUNNING,
	SCAV_STOPPING,
	SCAV_FAILED,
};

static pthread_mutex_t scav_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t scav_cond = PTHREAD_COND_INITIALIZER;
static pthread_t scav_thread;
static int scav_state;
static bool scav_disabled;
static unsigned scav_failures;
static uint64_t user_goal;
static struct scav_stats sstats;

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * The resident bytes to come down to: the live heap plus the retain
 * margin, and no more than the goal of mg_heap_set_goal() (the daemon's
 * soft limit) when one is set.  That goal is a ceiling, not a target: a
 * service under pressure must not keep more free pages than a calm one,
 * or its usage settles at the soft limit, which is its WARN threshold,
 * and it never gets back to NORMAL.
 */
static uint64_t goal_of(uint64_t user, uint64_t inuse)
{
	uint64_t retain = inuse * SCAV_RETAIN_PERMILLE / 1000;

	return user && user < retain ? user : retain;
}

uint64_t scavenger_goal(void)
{
	struct alloc_stats a;

	alloc_get_stats(&a);
	return goal_of(LOAD(user_goal), a.heap.inuse);
}

/* Sleep `ms` unless told to stop; false when told. */
static bool scav_sleep(unsigned ms)
{
	struct timespec ts;
	bool go_on;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&scav_lock);
	while (scav_state == SCAV_RUNNING || scav_state == SCAV_STARTING)
		if (pthread_cond_clockwait(&scav_cond, &scav_lock, CLOCK_MONOTONIC, &ts) ==
		    ETIMEDOUT)
			break;
	go_on = scav_state != SCAV_STOPPING;
	pthread_mutex_unlock(&scav_lock);
	return go_on;
}

static uint64_t mono_ns(void)
{
	return now_usec() * 1000;
}

/* Where the scavenger's sweep of the partly used spans stands. */
struct sweep {
	bool swept;		/* the last sweep reached the last class */
	bool restart;		/* the next step begins at the first class */
	uint64_t sweep_frees;	/* span frees when the current sweep began */
	uint64_t swept_frees;	/* ... when the last finished sweep began */
};

/*
 * One tick's releases, while `excess` bytes are resident over the goal
 * and the thread's CPU since `c0` is within `allowance`: free runs
 * first, then (only when the heap is quiet) large blocks' tails, then a
 * step of the sweep.  Returns whether the heap has settled: nothing in
 * excess, or nothing more to release now.
 */
static bool release_some(uint64_t excess, bool churn, int64_t allowance, uint64_t c0,
			 struct sweep *sw)
{
	bool more = true;

	while (excess && allowance - (int64_t)(thread_cpu_ns() - c0) > 0) {
		size_t max = excess / MG_PAGE_SIZE;
		long n;

		if (max > SCAV_CHUNK_PAGES)
			max = SCAV_CHUNK_PAGES;
		if (max < RELEASE_MIN_PAGES)
			max = RELEASE_MIN_PAGES;
		n = pageheap_release_step(max, churn ? RELEASE_MIN_PAGES : 1);
		if (n == 0 && !churn)
			n = pageheap_release_tails(max);
		if (n == 0 && !churn && !sw->swept) {
			n = central_release_step(max * MG_PAGE_SIZE, sw->restart, &more);
			sw->restart = false;
			if (!more) {
				sw->swept = true;
				sw->swept_frees = sw->sweep_frees;
			}
		}
		if (n < 0 || (n == 0 && (churn || sw->swept)))
			return true;
		ADD(sstats.released_bytes, (uint64_t)n);
		excess = (uint64_t)n >= excess ? 0 : excess - (uint64_t)n;
	}
	return !excess;
}

/*
 * The pacing is a CPU allowance that grows with wall time at the duty
 * cycle and is spent by everything the thread does, the look at the heap
 * included; an overshoot (one madvise step too many) is paid back on the
 * next ticks, so the long-run share stays at the duty cycle.
 */
static void *scav_main(void *arg)
{
	uint64_t last_allocs = 0, last_wall = mono_ns(), last_frees = 0;
	struct sweep sw = { .swept = true };
	int64_t allowance = 0;
	bool busy = true;

	prctl(PR_SET_NAME, "mg-scavenger");
	while (scav_sleep(busy ? SCAV_TICK_MS : SCAV_IDLE_TICK_MS)) {
		uint64_t resident, goal, excess, c0 = thread_cpu_ns(), wall = mono_ns();
		struct pageheap_stats ph;
		struct alloc_stats a;
		uint64_t duty, cap, frees;
		bool churn, settled;

		/* The program's threads are all gone: end, as its last would. */
		if (alloc_lone_claim())
			exit(0);
		ADD(sstats.wakeups, 1);
		pageheap_get_stats(&ph);
		/* Churning: spans were handed out, or objects went back to
		 * their spans at a rate that says the program is at work (a
		 * sweep would look at spans about to change again). */
		frees = central_span_frees();
		churn = ph.alloc_count != last_allocs || frees - last_frees > SCAV_BUSY_FREES;
		last_allocs = ph.alloc_count;
		duty = churn ? SCAV_DUTY_CHURN_PPM : SCAV_DUTY_IDLE_PPM;
		allowance += (int64_t)((wall - last_wall) * duty / 1000000u);
		/* Credit saved while quiet is not spent once churning starts. */
		cap = (uint64_t)(churn ? SCAV_TICK_MS : SCAV_IDLE_TICK_MS) * 1000000u * duty / 1000000u;
		if (allowance > (int64_t)cap)
			allowance = (int64_t)cap;
		last_wall = wall;
		if (!churn) {
			/* Quiet: objects parked in the transfer caches go back to
			 * their spans, so their pages can be looked at. */
			central_drain();
		}
		frees = central_span_frees();
		/* A sweep begins again once the heap churned, or enough went
		 * back to the spans that it could find whole pages, or the
		 * last frees of a burst have settled: not for every batch of
		 * a program that frees steadily. */
		if (sw.swept && (churn || frees - sw.swept_frees >= SCAV_RESWEEP_OBJS ||
				 (frees != sw.swept_frees && frees == last_frees))) {
			/* From the first class again: frees since the last
			 * sweep began may be in classes it had passed. */
			sw.swept = false;
			sw.restart = true;
			sw.sweep_frees = frees;
		}
		last_frees = frees;
		alloc_get_stats(&a);
		resident = a.heap.sys - a.heap.released;
		goal = goal_of(LOAD(user_goal), a.heap.inuse);
		excess = resident > goal ? resident - goal : 0;
		settled = release_some(excess, churn, allowance, c0, &sw);
		if (settled) {
			if (!churn && busy)
				pageheap_trim_meta();
			busy = churn;
		} else {
			busy = true;
		}
		STORE(sstats.settled, settled);
		c0 = thread_cpu_ns() - c0;
		allowance -= (int64_t)c0;
		STORE(sstats.cpu_ns, sstats.cpu_ns + c0);
	}
	return arg;
}

int scav_wanted;

/* Work for a scavenger: free memory to return. */
static bool scav_has_work(void)
{
	return pageheap_releasable() >= SCAV_START_BYTES ||
	       central_span_frees() * MG_MIN_ALIGN >= SCAV_START_BYTES;
}

void scavenger_want(void)
{
	if (likely(LOAD(scav_state) != SCAV_NONE) || LOAD(scav_wanted) || LOAD(scav_disabled))
		return;
	if (scav_has_work())
		STORE(scav_wanted, 1);
}

void scavenger_kick(void)
{
	pthread_attr_t attr;
	sigset_t all, old;
	int r;

	if (likely(LOAD(scav_state) != SCAV_NONE) || LOAD(scav_disabled))
		return;
	/* A heap this large will have pages to return when it shrinks, and
	 * a program that frees them may allocate no more: the thread must
	 * be there by then, since free() cannot start it. */
	if (!LOAD(scav_wanted) && !scav_has_work() && alloc_resident_bytes() < SCAV_START_HEAP)
		return;
	pthread_mutex_lock(&scav_lock);
	if (scav_state != SCAV_NONE) {
		pthread_mutex_unlock(&scav_lock);
		return;
	}
	scav_state = SCAV_STARTING;
	pthread_mutex_unlock(&scav_lock);

	/* The thread takes none of the application's signals.  Creating it
	 * allocates (its TLS), which comes back here, finds the state
	 * STARTING and returns. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, SCAV_STACK);
	r = pthread_create(&scav_thread, &attr, scav_main, NULL);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	pthread_mutex_lock(&scav_lock);
	STORE(scav_wanted, 0);
	if (r) {
		scav_state = ++scav_failures >= SCAV_MAX_FAILURES ? SCAV_FAILED : SCAV_NONE;
	} else if (scav_state == SCAV_STARTING) {
		scav_state = SCAV_RUNNING;
		STORE(sstats.running, true);
	}
	pthread_mutex_unlock(&scav_lock);
}

void scavenger_stop(void)
{
	pthread_mutex_lock(&scav_lock);
	if (scav_state != SCAV_RUNNING) {
		pthread_mutex_unlock(&scav_lock);
		return;
	}
	scav_state = SCAV_STOPPING;
	pthread_cond_broadcast(&scav_cond);
	pthread_mutex_unlock(&scav_lock);
	pthread_join(scav_thread, NULL);
	pthread_mutex_lock(&scav_lock);
	scav_state = SCAV_NONE;
	STORE(sstats.running, false);
	pthread_mutex_unlock(&scav_lock);
}

void scavenger_disable(bool disable)
{
	STORE(scav_disabled, disable);
	if (disable)
		scavenger_stop();
}

void scavenger_get_stats(struct scav_stats *ret)
{
	ret->running = LOAD(sstats.running);
	ret->cpu_ns = LOAD(sstats.cpu_ns);
	ret->released_bytes = LOAD(sstats.released_bytes);
	ret->wakeups = LOAD(sstats.wakeups);
	ret->settled = LOAD(sstats.settled);
}

void scavenger_after_fork_child(void)
{
	pthread_mutex_init(&scav_lock, NULL);
	pthread_cond_init(&scav_cond, NULL);
	scav_state = SCAV_NONE;
	scav_failures = 0;
	memset(&sstats, 0, sizeof(sstats));
}

/* Everything mg_heap_release() can do in one pass: free runs and large
 * blocks' tails, then the pages of partly used spans.  Adds to *done; false once `bytes` (0: no
 * bound) is reached or the kernel refused. */
static bool release_pass(size_t bytes, size_t *done)
{
	bool more = true, restart = true;
	long n;

	for (;;) {
		size_t want = bytes ? bytes - *done : SIZE_MAX;
		size_t max = want / MG_PAGE_SIZE + (want % MG_PAGE_SIZE != 0);

		n = pageheap_release_step(max < ARENA_PAGES ? max : ARENA_PAGES, 1);
		if (n == 0)
			n = pageheap_release_tails(max < ARENA_PAGES ? max : ARENA_PAGES);
		if (n <= 0)
			break;
		*done += (size_t)n;
		if (bytes && *done >= bytes)
			return false;
	}
	if (n < 0)
		return false;
	while (more) {
		n = central_release_step(bytes ? bytes - *done : SIZE_MAX, restart, &more);
		restart = false;
		if (n < 0)
			return false;
		*done += (size_t)n;
		if (bytes && *done >= bytes)
			return false;
	}
	/* Spans that came wholly free in the sweep are free runs now, but
	 * their pages were released already. */
	return true;
}

_public_ size_t mg_heap_release(size_t bytes)
{
	size_t done = 0;

	if (alloc_init() < 0)
		return 0;
	if (!bytes) {
		/* Everything: first empty the caches, so that every free
		 * object is in its span and spans held only by cached
		 * objects become free. */
		tcache_flush_all();
		central_drain();
		release_pass(0, &done);
		pageheap_trim_meta();
		return done;
	}
	/* Some: what is free in the spans first; the caches only if that
	 * was not enough. */
	if (release_pass(bytes, &done)) {
		tcache_flush_all();
		central_drain();
		release_pass(bytes, &done);
	}
	return done;
}

_public_ void mg_heap_set_goal(size_t bytes)
{
	STORE(user_goal, bytes);
	scavenger_kick();
}
