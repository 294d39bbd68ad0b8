/* SPDX-License-Identifier: MIT */
/*
 * /etc/memguard.conf: an INI file with a [daemon] section and one section
 * per service, parsed with inih into a struct mg_conf.  memguard.conf(5)
 * and conf/memguard.conf document every key; this header is the contract
 * for the code that reads the result.
 *
 * Units in the struct: sizes in bytes, durations in milliseconds, ratios
 * and PSI thresholds in hundredths of a percent ("bp": 8000 = 80 %),
 * throttle shares in permille (as on the wire).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "conf/units.h"
#include "proto/proto.h"

#define CONF_DEFAULT_SOCKET "/run/memguard/memguardd.sock"
#define CONF_DEFAULT_SOCKET_GROUP "memguard"
#define CONF_DEFAULT_ADMIN_GROUP ""          /* root only */
#define CONF_DEFAULT_TICK_MS 1000            /* ms */
#define CONF_DEFAULT_REPORT_INTERVAL_MS 1000 /* ms */
#define CONF_DEFAULT_LOG_LEVEL 6             /* LOG_INFO */
#define CONF_DEFAULT_HOST_PRESSURE 2000      /* bp of PSI some avg10 */
#define CONF_DEFAULT_MAX_CONNECTIONS 4096    /* connections at once */
#define CONF_DEFAULT_MAX_CONNECTIONS_PER_UID 1024 /* from one non-root uid */
#define CONF_DEFAULT_ADMIN_RESERVED 16       /* connections only root and admin_group get */
#define CONF_DEFAULT_WARN 8000               /* bp of budget */
#define CONF_DEFAULT_CRITICAL 9000           /* bp of budget */
#define CONF_DEFAULT_PRESSURE_SOME 1000      /* bp of PSI some avg10 */
#define CONF_DEFAULT_PRESSURE_FULL 500       /* bp of PSI full avg10 */
#define CONF_DEFAULT_MIN_GC_PERCENT 25       /* percent */
#define CONF_DEFAULT_MAX_THROTTLE 500        /* permille */
#define CONF_DEFAULT_RELEASE_DEADLINE_MS 5000 /* ms */
#define CONF_DEFAULT_ENFORCE MG_ENFORCE_NOTIFY /* never touch the kernel unless asked */
#define CONF_DEFAULT_PRIORITY 0

#define CONF_MAX_SERVICES 1024

/* How a budget or guarantee was given. */
enum conf_size_kind {
	CONF_SIZE_BYTES = 0,             /* `bytes` holds it */
	CONF_SIZE_PERCENT = 1,           /* `percent` bp of the host's MemTotal */
	CONF_SIZE_MAX = 2,               /* the cgroup's own memory.max (budget only) */
};

struct conf_size {
	enum conf_size_kind kind;
	uint64_t bytes;
	uint32_t percent;                /* bp, 1..10000 */
};

struct conf_service {
	char *name;                      /* the section name */
	char *cgroup;                    /* relative to the cgroup root, no leading or
					    trailing '/'; default "system.slice/NAME.service" */
	unsigned line;                   /* line of the section header */
	struct conf_size budget;         /* default: max */
	struct conf_size guarantee;      /* default: 0 bytes */
	uint32_t warn;                   /* bp of budget */
	uint32_t critical;               /* bp of budget, > warn */
	uint32_t pressure_some;          /* bp, PSI some avg10 that means WARN */
	uint32_t pressure_full;          /* bp, PSI full avg10 that means CRITICAL */
	uint32_t min_gc_percent;         /* floor of the GC percent sent, 1..1000 */
	uint32_t max_throttle;           /* permille, 0..990 (written as 0..99 %) */
	uint32_t release_deadline_ms;    /* 10 ms..10 min */
	enum mg_enforce enforce;         /* default: notify */
	int32_t priority;                /* lower is squeezed first, -1000..1000 */
};

struct conf_daemon {
	char *socket;                    /* absolute path of the listening socket */
	char *socket_group;              /* group owning the socket; "" = root's */
	char *admin_group;               /* group allowed admin requests; "" = root only */
	char *cgroup_root;               /* NULL = discover the cgroup2 mount */
	uint32_t tick_ms;                /* 10 ms..60 s */
	uint32_t report_interval_ms;     /* 10 ms..60 s, asked of clients in WELCOME */
	int log_level;                   /* syslog priority, 0..7 */
	uint32_t host_pressure;          /* bp of host PSI some avg10 that starts squeezing */
	uint32_t max_connections;        /* connections served at once, 1..65536 */
	uint32_t max_connections_per_uid; /* from one uid but root, 1..65536 */
	uint32_t admin_reserved_connections; /* of max_connections, for root and
					      * admin_group only, 0..65536 */
};

struct mg_conf {
	char *path;                      /* file it came from; NULL for the default */
	struct conf_daemon daemon;
	struct conf_service *services;
	size_t n_services;
};

/* Receives one problem found in a file: `line` is 0 when none applies. */
typedef void (*conf_report_fn)(void *userdata, const char *file, unsigned line,
			       const char *message);

/*
 * Parse a configuration from `f`, naming it `filename` in reports and in
 * the result's `path` (NULL: "-" in reports, no path).  Every problem is passed to `report` (which may be
 * NULL) as one message without a "file:line:" prefix; parsing goes on after
 * a problem, so one call reports all of them.  Returns 0 and sets `*ret`,
 * -EINVAL when at least one problem was reported, -ENOMEM, or the -errno
 * of a failed read (without a report).  `*ret` is set only on success.  An
 * empty file, or one of only comments, is valid: defaults, no services.
 *
 * Lines are at most 198 characters (inih's buffer; comment lines excepted);
 * comments start a line with '#' or ';', or follow a value as " ;".
 */
int conf_parse(FILE *f, const char *filename, conf_report_fn report, void *userdata,
	       struct mg_conf **ret);

/*
 * conf_parse() on the file at `path`.  Returns -ENOENT, without a report,
 * when the file does not exist (the caller then uses conf_new_default()),
 * and the errno of fopen() for other failures to open.
 */
int conf_load(const char *path, conf_report_fn report, void *userdata, struct mg_conf **ret);

/*
 * conf_load(), except that a file that does not exist gives the embedded
 * default (conf_new_default()) unless `required`, where it is -ENOENT.
 * memguardd's start and its reload both load this way.
 */
int conf_load_or_default(const char *path, bool required, conf_report_fn report, void *userdata,
			 struct mg_conf **ret);

/* The configuration used when there is no file: defaults, no services. */
int conf_new_default(struct mg_conf **ret);

/* Frees `c` and everything it owns; accepts NULL; returns NULL. */
struct mg_conf *conf_free(struct mg_conf *c);

/* Fill `*s` with every key's default (budget max, guarantee 0, …), no name
 * and no cgroup, as a section starting at `line` (0: none). */
void conf_service_init(struct conf_service *s, unsigned line);

/* The service named `name`, or NULL. */
const struct conf_service *conf_find_service(const struct mg_conf *c, const char *name);

