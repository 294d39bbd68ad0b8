/* SPDX-License-Identifier: MIT */
/*
 * The growth watch: where the heap grows, compare its resident bytes with
 * a limit that libmemguard-client sets (its local limit), and tell the
 * client when they are above.  The decision of what to do is the
 * client's (client/limit.c); here is only the comparison.
 */
#include "config.h"

#include "client/alloc/alloc.h"

uint64_t alloc_watch_bytes;
static void (*watch_fn)(uint64_t resident);

/* Declared in client/client-internal.h, the client's view of it. */
_hidden_ void alloc_watch_set(uint64_t bytes, void (*fn)(uint64_t resident));

void alloc_watch_set(uint64_t bytes, void (*fn)(uint64_t resident))
{
	__atomic_store_n(&watch_fn, fn, __ATOMIC_RELEASE);
	STORE(alloc_watch_bytes, fn ? bytes : 0);
}

uint64_t alloc_resident_bytes(void)
{
	struct pageheap_stats ph;

	pageheap_get_stats(&ph);
	/* Released pages are counted in 4 KiB pages, those inside partly
	 * used small spans and at large blocks' tails apart. */
	return ph.arena_pages * MG_PAGE_SIZE -
	       (ph.released_os + ph.small_released_os + ph.large_released_os) * MG_OS_PAGE +
	       huge_bytes();
}

void alloc_watch_check(void)
{
	uint64_t limit = LOAD(alloc_watch_bytes), resident;
	void (*fn)(uint64_t);

	if (!limit)
		return;
	resident = alloc_resident_bytes();
	if (resident <= limit)
		return;
	fn = __atomic_load_n(&watch_fn, __ATOMIC_ACQUIRE);
	if (fn)
		fn(resident);
}
