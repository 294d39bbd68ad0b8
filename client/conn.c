/* SPDX-License-Identifier: MIT */
/*
 * The client's connection to memguardd: one non-blocking AF_UNIX
 * SOCK_SEQPACKET socket, one datagram per message (docs/protocol.md), a
 * small queue for the rare moment the socket is full, and reconnection
 * with backoff.  Everything here runs with the client's lock held.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syslog.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client-internal.h"
#include "client/alloc/alloc.h"

static int epoll_set(int epfd, int op, int fd, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.fd = fd };

	return epoll_ctl(epfd, op, fd, &ev) < 0 ? -errno : 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

int conn_fds_open(struct mg_client *c)
{
	int r;

	c->epfd = alloc_fd_high(epoll_create1(EPOLL_CLOEXEC));
	c->timerfd = alloc_fd_high(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
	c->evfd = alloc_fd_high(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
	r = c->epfd < 0 ? c->epfd : c->timerfd < 0 ? c->timerfd : c->evfd < 0 ? c->evfd : 0;
	if (r < 0)
		goto out_close;
	r = epoll_set(c->epfd, EPOLL_CTL_ADD, c->timerfd, EPOLLIN);
	if (r == 0)
		r = epoll_set(c->epfd, EPOLL_CTL_ADD, c->evfd, EPOLLIN);
	if (r == 0)
		return 0;
out_close:
	conn_fds_close(c);
	return r;
}

/* Put a new file under the number `*fd` (closing what the number held in
 * this process only). */
static int replace_fd(int fresh, int *fd)
{
	int r = 0;

	if (fresh < 0)
		return -errno;
	if (dup3(fresh, *fd, O_CLOEXEC) < 0)
		r = -errno;
	close(fresh);
	return r;
}

int conn_fds_renew(struct mg_client *c)
{
	int ep, r;

	/*
	 * After fork() the epoll instance, the timer and the eventfd are the
	 * parent's very files: arming the timer or changing the interest list
	 * here would change the parent's.  So nothing is done to them; new
	 * ones take their numbers, which keeps mg_client_fd() stable.  The
	 * socket is the parent's conversation with the daemon: the child only
	 * drops its reference (no BYE, no epoll_ctl).
	 */
	close_fd(&c->sock);
	close_fd(&c->adopt_fd);
	conn_rx_fds_close(c);
	conn_board_close(c, false);
	c->out_len = 0;
	c->out_armed = false;
	c->state = CONN_IDLE;

	r = replace_fd(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC), &c->timerfd);
	if (r == 0)
		r = replace_fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), &c->evfd);
	if (r < 0)
		goto out_close;
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		r = -errno;
		goto out_close;
	}
	r = epoll_set(ep, EPOLL_CTL_ADD, c->timerfd, EPOLLIN);
	if (r == 0)
		r = epoll_set(ep, EPOLL_CTL_ADD, c->evfd, EPOLLIN);
	if (r < 0) {
		close(ep);
		goto out_close;
	}
	r = replace_fd(ep, &c->epfd);
	if (r == 0)
		return 0;
out_close:
	/* A client without its descriptors cannot run; dispatch reports
	 * -EBADF rather than touch the parent's files. */
	conn_fds_close(c);
	return r;
}

void conn_fds_close(struct mg_client *c)
{
	conn_rx_fds_close(c);
	conn_board_close(c, false);
	close_fd(&c->adopt_fd);
	close_fd(&c->sock);
	close_fd(&c->evfd);
	close_fd(&c->timerfd);
	close_fd(&c->epfd);
}

/* Uniform in [0, n). */
static uint32_t rand_below(struct mg_client *c, uint32_t n)
{
	return (uint32_t)(((prng_next(&c->rng) >> 32) * n) >> 32);
}

/*
 * Next attempt after the nominal delay with "equal jitter": somewhere in
 * its second half.  Clients that lost the same daemon at the same moment
 * then spread their reconnects instead of arriving together, and no delay
 * exceeds the nominal one: 0.8 s at most while the daemon is absent, so a
 * restarted one has them all back within 2 s of its socket however long
 * it was away; 5 s after a refusal that the same HELLO would meet again.
 */
static void schedule(struct mg_client *c, bool give_up)
{
	uint32_t d = give_up ? CONN_REFUSED_MS : c->backoff_ms;

	c->next_connect_us = now_usec() + 1000ULL * (d / 2 + rand_below(c, d / 2 + 1));
	if (!give_up)
		c->backoff_ms = c->backoff_ms * 2 > CONN_BACKOFF_MAX_MS ? CONN_BACKOFF_MAX_MS
									: c->backoff_ms * 2;
}

void conn_backoff_reset(struct mg_client *c)
{
	c->backoff_ms = CONN_BACKOFF_MIN_MS;
	c->failures = 0;
}

static void hello(struct mg_client *c)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_HELLO } };

	/*
	 * The daemon keeps the capabilities as information only; hooks set
	 * after this HELLO work all the same, they are just announced on the
	 * next connection.
	 */
	m.hello.capabilities = MG_CAP_ADMIT | MG_CAP_HEAP;
	if (c->gc_fn)
		m.hello.capabilities |= MG_CAP_GC_HOOK;
	if (c->release_fn)
		m.hello.capabilities |= MG_CAP_RELEASE_HOOK;
	if (!c->no_board)
		m.hello.capabilities |= MG_CAP_BOARD;
	memcpy(m.hello.service, c->service, sizeof(m.hello.service));
	memcpy(m.hello.process, c->process, sizeof(m.hello.process));
	c->state = CONN_HELLO;
	c->hello_deadline_us = now_usec() + 1000ULL * CONN_HELLO_TIMEOUT_MS;
	if (conn_send(c, &m) == 0)
		c->hello_seq = m.hdr.seq;
}

int conn_adopt(struct mg_client *c, int fd)
{
	int r;

	c->sock = fd;
	c->seq = 0;
	c->out_len = 0;
	c->out_armed = false;
	r = epoll_set(c->epfd, EPOLL_CTL_ADD, fd, EPOLLIN);
	if (r < 0) {
		conn_drop(c, LOG_ERR, r, false, "Failed to watch the memguardd socket");
		return r;
	}
	hello(c);
	return c->state == CONN_HELLO ? 0 : -ENOTCONN;
}

int conn_open(struct mg_client *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	memcpy(sa.sun_path, c->socket_path, sizeof(sa.sun_path));
	fd = alloc_fd_high(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
	if (fd < 0) {
		r = fd;
		client_log(c, LOG_ERR, "Failed to create a socket: %s", strerror(-r));
		schedule(c, false);
		return r;
	}
	/* A Unix socket connects at once or not at all: no EINPROGRESS.  A
	 * full backlog (EAGAIN) is a busy daemon: try again later. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		close(fd);
		/* Say it once per outage; the retries are routine. */
		client_log(c, c->failures++ ? LOG_DEBUG : LOG_INFO,
			   "memguardd is not reachable at %s (%s); retrying with backoff",
			   c->socket_path, strerror(-r));
		schedule(c, false);
		return r;
	}
	client_log(c, LOG_DEBUG, "Connected to %s", c->socket_path);
	return conn_adopt(c, fd);
}

void conn_drop(struct mg_client *c, int priority, int r, bool give_up, const char *why)
{
	conn_rx_fds_close(c);
	conn_board_close(c, true);
	if (c->sock >= 0) {
		(void)epoll_set(c->epfd, EPOLL_CTL_DEL, c->sock, 0);
		close_fd(&c->sock);
	}
	c->out_len = 0;
	c->out_armed = false;
	c->state = CONN_IDLE;
	schedule(c, give_up);
	if (r < 0)
		client_log(c, priority, "%s: %s; reconnecting in %u ms", why, strerror(-r),
			   (unsigned)((c->next_connect_us - now_usec()) / 1000));
	else
		client_log(c, priority, "%s; reconnecting in %u ms", why,
			   (unsigned)((c->next_connect_us - now_usec()) / 1000));
	client_disconnected(c);
}

void conn_bye(struct mg_client *c)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_BYE, .seq = c->seq + 1 } };
	uint8_t buf[CONN_OUT_MAX];
	int n;

	if (c->sock < 0)
		return;
	/* Best effort and without waiting: the daemon notices a plain close
	 * as well, BYE just makes it a normal departure in its log.  What
	 * was queued goes first, so the BYE comes last, in order. */
	while (c->out_len > 0) {
		struct conn_out *slot = &c->out[c->out_head];

		if (send(c->sock, slot->buf, slot->len, MSG_DONTWAIT | MSG_NOSIGNAL) != slot->len)
			break;
		c->out_head = (c->out_head + 1) % CONN_OUT_SLOTS;
		c->out_len--;
	}
	m.bye.reason = MG_BYE_NORMAL;
	if (m.hdr.seq == 0)
		m.hdr.seq = 1;
	n = proto_msg_encode(&m, buf, sizeof(buf));
	if (n > 0 && c->out_len == 0)
		(void)send(c->sock, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	/*
	 * A Unix socket closed with unread messages in its receive queue
	 * makes the peer's next read fail with ECONNRESET, ahead of what we
	 * sent it: the daemon would lose the BYE.  So shut the socket first
	 * (nothing more can arrive), then read what had arrived, then close.
	 */
	(void)shutdown(c->sock, SHUT_RDWR);
	for (int i = 0; i < CONN_DRAIN_MAX; i++)
		if (recv(c->sock, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC) <= 0)
			break;
	conn_board_close(c, true);
	(void)epoll_set(c->epfd, EPOLL_CTL_DEL, c->sock, 0);
	close_fd(&c->sock);
	c->out_len = 0;
	c->out_armed = false;
	c->state = CONN_IDLE;
}

static void want_out(struct mg_client *c, bool on)
{
	if (c->out_armed == on)
		return;
	if (epoll_set(c->epfd, EPOLL_CTL_MOD, c->sock, on ? EPOLLIN | EPOLLOUT : EPOLLIN) == 0)
		c->out_armed = on;
}

static bool send_busy(int err)
{
	return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == EINTR;
}

int conn_send(struct mg_client *c, struct mg_msg *m)
{
	uint8_t buf[CONN_OUT_MAX];
	struct conn_out *slot;
	int n, r;

	if (c->sock < 0)
		return -ENOTCONN;
	if (++c->seq == 0)
		c->seq = 1;
	m->hdr.seq = c->seq;
	n = proto_msg_encode(m, buf, sizeof(buf));
	if (n < 0) {
		/* Our own message does not validate: a bug here, not the
		 * daemon's fault; the connection is fine. */
		client_log(c, LOG_ERR, "Failed to encode %s: %s", proto_type_name(m->hdr.type),
			   strerror(-n));
		return n;
	}
	if (c->out_len == 0) {
		if (send(c->sock, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) == n)
			return 0;
		if (!send_busy(errno)) {
			r = -errno;
			conn_drop(c, LOG_NOTICE, r, false, "Failed to send to memguardd");
			return r;
		}
	}
	if (c->out_len == CONN_OUT_SLOTS) {
		/* A REPORT is replaced by the next one anyway. */
		if (m->hdr.type == MG_MSG_REPORT)
			return 0;
		conn_drop(c, LOG_WARNING, 0, false, "memguardd does not read its socket");
		return -ENOBUFS;
	}
	slot = &c->out[(c->out_head + c->out_len++) % CONN_OUT_SLOTS];
	slot->len = (uint16_t)n;
	memcpy(slot->buf, buf, (size_t)n);
	want_out(c, true);
	return 0;
}

int conn_flush(struct mg_client *c)
{
	int r;

	while (c->sock >= 0 && c->out_len > 0) {
		struct conn_out *slot = &c->out[c->out_head];

		if (send(c->sock, slot->buf, slot->len, MSG_DONTWAIT | MSG_NOSIGNAL) != slot->len) {
			if (send_busy(errno))
				return 0;
			r = -errno;
			conn_drop(c, LOG_NOTICE, r, false, "Failed to send to memguardd");
			return r;
		}
		c->out_head = (c->out_head + 1) % CONN_OUT_SLOTS;
		c->out_len--;
	}
	if (c->sock >= 0)
		want_out(c, false);
	return 0;
}

void conn_rx_fds_close(struct mg_client *c)
{
	for (unsigned i = 0; i < c->rx_nfds; i++)
		close_fd(&c->rx_fds[i]);
	c->rx_nfds = 0;
}

/* Keep the descriptors of SCM_RIGHTS in c->rx_fds, up to CONN_RX_FDS;
 * close any beyond (a daemon has no reason to send more). */
static void take_fds(struct mg_client *c, struct msghdr *mh)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		size_t n;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(fd));
			if (c->rx_nfds < CONN_RX_FDS)
				c->rx_fds[c->rx_nfds++] = fd;
			else
				close(fd);
		}
	}
}

int conn_recv(struct mg_client *c, struct mg_msg *ret)
{
	uint8_t buf[MG_MSG_MAX];
	union {
		char buf[CMSG_SPACE(CONN_RX_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};
	ssize_t n;

	conn_rx_fds_close(c);
	n = recvmsg(c->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
	take_fds(c, &mh);
	/* A zero-length datagram would be malformed too; on a SEQPACKET
	 * socket it cannot be told from the end of the stream. */
	if (n == 0)
		return -ECONNRESET;
	if (mh.msg_flags & MSG_TRUNC)
		return -EMSGSIZE;
	n = proto_msg_decode(buf, (size_t)n, ret);
	return n < 0 ? (int)n : 1;
}

/* ---- the directive board ------------------------------------------------ */

void conn_board_close(struct mg_client *c, bool unwatch)
{
	if (c->board_fd >= 0 && unwatch)
		(void)epoll_set(c->epfd, EPOLL_CTL_DEL, c->board_fd, 0);
	close_fd(&c->board_fd);
	if (c->board)
		munmap((void *)c->board, c->board_len);
	c->board = NULL;
	c->board_len = 0;
}

int conn_board_open(struct mg_client *c, const struct mg_board *b)
{
	int memfd = -1, wake = -1, r;
	size_t len = (size_t)b->slots * MG_BOARD_SLOT_SIZE;
	struct stat st;
	void *p;

	if (c->rx_nfds == CONN_RX_FDS) {
		memfd = c->rx_fds[0];
		wake = c->rx_fds[1];
		c->rx_nfds = 0;
	}
	if (memfd < 0) {
		r = -EBADMSG;                /* descriptors refused on our side */
		goto out;
	}
	/* The memfd must hold every slot the daemon says it has: a mapping
	 * past its end would fault on the first read. */
	if (fstat(memfd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < len) {
		r = -EBADMSG;
		goto out;
	}
	p = mmap(NULL, len, PROT_READ, MAP_SHARED, memfd, 0);
	if (p == MAP_FAILED) {
		r = -errno;
		goto out;
	}
	c->board = p;
	c->board_len = len;
	c->board_slot = b->slot;
	c->board_fd = alloc_fd_high(wake);
	wake = -1;
	/* Edge-triggered: the daemon leaves its last byte in the pipe, and
	 * the clients never read it. */
	r = epoll_set(c->epfd, EPOLL_CTL_ADD, c->board_fd, EPOLLIN | EPOLLET);
	if (r < 0)
		conn_board_close(c, false);
out:
	if (memfd >= 0)
		close(memfd);
	if (wake >= 0)
		close(wake);
	return r;
}

void conn_board_collect(struct mg_client *c)
{
	struct epoll_event ev[8];

	if (c->board_fd >= 0)
		while (epoll_wait(c->epfd, ev, ARRAY_SIZE(ev), 0) == (int)ARRAY_SIZE(ev))
			;
}

void conn_drain(struct mg_client *c)
{
	uint64_t v;

	(void)!read(c->timerfd, &v, sizeof(v));
	(void)!read(c->evfd, &v, sizeof(v));
}

void conn_arm(struct mg_client *c, uint64_t deadline_us)
{
	struct itimerspec its = { 0 };

	if (deadline_us) {
		its.it_value.tv_sec = (time_t)(deadline_us / 1000000);
		its.it_value.tv_nsec = (long)(deadline_us % 1000000) * 1000;
		/* All zeroes would disarm. */
		if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
			its.it_value.tv_nsec = 1;
	}
	(void)timerfd_settime(c->timerfd, TFD_TIMER_ABSTIME, &its, NULL);
}

void conn_wake(struct mg_client *c)
{
	uint64_t one = 1;

	(void)!write(c->evfd, &one, sizeof(one));
}
