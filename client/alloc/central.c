/* SPDX-License-Identifier: MIT */
/*
 * Per-class central lists.  Threads move objects here in batches; a batch
 * freed by one thread and wanted by another passes through the transfer
 * cache whole, without touching its spans, which is what makes producer /
 * consumer frees cheap.  Each class has its own lock: there is no global
 * lock between the thread caches and the page heap.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>

#include "client/alloc/alloc.h"

#define TRANSFER_SLOTS 16                /* whole batches kept per class */

struct batch {
	void *head;
	uint32_t n;
};

struct central {
	pthread_mutex_t lock;
	uint64_t out;                    /* objects handed out and not back */
	struct span *partial;            /* spans with free objects */
	unsigned ntransfer;
	struct batch transfer[TRANSFER_SLOTS];
} __attribute__((aligned(64)));

static struct central centrals[NCLASSES] = {
	[0 ... NCLASSES - 1] = { .lock = PTHREAD_MUTEX_INITIALIZER },
};

static void partial_add(struct central *c, struct span *s)
{
	s->prev = NULL;
	s->next = c->partial;
	if (s->next)
		s->next->prev = s;
	c->partial = s;
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
	s->next = s->prev = NULL;
	s->in_partial = 0;
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
	return s;
}

unsigned central_get(unsigned cls, unsigned n, void **ret_head)
{
	struct central *c = &centrals[cls];
	uint32_t size = sizeclasses[cls].size;
	void *head = NULL, *tail = NULL;
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
		}
		while (got < n && s->nfree) {
			void *o;

			if (s->freelist) {
				o = s->freelist;
				s->freelist = *(void **)o;
			} else {
				o = (void *)s->bump;
				s->bump += size;
			}
			if (tail)
				*(void **)tail = o;
			else
				head = o;
			tail = o;
			s->nfree--;
			got++;
		}
		if (!s->nfree)
			partial_remove(c, s);
	}
	STORE(c->out, c->out + got);
	pthread_mutex_unlock(&c->lock);
	if (tail)
		*(void **)tail = NULL;
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
	if (s->nfree == s->nobjs) {
		if (s->in_partial)
			partial_remove(c, s);
		pageheap_free(s);
	} else if (!s->in_partial) {
		partial_add(c, s);
	}
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

			while (head) {
				void *o = head;

				head = *(void **)o;
				put_one(c, o);
			}
		}
		pthread_mutex_unlock(&c->lock);
	}
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

	for (cls = 0; cls < NCLASSES; cls++)
		pthread_mutex_init(&centrals[cls].lock, NULL);
}
