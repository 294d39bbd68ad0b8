/* SPDX-License-Identifier: MIT */
/*
 * struct service: one watched cgroup with its policy state and its
 * clients.  A service is sampled (monitor), decided (policy), directed
 * (its clients' DIRECTIVEs) and escalated (memory.high, kill); what it
 * wrote into memory.high is kept in the crash record, so that a daemon
 * killed mid-escalation can put it back when it starts again.
 *
 * The manager (manager-internal.h) owns the services and calls these on
 * its tick, on its clients' messages and on admin requests.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "conf/conf.h"
#include "monitor.h"
#include "policy.h"
#include "proto/proto.h"

struct client;
struct manager;
struct service;

/* What the manager keeps about one connected client (client->data). */
struct mclient {
	struct client *c;
	struct service *svc;             /* NULL: connected, no service (after a reload) */
	char v2[MG_PATH_MAX + 1];        /* the peer's cgroup dirs at HELLO */
	char v1[MG_PATH_MAX + 1];
	struct mg_report report;
	bool have_directive;
	struct mg_directive directive;   /* last sent */
	uint32_t last_seq;               /* seq of the last DIRECTIVE sent */
	uint32_t pending_seq;            /* DIRECTIVE awaiting RELEASED, 0 = none */
	uint64_t pending_usec;
	uint32_t asked, answered;
	uint64_t asked_bytes, released_bytes, response_us_total;
	bool local;                      /* its last REPORT said MG_FLAG_LOCAL_LIMIT */
	bool on_board;                   /* has `slot` on its service's board */
	uint32_t slot;
};

struct service {
	struct manager *m;
	struct conf_service conf;        /* own copy; name and cgroup owned */
	bool implicit;                   /* made for a client when there is no config */
	char *v2_dir;                    /* absolute directories */
	char *v1_dir;                    /* NULL on pure v2 */
	struct monitor_cgroup *cg;       /* NULL while absent */
	int psi_fd;
	sd_event_source *psi_src;
	sd_event_source *events_src;
	enum mg_psi_mode psi_mode;
	bool have_sample;
	struct monitor_sample sample;
	uint64_t budget;                 /* bytes, resolved; 0 = unknown */
	uint64_t budget_override;        /* SET_BUDGET, 0 = none */
	uint64_t guarantee;              /* bytes, resolved */
	struct policy_state ps;
	struct policy_decision last;
	uint64_t released_total;
	bool saved_high_valid;
	uint64_t saved_high;             /* memory.high before the daemon wrote it */
	bool high_unavailable_said;
	bool high_noop;                  /* HIGH recorded on v1 without a write */
	bool escalate_failed_said;
	bool open_failed_said;
	bool absent_said;       /* a failed step is logged once, not every tick */
	uint64_t squeeze_extra;
	enum mg_level squeeze_floor;
	uint64_t unowned;                /* working set outside the clients' heaps, estimated */
	uint64_t local_tick_usec;        /* the last tick a LOCAL_LIMIT report caused */
	/* Sampling as fast as the growth (design.md, "Two speeds of control"). */
	struct policy_growth growth;
	uint32_t interval_ms;            /* policy_sample_interval() at the last decision */
	sd_event_source *probe_src;      /* the next sample between ticks */
	int thr_fd[2];                   /* v1 usage thresholds at warn and critical */
	sd_event_source *thr_src[2];
	uint64_t thr_bytes[2];           /* what they are armed at; 0 = not */
	bool thr_failed_said;
	/* A wake-up (PSI, memory.events, a threshold, SET_BUDGET, a client
	 * at its local limit) asks for this service's sample; the others
	 * keep their own period (manager_tick_now()). */
	bool woke;
	uint64_t sampled_usec;           /* its last full sample */
	/* The directive board (board.h), made for the first client that
	 * takes one; `board_dirty`: slots written since the last wake-up. */
	struct board *board;
	bool board_dirty;
	bool board_failed_said;
	struct mclient **clients;
	size_t n_clients;
};

/* A utilization in basis points as the log shows it (0 when unknown). */
static inline double util_ratio(uint32_t bp)
{
	return bp == POLICY_UTIL_UNKNOWN ? 0.0 : bp / 10000.0;
}

/* --- life cycle ----------------------------------------------------------- */

/*
 * A service of `conf` (copied; name and cgroup duplicated) below the
 * manager's roots; not yet watched, not yet in the manager's list.
 * Returns 0 or -ENOMEM.
 */
int service_new(struct manager *m, const struct conf_service *conf, bool implicit,
		struct service **ret);

/*
 * The implicit service of a client whose cgroup is `dir` below `root`
 * (no service is configured): notify only, named after the cgroup,
 * added to the manager's list, sampled once.  -ENOENT when `dir` is not
 * below `root`, -ENAMETOOLONG when its name does not fit the wire.
 */
int service_new_implicit(struct manager *m, const char *dir, const char *root,
			 struct service **ret);

/* service_new(), and the service appended to the manager's list, which
 * owns it from then on. */
int services_add_new(struct manager *m, const struct conf_service *conf, bool implicit,
		     struct service **ret);

/* Put memory.high back if the daemon wrote it (a stop, a removal). */
void service_restore(struct service *s);

/* Restore, stop watching, detach the clients, free; accepts NULL;
 * returns NULL. */
struct service *service_free(struct service *s);

/* --- lookup and clients --------------------------------------------------- */

struct service *service_by_name(struct manager *m, const char *name);

/* The service whose cgroup holds the client, deepest first; NULL if none. */
struct service *service_for(struct manager *m, const struct mclient *mc);

int service_attach(struct service *s, struct mclient *mc);
void service_detach(struct mclient *mc);

/* --- the tick --------------------------------------------------------------- */

/* Read the cgroup (opening it first when absent); an absent cgroup makes
 * the service NORMAL with no figures, its clients told so. */
void service_sample(struct service *s);

/* The budget and guarantee in bytes, from the config (or SET_BUDGET) and
 * the last host and cgroup figures. */
void service_resolve_budget(struct service *s);

/* One decision on the last sample, the escalation it calls for, and the
 * directives that changed. `probe`: a sample between ticks. */
void service_decide(struct service *s, uint64_t now_ms, bool probe);

/* cgroup v1: usage threshold notifications at warn and critical. */
void service_arm_thresholds(struct service *s);

/* The next sample before the tick's, when the growth calls for one. */
void service_arm_probe(struct service *s, uint64_t now_us);

/* --- directives ----------------------------------------------------------- */

/*
 * Give `d` to one client and count it as asked when it demands bytes: its
 * state into its board slot when it has one (the service's board is then
 * due a wake-up: service_board_wake()), and a DIRECTIVE when it has none
 * or `d` demands bytes.  Returns 0 or -errno (the client may be dropped).
 */
int mclient_send(struct mclient *mc, const struct mg_directive *d);

/*
 * Give a client that announced MG_CAP_BOARD a slot on the service's
 * board (made on first use, with room for [daemon] max_connections
 * clients).  Returns 0, or -errno when it goes on without one (no board
 * could be made, or it is full).
 */
int service_board_take(struct service *s, struct mclient *mc);

/*
 * Send the client BOARD with the board's descriptors, once its slot holds
 * its first directive.  When that cannot go at once (a busy socket, a
 * peer that takes no descriptors), the slot is given back and the client
 * counts as told nothing, so that the next directive reaches it by
 * message.  Returns 0 or -errno; never drops the client.
 */
int service_board_send(struct service *s, struct mclient *mc);

/* Wake the service's board clients if slots were written since the last
 * wake-up. */
void service_board_wake(struct service *s);

/* NORMAL, unless that is what the client was last told. */
void mclient_send_normal(struct mclient *mc);

/* Split `d` over the service's clients and give each what changed (the
 * board slots and their wake-up first, then the messages): to all, or to
 * `only` when not NULL. */
void service_direct_to(struct service *s, const struct mg_directive *d,
		       const struct mclient *only);
void service_direct(struct service *s, const struct mg_directive *d);

/* --- the crash record ------------------------------------------------------- */

/*
 * Write the record at `path` of the memory.high values that `services`
 * replaced, for socket `socket`; removes it when there are none.  Failures
 * are logged and ignored (the record is a best effort).
 */
void escalations_save(const char *path, const char *socket, struct service *const *services,
		      size_t n);

/*
 * Put back what a killed predecessor on `socket` recorded at `path`, for
 * the configured services among `services` whose cgroup is below
 * `v2_root`, then remove the record.  What cannot be trusted is logged and
 * skipped.
 */
void escalations_restore(const char *path, const char *socket, const char *v2_root,
			 struct service *const *services, size_t n);

/* A memory.high value as the record holds it: "max" (MONITOR_UNLIMITED)
 * or a size of 1 byte or more in digits, nothing else. */
bool escalations_parse_high(const char *s, uint64_t *ret);
