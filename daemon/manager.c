/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "cgrp.h"
#include "log.h"
#include "manager.h"
#include "monitor.h"
#include "policy.h"
#include "server.h"

#define FAST_TICK_MS 100                /* ms, tick while a service is above NORMAL */
#define PSI_WINDOW_US 1000000           /* us; rounded to 2 s without CAP_SYS_RESOURCE */

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
	struct mclient **clients;
	size_t n_clients;
};

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

static char *path_join(const char *a, const char *b)
{
	char *p;

	while (*b == '/')
		b++;
	if (asprintf(&p, "%s%s%s", a, *b ? "/" : "", b) < 0)
		return NULL;
	return p;
}

/* `dir` is `top` or below it. */
static bool path_within(const char *dir, const char *top)
{
	size_t n = strlen(top);

	while (n > 1 && top[n - 1] == '/')
		n--;
	return strncmp(dir, top, n) == 0 && (dir[n] == 0 || dir[n] == '/');
}

static double util_ratio(uint32_t bp)
{
	return bp == POLICY_UTIL_UNKNOWN ? 0.0 : bp / 10000.0;
}

/* --- services ------------------------------------------------------------ */

static void service_unwatch_thresholds(struct service *s)
{
	for (size_t i = 0; i < ARRAY_SIZE(s->thr_fd); i++) {
		s->thr_src[i] = sd_event_source_disable_unref(s->thr_src[i]);
		if (s->thr_fd[i] >= 0)
			close(s->thr_fd[i]);
		s->thr_fd[i] = -1;
		s->thr_bytes[i] = 0;
	}
}

static void service_unwatch(struct service *s)
{
	service_unwatch_thresholds(s);
	s->probe_src = sd_event_source_disable_unref(s->probe_src);
	s->psi_src = sd_event_source_disable_unref(s->psi_src);
	s->events_src = sd_event_source_disable_unref(s->events_src);
	if (s->psi_fd >= 0)
		close(s->psi_fd);
	s->psi_fd = -1;
	s->cg = monitor_cgroup_free(s->cg);
	s->psi_mode = MG_PSI_ABSENT;
	s->have_sample = false;
}

/*
 * The memory.high values the daemon replaced, in a file beside the socket
 * named after it (SOCKET.escalations: two daemons with sockets in one
 * directory keep a record each), so a daemon that was killed (crash,
 * watchdog, SIGKILL) can put them back when it starts again.  Its first
 * line names the socket.  Rewritten whole on every change: a new file,
 * made with O_EXCL|O_NOFOLLOW (nothing planted at its name is followed or
 * reused), renamed into place.
 */
static void manager_save_escalations(struct manager *m)
{
	_cleanup_free_ char *tmp = NULL;
	FILE *f;
	size_t n = 0;
	int fd;

	if (!m->state_path || asprintf(&tmp, "%s.new", m->state_path) < 0)
		return;
	/* A leftover of a crash mid-write; unlink removes a symlink itself. */
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	f = fd >= 0 ? fdopen(fd, "we") : NULL;
	if (!f) {
		log_warning_errno(errno, "Failed to write %s, ignoring: %m", tmp);
		if (fd >= 0)
			close(fd);
		return;
	}
	fprintf(f, "socket %s\n", m->conf->daemon.socket);
	for (size_t i = 0; i < m->n_services; i++) {
		const struct service *s = m->services[i];

		if (!s->saved_high_valid)
			continue;
		if (s->saved_high == MONITOR_UNLIMITED)
			fprintf(f, "max %s\n", s->v2_dir);
		else
			fprintf(f, "%" PRIu64 " %s\n", s->saved_high, s->v2_dir);
		n++;
	}
	if (fclose(f) != 0 || (n > 0 && rename(tmp, m->state_path) < 0)) {
		log_warning_errno(errno, "Failed to write %s, ignoring: %m", m->state_path);
		unlink(tmp);
		return;
	}
	if (n == 0) {
		unlink(tmp);
		unlink(m->state_path);
	}
}

/* A memory.high value as the record holds it: "max" or a size of 1 byte
 * or more in digits, nothing else (no sign, no space, no 0). */
static bool parse_high(const char *s, uint64_t *ret)
{
	uint64_t v = 0;

	if (strcmp(s, "max") == 0) {
		*ret = MONITOR_UNLIMITED;
		return true;
	}
	if (!*s || strlen(s) > 20)
		return false;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (v == 0)
		return false;
	*ret = v;
	return true;
}

/* The configured service whose cgroup directory is `dir`, or NULL. */
static struct service *service_by_dir(struct manager *m, const char *dir)
{
	for (size_t i = 0; i < m->n_services; i++)
		if (!m->services[i]->implicit && strcmp(m->services[i]->v2_dir, dir) == 0)
			return m->services[i];
	return NULL;
}

/*
 * Put back what a killed predecessor on the same socket left in
 * memory.high.  The record is trusted only as far as it must be: a regular
 * file of ours that nobody else may write, naming our socket; and each
 * entry only for the cgroup of a configured service, below the cgroup
 * root, with a value that parses.  Anything else is logged and skipped.
 */
static void manager_restore_leftovers(struct manager *m)
{
	_cleanup_fclose_ FILE *f = NULL;
	char line[MG_PATH_MAX + 4096];
	struct stat st;
	int fd;

	fd = open(m->state_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		if (errno != ENOENT)
			log_warning_errno(errno, "Failed to open %s, ignoring it: %m", m->state_path);
		return;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & 022)) {
		log_warning("%s is not a regular file of ours that only we may write; ignoring it",
			    m->state_path);
		close(fd);
		return;
	}
	f = fdopen(fd, "re");
	if (!f) {
		close(fd);
		return;
	}
	if (!fgets(line, sizeof(line), f) || strncmp(line, "socket ", 7) != 0 ||
	    strcspn(line + 7, "\n") != strlen(m->conf->daemon.socket) ||
	    strncmp(line + 7, m->conf->daemon.socket, strlen(m->conf->daemon.socket)) != 0) {
		log_warning("%s is not the record of socket %s; ignoring it", m->state_path,
			    m->conf->daemon.socket);
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		char *dir = strchr(line, ' '), *end;
		uint64_t v;
		int r;

		if (!dir)
			continue;
		*dir++ = 0;
		end = strchr(dir, '\n');
		if (end)
			*end = 0;
		/* Only a configured service's cgroup, below our cgroup root,
		 * never upwards, and only to a value that parses. */
		if (!path_within(dir, m->v2_root) || strstr(dir, "/..") ||
		    !service_by_dir(m, dir) || !parse_high(line, &v)) {
			log_warning("%s: entry '%s %s' is not a configured service's cgroup with a "
				    "memory.high value; skipped", m->state_path, line, dir);
			continue;
		}
		r = cgrp_write_high(dir, v);
		if (r < 0)
			log_warning_errno(r, "Failed to put back memory.high of %s, ignoring: %m", dir);
		else
			log_notice("memory.high of %s put back to %s, as a previous memguardd left it",
				   dir, line);
	}
	unlink(m->state_path);
}

static void service_restore(struct service *s)
{
	int r;

	if (s->ps.escalation != MG_ESCALATION_HIGH || !s->saved_high_valid)
		return;
	r = cgrp_write_high(s->v2_dir, s->saved_high);
	if (r < 0)
		log_warning_errno(r, "%s: failed to restore memory.high, ignoring: %m",
				  s->conf.name);
	else
		log_service(LOG_NOTICE, s->conf.name, proto_level_name(s->ps.level),
			    util_ratio(s->last.utilization), "restore",
			    "memory.high restored to %" PRIu64 " (daemon stopping or service removed)",
			    s->saved_high);
	s->ps.escalation = MG_ESCALATION_NONE;
	if (r >= 0)
		s->saved_high_valid = false;
}

static void mclient_send_normal(struct mclient *mc);

static struct service *service_free(struct service *s)
{
	if (!s)
		return NULL;
	service_restore(s);
	service_unwatch(s);
	for (size_t i = 0; i < s->n_clients; i++)
		s->clients[i]->svc = NULL;
	free(s->clients);
	free(s->conf.name);
	free(s->conf.cgroup);
	free(s->v2_dir);
	free(s->v1_dir);
	free(s);
	return NULL;
}

static int on_psi(sd_event_source *src, int fd, uint32_t revents, void *userdata);
static int on_events(sd_event_source *src, int fd, uint32_t revents, void *userdata);

/* Open the cgroup and arm its PSI trigger and events watch.  Absent is not
 * an error: the service is watched again on every tick. */
static int service_watch(struct service *s)
{
	struct manager *m = s->m;
	_cleanup_free_ char *pressure = NULL;
	uint32_t threshold;
	int r, efd;

	r = monitor_cgroup_open(m->v2_root, m->v1_root, s->conf.cgroup, &s->cg);
	if (r < 0)
		return r;

	/* The trigger fires when stalls exceed the WARN pressure within a
	 * window; with pressure_some = 0 (off) a 1 % stall still wakes us
	 * early, the tick does the rest. */
	threshold = (uint32_t)((uint64_t)PSI_WINDOW_US *
			       (s->conf.pressure_some ? s->conf.pressure_some : 100) / 10000);
	pressure = path_join(s->v2_dir, "memory.pressure");
	if (!pressure)
		return -ENOMEM;
	r = monitor_psi_trigger_open(pressure, threshold, PSI_WINDOW_US, &s->psi_fd,
				     &s->psi_mode);
	if (r == -ENODEV || r == -ENOENT) {
		s->psi_fd = -1;
		s->psi_mode = MG_PSI_POLLING;
	} else if (r < 0) {
		log_warning_errno(r, "%s: cannot arm a PSI trigger, polling instead: %m",
				  s->conf.name);
		s->psi_fd = -1;
		s->psi_mode = MG_PSI_POLLING;
	}
	if (s->psi_fd >= 0) {
		r = sd_event_add_io(m->event, &s->psi_src, s->psi_fd, EPOLLPRI, on_psi, s);
		if (r < 0)
			return r;
	}
	efd = monitor_cgroup_events_fd(s->cg);
	if (efd >= 0) {
		/* epoll refuses regular files (EPERM): a fixture tree has no
		 * change notification, the tick reads it all the same. */
		r = sd_event_add_io(m->event, &s->events_src, efd, EPOLLPRI, on_events, s);
		if (r == -EPERM)
			s->events_src = NULL;
		else if (r < 0)
			return r;
	}
	log_info("%s: watching cgroup %s (PSI %s)", s->conf.name, s->conf.cgroup,
		 s->psi_mode == MG_PSI_TRIGGER	       ? "trigger"
		 : s->psi_mode == MG_PSI_TRIGGER_ROUNDED ? "trigger, window rounded to 2 s"
							 : "polling");
	return 0;
}

static int service_new(struct manager *m, const struct conf_service *conf, bool implicit,
		       struct service **ret)
{
	struct service *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->m = m;
	s->psi_fd = -1;
	s->thr_fd[0] = s->thr_fd[1] = -1;
	s->implicit = implicit;
	s->conf = *conf;
	s->conf.name = strdup(conf->name);
	s->conf.cgroup = strdup(conf->cgroup);
	s->v2_dir = path_join(m->v2_root, conf->cgroup);
	s->v1_dir = m->v1_root ? path_join(m->v1_root, conf->cgroup) : NULL;
	if (!s->conf.name || !s->conf.cgroup || !s->v2_dir || (m->v1_root && !s->v1_dir)) {
		service_free(s);
		return -ENOMEM;
	}
	policy_state_init(&s->ps);
	*ret = s;
	return 0;
}

static int services_add(struct manager *m, struct service *s)
{
	struct service **n = realloc(m->services, (m->n_services + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	m->services = n;
	m->services[m->n_services++] = s;
	return 0;
}

static struct service *service_by_name(struct manager *m, const char *name)
{
	for (size_t i = 0; i < m->n_services; i++)
		if (strcmp(m->services[i]->conf.name, name) == 0)
			return m->services[i];
	return NULL;
}

/* The service whose cgroup holds the client, deepest first. */
static struct service *service_for(struct manager *m, const struct mclient *mc)
{
	struct service *best = NULL;
	size_t best_len = 0;

	for (size_t i = 0; i < m->n_services; i++) {
		struct service *s = m->services[i];
		bool in = (mc->v2[0] && path_within(mc->v2, s->v2_dir)) ||
			  (mc->v1[0] && s->v1_dir && path_within(mc->v1, s->v1_dir));

		if (in && strlen(s->v2_dir) >= best_len) {
			best = s;
			best_len = strlen(s->v2_dir);
		}
	}
	return best;
}

static int service_attach(struct service *s, struct mclient *mc)
{
	struct mclient **n = realloc(s->clients, (s->n_clients + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	s->clients = n;
	s->clients[s->n_clients++] = mc;
	mc->svc = s;
	return 0;
}

static void service_detach(struct mclient *mc)
{
	struct service *s = mc->svc;

	if (!s)
		return;
	for (size_t i = 0; i < s->n_clients; i++)
		if (s->clients[i] == mc) {
			s->clients[i] = s->clients[--s->n_clients];
			break;
		}
	mc->svc = NULL;
}

static uint64_t resolve_size(const struct conf_size *z, uint64_t mem_total, uint64_t cg_max)
{
	switch (z->kind) {
	case CONF_SIZE_BYTES:
		return z->bytes;
	case CONF_SIZE_PERCENT:
		return (uint64_t)((double)mem_total * z->percent / 10000.0);
	case CONF_SIZE_MAX:
	default:
		return cg_max == MONITOR_UNLIMITED ? 0 : cg_max;
	}
}

static void service_resolve_budget(struct service *s)
{
	uint64_t total = s->m->have_host ? s->m->host.mem.total : 0;
	uint64_t limit = MONITOR_UNLIMITED;

	if (s->have_sample) {
		limit = s->sample.max;
		/* An implicit service's budget is its memory.high when set:
		 * that is where the kernel starts throttling it. */
		if (s->implicit && s->sample.high_known && s->sample.high != MONITOR_UNLIMITED)
			limit = s->sample.high;
	}
	s->budget = s->budget_override ? s->budget_override
				       : resolve_size(&s->conf.budget, total, limit);
	s->guarantee = resolve_size(&s->conf.guarantee, total, MONITOR_UNLIMITED);
}

/* --- directives ------------------------------------------------------- */

/* A client's last REPORT with its figures clamped to what the service's
 * cgroup holds now (its budget while it was never read). */
static void service_client_report(const struct service *s, const struct mclient *mc,
				  struct mg_report *ret)
{
	*ret = mc->report;
	policy_report_clamp(ret, s->have_sample ? s->sample.current : s->budget);
}

static int mclient_send(struct mclient *mc, const struct mg_directive *d)
{
	struct mg_msg msg = { .hdr = { .type = MG_MSG_DIRECTIVE } };
	int r;

	msg.directive = *d;
	r = server_send(mc->c, &msg);
	if (r < 0)
		return r;
	mc->directive = *d;
	mc->have_directive = true;
	mc->last_seq = msg.hdr.seq;
	if (d->release > 0) {
		mc->pending_seq = msg.hdr.seq;
		mc->pending_usec = now_usec();
		mc->asked++;
		mc->asked_bytes = add_sat(mc->asked_bytes,
						 d->release == UINT64_MAX ? 0 : d->release);
	}
	return 0;
}

static void mclient_send_normal(struct mclient *mc)
{
	struct mg_directive d = { .level = MG_LEVEL_NORMAL, .gc_percent = MG_GC_DEFAULT };

	if (mc->have_directive && !policy_directive_changed(&mc->directive, &d))
		return;
	mclient_send(mc, &d);
}

/* Split the service's directive over its clients and send what changed:
 * to every client, or to `only` (the others hear their new share on the
 * next tick). */
static void service_direct_to(struct service *s, const struct mg_directive *d,
			      const struct mclient *only)
{
	_cleanup_free_ struct mg_report *reports = NULL;
	_cleanup_free_ struct mg_directive *out = NULL;
	size_t n = s->n_clients;

	if (n == 0)
		return;
	reports = calloc(n, sizeof(*reports));
	out = calloc(n, sizeof(*out));
	if (!reports || !out || (
		    ({
			    for (size_t i = 0; i < n; i++)
				    service_client_report(s, s->clients[i], &reports[i]);
			    policy_client_directives(d, reports, n, out);
		    }) < 0)) {
		log_error("%s: out of memory splitting a directive", s->conf.name);
		return;
	}
	/* Sending may drop a client (and shrink s->clients): walk a copy. */
	{
		_cleanup_free_ struct mclient **cl = malloc(n * sizeof(*cl));

		if (!cl)
			return;
		memcpy(cl, s->clients, n * sizeof(*cl));
		for (size_t i = 0; i < n; i++)
			if ((!only || cl[i] == only) &&
			    (!cl[i]->have_directive ||
			     policy_directive_changed(&cl[i]->directive, &out[i])))
				mclient_send(cl[i], &out[i]);
	}
}

static void service_direct(struct service *s, const struct mg_directive *d)
{
	service_direct_to(s, d, NULL);
}

/* --- escalation --------------------------------------------------------- */

/* Log a failed escalation step once per streak of failures: the policy
 * proposes the step again on every tick until it succeeds. */
static int escalate_failed(struct service *s, int r, const char *what)
{
	if (!s->escalate_failed_said)
		log_warning_errno(r, "%s: failed to %s, will retry on each tick: %m", s->conf.name,
				  what);
	s->escalate_failed_said = true;
	return r;
}

static int service_escalate(struct service *s, enum policy_action a, uint64_t now_ms)
{
	const char *lvl = proto_level_name(s->last.level);
	double u = util_ratio(s->last.utilization);
	int r;

	switch (a) {
	case POLICY_ACTION_HIGH:
		if (!s->sample.high_known) {
			/* cgroup v1 has no memory.high.  For enforce=kill the
			 * step is passed over (recorded, nothing written) so the
			 * kill, which v1 can do, stays possible after a further
			 * deadline; enforce=high can only notify. */
			if (!s->high_unavailable_said)
				log_service(LOG_WARNING, s->conf.name, lvl, u, "escalate",
					    "memory.high is unavailable on cgroup v1; %s",
					    s->conf.enforce == MG_ENFORCE_KILL
						    ? "the kill step follows if usage stays above "
						      "the budget"
						    : "only notifying");
			s->high_unavailable_said = true;
			if (s->conf.enforce != MG_ENFORCE_KILL)
				return 0;
			s->saved_high_valid = false;
			s->high_noop = true;
			break;
		}
		s->high_noop = false;
		if (s->sample.high == s->budget) {
			/* Our own value, left by a predecessor that could not
			 * put it back: recorded as the original, it would
			 * become permanent.  Keep what we know, if anything. */
			if (!s->saved_high_valid)
				log_service(LOG_NOTICE, s->conf.name, lvl, u, "escalate",
					    "memory.high is already the budget %" PRIu64
					    "; nothing to put back later", s->budget);
			break;
		}
		s->saved_high = s->sample.high;
		s->saved_high_valid = true;
		/* Recorded before the write: a crash right after it still
		 * leaves the old value to put back. */
		manager_save_escalations(s->m);
		r = cgrp_write_high(s->v2_dir, s->budget);
		if (r < 0) {
			s->saved_high_valid = false;
			manager_save_escalations(s->m);
			return escalate_failed(s, r, "write memory.high");
		}
		log_service(LOG_WARNING, s->conf.name, lvl, u, "escalate",
			    "memory.high set to the budget %" PRIu64 " (was %s): working set %" PRIu64
			    " still at %s past the release deadline",
			    s->budget, s->saved_high == MONITOR_UNLIMITED ? "max" : "a limit",
			    s->sample.working_set, lvl);
		break;
	case POLICY_ACTION_RESTORE:
		if (s->saved_high_valid) {
			r = cgrp_write_high(s->v2_dir, s->saved_high);
			if (r < 0)
				return escalate_failed(s, r, "restore memory.high");
		}
		if (!s->high_noop)
			log_service(LOG_NOTICE, s->conf.name, lvl, u, "restore",
				    "memory.high restored: level back to %s", lvl);
		s->saved_high_valid = false;
		s->high_noop = false;
		manager_save_escalations(s->m);
		break;
	case POLICY_ACTION_KILL: {
		bool v1 = s->v1_dir && !s->sample.high_known, frozen = false;

		/* v1 has no cgroup.kill: the subtree is walked, frozen through
		 * its cgroup2 mirror where that has cgroup.freeze. */
		r = cgrp_kill(v1 ? s->v1_dir : s->v2_dir, v1 ? s->v2_dir : NULL, &frozen);
		if (r < 0)
			return escalate_failed(s, r, "kill the cgroup");
		if (v1)
			log_service(LOG_CRIT, s->conf.name, lvl, u, "kill",
				    "killed %d process(es) of the cgroup and its subtree%s: working "
				    "set %" PRIu64 " above budget %" PRIu64 " past the deadline "
				    "while memory.events high/max/oom grew", r,
				    frozen ? " (frozen first)" : "", s->sample.working_set,
				    s->budget);
		else
			log_service(LOG_CRIT, s->conf.name, lvl, u, "kill",
				    "killed the cgroup and its subtree: working set %" PRIu64
				    " above budget %" PRIu64 " past the deadline while "
				    "memory.events high/max/oom grew", s->sample.working_set,
				    s->budget);
		break;
	}
	default:
		return 0;
	}
	s->escalate_failed_said = false;
	policy_escalated(&s->ps, &s->conf, a, now_ms);
	return 0;
}

/* --- the tick ------------------------------------------------------------ */

/*
 * The service's cgroup is absent (went away, or never was): nothing of the
 * last sample holds any more.  Its state is NORMAL with no figures, as
 * STATUS shows it, and its clients are told NORMAL (each only once: what
 * did not change is not sent again).  An escalation in force went with the
 * cgroup, so there is nothing to put back.
 */
static void service_absent(struct service *s)
{
	bool recorded = s->saved_high_valid;

	s->have_sample = false;
	s->saved_high_valid = false;
	s->high_noop = false;
	policy_state_init(&s->ps);
	s->last = (struct policy_decision){
		.level = MG_LEVEL_NORMAL,
		.utilization = POLICY_UTIL_UNKNOWN,
		.directive = { .level = MG_LEVEL_NORMAL, .gc_percent = MG_GC_DEFAULT },
	};
	if (recorded)
		manager_save_escalations(s->m);
	service_direct(s, &s->last.directive);
}

static void service_sample(struct service *s)
{
	int r;

	if (!s->cg) {
		r = service_watch(s);
		if (r < 0) {
			service_unwatch(s);
			/* Said once per streak: retried on every tick. */
			if (r == -ENODEV && !s->absent_said)
				log_notice("%s: cgroup %s is absent (%s%s%s); watching for it",
					   s->conf.name, s->conf.cgroup, s->v2_dir,
					   s->v1_dir ? ", " : "", s->v1_dir ? s->v1_dir : "");
			else if (r != -ENODEV && !s->open_failed_said)
				log_warning_errno(r, "%s: cannot watch cgroup %s, retrying on each "
						  "tick: %m", s->conf.name, s->conf.cgroup);
			s->absent_said = r == -ENODEV;
			s->open_failed_said = r != -ENODEV;
			if (r == -ENODEV)
				service_absent(s);
			return;
		}
		s->open_failed_said = false;
		s->absent_said = false;
	}
	r = monitor_cgroup_read(s->cg, &s->sample);
	if (r == -ENODEV) {
		log_notice("%s: cgroup %s went away; watching for its return", s->conf.name,
			   s->conf.cgroup);
		service_unwatch(s);
		/* Said: the ticks that find it absent say nothing more. */
		s->absent_said = true;
		service_absent(s);
		return;
	}
	if (r < 0) {
		log_warning_errno(r, "%s: failed to read cgroup %s, ignoring: %m", s->conf.name,
				  s->conf.cgroup);
		/* memory.events stays ready until read: leave it to the tick
		 * rather than spin on it. */
		if (s->events_src)
			sd_event_source_set_enabled(s->events_src, SD_EVENT_OFF);
		return;
	}
	s->have_sample = true;
	if (s->events_src)
		sd_event_source_set_enabled(s->events_src, SD_EVENT_ON);
}

/* The clients' measured answer time: the slowest mean from DIRECTIVE to
 * RELEASED among them, in ms (0 before any answered). */
static uint32_t service_answer_ms(const struct service *s)
{
	uint64_t worst = 0;

	for (size_t i = 0; i < s->n_clients; i++) {
		const struct mclient *mc = s->clients[i];

		if (mc->answered && mc->response_us_total / mc->answered > worst)
			worst = mc->response_us_total / mc->answered;
	}
	worst /= 1000;
	return worst > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)worst;
}

static void service_decide(struct service *s, uint64_t now_ms, bool probe)
{
	struct policy_input in = { 0 };
	struct policy_decision d;
	enum mg_level before = s->ps.level;

	if (!s->have_sample)
		return;
	service_resolve_budget(s);
	s->interval_ms = policy_sample_interval(&s->conf, s->sample.working_set, s->budget,
						policy_growth_update(&s->growth, &s->m->params,
								     s->sample.working_set, now_ms),
						s->m->conf->daemon.tick_ms);
	in.growth = policy_growth_ahead(&s->growth);
	in.reaction_ms = service_answer_ms(s) + s->interval_ms;
	in.probe = probe;
	in.working_set = s->sample.working_set;
	in.budget = s->budget;
	in.some_avg10 = s->sample.psi.some.avg10;
	in.full_avg10 = s->sample.psi.full.avg10;
	in.events.high = s->sample.events.high;
	in.events.max = s->sample.events.max;
	in.events.oom = s->sample.events.oom + s->sample.events.oom_kill;
	{
		uint64_t owned = 0;
		bool all_reported = s->n_clients > 0;

		for (size_t i = 0; i < s->n_clients; i++) {
			struct mg_report rep_clamped;
			const struct mg_report *rep = &rep_clamped;
			uint64_t r;

			service_client_report(s, s->clients[i], &rep_clamped);
			r = policy_releasable(rep);

			in.releasable = in.releasable + r < in.releasable ? UINT64_MAX
									  : in.releasable + r;
			if (rep->heap_sys == 0)
				all_reported = false;
			else if (rep->heap_sys > rep->heap_released)
				owned += rep->heap_sys - rep->heap_released;
		}
		/* Until every client has reported, all of it counts as theirs.
		 * Reports are up to a second old: while the heaps grow, the
		 * difference overstates what is not theirs, so the estimate
		 * falls at once but rises by at most 1 % of the budget a
		 * decision (code, stacks and page cache move slowly), from 0
		 * when the service's first clients report. */
		if (all_reported) {
			uint64_t est = in.working_set > owned ? in.working_set - owned : 0;
			uint64_t step = s->budget / 100;

			if (est > s->unowned && est - s->unowned > step)
				est = s->unowned + step;
			s->unowned = est;
			in.unowned = est;
		} else if (s->n_clients == 0)
			s->unowned = 0;
	}
	in.floor = s->squeeze_floor;
	in.extra_release = s->squeeze_extra;

	policy_tick(&s->ps, &s->m->params, &s->conf, &in, now_ms, &d);
	s->last = d;

	if (d.level != before)
		log_service(d.rose ? LOG_WARNING : LOG_NOTICE, s->conf.name,
			    proto_level_name(d.level), util_ratio(d.utilization), "level",
			    "%s -> %s: working set %" PRIu64 " of budget %" PRIu64
			    " (growing %.0f MiB/s, %" PRIu64 " in %u ms%s)"
			    ", PSI some %u.%02u%% full %u.%02u%%, gc %u%%, throttle %u.%u%%",
			    proto_level_name(before), proto_level_name(d.level), in.working_set,
			    in.budget, in.growth > 0 ? in.growth / (1 << 20) : 0.0,
			    policy_projected(in.working_set, in.growth, in.reaction_ms),
			    in.reaction_ms, probe ? ", between ticks" : "",
			    in.some_avg10 / 100, in.some_avg10 % 100, in.full_avg10 / 100,
			    in.full_avg10 % 100, d.directive.gc_percent, d.directive.throttle / 10,
			    d.directive.throttle % 10);
	if (d.directive.release > 0 && s->n_clients > 0)
		log_service(LOG_INFO, s->conf.name, proto_level_name(d.level),
			    util_ratio(d.utilization), "release",
			    "asking %zu client(s) to release %" PRIu64 " bytes%s", s->n_clients,
			    d.directive.release, d.directive.deadline_ms ? " by the deadline" : "");

	if (s->conf.enforce != MG_ENFORCE_NOTIFY || d.action == POLICY_ACTION_RESTORE)
		service_escalate(s, d.action, now_ms);

	service_direct(s, &d.directive);
}

static void manager_squeeze(struct manager *m)
{
	_cleanup_free_ struct policy_squeeze_service *in = NULL;
	_cleanup_free_ struct policy_squeeze_result *out = NULL;
	uint64_t need;

	for (size_t i = 0; i < m->n_services; i++) {
		m->services[i]->squeeze_extra = 0;
		m->services[i]->squeeze_floor = MG_LEVEL_NORMAL;
	}
	if (!m->have_host || !m->host.has_psi || m->n_services == 0)
		return;
	need = policy_squeeze_need(&m->params, m->host.mem.total, m->host.psi.some.avg10,
				   m->conf->daemon.host_pressure);
	if (need == 0)
		return;
	in = calloc(m->n_services, sizeof(*in));
	out = calloc(m->n_services, sizeof(*out));
	if (!in || !out)
		return;
	for (size_t i = 0; i < m->n_services; i++) {
		struct service *s = m->services[i];

		in[i].priority = s->conf.priority;
		in[i].guarantee = s->guarantee;
		in[i].working_set = s->have_sample ? s->sample.working_set : 0;
		in[i].budget = s->budget;
	}
	policy_squeeze(m->host.psi.some.avg10, m->conf->daemon.host_pressure, need, in,
		       m->n_services, out);
	for (size_t i = 0; i < m->n_services; i++) {
		m->services[i]->squeeze_extra = out[i].release;
		m->services[i]->squeeze_floor = out[i].floor;
	}
}

/* Registered clients (admin connections are not clients). */
static size_t manager_n_clients(struct manager *m)
{
	size_t n = 0;

	server_for_each(c, m->server)
		n += c->data != NULL;
	return n;
}

static void manager_notify_status(struct manager *m)
{
	const struct service *worst = NULL;
	char status[256];

	for (size_t i = 0; i < m->n_services; i++) {
		const struct service *s = m->services[i];

		if (!worst || s->ps.level > worst->ps.level ||
		    (s->ps.level == worst->ps.level &&
		     s->last.utilization != POLICY_UTIL_UNKNOWN &&
		     (worst->last.utilization == POLICY_UTIL_UNKNOWN ||
		      s->last.utilization > worst->last.utilization)))
			worst = s;
	}
	if (worst)
		snprintf(status, sizeof(status), "%zu services, %zu clients; worst: %s %s",
			 m->n_services, manager_n_clients(m), worst->conf.name,
			 proto_level_name(worst->ps.level));
	else
		snprintf(status, sizeof(status), "no services, %zu clients",
			 manager_n_clients(m));
	if (strcmp(status, m->status) != 0) {
		snprintf(m->status, sizeof(m->status), "%s", status);
		sd_notifyf(false, "STATUS=%s", status);
	}
}

static void manager_tick_now(struct manager *m);

static void manager_collect_implicit(struct manager *m);

static int on_threshold(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct service *s = userdata;
	uint64_t v;

	/* Reading the counter re-arms the eventfd. */
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_debug("%s: reading a usage threshold's eventfd: %m", s->conf.name);
	s->woke = true;
	manager_tick_now(s->m);
	return 0;
}

/*
 * cgroup v1: the kernel says when usage crosses warn and critical, however
 * fast it grows (on v2 memory.events and the PSI trigger wake the loop).
 * Armed once the working set reaches half of warn, kept, and armed again
 * when the budget moves; a refusal is logged once and the sampling does
 * the work alone.
 */
static void service_arm_thresholds(struct service *s)
{
	const uint32_t bp[2] = { s->conf.warn, s->conf.critical };

	if (!s->cg || !s->v1_dir || s->budget == 0 || s->thr_failed_said) {
		if (!s->cg || s->budget == 0)
			service_unwatch_thresholds(s);
		return;
	}
	/* Each registration blocks this loop for an RCU grace period: not
	 * for services far below warn (policy_thresholds_due()), and one
	 * service's first arming per tick period, so that many services
	 * nearing warn together hold the loop ~2 grace periods a second at
	 * most (the sampling watches them meanwhile). */
	if (s->thr_fd[0] < 0 && s->thr_fd[1] < 0) {
		uint64_t now = now_usec();

		if (!policy_thresholds_due(&s->conf,
					   s->have_sample ? s->sample.working_set : 0, s->budget) ||
		    now - s->m->thr_armed_usec < s->m->conf->daemon.tick_ms * 1000ULL)
			return;
		s->m->thr_armed_usec = now;
	}
	for (size_t i = 0; i < ARRAY_SIZE(bp); i++) {
		uint64_t at = (uint64_t)((double)s->budget * bp[i] / 10000.0);
		int r;

		if (s->thr_fd[i] >= 0 && s->thr_bytes[i] == at)
			continue;
		s->thr_src[i] = sd_event_source_disable_unref(s->thr_src[i]);
		if (s->thr_fd[i] >= 0)
			close(s->thr_fd[i]);
		s->thr_fd[i] = -1;
		s->thr_bytes[i] = 0;
		r = monitor_cgroup_threshold_open(s->cg, at, &s->thr_fd[i]);
		if (r >= 0)
			r = sd_event_add_io(s->m->event, &s->thr_src[i], s->thr_fd[i], EPOLLIN,
					    on_threshold, s);
		if (r < 0) {
			log_internal(LOG_INFO, r, "%s: no v1 usage threshold notification (%m); "
				       "sampling only", s->conf.name);
			s->thr_failed_said = true;
			service_unwatch_thresholds(s);
			return;
		}
		s->thr_bytes[i] = at;
	}
}

static int on_probe(sd_event_source *src, uint64_t usec, void *userdata);

/* The next sample of a growing service before the tick's, when its growth
 * calls for one (policy_sample_interval()). */
static void service_arm_probe(struct service *s, uint64_t now_us)
{
	int r;

	if (!s->cg || !s->have_sample || s->interval_ms >= s->m->conf->daemon.tick_ms) {
		if (s->probe_src)
			sd_event_source_set_enabled(s->probe_src, SD_EVENT_OFF);
		return;
	}
	if (!s->probe_src) {
		r = sd_event_add_time(s->m->event, &s->probe_src, CLOCK_MONOTONIC,
				      now_us + s->interval_ms * 1000ULL, 1000, on_probe, s);
		if (r < 0) {
			log_warning_errno(r, "%s: cannot arm a sample between ticks, "
					  "ignoring: %m", s->conf.name);
			return;
		}
	} else
		sd_event_source_set_time(s->probe_src, now_us + s->interval_ms * 1000ULL);
	sd_event_source_set_enabled(s->probe_src, SD_EVENT_ONESHOT);
}

/* A sample between ticks: memory.current alone, one decision, directives
 * out at once. */
static int on_probe(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct service *s = userdata;
	uint64_t now = now_usec(), current;
	int r;

	r = monitor_cgroup_read_current(s->cg, &current);
	if (r < 0) {
		/* The tick reads everything and finds out what happened. */
		s->woke = true;
		manager_tick_now(s->m);
		return 0;
	}
	s->sample.current = current;
	s->sample.working_set = current > s->sample.stat.inactive_file
					? current - s->sample.stat.inactive_file
					: 0;
	service_decide(s, now / 1000, /* probe= */ true);
	service_arm_probe(s, now);
	return 0;
}

static int on_tick(sd_event_source *src, uint64_t usec, void *userdata)
{
	manager_collect_implicit(userdata);
	manager_tick_now(userdata);
	return 0;
}

/*
 * Drop the implicit services whose last client left, with their cgroup
 * files: a service made for a client lives as long as it has clients, or
 * a peer that registers from many cgroups in turn would keep descriptors
 * and memory without end.  On the timer's tick only, where no caller
 * holds a service: a client can go in the middle of a walk over its
 * service's clients, and a PSI or SET_BUDGET tick holds its service.
 */
static void manager_collect_implicit(struct manager *m)
{
	size_t n = 0;

	for (size_t i = 0; i < m->n_services; i++) {
		struct service *s = m->services[i];

		if (s->implicit && s->n_clients == 0) {
			log_info("%s: implicit service dropped: its last client left", s->conf.name);
			service_free(s);
			continue;
		}
		m->services[n++] = s;
	}
	m->n_services = n;
}

/*
 * A service is sampled and decided on a tick when it woke (s->woke), is
 * above NORMAL or escalated, has no sample yet, or its own tick period is up (within
 * half a fast tick); a calm service is not read again because another one
 * woke the loop or holds it at the fast tick.  m->tick_all: every service
 * (start, reload).
 */
static bool service_due(const struct service *s, uint64_t now)
{
	uint64_t period = s->m->conf->daemon.tick_ms * 1000ULL;

	return s->m->tick_all || s->woke || !s->have_sample || s->ps.level > MG_LEVEL_NORMAL ||
	       s->ps.escalation != MG_ESCALATION_NONE ||
	       now - s->sampled_usec + FAST_TICK_MS * 500ULL >= period;
}

static void manager_tick_now(struct manager *m)
{
	uint64_t now = now_usec();
	uint64_t next_ms = m->conf->daemon.tick_ms;
	_cleanup_free_ bool *due = calloc(m->n_services ? m->n_services : 1, sizeof(*due));
	int r;

	r = monitor_host_read(m->paths.host_pressure, m->paths.meminfo, &m->host);
	m->have_host = r >= 0;

	for (size_t i = 0; i < m->n_services; i++) {
		struct service *s = m->services[i];

		/* Out of memory: every service, as before. */
		if (due && !service_due(s, now)) {
			uint64_t left = (s->sampled_usec + s->m->conf->daemon.tick_ms * 1000ULL -
					 now) / 1000;

			if (left < next_ms)
				next_ms = left > 1 ? left : 1;
			continue;
		}
		if (due)
			due[i] = true;
		s->woke = false;
		s->sampled_usec = now;
		service_sample(s);
	}
	for (size_t i = 0; i < m->n_services; i++)
		service_resolve_budget(m->services[i]);
	manager_squeeze(m);
	for (size_t i = 0; i < m->n_services; i++) {
		struct service *s = m->services[i];

		/* A calm service not sampled keeps its decision, unless the
		 * host squeeze names it. */
		if (due && !due[i] && s->squeeze_floor == MG_LEVEL_NORMAL && s->squeeze_extra == 0)
			continue;
		service_decide(s, now / 1000, /* probe= */ false);
		service_arm_thresholds(s);
		service_arm_probe(s, now);
		if (s->ps.level > MG_LEVEL_NORMAL && next_ms > FAST_TICK_MS)
			next_ms = FAST_TICK_MS;
	}
	m->tick_all = false;
	server_tick(m->server, now);
	manager_notify_status(m);

	/* Re-arm relative to now: a wake-up by PSI or events also restarts
	 * the period of the services it sampled; the others' periods are
	 * kept (next_ms above). */
	sd_event_source_set_time(m->tick, now + next_ms * 1000);
	sd_event_source_set_enabled(m->tick, SD_EVENT_ONESHOT);
}

/* POLLERR on a PSI trigger means the cgroup was removed. */
static int on_psi(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct service *s = userdata;

	if (revents & EPOLLERR) {
		log_notice("%s: cgroup %s went away; watching for its return", s->conf.name,
			   s->conf.cgroup);
		service_unwatch(s);
		s->absent_said = true;
		service_absent(s);
		return 0;
	}
	s->woke = true;
	manager_tick_now(s->m);
	return 0;
}

/* memory.events signals every change with POLLPRI|POLLERR and stays ready
 * until it is read: the tick reads it (and finds -ENODEV when the cgroup
 * is gone). */
static int on_events(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct service *s = userdata;

	s->woke = true;
	manager_tick_now(s->m);
	return 0;
}

/* --- clients --------------------------------------------------------------- */

/*
 * An implicit service's name from its cgroup path: the wire carries
 * printable ASCII only, so any other byte (and the backslash) is written
 * as \xHH, as systemd-escape does.  -ENAMETOOLONG when the result does not
 * fit a name.
 */
static int implicit_name(const char *cgroup, char ret[MG_NAME_MAX + 1])
{
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)cgroup; *p; p++) {
		bool plain = *p >= 0x20 && *p < 0x7f && *p != '\\';

		if (n + (plain ? 1 : 4) > MG_NAME_MAX)
			return -ENAMETOOLONG;
		if (plain)
			ret[n++] = (char)*p;
		else
			n += (size_t)snprintf(ret + n, 5, "\\x%02x", *p);
	}
	ret[n] = 0;
	return 0;
}

static int implicit_service(struct manager *m, const struct mclient *mc, struct service **ret)
{
	struct conf_service conf;
	const char *dir = mc->v2[0] ? mc->v2 : mc->v1;
	const char *root = mc->v2[0] ? m->v2_root : m->v1_root;
	char name[MG_NAME_MAX + 1];
	struct service *s;
	int r;

	if (!root || !path_within(dir, root))
		return -ENOENT;
	/* The defaults, notify only (an implicit service never escalates). */
	conf_service_init(&conf, /* line= */ 0);
	conf.enforce = MG_ENFORCE_NOTIFY;
	conf.cgroup = (char *)dir + strlen(root);
	while (*conf.cgroup == '/')
		conf.cgroup++;
	r = implicit_name(*conf.cgroup ? conf.cgroup : "root", name);
	if (r < 0)
		return r;
	conf.name = name;

	r = service_new(m, &conf, /* implicit= */ true, &s);
	if (r < 0)
		return r;
	r = services_add(m, s);
	if (r < 0) {
		service_free(s);
		return r;
	}
	service_sample(s);
	service_resolve_budget(s);
	log_info("%s: implicit service for a client's cgroup (no service configured), "
		 "budget %" PRIu64 " from its memory.high or memory.max, notify only",
		 s->conf.name, s->budget);
	*ret = s;
	return 0;
}

static int peer_dirs(struct manager *m, pid_t pid, struct mclient *mc)
{
	_cleanup_free_ char *v2 = NULL, *v1 = NULL;
	int r;

	r = monitor_pid_cgroup(m->paths.proc, pid, &v2, &v1);
	if (r < 0)
		return r;
	/* On the real /proc of a hybrid host, libcgroup names the v1 memory
	 * cgroup from the controller mounts it knows; /proc's line is the
	 * fallback (and what fixture trees use). */
	if (m->v1_mount && strcmp(m->paths.proc, "/proc") == 0) {
		char *lv1 = NULL;

		if (cgrp_pid_v1_memory(pid, &lv1) == 0) {
			free(v1);
			v1 = lv1;
		}
	}
	if (v2 && m->v2_mount)
		snprintf(mc->v2, sizeof(mc->v2), "%s%s", m->v2_mount, strcmp(v2, "/") ? v2 : "");
	if (v1 && m->v1_mount)
		snprintf(mc->v1, sizeof(mc->v1), "%s%s", m->v1_mount, strcmp(v1, "/") ? v1 : "");
	return 0;
}

static int on_hello(void *userdata, struct client *c, const struct mg_hello *h,
		    struct mg_welcome *w, char text[MG_TEXT_MAX + 1])
{
	struct manager *m = userdata;
	struct mclient *mc;
	struct service *s, *named = NULL;
	int r;

	mc = calloc(1, sizeof(*mc));
	if (!mc)
		return MG_ERR_INTERNAL;
	mc->c = c;
	/* The cgroup is read from /proc/PID: only while PID is still the
	 * peer that connected, checked before and after (a peer can pass
	 * its socket on and exit, and its pid be given to another process). */
	r = server_peer_check(c);
	if (r >= 0)
		r = peer_dirs(m, c->cred.pid, mc);
	if (r >= 0)
		r = server_peer_check(c);
	if (r == -ESRCH) {
		free(mc);
		log_notice("Client %" PRIu64 ": the process %d that connected is gone or was "
			   "replaced; HELLO refused", c->id, (int)c->cred.pid);
		snprintf(text, MG_TEXT_MAX + 1,
			 "the process that connected (pid %d) is gone or was replaced",
			 (int)c->cred.pid);
		return MG_ERR_PROTOCOL;
	}
	if (r < 0) {
		free(mc);
		snprintf(text, MG_TEXT_MAX + 1, "cannot read the cgroup of pid %d: %s",
			 (int)c->cred.pid, strerror(-r));
		return MG_ERR_INTERNAL;
	}

	s = service_for(m, mc);
	if (h->service[0]) {
		named = service_by_name(m, h->service);
		if (!named) {
			free(mc);
			snprintf(text, MG_TEXT_MAX + 1, "no service '%s' is configured", h->service);
			return MG_ERR_NO_SERVICE;
		}
		if (named != s) {
			free(mc);
			snprintf(text, MG_TEXT_MAX + 1,
				 "pid %d is not in cgroup %s of service '%s'", (int)c->cred.pid,
				 named->conf.cgroup, named->conf.name);
			return MG_ERR_SERVICE;
		}
	}
	/* No service configured (no file, or an empty one): the embedded
	 * default makes each client's own cgroup a service. */
	if (!s && m->conf->n_services == 0) {
		r = implicit_service(m, mc, &s);
		if (r < 0)
			s = NULL;
	}
	if (!s) {
		snprintf(text, MG_TEXT_MAX + 1, "no service is configured for cgroup %.900s",
			 mc->v2[0] ? mc->v2 : mc->v1);
		free(mc);
		return MG_ERR_NO_SERVICE;
	}
	if (service_attach(s, mc) < 0) {
		free(mc);
		return MG_ERR_INTERNAL;
	}
	c->data = mc;

	w->budget = s->budget;
	w->report_interval_ms = m->conf->daemon.report_interval_ms;
	snprintf(w->service, sizeof(w->service), "%s", s->conf.name);
	log_service(LOG_INFO, s->conf.name, proto_level_name(s->ps.level),
		    util_ratio(s->last.utilization), "register",
		    "client %" PRIu64 " registered (pid %d, %s)", c->id,
		    (int)c->cred.pid, h->process[0] ? h->process : "unnamed");
	return 0;
}

static void on_report(void *userdata, struct client *c, const struct mg_report *r)
{
	struct mclient *mc = c->data;
	bool local = c->rx_flags & MG_FLAG_LOCAL_LIMIT;

	mc->report = *r;
	/* Clamped again where it is used (the cgroup's usage moves); here
	 * so that CLIENTS shows no figure the cgroup cannot hold either. */
	if (mc->svc)
		policy_report_clamp(&mc->report, mc->svc->have_sample ? mc->svc->sample.current
								      : mc->svc->budget);
	if (local == mc->local)
		return;
	mc->local = local;
	if (!mc->svc)
		return;
	log_service(local ? LOG_NOTICE : LOG_INFO, mc->svc->conf.name,
		    proto_level_name(mc->svc->ps.level), util_ratio(mc->svc->last.utilization),
		    "local", "client %" PRIu64 " %s its local limit (heap %" PRIu64 " bytes, "
		    "soft limit %" PRIu64 ")", c->id, local ? "acts on" : "no longer acts on",
		    mc->report.heap_sys > mc->report.heap_released
			    ? mc->report.heap_sys - mc->report.heap_released : 0,
		    mc->directive.soft_limit);
	/* A client past its share is news the tick should not wait for; at
	 * most once per fast tick, whatever a peer's flags do. */
	if (local && now_usec() - mc->svc->local_tick_usec >= FAST_TICK_MS * 1000ULL) {
		mc->svc->local_tick_usec = now_usec();
		mc->svc->woke = true;
		manager_tick_now(userdata);
	}
}

static void on_released(void *userdata, struct client *c, uint32_t seq,
			const struct mg_released *r)
{
	struct mclient *mc = c->data;
	uint64_t took;

	if (!mc->pending_seq || r->directive_seq != mc->pending_seq) {
		log_debug("Client %" PRIu64 ": RELEASED for directive %u, which is not pending",
			  c->id, r->directive_seq);
		return;
	}
	took = now_usec() - mc->pending_usec;
	mc->pending_seq = 0;
	mc->answered++;
	mc->released_bytes = add_sat(mc->released_bytes, r->bytes);
	mc->response_us_total = add_sat(mc->response_us_total, took);
	if (mc->svc) {
		mc->svc->released_total = add_sat(mc->svc->released_total, r->bytes);
		log_service(LOG_INFO, mc->svc->conf.name, proto_level_name(mc->svc->ps.level),
			    util_ratio(mc->svc->last.utilization), "released",
			    "client %" PRIu64 " released %" PRIu64 " bytes in %" PRIu64
			    " ms (%" PRIu64 " ms of it releasing)",
			    c->id, r->bytes, took / 1000, r->usec / 1000);
	}
}

static void on_gone(void *userdata, struct client *c)
{
	struct mclient *mc = c->data;

	if (!mc)
		return;
	service_detach(mc);
	free(mc);
	c->data = NULL;
}

/* --- admin ------------------------------------------------------------------ */

/*
 * Send one answer of a series that ends with RESULT.  An answer that does
 * not encode (a name the wire cannot carry) is logged and counted in
 * `skipped`, so the series still ends; returns -EPIPE only when the peer
 * is gone and nothing more can be sent.
 */
static int admin_send(struct client *c, struct mg_msg *msg, size_t *skipped)
{
	int r = server_send(c, msg);

	if (r == -EPIPE)
		return r;
	if (r < 0) {
		log_warning_errno(r, "Client %" PRIu64 ": a %s answer does not encode, skipped: %m",
				  c->id, proto_type_name(msg->hdr.type));
		(*skipped)++;
	}
	return 0;
}

static void admin_status(struct manager *m, struct client *c, uint32_t seq)
{
	struct mg_msg d = { .hdr = { .type = MG_MSG_STATUS_DAEMON, .seq = seq } };
	size_t skipped = 0;

	d.status_daemon.services = (uint32_t)m->n_services;
	d.status_daemon.clients = (uint32_t)manager_n_clients(m);
	if (m->have_host) {
		d.status_daemon.mem_total = m->host.mem.total;
		d.status_daemon.mem_available = m->host.mem.available;
		d.status_daemon.host_some_avg10 = m->host.psi.some.avg10;
		d.status_daemon.host_full_avg10 = m->host.psi.full.avg10;
	}
	d.status_daemon.tick_ms = m->conf->daemon.tick_ms;
	snprintf(d.status_daemon.version, sizeof(d.status_daemon.version), "%s", PACKAGE_VERSION);
	if (admin_send(c, &d, &skipped) < 0)
		return;

	for (size_t i = 0; i < m->n_services; i++) {
		const struct service *s = m->services[i];
		struct mg_msg r = { .hdr = { .type = MG_MSG_STATUS_SERVICE, .seq = seq } };
		struct mg_status_service *o = &r.status_service;

		o->level = (uint8_t)s->ps.level;
		o->enforce = (uint8_t)s->conf.enforce;
		o->escalation = (uint8_t)(s->high_noop && s->ps.escalation == MG_ESCALATION_HIGH
						  ? MG_ESCALATION_NONE
						  : s->ps.escalation);
		o->psi_mode = (uint8_t)(s->cg ? s->psi_mode : MG_PSI_ABSENT);
		o->gc_percent = s->last.directive.gc_percent;
		o->throttle = s->last.directive.throttle;
		o->clients = (uint32_t)s->n_clients;
		o->utilization = s->last.utilization == POLICY_UTIL_UNKNOWN ? 0 : s->last.utilization;
		o->some_avg10 = s->have_sample ? s->sample.psi.some.avg10 : 0;
		o->full_avg10 = s->have_sample ? s->sample.psi.full.avg10 : 0;
		o->budget = s->budget;
		o->working_set = s->have_sample ? s->sample.working_set : 0;
		o->released_total = s->released_total;
		snprintf(o->name, sizeof(o->name), "%s", s->conf.name);
		snprintf(o->cgroup, sizeof(o->cgroup), "%s", s->conf.cgroup);
		if (admin_send(c, &r, &skipped) < 0)
			return;
	}
	if (skipped)
		server_send_result(c, seq, MG_ERR_INTERNAL, "%zu services, %zu not shown (see the log)",
				   m->n_services, skipped);
	else
		server_send_result(c, seq, MG_ERR_OK, "%zu services", m->n_services);
}

static void admin_clients(struct manager *m, struct client *c, uint32_t seq, const char *service)
{
	size_t n = 0, skipped = 0;

	if (service[0] && !service_by_name(m, service)) {
		server_send_result(c, seq, MG_ERR_NO_SERVICE, "no service '%s'", service);
		return;
	}
	server_for_each(o, m->server) {
		const struct mclient *mc = o->data;
		struct mg_msg r = { .hdr = { .type = MG_MSG_CLIENT_INFO, .seq = seq } };
		struct mg_client_info *ci = &r.client_info;

		if (!mc || (service[0] && (!mc->svc || strcmp(mc->svc->conf.name, service))))
			continue;
		ci->client_id = o->id;
		ci->pid = (uint32_t)o->cred.pid;
		ci->uid = (uint32_t)o->cred.uid;
		ci->heap_sys = mc->report.heap_sys;
		ci->heap_inuse = mc->report.heap_inuse;
		ci->heap_released = mc->report.heap_released;
		ci->last_directive_seq = mc->last_seq;
		ci->last_level = mc->directive.level;
		ci->asked = mc->asked;
		ci->answered = mc->answered;
		ci->asked_bytes = mc->asked_bytes;
		ci->released_bytes = mc->released_bytes;
		ci->response_us = mc->answered ? (uint32_t)(mc->response_us_total / mc->answered) : 0;
		snprintf(ci->service, sizeof(ci->service), "%s", mc->svc ? mc->svc->conf.name : "");
		snprintf(ci->process, sizeof(ci->process), "%s", o->process);
		if (admin_send(c, &r, &skipped) < 0)
			return;
		n++;
	}
	if (skipped)
		server_send_result(c, seq, MG_ERR_INTERNAL, "%zu clients, %zu not shown (see the log)",
				   n - skipped, skipped);
	else
		server_send_result(c, seq, MG_ERR_OK, "%zu clients", n);
}

static void admin_release(struct manager *m, struct client *c, uint32_t seq,
			  const struct mg_release_req *req)
{
	struct service *s = service_by_name(m, req->service);
	struct mg_directive d;

	if (!s) {
		server_send_result(c, seq, MG_ERR_NO_SERVICE, "no service '%s'", req->service);
		return;
	}
	d = s->last.directive;
	d.release = req->bytes ? req->bytes : UINT64_MAX;
	d.deadline_ms = s->conf.release_deadline_ms;
	if (req->bytes) {
		service_direct(s, &d);
	} else {
		/* Everything: each client is asked for all it can give. */
		struct mclient **cl = calloc(s->n_clients ? s->n_clients : 1, sizeof(*cl));
		size_t n = s->n_clients;

		if (!cl) {
			server_send_result(c, seq, MG_ERR_INTERNAL, "out of memory");
			return;
		}
		memcpy(cl, s->clients, n * sizeof(*cl));
		for (size_t i = 0; i < n; i++) {
			struct mg_directive di = cl[i]->have_directive ? cl[i]->directive : d;

			di.release = UINT64_MAX;
			di.deadline_ms = d.deadline_ms;
			mclient_send(cl[i], &di);
		}
		free(cl);
	}
	log_service(LOG_NOTICE, s->conf.name, proto_level_name(s->ps.level),
		    util_ratio(s->last.utilization), "release",
		    "admin asked %zu client(s) to release %s", s->n_clients,
		    req->bytes ? "bytes" : "everything releasable");
	if (req->bytes)
		server_send_result(c, seq, MG_ERR_OK, "asked %zu client(s) of %s to release %" PRIu64
			   " bytes", s->n_clients, s->conf.name, req->bytes);
	else
		server_send_result(c, seq, MG_ERR_OK,
				   "asked %zu client(s) of %s to release everything releasable",
				   s->n_clients, s->conf.name);
}

static void admin_set_budget(struct manager *m, struct client *c, uint32_t seq,
			     const struct mg_set_budget *req)
{
	struct service *s = service_by_name(m, req->service);

	if (!s) {
		server_send_result(c, seq, MG_ERR_NO_SERVICE, "no service '%s'", req->service);
		return;
	}
	s->budget_override = req->budget;
	s->woke = true;
	manager_tick_now(m);
	log_service(LOG_NOTICE, s->conf.name, proto_level_name(s->ps.level),
		    util_ratio(s->last.utilization), "set-budget",
		    "budget set to %" PRIu64 " bytes at runtime (not persisted)", req->budget);
	server_send_result(c, seq, MG_ERR_OK,
			   "budget of %s set to %" PRIu64
			   " bytes until the next reload or restart (not saved to the config file)",
			   s->conf.name, req->budget);
}

static void on_admin(void *userdata, struct client *c, const struct mg_msg *msg)
{
	struct manager *m = userdata;
	uint32_t seq = msg->hdr.seq;
	int r;

	switch (msg->hdr.type) {
	case MG_MSG_STATUS:
		admin_status(m, c, seq);
		break;
	case MG_MSG_CLIENTS:
		admin_clients(m, c, seq, msg->clients.service);
		break;
	case MG_MSG_RELEASE:
		admin_release(m, c, seq, &msg->release);
		break;
	case MG_MSG_SET_BUDGET:
		admin_set_budget(m, c, seq, &msg->set_budget);
		break;
	case MG_MSG_RELOAD: {
		char problems[MG_TEXT_MAX + 1] = "";

		r = manager_reload(m, problems, sizeof(problems));
		if (r == -EINVAL)
			server_send_result(c, seq, MG_ERR_CONFIG,
					   "%s is broken; the running configuration stays:\n%s",
					   m->paths.config, problems);
		else if (r < 0)
			server_send_result(c, seq, MG_ERR_INTERNAL, "reload failed: %s",
					   strerror(-r));
		else
			server_send_result(c, seq, MG_ERR_OK, "reloaded %s: %zu services",
					   m->paths.config, m->n_services);
		break;
	}
	default:
		server_send_result(c, seq, MG_ERR_PROTOCOL, "unknown admin request");
		break;
	}
}

/*
 * The new client's WELCOME is out: send it the service's directive in
 * force, its share split by the same rule as every tick's.  The others'
 * shares move too; they hear theirs on the next tick, so that a crowd
 * registering at once costs one message each, not one per arrival.  The
 * state only: a demand was made of the clients that were there when it
 * was made, and a new client's first DIRECTIVE never demands bytes.
 */
static void on_welcomed(void *userdata, struct client *c)
{
	struct mclient *mc = c->data;
	struct mg_directive d;

	(void)userdata;
	if (!mc || !mc->svc)
		return;
	d = mc->svc->last.directive;
	d.release = 0;
	d.deadline_ms = 0;
	service_direct_to(mc->svc, &d, mc);
}

static const struct server_ops ops = {
	.hello = on_hello,
	.welcomed = on_welcomed,
	.report = on_report,
	.released = on_released,
	.admin = on_admin,
	.gone = on_gone,
};

/* --- life cycle ------------------------------------------------------------ */

/* Where a reload collects its problems for RELOAD's answer. */
struct problems {
	char *text;                      /* NULL: log only */
	size_t size, len;
};

/* Log one problem of a config file, and append it to a RELOAD's answer
 * as a line of its own (what does not fit is cut, the log has it all). */
static void report_problem(void *userdata, const char *file, unsigned line, const char *msg)
{
	struct problems *p = userdata;
	char where[32] = "";

	if (line)
		snprintf(where, sizeof(where), ":%u", line);
	log_error("%s%s: %s", file, where, msg);
	if (p && p->text && p->len + 1 < p->size) {
		int n = snprintf(p->text + p->len, p->size - p->len, "%s%s%s: %s",
				 p->len ? "\n" : "", file, where, msg);

		if (n > 0)
			p->len = p->len + (size_t)n < p->size ? p->len + (size_t)n : p->size - 1;
	}
}

static int manager_set_roots(struct manager *m)
{
	struct monitor_roots roots = { 0 };
	const char *v2;
	int r;

	r = monitor_discover(m->paths.mountinfo, &roots);
	if (r < 0 && !m->paths.cgroup_root && !m->conf->daemon.cgroup_root)
		return log_errno(r, "Failed to find the cgroup2 mount in %s: %m", m->paths.mountinfo);

	v2 = m->paths.cgroup_root ? m->paths.cgroup_root
	     : m->conf->daemon.cgroup_root ? m->conf->daemon.cgroup_root
					   : roots.v2;
	if (!v2) {
		monitor_roots_done(&roots);
		return log_errno(-ENOENT, "No cgroup2 hierarchy is mounted; set cgroup_root");
	}
	free(m->v2_root);
	free(m->v1_root);
	free(m->v2_mount);
	free(m->v1_mount);
	m->v2_root = strdup(v2);
	m->v1_root = m->paths.v1_memory_root ? strdup(m->paths.v1_memory_root)
		     : roots.v1_memory	     ? strdup(roots.v1_memory)
					     : NULL;
	m->v2_mount = roots.v2 ? strdup(roots.v2) : strdup(m->v2_root);
	m->v1_mount = roots.v1_memory ? strdup(roots.v1_memory)
		      : m->v1_root     ? strdup(m->v1_root)
				       : NULL;
	monitor_roots_done(&roots);
	if (!m->v2_root || !m->v2_mount)
		return log_errno(-ENOMEM, "Out of memory");
	log_info("cgroup2 root %s%s%s", m->v2_root, m->v1_root ? ", cgroup v1 memory root " : "",
		 m->v1_root ? m->v1_root : "");
	return 0;
}

static int services_from_conf(struct manager *m)
{
	for (size_t i = 0; i < m->conf->n_services; i++) {
		struct service *s;
		int r = service_new(m, &m->conf->services[i], /* implicit= */ false, &s);

		if (r < 0)
			return r;
		r = services_add(m, s);
		if (r < 0) {
			service_free(s);
			return r;
		}
		if (s->v1_dir && s->conf.enforce == MG_ENFORCE_HIGH)
			log_notice("%s: enforce=high is unavailable with the memory controller on "
				   "cgroup v1; notifying only", s->conf.name);
	}
	return 0;
}

int manager_new(struct mg_conf *conf, const struct manager_paths *paths, struct manager **ret)
{
	_cleanup_(manager_freep) struct manager *m = NULL;
	int r;

	m = calloc(1, sizeof(*m));
	if (!m) {
		conf_free(conf);
		return log_errno(-ENOMEM, "Out of memory");
	}
	m->conf = conf;
	m->paths = *paths;
	policy_params_init(&m->params);

	r = sd_event_default(&m->event);
	if (r < 0)
		return log_errno(r, "Failed to create the event loop: %m");
	r = manager_set_roots(m);
	if (r < 0)
		return r;
	{
		_cleanup_free_ char *dir = strdup(conf->daemon.socket);
		char *slash = dir ? strrchr(dir, '/') : NULL;

		if (slash && asprintf(&m->state_path, "%s.escalations", conf->daemon.socket) < 0)
			m->state_path = NULL;
	}
	r = services_from_conf(m);
	if (r < 0)
		return log_errno(r, "Failed to set up services: %m");
	if (m->state_path)
		manager_restore_leftovers(m);
	*ret = TAKE_PTR(m);
	return 0;
}

static int on_signal(sd_event_source *src, const struct signalfd_siginfo *si, void *userdata)
{
	struct manager *m = userdata;

	if (si->ssi_signo == SIGHUP) {
		sd_notify(false, "RELOADING=1");
		manager_reload(m, NULL, 0);
		sd_notify(false, "READY=1");
		return 0;
	}
	log_info("Received %s, stopping", strsignal((int)si->ssi_signo));
	sd_notify(false, "STOPPING=1");
	return sd_event_exit(sd_event_source_get_event(src), 0);
}

static void set_limits(struct manager *m, const struct mg_conf *conf)
{
	server_set_limits(m->server, &(struct server_limits){
		.max_connections = conf->daemon.max_connections,
		.max_connections_per_uid = conf->daemon.max_connections_per_uid,
		.admin_reserved_connections = conf->daemon.admin_reserved_connections,
	});
}

/* The gid of admin_group, or (gid_t)-1 (root only). */
static gid_t admin_gid(const struct mg_conf *conf)
{
	struct group *g;

	if (!conf->daemon.admin_group[0])
		return (gid_t)-1;
	g = getgrnam(conf->daemon.admin_group);
	if (!g) {
		log_warning("admin_group '%s' does not exist; admin requests are for root only",
			    conf->daemon.admin_group);
		return (gid_t)-1;
	}
	return g->gr_gid;
}

int manager_start(struct manager *m, int listen_fd)
{
	sigset_t ss;
	int r;

	r = server_new(m->event, listen_fd, admin_gid(m->conf), &ops, m, &m->server);
	if (r < 0)
		return log_errno(r, "Failed to serve the socket: %m");
	set_limits(m, m->conf);

	/* main() blocked them before listening; block again for callers
	 * that did not (sd_event_add_signal needs them blocked). */
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &ss, NULL) < 0)
		return log_errno(errno, "Failed to block signals: %m");
	signal(SIGPIPE, SIG_IGN);
	r = sd_event_add_signal(m->event, &m->sig_term, SIGTERM, on_signal, m);
	if (r >= 0)
		r = sd_event_add_signal(m->event, &m->sig_int, SIGINT, on_signal, m);
	if (r >= 0)
		r = sd_event_add_signal(m->event, &m->sig_hup, SIGHUP, on_signal, m);
	if (r < 0)
		return log_errno(r, "Failed to watch signals: %m");

	r = sd_event_add_time_relative(m->event, &m->tick, CLOCK_MONOTONIC, 0, 1000, on_tick, m);
	if (r < 0)
		return log_errno(r, "Failed to arm the tick: %m");
	r = sd_event_set_watchdog(m->event, true);
	if (r < 0)
		log_warning_errno(r, "Failed to enable the watchdog, ignoring: %m");

	m->tick_all = true;
	manager_tick_now(m);
	sd_notify(false, "READY=1");
	log_info("memguardd %s ready: %zu services", PACKAGE_VERSION, m->n_services);
	return 0;
}

int manager_run(struct manager *m)
{
	int r = sd_event_loop(m->event);

	if (r < 0)
		return log_errno(r, "Event loop failed: %m");
	return r;
}

/* Apply a new configuration: keep services by name and cgroup (their
 * clients, state and escalations), add new ones, drop removed ones, then
 * re-map every client.  All allocation happens before anything changes, so
 * a failure leaves the running configuration whole. */
static int manager_apply(struct manager *m, struct mg_conf *conf)
{
	size_t n_new = conf->n_services, n = 0;
	_cleanup_free_ struct service **list = NULL;
	_cleanup_free_ ssize_t *keep = NULL;

	list = calloc(n_new + m->n_services + 1, sizeof(*list));
	keep = calloc(n_new + 1, sizeof(*keep));
	if (!list || !keep) {
		conf_free(conf);
		return log_errno(-ENOMEM, "Failed to apply the new configuration: %m");
	}
	for (size_t i = 0; i < n_new; i++) {
		const struct conf_service *cs = &conf->services[i];
		int r;

		keep[i] = -1;
		for (size_t j = 0; j < m->n_services; j++) {
			const struct service *o = m->services[j];

			if (!o->implicit && strcmp(o->conf.name, cs->name) == 0 &&
			    strcmp(o->conf.cgroup, cs->cgroup) == 0)
				keep[i] = (ssize_t)j;
		}
		if (keep[i] >= 0)
			continue;
		r = service_new(m, cs, /* implicit= */ false, &list[i]);
		if (r < 0) {
			for (size_t k = 0; k < i; k++)
				service_free(list[k]);
			conf_free(conf);
			return log_errno(r, "Failed to apply the new configuration: %m");
		}
	}

	/* From here on nothing fails. */
	for (size_t i = 0; i < n_new; i++) {
		if (keep[i] >= 0) {
			struct service *s = m->services[keep[i]];
			char *name = s->conf.name, *cgroup = s->conf.cgroup;

			s->conf = conf->services[i];
			s->conf.name = name;
			s->conf.cgroup = cgroup;
			/* A runtime budget lasts until the next reload, as
			 * SET_BUDGET's answer says. */
			s->budget_override = 0;
			list[i] = s;
			m->services[keep[i]] = NULL;
		}
		n++;
	}
	for (size_t j = 0; j < m->n_services; j++) {
		struct service *o = m->services[j];

		if (!o)
			continue;
		/* Implicit services live on only while no service is configured. */
		if (o->implicit && conf->n_services == 0) {
			list[n++] = o;
			continue;
		}
		log_info("%s: service removed", o->conf.name);
		service_free(o);
	}
	free(m->services);
	m->services = TAKE_PTR(list);
	m->n_services = n;
	manager_save_escalations(m);
	conf_free(m->conf);
	m->conf = conf;

	/* Every client goes to the service its cgroup now belongs to. */
	server_for_each(c, m->server) {
		struct mclient *mc = c->data;
		struct service *s;

		if (!mc)
			continue;
		s = service_for(m, mc);
		if (s && s == mc->svc)
			continue;
		service_detach(mc);
		if (s && service_attach(s, mc) == 0)
			continue;
		/* Its service is gone: nothing asks it to hold back now.
		 * (Sent only when its directive differs from NORMAL.) */
		mclient_send_normal(mc);
	}
	m->tick_all = true;
	manager_tick_now(m);
	return 0;
}

int manager_reload(struct manager *m, char *problems, size_t size)
{
	struct problems p = { .text = problems, .size = size };
	struct mg_conf *conf = NULL;
	int r;

	if (problems && size)
		problems[0] = 0;
	if (!m->paths.config)
		return 0;
	r = conf_load(m->paths.config, report_problem, &p, &conf);
	if (r == -ENOENT)
		r = conf_new_default(&conf);
	if (r == -EINVAL) {
		log_error("%s is broken; keeping the running configuration", m->paths.config);
		return r;
	}
	if (r < 0)
		return log_errno(r, "Failed to read %s, keeping the running configuration: %m",
				 m->paths.config);
	/* The daemon section's socket and roots apply at the next start;
	 * its log level and admin group at once (--log-level wins). */
	log_set_max_level(m->paths.log_level >= 0 ? m->paths.log_level : conf->daemon.log_level);
	server_set_admin_gid(m->server, admin_gid(conf));
	set_limits(m, conf);
	r = manager_apply(m, conf);
	if (r < 0)
		return r;
	log_info("Reloaded %s: %zu services", m->paths.config, m->n_services);
	return 0;
}

struct manager *manager_free(struct manager *m)
{
	if (!m)
		return NULL;
	m->server = server_free(m->server);
	for (size_t i = 0; i < m->n_services; i++)
		service_restore(m->services[i]);
	manager_save_escalations(m);
	for (size_t i = 0; i < m->n_services; i++)
		service_free(m->services[i]);
	free(m->services);
	free(m->state_path);
	sd_event_source_disable_unref(m->tick);
	sd_event_source_disable_unref(m->sig_term);
	sd_event_source_disable_unref(m->sig_int);
	sd_event_source_disable_unref(m->sig_hup);
	sd_event_unref(m->event);
	conf_free(m->conf);
	free(m->v2_root);
	free(m->v1_root);
	free(m->v2_mount);
	free(m->v1_mount);
	free(m);
	return NULL;
}
