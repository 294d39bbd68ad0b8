/* SPDX-License-Identifier: MIT */
/*
 * What the example services share that is not about memguard: the clock,
 * a random number generator, the arrival schedule of requests and a
 * latency histogram.  Header only, for programs of one .c file: copy it
 * with the example.  Only the request loop's thread may use the histogram.
 */
#pragma once

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define LAT_SUB 16                       /* latency histogram buckets per octave */
#define LAT_OCTAVES 37                   /* 16 µs .. 2^40 µs, plus 0..15 µs exactly */

/* CLOCK_MONOTONIC in seconds. */
static inline double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* xorshift64 (Marsaglia): the next number of the generator whose state is
 * `*state` (never 0).  For drawing keys, never for secrets. */
static inline uint64_t xorshift64(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return x;
}

/* ---- the arrival schedule ------------------------------------------------ */

/* Requests arrive at `rate` a second (0: as fast as they are served),
 * the first burst_s seconds at burst_rate. */
struct schedule {
	unsigned rate;
	unsigned burst_s, burst_rate;    /* --burst SEC:RATE; 0:0 = none */
};

/* --burst's SEC:RATE (a rate above 0, at most a day) into `s`; 0, or -1
 * with a message on stderr naming `prog`. */
static inline int schedule_parse_burst(struct schedule *s, const char *text, const char *prog)
{
	char junk;

	/* A character after the rate is junk: three conversions. */
	if (sscanf(text, "%u:%u%c", &s->burst_s, &s->burst_rate, &junk) != 2 ||
	    s->burst_rate == 0 || s->burst_s > 86400) {
		fprintf(stderr, "%s: bad --burst '%s' (SEC:RATE)\n", prog, text);
		return -1;
	}
	return 0;
}

/* With a rate: the time request i arrives, in seconds after the start. */
static inline double schedule_arrival(const struct schedule *s, uint64_t i)
{
	uint64_t in_burst = (uint64_t)s->burst_s * s->burst_rate;

	if (i < in_burst)
		return (double)i / s->burst_rate;
	return s->burst_s + (double)(i - in_burst) / s->rate;
}

/* With a rate: how many requests have arrived `t` seconds after the start. */
static inline uint64_t schedule_arrived_by(const struct schedule *s, double t)
{
	if (t < s->burst_s)
		return (uint64_t)(t * s->burst_rate) + 1;
	return (uint64_t)s->burst_s * s->burst_rate + (uint64_t)((t - s->burst_s) * s->rate) + 1;
}

/* How many requests are due `now`: with a rate, those that arrived by
 * then; flat out, a `turn` more than the `served` so far. */
static inline uint64_t schedule_due(const struct schedule *s, double start, double now,
				    uint64_t served, unsigned turn)
{
	return s->rate ? schedule_arrived_by(s, now - start) : served + turn;
}

/* When request i arrived: on the schedule, or `now` flat out. */
static inline double schedule_arrived_at(const struct schedule *s, double start, uint64_t i,
					 double now)
{
	return s->rate ? start + schedule_arrival(s, i) : now;
}

/*
 * With a rate, once request `requests` is due next: how long to sleep from
 * `now` until it arrives, the next line of figures (`next_tick`) or the
 * end (`duration` seconds after `start`; 0 = none), at least 1 ms (at high
 * rates requests come in small batches).  In seconds.
 */
static inline double schedule_wait(const struct schedule *s, uint64_t requests, double start,
				   double now, double next_tick, unsigned duration)
{
	double next = start + schedule_arrival(s, requests);

	if (next > next_tick)
		next = next_tick;
	if (duration && next > start + duration)
		next = start + duration;
	return next - now > 0.001 ? next - now : 0.001;
}

/* ---- request latency ------------------------------------------------------ */

/* A log-linear histogram: exact below 16 µs, then 16 buckets per power of
 * two (at most 6 % wide), so percentiles cost no memory per request. */
static uint64_t lat_hist[LAT_OCTAVES * LAT_SUB];
static uint64_t lat_count;

static inline void lat_record(double seconds)
{
	uint64_t us = seconds > 0 ? (uint64_t)(seconds * 1e6) : 0;
	unsigned e, i;

	if (us < LAT_SUB) {
		i = (unsigned)us;
	} else {
		e = 63 - (unsigned)__builtin_clzll(us);
		if (e > LAT_OCTAVES + 2)
			e = LAT_OCTAVES + 2;
		i = (e - 3) * LAT_SUB + (unsigned)((us >> (e - 4)) & (LAT_SUB - 1));
	}
	lat_hist[i]++;
	lat_count++;
}

/* The q-quantile in ms (the upper end of its bucket); 0 without requests. */
static inline double lat_quantile(double q)
{
	uint64_t rank = (uint64_t)(q * lat_count + 0.999999), seen = 0;

	if (rank == 0)
		rank = 1;
	for (unsigned i = 0; i < LAT_OCTAVES * LAT_SUB; i++) {
		unsigned e = i / LAT_SUB + 3;

		seen += lat_hist[i];
		if (seen < rank)
			continue;
		if (i < LAT_SUB)
			return i / 1000.0;
		return (((uint64_t)(LAT_SUB + i % LAT_SUB + 1) << (e - 4)) - 1) / 1000.0;
	}
	return 0;
}
