/* SPDX-License-Identifier: MIT */
/*
 * memguardctl: the admin CLI.  It speaks the admin half of the wire
 * protocol (docs/protocol.md §5.3) to memguardd -- STATUS, CLIENTS,
 * RELEASE, RELOAD, SET_BUDGET -- and shows the answers as tables, as JSON
 * or as Prometheus metrics.  `status --watch` redraws the table in place.
 *
 * This file holds the commands and main(); the protocol client is
 * daemon.c, the output output.c, --watch watch.c (all in ctl.h).
 *
 * Functions return 0 or -errno; the cmd_*() functions return the process's
 * exit status (enum ctl_exit) and print why they failed.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/no-client-note.h"
#include "conf/conf.h"
#include "ctl.h"

/* An admin tool: under libmemguard-malloc.so, never a client. */
MG_NO_CLIENT_NOTE;

/* --- commands ---------------------------------------------------------------- */

struct cmd_args {
	char **argv;                     /* after the command's name */
	int argc;
	bool watch;
	const char *watch_arg;           /* --watch=INTERVAL */
};

/* Print a usage error and return CTL_EXIT_USAGE. */
_printf_(1, 2) static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("memguardctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'memguardctl --help'.\n", stderr);
	return CTL_EXIT_USAGE;
}

/*
 * A duration for --watch and --timeout: seconds as a plain number ("2",
 * "0.5") or with a unit ("500ms", "2s", "1m").  Returns 0, or -EINVAL.
 */
static int parse_interval(const char *s, uint32_t *ret_ms)
{
	char *end;
	double d;

	if (conf_parse_duration(s, ret_ms) == 0)
		return 0;
	if (!s[0] || s[0] == '-' || s[0] == '+' || s[0] == ' ')
		return -EINVAL;
	errno = 0;
	d = strtod(s, &end);
	if (errno || *end || end == s || !(d >= 0) || d * 1000 > UINT32_MAX)
		return -EINVAL;
	*ret_ms = (uint32_t)(d * 1000 + 0.5);
	return 0;
}

/* A service name as the wire takes it: 1..255 printable ASCII bytes. */
static bool service_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > MG_NAME_MAX)
		return false;
	return proto_name_ok(s);
}

static int parse_size_arg(const char *what, const char *s, uint64_t *ret)
{
	int r = conf_parse_size(s, ret);

	if (r == -ERANGE)
		return usage_error("%s '%s' is too large", what, s);
	if (r < 0)
		return usage_error("%s '%s' is not a size (bytes, or with a unit: 512K, "
				   "1.5G, 64MiB)", what, s);
	if (*ret == 0)
		return usage_error("%s must be greater than 0", what);
	return CTL_EXIT_OK;
}

static int cmd_status(struct ctl *c, const struct cmd_args *a)
{
	uint32_t interval = CTL_WATCH_MS;
	const char *iv = a->watch_arg;
	struct status s = { 0 };
	int st;

	if (a->argc > (a->watch && !iv ? 1 : 0))
		return usage_error("status: unexpected argument '%s'",
				   a->argv[a->argc - 1]);
	if (a->watch) {
		if (!iv && a->argc == 1)
			iv = a->argv[0];
		if (iv && (parse_interval(iv, &interval) < 0 || interval < CTL_WATCH_MIN_MS ||
			   interval > CTL_WATCH_MAX_MS))
			return usage_error("--watch: '%s' is not an interval from 0.1 to 86400 "
					   "seconds (e.g. 2, 0.5, 500ms)", iv);
		return status_watch(c, interval);
	}
	st = ctl_status(c, &s);
	if (st == CTL_EXIT_OK && status_render(stdout, c, &s, /* clock= */ false) < 0) {
		ctl_set_error(c, "out of memory");
		st = CTL_EXIT_FAILED;
	}
	status_done(&s);
	return ctl_complain(c, st);
}

/* Whether STATUS lists `service`: CLIENTS filters by name and so cannot
 * tell an unknown service from one without clients.  Returns the exit
 * status of the STATUS request; `*ret` is set on success. */
static int service_exists(struct ctl *c, const char *service, bool *ret)
{
	struct status s = { 0 };
	int st = ctl_status(c, &s);

	if (st == CTL_EXIT_OK) {
		*ret = false;
		for (size_t i = 0; i < s.n_services; i++)
			if (streq(s.services[i].name, service))
				*ret = true;
	}
	status_done(&s);
	return st;
}

static int cmd_clients(struct ctl *c, const struct cmd_args *a)
{
	struct mg_msg req = { .hdr = { .type = MG_MSG_CLIENTS } };
	const char *service = a->argc ? a->argv[0] : "";
	struct clients cl = { 0 };
	struct mg_result res;
	char name[4 * MG_NAME_MAX + 1];
	int st;

	if (a->argc && !service_name_ok(service))
		return usage_error("clients: '%s' is not a service name",
				   escape_text(service, name, sizeof(name)));
	snprintf(req.clients.service, sizeof(req.clients.service), "%s", service);
	st = ctl_call(c, &req, clients_add, &cl, &res);
	if (st == CTL_EXIT_OK && cl.n == 0 && service[0]) {
		bool exists;

		st = service_exists(c, service, &exists);
		if (st == CTL_EXIT_OK && !exists) {
			ctl_set_error(c, "no service '%s'", service);
			st = CTL_EXIT_FAILED;
		}
	}
	if (st == CTL_EXIT_OK) {
		if (c->json)
			clients_json(&cl);
		else if (cl.n == 0 && service[0])
			printf("No client of service %s is connected.\n", service);
		else if (cl.n == 0)
			printf("No clients are connected.\n");
		else if (clients_table(c, &cl) < 0) {
			ctl_set_error(c, "out of memory");
			st = CTL_EXIT_FAILED;
		}
	}
	free(cl.clients);
	return ctl_complain(c, st);
}

static int cmd_release(struct ctl *c, const struct cmd_args *a)
{
	struct mg_msg req = { .hdr = { .type = MG_MSG_RELEASE } };
	char name[4 * MG_NAME_MAX + 1];
	struct mg_result res;
	int st;

	if (!service_name_ok(a->argv[0]))
		return usage_error("release: '%s' is not a service name",
				   escape_text(a->argv[0], name, sizeof(name)));
	if (a->argc == 2 && !streq(a->argv[1], "all")) {
		st = parse_size_arg("release: SIZE", a->argv[1], &req.release.bytes);
		if (st != CTL_EXIT_OK)
			return st;
	}
	snprintf(req.release.service, sizeof(req.release.service), "%s", a->argv[0]);
	st = ctl_call(c, &req, NULL, NULL, &res);
	if (st == CTL_EXIT_OK)
		return print_result(c, &res);
	return ctl_complain(c, st);
}

static int cmd_set_budget(struct ctl *c, const struct cmd_args *a)
{
	struct mg_msg req = { .hdr = { .type = MG_MSG_SET_BUDGET } };
	char name[4 * MG_NAME_MAX + 1];
	struct mg_result res;
	int st;

	if (!service_name_ok(a->argv[0]))
		return usage_error("set-budget: '%s' is not a service name",
				   escape_text(a->argv[0], name, sizeof(name)));
	st = parse_size_arg("set-budget: SIZE", a->argv[1], &req.set_budget.budget);
	if (st != CTL_EXIT_OK)
		return st;
	snprintf(req.set_budget.service, sizeof(req.set_budget.service), "%s", a->argv[0]);
	st = ctl_call(c, &req, NULL, NULL, &res);
	if (st == CTL_EXIT_OK)
		return print_result(c, &res);
	return ctl_complain(c, st);
}

static int cmd_reload(struct ctl *c, const struct cmd_args *a)
{
	struct mg_msg req = { .hdr = { .type = MG_MSG_RELOAD } };
	struct mg_result res;
	int st;

	st = ctl_call(c, &req, NULL, NULL, &res);
	if (st == CTL_EXIT_OK)
		return print_result(c, &res);
	return ctl_complain(c, st);
}

static int cmd_metrics(struct ctl *c, const struct cmd_args *a)
{
	struct status s = { 0 };
	int st;

	if (c->json)
		return usage_error("metrics has no JSON form: it is Prometheus text only");
	st = ctl_status(c, &s);
	if (st == CTL_EXIT_OK)
		metrics_print(stdout, &s);
	status_done(&s);
	return ctl_complain(c, st);
}

/* --- main ---------------------------------------------------------------------- */

static void help(void)
{
	printf("Usage: memguardctl [OPTION]... COMMAND [ARG]...\n"
	       "Ask memguardd, the memory guard daemon, how the services of this host stand,\n"
	       "and tell it what to do.\n"
	       "\n"
	       "Commands:\n"
	       "  status [--watch [INTERVAL]]\n"
	       "        one row per service: budget, working set, utilization, PSI some and\n"
	       "        full avg10, level, GC target, share of work throttled, clients, bytes\n"
	       "        released, escalation in force, PSI mode (trigger, trigger-2s,\n"
	       "        polling, absent); a first line on the daemon and the host.\n"
	       "        --watch shows it every INTERVAL (default 1s; 2, 0.5, 500ms) until\n"
	       "        q, Ctrl-C or SIGTERM (exit status 0): redrawn in place on a terminal;\n"
	       "        otherwise, and with --json, frames follow each other (JSON: one\n"
	       "        document per line)\n"
	       "  clients [SERVICE]\n"
	       "        the connected processes (of SERVICE): pid, name, heap mapped, in use\n"
	       "        and returned to the kernel, last directive's level, and how they\n"
	       "        cooperated: release demands asked and answered, bytes released of\n"
	       "        bytes asked, mean response time\n"
	       "  release SERVICE [SIZE]\n"
	       "        ask SERVICE's clients to release SIZE bytes in all, now; without\n"
	       "        SIZE, or with 'all': everything they can\n"
	       "  set-budget SERVICE SIZE\n"
	       "        change SERVICE's budget at run time only: it is not saved to\n"
	       "        memguard.conf, and memguardd forgets it at the next reload or restart\n"
	       "  reload\n"
	       "        make memguardd read memguard.conf again; a broken file is refused\n"
	       "        and the running configuration stays\n"
	       "  metrics\n"
	       "        status in the Prometheus text format, e.g. for node_exporter's\n"
	       "        textfile collector (text only: --json does not apply to it)\n"
	       "\n"
	       "Options:\n"
	       "  -s, --socket PATH   memguardd's socket (default: $MEMGUARD_SOCKET, else\n"
	       "                      " CONF_DEFAULT_SOCKET ")\n"
	       "  -j, --json          JSON instead of text, for status, clients, release,\n"
	       "                      set-budget and reload; sizes are in bytes, percentages\n"
	       "                      are numbers, null means unknown or default\n"
	       "  -b, --bytes         sizes as numbers of bytes, not as 512.0M\n"
	       "      --timeout TIME  how long to wait for memguardd to accept the connection\n"
	       "                      and to answer a request in full: seconds, or 2s, 500ms\n"
	       "                      (1ms to 12 days; default 5s)\n"
	       "  -h, --help          show this help and exit\n"
	       "  -V, --version       show the version and exit\n"
	       "\n"
	       "SIZE is a number of bytes, or one with a binary unit: 512K, 1.5G, 64MiB.\n"
	       "Admin requests need root or a member of admin_group (memguard.conf); to\n"
	       "connect at all, the socket's group (socket_group, default memguard).\n"
	       "\n"
	       "Exit status:\n"
	       "  0  success\n"
	       "  1  memguardd answered an error (no such service, a broken configuration\n"
	       "     on reload, ...) or an answer that cannot be read\n"
	       "  2  usage error\n"
	       "  3  memguardd is not running or cannot be reached: no one listens on the\n"
	       "     socket, no answer within the timeout, or the connection was lost\n"
	       "  4  permission denied: to connect to the socket, or to make admin requests\n"
	       "\n"
	       "See memguardctl(1), memguardd(8) and memguard.conf(5).\n");
}

enum {
	ARG_TIMEOUT = 0x100,
	ARG_WATCH,
};

/*
 * The commands and the bounds of their arguments, checked before a command
 * runs (as systemd's verb tables do): fewer than `min_args` is the usage
 * error `missing`, more than `max_args` names the first one too many.
 * status takes its INTERVAL only with --watch, which cmd_status() checks.
 */
static const struct command {
	const char *name;
	int min_args, max_args;
	const char *missing;
	int (*run)(struct ctl *c, const struct cmd_args *a);
} commands[] = {
	{ "status", 0, 1, NULL, cmd_status },
	{ "clients", 0, 1, NULL, cmd_clients },
	{ "release", 1, 2, "release: which service? (release SERVICE [SIZE])", cmd_release },
	{ "set-budget", 2, 2, "set-budget needs a service and a size (set-budget SERVICE SIZE)",
	  cmd_set_budget },
	{ "reload", 0, 0, NULL, cmd_reload },
	{ "metrics", 0, 0, NULL, cmd_metrics },
};

/*
 * The options, into `c` and `a`.  Returns -1 to go on, or the exit status
 * (after --help, --version or a usage error).
 */
static int parse_options(int argc, char **argv, struct ctl *c, struct cmd_args *a)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "bytes", no_argument, NULL, 'b' },
		{ "timeout", required_argument, NULL, ARG_TIMEOUT },
		{ "watch", optional_argument, NULL, ARG_WATCH },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{}
	};
	uint32_t ms;
	int opt;

	/* Options may come before or after the command (getopt permutes). */
	while ((opt = getopt_long(argc, argv, "s:jbhV", opts, NULL)) >= 0) {
		switch (opt) {
		case 's':
			c->socket = optarg;
			break;
		case 'j':
			c->json = true;
			break;
		case 'b':
			c->bytes = true;
			break;
		case ARG_TIMEOUT:
			if (parse_interval(optarg, &ms) < 0 || ms == 0 || ms > INT32_MAX / 2)
				return usage_error("--timeout: '%s' is not a duration from 1ms to "
						   "12 days (e.g. 5, 2s, 500ms)", optarg);
			c->timeout_ms = (int)ms;
			break;
		case ARG_WATCH:
			a->watch = true;
			a->watch_arg = optarg;
			break;
		case 'h':
			help();
			return fflush(stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_FAILED;
		case 'V':
			printf("memguardctl %s\n", PACKAGE_VERSION);
			return fflush(stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_FAILED;
		default:
			fputs("Try 'memguardctl --help'.\n", stderr);
			return CTL_EXIT_USAGE;
		}
	}
	return -1;
}

int main(int argc, char **argv)
{
	const char *env = getenv("MEMGUARD_SOCKET");
	struct ctl c = {
		.socket = env && env[0] ? env : CONF_DEFAULT_SOCKET,
		.timeout_ms = CTL_TIMEOUT_MS,
		.fd = -1,
	};
	const struct command *cmd = NULL;
	struct cmd_args a = { 0 };
	int st;

	st = parse_options(argc, argv, &c, &a);
	if (st >= 0)
		return st;
	if (optind >= argc)
		return usage_error("no command (status, clients, release, set-budget, reload or "
				   "metrics)");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (streq(argv[optind], commands[i].name))
			cmd = &commands[i];
	if (!cmd) {
		char name[CTL_ESCAPED_MAX];

		return usage_error("unknown command '%s'",
				   escape_text(argv[optind], name, sizeof(name)));
	}
	if (a.watch && cmd->run != cmd_status)
		return usage_error("--watch goes with status only");
	a.argv = argv + optind + 1;
	a.argc = argc - optind - 1;
	if (a.argc < cmd->min_args)
		return usage_error("%s", cmd->missing);
	if (a.argc > cmd->max_args)
		return usage_error("%s: unexpected argument '%s'", cmd->name,
				   a.argv[cmd->max_args]);

	st = cmd->run(&c, &a);
	ctl_disconnect(&c);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "memguardctl: write error: %s\n", strerror(errno));
		if (st == CTL_EXIT_OK)
			st = CTL_EXIT_FAILED;
	}
	return st;
}
