/* SPDX-License-Identifier: MIT */
/*
 * The local limit: the daemon's soft limit enforced at allocation speed.
 * The allocator compares its resident bytes with the watch set here on
 * every refill (client/alloc/watch.c); a crossing wakes the clients, which
 * decide on their own thread, with their lock held, what to do.  See
 * client-internal.h for the rules.
 */
#include "config.h"

#include <stdatomic.h>
#include <sys/syslog.h>

#include "client-internal.h"

/* Crossings seen by the allocator or by mg_client_set_external_bytes(). */
static atomic_uint limit_hits;
/* One wake per crossing: set by the first allocating thread that sees the
 * heap over, cleared by the clients' next look. */
static atomic_bool limit_armed = true;

static void on_heap_over(uint64_t resident)
{
	(void)resident;
	/* Every refill above the limit comes here: only the first one
	 * since the clients last looked wakes them. */
	if (!atomic_exchange(&limit_armed, false))
		return;
	atomic_fetch_add(&limit_hits, 1);
	client_wake_all();
}

uint64_t limit_next(const struct mg_client *c)
{
	uint64_t soft = __atomic_load_n(&c->daemon.soft_limit, __ATOMIC_RELAXED);

	/* Watch only for what would change something: above the soft limit
	 * at WARN, every refill would wake the client for nothing. */
	switch (__atomic_load_n(&c->local_level, __ATOMIC_RELAXED)) {
	case MG_LEVEL_NORMAL:
		return soft;
	case MG_LEVEL_WARN:
		return soft / LIMIT_CRIT_DEN > UINT64_MAX / LIMIT_CRIT_NUM
			       ? UINT64_MAX
			       : soft / LIMIT_CRIT_DEN * LIMIT_CRIT_NUM;
	default:
		return 0;
	}
}

void limit_watch_update(void)
{
	uint64_t soft = client_soft_limit_min();

	alloc_watch_set(soft, soft ? on_heap_over : NULL);
}

bool limit_pending(const struct mg_client *c)
{
	return atomic_load(&limit_hits) != c->local_seen;
}

bool limit_evaluate(struct mg_client *c)
{
	uint64_t soft = c->daemon.soft_limit, heap;
	struct mg_heap_stats hs;
	uint8_t want, before = c->local_level;

	c->local_seen = atomic_load(&limit_hits);
	atomic_store(&limit_armed, true);
	mg_heap_stats(&hs);
	heap = hs.sys > hs.released ? hs.sys - hs.released : 0;
	atomic_store(&c->local_heap, heap);
	heap = add_sat(heap, atomic_load(&c->external));

	if (!soft)
		want = MG_LEVEL_NORMAL;
	else if (heap / LIMIT_CRIT_NUM > soft / LIMIT_CRIT_DEN)
		want = MG_LEVEL_CRITICAL;
	else if (heap > soft)
		want = MG_LEVEL_WARN;
	else
		want = MG_LEVEL_NORMAL;

	if (want > c->local_level)
		/* Rising at once: that is the point of it. */
		c->local_level = want;
	else if (want == MG_LEVEL_NORMAL &&
		 (c->daemon.level == MG_LEVEL_NORMAL || !soft))
		/* The daemon is the authority: the local action ends when it
		 * says NORMAL and the heap is under the limit again (or when
		 * there is no limit left to keep). */
		c->local_level = MG_LEVEL_NORMAL;
	else if (c->local_level > MG_LEVEL_WARN && want < c->local_level &&
		 heap / LIMIT_CALM_NUM <= soft / LIMIT_CALM_DEN)
		/* Back under 17/16 of the limit (a band below 9/8, as the
		 * soft limit moves a little with every directive): no more
		 * shedding of our own, the rest of WARN's actions until the
		 * daemon says NORMAL. */
		c->local_level = want > MG_LEVEL_WARN ? want : MG_LEVEL_WARN;
	if (c->local_level != before)
		client_log(c, c->local_level > before ? LOG_NOTICE : LOG_INFO,
			   "Local limit: %s (heap %llu bytes, soft limit %llu bytes)",
			   proto_level_name(c->local_level), (unsigned long long)heap,
			   (unsigned long long)soft);
	return c->local_level != before;
}

void limit_merge(const struct mg_client *c, const struct mg_directive *d,
		 struct mg_directive *ret)
{
	uint16_t gc = 0, throttle = 0;

	*ret = *d;
	switch (c->local_level) {
	case MG_LEVEL_WARN:
		gc = LIMIT_WARN_GC;
		break;
	case MG_LEVEL_CRITICAL:
	case MG_LEVEL_EMERGENCY:
		gc = LIMIT_CRIT_GC;
		throttle = LIMIT_CRIT_THROTTLE;
		break;
	default:
		return;
	}
	if (c->local_level > ret->level)
		ret->level = c->local_level;
	if (ret->gc_percent == MG_GC_DEFAULT || gc < ret->gc_percent)
		ret->gc_percent = gc;
	if (throttle > ret->throttle)
		ret->throttle = throttle;
}

void limit_external(struct mg_client *c, uint64_t bytes)
{
	/* What the allocator's watch looks for too: at local WARN the
	 * client is past the soft limit already. */
	uint64_t next = limit_next(c);

	/* With the heap as the client last saw it: two loads, so that an
	 * application may report its runtime's heap as often as it likes;
	 * the client's own look then is exact. */
	if (!next || add_sat(atomic_load(&c->local_heap), bytes) <= next)
		return;
	if (!atomic_exchange(&limit_armed, false))
		return;
	atomic_fetch_add(&limit_hits, 1);
	client_wake_all();
}
