/* SPDX-License-Identifier: MIT */
/*
 * memguardd's log: the journal with structured fields when the daemon runs
 * under systemd (JOURNAL_STREAM names our stderr), stderr otherwise.
 * Only the daemon's top level logs; library code returns -errno.
 */
#pragma once

#include <stdbool.h>
#include <syslog.h>

#include "proto/macro.h"

/* Messages above this syslog priority are dropped (LOG_INFO by default). */
void log_set_max_level(int level);

/* Send to the journal when systemd connected our stderr to it, else to
 * stderr. */
void log_open(void);

/*
 * Log one line.  `error` is a positive or negative errno that %m expands to
 * (0 for none).  Returns -abs(error), so a caller can write
 * `return log_errno(r, "Failed to open '%s': %m", path);`.
 */
int log_internal(int level, int error, const char *fmt, ...) _printf_(3, 4);

/*
 * As log_internal(), for the *_errno() macros: returns a failure whatever
 * `error` is, -EIO for 0, so that `return log_errno(r, …)` can never
 * return success by mistake.
 */
int log_internal_errno(int level, int error, const char *fmt, ...) _printf_(3, 4);

/*
 * Log one line about a service with the structured fields SERVICE=, LEVEL=,
 * UTILIZATION= (percent) and ACTION= (a short verb: "level", "release",
 * "escalate", "restore", "kill"…).  On stderr the fields follow the message.
 */
void log_service(int level, const char *service, const char *service_level,
		 double utilization, const char *action, const char *fmt, ...) _printf_(6, 7);

#define log_debug(...) log_internal(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_internal(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_internal(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_internal(LOG_ERR, 0, __VA_ARGS__)
#define log_errno(e, ...) log_internal_errno(LOG_ERR, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_internal_errno(LOG_WARNING, (e), __VA_ARGS__)
#define log_debug_errno(e, ...) log_internal_errno(LOG_DEBUG, (e), __VA_ARGS__)
