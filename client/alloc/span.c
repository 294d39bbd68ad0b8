/* SPDX-License-Identifier: MIT */
/*
 * The page heap.  Every page of every arena belongs to exactly one span:
 * free, busy (free but being released), small or large.  Free spans sit on
 * lists by size (1..127 pages exactly, one list for ≥ 128) and by how much
 * of them is released, so allocation can take resident pages first:
 *
 *	CLEAN      no page released
 *	MIXED_REL  some released, ≥ 64 KiB long
 *	MIXED      some released, shorter than 64 KiB
 *	RELEASED   every page released (new arenas start so)
 *
 * Which pages are released is one bit per 4 KiB page (the kernel's) in
 * the arena, so that half of a heap page can be given back while its
 * other half holds a live object of a small span; a span's count of them
 * follows it through splits and merges.  Released pages need nothing done
 * when they are reused: the kernel faults in zero pages.  While the heap
 * churns, the scavenger releases free runs of ≥ 64 KiB only (a page
 * released now would be faulted back soon); once it is quiet, and in
 * mg_heap_release(), every free resident page goes.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "client/alloc/alloc.h"

#define NBUCKETS 129                     /* 1..127 pages exactly, 128: ≥ 128 pages */
#define SLAB_BYTES (64u << 10)           /* span structs are mapped this much at a time */
#define SLAB_HDR MG_OS_PAGE              /* bytes: the slab header's page, kept */

enum {
	L_CLEAN,
	L_MIXED_REL,
	L_MIXED,
	L_RELEASED,
	NLISTS,
};

#define SPAN_POOLED 0xff                 /* state of a span struct in the pool */
#define REL_BATCH_SPANS 32               /* busy windows per release step */
#define REL_BATCH_IOV 256                /* ranges per madvise batch */

static pthread_mutex_t ph_lock = PTHREAD_MUTEX_INITIALIZER;
static struct span *lists[NLISTS][NBUCKETS];
/* Large blocks whose tail (pages past the block's end) has a page not
 * released, and those whose tail is being released, by next/prev. */
static struct span *tails, *tails_busy;
static uint64_t nonempty[NLISTS][(NBUCKETS + 63) / 64];
static struct pageheap_stats st;

/*
 * Span structs live in slabs of their own, aligned to their size, so that
 * a slab whose structs are all free can give its pages back: a burst of
 * small objects needs ~90 bytes per 8 KiB span, megabytes that would
 * otherwise stay after the heap is empty.
 */
struct span_slab {
	struct span_slab *next, *prev;   /* on slabs_free, or on slabs_released */
	struct span *free;               /* free structs, linked by next */
	uint32_t nfree, total;
};

static struct span_slab *slabs_free;     /* slabs with a free struct */
static struct span_slab *slabs_released; /* slabs whose struct pages went back */

/* ---- the released-page bitmap ------------------------------------------ */

/* Positions and counts below are in 4 KiB pages of the arena. */

static unsigned bits_count(const struct arena *ar, size_t first, size_t n)
{
	unsigned c = 0;

	while (n) {
		size_t w = first / 64, b = first % 64, take = 64 - b;
		uint64_t word = ar->released[w] >> b;

		if (take > n)
			take = n;
		if (take < 64)
			word &= (UINT64_C(1) << take) - 1;
		c += (unsigned)__builtin_popcountll(word);
		first += take;
		n -= take;
	}
	return c;
}

static void bits_assign(struct arena *ar, size_t first, size_t n, bool set)
{
	while (n) {
		size_t w = first / 64, b = first % 64, take = 64 - b;
		uint64_t mask;

		if (take > n)
			take = n;
		mask = (take == 64 ? ~UINT64_C(0) : (UINT64_C(1) << take) - 1) << b;
		if (set)
			ar->released[w] |= mask;
		else
			ar->released[w] &= ~mask;
		first += take;
		n -= take;
	}
}

/* The first page in [pos, end) whose bit equals `set`, or `end`. */
static size_t bits_next(const struct arena *ar, size_t pos, size_t end, bool set)
{
	while (pos < end) {
		uint64_t word = ar->released[pos / 64];

		if (!set)
			word = ~word;
		word >>= pos % 64;
		if (word) {
			pos += (size_t)__builtin_ctzll(word);
			return pos < end ? pos : end;
		}
		pos = (pos / 64 + 1) * 64;
	}
	return end;
}

static size_t os_of(size_t page)
{
	return page * MG_OS_PER_PAGE;
}

/* ---- span structs and the page map ------------------------------------- */

static struct span_slab *slab_of(const struct span *s)
{
	return (struct span_slab *)((uintptr_t)s & ~(uintptr_t)(SLAB_BYTES - 1));
}

/* Push `x` on, or take it off, the doubly linked list `*list` through its
 * next and prev: slabs, and large spans' tails. */
#define DLIST_PUSH(list, x)                                                                    \
	do {                                                                                   \
		(x)->prev = NULL;                                                              \
		(x)->next = *(list);                                                           \
		if ((x)->next)                                                                 \
			(x)->next->prev = (x);                                                 \
		*(list) = (x);                                                                 \
	} while (0)

#define DLIST_UNLINK(list, x)                                                                  \
	do {                                                                                   \
		if ((x)->prev)                                                                 \
			(x)->prev->next = (x)->next;                                           \
		else                                                                           \
			*(list) = (x)->next;                                                   \
		if ((x)->next)                                                                 \
			(x)->next->prev = (x)->prev;                                           \
		(x)->next = (x)->prev = NULL;                                                  \
	} while (0)

static void slab_link(struct span_slab **list, struct span_slab *slab)
{
	DLIST_PUSH(list, slab);
}

static void slab_unlink(struct span_slab **list, struct span_slab *slab)
{
	DLIST_UNLINK(list, slab);
}

/* A slab with every struct free: a released one again, or a new mapping. */
static struct span_slab *slab_new(void)
{
	struct span_slab *slab = slabs_released;
	struct span *first;
	uint32_t i;

	if (slab) {
		slab_unlink(&slabs_released, slab);
	} else {
		uint8_t *p = arena_mmap(NULL, 2 * SLAB_BYTES, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS);
		uintptr_t a, aligned;

		if (p == MAP_FAILED)
			return NULL;
		a = (uintptr_t)p;
		aligned = (a + SLAB_BYTES - 1) & ~(uintptr_t)(SLAB_BYTES - 1);
		if (aligned > a)
			munmap(p, aligned - a);
		munmap((void *)(aligned + SLAB_BYTES), a + SLAB_BYTES - aligned);
		slab = (struct span_slab *)aligned;
		st.meta_bytes += SLAB_HDR;
	}
	first = (struct span *)((uint8_t *)slab + SLAB_HDR);
	slab->total = (SLAB_BYTES - SLAB_HDR) / sizeof(struct span);
	slab->nfree = slab->total;
	slab->free = NULL;
	for (i = slab->total; i--;) {
		first[i].state = SPAN_POOLED;
		first[i].next = slab->free;
		slab->free = &first[i];
	}
	st.meta_bytes += SLAB_BYTES - SLAB_HDR;
	return slab;
}

static struct span *span_new(void)
{
	struct span_slab *slab = slabs_free;
	struct span *s;

	if (!slab) {
		slab = slab_new();
		if (!slab)
			return NULL;
		slab_link(&slabs_free, slab);
	}
	s = slab->free;
	slab->free = s->next;
	if (!--slab->nfree)
		slab_unlink(&slabs_free, slab);
	memset(s, 0, sizeof(*s));
	return s;
}

static void span_put(struct span *s)
{
	struct span_slab *slab = slab_of(s);

	s->state = SPAN_POOLED;
	s->next = slab->free;
	slab->free = s;
	if (!slab->nfree++)
		slab_link(&slabs_free, slab);
}

void pageheap_trim_meta(void)
{
	struct span_slab *slab, *next;
	bool kept_one = false;

	pthread_mutex_lock(&ph_lock);
	for (slab = slabs_free; slab; slab = next) {
		next = slab->next;
		if (slab->nfree != slab->total)
			continue;
		/* One whole free slab stays, so the next span costs no fault. */
		if (!kept_one) {
			kept_one = true;
			continue;
		}
		slab_unlink(&slabs_free, slab);
		madvise((uint8_t *)slab + SLAB_HDR, SLAB_BYTES - SLAB_HDR, MADV_DONTNEED);
		st.meta_bytes -= SLAB_BYTES - SLAB_HDR;
		slab_link(&slabs_released, slab);
	}
	pthread_mutex_unlock(&ph_lock);
}

static size_t span_first(const struct span *s)
{
	return arena_page(s->arena, (void *)s->start);
}

static void map_ends(struct span *s)
{
	size_t first = span_first(s);

	__atomic_store_n(&s->arena->spans[first], s, __ATOMIC_RELEASE);
	__atomic_store_n(&s->arena->spans[first + s->npages - 1], s, __ATOMIC_RELEASE);
}

static void map_all(struct span *s, uint8_t cls1)
{
	size_t first = span_first(s), i;

	for (i = first; i < first + s->npages; i++) {
		__atomic_store_n(&s->arena->spans[i], s, __ATOMIC_RELEASE);
		*arena_class((void *)(s->arena->base + i * MG_PAGE_SIZE)) = cls1;
	}
}

/* ---- free lists ---------------------------------------------------------- */

static unsigned bucket_of(size_t npages)
{
	return npages < NBUCKETS - 1 ? (unsigned)npages : NBUCKETS - 1;
}

static void free_insert(struct span *s)
{
	unsigned cat, b = bucket_of(s->npages);

	if (s->nreleased == 0)
		cat = L_CLEAN;
	else if (s->nreleased == os_of(s->npages))
		cat = L_RELEASED;
	else if (s->npages >= RELEASE_MIN_PAGES)
		cat = L_MIXED_REL;
	else
		cat = L_MIXED;
	if (s->npages >= RELEASE_MIN_PAGES)
		s->nreleasable = (uint32_t)os_of(s->npages) - s->nreleased;
	else
		s->nreleasable = 0;
	s->state = SPAN_FREE;
	s->list = (uint8_t)cat;
	s->prev = NULL;
	s->next = lists[cat][b];
	if (s->next)
		s->next->prev = s;
	lists[cat][b] = s;
	nonempty[cat][b / 64] |= UINT64_C(1) << (b % 64);
	__atomic_store_n(&st.releasable_os, st.releasable_os + s->nreleasable, __ATOMIC_RELAXED);
}

static void free_remove(struct span *s)
{
	unsigned b = bucket_of(s->npages);

	if (s->prev)
		s->prev->next = s->next;
	else
		lists[s->list][b] = s->next;
	if (s->next)
		s->next->prev = s->prev;
	if (!lists[s->list][b])
		nonempty[s->list][b / 64] &= ~(UINT64_C(1) << (b % 64));
	__atomic_store_n(&st.releasable_os, st.releasable_os - s->nreleasable, __ATOMIC_RELAXED);
	s->nreleasable = 0;
	s->next = s->prev = NULL;
}

/* The first non-empty bucket ≥ b of list `cat`, or NBUCKETS. */
static unsigned bucket_next(unsigned cat, unsigned b)
{
	while (b < NBUCKETS) {
		uint64_t w = nonempty[cat][b / 64] >> (b % 64);

		if (w)
			return b + (unsigned)__builtin_ctzll(w);
		b = (b / 64 + 1) * 64;
	}
	return NBUCKETS;
}

/* Best fit for `npages` in list `cat`. */
static struct span *find_in(unsigned cat, size_t npages)
{
	unsigned b = bucket_next(cat, bucket_of(npages));
	struct span *s, *best = NULL;

	if (b == NBUCKETS)
		return NULL;
	if (b < NBUCKETS - 1)
		return lists[cat][b];
	for (s = lists[cat][b]; s; s = s->next)
		if (s->npages >= npages && (!best || s->npages < best->npages))
			best = s;
	return best;
}

/* Merge the free span `s` (off the lists) with free neighbours, then list
 * it.  Neighbours are found through the map entries of the pages just
 * outside it, which are always the ends of the adjoining spans. */
static void coalesce_insert(struct span *s)
{
	struct arena *ar = s->arena;
	size_t first = span_first(s), last = first + s->npages - 1;

	if (first > 0) {
		struct span *l = ar->spans[first - 1];

		if (l && l->state == SPAN_FREE && l->start + l->npages * MG_PAGE_SIZE == s->start) {
			free_remove(l);
			s->start = l->start;
			s->npages += l->npages;
			s->nreleased += l->nreleased;
			span_put(l);
		}
	}
	if (last + 1 < ARENA_PAGES) {
		struct span *r = ar->spans[last + 1];

		if (r && r->state == SPAN_FREE && r->start == s->start + s->npages * MG_PAGE_SIZE) {
			free_remove(r);
			s->npages += r->npages;
			s->nreleased += r->nreleased;
			span_put(r);
		}
	}
	map_ends(s);
	free_insert(s);
}

/* A free span for the pages [first, first + n) of `ar`, listed. */
static void insert_piece(struct span *piece, struct arena *ar, size_t first, size_t n)
{
	piece->arena = ar;
	piece->start = ar->base + first * MG_PAGE_SIZE;
	piece->npages = (uint32_t)n;
	piece->nreleased = bits_count(ar, os_of(first), os_of(n));
	map_ends(piece);
	free_insert(piece);
}

/* Grow by one arena; it joins the lists as a released span.  Caller holds
 * the lock. */
static int grow(void)
{
	struct span *s = span_new();
	struct arena *ar;

	if (!s)
		return -ENOMEM;
	ar = arena_new();
	if (!ar) {
		span_put(s);
		return -ENOMEM;
	}
	/* Pages 0-1 are the arena's class map: never a span's, counted
	 * as metadata, not as heap. */
	s->arena = ar;
	s->start = ar->base + ARENA_FIRST_PAGE * MG_PAGE_SIZE;
	s->npages = ARENA_PAGES - ARENA_FIRST_PAGE;
	s->nreleased = (uint32_t)os_of(s->npages);
	st.arena_pages += s->npages;
	st.free_pages += s->npages;
	st.released_os += os_of(s->npages);
	map_ends(s);
	free_insert(s);
	return 0;
}

/*
 * The runs of 4 KiB pages not released in [*pos, stop) of `ar`, as at
 * most `room` ranges into `iov`; `*pos` ends where the last one ends
 * (stop when all fitted).  Returns how many.
 */
static unsigned resident_runs(const struct arena *ar, size_t *pos, size_t stop, struct iovec *iov,
			      unsigned room)
{
	unsigned n = 0;

	while (*pos < stop && n < room) {
		size_t r0 = bits_next(ar, *pos, stop, false), r1;

		if (r0 == stop)
			break;
		r1 = bits_next(ar, r0, stop, true);
		iov[n].iov_base = (void *)(ar->base + r0 * MG_OS_PAGE);
		iov[n].iov_len = (r1 - r0) * MG_OS_PAGE;
		n++;
		*pos = r1;
	}
	return n;
}

/* ---- large blocks' tails ------------------------------------------------- */

/* The 4 KiB pages of large span `s` past its block's end: the first (in
 * the arena's 4 KiB pages) and how many. */
static size_t tail_first(const struct span *s)
{
	return os_of(span_first(s)) + (s->end - s->start) / MG_OS_PAGE;
}

static size_t tail_len(const struct span *s)
{
	return os_of(s->npages) - (s->end - s->start) / MG_OS_PAGE;
}

static void tail_link(struct span **list, struct span *s)
{
	DLIST_PUSH(list, s);
}

static void tail_unlink(struct span **list, struct span *s)
{
	DLIST_UNLINK(list, s);
}

/* List the large span `s` (tail TAIL_NONE) if its tail has a page that
 * is not released. */
static void tail_note(struct span *s)
{
	size_t n = tail_len(s);

	if (n && bits_count(s->arena, tail_first(s), n) < n) {
		tail_link(&tails, s);
		s->tail = TAIL_LISTED;
	}
}

static void tail_forget(struct span *s)
{
	if (s->tail == TAIL_LISTED)
		tail_unlink(&tails, s);
	s->tail = TAIL_NONE;
}

/* ---- allocation ----------------------------------------------------------- */

/* Where in the free span `s` the `npages` to hand out begin, in pages
 * from its start: aligned to `align_pages`, or at the end with fewer
 * released pages (fewer faults), or at its start. */
static size_t cut_offset(const struct span *s, size_t npages, size_t align_pages)
{
	struct arena *ar = s->arena;
	size_t first = span_first(s);

	if (align_pages > 1) {
		uintptr_t page = s->start >> MG_PAGE_SHIFT;

		return (size_t)(((page + align_pages - 1) & ~(uintptr_t)(align_pages - 1)) - page);
	}
	if (s->list == L_MIXED_REL || s->list == L_MIXED) {
		unsigned front = bits_count(ar, os_of(first), os_of(npages));
		unsigned back = bits_count(ar, os_of(first + s->npages - npages), os_of(npages));

		return back < front ? s->npages - npages : 0;
	}
	return 0;
}

/* pageheap_alloc(); a large block is `bytes` long (its span's tail past
 * them keeps its released pages released). */
static struct span *alloc_span(size_t npages, size_t align_pages, enum span_state state,
			       unsigned sizeclass, size_t bytes, bool *ret_zeroed)
{
	size_t want = npages + align_pages - 1, first, off, rel, nblock = os_of(npages), rtail = 0;
	struct span *s = NULL, *head = NULL, *tail = NULL;
	struct arena *ar;
	unsigned cat;

	if (want > ARENA_PAGES - ARENA_FIRST_PAGE) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_lock(&ph_lock);
	/* Spare structs for the pieces cut off either side, taken first so
	 * that nothing can fail once the span is off its list. */
	head = span_new();
	tail = span_new();
	if (!head || !tail)
		goto out;
	for (;;) {
		for (cat = 0; cat < NLISTS && !s; cat++)
			s = find_in(cat, want);
		if (s)
			break;
		if (grow() < 0)
			goto out;
	}
	off = cut_offset(s, npages, align_pages);
	free_remove(s);
	ar = s->arena;
	first = span_first(s);
	if (off) {
		insert_piece(head, ar, first, off);
		head = NULL;
	}
	if (off + npages < s->npages) {
		insert_piece(tail, ar, first + off + npages, s->npages - off - npages);
		tail = NULL;
	}
	first += off;
	if (state == SPAN_LARGE) {
		/* The tail's released pages stay released: no live byte
		 * will be on them. */
		nblock = (bytes + MG_OS_PAGE - 1) / MG_OS_PAGE;
		rtail = bits_count(ar, os_of(first) + nblock, os_of(npages) - nblock);
	}
	rel = bits_count(ar, os_of(first), nblock);
	bits_assign(ar, os_of(first), nblock, false);
	s->start = ar->base + first * MG_PAGE_SIZE;
	s->npages = (uint32_t)npages;
	s->nreleased = (uint32_t)rtail;
	s->state = (uint8_t)state;
	s->sizeclass = (uint8_t)sizeclass;
	s->in_partial = 0;
	s->tail = TAIL_NONE;
	map_all(s, state == SPAN_SMALL ? (uint8_t)(sizeclass + 1) : 0);
	st.released_os -= rel + rtail;
	st.free_pages -= npages;
	if (state == SPAN_SMALL) {
		st.small_pages += npages;
	} else {
		st.large_pages += npages;
		st.large_released_os += rtail;
		s->end = s->start + nblock * MG_OS_PAGE;
		tail_note(s);
	}
	st.alloc_count++;
	if (ret_zeroed)
		*ret_zeroed = rel == nblock;
out:
	if (head)
		span_put(head);
	if (tail)
		span_put(tail);
	pthread_mutex_unlock(&ph_lock);
	if (!s)
		errno = ENOMEM;
	return s;
}

struct span *pageheap_alloc(size_t npages, size_t align_pages, enum span_state state,
			    unsigned sizeclass, bool *ret_zeroed)
{
	return alloc_span(npages, align_pages, state, sizeclass, npages * MG_PAGE_SIZE, ret_zeroed);
}

struct span *pageheap_alloc_large(size_t bytes, size_t align_pages, bool *ret_zeroed)
{
	size_t npages = (bytes + MG_PAGE_SIZE - 1) >> MG_PAGE_SHIFT;

	return alloc_span(npages, align_pages, SPAN_LARGE, 0, bytes, ret_zeroed);
}

/* pageheap_free() with the lock held. */
static void free_locked(struct span *s)
{
	if (s->state == SPAN_SMALL) {
		uint64_t m = s->relmask;
		size_t first = os_of(span_first(s));

		st.small_pages -= s->npages;
		/* The free fast path trusts the class bytes: clear them. */
		map_all(s, 0);
		/* Pages released while it was partly used stay released. */
		while (m) {
			bits_assign(s->arena, first + (size_t)__builtin_ctzll(m), 1, true);
			m &= m - 1;
		}
		s->nreleased = (uint32_t)__builtin_popcountll(s->relmask);
		st.small_released_os -= s->nreleased;
		st.released_os += s->nreleased;
		s->relmask = 0;
	} else {
		/* Its tail's released pages are free released pages now. */
		tail_forget(s);
		st.large_pages -= s->npages;
		st.large_released_os -= s->nreleased;
		st.released_os += s->nreleased;
	}
	st.free_pages += s->npages;
	s->state = SPAN_FREE;
	coalesce_insert(s);
}

void pageheap_free(struct span *s)
{
	pthread_mutex_lock(&ph_lock);
	/* Its tail is being released: the releaser frees it when done, so
	 * that no other block gets those pages while madvise runs. */
	if (s->tail == TAIL_BUSY)
		s->tail = TAIL_BUSY_FREED;
	else
		free_locked(s);
	pthread_mutex_unlock(&ph_lock);
}

/* Take the free pages right after large span `s` to make it `npages`
 * long.  Lock held. */
static bool grow_locked(struct span *s, size_t npages)
{
	struct arena *ar = s->arena;
	size_t end = span_first(s) + s->npages, extra = npages - s->npages, rel;
	struct span *r;

	if (end + extra > ARENA_PAGES)
		return false;
	r = ar->spans[end];
	if (!r || r->state != SPAN_FREE || r->start != s->start + s->npages * MG_PAGE_SIZE ||
	    r->npages < extra)
		return false;
	free_remove(r);
	rel = bits_count(ar, os_of(end), os_of(extra));
	bits_assign(ar, os_of(end), os_of(extra), false);
	if (r->npages > extra) {
		r->start += extra * MG_PAGE_SIZE;
		r->npages -= (uint32_t)extra;
		r->nreleased -= (uint32_t)rel;
		map_ends(r);
		free_insert(r);
	} else {
		span_put(r);
	}
	s->npages = (uint32_t)npages;
	map_all(s, 0);
	st.released_os -= rel;
	st.free_pages -= extra;
	st.large_pages += extra;
	st.alloc_count++;
	return true;
}

/* Cut large span `s` down to `npages`, `t` (a spare struct) taking the
 * rest as a free span.  Lock held. */
static void shrink_locked(struct span *s, size_t npages, struct span *t)
{
	size_t cut = s->npages - npages, first = span_first(s) + npages;

	t->arena = s->arena;
	t->start = s->start + npages * MG_PAGE_SIZE;
	t->npages = (uint32_t)cut;
	/* Released pages of the old tail go with it. */
	t->nreleased = bits_count(s->arena, os_of(first), os_of(cut));
	s->npages = (uint32_t)npages;
	map_ends(s);
	st.large_pages -= cut;
	st.free_pages += cut;
	st.released_os += t->nreleased;
	t->state = SPAN_FREE;
	coalesce_insert(t);
}

bool pageheap_large_resize(struct span *s, size_t bytes)
{
	size_t npages = (bytes + MG_PAGE_SIZE - 1) >> MG_PAGE_SHIFT;
	size_t nblock = (bytes + MG_OS_PAGE - 1) / MG_OS_PAGE;
	struct span *t = NULL;
	bool ok = true;

	pthread_mutex_lock(&ph_lock);
	/* madvise may be running on its tail: what the block grows into
	 * must not be zeroed after the caller wrote it. */
	if (s->tail != TAIL_NONE && s->tail != TAIL_LISTED) {
		pthread_mutex_unlock(&ph_lock);
		return false;
	}
	if (npages > s->npages) {
		ok = grow_locked(s, npages);
	} else if (npages < s->npages) {
		/* Without a spare struct the block keeps its pages: shrinking
		 * is only an optimisation. */
		t = span_new();
		if (t)
			shrink_locked(s, npages, t);
	}
	if (ok) {
		/* The tail is counted anew: pages the block now covers are
		 * its own (released ones read as zeros, as realloc allows). */
		tail_forget(s);
		st.large_released_os -= s->nreleased;
		s->end = s->start + nblock * MG_OS_PAGE;
		bits_assign(s->arena, os_of(span_first(s)), nblock, false);
		s->nreleased = bits_count(s->arena, tail_first(s), tail_len(s));
		st.large_released_os += s->nreleased;
		tail_note(s);
	}
	pthread_mutex_unlock(&ph_lock);
	return ok;
}

long pageheap_release_tails(size_t max_pages)
{
	struct span *busy[REL_BATCH_IOV];
	struct iovec iov[REL_BATCH_IOV];
	unsigned nbusy = 0, niov = 0, i, j, got, from[REL_BATCH_IOV + 1];
	size_t left = max_pages ? os_of(max_pages) : 1;
	uint64_t newly = 0;
	int r;

	pthread_mutex_lock(&ph_lock);
	while (tails && niov < REL_BATCH_IOV && nbusy < REL_BATCH_IOV && left) {
		struct span *s = tails;
		struct arena *ar = s->arena;
		size_t pos = tail_first(s), stop = pos + tail_len(s);

		tail_unlink(&tails, s);
		tail_link(&tails_busy, s);
		s->tail = TAIL_BUSY;
		from[nbusy] = niov;
		busy[nbusy++] = s;
		/* Its runs not yet released: never a page twice. */
		got = resident_runs(ar, &pos, stop, iov + niov, REL_BATCH_IOV - niov);
		niov += got;
		left -= tail_len(s) < left ? tail_len(s) : left;
	}
	from[nbusy] = niov;
	pthread_mutex_unlock(&ph_lock);
	if (!nbusy)
		return 0;

	/* No lock held: the blocks stay the program's, and a block freed
	 * meanwhile is the releaser's to free (TAIL_BUSY_FREED). */
	r = arena_dontneed(iov, niov);

	pthread_mutex_lock(&ph_lock);
	for (i = 0; i < nbusy; i++) {
		struct span *s = busy[i];

		tail_unlink(&tails_busy, s);
		/* Only the ranges that went to the kernel are marked: a
		 * batch that filled up leaves the rest of a tail for later. */
		for (j = from[i]; r == 0 && j < from[i + 1]; j++) {
			size_t n = iov[j].iov_len / MG_OS_PAGE;

			bits_assign(s->arena, ((uintptr_t)iov[j].iov_base - s->arena->base) / MG_OS_PAGE,
				    n, true);
			newly += n;
			st.large_released_os += n;
			s->nreleased += (uint32_t)n;
		}
		if (s->tail == TAIL_BUSY_FREED) {
			s->tail = TAIL_NONE;
			free_locked(s);
		} else {
			s->tail = TAIL_NONE;
			/* What is left of it is listed again; not when the
			 * kernel refused (the scavenger must not spin on it). */
			if (r == 0)
				tail_note(s);
		}
	}
	pthread_mutex_unlock(&ph_lock);
	return r < 0 ? r : (long)(newly * MG_OS_PAGE);
}

/* The largest free span of ≥ `min` pages with a resident page: big runs
 * first, so one range does the most. */
static struct span *release_candidate(size_t min)
{
	int b;

	for (b = NBUCKETS - 1; b >= (int)min && b >= 1; b--) {
		if (lists[L_CLEAN][b])
			return lists[L_CLEAN][b];
		if (lists[L_MIXED_REL][b])
			return lists[L_MIXED_REL][b];
		if (lists[L_MIXED][b])
			return lists[L_MIXED][b];
	}
	return NULL;
}

/*
 * Take the free span `s` (listed) off its list and cut from it a busy
 * window starting at its first heap page with a resident 4 KiB page, at
 * most `max` pages long and with at most `room` resident runs; the rest
 * is listed again either side.  The resident runs go to `iov`.  Returns
 * the window (s itself) or NULL when no spare struct is left.
 */
static struct span *cut_busy(struct span *s, size_t max, struct iovec *iov, unsigned room,
			     unsigned *ret_niov)
{
	struct arena *ar = s->arena;
	size_t first = span_first(s), end = first + s->npages, a, b, pos, stop;
	struct span *head = span_new(), *tail = span_new();
	unsigned n = 0;

	if (!head || !tail) {
		if (head)
			span_put(head);
		if (tail)
			span_put(tail);
		return NULL;
	}
	free_remove(s);
	a = bits_next(ar, os_of(first), os_of(end), false) / MG_OS_PER_PAGE;
	b = a + max < end ? a + max : end;
	/* The resident runs of [a, b), as many as fit; the window ends
	 * with the heap page that holds the end of the last one. */
	pos = os_of(a);
	stop = os_of(b);
	n = resident_runs(ar, &pos, stop, iov, room);
	if (pos < stop)
		b = (pos + MG_OS_PER_PAGE - 1) / MG_OS_PER_PAGE;
	if (a > first) {
		insert_piece(head, ar, first, a - first);
		head = NULL;
	}
	if (b < end) {
		insert_piece(tail, ar, b, end - b);
		tail = NULL;
	}
	if (head)
		span_put(head);
	if (tail)
		span_put(tail);
	s->start = ar->base + a * MG_PAGE_SIZE;
	s->npages = (uint32_t)(b - a);
	s->nreleased = bits_count(ar, os_of(a), os_of(b - a));
	s->state = SPAN_BUSY;
	map_ends(s);
	*ret_niov = n;
	return s;
}

long pageheap_release_step(size_t max_pages, size_t min_pages)
{
	struct span *busy[REL_BATCH_SPANS];
	struct iovec iov[REL_BATCH_IOV];
	unsigned nbusy = 0, niov = 0, i;
	size_t left = max_pages ? max_pages : 1;
	uint64_t newly = 0;
	int r;

	if (min_pages < 1)
		min_pages = 1;
	pthread_mutex_lock(&ph_lock);
	while (nbusy < REL_BATCH_SPANS && niov < REL_BATCH_IOV && left) {
		struct span *s = release_candidate(min_pages);
		unsigned got;

		if (!s)
			break;
		s = cut_busy(s, left, iov + niov, REL_BATCH_IOV - niov, &got);
		if (!s) {
			if (!nbusy) {
				pthread_mutex_unlock(&ph_lock);
				return -ENOMEM;
			}
			break;
		}
		busy[nbusy++] = s;
		niov += got;
		left -= s->npages < left ? s->npages : left;
	}
	pthread_mutex_unlock(&ph_lock);
	if (!nbusy)
		return 0;

	/* The syscall runs unlocked: allocation goes on around it.  The
	 * busy windows keep their neighbours from merging over them. */
	r = arena_dontneed(iov, niov);

	pthread_mutex_lock(&ph_lock);
	for (i = 0; i < nbusy; i++) {
		struct span *s = busy[i];

		if (r == 0) {
			uint32_t all = (uint32_t)os_of(s->npages);

			bits_assign(s->arena, os_of(span_first(s)), all, true);
			newly += all - s->nreleased;
			st.released_os += all - s->nreleased;
			s->nreleased = all;
		}
		coalesce_insert(s);
	}
	pthread_mutex_unlock(&ph_lock);
	return r < 0 ? r : (long)(newly * MG_OS_PAGE);
}

void pageheap_note_small_released(long delta)
{
	pthread_mutex_lock(&ph_lock);
	st.small_released_os += (uint64_t)delta;
	pthread_mutex_unlock(&ph_lock);
}

uint64_t pageheap_releasable(void)
{
	return __atomic_load_n(&st.releasable_os, __ATOMIC_RELAXED) * MG_OS_PAGE;
}

void pageheap_get_stats(struct pageheap_stats *ret)
{
	pthread_mutex_lock(&ph_lock);
	*ret = st;
	pthread_mutex_unlock(&ph_lock);
}

void pageheap_lock(void)
{
	pthread_mutex_lock(&ph_lock);
}

void pageheap_unlock(void)
{
	pthread_mutex_unlock(&ph_lock);
}

void pageheap_reinit_lock(void)
{
	pthread_mutex_init(&ph_lock, NULL);
	/* Tails that a thread of the parent was releasing: not known to be
	 * released, listed again; a block freed meanwhile is freed now. */
	while (tails_busy) {
		struct span *s = tails_busy;

		tail_unlink(&tails_busy, s);
		if (s->tail == TAIL_BUSY_FREED) {
			s->tail = TAIL_NONE;
			free_locked(s);
		} else {
			s->tail = TAIL_NONE;
			tail_note(s);
		}
	}
}
