/* SPDX-License-Identifier: MIT */
/*
 * Auto-registration: when libmemguard-malloc.so is preloaded into an
 * unmodified program and MEMGUARD_SOCKET or MEMGUARD_SERVICE is set, the
 * program joins memguard by itself.  It gets a client with its own thread
 * and no hooks: the daemon's directives move the scavenger's goal and
 * release heap pages, which is all a program that knows nothing of
 * memguard can do.  If the program calls mg_client_new() itself later,
 * its client replaces this one.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "client-internal.h"
#include "client/alloc/alloc.h"

/* MEMGUARD_REGISTER_DELAY_MS, or the default for anything but a whole
 * number of milliseconds up to an hour. */
static uint32_t register_delay_ms(void)
{
	const char *v = secure_getenv("MEMGUARD_REGISTER_DELAY_MS");
	unsigned long ms;
	char *end;

	if (!v || *v < '0' || *v > '9')
		return CLIENT_AUTO_DELAY_MS;
	errno = 0;
	ms = strtoul(v, &end, 10);
	if (errno || *end || ms > CLIENT_AUTO_DELAY_MAX_MS)
		return CLIENT_AUTO_DELAY_MS;
	/* 0: at once, as a client of mg_client_new(). */
	return (uint32_t)ms;
}

/*
 * The constructor runs before main(), when the allocator may not have
 * served a single call yet.  That is fine: the client allocates through
 * malloc() like any code, and the allocator sets itself up on its first
 * call without calling back into the client, so there is no recursion.
 * What must not happen is the reverse, the allocator's set-up starting
 * a client: this file is the only place that does, and only from here.
 * Failures are silent: without a log function there is nobody to tell,
 * and the program must run the same with or without memguard.
 *
 * What the program can see before main() is one thread, blocked in a
 * wait with every signal masked: no descriptor (they are made later,
 * above MG_FD_FLOOR), no signal handler, no change to errno.
 */
static void __attribute__((constructor)) preload_register(void)
{
	int saved_errno = errno;
	uint32_t delay;

	if (!secure_getenv("MEMGUARD_SOCKET") && !secure_getenv("MEMGUARD_SERVICE"))
		return;
	delay = register_delay_ms();
	if (client_auto_start(delay) < 0) {
		errno = saved_errno;
		return;
	}
	/*
	 * A child of fork() gets its client back on its first use of the
	 * client library, which this program never makes: the allocator's
	 * next slow path stands in for it.  The handler that arms it is
	 * registered after the client's own (client_auto_start() did that),
	 * so it runs after the client's child handler has set the client up
	 * for the child.  The child's thread then waits the same delay
	 * before it makes a descriptor or connects, so a child that execs or
	 * exits within it, as a shell's does, never registers.  vfork() and
	 * posix_spawn() run no fork handlers, and their child execs.
	 */
	alloc_set_fork_hook(client_resume_after_fork);
	(void)pthread_atfork(NULL, NULL, alloc_fork_hook_arm);
	errno = saved_errno;
}

/* Say BYE and stop the thread before the allocator and libc go away. */
static void __attribute__((destructor)) preload_unregister(void)
{
	int saved_errno = errno;

	client_auto_stop();
	errno = saved_errno;
}
