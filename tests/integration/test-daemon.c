/* SPDX-License-Identifier: MIT */
/*
 * The real memguardd on a fixture cgroup tree: regular files that this
 * test rewrites to play the kernel.  Registration, directives with the
 * control law's numbers, the NORMAL directive, enforce=high writing and
 * restoring memory.high, reload (good and broken), refusals, a client that
 * dies, clean shutdown.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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

#include "daemon/policy.h"
#include "proto/proto.h"

#define MiB (1024ULL * 1024)
#define BUDGET (100 * MiB)

static char dir[64];
static pid_t daemon_pid;

static void put(const char *rel, const char *fmt, ...)
{
	char path[512], tmp[520];
	va_list ap;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "we");
	assert_non_null(f);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	assert_int_equal(fclose(f), 0);
	/* rename: the daemon holds the old file open and preads it, so write
	 * in place instead when the file exists. */
	if (access(path, F_OK) == 0) {
		char buf[4096];
		size_t n;
		int fd;

		f = fopen(tmp, "re");
		n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		unlink(tmp);
		fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, buf, n), (ssize_t)n);
		close(fd);
	} else
		assert_int_equal(rename(tmp, path), 0);
}

static char *get(const char *rel, char *buf, size_t size)
{
	char path[512];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	f = fopen(path, "re");
	assert_non_null(f);
	n = fread(buf, 1, size - 1, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

static void mkdirs(const char *rel)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	assert_int_equal(mkdir(path, 0755), 0);
}

/* A v2 cgroup of fixture files with `current` bytes in use. */
static void cgroup_files(const char *cg, uint64_t current)
{
	char p[256];

	snprintf(p, sizeof(p), "cg/%s", cg);
	mkdirs(p);
#define F(name, ...) do { snprintf(p, sizeof(p), "cg/%s/" name, cg); put(p, __VA_ARGS__); } while (0)
	F("memory.current", "%llu\n", (unsigned long long)current);
	F("memory.stat", "anon %llu\nfile 0\ninactive_file 0\n", (unsigned long long)current);
	F("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n");
	F("memory.max", "max\n");
	F("memory.high", "max\n");
	F("cgroup.kill", "0\n");
	F("memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
			     "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
#undef F
}

static void set_usage(const char *cg, uint64_t current)
{
	char p[256];

	snprintf(p, sizeof(p), "cg/%s/memory.current", cg);
	put(p, "%llu\n", (unsigned long long)current);
	snprintf(p, sizeof(p), "cg/%s/memory.stat", cg);
	put(p, "anon %llu\nfile 0\ninactive_file 0\n", (unsigned long long)current);
}

static const char *config_good =
	"[daemon]\n"
	"tick = 50ms\n"
	"log_level = debug\n"
	"[web]\n"
	"cgroup = web\n"
	"budget = 100M\n"
	"release_deadline = 200ms\n"
	"enforce = high\n"
	"[batch]\n"
	"cgroup = batch\n"
	"budget = 100M\n"
	"release_deadline = 200ms\n"
	"enforce = kill\n";

/* Start memguardd on the fixture tree and wait for its socket. */
static void start_daemon(void)
{
	const char *exe = getenv("MEMGUARDD");
	char sock[128];

	snprintf(sock, sizeof(sock), "%s/memguardd.sock", dir);
	daemon_pid = fork();
	assert_true(daemon_pid >= 0);
	if (daemon_pid == 0) {
		char conf[128], root[128], proc[128];

		snprintf(conf, sizeof(conf), "%s/memguard.conf", dir);
		snprintf(root, sizeof(root), "%s/cg", dir);
		snprintf(proc, sizeof(proc), "%s/proc", dir);
		execl(exe ? exe : "daemon/memguardd", "memguardd", "--config", conf, "--socket",
		      sock, "--cgroup-root", root, "--proc-root", proc, NULL);
		_exit(127);
	}
	for (int i = 0; i < 200; i++) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		int ok;

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", sock);
		ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		close(fd);
		if (ok)
			return;
		usleep(10000);
	}
	fail_msg("memguardd did not start");
}

static int setup(void **state)
{
	char self[64];

	strcpy(dir, "/tmp/mg-test-daemon-XXXXXX");
	assert_non_null(mkdtemp(dir));
	mkdirs("cg");
	mkdirs("proc");
	mkdirs("proc/self");
	mkdirs("proc/pressure");
	snprintf(self, sizeof(self), "proc/%d", (int)getpid());
	mkdirs(self);
	put("proc/self/mountinfo", "41 31 0:38 / %s/cg rw,relatime - cgroup2 cgroup2 rw\n", dir);
	put("proc/meminfo", "MemTotal:       16000000 kB\nMemAvailable:   8000000 kB\n");
	put("proc/pressure/memory", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
				    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
	/* This test process plays every client: it sits in cgroup "web". */
	snprintf(self, sizeof(self), "proc/%d/cgroup", (int)getpid());
	put(self, "0::/web\n");
	cgroup_files("web", 10 * MiB);
	cgroup_files("batch", 10 * MiB);
	put("memguard.conf", "%s", config_good);

	start_daemon();
	*state = NULL;
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];
	int status;

	if (daemon_pid > 0) {
		kill(daemon_pid, SIGTERM);
		assert_int_equal(waitpid(daemon_pid, &status, 0), daemon_pid);
		daemon_pid = 0;
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static int connect_daemon(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/memguardd.sock", dir);
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

/* Wait up to `ms` for a message; 0, -ETIMEDOUT, or -ECONNRESET on EOF. */
static int recv_msg(int fd, struct mg_msg *m, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint8_t buf[MG_MSG_MAX];
	ssize_t n;

	if (poll(&p, 1, ms) == 0)
		return -ETIMEDOUT;
	n = recv(fd, buf, sizeof(buf), 0);
	if (n <= 0)
		return -ECONNRESET;
	return proto_msg_decode(buf, (size_t)n, m);
}

/* Wait for a DIRECTIVE at `level`, skipping others and PINGs. */
static void await_level(int fd, enum mg_level level, struct mg_directive *ret)
{
	struct mg_msg m;

	for (int i = 0; i < 100; i++) {
		assert_int_equal(recv_msg(fd, &m, 3000), 0);
		if (m.hdr.type == MG_MSG_DIRECTIVE && m.directive.level == level) {
			*ret = m.directive;
			return;
		}
	}
	fail_msg("no %s directive", proto_level_name(level));
}

static int hello(const char *service, struct mg_msg *ret)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_HELLO, .seq = 1 } };
	int fd = connect_daemon();

	m.hello.capabilities = MG_CAP_ALL;
	snprintf(m.hello.service, sizeof(m.hello.service), "%s", service);
	strcpy(m.hello.process, "test-daemon");
	send_msg(fd, &m);
	assert_int_equal(recv_msg(fd, ret, 3000), 0);
	return fd;
}

static void status(struct mg_status_service *web, struct mg_status_daemon *d)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_STATUS, .seq = 9 } };
	int fd = connect_daemon();

	send_msg(fd, &m);
	for (;;) {
		assert_int_equal(recv_msg(fd, &m, 3000), 0);
		assert_int_equal(m.hdr.seq, 9);
		if (m.hdr.type == MG_MSG_STATUS_DAEMON && d)
			*d = m.status_daemon;
		if (m.hdr.type == MG_MSG_STATUS_SERVICE && !strcmp(m.status_service.name, "web"))
			*web = m.status_service;
		if (m.hdr.type == MG_MSG_RESULT)
			break;
	}
	assert_int_equal(m.result.code, MG_ERR_OK);
	close(fd);
}

static void test_register_and_levels(void **state)
{
	struct conf_service svc = { .warn = CONF_DEFAULT_WARN, .critical = CONF_DEFAULT_CRITICAL,
				    .min_gc_percent = CONF_DEFAULT_MIN_GC_PERCENT,
				    .max_throttle = CONF_DEFAULT_MAX_THROTTLE };
	struct mg_status_service web = { 0 };
	struct mg_directive d;
	struct mg_msg m;
	double out;
	int fd = hello("", &m);

	assert_int_equal(m.hdr.type, MG_MSG_WELCOME);
	assert_string_equal(m.welcome.service, "web");
	assert_int_equal(m.welcome.budget, BUDGET);
	assert_int_equal(m.welcome.directive.level, MG_LEVEL_NORMAL);

	/* 85 % of the budget: WARN with the law's gc percent. */
	set_usage("web", BUDGET * 85 / 100);
	await_level(fd, MG_LEVEL_WARN, &d);
	out = policy_output(POLICY_DEFAULT_CP, svc.warn, BUDGET * 85 / 100, BUDGET);
	assert_int_equal(d.gc_percent, policy_gc_percent(MG_LEVEL_WARN, out, svc.min_gc_percent));
	assert_int_equal(d.throttle, 0);
	assert_int_equal(d.soft_limit, BUDGET * 80 / 100);
	assert_int_equal(d.release, BUDGET * 85 / 100 - BUDGET * 80 / 100);

	/* 93 %: CRITICAL, throttling, with a deadline. */
	set_usage("web", BUDGET * 93 / 100);
	await_level(fd, MG_LEVEL_CRITICAL, &d);
	out = policy_output(POLICY_DEFAULT_CP, svc.warn, BUDGET * 93 / 100, BUDGET);
	assert_int_equal(d.gc_percent,
			 policy_gc_percent(MG_LEVEL_CRITICAL, out, svc.min_gc_percent));
	assert_int_equal(d.throttle, policy_throttle(MG_LEVEL_CRITICAL, out, svc.max_throttle));
	assert_true(d.throttle > 0);
	assert_int_equal(d.deadline_ms, 200);

	status(&web, NULL);
	assert_int_equal(web.level, MG_LEVEL_CRITICAL);
	assert_int_equal(web.clients, 1);
	assert_int_equal(web.working_set, BUDGET * 93 / 100);
	assert_int_equal(web.utilization, 9300);

	/* Back down: the NORMAL ("cleared") directive restores defaults. */
	set_usage("web", BUDGET * 40 / 100);
	await_level(fd, MG_LEVEL_NORMAL, &d);
	assert_int_equal(d.gc_percent, MG_GC_DEFAULT);
	assert_int_equal(d.throttle, 0);
	assert_int_equal(d.release, 0);
	close(fd);
}

static void test_released_is_recorded(void **state)
{
	struct mg_status_service web = { 0 };
	struct mg_msg m;
	int fd = hello("web", &m);
	uint32_t seq = 0;

	set_usage("web", BUDGET * 85 / 100);
	for (int i = 0; i < 100 && !seq; i++) {
		assert_int_equal(recv_msg(fd, &m, 3000), 0);
		if (m.hdr.type == MG_MSG_DIRECTIVE && m.directive.release > 0)
			seq = m.hdr.seq;
	}
	assert_true(seq != 0);
	m = (struct mg_msg){ .hdr = { .type = MG_MSG_RELEASED } };
	m.released.directive_seq = seq;
	m.released.bytes = 4 * MiB;
	m.released.usec = 1500;
	send_msg(fd, &m);
	usleep(200000);
	status(&web, NULL);
	assert_int_equal(web.released_total, 4 * MiB);
	close(fd);
}

/* enforce=high: past the deadline at EMERGENCY, memory.high = budget; back
 * at NORMAL, the old value returns. */
static void test_enforce_high_writes_and_restores(void **state)
{
	char buf[64];
	struct mg_msg m;
	struct mg_directive d;
	int fd = hello("web", &m);

	set_usage("web", BUDGET * 105 / 100);
	await_level(fd, MG_LEVEL_EMERGENCY, &d);
	for (int i = 0; i < 100 && !strcmp(get("cg/web/memory.high", buf, sizeof(buf)), "max\n");
	     i++)
		usleep(20000);
	assert_int_equal(strtoull(buf, NULL, 10), BUDGET);

	set_usage("web", BUDGET * 30 / 100);
	await_level(fd, MG_LEVEL_NORMAL, &d);
	for (int i = 0; i < 100 && strcmp(get("cg/web/memory.high", buf, sizeof(buf)), "max\n");
	     i++)
		usleep(20000);
	assert_string_equal(buf, "max\n");
	close(fd);
}

/* Wait until the fixture file `rel` no longer holds `was`. */
static char *await_change(const char *rel, const char *was, char *buf, size_t size)
{
	for (int i = 0; i < 150 && !strcmp(get(rel, buf, size), was); i++)
		usleep(20000);
	return buf;
}

/* enforce=kill: memory.high first; the kill only when usage stays above
 * the budget a further deadline while memory.events max grows. */
static void test_enforce_kill_needs_growth(void **state)
{
	char buf[64];

	set_usage("batch", BUDGET * 110 / 100);
	assert_int_equal(strtoull(await_change("cg/batch/memory.high", "max\n", buf,
						 sizeof(buf)), NULL, 10), BUDGET);
	/* No max/oom growth: no kill, however long. */
	usleep(600000);
	assert_string_equal(get("cg/batch/cgroup.kill", buf, sizeof(buf)), "0\n");

	put("cg/batch/memory.events", "low 0\nhigh 3\nmax 7\noom 0\noom_kill 0\n");
	assert_string_equal(await_change("cg/batch/cgroup.kill", "0\n", buf, sizeof(buf)), "1\n");
}

/* Admin requests over the real socket from a peer that is not root. */
static void test_non_admin_refused(void **state)
{
	char sock[128];
	int status;
	pid_t pid;

	snprintf(sock, sizeof(sock), "%s/memguardd.sock", dir);
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(chmod(sock, 0666), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		static const uint16_t types[] = { MG_MSG_STATUS, MG_MSG_CLIENTS, MG_MSG_RELEASE,
						  MG_MSG_RELOAD, MG_MSG_SET_BUDGET };

		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(10);
		for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
			struct mg_msg m = { .hdr = { .type = types[i], .seq = 5 } };
			int fd = connect_daemon();

			strcpy(m.release.service, "web");
			if (types[i] == MG_MSG_SET_BUDGET) {
				strcpy(m.set_budget.service, "web");
				m.set_budget.budget = 1;
			}
			send_msg(fd, &m);
			if (recv_msg(fd, &m, 3000) < 0 || m.hdr.type != MG_MSG_RESULT ||
			    m.result.code != MG_ERR_PERMISSION)
				_exit(11 + (int)i);
			if (recv_msg(fd, &m, 3000) != -ECONNRESET)
				_exit(20 + (int)i);
			close(fd);
		}
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_wrong_service_refused(void **state)
{
	struct mg_msg m;
	int fd = hello("batch", &m);

	assert_int_equal(m.hdr.type, MG_MSG_ERROR);
	assert_int_equal(m.error.code, MG_ERR_SERVICE);
	assert_non_null(strstr(m.error.text, "batch"));
	assert_int_equal(recv_msg(fd, &m, 3000), -ECONNRESET);
	close(fd);

	fd = hello("nosuch", &m);
	assert_int_equal(m.hdr.type, MG_MSG_ERROR);
	assert_int_equal(m.error.code, MG_ERR_NO_SERVICE);
	close(fd);
}

static void test_dead_client_removed(void **state)
{
	struct mg_status_service web = { 0 };
	struct mg_msg m;
	int a = hello("web", &m), b = hello("web", &m);

	usleep(100000);
	status(&web, NULL);
	assert_int_equal(web.clients, 2);
	close(a);
	usleep(200000);
	status(&web, NULL);
	assert_int_equal(web.clients, 1);
	close(b);
}

static void test_reload_good_and_broken(void **state)
{
	struct mg_status_daemon d = { 0 };
	struct mg_status_service web = { 0 };
	struct mg_msg m;
	int fd = hello("web", &m);

	/* Broken: reported, and the running config stays. */
	put("memguard.conf", "%s[web2]\nbudget = 12X\n", config_good);
	kill(daemon_pid, SIGHUP);
	usleep(300000);
	status(&web, &d);
	assert_int_equal(d.services, 2);

	/* A runtime budget lasts until the next reload. */
	{
		int a = connect_daemon();

		m = (struct mg_msg){ .hdr = { .type = MG_MSG_SET_BUDGET, .seq = 4 } };
		strcpy(m.set_budget.service, "web");
		m.set_budget.budget = 42 * MiB;
		send_msg(a, &m);
		assert_int_equal(recv_msg(a, &m, 3000), 0);
		assert_int_equal(m.result.code, MG_ERR_OK);
		close(a);
		status(&web, NULL);
		assert_int_equal(web.budget, 42 * MiB);
	}

	/* Good: a service added, web's budget changed, the client kept. */
	cgroup_files("extra", MiB);
	put("memguard.conf", "%s[extra]\ncgroup = extra\nbudget = 10M\n",
	    "[daemon]\ntick = 50ms\n[web]\ncgroup = web\nbudget = 200M\n"
	    "[batch]\ncgroup = batch\nbudget = 100M\n");
	kill(daemon_pid, SIGHUP);
	usleep(300000);
	status(&web, &d);
	assert_int_equal(d.services, 3);
	assert_int_equal(web.budget, 200 * MiB);
	assert_int_equal(web.clients, 1);

	/* The connection survived. */
	m = (struct mg_msg){ .hdr = { .type = MG_MSG_REPORT } };
	send_msg(fd, &m);
	usleep(100000);
	status(&web, NULL);
	assert_int_equal(web.clients, 1);
	close(fd);
}

/* An empty file means the embedded default: the client's own cgroup is
 * a service, its budget the cgroup's memory.high. */
static void test_empty_config_is_the_default(void **state)
{
	struct mg_msg m;
	int fd;

	put("memguard.conf", "# nothing configured\n");
	put("cg/web/memory.high", "%llu\n", 50 * MiB);
	kill(daemon_pid, SIGHUP);
	usleep(300000);
	fd = hello("", &m);
	assert_int_equal(m.hdr.type, MG_MSG_WELCOME);
	assert_string_equal(m.welcome.service, "web");
	assert_int_equal(m.welcome.budget, 50 * MiB);
	close(fd);
}

/* A service removed by a reload: its client stays connected, told NORMAL. */
static void test_reload_removes_service(void **state)
{
	struct mg_status_daemon d = { 0 };
	struct mg_status_service web = { 0 };
	struct mg_directive d_;
	struct mg_msg m;
	int fd = hello("web", &m);

	set_usage("web", BUDGET * 85 / 100);
	await_level(fd, MG_LEVEL_WARN, &d_);
	put("memguard.conf", "[daemon]\ntick = 50ms\n[batch]\ncgroup = batch\nbudget = 100M\n");
	kill(daemon_pid, SIGHUP);
	await_level(fd, MG_LEVEL_NORMAL, &d_);
	status(&web, &d);
	assert_int_equal(d.services, 1);
	assert_int_equal(d.clients, 1);
	close(fd);
}

/* SIGTERM puts back the memory.high the daemon changed. */
static void test_sigterm_restores_memory_high(void **state)
{
	char buf[64];
	struct mg_directive d;
	struct mg_msg m;
	int status_code, fd = hello("web", &m);

	set_usage("web", BUDGET * 105 / 100);
	await_level(fd, MG_LEVEL_EMERGENCY, &d);
	assert_int_equal(strtoull(await_change("cg/web/memory.high", "max\n", buf, sizeof(buf)),
				  NULL, 10), BUDGET);
	kill(daemon_pid, SIGTERM);
	assert_int_equal(waitpid(daemon_pid, &status_code, 0), daemon_pid);
	daemon_pid = 0;
	assert_string_equal(get("cg/web/memory.high", buf, sizeof(buf)), "max\n");
	close(fd);
}

/* A daemon killed while memory.high is escalated: the next one puts the
 * old value back. */
static void test_sigkill_then_restart_puts_memory_high_back(void **state)
{
	char buf[64], state_file[128];
	struct mg_directive d;
	struct mg_msg m;
	int status_code, fd = hello("web", &m);

	set_usage("web", BUDGET * 105 / 100);
	await_level(fd, MG_LEVEL_EMERGENCY, &d);
	assert_int_equal(strtoull(await_change("cg/web/memory.high", "max\n", buf, sizeof(buf)),
				  NULL, 10), BUDGET);
	snprintf(state_file, sizeof(state_file), "%s/escalations", dir);
	assert_int_equal(access(state_file, F_OK), 0);
	close(fd);

	kill(daemon_pid, SIGKILL);
	assert_int_equal(waitpid(daemon_pid, &status_code, 0), daemon_pid);
	assert_int_equal(strtoull(get("cg/web/memory.high", buf, sizeof(buf)), NULL, 10), BUDGET);

	set_usage("web", BUDGET * 30 / 100);
	start_daemon();
	assert_string_equal(get("cg/web/memory.high", buf, sizeof(buf)), "max\n");
	assert_int_equal(access(state_file, F_OK), -1);
}

static void test_sigterm_says_bye_and_cleans_up(void **state)
{
	char sock[128];
	struct mg_msg m;
	int status_code;
	int fd = hello("web", &m);

	kill(daemon_pid, SIGTERM);
	for (;;) {
		int r = recv_msg(fd, &m, 3000);

		assert_int_equal(r, 0);
		if (m.hdr.type == MG_MSG_BYE)
			break;
	}
	assert_int_equal(m.bye.reason, MG_BYE_SHUTDOWN);
	assert_int_equal(waitpid(daemon_pid, &status_code, 0), daemon_pid);
	daemon_pid = 0;
	assert_true(WIFEXITED(status_code));
	assert_int_equal(WEXITSTATUS(status_code), 0);
	snprintf(sock, sizeof(sock), "%s/memguardd.sock", dir);
	assert_int_equal(access(sock, F_OK), -1);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_register_and_levels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_released_is_recorded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enforce_high_writes_and_restores, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_enforce_kill_needs_growth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_non_admin_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_service_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_client_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload_good_and_broken, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_config_is_the_default, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload_removes_service, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigterm_restores_memory_high, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigkill_then_restart_puts_memory_high_back, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_sigterm_says_bye_and_cleans_up, setup,
						teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
