/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the pure parsers of daemon/monitor-parse.c.  Every
 * parser sees every input (they are cheap, and a PSI file fed to the
 * mountinfo parser is as good a test as any), so the seeds in
 * tests/fuzz/corpus/monitor/ are plain copies of the kernel's files.
 * Besides the sanitizers' checks, the results must keep the promises of
 * monitor.h; a broken promise aborts.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/monitor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                    \
	do {                        \
		if (!(x))           \
			abort();    \
	} while (0)

static void check_path(const char *p, size_t size)
{
	if (!p)
		return;
	CHECK(p[0] == '/');
	CHECK(strlen(p) <= size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	struct monitor_psi psi;
	struct monitor_memory_stat st;
	struct monitor_memory_events ev;
	struct monitor_oom_control oc;
	struct monitor_meminfo mi;
	struct monitor_roots roots = {};
	char *v2 = NULL, *v1 = NULL;
	uint64_t v;

	if (monitor_parse_psi(buf, size, &psi) == 0 && !psi.has_full)
		CHECK(psi.full.avg10 == 0 && psi.full.total == 0);

	monitor_parse_memory_stat(buf, size, /* v1= */ false, &st);
	monitor_parse_memory_stat(buf, size, /* v1= */ true, &st);

	if (monitor_parse_memory_events(buf, size, &ev) == 0 && !ev.has_oom_group_kill)
		CHECK(ev.oom_group_kill == 0);

	monitor_parse_oom_control(buf, size, &oc);

	monitor_parse_u64(buf, size, &v);
	if (monitor_parse_limit(buf, size, &v) == 0)
		CHECK(v == MONITOR_UNLIMITED || v < MONITOR_LIMIT_HUGE);

	if (monitor_parse_meminfo(buf, size, &mi) == 0)
		CHECK(mi.total % 1024 == 0 && mi.available % 1024 == 0);

	if (monitor_parse_pid_cgroup(buf, size, &v2, &v1) == 0) {
		CHECK(v2 || v1);
		check_path(v2, size);
		check_path(v1, size);
		free(v2);
		free(v1);
	} else
		CHECK(!v2 && !v1);

	if (monitor_parse_mountinfo(buf, size, &roots) == 0) {
		CHECK(roots.v2 || roots.v1_memory);
		check_path(roots.v2, size);
		check_path(roots.v1_memory, size);
		monitor_roots_done(&roots);
	} else
		CHECK(!roots.v2 && !roots.v1_memory);
	return 0;
}
