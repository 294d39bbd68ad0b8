/* SPDX-License-Identifier: MIT */
/*
 * The daemon's socket side: accepts connections on the SOCK_SEQPACKET
 * socket, checks every datagram with proto/, keeps a bounded send queue
 * per connection, and hands well-formed messages to the manager through
 * struct server_ops.  It never blocks: a peer that does not drain its
 * queue, does not answer PING, or sends something malformed is dropped,
 * and only that peer.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "proto/proto.h"

#define SERVER_QUEUE_MAX 64             /* datagrams queued to a client */
#define SERVER_ADMIN_QUEUE_MAX 8192     /* datagrams queued to an admin peer */
#define SERVER_HELLO_USEC (10 * 1000000ULL)   /* a non-admin peer's time to say HELLO */
#define SERVER_PING_USEC (10 * 1000000ULL)    /* idle time before a PING */
#define SERVER_PONG_USEC (10 * 1000000ULL)    /* time to answer a PING */
#define SERVER_ADMIN_IDLE_USEC (30 * 1000000ULL) /* idle admin peers are closed */
#define SERVER_ACCEPT_PAUSE_USEC (250 * 1000ULL) /* listening paused when out of fds */
#define SERVER_LOG_INTERVAL_USEC (10 * 1000000ULL) /* one line per kind of refusal */

struct server;

struct client {
	struct server *server;
	struct client *prev, *next;
	int fd;
	sd_event_source *io;
	struct ucred cred;               /* from SO_PEERCRED at accept */
	int pidfd;                       /* SO_PEERPIDFD at accept, -1 without */
	uint64_t start_time;             /* cred.pid's start time at accept (clock
					  * ticks since boot), when pidfd is -1 */
	uint64_t id;                     /* unique for the daemon's lifetime */
	bool hello;                      /* HELLO accepted */
	bool admin;                      /* peer may send admin requests */
	bool dead;                       /* dropped; freed on the next iteration */
	bool closing;                    /* close once the queue is empty */
	uint32_t capabilities;           /* from HELLO */
	char process[MG_NAME_MAX + 1];   /* from HELLO */
	uint64_t last_rx_usec;           /* CLOCK_MONOTONIC of the last message */
	uint32_t rx_flags;               /* header flags of the message being handled */
	uint64_t accept_usec;            /* when it was accepted */
	uint64_t last_request_usec;      /* its last admin request (or accept) */
	uint64_t ping_cookie;            /* outstanding PING, 0 = none */
	uint32_t tx_seq;                 /* the last daemon seq on this connection */
	uint64_t ping_usec;              /* when it was sent */
	uint8_t **queue;                 /* ring of encoded datagrams: u16 length + bytes */
	size_t q_head, q_len, q_cap;     /* q_cap: slots allocated, grown on demand */
	size_t q_max;                    /* bound; the client is dropped beyond it */
	void *data;                      /* the manager's per-client state */
};

struct server_ops {
	/*
	 * A client said HELLO.  Fill `ret_welcome` (the server sets nothing in
	 * it) and return 0; or return an MG_ERR_* code (> 0) with a reason in
	 * `ret_text` to refuse: the server sends ERROR and closes.
	 */
	int (*hello)(void *userdata, struct client *c, const struct mg_hello *h,
		     struct mg_welcome *ret_welcome, char ret_text[MG_TEXT_MAX + 1]);
	/* The WELCOME of an accepted HELLO is queued: send the client the
	 * directive in force (docs/protocol.md: a DIRECTIVE follows WELCOME). */
	void (*welcomed)(void *userdata, struct client *c);
	void (*report)(void *userdata, struct client *c, const struct mg_report *r);
	void (*released)(void *userdata, struct client *c, uint32_t seq,
			 const struct mg_released *r);
	/*
	 * An admin request from a permitted peer.  Answer with server_send()
	 * (replies carry the request's seq) ending with one RESULT.
	 */
	void (*admin)(void *userdata, struct client *c, const struct mg_msg *m);
	/* The client is going away; forget it.  Called once per client that
	 * was accepted, after it stopped receiving. */
	void (*gone)(void *userdata, struct client *c);
};

/*
 * Check the directory of `path` (the runtime directory: the socket and the
 * escalation record live there): it must be a directory, not a symlink,
 * owned by root (or by us), and writable by nobody else, or anyone could
 * plant files where the daemon trusts them.  Returns 0, -ENOTDIR, or
 * -EPERM with the reason in `ret_why` (a static string).
 */
int server_check_runtime_dir(const char *path, const char **ret_why);

/*
 * Create the listening socket at `path`: make its directory (mode 0755),
 * remove a stale socket left by a dead daemon (only a socket: another
 * file there is -EEXIST), bind with `mode` already set (the umask), give
 * it the group `gid` ((gid_t)-1 = leave it) without following a symlink,
 * listen.  Returns the fd, -EADDRINUSE when a live daemon answers on
 * `path`, or another -errno.
 */
int server_listen(const char *path, mode_t mode, gid_t gid);

/* Remove the socket at `path` if a socket is there (never another kind of
 * file).  Returns 0 or -errno. */
int server_unlink_socket(const char *path);

/*
 * Serve connections on `listen_fd` (which the server owns from now on and
 * closes) from the loop `event`.  Admin requests are allowed from uid 0 and
 * from peers whose primary or supplementary groups include `admin_gid`
 * ((gid_t)-1 = root only).
 */
int server_new(sd_event *event, int listen_fd, gid_t admin_gid, const struct server_ops *ops,
	       void *userdata, struct server **ret);

/* Say BYE to every client and free everything; accepts NULL; returns NULL. */
struct server *server_free(struct server *s);

/* Admin requests from now on from uid 0 and `gid`, on the connections
 * already open too (judged from the credentials of their connect()). */
void server_set_admin_gid(struct server *s, gid_t gid);

/* How many connections the server takes (memguard.conf's [daemon] keys of
 * the same names; a new server has CONF_DEFAULT_*). */
struct server_limits {
	unsigned max_connections;        /* at once, ≥ 1 */
	unsigned max_connections_per_uid; /* from one uid but 0, ≥ 1 */
	unsigned admin_reserved_connections; /* of max_connections, for admin peers only */
};

/*
 * Apply `l` to the connections accepted from now on (open ones stay).  A
 * connection over a limit is accepted and closed at once; the refusals are
 * logged at most once per SERVER_LOG_INTERVAL_USEC, with their count.
 */
void server_set_limits(struct server *s, const struct server_limits *l);

/*
 * Queue `m` to `c`.  When m->hdr.seq is 0 the server gives it the
 * connection's next daemon sequence number (32 bits, wrapping, never 0)
 * and writes it back to m->hdr.seq.  Returns 0, -EPIPE when `c` is dropped (now or before), or
 * -EINVAL when `m` does not encode.  A client whose queue overflows is
 * dropped.
 */
int server_send(struct client *c, struct mg_msg *m);

/*
 * Send `m` with the descriptors `fds` (SCM_RIGHTS) at once, or not at all:
 * the send queue does not hold descriptors.  The seq is assigned as by
 * server_send().  Returns 0, -EINVAL when `m` does not encode, -EPIPE when
 * `c` was dropped before, or another -errno when it could not go now
 * (something is queued, the socket is full or gone, the peer or the
 * kernel refused the descriptors).  It never drops `c`: a socket that is
 * gone is noticed by the next read or send.
 */
int server_send_fds(struct client *c, struct mg_msg *m, const int *fds, size_t n_fds);

/* The connection's next daemon sequence number, for a directive that
 * travels without a message (a board slot): the same space as
 * server_send()'s. */
uint32_t server_seq_next(struct client *c);

/*
 * Whether the process that connected is still there under cred.pid: its
 * pidfd (SO_PEERPIDFD, Linux 6.5+) still names a live process, or, on
 * older kernels, the pid's start time in /proc/PID/stat is the one read at
 * accept.  Call it before and after reading anything of /proc/PID, so that
 * what was read belongs to the peer and not to a process that took its
 * pid.  Returns 0, or -ESRCH when the peer is gone or was replaced.
 */
int server_peer_check(const struct client *c);

/* Send RESULT {code, text} answering the admin request with `seq`. */
int server_send_result(struct client *c, uint32_t seq, unsigned code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Drop `c` with a reason logged at `level`; safe while iterating clients:
 * the memory is freed on the next loop iteration. */
void server_drop(struct client *c, int level, const char *reason);

/*
 * Send PINGs to idle clients and drop those that did not answer in time.
 * A peer without HELLO is dropped SERVER_HELLO_USEC after it was accepted
 * unless it may send admin requests, and an admin peer without HELLO
 * SERVER_ADMIN_IDLE_USEC after its last request: whatever else it sends
 * (a PONG, a refused request) does not keep it.
 */
void server_tick(struct server *s, uint64_t now_usec);

/* The first client; iterate with c->next.  Dead clients are skipped by
 * server_for_each. */
struct client *server_clients(struct server *s);
size_t server_n_clients(const struct server *s);

#define server_for_each(c, s) \
	for (struct client *c = server_clients(s); c; c = c->next) \
		if (!c->dead)
