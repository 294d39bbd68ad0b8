/* SPDX-License-Identifier: MIT */
/*
 * An ELF note by which a program tells libmemguard-malloc.so not to make
 * it a client (auto-registration, preload-register.c).  memguardctl carries
 * it: an admin tool reads MEMGUARD_SOCKET too, and must never register
 * with the daemon it administers.  The note is in the program file, so it
 * holds whatever the program is called; the preload looks for it in the
 * main program's PT_NOTE segments before it starts anything.
 */
#ifndef MEMGUARD_NO_CLIENT_NOTE_H
#define MEMGUARD_NO_CLIENT_NOTE_H

#include <stdint.h>

#define MG_NOTE_NAME "memguard"         /* the note's owner */
#define MG_NOTE_NO_CLIENT 1             /* its type: "never auto-register" */

/* At file scope in one source file of the program. */
#define MG_NO_CLIENT_NOTE                                                        \
	static const struct {                                                    \
		uint32_t namesz, descsz, type;                                   \
		char name[(sizeof(MG_NOTE_NAME) + 3) & ~3];                      \
	} mg_no_client_note                                                      \
		__attribute__((section(".note.memguard"), used, aligned(4))) = { \
		sizeof(MG_NOTE_NAME), 0, MG_NOTE_NO_CLIENT, MG_NOTE_NAME         \
	}

#endif
