/* SPDX-License-Identifier: MIT */
/*
 * What the integration tests and the daemon benchmark share: a fixture
 * cgroup tree of regular files that plays the kernel, the real memguardd
 * started on it, and a peer's side of the socket.  The helpers abort the
 * program with a message when the machine fails them (they are not what a
 * test checks); they use no test framework, so the benchmark links them.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/macro.h"
#include "proto/proto.h"

#define FIXTURE_MiB (1024ULL * 1024)

struct fixture {
	char dir[64];                    /* the tree: cg/, proc/, memguard.conf */
	char sock[128];                  /* dir/memguardd.sock */
	pid_t daemon;                    /* 0 when not running */
};

/*
 * Make the tree under /tmp/mg-NAME-XXXXXX: cg/ (the cgroup2 root, in
 * proc/self/mountinfo), proc/meminfo, proc/pressure/memory, and this
 * process's proc/PID/cgroup saying it is in cgroup `my_cgroup`.
 */
void fixture_init(struct fixture *f, const char *name, const char *my_cgroup);

/* Remove the tree (stopping the daemon first if it runs). */
void fixture_done(struct fixture *f);

/* Write the file `rel` of the tree; an existing file is rewritten in place,
 * since the daemon holds it open. */
void fixture_put(const struct fixture *f, const char *rel, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Read the file `rel` into `buf` (NUL-terminated); returns buf. */
char *fixture_get(const struct fixture *f, const char *rel, char *buf, size_t size);

void fixture_mkdir(const struct fixture *f, const char *rel);

/* A cgroup of the tree with `current` bytes in use (all anon), no limits,
 * no pressure, no events. */
void fixture_cgroup(const struct fixture *f, const char *cg, uint64_t current);

/* Change its memory.current and memory.stat. */
void fixture_set_usage(const struct fixture *f, const char *cg, uint64_t current);

/*
 * Start $MEMGUARDD (else daemon/memguardd) on the tree with its
 * memguard.conf, listening on `sock` (NULL: f->sock), stderr to `errfile`
 * (NULL: inherited), with `--log-level level` when not NULL.  When `sock`
 * is NULL it waits until the daemon accepts connections.  Returns the pid.
 */
pid_t fixture_start(struct fixture *f, const char *sock, const char *errfile, const char *level);

/* Send `sig` to the daemon and wait; returns its wait status (0 when it
 * was not running). */
int fixture_stop(struct fixture *f, int sig);

/* A connection to `sock` (NULL: f->sock). */
int fixture_connect(const struct fixture *f, const char *sock);

/* A connection to `sock`, tried every 10 ms up to `tries` times (a daemon
 * still starting); -1 when none was accepted. */
int fixture_connect_wait(const char *sock, int tries);

/* Send one message. */
void fixture_send(int fd, struct mg_msg *m);

/* Connect to f->sock and send HELLO for `service` ("": by cgroup) from
 * `process`, offering `capabilities`; returns the connection.  The
 * answers are the caller's to read. */
int fixture_hello(const struct fixture *f, const char *service, const char *process,
		  uint32_t capabilities);

/* CLOCK_MONOTONIC in ms. */
static inline uint64_t fixture_now_ms(void)
{
	return now_usec() / 1000;
}

/* Wait up to `ms` for one message: 0, -ETIMEDOUT, -ECONNRESET (closed),
 * or the decoder's error. */
int fixture_recv(int fd, struct mg_msg *m, int ms);

/* fixture_recv() keeping the descriptors that came with the message
 * (SCM_RIGHTS, close-on-exec): up to `max_fds` in `fds`, their number in
 * *ret_n (the rest closed). */
int fixture_recv_fds(int fd, struct mg_msg *m, int ms, int *fds, int max_fds, int *ret_n);

/* Answer the daemon's keepalive: if `m` is a PING, send its PONG on `fd`
 * and return true (the caller waits on); false for any other message. */
bool fixture_pong(int fd, const struct mg_msg *m);

/* Make the fixture's /proc say that process `pid` is in cgroup `cgroup`
 * (relative to the cgroup2 root, e.g. "web"). */
void fixture_map_pid(const struct fixture *f, pid_t pid, const char *cgroup);

/* The number of open file descriptors of process `pid`. */
int fixture_count_fds(pid_t pid);

/* A socket bound to f->sock and listening, as systemd's memguardd.socket
 * holds it: it outlives the daemons started on it.  Close-on-exec. */
int fixture_listen(const struct fixture *f);

/*
 * Start memguardd as systemd's socket activation does: `listen_fd` (from
 * fixture_listen()) at fd 3 with LISTEN_FDS=1 and LISTEN_PID; f->sock only
 * names the directory of its files.  Returns at once (the socket accepts
 * already: connections wait in its backlog); the pid, also in f->daemon.
 */
pid_t fixture_start_activated(struct fixture *f, int listen_fd, const char *errfile,
			      const char *level);
