/* SPDX-License-Identifier: MIT */
/*
 * libmemguard-client: the library a service links to take part in
 * memguard (pkg-config libmemguard-client).
 *
 * Two halves:
 *  - an allocator (mg_malloc() and friends) whose scavenger gives free
 *    pages back to the kernel, steered by a goal;
 *  - a client of memguardd that receives directives and acts on them:
 *    it moves the scavenger's goal, calls the application's hooks (GC
 *    target, cache release, level), releases heap pages on demand and
 *    throttles new work through mg_admit().
 *
 * Every function is thread-safe unless said otherwise.  The library never
 * writes to stderr or syslog: messages go to mg_client_set_log_fn().
 * Functions that can fail return 0 (or a count) on success and a negative
 * errno value on failure.
 */
#ifndef MEMGUARD_CLIENT_H
#define MEMGUARD_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How hard the daemon is pushing; the same values as on the wire. */
enum mg_level {
	MG_LEVEL_NORMAL = 0,             /* within budget: grow caches back, default GC */
	MG_LEVEL_WARN = 1,               /* near the budget: collect more, give pages back */
	MG_LEVEL_CRITICAL = 2,           /* close to it: also shed a share of new work */
	MG_LEVEL_EMERGENCY = 3,          /* at or over it: release everything now */
};

/* ---- allocator --------------------------------------------------------- */

/* As malloc(3), calloc(3), realloc(3), free(3), aligned_alloc(3),
 * posix_memalign(3) and malloc_usable_size(3).  mg_calloc() checks n·size
 * for overflow; mg_malloc(0) returns a unique pointer; mg_free(NULL) does
 * nothing.  Memory from these must be freed with mg_free(). */
void *mg_malloc(size_t size);
void *mg_calloc(size_t n, size_t size);
void *mg_realloc(void *p, size_t size);
void mg_free(void *p);
void *mg_aligned_alloc(size_t alignment, size_t size);
int mg_posix_memalign(void **ret, size_t alignment, size_t size);
size_t mg_usable_size(const void *p);

/* The heap in the terms Go uses; all in bytes. */
struct mg_heap_stats {
	uint64_t sys;                    /* mapped from the kernel (arenas and huge blocks) */
	uint64_t inuse;                  /* in live allocations, as rounded to size classes */
	uint64_t idle;                   /* free and still resident */
	uint64_t released;               /* free and given back to the kernel */
	uint64_t metadata;               /* the allocator's own bookkeeping */
	double fragmentation;            /* (sys − released) / inuse; 0 when inuse is 0 */
};

/* Fill `*ret`; cheap enough to call every second. */
void mg_heap_stats(struct mg_heap_stats *ret);

/*
 * Give free pages back to the kernel now, unpaced, until `bytes` have been
 * released (0 = everything releasable).  Returns the bytes released.
 */
size_t mg_heap_release(size_t bytes);

/*
 * The scavenger's goal: keep the heap's resident bytes (sys − released)
 * at or under `bytes`, and under the default goal, live heap × 1.10,
 * releasing free pages in the background at a bounded CPU cost.  0 leaves
 * only the default goal.  The client sets it from each directive's soft
 * limit.
 */
void mg_heap_set_goal(size_t bytes);

/* ---- client ------------------------------------------------------------ */

struct mg_client;

enum mg_threading {
	MG_THREAD_OWN = 0,               /* the library runs its own thread (default) */
	MG_THREAD_NONE = 1,              /* the caller drives mg_client_dispatch() */
};

/*
 * Options of mg_client_new().  Set `size` to sizeof(struct mg_client_opts):
 * it lets later versions append fields (a shorter struct gets their
 * defaults).  Names must be printable ASCII, at most 255 bytes.
 */
struct mg_client_opts {
	size_t size;                     /* sizeof(struct mg_client_opts) */
	const char *socket_path;         /* NULL: $MEMGUARD_SOCKET, else
					  * /run/memguard/memguardd.sock */
	const char *service;             /* NULL: $MEMGUARD_SERVICE, else let the
					  * daemon map our cgroup */
	const char *process;             /* NULL: the program's short name */
	enum mg_threading threading;
};

/*
 * Create a client and start connecting to memguardd (on the library's
 * thread, or from the first mg_client_dispatch()).  `opts` may be NULL for
 * the defaults.  A daemon that is absent is not an error: the client keeps
 * trying with backoff (100 ms doubling to 0.8 s, with jitter) and the
 * allocator works with its local goal meanwhile.  When the daemon goes
 * away, mg_admit() admits everything at once and the rest of its last
 * directive lapses to the defaults after 10 s, unless it comes back.
 *
 * After fork() the child does not use the parent's connection.  It
 * connects on its own: an MG_THREAD_OWN client from the child's first
 * call of mg_admit() or an mg_client_* function (so a child that only
 * execs never registers); an MG_THREAD_NONE client finds its fd readable.
 *
 * A process normally has one client; with several, mg_admit() applies the
 * highest throttle among them.  A client that libmemguard-malloc started by
 * itself (MEMGUARD_SOCKET or MEMGUARD_SERVICE in an unmodified program) is
 * replaced by the first one the application creates; in a fork() child it
 * comes back from the first allocation the thread cache cannot serve.
 *
 * Returns 0 or -errno: -EINVAL for bad options (`size` 0, an unknown
 * threading mode, a name that is not printable or too long, a socket path
 * that does not fit), -ENOMEM, or what creating a descriptor or the
 * thread failed with.
 */
int mg_client_new(struct mg_client **ret, const struct mg_client_opts *opts);

/*
 * Say BYE, stop the thread, free.  Accepts NULL.  From a hook it is
 * deferred until the hook's dispatch has returned (no hook is called
 * after it).  With MG_THREAD_NONE, not while another thread is inside
 * mg_client_dispatch().
 */
void mg_client_free(struct mg_client *c);

/*
 * MG_THREAD_NONE only: a file descriptor, stable for the client's life
 * (across fork() too), that becomes readable when mg_client_dispatch() has
 * work (a message, a report or reconnect due, a new hook to tell).  Poll
 * it for reading; do not read it or close it.  -EINVAL with MG_THREAD_OWN.
 */
int mg_client_fd(struct mg_client *c);

/*
 * MG_THREAD_NONE only: handle everything pending without blocking, hooks
 * included.  Returns the milliseconds until it wants to be called again at
 * the latest (0: at once), or -errno: -EINVAL with MG_THREAD_OWN,
 * -EDEADLK from one of its own hooks, -EBADF when the client lost its
 * descriptors (a failed fork() clean-up).  Not from two threads at once.
 */
int mg_client_dispatch(struct mg_client *c);

/* Called with the GC percent to set (like Go's GOGC; 0 = restore the
 * application's own default). */
typedef void (*mg_gc_fn)(void *data, unsigned gc_percent);
/* Drop up to `bytes` of caches (SIZE_MAX: all that can go); return the
 * bytes freed.  Whatever the hook does not free of a demand, the library
 * takes from the heap's free pages. */
typedef size_t (*mg_release_fn)(void *data, size_t bytes);
/* Called on every level change, NORMAL ("cleared") included. */
typedef void (*mg_level_fn)(void *data, enum mg_level level);
/* A message of the library; `priority` is a syslog priority. */
typedef void (*mg_log_fn)(void *data, int priority, const char *message);

/*
 * Set or clear (fn = NULL) a hook.  Hooks run on the library's thread
 * (MG_THREAD_OWN) or inside mg_client_dispatch(), one at a time, in this
 * order for each directive: level, GC, release; RELEASED and a REPORT go
 * to the daemon after them.  The level and GC hooks are called only when
 * their value changes, and a new hook is told the directive in force
 * soon after it is set (it is assumed to know the defaults: NORMAL, 0).
 * A setter waits for a hook call in progress to return, so the old hook
 * is never called after its setter returned; hooks may call the setters,
 * mg_client_level(), mg_admit() and mg_client_free(), but must not create
 * clients or wait for threads that call these.
 */
void mg_client_set_gc_hook(struct mg_client *c, mg_gc_fn fn, void *data);
void mg_client_set_release_hook(struct mg_client *c, mg_release_fn fn, void *data);
void mg_client_set_level_hook(struct mg_client *c, mg_level_fn fn, void *data);
void mg_client_set_log_fn(struct mg_client *c, mg_log_fn fn, void *data);

/* Bytes the application holds outside the memguard heap and could drop
 * (its caches); reported to the daemon, which weighs release demands by
 * them.  Cheap: a store, read at the next REPORT. */
void mg_client_set_external_bytes(struct mg_client *c, uint64_t bytes);

/* The level in force now; NORMAL for NULL. */
enum mg_level mg_client_level(const struct mg_client *c);

/*
 * Admission gate: false for the daemon's current throttle share of calls,
 * true otherwise (always true without a daemon).  Lock-free: an atomic
 * load and a per-thread random number; cheap enough for every request.
 * Each thread's first call registers its counters (admitted and rejected,
 * reported to the daemon), and only that call takes a lock.
 */
bool mg_admit(void);

#ifdef __cplusplus
}
#endif

#endif
