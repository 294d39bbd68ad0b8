/* SPDX-License-Identifier: MIT */
/*
 * libmemguard-client with the real memguardd, on a fixture cgroup tree
 * (regular files this test rewrites to play the kernel, as in
 * test-daemon.c): registration, directives end to end, reconnection after
 * the daemon is killed and restarted, no daemon at all, a forked child
 * and grandchild, both examples, the preload library registering an
 * unmodified program, and a tiny program built with pkg-config against an
 * installed copy.
 *
 * Everything links the installed form of the library
 * (libmemguard-client.la), so these are the real allocator and the real
 * exports.
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
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/param.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <memguard/client.h>

#include "proto/proto.h"
#include "tests/asan-fork.h"
#include "tests/integration/fixture.h"

#define MiB FIXTURE_MiB
#define BUDGET (100 * MiB)

static struct fixture fx;

/* ---- an admin peer -------------------------------------------------------- */

static int admin_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	strcpy(sa.sun_path, fx.sock);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Send `req` and call `fn` on each answer until RESULT.  -1 when the
 * daemon is not there. */
static int admin(struct mg_msg *req, void (*fn)(const struct mg_msg *, void *), void *data)
{
	uint8_t buf[MG_MSG_MAX];
	struct mg_msg m;
	int fd = admin_connect(), n;

	if (fd < 0)
		return -1;
	n = proto_msg_encode(req, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(send(fd, buf, (size_t)n, MSG_NOSIGNAL), n);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t k;

		assert_int_equal(poll(&p, 1, 3000), 1);
		k = recv(fd, buf, sizeof(buf), 0);
		assert_true(k > 0);
		assert_int_equal(proto_msg_decode(buf, (size_t)k, &m), 0);
		if (m.hdr.type == MG_MSG_RESULT)
			break;
		fn(&m, data);
	}
	assert_int_equal(m.result.code, MG_ERR_OK);
	close(fd);
	return 0;
}

static void keep_web(const struct mg_msg *m, void *data)
{
	if (m->hdr.type == MG_MSG_STATUS_SERVICE && !strcmp(m->status_service.name, "web"))
		*(struct mg_status_service *)data = m->status_service;
}

static struct mg_status_service web_status(void)
{
	struct mg_msg req = { .hdr = { .type = MG_MSG_STATUS, .seq = 9 } };
	struct mg_status_service web = { 0 };

	admin(&req, keep_web, &web);
	return web;
}

struct clients {
	struct mg_client_info info[8];
	unsigned n;
};

static void keep_client(const struct mg_msg *m, void *data)
{
	struct clients *cl = data;

	if (m->hdr.type == MG_MSG_CLIENT_INFO && cl->n < 8)
		cl->info[cl->n++] = m->client_info;
}

static struct clients clients(void)
{
	struct mg_msg req = { .hdr = { .type = MG_MSG_CLIENTS, .seq = 10 } };
	struct clients cl = { 0 };

	if (admin(&req, keep_client, &cl) < 0)
		cl.n = 0;
	return cl;
}

/* Wait up to `ms` until the daemon counts `n` clients of web; the time it
 * took in ms, or -1. */
static int await_clients(unsigned n, int ms)
{
	uint64_t start = fixture_now_ms();

	do {
		if (clients().n == n)
			return (int)(fixture_now_ms() - start);
		usleep(10000);
	} while (fixture_now_ms() - start < (uint64_t)ms);
	return -1;
}

/* ---- hooks that record ---------------------------------------------------- */

static struct {
	pthread_mutex_t lock;
	unsigned levels[32], n_levels;
	unsigned gcs[32], n_gcs;
	size_t release_asked;
	unsigned releases;
} rec = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void on_level(void *data, enum mg_level level)
{
	pthread_mutex_lock(&rec.lock);
	if (rec.n_levels < 32)
		rec.levels[rec.n_levels++] = level;
	pthread_mutex_unlock(&rec.lock);
}

static void on_gc(void *data, unsigned gc)
{
	pthread_mutex_lock(&rec.lock);
	if (rec.n_gcs < 32)
		rec.gcs[rec.n_gcs++] = gc;
	pthread_mutex_unlock(&rec.lock);
}

static size_t on_release(void *data, size_t bytes)
{
	pthread_mutex_lock(&rec.lock);
	rec.release_asked = bytes;
	rec.releases++;
	pthread_mutex_unlock(&rec.lock);
	return 3 * MiB;
}

/* Wait up to 5 s for the level hook to have been told `level` last. */
static bool await_level(enum mg_level level)
{
	for (int i = 0; i < 500; i++) {
		bool ok;

		pthread_mutex_lock(&rec.lock);
		ok = rec.n_levels > 0 && rec.levels[rec.n_levels - 1] == level;
		pthread_mutex_unlock(&rec.lock);
		if (ok)
			return true;
		usleep(10000);
	}
	return false;
}

static struct mg_client *new_client(enum mg_threading t)
{
	struct mg_client_opts o = { .size = sizeof(o), .socket_path = fx.sock,
				    .process = "itest", .threading = t };
	struct mg_client *c;

	assert_int_equal(mg_client_new(&c, &o), 0);
	mg_client_set_level_hook(c, on_level, NULL);
	mg_client_set_gc_hook(c, on_gc, NULL);
	mg_client_set_release_hook(c, on_release, NULL);
	return c;
}

/* ---- setup ------------------------------------------------------------------- */

static int setup(void **state)
{
	/* This test process is a client of "web". */
	fixture_init(&fx, "test-client", "web");
	fixture_cgroup(&fx, "web", 10 * MiB);
	fixture_put(&fx, "memguard.conf", "[daemon]\ntick = 50ms\n"
		    "[web]\ncgroup = web\nbudget = 100M\nrelease_deadline = 500ms\n");

	pthread_mutex_lock(&rec.lock);
	rec.n_levels = rec.n_gcs = rec.releases = 0;
	rec.release_asked = 0;
	pthread_mutex_unlock(&rec.lock);

	fixture_start(&fx, NULL, NULL, NULL);
	return 0;
}

static int teardown(void **state)
{
	fixture_done(&fx);
	return 0;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_registers(void **state)
{
	struct mg_client *c = new_client(MG_THREAD_OWN);
	struct clients cl;

	assert_true(await_clients(1, 3000) >= 0);
	cl = clients();
	assert_int_equal(cl.info[0].pid, getpid());
	assert_string_equal(cl.info[0].process, "itest");
	assert_string_equal(cl.info[0].service, "web");
	assert_int_equal(mg_client_level(c), MG_LEVEL_NORMAL);

	/* BYE: the daemon forgets us at once. */
	mg_client_free(c);
	assert_true(await_clients(0, 1000) >= 0);
}

static void test_directives_end_to_end(void **state)
{
	struct mg_client *c = new_client(MG_THREAD_OWN);
	struct mg_status_service before, after;
	unsigned rejected = 0, gc;
	double share;

	assert_true(await_clients(1, 3000) >= 0);

	/* 85 %: WARN, a lower GC target, 5 MiB demanded of us. */
	fixture_set_usage(&fx, "web", BUDGET * 85 / 100);
	assert_true(await_level(MG_LEVEL_WARN));
	assert_int_equal(mg_client_level(c), MG_LEVEL_WARN);
	for (int i = 0; i < 300 && !rec.releases; i++)
		usleep(10000);
	pthread_mutex_lock(&rec.lock);
	assert_true(rec.n_gcs > 0);
	gc = rec.gcs[rec.n_gcs - 1];
	assert_true(gc > 0 && gc < 100);
	/* The daemon may ask again while usage stays up: at least once, and
	 * for working set − warn × budget. */
	assert_true(rec.releases >= 1);
	assert_int_equal(rec.release_asked, BUDGET * 85 / 100 - BUDGET * 80 / 100);
	pthread_mutex_unlock(&rec.lock);
	/* RELEASED reached the daemon: at least what the hook freed. */
	for (int i = 0; i < 100 && web_status().released_total < 3 * MiB; i++)
		usleep(20000);
	assert_true(web_status().released_total >= 3 * MiB);

	/* 93 %: CRITICAL; mg_admit() sheds the throttle share. */
	fixture_set_usage(&fx, "web", BUDGET * 93 / 100);
	assert_true(await_level(MG_LEVEL_CRITICAL));
	usleep(200000);
	before = web_status();
	for (int i = 0; i < 20000; i++)
		rejected += !mg_admit();
	after = web_status();
	assert_true(before.throttle > 0);
	share = rejected / 200.0;
	assert_true(share >= MIN(before.throttle, after.throttle) / 10.0 - 3.0);
	assert_true(share <= MAX(before.throttle, after.throttle) / 10.0 + 3.0);

	/* 40 %: NORMAL, defaults back, everything admitted. */
	fixture_set_usage(&fx, "web", BUDGET * 40 / 100);
	assert_true(await_level(MG_LEVEL_NORMAL));
	usleep(50000);
	pthread_mutex_lock(&rec.lock);
	assert_int_equal(rec.gcs[rec.n_gcs - 1], 0);
	pthread_mutex_unlock(&rec.lock);
	for (int i = 0; i < 10000; i++)
		assert_true(mg_admit());
	mg_client_free(c);
}

static void test_reconnects_after_restart(void **state)
{
	struct mg_client *c = new_client(MG_THREAD_OWN);
	int took;

	assert_true(await_clients(1, 3000) >= 0);
	fixture_set_usage(&fx, "web", BUDGET * 85 / 100);
	assert_true(await_level(MG_LEVEL_WARN));

	fixture_stop(&fx, SIGKILL);
	usleep(300000);
	/* Working meanwhile, admission open. */
	assert_true(mg_admit());
	assert_int_equal(mg_client_level(c), MG_LEVEL_WARN);

	fixture_start(&fx, NULL, NULL, NULL);
	took = await_clients(1, 3000);
	assert_true(took >= 0);
	assert_true(took < 1000);
	mg_client_free(c);
}

static void test_no_daemon(void **state)
{
	struct mg_client *c;
	struct mg_heap_stats hs;
	uint64_t t0;
	char *p;

	fixture_stop(&fx, SIGTERM);
	c = new_client(MG_THREAD_OWN);
	for (int i = 0; i < 10000; i++)
		assert_true(mg_admit());
	p = mg_malloc(1 * MiB);
	assert_non_null(p);
	memset(p, 1, 1 * MiB);
	mg_heap_stats(&hs);
	assert_true(hs.inuse >= 1 * MiB);
	mg_free(p);
	usleep(500000);
	assert_int_equal(mg_client_level(c), MG_LEVEL_NORMAL);
	pthread_mutex_lock(&rec.lock);
	assert_int_equal(rec.n_levels + rec.n_gcs + rec.releases, 0);
	pthread_mutex_unlock(&rec.lock);
	t0 = fixture_now_ms();
	mg_client_free(c);
	assert_true(fixture_now_ms() - t0 < 200);
}

/* The child registers on its own connection; the parent keeps its own. */
static void test_forked_child(void **state)
{
	struct mg_client *c;
	struct clients cl;
	int status;
	pid_t pid;

	SKIP_FORK_UNDER_ASAN();
	c = new_client(MG_THREAD_OWN);
	assert_true(await_clients(1, 3000) >= 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		fixture_map_pid(&fx, getpid(), "web");
		/* First use: the client comes back in the child. */
		(void)mg_admit();
		for (int i = 0; i < 500 && mg_client_level(c) != MG_LEVEL_WARN; i++)
			usleep(10000);
		_exit(mg_client_level(c) == MG_LEVEL_WARN ? 0 : 1);
	}
	assert_true(await_clients(2, 3000) >= 0);
	cl = clients();
	assert_true(cl.info[0].pid != cl.info[1].pid);
	assert_true(cl.info[0].pid == (uint32_t)pid || cl.info[1].pid == (uint32_t)pid);

	fixture_set_usage(&fx, "web", BUDGET * 85 / 100);
	assert_true(await_level(MG_LEVEL_WARN));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_true(await_clients(1, 2000) >= 0);
	cl = clients();
	assert_int_equal(cl.info[0].pid, getpid());
	mg_client_free(c);
}

/*
 * A child that forks again before it used the library: the grandchild
 * still gets a client of its own on its first use (the child passes on
 * the thread it never restarted).
 */
static void test_forked_grandchild(void **state)
{
	struct mg_client *c;
	int up[2], down[2], status;
	struct clients cl;
	pid_t pid, grandchild = 0;
	bool found = false;

	SKIP_FORK_UNDER_ASAN();
	c = new_client(MG_THREAD_OWN);
	assert_true(await_clients(1, 3000) >= 0);
	assert_int_equal(pipe2(up, O_CLOEXEC), 0);
	assert_int_equal(pipe2(down, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* No call of the library here before the next fork(). */
		pid_t g = fork();
		char b;

		if (g == 0) {
			pid_t me = getpid();

			fixture_map_pid(&fx, me, "web");
			(void)mg_admit();
			if (write(up[1], &me, sizeof(me)) != sizeof(me))
				_exit(2);
			/* Stay registered until the test has looked. */
			_exit(read(down[0], &b, 1) == 1 ? 0 : 3);
		}
		_exit(g > 0 && waitpid(g, &status, 0) == g && WIFEXITED(status) ?
			      WEXITSTATUS(status) : 4);
	}
	close(up[1]);
	close(down[0]);
	assert_int_equal(read(up[0], &grandchild, sizeof(grandchild)), sizeof(grandchild));
	for (int i = 0; i < 300 && !found; i++) {
		cl = clients();
		for (unsigned k = 0; k < cl.n; k++)
			found = found || cl.info[k].pid == (uint32_t)grandchild;
		if (!found)
			usleep(10000);
	}
	assert_int_equal(write(down[1], "g", 1), 1);
	close(down[1]);
	close(up[0]);
	assert_true(found);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	mg_client_free(c);
}

/* Run `argv` as a client of web, its stdout into `out`; returns its pid. */
static pid_t spawn(char *const argv[], char *const env[], int *ret_fd)
{
	int sync[2], pipe_out[2];
	pid_t pid;
	char go;

	assert_int_equal(pipe2(sync, O_CLOEXEC), 0);
	assert_int_equal(pipe2(pipe_out, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pipe_out[1], STDOUT_FILENO);
		/* Only once the fixture maps our pid to "web". */
		if (read(sync[0], &go, 1) != 1)
			_exit(126);
		if (env)
			execve(argv[0], argv, env);
		else
			execv(argv[0], argv);
		_exit(127);
	}
	close(sync[0]);
	close(pipe_out[1]);
	fixture_map_pid(&fx, pid, "web");
	assert_int_equal(write(sync[1], "g", 1), 1);
	close(sync[1]);
	*ret_fd = pipe_out[0];
	return pid;
}

/* Read all of `fd` into `buf`. */
static void slurp(int fd, char *buf, size_t size)
{
	size_t n = 0;
	ssize_t k;

	while (n + 1 < size && (k = read(fd, buf + n, size - 1 - n)) > 0)
		n += (size_t)k;
	buf[n] = 0;
	close(fd);
}

/*
 * An example under the daemon: NORMAL, then CRITICAL (it sheds and
 * shrinks), then NORMAL again (it grows back).  `out` gets its stdout.
 */
static void run_example(const char *path, char *out, size_t size)
{
	char *argv[] = { (char *)path, "--socket", fx.sock, "--duration", "4", "--rate", "4000",
			 NULL };
	int fd, status;
	pid_t pid;

	if (access(path, X_OK) < 0) {
		print_message("SKIP: %s was not built (no Lua 5.4?)\n", path);
		skip();
	}
	pid = spawn(argv, NULL, &fd);
	assert_true(await_clients(1, 3000) >= 0);
	usleep(500000);
	fixture_set_usage(&fx, "web", BUDGET * 95 / 100);
	usleep(1500000);
	fixture_set_usage(&fx, "web", BUDGET * 40 / 100);
	slurp(fd, out, size);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("%s failed (status %d); output:\n%s", path, status, out);
}

static unsigned long field(const char *out, const char *key)
{
	const char *p = strstr(out, key);

	return p ? strtoul(p + strlen(key), NULL, 10) : 0;
}

static void test_cache_service_example(void **state)
{
	static char out[65536];

	run_example("client/examples/cache-service", out, sizeof(out));
	assert_non_null(strstr(out, "event: level=CRITICAL"));
	assert_non_null(strstr(out, "event: level=NORMAL"));
	assert_non_null(strstr(out, "event: release asked="));
	assert_non_null(strstr(out, "done: "));
	assert_true(field(strstr(out, "done: "), "rejected=") > 0);
	assert_true(field(strstr(out, "done: "), "admitted=") > 0);
}

static void test_lua_service_example(void **state)
{
	static char out[65536];

	run_example("client/examples/lua-service", out, sizeof(out));
	assert_non_null(strstr(out, "event: level=CRITICAL"));
	assert_non_null(strstr(out, "event: level=NORMAL"));
	/* The GC target reached Lua's pause, and came back to 200. */
	assert_non_null(strstr(out, "event: gc="));
	assert_non_null(strstr(out, "event: gc=0 pause=200"));
	assert_true(field(strstr(out, "done: "), "rejected=") > 0);
	assert_true(field(strstr(out, "done: "), "full_collections=") > 0);
}

/* An unmodified program under the preload library registers by itself. */
static void test_preload_registers(void **state)
{
	char env_preload[256], env_socket[200];
	char *argv[] = { "/bin/sleep", "3", NULL };
	/* (A delay shorter than the default 5 s, which this would outlive.) */
	char *env[] = { env_preload, env_socket, "MEMGUARD_REGISTER_DELAY_MS=200", NULL };
	char out[64];
	struct clients cl;
	int fd, status;
	pid_t pid;

	if (strlen(MG_SAN_CFLAGS) > 0) {
		print_message("SKIP: a sanitizer build of the preload library cannot go "
			      "into /bin/sleep\n");
		skip();
	}
	snprintf(env_preload, sizeof(env_preload),
		 "LD_PRELOAD=%s/client/.libs/libmemguard-malloc.so", MG_TOP_BUILDDIR);
	snprintf(env_socket, sizeof(env_socket), "MEMGUARD_SOCKET=%s", fx.sock);
	pid = spawn(argv, env, &fd);
	assert_true(await_clients(1, 3000) >= 0);
	cl = clients();
	assert_int_equal(cl.info[0].pid, pid);
	assert_string_equal(cl.info[0].process, "sleep");
	/* It follows directives as far as it can: release demands answered. */
	fixture_set_usage(&fx, "web", BUDGET * 85 / 100);
	for (int i = 0; i < 200 && clients().info[0].answered == 0; i++)
		usleep(10000);
	assert_true(clients().info[0].answered > 0);
	slurp(fd, out, sizeof(out));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_true(await_clients(0, 1000) >= 0);
}

/* Install, build a tiny program with pkg-config only, run it. */
static void test_pkgconfig_program(void **state)
{
	char tmp[64] = "/tmp/mg-test-pc-XXXXXX";
	char cmd[4096], root[128], flags[1024], path[512], out[4096];
	const char *make = getenv("MAKE") ? getenv("MAKE") : "make";
	/* 8 s: registration, 1.8 s of levels and the fall to NORMAL, with
	 * room for a loaded machine (4 s failed once in a distcheck). */
	char *argv[] = { path, fx.sock, "8", NULL };
	char env_ld[600];
	char *env[] = { env_ld, NULL };
	FILE *f;
	int fd, status;
	pid_t pid;

	assert_non_null(mkdtemp(tmp));
	snprintf(root, sizeof(root), "%s/root", tmp);
	/* A make of its own, not a job of the one running the tests. */
	snprintf(cmd, sizeof(cmd),
		 "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL %s -C '%s' install DESTDIR='%s' "
		 ">'%s/install.log' 2>&1",
		 make, MG_TOP_BUILDDIR, root, tmp);
	if (system(cmd) != 0) {
		snprintf(cmd, sizeof(cmd), "tail -n 30 '%s/install.log'", tmp);
		assert_int_equal(system(cmd), 0);
		fail_msg("make install failed");
	}
	snprintf(path, sizeof(path), "%s%s/memguard/client.h", root, MG_INCLUDEDIR);
	assert_int_equal(access(path, R_OK), 0);
	snprintf(path, sizeof(path), "%s%s/examples/cache-service.c", root, MG_DOCDIR);
	assert_int_equal(access(path, R_OK), 0);

	snprintf(cmd, sizeof(cmd),
		 "PKG_CONFIG_LIBDIR='%s%s/pkgconfig' PKG_CONFIG_SYSROOT_DIR='%s' "
		 "pkg-config --cflags --libs libmemguard-client",
		 root, MG_LIBDIR, root);
	f = popen(cmd, "r");
	assert_non_null(f);
	assert_non_null(fgets(flags, sizeof(flags), f));
	assert_int_equal(pclose(f), 0);
	flags[strcspn(flags, "\n")] = 0;
	assert_non_null(strstr(flags, "-lmemguard-client"));
	assert_non_null(strstr(flags, root));

	snprintf(path, sizeof(path), "%s/client-demo", tmp);
	snprintf(cmd, sizeof(cmd), "%s -o '%s' '%s/tests/integration/client-demo.c' %s", MG_CC,
		 path, MG_TOP_SRCDIR, flags);
	assert_int_equal(system(cmd), 0);

	/* Against the installed library only. */
	snprintf(env_ld, sizeof(env_ld), "LD_LIBRARY_PATH=%s%s", root, MG_LIBDIR);
	pid = spawn(argv, env, &fd);
	assert_true(await_clients(1, 3000) >= 0);
	usleep(300000);
	fixture_set_usage(&fx, "web", BUDGET * 95 / 100);
	usleep(1500000);
	fixture_set_usage(&fx, "web", BUDGET * 40 / 100);
	slurp(fd, out, sizeof(out));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_non_null(strstr(out, "level=2\n"));
	assert_non_null(strstr(out, "level=0\n"));
	assert_true(field(out, "rejected=") > 0);

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
		T(test_registers),
		T(test_directives_end_to_end),
		T(test_reconnects_after_restart),
		T(test_no_daemon),
		T(test_forked_child),
		T(test_forked_grandchild),
		T(test_cache_service_example),
		T(test_lua_service_example),
		T(test_preload_registers),
		T(test_pkgconfig_program),
#undef T
	};

	signal(SIGPIPE, SIG_IGN);
	/* MG_TEST_FILTER=test_forked_child runs one test, for a closer look. */
	if (getenv("MG_TEST_FILTER"))
		cmocka_set_test_filter(getenv("MG_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
