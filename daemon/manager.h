/* SPDX-License-Identifier: MIT */
/*
 * struct manager: memguardd's state and its loop.  It owns the sd-event
 * loop, the services of the configuration (each a watched cgroup with its
 * policy state), the server and the tick.  On each tick the data flows
 * through the files of daemon/ in this order:
 *
 *   monitor-parse.c, monitor.c   read the cgroup files and PSI
 *   policy.c                     decide: level, directive, escalation
 *   service.c                    one service: direct its clients, escalate
 *                                (memory.high, kill), restore
 *   server.c                     the socket: each client's DIRECTIVE
 *
 * manager.c runs the loop, the clients' messages and reload; admin.c
 * answers the admin requests; main.c starts it all (manager-internal.h
 * is the map of what they share).
 */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "conf/conf.h"
#include "proto/macro.h"

struct manager;

/* Where the manager looks; every path can be replaced by a test. */
struct manager_paths {
	const char *config;              /* the config file (for reload) */
	const char *cgroup_root;         /* cgroup2 root; NULL = from conf or discovery */
	const char *v1_memory_root;      /* v1 memory root; NULL = discovered */
	const char *proc;                /* "/proc" */
	const char *mountinfo;           /* "/proc/self/mountinfo" */
	const char *host_pressure;       /* "/proc/pressure/memory" */
	const char *meminfo;             /* "/proc/meminfo" */
	int log_level;                   /* from the command line; -1 = the file's */
};

/*
 * Create a manager for `conf` (taken over: freed by manager_free()).
 * Discovers the cgroup roots and opens every configured service's cgroup;
 * services whose cgroup is missing are watched as absent.  Returns 0 or a
 * -errno; it logs the reason of a failure itself.
 */
int manager_new(struct mg_conf *conf, const struct manager_paths *paths, struct manager **ret);

/*
 * Serve clients on `listen_fd` (owned by the manager from now on), arm the
 * tick, the signals (SIGTERM/SIGINT stop, SIGHUP reloads) and the
 * watchdog.  Returns 0 or -errno.
 */
int manager_start(struct manager *m, int listen_fd);

/* Run the loop until SIGTERM/SIGINT; returns the exit code. */
int manager_run(struct manager *m);

/*
 * Load the config file at `path` as memguardd does at its start and on a
 * reload (conf_load_or_default()): every problem is logged as
 * FILE:LINE: message and, when `problems` is not NULL, written there one
 * per line, cut to `size` bytes with a NUL.  Returns 0, -EINVAL for a
 * broken file, or the -errno of a failed read (not logged).
 */
int manager_load_config(const char *path, bool required, char *problems, size_t size,
			struct mg_conf **ret);

/*
 * Read the config file again.  A broken file is reported (every problem
 * logged as FILE:LINE: message, and written to `problems`, when not NULL,
 * one per line, cut to `size` bytes with a NUL) and the running
 * configuration stays: -EINVAL.  A good one is applied without dropping
 * clients.  Returns 0 or -errno.
 */
int manager_reload(struct manager *m, char *problems, size_t size);

/* Restore what the daemon changed in cgroups, say BYE, free; accepts
 * NULL; returns NULL. */
struct manager *manager_free(struct manager *m);
DEFINE_FREE_FUNC(struct manager, manager_free)
