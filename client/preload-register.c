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
#include <link.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "client-internal.h"
#include "client/alloc/alloc.h"
#include "client/no-client-note.h"

#define NOTE_ALIGN(n, a) (((n) + (a) - 1) & ~((size_t)(a) - 1))

/* dl_iterate_phdr() callback: sets *data when the first object, the main
 * program, has the MG_NOTE_NO_CLIENT note; stops after that object. */
static int find_no_client_note(struct dl_phdr_info *info, size_t size, void *data)
{
	bool *found = data;

	(void)size;
	for (int i = 0; i < info->dlpi_phnum && !*found; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		size_t align = ph->p_align == 8 ? 8 : 4;
		const uint8_t *p, *end;

		if (ph->p_type != PT_NOTE)
			continue;
		p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
		end = p + ph->p_memsz;
		while ((size_t)(end - p) >= sizeof(ElfW(Nhdr))) {
			const ElfW(Nhdr) *n = (const void *)p;
			size_t desc = sizeof(*n) + NOTE_ALIGN(n->n_namesz, align);
			size_t next = desc + NOTE_ALIGN(n->n_descsz, align);

			if (next > (size_t)(end - p))
				break;
			if (n->n_type == MG_NOTE_NO_CLIENT && n->n_namesz == sizeof(MG_NOTE_NAME) &&
			    memcmp(p + sizeof(*n), MG_NOTE_NAME, sizeof(MG_NOTE_NAME)) == 0) {
				*found = true;
				break;
			}
			p += next;
		}
	}
	return 1;
}

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
	bool no_client = false;
	uint32_t delay;

	if (!secure_getenv("MEMGUARD_SOCKET") && !secure_getenv("MEMGUARD_SERVICE"))
		return;
	/* An admin tool such as memguardctl: the allocator only. */
	dl_iterate_phdr(find_no_client_note, &no_client);
	if (no_client) {
		errno = saved_errno;
		return;
	}
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
