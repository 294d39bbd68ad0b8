/* SPDX-License-Identifier: MIT */
/*
 * A service's directive board (docs/protocol.md §5.4): one shared memfd of
 * 64-byte slots, one per client that took it (MG_CAP_BOARD), and a pipe
 * whose read end those clients watch.  A directive that demands no bytes
 * goes into the client's slot instead of a DIRECTIVE message, and after a
 * round of such writes one byte into the pipe wakes every client of the
 * service: one write() where a message each took a send() each.
 *
 * The clients get a read-only descriptor of the memfd, sealed against
 * writing, growing and shrinking (F_SEAL_FUTURE_WRITE: only the daemon's
 * own mapping, made before the seal, can write), and the pipe's read end;
 * the daemon empties the pipe through a descriptor of its own, so nothing
 * a client does to the shared one (its flags, reading it) can block it.
 */
#pragma once

#include <stdint.h>

#include "proto/proto.h"

struct board;

/* A board of `slots` slots (≥ 1), all free.  Returns 0 or -errno. */
int board_new(uint32_t slots, struct board **ret);

/* Unmap and close; accepts NULL; returns NULL. */
struct board *board_free(struct board *b);

/* Take a free slot (cleared: seq 0).  Returns 0 or -ENOSPC. */
int board_take(struct board *b, uint32_t *ret_slot);

/* Give `slot` back; it is cleared, so that its next owner starts from
 * nothing. */
void board_put(struct board *b, uint32_t slot);

/* Put `d` (without its release) for client `owner` with `seq` into
 * `slot`, stamped with CLOCK_REALTIME. */
void board_write(struct board *b, uint32_t slot, const struct mg_directive *d, uint64_t owner,
		 uint32_t seq);

/* Wake the board's clients: empty the pipe, write one byte.  Returns 0 or
 * -errno. */
int board_wake(struct board *b);

/* What a client is sent with BOARD: the number of slots, the read-only
 * memfd and the pipe's read end. */
uint32_t board_slots(const struct board *b);
int board_memfd(const struct board *b);
int board_wake_fd(const struct board *b);
