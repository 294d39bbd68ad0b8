/* SPDX-License-Identifier: MIT */
/*
 * struct manager and what its parts share: manager.c (the loop, the
 * clients' messages, reload), service.c (one service each) and admin.c
 * (the admin requests).  Not for main.c, which sees manager.h only.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "manager.h"
#include "monitor.h"
#include "policy.h"
#include "server.h"

#define FAST_TICK_MS 100                /* ms, tick while a service is above NORMAL */

struct service;

struct manager {
	sd_event *event;
	struct mg_conf *conf;
	struct manager_paths paths;
	char *v2_root;                   /* where service cgroups are looked up */
	char *v1_root;                   /* NULL on pure v2 */
	char *v2_mount;                  /* mount points, to map /proc/PID/cgroup */
	char *v1_mount;
	struct server *server;
	struct service **services;
	size_t n_services;
	struct policy_params params;
	struct monitor_host host;
	bool have_host;
	char *state_path;                /* memory.high values to put back after a crash */
	sd_event_source *tick;
	sd_event_source *sig_term, *sig_int, *sig_hup;
	char status[256];
	uint64_t thr_armed_usec;         /* when a service's v1 thresholds were last armed */
	bool tick_all;                   /* the next tick samples every service */
};

/* --- manager.c --- */

/* Sample, decide and direct every service now, and re-arm the tick. */
void manager_tick_now(struct manager *m);

/* Rewrite the crash record from the services' saved memory.high values. */
void manager_save_escalations(struct manager *m);

/* Registered clients (admin connections are not clients). */
size_t manager_n_clients(struct manager *m);

/* --- admin.c --- */

/* Answer one admin request (STATUS, CLIENTS, RELEASE, SET_BUDGET,
 * RELOAD); every series of answers ends with RESULT. */
void admin_request(struct manager *m, struct client *c, const struct mg_msg *msg);
