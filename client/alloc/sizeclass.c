/* SPDX-License-Identifier: MIT */
/*
 * Size classes: the table is computed from the same formula that
 * sizeclass_of() inverts, so the two cannot drift apart; tests check the
 * waste bound and that every size lands in the smallest class that fits.
 */
#include "config.h"

#include "client/alloc/alloc.h"

#define SPAN_MIN_OBJS 8                  /* objects a span holds at least, if it can */
#define SPAN_TARGET (64u << 10)          /* bytes: spans need not grow past this for objects */
#define TCACHE_BIN_BYTES (64u << 10)     /* bytes one thread keeps of one class at most */
#define TCACHE_BIN_MAX 128               /* objects one thread keeps of one class at most */
#define TCACHE_CLASS_MAX (32u << 10)     /* bytes: larger classes bypass thread caches */

struct sizeclass sizeclasses[NCLASSES];
uint16_t sizeclass_lut[1024 / 16 + 1];

static uint32_t class_size(unsigned cls)
{
	unsigned k, j;

	if (cls < 8)
		return (cls + 1) * 16;
	k = 7 + (cls - 8) / 8;
	j = (cls - 8) % 8;
	return (1u << k) + (j + 1) * (1u << (k - 3));
}

void sizeclass_init(void)
{
	unsigned cls;
	size_t i;

	if (sizeclasses[0].size)
		return;
	for (i = 0; i <= 1024 / 16; i++)
		sizeclass_lut[i] = (uint16_t)((sizeclass_compute(i * 16) + 1) * SIZECLASS_LUT_STEP);
	for (cls = 0; cls < NCLASSES; cls++) {
		struct sizeclass *c = &sizeclasses[cls];
		uint32_t size = class_size(cls);
		uint64_t want = (uint64_t)size * SPAN_MIN_OBJS;
		uint32_t pages, bytes;

		/*
		 * Enough objects per span that refills are rare, but small
		 * spans, so that a span empties (and its pages can go back)
		 * as soon as possible; then grow until the tail left over is
		 * at most an eighth of the span.
		 */
		if (want > SPAN_TARGET)
			want = SPAN_TARGET > size ? SPAN_TARGET : size;
		pages = (uint32_t)((want + MG_PAGE_SIZE - 1) / MG_PAGE_SIZE);
		for (;;) {
			bytes = pages * (uint32_t)MG_PAGE_SIZE;
			if (bytes >= size && (bytes % size) * 8 <= bytes)
				break;
			pages++;
		}
		c->size = size;
		c->pages = pages;
		c->objs = bytes / size;
		if (size <= TCACHE_CLASS_MAX) {
			uint32_t max = TCACHE_BIN_BYTES / size;

			if (max > TCACHE_BIN_MAX)
				max = TCACHE_BIN_MAX;
			if (max < 2)
				max = 2;
			c->tcache_max = max;
			c->batch = max / 2;
		} else {
			c->tcache_max = 0;
			c->batch = 1;
		}
	}
}

int sizeclass_aligned(size_t size, size_t align)
{
	unsigned cls;

	if (size > SMALL_MAX || align > MG_PAGE_SIZE)
		return -1;
	if (size < align)
		size = align;
	/* Spans start on a page, so objects of a size that is a multiple of
	 * `align` are all aligned; the powers of two are classes, so one of
	 * the next eight classes qualifies. */
	for (cls = sizeclass_compute(size); cls < NCLASSES; cls++)
		if (sizeclasses[cls].size % align == 0)
			return (int)cls;
	return -1;
}
