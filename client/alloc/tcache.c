/* SPDX-License-Identifier: MIT */
/*
 * Thread caches.  A thread allocates from and frees into its own bins with
 * no lock and no atomic instruction; objects move to and from the central
 * lists a batch at a time.  Any thread may free any object into its own
 * cache: a cross-thread free is as cheap as a local one, and the object
 * finds its way back to its span only when a batch is flushed.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "client/alloc/alloc.h"

struct tcache tcache_none;
__thread struct tcache *tls_tcache __attribute__((tls_model("initial-exec"))) = &tcache_none;
__thread uint8_t tls_tcache_state __attribute__((tls_model("initial-exec")));

static pthread_key_t tcache_key;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tcache *registry;          /* live caches */
static struct tcache *pool;              /* caches of exited threads, for reuse */

static void tcache_destroy(void *arg)
{
	struct tcache *tc = arg;

	/* Later destructors may still allocate: they go to central directly. */
	tls_tcache = &tcache_none;
	tls_tcache_state = TCACHE_DEAD;
	tcache_flush(tc);
	pthread_mutex_lock(&registry_lock);
	if (tc->prev)
		tc->prev->next = tc->next;
	else
		registry = tc->next;
	if (tc->next)
		tc->next->prev = tc->prev;
	tc->next = pool;
	pool = tc;
	pthread_mutex_unlock(&registry_lock);
}

int tcache_global_init(void)
{
	int r = pthread_key_create(&tcache_key, tcache_destroy);

	return r ? -r : 0;
}

struct tcache *tcache_get(void)
{
	struct tcache *tc = tls_tcache;
	unsigned cls;

	if (likely(tc != &tcache_none))
		return tc;
	if (tls_tcache_state != TCACHE_NONE || alloc_init() < 0)
		return NULL;
	/* Anything allocated while we build the cache (pthread_setspecific
	 * may calloc) is served directly by central. */
	tls_tcache_state = TCACHE_INIT;
	pthread_mutex_lock(&registry_lock);
	if (pool) {
		tc = pool;
		pool = tc->next;
	} else {
		tc = meta_alloc(sizeof(*tc));
	}
	if (tc) {
		memset(tc, 0, sizeof(*tc));
		for (cls = 0; cls < NCLASSES; cls++) {
			tcache_bin(tc, cls)->max = sizeclasses[cls].tcache_max;
			tcache_bin(tc, cls)->room = sizeclasses[cls].tcache_max;
		}
		tc->next = registry;
		if (registry)
			registry->prev = tc;
		registry = tc;
	}
	pthread_mutex_unlock(&registry_lock);
	if (!tc) {
		tls_tcache_state = TCACHE_NONE;
		return NULL;
	}
	pthread_setspecific(tcache_key, tc);
	tls_tcache = tc;
	tls_tcache_state = TCACHE_LIVE;
	return tc;
}

void *tcache_refill(struct tcache *tc, unsigned cls)
{
	struct tbin *b = tcache_bin(tc, cls);
	void *head, *o;
	unsigned n;

	if (alloc_fork_check() && b->head) {
		/* The hook allocated, and refilled this very bin. */
		o = b->head;
		b->head = *(void **)o;
		b->room++;
		return o;
	}
	if (unlikely(LOAD(tc->flush_req))) {
		STORE(tc->flush_req, 0);
		tcache_flush(tc);
	}
	n = central_get(cls, sizeclasses[cls].batch, &head);
	if (!n)
		return NULL;
	o = head;
	b->head = *(void **)o;
	b->room = b->max - (n - 1);
	alloc_grew();
	return o;
}

void tcache_overflow(struct tcache *tc, unsigned cls)
{
	struct tbin *b = tcache_bin(tc, cls);
	unsigned n = sizeclasses[cls].batch, count = tbin_count(b), i;
	void *head = b->head, *last = head;

	if (unlikely(LOAD(tc->flush_req))) {
		STORE(tc->flush_req, 0);
		tcache_flush(tc);
		return;
	}
	/* The most recently freed objects stay: they are the warm ones. */
	for (i = 1; i < count - n; i++)
		last = *(void **)last;
	head = *(void **)last;
	*(void **)last = NULL;
	b->room += n;
	central_put(cls, head, n);
}

void tcache_flush(struct tcache *tc)
{
	unsigned cls;

	for (cls = 0; cls < NCLASSES; cls++) {
		struct tbin *b = tcache_bin(tc, cls);
		uint32_t count = tbin_count(b);

		if (!count)
			continue;
		central_put(cls, b->head, count);
		b->head = NULL;
		STORE(b->room, b->max);
	}
}

void tcache_flush_all(void)
{
	struct tcache *tc;

	pthread_mutex_lock(&registry_lock);
	for (tc = registry; tc; tc = tc->next)
		if (tc != tls_tcache)
			STORE(tc->flush_req, 1);
	pthread_mutex_unlock(&registry_lock);
	if (tls_tcache != &tcache_none)
		tcache_flush(tls_tcache);
}

uint64_t tcache_cached_bytes(void)
{
	struct tcache *tc;
	uint64_t n = 0;
	unsigned cls;

	pthread_mutex_lock(&registry_lock);
	for (tc = registry; tc; tc = tc->next)
		for (cls = 0; cls < NCLASSES; cls++)
			n += (uint64_t)(sizeclasses[cls].tcache_max -
				      LOAD(tcache_bin(tc, cls)->room)) * sizeclasses[cls].size;
	pthread_mutex_unlock(&registry_lock);
	return n;
}

void tcache_lock_all(void)
{
	pthread_mutex_lock(&registry_lock);
}

void tcache_unlock_all(void)
{
	pthread_mutex_unlock(&registry_lock);
}

void tcache_after_fork_child(void)
{
	/*
	 * The other threads are gone, their caches with them.  Their objects
	 * stay where they are, counted as in use by those threads: a thread
	 * may have been inside its cache's fast path when fork() copied it,
	 * so walking those lists could follow a half-written link.
	 */
	pthread_mutex_init(&registry_lock, NULL);
}
