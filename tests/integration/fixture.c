/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture.h"

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "fixture: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	abort();
}

static void path_of(const struct fixture *f, const char *rel, char *buf, size_t size)
{
	if ((size_t)snprintf(buf, size, "%s/%s", f->dir, rel) >= size)
		die("path too long: %s", rel);
}

void fixture_put(const struct fixture *f, const char *rel, const char *fmt, ...)
{
	char path[512], text[4096];
	va_list ap;
	int fd, n;

	va_start(ap, fmt);
	n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(text))
		die("%s: content too long", rel);
	path_of(f, rel, path, sizeof(path));
	/* In place: the daemon preads the inode it opened. */
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, text, (size_t)n) != n)
		die("cannot write %s: %s", path, strerror(errno));
	close(fd);
}

char *fixture_get(const struct fixture *f, const char *rel, char *buf, size_t size)
{
	char path[512];
	ssize_t n;
	int fd;

	path_of(f, rel, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("cannot read %s: %s", path, strerror(errno));
	n = read(fd, buf, size - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	return buf;
}

void fixture_mkdir(const struct fixture *f, const char *rel)
{
	char path[512];

	path_of(f, rel, path, sizeof(path));
	if (mkdir(path, 0755) < 0)
		die("cannot create %s: %s", path, strerror(errno));
}

void fixture_init(struct fixture *f, const char *name, const char *my_cgroup)
{
	char rel[64];

	*f = (struct fixture){ 0 };
	snprintf(f->dir, sizeof(f->dir), "/tmp/mg-%.20s-XXXXXX", name);
	if (!mkdtemp(f->dir))
		die("mkdtemp: %s", strerror(errno));
	snprintf(f->sock, sizeof(f->sock), "%s/memguardd.sock", f->dir);
	fixture_mkdir(f, "cg");
	fixture_mkdir(f, "proc");
	fixture_mkdir(f, "proc/self");
	fixture_mkdir(f, "proc/pressure");
	snprintf(rel, sizeof(rel), "proc/%d", (int)getpid());
	fixture_mkdir(f, rel);
	fixture_put(f, "proc/self/mountinfo",
		    "41 31 0:38 / %s/cg rw,relatime - cgroup2 cgroup2 rw\n", f->dir);
	fixture_put(f, "proc/meminfo", "MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n");
	fixture_put(f, "proc/pressure/memory",
		    "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
		    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
	snprintf(rel, sizeof(rel), "proc/%d/cgroup", (int)getpid());
	fixture_put(f, rel, "0::/%s\n", my_cgroup);
}

void fixture_done(struct fixture *f)
{
	char cmd[128];

	if (f->daemon > 0)
		fixture_stop(f, SIGTERM);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		die("cannot remove %s", f->dir);
}

void fixture_cgroup(const struct fixture *f, const char *cg, uint64_t current)
{
	static const struct {
		const char *name, *text;
	} files[] = {
		{ "memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n" },
		{ "memory.max", "max\n" },
		{ "memory.high", "max\n" },
		{ "cgroup.kill", "0\n" },
		{ "memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
				     "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n" },
	};
	char rel[256];

	snprintf(rel, sizeof(rel), "cg/%s", cg);
	fixture_mkdir(f, rel);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(rel, sizeof(rel), "cg/%s/%s", cg, files[i].name);
		fixture_put(f, rel, "%s", files[i].text);
	}
	fixture_set_usage(f, cg, current);
}

void fixture_set_usage(const struct fixture *f, const char *cg, uint64_t current)
{
	char rel[256];

	snprintf(rel, sizeof(rel), "cg/%s/memory.current", cg);
	fixture_put(f, rel, "%llu\n", (unsigned long long)current);
	snprintf(rel, sizeof(rel), "cg/%s/memory.stat", cg);
	fixture_put(f, rel, "anon %llu\nfile 0\ninactive_file 0\n", (unsigned long long)current);
}

pid_t fixture_start(struct fixture *f, const char *sock, const char *errfile, const char *level)
{
	const char *exe = getenv("MEMGUARDD");
	pid_t pid = fork();

	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		char conf[128], root[128], proc[128];

		if (errfile) {
			int fd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

			if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
				_exit(126);
		}
		snprintf(conf, sizeof(conf), "%s/memguard.conf", f->dir);
		snprintf(root, sizeof(root), "%s/cg", f->dir);
		snprintf(proc, sizeof(proc), "%s/proc", f->dir);
		execl(exe ? exe : "daemon/memguardd", "memguardd", "--config", conf, "--socket",
		      sock ? sock : f->sock, "--cgroup-root", root, "--proc-root", proc,
		      level ? "--log-level" : NULL, level, NULL);
		_exit(127);
	}
	if (sock)
		return pid;
	f->daemon = pid;
	for (int i = 0; i < 500; i++) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		int ok;

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", f->sock);
		ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		close(fd);
		if (ok)
			return pid;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			die("memguardd exited at start");
		usleep(10000);
	}
	die("memguardd did not start listening on %s", f->sock);
}

int fixture_stop(struct fixture *f, int sig)
{
	int status = 0;

	if (f->daemon <= 0)
		return 0;
	kill(f->daemon, sig);
	if (waitpid(f->daemon, &status, 0) != f->daemon)
		die("waitpid: %s", strerror(errno));
	f->daemon = 0;
	return status;
}

/* A connection to `path`, or -errno. */
static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	return fd;
}

int fixture_connect(const struct fixture *f, const char *sock)
{
	int fd = connect_to(sock ? sock : f->sock);

	if (fd < 0)
		die("cannot connect to %s: %s", sock ? sock : f->sock, strerror(-fd));
	return fd;
}

int fixture_connect_wait(const char *sock, int tries)
{
	int fd = -1;

	for (int i = 0; i < tries && fd < 0; i++) {
		fd = connect_to(sock);
		if (fd < 0)
			usleep(10000);
	}
	return fd < 0 ? -1 : fd;
}

void fixture_send(int fd, struct mg_msg *m)
{
	uint8_t buf[MG_MSG_MAX];
	int n = proto_msg_encode(m, buf, sizeof(buf));

	if (n < 0)
		die("cannot encode a %s: %s", proto_type_name(m->hdr.type), strerror(-n));
	if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
		die("send: %s", strerror(errno));
}

int fixture_recv(int fd, struct mg_msg *m, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint8_t buf[MG_MSG_MAX];
	ssize_t n;

	/* ms = 0: one non-blocking receive, no poll (the benchmark's loop). */
	if (ms != 0 && poll(&p, 1, ms) <= 0)
		return -ETIMEDOUT;
	n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (n < 0 && errno == EAGAIN)
		return -ETIMEDOUT;
	if (n <= 0)
		return -ECONNRESET;
	return proto_msg_decode(buf, (size_t)n, m);
}

int fixture_recv_fds(int fd, struct mg_msg *m, int ms, int *fds, int max_fds, int *ret_n)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint8_t buf[MG_MSG_MAX];
	/* Room for a receive stamp (SO_TIMESTAMPNS) beside the descriptors. */
	union {
		char buf[CMSG_SPACE(8 * sizeof(int)) + CMSG_SPACE(64)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			     .msg_controllen = sizeof(ctl.buf) };
	ssize_t n;

	*ret_n = 0;
	if (ms != 0 && poll(&p, 1, ms) <= 0)
		return -ETIMEDOUT;
	n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0 && errno == EAGAIN)
		return -ETIMEDOUT;
	if (n <= 0)
		return -ECONNRESET;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int got;

			memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(got));
			if (*ret_n < max_fds)
				fds[(*ret_n)++] = got;
			else
				close(got);
		}
	}
	return proto_msg_decode(buf, (size_t)n, m);
}

int fixture_listen(const struct fixture *f)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", f->sock);
	(void)unlink(sa.sun_path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0)
		die("cannot listen on %s: %s", sa.sun_path, strerror(errno));
	return fd;
}

pid_t fixture_start_activated(struct fixture *f, int listen_fd, const char *errfile,
			      const char *level)
{
	const char *exe = getenv("MEMGUARDD");
	pid_t pid = fork();

	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		char conf[128], root[128], proc[128], me[16];

		if (errfile) {
			int fd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

			if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
				_exit(126);
		}
		/* sd_listen_fds(): the socket at fd 3, for this very pid. */
		if (listen_fd == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(listen_fd, 3) < 0)
			_exit(126);
		snprintf(me, sizeof(me), "%d", (int)getpid());
		setenv("LISTEN_PID", me, 1);
		setenv("LISTEN_FDS", "1", 1);
		unsetenv("LISTEN_FDNAMES");
		snprintf(conf, sizeof(conf), "%s/memguard.conf", f->dir);
		snprintf(root, sizeof(root), "%s/cg", f->dir);
		snprintf(proc, sizeof(proc), "%s/proc", f->dir);
		execl(exe ? exe : "daemon/memguardd", "memguardd", "--config", conf, "--socket",
		      f->sock, "--cgroup-root", root, "--proc-root", proc,
		      level ? "--log-level" : NULL, level, NULL);
		_exit(127);
	}
	f->daemon = pid;
	return pid;
}

int fixture_hello(const struct fixture *f, const char *service, const char *process,
		  uint32_t capabilities)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_HELLO, .seq = 1 } };
	int fd = fixture_connect(f, NULL);

	m.hello.capabilities = capabilities;
	snprintf(m.hello.service, sizeof(m.hello.service), "%s", service);
	snprintf(m.hello.process, sizeof(m.hello.process), "%s", process);
	fixture_send(fd, &m);
	return fd;
}

bool fixture_pong(int fd, const struct mg_msg *m)
{
	struct mg_msg p = { .hdr = { .type = MG_MSG_PONG } };

	if (m->hdr.type != MG_MSG_PING)
		return false;
	p.ping.cookie = m->ping.cookie;
	fixture_send(fd, &p);
	return true;
}

void fixture_map_pid(const struct fixture *f, pid_t pid, const char *cgroup)
{
	char rel[64], path[600];

	snprintf(rel, sizeof(rel), "proc/%d", (int)pid);
	path_of(f, rel, path, sizeof(path));
	(void)mkdir(path, 0755);             /* there already if the pid came round */
	snprintf(rel, sizeof(rel), "proc/%d/cgroup", (int)pid);
	fixture_put(f, rel, "0::/%s\n", cgroup);
}

int fixture_count_fds(pid_t pid)
{
	char path[64];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		die("cannot open %s: %s", path, strerror(errno));
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}
