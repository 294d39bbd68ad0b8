/* SPDX-License-Identifier: MIT */
/*
 * The daemon's socket side against real SOCK_SEQPACKET peers: registration,
 * refusals, malformed input, slow readers, admin permission, keepalive.
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
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/cgrp.h"
#include "daemon/log.h"
#include "daemon/server.h"
#include "proto/macro.h"

struct fixture {
	char dir[64];
	char path[128];
	sd_event *event;
	struct server *server;
	int hellos, welcomes, reports, releases, admins, gones;
	bool refuse_hello;
	struct mg_report last_report;
};

static int t_hello(void *ud, struct client *c, const struct mg_hello *h,
		   struct mg_welcome *w, char text[MG_TEXT_MAX + 1])
{
	struct fixture *f = ud;

	f->hellos++;
	if (f->refuse_hello) {
		snprintf(text, MG_TEXT_MAX + 1, "service '%s' is not yours", h->service);
		return MG_ERR_SERVICE;
	}
	w->budget = 1 << 20;
	w->report_interval_ms = 1000;
	snprintf(w->service, sizeof(w->service), "%s", h->service);
	return 0;
}

/* As the manager does: the directive in force follows WELCOME. */
static void t_welcomed(void *ud, struct client *c)
{
	struct mg_msg d = { .hdr = { .type = MG_MSG_DIRECTIVE } };

	((struct fixture *)ud)->welcomes++;
	d.directive.level = MG_LEVEL_WARN;
	server_send(c, &d);
}

static void t_report(void *ud, struct client *c, const struct mg_report *r)
{
	struct fixture *f = ud;

	f->reports++;
	f->last_report = *r;
}

static void t_released(void *ud, struct client *c, uint32_t seq, const struct mg_released *r)
{
	((struct fixture *)ud)->releases++;
}

/* Two answers, as STATUS has: both must carry the request's number. */
static void t_admin(void *ud, struct client *c, const struct mg_msg *m)
{
	struct mg_msg first = { .hdr = { .type = MG_MSG_STATUS_DAEMON, .seq = m->hdr.seq } };

	((struct fixture *)ud)->admins++;
	server_send(c, &first);
	server_send_result(c, m->hdr.seq, MG_ERR_OK, "ok");
}

static void t_gone(void *ud, struct client *c)
{
	((struct fixture *)ud)->gones++;
}

static const struct server_ops ops = {
	.hello = t_hello,
	.welcomed = t_welcomed,
	.report = t_report,
	.released = t_released,
	.admin = t_admin,
	.gone = t_gone,
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	int fd;

	assert_non_null(f);
	strcpy(f->dir, "/tmp/mg-test-server-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/run/memguardd.sock", f->dir);
	fd = server_listen(f->path, 0660, (gid_t)-1);
	assert_true(fd >= 0);
	assert_int_equal(sd_event_new(&f->event), 0);
	assert_int_equal(server_new(f->event, fd, (gid_t)-1, &ops, f, &f->server), 0);
	log_set_max_level(LOG_WARNING);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[160];

	server_free(f->server);
	sd_event_unref(f->event);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* Let the loop handle whatever is pending. */
static void spin(struct fixture *f)
{
	for (int i = 0; i < 20; i++)
		assert_true(sd_event_run(f->event, 1000) >= 0);
}

static int peer(const struct fixture *f)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	strcpy(sa.sun_path, f->path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void send_msg(int fd, struct mg_msg *m)
{
	uint8_t buf[MG_MSG_MAX];
	int n = proto_msg_encode(m, buf, sizeof(buf));

	assert_true(n > 0);
	assert_int_equal(send(fd, buf, (size_t)n, MSG_NOSIGNAL), n);
}

/* Receive one message; returns 0, or -errno / -ECONNRESET on EOF. */
static int recv_msg(int fd, struct mg_msg *m)
{
	uint8_t buf[MG_MSG_MAX];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (n < 0)
		return -errno;
	if (n == 0)
		return -ECONNRESET;
	return proto_msg_decode(buf, (size_t)n, m);
}

static void hello(int fd, const char *service)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_HELLO, .seq = 7 } };

	m.hello.capabilities = MG_CAP_ALL;
	snprintf(m.hello.service, sizeof(m.hello.service), "%s", service);
	strcpy(m.hello.process, "test");
	send_msg(fd, &m);
}

static void test_hello_welcome_report(void **state)
{
	struct fixture *f = *state;
	struct mg_msg m = { .hdr = { .type = MG_MSG_REPORT } };
	int fd = peer(f);

	hello(fd, "web");
	spin(f);
	assert_int_equal(f->hellos, 1);
	assert_int_equal(recv_msg(fd, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_WELCOME);
	assert_int_equal(m.hdr.seq, 7);
	assert_string_equal(m.welcome.service, "web");
	assert_int_equal(m.welcome.budget, 1 << 20);
	assert_true(m.welcome.client_id > 0);
	/* The welcomed hook ran after WELCOME was queued: its DIRECTIVE comes
	 * second, with a daemon seq of its own. */
	assert_int_equal(f->welcomes, 1);
	assert_int_equal(recv_msg(fd, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_DIRECTIVE);
	assert_int_equal(m.directive.level, MG_LEVEL_WARN);
	assert_true(m.hdr.seq != 0 && m.hdr.seq != 7);

	memset(&m, 0, sizeof(m));
	m.hdr.type = MG_MSG_REPORT;
	m.report.heap_sys = 12345;
	send_msg(fd, &m);
	spin(f);
	assert_int_equal(f->reports, 1);
	assert_int_equal(f->last_report.heap_sys, 12345);
	assert_int_equal(server_n_clients(f->server), 1);

	close(fd);
	spin(f);
	assert_int_equal(f->gones, 1);
	assert_int_equal(server_n_clients(f->server), 0);
}

static void test_hello_refused(void **state)
{
	struct fixture *f = *state;
	struct mg_msg m;
	int fd = peer(f);

	f->refuse_hello = true;
	hello(fd, "db");
	spin(f);
	assert_int_equal(recv_msg(fd, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_ERROR);
	assert_int_equal(m.error.code, MG_ERR_SERVICE);
	assert_string_equal(m.error.text, "service 'db' is not yours");
	assert_int_equal(recv_msg(fd, &m), -ECONNRESET);
	assert_int_equal(f->welcomes, 0);
	assert_int_equal(f->gones, 1);
	close(fd);
}

static void test_report_before_hello(void **state)
{
	struct fixture *f = *state;
	struct mg_msg m = { .hdr = { .type = MG_MSG_REPORT } };
	int fd = peer(f);

	send_msg(fd, &m);
	spin(f);
	assert_int_equal(f->reports, 0);
	assert_int_equal(recv_msg(fd, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_ERROR);
	assert_int_equal(m.error.code, MG_ERR_PROTOCOL);
	assert_int_equal(recv_msg(fd, &m), -ECONNRESET);
	close(fd);
}

/* Garbage from one peer closes that peer only. */
static void test_malformed_closes_only_that_peer(void **state)
{
	struct fixture *f = *state;
	static const uint8_t junk[] = { 1, 0, 1, 0, 200, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9 };
	static uint8_t huge[MG_MSG_MAX + 100];
	struct mg_msg m;
	int good = peer(f), bad = peer(f), big = peer(f), daemon_type = peer(f);

	hello(good, "web");
	spin(f);
	assert_int_equal(recv_msg(good, &m), 0);

	assert_int_equal(send(bad, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
	assert_int_equal(send(big, huge, sizeof(huge), 0), (ssize_t)sizeof(huge));
	m = (struct mg_msg){ .hdr = { .type = MG_MSG_DIRECTIVE } };
	send_msg(daemon_type, &m);
	spin(f);

	assert_int_equal(recv_msg(bad, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_ERROR);
	assert_int_equal(m.error.code, MG_ERR_PROTOCOL);
	/* Its length field is wrong, yet the ERROR names its seq. */
	assert_int_equal(m.hdr.seq, 1);
	assert_int_equal(recv_msg(bad, &m), -ECONNRESET);
	assert_int_equal(recv_msg(big, &m), -ECONNRESET);
	assert_int_equal(recv_msg(daemon_type, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_ERROR);
	assert_int_equal(recv_msg(daemon_type, &m), -ECONNRESET);

	/* The good one is still served. */
	m = (struct mg_msg){ .hdr = { .type = MG_MSG_REPORT } };
	send_msg(good, &m);
	spin(f);
	assert_int_equal(f->reports, 1);
	assert_int_equal(f->gones, 3);
	close(good);
	close(bad);
	close(big);
	close(daemon_type);
}

static void test_wrong_version(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[MG_MSG_MAX];
	struct mg_msg m = { .hdr = { .type = MG_MSG_PONG } };
	int fd = peer(f);
	int n = proto_msg_encode(&m, buf, sizeof(buf));

	buf[2] = 99;
	assert_int_equal(send(fd, buf, (size_t)n, 0), n);
	spin(f);
	assert_int_equal(recv_msg(fd, &m), 0);
	assert_int_equal(m.error.code, MG_ERR_VERSION);
	close(fd);
}

/* A client that never reads is dropped when its queue is full; others go on. */
static void test_slow_reader_dropped(void **state)
{
	struct fixture *f = *state;
	struct mg_msg m;
	int slow = peer(f), other = peer(f);
	struct client *c;
	int sent = 0, r = 0;

	hello(slow, "web");
	hello(other, "web");
	spin(f);
	assert_int_equal(recv_msg(other, &m), 0);

	/* Clients are kept newest first: the slow one is the last. */
	for (c = server_clients(f->server); c->next; c = c->next)
		;
	for (int i = 0; i < 100000 && r == 0; i++) {
		m = (struct mg_msg){ .hdr = { .type = MG_MSG_DIRECTIVE } };
		m.directive.level = MG_LEVEL_WARN;
		r = server_send(c, &m);
		if (r == 0)
			sent++;
	}
	assert_int_equal(r, -EPIPE);
	assert_true(sent > SERVER_QUEUE_MAX);
	spin(f);
	assert_int_equal(f->gones, 1);
	assert_int_equal(server_n_clients(f->server), 1);

	m = (struct mg_msg){ .hdr = { .type = MG_MSG_REPORT } };
	send_msg(other, &m);
	spin(f);
	assert_int_equal(f->reports, 1);
	close(slow);
	close(other);
}

static void test_admin_as_root(void **state)
{
	struct fixture *f = *state;
	struct mg_msg m = { .hdr = { .type = MG_MSG_STATUS, .seq = 42 } };
	int fd = peer(f);

	if (getuid() != 0) {
		close(fd);
		skip();
	}
	send_msg(fd, &m);
	spin(f);
	assert_int_equal(f->admins, 1);
	assert_int_equal(recv_msg(fd, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_STATUS_DAEMON);
	assert_int_equal(m.hdr.seq, 42);
	assert_int_equal(recv_msg(fd, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_RESULT);
	assert_int_equal(m.hdr.seq, 42);
	assert_int_equal(m.result.code, MG_ERR_OK);
	close(fd);
}

/* Requests numbered 0: each gets one daemon number, which all of its
 * answers carry, and the next request another. */
static void test_admin_seq_zero(void **state)
{
	struct fixture *f = *state;
	uint32_t seen[2];
	int fd = peer(f);

	if (getuid() != 0) {
		close(fd);
		skip();
	}
	for (int i = 0; i < 2; i++) {
		struct mg_msg m = { .hdr = { .type = MG_MSG_STATUS, .seq = 0 } };

		send_msg(fd, &m);
		spin(f);
		assert_int_equal(recv_msg(fd, &m), 0);
		assert_int_equal(m.hdr.type, MG_MSG_STATUS_DAEMON);
		assert_int_not_equal(m.hdr.seq, 0);
		seen[i] = m.hdr.seq;
		assert_int_equal(recv_msg(fd, &m), 0);
		assert_int_equal(m.hdr.type, MG_MSG_RESULT);
		assert_int_equal(m.hdr.seq, seen[i]);
	}
	assert_int_not_equal(seen[0], seen[1]);
	close(fd);
}

/* A peer with another uid gets RESULT(PERMISSION) for every admin request. */
static void test_admin_refused_for_other_uid(void **state)
{
	static const uint16_t types[] = { MG_MSG_STATUS, MG_MSG_CLIENTS, MG_MSG_RELEASE,
					  MG_MSG_RELOAD, MG_MSG_SET_BUDGET };
	struct fixture *f = *state;

	if (getuid() != 0)
		skip();
	assert_int_equal(chmod(f->dir, 0755), 0);
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		int status;
		pid_t pid = fork();

		assert_true(pid >= 0);
		if (pid == 0) {
			struct mg_msg m = { .hdr = { .type = types[i], .seq = 3 } };
			int fd;

			chmod(f->path, 0666);
			if (setgid(65534) < 0 || setuid(65534) < 0)
				_exit(10);
			fd = peer(f);
			strcpy(m.release.service, "web");
			if (types[i] == MG_MSG_SET_BUDGET) {
				strcpy(m.set_budget.service, "web");
				m.set_budget.budget = 1;
			}
			send_msg(fd, &m);
			for (int t = 0; t < 200; t++) {
				int r = recv_msg(fd, &m);

				if (r == -EAGAIN) {
					usleep(5000);
					continue;
				}
				_exit(r == 0 && m.hdr.type == MG_MSG_RESULT &&
						      m.result.code == MG_ERR_PERMISSION ? 0 : 11);
			}
			_exit(12);
		}
		for (int t = 0; t < 400; t++) {
			sd_event_run(f->event, 5000);
			if (waitpid(pid, &status, WNOHANG) == pid)
				break;
		}
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_int_equal(f->admins, 0);
}


/*
 * A peer of uid and gid 65534 with the supplementary `groups`, in a child:
 * it connects, says so on `ready`, waits for a byte on `go`, then sends
 * STATUS.  Exits 0 when answered (an admin), 1 on PERMISSION, else more.
 */
static pid_t status_child(struct fixture *f, const gid_t *groups, size_t n, int ready, int go)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct mg_msg m = { .hdr = { .type = MG_MSG_STATUS, .seq = 5 } };
		char b;
		int fd;

		if (setgroups(n, groups) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
			_exit(10);
		fd = peer(f);
		if (write(ready, "r", 1) != 1 || read(go, &b, 1) != 1)
			_exit(11);
		send_msg(fd, &m);
		for (int t = 0; t < 400; t++) {
			int r = recv_msg(fd, &m);

			if (r == -EAGAIN) {
				usleep(5000);
				continue;
			}
			if (r == 0 && m.hdr.type == MG_MSG_STATUS_DAEMON)
				_exit(0);
			_exit(r == 0 && m.hdr.type == MG_MSG_RESULT &&
					      m.result.code == MG_ERR_PERMISSION ? 1 : 12);
		}
		_exit(13);
	}
	return pid;
}

/* Start status_child(), let the server accept it, call `between` (may be
 * NULL), let it ask; its exit status. */
static int status_child_run(struct fixture *f, const gid_t *groups, size_t n,
			    void (*between)(struct fixture *f))
{
	int ready[2], go[2], status = -1;
	pid_t pid;
	char b;

	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	pid = status_child(f, groups, n, ready[1], go[0]);
	assert_int_equal(read(ready[0], &b, 1), 1);
	spin(f);
	if (between)
		between(f);
	assert_int_equal(write(go[1], "g", 1), 1);
	for (int t = 0; t < 800; t++) {
		sd_event_run(f->event, 5000);
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
	}
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* A member of the admin group with more supplementary groups than fit in a
 * small buffer (NGROUPS_MAX is 65536) is an admin all the same. */
static void test_admin_with_many_groups(void **state)
{
	struct fixture *f = *state;
	gid_t groups[300];

	if (getuid() != 0)
		skip();
	assert_int_equal(chmod(f->dir, 0755), 0);
	assert_int_equal(chmod(f->path, 0666), 0);
	for (size_t i = 0; i < ARRAY_SIZE(groups); i++)
		groups[i] = 5000 + (gid_t)i;
	groups[ARRAY_SIZE(groups) - 1] = 4242;
	server_set_admin_gid(f->server, 4242);
	assert_int_equal(status_child_run(f, groups, ARRAY_SIZE(groups), NULL), 0);
	/* And one without the group is not. */
	groups[ARRAY_SIZE(groups) - 1] = 4243;
	assert_int_equal(status_child_run(f, groups, ARRAY_SIZE(groups), NULL), 1);
}

static void admin_gid_none(struct fixture *f)
{
	server_set_admin_gid(f->server, (gid_t)-1);
}

static void admin_gid_4242(struct fixture *f)
{
	server_set_admin_gid(f->server, 4242);
}

/* A new admin group (a reload) applies to the requests that follow, on
 * connections already open too: a member dropped from it is refused, one
 * added may ask. */
static void test_admin_gid_change_applies_to_open_connections(void **state)
{
	struct fixture *f = *state;
	const gid_t groups[] = { 4242 };

	if (getuid() != 0)
		skip();
	assert_int_equal(chmod(f->dir, 0755), 0);
	assert_int_equal(chmod(f->path, 0666), 0);
	server_set_admin_gid(f->server, 4242);
	assert_int_equal(status_child_run(f, groups, 1, admin_gid_none), 1);
	assert_int_equal(status_child_run(f, groups, 1, admin_gid_4242), 0);
	assert_int_equal(f->admins, 1);
}

static void test_ping_timeout(void **state)
{
	struct fixture *f = *state;
	struct mg_msg m;
	uint64_t now;
	int fd = peer(f);

	hello(fd, "web");
	spin(f);
	assert_int_equal(recv_msg(fd, &m), 0);  /* WELCOME */
	assert_int_equal(recv_msg(fd, &m), 0);  /* the directive in force */

	now = now_usec();

	server_tick(f->server, now + SERVER_PING_USEC / 2);
	assert_int_equal(recv_msg(fd, &m), -EAGAIN);

	server_tick(f->server, now + SERVER_PING_USEC + 1);
	assert_int_equal(recv_msg(fd, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_PING);

	/* Answered: stays. */
	m.hdr.type = MG_MSG_PONG;
	m.hdr.seq = 0;
	send_msg(fd, &m);
	spin(f);
	server_tick(f->server, now + SERVER_PING_USEC + SERVER_PONG_USEC + 2);
	assert_int_equal(f->gones, 0);

	/* Not answered: dropped. */
	server_tick(f->server, now + 3 * SERVER_PING_USEC);
	assert_int_equal(recv_msg(fd, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_PING);
	server_tick(f->server, now + 3 * SERVER_PING_USEC + SERVER_PONG_USEC + 1);
	assert_int_equal(f->gones, 1);
	close(fd);
}

static void test_listen_live_and_stale(void **state)
{
	struct fixture *f = *state;
	char stale[160];
	int fd;

	/* A live daemon owns the path. */
	assert_int_equal(server_listen(f->path, 0660, (gid_t)-1), -EADDRINUSE);

	/* A socket file nobody listens on is replaced. */
	snprintf(stale, sizeof(stale), "%s/stale.sock", f->dir);
	fd = server_listen(stale, 0660, (gid_t)-1);
	assert_true(fd >= 0);
	close(fd);
	fd = server_listen(stale, 0660, (gid_t)-1);
	assert_true(fd >= 0);
	close(fd);
}

static void test_bye_on_free(void **state)
{
	struct fixture *f = *state;
	struct mg_msg m;
	int fd = peer(f);

	hello(fd, "web");
	spin(f);
	assert_int_equal(recv_msg(fd, &m), 0);  /* WELCOME */
	assert_int_equal(recv_msg(fd, &m), 0);  /* the directive in force */
	f->server = server_free(f->server);
	assert_int_equal(recv_msg(fd, &m), 0);
	assert_int_equal(m.hdr.type, MG_MSG_BYE);
	assert_int_equal(m.bye.reason, MG_BYE_SHUTDOWN);
	assert_int_equal(recv_msg(fd, &m), -ECONNRESET);
	assert_int_equal(f->gones, 1);
	close(fd);
}

/* A cgroup of the tree at `dir` whose cgroup.procs lists `pid`. */
static void procs_file(const char *dir, pid_t pid)
{
	char path[512];
	FILE *f;

	assert_true(mkdir(dir, 0755) == 0 || errno == EEXIST);
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	f = fopen(path, "we");
	assert_non_null(f);
	fprintf(f, "%d\n", (int)pid);
	assert_int_equal(fclose(f), 0);
}

/*
 * Issue 13, item 8: without cgroup.kill (cgroup v1) a kill takes the
 * whole subtree, not only the processes directly in the service's cgroup:
 * three processes, one in the cgroup, one in a child, one in a grandchild,
 * all die; the freezer file is left thawed.  A fixture tree plays v1.
 */
static void test_kill_walks_subtree(void **state)
{
	char dir[] = "/tmp/mg-test-kill-XXXXXX", sub[128], subsub[160], cmd[64], buf[8] = "";
	const char *dirs[3] = { dir, sub, subsub };
	pid_t pids[3];
	bool frozen = false;
	FILE *f;

	assert_non_null(mkdtemp(dir));
	snprintf(sub, sizeof(sub), "%s/child", dir);
	snprintf(subsub, sizeof(subsub), "%s/grand", sub);
	for (int i = 0; i < 3; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			pause();
			_exit(0);
		}
		procs_file(dirs[i], pids[i]);
	}
	snprintf(cmd, sizeof(cmd), "%s/freeze", dir);
	assert_int_equal(mkdir(cmd, 0755), 0);
	{
		char path[160];

		snprintf(path, sizeof(path), "%s/cgroup.freeze", cmd);
		f = fopen(path, "we");
		assert_non_null(f);
		fputs("0\n", f);
		assert_int_equal(fclose(f), 0);
	}

	assert_int_equal(cgrp_kill(dir, cmd, &frozen), 3);
	assert_true(frozen);
	for (int i = 0; i < 3; i++) {
		int status;

		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), SIGKILL);
	}
	{
		char path[160];

		snprintf(path, sizeof(path), "%s/cgroup.freeze", cmd);
		f = fopen(path, "re");
		assert_non_null(f);
		assert_non_null(fgets(buf, sizeof(buf), f));
		fclose(f);
		assert_string_equal(buf, "0\n");   /* thawed again */
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kill_walks_subtree),
		cmocka_unit_test_setup_teardown(test_hello_welcome_report, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hello_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_report_before_hello, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_closes_only_that_peer, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_wrong_version, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_reader_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admin_as_root, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admin_seq_zero, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admin_refused_for_other_uid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admin_with_many_groups, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admin_gid_change_applies_to_open_connections,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listen_live_and_stale, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bye_on_free, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
