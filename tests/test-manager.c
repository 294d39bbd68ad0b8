/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/manager.c: the clients' messages (HELLO, REPORT,
 * RELEASED, a malformed one) and reload, against a manager in this
 * process (tests/manager-fixture.h) on a fixture tree: web (100 MiB) and
 * batch (50 MiB) with 10 MiB in use each, and "other", a cgroup that no
 * service names.  The test process is every peer; its /proc entry says
 * which cgroup it is in at each HELLO.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/service.h"
#include "tests/manager-fixture.h"

#define MiB FIXTURE_MiB

static const char *const cgroups[] = { "web", "batch", "other", NULL };

static const char *services =
	"report_interval = 250ms\n"
	"[web]\ncgroup = web\nbudget = 100M\nrelease_deadline = 200ms\n"
	"[batch]\ncgroup = batch\nbudget = 50M\n";

static int setup(void **state)
{
	*state = mfixture_new("test-manager", "web", cgroups, services);
	return 0;
}


/* The refusal of a HELLO: ERROR with `code`, and the connection closed. */
static void refused(struct mfixture *t, const char *service, unsigned code, const char *text)
{
	struct mg_msg m;
	int fd = mfixture_hello(t, service, &m, NULL);

	assert_int_equal(m.hdr.type, MG_MSG_ERROR);
	assert_int_equal(m.error.code, code);
	assert_non_null(strstr(m.error.text, text));
	assert_int_equal(mfixture_recv(t, fd, &m), -ECONNRESET);
	close(fd);
}

/* HELLO: the service of the peer's cgroup answers with its budget and the
 * report interval, then the directive in force; a named service must be
 * the peer's; no service, no registration. */
static void test_hello(void **state)
{
	struct mfixture *t = *state;
	struct mg_directive d;
	struct mg_msg m;
	int fd = mfixture_hello(t, "", &m, &d);

	assert_int_equal(m.hdr.type, MG_MSG_WELCOME);
	assert_string_equal(m.welcome.service, "web");
	assert_true(m.welcome.budget == 100 * MiB);
	assert_int_equal(m.welcome.report_interval_ms, 250);
	assert_true(m.welcome.client_id > 0);
	assert_int_equal(d.level, MG_LEVEL_NORMAL);
	assert_true(d.release == 0);

	/* By name, from the right cgroup. */
	close(mfixture_hello(t, "web", &m, NULL));
	assert_int_equal(m.hdr.type, MG_MSG_WELCOME);

	refused(t, "batch", MG_ERR_SERVICE, "not in cgroup batch of service 'batch'");
	refused(t, "nosuch", MG_ERR_NO_SERVICE, "no service 'nosuch'");
	mfixture_move(t, "other");
	refused(t, "", MG_ERR_NO_SERVICE, "no service is configured for cgroup");

	/* batch's own peer is batch's. */
	mfixture_move(t, "batch");
	close(mfixture_hello(t, "batch", &m, NULL));
	assert_int_equal(m.hdr.type, MG_MSG_WELCOME);
	assert_true(m.welcome.budget == 50 * MiB);

	/* The refused and the closed are nobody's clients. */
	assert_int_equal(mfixture_status(t, "web", NULL).clients, 1);
	assert_int_equal(mfixture_status(t, "batch", NULL).clients, 0);
	close(fd);
}

/* With no service configured, each client's own cgroup is a service,
 * shared by its clients and kept by a reload of the same file. */
static void test_hello_implicit(void **state)
{
	static const char *const solo[] = { "solo", NULL };
	struct mfixture t = { 0 };
	struct mg_status_daemon d;
	struct mg_msg m;
	int a, b;

	mfixture_start(&t, "test-manager", "solo", solo, "");
	a = mfixture_hello(&t, "", &m, NULL);
	assert_int_equal(m.hdr.type, MG_MSG_WELCOME);
	assert_string_equal(m.welcome.service, "solo");
	b = mfixture_hello(&t, "", &m, NULL);
	assert_string_equal(m.welcome.service, "solo");
	assert_int_equal(mfixture_status(&t, "solo", &d).clients, 2);
	assert_int_equal(d.services, 1);

	assert_int_equal(manager_reload(t.m, NULL, 0), 0);
	assert_int_equal(mfixture_status(&t, "solo", &d).clients, 2);
	assert_int_equal(d.services, 1);
	close(a);
	close(b);
	mfixture_done(&t);
}

/* REPORT: kept for CLIENTS, no larger than the cgroup; a client that acts
 * on its local limit has its service sampled and decided at once. */
static void test_report(void **state)
{
	struct mfixture *t = *state;
	struct mg_client_info ci;
	struct mg_msg m;
	int fd = mfixture_client(t, "web", NULL);

	mfixture_report(fd, 0, 2 * MiB, MiB);
	assert_int_equal(mfixture_recv(t, fd, &m), -EAGAIN);
	assert_int_equal(mfixture_clients(t, "web", &ci, 1), 1);
	assert_true(ci.heap_inuse == 2 * MiB);
	assert_true(ci.heap_sys == 3 * MiB);

	/* More than the cgroup's 10 MiB is not believed. */
	mfixture_report(fd, 0, 64 * MiB, 0);
	mfixture_pump(t);
	assert_int_equal(mfixture_clients(t, "web", &ci, 1), 1);
	assert_true(ci.heap_inuse == 10 * MiB);

	/* 95 MiB of 100: the tick is a minute away, the local limit is now. */
	fixture_set_usage(&t->fx, "web", 95 * MiB);
	mfixture_report(fd, MG_FLAG_LOCAL_LIMIT, 8 * MiB, 0);
	assert_int_equal(mfixture_recv(t, fd, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_DIRECTIVE);
	assert_true(m.directive.level > MG_LEVEL_NORMAL);
	close(fd);
}

/* RELEASED: only the answer to the demand pending counts, once; it adds
 * to the client's and the service's released bytes. */
static void test_released(void **state)
{
	struct mfixture *t = *state;
	struct mg_msg req = { .hdr = { .type = MG_MSG_RELEASE, .seq = 40 } };
	struct mg_msg m, r = { .hdr = { .type = MG_MSG_RELEASED } };
	struct mg_client_info ci;
	uint32_t seq;
	int fd = mfixture_client(t, "web", NULL);

	mfixture_report(fd, 0, MiB, 4 * MiB);
	strcpy(req.release.service, "web");
	req.release.bytes = 4 * MiB;
	assert_int_equal(mfixture_result(t, &req).code, MG_ERR_OK);
	assert_int_equal(mfixture_recv(t, fd, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_DIRECTIVE);
	assert_true(m.directive.release == 4 * MiB);
	seq = m.hdr.seq;

	/* Not the pending one: ignored. */
	r.released.directive_seq = seq + 1;
	r.released.bytes = MiB;
	fixture_send(fd, &r);
	mfixture_pump(t);
	assert_int_equal(mfixture_clients(t, "web", &ci, 1), 1);
	assert_int_equal(ci.asked, 1);
	assert_int_equal(ci.answered, 0);

	r.released.directive_seq = seq;
	r.released.bytes = 3 * MiB;
	r.released.usec = 1000;
	fixture_send(fd, &r);
	mfixture_pump(t);
	assert_int_equal(mfixture_clients(t, "web", &ci, 1), 1);
	assert_int_equal(ci.answered, 1);
	assert_true(ci.released_bytes == 3 * MiB);
	assert_true(ci.asked_bytes == 4 * MiB);
	assert_true(mfixture_status(t, "web", NULL).released_total == 3 * MiB);

	/* Said twice: counted once. */
	fixture_send(fd, &r);
	mfixture_pump(t);
	assert_int_equal(mfixture_clients(t, "web", &ci, 1), 1);
	assert_int_equal(ci.answered, 1);
	assert_true(mfixture_status(t, "web", NULL).released_total == 3 * MiB);
	close(fd);
}

/* A malformed datagram gets ERROR and a close, for that connection only:
 * its client leaves its service, the others go on. */
static void test_malformed_closes_one(void **state)
{
	struct mfixture *t = *state;
	static const uint8_t junk[5] = { 0x02, 0x00, 0x01, 0x00, 0xff };
	struct mg_client_info ci;
	struct mg_welcome wb;
	struct mg_msg m;
	int a = mfixture_client(t, "web", NULL), b = mfixture_client(t, "web", &wb);

	assert_int_equal(send(a, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
	assert_int_equal(mfixture_recv(t, a, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_ERROR);
	assert_int_equal(m.error.code, MG_ERR_PROTOCOL);
	assert_int_equal(mfixture_recv(t, a, &m), -ECONNRESET);
	close(a);

	assert_int_equal(mfixture_status(t, "web", NULL).clients, 1);
	mfixture_report(b, 0, 5 * MiB, 0);
	assert_int_equal(mfixture_recv(t, b, &m), -EAGAIN);
	assert_int_equal(mfixture_clients(t, "web", &ci, 1), 1);
	assert_true(ci.client_id == wb.client_id);
	assert_true(ci.heap_inuse == 5 * MiB);
	close(b);
}

/* A reload keeps a service of the same name and cgroup (the same struct,
 * its clients, its state; a runtime budget ends), adds and removes the
 * others, and moves each client to the service its cgroup now has; a
 * client whose service went stays connected, of no service. */
static void test_reload_keeps(void **state)
{
	struct mfixture *t = *state;
	struct mg_msg req = { .hdr = { .type = MG_MSG_SET_BUDGET, .seq = 41 } };
	struct mg_client_info ci[4];
	struct mg_status_daemon d;
	struct mg_welcome wa, wb;
	struct service *web = service_by_name(t->m, "web");
	int a = mfixture_client(t, "web", &wa), b = mfixture_client(t, "batch", &wb);
	struct mg_msg m;

	strcpy(req.set_budget.service, "web");
	req.set_budget.budget = 30 * MiB;
	assert_int_equal(mfixture_result(t, &req).code, MG_ERR_OK);
	while (mfixture_recv(t, a, &m) == 0)
		;                       /* the new budget's directive */

	/* batch's cgroup is now the service "jobs"'s. */
	mfixture_config(t, "[web]\ncgroup = web\nbudget = 200M\n"
			   "[jobs]\ncgroup = batch\nbudget = 100M\n");
	assert_int_equal(manager_reload(t->m, NULL, 0), 0);
	assert_ptr_equal(service_by_name(t->m, "web"), web);
	assert_null(service_by_name(t->m, "batch"));
	assert_true(mfixture_status(t, "web", &d).budget == 200 * MiB);
	assert_int_equal(d.services, 2);
	assert_int_equal(d.clients, 2);
	assert_int_equal(mfixture_status(t, "web", NULL).clients, 1);
	assert_int_equal(mfixture_status(t, "jobs", NULL).clients, 1);

	/* jobs is gone: b stays, of no service. */
	mfixture_config(t, "[web]\ncgroup = web\nbudget = 200M\n");
	assert_int_equal(manager_reload(t->m, NULL, 0), 0);
	assert_ptr_equal(service_by_name(t->m, "web"), web);

	/* Both connections live on. */
	mfixture_report(a, 0, 3 * MiB, 0);
	mfixture_report(b, 0, 4 * MiB, 0);
	mfixture_pump(t);
	assert_int_equal(mfixture_clients(t, "", ci, ARRAY_SIZE(ci)), 2);
	for (size_t i = 0; i < 2; i++) {
		if (ci[i].client_id == wa.client_id) {
			assert_string_equal(ci[i].service, "web");
			assert_true(ci[i].heap_inuse == 3 * MiB);
		} else {
			assert_true(ci[i].client_id == wb.client_id);
			assert_string_equal(ci[i].service, "");
			assert_true(ci[i].heap_inuse == 4 * MiB);
		}
	}
	close(a);
	close(b);
}

/* The [daemon] keys that apply at the next start (socket, socket_group,
 * cgroup_root) keep, across a reload, the values the daemon runs with:
 * the record of memory.high values to put back names the socket in use,
 * or a restart on that socket after a crash would not trust it. */
static void test_reload_keeps_start_keys(void **state)
{
	struct mfixture *t = *state;
	struct service *web = service_by_name(t->m, "web");
	char want[256], text[512];

	fixture_put(&t->fx, "memguard.conf",
		    "[daemon]\nsocket = /run/elsewhere/memguardd.sock\nsocket_group = root\n"
		    "cgroup_root = /sys/fs/cgroup/elsewhere\ntick = 60s\nlog_level = warning\n%s",
		    services);
	assert_int_equal(manager_reload(t->m, NULL, 0), 0);
	assert_string_equal(t->m->conf->daemon.socket, t->fx.sock);
	assert_string_equal(t->m->conf->daemon.socket_group, CONF_DEFAULT_SOCKET_GROUP);
	assert_null(t->m->conf->daemon.cgroup_root);

	web->saved_high_valid = true;
	web->saved_high = 64 * MiB;
	manager_save_escalations(t->m);
	snprintf(want, sizeof(want), "socket %s\n%llu %s\n", t->fx.sock,
		 (unsigned long long)(64 * MiB), web->v2_dir);
	assert_string_equal(fixture_get(&t->fx, "memguardd.sock.escalations", text, sizeof(text)),
			    want);
	web->saved_high_valid = false;
	manager_save_escalations(t->m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_hello, setup, mfixture_teardown),
		cmocka_unit_test(test_hello_implicit),
		cmocka_unit_test_setup_teardown(test_report, setup, mfixture_teardown),
		cmocka_unit_test_setup_teardown(test_released, setup, mfixture_teardown),
		cmocka_unit_test_setup_teardown(test_malformed_closes_one, setup,
						mfixture_teardown),
		cmocka_unit_test_setup_teardown(test_reload_keeps, setup, mfixture_teardown),
		cmocka_unit_test_setup_teardown(test_reload_keeps_start_keys, setup,
						mfixture_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
