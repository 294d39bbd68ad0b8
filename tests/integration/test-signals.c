/* SPDX-License-Identifier: MIT */
/*
 * The kernel signals memguardd reacts to, on a real cgroup v1 memory
 * controller (hybrid hosts): a cgroup nested under the one this test runs
 * in, a child process inside that grows its anonymous memory.
 *
 * - usage thresholds (cgroup.event_control + eventfd): quiet below, fire
 *   when usage crosses upwards;
 * - what moves when the kernel OOM-kills a member, with and without a
 *   memory.memsw limit, swappiness 0, no swap: on Linux 6.x memory.failcnt
 *   counts the kill only without a memsw limit, memory.memsw.failcnt never
 *   does, memory.oom_control's oom_kill always does; none of them moves
 *   before the kill, so the thresholds are what comes early.  The test
 *   checks what monitor_cgroup_read() makes of it and that the policy
 *   answers with an EMERGENCY that acts as one.
 *
 * Exits 77 (SKIP) with the reason where the machine cannot: not root, no
 * v1 memory hierarchy (pure cgroup2 hosts use memory.events and PSI
 * triggers, test-cgroup), or a cgroup that cannot be made.
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
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/monitor.h"
#include "daemon/policy.h"

#define MiB (1024UL * 1024)

static struct {
	char v2_root[512];               /* the cgroup2 dir this test runs in */
	char v1_root[512];               /* its v1 memory dir */
	char name[64];                   /* the nested cgroup */
	bool has_memsw;                  /* swap accounting: memory.memsw.* */
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

static void dir_of(char *buf, size_t size, const char *root)
{
	snprintf(buf, size, "%s/%s", root, t.name);
}

static void remove_cgroup(void)
{
	const char *roots[] = { t.v2_root, t.v1_root };
	char dir[700];

	for (size_t r = 0; r < 2; r++) {
		dir_of(dir, sizeof(dir), roots[r]);
		/* rmdir can race the exit of the last member; retry a little. */
		for (int i = 0; i < 50; i++) {
			if (rmdir(dir) == 0 || errno == ENOENT)
				break;
			usleep(20000);
		}
	}
}

/* Find our own cgroups and make the nested one; a reason when we can't. */
static const char *prepare(void)
{
	static char reason[1024];
	struct monitor_roots roots = { 0 };
	char *v2 = NULL, *v1 = NULL, dir[700];
	int r;

	if (geteuid() != 0)
		return "needs root to create cgroups";
	r = monitor_discover("/proc/self/mountinfo", &roots);
	if (r < 0 || !roots.v2)
		return "no cgroup2 hierarchy is mounted";
	if (!roots.v1_memory) {
		monitor_roots_done(&roots);
		return "the memory controller is not on cgroup v1 here (pure cgroup2: "
		       "memory.events and PSI triggers, tested by test-cgroup)";
	}
	r = monitor_pid_cgroup("/proc", getpid(), &v2, &v1);
	if (r < 0 || !v2 || !v1) {
		free(v2);
		free(v1);
		monitor_roots_done(&roots);
		return "cannot read /proc/self/cgroup";
	}
	snprintf(t.v2_root, sizeof(t.v2_root), "%s%s", roots.v2, strcmp(v2, "/") ? v2 : "");
	snprintf(t.v1_root, sizeof(t.v1_root), "%s%s", roots.v1_memory,
		 strcmp(v1, "/") ? v1 : "");
	free(v2);
	free(v1);
	monitor_roots_done(&roots);

	snprintf(t.name, sizeof(t.name), "memguard-sig-%d", (int)getpid());
	dir_of(dir, sizeof(dir), t.v2_root);
	if (mkdir(dir, 0755) < 0) {
		snprintf(reason, sizeof(reason), "cannot create %s: %s", dir, strerror(errno));
		return reason;
	}
	dir_of(dir, sizeof(dir), t.v1_root);
	if (mkdir(dir, 0755) < 0) {
		snprintf(reason, sizeof(reason), "cannot create %s: %s", dir, strerror(errno));
		remove_cgroup();
		return reason;
	}
	snprintf(reason, sizeof(reason), "%s/memory.memsw.limit_in_bytes", dir);
	t.has_memsw = access(reason, F_OK) == 0;
	return NULL;
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
		dir_of(dir, sizeof(dir), t.v1_root);
		if (write_str(dir, "cgroup.procs", self) < 0)
			_exit(2);
		dir_of(dir, sizeof(dir), t.v2_root);
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
	_cleanup_(monitor_cgroup_freep) struct monitor_cgroup *cg = NULL;
	int go[2], done[2], efd = -1, st;
	uint64_t current;
	pid_t pid;

	assert_int_equal(monitor_cgroup_open(t.v2_root, t.v1_root, t.name, &cg), 0);
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

	dir_of(dir, sizeof(dir), t.v1_root);
	assert_int_equal(write_str(dir, "memory.swappiness", "0"), 0);
	if (with_memsw)
		/* memsw must never be below the memory limit: lift it first */
		assert_int_equal(write_str(dir, "memory.memsw.limit_in_bytes", "-1"), 0);
	assert_int_equal(write_str(dir, "memory.limit_in_bytes", "33554432"), 0);
	if (with_memsw)
		assert_int_equal(write_str(dir, "memory.memsw.limit_in_bytes", "33554432"), 0);

	assert_int_equal(monitor_cgroup_open(t.v2_root, t.v1_root, t.name, &cg), 0);
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
	oom_kill_seen(/* with_memsw= */ false);
}

static void test_oom_kill_memsw(void **state)
{
	if (!t.has_memsw)
		skip();
	oom_kill_seen(/* with_memsw= */ true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
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
	remove_cgroup();
	return r;
}
