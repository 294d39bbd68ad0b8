/* SPDX-License-Identifier: MIT */
/*
 * memguardd under faults and hostile peers, on a fixture cgroup tree:
 * connection churn without leaks, a client that never reads, every fuzz
 * seed and its truncations over a real socket, a storm of SIGHUPs with
 * broken configs, a socket it cannot create (also in a read-only or full
 * runtime directory), a client killed mid-message, the socket's mode and group,
 * names that try to leave the cgroup root.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto/proto.h"
#include "tests/integration/fixture.h"

#define MiB FIXTURE_MiB

static struct fixture fx;

#define CONFIG "[daemon]\ntick = 50ms\nsocket_group = %s\n[web]\ncgroup = web\nbudget = 100M\n"

/* The group the socket is given: one that exists on any Debian system. */
static const char *test_group(void)
{
	return getgrnam("nogroup") ? "nogroup" : "root";
}

static int setup(void **state)
{
	fixture_init(&fx, "test-faults", "web");
	/* In a directory the daemon must make. */
	snprintf(fx.sock, sizeof(fx.sock), "%s/run/memguardd.sock", fx.dir);
	fixture_cgroup(&fx, "web", 85 * MiB);
	fixture_put(&fx, "memguard.conf", CONFIG, test_group());
	fixture_start(&fx, NULL, NULL, "notice");
	return 0;
}

static int teardown(void **state)
{
	int status = fixture_stop(&fx, SIGTERM);
	char mnt[128];

	/* What test_runtime_dir_read_only_or_full mounted, even if it failed. */
	snprintf(mnt, sizeof(mnt), "%s/ro", fx.dir);
	(void)umount2(mnt, MNT_DETACH);
	snprintf(mnt, sizeof(mnt), "%s/full", fx.dir);
	(void)umount2(mnt, MNT_DETACH);

	/* Whatever the test did, the daemon stopped cleanly. */
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	fixture_done(&fx);
	return 0;
}

static int hello(const char *service)
{
	struct mg_msg m;
	int fd = fixture_hello(&fx, service, "test-faults", 0);

	assert_int_equal(fixture_recv(fd, &m, 3000), 0);
	assert_int_equal(m.hdr.type, MG_MSG_WELCOME);
	return fd;
}

/* The daemon answers STATUS: it is alive and serving. */
static void assert_serving(void)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_STATUS, .seq = 4 } };
	int fd = fixture_connect(&fx, NULL);

	fixture_send(fd, &m);
	do
		assert_int_equal(fixture_recv(fd, &m, 3000), 0);
	while (m.hdr.type != MG_MSG_RESULT);
	assert_int_equal(m.result.code, MG_ERR_OK);
	close(fd);
}

static long rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		sscanf(line, "VmRSS: %ld", &kb);
	fclose(f);
	return kb;
}

/* 10 000 register/disconnect cycles leave no fd and no memory behind. */
static void test_churn_leaks_nothing(void **state)
{
	int fds0, fds1;
	long rss0, rss1;

	/* Warm up allocator caches before the baseline. */
	for (int i = 0; i < 200; i++)
		close(hello("web"));
	assert_serving();
	usleep(200000);                  /* the daemon sees the last close */
	fds0 = fixture_count_fds(fx.daemon);
	rss0 = rss_kb(fx.daemon);
	for (int i = 0; i < 10000; i++) {
		int fd = hello(i % 2 ? "web" : "");

		close(fd);
	}
	assert_serving();
	usleep(200000);
	fds1 = fixture_count_fds(fx.daemon);
	rss1 = rss_kb(fx.daemon);
	print_message("fds %d -> %d, RSS %ld -> %ld KiB\n", fds0, fds1, rss0, rss1);
	assert_int_equal(fds1, fds0);
#ifdef __SANITIZE_ADDRESS__
	/* ASan holds freed memory in its quarantine (256 MiB): RSS says
	 * nothing there; LeakSanitizer checks the daemon at exit instead. */
	print_message("RSS not checked: AddressSanitizer build\n");
#else
	assert_true(rss1 - rss0 <= 1024);
#endif
}

/* A client that never reads is dropped at its queue bound; another client
 * goes on receiving directives meanwhile. */
static void test_non_reader_dropped(void **state)
{
	struct mg_msg m;
	int slow = hello("web"), good = hello("web"), admin = fixture_connect(&fx, NULL);
	bool dropped = false;

	for (int i = 0; i < 3000 && !dropped; i++) {
		struct pollfd p = { .fd = slow, .events = 0 };

		m = (struct mg_msg){ .hdr = { .type = MG_MSG_SET_BUDGET } };
		strcpy(m.set_budget.service, "web");
		/* 90..104 MiB for 85 MiB in use: WARN or CRITICAL, and a new
		 * soft limit, hence a new directive, every time. */
		m.set_budget.budget = (90 + (uint64_t)(i % 15)) * MiB;
		fixture_send(admin, &m);
		assert_int_equal(fixture_recv(admin, &m, 3000), 0);
		assert_int_equal(m.result.code, MG_ERR_OK);
		/* Drain the good one as a live client would. */
		while (fixture_recv(good, &m, 0) == 0)
			;
		dropped = poll(&p, 1, 0) == 1 && (p.revents & POLLHUP);
	}
	assert_true(dropped);
	/* The good client is still registered and served. */
	m = (struct mg_msg){ .hdr = { .type = MG_MSG_SET_BUDGET } };
	strcpy(m.set_budget.service, "web");
	m.set_budget.budget = 90 * MiB;
	fixture_send(admin, &m);
	for (;;) {
		assert_int_equal(fixture_recv(good, &m, 3000), 0);
		if (m.hdr.type == MG_MSG_DIRECTIVE && m.directive.level >= MG_LEVEL_WARN)
			break;
	}
	close(slow);
	close(good);
	close(admin);
}

/* Every fuzz seed, each truncation of it and each with one byte flipped,
 * over a real socket: a bad one closes only its connection. */
static void test_corpus_over_socket(void **state)
{
	const char *data = getenv("MG_TEST_DATA");
	char corpus[512];
	struct dirent *e;
	int good = hello("web"), sent = 0;
	DIR *d;

	assert_non_null(data);
	snprintf(corpus, sizeof(corpus), "%s/../fuzz/corpus/proto", data);
	d = opendir(corpus);
	assert_non_null(d);
	while ((e = readdir(d))) {
		uint8_t buf[MG_MSG_MAX];
		char path[800];
		ssize_t n;
		int f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", corpus, e->d_name);
		f = open(path, O_RDONLY | O_CLOEXEC);
		assert_true(f >= 0);
		n = read(f, buf, sizeof(buf));
		close(f);
		assert_true(n > 0);
		for (ssize_t len = 1; len <= n; len++)
			for (ssize_t flip = -1; flip < len; flip += len > 24 ? 7 : 1) {
				uint8_t msg[MG_MSG_MAX];
				struct mg_msg m;
				int fd = fixture_connect(&fx, NULL);

				memcpy(msg, buf, (size_t)len);
				if (flip >= 0)
					msg[flip] ^= 0xa5;
				if (send(fd, msg, (size_t)len, MSG_NOSIGNAL) < 0)
					fail_msg("send: %s", strerror(errno));
				/* An answer or a close; never silence forever. */
				(void)fixture_recv(fd, &m, 50);
				close(fd);
				sent++;
			}
	}
	closedir(d);
	print_message("%d hostile datagrams sent\n", sent);
	assert_true(sent > 1000);
	assert_serving();
	{
		struct mg_msg m = { .hdr = { .type = MG_MSG_REPORT } };

		fixture_send(good, &m);
	}
	assert_serving();
	close(good);
}

/* 100 SIGHUPs within a second, every other one to a broken file: the
 * daemon lives, and the last good configuration is in force. */
static void test_sighup_storm(void **state)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_STATUS, .seq = 3 } };
	int fd, services = -1;

	for (int i = 0; i < 100; i++) {
		if (i % 2)
			fixture_put(&fx, "memguard.conf", "[web]\nbudget = %dQ\n", i);
		else
			fixture_put(&fx, "memguard.conf", "[daemon]\ntick = 50ms\n[web]\ncgroup = web\n"
					     "budget = %dM\n[svc%d]\ncgroup = other\n",
			    100 + i, i);
		assert_int_equal(kill(fx.daemon, SIGHUP), 0);
		usleep(10000);
	}
	fixture_put(&fx, "memguard.conf", "[daemon]\ntick = 50ms\n[web]\ncgroup = web\nbudget = 77M\n");
	kill(fx.daemon, SIGHUP);
	usleep(300000);

	fd = fixture_connect(&fx, NULL);
	fixture_send(fd, &m);
	for (;;) {
		assert_int_equal(fixture_recv(fd, &m, 3000), 0);
		if (m.hdr.type == MG_MSG_STATUS_DAEMON)
			services = (int)m.status_daemon.services;
		if (m.hdr.type == MG_MSG_STATUS_SERVICE)
			assert_int_equal(m.status_service.budget, 77 * MiB);
		if (m.hdr.type == MG_MSG_RESULT)
			break;
	}
	assert_int_equal(services, 1);
	close(fd);
}

/* SIGHUP the moment the socket appears, before the loop runs (as a
 * `systemctl reload` right after start would): the daemon must live. */
static void test_sighup_during_start(void **state)
{
	char sock[128];

	snprintf(sock, sizeof(sock), "%s/early.sock", fx.dir);
	for (int i = 0; i < 20; i++) {
		struct mg_msg m = { .hdr = { .type = MG_MSG_STATUS, .seq = 1 } };
		pid_t pid = fixture_start(&fx, sock, NULL, "warning");
		int status, fd;

		while (access(sock, F_OK) < 0)
			;
		kill(pid, SIGHUP);
		fd = fixture_connect_wait(sock, 300);
		assert_true(fd >= 0);
		fixture_send(fd, &m);
		do
			assert_int_equal(fixture_recv(fd, &m, 3000), 0);
		while (m.hdr.type != MG_MSG_RESULT);
		close(fd);
		assert_int_equal(waitpid(pid, &status, WNOHANG), 0);
		kill(pid, SIGTERM);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
}

/* memguardd started with `sock` in a place it cannot use: exit 1 and one
 * clear line naming the path and `reason` (strerror's; "" for any). */
static void assert_start_fails(const char *sock, const char *reason)
{
	char err[128], text[2048] = "";
	int status, fd;
	ssize_t n;
	pid_t pid;

	snprintf(err, sizeof(err), "%s/stderr", fx.dir);
	pid = fixture_start(&fx, sock, err, "notice");
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 1);
	fd = open(err, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	assert_true(n > 0);
	print_message("%s", text);
	assert_non_null(strstr(text, sock));
	assert_non_null(strstr(text, reason));
}

/* A socket that cannot be created: a clear error naming it, exit 1. */
static void test_unusable_socket_dir(void **state)
{
	/* Cannot make the directory; cannot bind there. */
	assert_start_fails("/proc/memguard-test/memguardd.sock", "");
	assert_start_fails("/proc/self/memguardd.sock", "");
}

/* A client SIGKILLed mid-message.  On SOCK_SEQPACKET a datagram arrives
 * whole or not at all, so that is a peer killed with datagrams in flight
 * both ways: it sends REPORTs and RELEASEDs as fast as it can while the
 * daemon sends it directives (the budget changes under it).  The daemon
 * reads what arrived, drops the dead peer and keeps serving, with no
 * descriptor left behind.  50 rounds, killed after 0..5 ms. */
static void test_client_killed_mid_message(void **state)
{
	int admin = fixture_connect(&fx, NULL), good = hello("web"), fds0, fds1;
	struct mg_msg m;

	usleep(200000);
	fds0 = fixture_count_fds(fx.daemon);
	for (int round = 0; round < 50; round++) {
		int status, ready[2];
		char c;
		pid_t pid;

		assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			/* No cmocka here: a failed assert would go on running
			 * the parent's tests in this process. */
			int fd;

			fixture_map_pid(&fx, getpid(), "web");
			fd = fixture_hello(&fx, "web", "killed", 0);
			if (fixture_recv(fd, &m, 3000) < 0 || m.hdr.type != MG_MSG_WELCOME)
				_exit(2);
			(void)write(ready[1], "x", 1);
			for (uint32_t seq = 2;; seq++) {
				m = (struct mg_msg){ .hdr = { .type = seq % 2 ? MG_MSG_REPORT
									     : MG_MSG_RELEASED,
							      .seq = seq } };
				m.report.heap_sys = 64 * MiB;
				m.report.heap_inuse = 32 * MiB;
				if (m.hdr.type == MG_MSG_RELEASED)
					m.released = (struct mg_released){ .bytes = MiB, .usec = 10 };
				fixture_send(fd, &m);
			}
		}
		close(ready[1]);
		assert_int_equal(read(ready[0], &c, 1), 1);
		close(ready[0]);
		/* A directive on its way to the client as it dies. */
		m = (struct mg_msg){ .hdr = { .type = MG_MSG_SET_BUDGET, .seq = 3 } };
		strcpy(m.set_budget.service, "web");
		m.set_budget.budget = (round % 2 ? 90 : 200) * MiB;
		fixture_send(admin, &m);
		usleep((useconds_t)(round % 6) * 1000);
		kill(pid, SIGKILL);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), SIGKILL);   /* not dropped: killed */
		assert_int_equal(fixture_recv(admin, &m, 3000), 0);
		assert_int_equal(m.result.code, MG_ERR_OK);
		while (fixture_recv(good, &m, 0) == 0)
			fixture_pong(good, &m);
	}
	assert_serving();
	/* The client that stayed is still served.  The last round left the
	 * service CRITICAL (90 MiB); once what was queued is drained, a
	 * NORMAL directive can only come from this change (85 of 120 MiB). */
	usleep(200000);
	while (fixture_recv(good, &m, 0) == 0)
		fixture_pong(good, &m);
	m = (struct mg_msg){ .hdr = { .type = MG_MSG_SET_BUDGET } };
	strcpy(m.set_budget.service, "web");
	m.set_budget.budget = 120 * MiB;
	fixture_send(admin, &m);
	for (;;) {
		assert_int_equal(fixture_recv(good, &m, 3000), 0);
		if (m.hdr.type == MG_MSG_DIRECTIVE && m.directive.level == MG_LEVEL_NORMAL)
			break;
		fixture_pong(good, &m);
	}
	/* ...and the 50 dead ones left nothing open. */
	for (int i = 0; i < 100 && (fds1 = fixture_count_fds(fx.daemon)) != fds0; i++)
		usleep(20000);
	print_message("daemon fds %d -> %d after 50 clients killed mid-message\n", fds0, fds1);
	assert_int_equal(fds1, fds0);
	close(good);
	close(admin);
}

/* A read-only runtime directory and a full one (a tmpfs with no inode
 * left), each with the socket in it and in a directory still to be made.
 * The mounts live in a mount namespace of this test's own. */
static void test_runtime_dir_read_only_or_full(void **state)
{
	char ro[128], full[128], sock[192], name[256];
	int n = 0;

	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		print_message("cannot make a mount namespace: %s\n", strerror(errno));
		skip();
	}
	snprintf(ro, sizeof(ro), "%s/ro", fx.dir);
	snprintf(full, sizeof(full), "%s/full", fx.dir);
	assert_int_equal(mkdir(ro, 0755), 0);
	assert_int_equal(mkdir(full, 0755), 0);
	/* mode=0755: a runtime directory others may write is refused
	 * before anything is tried in it (memguardd(8), SECURITY). */
	assert_int_equal(mount("tmpfs", ro, "tmpfs", MS_RDONLY, "size=64k,mode=0755"), 0);
	assert_int_equal(mount("tmpfs", full, "tmpfs", 0, "size=64k,nr_inodes=16,mode=0755"), 0);
	for (;; n++) {
		int fd;

		snprintf(name, sizeof(name), "%s/f%d", full, n);
		fd = open(name, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0) {
			assert_int_equal(errno, ENOSPC);
			break;
		}
		close(fd);
	}
	print_message("the full tmpfs took %d files\n", n);

	snprintf(sock, sizeof(sock), "%s/memguardd.sock", ro);
	assert_start_fails(sock, "Read-only file system");
	snprintf(sock, sizeof(sock), "%s/run/memguardd.sock", ro);
	assert_start_fails(sock, "Read-only file system");
	snprintf(sock, sizeof(sock), "%s/memguardd.sock", full);
	assert_start_fails(sock, "No space left on device");
	snprintf(sock, sizeof(sock), "%s/run/memguardd.sock", full);
	assert_start_fails(sock, "No space left on device");

	assert_serving();                /* the daemon of setup() never noticed */
}

/* Start a daemon on `sock` that must stop at its configuration: its exit
 * status, and what it said on standard error in `text`. */
static int start_to_exit(const char *sock, char *text, size_t size)
{
	char err[128];
	int status, fd;
	ssize_t n;
	pid_t pid;

	snprintf(err, sizeof(err), "%s/stderr", fx.dir);
	pid = fixture_start(&fx, sock, err, "notice");
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	fd = open(err, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	n = read(fd, text, size - 1);
	close(fd);
	assert_true(n > 0);
	text[n] = 0;
	return WEXITSTATUS(status);
}

/* A broken configuration at start: each problem as FILE:LINE, exit 78
 * (EX_CONFIG, which the unit does not restart on). */
static void test_broken_config_exit_status(void **state)
{
	char sock[128], text[2048];

	fixture_put(&fx, "memguard.conf", "[web]\nbudget = 12X\nwarm = 50%%\n");
	snprintf(sock, sizeof(sock), "%s/other.sock", fx.dir);
	assert_int_equal(start_to_exit(sock, text, sizeof(text)), 78);
	assert_non_null(strstr(text, "memguard.conf:2: invalid budget '12X'"));
	assert_non_null(strstr(text, "memguard.conf:3: unknown key 'warm'"));
	assert_int_equal(access(sock, F_OK), -1);
}

/* A configuration that cannot be read is not a broken one: exit 1, as
 * memguardd(8) says (the unit restarts the daemon on it), and why. */
static void test_unreadable_config_exit_status(void **state)
{
	char conf[128], moved[128], sock[128], text[2048];
	int status;

	snprintf(conf, sizeof(conf), "%s/memguard.conf", fx.dir);
	snprintf(moved, sizeof(moved), "%s/memguard.conf.moved", fx.dir);
	snprintf(sock, sizeof(sock), "%s/other.sock", fx.dir);
	assert_int_equal(rename(conf, moved), 0);
	status = start_to_exit(sock, text, sizeof(text));
	assert_int_equal(rename(moved, conf), 0);
	assert_int_equal(status, 1);
	assert_non_null(strstr(text, "memguard.conf: No such file or directory"));
	assert_int_equal(access(sock, F_OK), -1);
}

static void test_socket_mode_and_group(void **state)
{
	struct stat st;

	assert_int_equal(stat(fx.sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0660);
	assert_int_equal(st.st_gid, getgrnam(test_group())->gr_gid);
}

/* Names that try to climb out of the cgroup root find nothing. */
static void test_traversal_names_refused(void **state)
{
	static const char *names[] = { "..", "../web", "web/../../etc", "/etc", "web/.." };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct mg_msg m;
		int fd = fixture_hello(&fx, names[i], "", 0);

		assert_int_equal(fixture_recv(fd, &m, 3000), 0);
		assert_int_equal(m.hdr.type, MG_MSG_ERROR);
		assert_int_equal(m.error.code, MG_ERR_NO_SERVICE);
		close(fd);

		fd = fixture_connect(&fx, NULL);
		m = (struct mg_msg){ .hdr = { .type = MG_MSG_SET_BUDGET, .seq = 2 } };
		strcpy(m.set_budget.service, names[i]);
		m.set_budget.budget = MiB;
		fixture_send(fd, &m);
		assert_int_equal(fixture_recv(fd, &m, 3000), 0);
		assert_int_equal(m.hdr.type, MG_MSG_RESULT);
		assert_int_equal(m.result.code, MG_ERR_NO_SERVICE);
		close(fd);
	}
	/* And a configuration cannot name one either. */
	fixture_put(&fx, "memguard.conf", "[evil]\ncgroup = ../../etc\nbudget = 1M\n");
	kill(fx.daemon, SIGHUP);
	usleep(200000);
	assert_serving();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_churn_leaks_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_non_reader_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corpus_over_socket, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sighup_storm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sighup_during_start, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unusable_socket_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_runtime_dir_read_only_or_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_killed_mid_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_broken_config_exit_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreadable_config_exit_status, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_socket_mode_and_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_traversal_names_refused, setup, teardown),
	};

	if (geteuid() != 0) {
		printf("SKIP: needs root (admin requests and socket groups)\n");
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
