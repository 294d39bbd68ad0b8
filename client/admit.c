/* SPDX-License-Identifier: MIT */
/*
 * The admission gate.  mg_admit() runs on every request of a service, on
 * every thread, so its common path is one relaxed atomic load, a
 * per-thread PRNG step and a per-thread counter bump: no lock, no shared
 * cache line written.
 *
 * The counters are per thread (one writer each) and summed when a REPORT
 * is built.  A thread registers its counters on its first call, the only
 * call that takes a lock; when it exits, a pthread key destructor folds
 * them into `retired` and unlinks them.
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "client-internal.h"

/* Gate values above MG_THROTTLE_MAX are not throttles. */
#define GATE_RESUME (MG_THROTTLE_MAX + 1)  /* after fork(): resume the clients first */

struct admit_thread {
	struct admit_thread *next;
	atomic_uint_least64_t admitted;  /* written by the owning thread only */
	atomic_uint_least64_t rejected;
	uint64_t rng;                    /* xorshift64* state; never 0 */
	bool linked;
};

static atomic_uint gate;                 /* ‰ to reject, or GATE_RESUME */
static pthread_mutex_t admit_lock = PTHREAD_MUTEX_INITIALIZER;
static struct admit_thread *threads;     /* under admit_lock */
static uint64_t retired_admitted, retired_rejected; /* of exited threads */
static pthread_key_t admit_key;
static pthread_once_t admit_once = PTHREAD_ONCE_INIT;
static atomic_uint_least64_t seed_counter;

/* initial-exec: a TLS access without a call into the dynamic linker; the
 * block is small enough for the static TLS surplus even when the library
 * is dlopen()ed. */
static __thread struct admit_thread self __attribute__((tls_model("initial-exec")));

static void admit_thread_exit(void *p)
{
	struct admit_thread *t = p;

	pthread_mutex_lock(&admit_lock);
	for (struct admit_thread **pp = &threads; *pp; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	retired_admitted += atomic_load_explicit(&t->admitted, memory_order_relaxed);
	retired_rejected += atomic_load_explicit(&t->rejected, memory_order_relaxed);
	t->linked = false;
	pthread_mutex_unlock(&admit_lock);
}

static void admit_key_create(void)
{
	/* Without a key the thread's counts are lost when it exits; they are
	 * only statistics, so that is not worth failing mg_admit() over. */
	(void)pthread_key_create(&admit_key, admit_thread_exit);
}

/* splitmix64: turns a counter and an address into well-spread seeds. */
static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static void __attribute__((noinline)) admit_thread_init(struct admit_thread *t)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	t->rng = splitmix64((uint64_t)(uintptr_t)t ^ ((uint64_t)ts.tv_nsec << 20) ^
			    atomic_fetch_add(&seed_counter, 1));
	if (t->rng == 0)
		t->rng = 1;

	pthread_once(&admit_once, admit_key_create);
	pthread_mutex_lock(&admit_lock);
	t->next = threads;
	threads = t;
	t->linked = true;
	pthread_mutex_unlock(&admit_lock);
	(void)pthread_setspecific(admit_key, t);
}

static inline void bump(atomic_uint_least64_t *n)
{
	/* One writer: a plain load and store, no locked instruction. */
	atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

_public_ bool mg_admit(void)
{
	struct admit_thread *t = &self;
	unsigned share = atomic_load_explicit(&gate, memory_order_relaxed);
	uint64_t x;

	if (__builtin_expect(!t->linked, 0))
		admit_thread_init(t);

	if (__builtin_expect(share == 0, 1)) {
		bump(&t->admitted);
		return true;
	}
	if (share > MG_THROTTLE_MAX) {
		/* First call in a fork() child: bring the clients back. */
		client_resume_after_fork();
		bump(&t->admitted);
		return true;
	}

	/* The top 32 bits mapped onto 0..999 by a multiply, which is
	 * unbiased to well under a tenth of a point. */
	x = prng_next(&t->rng);
	if ((((x >> 32) * MG_THROTTLE_MAX) >> 32) < share) {
		bump(&t->rejected);
		return false;
	}
	bump(&t->admitted);
	return true;
}

void admit_set_throttle(unsigned permille)
{
	unsigned cur = atomic_load(&gate);

	if (permille > MG_THROTTLE_MAX)
		permille = MG_THROTTLE_MAX;
	/* A pending resume keeps the gate diverted until it has happened. */
	while (cur != GATE_RESUME && !atomic_compare_exchange_weak(&gate, &cur, permille))
		;
}

void admit_counts(uint64_t *ret_admitted, uint64_t *ret_rejected)
{
	uint64_t a, r;

	pthread_mutex_lock(&admit_lock);
	a = retired_admitted;
	r = retired_rejected;
	for (struct admit_thread *t = threads; t; t = t->next) {
		a += atomic_load_explicit(&t->admitted, memory_order_relaxed);
		r += atomic_load_explicit(&t->rejected, memory_order_relaxed);
	}
	pthread_mutex_unlock(&admit_lock);
	*ret_admitted = a;
	*ret_rejected = r;
}

void admit_resume_done(void)
{
	unsigned cur = GATE_RESUME;

	atomic_compare_exchange_strong(&gate, &cur, 0);
}

void admit_atfork_prepare(void)
{
	pthread_mutex_lock(&admit_lock);
}

void admit_atfork_parent(void)
{
	pthread_mutex_unlock(&admit_lock);
}

void admit_atfork_child(bool resume)
{
	struct admit_thread *t = &self;

	/* Only the forking thread exists here; the counters of a REPORT are
	 * "since the process started", and this is a new process. */
	pthread_mutex_init(&admit_lock, NULL);
	threads = NULL;
	retired_admitted = retired_rejected = 0;
	if (t->linked) {
		atomic_store(&t->admitted, 0);
		atomic_store(&t->rejected, 0);
		t->rng = splitmix64(t->rng ^ (uint64_t)getpid()) | 1;
		t->next = NULL;
		threads = t;
	}
	atomic_store(&gate, resume ? GATE_RESUME : 0);
}
