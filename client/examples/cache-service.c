/* SPDX-License-Identifier: MIT */
/*
 * cache-service: a request loop in front of an LRU cache, run as a
 * memguard client.  It shows the three things a service does with
 * libmemguard-client:
 *
 *  - its cache follows the daemon: the level hook and the GC hook set the
 *    cache's target size, and the release hook evicts on demand and says
 *    how much it freed;
 *  - it sheds load: every request first asks mg_admit(), which refuses the
 *    daemon's throttle share of them when the service is near its budget;
 *  - it allocates from the memguard heap (mg_malloc/mg_free), whose free
 *    pages the library gives back to the kernel.
 *
 * Each request draws a key (skewed: a few keys are hot, so the cache pays)
 * and on a miss "computes" the value: it allocates and fills it, then
 * caches it.  Once a second it prints a line of figures, and a summary at
 * the end.  Hooks run on the library's own thread, so the cache has a lock.
 *
 * Requests arrive on a fixed schedule (request i at start + i / rate); a
 * request's latency runs from its arrival to the end of its handling.  The
 * 'summary:' line at exit gives the counts, latency percentiles, the lowest
 * GC percent and the largest cache seen and the peak RSS.  With a capacity
 * above the service's memory limit (--cache-mb) and values of a MiB, the
 * cache outgrows the limit unless memguardd shrinks it: the outcome
 * experiment in tests/bench/outcome.
 *
 * Build: cc cache-service.c $(pkg-config --cflags --libs libmemguard-client)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syslog.h>
#include <time.h>
#include <unistd.h>

#include <memguard/client.h>

#include "workload.h"

#define MiB (1024.0 * 1024.0)
#define REQUESTS_PER_TURN 64             /* requests between two looks at the clock */

struct entry {
	uint64_t key;
	size_t size;                     /* bytes charged: mg_usable_size() */
	struct entry *prev, *next;       /* LRU list, most recent first */
	struct entry *hnext;             /* hash chain */
	unsigned char value[];
};

struct cache {
	pthread_mutex_t lock;
	struct entry **table;
	size_t buckets;
	struct entry *head, *tail;
	size_t bytes, entries;
	size_t capacity;                 /* --cache-mb */
	size_t target;                   /* what the daemon allows now */
	unsigned level_pct, gc_pct;      /* the two limits on the target */
	uint64_t evicted_bytes;
	unsigned gc_pct_min;             /* the lowest gc_pct seen */
	size_t bytes_peak;               /* the most ever cached */
};

static struct {
	const char *socket;
	const char *service;
	struct schedule sched;           /* --rate (requests per second; 0 = flat out), --burst */
	unsigned duration;               /* seconds; 0 = until a signal */
	size_t cache_mb;
	size_t value_kb;
	unsigned keys;
	bool quiet;
} arg = { .sched.rate = 20000, .duration = 0, .cache_mb = 64, .value_kb = 16, .keys = 20000 };

static struct cache cache;
static volatile sig_atomic_t stopping;
static unsigned levels_seen;              /* bit per enum mg_level */

/* ---- the cache -------------------------------------------------------- */

static void unlink_entry(struct entry *e)
{
	struct entry **pp = &cache.table[e->key % cache.buckets];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	if (e->prev)
		e->prev->next = e->next;
	else
		cache.head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		cache.tail = e->prev;
	cache.bytes -= e->size;
	cache.entries--;
}

/* Evict from the cold end until at most `limit` bytes are cached; returns
 * the bytes freed.  Call with the lock held. */
static size_t shrink_to(size_t limit)
{
	size_t freed = 0;

	while (cache.tail && cache.bytes > limit) {
		struct entry *e = cache.tail;

		unlink_entry(e);
		freed += e->size;
		mg_free(e);
	}
	cache.evicted_bytes += freed;
	return freed;
}

/* The target is the tighter of the two limits the daemon sets. */
static void retarget(void)
{
	unsigned pct = cache.level_pct < cache.gc_pct ? cache.level_pct : cache.gc_pct;

	cache.target = cache.capacity / 100 * pct;
	shrink_to(cache.target);
}

static struct entry *lookup(uint64_t key)
{
	struct entry *e;

	for (e = cache.table[key % cache.buckets]; e; e = e->hnext)
		if (e->key == key)
			break;
	if (!e || e == cache.head)
		return e;
	/* Move to the front. */
	e->prev->next = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		cache.tail = e->prev;
	e->prev = NULL;
	e->next = cache.head;
	cache.head->prev = e;
	cache.head = e;
	return e;
}

static void insert(struct entry *e)
{
	struct entry **bucket = &cache.table[e->key % cache.buckets];

	e->hnext = *bucket;
	*bucket = e;
	e->prev = NULL;
	e->next = cache.head;
	if (cache.head)
		cache.head->prev = e;
	cache.head = e;
	if (!cache.tail)
		cache.tail = e;
	cache.bytes += e->size;
	cache.entries++;
	if (cache.bytes > cache.bytes_peak)
		cache.bytes_peak = cache.bytes;
	shrink_to(cache.target);
}

/* ---- hooks: these run on the library's thread -------------------------- */

/* How much of its capacity the cache may use at each level: it grows back
 * at NORMAL ("cleared"). */
static void on_level(void *data, enum mg_level level)
{
	static const unsigned pct[] = { 100, 60, 30, 10 };
	static const char *const name[] = { "NORMAL", "WARN", "CRITICAL", "EMERGENCY" };

	pthread_mutex_lock(&cache.lock);
	cache.level_pct = pct[level];
	retarget();
	pthread_mutex_unlock(&cache.lock);
	__atomic_or_fetch(&levels_seen, 1u << level, __ATOMIC_RELAXED);
	printf("event: level=%s target=%.1fMiB at=%.3f\n", name[level], cache.target / MiB,
	       now_s());
	fflush(stdout);
}

/* A GC target of p % (Go's GOGC; 0 = our default) lets the cache keep p %
 * of its capacity: a lower target means less memory kept for reuse. */
static void on_gc(void *data, unsigned gc_percent)
{
	pthread_mutex_lock(&cache.lock);
	cache.gc_pct = gc_percent == 0 || gc_percent > 100 ? 100 : gc_percent;
	if (cache.gc_pct < cache.gc_pct_min)
		cache.gc_pct_min = cache.gc_pct;
	retarget();
	pthread_mutex_unlock(&cache.lock);
	printf("event: gc=%u target=%.1fMiB\n", gc_percent, cache.target / MiB);
	fflush(stdout);
}

/* Drop at least `bytes` of cache (SIZE_MAX: all of it). */
static size_t on_release(void *data, size_t bytes)
{
	size_t freed;

	pthread_mutex_lock(&cache.lock);
	freed = shrink_to(bytes >= cache.bytes ? 0 : cache.bytes - bytes);
	pthread_mutex_unlock(&cache.lock);
	printf("event: release asked=%zu freed=%zu\n", bytes, freed);
	fflush(stdout);
	return freed;
}

static void on_log(void *data, int priority, const char *msg)
{
	if (priority <= LOG_INFO)
		fprintf(stderr, "memguard: %s\n", msg);
}

/* ---- the service --------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next_random(void)
{
	return xorshift64(&rng);
}

/* Hot keys first: the minimum of two uniform draws, twice. */
static uint64_t draw_key(void)
{
	uint64_t a = next_random() % arg.keys, b = next_random() % arg.keys;
	uint64_t c = next_random() % arg.keys;

	a = a < b ? a : b;
	return a < c ? a : c;
}

/* One request: 0, or -ENOMEM.  `*ret_hit` says whether the cache had it. */
static int serve(uint64_t key, bool *ret_hit)
{
	size_t size = arg.value_kb * 1024;
	struct entry *e;

	pthread_mutex_lock(&cache.lock);
	e = lookup(key);
	*ret_hit = e != NULL;
	pthread_mutex_unlock(&cache.lock);
	if (e)
		return 0;

	/* A miss: compute the value, then keep it. */
	e = mg_malloc(sizeof(*e) + size);
	if (!e)
		return -ENOMEM;
	e->key = key;
	for (size_t i = 0; i < size; i += 64)
		e->value[i] = (unsigned char)(key + i);
	e->size = mg_usable_size(e);
	/* Only this thread inserts, so the key is still missing; the hooks
	 * may have evicted meanwhile, which is why the lock is taken again. */
	pthread_mutex_lock(&cache.lock);
	insert(e);
	pthread_mutex_unlock(&cache.lock);
	return 0;
}

static void on_signal(int sig)
{
	stopping = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: cache-service [OPTION]...\n"
		"A request loop with an LRU cache that follows memguardd's directives.\n"
		"\n"
		"  -s, --socket=PATH     memguardd's socket (default: $MEMGUARD_SOCKET, else\n"
		"                        /run/memguard/memguardd.sock)\n"
		"  -S, --service=NAME    the service to register as (default: $MEMGUARD_SERVICE,\n"
		"                        else the daemon maps our cgroup)\n"
		"  -r, --rate=N          requests per second; 0 = as fast as possible\n"
		"                        (default 20000)\n"
		"  -d, --duration=SEC    stop after SEC seconds; 0 = at SIGINT/SIGTERM (default)\n"
		"  -c, --cache-mb=N      cache capacity at NORMAL, in MiB (default 64)\n"
		"  -v, --value-kb=N      size of a cached value, in KiB (default 16)\n"
		"  -k, --keys=N          distinct keys (default 20000)\n"
		"      --burst=SEC:RATE  a burst first: RATE requests per second for SEC\n"
		"                        seconds, then --rate (both rates above 0)\n"
		"  -q, --quiet           no line of figures per second\n"
		"  -h, --help            show this help\n"
		"\n"
		"The cache keeps 100/60/30/10 %% of its capacity at NORMAL/WARN/CRITICAL/\n"
		"EMERGENCY, at most the daemon's GC percent of it, and evicts on release\n"
		"demands; mg_admit() sheds the daemon's throttle share of the requests.\n"
		"Prints 'event:' lines for every hook call, a 'done:' summary and a\n"
		"'summary:' line: requests, admitted, shed (and %%), the latency from a\n"
		"request's arrival to its end (p50_ms, p99_ms, max_ms), the lowest GC\n"
		"percent, the largest cache (cache_peak, bytes) and the peak RSS (bytes).\n");
}

static int parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "service", required_argument, NULL, 'S' },
		{ "rate", required_argument, NULL, 'r' },
		{ "duration", required_argument, NULL, 'd' },
		{ "cache-mb", required_argument, NULL, 'c' },
		{ "value-kb", required_argument, NULL, 'v' },
		{ "keys", required_argument, NULL, 'k' },
		{ "burst", required_argument, NULL, 'B' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	unsigned long v;
	char *end;
	int o;

	while ((o = getopt_long(argc, argv, "s:S:r:d:c:v:k:qh", opts, NULL)) >= 0) {
		switch (o) {
		case 's':
			arg.socket = optarg;
			continue;
		case 'S':
			arg.service = optarg;
			continue;
		case 'q':
			arg.quiet = true;
			continue;
		case 'B':
			if (schedule_parse_burst(&arg.sched, optarg, "cache-service") < 0)
				return -1;
			continue;
		case 'h':
			usage(stdout);
			exit(0);
		case 'r':
		case 'd':
		case 'c':
		case 'v':
		case 'k':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || end == optarg || v > 100000000) {
				fprintf(stderr, "cache-service: bad number '%s'\n", optarg);
				return -1;
			}
			if (o == 'r')
				arg.sched.rate = (unsigned)v;
			else if (o == 'd')
				arg.duration = (unsigned)v;
			else if (o == 'c')
				arg.cache_mb = v;
			else if (o == 'v')
				arg.value_kb = v;
			else
				arg.keys = (unsigned)v;
			continue;
		default:
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "cache-service: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (arg.keys == 0 || arg.value_kb == 0) {
		fprintf(stderr, "cache-service: --keys and --value-kb must be positive\n");
		return -1;
	}
	if (arg.sched.burst_s && arg.sched.rate == 0) {
		fprintf(stderr, "cache-service: --burst needs a --rate above 0\n");
		return -1;
	}
	return 0;
}

static struct {
	uint64_t requests, admitted, rejected, hits;
	double lat_max;                  /* seconds */
} count;

static int cache_init(void)
{
	pthread_mutex_init(&cache.lock, NULL);
	cache.capacity = arg.cache_mb * 1024 * 1024;
	cache.level_pct = cache.gc_pct = cache.gc_pct_min = 100;
	cache.target = cache.capacity;
	cache.buckets = arg.keys * 2 + 1;
	cache.table = mg_calloc(cache.buckets, sizeof(*cache.table));
	return cache.table ? 0 : -ENOMEM;
}

/* The memguard client with the cache's hooks; NULL after a message. */
static struct mg_client *client_start(void)
{
	struct mg_client_opts opts = { .size = sizeof(opts), .threading = MG_THREAD_OWN };
	struct mg_client *client;
	int r;

	/* Hooks before the first directive can arrive is neatest, but not
	 * required: a hook set later is told the directive in force. */
	opts.socket_path = arg.socket;
	opts.service = arg.service;
	r = mg_client_new(&client, &opts);
	if (r < 0) {
		fprintf(stderr, "cache-service: cannot create the memguard client: %s\n",
			strerror(-r));
		return NULL;
	}
	mg_client_set_log_fn(client, on_log, NULL);
	mg_client_set_level_hook(client, on_level, NULL);
	mg_client_set_gc_hook(client, on_gc, NULL);
	mg_client_set_release_hook(client, on_release, NULL);
	return client;
}

/*
 * One turn of the request loop: the requests due by now, at most a turn's
 * worth.  Request i arrives at start + i / rate, whether or not the loop
 * keeps up: a backlog is worked off, not dropped, and its requests'
 * latency shows the wait.  Flat out (rate 0), a turn is 1000 requests
 * that arrive now.  Returns how many requests are due.
 */
static uint64_t serve_turn(double start)
{
	unsigned turn = arg.sched.rate ? REQUESTS_PER_TURN : 1000, n = 0;
	double now = now_s();
	uint64_t due = schedule_due(&arg.sched, start, now, count.requests, turn);

	while (count.requests < due && n < turn && !stopping) {
		double arrival = schedule_arrived_at(&arg.sched, start, count.requests, now);
		bool hit;

		count.requests++;
		n++;
		if (!mg_admit()) {
			count.rejected++;        /* a real service answers 503 here */
			continue;
		}
		count.admitted++;
		if (serve(draw_key(), &hit) < 0) {
			fprintf(stderr, "cache-service: out of memory\n");
			stopping = 1;
			break;
		}
		count.hits += hit;
		now = now_s();
		lat_record(now - arrival);
		if (now - arrival > count.lat_max)
			count.lat_max = now - arrival;
	}
	return due;
}

/* The line of figures printed once a second (`t` in seconds). */
static void print_figures(struct mg_client *client, double t)
{
	struct mg_heap_stats hs;

	mg_heap_stats(&hs);
	pthread_mutex_lock(&cache.lock);
	/* The cache is in the heap already: not "external". */
	printf("t=%.0fs level=%d cache=%.1fMiB target=%.1fMiB entries=%zu "
	       "hit=%.0f%% admitted=%" PRIu64 " rejected=%" PRIu64
	       " heap_inuse=%.1fMiB heap_released=%.1fMiB\n",
	       t, (int)mg_client_level(client), cache.bytes / MiB, cache.target / MiB,
	       cache.entries, count.admitted ? 100.0 * count.hits / count.admitted : 0.0,
	       count.admitted, count.rejected, hs.inuse / MiB, hs.released / MiB);
	pthread_mutex_unlock(&cache.lock);
}

static void print_summary(double seconds)
{
	struct rusage ru;

	printf("done: requests=%" PRIu64 " admitted=%" PRIu64 " rejected=%" PRIu64
	       " hits=%" PRIu64 " evicted=%.1fMiB levels=%s%s%s%s\n",
	       count.requests, count.admitted, count.rejected, count.hits,
	       cache.evicted_bytes / MiB, levels_seen & 1 ? "N" : "", levels_seen & 2 ? "W" : "",
	       levels_seen & 4 ? "C" : "", levels_seen & 8 ? "E" : "");
	getrusage(RUSAGE_SELF, &ru);
	printf("summary: seconds=%.1f requests=%" PRIu64 " admitted=%" PRIu64 " shed=%" PRIu64
	       " shed_pct=%.2f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f min_gc_pct=%u"
	       " cache_peak=%zu peak_rss=%llu\n",
	       seconds, count.requests, count.admitted, count.rejected,
	       count.requests ? 100.0 * count.rejected / count.requests : 0.0,
	       lat_quantile(0.50), lat_quantile(0.99), count.lat_max * 1000, cache.gc_pct_min,
	       cache.bytes_peak, (unsigned long long)ru.ru_maxrss * 1024);
}

int main(int argc, char **argv)
{
	struct mg_client *client;
	double start, next_tick;

	if (parse_args(argc, argv) < 0) {
		usage(stderr);
		return 2;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (cache_init() < 0) {
		fprintf(stderr, "cache-service: out of memory\n");
		return 1;
	}
	client = client_start();
	if (!client)
		return 1;

	start = now_s();
	next_tick = start + 1;
	while (!stopping) {
		uint64_t due = serve_turn(start);
		double now = now_s();

		if (now >= next_tick) {
			if (!arg.quiet)
				print_figures(client, now - start);
			next_tick += 1;
		}
		if (arg.duration && now - start >= arg.duration)
			break;
		/* Sleep until the next arrival (at least 1 ms: at high rates
		 * requests come in small batches), the next line of figures or
		 * the end. */
		if (arg.sched.rate && count.requests >= due) {
			double wait = schedule_wait(&arg.sched, count.requests, start, now,
						    next_tick, arg.duration);

			usleep((useconds_t)(wait * 1e6));
		}
	}

	/* Say BYE before the cache goes: a hook must not find it freed. */
	mg_client_free(client);
	print_summary(now_s() - start);
	shrink_to(0);
	mg_free(cache.table);
	return 0;
}
