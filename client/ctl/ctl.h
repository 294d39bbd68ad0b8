/* SPDX-License-Identifier: MIT */
/*
 * What memguardctl's parts share: the connection (struct ctl), the exit
 * statuses, the answers of STATUS and CLIENTS, and the prototypes of each
 * part, under a banner per file.
 */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "proto/macro.h"
#include "proto/proto.h"

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
	/* --watch: the signal mask to wait for an answer with, and the flag
	 * its handler sets to give the request up (NULL: poll() as is). */
	const sigset_t *waitmask;
	const volatile sig_atomic_t *quit;
};

/* Receives each answer to a request but the final RESULT; returns 0, or
 * -errno to give up on the request. */
typedef int (*answer_fn)(void *userdata, const struct mg_msg *m);

struct status {
	bool have_daemon;
	struct mg_status_daemon daemon;
	struct mg_status_service *services;
	size_t n_services;
	size_t allocated;
};

struct clients {
	struct mg_client_info *clients;
	size_t n;
	size_t allocated;
};

/* --- daemon.c: the protocol client --- */

_printf_(2, 3) void ctl_set_error(struct ctl *c, const char *fmt, ...);
void ctl_disconnect(struct ctl *c);

/* The monotonic clock in ms. */
int64_t now_ms(void);

/* Set c->error for a failed connect() or request; returns the exit status. */
int ctl_errno(struct ctl *c, int r, bool connecting);

/*
 * Connect when not connected and run one request, `fn` receiving each
 * answer but the RESULT.  Returns the exit status: CTL_EXIT_OK with `*res`
 * set to a successful RESULT, or another status with c->error saying why.
 */
int ctl_call(struct ctl *c, struct mg_msg *req, answer_fn fn, void *userdata,
	     struct mg_result *res);

/* Print c->error when `status` is a failure; returns `status`. */
int ctl_complain(const struct ctl *c, int status);

/* STATUS into `*ret` (which the caller frees with status_done() in any
 * case).  Returns the exit status, c->error saying why it failed. */
int ctl_status(struct ctl *c, struct status *ret);
void status_done(struct status *s);

/* An answer_fn that gathers CLIENT_INFO answers into a struct clients. */
int clients_add(void *userdata, const struct mg_msg *m);

/* --- output.c: text, JSON and Prometheus --- */

/*
 * `s` for a terminal: bytes that are not printable UTF-8 as \xNN, so that
 * the daemon cannot move the cursor or change the terminal; with `lines`,
 * a newline stays one.  Truncates to `size` (at least 1).  Returns `buf`.
 */
char *escape(const char *s, bool lines, char *buf, size_t size);
/* escape() without newlines. */
char *escape_text(const char *s, char *buf, size_t size);

/* "250ms", "1.5s": a duration as --help writes it.  Returns `buf`. */
char *fmt_ms(char buf[32], uint32_t ms);

/* One status frame: JSON, or the header line (with the time when `clock`)
 * and the table.  Returns 0 or -ENOMEM. */
int status_render(FILE *f, const struct ctl *c, const struct status *s, bool clock);

/* The clients as a table (0 or -ENOMEM), or as one JSON document. */
int clients_table(const struct ctl *c, const struct clients *cl);
void clients_json(const struct clients *cl);

/* Print a successful RESULT's text, or {"result":"ok","message":…}.
 * Returns CTL_EXIT_OK. */
int print_result(const struct ctl *c, const struct mg_result *res);

/* STATUS in the Prometheus text format. */
void metrics_print(FILE *f, const struct status *s);

/* --- watch.c: status --watch --- */

/* Show the status every `interval_ms` until q, SIGINT or SIGTERM; returns
 * the exit status. */
int status_watch(struct ctl *c, uint32_t interval_ms);
