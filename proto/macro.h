/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by every part of memguard: cleanup attributes,
 * array sizes and ownership transfer.  Header only.
 */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))

/* Return the pointer and clear the variable, so a cleanup does not free it. */
#define TAKE_PTR(p)                         \
	({                                  \
		__typeof__(p) _tp_ = (p);   \
		(p) = NULL;                 \
		_tp_;                       \
	})

#define TAKE_FD(fd)                     \
	({                              \
		int _tfd_ = (fd);       \
		(fd) = -1;              \
		_tfd_;                  \
	})

/* CLOCK_MONOTONIC in microseconds: the one clock of the daemon, the
 * client library and the tools. */
static inline uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
}

/* xorshift64* (Vigna): the next number of the generator whose state is
 * `*state` (never 0).  Fast and well spread, for jitter and sampling,
 * never for secrets; its high bits are the best. */
static inline uint64_t prng_next(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* a + b, UINT64_MAX when the sum does not fit: byte and time counters
 * that are exported (released_total is a Prometheus counter) never go
 * back. */
static inline uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static inline void freep(void *p)
{
	free(*(void **)p);
}

static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

static inline void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Define name##p(): a cleanup helper calling func() on a non-NULL pointer. */
#define DEFINE_FREE_FUNC(type, func)                \
	static inline void func##p(type **p)        \
	{                                           \
		if (*p)                             \
			func(*p);                   \
	}
