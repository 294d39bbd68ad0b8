/* SPDX-License-Identifier: MIT */
/*
 * mg_malloc() and friends: the fast paths inline over the thread cache,
 * everything else in *_slow() functions; initialisation, fork safety, and
 * the debug heap (MG_DEBUG_HEAP), which wraps each block in a header and
 * guard bytes and checks them on free.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/alloc/alloc.h"

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int init_state;                   /* 0: not yet, 1: usable, 2: fork handlers in too */
static __thread bool init_owner __attribute__((tls_model("initial-exec"))); /* registering them */
static void (*fork_hook)(void);          /* alloc_set_fork_hook() */
static int stat_fd = -1;                 /* /proc/self/stat, for process_lone() */
static bool lone_claimed;                /* alloc_lone_claim() said true */
int alloc_fork_pending;                  /* fork() child: call fork_hook */

static void fork_prepare(void)
{
	/* scavenger.c's lock is not among these: the thread never holds it
	 * while it calls into the heap, and the child resets it anyway. */
	tcache_lock_all();
	central_lock_all();
	pageheap_lock();
	arena_lock_all();
}

static void fork_parent(void)
{
	arena_unlock_all();
	pageheap_unlock();
	central_unlock_all();
	tcache_unlock_all();
}

static void fork_child(void)
{
	/* The parent's /proc/self: not ours. */
	if (stat_fd >= 0)
		close(stat_fd);
	stat_fd = -1;
	arena_reinit_locks();
	pageheap_reinit_lock();
	central_reinit_locks();
	tcache_after_fork_child();
	scavenger_after_fork_child();
}

void alloc_set_fork_hook(void (*fn)(void))
{
	__atomic_store_n(&fork_hook, fn, __ATOMIC_RELEASE);
}

void alloc_fork_hook_arm(void)
{
	/* Only the forking thread runs in the child, and it is here. */
	if (__atomic_load_n(&fork_hook, __ATOMIC_ACQUIRE))
		STORE(alloc_fork_pending, 1);
}

void alloc_fork_hook_run(void)
{
	void (*fn)(void);

	/* Cleared first: what the hook allocates takes the slow path too. */
	if (!__atomic_exchange_n(&alloc_fork_pending, 0, __ATOMIC_ACQ_REL))
		return;
	fn = __atomic_load_n(&fork_hook, __ATOMIC_ACQUIRE);
	if (fn)
		fn();
}

/* "pid (comm) S ...": comm (which may hold anything, even ") ") and the
 * state; false when `buf` is not that. */
static bool stat_parse(char *buf, const char **ret_comm, char *ret_state)
{
	char *open = strchr(buf, '('), *close = strrchr(buf, ')');

	if (!open || !close || close < open || close[1] != ' ' || !close[2])
		return false;
	*close = 0;
	*ret_comm = open + 1;
	*ret_state = close[2];
	return true;
}

/* A thread of this library (the client's or the allocator's scavenger),
 * known by the name it gives itself. */
static bool library_thread(const char *comm)
{
	return strcmp(comm, "memguard") == 0 || strcmp(comm, "mg-scavenger") == 0;
}

/*
 * True when every thread of the program has ended and only the library's
 * are left.  glibc ends a process when its last thread ends, and ours
 * count: without this look, a program whose last thread leaves through
 * pthread_exit() (its leader first, as a child forked from a worker
 * thread does) would live on as a zombie leader with our threads.  A
 * program's threads can all be gone only once its leader is, and the
 * kernel keeps a leader that ended as a zombie until the whole process
 * ends: so the common case costs one pread() of /proc/self/stat, and only
 * a process whose leader is a zombie has its threads looked at.  Without
 * /proc this never says true.
 */
static bool process_lone(void)
{
	char buf[1024], path[sizeof(((struct dirent *)0)->d_name) + 8];
	const char *comm;
	struct dirent *e;
	bool lone = true;
	ssize_t n;
	char state;
	DIR *d;

	if (stat_fd < 0) {
		/* Once per process (and per fork() child), moved above the
		 * floor at once; read again and again with pread(). */
		stat_fd = alloc_fd_high(open("/proc/self/stat", O_RDONLY | O_CLOEXEC));
		if (stat_fd < 0)
			return false;
	}
	n = pread(stat_fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return false;
	buf[n] = 0;
	if (!stat_parse(buf, &comm, &state) || state != 'Z')
		return false;

	d = opendir("/proc/self/task");
	if (!d)
		return false;
	while (lone && (e = readdir(d))) {
		int fd;

		if (e->d_name[0] == '.' || atoi(e->d_name) == getpid())
			continue;
		snprintf(path, sizeof(path), "%s/stat", e->d_name);
		fd = openat(dirfd(d), path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;                /* (gone meanwhile) */
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = 0;
		if (!stat_parse(buf, &comm, &state))
			lone = false;
		else if (state != 'Z' && state != 'X' && !library_thread(comm))
			lone = false;
	}
	closedir(d);
	return lone;
}

bool alloc_lone_claim(void)
{
	/* One caller ends the process; a second exit() at once would be
	 * undefined. */
	return process_lone() && !__atomic_exchange_n(&lone_claimed, true, __ATOMIC_ACQ_REL);
}

int alloc_init(void)
{
	int r = 0;

	if (likely(__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) == 2))
		return 0;
	/* pthread_atfork() below may allocate: the heap is usable by then. */
	if (init_owner)
		return 0;
	pthread_mutex_lock(&init_lock);
	if (init_state == 0) {
		sizeclass_init();
		r = tcache_global_init();
		if (r < 0)
			goto out_unlock;
		init_state = 1;
	}
	if (init_state == 1) {
		/*
		 * Nobody else sees the heap ready before its fork handlers are
		 * registered: libmemguard-client registers its own after
		 * ours (prepare handlers run in reverse order, so the client's
		 * locks are taken before the allocator's, as its thread takes
		 * them), and a second thread must not slip in between.
		 */
		init_owner = true;
		pthread_atfork(fork_prepare, fork_parent, fork_child);
		init_owner = false;
		__atomic_store_n(&init_state, 2, __ATOMIC_RELEASE);
	}
out_unlock:
	pthread_mutex_unlock(&init_lock);
	return r;
}

/* ---- the core, below the debug heap ------------------------------------ */

static void *small_alloc(unsigned cls)
{
	struct tcache *tc = tcache_get();
	void *p;

	if (tc && tcache_bin(tc, cls)->max) {
		struct tbin *b = tcache_bin(tc, cls);

		p = b->head;
		if (p) {
			b->head = *(void **)p;
			b->room++;
			return p;
		}
		return tcache_refill(tc, cls);
	}
	if (!central_get(cls, 1, &p))
		return NULL;
	alloc_grew();
	return p;
}

static void small_free(void *p, unsigned cls)
{
	struct tcache *tc = tcache_get();

	if (tc && tcache_bin(tc, cls)->max) {
		struct tbin *b = tcache_bin(tc, cls);

		if (!b->room)
			tcache_overflow(tc, cls);
		*(void **)p = b->head;
		b->head = p;
		b->room--;
		/* A flushed batch may have emptied spans. */
		scavenger_want();
		return;
	}
	*(void **)p = NULL;
	central_put(cls, p, 1);
	scavenger_want();
}

/*
 * A block of at least `size` bytes aligned to `align`.  `*ret_bsize` gets
 * the block's real size.  Huge blocks register `req` and `off` (debug
 * heap).  NULL with errno ENOMEM.
 */
static void *core_alloc(size_t size, size_t align, bool zero, size_t *ret_bsize, size_t req,
			size_t off)
{
	size_t bsize;
	void *p;

	(void)alloc_fork_check();
	if (unlikely(alloc_init() < 0)) {
		errno = ENOMEM;
		return NULL;
	}
	/*
	 * malloc(0) is a block of its own.  Aligned more than a page, size 0
	 * was a span of no pages, or a huge "block" of no mapping whose
	 * address was the next mapping's: an arena's first object, freed
	 * again by the caller (found by test-alloc's stats under ASLR).
	 */
	if (size == 0)
		size = 1;
	if (size <= SMALL_MAX && align <= MG_PAGE_SIZE) {
		int cls = align <= MG_MIN_ALIGN ? (int)sizeclass_of(size) : sizeclass_aligned(size, align);

		if (cls >= 0) {
			p = small_alloc((unsigned)cls);
			bsize = sizeclasses[cls].size;
			if (p && zero)
				memset(p, 0, bsize);
			goto out;
		}
	}
	if (size < HUGE_MIN && align < HUGE_MIN / 2) {
		size_t align_pages = align > MG_PAGE_SIZE ? align >> MG_PAGE_SHIFT : 1;
		struct span *s;
		bool zeroed;

		s = pageheap_alloc_large(size, align_pages, &zeroed);
		if (!s)
			return NULL;
		p = (void *)s->start;
		/* Up to 4 KiB: the pages past it are its tail, which goes
		 * back to the kernel. */
		bsize = s->end - s->start;
		/* Pages that were released or never touched read as zeros. */
		if (zero && !zeroed)
			memset(p, 0, bsize);
		goto out;
	}
	p = huge_alloc(size, align, req, off);
	if (!p)
		return NULL;
	huge_lookup((uint8_t *)p + off, &bsize, NULL, NULL);
	bsize += off;
out:
	if (p && ret_bsize)
		*ret_bsize = bsize;
	/* Small objects were looked at by small_alloc() or their refill. */
	if (p && bsize > SMALL_MAX)
		alloc_grew();
	return p;
}

/* Free a block that is known to be ours: `s` is its span, NULL for huge
 * (then `p` is the user pointer the table knows it by). */
static void core_free(void *p, struct span *s)
{
	if (!s) {
		huge_free(p);
		return;
	}
	if (s->state == SPAN_SMALL) {
		small_free(p, s->sizeclass);
		return;
	}
	pageheap_free(s);
	scavenger_want();
}

/* The span of a small or large block that `p` points into, or NULL. */
static struct span *live_span(struct arena *ar, const void *p)
{
	struct span *s = span_of(ar, p);
	uintptr_t a = (uintptr_t)p;

	if (!s || (s->state != SPAN_SMALL && s->state != SPAN_LARGE))
		return NULL;
	if (a < s->start || a >= s->start + s->npages * MG_PAGE_SIZE)
		return NULL;
	return s;
}

static size_t block_size(const struct span *s)
{
	return s->state == SPAN_SMALL ? sizeclasses[s->sizeclass].size : s->end - s->start;
}

#ifndef MG_DEBUG_HEAP

/* ---- the fast paths (inline in alloc.h) ---------------------------------- */

void *alloc_malloc_slow(size_t size)
{
	struct tcache *tc = tls_tcache;

	/* The inline path covers sizes to 1 KiB; the cached classes above
	 * still come from the thread cache here (tcache_none's bins have
	 * nothing and no room). */
	if (likely(size <= SMALL_MAX)) {
		unsigned cls = sizeclass_of(size);
		struct tbin *b = tcache_bin(tc, cls);
		void *p = b->head;

		if (p) {
			b->head = *(void **)p;
			b->room++;
			return p;
		}
		if (b->max)
			return tcache_refill(tc, cls);
	}
	return core_alloc(size, MG_MIN_ALIGN, false, NULL, size, 0);
}

_public_ void *mg_malloc(size_t size)
{
	return alloc_malloc_fast(size);
}

void alloc_free_slow(void *p)
{
	struct arena *ar;
	struct span *s;

	if (!p)
		return;
	ar = arena_of(p);
	if (!ar) {
		/* A huge block, or not ours: nothing can be done safely with
		 * a foreign pointer, so it is left alone (the debug heap
		 * aborts on it). */
		huge_free(p);
		return;
	}
	s = live_span(ar, p);
	if (s)
		core_free(p, s);
}

_public_ void mg_free(void *p)
{
	alloc_free_fast(p);
}

_public_ void *mg_calloc(size_t n, size_t size)
{
	size_t total;
	void *p;

	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	if (total <= SMALL_MAX) {
		p = mg_malloc(total);
		if (p)
			memset(p, 0, total);
		return p;
	}
	return core_alloc(total, MG_MIN_ALIGN, true, NULL, total, 0);
}

_public_ size_t mg_usable_size(const void *p)
{
	struct arena *ar;
	struct span *s;
	size_t usable;

	if (!p)
		return 0;
	ar = arena_of(p);
	if (!ar)
		return huge_lookup(p, &usable, NULL, NULL) ? usable : 0;
	s = live_span(ar, p);
	return s ? block_size(s) : 0;
}

_public_ void *mg_realloc(void *p, size_t size)
{
	struct arena *ar;
	size_t old;
	void *q;

	if (!p)
		return mg_malloc(size);
	if (!size) {
		/* glibc's behaviour, which programs depend on. */
		mg_free(p);
		return NULL;
	}
	ar = arena_of(p);
	if (ar) {
		struct span *s = live_span(ar, p);

		if (!s) {
			errno = EINVAL;
			return NULL;
		}
		old = block_size(s);
		if (s->state == SPAN_SMALL) {
			/* Stay when it fits and not more than half is wasted. */
			if (size <= old && (size > old / 2 || old <= MG_MIN_ALIGN))
				return p;
		} else if (size > SMALL_MAX && size < HUGE_MIN) {
			if (pageheap_large_resize(s, size))
				return p;
		}
	} else if (huge_lookup(p, &old, NULL, NULL)) {
		if (size >= HUGE_MIN) {
			q = huge_realloc(p, size, size);
			if (q || errno == ENOMEM)
				return q;
		}
	} else {
		errno = EINVAL;
		return NULL;
	}
	q = mg_malloc(size);
	if (!q)
		return NULL;
	memcpy(q, p, old < size ? old : size);
	mg_free(p);
	return q;
}

_public_ void *mg_aligned_alloc(size_t alignment, size_t size)
{
	if (!alignment || (alignment & (alignment - 1))) {
		errno = EINVAL;
		return NULL;
	}
	if (alignment <= MG_MIN_ALIGN)
		return mg_malloc(size);
	return core_alloc(size, alignment, false, NULL, size, 0);
}

#else /* MG_DEBUG_HEAP */

/*
 * Debug heap.  A block is laid out as
 *
 *	block: [link|off][magic|req] ... user data (req bytes) ... guard bytes
 *	                              ^ block + off, off = max(16, alignment)
 *
 * Word 0 holds `off` while the block is live (the free lists use it once
 * the block is free); word 1 holds the magic and the requested size.
 * Every byte from the end of the user data to the end of the block is a
 * guard byte, at least one.  Freed small blocks are filled with 0xdd.
 */

struct dbg_hdr {
	uint64_t off;
	uint32_t magic;
	uint32_t req;
};

/* Write "memguard: <what> <p>" and abort: the heap is corrupt, so this
 * formats by hand instead of calling anything that might allocate. */
static _Noreturn void debug_die(const char *what, const void *p)
{
	char buf[160], *o = buf;
	static const char hex[] = "0123456789abcdef";
	const char *pre = "memguard: debug heap: ";
	uintptr_t a = (uintptr_t)p;
	int shift;

	while (*pre)
		*o++ = *pre++;
	while (*what && o < buf + 120)
		*o++ = *what++;
	*o++ = ' ';
	*o++ = '0';
	*o++ = 'x';
	for (shift = 60; shift >= 0; shift -= 4)
		*o++ = hex[(a >> shift) & 0xf];
	*o++ = '\n';
	if (write(STDERR_FILENO, buf, (size_t)(o - buf)) < 0) {
		/* Nothing left to tell it to. */
	}
	abort();
}

static void *debug_alloc(size_t size, size_t align, bool zero)
{
	size_t off = align > DEBUG_HDR ? align : DEBUG_HDR, bsize, total;
	struct dbg_hdr *h;
	uint8_t *block;

	if (size > UINT32_MAX || size > SIZE_MAX - off - 1) {
		errno = ENOMEM;
		return NULL;
	}
	total = off + size + 1;
	block = core_alloc(total, align, zero, &bsize, size, off);
	if (!block)
		return NULL;
	h = (struct dbg_hdr *)block;
	h->off = off;
	h->magic = DEBUG_MAGIC_LIVE;
	h->req = (uint32_t)size;
	memset(block + off + size, DEBUG_GUARD, bsize - off - size);
	return block + off;
}

/* Check everything about a pointer being freed or resized; return its
 * block, span (NULL for huge) and sizes. */
static uint8_t *debug_check(void *p, struct span **ret_span, size_t *ret_bsize,
			    size_t *ret_req)
{
	struct arena *ar = arena_of(p);
	struct dbg_hdr *h;
	struct span *s = NULL;
	uint8_t *block;
	size_t bsize, off, i;

	if (ar) {
		struct span *any = span_of(ar, p);

		s = live_span(ar, p);
		if (!s) {
			if (any && (any->state == SPAN_FREE || any->state == SPAN_BUSY))
				debug_die("double free (block already back in the page heap) of", p);
			debug_die("free of a pointer this heap never handed out:", p);
		}
		bsize = block_size(s);
		block = (uint8_t *)s->start;
		if (s->state == SPAN_SMALL)
			block += ((uintptr_t)p - s->start) / bsize * bsize;
	} else {
		void *base;
		size_t usable;

		if (!huge_lookup(p, &usable, NULL, &base))
			debug_die("free of a pointer this heap never handed out (or a huge "
				  "block freed twice):", p);
		block = base;
		bsize = usable + (size_t)((uint8_t *)p - block);
	}
	off = (size_t)((uint8_t *)p - block);
	h = (struct dbg_hdr *)block;
	if (off < DEBUG_HDR)
		debug_die("free of a pointer into the middle of a block:", p);
	if (h->magic == DEBUG_MAGIC_FREE)
		debug_die("double free of", p);
	if (h->magic != DEBUG_MAGIC_LIVE || h->off != off)
		debug_die("free of a pointer into the middle of a block, or a corrupt header:", p);
	for (i = off + h->req; i < bsize; i++)
		if (block[i] != DEBUG_GUARD)
			debug_die("write past the end of the block (guard byte overwritten) at", p);
	*ret_span = s;
	*ret_bsize = bsize;
	*ret_req = h->req;
	return block;
}

static void debug_free(void *p)
{
	struct span *s;
	size_t bsize, req;
	uint8_t *block;

	if (!p)
		return;
	block = debug_check(p, &s, &bsize, &req);
	((struct dbg_hdr *)block)->magic = DEBUG_MAGIC_FREE;
	if (s && s->state == SPAN_SMALL) {
		memset(block + DEBUG_HDR, 0xdd, bsize - DEBUG_HDR);
		core_free(block, s);
	} else if (s) {
		core_free(block, s);
	} else {
		core_free(p, NULL);
	}
}

_public_ void *mg_malloc(size_t size)
{
	return debug_alloc(size, MG_MIN_ALIGN, false);
}

_public_ void mg_free(void *p)
{
	debug_free(p);
}

_public_ void *mg_calloc(size_t n, size_t size)
{
	size_t total;

	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return debug_alloc(total, MG_MIN_ALIGN, true);
}

_public_ size_t mg_usable_size(const void *p)
{
	struct span *s;
	size_t bsize, req;

	if (!p)
		return 0;
	/* Only the requested bytes are usable: the rest are guards. */
	debug_check((void *)p, &s, &bsize, &req);
	return req;
}

_public_ void *mg_realloc(void *p, size_t size)
{
	struct span *s;
	size_t bsize, req;
	void *q;

	if (!p)
		return mg_malloc(size);
	if (!size) {
		mg_free(p);
		return NULL;
	}
	/* Always move: a stale pointer to the old block is then caught. */
	debug_check(p, &s, &bsize, &req);
	q = debug_alloc(size, MG_MIN_ALIGN, false);
	if (!q)
		return NULL;
	memcpy(q, p, req < size ? req : size);
	debug_free(p);
	return q;
}

_public_ void *mg_aligned_alloc(size_t alignment, size_t size)
{
	if (!alignment || (alignment & (alignment - 1))) {
		errno = EINVAL;
		return NULL;
	}
	return debug_alloc(size, alignment < MG_MIN_ALIGN ? MG_MIN_ALIGN : alignment, false);
}

#endif /* MG_DEBUG_HEAP */

_public_ int mg_posix_memalign(void **ret, size_t alignment, size_t size)
{
	void *p;

	if (alignment < sizeof(void *) || (alignment & (alignment - 1)))
		return EINVAL;
	p = mg_aligned_alloc(alignment, size);
	if (!p)
		return ENOMEM;
	*ret = p;
	return 0;
}
