/* SPDX-License-Identifier: MIT */
/*
 * The admin requests: STATUS, CLIENTS, RELEASE, SET_BUDGET and RELOAD,
 * from peers the server found to be root or of admin_group.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "manager-internal.h"
#include "service.h"

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
		service_board_wake(s);
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

void admin_request(struct manager *m, struct client *c, const struct mg_msg *msg)
{
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

