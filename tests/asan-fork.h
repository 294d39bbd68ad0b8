/* SPDX-License-Identifier: MIT */
/*
 * SKIP_FORK_UNDER_ASAN(): skips, with its reason, a cmocka test whose
 * child of fork() starts a thread or allocates while this process has
 * other threads.  GCC 12's AddressSanitizer does not take its allocator's
 * locks across fork(): when another thread held one (a free() recycling
 * the quarantine, say), the child blocks in malloc for good.  Seen in the
 * sanitizer build of test_forked_child, 2 runs in 4 of a parallel `make
 * check`: the child's new client thread waited in ASan's
 * SizeClassAllocator64::GetFromAllocator, inside ASan's own thread start.
 * The tests run in every other build.
 */
#ifndef MG_TESTS_ASAN_FORK_H
#define MG_TESTS_ASAN_FORK_H

#ifdef __SANITIZE_ADDRESS__
#define SKIP_FORK_UNDER_ASAN()                                                          \
	do {                                                                            \
		print_message("SKIP: AddressSanitizer's allocator is not fork-safe here " \
			      "(tests/asan-fork.h)\n");                                 \
		skip();                                                                 \
	} while (0)
#else
#define SKIP_FORK_UNDER_ASAN() \
	do {                   \
	} while (0)
#endif

#endif
