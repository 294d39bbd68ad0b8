/* SPDX-License-Identifier: MIT */
/*
 * memguardctl's protocol client: connect to memguardd, send one request,
 * gather its answers up to RESULT, and say in c->error what went wrong.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl.h"

/* --- talking to the daemon --------------------------------------------------- */

_printf_(2, 3) void ctl_set_error(struct ctl *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
}

void ctl_disconnect(struct ctl *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/*
 * Connect to the daemon's socket.  Returns 0, or -errno: -ENOENT or
 * -ECONNREFUSED when no daemon listens there, -EACCES when the socket's
 * mode keeps us out, -EAGAIN when the daemon did not accept the
 * connection within the timeout, -ENAMETOOLONG for a path that does not
 * fit a socket address.
 */
static int ctl_connect(struct ctl *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = c->timeout_ms / 1000,
			      .tv_usec = (c->timeout_ms % 1000) * 1000 };
	_cleanup_close_ int fd = -1;
	size_t len = strlen(c->socket);

	if (len == 0 || len >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, c->socket, len);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* connect() waits while the daemon's accept backlog is full; on a
	 * Unix socket the send timeout bounds that wait. */
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EINTR)
			continue;
		return errno == EINPROGRESS || errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
	c->fd = TAKE_FD(fd);
	return 0;
}


int64_t now_ms(void)
{
	return (int64_t)(now_usec() / 1000);
}

/*
 * Wait until `deadline` (now_ms()) for one datagram and decode it, with
 * c->waitmask's signals let in (--watch).  Returns 0, or -ETIMEDOUT,
 * -ECONNRESET (the daemon closed the connection), -EBADMSG (a datagram
 * that does not decode), -EINTR (a signal set *c->quit), or another
 * -errno of recvmsg().
 */
static int ctl_recv(struct ctl *c, int64_t deadline, struct mg_msg *ret)
{
	uint8_t buf[MG_MSG_MAX];

	for (;;) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		int64_t left = deadline - now_ms();
		ssize_t n;
		int r;

		if (left <= 0)
			return -ETIMEDOUT;
		if (c->waitmask) {
			struct timespec ts = { .tv_sec = left / 1000,
					       .tv_nsec = left % 1000 * 1000000 };

			r = ppoll(&p, 1, &ts, c->waitmask);
		} else {
			r = poll(&p, 1, (int)left);
		}
		if (r < 0 && errno == EINTR && c->quit && *c->quit)
			return -EINTR;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r <= 0)
			continue;
		n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return -errno;
		}
		if (mh.msg_flags & MSG_TRUNC)
			return -EBADMSG;
		return proto_msg_decode(buf, (size_t)n, ret) < 0 ? -EBADMSG : 0;
	}
}

/*
 * Send `req` (its seq is chosen here) and read its answers until the
 * RESULT, passing the others to `fn`.  An ERROR from the daemon counts as
 * its RESULT.  The whole exchange has c->timeout_ms, however many answers
 * come, and at most CTL_ANSWERS_MAX answers: a daemon (or something in
 * its place) that streams answers without a RESULT cannot hold us, nor
 * make us keep them all.  Returns 0 with `*ret` set, or -errno: those of
 * ctl_recv(), -EPIPE when the daemon had closed the connection,
 * -ESHUTDOWN when it said BYE (it is stopping), -E2BIG past the cap, or
 * what `fn` returned.
 */
static int ctl_request(struct ctl *c, struct mg_msg *req, answer_fn fn, void *userdata,
		       struct mg_result *ret)
{
	int64_t deadline = now_ms() + c->timeout_ms;
	uint8_t buf[MG_MSG_MAX];
	size_t answers = 0;
	struct mg_msg m;
	int n, r;

	if (++c->seq == 0)
		c->seq = 1;
	req->hdr.seq = c->seq;
	n = proto_msg_encode(req, buf, sizeof(buf));
	if (n < 0)
		return n;
	if (send(c->fd, buf, (size_t)n, MSG_NOSIGNAL) < 0)
		return errno == EAGAIN ? -ETIMEDOUT : -errno;

	for (;;) {
		r = ctl_recv(c, deadline, &m);
		if (r < 0)
			return r;
		switch (m.hdr.type) {
		case MG_MSG_PING:
			/* Keepalive for clients; an admin peer need not answer. */
			continue;
		case MG_MSG_BYE:
			return -ESHUTDOWN;
		case MG_MSG_ERROR:
			ret->code = m.error.code ? m.error.code : MG_ERR_INTERNAL;
			memcpy(ret->text, m.error.text, sizeof(ret->text));
			return 0;
		default:
			break;
		}
		/* An answer to an earlier request that timed out: not ours. */
		if (m.hdr.seq != c->seq)
			continue;
		if (m.hdr.type == MG_MSG_RESULT) {
			*ret = m.result;
			return 0;
		}
		if (proto_type_sender(m.hdr.type) != MG_SENDER_DAEMON)
			return -EBADMSG;
		if (++answers > CTL_ANSWERS_MAX)
			return -E2BIG;
		if (fn) {
			r = fn(userdata, &m);
			if (r < 0)
				return r;
		}
	}
}

/* Set c->error for a failed connect() or request; returns the exit status. */
int ctl_errno(struct ctl *c, int r, bool connecting)
{
	char t[32];

	switch (r) {
	case -ENOENT:
	case -ECONNREFUSED:
		ctl_set_error(c, "cannot connect to %s: no daemon is listening "
				 "(is memguardd running?)", c->socket);
		return CTL_EXIT_NO_DAEMON;
	case -EACCES:
	case -EPERM:
		ctl_set_error(c, "cannot connect to %s: permission denied "
				 "(root or the socket's group may connect)", c->socket);
		return CTL_EXIT_PERMISSION;
	case -ENAMETOOLONG:
		ctl_set_error(c, "cannot connect to '%s': not a usable socket path "
				 "(1 to %zu bytes)", c->socket,
			      sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1);
		return CTL_EXIT_USAGE;
	case -ETIMEDOUT:
	case -EAGAIN:
		if (connecting)
			ctl_set_error(c, "cannot connect to %s: memguardd did not accept "
					 "the connection within %s", c->socket,
				      fmt_ms(t, (uint32_t)c->timeout_ms));
		else
			ctl_set_error(c, "memguardd did not answer on %s within %s", c->socket,
				      fmt_ms(t, (uint32_t)c->timeout_ms));
		return CTL_EXIT_NO_DAEMON;
	case -ECONNRESET:
	case -EPIPE:
		ctl_set_error(c, "memguardd closed the connection on %s", c->socket);
		return CTL_EXIT_NO_DAEMON;
	case -ESHUTDOWN:
		ctl_set_error(c, "memguardd on %s is shutting down", c->socket);
		return CTL_EXIT_NO_DAEMON;
	case -EBADMSG:
		ctl_set_error(c, "memguardd on %s sent an answer that cannot be read "
				 "(another protocol version?)", c->socket);
		return CTL_EXIT_FAILED;
	case -E2BIG:
		ctl_set_error(c, "memguardd on %s sent more than %d answers to one request",
			      c->socket, CTL_ANSWERS_MAX);
		return CTL_EXIT_FAILED;
	case -ENOMEM:
		ctl_set_error(c, "out of memory");
		return CTL_EXIT_FAILED;
	default:
		ctl_set_error(c, "%s %s: %s", connecting ? "cannot connect to" : "talking to",
			      c->socket, strerror(-r));
		return connecting ? CTL_EXIT_NO_DAEMON : CTL_EXIT_FAILED;
	}
}

/* Set c->error for a RESULT that is not OK; returns the exit status. */
static int ctl_result_error(struct ctl *c, const struct mg_result *res)
{
	char text[CTL_ESCAPED_MAX];
	const char *name = proto_err_name(res->code);

	escape(res->text, /* lines= */ true, text, sizeof(text));
	if (res->code == MG_ERR_PERMISSION) {
		ctl_set_error(c, "permission denied: %s", text[0] ? text
			      : "admin requests need root or the admin_group of memguard.conf");
		return CTL_EXIT_PERMISSION;
	}
	if (text[0])
		ctl_set_error(c, "%s", text);
	else if (name)
		ctl_set_error(c, "%s", name);
	else
		ctl_set_error(c, "memguardd failed the request (code %" PRIu32 ")", res->code);
	return CTL_EXIT_FAILED;
}

/*
 * Connect when not connected and run one request (see ctl_request()).
 * Returns the exit status: CTL_EXIT_OK with `*res` set to a successful
 * RESULT, or another status with c->error saying why.
 */
int ctl_call(struct ctl *c, struct mg_msg *req, answer_fn fn, void *userdata,
		    struct mg_result *res)
{
	bool reused = c->fd >= 0;
	int r;

	if (!reused) {
		r = ctl_connect(c);
		if (r < 0)
			return ctl_errno(c, r, /* connecting= */ true);
	}
	r = ctl_request(c, req, fn, userdata, res);
	if ((r == -EPIPE || r == -ECONNRESET) && reused) {
		/* The daemon closes admin connections that stay silent for
		 * 30 s (a slow --watch): connect again, once.  Only STATUS and
		 * CLIENTS, which change nothing, are sent on a reused one. */
		ctl_disconnect(c);
		r = ctl_connect(c);
		if (r < 0)
			return ctl_errno(c, r, /* connecting= */ true);
		r = ctl_request(c, req, fn, userdata, res);
	}
	if (r < 0) {
		/* Answers may still be under way: start afresh next time. */
		ctl_disconnect(c);
		return ctl_errno(c, r, /* connecting= */ false);
	}
	if (res->code != MG_ERR_OK) {
		ctl_disconnect(c);
		return ctl_result_error(c, res);
	}
	return CTL_EXIT_OK;
}

int ctl_complain(const struct ctl *c, int status)
{
	if (status != CTL_EXIT_OK)
		fprintf(stderr, "memguardctl: %s\n", c->error);
	return status;
}

/* --- STATUS and CLIENTS answers ---------------------------------------------- */


void status_done(struct status *s)
{
	free(s->services);
	*s = (struct status){ 0 };
}

static int status_add(void *userdata, const struct mg_msg *m)
{
	struct status *s = userdata;

	if (m->hdr.type == MG_MSG_STATUS_DAEMON) {
		s->daemon = m->status_daemon;
		s->have_daemon = true;
		return 0;
	}
	if (m->hdr.type != MG_MSG_STATUS_SERVICE)
		return -EBADMSG;
	if (s->n_services == s->allocated) {
		size_t n = s->allocated ? 2 * s->allocated : 16;
		struct mg_status_service *p = reallocarray(s->services, n, sizeof(*p));

		if (!p)
			return -ENOMEM;
		s->services = p;
		s->allocated = n;
	}
	s->services[s->n_services++] = m->status_service;
	return 0;
}

/* STATUS into `*ret` (which the caller frees with status_done() in any
 * case).  Returns the exit status, c->error saying why it failed. */
int ctl_status(struct ctl *c, struct status *ret)
{
	struct mg_msg req = { .hdr = { .type = MG_MSG_STATUS } };
	struct mg_result res;
	int st;

	status_done(ret);
	st = ctl_call(c, &req, status_add, ret, &res);
	if (st == CTL_EXIT_OK && !ret->have_daemon) {
		ctl_set_error(c, "memguardd on %s answered STATUS without its own state",
			      c->socket);
		return CTL_EXIT_FAILED;
	}
	return st;
}


int clients_add(void *userdata, const struct mg_msg *m)
{
	struct clients *cl = userdata;

	if (m->hdr.type != MG_MSG_CLIENT_INFO)
		return -EBADMSG;
	if (cl->n == cl->allocated) {
		size_t n = cl->allocated ? 2 * cl->allocated : 16;
		struct mg_client_info *p = reallocarray(cl->clients, n, sizeof(*p));

		if (!p)
			return -ENOMEM;
		cl->clients = p;
		cl->allocated = n;
	}
	cl->clients[cl->n++] = m->client_info;
	return 0;
}
