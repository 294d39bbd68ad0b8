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
 *    smaller heap.
 *  - The level hook shrinks the script's page cache and, at CRITICAL and
 *    above, forces a full collection; the release hook drops the page
 *    cache, collects, and returns the bytes Lua gave back.
 *  - mg_admit() sheds the daemon's throttle share of the requests.
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
#include <sys/syslog.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <memguard/client.h>

#define LUA_DEFAULT_PAUSE 200            /* %, Lua 5.4's default (manual §2.5.1) */
#define LUA_MAX_PAUSE 1000               /* %, Lua stores pause/4 in a byte */

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

static struct {
	const char *socket;
	const char *service;
	unsigned rate;
	unsigned duration;
	unsigned keys;
	bool quiet;
} arg = { .rate = 5000, .keys = 20000 };

static lua_State *L;
static unsigned pause_now = LUA_DEFAULT_PAUSE;
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
	pause_now = pause;
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
	printf("event: level=%s cache_limit=%lld lua=%zuKiB->%zuKiB\n", name[level],
	       (long long)limit[level], before / 1024, lua_bytes() / 1024);
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
	uint64_t x = *rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*rng = x;
	return (lua_Integer)((x >> 8) % (x % 5 ? arg.keys / 4 + 1 : arg.keys));
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
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
		"  -q, --quiet           no line of figures per second\n"
		"  -h, --help            show this help\n"
		"\n"
		"GC percent g sets Lua's pause to 100 + g (default 200); CRITICAL and\n"
		"EMERGENCY force a full collection; a release demand drops the page cache.\n"
		"Prints 'event:' lines for every hook call and a 'done:' summary.\n");
}

static int parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "service", required_argument, NULL, 'S' },
		{ "rate", required_argument, NULL, 'r' },
		{ "duration", required_argument, NULL, 'd' },
		{ "keys", required_argument, NULL, 'k' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	unsigned long v;
	char *end;
	int o;

	while ((o = getopt_long(argc, argv, "s:S:r:d:k:qh", opts, NULL)) >= 0) {
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
		case 'r':
		case 'd':
		case 'k':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || end == optarg || v > 100000000) {
				fprintf(stderr, "lua-service: bad number '%s'\n", optarg);
				return -1;
			}
			if (o == 'r')
				arg.rate = (unsigned)v;
			else if (o == 'd')
				arg.duration = (unsigned)v;
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
	return 0;
}

int main(int argc, char **argv)
{
	struct mg_client_opts opts = { .size = sizeof(opts), .threading = MG_THREAD_NONE };
	uint64_t requests = 0, admitted = 0, rejected = 0, served_bytes = 0;
	struct mg_client *client;
	double start, next_tick, next_batch;
	uint64_t rng = 0x2545f4914f6cdd1dULL;
	int r, wait_ms = 0;

	if (parse_args(argc, argv) < 0) {
		usage(stderr);
		return 2;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	setvbuf(stdout, NULL, _IOLBF, 0);

	L = lua_newstate(lua_alloc, NULL);
	if (!L) {
		fprintf(stderr, "lua-service: cannot create a Lua state\n");
		return 1;
	}
	luaL_openlibs(L);
	if (luaL_dostring(L, script) != LUA_OK) {
		fprintf(stderr, "lua-service: %s\n", lua_tostring(L, -1));
		return 1;
	}
	lua_gc(L, LUA_GCINC, LUA_DEFAULT_PAUSE, 0, 0);

	opts.socket_path = arg.socket;
	opts.service = arg.service;
	r = mg_client_new(&client, &opts);
	if (r < 0) {
		fprintf(stderr, "lua-service: cannot create the memguard client: %s\n",
			strerror(-r));
		return 1;
	}
	mg_client_set_log_fn(client, on_log, NULL);
	mg_client_set_gc_hook(client, on_gc, NULL);
	mg_client_set_level_hook(client, on_level, NULL);
	mg_client_set_release_hook(client, on_release, NULL);

	start = now_s();
	next_tick = start + 1;
	next_batch = start;
	while (!stopping) {
		struct pollfd p = { .fd = mg_client_fd(client), .events = POLLIN };
		unsigned batch = arg.rate ? (arg.rate + 99) / 100 : 500;
		double now;

		/* The client's turn: messages, reports, reconnects.  Its hooks
		 * touch the interpreter, which is safe here, between requests. */
		if (poll(&p, 1, wait_ms) > 0 || wait_ms == 0) {
			r = mg_client_dispatch(client);
			if (r < 0)
				fprintf(stderr, "lua-service: dispatch: %s\n", strerror(-r));
		}

		for (unsigned i = 0; i < batch; i++) {
			requests++;
			if (!mg_admit()) {
				rejected++;
				continue;
			}
			admitted++;
			lua_getglobal(L, "handle");
			lua_pushinteger(L, draw_key(&rng));
			if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
				fprintf(stderr, "lua-service: handle: %s\n", lua_tostring(L, -1));
				stopping = 1;
			} else
				served_bytes += (uint64_t)lua_tointeger(L, -1);
			lua_pop(L, 1);
		}

		now = now_s();
		if (now >= next_tick) {
			struct mg_heap_stats hs;

			mg_heap_stats(&hs);
			if (!arg.quiet)
				printf("t=%.0fs level=%d pause=%u lua=%zuKiB admitted=%" PRIu64
				       " rejected=%" PRIu64
				       " heap_inuse=%.1fMiB heap_released=%.1fMiB\n",
				       now - start, (int)mg_client_level(client), pause_now,
				       lua_bytes() / 1024, admitted, rejected, hs.inuse / 1048576.0,
				       hs.released / 1048576.0);
			next_tick += 1;
		}
		if (arg.duration && now - start >= arg.duration)
			break;
		/* Sleep in poll() until the next batch, waking for the client. */
		wait_ms = 0;
		if (arg.rate) {
			next_batch += 0.01;
			if (next_batch > now)
				wait_ms = (int)((next_batch - now) * 1000) + 1;
			else if (now - next_batch > 1)
				next_batch = now;
		}
	}

	mg_client_free(client);
	printf("done: requests=%" PRIu64 " admitted=%" PRIu64 " rejected=%" PRIu64
	       " served=%" PRIu64 " full_collections=%u pause=%u levels=%s%s%s%s\n",
	       requests, admitted, rejected, served_bytes, full_collections, pause_now,
	       levels_seen & 1 ? "N" : "", levels_seen & 2 ? "W" : "", levels_seen & 4 ? "C" : "",
	       levels_seen & 8 ? "E" : "");
	lua_close(L);
	return 0;
}
