/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for conf_parse(): the input is the file, read through
 * fmemopen().  Besides the sanitizers' checks, the result must keep the
 * promises of conf.h, and the verdict must agree with the reports: -EINVAL
 * with at least one report, or 0 with none.  A broken promise aborts.
 */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                    \
	do {                        \
		if (!(x))           \
			abort();    \
	} while (0)

struct counts {
	size_t n_reports;
	unsigned n_lines;
};

static void report(void *userdata, const char *file, unsigned line, const char *message)
{
	struct counts *n = userdata;

	CHECK(file && strcmp(file, "fuzz.conf") == 0);
	CHECK(line >= 1 && line <= n->n_lines);
	CHECK(message && message[0] && !strchr(message, '\n'));
	n->n_reports++;
}

static void check_size(const struct conf_size *s, bool budget)
{
	switch (s->kind) {
	case CONF_SIZE_BYTES:
		CHECK(s->percent == 0);
		CHECK(!budget || s->bytes > 0);
		break;
	case CONF_SIZE_PERCENT:
		CHECK(s->bytes == 0 && s->percent >= 1 && s->percent <= 10000);
		break;
	case CONF_SIZE_MAX:
		CHECK(budget && s->bytes == 0 && s->percent == 0);
		break;
	default:
		CHECK(false);
	}
}

static void check_conf(const struct mg_conf *c)
{
	const struct conf_daemon *d = &c->daemon;

	CHECK(c->path && strcmp(c->path, "fuzz.conf") == 0);
	CHECK(d->socket && d->socket[0] == '/' && strlen(d->socket) <= 107);
	CHECK(d->socket_group && d->admin_group);
	CHECK(!d->cgroup_root || d->cgroup_root[0] == '/');
	CHECK(d->tick_ms >= 10 && d->tick_ms <= 60000);
	CHECK(d->log_level >= 0 && d->log_level <= 7);
	CHECK(d->host_pressure <= 10000);

	CHECK(c->n_services <= CONF_MAX_SERVICES);
	for (size_t i = 0; i < c->n_services; i++) {
		const struct conf_service *s = &c->services[i];
		size_t len = strlen(s->cgroup);

		CHECK(s->name[0] && strlen(s->name) <= 255);
		CHECK(len > 0 && len <= 1024 && s->cgroup[0] != '/' && s->cgroup[len - 1] != '/');
		CHECK(!strstr(s->cgroup, "//"));
		CHECK(s->line >= 1);
		check_size(&s->budget, true);
		check_size(&s->guarantee, false);
		CHECK(s->warn >= 100 && s->warn < s->critical && s->critical <= 10000);
		CHECK(s->pressure_some <= 10000 && s->pressure_full <= 10000);
		CHECK(s->min_gc_percent >= 1 && s->min_gc_percent <= 1000);
		CHECK(s->max_throttle <= 990);
		CHECK(s->release_deadline_ms >= 10 && s->release_deadline_ms <= 600000);
		CHECK(s->enforce <= MG_ENFORCE_KILL);
		CHECK(s->priority >= -1000 && s->priority <= 1000);
		CHECK(conf_find_service(c, s->name) == s);
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(c->services[j].cgroup, s->cgroup) != 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct counts n = { .n_lines = 0 };
	struct mg_conf *c = NULL;
	FILE *f;
	int r;

	/* A line is counted from its first byte; the reader counts the same way. */
	for (size_t i = 0; i < size; i++)
		if (i == 0 || data[i - 1] == '\n')
			n.n_lines++;

	f = fmemopen((void *)data, size, "r");
	if (!f)
		return 0;
	r = conf_parse(f, "fuzz.conf", report, &n, &c);
	fclose(f);

	CHECK(r == 0 || r == -EINVAL || r == -ENOMEM);
	CHECK((r == 0) == (c != NULL));
	if (r == 0) {
		CHECK(n.n_reports == 0);
		check_conf(c);
	} else if (r == -EINVAL) {
		CHECK(n.n_reports > 0);
	}
	conf_free(c);
	return 0;
}
