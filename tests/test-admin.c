/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/admin.c: every admin request answered by a manager in
 * this process (tests/manager-fixture.h) over its real socket, on a
 * fixture tree of two services, web (100 MiB) and batch (50 MiB), with
 * 10 MiB in use each.  The test process is every peer: a client of web or
 * batch as its /proc entry says, and root for the admin requests.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/manager-fixture.h"

#define MiB FIXTURE_MiB

static const char *const cgroups[] = { "web", "batch", NULL };

static const char *services =
	"[web]\ncgroup = web\nbudget = 100M\nrelease_deadline = 200ms\n"
	"[batch]\ncgroup = batch\nbudget = 50M\n";

static int setup(void **state)
{
	*state = mfixture_new("test-admin", "web", cgroups, services);
	return 0;
}


/* STATUS: the daemon's figures, one STATUS_SERVICE per service in the
 * config's order, then RESULT; every answer with the request's seq. */
static void test_status(void **state)
{
	struct mfixture *t = *state;
	struct mg_msg req = { .hdr = { .type = MG_MSG_STATUS, .seq = 31 } };
	struct mg_msg a[8];
	int web = mfixture_client(t, "web", NULL), batch = mfixture_client(t, "batch", NULL);
	size_t n = mfixture_request(t, &req, a, ARRAY_SIZE(a));

	assert_int_equal(n, 4);
	assert_int_equal(a[0].hdr.type, MG_MSG_STATUS_DAEMON);
	assert_int_equal(a[0].status_daemon.services, 2);
	/* The admin connection asking is not a client. */
	assert_int_equal(a[0].status_daemon.clients, 2);
	assert_int_equal(a[0].status_daemon.tick_ms, 60000);
	assert_true(a[0].status_daemon.mem_total == 16000000ULL * 1024);
	assert_true(a[0].status_daemon.mem_available == 8000000ULL * 1024);
	assert_string_equal(a[0].status_daemon.version, PACKAGE_VERSION);

	assert_int_equal(a[1].hdr.type, MG_MSG_STATUS_SERVICE);
	assert_string_equal(a[1].status_service.name, "web");
	assert_string_equal(a[1].status_service.cgroup, "web");
	assert_true(a[1].status_service.budget == 100 * MiB);
	assert_true(a[1].status_service.working_set == 10 * MiB);
	assert_int_equal(a[1].status_service.utilization, 1000);
	assert_int_equal(a[1].status_service.clients, 1);
	assert_int_equal(a[1].status_service.level, MG_LEVEL_NORMAL);
	assert_int_equal(a[1].status_service.enforce, MG_ENFORCE_NOTIFY);
	assert_int_equal(a[1].status_service.escalation, MG_ESCALATION_NONE);

	assert_int_equal(a[2].hdr.type, MG_MSG_STATUS_SERVICE);
	assert_string_equal(a[2].status_service.name, "batch");
	assert_true(a[2].status_service.budget == 50 * MiB);
	assert_int_equal(a[2].status_service.utilization, 2000);
	assert_int_equal(a[2].status_service.clients, 1);

	assert_int_equal(a[3].hdr.type, MG_MSG_RESULT);
	assert_int_equal(a[3].result.code, MG_ERR_OK);
	assert_string_equal(a[3].result.text, "2 services");

	/* A client that goes is no longer counted. */
	close(batch);
	mfixture_pump(t);
	assert_int_equal(mfixture_status(t, "batch", NULL).clients, 0);
	close(web);
}

/* CLIENTS: one CLIENT_INFO per registered client, of one service or of
 * all, with its report's figures; an unknown service is NO_SERVICE. */
static void test_clients(void **state)
{
	struct mfixture *t = *state;
	struct mg_client_info ci[8];
	struct mg_welcome w1;
	int web1 = mfixture_client(t, "web", &w1), web2 = mfixture_client(t, "web", NULL);
	int batch = mfixture_client(t, "batch", NULL);
	struct mg_msg req = { .hdr = { .type = MG_MSG_CLIENTS, .seq = 32 } };
	struct mg_result res;
	size_t n;

	mfixture_report(web1, 0, 6 * MiB, MiB);
	mfixture_pump(t);

	assert_int_equal(mfixture_clients(t, "", ci, ARRAY_SIZE(ci)), 3);
	n = mfixture_clients(t, "web", ci, ARRAY_SIZE(ci));
	assert_int_equal(n, 2);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(ci[i].service, "web");
		assert_string_equal(ci[i].process, "test");
		assert_int_equal(ci[i].pid, getpid());
		assert_int_equal(ci[i].uid, getuid());
		if (ci[i].client_id != w1.client_id)
			continue;
		assert_true(ci[i].heap_sys == 7 * MiB);
		assert_true(ci[i].heap_inuse == 6 * MiB);
		w1.client_id = 0;
	}
	assert_true(w1.client_id == 0);           /* web1 was among them */
	assert_int_equal(mfixture_clients(t, "batch", ci, ARRAY_SIZE(ci)), 1);
	assert_string_equal(ci[0].service, "batch");

	/* The RESULT counts them. */
	strcpy(req.clients.service, "web");
	{
		struct mg_msg a[4];

		n = mfixture_request(t, &req, a, ARRAY_SIZE(a));
		assert_string_equal(a[n - 1].result.text, "2 clients");
	}

	/* No such service: RESULT NO_SERVICE and nothing else. */
	strcpy(req.clients.service, "nosuch");
	res = mfixture_result(t, &req);
	assert_int_equal(res.code, MG_ERR_NO_SERVICE);
	assert_non_null(strstr(res.text, "nosuch"));
	close(web1);
	close(web2);
	close(batch);
}

/* SET_BUDGET: the budget is in force at once, with a decision on it: a
 * budget below the working set directs the clients without waiting for
 * the tick.  An unknown service and bad values change nothing. */
static void test_set_budget(void **state)
{
	struct mfixture *t = *state;
	struct mg_msg req = { .hdr = { .type = MG_MSG_SET_BUDGET, .seq = 33 } };
	struct mg_msg m;
	struct mg_result res;
	struct mg_directive d0;
	uint8_t buf[MG_MSG_MAX];
	int web = mfixture_hello(t, "web", &m, &d0), fd, n;

	strcpy(req.set_budget.service, "web");
	req.set_budget.budget = 40 * MiB;
	res = mfixture_result(t, &req);
	assert_int_equal(res.code, MG_ERR_OK);
	assert_non_null(strstr(res.text, "not saved to the config file"));
	assert_true(mfixture_status(t, "web", NULL).budget == 40 * MiB);
	/* 25 %: still NORMAL, with a soft limit drawn from the new budget. */
	assert_int_equal(mfixture_recv(t, web, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_DIRECTIVE);
	assert_int_equal(m.directive.level, MG_LEVEL_NORMAL);
	assert_true(m.directive.soft_limit > 0 && m.directive.soft_limit < d0.soft_limit);

	/* 10 MiB in use over a budget of 10 MiB: the client hears it now. */
	req.set_budget.budget = 10 * MiB;
	assert_int_equal(mfixture_result(t, &req).code, MG_ERR_OK);
	assert_int_equal(mfixture_recv(t, web, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_DIRECTIVE);
	assert_true(m.directive.level > MG_LEVEL_NORMAL);
	assert_true(mfixture_status(t, "web", NULL).level > MG_LEVEL_NORMAL);

	strcpy(req.set_budget.service, "nosuch");
	res = mfixture_result(t, &req);
	assert_int_equal(res.code, MG_ERR_NO_SERVICE);
	assert_non_null(strstr(res.text, "nosuch"));

	/* A budget of 0 does not pass the wire's checks: ERROR, closed,
	 * nothing changed. */
	strcpy(req.set_budget.service, "batch");
	req.set_budget.budget = 1;
	n = proto_msg_encode(&req, buf, sizeof(buf));
	assert_true(n > MG_HEADER_SIZE + 8);
	memset(buf + MG_HEADER_SIZE, 0, 8);               /* the budget, first in the body */
	fd = fixture_connect(&t->fx, NULL);
	assert_int_equal(send(fd, buf, (size_t)n, 0), n);
	assert_int_equal(mfixture_recv(t, fd, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_ERROR);
	assert_int_equal(m.hdr.seq, 33);
	assert_int_equal(m.error.code, MG_ERR_PROTOCOL);
	assert_int_equal(mfixture_recv(t, fd, &m), -ECONNRESET);
	close(fd);
	assert_true(mfixture_status(t, "batch", NULL).budget == 50 * MiB);
	close(web);
}

/* RELEASE: a number of bytes is split over the service's clients by what
 * they can give (idle heap); 0 asks each for everything, 2^64-1. */
static void test_release(void **state)
{
	struct mfixture *t = *state;
	struct mg_msg req = { .hdr = { .type = MG_MSG_RELEASE, .seq = 34 } };
	struct mg_client_info ci[4];
	struct mg_result res;
	struct mg_msg m;
	int a = mfixture_client(t, "web", NULL), b = mfixture_client(t, "web", NULL);
	int c = mfixture_client(t, "batch", NULL);

	mfixture_report(a, 0, 2 * MiB, 3 * MiB);
	mfixture_report(b, 0, 2 * MiB, MiB);
	mfixture_pump(t);

	strcpy(req.release.service, "web");
	req.release.bytes = 8 * MiB;
	res = mfixture_result(t, &req);
	assert_int_equal(res.code, MG_ERR_OK);
	assert_string_equal(res.text, "asked 2 client(s) of web to release 8388608 bytes");
	assert_int_equal(mfixture_recv(t, a, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_DIRECTIVE);
	assert_true(m.directive.release == 6 * MiB);
	assert_int_equal(m.directive.deadline_ms, 200);
	assert_int_equal(mfixture_recv(t, b, &m), 0);
	assert_true(m.directive.release == 2 * MiB);
	/* batch was not asked. */
	assert_int_equal(mfixture_recv(t, c, &m), -EAGAIN);
	assert_int_equal(mfixture_clients(t, "web", ci, ARRAY_SIZE(ci)), 2);
	assert_int_equal(ci[0].asked, 1);
	assert_int_equal(ci[1].asked, 1);
	assert_true(ci[0].asked_bytes + ci[1].asked_bytes == 8 * MiB);

	req.release.bytes = 0;
	res = mfixture_result(t, &req);
	assert_int_equal(res.code, MG_ERR_OK);
	assert_non_null(strstr(res.text, "everything releasable"));
	assert_int_equal(mfixture_recv(t, a, &m), 0);
	assert_true(m.directive.release == UINT64_MAX);
	assert_int_equal(m.directive.deadline_ms, 200);
	assert_int_equal(mfixture_recv(t, b, &m), 0);
	assert_true(m.directive.release == UINT64_MAX);

	strcpy(req.release.service, "nosuch");
	assert_int_equal(mfixture_result(t, &req).code, MG_ERR_NO_SERVICE);
	close(a);
	close(b);
	close(c);
}

/* RELOAD of a broken file: CONFIG, with every problem as FILE:LINE in the
 * answer's text, and the running configuration kept; of a good one: OK,
 * in force at once. */
static void test_reload(void **state)
{
	struct mfixture *t = *state;
	struct mg_msg req = { .hdr = { .type = MG_MSG_RELOAD, .seq = 35 } };
	struct mg_status_daemon d;
	struct mg_result res;
	char want[256];

	mfixture_config(t, "[web]\ncgroup = web\nbudget = 12X\n"
			   "[batch]\ncgroup = batch\nbudget = 0\n");
	res = mfixture_result(t, &req);
	assert_int_equal(res.code, MG_ERR_CONFIG);
	assert_non_null(strstr(res.text, "the running configuration stays"));
	/* [daemon] takes the file's first four lines. */
	snprintf(want, sizeof(want), "%s:7: invalid budget '12X'", t->conf);
	assert_non_null(strstr(res.text, want));
	snprintf(want, sizeof(want), "%s:10: budget '0' must be greater than 0", t->conf);
	assert_non_null(strstr(res.text, want));
	assert_true(mfixture_status(t, "web", &d).budget == 100 * MiB);
	assert_int_equal(d.services, 2);

	mfixture_config(t, "[web]\ncgroup = web\nbudget = 200M\n");
	res = mfixture_result(t, &req);
	assert_int_equal(res.code, MG_ERR_OK);
	snprintf(want, sizeof(want), "reloaded %s: 1 services", t->conf);
	assert_string_equal(res.text, want);
	assert_true(mfixture_status(t, "web", &d).budget == 200 * MiB);
	assert_int_equal(d.services, 1);
}

/*
 * A peer that is neither root nor of admin_group (uid and gid 65534, in a
 * child) gets PERMISSION for STATUS, and the connection closes; once a
 * reload names its group as admin_group, its next connection may ask.
 * The parent turns the manager's loop until the child is done.
 */
static int child_status(struct mfixture *t, unsigned want)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct mg_msg m = { .hdr = { .type = MG_MSG_STATUS, .seq = 36 } };
		int fd;

		if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
			_exit(10);
		fd = fixture_connect(&t->fx, NULL);
		fixture_send(fd, &m);
		do {
			if (fixture_recv(fd, &m, 30000) < 0)
				_exit(11);
		} while (m.hdr.type != MG_MSG_RESULT);
		if (m.result.code != want)
			_exit(12);
		if (want == MG_ERR_PERMISSION && fixture_recv(fd, &m, 30000) != -ECONNRESET)
			_exit(13);
		_exit(0);
	}
	while (waitpid(pid, &status, WNOHANG) == 0)
		assert_true(sd_event_run(t->m->event, 100 * 1000) >= 0);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_non_admin_refused(void **state)
{
	struct mfixture *t = *state;
	struct mg_msg req = { .hdr = { .type = MG_MSG_RELOAD, .seq = 37 } };
	struct group *g = getgrgid(65534);
	char text[512];

	if (getuid() != 0)
		skip();                 /* the child could not become another user */
	assert_int_equal(chmod(t->fx.dir, 0755), 0);
	assert_int_equal(child_status(t, MG_ERR_PERMISSION), 0);
	if (!g)
		return;
	/* Still the [daemon] section: the services follow. */
	snprintf(text, sizeof(text), "admin_group = %s\n%s", g->gr_name, services);
	mfixture_config(t, text);
	assert_int_equal(mfixture_result(t, &req).code, MG_ERR_OK);
	assert_int_equal(child_status(t, MG_ERR_OK), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_status, setup, mfixture_teardown),
		cmocka_unit_test_setup_teardown(test_clients, setup, mfixture_teardown),
		cmocka_unit_test_setup_teardown(test_set_budget, setup, mfixture_teardown),
		cmocka_unit_test_setup_teardown(test_release, setup, mfixture_teardown),
		cmocka_unit_test_setup_teardown(test_reload, setup, mfixture_teardown),
		cmocka_unit_test_setup_teardown(test_non_admin_refused, setup, mfixture_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
