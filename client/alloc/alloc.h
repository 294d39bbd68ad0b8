/* SPDX-License-Identifier: MIT */
/*
 * The memguard allocator's insides.  The public face is the allocator half
 * of memguard/client.h (malloc.c, scavenge.c, stats.c); everything here is
 * hidden and shared by the allocator's files and its tests.
 *
 * Layers, from the kernel up:
 *
 *	arena.c      mmap (through a hook tests can fail), 64 MiB arenas and the
 *	             address → arena map, metadata memory, huge blocks
 *	span.c       the page heap: runs of 8 KiB pages ("spans"), free lists
 *	             that prefer resident pages, coalescing, the released-page
 *	             bitmap (one bit per 4 KiB page), the release step, and
 *	             the release of large blocks' tails
 *	central.c    also the release of free 4 KiB pages inside partly used
 *	             small spans (a sweep over the spans that changed)
 *	sizeclass.c  96 size classes, 16 B .. 256 KiB, ≤ 12.5 % waste
 *	central.c    per-class lists of partly used spans and a transfer cache
 *	             of whole batches, each under its own class lock
 *	tcache.c     per-thread caches: the lock-free fast path
 *	malloc.c     mg_malloc() and friends, init, fork, the debug heap
 *	scavenge.c   the background thread and mg_heap_release()
 *	stats.c      mg_heap_stats()
 *
 * Lock order (fork takes them all in it): init_lock → registry lock →
 * central[0..N) → page heap → huge → metadata.  The release lock of
 * central.c's sweep is taken before any of them and never by allocation.  Nothing is called with a
 * lock held that could re-enter the allocator.
 *
 * Arenas are reserved with MAP_NORESERVE read-write rather than PROT_NONE
 * and mprotect()ed as they fill: a growing heap then costs no syscall and
 * no VMA split, and untouched pages cost nothing but address space (the
 * kernel backs a page at first touch).  Pages never touched are counted as
 * released, exactly like pages given back with MADV_DONTNEED: both read as
 * zeros and cost no RSS.  The price is a 64 MiB commit charge per arena
 * under vm.overcommit_memory = 2, where MAP_NORESERVE is ignored.
 */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "client/memguard/client.h"

#define _hidden_ __attribute__((visibility("hidden")))
#define _public_ __attribute__((visibility("default")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Relaxed atomics for counters that one thread writes and stats read. */
#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define ADD(x, v) __atomic_fetch_add(&(x), (v), __ATOMIC_RELAXED)
#define SUB(x, v) __atomic_fetch_sub(&(x), (v), __ATOMIC_RELAXED)

#define MG_MIN_ALIGN 16                  /* bytes: alignof(max_align_t) */
#define MG_OS_PAGE 4096                  /* bytes: the kernel's page */

#define MG_PAGE_SHIFT 13
#define MG_PAGE_SIZE (UINT64_C(1) << MG_PAGE_SHIFT)      /* 8 KiB: the heap's page */
#define MG_OS_PER_PAGE (MG_PAGE_SIZE / MG_OS_PAGE)       /* 2 kernel pages per heap page */
#define ARENA_SHIFT 26
#define ARENA_SIZE (UINT64_C(1) << ARENA_SHIFT)          /* 64 MiB per reservation */
#define ARENA_PAGES (ARENA_SIZE >> MG_PAGE_SHIFT)        /* 8192 */
#define ARENA_FIRST_PAGE 2                               /* pages 0-1: the class map */
#define ARENA_ADDR_BITS 47                               /* user address space */
#define ARENA_MAP_LEN (UINT64_C(1) << (ARENA_ADDR_BITS - ARENA_SHIFT))

#define SMALL_MAX (256u << 10)           /* bytes: largest size class */
#define HUGE_MIN (4u << 20)              /* bytes: own mapping from this size on */
#ifndef RELEASE_MIN_PAGES
#define RELEASE_MIN_PAGES 8              /* pages: 64 KiB, smallest run released while churning */
#endif
#define SPAN_MAX_OS_PAGES 64             /* kernel pages in a small span at most (relmask) */

/* ---- arena.c ----------------------------------------------------------- */

/* Which use of memory a page has; one byte per page, beside the span map. */
struct arena {
	uintptr_t base;                  /* ARENA_SIZE-aligned */
	struct arena *next;              /* all arenas, newest first */
	struct span *spans[ARENA_PAGES]; /* in-use spans: every page; free: ends */
	uint64_t released[ARENA_PAGES * MG_OS_PER_PAGE / 64]; /* bit set = 4 KiB page given back */
};

typedef void *(*alloc_mmap_fn)(void *addr, size_t len, int prot, int flags, int fd,
			       off_t off);

_hidden_ extern struct arena *arena_map[ARENA_MAP_LEN];

/*
 * madvise(MADV_DONTNEED) on `n` ≤ 1024 ranges, in one process_madvise()
 * call where the kernel takes it for the calling process (one TLB flush
 * for the lot), else one madvise() per range.  0 or -errno.
 */
_hidden_ int arena_dontneed(const struct iovec *iov, unsigned n);

/*
 * Route the allocator's mmap() calls through `fn` (NULL: mmap(2) again).
 * For tests that inject failures: a hook returning MAP_FAILED with errno
 * ENOMEM must make allocations fail cleanly with ENOMEM.
 */
_hidden_ void alloc_set_mmap_hook(alloc_mmap_fn fn);

/* mmap() through the hook; MAP_FAILED and errno on failure. */
_hidden_ void *arena_mmap(void *addr, size_t len, int prot, int flags);

/* The arena holding `p`, or NULL (huge block, foreign pointer, NULL). */
static inline struct arena *arena_of(const void *p)
{
	uintptr_t i = (uintptr_t)p >> ARENA_SHIFT;

	/* One compare on the index the load needs anyway (≥ 2^47: not ours). */
	if (unlikely(i >= ARENA_MAP_LEN))
		return NULL;
	return __atomic_load_n(&arena_map[i], __ATOMIC_ACQUIRE);
}

/* Arenas are aligned to their size: no need to load the base. */
static inline size_t arena_page(const struct arena *ar, const void *p)
{
	return ((uintptr_t)p >> MG_PAGE_SHIFT) & (ARENA_PAGES - 1);
}

/* Where page i's class byte lies in the arena: base + this + i (in its
 * first two pages, which no span uses). */
#define ARENA_CLASS_SKEW 2048

/*
 * The class byte of the page holding `p` (size class + 1 of a small span,
 * else 0), for `p` known to be in an arena: one byte per page in the
 * arena's own first pages, found from `p` alone.  So free()'s fast path
 * loads it right after the arena map's entry instead of through it: the
 * CPU issues both at once, past the predicted test of the first.
 *
 * The bytes start ARENA_CLASS_SKEW into the arena: its first pages, the
 * ones a small heap uses, then have their bytes in the second half of a
 * 4 KiB page, and the skew costs one lea.  At offset 0 they sat
 * at page offsets 1..40, beside the link word of every span's first
 * object (offset 0) and a page-aligned thread cache's busiest bins; a load
 * whose low 12 address bits match a store still in flight waits for it
 * (4K aliasing), and free() loads the byte just after the program and
 * malloc() wrote there.  Measured: 8.2 → 7.8 CPU ns per malloc+free pair.
 */
static inline uint8_t *arena_class(const void *p)
{
	uintptr_t a = (uintptr_t)p;

	return (uint8_t *)((a & ~(uintptr_t)(ARENA_SIZE - 1)) + ARENA_CLASS_SKEW +
			   ((a >> MG_PAGE_SHIFT) & (ARENA_PAGES - 1)));
}

/*
 * Reserve a new ARENA_SIZE-aligned arena and publish it in arena_map.
 * Caller holds the page heap lock.  NULL (errno ENOMEM) when the kernel or
 * the hook refuses.
 */
_hidden_ struct arena *arena_new(void);

/* Bytes reserved in arenas. */
_hidden_ uint64_t arena_sys_bytes(void);

/*
 * Metadata memory: zeroed, 16-byte aligned, never returned (recycled by
 * its users through their own free lists).  NULL when mmap fails.
 */
_hidden_ void *meta_alloc(size_t size);

/* Bytes mapped for metadata. */
_hidden_ uint64_t meta_bytes(void);

/*
 * A huge block: its own mapping of at least `size` bytes, aligned to
 * `align` (a power of two; ≤ MG_OS_PAGE means page-aligned), registered so
 * mg_free() can find it by the pointer the user gets, mapping + `off` (the
 * debug heap's header; 0 otherwise).  `req` is what the user asked for.
 * Returns the mapping, or NULL with errno ENOMEM.
 */
_hidden_ void *huge_alloc(size_t size, size_t align, size_t req, size_t off);

/* Whether `p` is the user pointer of a live huge block; if so fill the
 * outputs (each may be NULL): usable bytes from p, the requested size and
 * the mapping's start. */
_hidden_ bool huge_lookup(const void *p, size_t *ret_usable, size_t *ret_req, void **ret_base);

/* Unmap the huge block whose user pointer is `p`; false if none is. */
_hidden_ bool huge_free(void *p);

/*
 * Resize the huge block at `p` to `size` bytes with mremap(MREMAP_MAYMOVE).
 * Returns the (possibly moved) block or NULL (errno set, `p` untouched).
 */
_hidden_ void *huge_realloc(void *p, size_t size, size_t req);

/* Bytes in huge mappings. */
_hidden_ uint64_t huge_bytes(void);

_hidden_ void arena_lock_all(void);   /* fork: huge and metadata locks */
_hidden_ void arena_unlock_all(void);
_hidden_ void arena_reinit_locks(void);

/* ---- span.c ------------------------------------------------------------ */

enum span_state {
	SPAN_FREE = 0,                   /* in the page heap's free lists */
	SPAN_SMALL,                      /* carved into objects of one size class */
	SPAN_LARGE,                      /* one large block */
	SPAN_BUSY,                       /* free, out of the lists while being released */
};

struct span {
	uintptr_t start;                 /* page-aligned address */
	uint32_t npages;
	uint8_t state;                   /* enum span_state */
	uint8_t list;                    /* free: which list category it is on */
	uint8_t sizeclass;               /* SPAN_SMALL */
	uint8_t in_partial;              /* SPAN_SMALL: on its class's partial list */
	struct span *next, *prev;        /* free lists, or the class's partial list */
	struct arena *arena;
	uint32_t nreleased;              /* free: 4 KiB pages given back */
	uint32_t nreleasable;            /* free: what it adds to releasable_os */
	uint32_t nfree;                  /* small: free objects (list + bump + released) */
	uint32_t nobjs;                  /* small: objects in the span */
	void *freelist;                  /* small: freed objects, linked by word 0 */
	uintptr_t bump;                  /* small: first never-used object */
	uintptr_t end;                   /* small: end of the last whole object; large: of the block */
	/*
	 * small: the span's 4 KiB pages given back (bit i: start + i·4 KiB).
	 * Every object that overlaps such a page is free and on no list;
	 * every other free object is on the freelist or at/after bump.  An
	 * allocation that finds neither takes a run of these pages back
	 * (central.c), so a refault costs only the fault.
	 */
	uint64_t relmask;
	/*
	 * small: its class's list of changed spans, the only ones a release
	 * sweep looks at: a span goes on it when it is carved (pages past
	 * bump may be resident from an earlier use) and when an object comes
	 * back to it, at most once until a sweep takes it off.
	 */
	struct span *dnext, *dprev;
	uint32_t dseq;                   /* small: when it went on that list (class counter) */
	uint32_t ver;                    /* small: bumped when an object comes back to it */
	uint32_t scan_ver;               /* small: ver when a sweep took it for release */
	uint8_t in_dirty;                /* small: on the changed list */
	uint8_t busy;                    /* small: pages of it are being released */
	uint8_t tail;                    /* large: enum span_tail */
};

/*
 * A large block's tail: the 4 KiB pages of its span past the block's end
 * (`end`, the requested size rounded up to 4 KiB, which is also its
 * usable size).  They hold no live byte and go back to the kernel like
 * free pages; the arena's released bitmap says which are.  A freed block
 * whose tail is being released is freed by the releaser once madvise has
 * returned, so its pages are never another block's while it runs.
 */
enum span_tail {
	TAIL_NONE = 0,                   /* nothing to release (or not large) */
	TAIL_LISTED,                     /* on the page heap's list of tails to release */
	TAIL_BUSY,                       /* being released, no lock held */
	TAIL_BUSY_FREED,                 /* being released, and the block was freed */
};

/* Page heap counters, in pages; a consistent snapshot. */
struct pageheap_stats {
	uint64_t arena_pages;            /* reserved in arenas */
	uint64_t free_pages;             /* free, released or not (busy included) */
	uint64_t released_os;            /* 4 KiB pages: free and given back (or never touched) */
	uint64_t small_released_os;      /* 4 KiB pages given back inside small spans */
	uint64_t large_released_os;      /* 4 KiB pages given back at large blocks' tails */
	uint64_t small_pages;            /* in small spans */
	uint64_t large_pages;            /* in large blocks */
	uint64_t releasable_os;          /* 4 KiB pages: free, resident, in free spans ≥ 64 KiB */
	uint64_t alloc_count;            /* spans handed out, ever */
	uint64_t meta_bytes;             /* resident span structs (bytes, not pages) */
};

/* Bytes of free resident pages in free spans ≥ 64 KiB, read without the
 * lock. */
_hidden_ uint64_t pageheap_releasable(void);

/* Count `delta` 4 KiB pages more (or fewer) as given back inside small
 * spans (central.c's release and refault). */
_hidden_ void pageheap_note_small_released(long delta);

/* The span holding page-aligned or not address `p` in arena `ar`. */
static inline struct span *span_of(struct arena *ar, const void *p)
{
	return __atomic_load_n(&ar->spans[arena_page(ar, p)], __ATOMIC_ACQUIRE);
}

/*
 * Allocate `npages` pages aligned to `align_pages` (a power of two, 1 for
 * none) as a span in state `state` (SPAN_SMALL or SPAN_LARGE; for small,
 * `sizeclass` is recorded in the page map).  Prefers resident free pages,
 * then partly released ones, then released ones, then a new arena.
 * `*ret_zeroed` (may be NULL) tells whether every page was released or
 * never touched, so reads as zero.  NULL with errno ENOMEM.
 */
_hidden_ struct span *pageheap_alloc(size_t npages, size_t align_pages, enum span_state state,
				     unsigned sizeclass, bool *ret_zeroed);

/* Give a small or large span back; it coalesces with free neighbours.  A
 * small span's released pages (relmask) stay released, and counted so. */
_hidden_ void pageheap_free(struct span *s);

/*
 * A large block of `bytes`: a SPAN_LARGE span of whole pages whose `end`
 * is start + `bytes` rounded up to 4 KiB; the pages past it are its tail
 * (enum span_tail).  `*ret_zeroed` tells whether the block's own pages
 * read as zero.  Otherwise as pageheap_alloc().
 */
_hidden_ struct span *pageheap_alloc_large(size_t bytes, size_t align_pages, bool *ret_zeroed);

/*
 * Make the large block `s` `bytes` long in place: fewer pages (the rest
 * freed), or the free pages right after it, or the same pages with a new
 * end.  False when it cannot (the pages after it are not free, or its
 * tail is being released); the block is then unchanged.
 */
_hidden_ bool pageheap_large_resize(struct span *s, size_t bytes);

/*
 * Give back the tails of large blocks that have pages not yet released,
 * about `max_pages` heap pages' worth, in one batch with no lock held;
 * a page already released is never advised again.  Returns the bytes
 * newly released (0: no tail left) or -errno.
 */
_hidden_ long pageheap_release_tails(size_t max_pages);

/*
 * One release step: from the largest free spans of ≥ `min_pages` pages
 * that have resident 4 KiB pages, cut windows of at most `max_pages` pages
 * in all, mark them busy, and give their resident 4 KiB pages back in one
 * batch with no lock held; a page already released is never advised
 * again.  Returns the bytes newly released (0: nothing releasable is
 * left) or -errno when the kernel refuses.
 */
_hidden_ long pageheap_release_step(size_t max_pages, size_t min_pages);

_hidden_ void pageheap_get_stats(struct pageheap_stats *ret);

/* Give back the pages of span structs that are all free (keeping one
 * slab's worth), after a large heap has emptied. */
_hidden_ void pageheap_trim_meta(void);

_hidden_ void pageheap_lock(void);
_hidden_ void pageheap_unlock(void);
_hidden_ void pageheap_reinit_lock(void);

/* ---- sizeclass.c ------------------------------------------------------- */

/*
 * Classes: 16 to 128 B in steps of 16, then eight per power of two
 * (2^k + j·2^(k−3), j = 1..8) up to SMALL_MAX.  A request of s > 128 B
 * lands in a class c with c − s < 2^(k−3) ≤ s / 8: under 12.5 % waste.
 */
#define NCLASSES 96

struct sizeclass {
	uint32_t size;                   /* bytes per object */
	uint32_t pages;                  /* pages per span */
	uint32_t objs;                   /* objects per span */
	uint32_t batch;                  /* objects moved between a thread and central */
	uint32_t tcache_max;             /* objects a thread keeps; 0 = not cached */
};

_hidden_ extern struct sizeclass sizeclasses[NCLASSES];
/* By (size + 15) / 16: the byte offset in a thread cache's bins[] of the
 * class's bin (bins[class + 1]), so that malloc()'s fast path adds it
 * without a multiply; 0 (bins[0], empty) before sizeclass_init(). */
#define SIZECLASS_LUT_STEP 16            /* = sizeof(struct tbin) */
_hidden_ extern uint16_t sizeclass_lut[1024 / 16 + 1];

/* Fill the table (idempotent). */
_hidden_ void sizeclass_init(void);

/* The class of a request of `size` ≤ SMALL_MAX bytes (0 counts as 1), by
 * arithmetic: usable before sizeclass_init(). */
static inline unsigned sizeclass_compute(size_t size)
{
	unsigned k;

	if (size <= 128)
		return size ? (unsigned)(size - 1) >> 4 : 0;
	k = 63 - (unsigned)__builtin_clzl(size - 1);
	return 8 + (k - 7) * 8 + (unsigned)((size - 1 - (UINT64_C(1) << k)) >> (k - 3));
}

/* The same, by table for the common sizes; after sizeclass_init(). */
static inline unsigned sizeclass_of(size_t size)
{
	if (likely(size <= 1024))
		return sizeclass_lut[(size + 15) >> 4] / SIZECLASS_LUT_STEP - 1u;
	return sizeclass_compute(size);
}

/* The smallest class ≥ `size` whose objects are all `align`-aligned
 * (align a power of two ≤ MG_PAGE_SIZE), or -1 if none is small. */
_hidden_ int sizeclass_aligned(size_t size, size_t align);

/* ---- central.c --------------------------------------------------------- */

/*
 * Take up to `n` objects of class `cls` as a list linked through word 0;
 * returns how many (0 with errno ENOMEM when the page heap is out).
 */
_hidden_ unsigned central_get(unsigned cls, unsigned n, void **ret_head);

/* Give back `n` objects of class `cls` linked through word 0 from `head`. */
_hidden_ void central_put(unsigned cls, void *head, unsigned n);

/* Return the transfer caches' objects to their spans, so that whole free
 * spans go back to the page heap. */
_hidden_ void central_drain(void);

/*
 * One step of a release sweep over the partly used small spans, class by
 * class: give back every 4 KiB page of a span that holds no live byte (its
 * free objects' links are rebuilt off those pages first), in one batch,
 * with no lock held across the madvise.  A sweep looks only at the spans
 * that changed since a sweep last looked at them (an object came back, or
 * the span is new), each once, oldest change first: its cost follows
 * what the frees since the last sweep can have made releasable, not the
 * size of the heap.  `restart` begins a new sweep.  A step ends after ~`max_bytes` or one batch.  Returns the bytes released or -errno; `*ret_more` is false
 * once the sweep is over.
 */
_hidden_ long central_release_step(size_t max_bytes, bool restart, bool *ret_more);

/* Objects given back to their spans so far (monotonic): what the
 * scavenger watches to know whether a new sweep could find anything. */
_hidden_ uint64_t central_span_frees(void);

/*
 * Bytes of small objects out of the central lists: in use by the program
 * or sitting in a thread cache.  Counted per batch under the class locks,
 * so the fast paths count nothing.
 */
_hidden_ uint64_t central_out_bytes(void);

_hidden_ void central_lock_all(void);
_hidden_ void central_unlock_all(void);
_hidden_ void central_reinit_locks(void);

/* ---- tcache.c ---------------------------------------------------------- */

struct tbin {
	void *head;                      /* free objects linked through word 0 */
	uint32_t room;                   /* objects it may still take: max − count */
	uint32_t max;                    /* objects it holds at most; 0 = not cached */
};
_Static_assert(sizeof(struct tbin) == SIZECLASS_LUT_STEP, "sizeclass_lut holds bin offsets");

/* Objects in the bin.  The fast paths keep `room` rather than the count:
 * free() then tests one field, not two. */
static inline uint32_t tbin_count(const struct tbin *b)
{
	return b->max - b->room;
}

/*
 * bins[0] is never used: a class's bin is bins[class + 1], the index the
 * page map's class byte holds (sizeclass_lut: its offset), and 0 there (not a small
 * span) finds an empty bin with no room, so the fast paths need no test
 * for it.  For the same reason a thread with no cache of its own points
 * at tcache_none, whose bins are all like that: never NULL.
 */
struct tcache {
	struct tbin bins[NCLASSES + 1];
	uint32_t flush_req;              /* set by mg_heap_release(): flush when seen */
	struct tcache *next, *prev;      /* registry */
};

enum tcache_state {
	TCACHE_NONE = 0,                 /* not created yet */
	TCACHE_INIT,                     /* being created: allocate directly */
	TCACHE_LIVE,
	TCACHE_DEAD,                     /* thread exiting: allocate directly */
};

_hidden_ extern __thread struct tcache *tls_tcache __attribute__((tls_model("initial-exec")));
_hidden_ extern struct tcache tcache_none;

static inline struct tbin *tcache_bin(struct tcache *tc, unsigned cls)
{
	return &tc->bins[cls + 1];
}
_hidden_ extern __thread uint8_t tls_tcache_state __attribute__((tls_model("initial-exec")));

/* Create the key whose destructor flushes a thread's cache.  0 or -errno. */
_hidden_ int tcache_global_init(void);

/* The calling thread's cache, created on first use; NULL while that is
 * not possible (creating, exiting, out of memory).  (tls_tcache is then
 * &tcache_none.) */
_hidden_ struct tcache *tcache_get(void);

/* Slow paths of the fast inline ones in malloc.c. */
_hidden_ void *tcache_refill(struct tcache *tc, unsigned cls);
_hidden_ void tcache_overflow(struct tcache *tc, unsigned cls);

/* Give every cached object of `tc` back to central. */
_hidden_ void tcache_flush(struct tcache *tc);

/* Ask every thread to flush at its next slow path; flush the caller's now. */
_hidden_ void tcache_flush_all(void);

/* Bytes of objects sitting in thread caches (a racy sum while threads
 * run, exact when they are quiet). */
_hidden_ uint64_t tcache_cached_bytes(void);

_hidden_ void tcache_lock_all(void);
_hidden_ void tcache_unlock_all(void);
/* In the child after fork(): flush the caches of threads that are gone. */
_hidden_ void tcache_after_fork_child(void);

/* ---- malloc.c ---------------------------------------------------------- */

/* Make the allocator usable (idempotent, cheap once done).  0 or -errno. */
_hidden_ int alloc_init(void);

/*
 * fork() and libmemguard-client: a function for the allocator to call once
 * in a child, so that a program that never calls the client library (the
 * preload library's own client) still gets its client back after a fork()
 * without exec.  The allocator knows nothing of the client.  `fn` is
 * registered once (NULL: none); alloc_fork_hook_arm(), from a pthread_atfork()
 * child handler registered after the client's own, makes the next slow path
 * call it: a thread cache refill, or an allocation no thread cache serves.
 * The fast paths never look, the slow ones pay one relaxed load; `fn` runs
 * with no allocator lock held and may allocate.
 */
_hidden_ void alloc_set_fork_hook(void (*fn)(void));
_hidden_ void alloc_fork_hook_arm(void);
_hidden_ extern int alloc_fork_pending;
_hidden_ void alloc_fork_hook_run(void);

/* True (once) when the fork hook ran; the caller then looks again at what
 * the hook may have allocated from. */
static inline bool alloc_fork_check(void)
{
	if (likely(!LOAD(alloc_fork_pending)))
		return false;
	alloc_fork_hook_run();
	return true;
}

/* The lowest number the library's descriptors take: programs count their
 * own from 3 (LISTEN_FDS, pass_fds, a shell's redirections), so ours stay
 * out of their way.  Halved when RLIMIT_NOFILE is lower. */
#define MG_FD_FLOOR 512

/* `fd` (or -errno when it is negative) moved to the lowest free number at
 * or above MG_FD_FLOOR, close-on-exec; `fd` itself when there is no room
 * there.  The allocator's descriptor and the client's all go through it. */
static inline int alloc_fd_high(int fd)
{
	struct rlimit rl;
	rlim_t floor = MG_FD_FLOOR;
	int high;

	if (fd < 0)
		return -errno;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && floor >= rl.rlim_cur)
		floor = rl.rlim_cur / 2;
	if ((rlim_t)fd >= floor)
		return fd;
	high = fcntl(fd, F_DUPFD_CLOEXEC, (int)floor);
	if (high < 0)
		return fd;
	close(fd);
	return high;
}

/*
 * The library's own threads (the scavenger, libmemguard-client's) must not
 * keep a process alive: true, to one caller only, once every thread of
 * the program has ended (the leader is a zombie and only threads named
 * "memguard" or "mg-scavenger" are left).  That caller then calls
 * exit(0), as glibc does after a process's last thread.  Cheap enough for
 * every tick of a thread: one pread() while the leader lives.
 */
_hidden_ bool alloc_lone_claim(void);

/* The slow paths behind alloc_malloc_fast() and alloc_free_fast(). */
_hidden_ void *alloc_malloc_slow(size_t size);
_hidden_ void alloc_free_slow(void *p);

/*
 * malloc() and free() as they run almost always: one object from or to the
 * calling thread's cache, no lock, no atomic read-modify-write.  Inline so
 * that mg_malloc() and the preload library's malloc() are each one call.
 * malloc's inline part takes sizes up to 1 KiB (one table load for the
 * class); larger cached sizes take one more call.
 */
static inline void *alloc_malloc_fast(size_t size)
{
	struct tcache *tc = tls_tcache;

	if (likely(size <= 1024)) {
		struct tbin *b = (struct tbin *)((char *)tc->bins + sizeclass_lut[(size + 15) >> 4]);
		void *p = b->head;

		if (likely(p)) {
			b->head = *(void **)p;
			b->room++;
			return p;
		}
	}
	return alloc_malloc_slow(size);
}

static inline void alloc_free_fast(void *p)
{
	struct arena *ar = arena_of(p);

	if (likely(ar)) {
		struct tbin *b = &tls_tcache->bins[*arena_class(p)];

		if (likely(b->room)) {
			*(void **)p = b->head;
			b->head = p;
			b->room--;
			return;
		}
	}
	alloc_free_slow(p);
}

/* ---- scavenge.c -------------------------------------------------------- */

#define SCAV_TICK_MS 100                 /* ms between looks at the heap while busy */
#define SCAV_IDLE_TICK_MS 500            /* ms between looks when nothing changed */
#define SCAV_DUTY_CHURN_PPM 9000         /* ppm of a core while churning: 1 % less a margin */
#define SCAV_DUTY_IDLE_PPM 250000        /* ppm of a core once the heap went quiet */
#define SCAV_RESWEEP_OBJS 4096           /* objects back in spans that start a new sweep */
#define SCAV_BUSY_FREES 1024             /* objects back in spans per tick that mean churn */
#define SCAV_CHUNK_PAGES 128             /* pages per madvise step: 1 MiB */
#define SCAV_START_BYTES (1u << 20)      /* releasable bytes that start the thread */
#define SCAV_START_HEAP (8u << 20)       /* resident heap bytes that start it too */
#define SCAV_RETAIN_PERMILLE 1100        /* default goal: live × 1.10 */

/* What the scavenger did, for tests and the benchmark. */
struct scav_stats {
	bool running;
	uint64_t cpu_ns;                 /* the thread's CPU time, user + system */
	uint64_t released_bytes;         /* by the thread */
	uint64_t wakeups;
	bool settled;                    /* its last look found nothing more to release */
};

/*
 * Start the scavenger thread if it is not running and there is work for it
 * (free memory to return, or a heap of SCAV_START_HEAP bytes that will
 * have some).  Call with no allocator lock held, from an allocation or an
 * API call, never from free(): glibc frees a finished thread's TLS under
 * its stack cache lock, which pthread_create() takes too (a deadlock seen
 * under CPython's test_multiprocessing_fork).
 */
_hidden_ void scavenger_kick(void);

/*
 * From free(): note that the scavenger has work, for the next allocation's
 * slow path to start it (alloc_grew()).  Creates nothing.
 */
_hidden_ extern int scav_wanted;
_hidden_ void scavenger_want(void);

/* The goal in bytes of resident heap (sys − released) right now. */
_hidden_ uint64_t scavenger_goal(void);

_hidden_ void scavenger_get_stats(struct scav_stats *ret);

/* Stop the thread and wait for it (tests).  It restarts on the next kick. */
_hidden_ void scavenger_stop(void);

/* Keep the thread from starting (tests that need a quiet heap). */
_hidden_ void scavenger_disable(bool disable);

/* In the child after fork(): the thread is gone. */
_hidden_ void scavenger_after_fork_child(void);

/* ---- watch.c ----------------------------------------------------------- */

/*
 * The growth watch behind libmemguard-client's local limit (the client's
 * logic is client/limit.c; alloc_watch_set() is declared in
 * client-internal.h).  alloc_grew() is called where the heap can grow, with
 * no allocator lock held: after a thread cache refill, a small allocation
 * straight from central, a large or a huge block.  With no watch it is one
 * relaxed load; with one, it compares alloc_resident_bytes() with the
 * watched bytes and calls the watch's function when above.
 */
_hidden_ extern uint64_t alloc_watch_bytes;
_hidden_ void alloc_watch_check(void);

static inline void alloc_grew(void)
{
	if (unlikely(LOAD(alloc_watch_bytes)))
		alloc_watch_check();
	scavenger_kick();
}

/* Resident heap bytes: arena pages not released, plus huge mappings. */
_hidden_ uint64_t alloc_resident_bytes(void);

/* ---- stats.c ----------------------------------------------------------- */

/*
 * Everything mg_heap_stats() reports, plus the parts it is made of, for
 * tests: sys = inuse + idle + released holds by construction of the parts,
 * not by subtraction.
 */
struct alloc_stats {
	struct mg_heap_stats heap;
	uint64_t small_inuse;
	uint64_t large_inuse;
	uint64_t huge;
	uint64_t small_span_bytes;       /* pages in small spans */
	uint64_t small_released;         /* of those, given back (no live byte on them) */
	uint64_t free_resident;          /* page heap: free, not released */
};

_hidden_ void alloc_get_stats(struct alloc_stats *ret);

/* ---- debug heap (malloc.c, MG_DEBUG_HEAP) ------------------------------ */

#define DEBUG_HDR 16                     /* bytes before the user pointer, at least */
#define DEBUG_MAGIC_LIVE 0x6d67a11cu     /* header word of a live block */
#define DEBUG_MAGIC_FREE 0x6d67f4eeu     /* header word of a freed block */
#define DEBUG_GUARD 0xab                 /* byte after the requested size */
