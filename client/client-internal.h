/* SPDX-License-Identifier: MIT */
/*
 * libmemguard-client's insides: struct mg_client, the connection
 * (conn.c), the admission gate (admit.c) and what client.c shares with
 * them.  Never installed; the tests reach it through the noinst twin
 * libmgclient-internal.la.
 *
 *   conn.c    socket, HELLO, send queue, receive, backoff, timer
 *   client.c  public API, registry, thread, dispatch, directives, fork
 *   admit.c   mg_admit(): process-wide throttle and per-thread counters
 *
 * Locking, outermost first: registry_lock (the list of clients) →
 * mg_client.lock (one client; held for a whole dispatch) → gate_lock
 * (a leaf: computing the gate from every client's throttle).  Hooks run
 * with mg_client.lock held; it is recursive so that a hook may call the
 * client's own setters.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/param.h>
#include <sys/un.h>

#include "memguard/client.h"
#include "proto/macro.h"
#include "proto/proto.h"

/* The functions of client.h; everything else stays inside the library. */
#define _public_ __attribute__((visibility("default")))

#define CLIENT_DEFAULT_SOCKET "/run/memguard/memguardd.sock"
#define CONN_BACKOFF_MIN_MS 100         /* ms, first reconnect delay */
/* The longest delay while no daemon answers: a daemon that comes back
 * after however long an absence has every client back within it (the
 * jitter spreads them over its second half). */
#define CONN_BACKOFF_MAX_MS 800         /* ms, longest reconnect delay */
#define CONN_REFUSED_MS 5000            /* ms, after a refusal that would repeat */
#define CONN_HELLO_TIMEOUT_MS 5000      /* ms a WELCOME may take */
#define CONN_REPORT_DEFAULT_MS 1000     /* ms, until WELCOME says otherwise */
#define CONN_REPORT_MIN_MS 10           /* ms, floor on the daemon's interval */
#define CONN_REPORT_MAX_MS 60000        /* ms, ceiling on the daemon's interval */
#define CONN_RECV_BATCH 32              /* datagrams handled per dispatch */
#define CONN_OUT_SLOTS 8                /* datagrams queued while the socket is full */
#define CONN_RX_FDS 2                   /* descriptors a message may bring (BOARD's) */
#define CONN_DRAIN_MAX 4096             /* unread datagrams conn_bye() discards, at most */
/* Largest datagram a client sends: a HELLO with two full names. */
#define CONN_OUT_MAX (MG_HEADER_SIZE + 4 + 2 * (2 + MG_NAME_MAX))
/* ms between two looks at whether the program's threads are all gone (the
 * library's own must not keep the process alive). */
#define CLIENT_LONE_CHECK_MS 1000
/* ms the preload library's client waits before it connects, unless
 * MEMGUARD_REGISTER_DELAY_MS says otherwise.  A process that ends sooner
 * never registers.  A make -j2 of this tree under the preload saw 70-89
 * registrations at 1 s (compilers that ran a little longer on a busy
 * machine), 2-8 at 5 s; a service loses nothing by joining 5 s late. */
#define CLIENT_AUTO_DELAY_MS 5000
#define CLIENT_AUTO_DELAY_MAX_MS 3600000 /* ms, the longest delay accepted */
/* ms a directive outlives its daemon: a restart (about a second) keeps the
 * service where it was instead of growing caches back for a moment. */
#define CLIENT_ORPHAN_GRACE_MS 10000

enum conn_state {
	CONN_IDLE,                       /* no socket; connect at next_connect_us */
	CONN_HELLO,                      /* HELLO sent, WELCOME awaited */
	CONN_READY,                      /* WELCOME received: reporting */
};

struct conn_out {
	uint16_t len;
	uint8_t buf[CONN_OUT_MAX];
};

struct mg_client {
	struct mg_client *next;          /* registry, under registry_lock */
	pthread_mutex_t lock;            /* recursive; see the top of this file */

	/* Options, fixed at creation. */
	enum mg_threading threading;
	char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char service[MG_NAME_MAX + 1];   /* "" = the daemon maps our cgroup */
	char process[MG_NAME_MAX + 1];

	/* File descriptors, all at MG_FD_FLOOR or above (alloc_fd_high()).  epfd, timerfd and
	 * evfd keep their numbers for the client's life, across fork() too
	 * (conn_fds_renew()), except in a client with a delay: its thread
	 * makes them when the delay is over, in a child of fork() too. */
	int epfd;                        /* mg_client_fd(): timerfd, evfd, sock */
	int timerfd;                     /* CLOCK_MONOTONIC, armed for the next deadline */
	int evfd;                        /* wakes the library thread */
	int sock;                        /* -1 while CONN_IDLE */
	int adopt_fd;                    /* client_new_fd()'s, until the first dispatch */
	int board_fd;                    /* the board's wake-up (EPOLLET); -1 = no board */
	int rx_fds[CONN_RX_FDS];         /* came with the message being handled */
	unsigned rx_nfds;

	/* The directive board (docs/protocol.md §5.4), mapped read-only
	 * while connected; NULL without one. */
	const struct mg_board_slot *board;
	size_t board_len;                /* bytes mapped */
	uint32_t board_slot;
	bool no_board;                   /* the last board failed: HELLO without MG_CAP_BOARD */
	bool have_dseq;
	uint32_t dseq;                   /* seq of the daemon's directive in force */

	/* Connection. */
	enum conn_state state;
	uint32_t seq;                    /* last header seq used; never 0 on the wire */
	uint32_t hello_seq;
	uint64_t client_id;              /* from WELCOME */
	unsigned refusals;               /* ERRORs since the last WELCOME */
	uint32_t report_ms;
	uint32_t backoff_ms;             /* nominal delay of the next reconnect */
	unsigned failures;               /* connect attempts failed in a row */
	uint64_t next_connect_us;        /* CONN_IDLE: when to try */
	uint64_t hello_deadline_us;      /* CONN_HELLO: when to give up */
	uint64_t next_report_us;         /* CONN_READY: next REPORT */
	uint64_t orphan_us;              /* when the directive lapses; 0 = none */
	struct conn_out out[CONN_OUT_SLOTS];
	unsigned out_head, out_len;      /* ring of queued datagrams */
	bool out_armed;                  /* EPOLLOUT requested */
	uint64_t rng;                    /* jitter */

	/* The directive in force, as applied: the daemon's with the local
	 * limit's level on top (limit.c). */
	struct mg_directive applied;
	struct mg_directive daemon;      /* the daemon's last, as received */
	uint8_t local_level;             /* enum mg_level the local limit holds; NORMAL = none */
	unsigned local_seen;             /* limit_hits when last looked at */
	atomic_uint_least64_t local_heap; /* resident heap bytes at the last look */
	atomic_int level;                /* enum mg_level, for mg_client_level() */
	atomic_uint throttle;            /* ‰ this client asks of the gate; 0 offline */
	atomic_uint_least64_t external;  /* mg_client_set_external_bytes() */
	uint64_t released_total;         /* bytes released on demand */

	/* Hooks. */
	mg_gc_fn gc_fn;
	void *gc_data;
	mg_release_fn release_fn;
	void *release_data;
	mg_level_fn level_fn;
	void *level_data;
	mg_log_fn log_fn;
	void *log_data;

	/* What each hook was last told; a new hook has been told the
	 * defaults (NORMAL, MG_GC_DEFAULT). */
	uint8_t told_level;
	uint16_t told_gc;

	/* The preload library's client: its thread waits this long before it
	 * makes its descriptors and connects (0: at once, as any other). */
	uint32_t delay_ms;
	uint64_t start_us;               /* the end of that wait */

	/* MG_THREAD_OWN. */
	pthread_cond_t wake;             /* a thread in its delay; with lock */
	pthread_t thread;
	bool thread_running;
	bool resume_thread;              /* fork() child: start it on first use */
	atomic_bool stop;

	/* The thread id inside a dispatch, else 0: mg_client_free() from a
	 * hook is deferred until that dispatch has unwound, and a hook cannot
	 * dispatch again. */
	atomic_int dispatcher;
	bool free_pending;
};

/* ---- client.c ----------------------------------------------------------- */

/* Format and pass a message to the log function, if one is set.  Call with
 * c->lock held. */
void client_log(struct mg_client *c, int priority, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * As mg_client_new(), but for an `fd` already connected to a daemon (a
 * socketpair() end in the tests), which the client takes over and says
 * HELLO on at its first dispatch.  When that connection ends the client
 * reconnects to the socket path of `opts` as usual.  Returns 0 or -errno;
 * `fd` is closed on failure too.
 */
int client_new_fd(int fd, const struct mg_client_opts *opts, struct mg_client **ret);

/* Handle one decoded message from the daemon.  Returns 0, or -errno after
 * which the caller drops the connection (reason already logged). */
int client_handle(struct mg_client *c, const struct mg_msg *m);

/* Apply the daemon's throttle of every client to the gate: the highest
 * wins.  Takes gate_lock; call with no lock or with a client's lock. */
void client_gate_update(void);

/* The connection went away: admission opens at once, the directive lapses
 * after CLIENT_ORPHAN_GRACE_MS.  Call with c->lock held. */
void client_disconnected(struct mg_client *c);

/* In a child after fork(): start what the parent's clients ran (their
 * threads) on the first use of the library.  Cheap when nothing is
 * pending. */
void client_resume_after_fork(void);

/* The preload library's client (MEMGUARD_SOCKET or MEMGUARD_SERVICE set
 * in an unmodified program): started by its constructor, said BYE to by
 * its destructor, and replaced as soon as the application calls
 * mg_client_new() itself.  Its thread makes no descriptor and does not
 * connect before `delay_ms` have passed, after the start and after each
 * fork().  Returns 0 or -errno. */
int client_auto_start(uint32_t delay_ms);
void client_auto_stop(void);

/* Wake every client's thread or event loop (limit.c, from any thread that
 * allocates).  Skipped when the registry is busy: the clients then look at
 * their next dispatch or REPORT anyway. */
void client_wake_all(void);

/* The lowest limit_next() of the process's clients, 0 when none has one. */
uint64_t client_soft_limit_min(void);

/* ---- limit.c ------------------------------------------------------------ */

/*
 * The local limit (design.md, "Two speeds of control"): the soft limit the
 * daemon gives each client, checked where the heap grows, with no round
 * trip.  Heap here means the allocator's resident bytes (sys − released)
 * plus mg_client_set_external_bytes().  Past the soft limit the client
 * acts as on a WARN directive, past LIMIT_CRIT_NUM/LIMIT_CRIT_DEN of it as
 * on a CRITICAL one (the defaults' critical/warn, 90/80), at once, and
 * says so in its next REPORT (MG_FLAG_LOCAL_LIMIT).  The local level rises
 * on its own and falls from CRITICAL to WARN once the heap is back under
 * 17/16 of the limit; it ends when the daemon's directive is NORMAL and the
 * heap is back under the soft limit.
 */
#define LIMIT_CRIT_NUM 9
#define LIMIT_CRIT_DEN 8
#define LIMIT_CALM_NUM 17               /* CRITICAL falls to WARN under 17/16 */
#define LIMIT_CALM_DEN 16
#define LIMIT_WARN_GC 50                /* percent, local WARN's GC target */
#define LIMIT_CRIT_GC 25                /* percent, local CRITICAL's (the default gc floor) */
#define LIMIT_CRIT_THROTTLE 250         /* ‰, local CRITICAL's admission throttle */

/* The allocator's watch (client/alloc/watch.c): `fn` runs on an allocating
 * thread, no allocator lock held, when a refill leaves the resident heap
 * above `bytes`; 0 or NULL: no watch. */
void alloc_watch_set(uint64_t bytes, void (*fn)(uint64_t resident));

/* The heap at which `c`'s local level would rise next: the soft limit at
 * NORMAL, 9/8 of it at WARN, 0 (nothing to watch) at CRITICAL or without
 * a soft limit. */
uint64_t limit_next(const struct mg_client *c);

/* Set the allocator's watch to the process's lowest limit_next(). */
void limit_watch_update(void);

/* Whether the allocator or mg_client_set_external_bytes() crossed the
 * limit since `c` last looked. */
bool limit_pending(const struct mg_client *c);

/* Look at the heap and move c->local_level by the rules above; true when
 * it changed.  Call with c->lock held. */
bool limit_evaluate(struct mg_client *c);

/* The directive to act on: `d` (the daemon's) with c->local_level's
 * actions on top: the higher level, the lower non-default GC target, the
 * higher throttle. */
void limit_merge(const struct mg_client *c, const struct mg_directive *d,
		 struct mg_directive *ret);

/* mg_client_set_external_bytes() set `bytes`: poke the client when they
 * and the heap last seen are over limit_next(). */
void limit_external(struct mg_client *c, uint64_t bytes);

/* ---- conn.c ------------------------------------------------------------- */

/* Create epfd, timerfd and evfd.  Returns 0 or -errno. */
int conn_fds_open(struct mg_client *c);

/* In a fork() child: replace epfd, timerfd and evfd by new ones under the
 * same numbers (the old ones are shared with the parent), and forget the
 * parent's socket without touching it.  Returns 0 or -errno. */
int conn_fds_renew(struct mg_client *c);

/* Close every descriptor of `c` (none of them is shared any more). */
void conn_fds_close(struct mg_client *c);

/* Leave the board: unmap it and close its wake-up, taking it out of the
 * epoll set when `unwatch` (not in a fork() child, whose epoll set is the
 * parent's). */
void conn_board_close(struct mg_client *c, bool unwatch);

/*
 * Take the board of BOARD `b` (none taken yet), whose descriptors are in
 * c->rx_fds (taken from there): map the slots read-only, watch the
 * wake-up.  Returns 0 or -errno; the descriptors are closed either way.
 */
int conn_board_open(struct mg_client *c, const struct mg_board *b);

/* Close what c->rx_fds still holds. */
void conn_rx_fds_close(struct mg_client *c);

/* Take the board's wake-ups off the epoll set (they are edge-triggered:
 * a poll() on epfd would report them until someone collects them). */
void conn_board_collect(struct mg_client *c);

/* Take over a connected socket and say HELLO on it.  Returns 0 or -errno;
 * on failure `fd` is closed and a reconnect scheduled. */
int conn_adopt(struct mg_client *c, int fd);

/* CONN_IDLE and due: connect and say HELLO.  A daemon that is absent
 * schedules the next attempt with backoff.  Returns 0 when HELLO went out,
 * else -errno (already handled). */
int conn_open(struct mg_client *c);

/*
 * Drop the connection: log `why` at `priority` (with -errno `r`, 0 for
 * none), close the socket and schedule a reconnect after the current
 * backoff, or after CONN_REFUSED_MS when `give_up` (the daemon will refuse
 * the same HELLO again).  Calls client_disconnected().
 */
void conn_drop(struct mg_client *c, int priority, int r, bool give_up, const char *why);

/* Say BYE (reason NORMAL) if connected, after what is queued, and close
 * the socket, without scheduling anything: the client is going away.  The
 * messages it had not read are discarded first, so that the daemon reads
 * the BYE rather than ECONNRESET. */
void conn_bye(struct mg_client *c);

/*
 * Encode `m` (its seq is assigned here) and send it, or queue it while the
 * socket is full.  A REPORT that finds the queue full is skipped (a newer
 * one follows); anything else drops the connection.  Returns 0 or -errno
 * (the connection is gone).
 */
int conn_send(struct mg_client *c, struct mg_msg *m);

/* Send what was queued, when the socket takes it.  Returns 0 or -errno
 * (connection dropped). */
int conn_flush(struct mg_client *c);

/*
 * Receive and decode one datagram without blocking; descriptors that came
 * with it (SCM_RIGHTS) are in c->rx_fds, which the caller takes or closes
 * (conn_rx_fds_close()).  Returns 1 with the message in `*ret`, 0 when nothing is pending, -ECONNRESET when the daemon
 * closed, -EMSGSIZE for a datagram over MG_MSG_MAX, the decoder's -errno
 * for a malformed one, or another -errno from recvmsg().
 */
int conn_recv(struct mg_client *c, struct mg_msg *ret);

/* After a WELCOME: the next reconnect starts again from the shortest
 * delay. */
void conn_backoff_reset(struct mg_client *c);

/* Drain the timerfd and the eventfd. */
void conn_drain(struct mg_client *c);

/* Arm the timerfd for `deadline_us` (CLOCK_MONOTONIC); 0 disarms. */
void conn_arm(struct mg_client *c, uint64_t deadline_us);

/* Wake a thread sleeping on epfd. */
void conn_wake(struct mg_client *c);

/* ---- admit.c ------------------------------------------------------------ */

/* The throttle, in ‰ (0–1000), that mg_admit() applies from now on. */
void admit_set_throttle(unsigned permille);

/* mg_admit() calls that admitted and rejected work since the process
 * started (or since fork(), in a child). */
void admit_counts(uint64_t *ret_admitted, uint64_t *ret_rejected);

/* pthread_atfork() handlers, called by client.c's.  After a fork the gate
 * is open and diverts one call to client_resume_after_fork() when
 * `resume` is set. */
void admit_atfork_prepare(void);
void admit_atfork_parent(void);
void admit_atfork_child(bool resume);

/* The resume after fork() has run: the gate applies throttles again. */
void admit_resume_done(void);
