/* SPDX-License-Identifier: MIT */
/*
 * What bench-daemon and wake-floor share: clocks in milliseconds and the
 * nearest-rank percentile of a sample.
 */
#pragma once

#include <stdlib.h>
#include <time.h>

static inline double clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static inline double mono_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

static inline int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile p (0..1] of the n values at v (sorts v); 0 when
 * there are none. */
static inline double pct(double *v, size_t n, double p)
{
	size_t k;

	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	k = (size_t)((double)n * p + 0.999999);
	return v[k == 0 ? 0 : k - 1];
}
