/* SPDX-License-Identifier: MIT */
/*
 * Per-class central lists.  Threads move objects here in batches; a batch
 * freed by one thread and wanted by another passes through the transfer
 * cache whole, without touching its spans, which is what makes producer /
 * consumer frees cheap.  Each class has its own lock: there is no global
 * lock between the thread caches and the page heap.
 *
 * The release sweep gives back the 4 KiB pages of partly used spans that
 * hold no live byte.  A free object's link lives in its first word, so
 * before a page goes, the span's free list is rebuilt (in address order)
 * from the objects that touch no released page; the objects that do are
 * known free by the span's relmask alone.  Allocation that runs out of
 * listed objects takes a run of released pages back: it clears their
 * bits and lists their objects, and the kernel faults in zero pages.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>

#include "client/alloc/alloc.h"

#define TRANSFER_SLOTS 16                /* whole batches kept per class */
#define MAX_SPAN_OBJS 512                /* objects in a small span at most (16 B in 8 KiB) */
#define SWEEP_SPANS 256                  /* spans a sweep step looks at, at most */
#define SWEEP_BUSY 32                    /* spans a sweep step releases from, at most */
#define SWEEP_IOV 256                    /* ranges per madvise batch */

struct batch {
	void *head;
	uint32_t n;
};

struct central {
	pthread_mutex_t lock;
	uint64_t out;                    /* objects handed out and not back */
	struct span *partial;            /* spans with free objects */
	struct span *partial_tail;
	struct span *dirty;              /* of those, changed since a sweep looked: newest */
	struct span *dirty_tail;         /* oldest */
	uint32_t dirty_seq;              /* spans put on the changed list, ever */
	uint32_t sweep_limit;            /* the sweep in this class takes dseq ≤ this */
	unsigned ntransfer;
	struct batch transfer[TRANSFER_SLOTS];
} __attribute__((aligned(64)));

static struct central centrals[NCLASSES] = {
	[0 ... NCLASSES - 1] = { .lock = PTHREAD_MUTEX_INITIALIZER },
};

static pthread_mutex_t sweep_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned sweep_cls = NCLASSES;    /* class the sweep is at; NCLASSES: none */
static bool sweep_entered;               /* sweep_limit of sweep_cls is set */
static uint64_t span_frees;

/*
 * The changed list: what a release sweep looks at.  A span goes on it at
 * the head, once, on the slow path that changed it (never on a thread's
 * fast path), with the class's next sequence number; a sweep takes from
 * the tail.  It is a subset of the partial list: leaving that list (full,
 * wholly free, being released) takes a span off this one too.
 */
static void dirty_add(struct central *c, struct span *s)
{
	if (s->in_dirty)
		return;
	s->dprev = NULL;
	s->dnext = c->dirty;
	if (s->dnext)
		s->dnext->dprev = s;
	else
		c->dirty_tail = s;
	c->dirty = s;
	s->dseq = ++c->dirty_seq;
	s->in_dirty = 1;
}

static void dirty_remove(struct central *c, struct span *s)
{
	if (!s->in_dirty)
		return;
	if (s->dprev)
		s->dprev->dnext = s->dnext;
	else
		c->dirty = s->dnext;
	if (s->dnext)
		s->dnext->dprev = s->dprev;
	else
		c->dirty_tail = s->dprev;
	s->dnext = s->dprev = NULL;
	s->in_dirty = 0;
}

static void partial_add(struct central *c, struct span *s)
{
	s->prev = NULL;
	s->next = c->partial;
	if (s->next)
		s->next->prev = s;
	else
		c->partial_tail = s;
	c->partial = s;
	s->in_partial = 1;
}

static void partial_add_tail(struct central *c, struct span *s)
{
	s->next = NULL;
	s->prev = c->partial_tail;
	if (s->prev)
		s->prev->next = s;
	else
		c->partial = s;
	c->partial_tail = s;
	s->in_partial = 1;
}

static void partial_remove(struct central *c, struct span *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		c->partial = s->next;
	if (s->next)
		s->next->prev = s->prev;
	else
		c->partial_tail = s->prev;
	s->next = s->prev = NULL;
	s->in_partial = 0;
	dirty_remove(c, s);
}

/* ---- a span's released pages ----------------------------------------------- */

/* The mask of bits [lo, hi] of a 64-bit word (hi < 64). */
static uint64_t mask_range(unsigned lo, unsigned hi)
{
	uint64_t up = hi >= 63 ? ~UINT64_C(0) : (UINT64_C(1) << (hi + 1)) - 1;

	return up & ~((UINT64_C(1) << lo) - 1);
}

/* The 4 KiB pages (span-relative) that object `i` of `size` bytes touches. */
static uint64_t obj_pages(unsigned i, uint32_t size)
{
	size_t lo = (size_t)i * size;

	return mask_range((unsigned)(lo / MG_OS_PAGE), (unsigned)((lo + size - 1) / MG_OS_PAGE));
}

static void bit_set(uint64_t *b, unsigned i)
{
	b[i / 64] |= UINT64_C(1) << (i % 64);
}

static bool bit_get(const uint64_t *b, unsigned i)
{
	return b[i / 64] >> (i % 64) & 1;
}

/* Whether bits [lo, hi] of `b` are all set. */
static bool bits_all(const uint64_t *b, unsigned lo, unsigned hi)
{
	while (lo <= hi) {
		unsigned w = lo / 64, top = hi / 64 == w ? hi % 64 : 63;
		uint64_t m = mask_range(lo % 64, top);

		if ((b[w] & m) != m)
			return false;
		lo = w * 64 + top + 1;
	}
	return true;
}

/* The objects touching the span-relative 4 KiB pages [a, b]: [*i0, *i1];
 * false if none does (the span's tail past its last object). */
static bool objs_on_pages(const struct span *s, uint32_t size, unsigned a, unsigned b,
			  unsigned *i0, unsigned *i1)
{
	size_t lo = (size_t)a * MG_OS_PAGE, hi = (size_t)(b + 1) * MG_OS_PAGE - 1;

	if (lo / size >= s->nobjs)
		return false;
	*i0 = (unsigned)(lo / size);
	*i1 = hi / size < s->nobjs ? (unsigned)(hi / size) : s->nobjs - 1;
	return true;
}

/*
 * Allocation found no listed object and no bump room but nfree > 0: the
 * free objects are on released pages.  Take back the lowest run of them
 * that holds an object: clear its bits and list the objects on it that
 * touch no page still released.  Returns false if there is none (which
 * the invariants rule out).  Called with the class lock held.
 */
static bool take_back(struct span *s, uint32_t size)
{
	/* The pages objects lie on; ≤ 64, as sizeclass_init() keeps small
	 * spans that short.  Those past them stay released for good. */
	unsigned npg = (unsigned)((s->end - s->start + MG_OS_PAGE - 1) / MG_OS_PAGE), a, b, i, i0, i1;
	uint64_t m = s->relmask & mask_range(0, npg - 1), run;
	void *head = NULL, **link = &head;

	if (!m)
		return false;
	a = (unsigned)__builtin_ctzll(m);
	run = ~(m >> a);
	b = a + (run ? (unsigned)__builtin_ctzll(run) : 64 - a) - 1;
	s->relmask &= ~mask_range(a, b);
	pageheap_note_small_released(-(long)(b - a + 1));
	if (!objs_on_pages(s, size, a, b, &i0, &i1))
		return true;
	for (i = i0; i <= i1; i++) {
		if (obj_pages(i, size) & s->relmask)
			continue;
		*link = (void *)(s->start + (uintptr_t)i * size);
		link = (void **)*link;
	}
	*link = s->freelist;
	s->freelist = head;
	return true;
}

/*
 * The span's 4 KiB pages (span-relative mask) not yet released that hold
 * no live byte; `free` gets one bit per free object.
 */
static uint64_t releasable_pages(const struct span *s, uint32_t size, uint64_t *free)
{
	unsigned npg = s->npages * MG_OS_PER_PAGE, j, i0, i1;
	uint64_t m = s->relmask, out = 0;
	void *o;

	for (o = s->freelist; o; o = *(void **)o)
		bit_set(free, (unsigned)(((uintptr_t)o - s->start) / size));
	for (j = (unsigned)((s->bump - s->start) / size); j < s->nobjs; j++)
		bit_set(free, j);
	/* Objects on released pages are free, though on no list. */
	while (m) {
		j = (unsigned)__builtin_ctzll(m);
		m &= m - 1;
		if (objs_on_pages(s, size, j, j, &i0, &i1))
			for (; i0 <= i1; i0++)
				bit_set(free, i0);
	}
	for (j = 0; j < npg; j++) {
		if (s->relmask >> j & 1)
			continue;
		if (!objs_on_pages(s, size, j, j, &i0, &i1) || bits_all(free, i0, i1))
			out |= UINT64_C(1) << j;
	}
	return out;
}

/* List the span's free objects that touch no page of `relmask`, in
 * address order; the others are known free by relmask. */
static void rebuild(struct span *s, uint32_t size, const uint64_t *free, uint64_t relmask)
{
	void *head = NULL, **link = &head;
	unsigned i;

	for (i = 0; i < s->nobjs; i++) {
		if (!bit_get(free, i) || (obj_pages(i, size) & relmask))
			continue;
		*link = (void *)(s->start + (uintptr_t)i * size);
		link = (void **)*link;
	}
	*link = NULL;
	s->freelist = head;
	s->bump = s->end;
}

/*
 * The kernel refused to release the pages of `m` (MADV_DONTNEED on locked
 * pages is EINVAL): they keep their bytes, so they must not be marked
 * released, where the page heap would take them for zeros once the span
 * is free.  Their objects, free and on no list, are listed again.
 */
static void restore_pages(struct span *s, uint32_t size, uint64_t m)
{
	void **link = &s->freelist;
	unsigned i;

	s->relmask &= ~m;
	while (*link)
		link = (void **)*link;
	for (i = 0; i < s->nobjs; i++) {
		uint64_t pg = obj_pages(i, size);

		if (!(pg & m) || (pg & s->relmask))
			continue;
		*link = (void *)(s->start + (uintptr_t)i * size);
		link = (void **)*link;
	}
	*link = NULL;
}

static struct span *new_span(unsigned cls)
{
	const struct sizeclass *sc = &sizeclasses[cls];
	struct span *s;

	s = pageheap_alloc(sc->pages, 1, SPAN_SMALL, cls, NULL);
	if (!s)
		return NULL;
	/* Objects are handed out from `bump` upwards, never threaded in
	 * advance: pages of a fresh span are touched only when used. */
	s->freelist = NULL;
	s->bump = s->start;
	s->end = s->start + (uintptr_t)sc->objs * sc->size;
	s->nobjs = sc->objs;
	s->nfree = sc->objs;
	s->relmask = 0;
	s->dnext = s->dprev = NULL;
	s->in_dirty = 0;
	s->ver = 0;
	s->scan_ver = 0;
	s->busy = 0;
	return s;
}

unsigned central_get(unsigned cls, unsigned n, void **ret_head)
{
	struct central *c = &centrals[cls];
	uint32_t size = sizeclasses[cls].size;
	void *head = NULL;
	unsigned got = 0;

	pthread_mutex_lock(&c->lock);
	if (c->ntransfer && c->transfer[c->ntransfer - 1].n <= n) {
		struct batch *b = &c->transfer[--c->ntransfer];

		*ret_head = b->head;
		got = b->n;
		STORE(c->out, c->out + got);
		pthread_mutex_unlock(&c->lock);
		return got;
	}
	while (got < n) {
		struct span *s = c->partial;

		if (!s) {
			s = new_span(cls);
			if (!s)
				break;
			partial_add(c, s);
			/* Its pages past bump may be resident from an
			 * earlier use and hold no live byte. */
			dirty_add(c, s);
		}
		while (got < n && s->nfree) {
			void *o;

			if (s->freelist) {
				o = s->freelist;
				s->freelist = *(void **)o;
			} else if (s->bump < s->end) {
				o = (void *)s->bump;
				s->bump += size;
			} else if (take_back(s, size)) {
				continue;
			} else {
				/* Cannot happen; do not spin on it. */
				break;
			}
			/*
			 * Linked in reverse: the thread takes the last first.
			 * From a fresh span that is object batch − 1, at a
			 * page offset that differs from class to class, not
			 * the span's first at offset 0 that every class has:
			 * a thread's hottest objects (malloc+free pairs, one
			 * per class) then do not share their low 12 address
			 * bits, which makes the CPU wait on stores to the
			 * others (4K aliasing; 7.8 → 7.5 ns per pair).
			 */
			*(void **)o = head;
			head = o;
			s->nfree--;
			got++;
		}
		if (!s->nfree)
			partial_remove(c, s);
	}
	STORE(c->out, c->out + got);
	pthread_mutex_unlock(&c->lock);
	if (!got)
		errno = ENOMEM;
	*ret_head = head;
	return got;
}

/* One object back to its span; a span that becomes wholly free goes back
 * to the page heap at once, so its pages can be released. */
static void put_one(struct central *c, void *o)
{
	struct arena *ar = arena_of(o);
	struct span *s = span_of(ar, o);

	*(void **)o = s->freelist;
	s->freelist = o;
	s->nfree++;
	s->ver++;
	/* A span being released is the sweep's until it is done: its
	 * pages must not be reused while madvise runs on them. */
	if (s->busy)
		return;
	if (s->nfree == s->nobjs) {
		if (s->in_partial)
			partial_remove(c, s);
		pageheap_free(s);
		return;
	}
	if (!s->in_partial)
		partial_add(c, s);
	dirty_add(c, s);
}

void central_put(unsigned cls, void *head, unsigned n)
{
	struct central *c = &centrals[cls];

	pthread_mutex_lock(&c->lock);
	STORE(c->out, c->out - n);
	if (n == sizeclasses[cls].batch && n > 1 && c->ntransfer < TRANSFER_SLOTS) {
		c->transfer[c->ntransfer++] = (struct batch){ .head = head, .n = n };
		pthread_mutex_unlock(&c->lock);
		return;
	}
	ADD(span_frees, n);
	while (head) {
		void *o = head;

		head = *(void **)o;
		put_one(c, o);
	}
	pthread_mutex_unlock(&c->lock);
}

void central_drain(void)
{
	unsigned cls;

	for (cls = 0; cls < NCLASSES; cls++) {
		struct central *c = &centrals[cls];

		pthread_mutex_lock(&c->lock);
		while (c->ntransfer) {
			void *head = c->transfer[--c->ntransfer].head;

			ADD(span_frees, c->transfer[c->ntransfer].n);
			while (head) {
				void *o = head;

				head = *(void **)o;
				put_one(c, o);
			}
		}
		pthread_mutex_unlock(&c->lock);
	}
}

/* Whether the sweep in `c` has a span left to take: one that went on the
 * changed list before the sweep came to this class. */
static struct span *next_dirty(const struct central *c)
{
	struct span *s = c->dirty_tail;

	return s && (int32_t)(s->dseq - c->sweep_limit) <= 0 ? s : NULL;
}

/*
 * One batch of the sweep in class `cls`: take the spans that changed
 * before the sweep came here, oldest first, off the changed list, and
 * release the pages of those that have some.  A span that changes again
 * while the sweep runs goes back on the list, for the next sweep.
 * `*ret_done` when the class has nothing left for this sweep.
 */
static long sweep_class(unsigned cls, size_t max_bytes, bool *ret_done)
{
	struct central *c = &centrals[cls];
	const uint32_t size = sizeclasses[cls].size;
	struct span *busy[SWEEP_BUSY], *s;
	uint64_t busy_mask[SWEEP_BUSY];
	struct iovec iov[SWEEP_IOV];
	unsigned nbusy = 0, niov = 0, looked = 0, i;
	size_t bytes = 0;
	long pages = 0;
	int r = 0;

	pthread_mutex_lock(&c->lock);
	if (!sweep_entered) {
		c->sweep_limit = c->dirty_seq;
		sweep_entered = true;
	}
	while ((s = next_dirty(c)) && looked < SWEEP_SPANS && nbusy < SWEEP_BUSY &&
	       niov + SPAN_MAX_OS_PAGES / 2 <= SWEEP_IOV && bytes < max_bytes) {
		uint64_t free[MAX_SPAN_OBJS / 64] = { 0 }, m;
		size_t tail = s->npages * MG_PAGE_SIZE - (s->end - s->start);

		looked++;
		dirty_remove(c, s);
		/* Not a page's worth of free bytes: nothing to find. */
		if ((uint64_t)s->nfree * size + tail < MG_OS_PAGE)
			continue;
		m = releasable_pages(s, size, free);
		if (!m)
			continue;
		partial_remove(c, s);
		rebuild(s, size, free, s->relmask | m);
		s->relmask |= m;
		s->scan_ver = s->ver;
		s->busy = 1;
		busy_mask[nbusy] = m;
		busy[nbusy++] = s;
		pages += __builtin_popcountll(m);
		bytes += (size_t)__builtin_popcountll(m) * MG_OS_PAGE;
		while (m) {
			unsigned a = (unsigned)__builtin_ctzll(m), run;

			uint64_t x = ~(m >> a);

			run = x ? (unsigned)__builtin_ctzll(x) : 64;
			iov[niov].iov_base = (void *)(s->start + (uintptr_t)a * MG_OS_PAGE);
			iov[niov].iov_len = (size_t)run * MG_OS_PAGE;
			niov++;
			m &= ~mask_range(a, a + run - 1);
		}
	}
	*ret_done = !next_dirty(c);
	pthread_mutex_unlock(&c->lock);
	if (!nbusy)
		return 0;

	/* No lock held: allocation and frees go on around it.  The busy
	 * spans are on no list (nothing is allocated from them), and frees
	 * into them touch only live objects' pages. */
	r = arena_dontneed(iov, niov);
	if (r == 0)
		pageheap_note_small_released(pages);

	pthread_mutex_lock(&c->lock);
	for (i = 0; i < nbusy; i++) {
		s = busy[i];
		s->busy = 0;
		/* Not knowing which ranges went, none is counted released. */
		if (r < 0)
			restore_pages(s, size, busy_mask[i]);
		if (s->nfree == s->nobjs) {
			pageheap_free(s);
			continue;
		}
		partial_add_tail(c, s);
		/* Objects came back while it was busy. */
		if (s->ver != s->scan_ver)
			dirty_add(c, s);
	}
	pthread_mutex_unlock(&c->lock);
	return r < 0 ? r : (long)bytes;
}

long central_release_step(size_t max_bytes, bool restart, bool *ret_more)
{
	long done = 0, r;
	bool class_done;

	pthread_mutex_lock(&sweep_lock);
	if (restart || sweep_cls >= NCLASSES) {
		sweep_cls = 0;
		sweep_entered = false;
	}
	/* One batch that released something, or through classes with
	 * nothing to release, then back to the caller's pacing. */
	while (sweep_cls < NCLASSES && !done) {
		r = sweep_class(sweep_cls, max_bytes, &class_done);
		if (r < 0) {
			done = r;
			break;
		}
		done += r;
		if (class_done) {
			sweep_cls++;
			sweep_entered = false;
		}
	}
	*ret_more = sweep_cls < NCLASSES;
	pthread_mutex_unlock(&sweep_lock);
	return done;
}

uint64_t central_span_frees(void)
{
	return LOAD(span_frees);
}

uint64_t central_out_bytes(void)
{
	uint64_t n = 0;
	unsigned cls;

	for (cls = 0; cls < NCLASSES; cls++)
		n += LOAD(centrals[cls].out) * sizeclasses[cls].size;
	return n;
}

void central_lock_all(void)
{
	unsigned cls;

	for (cls = 0; cls < NCLASSES; cls++)
		pthread_mutex_lock(&centrals[cls].lock);
}

void central_unlock_all(void)
{
	unsigned cls = NCLASSES;

	while (cls--)
		pthread_mutex_unlock(&centrals[cls].lock);
}

void central_reinit_locks(void)
{
	unsigned cls;

	/* A sweep cut off by fork() leaves its busy spans busy in the
	 * child: their objects stay allocatable-free, never lost. */
	pthread_mutex_init(&sweep_lock, NULL);
	sweep_cls = NCLASSES;
	sweep_entered = false;
	for (cls = 0; cls < NCLASSES; cls++)
		pthread_mutex_init(&centrals[cls].lock, NULL);
}
