/* SPDX-License-Identifier: MIT */
/*
 * A struct manager in the test's own process, for the unit tests of
 * daemon/manager.c and daemon/admin.c: the fixture tree of
 * tests/integration/fixture.h plays the kernel (cgroup files, /proc), the
 * manager serves a socket in that tree, and the test is every peer.
 * Nothing runs behind the test's back: the manager's loop turns only in
 * mfixture_pump(), and the tick is a minute, so what a peer receives is
 * the answer to what the test did.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#include "daemon/manager-internal.h"
#include "tests/integration/fixture.h"

struct mfixture {
	struct fixture fx;               /* the tree: cg/, proc/, memguard.conf */
	struct manager *m;
	char conf[128], root[128], proc[128];           /* what m->paths point to */
	char mountinfo[160], meminfo[160], pressure[160];
};

/*
 * Make the tree (this process in cgroup `my_cgroup`, the cgroups of
 * `cgroups`, a NULL-terminated list, with 10 MiB in use each), write
 * memguard.conf as mfixture_config() does, and start a manager on it.
 */
void mfixture_start(struct mfixture *t, const char *name, const char *my_cgroup,
		    const char *const *cgroups, const char *services);

/* Free the manager and remove the tree. */
void mfixture_done(struct mfixture *t);

/* mfixture_start() on a new struct, for a cmocka setup. */
struct mfixture *mfixture_new(const char *name, const char *my_cgroup,
			      const char *const *cgroups, const char *services);

/* The cmocka teardown of a setup that made *state with mfixture_new(). */
int mfixture_teardown(void **state);

/* Write memguard.conf: a [daemon] section with the tree's socket, a tick
 * of a minute and log level warning, then `services` as it is. */
void mfixture_config(struct mfixture *t, const char *services);

/* Turn the manager's loop until nothing is ready. */
void mfixture_pump(struct mfixture *t);

/* The next message `fd` has after a pump: 0, -EAGAIN when there is none,
 * -ECONNRESET when the manager closed it. */
int mfixture_recv(struct mfixture *t, int fd, struct mg_msg *ret);

/* A connection that said HELLO for `service` ("" = by cgroup) and got its
 * answer in `ret` (WELCOME, or ERROR); after a WELCOME, the DIRECTIVE that
 * follows it is read too, into `ret_directive` when not NULL. */
int mfixture_hello(struct mfixture *t, const char *service, struct mg_msg *ret,
		   struct mg_directive *ret_directive);

/* Make this process's /proc say it is in `cgroup` (for the next HELLO). */
void mfixture_move(struct mfixture *t, const char *cgroup);

/* A client registered from `cgroup` by HELLO without a service name (the
 * test fails unless it is welcomed); its WELCOME in `ret` when not NULL. */
int mfixture_client(struct mfixture *t, const char *cgroup, struct mg_welcome *ret);

/* Send a REPORT of a heap with `inuse` bytes in use and `idle` free but
 * resident, with the header flags `flags` (MG_FLAG_*). */
void mfixture_report(int fd, uint32_t flags, uint64_t inuse, uint64_t idle);

/*
 * Send the admin request `req` on a new connection and read its answers
 * into `ret` (at most `max`), up to and including RESULT; each must carry
 * the request's seq.  Returns how many; the last is the RESULT.
 */
size_t mfixture_request(struct mfixture *t, struct mg_msg *req, struct mg_msg *ret, size_t max);

/* The RESULT of an admin request that answers nothing else. */
struct mg_result mfixture_result(struct mfixture *t, struct mg_msg *req);

/* The STATUS_SERVICE of `service` (fails the test when there is none),
 * and the STATUS_DAEMON in `ret_daemon` when not NULL. */
struct mg_status_service mfixture_status(struct mfixture *t, const char *service,
					 struct mg_status_daemon *ret_daemon);

/* The CLIENT_INFO answers of CLIENTS for `service` ("" = all) into `ret`
 * (at most `max`); returns how many. */
size_t mfixture_clients(struct mfixture *t, const char *service, struct mg_client_info *ret,
			size_t max);
