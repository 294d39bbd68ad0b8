/* SPDX-License-Identifier: MIT */
/*
 * memguardctl: the admin CLI.  It speaks the admin half of the wire
 * protocol (docs/protocol.md §5.3) to memguardd -- STATUS, CLIENTS,
 * RELEASE, RELOAD, SET_BUDGET -- and shows the answers as tables, as JSON
 * or as Prometheus metrics.  `status --watch` redraws the table in place.
 *
 * Functions return 0 or -errno; the cmd_*() functions return the process's
 * exit status (enum ctl_exit) and print why they failed.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "client/no-client-note.h"
#include "conf/conf.h"
#include "proto/macro.h"
#include "proto/proto.h"

/* An admin tool: under libmemguard-malloc.so, never a client. */
MG_NO_CLIENT_NOTE;

#define CTL_TIMEOUT_MS 5000             /* ms to wait for the daemon, by default */
#define CTL_ANSWERS_MAX 16384           /* answers kept for one request */
#define CTL_WATCH_MS 1000               /* ms between --watch frames, by default */
#define CTL_WATCH_MIN_MS 100            /* ms, the shortest --watch interval */
#define CTL_WATCH_MAX_MS (24 * 3600 * 1000) /* ms, the longest --watch interval */
#define CTL_ESCAPED_MAX (4 * MG_TEXT_MAX + 1) /* bytes: every byte may become \xNN */

#define streq(a, b) (strcmp((a), (b)) == 0)

/* The exit statuses, as --help documents them. */
enum ctl_exit {
	CTL_EXIT_OK = 0,
	CTL_EXIT_FAILED = 1,             /* the daemon answered an error, or nonsense */
	CTL_EXIT_USAGE = 2,
	CTL_EXIT_NO_DAEMON = 3,          /* cannot connect, no answer, connection lost */
	CTL_EXIT_PERMISSION = 4,
};

struct ctl {
	const char *socket;
	int timeout_ms;
	bool json;
	bool bytes;                      /* sizes as plain numbers of bytes */
	int fd;                          /* -1 while not connected */
	uint32_t seq;                    /* of the last request */
	char error[CTL_ESCAPED_MAX + 256]; /* why the last call failed */
};

/* --- text: escaping and formatting ------------------------------------------ */

/* Length of the valid UTF-8 sequence at `s` with `n` bytes left, or 0
 * (overlong forms, surrogates and code points past U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/*
 * Copy `s` into `buf` for a person's terminal: control characters (C0,
 * DEL, C1) and bytes that are not UTF-8 become \xNN, so that a text from
 * the daemon cannot move the cursor or change the terminal; with `lines`,
 * a newline stays one (a RESULT's text may list problems a line each).
 * Truncates to `size` (at least 1).  Returns `buf`.
 */
static char *escape(const char *s, bool lines, char *buf, size_t size)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), o = 0;

	while (*p) {
		size_t len = utf8_len(p, n);
		bool c1 = len == 2 && p[0] == 0xc2 && p[1] < 0xa0;
		bool keep = lines && *p == '\n';

		if (!keep && (len == 0 || c1 || *p < 0x20 || *p == 0x7f)) {
			if (o + 4 >= size)
				break;
			snprintf(buf + o, size - o, "\\x%02x", *p);
			o += 4;
			p++;
			n--;
			continue;
		}
		if (o + len >= size)
			break;
		memcpy(buf + o, p, len);
		o += len;
		p += len;
		n -= len;
	}
	buf[o] = 0;
	return buf;
}

static char *escape_text(const char *s, char *buf, size_t size)
{
	return escape(s, false, buf, size);
}

/* Characters a terminal shows for `s`: UTF-8 continuation bytes take none. */
static size_t text_width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

/* `s` as a JSON string (RFC 8259), quotes included; bytes that are not
 * UTF-8 become U+FFFD, so the document stays valid. */
static void json_string(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);

	fputc('"', f);
	while (*p) {
		size_t len = utf8_len(p, n);

		if (len == 0) {
			fputs("\\ufffd", f);
			len = 1;
		} else if (*p == '"' || *p == '\\') {
			fputc('\\', f);
			fputc(*p, f);
		} else if (*p == '\n') {
			fputs("\\n", f);
		} else if (*p == '\t') {
			fputs("\\t", f);
		} else if (*p < 0x20 || *p == 0x7f) {
			fprintf(f, "\\u%04x", *p);
		} else {
			fwrite(p, 1, len, f);
		}
		p += len;
		n -= len;
	}
	fputc('"', f);
}

/* `s` as a Prometheus label value, quotes included: backslash, double
 * quote and line feed escaped as the text format says; bytes that are not
 * UTF-8 become U+FFFD (label values are UTF-8). */
static void prom_label_value(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);

	fputc('"', f);
	while (*p) {
		size_t len = utf8_len(p, n);

		if (len == 0) {
			fputs("\xef\xbf\xbd", f);
			len = 1;
		} else if (*p == '"' || *p == '\\') {
			fputc('\\', f);
			fputc(*p, f);
		} else if (*p == '\n') {
			fputs("\\n", f);
		} else {
			fwrite(p, 1, len, f);
		}
		p += len;
		n -= len;
	}
	fputc('"', f);
}

/* A size for a person: "512.0M", "1.5G", "900B"; or bytes with --bytes. */
static char *fmt_size(char buf[32], uint64_t v, bool bytes)
{
	static const char units[] = "KMGTPE";
	double d = (double)v;
	int u = -1;

	if (bytes || v < 1024) {
		snprintf(buf, 32, "%" PRIu64 "%s", v, bytes ? "" : "B");
		return buf;
	}
	/* Move up a unit before the rounding to one decimal would show 1024.0. */
	while (u < 5 && d >= 1023.95) {
		d /= 1024;
		u++;
	}
	snprintf(buf, 32, "%.1f%c", d, units[u]);
	return buf;
}

/* Basis points (hundredths of a percent) as a percentage with `decimals`
 * (1, rounded to nearest, or 2, exact) decimals: "93.0%", "0.25%". */
static char *fmt_bp(char buf[32], uint32_t bp, int decimals, const char *suffix)
{
	if (decimals == 1) {
		uint64_t tenths = ((uint64_t)bp + 5) / 10;

		snprintf(buf, 32, "%" PRIu64 ".%" PRIu64 "%s", tenths / 10, tenths % 10, suffix);
	} else
		snprintf(buf, 32, "%" PRIu32 ".%02" PRIu32 "%s", bp / 100, bp % 100, suffix);
	return buf;
}

/* A duration of `us` microseconds: "850us", "3.2ms", "1.25s". */
static char *fmt_usec(char buf[32], uint64_t us)
{
	if (us < 1000)
		snprintf(buf, 32, "%" PRIu64 "us", us);
	else if (us < 1000000)
		snprintf(buf, 32, "%.1fms", (double)us / 1000);
	else
		snprintf(buf, 32, "%.2fs", (double)us / 1000000);
	return buf;
}

static char *fmt_ms(char buf[32], uint32_t ms)
{
	if (ms % 1000 == 0)
		snprintf(buf, 32, "%" PRIu32 "s", ms / 1000);
	else
		snprintf(buf, 32, "%" PRIu32 "ms", ms);
	return buf;
}

static const char *level_name(unsigned level)
{
	const char *n = proto_level_name(level);

	return n ? n : "?";
}

static const char *escalation_name(unsigned e)
{
	static const char *const names[] = {
		[MG_ESCALATION_NONE] = "none",
		[MG_ESCALATION_HIGH] = "memory.high",
		[MG_ESCALATION_KILLED] = "killed",
	};

	return e < ARRAY_SIZE(names) ? names[e] : "?";
}

static const char *enforce_name(unsigned e)
{
	return proto_enforce_name(e) ? proto_enforce_name(e) : "?";
}

static const char *psi_mode_name(unsigned m)
{
	static const char *const names[] = {
		[MG_PSI_ABSENT] = "absent",
		[MG_PSI_TRIGGER] = "trigger",
		[MG_PSI_TRIGGER_ROUNDED] = "trigger-2s",
		[MG_PSI_POLLING] = "polling",
	};

	return m < ARRAY_SIZE(names) ? names[m] : "?";
}

/* --- tables ------------------------------------------------------------------ */

/* Columns are right-aligned (numbers) unless their header starts with '<'. */
struct table {
	const char *const *headers;
	size_t n_cols;
	char **cells;                    /* n_rows × n_cols */
	size_t n_rows;
	size_t allocated;                /* rows */
};

static void table_done(struct table *t)
{
	for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
		free(t->cells[i]);
	free(t->cells);
	t->cells = NULL;
	t->n_rows = t->allocated = 0;
}

/* Append a row of `t->n_cols` strings, copied.  Returns 0 or -ENOMEM. */
static int table_add(struct table *t, const char *const *row)
{
	if (t->n_rows == t->allocated) {
		size_t n = t->allocated ? 2 * t->allocated : 8;
		char **c = reallocarray(t->cells, n * t->n_cols, sizeof(*c));

		if (!c)
			return -ENOMEM;
		t->cells = c;
		t->allocated = n;
	}
	for (size_t i = 0; i < t->n_cols; i++) {
		char *s = strdup(row[i]);

		if (!s) {
			while (i-- > 0)
				free(t->cells[t->n_rows * t->n_cols + i]);
			return -ENOMEM;
		}
		t->cells[t->n_rows * t->n_cols + i] = s;
	}
	t->n_rows++;
	return 0;
}

static void table_print_row(FILE *f, const struct table *t, const size_t *width,
			    const char *const *row)
{
	for (size_t i = 0; i < t->n_cols; i++) {
		bool left = t->headers[i][0] == '<';
		bool last = i + 1 == t->n_cols;
		size_t pad = width[i] - text_width(row[i]);

		if (i > 0)
			fputs("  ", f);
		if (!left)
			fprintf(f, "%*s", (int)pad, "");
		fputs(row[i], f);
		if (left && !last)
			fprintf(f, "%*s", (int)pad, "");
	}
	fputc('\n', f);
}

static int table_print(FILE *f, const struct table *t)
{
	_cleanup_free_ size_t *width = calloc(t->n_cols, sizeof(*width));
	_cleanup_free_ const char **hdr = calloc(t->n_cols, sizeof(*hdr));

	if (!width || !hdr)
		return -ENOMEM;
	for (size_t i = 0; i < t->n_cols; i++) {
		hdr[i] = t->headers[i] + (t->headers[i][0] == '<');
		width[i] = text_width(hdr[i]);
		for (size_t r = 0; r < t->n_rows; r++) {
			size_t w = text_width(t->cells[r * t->n_cols + i]);

			if (w > width[i])
				width[i] = w;
		}
	}
	table_print_row(f, t, width, hdr);
	for (size_t r = 0; r < t->n_rows; r++)
		table_print_row(f, t, width, (const char *const *)t->cells + r * t->n_cols);
	return 0;
}

/* --- talking to the daemon --------------------------------------------------- */

_printf_(2, 3) static void ctl_set_error(struct ctl *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
}

static void ctl_disconnect(struct ctl *c)
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

/* Receives each answer to a request but the final RESULT; returns 0, or
 * -errno to give up on the request. */
typedef int (*answer_fn)(void *userdata, const struct mg_msg *m);

static int64_t now_ms(void)
{
	return (int64_t)(now_usec() / 1000);
}

/*
 * Wait until `deadline` (now_ms()) for one datagram and decode it.
 * Returns 0, or -ETIMEDOUT, -ECONNRESET (the daemon closed the
 * connection), -EBADMSG (a datagram that does not decode), or another
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
		r = poll(&p, 1, (int)left);
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
static int ctl_errno(struct ctl *c, int r, bool connecting)
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
static int ctl_call(struct ctl *c, struct mg_msg *req, answer_fn fn, void *userdata,
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

static int ctl_complain(const struct ctl *c, int status)
{
	if (status != CTL_EXIT_OK)
		fprintf(stderr, "memguardctl: %s\n", c->error);
	return status;
}

/* --- STATUS and CLIENTS answers ---------------------------------------------- */

struct status {
	bool have_daemon;
	struct mg_status_daemon daemon;
	struct mg_status_service *services;
	size_t n_services;
	size_t allocated;
};

static void status_done(struct status *s)
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
static int ctl_status(struct ctl *c, struct status *ret)
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

struct clients {
	struct mg_client_info *clients;
	size_t n;
	size_t allocated;
};

static int clients_add(void *userdata, const struct mg_msg *m)
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

/* --- status ------------------------------------------------------------------ */

static void status_header(FILE *f, const struct ctl *c, const struct status *s, bool clock)
{
	const struct mg_status_daemon *d = &s->daemon;
	char host[256] = "", version[4 * MG_NAME_MAX + 1], a[32], b[32], t[32];

	if (gethostname(host, sizeof(host) - 1) < 0)
		host[0] = 0;
	escape_text(d->version, version, sizeof(version));
	fprintf(f, "memguardd %s%s%s: %" PRIu32 " service%s, %" PRIu32 " client%s, tick %s",
		version, host[0] ? " on " : "", host, d->services, d->services == 1 ? "" : "s",
		d->clients, d->clients == 1 ? "" : "s", fmt_ms(t, d->tick_ms));
	if (d->mem_total)
		fprintf(f, "; memory %s available of %s", fmt_size(a, d->mem_available, c->bytes),
			fmt_size(b, d->mem_total, c->bytes));
	fprintf(f, "; pressure some %s full %s", fmt_bp(a, d->host_some_avg10, 2, "%"),
		fmt_bp(b, d->host_full_avg10, 2, "%"));
	if (clock) {
		time_t now = time(NULL);
		struct tm tm;

		if (localtime_r(&now, &tm) && strftime(t, sizeof(t), "%H:%M:%S", &tm))
			fprintf(f, "; at %s", t);
	}
	fputc('\n', f);
}

static int status_table(FILE *f, const struct ctl *c, const struct status *s)
{
	static const char *const headers[] = {
		"<SERVICE", "BUDGET", "WORKING-SET", "UTIL", "PSI-SOME", "PSI-FULL", "<LEVEL", "GC",
		"THROTTLE", "CLIENTS", "RELEASED", "<ESCALATION", "<PSI-MODE",
	};
	struct table t = { .headers = headers, .n_cols = ARRAY_SIZE(headers) };
	int r = 0;

	if (s->n_services == 0) {
		fputs("No services are configured (without a configuration file each client's "
		      "own cgroup becomes one).\n", f);
		return 0;
	}
	for (size_t i = 0; i < s->n_services && r == 0; i++) {
		const struct mg_status_service *v = &s->services[i];
		char budget[32], ws[32], util[32], some[32], full[32], gc[32], thr[32], cl[32],
			rel[32], name[4 * MG_NAME_MAX + 1];
		const char *row[ARRAY_SIZE(headers)] = {
			escape_text(v->name, name, sizeof(name)),
			v->budget ? fmt_size(budget, v->budget, c->bytes) : "-",
			fmt_size(ws, v->working_set, c->bytes),
			v->budget ? fmt_bp(util, v->utilization, 1, "%") : "-",
			fmt_bp(some, v->some_avg10, 2, "%"),
			fmt_bp(full, v->full_avg10, 2, "%"),
			level_name(v->level),
			gc,
			thr,
			cl,
			fmt_size(rel, v->released_total, c->bytes),
			escalation_name(v->escalation),
			psi_mode_name(v->psi_mode),
		};

		if (v->gc_percent == MG_GC_DEFAULT)
			snprintf(gc, sizeof(gc), "default");
		else
			snprintf(gc, sizeof(gc), "%" PRIu16 "%%", v->gc_percent);
		snprintf(thr, sizeof(thr), "%u.%u%%", v->throttle / 10u, v->throttle % 10u);
		snprintf(cl, sizeof(cl), "%" PRIu32, v->clients);
		r = table_add(&t, row);
	}
	if (r == 0)
		r = table_print(f, &t);
	table_done(&t);
	return r;
}

static void status_json(FILE *f, const struct status *s)
{
	const struct mg_status_daemon *d = &s->daemon;
	char host[256] = "", a[32], b[32];

	if (gethostname(host, sizeof(host) - 1) < 0)
		host[0] = 0;
	fputs("{\"daemon\":{\"version\":", f);
	json_string(f, d->version);
	fputs(",\"hostname\":", f);
	json_string(f, host);
	fprintf(f, ",\"services\":%" PRIu32 ",\"clients\":%" PRIu32 ",\"tick_ms\":%" PRIu32
		   ",\"memory_total_bytes\":%" PRIu64 ",\"memory_available_bytes\":%" PRIu64
		   ",\"pressure_some_avg10\":%s,\"pressure_full_avg10\":%s},\"services\":[",
		d->services, d->clients, d->tick_ms, d->mem_total, d->mem_available,
		fmt_bp(a, d->host_some_avg10, 2, ""), fmt_bp(b, d->host_full_avg10, 2, ""));
	for (size_t i = 0; i < s->n_services; i++) {
		const struct mg_status_service *v = &s->services[i];
		char util[32];

		fputs(i ? ",{\"name\":" : "{\"name\":", f);
		json_string(f, v->name);
		fputs(",\"cgroup\":", f);
		json_string(f, v->cgroup);
		if (v->budget)
			fprintf(f, ",\"budget_bytes\":%" PRIu64 ",\"utilization_percent\":%s",
				v->budget, fmt_bp(util, v->utilization, 2, ""));
		else
			fputs(",\"budget_bytes\":null,\"utilization_percent\":null", f);
		fprintf(f, ",\"working_set_bytes\":%" PRIu64 ",\"pressure_some_avg10\":%s"
			   ",\"pressure_full_avg10\":%s,\"level\":\"%s\"",
			v->working_set, fmt_bp(a, v->some_avg10, 2, ""),
			fmt_bp(b, v->full_avg10, 2, ""), level_name(v->level));
		if (v->gc_percent == MG_GC_DEFAULT)
			fputs(",\"gc_percent\":null", f);
		else
			fprintf(f, ",\"gc_percent\":%" PRIu16, v->gc_percent);
		fprintf(f, ",\"throttle_percent\":%u.%u,\"clients\":%" PRIu32
			   ",\"released_bytes\":%" PRIu64 ",\"enforce\":\"%s\""
			   ",\"escalation\":\"%s\",\"psi_mode\":\"%s\"}",
			v->throttle / 10u, v->throttle % 10u, v->clients, v->released_total,
			enforce_name(v->enforce), escalation_name(v->escalation),
			psi_mode_name(v->psi_mode));
	}
	fputs("]}\n", f);
}

/* One status frame: JSON, or the header line and the table. */
static int status_render(FILE *f, const struct ctl *c, const struct status *s, bool clock)
{
	if (c->json) {
		status_json(f, s);
		return 0;
	}
	status_header(f, c, s, clock);
	return status_table(f, c, s);
}

/* --- status --watch ------------------------------------------------------------ */

static volatile sig_atomic_t got_quit, got_winch, got_tstp;

static void on_signal(int sig)
{
	if (sig == SIGWINCH)
		got_winch = 1;
	else if (sig == SIGTSTP)
		got_tstp = 1;
	else
		got_quit = 1;
}

/* The terminal as --watch found it, to be put back on every way out. */
static struct {
	bool raw;                        /* stdin is in raw mode; `saved` is how it was */
	bool screen;                     /* on the alternate screen, cursor hidden */
	struct termios saved;
} term;

static void term_restore(void)
{
	if (term.screen) {
		/* Show the cursor, leave the alternate screen. */
		fputs("\033[?25h\033[?1049l", stdout);
		fflush(stdout);
		term.screen = false;
	}
	if (term.raw) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &term.saved);
		term.raw = false;
	}
}

/*
 * Draw on the alternate screen when `screen`; read single keys from stdin
 * when `keys`.  Raw mode here means no line buffering and no echo; ISIG
 * stays on so that Ctrl-C and Ctrl-Z raise their signals, which the loop
 * handles.  Returns 0 or -errno.
 */
static int term_enter(bool screen, bool keys)
{
	if (keys && !term.raw) {
		struct termios t;

		if (tcgetattr(STDIN_FILENO, &term.saved) < 0)
			return -errno;
		t = term.saved;
		t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		t.c_cc[VMIN] = 0;
		t.c_cc[VTIME] = 0;
		if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) < 0)
			return -errno;
		term.raw = true;
	}
	if (screen && !term.screen) {
		/* Alternate screen, cursor hidden, screen cleared. */
		fputs("\033[?1049h\033[?25l\033[H\033[2J", stdout);
		fflush(stdout);
		term.screen = true;
	}
	return 0;
}

/* Draw `frame` from the top left corner, each line cut to the terminal's
 * width, and the lines that do not fit replaced by a note. */
static void watch_draw(const char *frame)
{
	struct winsize ws = { 0 };
	size_t rows = 24, cols = 80, n_lines = 0, row = 0;
	const char *p;

	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col) {
		rows = ws.ws_row;
		cols = ws.ws_col;
	}
	for (p = frame; *p; p++)
		n_lines += *p == '\n';
	fputs("\033[H", stdout);
	for (p = frame; *p && row < rows; row++) {
		const char *eol = strchrnul(p, '\n');
		size_t len = (size_t)(eol - p);

		if (row > 0)
			fputc('\n', stdout);
		if (row + 1 == rows && n_lines > rows) {
			fprintf(stdout, "(%zu more lines: make the window taller)", n_lines - row);
		} else {
			/* Frames are ASCII but for escaped UTF-8 names: cut at a character. */
			if (len > cols)
				len = cols;
			while (len > 0 && len < (size_t)(eol - p) &&
			       ((unsigned char)p[len] & 0xc0) == 0x80)
				len--;
			fwrite(p, 1, len, stdout);
		}
		fputs("\033[K", stdout);
		p = *eol ? eol + 1 : eol;
	}
	fputs("\033[J", stdout);
	fflush(stdout);
}

enum watch_wake {
	WATCH_TIMEOUT,                   /* time for the next frame */
	WATCH_REDRAW,                    /* a key or a resize asked for one now */
	WATCH_QUIT,
};

/* Wait until `deadline` (ms, monotonic) for a key or a signal; the handled
 * signals are blocked but while waiting, so that none is missed. */
static enum watch_wake watch_wait(int64_t deadline, const sigset_t *waitmask, bool keys)
{
	for (;;) {
		struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
		int64_t left = deadline - now_ms();
		struct timespec ts;
		char buf[64];
		ssize_t n;
		int r;

		if (got_quit)
			return WATCH_QUIT;
		if (got_winch || got_tstp)
			return WATCH_REDRAW;
		if (left <= 0)
			return WATCH_TIMEOUT;
		ts = (struct timespec){ .tv_sec = left / 1000, .tv_nsec = left % 1000 * 1000000 };
		r = ppoll(&p, keys ? 1 : 0, &ts, waitmask);
		if (r <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = read(STDIN_FILENO, buf, sizeof(buf));
		if (n <= 0) {
			/* The terminal went away: nobody can press q now. */
			if (n == 0 || (errno != EAGAIN && errno != EINTR))
				return WATCH_QUIT;
			continue;
		}
		for (ssize_t i = 0; i < n; i++) {
			/* q, Ctrl-C and Ctrl-D (when they arrive as bytes) quit. */
			if (buf[i] == 'q' || buf[i] == 'Q' || buf[i] == 0x03 || buf[i] == 0x04)
				return WATCH_QUIT;
			if (buf[i] == ' ' || buf[i] == 'r' || buf[i] == 'R' || buf[i] == 0x0c)
				return WATCH_REDRAW;
		}
	}
}

/* Ctrl-Z: give the terminal back, stop, and take it again on SIGCONT. */
static void watch_suspend(bool screen, bool keys, const sigset_t *handled)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL }, sa = { .sa_handler = on_signal };
	sigset_t tstp;

	got_tstp = 0;
	term_restore();
	sigemptyset(&tstp);
	sigaddset(&tstp, SIGTSTP);
	sigaction(SIGTSTP, &dfl, NULL);
	raise(SIGTSTP);
	/* Stops here while unblocked; goes on after SIGCONT. */
	sigprocmask(SIG_UNBLOCK, &tstp, NULL);
	sigprocmask(SIG_BLOCK, handled, NULL);
	sigaction(SIGTSTP, &sa, NULL);
	term_enter(screen, keys);
}

static int frame_build(struct ctl *c, const struct status *s, char **ret, size_t *ret_len)
{
	FILE *f = open_memstream(ret, ret_len);
	int r;

	if (!f)
		return -errno;
	r = status_render(f, c, s, /* clock= */ true);
	if (fclose(f) != 0 && r == 0)
		r = -ENOMEM;
	if (r < 0) {
		free(*ret);
		*ret = NULL;
	}
	return r;
}

/*
 * status --watch: a frame every `interval_ms` until q, Ctrl-C, SIGTERM or
 * SIGHUP.  On a terminal the frame is redrawn in place on the alternate
 * screen; otherwise frames follow each other (JSON: one document per
 * line).  A daemon that goes away after the first frame is waited for;
 * one that is not there at first, or refuses us, ends the watch.
 */
static int status_watch(struct ctl *c, uint32_t interval_ms)
{
	static const int handled_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGWINCH, SIGTSTP };
	struct sigaction sa = { .sa_handler = on_signal };
	bool screen = !c->json && isatty(STDOUT_FILENO);
	bool keys = screen && isatty(STDIN_FILENO);
	struct status s = { 0 };
	sigset_t handled, waitmask;
	bool shown = false;
	int st = CTL_EXIT_OK, r;

	/* Signals are blocked but inside ppoll(), so a flag cannot be set
	 * between its test and the wait. */
	sigemptyset(&handled);
	for (size_t i = 0; i < ARRAY_SIZE(handled_signals); i++)
		sigaddset(&handled, handled_signals[i]);
	sigprocmask(SIG_BLOCK, &handled, &waitmask);
	for (size_t i = 0; i < ARRAY_SIZE(handled_signals); i++) {
		/* Not on a terminal, Ctrl-Z stops us as usual. */
		if (handled_signals[i] == SIGTSTP && !keys)
			continue;
		sigaction(handled_signals[i], &sa, NULL);
	}
	for (size_t i = 0; i < ARRAY_SIZE(handled_signals); i++)
		sigdelset(&waitmask, handled_signals[i]);

	atexit(term_restore);
	if (term_enter(screen, keys) < 0)
		keys = false;

	while (!got_quit) {
		int64_t deadline = now_ms() + interval_ms;
		_cleanup_free_ char *frame = NULL;
		size_t len = 0;

		st = ctl_status(c, &s);
		if (st == CTL_EXIT_PERMISSION || st == CTL_EXIT_USAGE || (st && !shown))
			break;
		if (st == CTL_EXIT_OK) {
			r = frame_build(c, &s, &frame, &len);
			if (r < 0) {
				ctl_errno(c, r, /* connecting= */ false);
				st = CTL_EXIT_FAILED;
				break;
			}
		} else if (screen) {
			char t[32];

			/* The daemon went away: say so in place of the frame, and retry. */
			if (asprintf(&frame, "memguardctl: %s\nRetrying every %s; q quits.\n",
				     c->error, fmt_ms(t, interval_ms)) < 0)
				frame = NULL;
		} else {
			fprintf(stderr, "memguardctl: %s; retrying\n", c->error);
		}
		if (frame && screen) {
			if (st == CTL_EXIT_OK && keys) {
				char *more = NULL;
				char t[32];

				if (asprintf(&more, "%s\nEvery %s; q quits, space refreshes.\n",
					     frame, fmt_ms(t, interval_ms)) >= 0) {
					free(frame);
					frame = more;
				}
			}
			watch_draw(frame);
		} else if (frame) {
			/* Frames one after another: a blank line between tables. */
			if (shown && !c->json)
				fputc('\n', stdout);
			fputs(frame, stdout);
			if (fflush(stdout) != 0) {
				ctl_set_error(c, "write error: %s", strerror(errno));
				st = CTL_EXIT_FAILED;
				break;
			}
		}
		if (st == CTL_EXIT_OK)
			shown = true;
		st = CTL_EXIT_OK;

		for (;;) {
			enum watch_wake w = watch_wait(deadline, &waitmask, keys);

			if (w == WATCH_QUIT) {
				got_quit = 1;
				break;
			}
			if (got_tstp)
				watch_suspend(screen, keys, &handled);
			if (got_winch && screen)
				fputs("\033[2J", stdout);
			got_winch = 0;
			if (w == WATCH_REDRAW && frame && screen) {
				/* Redraw what we have; the next request waits for its time. */
				watch_draw(frame);
				continue;
			}
			break;
		}
	}
	term_restore();
	status_done(&s);
	sigprocmask(SIG_SETMASK, &waitmask, NULL);
	return ctl_complain(c, st);
}

/* --- commands ---------------------------------------------------------------- */

struct cmd_args {
	char **argv;                     /* after the command's name */
	int argc;
	bool watch;
	const char *watch_arg;           /* --watch=INTERVAL */
};

/* Print a usage error and return CTL_EXIT_USAGE. */
_printf_(1, 2) static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("memguardctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'memguardctl --help'.\n", stderr);
	return CTL_EXIT_USAGE;
}

/*
 * A duration for --watch and --timeout: seconds as a plain number ("2",
 * "0.5") or with a unit ("500ms", "2s", "1m").  Returns 0, or -EINVAL.
 */
static int parse_interval(const char *s, uint32_t *ret_ms)
{
	char *end;
	double d;

	if (conf_parse_duration(s, ret_ms) == 0)
		return 0;
	if (!s[0] || s[0] == '-' || s[0] == '+' || s[0] == ' ')
		return -EINVAL;
	errno = 0;
	d = strtod(s, &end);
	if (errno || *end || end == s || !(d >= 0) || d * 1000 > UINT32_MAX)
		return -EINVAL;
	*ret_ms = (uint32_t)(d * 1000 + 0.5);
	return 0;
}

/* A service name as the wire takes it: 1..255 printable ASCII bytes. */
static bool service_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > MG_NAME_MAX)
		return false;
	return proto_name_ok(s);
}

static int parse_size_arg(const char *what, const char *s, uint64_t *ret)
{
	int r = conf_parse_size(s, ret);

	if (r == -ERANGE)
		return usage_error("%s '%s' is too large", what, s);
	if (r < 0)
		return usage_error("%s '%s' is not a size (bytes, or with a unit: 512K, "
				   "1.5G, 64MiB)", what, s);
	if (*ret == 0)
		return usage_error("%s must be greater than 0", what);
	return CTL_EXIT_OK;
}

/* Print a successful RESULT's text, or {"result":"ok","message":…}. */
static int print_result(const struct ctl *c, const struct mg_result *res)
{
	char text[CTL_ESCAPED_MAX];

	if (c->json) {
		fputs("{\"result\":\"ok\",\"message\":", stdout);
		json_string(stdout, res->text);
		fputs("}\n", stdout);
	} else {
		printf("%s\n", res->text[0] ? escape(res->text, /* lines= */ true, text, sizeof(text))
					     : "done");
	}
	return CTL_EXIT_OK;
}

static int cmd_status(struct ctl *c, const struct cmd_args *a)
{
	uint32_t interval = CTL_WATCH_MS;
	const char *iv = a->watch_arg;
	struct status s = { 0 };
	int st;

	if (a->argc > (a->watch && !iv ? 1 : 0))
		return usage_error("status: unexpected argument '%s'",
				   a->argv[a->argc - 1]);
	if (a->watch) {
		if (!iv && a->argc == 1)
			iv = a->argv[0];
		if (iv && (parse_interval(iv, &interval) < 0 || interval < CTL_WATCH_MIN_MS ||
			   interval > CTL_WATCH_MAX_MS))
			return usage_error("--watch: '%s' is not an interval from 0.1 to 86400 "
					   "seconds (e.g. 2, 0.5, 500ms)", iv);
		return status_watch(c, interval);
	}
	st = ctl_status(c, &s);
	if (st == CTL_EXIT_OK && status_render(stdout, c, &s, /* clock= */ false) < 0) {
		ctl_set_error(c, "out of memory");
		st = CTL_EXIT_FAILED;
	}
	status_done(&s);
	return ctl_complain(c, st);
}

static int clients_table(const struct ctl *c, const struct clients *cl)
{
	static const char *const headers[] = {
		"PID", "<PROCESS", "<SERVICE", "HEAP-SYS", "IN-USE", "RETURNED", "<LEVEL", "ASKED",
		"ANSWERED", "RELEASED/ASKED", "RESPONSE",
	};
	struct table t = { .headers = headers, .n_cols = ARRAY_SIZE(headers) };
	int r = 0;

	for (size_t i = 0; i < cl->n && r == 0; i++) {
		const struct mg_client_info *ci = &cl->clients[i];
		char proc[4 * MG_NAME_MAX + 1], svc[4 * MG_NAME_MAX + 1];
		char pid[32], sys[32], inuse[32], ret[32], asked[32], answered[32], relb[32],
			askb[32], rel[80], resp[32];
		const char *row[ARRAY_SIZE(headers)] = {
			pid,
			ci->process[0] ? escape_text(ci->process, proc, sizeof(proc)) : "-",
			ci->service[0] ? escape_text(ci->service, svc, sizeof(svc)) : "-",
			fmt_size(sys, ci->heap_sys, c->bytes),
			fmt_size(inuse, ci->heap_inuse, c->bytes),
			fmt_size(ret, ci->heap_released, c->bytes),
			level_name(ci->last_level),
			asked,
			answered,
			rel,
			ci->answered ? fmt_usec(resp, ci->response_us) : "-",
		};

		snprintf(pid, sizeof(pid), "%" PRIu32, ci->pid);
		snprintf(asked, sizeof(asked), "%" PRIu32, ci->asked);
		snprintf(answered, sizeof(answered), "%" PRIu32, ci->answered);
		snprintf(rel, sizeof(rel), "%s/%s", fmt_size(relb, ci->released_bytes, c->bytes),
			 fmt_size(askb, ci->asked_bytes, c->bytes));
		r = table_add(&t, row);
	}
	if (r == 0)
		r = table_print(stdout, &t);
	table_done(&t);
	return r;
}

static void clients_json(const struct clients *cl)
{
	fputs("{\"clients\":[", stdout);
	for (size_t i = 0; i < cl->n; i++) {
		const struct mg_client_info *ci = &cl->clients[i];

		printf("%s{\"id\":%" PRIu64 ",\"pid\":%" PRIu32 ",\"uid\":%" PRIu32 ",\"process\":",
		       i ? "," : "", ci->client_id, ci->pid, ci->uid);
		json_string(stdout, ci->process);
		fputs(",\"service\":", stdout);
		json_string(stdout, ci->service);
		printf(",\"heap_sys_bytes\":%" PRIu64 ",\"heap_inuse_bytes\":%" PRIu64
		       ",\"heap_released_bytes\":%" PRIu64 ",\"last_directive_seq\":%" PRIu32
		       ",\"last_level\":\"%s\"",
		       ci->heap_sys, ci->heap_inuse, ci->heap_released, ci->last_directive_seq,
		       level_name(ci->last_level));
		printf(",\"asked\":%" PRIu32 ",\"answered\":%" PRIu32 ",\"asked_bytes\":%" PRIu64
		       ",\"released_bytes\":%" PRIu64,
		       ci->asked, ci->answered, ci->asked_bytes, ci->released_bytes);
		if (ci->answered)
			printf(",\"mean_response_us\":%" PRIu32 "}", ci->response_us);
		else
			fputs(",\"mean_response_us\":null}", stdout);
	}
	fputs("]}\n", stdout);
}

/* Whether STATUS lists `service`: CLIENTS filters by name and so cannot
 * tell an unknown service from one without clients.  Returns the exit
 * status of the STATUS request; `*ret` is set on success. */
static int service_exists(struct ctl *c, const char *service, bool *ret)
{
	struct status s = { 0 };
	int st = ctl_status(c, &s);

	if (st == CTL_EXIT_OK) {
		*ret = false;
		for (size_t i = 0; i < s.n_services; i++)
			if (streq(s.services[i].name, service))
				*ret = true;
	}
	status_done(&s);
	return st;
}

static int cmd_clients(struct ctl *c, const struct cmd_args *a)
{
	struct mg_msg req = { .hdr = { .type = MG_MSG_CLIENTS } };
	const char *service = a->argc ? a->argv[0] : "";
	struct clients cl = { 0 };
	struct mg_result res;
	char name[4 * MG_NAME_MAX + 1];
	int st;

	if (a->argc > 1)
		return usage_error("clients: unexpected argument '%s'", a->argv[1]);
	if (a->argc && !service_name_ok(service))
		return usage_error("clients: '%s' is not a service name",
				   escape_text(service, name, sizeof(name)));
	snprintf(req.clients.service, sizeof(req.clients.service), "%s", service);
	st = ctl_call(c, &req, clients_add, &cl, &res);
	if (st == CTL_EXIT_OK && cl.n == 0 && service[0]) {
		bool exists;

		st = service_exists(c, service, &exists);
		if (st == CTL_EXIT_OK && !exists) {
			ctl_set_error(c, "no service '%s'", service);
			st = CTL_EXIT_FAILED;
		}
	}
	if (st == CTL_EXIT_OK) {
		if (c->json)
			clients_json(&cl);
		else if (cl.n == 0 && service[0])
			printf("No client of service %s is connected.\n", service);
		else if (cl.n == 0)
			printf("No clients are connected.\n");
		else if (clients_table(c, &cl) < 0) {
			ctl_set_error(c, "out of memory");
			st = CTL_EXIT_FAILED;
		}
	}
	free(cl.clients);
	return ctl_complain(c, st);
}

static int cmd_release(struct ctl *c, const struct cmd_args *a)
{
	struct mg_msg req = { .hdr = { .type = MG_MSG_RELEASE } };
	char name[4 * MG_NAME_MAX + 1];
	struct mg_result res;
	int st;

	if (a->argc < 1)
		return usage_error("release: which service? (release SERVICE [SIZE])");
	if (a->argc > 2)
		return usage_error("release: unexpected argument '%s'", a->argv[2]);
	if (!service_name_ok(a->argv[0]))
		return usage_error("release: '%s' is not a service name",
				   escape_text(a->argv[0], name, sizeof(name)));
	if (a->argc == 2 && !streq(a->argv[1], "all")) {
		st = parse_size_arg("release: SIZE", a->argv[1], &req.release.bytes);
		if (st != CTL_EXIT_OK)
			return st;
	}
	snprintf(req.release.service, sizeof(req.release.service), "%s", a->argv[0]);
	st = ctl_call(c, &req, NULL, NULL, &res);
	if (st == CTL_EXIT_OK)
		return print_result(c, &res);
	return ctl_complain(c, st);
}

static int cmd_set_budget(struct ctl *c, const struct cmd_args *a)
{
	struct mg_msg req = { .hdr = { .type = MG_MSG_SET_BUDGET } };
	char name[4 * MG_NAME_MAX + 1];
	struct mg_result res;
	int st;

	if (a->argc != 2)
		return usage_error("set-budget needs a service and a size "
				   "(set-budget SERVICE SIZE)");
	if (!service_name_ok(a->argv[0]))
		return usage_error("set-budget: '%s' is not a service name",
				   escape_text(a->argv[0], name, sizeof(name)));
	st = parse_size_arg("set-budget: SIZE", a->argv[1], &req.set_budget.budget);
	if (st != CTL_EXIT_OK)
		return st;
	snprintf(req.set_budget.service, sizeof(req.set_budget.service), "%s", a->argv[0]);
	st = ctl_call(c, &req, NULL, NULL, &res);
	if (st == CTL_EXIT_OK)
		return print_result(c, &res);
	return ctl_complain(c, st);
}

static int cmd_reload(struct ctl *c, const struct cmd_args *a)
{
	struct mg_msg req = { .hdr = { .type = MG_MSG_RELOAD } };
	struct mg_result res;
	int st;

	if (a->argc > 0)
		return usage_error("reload: unexpected argument '%s'", a->argv[0]);
	st = ctl_call(c, &req, NULL, NULL, &res);
	if (st == CTL_EXIT_OK)
		return print_result(c, &res);
	return ctl_complain(c, st);
}

/* --- metrics ------------------------------------------------------------------- */

/* A metric family's HELP and TYPE lines. */
static void prom_family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_service(FILE *f, const char *metric, const struct mg_status_service *v)
{
	fprintf(f, "%s{service=", metric);
	prom_label_value(f, v->name);
	fputs("} ", f);
}

/* Fractions from fixed-point wire values, printed exactly. */
static void prom_bp(FILE *f, uint32_t bp)
{
	fprintf(f, "%" PRIu32 ".%04" PRIu32 "\n", bp / 10000, bp % 10000);
}

static void metrics_print(FILE *f, const struct status *s)
{
	const struct mg_status_daemon *d = &s->daemon;
	const struct mg_status_service *v;

#define EACH_SERVICE for (v = s->services; v < s->services + s->n_services; v++)
	prom_family(f, "memguard_build_info", "gauge",
		    "The memguardd that answered; its version is the label.");
	fputs("memguard_build_info{version=", f);
	prom_label_value(f, d->version);
	fputs("} 1\n", f);
	prom_family(f, "memguard_services", "gauge", "Services memguardd watches.");
	fprintf(f, "memguard_services %" PRIu32 "\n", d->services);
	prom_family(f, "memguard_clients", "gauge", "Processes connected to memguardd.");
	fprintf(f, "memguard_clients %" PRIu32 "\n", d->clients);
	prom_family(f, "memguard_tick_seconds", "gauge",
		    "How often memguardd checks every service while all is calm.");
	fprintf(f, "memguard_tick_seconds %" PRIu32 ".%03" PRIu32 "\n", d->tick_ms / 1000,
		d->tick_ms % 1000);
	if (d->mem_total) {
		prom_family(f, "memguard_host_memory_total_bytes", "gauge",
			    "The host's memory (MemTotal).");
		fprintf(f, "memguard_host_memory_total_bytes %" PRIu64 "\n", d->mem_total);
		prom_family(f, "memguard_host_memory_available_bytes", "gauge",
			    "The host's available memory (MemAvailable).");
		fprintf(f, "memguard_host_memory_available_bytes %" PRIu64 "\n",
			d->mem_available);
	}
	prom_family(f, "memguard_host_pressure_some_avg10", "gauge",
		    "Share of the last 10 s in which some task of the host stalled on memory "
		    "(PSI some avg10, 0 to 1).");
	fputs("memguard_host_pressure_some_avg10 ", f);
	prom_bp(f, d->host_some_avg10);
	prom_family(f, "memguard_host_pressure_full_avg10", "gauge",
		    "Share of the last 10 s in which all tasks of the host stalled on memory "
		    "(PSI full avg10, 0 to 1).");
	fputs("memguard_host_pressure_full_avg10 ", f);
	prom_bp(f, d->host_full_avg10);
	if (s->n_services == 0)
		return;

	prom_family(f, "memguard_service_info", "gauge",
		    "A service memguardd watches: its cgroup and enforce mode are labels.");
	EACH_SERVICE {
		fputs("memguard_service_info{service=", f);
		prom_label_value(f, v->name);
		fputs(",cgroup=", f);
		prom_label_value(f, v->cgroup);
		fprintf(f, ",enforce=\"%s\"} 1\n", enforce_name(v->enforce));
	}
	prom_family(f, "memguard_service_budget_bytes", "gauge",
		    "The service's memory budget in force; 0 when none is known.");
	EACH_SERVICE {
		prom_service(f, "memguard_service_budget_bytes", v);
		fprintf(f, "%" PRIu64 "\n", v->budget);
	}
	prom_family(f, "memguard_service_working_set_bytes", "gauge",
		    "The service's working set: memory.current minus inactive page cache.");
	EACH_SERVICE {
		prom_service(f, "memguard_service_working_set_bytes", v);
		fprintf(f, "%" PRIu64 "\n", v->working_set);
	}
	prom_family(f, "memguard_service_utilization_ratio", "gauge",
		    "Working set divided by budget (1 = at budget); absent without a budget.");
	EACH_SERVICE {
		if (!v->budget)
			continue;
		prom_service(f, "memguard_service_utilization_ratio", v);
		prom_bp(f, v->utilization);
	}
	prom_family(f, "memguard_service_pressure_some_avg10", "gauge",
		    "Share of the last 10 s in which some task of the service stalled on memory "
		    "(PSI some avg10, 0 to 1).");
	EACH_SERVICE {
		prom_service(f, "memguard_service_pressure_some_avg10", v);
		prom_bp(f, v->some_avg10);
	}
	prom_family(f, "memguard_service_pressure_full_avg10", "gauge",
		    "Share of the last 10 s in which all tasks of the service stalled on memory "
		    "(PSI full avg10, 0 to 1).");
	EACH_SERVICE {
		prom_service(f, "memguard_service_pressure_full_avg10", v);
		prom_bp(f, v->full_avg10);
	}
	prom_family(f, "memguard_service_level", "gauge",
		    "The service's level: 0 NORMAL, 1 WARN, 2 CRITICAL, 3 EMERGENCY.");
	EACH_SERVICE {
		prom_service(f, "memguard_service_level", v);
		fprintf(f, "%u\n", v->level);
	}
	prom_family(f, "memguard_service_gc_percent", "gauge",
		    "GC target sent to the service's clients; 0 = the application's own default.");
	EACH_SERVICE {
		prom_service(f, "memguard_service_gc_percent", v);
		fprintf(f, "%" PRIu16 "\n", v->gc_percent);
	}
	prom_family(f, "memguard_service_throttle_ratio", "gauge",
		    "Share of new work the service's clients are asked to reject (0 to 1).");
	EACH_SERVICE {
		prom_service(f, "memguard_service_throttle_ratio", v);
		fprintf(f, "%u.%03u\n", v->throttle / 1000u, v->throttle % 1000u);
	}
	prom_family(f, "memguard_service_clients", "gauge",
		    "The service's processes connected to memguardd.");
	EACH_SERVICE {
		prom_service(f, "memguard_service_clients", v);
		fprintf(f, "%" PRIu32 "\n", v->clients);
	}
	prom_family(f, "memguard_service_released_bytes_total", "counter",
		    "Bytes the service's clients released on demand since memguardd started.");
	EACH_SERVICE {
		prom_service(f, "memguard_service_released_bytes_total", v);
		fprintf(f, "%" PRIu64 "\n", v->released_total);
	}
	prom_family(f, "memguard_service_escalation", "gauge",
		    "Escalation in force: 0 none, 1 memory.high written, 2 cgroup killed.");
	EACH_SERVICE {
		prom_service(f, "memguard_service_escalation", v);
		fprintf(f, "%u\n", v->escalation);
	}
	prom_family(f, "memguard_service_psi_mode", "gauge",
		    "How memguardd reads the service's pressure: 0 cgroup absent, 1 PSI trigger, "
		    "2 trigger with its window rounded to 2 s, 3 polling.");
	EACH_SERVICE {
		prom_service(f, "memguard_service_psi_mode", v);
		fprintf(f, "%u\n", v->psi_mode);
	}
#undef EACH_SERVICE
}

static int cmd_metrics(struct ctl *c, const struct cmd_args *a)
{
	struct status s = { 0 };
	int st;

	if (a->argc > 0)
		return usage_error("metrics: unexpected argument '%s'", a->argv[0]);
	if (c->json)
		return usage_error("metrics has no JSON form: it is Prometheus text only");
	st = ctl_status(c, &s);
	if (st == CTL_EXIT_OK)
		metrics_print(stdout, &s);
	status_done(&s);
	return ctl_complain(c, st);
}

/* --- main ---------------------------------------------------------------------- */

static void help(void)
{
	printf("Usage: memguardctl [OPTION]... COMMAND [ARG]...\n"
	       "Ask memguardd, the memory guard daemon, how the services of this host stand,\n"
	       "and tell it what to do.\n"
	       "\n"
	       "Commands:\n"
	       "  status [--watch [INTERVAL]]\n"
	       "        one row per service: budget, working set, utilization, PSI some and\n"
	       "        full avg10, level, GC target, share of work throttled, clients, bytes\n"
	       "        released, escalation in force, PSI mode (trigger, trigger-2s,\n"
	       "        polling, absent); a first line on the daemon and the host.\n"
	       "        --watch shows it every INTERVAL (default 1s; 2, 0.5, 500ms) until\n"
	       "        q, Ctrl-C or SIGTERM (exit status 0): redrawn in place on a terminal;\n"
	       "        otherwise, and with --json, frames follow each other (JSON: one\n"
	       "        document per line)\n"
	       "  clients [SERVICE]\n"
	       "        the connected processes (of SERVICE): pid, name, heap mapped, in use\n"
	       "        and returned to the kernel, last directive's level, and how they\n"
	       "        cooperated: release demands asked and answered, bytes released of\n"
	       "        bytes asked, mean response time\n"
	       "  release SERVICE [SIZE]\n"
	       "        ask SERVICE's clients to release SIZE bytes in all, now; without\n"
	       "        SIZE, or with 'all': everything they can\n"
	       "  set-budget SERVICE SIZE\n"
	       "        change SERVICE's budget at run time only: it is not saved to\n"
	       "        memguard.conf, so memguardd forgets it when it restarts\n"
	       "  reload\n"
	       "        make memguardd read memguard.conf again; a broken file is refused\n"
	       "        and the running configuration stays\n"
	       "  metrics\n"
	       "        status in the Prometheus text format, e.g. for node_exporter's\n"
	       "        textfile collector (text only: --json does not apply to it)\n"
	       "\n"
	       "Options:\n"
	       "  -s, --socket PATH   memguardd's socket (default: $MEMGUARD_SOCKET, else\n"
	       "                      " CONF_DEFAULT_SOCKET ")\n"
	       "  -j, --json          JSON instead of text, for status, clients, release,\n"
	       "                      set-budget and reload; sizes are in bytes, percentages\n"
	       "                      are numbers, null means unknown or default\n"
	       "  -b, --bytes         sizes as numbers of bytes, not as 512.0M\n"
	       "      --timeout TIME  how long to wait for memguardd to accept the connection\n"
	       "                      and to answer a request in full: seconds, or 2s, 500ms\n"
	       "                      (default 5s)\n"
	       "  -h, --help          show this help and exit\n"
	       "  -V, --version       show the version and exit\n"
	       "\n"
	       "SIZE is a number of bytes, or one with a binary unit: 512K, 1.5G, 64MiB.\n"
	       "Admin requests need root or a member of admin_group (memguard.conf); to\n"
	       "connect at all, the socket's group (socket_group, default memguard).\n"
	       "\n"
	       "Exit status:\n"
	       "  0  success\n"
	       "  1  memguardd answered an error (no such service, a broken configuration\n"
	       "     on reload, ...) or an answer that cannot be read\n"
	       "  2  usage error\n"
	       "  3  memguardd is not running or cannot be reached: no one listens on the\n"
	       "     socket, no answer within the timeout, or the connection was lost\n"
	       "  4  permission denied: to connect to the socket, or to make admin requests\n"
	       "\n"
	       "See memguardctl(1), memguardd(8) and memguard.conf(5).\n");
}

enum {
	ARG_TIMEOUT = 0x100,
	ARG_WATCH,
};

static const struct command {
	const char *name;
	int (*run)(struct ctl *c, const struct cmd_args *a);
} commands[] = {
	{ "status", cmd_status },
	{ "clients", cmd_clients },
	{ "release", cmd_release },
	{ "set-budget", cmd_set_budget },
	{ "reload", cmd_reload },
	{ "metrics", cmd_metrics },
};

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "bytes", no_argument, NULL, 'b' },
		{ "timeout", required_argument, NULL, ARG_TIMEOUT },
		{ "watch", optional_argument, NULL, ARG_WATCH },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{}
	};
	const char *env = getenv("MEMGUARD_SOCKET");
	struct ctl c = {
		.socket = env && env[0] ? env : CONF_DEFAULT_SOCKET,
		.timeout_ms = CTL_TIMEOUT_MS,
		.fd = -1,
	};
	const struct command *cmd = NULL;
	struct cmd_args a = { 0 };
	uint32_t ms;
	int opt, st;

	/* Options may come before or after the command (getopt permutes). */
	while ((opt = getopt_long(argc, argv, "s:jbhV", opts, NULL)) >= 0) {
		switch (opt) {
		case 's':
			c.socket = optarg;
			break;
		case 'j':
			c.json = true;
			break;
		case 'b':
			c.bytes = true;
			break;
		case ARG_TIMEOUT:
			if (parse_interval(optarg, &ms) < 0 || ms == 0 || ms > INT32_MAX / 2)
				return usage_error("--timeout: '%s' is not a duration (e.g. 5, 2s, "
						   "500ms)", optarg);
			c.timeout_ms = (int)ms;
			break;
		case ARG_WATCH:
			a.watch = true;
			a.watch_arg = optarg;
			break;
		case 'h':
			help();
			return fflush(stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_FAILED;
		case 'V':
			printf("memguardctl %s\n", PACKAGE_VERSION);
			return fflush(stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_FAILED;
		default:
			fputs("Try 'memguardctl --help'.\n", stderr);
			return CTL_EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return usage_error("no command (status, clients, release, set-budget, reload or "
				   "metrics)");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (streq(argv[optind], commands[i].name))
			cmd = &commands[i];
	if (!cmd) {
		char name[CTL_ESCAPED_MAX];

		return usage_error("unknown command '%s'",
				   escape_text(argv[optind], name, sizeof(name)));
	}
	if (a.watch && cmd->run != cmd_status)
		return usage_error("--watch goes with status only");
	a.argv = argv + optind + 1;
	a.argc = argc - optind - 1;

	st = cmd->run(&c, &a);
	ctl_disconnect(&c);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "memguardctl: write error: %s\n", strerror(errno));
		if (st == CTL_EXIT_OK)
			st = CTL_EXIT_FAILED;
	}
	return st;
}
