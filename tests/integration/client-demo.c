/* SPDX-License-Identifier: MIT */
/*
 * The smallest memguard client, built by tests/integration/test-client.c
 * against an installed copy of the library with nothing but
 *
 *	cc client-demo.c $(pkg-config --cflags --libs libmemguard-client)
 *
 * It registers, prints every level it is directed to, sheds load with
 * mg_admit() for `seconds`, and prints how much it shed.
 * Usage: client-demo SOCKET SECONDS
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <memguard/client.h>

static void on_level(void *data, enum mg_level level)
{
	printf("level=%d\n", (int)level);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct mg_client_opts opts = { .size = sizeof(opts) };
	struct mg_client *c;
	unsigned long admitted = 0, rejected = 0, n = 0;
	time_t end;
	char *p;

	if (argc != 3)
		return 2;
	opts.socket_path = argv[1];
	if (mg_client_new(&c, &opts) < 0)
		return 1;
	mg_client_set_level_hook(c, on_level, NULL);

	end = time(NULL) + atoi(argv[2]);
	while (time(NULL) < end) {
		/* A request, unless shed. */
		if (mg_admit()) {
			admitted++;
			p = mg_malloc(256);
			p[0] = 1;
			mg_free(p);
		} else
			rejected++;
		if (++n % 1000 == 0)
			nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	}
	mg_client_free(c);
	printf("admitted=%lu rejected=%lu\n", admitted, rejected);
	return 0;
}
