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

#include <pthread.h>
#include <stdlib.h>

#include "client-internal.h"
#include "client/alloc/alloc.h"

/*
 * The constructor runs before main(), when the allocator may not have
 * served a single call yet.  That is fine: the client allocates through
 * malloc() like any code, and the allocator sets itself up on its first
 * call without calling back into the client, so there is no recursion.
 * What must not happen is the reverse, the allocator's set-up starting
 * a client: this file is the only place that does, and only from here.
 * Failures are silent: without a log function there is nobody to tell,
 * and the program must run the same with or without memguard.
 */
static void __attribute__((constructor)) preload_register(void)
{
	if (!secure_getenv("MEMGUARD_SOCKET") && !secure_getenv("MEMGUARD_SERVICE"))
		return;
	if (client_auto_start() < 0)
		return;
	/*
	 * A child of fork() gets its client back on its first use of the
	 * client library, which this program never makes: the allocator's
	 * next slow path stands in for it.  The handler that arms it is
	 * registered after the client's own (client_auto_start() did that),
	 * so it runs after the client's child handler has set the client up
	 * for the child.  A child that execs soon after, as a shell's does,
	 * may get as far as a connection that the exec then closes; one that
	 * never leaves its thread cache's fast path before it does, not even
	 * that.  vfork() and posix_spawn() run no fork handlers.
	 */
	alloc_set_fork_hook(client_resume_after_fork);
	(void)pthread_atfork(NULL, NULL, alloc_fork_hook_arm);
}

/* Say BYE and stop the thread before the allocator and libc go away. */
static void __attribute__((destructor)) preload_unregister(void)
{
	client_auto_stop();
}
