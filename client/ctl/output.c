/* SPDX-License-Identifier: MIT */
/*
 * memguardctl's output: escaping, sizes and percentages as people read
 * them, tables, and the status, clients, result and metrics renderings
 * (text, JSON, Prometheus).
 */
#include "config.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

/* --- text: escaping and formatting ------------------------------------------ */

/* Length of the valid UTF-8 sequence at `s` with `n` bytes left, or 0
 * (overlong forms, surrogates and code points past U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/*
 * Copy `s` into `buf` for a person's terminal: control characters (C0,
 * DEL, C1) and bytes that are not UTF-8 become \xNN, so that a text from
 * the daemon cannot move the cursor or change the terminal; with `lines`,
 * a newline stays one (a RESULT's text may list problems a line each).
 * Truncates to `size` (at least 1).  Returns `buf`.
 */
char *escape(const char *s, bool lines, char *buf, size_t size)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), o = 0;

	while (*p) {
		size_t len = utf8_len(p, n);
		bool c1 = len == 2 && p[0] == 0xc2 && p[1] < 0xa0;
		bool keep = lines && *p == '\n';

		if (!keep && (len == 0 || c1 || *p < 0x20 || *p == 0x7f)) {
			if (o + 4 >= size)
				break;
			snprintf(buf + o, size - o, "\\x%02x", *p);
			o += 4;
			p++;
			n--;
			continue;
		}
		if (o + len >= size)
			break;
		memcpy(buf + o, p, len);
		o += len;
		p += len;
		n -= len;
	}
	buf[o] = 0;
	return buf;
}

char *escape_text(const char *s, char *buf, size_t size)
{
	return escape(s, false, buf, size);
}

/* Characters a terminal shows for `s`: UTF-8 continuation bytes take none. */
static size_t text_width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

/*
 * `s` quoted, with '"', '\\' and line feeds escaped, and bytes that are not
 * UTF-8 as U+FFFD: as a JSON string (RFC 8259: also tabs and the other
 * control characters escaped) when `json`, else as a Prometheus label
 * value (the text format escapes no more; label values are UTF-8).
 */
static void quoted(FILE *f, const char *s, bool json)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);

	fputc('"', f);
	while (*p) {
		size_t len = utf8_len(p, n);

		if (len == 0) {
			fputs(json ? "\\ufffd" : "\xef\xbf\xbd", f);
			len = 1;
		} else if (*p == '"' || *p == '\\') {
			fputc('\\', f);
			fputc(*p, f);
		} else if (*p == '\n') {
			fputs("\\n", f);
		} else if (json && *p == '\t') {
			fputs("\\t", f);
		} else if (json && (*p < 0x20 || *p == 0x7f)) {
			fprintf(f, "\\u%04x", *p);
		} else {
			fwrite(p, 1, len, f);
		}
		p += len;
		n -= len;
	}
	fputc('"', f);
}

static void json_string(FILE *f, const char *s)
{
	quoted(f, s, /* json= */ true);
}

static void prom_label_value(FILE *f, const char *s)
{
	quoted(f, s, /* json= */ false);
}

/* A size for a person: "512.0M", "1.5G", "900B"; or bytes with --bytes. */
static char *fmt_size(char buf[32], uint64_t v, bool bytes)
{
	static const char units[] = "KMGTPE";
	double d = (double)v;
	int u = -1;

	if (bytes || v < 1024) {
		snprintf(buf, 32, "%" PRIu64 "%s", v, bytes ? "" : "B");
		return buf;
	}
	/* Move up a unit before the rounding to one decimal would show 1024.0. */
	while (u < 5 && d >= 1023.95) {
		d /= 1024;
		u++;
	}
	snprintf(buf, 32, "%.1f%c", d, units[u]);
	return buf;
}

/* Basis points (hundredths of a percent) as a percentage with `decimals`
 * (1, rounded to nearest, or 2, exact) decimals: "93.0%", "0.25%". */
static char *fmt_bp(char buf[32], uint32_t bp, int decimals, const char *suffix)
{
	if (decimals == 1) {
		uint64_t tenths = ((uint64_t)bp + 5) / 10;

		snprintf(buf, 32, "%" PRIu64 ".%" PRIu64 "%s", tenths / 10, tenths % 10, suffix);
	} else
		snprintf(buf, 32, "%" PRIu32 ".%02" PRIu32 "%s", bp / 100, bp % 100, suffix);
	return buf;
}

/* A duration of `us` microseconds: "850us", "3.2ms", "1.25s". */
static char *fmt_usec(char buf[32], uint64_t us)
{
	if (us < 1000)
		snprintf(buf, 32, "%" PRIu64 "us", us);
	else if (us < 1000000)
		snprintf(buf, 32, "%.1fms", (double)us / 1000);
	else
		snprintf(buf, 32, "%.2fs", (double)us / 1000000);
	return buf;
}

char *fmt_ms(char buf[32], uint32_t ms)
{
	if (ms % 1000 == 0)
		snprintf(buf, 32, "%" PRIu32 "s", ms / 1000);
	else
		snprintf(buf, 32, "%" PRIu32 "ms", ms);
	return buf;
}

static const char *level_name(unsigned level)
{
	const char *n = proto_level_name(level);

	return n ? n : "?";
}

static const char *escalation_name(unsigned e)
{
	static const char *const names[] = {
		[MG_ESCALATION_NONE] = "none",
		[MG_ESCALATION_HIGH] = "memory.high",
		[MG_ESCALATION_KILLED] = "killed",
	};

	return e < ARRAY_SIZE(names) ? names[e] : "?";
}

static const char *enforce_name(unsigned e)
{
	return proto_enforce_name(e) ? proto_enforce_name(e) : "?";
}

static const char *psi_mode_name(unsigned m)
{
	static const char *const names[] = {
		[MG_PSI_ABSENT] = "absent",
		[MG_PSI_TRIGGER] = "trigger",
		[MG_PSI_TRIGGER_ROUNDED] = "trigger-2s",
		[MG_PSI_POLLING] = "polling",
	};

	return m < ARRAY_SIZE(names) ? names[m] : "?";
}

/* --- tables ------------------------------------------------------------------ */

/* Columns are right-aligned (numbers) unless their header starts with '<'. */
struct table {
	const char *const *headers;
	size_t n_cols;
	char **cells;                    /* n_rows × n_cols */
	size_t n_rows;
	size_t allocated;                /* rows */
};

static void table_done(struct table *t)
{
	for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
		free(t->cells[i]);
	free(t->cells);
	t->cells = NULL;
	t->n_rows = t->allocated = 0;
}

/* Append a row of `t->n_cols` strings, copied.  Returns 0 or -ENOMEM. */
static int table_add(struct table *t, const char *const *row)
{
	if (t->n_rows == t->allocated) {
		size_t n = t->allocated ? 2 * t->allocated : 8;
		char **c = reallocarray(t->cells, n * t->n_cols, sizeof(*c));

		if (!c)
			return -ENOMEM;
		t->cells = c;
		t->allocated = n;
	}
	for (size_t i = 0; i < t->n_cols; i++) {
		char *s = strdup(row[i]);

		if (!s) {
			while (i-- > 0)
				free(t->cells[t->n_rows * t->n_cols + i]);
			return -ENOMEM;
		}
		t->cells[t->n_rows * t->n_cols + i] = s;
	}
	t->n_rows++;
	return 0;
}

static void table_print_row(FILE *f, const struct table *t, const size_t *width,
			    const char *const *row)
{
	for (size_t i = 0; i < t->n_cols; i++) {
		bool left = t->headers[i][0] == '<';
		bool last = i + 1 == t->n_cols;
		size_t pad = width[i] - text_width(row[i]);

		if (i > 0)
			fputs("  ", f);
		if (!left)
			fprintf(f, "%*s", (int)pad, "");
		fputs(row[i], f);
		if (left && !last)
			fprintf(f, "%*s", (int)pad, "");
	}
	fputc('\n', f);
}

static int table_print(FILE *f, const struct table *t)
{
	_cleanup_free_ size_t *width = calloc(t->n_cols, sizeof(*width));
	_cleanup_free_ const char **hdr = calloc(t->n_cols, sizeof(*hdr));

	if (!width || !hdr)
		return -ENOMEM;
	for (size_t i = 0; i < t->n_cols; i++) {
		hdr[i] = t->headers[i] + (t->headers[i][0] == '<');
		width[i] = text_width(hdr[i]);
		for (size_t r = 0; r < t->n_rows; r++) {
			size_t w = text_width(t->cells[r * t->n_cols + i]);

			if (w > width[i])
				width[i] = w;
		}
	}
	table_print_row(f, t, width, hdr);
	for (size_t r = 0; r < t->n_rows; r++)
		table_print_row(f, t, width, (const char *const *)t->cells + r * t->n_cols);
	return 0;
}

/* --- status ------------------------------------------------------------------ */

static void status_header(FILE *f, const struct ctl *c, const struct status *s, bool clock)
{
	const struct mg_status_daemon *d = &s->daemon;
	char host[256] = "", version[4 * MG_NAME_MAX + 1], a[32], b[32], t[32];

	if (gethostname(host, sizeof(host) - 1) < 0)
		host[0] = 0;
	escape_text(d->version, version, sizeof(version));
	fprintf(f, "memguardd %s%s%s: %" PRIu32 " service%s, %" PRIu32 " client%s, tick %s",
		version, host[0] ? " on " : "", host, d->services, d->services == 1 ? "" : "s",
		d->clients, d->clients == 1 ? "" : "s", fmt_ms(t, d->tick_ms));
	if (d->mem_total)
		fprintf(f, "; memory %s available of %s", fmt_size(a, d->mem_available, c->bytes),
			fmt_size(b, d->mem_total, c->bytes));
	fprintf(f, "; pressure some %s full %s", fmt_bp(a, d->host_some_avg10, 2, "%"),
		fmt_bp(b, d->host_full_avg10, 2, "%"));
	if (clock) {
		time_t now = time(NULL);
		struct tm tm;

		if (localtime_r(&now, &tm) && strftime(t, sizeof(t), "%H:%M:%S", &tm))
			fprintf(f, "; at %s", t);
	}
	fputc('\n', f);
}

static int status_table(FILE *f, const struct ctl *c, const struct status *s)
{
	static const char *const headers[] = {
		"<SERVICE", "BUDGET", "WORKING-SET", "UTIL", "PSI-SOME", "PSI-FULL", "<LEVEL", "GC",
		"THROTTLE", "CLIENTS", "RELEASED", "<ESCALATION", "<PSI-MODE",
	};
	struct table t = { .headers = headers, .n_cols = ARRAY_SIZE(headers) };
	int r = 0;

	if (s->n_services == 0) {
		fputs("No services are configured (without a configuration file each client's "
		      "own cgroup becomes one).\n", f);
		return 0;
	}
	for (size_t i = 0; i < s->n_services && r == 0; i++) {
		const struct mg_status_service *v = &s->services[i];
		char budget[32], ws[32], util[32], some[32], full[32], gc[32], thr[32], cl[32],
			rel[32], name[4 * MG_NAME_MAX + 1];
		const char *row[ARRAY_SIZE(headers)] = {
			escape_text(v->name, name, sizeof(name)),
			v->budget ? fmt_size(budget, v->budget, c->bytes) : "-",
			fmt_size(ws, v->working_set, c->bytes),
			v->budget ? fmt_bp(util, v->utilization, 1, "%") : "-",
			fmt_bp(some, v->some_avg10, 2, "%"),
			fmt_bp(full, v->full_avg10, 2, "%"),
			level_name(v->level),
			gc,
			thr,
			cl,
			fmt_size(rel, v->released_total, c->bytes),
			escalation_name(v->escalation),
			psi_mode_name(v->psi_mode),
		};

		if (v->gc_percent == MG_GC_DEFAULT)
			snprintf(gc, sizeof(gc), "default");
		else
			snprintf(gc, sizeof(gc), "%" PRIu16 "%%", v->gc_percent);
		snprintf(thr, sizeof(thr), "%u.%u%%", v->throttle / 10u, v->throttle % 10u);
		snprintf(cl, sizeof(cl), "%" PRIu32, v->clients);
		r = table_add(&t, row);
	}
	if (r == 0)
		r = table_print(f, &t);
	table_done(&t);
	return r;
}

static void status_json(FILE *f, const struct status *s)
{
	const struct mg_status_daemon *d = &s->daemon;
	char host[256] = "", a[32], b[32];

	if (gethostname(host, sizeof(host) - 1) < 0)
		host[0] = 0;
	fputs("{\"daemon\":{\"version\":", f);
	json_string(f, d->version);
	fputs(",\"hostname\":", f);
	json_string(f, host);
	fprintf(f, ",\"services\":%" PRIu32 ",\"clients\":%" PRIu32 ",\"tick_ms\":%" PRIu32,
		d->services, d->clients, d->tick_ms);
	/* mem_total 0: the daemon could not read the host's memory. */
	if (d->mem_total)
		fprintf(f, ",\"memory_total_bytes\":%" PRIu64
			   ",\"memory_available_bytes\":%" PRIu64, d->mem_total, d->mem_available);
	else
		fputs(",\"memory_total_bytes\":null,\"memory_available_bytes\":null", f);
	fprintf(f, ",\"pressure_some_avg10\":%s,\"pressure_full_avg10\":%s},\"services\":[",
		fmt_bp(a, d->host_some_avg10, 2, ""), fmt_bp(b, d->host_full_avg10, 2, ""));
	for (size_t i = 0; i < s->n_services; i++) {
		const struct mg_status_service *v = &s->services[i];
		char util[32];

		fputs(i ? ",{\"name\":" : "{\"name\":", f);
		json_string(f, v->name);
		fputs(",\"cgroup\":", f);
		json_string(f, v->cgroup);
		if (v->budget)
			fprintf(f, ",\"budget_bytes\":%" PRIu64 ",\"utilization_percent\":%s",
				v->budget, fmt_bp(util, v->utilization, 2, ""));
		else
			fputs(",\"budget_bytes\":null,\"utilization_percent\":null", f);
		fprintf(f, ",\"working_set_bytes\":%" PRIu64 ",\"pressure_some_avg10\":%s"
			   ",\"pressure_full_avg10\":%s,\"level\":\"%s\"",
			v->working_set, fmt_bp(a, v->some_avg10, 2, ""),
			fmt_bp(b, v->full_avg10, 2, ""), level_name(v->level));
		if (v->gc_percent == MG_GC_DEFAULT)
			fputs(",\"gc_percent\":null", f);
		else
			fprintf(f, ",\"gc_percent\":%" PRIu16, v->gc_percent);
		fprintf(f, ",\"throttle_percent\":%u.%u,\"clients\":%" PRIu32
			   ",\"released_bytes\":%" PRIu64 ",\"enforce\":\"%s\""
			   ",\"escalation\":\"%s\",\"psi_mode\":\"%s\"}",
			v->throttle / 10u, v->throttle % 10u, v->clients, v->released_total,
			enforce_name(v->enforce), escalation_name(v->escalation),
			psi_mode_name(v->psi_mode));
	}
	fputs("]}\n", f);
}

/* One status frame: JSON, or the header line and the table. */
int status_render(FILE *f, const struct ctl *c, const struct status *s, bool clock)
{
	if (c->json) {
		status_json(f, s);
		return 0;
	}
	status_header(f, c, s, clock);
	return status_table(f, c, s);
}

/* Print a successful RESULT's text, or {"result":"ok","message":…}. */
int print_result(const struct ctl *c, const struct mg_result *res)
{
	char text[CTL_ESCAPED_MAX];

	if (c->json) {
		fputs("{\"result\":\"ok\",\"message\":", stdout);
		json_string(stdout, res->text);
		fputs("}\n", stdout);
	} else {
		printf("%s\n", res->text[0] ? escape(res->text, /* lines= */ true, text, sizeof(text))
					     : "done");
	}
	return CTL_EXIT_OK;
}

int clients_table(const struct ctl *c, const struct clients *cl)
{
	static const char *const headers[] = {
		"PID", "<PROCESS", "<SERVICE", "HEAP-SYS", "IN-USE", "RETURNED", "<LEVEL", "ASKED",
		"ANSWERED", "RELEASED/ASKED", "RESPONSE",
	};
	struct table t = { .headers = headers, .n_cols = ARRAY_SIZE(headers) };
	int r = 0;

	for (size_t i = 0; i < cl->n && r == 0; i++) {
		const struct mg_client_info *ci = &cl->clients[i];
		char proc[4 * MG_NAME_MAX + 1], svc[4 * MG_NAME_MAX + 1];
		char pid[32], sys[32], inuse[32], ret[32], asked[32], answered[32], relb[32],
			askb[32], rel[80], resp[32];
		const char *row[ARRAY_SIZE(headers)] = {
			pid,
			ci->process[0] ? escape_text(ci->process, proc, sizeof(proc)) : "-",
			ci->service[0] ? escape_text(ci->service, svc, sizeof(svc)) : "-",
			fmt_size(sys, ci->heap_sys, c->bytes),
			fmt_size(inuse, ci->heap_inuse, c->bytes),
			fmt_size(ret, ci->heap_released, c->bytes),
			level_name(ci->last_level),
			asked,
			answered,
			rel,
			ci->answered ? fmt_usec(resp, ci->response_us) : "-",
		};

		snprintf(pid, sizeof(pid), "%" PRIu32, ci->pid);
		snprintf(asked, sizeof(asked), "%" PRIu32, ci->asked);
		snprintf(answered, sizeof(answered), "%" PRIu32, ci->answered);
		snprintf(rel, sizeof(rel), "%s/%s", fmt_size(relb, ci->released_bytes, c->bytes),
			 fmt_size(askb, ci->asked_bytes, c->bytes));
		r = table_add(&t, row);
	}
	if (r == 0)
		r = table_print(stdout, &t);
	table_done(&t);
	return r;
}

void clients_json(const struct clients *cl)
{
	fputs("{\"clients\":[", stdout);
	for (size_t i = 0; i < cl->n; i++) {
		const struct mg_client_info *ci = &cl->clients[i];

		printf("%s{\"id\":%" PRIu64 ",\"pid\":%" PRIu32 ",\"uid\":%" PRIu32 ",\"process\":",
		       i ? "," : "", ci->client_id, ci->pid, ci->uid);
		json_string(stdout, ci->process);
		fputs(",\"service\":", stdout);
		json_string(stdout, ci->service);
		printf(",\"heap_sys_bytes\":%" PRIu64 ",\"heap_inuse_bytes\":%" PRIu64
		       ",\"heap_released_bytes\":%" PRIu64 ",\"last_directive_seq\":%" PRIu32
		       ",\"last_level\":\"%s\"",
		       ci->heap_sys, ci->heap_inuse, ci->heap_released, ci->last_directive_seq,
		       level_name(ci->last_level));
		printf(",\"asked\":%" PRIu32 ",\"answered\":%" PRIu32 ",\"asked_bytes\":%" PRIu64
		       ",\"released_bytes\":%" PRIu64,
		       ci->asked, ci->answered, ci->asked_bytes, ci->released_bytes);
		if (ci->answered)
			printf(",\"mean_response_us\":%" PRIu32 "}", ci->response_us);
		else
			fputs(",\"mean_response_us\":null}", stdout);
	}
	fputs("]}\n", stdout);
}


/* --- metrics ------------------------------------------------------------------- */

/* A metric family's HELP and TYPE lines. */
static void prom_family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Fractions from fixed-point wire values, printed exactly. */
static void prom_bp(FILE *f, uint32_t bp)
{
	fprintf(f, "%" PRIu32 ".%04" PRIu32 "\n", bp / 10000, bp % 10000);
}

/* How a family's value is read from its struct and printed. */
enum metric_kind {
	METRIC_U8,                       /* a uint8_t, as an integer */
	METRIC_U16,
	METRIC_U32,
	METRIC_U64,
	METRIC_BP,                       /* a uint32_t of 1/10000, as a fraction */
	METRIC_PERMILLE,                 /* a uint16_t of 1/1000, as a fraction */
	METRIC_MS,                       /* a uint32_t of ms, as seconds */
	METRIC_BUILD_INFO,               /* 1, the daemon's version as a label */
	METRIC_SERVICE_INFO,             /* 1, cgroup and enforce mode as labels */
};

/* Which samples a family has. */
enum metric_scope {
	METRIC_DAEMON,                   /* one, from struct mg_status_daemon */
	METRIC_HOST_MEMORY,              /* one, when the host's memory is known */
	METRIC_SERVICE,                  /* one per service, from struct mg_status_service */
	METRIC_SERVICE_BUDGET,           /* one per service that has a budget */
};

struct metric_family {
	const char *name, *type, *help;
	enum metric_scope scope;
	enum metric_kind kind;
	size_t offset;                   /* of the value in its struct */
};

#define D(f) offsetof(struct mg_status_daemon, f)
#define S(f) offsetof(struct mg_status_service, f)
/* In the order they are printed; the service families only when there
 * are services. */
static const struct metric_family metric_families[] = {
	{ "memguard_build_info", "gauge",
	  "The memguardd that answered; its version is the label.",
	  METRIC_DAEMON, METRIC_BUILD_INFO, 0 },
	{ "memguard_services", "gauge", "Services memguardd watches.",
	  METRIC_DAEMON, METRIC_U32, D(services) },
	{ "memguard_clients", "gauge", "Processes connected to memguardd.",
	  METRIC_DAEMON, METRIC_U32, D(clients) },
	{ "memguard_tick_seconds", "gauge",
	  "How often memguardd checks every service while all is calm.",
	  METRIC_DAEMON, METRIC_MS, D(tick_ms) },
	{ "memguard_host_memory_total_bytes", "gauge", "The host's memory (MemTotal).",
	  METRIC_HOST_MEMORY, METRIC_U64, D(mem_total) },
	{ "memguard_host_memory_available_bytes", "gauge",
	  "The host's available memory (MemAvailable).",
	  METRIC_HOST_MEMORY, METRIC_U64, D(mem_available) },
	{ "memguard_host_pressure_some_avg10", "gauge",
	  "Share of the last 10 s in which some task of the host stalled on memory "
	  "(PSI some avg10, 0 to 1).",
	  METRIC_DAEMON, METRIC_BP, D(host_some_avg10) },
	{ "memguard_host_pressure_full_avg10", "gauge",
	  "Share of the last 10 s in which all tasks of the host stalled on memory "
	  "(PSI full avg10, 0 to 1).",
	  METRIC_DAEMON, METRIC_BP, D(host_full_avg10) },
	{ "memguard_service_info", "gauge",
	  "A service memguardd watches: its cgroup and enforce mode are labels.",
	  METRIC_SERVICE, METRIC_SERVICE_INFO, 0 },
	{ "memguard_service_budget_bytes", "gauge",
	  "The service's memory budget in force; 0 when none is known.",
	  METRIC_SERVICE, METRIC_U64, S(budget) },
	{ "memguard_service_working_set_bytes", "gauge",
	  "The service's working set: memory.current minus inactive page cache.",
	  METRIC_SERVICE, METRIC_U64, S(working_set) },
	{ "memguard_service_utilization_ratio", "gauge",
	  "Working set divided by budget (1 = at budget); absent without a budget.",
	  METRIC_SERVICE_BUDGET, METRIC_BP, S(utilization) },
	{ "memguard_service_pressure_some_avg10", "gauge",
	  "Share of the last 10 s in which some task of the service stalled on memory "
	  "(PSI some avg10, 0 to 1).",
	  METRIC_SERVICE, METRIC_BP, S(some_avg10) },
	{ "memguard_service_pressure_full_avg10", "gauge",
	  "Share of the last 10 s in which all tasks of the service stalled on memory "
	  "(PSI full avg10, 0 to 1).",
	  METRIC_SERVICE, METRIC_BP, S(full_avg10) },
	{ "memguard_service_level", "gauge",
	  "The service's level: 0 NORMAL, 1 WARN, 2 CRITICAL, 3 EMERGENCY.",
	  METRIC_SERVICE, METRIC_U8, S(level) },
	{ "memguard_service_gc_percent", "gauge",
	  "GC target sent to the service's clients; 0 = the application's own default.",
	  METRIC_SERVICE, METRIC_U16, S(gc_percent) },
	{ "memguard_service_throttle_ratio", "gauge",
	  "Share of new work the service's clients are asked to reject (0 to 1).",
	  METRIC_SERVICE, METRIC_PERMILLE, S(throttle) },
	{ "memguard_service_clients", "gauge",
	  "The service's processes connected to memguardd.",
	  METRIC_SERVICE, METRIC_U32, S(clients) },
	{ "memguard_service_released_bytes_total", "counter",
	  "Bytes the service's clients released on demand since memguardd started.",
	  METRIC_SERVICE, METRIC_U64, S(released_total) },
	{ "memguard_service_escalation", "gauge",
	  "Escalation in force: 0 none, 1 memory.high written, 2 cgroup killed.",
	  METRIC_SERVICE, METRIC_U8, S(escalation) },
	{ "memguard_service_psi_mode", "gauge",
	  "How memguardd reads the service's pressure: 0 cgroup absent, 1 PSI trigger, "
	  "2 trigger with its window rounded to 2 s, 3 polling.",
	  METRIC_SERVICE, METRIC_U8, S(psi_mode) },
};
#undef D
#undef S

/* The value of family `m` in the struct at `base`, and its line's end. */
static void metric_value(FILE *f, const struct metric_family *m, const void *base)
{
	const char *p = (const char *)base + m->offset;
	uint16_t u16;
	uint32_t u32;
	uint64_t u64;

	switch (m->kind) {
	case METRIC_U8:
		fprintf(f, "%u\n", *(const uint8_t *)p);
		break;
	case METRIC_U16:
		memcpy(&u16, p, sizeof(u16));
		fprintf(f, "%" PRIu16 "\n", u16);
		break;
	case METRIC_U32:
		memcpy(&u32, p, sizeof(u32));
		fprintf(f, "%" PRIu32 "\n", u32);
		break;
	case METRIC_U64:
		memcpy(&u64, p, sizeof(u64));
		fprintf(f, "%" PRIu64 "\n", u64);
		break;
	case METRIC_BP:
		memcpy(&u32, p, sizeof(u32));
		prom_bp(f, u32);
		break;
	case METRIC_PERMILLE:
		memcpy(&u16, p, sizeof(u16));
		fprintf(f, "%u.%03u\n", u16 / 1000u, u16 % 1000u);
		break;
	case METRIC_MS:
		memcpy(&u32, p, sizeof(u32));
		fprintf(f, "%" PRIu32 ".%03" PRIu32 "\n", u32 / 1000, u32 % 1000);
		break;
	case METRIC_BUILD_INFO:
	case METRIC_SERVICE_INFO:
		fputs("1\n", f);
		break;
	}
}

/* One sample of a daemon-wide family. */
static void metric_daemon(FILE *f, const struct metric_family *m,
			  const struct mg_status_daemon *d)
{
	fputs(m->name, f);
	if (m->kind == METRIC_BUILD_INFO) {
		fputs("{version=", f);
		prom_label_value(f, d->version);
		fputc('}', f);
	}
	fputc(' ', f);
	metric_value(f, m, d);
}

/* One sample of a service's family. */
static void metric_service(FILE *f, const struct metric_family *m,
			   const struct mg_status_service *v)
{
	fprintf(f, "%s{service=", m->name);
	prom_label_value(f, v->name);
	if (m->kind == METRIC_SERVICE_INFO) {
		fputs(",cgroup=", f);
		prom_label_value(f, v->cgroup);
		fprintf(f, ",enforce=\"%s\"", enforce_name(v->enforce));
	}
	fputs("} ", f);
	metric_value(f, m, v);
}

void metrics_print(FILE *f, const struct status *s)
{
	for (size_t i = 0; i < ARRAY_SIZE(metric_families); i++) {
		const struct metric_family *m = &metric_families[i];

		if (m->scope == METRIC_HOST_MEMORY && !s->daemon.mem_total)
			continue;
		if ((m->scope == METRIC_SERVICE || m->scope == METRIC_SERVICE_BUDGET) &&
		    s->n_services == 0)
			continue;
		prom_family(f, m->name, m->type, m->help);
		if (m->scope == METRIC_DAEMON || m->scope == METRIC_HOST_MEMORY) {
			metric_daemon(f, m, &s->daemon);
			continue;
		}
		for (size_t j = 0; j < s->n_services; j++)
			if (m->scope == METRIC_SERVICE || s->services[j].budget)
				metric_service(f, m, &s->services[j]);
	}
}
