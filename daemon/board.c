/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "board.h"
#include "proto/macro.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010      /* Linux 5.1 */
#endif

struct board {
	struct mg_board_slot *slots;     /* our writable mapping */
	uint32_t n;
	uint32_t hint;                   /* where board_take() looks first */
	uint8_t *taken;
	int memfd;                       /* read-only, sealed: what clients get */
	int wake_rd;                     /* the pipe's read end: what clients get */
	int wake_wr;
	int drain;                       /* the pipe's read end, our own description */
};

/* Open `fd` again through /proc: a description of its own, with `flags`. */
static int reopen(int fd, int flags)
{
	char path[64];
	int r;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	r = open(path, flags | O_CLOEXEC);
	return r < 0 ? -errno : r;
}

int board_new(uint32_t slots, struct board **ret)
{
	size_t size = (size_t)slots * MG_BOARD_SLOT_SIZE;
	struct board *b;
	int fd, p[2], r;

	if (slots == 0)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->memfd = b->wake_rd = b->wake_wr = b->drain = -1;
	b->slots = MAP_FAILED;
	b->n = slots;
	b->taken = calloc(slots, 1);
	fd = memfd_create("memguard-board", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (!b->taken || fd < 0) {
		r = b->taken ? -errno : -ENOMEM;
		goto fail;
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		r = -errno;
		goto fail;
	}
	b->slots = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (b->slots == MAP_FAILED ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) < 0) {
		r = -errno;
		goto fail;
	}
	r = b->memfd = reopen(fd, O_RDONLY);
	if (r < 0)
		goto fail;
	close(fd);
	fd = -1;
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
		r = -errno;
		goto fail;
	}
	b->wake_rd = p[0];
	b->wake_wr = p[1];
	r = b->drain = reopen(b->wake_rd, O_RDONLY | O_NONBLOCK);
	if (r < 0)
		goto fail;
	*ret = b;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	board_free(b);
	return r;
}

struct board *board_free(struct board *b)
{
	if (!b)
		return NULL;
	if (b->slots != MAP_FAILED)
		munmap(b->slots, (size_t)b->n * MG_BOARD_SLOT_SIZE);
	if (b->memfd >= 0)
		close(b->memfd);
	if (b->wake_rd >= 0)
		close(b->wake_rd);
	if (b->wake_wr >= 0)
		close(b->wake_wr);
	if (b->drain >= 0)
		close(b->drain);
	free(b->taken);
	free(b);
	return NULL;
}

int board_take(struct board *b, uint32_t *ret_slot)
{
	for (uint32_t k = 0; k < b->n; k++) {
		uint32_t i = (b->hint + k) % b->n;

		if (b->taken[i])
			continue;
		b->taken[i] = 1;
		b->hint = (i + 1) % b->n;
		*ret_slot = i;
		return 0;
	}
	return -ENOSPC;
}

void board_put(struct board *b, uint32_t slot)
{
	const struct mg_directive none = { .level = MG_LEVEL_NORMAL };

	if (slot >= b->n || !b->taken[slot])
		return;
	proto_slot_write(&b->slots[slot], &none, 0, 0, 0);
	b->taken[slot] = 0;
}

void board_write(struct board *b, uint32_t slot, const struct mg_directive *d, uint64_t owner,
		 uint32_t seq)
{
	struct timespec ts;

	if (slot >= b->n)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	proto_slot_write(&b->slots[slot], d, owner, seq,
			 (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec);
}

int board_wake(struct board *b)
{
	char buf[64];

	/* At most one byte is ever left in the pipe: the last wake-up's.  It
	 * stays until the next one, so that a client that looks at its epoll
	 * set late still finds the pipe readable.  Bounded: only we write
	 * (the pipe is root's, mode 0600), but nothing here may spin. */
	for (int i = 0; i < 16 && read(b->drain, buf, sizeof(buf)) > 0; i++)
		;
	return write(b->wake_wr, "", 1) == 1 ? 0 : -errno;
}

uint32_t board_slots(const struct board *b)
{
	return b->n;
}

int board_memfd(const struct board *b)
{
	return b->memfd;
}

int board_wake_fd(const struct board *b)
{
	return b->wake_rd;
}
