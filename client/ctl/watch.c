/* SPDX-License-Identifier: MIT */
/*
 * memguardctl status --watch: a frame every interval, redrawn in place on
 * a terminal (alternate screen, q to quit), or frames one after the other.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "ctl.h"

/* --- status --watch ------------------------------------------------------------ */

static volatile sig_atomic_t got_quit, got_winch, got_tstp;

static void on_signal(int sig)
{
	if (sig == SIGWINCH)
		got_winch = 1;
	else if (sig == SIGTSTP)
		got_tstp = 1;
	else
		got_quit = 1;
}

/* The terminal as --watch found it, to be put back on every way out. */
static struct {
	bool raw;                        /* stdin is in raw mode; `saved` is how it was */
	bool screen;                     /* on the alternate screen, cursor hidden */
	struct termios saved;
} term;

static void term_restore(void)
{
	if (term.screen) {
		/* Show the cursor, leave the alternate screen. */
		fputs("\033[?25h\033[?1049l", stdout);
		fflush(stdout);
		term.screen = false;
	}
	if (term.raw) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &term.saved);
		term.raw = false;
	}
}

/*
 * Draw on the alternate screen when `screen`; read single keys from stdin
 * when `keys`.  Raw mode here means no line buffering and no echo; ISIG
 * stays on so that Ctrl-C and Ctrl-Z raise their signals, which the loop
 * handles.  Returns 0 or -errno.
 */
static int term_enter(bool screen, bool keys)
{
	if (keys && !term.raw) {
		struct termios t;

		if (tcgetattr(STDIN_FILENO, &term.saved) < 0)
			return -errno;
		t = term.saved;
		t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		t.c_cc[VMIN] = 0;
		t.c_cc[VTIME] = 0;
		if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) < 0)
			return -errno;
		term.raw = true;
	}
	if (screen && !term.screen) {
		/* Alternate screen, cursor hidden, screen cleared. */
		fputs("\033[?1049h\033[?25l\033[H\033[2J", stdout);
		fflush(stdout);
		term.screen = true;
	}
	return 0;
}

/* Draw `frame` from the top left corner, each line cut to the terminal's
 * width, and the lines that do not fit replaced by a note. */
static void watch_draw(const char *frame)
{
	struct winsize ws = { 0 };
	size_t rows = 24, cols = 80, n_lines = 0, row = 0;
	const char *p;

	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col) {
		rows = ws.ws_row;
		cols = ws.ws_col;
	}
	for (p = frame; *p; p++)
		n_lines += *p == '\n';
	fputs("\033[H", stdout);
	for (p = frame; *p && row < rows; row++) {
		const char *eol = strchrnul(p, '\n');
		size_t len = (size_t)(eol - p);

		if (row > 0)
			fputc('\n', stdout);
		if (row + 1 == rows && n_lines > rows) {
			fprintf(stdout, "(%zu more lines: make the window taller)", n_lines - row);
		} else {
			/* Frames are ASCII but for escaped UTF-8 names: cut at a character. */
			if (len > cols)
				len = cols;
			while (len > 0 && len < (size_t)(eol - p) &&
			       ((unsigned char)p[len] & 0xc0) == 0x80)
				len--;
			fwrite(p, 1, len, stdout);
		}
		fputs("\033[K", stdout);
		p = *eol ? eol + 1 : eol;
	}
	fputs("\033[J", stdout);
	fflush(stdout);
}

enum watch_wake {
	WATCH_TIMEOUT,                   /* time for the next frame */
	WATCH_REDRAW,                    /* a key or a resize asked for one now */
	WATCH_QUIT,
};

/* Wait until `deadline` (ms, monotonic) for a key or a signal; the handled
 * signals are blocked but while waiting, so that none is missed. */
static enum watch_wake watch_wait(int64_t deadline, const sigset_t *waitmask, bool keys)
{
	for (;;) {
		struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
		int64_t left = deadline - now_ms();
		struct timespec ts;
		char buf[64];
		ssize_t n;
		int r;

		if (got_quit)
			return WATCH_QUIT;
		if (got_winch || got_tstp)
			return WATCH_REDRAW;
		if (left <= 0)
			return WATCH_TIMEOUT;
		ts = (struct timespec){ .tv_sec = left / 1000, .tv_nsec = left % 1000 * 1000000 };
		r = ppoll(&p, keys ? 1 : 0, &ts, waitmask);
		if (r <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = read(STDIN_FILENO, buf, sizeof(buf));
		if (n <= 0) {
			/* The terminal went away: nobody can press q now. */
			if (n == 0 || (errno != EAGAIN && errno != EINTR))
				return WATCH_QUIT;
			continue;
		}
		for (ssize_t i = 0; i < n; i++) {
			/* q, Ctrl-C and Ctrl-D (when they arrive as bytes) quit. */
			if (buf[i] == 'q' || buf[i] == 'Q' || buf[i] == 0x03 || buf[i] == 0x04)
				return WATCH_QUIT;
			if (buf[i] == ' ' || buf[i] == 'r' || buf[i] == 'R' || buf[i] == 0x0c)
				return WATCH_REDRAW;
		}
	}
}

/* Ctrl-Z: give the terminal back, stop, and take it again on SIGCONT. */
static void watch_suspend(bool screen, bool keys, const sigset_t *handled)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL }, sa = { .sa_handler = on_signal };
	sigset_t tstp;

	got_tstp = 0;
	term_restore();
	sigemptyset(&tstp);
	sigaddset(&tstp, SIGTSTP);
	sigaction(SIGTSTP, &dfl, NULL);
	raise(SIGTSTP);
	/* Stops here while unblocked; goes on after SIGCONT. */
	sigprocmask(SIG_UNBLOCK, &tstp, NULL);
	sigprocmask(SIG_BLOCK, handled, NULL);
	sigaction(SIGTSTP, &sa, NULL);
	term_enter(screen, keys);
}

static int frame_build(struct ctl *c, const struct status *s, char **ret, size_t *ret_len)
{
	FILE *f = open_memstream(ret, ret_len);
	int r;

	if (!f)
		return -errno;
	r = status_render(f, c, s, /* clock= */ true);
	if (fclose(f) != 0 && r == 0)
		r = -ENOMEM;
	if (r < 0) {
		free(*ret);
		*ret = NULL;
	}
	return r;
}

/*
 * Catch the signals --watch handles (Ctrl-Z only with keys, that is on a
 * terminal) and block them, but inside ppoll() (`*ret_waitmask`), so a
 * flag cannot be set between its test and the wait.  `*ret_handled` is
 * the set caught.
 */
static void watch_signals(bool keys, sigset_t *ret_handled, sigset_t *ret_waitmask)
{
	static const int handled_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGWINCH, SIGTSTP };
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(ret_handled);
	for (size_t i = 0; i < ARRAY_SIZE(handled_signals); i++)
		sigaddset(ret_handled, handled_signals[i]);
	sigprocmask(SIG_BLOCK, ret_handled, ret_waitmask);
	for (size_t i = 0; i < ARRAY_SIZE(handled_signals); i++) {
		/* Not on a terminal, Ctrl-Z stops us as usual. */
		if (handled_signals[i] == SIGTSTP && !keys)
			continue;
		sigaction(handled_signals[i], &sa, NULL);
	}
	for (size_t i = 0; i < ARRAY_SIZE(handled_signals); i++)
		sigdelset(ret_waitmask, handled_signals[i]);
}

/*
 * Wait until `deadline` for the next frame, handling what comes meanwhile:
 * q or a quitting signal (sets got_quit), Ctrl-Z, a resize, a redraw of
 * `frame` (the last one, redrawn in place when `screen`).
 */
static void watch_pause(int64_t deadline, bool screen, const char *frame, bool keys,
			const sigset_t *handled, const sigset_t *waitmask)
{
	for (;;) {
		enum watch_wake w = watch_wait(deadline, waitmask, keys);

		if (w == WATCH_QUIT) {
			got_quit = 1;
			return;
		}
		if (got_tstp)
			watch_suspend(screen, keys, handled);
		if (got_winch && screen)
			fputs("\033[2J", stdout);
		got_winch = 0;
		if (w == WATCH_REDRAW) {
			/* Redraw what we have; the next request waits for its time.
			 * Frames that follow each other have nothing to redraw. */
			if (frame && screen)
				watch_draw(frame);
			continue;
		}
		return;
	}
}

/*
 * status --watch: a frame every `interval_ms` until q, Ctrl-C, SIGTERM or
 * SIGHUP.  On a terminal the frame is redrawn in place on the alternate
 * screen; otherwise frames follow each other (JSON: one document per
 * line).  A daemon that goes away after the first frame is waited for;
 * one that is not there at first, or refuses us, ends the watch.
 */
int status_watch(struct ctl *c, uint32_t interval_ms)
{
	bool screen = !c->json && isatty(STDOUT_FILENO);
	bool keys = screen && isatty(STDIN_FILENO);
	struct status s = { 0 };
	sigset_t handled, waitmask;
	bool shown = false;
	int st = CTL_EXIT_OK, r;

	watch_signals(keys, &handled, &waitmask);
	/* Ctrl-C while the daemon is slow to answer ends the wait too. */
	c->waitmask = &waitmask;
	c->quit = &got_quit;
	atexit(term_restore);
	if (term_enter(screen, keys) < 0)
		keys = false;

	while (!got_quit) {
		int64_t deadline = now_ms() + interval_ms;
		_cleanup_free_ char *frame = NULL;
		size_t len = 0;

		st = ctl_status(c, &s);
		if (got_quit) {
			st = CTL_EXIT_OK;
			break;
		}
		if (st == CTL_EXIT_PERMISSION || st == CTL_EXIT_USAGE || (st && !shown))
			break;
		if (st == CTL_EXIT_OK) {
			r = frame_build(c, &s, &frame, &len);
			if (r < 0) {
				ctl_errno(c, r, /* connecting= */ false);
				st = CTL_EXIT_FAILED;
				break;
			}
		} else if (screen) {
			char t[32];

			/* The daemon went away: say so in place of the frame, and retry. */
			if (asprintf(&frame, "memguardctl: %s\nRetrying every %s; q quits.\n",
				     c->error, fmt_ms(t, interval_ms)) < 0)
				frame = NULL;
		} else {
			fprintf(stderr, "memguardctl: %s; retrying\n", c->error);
		}
		if (frame && screen) {
			if (st == CTL_EXIT_OK && keys) {
				char *more = NULL;
				char t[32];

				if (asprintf(&more, "%s\nEvery %s; q quits, space refreshes.\n",
					     frame, fmt_ms(t, interval_ms)) >= 0) {
					free(frame);
					frame = more;
				}
			}
			watch_draw(frame);
		} else if (frame) {
			/* Frames one after another: a blank line between tables. */
			if (shown && !c->json)
				fputc('\n', stdout);
			fputs(frame, stdout);
			if (fflush(stdout) != 0) {
				ctl_set_error(c, "write error: %s", strerror(errno));
				st = CTL_EXIT_FAILED;
				break;
			}
		}
		if (st == CTL_EXIT_OK)
			shown = true;
		st = CTL_EXIT_OK;

		watch_pause(deadline, screen, frame, keys, &handled, &waitmask);
	}
	term_restore();
	status_done(&s);
	c->waitmask = NULL;
	c->quit = NULL;
	sigprocmask(SIG_SETMASK, &waitmask, NULL);
	return ctl_complain(c, st);
}
