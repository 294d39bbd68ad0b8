/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-journal.h>

#include "log.h"

static int max_level = LOG_INFO;
static bool use_journal;

void log_set_max_level(int level)
{
	max_level = level;
}

/* systemd sets JOURNAL_STREAM=dev:ino of the stream our stderr is connected
 * to; only then is the journal where the operator looks for our lines. */
void log_open(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	use_journal = e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 &&
		      fstat(STDERR_FILENO, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

static const char *prefix(int level)
{
	switch (level) {
	case LOG_EMERG:
	case LOG_ALERT:
	case LOG_CRIT:
	case LOG_ERR:
		return "error: ";
	case LOG_WARNING:
		return "warning: ";
	case LOG_DEBUG:
		return "debug: ";
	default:
		return "";
	}
}

static int _printf_(3, 0) log_va(int level, int error, const char *fmt, va_list ap)
{
	char msg[2048];

	if (error < 0)
		error = -error;
	if (level > max_level)
		return -error;

	errno = error;
	vsnprintf(msg, sizeof(msg), fmt, ap);

	if (use_journal) {
		if (error)
			sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%i", level, "ERRNO=%i", error,
					NULL);
		else
			sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%i", level, NULL);
	} else
		fprintf(stderr, "memguardd: %s%s\n", prefix(level), msg);
	return -error;
}

int log_internal(int level, int error, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = log_va(level, error, fmt, ap);
	va_end(ap);
	return r;
}

int log_internal_errno(int level, int error, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = log_va(level, error, fmt, ap);
	va_end(ap);
	return r ? r : -EIO;
}

void log_service(int level, const char *service, const char *service_level,
		 double utilization, const char *action, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	if (level > max_level)
		return;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	if (use_journal)
		sd_journal_send("MESSAGE=%s: %s", service, msg, "PRIORITY=%i", level,
				"SERVICE=%s", service, "LEVEL=%s", service_level,
				"UTILIZATION=%.1f", utilization * 100.0, "ACTION=%s", action, NULL);
	else
		fprintf(stderr, "memguardd: %s%s: %s [level=%s utilization=%.1f%% action=%s]\n",
			prefix(level), service, msg, service_level, utilization * 100.0, action);
}
