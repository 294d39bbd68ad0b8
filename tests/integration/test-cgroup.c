/* SPDX-License-Identifier: MIT */
/*
 * The real memguardd on real cgroups of this machine: a cgroup nested
 * under the one this test runs in (cgroup2, and on hybrid hosts the v1
 * memory hierarchy too), a client process inside it that registers and
 * grows its memory until it is directed to give some back; a real stall;
 * the service's cgroup removed under the daemon and made again, and its
 * PSI switched off (which is not a removal); on cgroup v1, usage
 * thresholds and the counters an OOM kill moves.  Exits 77
 * (SKIP) with the reason when the machine cannot make such cgroups.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/monitor.h"
#include "daemon/policy.h"
#include "proto/proto.h"

#define MiB (1024UL * 1024)

static struct {
	char v2_root[512];               /* the cgroup2 dir this test runs in */
	char v1_root[512];               /* its v1 memory dir; "" on pure v2 */
	char name[64];                   /* the nested cgroup for the growth test */
	char stall[64];                  /* the nested cgroup for the stall test */
	char sig[64];                    /* the nested cgroup for the v1 signals tests */
	char tmp[64];
	pid_t daemon;
	bool log_to_file;                /* the daemon's stderr to tmp/memguardd.log */
} t;

static int write_str(const char *dir, const char *file, const char *value)
{
	char path[700];
	int fd, r = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, value, strlen(value)) < 0)
		r = -errno;
	close(fd);
	return r;
}

static void cg_dir_of(char *buf, size_t size, const char *root, const char *name)
{
	snprintf(buf, size, "%s/%s", root, name);
}

static const char *make_cgroup(const char *name)
{
	static char reason[1024];
	char dir[700];

	cg_dir_of(dir, sizeof(dir), t.v2_root, name);
	if (mkdir(dir, 0755) < 0) {
		snprintf(reason, sizeof(reason), "cannot create %s: %s", dir, strerror(errno));
		return reason;
	}
	if (t.v1_root[0]) {
		cg_dir_of(dir, sizeof(dir), t.v1_root, name);
		if (mkdir(dir, 0755) < 0) {
			snprintf(reason, sizeof(reason), "cannot create %s: %s", dir,
				 strerror(errno));
			cg_dir_of(dir, sizeof(dir), t.v2_root, name);
			rmdir(dir);
			return reason;
		}
	}
	return NULL;
}

static void remove_cgroup(const char *name)
{
	const char *roots[] = { t.v2_root, t.v1_root };
	char dir[700];

	for (size_t r = 0; r < 2; r++) {
		if (!roots[r][0])
			continue;
		cg_dir_of(dir, sizeof(dir), roots[r], name);
		/* rmdir can race the exit of the last member; retry a little. */
		for (int i = 0; i < 50; i++) {
			if (rmdir(dir) == 0 || errno == ENOENT)
				break;
			usleep(20000);
		}
	}
}

/* Find our own cgroups and make the nested ones; a reason when we can't. */
static const char *prepare(void)
{
	struct monitor_roots roots = { 0 };
	char *v2 = NULL, *v1 = NULL;
	const char *why;
	int r;

	if (geteuid() != 0)
		return "needs root to create cgroups";
	r = monitor_discover("/proc/self/mountinfo", &roots);
	if (r < 0 || !roots.v2)
		return "no cgroup2 hierarchy is mounted";
	r = monitor_pid_cgroup("/proc", getpid(), &v2, &v1);
	if (r < 0 || !v2) {
		monitor_roots_done(&roots);
		return "cannot read /proc/self/cgroup";
	}
	snprintf(t.v2_root, sizeof(t.v2_root), "%s%s", roots.v2, strcmp(v2, "/") ? v2 : "");
	if (roots.v1_memory && v1)
		snprintf(t.v1_root, sizeof(t.v1_root), "%s%s", roots.v1_memory,
			 strcmp(v1, "/") ? v1 : "");
	free(v2);
	free(v1);
	monitor_roots_done(&roots);

	/* Pure v2: the memory controller must reach the nested cgroups. */
	if (!t.v1_root[0] && write_str(t.v2_root, "cgroup.subtree_control", "+memory") < 0)
		return "cannot enable the memory controller below our cgroup";

	snprintf(t.name, sizeof(t.name), "memguard-it-%d", (int)getpid());
	snprintf(t.stall, sizeof(t.stall), "memguard-it-%d-stall", (int)getpid());
	snprintf(t.sig, sizeof(t.sig), "memguard-it-%d-sig", (int)getpid());
	why = make_cgroup(t.name);
	if (why)
		return why;
	why = make_cgroup(t.stall);
	if (why) {
		remove_cgroup(t.name);
		return why;
	}
	return NULL;
}

static void cleanup_cgroups(void)
{
	remove_cgroup(t.name);
	remove_cgroup(t.stall);
}

static int setup(void **state)
{
	const char *exe = getenv("MEMGUARDD");
	char conf[128], sock[128];
	FILE *f;

	strcpy(t.tmp, "/tmp/mg-test-cgroup-XXXXXX");
	assert_non_null(mkdtemp(t.tmp));
	snprintf(conf, sizeof(conf), "%s/memguard.conf", t.tmp);
	snprintf(sock, sizeof(sock), "%s/memguardd.sock", t.tmp);
	f = fopen(conf, "we");
	assert_non_null(f);
	fprintf(f, "[daemon]\ntick = 100ms\nlog_level = debug\n"
		"[it]\ncgroup = %s\nbudget = 64M\n"
		"[stall]\ncgroup = %s\nbudget = 1G\npressure_some = 0.5%%\n",
		t.name, t.stall);
	fclose(f);

	t.daemon = fork();
	assert_true(t.daemon >= 0);
	if (t.daemon == 0) {
		if (t.log_to_file) {
			char log[128];
			int fd;

			snprintf(log, sizeof(log), "%s/memguardd.log", t.tmp);
			fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
			if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
				_exit(126);
		}
		if (t.v1_root[0])
			execl(exe ? exe : "daemon/memguardd", "memguardd", "--config", conf,
			      "--socket", sock, "--cgroup-root", t.v2_root, "--cgroup-v1-root",
			      t.v1_root, NULL);
		else
			execl(exe ? exe : "daemon/memguardd", "memguardd", "--config", conf,
			      "--socket", sock, "--cgroup-root", t.v2_root, NULL);
		_exit(127);
	}
	for (int i = 0; i < 300 && access(sock, F_OK) < 0; i++)
		usleep(10000);
	assert_int_equal(access(sock, F_OK), 0);
	return 0;
}

/* As setup(), with the daemon's log in tmp/memguardd.log for the test to
 * read. */
static int setup_logged(void **state)
{
	t.log_to_file = true;
	return setup(state);
}

static int teardown(void **state)
{
	char cmd[128];
	int status;

	t.log_to_file = false;
	kill(t.daemon, SIGTERM);
	waitpid(t.daemon, &status, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t.tmp);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static int recv_msg(int fd, struct mg_msg *m, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint8_t buf[MG_MSG_MAX];
	ssize_t n;

	if (poll(&p, 1, ms) <= 0)
		return -ETIMEDOUT;
	n = recv(fd, buf, sizeof(buf), 0);
	if (n <= 0)
		return -ECONNRESET;
	return proto_msg_decode(buf, (size_t)n, m);
}

/*
 * The client, in a child process inside the nested cgroup.  Exit codes say
 * which step failed.
 */
/* Join cgroup `name` (both hierarchies), register; the socket or -code. */
static int join_and_register(const char *name, const char *service, uint64_t budget)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct mg_msg m = { .hdr = { .type = MG_MSG_HELLO, .seq = 1 } };
	uint8_t buf[MG_MSG_MAX];
	char dir[700], pid[32];
	int fd, n;

	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	cg_dir_of(dir, sizeof(dir), t.v2_root, name);
	if (write_str(dir, "cgroup.procs", pid) < 0)
		return -10;
	if (t.v1_root[0]) {
		cg_dir_of(dir, sizeof(dir), t.v1_root, name);
		if (write_str(dir, "cgroup.procs", pid) < 0)
			return -11;
	}

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/memguardd.sock", t.tmp);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -12;
	strcpy(m.hello.process, "test-cgroup");
	n = proto_msg_encode(&m, buf, sizeof(buf));
	if (send(fd, buf, (size_t)n, 0) != n)
		return -13;
	if (recv_msg(fd, &m, 5000) < 0 || m.hdr.type != MG_MSG_WELCOME ||
	    strcmp(m.welcome.service, service) || m.welcome.budget != budget)
		return -14;
	return fd;
}

static int client(void)
{
	struct mg_msg m;
	uint8_t *mem;
	int fd = join_and_register(t.name, "it", 64 * MiB);

	if (fd < 0)
		return -fd;

	/* Grow to ~94 % of the budget: CRITICAL must follow. */
	mem = mmap(NULL, 60 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 15;
	memset(mem, 0x5a, 60 * MiB);
	for (int i = 0; i < 100; i++) {
		if (recv_msg(fd, &m, 5000) < 0)
			return 16;
		if (m.hdr.type == MG_MSG_DIRECTIVE && m.directive.level >= MG_LEVEL_CRITICAL)
			break;
	}
	if (m.hdr.type != MG_MSG_DIRECTIVE || m.directive.level < MG_LEVEL_CRITICAL ||
	    m.directive.release == 0)
		return 17;

	/* Give it back: NORMAL follows. */
	munmap(mem, 60 * MiB);
	for (int i = 0; i < 100; i++) {
		if (recv_msg(fd, &m, 5000) < 0)
			return 18;
		if (m.hdr.type == MG_MSG_DIRECTIVE && m.directive.level == MG_LEVEL_NORMAL)
			return 0;
	}
	return 19;
}

#define STALL_FILE_MB 128

/* The daemon's view of a service's PSI some avg10 (bp), from STATUS. */
static int service_some_avg10(const char *service)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct mg_msg m = { .hdr = { .type = MG_MSG_STATUS, .seq = 2 } };
	uint8_t buf[MG_MSG_MAX];
	int fd, n, some = -1;

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/memguardd.sock", t.tmp);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -1;
	n = proto_msg_encode(&m, buf, sizeof(buf));
	if (send(fd, buf, (size_t)n, 0) == n)
		while (recv_msg(fd, &m, 3000) == 0 && m.hdr.type != MG_MSG_RESULT)
			if (m.hdr.type == MG_MSG_STATUS_SERVICE &&
			    !strcmp(m.status_service.name, service))
				some = (int)m.status_service.some_avg10;
	close(fd);
	return some;
}

/*
 * A real memory stall: the page cache of a file twice the cgroup's limit,
 * read over and over, makes every read reclaim (the kernel counts that
 * as memory stall in the cgroup's memory.pressure).  The service's
 * pressure_some threshold must turn that into WARN.
 */
static int stall_client(const char *file)
{
	char dir[700], limit[32], buf[1 << 16];
	bool warned = false, psi_seen = false;
	struct mg_msg m;
	int fd;

	snprintf(limit, sizeof(limit), "%lu\n", 32 * MiB);
	if (t.v1_root[0]) {
		cg_dir_of(dir, sizeof(dir), t.v1_root, t.stall);
		if (write_str(dir, "memory.limit_in_bytes", limit) < 0)
			return 30;
	} else {
		cg_dir_of(dir, sizeof(dir), t.v2_root, t.stall);
		if (write_str(dir, "memory.max", limit) < 0)
			return 30;
	}
	fd = join_and_register(t.stall, "stall", 1024 * MiB);
	if (fd < 0)
		return -fd;
	/* Read until the daemon has both seen the stall in PSI and raised
	 * the level (which memory.events growth may do first). */
	for (int round = 0; round < 200 && !(warned && psi_seen); round++) {
		int f = open(file, O_RDONLY | O_CLOEXEC);

		if (f < 0)
			return 31;
		while (read(f, buf, sizeof(buf)) > 0)
			while (recv_msg(fd, &m, 0) == 0)
				if (m.hdr.type == MG_MSG_DIRECTIVE &&
				    m.directive.level >= MG_LEVEL_WARN)
					warned = true;
		close(f);
		psi_seen = psi_seen || service_some_avg10("stall") >= 50;
	}
	return warned && psi_seen ? 0 : warned ? 32 : 33;
}

static void test_real_stall_raises_level(void **state)
{
	char file[128], block[1 << 16];
	int status, fd;
	pid_t pid;

	/* On disk, not tmpfs: page cache the kernel can reclaim. */
	snprintf(file, sizeof(file), "/var/tmp/memguard-it-%d.data", (int)getpid());
	fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	for (size_t i = 0; i < sizeof(block); i++)
		block[i] = (char)(i * 7);
	for (int i = 0; i < STALL_FILE_MB * 16; i++)
		assert_int_equal(write(fd, block, sizeof(block)), (ssize_t)sizeof(block));
	/* Written here, its pages count against this cgroup: drop them so
	 * the reads charge the nested one. */
	assert_int_equal(fdatasync(fd), 0);
	assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	close(fd);

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(stall_client(file));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	unlink(file);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* The daemon's STATUS_SERVICE of `service`; false when it does not answer
 * with one. */
static bool service_status(const char *service, struct mg_status_service *ret)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct mg_msg m = { .hdr = { .type = MG_MSG_STATUS, .seq = 3 } };
	uint8_t buf[MG_MSG_MAX];
	bool found = false;
	int fd, n;

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/memguardd.sock", t.tmp);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (fd >= 0)
			close(fd);
		return false;
	}
	n = proto_msg_encode(&m, buf, sizeof(buf));
	if (send(fd, buf, (size_t)n, 0) == n)
		while (recv_msg(fd, &m, 3000) == 0 && m.hdr.type != MG_MSG_RESULT)
			if (m.hdr.type == MG_MSG_STATUS_SERVICE &&
			    !strcmp(m.status_service.name, service)) {
				*ret = m.status_service;
				found = true;
			}
	close(fd);
	return found;
}

/* Wait up to `ms` for the daemon's view of `service` to be `absent` (or
 * not); its last STATUS in `ret`. */
static bool await_absent(const char *service, bool absent, int ms,
			 struct mg_status_service *ret)
{
	for (int i = 0; i <= ms / 20; i++) {
		if (service_status(service, ret) && (ret->psi_mode == MG_PSI_ABSENT) == absent)
			return true;
		usleep(20000);
	}
	return false;
}

/* Lines of the daemon's log holding both `a` and `b`. */
static int log_lines(const char *a, const char *b)
{
	char path[128], line[2048];
	int n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/memguardd.log", t.tmp);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, a) && strstr(line, b);
	fclose(f);
	return n;
}

static void print_log(void)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "sed 's/^/  log: /' '%s/memguardd.log' >&2", t.tmp);
	if (system(cmd) != 0)
		print_message("(no log)\n");
}

/*
 * The service's cgroup removed under the daemon (the POLLERR of its PSI
 * trigger, or a read that finds it gone) and made again: the daemon says
 * once that it is absent, shows it absent, and watches it again when it is
 * back, where a client in it sees levels as before.
 */
static void test_real_cgroup_recreated(void **state)
{
	struct mg_status_service st;
	char watching[160];
	const char *why;
	int status, said, watched;
	pid_t pid;

	/* "it: watching cgroup NAME (": the stall service's line names
	 * NAME-stall and does not count. */
	snprintf(watching, sizeof(watching), "it: watching cgroup %s (", t.name);
	watched = log_lines(watching, watching);

	/* Watched: a PSI trigger, or polling where triggers fail. */
	if (!await_absent("it", false, 5000, &st)) {
		print_log();
		fail_msg("the daemon does not watch cgroup %s", t.name);
	}
	print_message("watched: PSI mode %u\n", st.psi_mode);

	/* Removed, with nobody inside. */
	remove_cgroup(t.name);
	if (!await_absent("it", true, 5000, &st)) {
		print_log();
		fail_msg("the daemon does not show cgroup %s absent (PSI mode %u)", t.name,
			 st.psi_mode);
	}
	/* Ten ticks on: it was said once, not on every tick. */
	usleep(1000000);
	said = log_lines(t.name, "went away") + log_lines(t.name, "absent");
	if (said != 1) {
		print_log();
		fail_msg("the removal of %s was logged %d times, not once", t.name, said);
	}
	assert_true(service_status("it", &st));
	assert_int_equal(st.psi_mode, MG_PSI_ABSENT);
	assert_int_equal(st.clients, 0);

	/* Back, with a client inside: watched again, and levels work. */
	why = make_cgroup(t.name);
	if (why)
		fail_msg("%s", why);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(client());
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		print_log();
		fail_msg("the client in the re-created cgroup failed (status %#x)", status);
	}
	assert_true(await_absent("it", false, 5000, &st));
	print_message("watched again: PSI mode %u\n", st.psi_mode);
	/* Watched again since the test began.  Perhaps more than once: the
	 * cgroup is made in the v2 and the v1 hierarchy one after the other,
	 * and a sample that falls between the two finds it gone again (a
	 * faster sampling of a growing service makes that likelier). */
	said = log_lines(watching, watching);
	print_message("watched %d time(s) since the cgroup came back\n", said - watched);
	assert_true(said >= watched + 1);
}

/*
 * PSI switched off for the service's cgroup (0 to cgroup.pressure, Linux
 * 6.1 and later): its memory.pressure goes, the PSI trigger answers
 * POLLERR and the held file ENODEV, but the cgroup is still there.  The
 * daemon must not take it for gone (and forget a memory.high it lowered):
 * it keeps watching it, by polling what is left.
 */
static void test_real_psi_off_is_not_gone(void **state)
{
	struct mg_status_service st;
	char dir[700];

	cg_dir_of(dir, sizeof(dir), t.v2_root, t.name);
	if (!await_absent("it", false, 5000, &st)) {
		print_log();
		fail_msg("the daemon does not watch cgroup %s", t.name);
	}
	if (write_str(dir, "cgroup.pressure", "0\n") < 0)
		skip();
	usleep(1000000);
	assert_true(service_status("it", &st));
	print_message("PSI off: PSI mode %u, said gone %d time(s)\n", st.psi_mode,
		      log_lines(t.name, "went away"));
	if (log_lines(t.name, "went away") != 0 || st.psi_mode != MG_PSI_POLLING) {
		print_log();
		fail_msg("cgroup %s taken for gone when its PSI was switched off", t.name);
	}
	assert_int_equal(write_str(dir, "cgroup.pressure", "1\n"), 0);
}

/*
 * A client that grew its service to CRITICAL leaves the cgroup (to ours),
 * says so on `ready`, and waits for the NORMAL the daemon owes it once the
 * cgroup is gone.  It keeps its memory until then, so nothing but the
 * removal can bring NORMAL.
 */
static int client_outlives_cgroup(int ready)
{
	struct mg_msg m;
	uint8_t *mem;
	char pid[32];
	int fd = join_and_register(t.name, "it", 64 * MiB);

	if (fd < 0)
		return -fd;
	mem = mmap(NULL, 60 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 40;
	memset(mem, 0x5a, 60 * MiB);
	do
		if (recv_msg(fd, &m, 5000) < 0)
			return 41;
	while (m.hdr.type != MG_MSG_DIRECTIVE || m.directive.level < MG_LEVEL_CRITICAL);

	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (write_str(t.v2_root, "cgroup.procs", pid) < 0 ||
	    (t.v1_root[0] && write_str(t.v1_root, "cgroup.procs", pid) < 0))
		return 42;
	if (write(ready, "x", 1) != 1)
		return 43;
	for (;;) {
		if (recv_msg(fd, &m, 10000) < 0)
			return 44;      /* never told NORMAL */
		if (m.hdr.type == MG_MSG_DIRECTIVE && m.directive.level == MG_LEVEL_NORMAL)
			return mem[0] == 0x5a ? 0 : 45;
	}
}

/*
 * A service's cgroup goes away (a systemctl stop) while it is CRITICAL:
 * STATUS shows it absent and NORMAL, with no figures left from before, and
 * its client, which outlived it elsewhere, is told NORMAL.
 */
static void test_real_cgroup_gone_shows_absent(void **state)
{
	struct mg_status_service st;
	int status, ready[2];
	char c;
	pid_t pid;

	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(ready[0]);
		_exit(client_outlives_cgroup(ready[1]));
	}
	close(ready[1]);
	if (read(ready[0], &c, 1) != 1) {
		assert_int_equal(waitpid(pid, &status, 0), pid);
		print_log();
		fail_msg("the client did not reach CRITICAL and leave (status %#x)", status);
	}
	close(ready[0]);
	assert_true(service_status("it", &st));
	print_message("before: level %u, working set %" PRIu64 "\n", st.level, st.working_set);
	assert_true(st.level >= MG_LEVEL_CRITICAL);

	remove_cgroup(t.name);
	if (!await_absent("it", true, 5000, &st)) {
		print_log();
		fail_msg("cgroup %s not shown absent", t.name);
	}
	print_message("absent: level %u, gc %u, throttle %u, working set %" PRIu64
		      ", utilization %u, escalation %u\n", st.level, st.gc_percent, st.throttle,
		      st.working_set, st.utilization, st.escalation);
	assert_int_equal(st.level, MG_LEVEL_NORMAL);
	assert_int_equal(st.gc_percent, MG_GC_DEFAULT);
	assert_int_equal(st.throttle, 0);
	assert_true(st.working_set == 0);
	assert_int_equal(st.utilization, 0);
	assert_int_equal(st.escalation, MG_ESCALATION_NONE);

	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		print_log();
		fail_msg("the client was not told NORMAL (status %#x)", status);
	}
	/* Made again for the tests that follow. */
	assert_null(make_cgroup(t.name));
}

static void test_real_cgroup_client(void **state)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(client());
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* --- kernel signals on cgroup v1 (issue 16) -------------------------------
 *
 * Usage thresholds (cgroup.event_control + eventfd) fire when usage crosses
 * upwards; and what moves when the kernel OOM-kills a member, with and
 * without a memory.memsw limit, swappiness 0, no swap: on Linux 6.x
 * memory.failcnt counts the kill only without a memsw limit,
 * memory.memsw.failcnt never does, memory.oom_control's oom_kill always
 * does; none of them moves before the kill, so the thresholds are what
 * comes early.  Skipped on pure cgroup2, where memory.events and the PSI
 * trigger wake the daemon (the tests above).
 */

/* The cgroup of these tests, made anew for each; skip without v1. */
static void signals_cgroup(void)
{
	const char *why;

	if (!t.v1_root[0])
		skip();
	why = make_cgroup(t.sig);
	if (why)
		fail_msg("%s", why);
}

/*
 * A child in the nested cgroup that maps and touches `step_mib` more
 * anonymous memory each time it reads a byte from pipe `go`, writes a byte
 * to pipe `done` after each step, and exits when `go` closes.  The parent
 * keeps go[1] and done[0].
 */
static pid_t grower(int go[2], int done[2], unsigned step_mib)
{
	pid_t pid = fork();

	if (pid != 0) {
		close(go[0]);
		close(done[1]);
		return pid;
	}
	/* Only the parent may hold these ends, or `go` never closes. */
	close(go[1]);
	close(done[0]);
	{
		char dir[700], self[32];
		char c;

		snprintf(self, sizeof(self), "%d", (int)getpid());
		cg_dir_of(dir, sizeof(dir), t.v1_root, t.sig);
		if (write_str(dir, "cgroup.procs", self) < 0)
			_exit(2);
		cg_dir_of(dir, sizeof(dir), t.v2_root, t.sig);
		if (write_str(dir, "cgroup.procs", self) < 0)
			_exit(2);
		while (read(go[0], &c, 1) == 1) {
			char *m = mmap(NULL, step_mib * MiB, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

			if (m == MAP_FAILED)
				_exit(3);
			memset(m, 1, step_mib * MiB);
			if (write(done[1], "x", 1) != 1)
				_exit(4);
		}
		_exit(0);
	}
}

/* Whether eventfd `fd` fires within `ms`; its counter is read (re-armed). */
static bool fires(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t v;

	if (poll(&p, 1, ms) <= 0)
		return false;
	return read(fd, &v, sizeof(v)) == sizeof(v) && v > 0;
}

static void step(int go, int done)
{
	char c;

	assert_int_equal(write(go, "x", 1), 1);
	assert_int_equal(read(done, &c, 1), 1);
}

static void test_threshold(void **state)
{
	signals_cgroup();
	_cleanup_(monitor_cgroup_freep) struct monitor_cgroup *cg = NULL;
	int go[2], done[2], efd = -1, st;
	uint64_t current;
	pid_t pid;

	assert_int_equal(monitor_cgroup_open(t.v2_root, t.v1_root, t.sig, &cg), 0);
	assert_int_equal(monitor_cgroup_threshold_open(cg, 20 * MiB, &efd), 0);
	assert_true(efd >= 0);

	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	assert_int_equal(pipe2(done, O_CLOEXEC), 0);
	pid = grower(go, done, 8);
	assert_true(pid > 0);

	/* 8 and 16 MiB: below, quiet */
	step(go[1], done[0]);
	step(go[1], done[0]);
	assert_int_equal(monitor_cgroup_read_current(cg, &current), 0);
	assert_true(current >= 16 * MiB && current < 20 * MiB);
	assert_false(fires(efd, 200));
	/* 24 MiB: crossed (the kernel looks every 128 pages charged, so the
	 * threshold sits mid-step) */
	step(go[1], done[0]);
	assert_true(fires(efd, 5000));
	assert_false(fires(efd, 100));
	close(go[1]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(done[0]);
	close(efd);
	remove_cgroup(t.sig);
}

/* An OOM kill at a 32 MiB limit; with_memsw: the same limit on memsw. */
static void oom_kill_seen(bool with_memsw)
{
	_cleanup_(monitor_cgroup_freep) struct monitor_cgroup *cg = NULL;
	struct monitor_sample a, b;
	struct conf_service svc;
	struct policy_params p;
	struct policy_state s;
	struct policy_decision d;
	struct policy_input in = { .budget = 32 * MiB };
	char dir[700], c;
	int go[2], done[2], st, steps = 0;
	pid_t pid;

	cg_dir_of(dir, sizeof(dir), t.v1_root, t.sig);
	assert_int_equal(write_str(dir, "memory.swappiness", "0"), 0);
	if (with_memsw)
		/* memsw must never be below the memory limit: lift it first */
		assert_int_equal(write_str(dir, "memory.memsw.limit_in_bytes", "-1"), 0);
	assert_int_equal(write_str(dir, "memory.limit_in_bytes", "33554432"), 0);
	if (with_memsw)
		assert_int_equal(write_str(dir, "memory.memsw.limit_in_bytes", "33554432"), 0);

	assert_int_equal(monitor_cgroup_open(t.v2_root, t.v1_root, t.sig, &cg), 0);
	assert_int_equal(monitor_cgroup_read(cg, &a), 0);

	conf_service_init(&svc, /* line= */ 0);
	policy_params_init(&p);
	policy_state_init(&s);
	in.working_set = a.working_set;
	in.events = (struct policy_events){ .high = a.events.high, .max = a.events.max,
					    .oom = a.events.oom + a.events.oom_kill };
	policy_tick(&s, &p, &svc, &in, 0, &d);
	assert_int_equal(d.level, MG_LEVEL_NORMAL);

	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	assert_int_equal(pipe2(done, O_CLOEXEC), 0);
	pid = grower(go, done, 4);
	assert_true(pid > 0);
	/* 4 MiB a step until the kernel kills it: the step's answer never
	 * comes (the pipe's write end died with it). */
	while (steps < 64) {
		assert_int_equal(write(go[1], "x", 1), 1);
		if (read(done[0], &c, 1) != 1)
			break;
		steps++;
	}
	close(go[1]);
	close(done[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	assert_true(steps >= 4 && steps < 9);

	assert_int_equal(monitor_cgroup_read(cg, &b), 0);
	print_message("      OOM kill%s: failcnt(+memsw) +%llu, oom_kill +%llu\n",
		      with_memsw ? " with a memsw limit" : "",
		      (unsigned long long)b.events_delta.max,
		      (unsigned long long)b.events_delta.oom_kill);
	/* The kill is always counted (a dying task can be counted twice);
	 * this is what the daemon takes as memory.events oom on v1. */
	assert_true(b.events_delta.oom_kill >= 1);

	in.working_set = b.working_set;
	in.events = (struct policy_events){ .high = b.events.high, .max = b.events.max,
					    .oom = b.events.oom + b.events.oom_kill };
	policy_tick(&s, &p, &svc, &in, 100, &d);
	assert_int_equal(d.level, MG_LEVEL_EMERGENCY);
	assert_int_equal(d.directive.gc_percent, svc.min_gc_percent);
	assert_int_equal(d.directive.throttle, svc.max_throttle);
}

static void test_oom_kill(void **state)
{
	signals_cgroup();
	oom_kill_seen(/* with_memsw= */ false);
	remove_cgroup(t.sig);
}

static void test_oom_kill_memsw(void **state)
{
	char path[700];

	signals_cgroup();
	cg_dir_of(path, sizeof(path), t.v1_root, t.sig);
	strncat(path, "/memory.memsw.limit_in_bytes", sizeof(path) - strlen(path) - 1);
	if (access(path, F_OK) < 0) {
		remove_cgroup(t.sig);
		skip();
	}
	oom_kill_seen(/* with_memsw= */ true);
	remove_cgroup(t.sig);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_real_cgroup_client, setup, teardown),
		cmocka_unit_test_setup_teardown(test_real_stall_raises_level, setup, teardown),
		cmocka_unit_test_setup_teardown(test_real_cgroup_recreated, setup_logged, teardown),
		cmocka_unit_test_setup_teardown(test_real_cgroup_gone_shows_absent, setup_logged,
						teardown),
		cmocka_unit_test_setup_teardown(test_real_psi_off_is_not_gone, setup_logged,
						teardown),
		cmocka_unit_test(test_threshold),
		cmocka_unit_test(test_oom_kill),
		cmocka_unit_test(test_oom_kill_memsw),
	};
	const char *why = prepare();
	int r;

	if (why) {
		printf("SKIP: %s\n", why);
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
	r = cmocka_run_group_tests(tests, NULL, NULL);
	cleanup_cgroups();
	return r;
}
