// SPDX-License-Identifier: MIT
/*
 * redis-shim.c: what the redis-server row of the allocator benchmark
 * preloads beside (or instead of) an allocator.  Not part of memguard:
 * tests/bench/alloc/redis compiles it, twice, into its cache directory.
 *
 * Debian's redis-server is linked with libjemalloc.so.2 and calls plain
 * malloc(), calloc(), realloc(), free() and malloc_usable_size(), so a
 * preloaded allocator serves it (it comes first in the lookup order), but
 * glibc's malloc never does: libjemalloc.so.2 comes before libc.so.6.  And
 * redis' MEMORY PURGE is jemalloc's mallctl("arena.<n>.purge"), which
 * purges nothing of a preloaded allocator.
 *
 * - Always: mallctl("arena.<n>.purge", ...) calls the allocator's own
 *   release instead: mg_heap_release(0) (memguard),
 *   MallocExtension_ReleaseFreeMemory() (tcmalloc), mi_collect(true)
 *   (mimalloc), else malloc_trim(0) (glibc).  Every other mallctl() goes
 *   to jemalloc's.
 * - With -DSHIM_GLIBC_MALLOC: malloc and the functions libjemalloc.so.2
 *   exports beside it go to glibc's malloc (__libc_malloc() and friends),
 *   so the same binary runs on glibc.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);

static bool is_arena_purge(const char *name)
{
	unsigned int arena;
	int end = 0;

	return sscanf(name, "arena.%u.purge%n", &arena, &end) == 1 &&
	       end > 0 && name[end] == '\0';
}

static void release_free_memory(void)
{
	void (*fn)(void);
	int (*mg)(size_t);
	void (*mi)(bool);
	int (*trim)(size_t);

	mg = (int (*)(size_t))dlsym(RTLD_DEFAULT, "mg_heap_release");
	if (mg) {
		mg(0);
		return;
	}
	fn = (void (*)(void))dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseFreeMemory");
	if (fn) {
		fn();
		return;
	}
	mi = (void (*)(bool))dlsym(RTLD_DEFAULT, "mi_collect");
	if (mi) {
		mi(true);
		return;
	}
	trim = (int (*)(size_t))dlsym(RTLD_DEFAULT, "malloc_trim");
	if (trim)
		trim(0);
}

int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen)
{
	static mallctl_fn next_fn;
	mallctl_fn next = __atomic_load_n(&next_fn, __ATOMIC_ACQUIRE);

	if (name && is_arena_purge(name)) {
		release_free_memory();
		return 0;
	}
	if (!next) {
		next = (mallctl_fn)dlsym(RTLD_NEXT, "mallctl");
		if (!next)
			return ENOENT;
		__atomic_store_n(&next_fn, next, __ATOMIC_RELEASE);
	}
	return next(name, oldp, oldlenp, newp, newlen);
}

#ifdef SHIM_GLIBC_MALLOC
void *__libc_malloc(size_t size);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t size);
void __libc_free(void *p);
void *__libc_memalign(size_t align, size_t size);
void *__libc_valloc(size_t size);

void *malloc(size_t size)
{
	return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
	return __libc_realloc(p, size);
}

void free(void *p)
{
	__libc_free(p);
}

void *memalign(size_t align, size_t size)
{
	return __libc_memalign(align, size);
}

void *valloc(size_t size)
{
	return __libc_valloc(size);
}

void *aligned_alloc(size_t align, size_t size)
{
	if (align == 0 || (align & (align - 1))) {
		errno = EINVAL;
		return NULL;
	}
	return __libc_memalign(align, size);
}

int posix_memalign(void **ret, size_t align, size_t size)
{
	int saved = errno;
	void *p;

	if (align < sizeof(void *) || (align & (align - 1)))
		return EINVAL;
	p = __libc_memalign(align, size);
	if (!p) {
		int r = errno;

		errno = saved;
		return r ? r : ENOMEM;
	}
	*ret = p;
	return 0;
}

/*
 * glibc has no __libc_ name for it, and a plain call would reach
 * jemalloc's: take the definition in libc.so.6 itself.
 */
size_t malloc_usable_size(void *p)
{
	static size_t (*libc_fn)(void *);
	size_t (*fn)(void *) = __atomic_load_n(&libc_fn, __ATOMIC_ACQUIRE);

	if (!p)
		return 0;
	if (!fn) {
		/* Always there: libc.so.6 is loaded before any code runs. */
		void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);

		fn = (size_t (*)(void *))dlsym(libc, "malloc_usable_size");
		__atomic_store_n(&libc_fn, fn, __ATOMIC_RELEASE);
	}
	return fn(p);
}
#endif
