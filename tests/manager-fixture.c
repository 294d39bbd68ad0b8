/* SPDX-License-Identifier: MIT */
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

#include "daemon/log.h"
#include "tests/manager-fixture.h"

void mfixture_config(struct mfixture *t, const char *services)
{
	fixture_put(&t->fx, "memguard.conf",
		    "[daemon]\nsocket = %s\ntick = 60s\nlog_level = warning\n%s", t->fx.sock,
		    services);
}

void mfixture_start(struct mfixture *t, const char *name, const char *my_cgroup,
		    const char *const *cgroups, const char *services)
{
	struct manager_paths paths;
	struct mg_conf *conf = NULL;
	int fd;

	fixture_init(&t->fx, name, my_cgroup);
	for (size_t i = 0; cgroups[i]; i++)
		fixture_cgroup(&t->fx, cgroups[i], 10 * FIXTURE_MiB);
	mfixture_config(t, services);
	snprintf(t->conf, sizeof(t->conf), "%s/memguard.conf", t->fx.dir);
	snprintf(t->root, sizeof(t->root), "%s/cg", t->fx.dir);
	snprintf(t->proc, sizeof(t->proc), "%s/proc", t->fx.dir);
	snprintf(t->mountinfo, sizeof(t->mountinfo), "%s/self/mountinfo", t->proc);
	snprintf(t->meminfo, sizeof(t->meminfo), "%s/meminfo", t->proc);
	snprintf(t->pressure, sizeof(t->pressure), "%s/pressure/memory", t->proc);
	paths = (struct manager_paths){
		.config = t->conf,
		.cgroup_root = t->root,
		.proc = t->proc,
		.mountinfo = t->mountinfo,
		.host_pressure = t->pressure,
		.meminfo = t->meminfo,
		.log_level = LOG_WARNING,
	};
	log_set_max_level(LOG_WARNING);
	assert_int_equal(manager_load_config(t->conf, /* required= */ true, NULL, 0, &conf), 0);
	assert_int_equal(manager_new(conf, &paths, &t->m), 0);
	/* Any peer may connect; who may send admin requests is the test. */
	fd = server_listen(t->fx.sock, 0666, (gid_t)-1);
	assert_true(fd >= 0);
	assert_int_equal(manager_start(t->m, fd), 0);
	mfixture_pump(t);
}

void mfixture_done(struct mfixture *t)
{
	t->m = manager_free(t->m);
	fixture_done(&t->fx);
}

struct mfixture *mfixture_new(const char *name, const char *my_cgroup,
			      const char *const *cgroups, const char *services)
{
	struct mfixture *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	mfixture_start(t, name, my_cgroup, cgroups, services);
	return t;
}

int mfixture_teardown(void **state)
{
	struct mfixture *t = *state;

	mfixture_done(t);
	free(t);
	*state = NULL;
	return 0;
}

void mfixture_pump(struct mfixture *t)
{
	int r;

	for (int i = 0; i < 10000; i++) {
		r = sd_event_run(t->m->event, 0);
		assert_true(r >= 0);
		if (r == 0)
			return;
	}
	fail_msg("the manager's loop never settles");
}

int mfixture_recv(struct mfixture *t, int fd, struct mg_msg *ret)
{
	uint8_t buf[MG_MSG_MAX];
	ssize_t n;

	mfixture_pump(t);
	n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (n < 0 && errno == EAGAIN)
		return -EAGAIN;
	if (n <= 0)
		return -ECONNRESET;
	return proto_msg_decode(buf, (size_t)n, ret);
}

int mfixture_hello(struct mfixture *t, const char *service, struct mg_msg *ret,
		   struct mg_directive *ret_directive)
{
	struct mg_msg d;
	int fd = fixture_hello(&t->fx, service, "test", MG_CAP_ALL);

	assert_int_equal(mfixture_recv(t, fd, ret), 0);
	if (ret->hdr.type != MG_MSG_WELCOME)
		return fd;
	assert_int_equal(mfixture_recv(t, fd, &d), 0);
	assert_int_equal(d.hdr.type, MG_MSG_DIRECTIVE);
	if (ret_directive)
		*ret_directive = d.directive;
	return fd;
}

void mfixture_move(struct mfixture *t, const char *cgroup)
{
	fixture_map_pid(&t->fx, getpid(), cgroup);
}

int mfixture_client(struct mfixture *t, const char *cgroup, struct mg_welcome *ret)
{
	struct mg_msg w;
	int fd;

	mfixture_move(t, cgroup);
	fd = mfixture_hello(t, "", &w, NULL);
	assert_int_equal(w.hdr.type, MG_MSG_WELCOME);
	if (ret)
		*ret = w.welcome;
	return fd;
}

void mfixture_report(int fd, uint32_t flags, uint64_t inuse, uint64_t idle)
{
	struct mg_msg r = { .hdr = { .type = MG_MSG_REPORT, .flags = flags } };

	r.report.heap_sys = inuse + idle;
	r.report.heap_inuse = inuse;
	r.report.heap_idle = idle;
	fixture_send(fd, &r);
}

size_t mfixture_request(struct mfixture *t, struct mg_msg *req, struct mg_msg *ret, size_t max)
{
	int fd = fixture_connect(&t->fx, NULL);
	size_t n = 0;

	fixture_send(fd, req);
	for (;;) {
		struct mg_msg m;

		assert_int_equal(mfixture_recv(t, fd, &m), 0);
		assert_int_equal(m.hdr.seq, req->hdr.seq);
		assert_true(n < max);
		ret[n++] = m;
		if (m.hdr.type == MG_MSG_RESULT)
			break;
	}
	close(fd);
	mfixture_pump(t);
	return n;
}

struct mg_result mfixture_result(struct mfixture *t, struct mg_msg *req)
{
	struct mg_msg m;

	assert_int_equal(mfixture_request(t, req, &m, 1), 1);
	return m.result;
}

struct mg_status_service mfixture_status(struct mfixture *t, const char *service,
					 struct mg_status_daemon *ret_daemon)
{
	struct mg_msg req = { .hdr = { .type = MG_MSG_STATUS, .seq = 77 } };
	struct mg_msg a[16];
	size_t n = mfixture_request(t, &req, a, ARRAY_SIZE(a)), i;

	assert_int_equal(a[n - 1].result.code, MG_ERR_OK);
	assert_int_equal(a[0].hdr.type, MG_MSG_STATUS_DAEMON);
	if (ret_daemon)
		*ret_daemon = a[0].status_daemon;
	for (i = 1; i + 1 < n; i++)
		if (strcmp(a[i].status_service.name, service) == 0)
			break;
	if (i + 1 >= n)
		fail_msg("STATUS shows no service '%s'", service);
	return a[i].status_service;
}

size_t mfixture_clients(struct mfixture *t, const char *service, struct mg_client_info *ret,
			size_t max)
{
	struct mg_msg req = { .hdr = { .type = MG_MSG_CLIENTS, .seq = 78 } };
	struct mg_msg a[16];
	size_t n;

	snprintf(req.clients.service, sizeof(req.clients.service), "%s", service);
	n = mfixture_request(t, &req, a, ARRAY_SIZE(a));
	assert_int_equal(a[n - 1].result.code, MG_ERR_OK);
	assert_true(n - 1 <= max);
	for (size_t i = 0; i + 1 < n; i++) {
		assert_int_equal(a[i].hdr.type, MG_MSG_CLIENT_INFO);
		ret[i] = a[i].client_info;
	}
	return n - 1;
}
