/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "log.h"
#include "proto/macro.h"
#include "server.h"

#define RECV_BATCH 16                   /* datagrams read per wakeup, for fairness */
/* Datagrams per recvmmsg() call: one call takes what a client has queued
 * (a REPORT, mostly), where recvmsg() took one call per datagram and one
 * more to find the queue empty. */
#define RECV_VLEN 4

/*
 * A log line said at most once per SERVER_LOG_INTERVAL_USEC; what happened
 * in between is counted and told with the next line.  A peer that can make
 * the daemon log cannot make it fill the disk.
 */
struct ratelimit {
	uint64_t last_usec;              /* when a line was last said, 0 = never */
	unsigned suppressed;             /* events since, not said */
};

struct server {
	sd_event *event;
	int fd;
	sd_event_source *listen_io;
	sd_event_source *accept_timer;   /* resumes listening after a pause */
	struct ratelimit accept_failed;
	struct ratelimit refused;        /* connections over a limit */
	struct server_limits limits;
	sd_event_source *reaper;         /* deferred: frees dropped clients */
	gid_t admin_gid;
	const struct server_ops *ops;
	void *userdata;
	struct client *clients;
	size_t n_clients;
	uint64_t next_id;                /* client ids */
};

/* Whether to say the event now; returns true with `*ret_suppressed` the
 * events not said since the last line, else counts this one. */
static bool ratelimit_pass(struct ratelimit *rl, unsigned *ret_suppressed)
{
	uint64_t now = now_usec();

	if (rl->last_usec && now - rl->last_usec < SERVER_LOG_INTERVAL_USEC) {
		rl->suppressed++;
		return false;
	}
	*ret_suppressed = rl->suppressed;
	rl->suppressed = 0;
	rl->last_usec = now;
	return true;
}

int server_check_runtime_dir(const char *path, const char **ret_why)
{
	_cleanup_free_ char *dir = strdup(path);
	char *slash = dir ? strrchr(dir, '/') : NULL;
	struct stat st;

	if (!dir)
		return -ENOMEM;
	if (slash)
		*(slash == dir ? slash + 1 : slash) = 0;
	if (lstat(dir, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode)) {
		*ret_why = "it is not a directory (a symlink is not followed)";
		return -ENOTDIR;
	}
	if (st.st_uid != 0 && st.st_uid != geteuid()) {
		*ret_why = "it is not owned by root";
		return -EPERM;
	}
	if (st.st_mode & 022) {
		*ret_why = "its group or others may write to it";
		return -EPERM;
	}
	return 0;
}

int server_unlink_socket(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	return unlink(path) < 0 ? -errno : 0;
}

/* bind() with the socket file made with `mode` at once (the umask), so it
 * needs no chmod by name afterwards; errno as bind's. */
static int bind_mode(int fd, const struct sockaddr_un *sa, mode_t mode)
{
	mode_t old = umask(~mode & 0777);
	int r = bind(fd, (const struct sockaddr *)sa, sizeof(*sa));
	int e = errno;

	umask(old);
	errno = e;
	return r;
}

int server_listen(const char *path, mode_t mode, gid_t gid)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *dir = NULL;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char *slash;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);

	dir = strdup(path);
	if (!dir)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			return -errno;
	}

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;

	if (bind_mode(fd, &sa, mode) < 0) {
		_cleanup_close_ int probe = -1;
		int r;

		if (errno != EADDRINUSE)
			return -errno;
		/* A socket file is there: a live daemon answers on it, a stale
		 * one (left by a crash) refuses and may be replaced. */
		probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (probe < 0)
			return -errno;
		if (connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return -EADDRINUSE;
		if (errno != ECONNREFUSED)
			return -EADDRINUSE;
		/* A regular file refuses a connect too: only a socket is
		 * stale, anything else is someone's and stays. */
		r = server_unlink_socket(path);
		if (r < 0)
			return r;
		if (bind_mode(fd, &sa, mode) < 0)
			return -errno;
	}
	/* The name may have been replaced since bind (a symlink): never
	 * follow it to chown something else. */
	if (gid != (gid_t)-1 && fchownat(AT_FDCWD, path, (uid_t)-1, gid, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (listen(fd, SOMAXCONN) < 0)
		return -errno;
	return TAKE_FD(fd);
}

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77                 /* Linux 6.5, asm-generic/socket.h */
#endif

/* Field 22 of /proc/PID/stat: when the process started, in clock ticks
 * since boot.  Always the real /proc: it is the kernel's word on the pid. */
static int pid_start_time(pid_t pid, uint64_t *ret)
{
	char path[64], buf[1024], *p;
	unsigned long long v;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -ESRCH;
	buf[n] = 0;
	/* The name (field 2) may hold spaces and parentheses: skip to the
	 * last ')'. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d "
			 "%*d %*d %*d %*d %llu", &v) != 1)
		return -EIO;
	*ret = v;
	return 0;
}

int server_peer_check(const struct client *c)
{
	uint64_t t;

	if (c->pidfd >= 0) {
		/* Signal 0 to a pidfd: ESRCH once that very process exited,
		 * whatever now has its number. */
		if (syscall(SYS_pidfd_send_signal, c->pidfd, 0, NULL, 0) < 0 && errno == ESRCH)
			return -ESRCH;
		return 0;
	}
	if (pid_start_time(c->cred.pid, &t) < 0 || t != c->start_time)
		return -ESRCH;
	return 0;
}

static bool peer_is_admin(const struct server *s, int fd, const struct ucred *cred)
{
	gid_t small[256], *groups = small;
	_cleanup_free_ gid_t *big = NULL;
	socklen_t len = sizeof(small);

	if (cred->uid == 0)
		return true;
	if (s->admin_gid == (gid_t)-1)
		return false;
	if (cred->gid == s->admin_gid)
		return true;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0) {
		/* More groups than fit (up to NGROUPS_MAX, 65536): ERANGE,
		 * with `len` set to what they take. */
		if (errno != ERANGE)
			return false;
		big = malloc(len);
		if (!big || getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, big, &len) < 0)
			return false;
		groups = big;
	}
	for (size_t i = 0; i < len / sizeof(gid_t); i++)
		if (groups[i] == s->admin_gid)
			return true;
	return false;
}

static void queue_clear(struct client *c)
{
	while (c->q_len > 0) {
		free(c->queue[c->q_head]);
		c->q_head = (c->q_head + 1) % c->q_cap;
		c->q_len--;
	}
}

static void client_free(struct client *c)
{
	struct server *s = c->server;

	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_clients--;

	sd_event_source_disable_unref(c->io);
	if (c->fd >= 0)
		close(c->fd);
	if (c->pidfd >= 0)
		close(c->pidfd);
	queue_clear(c);
	free(c->queue);
	free(c);
}

static int on_reap(sd_event_source *src, void *userdata)
{
	struct server *s = userdata;
	struct client *next;

	for (struct client *c = s->clients; c; c = next) {
		next = c->next;
		if (c->dead)
			client_free(c);
	}
	return sd_event_source_set_enabled(src, SD_EVENT_OFF);
}

void server_drop(struct client *c, int level, const char *reason)
{
	struct server *s = c->server;

	if (c->dead)
		return;
	c->dead = true;
	log_internal(level, 0, "Client %" PRIu64 " (pid %d, %s): %s; dropped", c->id,
		     (int)c->cred.pid, c->process[0] ? c->process : "unnamed", reason);

	/* Stop reading now; the manager forgets the client at once, the
	 * memory goes on the next iteration when no caller holds it. */
	sd_event_source_disable_unref(c->io);
	c->io = NULL;
	close(c->fd);
	c->fd = -1;
	queue_clear(c);
	if (s->ops->gone)
		s->ops->gone(s->userdata, c);
	sd_event_source_set_enabled(s->reaper, SD_EVENT_ONESHOT);
}

/* Most sends go straight to the socket, so the ring is allocated only when
 * a client falls behind, and grows by doubling up to its bound. */
static int queue_grow(struct client *c)
{
	size_t cap = c->q_cap ? c->q_cap * 2 : 8;
	uint8_t **q;

	if (cap > c->q_max)
		cap = c->q_max;
	q = malloc(cap * sizeof(*q));
	if (!q)
		return -ENOMEM;
	for (size_t i = 0; i < c->q_len; i++)
		q[i] = c->queue[(c->q_head + i) % c->q_cap];
	free(c->queue);
	c->queue = q;
	c->q_cap = cap;
	c->q_head = 0;
	return 0;
}

/* Read unless closing; write while something is queued. */
static int update_events(struct client *c)
{
	return sd_event_source_set_io_events(c->io, (c->closing ? 0 : EPOLLIN) |
							    (c->q_len ? EPOLLOUT : 0));
}

/* Write queued datagrams until the socket is full. */
static int flush(struct client *c)
{
	while (c->q_len > 0) {
		uint8_t *d = c->queue[c->q_head];
		size_t n = (size_t)d[0] | (size_t)d[1] << 8;

		if (send(c->fd, d + 2, n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			return -errno;
		}
		free(d);
		c->q_head = (c->q_head + 1) % c->q_cap;
		c->q_len--;
	}
	if (c->q_len == 0 && c->closing)
		return -ECONNRESET;
	return update_events(c);
}

/* The connection's next daemon sequence number: 32 bits, wrapping, never
 * 0.  One counter per connection, so that only a peer's own traffic (its
 * requests numbered 0) moves the numbers its directives are compared by. */
static uint32_t next_seq(struct client *c)
{
	if (++c->tx_seq == 0)
		c->tx_seq = 1;
	return c->tx_seq;
}

/* `m` encoded into `buf` for `c`, numbered first when its seq is 0:
 * the datagram's length, or -errno. */
static int encode_for(struct client *c, struct mg_msg *m, uint8_t buf[MG_MSG_MAX])
{
	if (m->hdr.seq == 0)
		m->hdr.seq = next_seq(c);
	return proto_msg_encode(m, buf, MG_MSG_MAX);
}

int server_send(struct client *c, struct mg_msg *m)
{
	uint8_t buf[MG_MSG_MAX];
	uint8_t *d;
	int n;

	if (c->dead)
		return -EPIPE;
	n = encode_for(c, m, buf);
	if (n < 0)
		return n;

	if (c->q_len == 0) {
		if (send(c->fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
			return 0;
		if (errno != EAGAIN && errno != EINTR) {
			server_drop(c, LOG_INFO, "send failed");
			return -EPIPE;
		}
	}
	if (c->q_len >= c->q_max) {
		server_drop(c, LOG_WARNING, "send queue full (the client does not read)");
		return -EPIPE;
	}
	if (c->q_len == c->q_cap && queue_grow(c) < 0) {
		server_drop(c, LOG_ERR, "out of memory for its send queue");
		return -EPIPE;
	}
	d = malloc((size_t)n + 2);
	if (!d) {
		server_drop(c, LOG_ERR, "out of memory for its send queue");
		return -EPIPE;
	}
	d[0] = (uint8_t)n;
	d[1] = (uint8_t)(n >> 8);
	memcpy(d + 2, buf, (size_t)n);
	c->queue[(c->q_head + c->q_len) % c->q_cap] = d;
	c->q_len++;
	return update_events(c);
}

int server_send_fds(struct client *c, struct mg_msg *m, const int *fds, size_t n_fds)
{
	uint8_t buf[MG_MSG_MAX];
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} ctl = { 0 };
	struct iovec iov = { .iov_base = buf };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf };
	struct cmsghdr *cm;
	int n;

	if (c->dead)
		return -EPIPE;
	if (n_fds == 0 || n_fds > 4)
		return -EINVAL;
	/* Nothing may overtake what is queued. */
	if (c->q_len > 0)
		return -EAGAIN;
	n = encode_for(c, m, buf);
	if (n < 0)
		return n;
	iov.iov_len = (size_t)n;
	mh.msg_controllen = CMSG_SPACE(n_fds * sizeof(int));
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
	memcpy(CMSG_DATA(cm), fds, n_fds * sizeof(int));
	if (sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
		return 0;
	/* Whatever the reason (a full socket, a peer that refuses
	 * descriptors, SO_PASSRIGHTS off), the client stays: the caller
	 * goes on without what this message would have given. */
	return -errno;
}

uint32_t server_seq_next(struct client *c)
{
	return next_seq(c);
}

int server_send_result(struct client *c, uint32_t seq, unsigned code, const char *fmt, ...)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_RESULT, .seq = seq } };
	va_list ap;

	m.result.code = code;
	va_start(ap, fmt);
	vsnprintf(m.result.text, sizeof(m.result.text), fmt, ap);
	va_end(ap);
	return server_send(c, &m);
}

/* Send ERROR, then close once it is out. */
static void refuse(struct client *c, uint32_t seq, unsigned code, const char *text)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_ERROR, .seq = seq } };
	char reason[MG_TEXT_MAX + 64];

	m.error.code = code;
	snprintf(m.error.text, sizeof(m.error.text), "%s", text);
	snprintf(reason, sizeof(reason), "%s", text);
	if (server_send(c, &m) == 0 && c->q_len > 0) {
		c->closing = true;
		update_events(c);
		log_info("Client %" PRIu64 " (pid %d): %s; closing", c->id, (int)c->cred.pid, reason);
		return;
	}
	server_drop(c, LOG_INFO, reason);
}

static void handle_hello(struct client *c, const struct mg_msg *m)
{
	struct server *s = c->server;
	struct mg_msg w = { .hdr = { .type = MG_MSG_WELCOME, .seq = m->hdr.seq } };
	char text[MG_TEXT_MAX + 1] = "";
	int code, r;

	if (c->hello) {
		refuse(c, m->hdr.seq, MG_ERR_PROTOCOL, "second HELLO on one connection");
		return;
	}
	c->capabilities = m->hello.capabilities;
	memcpy(c->process, m->hello.process, sizeof(c->process));

	code = s->ops->hello(s->userdata, c, &m->hello, &w.welcome, text);
	if (code != 0) {
		refuse(c, m->hdr.seq, (unsigned)code, text[0] ? text : proto_err_name((unsigned)code));
		return;
	}
	c->hello = true;
	/* A registered client gets the client bound even when its peer may
	 * also send admin requests (a service running as root). */
	c->q_max = SERVER_QUEUE_MAX;
	w.welcome.client_id = c->id;
	/* A WELCOME that does not encode would leave the client waiting
	 * forever: it hears why, and goes. */
	r = server_send(c, &w);
	if (r == -EINVAL)
		refuse(c, m->hdr.seq, MG_ERR_INTERNAL, "the daemon cannot encode its WELCOME");
	else if (r == 0 && s->ops->welcomed)
		s->ops->welcomed(s->userdata, c);
}

static void handle(struct client *c, const struct mg_msg *m)
{
	struct server *s = c->server;
	enum mg_sender sender = proto_type_sender(m->hdr.type);

	switch (sender) {
	case MG_SENDER_ADMIN:
		c->last_request_usec = c->last_rx_usec;
		if (!c->admin) {
			server_send_result(c, m->hdr.seq, MG_ERR_PERMISSION,
					   "admin requests need uid 0 or the admin group");
			if (c->dead)
				return;
			c->closing = true;
			update_events(c);
			if (c->q_len == 0)
				server_drop(c, LOG_NOTICE, "admin request from a non-admin peer");
			else
				log_notice("Client %" PRIu64 " (pid %d, uid %d): admin request refused",
					   c->id, (int)c->cred.pid, (int)c->cred.uid);
			return;
		}
		s->ops->admin(s->userdata, c, m);
		return;
	case MG_SENDER_DAEMON:
	case MG_SENDER_NONE:
		refuse(c, m->hdr.seq, MG_ERR_PROTOCOL, "message type sent by the wrong side");
		return;
	default:
		break;
	}

	switch (m->hdr.type) {
	case MG_MSG_HELLO:
		handle_hello(c, m);
		return;
	case MG_MSG_BYE:
		server_drop(c, LOG_DEBUG, "said BYE");
		return;
	case MG_MSG_PONG:
		if (c->ping_cookie && m->ping.cookie == c->ping_cookie)
			c->ping_cookie = 0;
		return;
	default:
		break;
	}

	if (!c->hello) {
		refuse(c, m->hdr.seq, MG_ERR_PROTOCOL, "message before HELLO");
		return;
	}
	c->rx_flags = m->hdr.flags;
	if (m->hdr.type == MG_MSG_REPORT)
		s->ops->report(s->userdata, c, &m->report);
	else if (m->hdr.type == MG_MSG_RELEASED)
		s->ops->released(s->userdata, c, m->hdr.seq, &m->released);
}

static const char *decode_error(int r)
{
	switch (r) {
	case -EPROTONOSUPPORT:
		return "unsupported protocol version";
	case -EOPNOTSUPP:
		return "unknown message type";
	default:
		return "malformed message";
	}
}

/* One datagram of `len` bytes with recvmsg()'s `flags`: checked, decoded
 * and handled.  Returns false when the client was dropped or is closing. */
static bool receive_one(struct client *c, const uint8_t *buf, size_t len, int flags)
{
	struct mg_msg m;
	int r;

	if (len == 0) {
		/* On a SEQPACKET socket: the peer closed (a zero-length
		 * datagram cannot be told from that). */
		server_drop(c, LOG_DEBUG, "disconnected");
		return false;
	}
	if (flags & (MSG_TRUNC | MSG_CTRUNC)) {
		server_drop(c, LOG_WARNING, "message longer than the protocol allows");
		return false;
	}
	c->last_rx_usec = now_usec();

	r = proto_msg_decode(buf, len, &m);
	if (r < 0) {
		uint32_t seq = proto_peek_seq(buf, len);

		/* Answer with what we understood, then close: the peer is
		 * broken or hostile, and nothing it says next can be trusted. */
		refuse(c, seq ? seq : next_seq(c),
		       r == -EPROTONOSUPPORT ? MG_ERR_VERSION : MG_ERR_PROTOCOL, decode_error(r));
		return false;
	}
	/* A request numbered 0 gets one number of the daemon's, which every
	 * answer to it carries, so they can still be grouped. */
	if (m.hdr.seq == 0)
		m.hdr.seq = next_seq(c);
	handle(c, &m);
	return !c->dead && !c->closing;
}

static void receive(struct client *c)
{
	/* The event loop is single-threaded: one set of buffers serves all. */
	static uint8_t buf[RECV_VLEN][MG_MSG_MAX];
	struct mmsghdr mm[RECV_VLEN];
	struct iovec iov[RECV_VLEN];

	for (int done = 0; done < RECV_BATCH && !c->dead && !c->closing;) {
		int n;

		for (int k = 0; k < RECV_VLEN; k++) {
			iov[k] = (struct iovec){ .iov_base = buf[k], .iov_len = MG_MSG_MAX };
			mm[k] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &iov[k], .msg_iovlen = 1 } };
		}
		n = recvmmsg(c->fd, mm, RECV_VLEN, MSG_DONTWAIT | MSG_CMSG_CLOEXEC, NULL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			server_drop(c, LOG_INFO, "receive failed");
			return;
		}
		for (int k = 0; k < n; k++)
			if (!receive_one(c, buf[k], mm[k].msg_len, mm[k].msg_hdr.msg_flags))
				return;
		/* Fewer than asked: the queue is empty (an error after the
		 * first datagram comes back on the next call, or wakes us). */
		if (n < RECV_VLEN)
			return;
		done += n;
	}
}

static int on_client_io(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct client *c = userdata;

	if (c->closing && (revents & (EPOLLHUP | EPOLLERR))) {
		server_drop(c, LOG_DEBUG, "hung up before reading its answer");
		return 0;
	}
	if (revents & EPOLLOUT) {
		int r = flush(c);

		if (r == -ECONNRESET) {
			server_drop(c, LOG_DEBUG, "closed after its answer");
			return 0;
		}
		if (r < 0) {
			server_drop(c, LOG_INFO, "send failed");
			return 0;
		}
	}
	if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
		receive(c);
	return 0;
}

/* Connections of `uid` open now. */
static unsigned uid_connections(struct server *s, uid_t uid)
{
	unsigned n = 0;

	server_for_each(c, s)
		n += c->cred.uid == uid;
	return n;
}

/* Why a peer may not have a connection now, or NULL. */
static const char *over_limit(struct server *s, const struct ucred *cred, bool admin)
{
	const struct server_limits *l = &s->limits;

	if (s->n_clients >= l->max_connections)
		return "max_connections reached";
	/* The last slots wait for root or an admin, so that no flood of
	 * other peers can keep `memguardctl status` out. */
	if (!admin && (l->admin_reserved_connections >= l->max_connections ||
		       s->n_clients >= l->max_connections - l->admin_reserved_connections))
		return "the connections left are kept for root and admin_group";
	if (cred->uid != 0 && uid_connections(s, cred->uid) >= l->max_connections_per_uid)
		return "max_connections_per_uid reached for its uid";
	return NULL;
}

static void accept_one(struct server *s, int fd)
{
	struct client *c;
	struct ucred cred;
	const char *why;
	socklen_t len = sizeof(cred);
	unsigned suppressed;
	bool admin;
	int r;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		log_warning_errno(errno, "Failed to read a peer's credentials, refusing it: %m");
		close(fd);
		return;
	}
	admin = peer_is_admin(s, fd, &cred);
	why = over_limit(s, &cred, admin);
	if (why) {
		if (ratelimit_pass(&s->refused, &suppressed))
			log_warning("Refusing a connection of pid %d, uid %d: %s (%u more refused "
				    "since the last message)", (int)cred.pid, (int)cred.uid, why,
				    suppressed);
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->server = s;
	c->fd = fd;
	c->id = ++s->next_id;
	c->cred = cred;
	c->admin = admin;
	/* Pin the peer now: its pid may be another process's by HELLO. */
	len = sizeof(c->pidfd);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &c->pidfd, &len) == 0) {
		(void)fcntl(c->pidfd, F_SETFD, FD_CLOEXEC);
	} else {
		c->pidfd = -1;
		if (pid_start_time(cred.pid, &c->start_time) < 0)
			c->start_time = UINT64_MAX;  /* already gone: never matches */
	}
	/* Admin answers (STATUS, CLIENTS) come in bursts of one message per
	 * service or client; registered clients get the small bound. */
	c->q_max = c->admin ? SERVER_ADMIN_QUEUE_MAX : SERVER_QUEUE_MAX;
	c->last_rx_usec = c->accept_usec = c->last_request_usec = now_usec();

	c->next = s->clients;
	if (s->clients)
		s->clients->prev = c;
	s->clients = c;
	s->n_clients++;

	r = sd_event_add_io(s->event, &c->io, fd, EPOLLIN, on_client_io, c);
	if (r < 0) {
		log_warning_errno(r, "Failed to watch a new connection, dropping it: %m");
		c->dead = true;
		close(c->fd);
		c->fd = -1;
		sd_event_source_set_enabled(s->reaper, SD_EVENT_ONESHOT);
		return;
	}
	log_debug("Client %" PRIu64 " connected (pid %d, uid %d%s)", c->id, (int)c->cred.pid,
		  (int)c->cred.uid, c->admin ? ", admin" : "");
}

static int on_accept_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct server *s = userdata;

	return sd_event_source_set_enabled(s->listen_io, SD_EVENT_ON);
}

/*
 * accept() failed for want of a resource (EMFILE, ENFILE, ENOBUFS,
 * ENOMEM).  The listening socket is level-triggered and stays readable
 * while connections wait, so retrying at once would spin: stop listening
 * for SERVER_ACCEPT_PAUSE_USEC, keep serving who we have (a closed client
 * frees a descriptor), and say so once per SERVER_LOG_INTERVAL_USEC with
 * the count.  The waiting connections stay in the backlog meanwhile.
 */
static void accept_pause(struct server *s, int err)
{
	unsigned suppressed;
	int r;

	if (ratelimit_pass(&s->accept_failed, &suppressed))
		log_warning_errno(err, "Failed to accept a connection (%u more since the last "
				  "message), pausing new connections for %llu ms: %m", suppressed,
				  SERVER_ACCEPT_PAUSE_USEC / 1000);
	r = sd_event_source_set_enabled(s->listen_io, SD_EVENT_OFF);
	if (r >= 0)
		r = sd_event_source_set_time_relative(s->accept_timer, SERVER_ACCEPT_PAUSE_USEC);
	if (r >= 0)
		r = sd_event_source_set_enabled(s->accept_timer, SD_EVENT_ONESHOT);
	if (r < 0) {
		/* Without the timer, listening must go on, spin or not. */
		sd_event_source_set_enabled(s->listen_io, SD_EVENT_ON);
		log_warning_errno(r, "Failed to arm the accept pause, ignoring: %m");
	}
}

static int on_listen(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct server *s = userdata;

	for (;;) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				return 0;
			accept_pause(s, errno);
			return 0;
		}
		accept_one(s, cfd);
	}
}

int server_new(sd_event *event, int listen_fd, gid_t admin_gid, const struct server_ops *ops,
	       void *userdata, struct server **ret)
{
	struct server *s;
	int r;

	s = calloc(1, sizeof(*s));
	if (!s) {
		close(listen_fd);
		return -ENOMEM;
	}
	s->event = sd_event_ref(event);
	s->fd = listen_fd;
	s->admin_gid = admin_gid;
	s->limits = (struct server_limits){
		.max_connections = CONF_DEFAULT_MAX_CONNECTIONS,
		.max_connections_per_uid = CONF_DEFAULT_MAX_CONNECTIONS_PER_UID,
		.admin_reserved_connections = CONF_DEFAULT_ADMIN_RESERVED,
	};
	s->ops = ops;
	s->userdata = userdata;

	r = fcntl(listen_fd, F_SETFL, fcntl(listen_fd, F_GETFL) | O_NONBLOCK);
	if (r >= 0)
		r = sd_event_add_io(event, &s->listen_io, listen_fd, EPOLLIN, on_listen, s);
	if (r >= 0)
		r = sd_event_add_time_relative(event, &s->accept_timer, CLOCK_MONOTONIC,
					       SERVER_ACCEPT_PAUSE_USEC, 0, on_accept_timer, s);
	if (r >= 0)
		r = sd_event_source_set_enabled(s->accept_timer, SD_EVENT_OFF);
	if (r >= 0)
		r = sd_event_add_defer(event, &s->reaper, on_reap, s);
	if (r >= 0)
		r = sd_event_source_set_enabled(s->reaper, SD_EVENT_OFF);
	if (r < 0) {
		if (r == -1)
			r = -errno;
		server_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

struct server *server_free(struct server *s)
{
	if (!s)
		return NULL;

	while (s->clients) {
		struct client *c = s->clients;

		if (!c->dead && c->hello) {
			struct mg_msg m = { .hdr = { .type = MG_MSG_BYE } };

			m.bye.reason = MG_BYE_SHUTDOWN;
			server_send(c, &m);
		}
		if (!c->dead) {
			c->dead = true;
			if (s->ops->gone)
				s->ops->gone(s->userdata, c);
		}
		client_free(c);
	}
	sd_event_source_disable_unref(s->listen_io);
	sd_event_source_disable_unref(s->accept_timer);
	sd_event_source_disable_unref(s->reaper);
	if (s->fd >= 0)
		close(s->fd);
	sd_event_unref(s->event);
	free(s);
	return NULL;
}

void server_set_admin_gid(struct server *s, gid_t gid)
{
	s->admin_gid = gid;
	/* The open connections are judged again, from the same credentials
	 * of their connect(): a peer dropped from the group asks no more. */
	server_for_each(c, s) {
		c->admin = peer_is_admin(s, c->fd, &c->cred);
		if (!c->hello)
			c->q_max = c->admin ? SERVER_ADMIN_QUEUE_MAX : SERVER_QUEUE_MAX;
	}
}

void server_set_limits(struct server *s, const struct server_limits *l)
{
	s->limits = *l;
	if (s->limits.max_connections == 0)
		s->limits.max_connections = 1;
	if (s->limits.max_connections_per_uid == 0)
		s->limits.max_connections_per_uid = 1;
}

void server_tick(struct server *s, uint64_t now)
{
	server_for_each(c, s) {
		if (!c->hello) {
			/* Only HELLO or an admin request counts as life here:
			 * a PONG every few seconds must not hold a slot. */
			if (!c->admin && now - c->accept_usec > SERVER_HELLO_USEC)
				server_drop(c, LOG_DEBUG, "no HELLO in time");
			else if (c->admin && now - c->last_request_usec > SERVER_ADMIN_IDLE_USEC)
				server_drop(c, LOG_DEBUG, "idle without HELLO");
			continue;
		}
		if (c->ping_cookie) {
			if (now - c->ping_usec > SERVER_PONG_USEC)
				server_drop(c, LOG_WARNING, "did not answer PING in time");
			continue;
		}
		if (now - c->last_rx_usec > SERVER_PING_USEC) {
			struct mg_msg m = { .hdr = { .type = MG_MSG_PING } };

			c->ping_cookie = (c->id << 32) ^ now ^ 0x9e3779b97f4a7c15ULL;
			if (c->ping_cookie == 0)
				c->ping_cookie = 1;
			c->ping_usec = now;
			m.ping.cookie = c->ping_cookie;
			server_send(c, &m);
		}
	}
}

struct client *server_clients(struct server *s)
{
	return s->clients;
}

size_t server_n_clients(const struct server *s)
{
	return s->n_clients;
}
