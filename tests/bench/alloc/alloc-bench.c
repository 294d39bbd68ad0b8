/* SPDX-License-Identifier: MIT */
/*
 * One allocator benchmark scenario per run, on whatever malloc the process
 * has (the driver, tests/bench/alloc/run, puts each allocator in with
 * LD_PRELOAD, so every allocator runs this same binary):
 *
 *	alloc-bench ALLOC a      malloc+free pairs, 16..256 B (CPU time)
 *	alloc-bench ALLOC b      replace in a 1000-object window, 16..1024 B (CPU)
 *	alloc-bench ALLOC c      two threads, one allocates, the other frees
 *	alloc-bench ALLOC d CSV  1 GiB burst of 16..4096 B, 90 % freed at
 *	                         random: RSS while idle, forced release, free
 *	                         all; RSS over time written to CSV; the page
 *	                         floor (pages holding live bytes)
 *	alloc-bench ALLOC e      steady churn over a 256 MiB heap of small
 *	                         objects and 64 large blocks: the scavenger
 *	                         thread's CPU share (memguard only)
 *	alloc-bench ALLOC k      no allocator: what the kernel alone takes to
 *	                         give back 4 KiB pages with madvise(), one
 *	                         page in two, and in 1 MiB runs (ms per GiB)
 *
 * ALLOC names the allocator (glibc, jemalloc, tcmalloc, mimalloc, memguard)
 * so that the forced release calls its own function, found with dlsym().
 * Output: "key value" lines.
 */
#include "config.h"

#include <dirent.h>
#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)

#define PAIRS_OPS 50000000               /* (a) malloc+free pairs */
#define WINDOW_OPS 30000000              /* (b) replacements */
#define WINDOW 1000                      /* (b) live objects */
#define XFER_OBJS 20000000               /* (c) objects passed between threads */
#define RING 4096                        /* (c) ring slots, a power of two */
#define BURST_BYTES GIB                  /* (d) allocated in the burst */
#define CHURN_BYTES (256 * MIB)          /* (e) live heap */
#define CHURN_SECONDS 5                  /* (e) duration */

static const char *alloc_name;

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * The calling thread's CPU time: what (a) and (b) count.  On a machine
 * shared with other jobs a single-threaded loop is descheduled for
 * stretches that wall time would add to whichever allocator ran then.
 */
static double cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rss(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "re");

	if (f) {
		if (fscanf(f, "%lu %lu", &size, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void sleep_until(double t)
{
	double d = t - now();

	if (d > 0) {
		struct timespec ts = { (time_t)d, (long)((d - (double)(time_t)d) * 1e9) };

		nanosleep(&ts, NULL);
	}
}

/* The allocator's own "give memory back now". */
static void force_release(void)
{
	if (!strcmp(alloc_name, "glibc")) {
		int (*trim)(size_t) = (int (*)(size_t))dlsym(RTLD_DEFAULT, "malloc_trim");

		if (trim)
			trim(0);
	} else if (!strcmp(alloc_name, "jemalloc")) {
		int (*ctl)(const char *, void *, size_t *, void *, size_t) =
			(int (*)(const char *, void *, size_t *, void *, size_t))dlsym(
				RTLD_DEFAULT, "mallctl");

		if (ctl)
			ctl("arena.4096.purge", NULL, NULL, NULL, 0);   /* MALLCTL_ARENAS_ALL */
	} else if (!strcmp(alloc_name, "tcmalloc")) {
		void (*rel)(void) = (void (*)(void))dlsym(RTLD_DEFAULT,
							  "MallocExtension_ReleaseFreeMemory");

		if (rel)
			rel();
	} else if (!strcmp(alloc_name, "mimalloc")) {
		void (*collect)(bool) = (void (*)(bool))dlsym(RTLD_DEFAULT, "mi_collect");

		if (collect)
			collect(true);
	} else if (!strcmp(alloc_name, "memguard")) {
		size_t (*rel)(size_t) = (size_t(*)(size_t))dlsym(RTLD_DEFAULT, "mg_heap_release");

		if (rel)
			rel(0);
	}
}

/* The memguard scavenger thread's CPU time in seconds, found by name;
 * schedstat counts nanoseconds (stat's ticks are too coarse for 1 %). */
static double scavenger_cpu(void)
{
	double total = 0;
	struct dirent *de;
	DIR *d = opendir("/proc/self/task");

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		char path[300], comm[64] = "";
		unsigned long long ns = 0;
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (!fgets(comm, sizeof(comm), f))
			comm[0] = '\0';
		fclose(f);
		if (strncmp(comm, "mg-scavenger", 12))
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/schedstat", de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (fscanf(f, "%llu", &ns) == 1)
			total += (double)ns / 1e9;
		fclose(f);
	}
	closedir(d);
	return total;
}

/* memguard's own view of its heap, when it is the allocator. */
static void print_mg_stats(const char *prefix)
{
	struct {
		uint64_t sys, inuse, idle, released, metadata;
		double fragmentation;
	} st;
	void (*stats)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "mg_heap_stats");

	if (!stats || strcmp(alloc_name, "memguard"))
		return;
	stats(&st);
	printf("%smg_sys_mib %.1f\n", prefix, (double)st.sys / (double)MIB);
	printf("%smg_inuse_mib %.1f\n", prefix, (double)st.inuse / (double)MIB);
	printf("%smg_idle_mib %.1f\n", prefix, (double)st.idle / (double)MIB);
	printf("%smg_released_mib %.1f\n", prefix, (double)st.released / (double)MIB);
	printf("%smg_metadata_mib %.1f\n", prefix, (double)st.metadata / (double)MIB);
}

static void bench_pairs(void)
{
	uint64_t rng = 1, sum = 0;
	uint16_t sizes[4096];
	double t0, t;
	unsigned i;

	for (i = 0; i < 4096; i++)
		sizes[i] = (uint16_t)(16 + rng_next(&rng) % 241);
	t0 = cpu_now();
	for (i = 0; i < PAIRS_OPS; i++) {
		char *p = malloc(sizes[i & 4095]);

		/* Touch it, so the pair is not optimised away. */
		p[0] = (char)i;
		sum += (uintptr_t)p & 0xff;
		free(p);
	}
	t = cpu_now() - t0;
	printf("ns_per_pair %.2f\n", t * 1e9 / PAIRS_OPS);
	printf("checksum %" PRIu64 "\n", sum);
}

static void bench_window(void)
{
	uint64_t rng = 2;
	void *slots[WINDOW];
	double t0, t;
	unsigned i;

	for (i = 0; i < WINDOW; i++)
		slots[i] = malloc(16 + rng_next(&rng) % 1009);
	t0 = cpu_now();
	for (i = 0; i < WINDOW_OPS; i++) {
		uint64_t r = rng_next(&rng);
		unsigned k = (unsigned)(r % WINDOW);
		char *p;

		free(slots[k]);
		p = malloc(16 + (r >> 32) % 1009);
		p[0] = (char)i;
		slots[k] = p;
	}
	t = cpu_now() - t0;
	for (i = 0; i < WINDOW; i++)
		free(slots[i]);
	printf("ns_per_replace %.2f\n", t * 1e9 / WINDOW_OPS);
}

static void *_Atomic ring[RING];
static atomic_uint ring_head, ring_tail;    /* consumer's, producer's */

static void *xfer_producer(void *arg)
{
	uint64_t rng = 3;
	unsigned i;

	for (i = 0; i < XFER_OBJS; i++) {
		char *p = malloc(16 + rng_next(&rng) % 241);
		unsigned t = atomic_load_explicit(&ring_tail, memory_order_relaxed);

		p[0] = 1;
		while (t - atomic_load_explicit(&ring_head, memory_order_acquire) == RING)
			;
		atomic_store_explicit(&ring[t & (RING - 1)], p, memory_order_relaxed);
		atomic_store_explicit(&ring_tail, t + 1, memory_order_release);
	}
	return arg;
}

static void *xfer_consumer(void *arg)
{
	unsigned i;

	for (i = 0; i < XFER_OBJS; i++) {
		unsigned h = atomic_load_explicit(&ring_head, memory_order_relaxed);
		char *p;

		while (atomic_load_explicit(&ring_tail, memory_order_acquire) == h)
			;
		p = atomic_load_explicit(&ring[h & (RING - 1)], memory_order_relaxed);
		atomic_store_explicit(&ring_head, h + 1, memory_order_release);
		if (p[0] != 1)
			abort();
		free(p);
	}
	return arg;
}

/*
 * Each thread of (c) on a CPU of its own when the process may use two:
 * two threads that spin on each other and land on the same CPU (which a
 * loaded machine's scheduler does at times) wait out whole time slices,
 * and the figure then measures that, whatever the allocator.
 */
static void xfer_attr(pthread_attr_t *attr, unsigned nth)
{
	cpu_set_t allowed, one;
	unsigned cpu, seen = 0;

	pthread_attr_init(attr);
	if (sched_getaffinity(0, sizeof(allowed), &allowed) || CPU_COUNT(&allowed) < 2)
		return;
	for (cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, &allowed))
			continue;
		if (seen++ == nth) {
			CPU_ZERO(&one);
			CPU_SET(cpu, &one);
			pthread_attr_setaffinity_np(attr, sizeof(one), &one);
			return;
		}
	}
}

static void bench_xfer(void)
{
	pthread_attr_t pa, ca;
	pthread_t a, b;
	double t0, t;

	xfer_attr(&pa, 0);
	xfer_attr(&ca, 1);
	t0 = now();
	pthread_create(&a, &pa, xfer_producer, NULL);
	pthread_create(&b, &ca, xfer_consumer, NULL);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	t = now() - t0;
	pthread_attr_destroy(&pa);
	pthread_attr_destroy(&ca);
	printf("ns_per_xfer %.2f\n", t * 1e9 / XFER_OBJS);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * The page floor: how many distinct 4 KiB pages hold a live byte, from the
 * live blocks' addresses and requested sizes.  No allocator that does not
 * move blocks can keep fewer resident.  Scratch memory comes from mmap, not
 * from the allocator being measured, and is unmapped before returning.
 */
static uint64_t live_pages(void *const *blocks, const uint32_t *sizes, size_t n,
			   const void *const *extra, const size_t *extra_len, size_t nextra)
{
	size_t cap = 0, len = 0, i, j;
	uint64_t *pg, distinct = 0;

	for (i = 0; i < n; i++)
		cap += sizes[i] / 4096 + 2;
	for (i = 0; i < nextra; i++)
		cap += extra_len[i] / 4096 + 2;
	pg = mmap(NULL, cap * sizeof(*pg), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		  -1, 0);
	if (pg == MAP_FAILED)
		return 0;
	for (i = 0; i < n + nextra; i++) {
		uintptr_t a = (uintptr_t)(i < n ? blocks[i] : extra[i - n]);
		size_t sz = i < n ? sizes[i] : extra_len[i - n];

		if (!sz)
			continue;
		for (j = a / 4096; j <= (a + sz - 1) / 4096; j++)
			pg[len++] = j;
	}
	qsort(pg, len, sizeof(*pg), cmp_u64);
	for (i = 0; i < len; i++)
		if (!i || pg[i] != pg[i - 1])
			distinct++;
	munmap(pg, cap * sizeof(*pg));
	return distinct;
}

static void bench_burst(const char *csv)
{
	uint64_t rng = 4, total = 0, start, r0, r1, r2, r5, pre, rel_rss, final, live = 0, floor_pages;
	size_t n = 0, cap, i, nfree;
	uint32_t *sizes;
	void **objs;
	double t0, tr, trel, tf;
	FILE *out = fopen(csv, "we");
	int step;

	start = rss();
	objs = malloc(BURST_BYTES / 2048 * 2 * sizeof(*objs));
	sizes = malloc(BURST_BYTES / 2048 * 2 * sizeof(*sizes));
	cap = BURST_BYTES / 2048 * 2;
	while (total < BURST_BYTES && n < cap) {
		uint32_t s = (uint32_t)(16 + rng_next(&rng) % 4081);

		objs[n] = malloc(s);
		memset(objs[n], 0x5a, s);
		sizes[n] = s;
		total += s;
		n++;
	}
	/* Free 90 % at random: shuffle, free the first 90 %. */
	for (i = n - 1; i > 0; i--) {
		size_t j = (size_t)(rng_next(&rng) % (i + 1));
		void *tp = objs[i];
		uint32_t ts = sizes[i];

		objs[i] = objs[j];
		objs[j] = tp;
		sizes[i] = sizes[j];
		sizes[j] = ts;
	}
	nfree = n * 9 / 10;
	for (i = 0; i < nfree; i++)
		free(objs[i]);
	for (i = nfree; i < n; i++)
		live += sizes[i];
	t0 = now();
	r0 = rss();
	r1 = r2 = r5 = r0;
	if (out)
		fprintf(out, "# %s: seconds since the burst ended, RSS MiB\n", alloc_name);
	for (step = 0; step <= 50; step++) {
		uint64_t r;

		sleep_until(t0 + step * 0.1);
		r = rss();
		if (out)
			fprintf(out, "%.1f %.2f\n", step * 0.1, (double)r / (double)MIB);
		if (step == 10)
			r1 = r;
		if (step == 20)
			r2 = r;
		if (step == 50)
			r5 = r;
	}
	print_mg_stats("burst_");
	pre = rss();
	tr = now();
	force_release();
	trel = now() - tr;
	rel_rss = rss();
	if (out)
		fprintf(out, "%.1f %.2f\n", now() - t0, (double)rel_rss / (double)MIB);
	{
		/* The benchmark's own two arrays are live blocks too. */
		const void *extra[] = { objs, sizes };
		const size_t extra_len[] = { n * sizeof(*objs), n * sizeof(*sizes) };

		floor_pages = live_pages(objs + nfree, sizes + nfree, n - nfree, extra, extra_len, 2);
	}
	for (i = nfree; i < n; i++)
		free(objs[i]);
	free(objs);
	free(sizes);
	tf = now();
	force_release();
	tf = now() - tf;
	final = rss();
	if (out) {
		fprintf(out, "%.1f %.2f\n", now() - t0, (double)final / (double)MIB);
		fclose(out);
	}
	printf("burst_objects %zu\n", n);
	printf("live_mib %.1f\n", (double)live / (double)MIB);
	printf("start_mib %.1f\n", (double)start / (double)MIB);
	printf("live_pages_mib %.1f\n", (double)floor_pages * 4096 / (double)MIB);
	/* What the process had before the burst (code, libraries, stack)
	 * plus the pages of the live blocks. */
	printf("page_floor_mib %.1f\n", ((double)start + (double)floor_pages * 4096) / (double)MIB);
	printf("rss0_mib %.1f\n", (double)r0 / (double)MIB);
	printf("rss1_mib %.1f\n", (double)r1 / (double)MIB);
	printf("rss2_mib %.1f\n", (double)r2 / (double)MIB);
	printf("rss5_mib %.1f\n", (double)r5 / (double)MIB);
	printf("pre_release_mib %.1f\n", (double)pre / (double)MIB);
	printf("release_ms %.1f\n", trel * 1e3);
	printf("rss_release_mib %.1f\n", (double)rel_rss / (double)MIB);
	printf("final_release_ms %.1f\n", tf * 1e3);
	printf("final_mib %.1f\n", (double)final / (double)MIB);
	printf("final_over_start_mib %.1f\n", ((double)final - (double)start) / (double)MIB);
	print_mg_stats("final_");
}

static void bench_churn(void)
{
	uint64_t rng = 6, total = 0;
	size_t n = 0, cap = CHURN_BYTES / 2048 * 2, ops = 0, i;
	void **objs = malloc(cap * sizeof(*objs));
	void *large[64] = { NULL };
	double t0, c0, wall, cpu;

	while (total < CHURN_BYTES && n < cap) {
		uint32_t s = (uint32_t)(16 + rng_next(&rng) % 4081);

		objs[n] = malloc(s);
		memset(objs[n], 1, s);
		total += s;
		n++;
	}
	/* Let the scavenger settle after the build-up, then measure. */
	sleep(3);
	c0 = scavenger_cpu();
	t0 = now();
	while (now() - t0 < CHURN_SECONDS) {
		unsigned k;

		for (k = 0; k < 1000; k++) {
			uint64_t r = rng_next(&rng);
			size_t j = (size_t)(r % n);
			uint32_t s = (uint32_t)(16 + (r >> 40) % 4081);

			free(objs[j]);
			objs[j] = malloc(s);
			memset(objs[j], 2, s < 64 ? s : 64);
			/* And the page heap churns too: large blocks come and
			 * go, so there are free pages for the scavenger. */
			if (k % 100 == 0) {
				size_t ls = 65536 + (size_t)(r >> 20) % (2 * MIB);
				char *lp;

				free(large[r % 64]);
				lp = malloc(ls);
				for (i = 0; i < ls; i += 4096)
					lp[i] = 1;
				large[r % 64] = lp;
			}
		}
		ops += 1000;
		/* About 20 M replacements a second would hide the scavenger
		 * in noise; a service churns far slower.  Pace to 2 M/s. */
		sleep_until(t0 + (double)ops / 2e6);
	}
	wall = now() - t0;
	cpu = scavenger_cpu() - c0;
	printf("churn_ops %zu\n", ops);
	printf("scavenger_cpu_pct %.3f\n", cpu / wall * 100);
	printf("churn_rss_mib %.1f\n", (double)rss() / (double)MIB);
	while (n)
		free(objs[--n]);
	free(objs);
	for (i = 0; i < 64; i++)
		free(large[i]);
}

/*
 * The kernel's own price of giving pages back, the floor under any
 * allocator's release: 256 MiB of an mmap()ed, written region, given back
 * with one madvise(MADV_DONTNEED) per range, ranges of one 4 KiB page
 * every other page (what a fragmented heap has) or of 1 MiB; CPU time of
 * the thread (the work is the kernel's, done in this thread).
 */
#define KERNEL_BYTES (256 * MIB)

static double kernel_ms_per_gib(size_t run, size_t stride, int pidfd)
{
	uint8_t *p = mmap(NULL, KERNEL_BYTES, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct iovec iov[256];
	size_t off, given = 0, n = 0;
	double t0, t;

	if (p == MAP_FAILED)
		return 0;
	memset(p, 0x5a, KERNEL_BYTES);
	t0 = cpu_now();
	for (off = 0; off + run <= KERNEL_BYTES; off += stride) {
		given += run;
		if (pidfd < 0) {
			madvise(p + off, run, MADV_DONTNEED);
			continue;
		}
		iov[n++] = (struct iovec){ .iov_base = p + off, .iov_len = run };
		if (n == 256 || off + stride + run > KERNEL_BYTES) {
			if (syscall(SYS_process_madvise, pidfd, iov, n, MADV_DONTNEED, 0) < 0)
				given = 0;
			n = 0;
		}
	}
	t = cpu_now() - t0;
	munmap(p, KERNEL_BYTES);
	return given ? t * 1e3 / ((double)given / (double)GIB) : 0;
}

static void bench_kernel(void)
{
	int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	double batched = pidfd >= 0 ? kernel_ms_per_gib(4096, 8192, pidfd) : 0;

	printf("kernel_scattered_ms_per_gib %.1f\n", kernel_ms_per_gib(4096, 8192, -1));
	/* process_madvise(): 256 ranges a call, one TLB flush for them
	 * (kernels that take MADV_DONTNEED there, 6.x). */
	if (batched > 0)
		printf("kernel_scattered_batched_ms_per_gib %.1f\n", batched);
	printf("kernel_runs_ms_per_gib %.1f\n", kernel_ms_per_gib(MIB, MIB, -1));
	if (pidfd >= 0)
		close(pidfd);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s ALLOC a|b|c|d CSV|e|k\n", argv[0]);
		return 2;
	}
	alloc_name = argv[1];
	switch (argv[2][0]) {
	case 'a':
		bench_pairs();
		break;
	case 'b':
		bench_window();
		break;
	case 'c':
		bench_xfer();
		break;
	case 'd':
		bench_burst(argc > 3 ? argv[3] : "/dev/null");
		break;
	case 'e':
		bench_churn();
		break;
	case 'k':
		bench_kernel();
		break;
	default:
		return 2;
	}
	return 0;
}
