/* SPDX-License-Identifier: MIT */
/*
 * The manager: the loop (tick, signals, watchdog), the clients' messages
 * (HELLO, REPORT, RELEASED, their going), squeezing services under host
 * pressure, and reload.  One service's work is in service.c, the admin
 * requests in admin.c.
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "cgrp.h"
#include "log.h"
#include "manager-internal.h"
#include "service.h"

void manager_save_escalations(struct manager *m)
{
	escalations_save(m->state_path, m->conf->daemon.socket, m->services, m->n_services);
}

/* --- the tick ------------------------------------------------------------ */

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

size_t manager_n_clients(struct manager *m)
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

static void manager_collect_implicit(struct manager *m);

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
 * above NORMAL or escalated, has no sample yet, or its own tick period is
 * up (within half a fast tick); a calm service is not read again because
 * another one woke the loop or holds it at the fast tick.  m->tick_all:
 * every service (start, reload).
 */
static bool service_due(const struct service *s, uint64_t now)
{
	uint64_t period = s->m->conf->daemon.tick_ms * 1000ULL;

	return s->m->tick_all || s->woke || !s->have_sample || s->ps.level > MG_LEVEL_NORMAL ||
	       s->ps.escalation != MG_ESCALATION_NONE ||
	       now - s->sampled_usec + FAST_TICK_MS * 500ULL >= period;
}

void manager_tick_now(struct manager *m)
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

/* --- clients --------------------------------------------------------------- */

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

/*
 * The peer's cgroup directories into mc->v2 and mc->v1.  They are read
 * from /proc/PID: only while PID is still the peer that connected, checked
 * before and after (a peer can pass its socket on and exit, and its pid
 * be given to another process).  Returns MG_ERR_OK or the refusal's code,
 * with its text.
 */
static int hello_peer_dirs(struct manager *m, struct client *c, struct mclient *mc,
			   char text[MG_TEXT_MAX + 1])
{
	int r;

	r = server_peer_check(c);
	if (r >= 0)
		r = peer_dirs(m, c->cred.pid, mc);
	if (r >= 0)
		r = server_peer_check(c);
	if (r == -ESRCH) {
		log_notice("Client %" PRIu64 ": the process %d that connected is gone or was "
			   "replaced; HELLO refused", c->id, (int)c->cred.pid);
		snprintf(text, MG_TEXT_MAX + 1,
			 "the process that connected (pid %d) is gone or was replaced",
			 (int)c->cred.pid);
		return MG_ERR_PROTOCOL;
	}
	if (r < 0) {
		snprintf(text, MG_TEXT_MAX + 1, "cannot read the cgroup of pid %d: %s",
			 (int)c->cred.pid, strerror(-r));
		return MG_ERR_INTERNAL;
	}
	return MG_ERR_OK;
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
	r = hello_peer_dirs(m, c, mc, text);
	if (r != MG_ERR_OK) {
		free(mc);
		return r;
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
		r = service_new_implicit(m, mc->v2[0] ? mc->v2 : mc->v1,
					 mc->v2[0] ? m->v2_root : m->v1_root, &s);
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

/*
 * The new client's WELCOME is out: send it the service's directive in
 * force, its share split by the same rule as every tick's.  The others'
 * shares move too; they hear theirs on the next tick, so that a crowd
 * registering at once costs one message each, not one per arrival.  The
 * state only: a demand was made of the clients that were there when it
 * was made, and a new client's first DIRECTIVE never demands bytes.  A
 * client that can take a board gets that directive in its slot, then
 * BOARD (or, when BOARD cannot go, the DIRECTIVE after all).
 */
static void on_welcomed(void *userdata, struct client *c)
{
	struct mclient *mc = c->data;
	struct service *s;
	struct mg_directive d;
	const char *via;
	bool board;

	(void)userdata;
	if (!mc || !mc->svc)
		return;
	s = mc->svc;
	board = (c->capabilities & MG_CAP_BOARD) && service_board_take(s, mc) == 0;
	d = s->last.directive;
	d.release = 0;
	d.deadline_ms = 0;
	service_direct_to(s, &d, mc);
	if (board && !c->dead && service_board_send(s, mc) < 0) {
		board = false;
		service_direct_to(s, &d, mc);
	}
	/* A send may have dropped it (and freed mc). */
	if (c->dead)
		return;
	via = board ? "on the service's board" : "by message";
	log_service(LOG_INFO, s->conf.name, proto_level_name(s->ps.level),
		    util_ratio(s->last.utilization), "register",
		    "client %" PRIu64 " registered (pid %d, %s), directives %s", c->id,
		    (int)c->cred.pid, c->process[0] ? c->process : "unnamed", via);
}

static void on_admin(void *userdata, struct client *c, const struct mg_msg *msg)
{
	admin_request(userdata, c, msg);
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
		int r = services_add_new(m, &m->conf->services[i], /* implicit= */ false, &s);

		if (r < 0)
			return r;
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
		escalations_restore(m->state_path, conf->daemon.socket, m->v2_root, m->services,
				    m->n_services);
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

/* Every client goes to the service its cgroup now belongs to. */
static void manager_remap_clients(struct manager *m)
{
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
}

/* Move `*a` into `*b` and `*b` into `*a`. */
static void swap_str(char **a, char **b)
{
	char *t = *a;

	*a = *b;
	*b = t;
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
	/* The socket, its group and the cgroup root apply at the next start:
	 * keep those the daemon runs with (--socket's, say), as the record of
	 * escalations names the socket and a restart on it must trust it. */
	swap_str(&conf->daemon.socket, &m->conf->daemon.socket);
	swap_str(&conf->daemon.socket_group, &m->conf->daemon.socket_group);
	swap_str(&conf->daemon.cgroup_root, &m->conf->daemon.cgroup_root);
	conf_free(m->conf);
	m->conf = conf;
	manager_save_escalations(m);

	manager_remap_clients(m);
	m->tick_all = true;
	manager_tick_now(m);
	return 0;
}

int manager_load_config(const char *path, bool required, char *problems, size_t size,
			struct mg_conf **ret)
{
	struct problems p = { .text = problems, .size = size };

	if (problems && size)
		problems[0] = 0;
	return conf_load_or_default(path, required, report_problem, &p, ret);
}

int manager_reload(struct manager *m, char *problems, size_t size)
{
	struct mg_conf *conf = NULL;
	int r;

	if (problems && size)
		problems[0] = 0;
	if (!m->paths.config)
		return 0;
	r = manager_load_config(m->paths.config, /* required= */ false, problems, size, &conf);
	if (r == -EINVAL) {
		log_error("%s is broken; keeping the running configuration", m->paths.config);
		return r;
	}
	if (r < 0)
		return log_errno(r, "Failed to read %s, keeping the running configuration: %m",
				 m->paths.config);
	r = manager_apply(m, conf);
	if (r < 0)
		return r;
	/* Only once it is applied, so that a failure changes nothing: the
	 * log level (--log-level wins), the admin group and the limits take
	 * effect at once; the socket and the roots at the next start. */
	log_set_max_level(m->paths.log_level >= 0 ? m->paths.log_level : m->conf->daemon.log_level);
	server_set_admin_gid(m->server, admin_gid(m->conf));
	set_limits(m, m->conf);
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

