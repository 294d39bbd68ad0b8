/* SPDX-License-Identifier: MIT */
/*
 * What the allocator takes from the kernel: arenas (64 MiB, aligned to
 * their size so that address >> 26 finds them), metadata and huge blocks.
 * Every mapping goes through arena_mmap() so tests can make it fail.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "client/alloc/alloc.h"

#define PIDFD_SELF_THREAD_ (-10000)      /* <linux/pidfd.h>: the calling thread */

#define META_CHUNK (1u << 20)            /* bytes mapped at a time for metadata */
#define HUGE_TABLE_MIN 256               /* entries in the first huge-block table */

struct arena *arena_map[ARENA_MAP_LEN];

static alloc_mmap_fn mmap_hook;
static int vector_advice_broken;         /* process_madvise() refused once */
static uintptr_t arena_hint;             /* where the next arena would fit */
static struct arena *arenas;
static uint64_t arena_count;

static pthread_mutex_t meta_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *meta_cur, *meta_end;
static uint64_t meta_mapped;

struct huge_entry {
	uintptr_t p;                     /* the user pointer; 0 = empty slot */
	uintptr_t base;                  /* the mapping */
	size_t len;
	size_t req;
};

static pthread_mutex_t huge_lock = PTHREAD_MUTEX_INITIALIZER;
static struct huge_entry *huge_table;
static size_t huge_cap, huge_count;
static uint64_t huge_mapped;

void alloc_set_mmap_hook(alloc_mmap_fn fn)
{
	__atomic_store_n(&mmap_hook, fn, __ATOMIC_RELEASE);
}

void *arena_mmap(void *addr, size_t len, int prot, int flags)
{
	alloc_mmap_fn fn = __atomic_load_n(&mmap_hook, __ATOMIC_ACQUIRE);

	if (fn)
		return fn(addr, len, prot, flags, -1, 0);
	return mmap(addr, len, prot, flags, -1, 0);
}

int arena_dontneed(const struct iovec *iov, unsigned n)
{
	size_t done = 0;
	unsigned i;

#ifdef SYS_process_madvise
	/*
	 * One call for many ranges: the kernel batches the TLB flush, which
	 * is most of the cost of releasing scattered 4 KiB pages one by one.
	 * Kernels before 6.13 refuse advice on the caller's own memory this
	 * way (or the pidfd constant): then, and from then on, madvise().
	 */
	if (n > 1 && !__atomic_load_n(&vector_advice_broken, __ATOMIC_RELAXED)) {
		size_t want = 0;
		long r;

		for (i = 0; i < n; i++)
			want += iov[i].iov_len;
		r = syscall(SYS_process_madvise, PIDFD_SELF_THREAD_, iov, (size_t)n, MADV_DONTNEED,
			    0u);
		if (r == (long)want)
			return 0;
		if (r < 0)
			__atomic_store_n(&vector_advice_broken, 1, __ATOMIC_RELAXED);
		else
			done = (size_t)r;
	}
#endif
	/* The ranges not (wholly) done above, one call each. */
	for (i = 0; i < n; i++) {
		size_t len = iov[i].iov_len;

		if (done >= len) {
			done -= len;
			continue;
		}
		if (madvise((uint8_t *)iov[i].iov_base + done, len - done, MADV_DONTNEED) < 0)
			return -errno;
		done = 0;
	}
	return 0;
}

/* Reserve ARENA_SIZE bytes aligned to ARENA_SIZE: try where the last one
 * ended (usually right, and keeps the heap in one VMA region), else map
 * twice the size and trim both ends. */
static void *arena_reserve(void)
{
	const int prot = PROT_READ | PROT_WRITE;
	const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	uint8_t *p;
	uintptr_t a, aligned;

	if (arena_hint) {
		p = arena_mmap((void *)arena_hint, ARENA_SIZE, prot, flags);
		if (p == MAP_FAILED)
			return NULL;
		if (((uintptr_t)p & (ARENA_SIZE - 1)) == 0)
			return p;
		munmap(p, ARENA_SIZE);
	}
	p = arena_mmap(NULL, 2 * ARENA_SIZE, prot, flags);
	if (p == MAP_FAILED)
		return NULL;
	a = (uintptr_t)p;
	aligned = (a + ARENA_SIZE - 1) & ~(uintptr_t)(ARENA_SIZE - 1);
	if (aligned > a)
		munmap(p, aligned - a);
	if (aligned + ARENA_SIZE < a + 2 * ARENA_SIZE)
		munmap((void *)(aligned + ARENA_SIZE), a + 2 * ARENA_SIZE - aligned - ARENA_SIZE);
	return (void *)aligned;
}

struct arena *arena_new(void)
{
	struct arena *ar;
	void *base;

	ar = meta_alloc(sizeof(*ar));
	if (!ar)
		return NULL;
	base = arena_reserve();
	if (!base) {
		/* The metadata is lost only in this rare failure; it is small
		 * next to the 64 MiB we could not get. */
		errno = ENOMEM;
		return NULL;
	}
	if ((uintptr_t)base >> ARENA_ADDR_BITS) {
		munmap(base, ARENA_SIZE);
		errno = ENOMEM;
		return NULL;
	}
	/* Huge pages would be split by 64 KiB releases and turn one touched
	 * byte into 2 MiB of RSS; giving memory back is the point here. */
	madvise(base, ARENA_SIZE, MADV_NOHUGEPAGE);
	ar->base = (uintptr_t)base;
	memset(ar->released, 0xff, sizeof(ar->released));
	ar->next = arenas;
	arenas = ar;
	arena_hint = ar->base + ARENA_SIZE;
	__atomic_store_n(&arena_map[ar->base >> ARENA_SHIFT], ar, __ATOMIC_RELEASE);
	__atomic_fetch_add(&arena_count, 1, __ATOMIC_RELAXED);
	return ar;
}

uint64_t arena_sys_bytes(void)
{
	return __atomic_load_n(&arena_count, __ATOMIC_RELAXED) * ARENA_SIZE;
}

void *meta_alloc(size_t size)
{
	void *p;

	size = (size + 15) & ~(size_t)15;
	pthread_mutex_lock(&meta_lock);
	if ((size_t)(meta_end - meta_cur) < size) {
		size_t len = size > META_CHUNK ? (size + MG_OS_PAGE - 1) & ~(size_t)(MG_OS_PAGE - 1)
					       : META_CHUNK;
		uint8_t *c = arena_mmap(NULL, len, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS);

		if (c == MAP_FAILED) {
			pthread_mutex_unlock(&meta_lock);
			errno = ENOMEM;
			return NULL;
		}
		__atomic_fetch_add(&meta_mapped, len, __ATOMIC_RELAXED);
		/* The rest of the old chunk is dropped: chunks are large next
		 * to what is carved from them. */
		meta_cur = c;
		meta_end = c + len;
	}
	p = meta_cur;
	meta_cur += size;
	pthread_mutex_unlock(&meta_lock);
	return p;
}

uint64_t meta_bytes(void)
{
	uint64_t n = __atomic_load_n(&meta_mapped, __ATOMIC_RELAXED);

	/* The table of arenas is touched one page per 512 slots; count it
	 * by the page each arena dirties in it, and each arena's class map
	 * (the 4 KiB pages its bytes lie on in its first pages). */
	return n + arena_sys_bytes() / ARENA_SIZE *
			   (MG_OS_PAGE + (ARENA_CLASS_SKEW + ARENA_PAGES + MG_OS_PAGE - 1) /
						 MG_OS_PAGE * MG_OS_PAGE);
}

/* ---- huge blocks: an open-addressing table of their addresses ---------- */

static size_t huge_slot(uintptr_t p, size_t cap)
{
	uint64_t h = (uint64_t)(p >> 12) * UINT64_C(0x9e3779b97f4a7c15);

	return (size_t)(h >> 32) & (cap - 1);
}

static struct huge_entry *huge_find(uintptr_t p)
{
	size_t i;

	if (!huge_table)
		return NULL;
	for (i = huge_slot(p, huge_cap); huge_table[i].p; i = (i + 1) & (huge_cap - 1))
		if (huge_table[i].p == p)
			return &huge_table[i];
	return NULL;
}

static void huge_insert_entry(struct huge_entry *table, size_t cap, const struct huge_entry *e)
{
	size_t i = huge_slot(e->p, cap);

	while (table[i].p)
		i = (i + 1) & (cap - 1);
	table[i] = *e;
}

/* Keep the load under a half; the old table is unmapped (it is ours, not
 * arena memory). */
static int huge_reserve_slot(void)
{
	struct huge_entry *t;
	size_t cap, i;

	if (huge_table && (huge_count + 1) * 2 <= huge_cap)
		return 0;
	cap = huge_cap ? huge_cap * 2 : HUGE_TABLE_MIN;
	t = arena_mmap(NULL, cap * sizeof(*t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	if (t == MAP_FAILED)
		return -ENOMEM;
	for (i = 0; i < huge_cap; i++)
		if (huge_table[i].p)
			huge_insert_entry(t, cap, &huge_table[i]);
	if (huge_table) {
		munmap(huge_table, huge_cap * sizeof(*t));
		__atomic_fetch_sub(&meta_mapped, huge_cap * sizeof(*t), __ATOMIC_RELAXED);
	}
	__atomic_fetch_add(&meta_mapped, cap * sizeof(*t), __ATOMIC_RELAXED);
	huge_table = t;
	huge_cap = cap;
	return 0;
}

/* Remove with backward shifting, so lookups never need tombstones. */
static void huge_remove(struct huge_entry *e)
{
	size_t i = (size_t)(e - huge_table), j = i;

	huge_table[i].p = 0;
	for (;;) {
		size_t home;

		j = (j + 1) & (huge_cap - 1);
		if (!huge_table[j].p)
			break;
		home = huge_slot(huge_table[j].p, huge_cap);
		/* Move j back to i unless its home lies cyclically in (i, j]. */
		if ((i < j) ? (home <= i || home > j) : (home <= i && home > j)) {
			huge_table[i] = huge_table[j];
			huge_table[j].p = 0;
			i = j;
		}
	}
	huge_count--;
}

void *huge_alloc(size_t size, size_t align, size_t req, size_t off)
{
	struct huge_entry e;
	size_t len, extra;
	uint8_t *p;
	uintptr_t a, aligned;

	if (align < MG_OS_PAGE)
		align = MG_OS_PAGE;
	if (size > SIZE_MAX - 2 * align) {
		errno = ENOMEM;
		return NULL;
	}
	len = (size + MG_OS_PAGE - 1) & ~(size_t)(MG_OS_PAGE - 1);
	extra = align > MG_OS_PAGE ? align - MG_OS_PAGE : 0;
	p = arena_mmap(NULL, len + extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
	if (p == MAP_FAILED) {
		errno = ENOMEM;
		return NULL;
	}
	a = (uintptr_t)p;
	aligned = (a + align - 1) & ~(uintptr_t)(align - 1);
	if (extra) {
		/* Trim to the aligned block: huge mappings are ours to cut. */
		if (aligned > a)
			munmap(p, aligned - a);
		if (a + len + extra > aligned + len)
			munmap((void *)(aligned + len), a + len + extra - aligned - len);
	}
	e = (struct huge_entry){ .p = aligned + off, .base = aligned, .len = len, .req = req };
	pthread_mutex_lock(&huge_lock);
	if (huge_reserve_slot() < 0) {
		pthread_mutex_unlock(&huge_lock);
		munmap((void *)aligned, len);
		errno = ENOMEM;
		return NULL;
	}
	huge_insert_entry(huge_table, huge_cap, &e);
	huge_count++;
	huge_mapped += len;
	pthread_mutex_unlock(&huge_lock);
	return (void *)aligned;
}

bool huge_lookup(const void *p, size_t *ret_usable, size_t *ret_req, void **ret_base)
{
	struct huge_entry *e;

	pthread_mutex_lock(&huge_lock);
	e = huge_find((uintptr_t)p);
	if (e) {
		if (ret_usable)
			*ret_usable = e->base + e->len - e->p;
		if (ret_req)
			*ret_req = e->req;
		if (ret_base)
			*ret_base = (void *)e->base;
	}
	pthread_mutex_unlock(&huge_lock);
	return e;
}

bool huge_free(void *p)
{
	struct huge_entry *e;
	uintptr_t base;
	size_t len;

	pthread_mutex_lock(&huge_lock);
	e = huge_find((uintptr_t)p);
	if (!e) {
		pthread_mutex_unlock(&huge_lock);
		return false;
	}
	base = e->base;
	len = e->len;
	huge_remove(e);
	huge_mapped -= len;
	pthread_mutex_unlock(&huge_lock);
	munmap((void *)base, len);
	return true;
}

void *huge_realloc(void *p, size_t size, size_t req)
{
	struct huge_entry *e, moved;
	size_t len;
	void *q;

	len = (size + MG_OS_PAGE - 1) & ~(size_t)(MG_OS_PAGE - 1);
	pthread_mutex_lock(&huge_lock);
	e = huge_find((uintptr_t)p);
	if (!e || e->p != e->base) {
		/* Only plain (page-aligned) blocks move with mremap: one that
		 * was aligned more strictly could lose its alignment. */
		pthread_mutex_unlock(&huge_lock);
		errno = EINVAL;
		return NULL;
	}
	q = mremap((void *)e->base, e->len, len, MREMAP_MAYMOVE);
	if (q == MAP_FAILED) {
		pthread_mutex_unlock(&huge_lock);
		errno = ENOMEM;
		return NULL;
	}
	moved = *e;
	huge_remove(e);
	huge_mapped += len;
	huge_mapped -= moved.len;
	moved.p = moved.base = (uintptr_t)q;
	moved.len = len;
	moved.req = req;
	/* Removing freed a slot, so this insert cannot need to grow. */
	huge_insert_entry(huge_table, huge_cap, &moved);
	huge_count++;
	pthread_mutex_unlock(&huge_lock);
	return q;
}

uint64_t huge_bytes(void)
{
	uint64_t n;

	pthread_mutex_lock(&huge_lock);
	n = huge_mapped;
	pthread_mutex_unlock(&huge_lock);
	return n;
}

void arena_lock_all(void)
{
	pthread_mutex_lock(&huge_lock);
	pthread_mutex_lock(&meta_lock);
}

void arena_unlock_all(void)
{
	pthread_mutex_unlock(&meta_lock);
	pthread_mutex_unlock(&huge_lock);
}

void arena_reinit_locks(void)
{
	pthread_mutex_init(&meta_lock, NULL);
	pthread_mutex_init(&huge_lock, NULL);
}
