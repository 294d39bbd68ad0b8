/* SPDX-License-Identifier: MIT */
/*
 * libmemguard-malloc.so: the C allocation functions over the memguard heap,
 * so that an unmodified program runs on it with LD_PRELOAD.  Each wrapper
 * keeps glibc's documented behaviour where C leaves a choice (realloc(p, 0)
 * frees and returns NULL; memalign() takes any power of two).
 */
#include "config.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>

#include "client/alloc/alloc.h"

#ifndef MG_DEBUG_HEAP
/* The two that matter for speed skip a call. */
_public_ void *malloc(size_t size)
{
	return alloc_malloc_fast(size);
}

_public_ void free(void *p)
{
	alloc_free_fast(p);
}
#else
_public_ void *malloc(size_t size)
{
	return mg_malloc(size);
}

_public_ void free(void *p)
{
	mg_free(p);
}
#endif

_public_ void *calloc(size_t n, size_t size)
{
	return mg_calloc(n, size);
}

_public_ void *realloc(void *p, size_t size)
{
	return mg_realloc(p, size);
}

_public_ void *reallocarray(void *p, size_t n, size_t size)
{
	size_t total;

	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return mg_realloc(p, total);
}

_public_ int posix_memalign(void **ret, size_t alignment, size_t size)
{
	return mg_posix_memalign(ret, alignment, size);
}

_public_ void *aligned_alloc(size_t alignment, size_t size)
{
	return mg_aligned_alloc(alignment, size);
}

_public_ void *memalign(size_t alignment, size_t size)
{
	/* glibc rounds an alignment that is not a power of two up to one,
	 * and fails with EINVAL past the largest there is. */
	if (alignment > SIZE_MAX / 2 + 1) {
		errno = EINVAL;
		return NULL;
	}
	if (alignment & (alignment - 1))
		alignment = (size_t)1 << (64 - __builtin_clzl(alignment));
	return mg_aligned_alloc(alignment ? alignment : 1, size);
}

_public_ void *valloc(size_t size)
{
	return mg_aligned_alloc(MG_OS_PAGE, size);
}

_public_ void *pvalloc(size_t size)
{
	size_t rounded = (size + MG_OS_PAGE - 1) & ~(size_t)(MG_OS_PAGE - 1);

	if (rounded < size) {
		errno = ENOMEM;
		return NULL;
	}
	return mg_aligned_alloc(MG_OS_PAGE, rounded ? rounded : MG_OS_PAGE);
}

_public_ size_t malloc_usable_size(void *p)
{
	return mg_usable_size(p);
}

/* Programs that trim glibc's heap get ours released instead. */
_public_ int malloc_trim(size_t pad)
{
	return mg_heap_release(0) > 0;
}
