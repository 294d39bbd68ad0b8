/* SPDX-License-Identifier: MIT */
/*
 * lua-service: an embedded Lua 5.4 interpreter as a memguard client, the
 * reference for "lowering a real garbage collector's target".
 *
 *  - Lua allocates from the memguard heap: lua_newstate() gets a lua_Alloc
 *    over mg_realloc()/mg_free(), so what the collector frees becomes free
 *    heap pages that the library can give back to the kernel.
 *  - The GC hook sets Lua's collector pause, Lua's GOGC: a pause of p %
 *    starts a new cycle when memory reaches p % of what the last cycle
 *    left, so GC percent g maps to a pause of 100 + g (200, Lua's default,
 *    is GOGC=100).  A lower percent means more frequent collection and a
 *    smaller heap; it also starts a cycle at once, since Lua would apply
 *    the new pause only after the cycle it is waiting for.
 *  - The level hook shrinks the script's page cache and, at CRITICAL and
 *    above, forces a full collection; the release hook drops the page
 *    cache, collects, and returns the bytes Lua gave back.
 *  - mg_admit() sheds the daemon's throttle share of the requests.
 *
 * With --request-kb=N it runs the workload of the outcome experiment
 * (tests/bench/outcome) instead of rendering pages: every admitted request
 * builds an N KiB string that stays referenced for --keep seconds, so the
 * live heap is rate × N KiB × keep and the collector's pause decides how
 * far the heap overshoots it.  Requests arrive on a fixed schedule; a
 * request's latency runs from its arrival to the end of its handling, so
 * time spent queued behind a collection counts.  At exit a 'summary:' line
 * gives the counts, latency percentiles, the lowest pause and the peak RSS.
 *
 * A lua_State is not thread-safe, so this example runs the client in
 * event-loop mode (MG_THREAD_NONE): the main loop polls mg_client_fd()
 * between requests and calls mg_client_dispatch(), and the hooks run
 * right there, on the thread that owns the interpreter.
 *
 * Build: cc lua-service.c $(pkg-config --cflags --libs libmemguard-client lua5.4)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syslog.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <memguard/client.h>

#include "workload.h"

#define LUA_DEFAULT_PAUSE 200            /* %, Lua 5.4's default (manual §2.5.1) */
#define LUA_MAX_PAUSE 1000               /* %, Lua stores pause/4 in a byte */
#define REQUESTS_PER_TURN 64             /* requests between two client dispatches */

/* The service's logic, in Lua: render a page per request, keeping
 * rendered pages in a cache bounded by `cache_limit` entries. */
static const char script[] =
	"cache, cache_n, cache_limit = {}, 0, 4000\n"
	"function handle(key)\n"
	"  local page = cache[key]\n"
	"  if page then return #page end\n"
	"  local parts = {}\n"
	"  for i = 1, 40 do\n"
	"    parts[i] = string.format('<li id=\"%d-%d\">item %d of page %d</li>', key, i, i, key)\n"
	"  end\n"
	"  page = table.concat(parts)\n"
	"  if cache_n < cache_limit then\n"
	"    cache[key] = page\n"
	"    cache_n = cache_n + 1\n"
	"  end\n"
	"  return #page\n"
	"end\n"
	"function set_limit(n)\n"
	"  cache_limit = n\n"
	"  if cache_n > n then cache, cache_n = {}, 0 end\n"
	"end\n"
	"function drop_cache() cache, cache_n = {}, 0 end\n";

/* The retain workload (--request-kb): each request's string is held in a
 * queue with its creation time and let go once it is `keep` seconds old. */
static const char retain_script[] =
	"held_t, held_s, held_first, held_last = {}, {}, 1, 0\n"
	"local kib = string.rep('m', 1024)\n"
	"function hold(kb, now)\n"
	"  local s = string.rep(kib, kb)\n"
	"  held_last = held_last + 1\n"
	"  held_t[held_last], held_s[held_last] = now, s\n"
	"  return #s\n"
	"end\n"
	"function expire(before)\n"
	"  while held_first <= held_last and held_t[held_first] <= before do\n"
	"    held_t[held_first], held_s[held_first] = nil, nil\n"
	"    held_first = held_first + 1\n"
	"  end\n"
	"end\n";

static struct {
	const char *socket;
	const char *service;
	struct schedule sched;           /* --rate (requests per second; 0 = flat out), --burst */
	unsigned duration;
	unsigned keys;
	unsigned request_kb;             /* 0: render pages; else the retain workload */
	double keep;                     /* seconds a retained string stays referenced */
	bool quiet;
} arg = { .sched.rate = 5000, .keys = 20000, .keep = 6 };

static lua_State *L;
static unsigned pause_now = LUA_DEFAULT_PAUSE;
static unsigned pause_min = LUA_DEFAULT_PAUSE;
static size_t lua_peak;
static unsigned full_collections;
static unsigned levels_seen;
static volatile sig_atomic_t stopping;

/* ---- Lua over the memguard heap ----------------------------------------- */

static void *lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	if (nsize == 0) {
		mg_free(ptr);
		return NULL;
	}
	return mg_realloc(ptr, nsize);
}

static size_t lua_bytes(void)
{
	return (size_t)lua_gc(L, LUA_GCCOUNT) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB);
}

static void call(const char *fn, lua_Integer n, bool with_arg)
{
	lua_getglobal(L, fn);
	if (with_arg)
		lua_pushinteger(L, n);
	if (lua_pcall(L, with_arg ? 1 : 0, 0, 0) != LUA_OK) {
		fprintf(stderr, "lua-service: %s: %s\n", fn, lua_tostring(L, -1));
		lua_pop(L, 1);
	}
}

/* ---- hooks: inside mg_client_dispatch(), on the interpreter's thread ---- */

static void on_gc(void *data, unsigned gc_percent)
{
	unsigned pause = gc_percent ? 100 + gc_percent : LUA_DEFAULT_PAUSE;

	if (pause > LUA_MAX_PAUSE)
		pause = LUA_MAX_PAUSE;
	/* Incremental mode with this pause; 0 keeps the step parameters. */
	lua_gc(L, LUA_GCINC, (int)pause, 0, 0);
	/* Lua applies a pause only when a cycle ends (lgc.c, setpause()):
	 * the wait in progress was set with the old one, and would let the
	 * heap grow to the old threshold first.  A lower pause starts a cycle
	 * now (a step from the pause state begins one), as Go's
	 * SetGCPercent() does, so it bites at once; the cycle ends with the
	 * new pause. */
	if (pause < pause_now)
		lua_gc(L, LUA_GCSTEP, 0);
	pause_now = pause;
	if (pause < pause_min)
		pause_min = pause;
	printf("event: gc=%u pause=%u\n", gc_percent, pause);
}

static void on_level(void *data, enum mg_level level)
{
	static const lua_Integer limit[] = { 4000, 2000, 500, 0 };
	static const char *const name[] = { "NORMAL", "WARN", "CRITICAL", "EMERGENCY" };
	size_t before = lua_bytes();

	call("set_limit", limit[level], true);
	if (level >= MG_LEVEL_CRITICAL) {
		/* Close to the budget: do not wait for the pacer. */
		lua_gc(L, LUA_GCCOLLECT);
		full_collections++;
	}
	levels_seen |= 1u << level;
	printf("event: level=%s cache_limit=%lld lua=%zuKiB->%zuKiB at=%.3f\n", name[level],
	       (long long)limit[level], before / 1024, lua_bytes() / 1024, now_s());
}

static size_t on_release(void *data, size_t bytes)
{
	size_t before = lua_bytes(), after, freed;

	call("drop_cache", 0, false);
	lua_gc(L, LUA_GCCOLLECT);
	full_collections++;
	after = lua_bytes();
	freed = before > after ? before - after : 0;
	printf("event: release asked=%zu freed=%zu\n", bytes, freed);
	return freed;
}

static void on_log(void *data, int priority, const char *msg)
{
	if (priority <= LOG_INFO)
		fprintf(stderr, "memguard: %s\n", msg);
}

/* ---- the service ---------------------------------------------------------- */

/* Four requests in five go to the hottest quarter of the pages. */
static lua_Integer draw_key(uint64_t *rng)
{
	uint64_t x = xorshift64(rng);

	return (lua_Integer)((x >> 8) % (x % 5 ? arg.keys / 4 + 1 : arg.keys));
}


/* One request of the workload in use: the bytes it served, or -1 when
 * the script failed.  `t` is the time since the start, in seconds. */
static int64_t handle_request(uint64_t *rng, double t)
{
	const char *fn = arg.request_kb ? "hold" : "handle";
	int64_t served = -1;

	lua_getglobal(L, fn);
	if (arg.request_kb) {
		lua_pushinteger(L, arg.request_kb);
		lua_pushnumber(L, t);
	} else {
		lua_pushinteger(L, draw_key(rng));
	}
	if (lua_pcall(L, arg.request_kb ? 2 : 1, 1, 0) != LUA_OK)
		fprintf(stderr, "lua-service: %s: %s\n", fn, lua_tostring(L, -1));
	else
		served = (int64_t)lua_tointeger(L, -1);
	lua_pop(L, 1);
	return served;
}

/* Let go of the retained strings made before `t` (seconds since the start). */
static void expire_before(double t)
{
	lua_getglobal(L, "expire");
	lua_pushnumber(L, t);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
		fprintf(stderr, "lua-service: expire: %s\n", lua_tostring(L, -1));
		lua_pop(L, 1);
	}
}

static void on_signal(int sig)
{
	stopping = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: lua-service [OPTION]...\n"
		"A Lua 5.4 request handler on the memguard heap whose collector follows\n"
		"memguardd's directives.\n"
		"\n"
		"  -s, --socket=PATH     memguardd's socket (default: $MEMGUARD_SOCKET, else\n"
		"                        /run/memguard/memguardd.sock)\n"
		"  -S, --service=NAME    the service to register as (default: $MEMGUARD_SERVICE,\n"
		"                        else the daemon maps our cgroup)\n"
		"  -r, --rate=N          requests per second; 0 = as fast as possible\n"
		"                        (default 5000)\n"
		"  -d, --duration=SEC    stop after SEC seconds; 0 = at SIGINT/SIGTERM (default)\n"
		"  -k, --keys=N          distinct pages (default 20000)\n"
		"      --burst=SEC:RATE  a burst first: RATE requests per second for SEC\n"
		"                        seconds, then --rate (both rates above 0)\n"
		"      --request-kb=N    instead of rendering pages, each request builds an\n"
		"                        N KiB string and keeps it referenced (0 = pages, the\n"
		"                        default)\n"
		"      --keep=SEC        how long --request-kb strings stay referenced\n"
		"                        (default 6; fractions too, e.g. 1.5)\n"
		"  -q, --quiet           no line of figures per second\n"
		"  -h, --help            show this help\n"
		"\n"
		"GC percent g sets Lua's pause to 100 + g (default 200), and a lower pause\n"
		"starts a collection cycle at once; CRITICAL and EMERGENCY force a full\n"
		"collection; a release demand drops the page cache.\n"
		"Prints 'event:' lines for every hook call, a 'done:' summary and a\n"
		"'summary:' line: requests, admitted, shed (and %%), the latency from a\n"
		"request's arrival to its end (p50_ms, p99_ms, max_ms), the lowest pause,\n"
		"the most Lua held (lua_peak, bytes) and the peak RSS (bytes).\n");
}

static const struct option long_opts[] = {
	{ "socket", required_argument, NULL, 's' },
	{ "service", required_argument, NULL, 'S' },
	{ "rate", required_argument, NULL, 'r' },
	{ "duration", required_argument, NULL, 'd' },
	{ "keys", required_argument, NULL, 'k' },
	{ "request-kb", required_argument, NULL, 'R' },
	{ "keep", required_argument, NULL, 'K' },
	{ "burst", required_argument, NULL, 'B' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{}
};

static int parse_args(int argc, char **argv)
{
	unsigned long v;
	char *end;
	int o;

	while ((o = getopt_long(argc, argv, "s:S:r:d:k:qh", long_opts, NULL)) >= 0) {
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
		case 'h':
			usage(stdout);
			exit(0);
		case 'B':
			if (schedule_parse_burst(&arg.sched, optarg, "lua-service") < 0)
				return -1;
			continue;
		case 'K':
			errno = 0;
			arg.keep = strtod(optarg, &end);
			if (errno || *end || end == optarg || !(arg.keep >= 0) || arg.keep > 1e6) {
				fprintf(stderr, "lua-service: bad --keep '%s'\n", optarg);
				return -1;
			}
			continue;
		case 'r':
		case 'd':
		case 'k':
		case 'R':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || end == optarg || v > 100000000) {
				fprintf(stderr, "lua-service: bad number '%s'\n", optarg);
				return -1;
			}
			if (o == 'r')
				arg.sched.rate = (unsigned)v;
			else if (o == 'd')
				arg.duration = (unsigned)v;
			else if (o == 'R')
				arg.request_kb = (unsigned)v;
			else
				arg.keys = (unsigned)v;
			continue;
		default:
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "lua-service: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (arg.keys == 0) {
		fprintf(stderr, "lua-service: --keys must be positive\n");
		return -1;
	}
	if (arg.sched.burst_s && arg.sched.rate == 0) {
		fprintf(stderr, "lua-service: --burst needs a --rate above 0\n");
		return -1;
	}
	if (arg.request_kb > 1024 * 1024) {
		fprintf(stderr, "lua-service: --request-kb is at most 1048576 (1 GiB)\n");
		return -1;
	}
	return 0;
}

static struct {
	uint64_t requests, admitted, rejected, served_bytes;
	double lat_max;                  /* seconds */
} count;

/* The interpreter, over the memguard heap, with the workload's script. */
static int lua_start(void)
{
	L = lua_newstate(lua_alloc, NULL);
	if (!L) {
		fprintf(stderr, "lua-service: cannot create a Lua state\n");
		return -1;
	}
	luaL_openlibs(L);
	if (luaL_dostring(L, script) != LUA_OK ||
	    (arg.request_kb && luaL_dostring(L, retain_script) != LUA_OK)) {
		fprintf(stderr, "lua-service: %s\n", lua_tostring(L, -1));
		return -1;
	}
	lua_gc(L, LUA_GCINC, LUA_DEFAULT_PAUSE, 0, 0);
	return 0;
}

/* The memguard client with the interpreter's hooks; NULL after a message. */
static struct mg_client *client_start(void)
{
	struct mg_client_opts opts = { .size = sizeof(opts), .threading = MG_THREAD_NONE };
	struct mg_client *client;
	int r;

	opts.socket_path = arg.socket;
	opts.service = arg.service;
	r = mg_client_new(&client, &opts);
	if (r < 0) {
		fprintf(stderr, "lua-service: cannot create the memguard client: %s\n",
			strerror(-r));
		return NULL;
	}
	mg_client_set_log_fn(client, on_log, NULL);
	mg_client_set_gc_hook(client, on_gc, NULL);
	mg_client_set_level_hook(client, on_level, NULL);
	mg_client_set_release_hook(client, on_release, NULL);
	return client;
}

/*
 * One turn of the request loop: the requests due by `now`.  Request i
 * arrives at start + i / rate, whether or not the loop keeps up: a backlog
 * (behind a long collection, say) is worked off, not dropped, and its
 * requests' latency shows the wait.  At most a turn's worth between two
 * dispatches, so directives are not kept waiting behind it.  Flat out
 * (rate 0), a turn is 500 requests that arrive now.  `p` polls the
 * client's socket.  Returns how many requests are due.
 */
static uint64_t serve_turn(struct pollfd *p, double start, double now, uint64_t *rng)
{
	unsigned turn = arg.sched.rate ? REQUESTS_PER_TURN : 500, n = 0;
	uint64_t due = schedule_due(&arg.sched, start, now, count.requests, turn);

	while (count.requests < due && n < turn && !stopping) {
		double arrival = schedule_arrived_at(&arg.sched, start, count.requests, now);
		int64_t served;
		size_t lua_now;

		count.requests++;
		n++;
		if (!mg_admit()) {
			count.rejected++;
			continue;
		}
		count.admitted++;
		served = handle_request(rng, now_s() - start);
		if (served < 0) {
			stopping = 1;
			break;
		}
		count.served_bytes += (uint64_t)served;
		now = now_s();
		lat_record(now - arrival);
		if (now - arrival > count.lat_max)
			count.lat_max = now - arrival;
		lua_now = lua_bytes();
		if (lua_now > lua_peak)
			lua_peak = lua_now;
		/* The client has work (a directive, or the heap past its
		 * local limit): end the turn now rather than after it.
		 * A poll of no time per request is cheap next to one. */
		if (poll(p, 1, 0) > 0)
			break;
	}
	return due;
}

/* The line of figures printed once a second (`t` in seconds). */
static void print_figures(struct mg_client *client, double t)
{
	struct mg_heap_stats hs;

	mg_heap_stats(&hs);
	printf("t=%.0fs level=%d pause=%u lua=%zuKiB admitted=%" PRIu64 " rejected=%" PRIu64
	       " heap_inuse=%.1fMiB heap_released=%.1fMiB\n",
	       t, (int)mg_client_level(client), pause_now, lua_bytes() / 1024, count.admitted,
	       count.rejected, hs.inuse / 1048576.0, hs.released / 1048576.0);
}

static void print_summary(double seconds)
{
	struct rusage ru;

	printf("done: requests=%" PRIu64 " admitted=%" PRIu64 " rejected=%" PRIu64
	       " served=%" PRIu64 " full_collections=%u pause=%u levels=%s%s%s%s\n",
	       count.requests, count.admitted, count.rejected, count.served_bytes,
	       full_collections, pause_now, levels_seen & 1 ? "N" : "", levels_seen & 2 ? "W" : "",
	       levels_seen & 4 ? "C" : "", levels_seen & 8 ? "E" : "");
	getrusage(RUSAGE_SELF, &ru);
	printf("summary: seconds=%.1f requests=%" PRIu64 " admitted=%" PRIu64 " shed=%" PRIu64
	       " shed_pct=%.2f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f min_pause=%u"
	       " lua_peak=%zu peak_rss=%llu\n",
	       seconds, count.requests, count.admitted, count.rejected,
	       count.requests ? 100.0 * count.rejected / count.requests : 0.0,
	       lat_quantile(0.50), lat_quantile(0.99), count.lat_max * 1000, pause_min, lua_peak,
	       (unsigned long long)ru.ru_maxrss * 1024);
}

int main(int argc, char **argv)
{
	struct mg_client *client;
	double start, next_tick, wait = 0;
	uint64_t rng = 0x2545f4914f6cdd1dULL;
	int r;

	if (parse_args(argc, argv) < 0) {
		usage(stderr);
		return 2;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (lua_start() < 0)
		return 1;
	client = client_start();
	if (!client)
		return 1;

	start = now_s();
	next_tick = start + 1;
	while (!stopping) {
		struct pollfd p = { .fd = mg_client_fd(client), .events = POLLIN };
		struct timespec ts = { .tv_sec = (time_t)wait,
				       .tv_nsec = (long)((wait - (time_t)wait) * 1e9) };
		uint64_t due;
		double now;

		/* The client's turn: messages, reports, reconnects.  Its hooks
		 * touch the interpreter, which is safe here, between requests. */
		if (ppoll(&p, 1, &ts, NULL) > 0 || wait == 0) {
			r = mg_client_dispatch(client);
			if (r < 0)
				fprintf(stderr, "lua-service: dispatch: %s\n", strerror(-r));
		}

		now = now_s();
		if (arg.request_kb)
			expire_before(now - start - arg.keep);
		due = serve_turn(&p, start, now, &rng);

		now = now_s();
		if (now >= next_tick) {
			if (!arg.quiet)
				print_figures(client, now - start);
			next_tick += 1;
		}
		if (arg.duration && now - start >= arg.duration)
			break;
		/* Sleep in ppoll() until the next arrival, the next line of
		 * figures or the end, waking for the client. */
		wait = 0;
		if (arg.sched.rate && count.requests >= due)
			wait = schedule_wait(&arg.sched, count.requests, start, now, next_tick,
					     arg.duration);
	}

	mg_client_free(client);
	print_summary(now_s() - start);
	lua_close(L);
	return 0;
}
