/* SPDX-License-Identifier: MIT */
/*
 * memguardd: argv, configuration, the listening socket (socket activation
 * or our own), then the manager's loop.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "conf/conf.h"
#include "log.h"
#include "manager.h"
#include "server.h"

#define DEFAULT_CONFIG SYSCONFDIR "/memguard.conf"
#define EXIT_CONFIG 78                  /* EX_CONFIG: the unit does not restart on it */

static void help(void)
{
	printf("Usage: memguardd [OPTION]...\n"
	       "Keep the services of this host inside their memory budgets by asking them\n"
	       "to give memory back before the kernel throttles or OOM-kills them.\n"
	       "\n"
	       "  -c, --config FILE       configuration file (default " DEFAULT_CONFIG ");\n"
	       "                          without one (or without services in it), each\n"
	       "                          client's own cgroup is a service\n"
	       "      --check-config      check the configuration, print FILE:LINE: message\n"
	       "                          for each problem, exit 0 when it is valid, 1 if not\n"
	       "  -s, --socket PATH       listen on PATH instead of the configured socket\n"
	       "      --cgroup-root DIR   look service cgroups up below DIR (cgroup2)\n"
	       "  -l, --log-level LEVEL   emerg, alert, crit, err, warning, notice, info, debug\n"
	       "  -h, --help              show this help and exit\n"
	       "  -V, --version           show the version and exit\n"
	       "\n"
	       "For tests, on fixture trees:\n"
	       "      --cgroup-v1-root DIR   the cgroup v1 memory root (hybrid hosts)\n"
	       "      --proc-root DIR        read PID/cgroup, self/mountinfo, meminfo and\n"
	       "                             pressure/memory below DIR instead of /proc\n"
	       "\n"
	       "Signals: SIGTERM and SIGINT stop (memory.high is restored), SIGHUP reloads.\n"
	       "See memguardd(8) and memguard.conf(5).\n");
}

enum {
	ARG_CHECK_CONFIG = 0x100,
	ARG_CGROUP_ROOT,
	ARG_CGROUP_V1_ROOT,
	ARG_PROC_ROOT,
};

struct args {
	const char *config;
	bool config_given;
	bool check;
	const char *socket;
	const char *cgroup_root;
	const char *cgroup_v1_root;
	const char *proc_root;
	int log_level;                   /* -1 = from the config */
};

/* Returns 1 to go on, 0 to exit with success, -1 on a usage error. */
static int parse_args(int argc, char **argv, struct args *a)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, ARG_CHECK_CONFIG },
		{ "socket", required_argument, NULL, 's' },
		{ "cgroup-root", required_argument, NULL, ARG_CGROUP_ROOT },
		{ "cgroup-v1-root", required_argument, NULL, ARG_CGROUP_V1_ROOT },
		{ "proc-root", required_argument, NULL, ARG_PROC_ROOT },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{}
	};
	int c;

	*a = (struct args){ .config = DEFAULT_CONFIG, .log_level = -1 };
	while ((c = getopt_long(argc, argv, "c:s:l:hV", opts, NULL)) >= 0) {
		switch (c) {
		case 'c':
			a->config = optarg;
			a->config_given = true;
			break;
		case ARG_CHECK_CONFIG:
			a->check = true;
			break;
		case 's':
			a->socket = optarg;
			break;
		case ARG_CGROUP_ROOT:
			a->cgroup_root = optarg;
			break;
		case ARG_CGROUP_V1_ROOT:
			a->cgroup_v1_root = optarg;
			break;
		case ARG_PROC_ROOT:
			a->proc_root = optarg;
			break;
		case 'l':
			if (conf_parse_log_level(optarg, &a->log_level) < 0) {
				fprintf(stderr, "memguardd: invalid log level '%s' (emerg, alert, "
						"crit, err, warning, notice, info, debug or 0-7)\n",
					optarg);
				return -1;
			}
			break;
		case 'h':
			help();
			return 0;
		case 'V':
			printf("memguardd %s\n", PACKAGE_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try 'memguardd --help'.\n");
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "memguardd: unexpected argument '%s'\nTry 'memguardd --help'.\n",
			argv[optind]);
		return -1;
	}
	if (a->socket && a->socket[0] != '/') {
		fprintf(stderr, "memguardd: --socket needs an absolute path, not '%s'\n", a->socket);
		return -1;
	}
	return 1;
}

static void print_problem(void *userdata, const char *file, unsigned line, const char *msg)
{
	if (line)
		fprintf(stderr, "%s:%u: %s\n", file, line, msg);
	else
		fprintf(stderr, "%s: %s\n", file, msg);
}

/* --check-config: every problem on stderr; the exit status. */
static int check_config(const struct args *a)
{
	struct mg_conf *conf = NULL;
	int r;

	r = conf_load_or_default(a->config, a->config_given, print_problem, NULL, &conf);
	if (r < 0) {
		if (r != -EINVAL)
			fprintf(stderr, "%s: %s\n", a->config, strerror(-r));
		return 1;
	}
	printf("%s: valid, %zu service%s\n", conf->path ? conf->path : a->config,
	       conf->n_services, conf->n_services == 1 ? "" : "s");
	if (conf->n_services == 0)
		printf("(no service configured: each client's own cgroup is a service of its "
		       "own)\n");
	conf_free(conf);
	return 0;
}

/* The files below --proc-root that the manager reads. */
struct proc_files {
	char mountinfo[4096], meminfo[4096], pressure[4096];
};

/* The manager's paths from the command line; they point into `pf`. */
static void paths_from_args(const struct args *a, struct proc_files *pf,
			    struct manager_paths *ret)
{
	const char *proc = a->proc_root ? a->proc_root : "/proc";

	snprintf(pf->mountinfo, sizeof(pf->mountinfo), "%s/self/mountinfo", proc);
	snprintf(pf->meminfo, sizeof(pf->meminfo), "%s/meminfo", proc);
	snprintf(pf->pressure, sizeof(pf->pressure), "%s/pressure/memory", proc);
	*ret = (struct manager_paths){
		.config = a->config,
		.cgroup_root = a->cgroup_root,
		.v1_memory_root = a->cgroup_v1_root,
		.proc = proc,
		.mountinfo = pf->mountinfo,
		.host_pressure = pf->pressure,
		.meminfo = pf->meminfo,
		.log_level = a->log_level,
	};
}

static gid_t group_id(const char *name, const char *key)
{
	struct group *g;

	if (!name || !name[0])
		return (gid_t)-1;
	g = getgrnam(name);
	if (!g) {
		log_notice("%s '%s' does not exist; leaving the socket to root's group", key, name);
		return (gid_t)-1;
	}
	return g->gr_gid;
}

/* Enough descriptors for max_connections and the cgroup files. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_debug_errno(errno, "Failed to raise RLIMIT_NOFILE, ignoring: %m");
	}
}

/* Block the signals the manager takes through its event loop (as
 * sd_event_add_signal() needs them). */
static void block_signals(void)
{
	sigset_t ss;

	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGHUP);
	sigprocmask(SIG_BLOCK, &ss, NULL);
}

/*
 * The listening socket: the one systemd passed, or a new one at the
 * configured path (*ret_own: ours to remove at the end).  Returns the fd,
 * or -errno after logging why.
 */
static int open_socket(const struct mg_conf *conf, bool *ret_own)
{
	const char *why = "";
	int r, fd, n;

	/* The socket's directory holds the escalation record too: whoever
	 * may write there could plant one, or a symlink where we write.  A
	 * directory still to be made is made by us (mode 0755). */
	r = server_check_runtime_dir(conf->daemon.socket, &why);
	if (r < 0 && r != -ENOENT) {
		int len = (int)(strrchr(conf->daemon.socket, '/') - conf->daemon.socket);

		return log_errno(r, "Refusing to start: %.*s, the directory of %s: %s; it must "
				 "be owned by root and writable by nobody else", len ? len : 1,
				 conf->daemon.socket, conf->daemon.socket,
				 r == -EPERM || r == -ENOTDIR ? why : strerror(-r));
	}

	n = sd_listen_fds(true);
	if (n < 0)
		return log_errno(n, "Failed to read the sockets passed by systemd: %m");
	if (n > 1)
		return log_errno(-EINVAL, "Received %d sockets from systemd; expected one", n);
	if (n == 1) {
		fd = SD_LISTEN_FDS_START;
		if (sd_is_socket(fd, AF_UNIX, SOCK_SEQPACKET, 1) <= 0)
			return log_errno(-ENOTSOCK, "The socket passed by systemd is not a "
					 "listening AF_UNIX SOCK_SEQPACKET socket");
		log_info("Using the socket passed by systemd");
		*ret_own = false;
		return fd;
	}
	fd = server_listen(conf->daemon.socket, 0660,
			   group_id(conf->daemon.socket_group, "socket_group"));
	if (fd == -EADDRINUSE)
		return log_errno(fd, "Another memguardd is serving %s", conf->daemon.socket);
	if (fd < 0)
		return log_errno(fd, "Failed to listen on %s: %m", conf->daemon.socket);
	log_info("Listening on %s", conf->daemon.socket);
	*ret_own = true;
	return fd;
}

/* The configuration to start with, --log-level and --socket applied:
 * 0, or the exit status.  Only a broken file is EXIT_CONFIG, which keeps
 * the unit from restarting us: one that could not be read may be there
 * later. */
static int load_config(const struct args *a, struct mg_conf **ret)
{
	struct mg_conf *conf = NULL;
	int r;

	if (a->log_level >= 0)
		log_set_max_level(a->log_level);
	r = manager_load_config(a->config, a->config_given, NULL, 0, &conf);
	if (r == -EINVAL) {
		log_error("%s is broken; not starting", a->config);
		return EXIT_CONFIG;
	}
	if (r < 0) {
		log_errno(r, "Failed to read %s: %m", a->config);
		return 1;
	}
	log_set_max_level(a->log_level >= 0 ? a->log_level : conf->daemon.log_level);
	if (a->socket) {
		char *s = strdup(a->socket);

		if (!s) {
			conf_free(conf);
			return 1;
		}
		free(conf->daemon.socket);
		conf->daemon.socket = s;
	}
	*ret = conf;
	return 0;
}

/* The start in its order: options, log, config, signals, socket, manager. */
int main(int argc, char **argv)
{
	_cleanup_(manager_freep) struct manager *m = NULL;
	struct mg_conf *conf = NULL;
	struct manager_paths paths = { 0 };
	struct proc_files proc_files;
	bool own_socket = false;
	int r, fd;

	{
		struct args a;

		r = parse_args(argc, argv, &a);
		if (r <= 0)
			return r < 0 ? 2 : 0;

		if (a.check)
			return check_config(&a);

		log_open();
		r = load_config(&a, &conf);
		if (r != 0)
			return r;
		paths_from_args(&a, &proc_files, &paths);
	}

	raise_fd_limit();

	/* From here a client (or systemctl reload) may already see us: a
	 * SIGHUP or SIGTERM before the loop runs must wait for it, not kill
	 * the daemon with the default action. */
	block_signals();

	fd = open_socket(conf, &own_socket);
	if (fd < 0) {
		conf_free(conf);
		return 1;
	}

	{
		_cleanup_free_ char *socket_path = strdup(conf->daemon.socket);

		r = manager_new(conf, &paths, &m);
		if (r < 0) {
			close(fd);
			if (own_socket && socket_path)
				(void)server_unlink_socket(socket_path);
			return 1;
		}
		r = manager_start(m, fd);
		if (r >= 0)
			r = manager_run(m);
		m = manager_free(m);
		if (own_socket && socket_path) {
			int u = server_unlink_socket(socket_path);

			if (u < 0 && u != -ENOENT)
				log_warning_errno(u, "Failed to remove %s, ignoring: %m", socket_path);
		}
	}
	log_info("memguardd stopped");
	return r < 0 ? 1 : 0;
}
