/* SPDX-License-Identifier: MIT */
/*
 * /etc/memguard.conf → struct mg_conf.
 *
 * inih does the key = value splitting; everything inih cannot tell us we
 * learn in our own line reader (conf_reader() below), which sits between
 * the FILE and inih:
 *
 *  - It counts lines, so the handler knows the exact line of every key
 *    (Debian's libinih is built without INI_HANDLER_LINENO).
 *  - It left-trims every line, so indented keys work and inih's multiline
 *    continuation (a line starting with whitespace) can never trigger.
 *  - It reads whole lines itself, so a line longer than inih's buffer is
 *    reported once and dropped instead of being split into two lines.
 *  - It rejects NUL bytes, which inih's string handling would hide.
 *  - It handles "[section]" lines itself: inih keeps only 49 bytes of a
 *    section name, and we need each section's line, duplicate sections
 *    and sections without any key.
 *  - It reports every line inih would reject, not only the first one.
 *
 * Problems go to the caller's report callback, one message each; parsing
 * goes on after a problem so that one run shows all of them, but a file
 * with any problem never yields a configuration.
 */
#include "config.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include "conf/conf.h"
#include "proto/macro.h"

DEFINE_FREE_FUNC(struct mg_conf, conf_free)

#define SOCKET_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1) /* bytes */
#define REPORT_MAX 1024         /* bytes of one message */
#define SUGGEST_KEY_MAX 64      /* bytes; longer unknown keys get no suggestion */

static bool streq(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

/* "80%", "12.5%", "0.01%": bp as a person writes it. */
static const char *format_bp(char *buf, size_t size, uint32_t bp)
{
	if (bp % 100 == 0)
		snprintf(buf, size, "%u%%", bp / 100);
	else if (bp % 10 == 0)
		snprintf(buf, size, "%u.%u%%", bp / 100, bp % 100 / 10);
	else
		snprintf(buf, size, "%u.%02u%%", bp / 100, bp % 100);
	return buf;
}

/* "10ms", "60s", "10m". */
static const char *format_ms(char *buf, size_t size, uint32_t ms)
{
	if (ms % 60000 == 0 && ms > 60000)
		snprintf(buf, size, "%um", ms / 60000);
	else if (ms % 1000 == 0)
		snprintf(buf, size, "%us", ms / 1000);
	else
		snprintf(buf, size, "%ums", ms);
	return buf;
}

/* ---- the keys ----------------------------------------------------------- */

struct parser;
struct key;

/*
 * Parse `value` for key `k` into `field` (the key's member of struct
 * conf_daemon or struct conf_service).  Returns true when the value was
 * stored, false after reporting why not.
 */
typedef bool (*key_parse_fn)(struct parser *p, const struct key *k, void *field,
			     const char *value);

struct key {
	const char *name;
	key_parse_fn parse;
	size_t offset;          /* in struct conf_daemon or struct conf_service */
	int64_t min, max;       /* in the unit of the field (ms, bp, integer) */
};

static bool parse_socket(struct parser *p, const struct key *k, void *field, const char *value);
static bool parse_group(struct parser *p, const struct key *k, void *field, const char *value);
static bool parse_cgroup_root(struct parser *p, const struct key *k, void *field,
			      const char *value);
static bool parse_duration(struct parser *p, const struct key *k, void *field, const char *value);
static bool parse_log_level(struct parser *p, const struct key *k, void *field, const char *value);
static bool parse_percent(struct parser *p, const struct key *k, void *field, const char *value);
static bool parse_throttle(struct parser *p, const struct key *k, void *field, const char *value);
static bool parse_uint(struct parser *p, const struct key *k, void *field, const char *value);
static bool parse_int(struct parser *p, const struct key *k, void *field, const char *value);
static bool parse_cgroup(struct parser *p, const struct key *k, void *field, const char *value);
static bool parse_budget(struct parser *p, const struct key *k, void *field, const char *value);
static bool parse_guarantee(struct parser *p, const struct key *k, void *field,
			    const char *value);
static bool parse_enforce(struct parser *p, const struct key *k, void *field, const char *value);

enum {
	DKEY_SOCKET,
	DKEY_SOCKET_GROUP,
	DKEY_ADMIN_GROUP,
	DKEY_CGROUP_ROOT,
	DKEY_TICK,
	DKEY_REPORT_INTERVAL,
	DKEY_LOG_LEVEL,
	DKEY_HOST_PRESSURE,
	DKEY_MAX_CONNECTIONS,
	DKEY_MAX_CONNECTIONS_PER_UID,
	DKEY_ADMIN_RESERVED,
	_DKEY_MAX,
};

enum {
	SKEY_CGROUP,
	SKEY_BUDGET,
	SKEY_GUARANTEE,
	SKEY_WARN,
	SKEY_CRITICAL,
	SKEY_PRESSURE_SOME,
	SKEY_PRESSURE_FULL,
	SKEY_MIN_GC_PERCENT,
	SKEY_MAX_THROTTLE,
	SKEY_RELEASE_DEADLINE,
	SKEY_ENFORCE,
	SKEY_PRIORITY,
	_SKEY_MAX,
};

#define KEYS_MAX ((int)_DKEY_MAX > (int)_SKEY_MAX ? (int)_DKEY_MAX : (int)_SKEY_MAX)

#define D(f) offsetof(struct conf_daemon, f)
#define S(f) offsetof(struct conf_service, f)
static const struct key daemon_keys[_DKEY_MAX] = {
	[DKEY_SOCKET] = { "socket", parse_socket, D(socket), 0, 0 },
	[DKEY_SOCKET_GROUP] = { "socket_group", parse_group, D(socket_group), 0, 0 },
	[DKEY_ADMIN_GROUP] = { "admin_group", parse_group, D(admin_group), 0, 0 },
	[DKEY_CGROUP_ROOT] = { "cgroup_root", parse_cgroup_root, D(cgroup_root), 0, 0 },
	[DKEY_TICK] = { "tick", parse_duration, D(tick_ms), 10, 60 * 1000 },
	[DKEY_REPORT_INTERVAL] = { "report_interval", parse_duration, D(report_interval_ms), 10,
				   60 * 1000 },
	[DKEY_LOG_LEVEL] = { "log_level", parse_log_level, D(log_level), 0, 7 },
	[DKEY_HOST_PRESSURE] = { "host_pressure", parse_percent, D(host_pressure), 0, 10000 },
	[DKEY_MAX_CONNECTIONS] = { "max_connections", parse_uint, D(max_connections), 1, 65536 },
	[DKEY_MAX_CONNECTIONS_PER_UID] = { "max_connections_per_uid", parse_uint,
					   D(max_connections_per_uid), 1, 65536 },
	[DKEY_ADMIN_RESERVED] = { "admin_reserved_connections", parse_uint,
				  D(admin_reserved_connections), 0, 65536 },
};

static const struct key service_keys[_SKEY_MAX] = {
	[SKEY_CGROUP] = { "cgroup", parse_cgroup, S(cgroup), 0, 0 },
	[SKEY_BUDGET] = { "budget", parse_budget, S(budget), 0, 0 },
	[SKEY_GUARANTEE] = { "guarantee", parse_guarantee, S(guarantee), 0, 0 },
	[SKEY_WARN] = { "warn", parse_percent, S(warn), 100, 9900 },
	[SKEY_CRITICAL] = { "critical", parse_percent, S(critical), 100, 10000 },
	[SKEY_PRESSURE_SOME] = { "pressure_some", parse_percent, S(pressure_some), 0, 10000 },
	[SKEY_PRESSURE_FULL] = { "pressure_full", parse_percent, S(pressure_full), 0, 10000 },
	[SKEY_MIN_GC_PERCENT] = { "min_gc_percent", parse_uint, S(min_gc_percent), 1, 1000 },
	[SKEY_MAX_THROTTLE] = { "max_throttle", parse_throttle, S(max_throttle), 0, 9900 },
	[SKEY_RELEASE_DEADLINE] = { "release_deadline", parse_duration, S(release_deadline_ms),
				    10, 10 * 60 * 1000 },
	[SKEY_ENFORCE] = { "enforce", parse_enforce, S(enforce), 0, 0 },
	[SKEY_PRIORITY] = { "priority", parse_int, S(priority), -1000, 1000 },
};
#undef D
#undef S

/* ---- parser state ------------------------------------------------------- */

enum section_kind {
	SECTION_NONE,           /* before the first section header */
	SECTION_DAEMON,
	SECTION_SERVICE,
	SECTION_SKIP,           /* a broken header was reported: ignore its keys */
};

/*
 * The section being read.  A service is built here and moved into the
 * configuration when the next section starts (or at the end of the file),
 * after the checks that need all of its keys.
 */
struct section {
	enum section_kind kind;
	unsigned line;
	char name[INI_MAX_LINE];
	bool keep;                              /* SERVICE: commit it at its end */
	struct conf_daemon *daemon;             /* DAEMON: where its keys go */
	struct conf_daemon scratch_daemon;      /* a duplicate [daemon], discarded */
	struct conf_service service;
	unsigned key_line[KEYS_MAX];            /* line each key was set on, 0 = unset */
	bool key_bad[KEYS_MAX];                 /* its value was rejected */
	char text[KEYS_MAX][INI_MAX_LINE];      /* each value as written */
};

struct parser {
	FILE *f;
	const char *filename;
	conf_report_fn report;
	void *userdata;

	unsigned line;                          /* line being read, 1-based */
	unsigned n_problems;
	int error;                              /* -errno that stops the parse */
	bool too_many_reported;
	unsigned daemon_line;                   /* line of the first [daemon] */

	struct mg_conf *conf;                   /* being built */
	size_t n_allocated;                     /* of conf->services */
	struct section sec;

	char raw[3 + INI_MAX_LINE];             /* start of the line being read, BOM included */
};

_printf_(3, 0) static void vproblem(struct parser *p, unsigned line, const char *fmt, va_list ap)
{
	char msg[REPORT_MAX];

	p->n_problems++;
	if (!p->report)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	p->report(p->userdata, p->filename, line, msg);
}

/* Report a problem on line `line`. */
_printf_(3, 4) static void problem_at(struct parser *p, unsigned line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vproblem(p, line, fmt, ap);
	va_end(ap);
}

/* Report a problem on the line being read. */
_printf_(2, 3) static void problem(struct parser *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vproblem(p, p->line, fmt, ap);
	va_end(ap);
}

static void oom(struct parser *p)
{
	if (p->error == 0)
		p->error = -ENOMEM;
}

static void daemon_clear(struct conf_daemon *d)
{
	free(d->socket);
	free(d->socket_group);
	free(d->admin_group);
	free(d->cgroup_root);
	*d = (struct conf_daemon){};
}

static int daemon_init(struct conf_daemon *d)
{
	*d = (struct conf_daemon){
		.socket = strdup(CONF_DEFAULT_SOCKET),
		.socket_group = strdup(CONF_DEFAULT_SOCKET_GROUP),
		.admin_group = strdup(CONF_DEFAULT_ADMIN_GROUP),
		.cgroup_root = NULL,
		.tick_ms = CONF_DEFAULT_TICK_MS,
		.report_interval_ms = CONF_DEFAULT_REPORT_INTERVAL_MS,
		.log_level = CONF_DEFAULT_LOG_LEVEL,
		.host_pressure = CONF_DEFAULT_HOST_PRESSURE,
		.max_connections = CONF_DEFAULT_MAX_CONNECTIONS,
		.max_connections_per_uid = CONF_DEFAULT_MAX_CONNECTIONS_PER_UID,
		.admin_reserved_connections = CONF_DEFAULT_ADMIN_RESERVED,
	};
	if (!d->socket || !d->socket_group || !d->admin_group) {
		daemon_clear(d);
		return -ENOMEM;
	}
	return 0;
}

static void service_clear(struct conf_service *s)
{
	free(s->name);
	free(s->cgroup);
	*s = (struct conf_service){};
}

void conf_service_init(struct conf_service *s, unsigned line)
{
	*s = (struct conf_service){
		.line = line,
		.budget = { .kind = CONF_SIZE_MAX },
		.guarantee = { .kind = CONF_SIZE_BYTES, .bytes = 0 },
		.warn = CONF_DEFAULT_WARN,
		.critical = CONF_DEFAULT_CRITICAL,
		.pressure_some = CONF_DEFAULT_PRESSURE_SOME,
		.pressure_full = CONF_DEFAULT_PRESSURE_FULL,
		.min_gc_percent = CONF_DEFAULT_MIN_GC_PERCENT,
		.max_throttle = CONF_DEFAULT_MAX_THROTTLE,
		.release_deadline_ms = CONF_DEFAULT_RELEASE_DEADLINE_MS,
		.enforce = CONF_DEFAULT_ENFORCE,
		.priority = CONF_DEFAULT_PRIORITY,
	};
}

struct mg_conf *conf_free(struct mg_conf *c)
{
	if (!c)
		return NULL;
	for (size_t i = 0; i < c->n_services; i++)
		service_clear(&c->services[i]);
	free(c->services);
	daemon_clear(&c->daemon);
	free(c->path);
	free(c);
	return NULL;
}

int conf_new_default(struct mg_conf **ret)
{
	_cleanup_(conf_freep) struct mg_conf *c = NULL;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	if (daemon_init(&c->daemon) < 0)
		return -ENOMEM;

	*ret = TAKE_PTR(c);
	return 0;
}

const struct conf_service *conf_find_service(const struct mg_conf *c, const char *name)
{
	if (!c || !name)
		return NULL;
	for (size_t i = 0; i < c->n_services; i++)
		if (streq(c->services[i].name, name))
			return &c->services[i];
	return NULL;
}

/* ---- names and paths ---------------------------------------------------- */

static bool service_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > MG_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (const char *c = name; *c; c++)
		if (!isascii((unsigned char)*c) ||
		    (!isalnum((unsigned char)*c) && !strchr("_.@:-", *c)))
			return false;
	return true;
}

/* What groupadd(8) accepts, plus the trailing '$' of machine accounts. */
static bool group_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > MG_NAME_MAX || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c == '$' && i == n - 1 && i > 0)
			continue;
		if (!isascii(c) || (!isalnum(c) && !strchr("_.-", c)))
			return false;
	}
	return true;
}

/* "/a/b//" → "/a/b"; "/" stays. */
static void strip_trailing_slashes(char *s)
{
	size_t n = strlen(s);

	while (n > 1 && s[n - 1] == '/')
		s[--n] = '\0';
}

static bool has_control_char(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/*
 * A cgroup path relative to the cgroup root: one leading and one trailing
 * '/' are dropped ("/system.slice/a.service/" is what people paste); what
 * remains must be non-empty and made of real components.  Returns 1 with
 * *ret set, 0 after reporting, or -ENOMEM.
 */
static int cgroup_path(struct parser *p, const char *value, char **ret)
{
	const char *s = value, *c, *slash;
	size_t len;

	if (*s == '/')
		s++;
	len = strlen(s);
	if (len > 0 && s[len - 1] == '/')
		len--;

	if (len == 0) {
		problem(p, "cgroup '%s' is the root cgroup; name a cgroup below it", value);
		return 0;
	}
	if (len > MG_PATH_MAX) {
		problem(p, "cgroup '%s' is too long (at most %d bytes)", value, MG_PATH_MAX);
		return 0;
	}
	if (has_control_char(value)) {
		problem(p, "cgroup '%s' contains a control character", value);
		return 0;
	}
	for (c = s; c <= s + len; c = slash + 1) {
		size_t n;

		slash = memchr(c, '/', (size_t)(s + len - c));
		if (!slash)
			slash = s + len;
		n = (size_t)(slash - c);
		if (n == 0) {
			problem(p, "cgroup '%s' has an empty component ('//')", value);
			return 0;
		}
		if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.')) {
			problem(p, "cgroup '%s' has a '%.*s' component", value, (int)n, c);
			return 0;
		}
	}

	*ret = strndup(s, len);
	if (!*ret)
		return -ENOMEM;
	return 1;
}

/* ---- values ------------------------------------------------------------- */

/*
 * Report when an earlier service has the cgroup `path`.  Explicit cgroups
 * are checked as they are read, default ones when their section ends.
 */
static void cgroup_check_unique(struct parser *p, const char *path, unsigned line)
{
	const struct mg_conf *c = p->conf;

	for (size_t i = 0; i < c->n_services; i++)
		if (streq(c->services[i].cgroup, path)) {
			problem_at(p, line, "cgroup '%s' is already used by [%s] on line %u", path,
				   c->services[i].name, c->services[i].line);
			return;
		}
}

static void set_string(struct parser *p, char **field, const char *value)
{
	char *copy = NULL;

	if (value) {
		copy = strdup(value);
		if (!copy) {
			oom(p);
			return;
		}
	}
	free(*field);
	*field = copy;
}

static void out_of_range(struct parser *p, const struct key *k, const char *value,
			 const char *min, const char *max, const char *hint)
{
	problem(p, "%s '%s' out of range (%s..%s)%s", k->name, value, min, max, hint);
}

/* A budget or a guarantee: "2G", "25%", or (budget only) "max". */
static bool parse_conf_size(struct parser *p, const struct key *k, const char *value,
			    bool budget, struct conf_size *ret)
{
	size_t len = strlen(value);
	struct conf_size size = {};
	char lo[16];
	int r;

	if (budget && strcasecmp(value, "max") == 0) {
		*ret = (struct conf_size){ .kind = CONF_SIZE_MAX };
		return true;
	}

	if (len > 0 && value[len - 1] == '%') {
		r = conf_parse_percent(value, &size.percent);
		size.kind = CONF_SIZE_PERCENT;
		if (r == -ERANGE) {
			out_of_range(p, k, value, format_bp(lo, sizeof(lo), budget ? 1 : 0),
				     "100%", "");
			return false;
		}
	} else {
		r = conf_parse_size(value, &size.bytes);
		size.kind = CONF_SIZE_BYTES;
		if (r == -ERANGE) {
			problem(p, "%s '%s' is too large", k->name, value);
			return false;
		}
	}
	if (r < 0) {
		problem(p, "invalid %s '%s': expected a size (512M, 2G)%s", k->name, value,
			budget ? ", a percentage (25%) or 'max'" : " or a percentage (25%)");
		return false;
	}

	if (size.bytes == 0 && size.percent == 0) {
		if (budget) {
			problem(p, "budget '%s' must be greater than 0", value);
			return false;
		}
		/* A guarantee of 0 % is no guarantee: the same as 0 bytes. */
		size.kind = CONF_SIZE_BYTES;
	}
	*ret = size;
	return true;
}

/* ---- one parser per kind of key ----------------------------------------- */

/* An absolute path that fits sun_path. */
static bool parse_socket(struct parser *p, const struct key *k, void *field, const char *value)
{
	if (value[0] != '/') {
		problem(p, "socket '%s' is not an absolute path", value);
		return false;
	}
	if (strlen(value) > SOCKET_PATH_MAX) {
		problem(p, "socket '%s' is too long (at most %zu bytes)", value, SOCKET_PATH_MAX);
		return false;
	}
	set_string(p, field, value);
	return true;
}

static bool parse_group(struct parser *p, const struct key *k, void *field, const char *value)
{
	if (!group_name_valid(value)) {
		problem(p, "invalid %s '%s': expected a group name", k->name, value);
		return false;
	}
	set_string(p, field, value);
	return true;
}

/* An absolute path, or "auto" (NULL: discover the cgroup2 mount). */
static bool parse_cgroup_root(struct parser *p, const struct key *k, void *field,
			      const char *value)
{
	if (strcasecmp(value, "auto") == 0) {
		set_string(p, field, NULL);
		return true;
	}
	if (value[0] != '/') {
		problem(p, "cgroup_root '%s' is neither an absolute path nor 'auto'", value);
		return false;
	}
	set_string(p, field, value);
	/* "/sys/fs/cgroup/" is "/sys/fs/cgroup": paths are joined to it with '/'. */
	if (*(char **)field)
		strip_trailing_slashes(*(char **)field);
	return true;
}

/* uint32_t ms in min..max. */
static bool parse_duration(struct parser *p, const struct key *k, void *field, const char *value)
{
	char lo[16], hi[16];
	uint32_t u32;
	int r;

	r = conf_parse_duration(value, &u32);
	if (r == -EINVAL && conf_is_number(value)) {
		problem(p, "%s '%s' needs a unit (ms, s or m)", k->name, value);
		return false;
	}
	if (r == -EINVAL) {
		problem(p, "invalid %s '%s': expected a duration (250ms, 5s, 2m)", k->name, value);
		return false;
	}
	if (r < 0 || u32 < k->min || u32 > k->max) {
		out_of_range(p, k, value, format_ms(lo, sizeof(lo), (uint32_t)k->min),
			     format_ms(hi, sizeof(hi), (uint32_t)k->max), "");
		return false;
	}
	*(uint32_t *)field = u32;
	return true;
}

/* A syslog priority, by name or number. */
static bool parse_log_level(struct parser *p, const struct key *k, void *field, const char *value)
{
	if (conf_parse_log_level(value, field) < 0) {
		problem(p, "invalid log_level '%s': expected emerg, alert, crit, err, "
			"warning, notice, info, debug or 0..7", value);
		return false;
	}
	return true;
}

/* A percentage in min..max bp into `ret_bp`. */
static bool parse_bp(struct parser *p, const struct key *k, const char *value, uint32_t *ret_bp)
{
	char lo[16], hi[16], hint[32] = "";
	uint32_t u32;
	int r;

	r = conf_parse_percent(value, &u32);
	if (r == -EINVAL) {
		problem(p, "invalid %s '%s': expected a percentage (80%%, 12.5%%)", k->name,
			value);
		return false;
	}
	if (r < 0 || u32 < k->min || u32 > k->max) {
		/* 0.8 meant as a ratio: 0.8 % is below every such minimum. */
		if (r == 0 && k->min >= 100 && u32 > 0 && u32 < 100 && !strchr(value, '%') &&
		    (int64_t)u32 * 100 <= k->max)
			snprintf(hint, sizeof(hint), " (did you mean %u%%?)", u32);
		out_of_range(p, k, value, format_bp(lo, sizeof(lo), (uint32_t)k->min),
			     format_bp(hi, sizeof(hi), (uint32_t)k->max), hint);
		return false;
	}
	*ret_bp = u32;
	return true;
}

/* uint32_t bp. */
static bool parse_percent(struct parser *p, const struct key *k, void *field, const char *value)
{
	return parse_bp(p, k, value, field);
}

/* uint32_t permille, given in percent. */
static bool parse_throttle(struct parser *p, const struct key *k, void *field, const char *value)
{
	uint32_t bp;

	if (!parse_bp(p, k, value, &bp))
		return false;
	*(uint32_t *)field = (bp + 5) / 10;     /* bp → permille, to the nearest */
	return true;
}

/* An integer in min..max into `ret`. */
static bool parse_integer(struct parser *p, const struct key *k, const char *value, int64_t *ret)
{
	char lo[24], hi[24];
	int64_t i64;
	int r;

	r = conf_parse_int64(value, &i64);
	if (r == -EINVAL) {
		problem(p, "invalid %s '%s': expected an integer", k->name, value);
		return false;
	}
	if (r < 0 || i64 < k->min || i64 > k->max) {
		snprintf(lo, sizeof(lo), "%" PRId64, k->min);
		snprintf(hi, sizeof(hi), "%" PRId64, k->max);
		out_of_range(p, k, value, lo, hi, "");
		return false;
	}
	*ret = i64;
	return true;
}

/* uint32_t in min..max. */
static bool parse_uint(struct parser *p, const struct key *k, void *field, const char *value)
{
	int64_t v;

	if (!parse_integer(p, k, value, &v))
		return false;
	*(uint32_t *)field = (uint32_t)v;
	return true;
}

/* int32_t in min..max. */
static bool parse_int(struct parser *p, const struct key *k, void *field, const char *value)
{
	int64_t v;

	if (!parse_integer(p, k, value, &v))
		return false;
	*(int32_t *)field = (int32_t)v;
	return true;
}

/* A relative cgroup path, used by no earlier service. */
static bool parse_cgroup(struct parser *p, const struct key *k, void *field, const char *value)
{
	char *path = NULL;
	int r;

	r = cgroup_path(p, value, &path);
	if (r < 0)
		oom(p);
	if (r <= 0)
		return false;
	free(*(char **)field);
	*(char **)field = path;
	if (p->sec.keep)        /* a dropped section was reported already */
		cgroup_check_unique(p, path, p->line);
	return true;
}

/* struct conf_size: a size, a percentage or "max". */
static bool parse_budget(struct parser *p, const struct key *k, void *field, const char *value)
{
	return parse_conf_size(p, k, value, /* budget= */ true, field);
}

/* struct conf_size: a size or a percentage. */
static bool parse_guarantee(struct parser *p, const struct key *k, void *field,
			    const char *value)
{
	return parse_conf_size(p, k, value, /* budget= */ false, field);
}

/* enum mg_enforce, by name. */
static bool parse_enforce(struct parser *p, const struct key *k, void *field, const char *value)
{
	for (unsigned i = 0; proto_enforce_name(i); i++)
		if (strcasecmp(value, proto_enforce_name(i)) == 0) {
			*(enum mg_enforce *)field = (enum mg_enforce)i;
			return true;
		}
	problem(p, "invalid enforce '%s': expected notify, high or kill", value);
	return false;
}

/* ---- unknown keys ------------------------------------------------------- */

/* Levenshtein distance, case-insensitive; both strings short. */
static size_t distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[SUGGEST_KEY_MAX + 1];

	if (la > SUGGEST_KEY_MAX || lb > SUGGEST_KEY_MAX)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t cost = tolower((unsigned char)a[i - 1]) !=
				      tolower((unsigned char)b[j - 1]);
			size_t best = diag + cost;

			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* The key of `keys` that `name` is a likely typo of, or NULL. */
static const char *suggest(const struct key *keys, size_t n_keys, const char *name)
{
	const char *best = NULL;
	size_t best_d = SIZE_MAX;

	for (size_t i = 0; i < n_keys; i++) {
		size_t d = distance(name, keys[i].name);
		/* One edit per three letters: "budgt", "critcal", "loglevel"; not "warning". */
		size_t limit = strlen(keys[i].name) / 3;

		if (limit < 1)
			limit = 1;
		if (d <= limit && d < strlen(name) && d < best_d) {
			best = keys[i].name;
			best_d = d;
		}
	}
	return best;
}

static const struct key *find_key(const struct key *keys, size_t n_keys, const char *name)
{
	for (size_t i = 0; i < n_keys; i++)
		if (streq(keys[i].name, name))
			return &keys[i];
	return NULL;
}

static void unknown_key(struct parser *p, const char *name)
{
	bool daemon = p->sec.kind == SECTION_DAEMON;
	const struct key *keys = daemon ? daemon_keys : service_keys;
	size_t n_keys = daemon ? ARRAY_SIZE(daemon_keys) : ARRAY_SIZE(service_keys);
	const char *s;

	if (daemon && find_key(service_keys, ARRAY_SIZE(service_keys), name)) {
		problem(p, "unknown key '%s' in [daemon]; '%s' belongs in a service section",
			name, name);
		return;
	}
	if (!daemon && find_key(daemon_keys, ARRAY_SIZE(daemon_keys), name)) {
		problem(p, "unknown key '%s' in [%s]; '%s' belongs in [daemon]", name,
			p->sec.name, name);
		return;
	}
	s = suggest(keys, n_keys, name);
	if (s)
		problem(p, "unknown key '%s' in [%s]; did you mean '%s'?", name, p->sec.name,
			s);
	else
		problem(p, "unknown key '%s' in [%s]", name, p->sec.name);
}

/* ---- inih's handler ----------------------------------------------------- */

/* True when `s` has a '#' after whitespace: a comment inih keeps in the value. */
static bool has_hash_comment(const char *s)
{
	for (const char *c = strchr(s, '#'); c; c = strchr(c + 1, '#'))
		if (c > s && isspace((unsigned char)c[-1]))
			return true;
	return false;
}

/*
 * Called by inih for every "key = value" line the reader let through.
 * `section` is inih's (truncated, and never set, since the reader keeps
 * section lines to itself): p->sec is the truth.  Always returns 1, as
 * every problem is reported here, so inih's own error line can only be one
 * the reader did not foresee.
 */
static int conf_handler(void *userdata, const char *section, const char *name, const char *value)
{
	struct parser *p = userdata;
	struct section *sec = &p->sec;
	const struct key *k;
	size_t idx;
	void *base;

	if (p->error)
		return 1;

	switch (sec->kind) {
	case SECTION_NONE:
		problem(p, "key '%s' outside any section", name);
		return 1;
	case SECTION_SKIP:
		return 1;
	case SECTION_DAEMON:
		k = find_key(daemon_keys, ARRAY_SIZE(daemon_keys), name);
		idx = k ? (size_t)(k - daemon_keys) : 0;
		base = sec->daemon;
		break;
	case SECTION_SERVICE:
		k = find_key(service_keys, ARRAY_SIZE(service_keys), name);
		idx = k ? (size_t)(k - service_keys) : 0;
		base = &sec->service;
		break;
	default:
		return 1;
	}

	if (!k) {
		unknown_key(p, name);
		return 1;
	}
	if (sec->key_line[idx]) {
		problem(p, "'%s' already set on line %u", name, sec->key_line[idx]);
		return 1;
	}
	sec->key_line[idx] = p->line;
	snprintf(sec->text[idx], sizeof(sec->text[idx]), "%s", value);

	if (!*value) {
		problem(p, "empty value for '%s'", name);
		sec->key_bad[idx] = true;
		return 1;
	}
	if (has_hash_comment(value)) {
		problem(p, "%s '%s' contains a '#' comment; comments after a value start with ';'",
			name, value);
		sec->key_bad[idx] = true;
		return 1;
	}
	if (!k->parse(p, k, (char *)base + k->offset, value))
		sec->key_bad[idx] = true;
	return 1;
}

/* ---- sections ----------------------------------------------------------- */

/* The line a check about `a` and `b` belongs to: the later one that was set. */
static unsigned later_line(const struct section *sec, size_t a, size_t b)
{
	unsigned line = sec->line;

	if (sec->key_line[a] > line)
		line = sec->key_line[a];
	if (sec->key_line[b] > line)
		line = sec->key_line[b];
	return line;
}

/* "'80%' (line 4)" or "80% (default)": the other side of a comparison. */
static const char *describe(const struct section *sec, size_t idx, char *buf, size_t size)
{
	char v[16];

	if (sec->key_line[idx])
		snprintf(buf, size, "'%s' (line %u)", sec->text[idx], sec->key_line[idx]);
	else if (idx == SKEY_WARN || idx == SKEY_CRITICAL)
		snprintf(buf, size, "%s (default)",
			 format_bp(v, sizeof(v),
				   idx == SKEY_WARN ? CONF_DEFAULT_WARN : CONF_DEFAULT_CRITICAL));
	else
		snprintf(buf, size, "(default)");
	return buf;
}

/* Checks that need more than one key of a service. */
static void service_check(struct parser *p)
{
	struct section *sec = &p->sec;
	struct conf_service *s = &sec->service;
	char other[INI_MAX_LINE + 32];

	if (!sec->key_bad[SKEY_WARN] && !sec->key_bad[SKEY_CRITICAL] && s->warn >= s->critical) {
		unsigned line = later_line(sec, SKEY_WARN, SKEY_CRITICAL);

		if (line == sec->key_line[SKEY_CRITICAL])
			problem_at(p, line, "critical '%s' must be above warn %s",
				   sec->text[SKEY_CRITICAL],
				   describe(sec, SKEY_WARN, other, sizeof(other)));
		else
			problem_at(p, line, "warn '%s' must be below critical %s",
				   sec->text[SKEY_WARN],
				   describe(sec, SKEY_CRITICAL, other, sizeof(other)));
	}

	if (!sec->key_bad[SKEY_BUDGET] && !sec->key_bad[SKEY_GUARANTEE] &&
	    s->budget.kind == s->guarantee.kind &&
	    ((s->budget.kind == CONF_SIZE_BYTES && s->guarantee.bytes > s->budget.bytes) ||
	     (s->budget.kind == CONF_SIZE_PERCENT && s->guarantee.percent > s->budget.percent))) {
		unsigned line = later_line(sec, SKEY_BUDGET, SKEY_GUARANTEE);

		if (line == sec->key_line[SKEY_GUARANTEE])
			problem_at(p, line, "guarantee '%s' is above budget %s",
				   sec->text[SKEY_GUARANTEE],
				   describe(sec, SKEY_BUDGET, other, sizeof(other)));
		else
			problem_at(p, line, "budget '%s' is below guarantee %s",
				   sec->text[SKEY_BUDGET],
				   describe(sec, SKEY_GUARANTEE, other, sizeof(other)));
	}
}

/* "'10' (line 4)" or "16 (default)": a daemon key on the other side. */
static const char *describe_daemon(const struct section *sec, size_t idx, uint32_t value,
				   char *buf, size_t size)
{
	if (sec->key_line[idx])
		snprintf(buf, size, "'%s' (line %u)", sec->text[idx], sec->key_line[idx]);
	else
		snprintf(buf, size, "%" PRIu32 " (default)", value);
	return buf;
}

/* Checks that need more than one key of [daemon]: reserving every
 * connection for admins would refuse every client.  A key this section
 * did not set counts at its default (a duplicate [daemon] is read into a
 * cleared scratch copy). */
static void daemon_check(struct parser *p)
{
	struct section *sec = &p->sec;
	uint32_t max = sec->key_line[DKEY_MAX_CONNECTIONS] ? sec->daemon->max_connections
							    : CONF_DEFAULT_MAX_CONNECTIONS;
	uint32_t reserved = sec->key_line[DKEY_ADMIN_RESERVED] ?
				    sec->daemon->admin_reserved_connections :
				    CONF_DEFAULT_ADMIN_RESERVED;
	char other[INI_MAX_LINE + 32];
	unsigned line;

	if (sec->key_bad[DKEY_MAX_CONNECTIONS] || sec->key_bad[DKEY_ADMIN_RESERVED] ||
	    reserved < max)
		return;
	line = later_line(sec, DKEY_MAX_CONNECTIONS, DKEY_ADMIN_RESERVED);
	if (line == sec->key_line[DKEY_ADMIN_RESERVED])
		problem_at(p, line, "admin_reserved_connections '%s' must be below "
			   "max_connections %s, or no client could connect",
			   sec->text[DKEY_ADMIN_RESERVED],
			   describe_daemon(sec, DKEY_MAX_CONNECTIONS, max, other, sizeof(other)));
	else
		problem_at(p, line, "max_connections '%s' must be above "
			   "admin_reserved_connections %s, or no client could connect",
			   sec->text[DKEY_MAX_CONNECTIONS],
			   describe_daemon(sec, DKEY_ADMIN_RESERVED, reserved, other,
					   sizeof(other)));
}

/* Move the service being read into the configuration.  Returns -ENOMEM or 0. */
static int service_commit(struct parser *p)
{
	struct section *sec = &p->sec;
	struct conf_service *s = &sec->service;
	struct mg_conf *c = p->conf;

	s->name = strdup(sec->name);
	if (!s->name)
		return -ENOMEM;
	if (!s->cgroup) {
		if (sec->key_bad[SKEY_CGROUP])
			return 0;       /* reported; no default to guess */
		if (asprintf(&s->cgroup, "system.slice/%s.service", s->name) < 0) {
			s->cgroup = NULL;
			return -ENOMEM;
		}
		cgroup_check_unique(p, s->cgroup, sec->line);
	}

	if (c->n_services == p->n_allocated) {
		size_t n = p->n_allocated ? p->n_allocated * 2 : 8;
		struct conf_service *a;

		if (n > CONF_MAX_SERVICES)
			n = CONF_MAX_SERVICES;
		a = reallocarray(c->services, n, sizeof(*a));
		if (!a)
			return -ENOMEM;
		c->services = a;
		p->n_allocated = n;
	}
	c->services[c->n_services++] = *s;
	*s = (struct conf_service){};
	return 0;
}

/* Finish the section being read: cross-checks, then keep or drop it. */
static void section_end(struct parser *p)
{
	struct section *sec = &p->sec;

	if (sec->kind == SECTION_DAEMON)
		daemon_check(p);
	if (sec->kind == SECTION_SERVICE) {
		service_check(p);
		if (sec->keep && service_commit(p) < 0)
			oom(p);
		service_clear(&sec->service);
	}
	daemon_clear(&sec->scratch_daemon);
	sec->kind = SECTION_NONE;
}

/* Start ignoring keys, after a section header that was reported broken. */
static void section_skip(struct parser *p)
{
	section_end(p);
	p->sec.kind = SECTION_SKIP;
	p->sec.line = p->line;
}

/* Start the section "[name]" (name not NUL-terminated, `len` bytes). */
static void section_begin(struct parser *p, const char *name, size_t len)
{
	struct section *sec = &p->sec;
	struct mg_conf *c = p->conf;

	section_end(p);
	memset(sec->key_line, 0, sizeof(sec->key_line));
	memset(sec->key_bad, 0, sizeof(sec->key_bad));
	sec->line = p->line;
	snprintf(sec->name, sizeof(sec->name), "%.*s", (int)len, name);

	if (streq(sec->name, "daemon")) {
		sec->kind = SECTION_DAEMON;
		if (p->daemon_line) {
			problem(p, "duplicate section [daemon], first on line %u",
				p->daemon_line);
			sec->daemon = &sec->scratch_daemon;
		} else {
			p->daemon_line = p->line;
			sec->daemon = &c->daemon;
		}
		return;
	}
	if (strcasecmp(sec->name, "daemon") == 0) {
		problem(p, "unknown section [%s]; did you mean [daemon]?", sec->name);
		sec->kind = SECTION_SKIP;
		return;
	}

	/* A service.  Its keys are checked even when it is dropped. */
	sec->kind = SECTION_SERVICE;
	conf_service_init(&sec->service, p->line);
	sec->keep = false;
	if (!service_name_valid(sec->name)) {
		problem(p, "invalid service name '%s': use 1 to %d of A-Z a-z 0-9 _ . @ : -, "
			"not starting with '.' or '-'", sec->name, MG_NAME_MAX);
		return;
	}
	for (size_t i = 0; i < c->n_services; i++)
		if (streq(c->services[i].name, sec->name)) {
			problem(p, "duplicate section [%s], first on line %u", sec->name,
				c->services[i].line);
			return;
		}
	if (c->n_services >= CONF_MAX_SERVICES) {
		if (!p->too_many_reported)
			problem(p, "too many services (at most %d)", CONF_MAX_SERVICES);
		p->too_many_reported = true;
		return;
	}
	sec->keep = true;
}

/* ---- the line reader ---------------------------------------------------- */

/*
 * inih's scan for a key's '=' or ':': the first of `chars`, or an inline
 * ';' comment after whitespace, or the end.  Kept identical to inih so the
 * reader rejects exactly the lines inih would.
 */
static const char *find_chars_or_comment(const char *s, const char *chars)
{
	bool was_space = false;

	while (*s && !strchr(chars, *s) && !(was_space && *s == ';')) {
		was_space = isspace((unsigned char)*s);
		s++;
	}
	return s;
}

/* A "[name]" line: start a section, or report why not. */
static void read_section_header(struct parser *p, const char *start, size_t len)
{
	const char *close = memchr(start, ']', len);
	const char *rest;

	if (!close) {
		problem(p, "expected ']' at the end of the section header");
		section_skip(p);
		return;
	}
	for (rest = close + 1; rest < start + len && isspace((unsigned char)*rest); rest++)
		;
	if (rest < start + len && *rest != '#' && *rest != ';') {
		problem(p, "unexpected text after '%.*s'", (int)(close + 1 - start), start);
		section_skip(p);
		return;
	}
	section_begin(p, start + 1, (size_t)(close - start - 1));
}

/*
 * inih's reader, fgets()-like: stores one line in `buf` (`size` bytes)
 * and returns it, or NULL at the end.  See the top of the file for what it
 * does on the way; every line it reports on reaches inih as an empty line.
 * One function of ~100 lines on purpose: it reads a line in a single pass
 * over getc() and every check ends at one of its two exits (blank, eof).
 */
static char *conf_reader(char *buf, int size, void *stream)
{
	static const char bom[] = "\xef\xbb\xbf";
	struct parser *p = stream;
	size_t max, n = 0, skip = 0;
	int c, first = 0, first_after_bom = 0, last = 0;
	bool nul = false;
	const char *start, *end, *eq;

	if (p->error || size < 3)
		return NULL;
	/*
	 * Room for the line, its '\n' and the NUL.  A line that fills the
	 * buffer without its '\n' would make newer inih versions discard the
	 * next line as the "rest" of this one.
	 */
	max = (size_t)size - 2;
	if (max > INI_MAX_LINE - 2)
		max = INI_MAX_LINE - 2;

	c = getc(p->f);
	if (c == EOF)
		goto eof;
	if (p->line == INT_MAX) {       /* inih counts lines in an int */
		problem(p, "too many lines");
		return NULL;
	}
	p->line++;

	/*
	 * Read the whole line and keep its start.  Remember its first
	 * non-blank character, so comments and blank lines of any length are
	 * recognized, and the same after a possible byte order mark.
	 */
	for (; c != EOF && c != '\n'; c = getc(p->f)) {
		if (c == '\0')
			nul = true;
		if (n < sizeof(p->raw))
			p->raw[n] = (char)c;
		if (!first && !isspace(c))
			first = c;
		if (!first_after_bom && n >= 3 && !isspace(c))
			first_after_bom = c;
		last = c;
		if (n < SIZE_MAX)
			n++;
	}
	if (c == EOF && ferror(p->f))
		goto eof;
	if (last == '\r')
		n--;    /* CRLF: the '\r' belongs to the line's end */
	if (p->line == 1 && n >= 3 && memcmp(p->raw, bom, 3) == 0) {
		skip = 3;
		n -= 3;
		first = first_after_bom;
	}

	if (nul) {
		problem(p, "NUL byte in line");
		goto blank;
	}
	/* Comments and blank lines never reach inih, so they may be of any length. */
	if (first == 0 || first == '#' || first == ';')
		goto blank;
	if (n > max) {
		problem(p, "line too long (at most %zu characters)", max);
		if (first == '[')
			section_skip(p);
		goto blank;
	}

	start = p->raw + skip;
	end = start + n;
	while (start < end && isspace((unsigned char)*start))
		start++;
	while (end > start && isspace((unsigned char)end[-1]))
		end--;

	if (*start == '[') {
		read_section_header(p, start, (size_t)(end - start));
		goto blank;
	}

	memcpy(buf, start, (size_t)(end - start));
	buf[end - start] = '\0';
	eq = find_chars_or_comment(buf, "=:");
	if ((*eq != '=' && *eq != ':') || eq == buf) {
		problem(p, "expected 'key = value' or '[section]'");
		goto blank;
	}
	buf[end - start] = '\n';
	buf[end - start + 1] = '\0';
	return buf;

blank:
	strcpy(buf, "\n");
	return buf;

eof:
	if (ferror(p->f) && p->error == 0)
		p->error = errno > 0 ? -errno : -EIO;
	return NULL;
}

/* ---- entry points ------------------------------------------------------- */

int conf_parse(FILE *f, const char *filename, conf_report_fn report, void *userdata,
	       struct mg_conf **ret)
{
	_cleanup_free_ struct parser *p = NULL;
	_cleanup_(conf_freep) struct mg_conf *c = NULL;
	int r;

	assert(f && ret);

	/* The parser holds a few KiB of line buffers: keep them off the stack. */
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	r = conf_new_default(&c);
	if (r < 0)
		return r;
	if (filename) {
		c->path = strdup(filename);
		if (!c->path)
			return -ENOMEM;
	}
	p->f = f;
	p->filename = filename ?: "-";
	p->report = report;
	p->userdata = userdata;
	p->conf = c;

	r = ini_parse_stream(conf_reader, p, conf_handler, p);
	section_end(p);
	if (p->error)
		return p->error;
	if (r > 0)
		/* The reader let through a line inih could not split: say so. */
		problem_at(p, (unsigned)r, "expected 'key = value' or '[section]'");
	else if (r < 0)
		return r == -2 ? -ENOMEM : -EIO;        /* inih's malloc or open failed */
	if (p->n_problems > 0)
		return -EINVAL;

	*ret = TAKE_PTR(c);
	return 0;
}

int conf_load(const char *path, conf_report_fn report, void *userdata, struct mg_conf **ret)
{
	_cleanup_fclose_ FILE *f = NULL;

	assert(path && ret);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	return conf_parse(f, path, report, userdata, ret);
}

int conf_load_or_default(const char *path, bool required, conf_report_fn report, void *userdata,
			 struct mg_conf **ret)
{
	int r = conf_load(path, report, userdata, ret);

	if (r == -ENOENT && !required)
		return conf_new_default(ret);
	return r;
}
