/* SPDX-License-Identifier: MIT */
/*
 * One service: watch its cgroup, sample it, decide, direct its clients,
 * escalate and restore, and the crash record of what it wrote.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "board.h"
#include "cgrp.h"
#include "log.h"
#include "manager-internal.h"
#include "service.h"

#define PSI_WINDOW_US 1000000           /* us; rounded to 2 s without CAP_SYS_RESOURCE */

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

/* --- watching ------------------------------------------------------------ */

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

/* --- the crash record ---------------------------------------------------- */

/*
 * The memory.high values the daemon replaced, in a file beside the socket
 * named after it (SOCKET.escalations: two daemons with sockets in one
 * directory keep a record each), so a daemon that was killed (crash,
 * watchdog, SIGKILL) can put them back when it starts again.  Its first
 * line names the socket.  Rewritten whole on every change: a new file,
 * made with O_EXCL|O_NOFOLLOW (nothing planted at its name is followed or
 * reused), renamed into place.
 */
void escalations_save(const char *path, const char *socket, struct service *const *services,
		      size_t n_services)
{
	_cleanup_free_ char *tmp = NULL;
	FILE *f;
	size_t n = 0;
	int fd;

	if (!path || asprintf(&tmp, "%s.new", path) < 0)
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
	fprintf(f, "socket %s\n", socket);
	for (size_t i = 0; i < n_services; i++) {
		const struct service *s = services[i];

		if (!s->saved_high_valid)
			continue;
		if (s->saved_high == MONITOR_UNLIMITED)
			fprintf(f, "max %s\n", s->v2_dir);
		else
			fprintf(f, "%" PRIu64 " %s\n", s->saved_high, s->v2_dir);
		n++;
	}
	if (fclose(f) != 0 || (n > 0 && rename(tmp, path) < 0)) {
		log_warning_errno(errno, "Failed to write %s, ignoring: %m", path);
		unlink(tmp);
		return;
	}
	if (n == 0) {
		unlink(tmp);
		unlink(path);
	}
}

/* No sign, no space, no 0. */
bool escalations_parse_high(const char *s, uint64_t *ret)
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
static const struct service *service_by_dir(struct service *const *services, size_t n,
					    const char *dir)
{
	for (size_t i = 0; i < n; i++)
		if (!services[i]->implicit && strcmp(services[i]->v2_dir, dir) == 0)
			return services[i];
	return NULL;
}

/*
 * Put back what a killed predecessor on the same socket left in
 * memory.high.  The record is trusted only as far as it must be: a regular
 * file of ours that nobody else may write, naming our socket; and each
 * entry only for the cgroup of a configured service, below the cgroup
 * root, with a value that parses.  Anything else is logged and skipped.
 */
void escalations_restore(const char *path, const char *socket, const char *v2_root,
			 struct service *const *services, size_t n)
{
	_cleanup_fclose_ FILE *f = NULL;
	char line[MG_PATH_MAX + 4096];
	struct stat st;
	int fd;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		if (errno != ENOENT)
			log_warning_errno(errno, "Failed to open %s, ignoring it: %m", path);
		return;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & 022)) {
		log_warning("%s is not a regular file of ours that only we may write; ignoring it",
			    path);
		close(fd);
		return;
	}
	f = fdopen(fd, "re");
	if (!f) {
		close(fd);
		return;
	}
	if (!fgets(line, sizeof(line), f) || strncmp(line, "socket ", 7) != 0 ||
	    strcspn(line + 7, "\n") != strlen(socket) ||
	    strncmp(line + 7, socket, strlen(socket)) != 0) {
		log_warning("%s is not the record of socket %s; ignoring it", path,
			    socket);
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
		if (!path_within(dir, v2_root) || strstr(dir, "/..") ||
		    !service_by_dir(services, n, dir) || !escalations_parse_high(line, &v)) {
			log_warning("%s: entry '%s %s' is not a configured service's cgroup with a "
				    "memory.high value; skipped", path, line, dir);
			continue;
		}
		r = cgrp_write_high(dir, v);
		if (r < 0)
			log_warning_errno(r, "Failed to put back memory.high of %s, ignoring: %m", dir);
		else
			log_notice("memory.high of %s put back to %s, as a previous memguardd left it",
				   dir, line);
	}
	unlink(path);
}

/* --- life cycle ----------------------------------------------------------- */

void service_restore(struct service *s)
{
	int r;

	/* After a kill, memory.high = budget from the step before is still
	 * in force. */
	if (s->ps.escalation == MG_ESCALATION_NONE || !s->saved_high_valid)
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

struct service *service_free(struct service *s)
{
	if (!s)
		return NULL;
	service_restore(s);
	service_unwatch(s);
	for (size_t i = 0; i < s->n_clients; i++) {
		s->clients[i]->svc = NULL;
		s->clients[i]->on_board = false;
	}
	board_free(s->board);
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

int service_new(struct manager *m, const struct conf_service *conf, bool implicit,
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

int services_add_new(struct manager *m, const struct conf_service *conf, bool implicit,
		     struct service **ret)
{
	struct service *s;
	int r;

	r = service_new(m, conf, implicit, &s);
	if (r < 0)
		return r;
	r = services_add(m, s);
	if (r < 0) {
		service_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

struct service *service_by_name(struct manager *m, const char *name)
{
	for (size_t i = 0; i < m->n_services; i++)
		if (strcmp(m->services[i]->conf.name, name) == 0)
			return m->services[i];
	return NULL;
}

/* The service whose cgroup holds the client, deepest first. */
struct service *service_for(struct manager *m, const struct mclient *mc)
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

int service_attach(struct service *s, struct mclient *mc)
{
	struct mclient **n = realloc(s->clients, (s->n_clients + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	s->clients = n;
	s->clients[s->n_clients++] = mc;
	mc->svc = s;
	return 0;
}

void service_detach(struct mclient *mc)
{
	struct service *s = mc->svc;

	if (!s)
		return;
	/* A client moved to another service (a reload) gets its directives
	 * by message from then on: BOARD is sent once, after WELCOME. */
	if (mc->on_board)
		board_put(s->board, mc->slot);
	mc->on_board = false;
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

void service_resolve_budget(struct service *s)
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

/* Bookkeeping of a directive given to `mc` under `seq`. */
static void mclient_given(struct mclient *mc, const struct mg_directive *d, uint32_t seq)
{
	mc->directive = *d;
	mc->have_directive = true;
	mc->last_seq = seq;
}

/* Put the state of `d` into `mc`'s board slot under a fresh seq; the
 * service's board is due a wake-up. */
static void mclient_board_write(struct mclient *mc, const struct mg_directive *d)
{
	uint32_t seq = server_seq_next(mc->c);

	board_write(mc->svc->board, mc->slot, d, mc->c->id, seq);
	mc->svc->board_dirty = true;
	if (d->release == 0)
		mclient_given(mc, d, seq);
}

/* `d` in a DIRECTIVE. */
static int mclient_send_message(struct mclient *mc, const struct mg_directive *d)
{
	struct mg_msg msg = { .hdr = { .type = MG_MSG_DIRECTIVE } };
	int r;

	msg.directive = *d;
	r = server_send(mc->c, &msg);
	if (r < 0)
		return r;
	mclient_given(mc, d, msg.hdr.seq);
	if (d->release > 0) {
		mc->pending_seq = msg.hdr.seq;
		mc->pending_usec = now_usec();
		mc->asked++;
		mc->asked_bytes = add_sat(mc->asked_bytes,
						 d->release == UINT64_MAX ? 0 : d->release);
	}
	return 0;
}

int mclient_send(struct mclient *mc, const struct mg_directive *d)
{
	if (mc->on_board)
		mclient_board_write(mc, d);
	if (mc->on_board && d->release == 0)
		return 0;
	return mclient_send_message(mc, d);
}

int service_board_take(struct service *s, struct mclient *mc)
{
	int r;

	if (!s->board) {
		r = board_new(s->m->conf->daemon.max_connections, &s->board);
		if (r < 0) {
			if (!s->board_failed_said)
				log_warning_errno(r, "%s: cannot make a directive board, its clients "
						  "get every directive by message: %m", s->conf.name);
			s->board_failed_said = true;
			return r;
		}
	}
	r = board_take(s->board, &mc->slot);
	if (r < 0)
		return r;
	mc->on_board = true;
	return 0;
}

int service_board_send(struct service *s, struct mclient *mc)
{
	struct mg_msg msg = { .hdr = { .type = MG_MSG_BOARD } };
	int fds[2], r;

	msg.board.slot = mc->slot;
	msg.board.slots = board_slots(s->board);
	fds[0] = board_memfd(s->board);
	fds[1] = board_wake_fd(s->board);
	r = server_send_fds(mc->c, &msg, fds, 2);
	if (r < 0) {
		board_put(s->board, mc->slot);
		mc->on_board = false;
		mc->have_directive = false;
	}
	return r;
}

void service_board_wake(struct service *s)
{
	int r;

	if (!s->board_dirty)
		return;
	s->board_dirty = false;
	r = board_wake(s->board);
	if (r < 0)
		log_warning_errno(r, "%s: failed to wake the directive board's clients: %m",
				  s->conf.name);
}

void mclient_send_normal(struct mclient *mc)
{
	struct mg_directive d = { .level = MG_LEVEL_NORMAL, .gc_percent = MG_GC_DEFAULT };

	if (mc->have_directive && !policy_directive_changed(&mc->directive, &d))
		return;
	mclient_send(mc, &d);
}

/*
 * Split the service's directive over its clients and give each what
 * changed: to every client, or to `only` (the others hear their new share
 * on the next tick).  The state first, into every board slot, and one
 * wake-up; then the messages (release demands, clients without a board),
 * so that a level change reaches a board's clients before the first
 * send().
 */
void service_direct_to(struct service *s, const struct mg_directive *d,
			      const struct mclient *only)
{
	_cleanup_free_ struct mg_report *reports = NULL;
	_cleanup_free_ struct mg_directive *out = NULL;
	_cleanup_free_ struct mclient **cl = NULL;
	_cleanup_free_ bool *due = NULL;
	size_t n = s->n_clients;

	if (n == 0)
		return;
	reports = calloc(n, sizeof(*reports));
	out = calloc(n, sizeof(*out));
	cl = malloc(n * sizeof(*cl));
	due = calloc(n, sizeof(*due));
	if (!reports || !out || !cl || !due) {
		log_error("%s: out of memory splitting a directive", s->conf.name);
		return;
	}
	for (size_t i = 0; i < n; i++)
		service_client_report(s, s->clients[i], &reports[i]);
	if (policy_client_directives(d, reports, n, out) < 0) {
		log_error("%s: out of memory splitting a directive", s->conf.name);
		return;
	}
	/* Sending may drop a client (and shrink s->clients): walk a copy. */
	memcpy(cl, s->clients, n * sizeof(*cl));
	for (size_t i = 0; i < n; i++) {
		due[i] = (!only || cl[i] == only) &&
			 (!cl[i]->have_directive ||
			  policy_directive_changed(&cl[i]->directive, &out[i]));
		if (due[i] && cl[i]->on_board)
			mclient_board_write(cl[i], &out[i]);
	}
	/* A newcomer finds its first directive in its slot when it maps the
	 * board: nobody else need wake. */
	if (!only)
		service_board_wake(s);
	for (size_t i = 0; i < n; i++)
		if (due[i] && (!cl[i]->on_board || out[i].release > 0))
			mclient_send_message(cl[i], &out[i]);
}

void service_direct(struct service *s, const struct mg_directive *d)
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

/*
 * memory.high to the budget, its old value recorded first.  Returns 1 when
 * the step is taken (or passed over on v1 so that the kill stays
 * possible), 0 when it cannot be (v1, enforce=high: notify only), or
 * -errno.
 */
static int escalate_high(struct service *s, const char *lvl, double u)
{
	int r;

	if (!s->sample.high_known) {
		/* cgroup v1 has no memory.high.  For enforce=kill the step is
		 * passed over (recorded, nothing written) so the kill, which
		 * v1 can do, stays possible after a further deadline;
		 * enforce=high can only notify. */
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
		return 1;
	}
	s->high_noop = false;
	if (s->sample.high <= s->budget) {
		/* At the budget: our own value, left by a predecessor that
		 * could not put it back; recorded as the original, it would
		 * become permanent.  Under it: a limit of the cgroup's own,
		 * tighter than the budget, which escalating must not loosen.
		 * Keep what we know, if anything. */
		if (!s->saved_high_valid)
			log_service(LOG_NOTICE, s->conf.name, lvl, u, "escalate",
				    "memory.high %" PRIu64 " is already at or under the budget %"
				    PRIu64 "; nothing written, nothing to put back later",
				    s->sample.high, s->budget);
		return 1;
	}
	s->saved_high = s->sample.high;
	s->saved_high_valid = true;
	/* Recorded before the write: a crash right after it still leaves the
	 * old value to put back. */
	manager_save_escalations(s->m);
	r = cgrp_write_high(s->v2_dir, s->budget);
	if (r < 0) {
		s->saved_high_valid = false;
		manager_save_escalations(s->m);
		return escalate_failed(s, r, "write memory.high");
	}
	s->sample.high = s->budget;
	log_service(LOG_WARNING, s->conf.name, lvl, u, "escalate",
		    "memory.high set to the budget %" PRIu64 " (was %s): working set %" PRIu64
		    " still at %s past the release deadline",
		    s->budget, s->saved_high == MONITOR_UNLIMITED ? "max" : "a limit",
		    s->sample.working_set, lvl);
	return 1;
}

/*
 * memory.high in force follows the budget: a budget changed by set-budget
 * or a reload while the escalation holds would otherwise leave the old
 * budget written until the level falls to NORMAL.  Only a value this
 * daemon wrote (and will put back) is rewritten, and never above the value
 * from before: escalating only ever lowers memory.high.
 */
static void escalate_follow_budget(struct service *s)
{
	const char *lvl = proto_level_name(s->last.level);
	uint64_t was = s->sample.high, to;
	int r;

	if (s->ps.escalation != MG_ESCALATION_HIGH || !s->saved_high_valid ||
	    !s->sample.high_known || s->budget == 0)
		return;
	to = s->budget < s->saved_high ? s->budget : s->saved_high;
	if (was == to)
		return;
	r = cgrp_write_high(s->v2_dir, to);
	if (r < 0) {
		escalate_failed(s, r, "write memory.high");
		return;
	}
	s->sample.high = to;
	log_service(LOG_NOTICE, s->conf.name, lvl, util_ratio(s->last.utilization), "escalate",
		    "memory.high follows the budget %" PRIu64 ": %" PRIu64 " (was %" PRIu64 ")",
		    s->budget, to, was);
}

/* memory.high back to what it was before escalate_high().  0 or -errno. */
static int escalate_restore(struct service *s, const char *lvl, double u)
{
	int r;

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
	return 0;
}

/* Kill the cgroup and its subtree.  0 or -errno. */
static int escalate_kill(struct service *s, const char *lvl, double u)
{
	bool v1 = s->v1_dir && !s->sample.high_known, frozen = false;
	int r;

	/* v1 has no cgroup.kill: the subtree is walked, frozen through its
	 * cgroup2 mirror where that has cgroup.freeze. */
	r = cgrp_kill(v1 ? s->v1_dir : s->v2_dir, v1 ? s->v2_dir : NULL, &frozen);
	if (r < 0)
		return escalate_failed(s, r, "kill the cgroup");
	if (v1)
		log_service(LOG_CRIT, s->conf.name, lvl, u, "kill",
			    "killed %d process(es) of the cgroup and its subtree%s: working "
			    "set %" PRIu64 " above budget %" PRIu64 " past the deadline "
			    "while memory.events high/max/oom grew", r,
			    frozen ? " (frozen first)" : "", s->sample.working_set, s->budget);
	else
		log_service(LOG_CRIT, s->conf.name, lvl, u, "kill",
			    "killed the cgroup and its subtree: working set %" PRIu64
			    " above budget %" PRIu64 " past the deadline while "
			    "memory.events high/max/oom grew", s->sample.working_set,
			    s->budget);
	return 0;
}

/* Take the policy's escalation step `a`; the policy hears of it only when
 * it was taken, and proposes it again on the next tick otherwise. */
static int service_escalate(struct service *s, enum policy_action a, uint64_t now_ms)
{
	const char *lvl = proto_level_name(s->last.level);
	double u = util_ratio(s->last.utilization);
	int r;

	switch (a) {
	case POLICY_ACTION_HIGH:
		r = escalate_high(s, lvl, u);
		if (r <= 0)
			return r;
		break;
	case POLICY_ACTION_RESTORE:
		r = escalate_restore(s, lvl, u);
		if (r < 0)
			return r;
		break;
	case POLICY_ACTION_KILL:
		r = escalate_kill(s, lvl, u);
		if (r < 0)
			return r;
		break;
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

void service_sample(struct service *s)
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

/*
 * Sum what the clients could release into `in`, and estimate the working
 * set that is not in their heaps (code, stacks, page cache) into
 * in->unowned and s->unowned.
 */
static void service_estimate_unowned(struct service *s, struct policy_input *in)
{
	uint64_t owned = 0;
	bool all_reported = s->n_clients > 0;

	for (size_t i = 0; i < s->n_clients; i++) {
		struct mg_report rep;
		uint64_t r;

		service_client_report(s, s->clients[i], &rep);
		r = policy_releasable(&rep);
		in->releasable = add_sat(in->releasable, r);
		if (rep.heap_sys == 0)
			all_reported = false;
		else if (rep.heap_sys > rep.heap_released)
			owned += rep.heap_sys - rep.heap_released;
	}
	/* Until every client has reported, all of it counts as theirs.
	 * Reports are up to a second old: while the heaps grow, the
	 * difference overstates what is not theirs, so the estimate falls at
	 * once but rises by at most 1 % of the budget a decision (code,
	 * stacks and page cache move slowly), from 0 when the service's first
	 * clients report. */
	if (all_reported) {
		uint64_t est = in->working_set > owned ? in->working_set - owned : 0;
		uint64_t step = s->budget / 100;

		if (est > s->unowned && est - s->unowned > step)
			est = s->unowned + step;
		s->unowned = est;
		in->unowned = est;
	} else if (s->n_clients == 0)
		s->unowned = 0;
}

void service_decide(struct service *s, uint64_t now_ms, bool probe)
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
	in.tick_ms = s->m->conf->daemon.tick_ms;
	in.working_set = s->sample.working_set;
	in.budget = s->budget;
	in.some_avg10 = s->sample.psi.some.avg10;
	in.full_avg10 = s->sample.psi.full.avg10;
	in.events.high = s->sample.events.high;
	in.events.max = s->sample.events.max;
	in.events.oom = s->sample.events.oom + s->sample.events.oom_kill;
	service_estimate_unowned(s, &in);
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
	escalate_follow_budget(s);

	service_direct(s, &d.directive);
}

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
void service_arm_thresholds(struct service *s)
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
void service_arm_probe(struct service *s, uint64_t now_us)
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

/*
 * POLLERR on a PSI trigger: the cgroup was removed, or only its PSI was
 * switched off (0 to cgroup.pressure).  The trigger is gone either way;
 * the tick's read of the held files tells which, and a live cgroup must
 * not be taken for gone (with the memory.high to put back forgotten).
 */
static int on_psi(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct service *s = userdata;

	if (revents & EPOLLERR) {
		s->psi_src = sd_event_source_disable_unref(s->psi_src);
		close(s->psi_fd);
		s->psi_fd = -1;
		s->psi_mode = MG_PSI_POLLING;
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

/* --- implicit services ---------------------------------------------------- */

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

int service_new_implicit(struct manager *m, const char *dir, const char *root,
			 struct service **ret)
{
	struct conf_service conf;
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

	r = services_add_new(m, &conf, /* implicit= */ true, &s);
	if (r < 0)
		return r;
	service_sample(s);
	service_resolve_budget(s);
	log_info("%s: implicit service for a client's cgroup (no service configured), "
		 "budget %" PRIu64 " from its memory.high or memory.max, notify only",
		 s->conf.name, s->budget);
	*ret = s;
	return 0;
}

