/* SPDX-License-Identifier: MIT */
/*
 * Heap statistics.  Each figure comes from its own counters (page heap
 * pages, per-thread byte counters, huge mappings) rather than from the
 * others by subtraction, so a test can check that they add up.
 */
#include "config.h"

#include <string.h>

#include "client/alloc/alloc.h"

void alloc_get_stats(struct alloc_stats *ret)
{
	struct pageheap_stats ph;
	struct alloc_stats a;
	uint64_t out, cached;

	memset(&a, 0, sizeof(a));
	if (alloc_init() < 0) {
		*ret = a;
		return;
	}
	pageheap_get_stats(&ph);
	/* Out of central minus what threads hold in their caches. */
	cached = tcache_cached_bytes();
	out = central_out_bytes();
	a.small_inuse = out > cached ? out - cached : 0;
	a.large_inuse = ph.large_pages * MG_PAGE_SIZE - ph.large_released_os * MG_OS_PAGE;
	a.huge = huge_bytes();
	a.small_span_bytes = ph.small_pages * MG_PAGE_SIZE;
	a.small_released = ph.small_released_os * MG_OS_PAGE;
	a.free_resident = ph.free_pages * MG_PAGE_SIZE - ph.released_os * MG_OS_PAGE;
	/* Counters of other threads move while we read: never let the
	 * parts go negative.  Released pages of small spans hold no live
	 * byte, so in use fits in what is left of the spans. */
	if (a.small_inuse > a.small_span_bytes - a.small_released)
		a.small_inuse = a.small_span_bytes - a.small_released;
	a.heap.sys = ph.arena_pages * MG_PAGE_SIZE + a.huge;
	a.heap.released = (ph.released_os + ph.large_released_os) * MG_OS_PAGE + a.small_released;
	a.heap.inuse = a.small_inuse + a.large_inuse + a.huge;
	a.heap.idle = a.free_resident + (a.small_span_bytes - a.small_released - a.small_inuse);
	a.heap.metadata = meta_bytes() + ph.meta_bytes;
	a.heap.fragmentation = a.heap.inuse ? (double)(a.heap.sys - a.heap.released) /
						      (double)a.heap.inuse
					    : 0.0;
	*ret = a;
}

_public_ void mg_heap_stats(struct mg_heap_stats *ret)
{
	struct alloc_stats a;

	alloc_get_stats(&a);
	*ret = a.heap;
}
