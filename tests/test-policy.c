/* SPDX-License-Identifier: MIT */
/*
 * daemon/policy.c: every formula and transition of the control law, from
 * tables of literal inputs and hand-computed outputs.  Unless a case says
 * otherwise the service is the conf.h default (warn 80 %, critical 90 %,
 * PSI some 10 %, full 5 %, gc floor 25 %, throttle ≤ 500 ‰, deadline 5 s)
 * with enforce = kill, and the parameters are the policy.h defaults
 * (Cp 0.05, no smoothing, 5-point band, 2 ticks).
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "daemon/policy.h"
#include "proto/macro.h"

#define N MG_LEVEL_NORMAL
#define W MG_LEVEL_WARN
#define C MG_LEVEL_CRITICAL
#define E MG_LEVEL_EMERGENCY
#define UNK POLICY_UTIL_UNKNOWN

#define GIB (UINT64_C(1) << 30)
#define MIB (UINT64_C(1) << 20)

static const struct conf_service svc_default = {
	.warn = 8000,
	.critical = 9000,
	.pressure_some = 1000,
	.pressure_full = 500,
	.min_gc_percent = 25,
	.max_throttle = 500,
	.release_deadline_ms = 5000,
	.enforce = MG_ENFORCE_KILL,
};

static struct policy_params params_default(void)
{
	struct policy_params p;

	policy_params_init(&p);
	return p;
}

static bool near(double a, double b)
{
	double d = a - b;

	return d < 1e-6 && d > -1e-6;
}

static void test_defaults(void **state)
{
	struct policy_params p;
	struct policy_state s;

	memset(&p, 0xaa, sizeof(p));
	policy_params_init(&p);
	assert_true(near(p.cp, 0.05));
	assert_true(near(p.ema_alpha, 1.0));
	assert_int_equal(p.hysteresis, 500);
	assert_int_equal(p.drop_ticks, 2);
	assert_int_equal(p.squeeze_step, 100);

	memset(&s, 0xaa, sizeof(s));
	policy_state_init(&s);
	assert_int_equal(s.level, MG_LEVEL_NORMAL);
	assert_int_equal(s.calm, 0);
	assert_int_equal(s.usage_calm, 0);
	assert_false(s.have_seen);
	assert_true(near(s.out, 0));
	assert_false(s.have_events);
	assert_false(s.clock_running);
	assert_false(s.demand_active);
	assert_int_equal(s.escalation, MG_ESCALATION_NONE);
}

static void test_utilization(void **state)
{
	static const struct {
		uint64_t ws, budget;
		uint32_t want;
	} t[] = {
		{ 0, 1000, 0 },
		{ 800, 1000, 8000 },
		{ 7999, 10000, 7999 },
		{ 79999, 100000, 7999 },         /* 79.999 %: rounded down */
		{ 1000, 1000, 10000 },
		{ 1500, 1000, 15000 },
		{ 123, 0, UNK },                 /* no budget */
		{ 0, 0, UNK },
		{ UINT64_MAX, 1, UNK - 1 },      /* saturates below "unknown" */
		{ UINT64_MAX, UINT64_MAX, 10000 },
		/* 80 % of 64 GiB is 54975581388.8 bytes */
		{ 54975581388, 64 * GIB, 7999 },
		{ 54975581389, 64 * GIB, 8000 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint32_t got = policy_utilization_bp(t[i].ws, t[i].budget);

		if (got != t[i].want)
			fail_msg("case %zu: %u bp, want %u", i, got, t[i].want);
	}
}

#define SIG(...) ((struct policy_signals){ __VA_ARGS__ })
#define U(x) SIG(.utilization = (x))

static void test_level_raw(void **state)
{
	static const struct {
		struct policy_signals sig;
		enum mg_level want;
	} t[] = {
		{ U(0), N },
		{ U(7999), N },
		{ U(8000), W },
		{ U(8999), W },
		{ U(9000), C },
		{ U(9999), C },
		{ U(10000), E },
		{ U(UNK - 1), E },
		{ U(UNK), N },
		{ SIG(.some_avg10 = 999), N },
		{ SIG(.some_avg10 = 1000), W },
		{ SIG(.some_avg10 = 9000), W },  /* some alone never goes past WARN */
		{ SIG(.full_avg10 = 499), N },
		{ SIG(.full_avg10 = 500), C },
		{ SIG(.utilization = 8000, .full_avg10 = 500), C },
		{ SIG(.utilization = 9000, .some_avg10 = 1000), C },
		{ SIG(.utilization = 10000, .full_avg10 = 500), E },
		{ SIG(.events_grew = true), E },
		{ SIG(.utilization = UNK, .events_grew = true), E },
		{ SIG(.utilization = UNK, .full_avg10 = 500), C },
		{ SIG(.floor = W), W },
		{ SIG(.utilization = 9000, .floor = W), C },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		enum mg_level got = policy_level_raw(&svc_default, &t[i].sig);

		if (got != t[i].want)
			fail_msg("case %zu: level %d, want %d", i, got, t[i].want);
	}
}

static void test_level_hold(void **state)
{
	static const struct {
		struct policy_signals sig;
		enum mg_level want;
	} t[] = {
		{ U(7500), W },                  /* warn − 5 points still holds */
		{ U(7499), N },
		{ U(8500), C },
		{ U(8499), W },
		{ U(9500), E },
		{ U(9499), C },
		{ U(UNK), N },
		{ SIG(.some_avg10 = 1000), W },  /* no band on pressure */
		{ SIG(.some_avg10 = 999), N },
		{ SIG(.full_avg10 = 500), C },
		{ SIG(.full_avg10 = 499), N },
		{ SIG(.events_grew = true), E },
		{ SIG(.floor = C), C },
	};
	struct policy_params p = params_default();

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		enum mg_level got = policy_level_hold(&svc_default, &p, &t[i].sig);

		if (got != t[i].want)
			fail_msg("case %zu: level %d, want %d", i, got, t[i].want);
	}
}

struct level_step {
	struct policy_signals sig;
	int want;                        /* enum mg_level, or END */
};

#define END (-1)

struct level_case {
	const char *name;
	const struct conf_service *svc;  /* NULL: svc_default */
	const struct policy_params *params; /* NULL: defaults */
	struct level_step steps[12];
};

#define SEQ(...) .steps = { __VA_ARGS__, { .want = END } }

static const struct conf_service svc_some_off = {
	.warn = 8000, .critical = 9000, .pressure_some = 0, .pressure_full = 0,
};
static const struct policy_params params_drop1 = { .cp = 0.05, .ema_alpha = 1,
	.hysteresis = 500, .drop_ticks = 1 };
static const struct policy_params params_drop3 = { .cp = 0.05, .ema_alpha = 1,
	.hysteresis = 500, .drop_ticks = 3 };
static const struct policy_params params_band0 = { .cp = 0.05, .ema_alpha = 1,
	.hysteresis = 0, .drop_ticks = 2 };

static const struct level_case level_cases[] = {
	{ "rise to WARN at warn", SEQ({ U(7999), N }, { U(8000), W }) },
	{ "rise to CRITICAL at critical", SEQ({ U(8999), W }, { U(9000), C }) },
	{ "rise to EMERGENCY at 100 %", SEQ({ U(9999), C }, { U(10000), E }) },
	{ "rising skips levels", SEQ({ U(0), N }, { U(10000), E }) },
	{ "WARN held inside the band",
	  SEQ({ U(8000), W }, { U(7600), W }, { U(7600), W }, { U(7600), W },
	      { U(7500), W }, { U(7500), W }) },
	{ "WARN drops after 2 ticks under the band",
	  SEQ({ U(8000), W }, { U(7499), W }, { U(7499), N }) },
	{ "2-tick count restarts inside the band",
	  SEQ({ U(8000), W }, { U(7000), W }, { U(7800), W }, { U(7000), W },
	      { U(7000), N }) },
	{ "2-tick count restarts above the threshold",
	  SEQ({ U(8000), W }, { U(7000), W }, { U(8500), W }, { U(7000), W },
	      { U(7000), N }) },
	{ "CRITICAL drops to WARN when the WARN band holds",
	  SEQ({ U(9200), C }, { U(8600), C }, { U(8499), C }, { U(8499), W },
	      { U(7000), W }, { U(7000), N }) },
	{ "CRITICAL drops straight to NORMAL",
	  SEQ({ U(9500), C }, { U(5000), C }, { U(5000), N }) },
	{ "drop goes to the level of the last tick",
	  SEQ({ U(9500), C }, { U(8000), C }, { U(5000), N }) },
	{ "EMERGENCY held down to 95 %",
	  SEQ({ U(10000), E }, { U(9500), E }, { U(9600), E }, { U(9499), E },
	      { U(9499), C }, { U(8499), C }, { U(8499), W }) },
	{ "rise during the calm count is immediate",
	  SEQ({ U(8000), W }, { U(7000), W }, { U(9000), C }, { U(7000), C },
	      { U(7000), N }) },
	{ "PSI some raises WARN, drops without a band",
	  SEQ({ SIG(.some_avg10 = 999), N }, { SIG(.some_avg10 = 1000), W },
	      { SIG(.some_avg10 = 999), W }, { SIG(.some_avg10 = 999), N }) },
	{ "PSI full raises CRITICAL, PSI some then holds WARN",
	  SEQ({ SIG(.full_avg10 = 500), C },
	      { SIG(.full_avg10 = 499, .some_avg10 = 1000), C },
	      { SIG(.full_avg10 = 499, .some_avg10 = 1000), W }, { U(0), W },
	      { U(0), N }) },
	{ "pressure holds what utilization no longer does",
	  SEQ({ U(8000), W }, { SIG(.some_avg10 = 1000), W },
	      { SIG(.some_avg10 = 1000), W }, { SIG(.some_avg10 = 1000), W }, { U(0), W },
	      { U(0), N }) },
	{ "memory.events growth raises EMERGENCY",
	  SEQ({ U(0), N }, { SIG(.events_grew = true), E }, { U(5000), E },
	      { U(5000), N }) },
	{ "memory.events growth holds EMERGENCY",
	  SEQ({ SIG(.events_grew = true), E }, { U(0), E },
	      { SIG(.events_grew = true), E }, { U(0), E }, { U(0), N }) },
	{ "unknown budget: pressure and events only",
	  SEQ({ U(UNK), N }, { SIG(.utilization = UNK, .some_avg10 = 1000), W },
	      { U(UNK), W }, { U(UNK), N },
	      { SIG(.utilization = UNK, .events_grew = true), E }) },
	{ "host squeeze floor raises and holds",
	  SEQ({ SIG(.floor = W), W }, { SIG(.floor = W), W }, { U(0), W }, { U(0), N }) },
	{ "pressure threshold 0 is off", .svc = &svc_some_off,
	  SEQ({ SIG(.some_avg10 = 0), N }, { SIG(.some_avg10 = 9999), N },
	      { SIG(.full_avg10 = 9999), N }, { U(8000), W }) },
	{ "drop_ticks 1", .params = &params_drop1, SEQ({ U(8000), W }, { U(7000), N }) },
	{ "drop_ticks 3", .params = &params_drop3,
	  SEQ({ U(8000), W }, { U(7000), W }, { U(7000), W }, { U(7000), N }) },
	{ "no band", .params = &params_band0,
	  SEQ({ U(8000), W }, { U(7999), W }, { U(7999), N }) },
};

/* Each table counted in calls (tick_ms 0), and sampled once a tick in
 * time (1 s and 100 ms ticks, from t = 5 s): the same levels, step by step. */
static void test_level_sequences(void **state)
{
	static const uint32_t ticks[] = { 0, 1000, 100 };
	struct policy_params def = params_default();

	for (size_t ti = 0; ti < ARRAY_SIZE(ticks); ti++)
		for (size_t i = 0; i < ARRAY_SIZE(level_cases); i++) {
			const struct level_case *c = &level_cases[i];
			struct policy_state s;

			policy_state_init(&s);
			for (size_t k = 0; c->steps[k].want != END; k++) {
				enum mg_level got = policy_level_step(
					&s, c->params ? c->params : &def,
					c->svc ? c->svc : &svc_default, &c->steps[k].sig,
					5000 + k * ticks[ti], ticks[ti]);

				if ((int)got != c->steps[k].want || s.level != got)
					fail_msg("%s, tick %u ms: step %zu: level %d, want %d",
						 c->name, ticks[ti], k, got, c->steps[k].want);
			}
		}
}

/*
 * Sampled faster than the tick, a level falls after the same time at calm
 * as sampled once a tick: drop_ticks × tick_ms, counted from the last
 * sample that held it.
 */
struct fast_case {
	const char *name;
	uint32_t tick_ms;
	unsigned drop_ticks;
	struct {
		uint64_t from, to, every;        /* samples at from, from + every, … < to */
		struct policy_signals sig;
		int want;                        /* every one of them */
	} runs[6];
};

static const struct fast_case fast_cases[] = {
	{ "10 ms samples: WARN held 2 s", 1000, 2, {
		{ 0, 10, 10, U(8000), W },
		{ 10, 2000, 10, U(7000), W },
		{ 2000, 2010, 10, U(7000), N } } },
	{ "100 ms samples: CRITICAL held 2 s, then straight to NORMAL", 1000, 2, {
		{ 0, 100, 100, U(9200), C },
		{ 100, 2000, 100, U(5000), C },
		{ 2000, 2100, 100, U(5000), N } } },
	{ "saw-tooth of a collected heap: EMERGENCY held throughout", 1000, 2, {
		{ 0, 10, 10, U(10000), E },
		{ 10, 400, 10, U(8000), E },
		{ 400, 410, 10, U(9600), E },          /* inside the band: count again */
		{ 410, 800, 10, U(8000), E },
		{ 800, 810, 10, U(10000), E },
		{ 810, 2800, 10, U(8000), E } } },
	{ "a rise restarts the count", 1000, 2, {
		{ 0, 10, 10, U(8000), W },
		{ 10, 1500, 10, U(7000), W },
		{ 1500, 1510, 10, U(9000), C },
		{ 1510, 3500, 10, U(7000), C },
		{ 3500, 3510, 10, U(7000), N } } },
	{ "inside the band restarts the count", 1000, 2, {
		{ 0, 10, 10, U(8000), W },
		{ 10, 1500, 10, U(7000), W },
		{ 1500, 1510, 10, U(7600), W },
		{ 1510, 3500, 10, U(7000), W },
		{ 3500, 3510, 10, U(7000), N } } },
	{ "a stall counts one tick: a 5 s gap, then one more tick", 1000, 2, {
		{ 0, 10, 10, U(8000), W },
		{ 5000, 5010, 10, U(7000), W },
		{ 5010, 6000, 10, U(7000), W },
		{ 6000, 6010, 10, U(7000), N } } },
	{ "drop_ticks 3, 200 ms tick", 200, 3, {
		{ 0, 10, 10, U(8000), W },
		{ 10, 600, 10, U(7000), W },
		{ 600, 610, 10, U(7000), N } } },
};

static void test_level_fast_samples(void **state)
{
	for (size_t i = 0; i < ARRAY_SIZE(fast_cases); i++) {
		const struct fast_case *c = &fast_cases[i];
		struct policy_params p = params_default();
		struct policy_state s;

		p.drop_ticks = c->drop_ticks;
		policy_state_init(&s);
		for (size_t r = 0; r < ARRAY_SIZE(c->runs) && c->runs[r].every; r++)
			for (uint64_t t = c->runs[r].from; t < c->runs[r].to; t += c->runs[r].every) {
				enum mg_level got = policy_level_step(&s, &p, &svc_default,
								      &c->runs[r].sig, t,
								      c->tick_ms);

				if ((int)got != c->runs[r].want)
					fail_msg("%s: t=%" PRIu64 " ms: level %d, want %d",
						 c->name, t, got, c->runs[r].want);
			}
	}
}

static void test_calm_credit(void **state)
{
	struct policy_state s;

	policy_state_init(&s);
	assert_int_equal(policy_calm_credit(&s, 123, 0), 1);
	assert_int_equal(policy_calm_credit(&s, 123, 1000), 1000);  /* first sample */
	s.have_seen = true;
	s.seen_ms = 1000;
	assert_int_equal(policy_calm_credit(&s, 1010, 1000), 10);
	assert_int_equal(policy_calm_credit(&s, 2000, 1000), 1000);
	assert_int_equal(policy_calm_credit(&s, 9000, 1000), 1000); /* a stall */
	assert_int_equal(policy_calm_credit(&s, 1000, 1000), 0);
	assert_int_equal(policy_calm_credit(&s, 500, 1000), 0);     /* clock back */
	assert_int_equal(policy_calm_credit(&s, 9000, 0), 1);
}

static void test_output(void **state)
{
	/* out = Cp / (1 − u) · (u − warn) / (1 − warn) · 100, by hand. */
	static const struct {
		double cp;
		uint32_t warn;
		uint64_t ws, budget;
		double want;
	} t[] = {
		{ 0.05, 8000, 0, 1000, 0 },
		{ 0.05, 8000, 790, 1000, 0 },          /* below warn */
		{ 0.05, 8000, 800, 1000, 0 },          /* at warn */
		{ 0.05, 8000, 810, 1000, 1.315789474 },/* .05/.19 · .01/.2 · 100 */
		{ 0.05, 8000, 850, 1000, 8.333333333 },/* .05/.15 · .25 · 100 */
		{ 0.05, 8000, 900, 1000, 25 },         /* .05/.1 · .5 · 100 */
		{ 0.05, 8000, 940, 1000, 58.33333333 },/* .05/.06 · .7 · 100 */
		{ 0.05, 8000, 950, 1000, 75 },         /* .05/.05 · .75 · 100 */
		{ 0.05, 8000, 960, 1000, 99 },         /* 100, clamped */
		{ 0.05, 8000, 999, 1000, 99 },         /* 4975, clamped */
		{ 0.05, 8000, 1000, 1000, 99 },        /* u = 1: no division */
		{ 0.05, 8000, 1200, 1000, 99 },
		{ 0.05, 8000, 900, 0, 0 },             /* no budget */
		{ 0.2, 8000, 850, 1000, 33.33333333 }, /* .2/.15 · .25 · 100 */
		{ 0.2, 8000, 880, 1000, 66.66666667 }, /* .2/.12 · .4 · 100 */
		{ 0.2, 8000, 900, 1000, 99 },          /* 100, clamped */
		{ 0.05, 5000, 750, 1000, 10 },         /* .05/.25 · .5 · 100 */
		{ 0.05, 5000, 900, 1000, 40 },         /* .05/.1 · .8 · 100 */
		{ 0.05, 10000, 999, 1000, 0 },         /* warn at 100 %: no 1 − warn = 0 */
		{ 0.05, 10000, 1000, 1000, 99 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		double got = policy_output(t[i].cp, t[i].warn, t[i].ws, t[i].budget);

		if (!near(got, t[i].want))
			fail_msg("case %zu: out %.9f, want %.9f", i, got, t[i].want);
	}
}

static void test_output_smooth(void **state)
{
	static const struct {
		double prev, raw, alpha, want;
	} t[] = {
		{ 50, 10, 1, 10 },               /* alpha 1: no smoothing */
		{ 0, 25, 0.2, 5 },
		{ 5, 25, 0.2, 9 },
		{ 9, 0, 0.2, 7.2 },
		{ 80, 20, 0.5, 50 },
		{ 50, 10, 0, 10 },               /* out of range: as 1 */
		{ 50, 10, 1.5, 10 },
		{ 50, 10, -0.5, 10 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		double got = policy_output_smooth(t[i].prev, t[i].raw, t[i].alpha);

		if (!near(got, t[i].want))
			fail_msg("case %zu: %f, want %f", i, got, t[i].want);
	}
}

static void test_gc_percent(void **state)
{
	static const struct {
		enum mg_level level;
		double out;
		uint32_t min_gc;
		uint16_t want;
	} t[] = {
		{ N, 50, 25, MG_GC_DEFAULT },    /* NORMAL: the application's own */
		{ N, 0, 25, MG_GC_DEFAULT },
		{ W, 0, 25, 100 },
		{ W, 8.333333333, 25, 92 },
		{ W, 8.6, 25, 91 },              /* rounded to nearest */
		{ C, 25, 25, 75 },
		{ C, 58.33333333, 25, 42 },
		{ C, 75, 25, 25 },
		{ E, 74.4, 25, 26 },
		{ E, 99, 25, 25 },               /* floor */
		{ W, 60, 50, 50 },               /* floor */
		{ E, 99, 1, 1 },
		{ E, 1000, 1, 1 },               /* out beyond 99 is 99 */
		{ W, 0, 200, 200 },              /* a floor above 100 % */
		{ W, -5, 25, 100 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint16_t got = policy_gc_percent(t[i].level, t[i].out, t[i].min_gc);

		if (got != t[i].want)
			fail_msg("case %zu: gc %u, want %u", i, got, t[i].want);
	}
}

static void test_throttle(void **state)
{
	static const struct {
		enum mg_level level;
		double out;
		uint32_t max;
		uint16_t want;
	} t[] = {
		{ N, 99, 500, 0 },
		{ W, 99, 500, 0 },               /* not below CRITICAL */
		{ C, 0, 500, 0 },
		{ C, 8.333333333, 500, 83 },
		{ C, 25, 500, 250 },
		{ C, 49.94, 500, 499 },
		{ C, 58.33333333, 500, 500 },    /* 583, capped */
		{ C, 58.33333333, 990, 583 },
		{ E, 75, 500, 500 },
		{ E, 99, 990, 990 },
		{ E, 99, 0, 0 },                 /* max_throttle 0: never */
		{ E, 99, 5000, 990 },
		{ E, 1e12, 5000, MG_THROTTLE_MAX }, /* never above 1000 */
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint16_t got = policy_throttle(t[i].level, t[i].out, t[i].max);

		if (got != t[i].want)
			fail_msg("case %zu: throttle %u, want %u", i, got, t[i].want);
	}
}

static void test_release_target(void **state)
{
	static const struct {
		enum mg_level level;
		uint32_t warn;
		uint64_t ws, budget, releasable, want;
	} t[] = {
		{ N, 8000, 900, 1000, 500, 0 },
		{ W, 8000, 850, 1000, 500, 50 },          /* 850 − 800 */
		{ W, 8000, 700, 1000, 500, 0 },           /* pressure-driven WARN */
		{ W, 8000, 800, 1000, 500, 0 },
		{ C, 8000, 950, 1000, 0, 150 },
		{ C, 8000, 950, 1000, 5000, 150 },        /* releasable only at EMERGENCY */
		{ E, 8000, 1100, 1000, 500, 500 },        /* everything releasable */
		{ E, 8000, 1100, 1000, 100, 300 },        /* but not less than WARN's */
		{ E, 8000, 1100, 1000, 0, 300 },
		{ W, 8000, 850, 0, 500, 0 },              /* no budget */
		{ E, 8000, 850, 0, 400, 400 },
		{ C, 8000, 60 * GIB, 64 * GIB, 0, 9448928052 }, /* 60 GiB − ⌊51.2 GiB⌋ */
		{ E, 8000, UINT64_MAX, 1000, UINT64_MAX, UINT64_MAX },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint64_t got = policy_release_target(t[i].level, t[i].warn, t[i].ws,
						     t[i].budget, t[i].releasable);

		if (got != t[i].want)
			fail_msg("case %zu: %" PRIu64 ", want %" PRIu64, i, got, t[i].want);
	}
}

static void test_soft_limit_deadline(void **state)
{
	static const struct {
		enum mg_level level;
		uint32_t warn;
		uint64_t budget, want_soft;
		uint32_t want_deadline;          /* with release_deadline_ms 5000 */
	} t[] = {
		{ N, 8000, 1000, 800, 0 },       /* NORMAL too: the clients' local limit */
		{ W, 8000, 1000, 800, 0 },       /* WARN: no deadline */
		{ C, 8000, 1000, 800, 5000 },
		{ E, 8000, 1000, 800, 5000 },
		{ W, 8000, 0, 0, 0 },            /* no budget: no soft limit */
		{ E, 7000, 64 * GIB, 48103633715, 5000 }, /* ⌊0.7 · 64 GiB⌋ */
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint64_t soft = policy_soft_limit(t[i].level, t[i].warn, t[i].budget);
		uint32_t dl = policy_deadline_ms(t[i].level, 5000);

		if (soft != t[i].want_soft || dl != t[i].want_deadline)
			fail_msg("case %zu: soft %" PRIu64 " deadline %u, "
				 "want %" PRIu64 " %u", i, soft, dl, t[i].want_soft,
				 t[i].want_deadline);
	}
}

static void test_releasable(void **state)
{
	static const struct {
		struct mg_report r;
		uint64_t want;
	} t[] = {
		{ { .heap_idle = 100, .external = 50, .heap_inuse = 1000, .heap_sys = 2000,
		    .heap_released = 900 }, 150 },
		{ { .heap_inuse = 1000 }, 0 },
		{ { .heap_idle = UINT64_MAX, .external = 1 }, UINT64_MAX },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint64_t got = policy_releasable(&t[i].r);

		if (got != t[i].want)
			fail_msg("case %zu: %" PRIu64 ", want %" PRIu64, i, got, t[i].want);
	}
}

/* What a client reports is clamped to what its cgroup holds: a liar's
 * figures cannot outweigh its neighbours'. */
static void test_report_clamp(void **state)
{
	static const struct {
		struct mg_report r;
		uint64_t cap;
		struct mg_report want;
	} t[] = {
		{ { .heap_sys = UINT64_MAX, .heap_inuse = UINT64_MAX, .heap_idle = UINT64_MAX,
		    .heap_released = UINT64_MAX, .external = UINT64_MAX, .admitted = 7 },
		  85 * MIB,
		  { .heap_sys = UINT64_MAX, .heap_inuse = 85 * MIB, .heap_idle = 85 * MIB,
		    .heap_released = UINT64_MAX, .external = 85 * MIB, .admitted = 7 } },
		{ { .heap_inuse = 10, .heap_idle = 20, .external = 30 }, 100,
		  { .heap_inuse = 10, .heap_idle = 20, .external = 30 } },
		{ { .heap_inuse = UINT64_MAX }, 0, { .heap_inuse = UINT64_MAX } },  /* no cap */
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		struct mg_report r = t[i].r;

		policy_report_clamp(&r, t[i].cap);
		assert_true(r.heap_sys == t[i].want.heap_sys);
		assert_true(r.heap_inuse == t[i].want.heap_inuse);
		assert_true(r.heap_idle == t[i].want.heap_idle);
		assert_true(r.heap_released == t[i].want.heap_released);
		assert_true(r.external == t[i].want.external);
		assert_true(r.admitted == t[i].want.admitted);
	}
	/* Sums of reported figures saturate: a counter never goes back. */
	assert_true(add_sat(1, 2) == 3);
	assert_true(add_sat(UINT64_MAX, UINT64_MAX) == UINT64_MAX);
	assert_true(add_sat(add_sat(UINT64_MAX, UINT64_MAX), UINT64_MAX) ==
		    UINT64_MAX);
	assert_true(add_sat(UINT64_MAX - 1, 1) == UINT64_MAX);
}

static void test_split(void **state)
{
	static const struct {
		uint64_t total;
		size_t n;
		uint64_t w[4], want[4];
	} t[] = {
		{ 100, 3, { 1, 1, 1 }, { 34, 33, 33 } },        /* remainder to the first */
		{ 1000, 4, { 300, 100, 0, 600 }, { 300, 100, 0, 600 } },
		{ 10, 3, { 1, 2, 4 }, { 1, 2, 7 } },            /* 1.43 2.86 5.71 */
		{ 100, 3, { 3, 5, 5 }, { 23, 39, 38 } },        /* first of the largest */
		{ 10, 3, { 0, 0, 0 }, { 4, 3, 3 } },            /* nobody: equal split */
		{ 7, 2, { 0, 5 }, { 0, 7 } },                   /* weight 0 gets 0 */
		{ 0, 2, { 5, 5 }, { 0, 0 } },
		{ 12345, 1, { 7 }, { 12345 } },
		{ 12345, 1, { 0 }, { 12345 } },
		{ 9448928052, 2, { GIB, 3 * GIB }, { 2362232013, 7086696039 } },
		{ UINT64_MAX, 2, { 1, UINT64_MAX - 1 }, { 1, UINT64_MAX - 1 } },
		/* weights add past 2^64 */
		{ UINT64_MAX, 2, { UINT64_MAX, UINT64_MAX },
		  { UINT64_C(1) << 63, (UINT64_C(1) << 63) - 1 } },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint64_t got[4], sum = 0;

		memset(got, 0xaa, sizeof(got));
		policy_split(t[i].total, t[i].w, t[i].n, got);
		for (size_t k = 0; k < t[i].n; k++) {
			if (got[k] != t[i].want[k])
				fail_msg("case %zu: share %zu is %" PRIu64 ", want %" PRIu64,
					 i, k, got[k], t[i].want[k]);
			sum += got[k];
		}
		assert_true(sum == t[i].total);
		/* n entries written, not one more */
		if (t[i].n < 4)
			assert_true(got[t[i].n] == UINT64_C(0xaaaaaaaaaaaaaaaa));
	}

	/* n = 0 writes nothing */
	uint64_t none = 42;
	policy_split(100, NULL, 0, &none);
	assert_true(none == 42);
}

static void test_client_directives(void **state)
{
	static const struct {
		const char *name;
		struct mg_directive d;
		size_t n;
		struct mg_report r[3];
		struct mg_directive want[3];
	} t[] = {
		{ "soft limit by heap in use, release by releasable",
		  { .level = W, .gc_percent = 92, .soft_limit = 800, .release = 50 },
		  3,
		  { { .heap_inuse = 300, .heap_idle = 30 },
		    { .heap_inuse = 100, .heap_idle = 10, .external = 10 },
		    { 0 } },
		  { { .level = W, .gc_percent = 92, .soft_limit = 600, .release = 30 },
		    { .level = W, .gc_percent = 92, .soft_limit = 200, .release = 20 },
		    /* no REPORT yet: the smallest limit, never 0 ("none") */
		    { .level = W, .gc_percent = 92, .soft_limit = 1, .release = 0 } } },
		{ "a tiny client next to a big one is limited too",
		  { .level = C, .gc_percent = 75, .soft_limit = 80 * MIB },
		  2,
		  { { .heap_inuse = 10 }, { .heap_inuse = 50 * GIB } },
		  { { .level = C, .gc_percent = 75, .soft_limit = 1 },
		    { .level = C, .gc_percent = 75, .soft_limit = 80 * MIB } } },
		{ "a liar's 2^64 - 1 in use, clamped by the caller to 85 MiB",
		  { .level = W, .gc_percent = 92, .soft_limit = 80 * MIB },
		  2,
		  { { .heap_inuse = 85 * MIB }, { .heap_inuse = 17 * MIB } },
		  { { .level = W, .gc_percent = 92, .soft_limit = 69905067 },
		    { .level = W, .gc_percent = 92, .soft_limit = 13981013 } } },
		{ "a liar's 2^64 - 1 unclamped still leaves the honest one a limit",
		  { .level = W, .gc_percent = 92, .soft_limit = 80 * MIB },
		  2,
		  { { .heap_inuse = UINT64_MAX }, { .heap_inuse = 17 * MIB } },
		  { { .level = W, .gc_percent = 92, .soft_limit = 80 * MIB },
		    { .level = W, .gc_percent = 92, .soft_limit = 1 } } },
		{ "deadline only with a share; level, gc, throttle copied",
		  { .level = C, .gc_percent = 75, .throttle = 250, .soft_limit = 800,
		    .release = 100, .deadline_ms = 5000 },
		  2,
		  { { .heap_inuse = 100, .heap_idle = 0 },
		    { .heap_inuse = 300, .external = 40 } },
		  { { .level = C, .gc_percent = 75, .throttle = 250, .soft_limit = 200 },
		    { .level = C, .gc_percent = 75, .throttle = 250, .soft_limit = 600,
		      .release = 100, .deadline_ms = 5000 } } },
		{ "no reports yet: equal split",
		  { .level = E, .gc_percent = 25, .throttle = 500, .soft_limit = 800,
		    .release = 100, .deadline_ms = 5000 },
		  3,
		  { { 0 }, { 0 }, { 0 } },
		  { { .level = E, .gc_percent = 25, .throttle = 500, .soft_limit = 268,
		      .release = 34, .deadline_ms = 5000 },
		    { .level = E, .gc_percent = 25, .throttle = 500, .soft_limit = 266,
		      .release = 33, .deadline_ms = 5000 },
		    { .level = E, .gc_percent = 25, .throttle = 500, .soft_limit = 266,
		      .release = 33, .deadline_ms = 5000 } } },
		{ "NORMAL: nothing to split",
		  { .level = N },
		  2,
		  { { .heap_inuse = 100, .heap_idle = 10 }, { .heap_inuse = 5 } },
		  { { .level = N }, { .level = N } } },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		struct mg_directive got[3];

		memset(got, 0xaa, sizeof(got));
		assert_int_equal(policy_client_directives(&t[i].d, t[i].r, t[i].n, got), 0);
		for (size_t k = 0; k < t[i].n; k++) {
			const struct mg_directive *g = &got[k], *w = &t[i].want[k];

			if (g->level != w->level || g->gc_percent != w->gc_percent ||
			    g->throttle != w->throttle || g->soft_limit != w->soft_limit ||
			    g->release != w->release || g->deadline_ms != w->deadline_ms)
				fail_msg("%s: client %zu: {%u %u %u %" PRIu64 " %" PRIu64
					 " %u}, want {%u %u %u %" PRIu64 " %" PRIu64 " %u}",
					 t[i].name, k, g->level, g->gc_percent, g->throttle,
					 g->soft_limit, g->release, g->deadline_ms, w->level,
					 w->gc_percent, w->throttle, w->soft_limit, w->release,
					 w->deadline_ms);
		}
	}

	assert_int_equal(policy_client_directives(&t[0].d, NULL, 0, NULL), 0);
}

static void test_squeeze_need(void **state)
{
	static const struct {
		uint64_t mem_total;
		uint32_t some, threshold;
		uint64_t want;
	} t[] = {
		{ 64 * GIB, 1999, 2000, 0 },
		{ 64 * GIB, 2000, 2000, 687194767 },  /* ⌊1 % of 64 GiB⌋ */
		{ 64 * GIB, 9000, 2000, 687194767 },
		{ 64 * GIB, 9000, 0, 0 },             /* threshold 0: off */
	};
	struct policy_params p = params_default();

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint64_t got = policy_squeeze_need(&p, t[i].mem_total, t[i].some,
						   t[i].threshold);

		if (got != t[i].want)
			fail_msg("case %zu: %" PRIu64 ", want %" PRIu64, i, got, t[i].want);
	}
}

/* Order: #1 (prio −5, gives 100), #3 (prio −5, gives 50), #2, #0. */
#define FOUR_SERVICES                                                  \
	{ { .priority = 10, .guarantee = 100, .working_set = 500, .budget = 1000 }, \
	  { .priority = -5, .guarantee = 200, .working_set = 300, .budget = 1000 }, \
	  { .priority = 0, .guarantee = 0, .working_set = 250, .budget = 0 },       \
	  { .priority = -5, .guarantee = 0, .working_set = 50, .budget = 1000 } }

static void test_squeeze(void **state)
{
	static const struct {
		const char *name;
		uint32_t some, threshold;
		uint64_t need;
		size_t n;
		struct policy_squeeze_service s[4];
		uint64_t want[4];
		enum mg_level floor[4];
		uint64_t want_total;
	} t[] = {
		{ "host pressure below threshold", 1999, 2000, 1000, 4, FOUR_SERVICES,
		  { 0, 0, 0, 0 }, { N, N, N, N }, 0 },
		{ "threshold 0 is off", 9000, 0, 1000, 4, FOUR_SERVICES,
		  { 0, 0, 0, 0 }, { N, N, N, N }, 0 },
		{ "nothing needed", 2000, 2000, 0, 4, FOUR_SERVICES,
		  { 0, 0, 0, 0 }, { N, N, N, N }, 0 },
		{ "lowest priority first", 2000, 2000, 100, 4, FOUR_SERVICES,
		  { 0, 100, 0, 0 }, { N, W, N, N }, 100 },
		{ "equal priority: more to give first", 2000, 2000, 120, 4, FOUR_SERVICES,
		  { 0, 100, 0, 20 }, { N, W, N, W }, 120 },
		{ "into the next priority", 2000, 2000, 200, 4, FOUR_SERVICES,
		  { 0, 100, 50, 50 }, { N, W, W, W }, 200 },
		{ "everyone down to the guarantee, short", 2500, 2000, 2000, 4, FOUR_SERVICES,
		  { 400, 100, 250, 50 }, { W, W, W, W }, 800 },
		{ "guarantee above working set", 2000, 2000, 100, 2,
		  { { .priority = -10, .guarantee = 1000, .working_set = 500 },
		    { .priority = 0, .working_set = 300 } },
		  { 0, 100 }, { N, W }, 100 },
		{ "guarantee does not shelter usage above budget", 2000, 2000, 1000, 1,
		  { { .guarantee = 900, .working_set = 700, .budget = 600 } },
		  { 100 }, { W }, 100 },
		{ "equal priority and give: lower index first", 2000, 2000, 350, 3,
		  { { .working_set = 100 }, { .working_set = 300 }, { .working_set = 300 } },
		  { 0, 300, 50 }, { N, W, W }, 350 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		struct policy_squeeze_result got[4];
		uint64_t total;

		memset(got, 0xaa, sizeof(got));
		total = policy_squeeze(t[i].some, t[i].threshold, t[i].need, t[i].s, t[i].n,
				       got);
		if (total != t[i].want_total)
			fail_msg("%s: total %" PRIu64 ", want %" PRIu64, t[i].name, total,
				 t[i].want_total);
		for (size_t k = 0; k < t[i].n; k++)
			if (got[k].release != t[i].want[k] || got[k].floor != t[i].floor[k])
				fail_msg("%s: service %zu: %" PRIu64 " bytes floor %d, "
					 "want %" PRIu64 " floor %d", t[i].name, k,
					 got[k].release, got[k].floor, t[i].want[k],
					 t[i].floor[k]);
	}
}

#define NOTIFY MG_ENFORCE_NOTIFY
#define HIGH MG_ENFORCE_HIGH
#define KILL MG_ENFORCE_KILL
#define X_NONE MG_ESCALATION_NONE
#define X_HIGH MG_ESCALATION_HIGH
#define X_KILLED MG_ESCALATION_KILLED
#define A_NONE POLICY_ACTION_NONE
#define A_HIGH POLICY_ACTION_HIGH
#define A_RESTORE POLICY_ACTION_RESTORE
#define A_KILL POLICY_ACTION_KILL

static void test_escalate(void **state)
{
	/* ws, budget; clock running?, now, deadline; memory.events grew */
	static const struct {
		const char *name;
		struct policy_escalation_input in;
		enum policy_action want;
	} t[] = {
		{ "notify never touches the kernel",
		  { NOTIFY, E, X_NONE, 1100, 1000, true, 9000, 5000, true }, A_NONE },
		{ "high: not before the deadline",
		  { HIGH, E, X_NONE, 1100, 1000, true, 4999, 5000, true }, A_NONE },
		{ "high: at the deadline",
		  { HIGH, E, X_NONE, 1100, 1000, true, 5000, 5000, false }, A_HIGH },
		{ "high: still CRITICAL at the deadline",
		  { HIGH, C, X_NONE, 950, 1000, true, 6000, 5000, false }, A_HIGH },
		{ "high: came down to WARN",
		  { HIGH, W, X_NONE, 850, 1000, true, 6000, 5000, false }, A_NONE },
		{ "high: no clock",
		  { HIGH, E, X_NONE, 1100, 1000, false, 6000, 5000, false }, A_NONE },
		{ "high: never memory.high = 0",
		  { HIGH, E, X_NONE, 1100, 0, true, 6000, 5000, true }, A_NONE },
		{ "high never kills",
		  { HIGH, E, X_HIGH, 1100, 1000, true, 9000, 5000, true }, A_NONE },
		{ "kill: memory.high first",
		  { KILL, E, X_NONE, 1100, 1000, true, 6000, 5000, true }, A_HIGH },
		{ "kill: above budget past the deadline, memory.events grew",
		  { KILL, E, X_HIGH, 1100, 1000, true, 5000, 5000, true }, A_KILL },
		{ "kill: not without memory.events growth",
		  { KILL, E, X_HIGH, 1100, 1000, true, 9000, 5000, false }, A_NONE },
		{ "kill: not at the budget",
		  { KILL, E, X_HIGH, 1000, 1000, true, 9000, 5000, true }, A_NONE },
		{ "kill: not under the budget",
		  { KILL, C, X_HIGH, 950, 1000, true, 9000, 5000, true }, A_NONE },
		{ "kill: not before the deadline",
		  { KILL, E, X_HIGH, 1100, 1000, true, 4999, 5000, true }, A_NONE },
		{ "kill: no clock",
		  { KILL, E, X_HIGH, 1100, 1000, false, 9000, 5000, true }, A_NONE },
		{ "kill: not without a budget",
		  { KILL, E, X_HIGH, 1100, 0, true, 9000, 5000, true }, A_NONE },
		{ "killed: nothing more",
		  { KILL, E, X_KILLED, 1100, 1000, true, 9000, 5000, true }, A_NONE },
		{ "undo high at NORMAL",
		  { HIGH, N, X_HIGH, 100, 1000, false, 9000, 5000, false }, A_RESTORE },
		{ "undo after a kill at NORMAL",
		  { KILL, N, X_KILLED, 0, 1000, false, 9000, 5000, false }, A_RESTORE },
		{ "no undo above NORMAL",
		  { KILL, W, X_HIGH, 850, 1000, false, 9000, 5000, false }, A_NONE },
		{ "undo when enforce became notify",
		  { NOTIFY, C, X_HIGH, 950, 1000, true, 9000, 5000, false }, A_RESTORE },
		{ "nothing in force at NORMAL",
		  { KILL, N, X_NONE, 100, 1000, false, 9000, 5000, false }, A_NONE },
		/* Found on pure v2 (tests/vm): the budget raised to 1G over a
		 * 120M working set, but memory.high = the old 64M kept the
		 * cgroup throttled, and its PSI and high events held the level
		 * at CRITICAL/EMERGENCY, so memory.high stayed for good. */
		{ "undo high when the working set alone is NORMAL",
		  { HIGH, E, X_HIGH, 120, 1000, true, 9000, 5000, false, true }, A_RESTORE },
		{ "undo high under kill when the working set alone is NORMAL",
		  { KILL, C, X_HIGH, 120, 1000, true, 9000, 5000, true, true }, A_RESTORE },
		{ "no memory.high when the working set alone is NORMAL",
		  { HIGH, E, X_NONE, 120, 1000, true, 9000, 5000, true, true }, A_NONE },
		{ "killed: the working set alone does not undo",
		  { KILL, E, X_KILLED, 0, 1000, false, 9000, 5000, true, true }, A_NONE },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		enum policy_action got = policy_escalate(&t[i].in);

		if (got != t[i].want)
			fail_msg("%s: action %d, want %d", t[i].name, got, t[i].want);
	}
}

static void test_escalated(void **state)
{
	struct policy_state s;

	policy_state_init(&s);
	s.events = (struct policy_events){ .high = 1, .max = 2, .oom = 3 };

	policy_escalated(&s, &svc_default, POLICY_ACTION_NONE, 100);
	assert_int_equal(s.escalation, MG_ESCALATION_NONE);
	assert_false(s.clock_running);

	policy_escalated(&s, &svc_default, POLICY_ACTION_HIGH, 100);
	assert_int_equal(s.escalation, MG_ESCALATION_HIGH);
	assert_true(s.clock_running);
	assert_true(s.clock_deadline_ms == 5100);
	assert_true(s.clock_events.max == 2 && s.clock_events.oom == 3);

	policy_escalated(&s, &svc_default, POLICY_ACTION_KILL, 200);
	assert_int_equal(s.escalation, MG_ESCALATION_KILLED);
	assert_false(s.clock_running);

	policy_escalated(&s, &svc_default, POLICY_ACTION_RESTORE, 300);
	assert_int_equal(s.escalation, MG_ESCALATION_NONE);

	/* Put back from memory.high: the clock that led to it stops. */
	policy_escalated(&s, &svc_default, POLICY_ACTION_HIGH, 400);
	assert_true(s.clock_running);
	policy_escalated(&s, &svc_default, POLICY_ACTION_RESTORE, 500);
	assert_false(s.clock_running);
}

/* --- whole ticks ------------------------------------------------------- */

struct tick_want {
	enum mg_level level;
	bool rose, cleared;
	uint16_t gc, throttle;
	uint64_t soft, target, release;
	uint32_t deadline;
	enum policy_action action;
};

struct tick_step {
	uint64_t now;
	struct policy_input in;
	struct tick_want want;
	bool apply;                      /* report want.action as carried out */
};

struct tick_case {
	const char *name;
	const struct conf_service *svc;  /* NULL: svc_default */
	const struct policy_params *params;
	const struct tick_step *steps;
	size_t n;
};

#define IN(...) { .budget = 1000, __VA_ARGS__ }
#define EV(h, m, o) .events = { .high = (h), .max = (m), .oom = (o) }

/*
 * Up through every level to a kill and back: 1000-byte budget, 300 bytes
 * releasable.  Columns: level rose cleared gc throttle soft target release
 * deadline action.
 */
static const struct tick_step ticks_ladder[] = {
	{ 0, IN(.working_set = 500, .releasable = 300),
	  { N, 0, 0, 0, 0, 800, 0, 0, 0, A_NONE } },
	/* u = .85: out 8.33; asks for 850 − 800, no deadline at WARN */
	{ 1000, IN(.working_set = 850, .releasable = 300),
	  { W, 1, 0, 92, 0, 800, 50, 50, 0, A_NONE } },
	/* within the demand window: no bytes */
	{ 1100, IN(.working_set = 850, .releasable = 300),
	  { W, 0, 0, 92, 0, 800, 50, 0, 0, A_NONE } },
	/* window over: ask again */
	{ 6000, IN(.working_set = 850, .releasable = 300),
	  { W, 0, 0, 92, 0, 800, 50, 50, 0, A_NONE } },
	/* u = .9: out 25; rising asks at once, with a deadline */
	{ 6100, IN(.working_set = 900, .releasable = 300),
	  { C, 1, 0, 75, 250, 800, 100, 100, 5000, A_NONE } },
	/* u = 1: out 99; everything releasable; clock to 11200 */
	{ 6200, IN(.working_set = 1000, .releasable = 300),
	  { E, 1, 0, 25, 500, 800, 300, 300, 5000, A_NONE } },
	{ 11199, IN(.working_set = 1000, .releasable = 300),
	  { E, 0, 0, 25, 500, 800, 300, 0, 0, A_NONE } },
	/* deadline: memory.high; clock restarts to 16200 */
	{ 11200, IN(.working_set = 1000, .releasable = 300),
	  { E, 0, 0, 25, 500, 800, 300, 300, 5000, A_HIGH }, .apply = true },
	{ 16199, IN(.working_set = 1100, .releasable = 300, EV(0, 1, 0)),
	  { E, 0, 0, 25, 500, 800, 300, 0, 0, A_NONE } },
	/* past the deadline, above budget, memory.events max grew */
	{ 16200, IN(.working_set = 1100, .releasable = 300, EV(0, 1, 0)),
	  { E, 0, 0, 25, 500, 800, 300, 300, 5000, A_KILL }, .apply = true },
	/* killed: empty, but oom grew this tick: EMERGENCY holds */
	{ 16300, IN(.working_set = 0, EV(0, 1, 1)),
	  { E, 0, 0, 25, 500, 800, 0, 0, 0, A_NONE } },
	/* one calm tick: the level and its GC wait, the throttle follows
	 * the working set */
	{ 16400, IN(.working_set = 0, EV(0, 1, 1)),
	  { E, 0, 0, 25, 0, 800, 0, 0, 0, A_NONE } },
	/* second calm tick: NORMAL, cleared, undo memory.high */
	{ 16500, IN(.working_set = 0, EV(0, 1, 1)),
	  { N, 0, 1, 0, 0, 800, 0, 0, 0, A_RESTORE }, .apply = true },
	{ 16600, IN(.working_set = 0, EV(0, 1, 1)),
	  { N, 0, 0, 0, 0, 800, 0, 0, 0, A_NONE } },
};

/* Held above the budget by memory.high's throttling, never at memory.max
 * (tests/vm: 80M held under a 64M memory.high): the high events are the
 * kernel's evidence, and the service is killed. */
static const struct tick_step ticks_throttled_kill[] = {
	{ 0, IN(.working_set = 1100, .releasable = 300),
	  { E, 1, 0, 25, 500, 800, 300, 300, 5000, A_NONE } },
	{ 5000, IN(.working_set = 1100, .releasable = 300),
	  { E, 0, 0, 25, 500, 800, 300, 300, 5000, A_HIGH }, .apply = true },
	{ 9999, IN(.working_set = 1100, .releasable = 300, EV(40, 0, 0)),
	  { E, 0, 0, 25, 500, 800, 300, 0, 0, A_NONE } },
	{ 10000, IN(.working_set = 1100, .releasable = 300, EV(41, 0, 0)),
	  { E, 0, 0, 25, 500, 800, 300, 300, 5000, A_KILL } },
};

/* The same climb without memory.events growth: memory.high, but no kill. */
static const struct tick_step ticks_no_kill[] = {
	{ 0, IN(.working_set = 1100, .releasable = 300),
	  { E, 1, 0, 25, 500, 800, 300, 300, 5000, A_NONE } },
	{ 5000, IN(.working_set = 1100, .releasable = 300),
	  { E, 0, 0, 25, 500, 800, 300, 300, 5000, A_HIGH }, .apply = true },
	{ 10000, IN(.working_set = 1100, .releasable = 300),
	  { E, 0, 0, 25, 500, 800, 300, 300, 5000, A_NONE } },
	/* usage falls to 94 %: one calm tick, then CRITICAL; high stays */
	{ 10100, IN(.working_set = 940, .releasable = 300),
	  { E, 0, 0, 25, 500, 800, 300, 0, 0, A_NONE } },
	{ 10200, IN(.working_set = 940, .releasable = 300),
	  { C, 0, 0, 42, 500, 800, 140, 0, 0, A_NONE } },
	/* under the WARN band: after two ticks NORMAL, undo memory.high;
	 * no throttle while CRITICAL waits out its calm */
	{ 10300, IN(.working_set = 700, .releasable = 300),
	  { C, 0, 0, 75, 0, 800, 0, 0, 0, A_NONE } },
	{ 10400, IN(.working_set = 700, .releasable = 300),
	  { N, 0, 1, 0, 0, 800, 0, 0, 0, A_RESTORE } },
};

/* No budget: pressure and memory.events alone; never memory.high. */
static const struct tick_step ticks_no_budget[] = {
	{ 0, { .some_avg10 = 1500 }, { W, 1, 0, 100, 0, 0, 0, 0, 0, A_NONE } },
	{ 100, { .some_avg10 = 1500, .full_avg10 = 600 },
	  { C, 1, 0, 75, 250, 0, 0, 0, 0, A_NONE } },
	/* memory.events high grew: EMERGENCY, everything releasable */
	{ 200, { .full_avg10 = 600, .releasable = 400, EV(1, 0, 0) },
	  { E, 1, 0, 25, 500, 0, 400, 400, 5000, A_NONE } },
	/* no more growth: EMERGENCY waits out its calm, and PSI full holds
	 * CRITICAL's throttle */
	{ 5200, { .full_avg10 = 600, .releasable = 400, EV(1, 0, 0) },
	  { E, 0, 0, 25, 250, 0, 400, 400, 5000, A_NONE } },
	{ 5300, { .full_avg10 = 600, .releasable = 400, EV(1, 0, 0) },
	  { C, 0, 0, 75, 250, 0, 0, 0, 0, A_NONE } },
	{ 5400, { EV(1, 0, 0) }, { C, 0, 0, 75, 0, 0, 0, 0, 0, A_NONE } },
	{ 5500, { EV(1, 0, 0) }, { N, 0, 1, 0, 0, 0, 0, 0, 0, A_NONE } },
};

/* memory.events: no growth on the first tick or when counters reset. */
static const struct tick_step ticks_events[] = {
	{ 0, IN(EV(5, 5, 5)), { N, 0, 0, 0, 0, 800, 0, 0, 0, A_NONE } },
	{ 100, IN(EV(5, 5, 5)), { N, 0, 0, 0, 0, 800, 0, 0, 0, A_NONE } },
	{ 200, IN(EV(0, 0, 0)), { N, 0, 0, 0, 0, 800, 0, 0, 0, A_NONE } },
	{ 300, IN(EV(0, 1, 0)), { E, 1, 0, 25, 500, 800, 0, 0, 0, A_NONE } },
	{ 400, IN(EV(1, 1, 0)), { E, 0, 0, 25, 500, 800, 0, 0, 0, A_NONE } },
	{ 500, IN(EV(1, 1, 0)), { E, 0, 0, 25, 0, 800, 0, 0, 0, A_NONE } },
	{ 600, IN(EV(1, 1, 0)), { N, 0, 1, 0, 0, 800, 0, 0, 0, A_NONE } },
	/* an OOM kill alone (v1 with a memsw limit: failcnt stays 0) */
	{ 700, IN(EV(1, 1, 1)), { E, 1, 0, 25, 500, 800, 0, 0, 0, A_NONE } },
};

/* A host squeeze: floor WARN and extra bytes, then released. */
static const struct tick_step ticks_squeeze[] = {
	{ 0, IN(.working_set = 500, .floor = W, .extra_release = 1000),
	  { W, 1, 0, 100, 0, 800, 1000, 1000, 0, A_NONE } },
	{ 100, IN(.working_set = 500, .floor = W, .extra_release = 400),
	  { W, 0, 0, 100, 0, 800, 400, 0, 0, A_NONE } },
	{ 5000, IN(.working_set = 850, .floor = W, .extra_release = 400),
	  { W, 0, 0, 92, 0, 800, 450, 450, 0, A_NONE } },
	{ 5100, IN(.working_set = 500), { W, 0, 0, 100, 0, 800, 0, 0, 0, A_NONE } },
	{ 5200, IN(.working_set = 500, .extra_release = 400),
	  { N, 0, 1, 0, 0, 800, 0, 0, 0, A_NONE } },
};

/* EMA with alpha 0.2 at u = .9 (raw 25), then u = .5 (raw 0): the smoothed
 * output stays under CRITICAL's own 25, so gc is that floor, and so is the
 * throttle while u = .9 holds the level; at .5 the throttle is the
 * smoothed output's. */
static const struct policy_params params_ema = { .cp = 0.05, .ema_alpha = 0.2,
	.hysteresis = 500, .drop_ticks = 2 };
static const struct tick_step ticks_ema[] = {
	/* out 5 */
	{ 0, IN(.working_set = 900), { C, 1, 0, 75, 250, 800, 100, 100, 5000, A_NONE } },
	/* out 9 */
	{ 100, IN(.working_set = 900), { C, 0, 0, 75, 250, 800, 100, 0, 0, A_NONE } },
	/* out 7.2 */
	{ 200, IN(.working_set = 500), { C, 0, 0, 75, 72, 800, 0, 0, 0, A_NONE } },
};

/* enforce = notify: the ladder never leaves the daemon. */
static const struct conf_service svc_notify = {
	.warn = 8000, .critical = 9000, .pressure_some = 1000, .pressure_full = 500,
	.min_gc_percent = 25, .max_throttle = 500, .release_deadline_ms = 5000,
	.enforce = MG_ENFORCE_NOTIFY,
};
static const struct tick_step ticks_notify[] = {
	{ 0, IN(.working_set = 1100, EV(0, 1, 1)),
	  { E, 1, 0, 25, 500, 800, 300, 300, 5000, A_NONE } },
	{ 5000, IN(.working_set = 1100, EV(0, 9, 9)),
	  { E, 0, 0, 25, 500, 800, 300, 300, 5000, A_NONE } },
	{ 99000, IN(.working_set = 1100, EV(0, 99, 99)),
	  { E, 0, 0, 25, 500, 800, 300, 300, 5000, A_NONE } },
};

/* The clock stops below CRITICAL and starts again only at EMERGENCY. */
static const struct tick_step ticks_clock_stops[] = {
	{ 0, IN(.working_set = 1000),
	  { E, 1, 0, 25, 500, 800, 200, 200, 5000, A_NONE } },
	{ 100, IN(.working_set = 780), { E, 0, 0, 25, 0, 800, 0, 0, 0, A_NONE } },
	/* 78 %: WARN holds; the clock stops */
	{ 200, IN(.working_set = 780), { W, 0, 0, 100, 0, 800, 0, 0, 0, A_NONE } },
	/* past the old deadline, CRITICAL again: no clock, no memory.high */
	{ 6000, IN(.working_set = 900),
	  { C, 1, 0, 75, 250, 800, 100, 100, 5000, A_NONE } },
	/* EMERGENCY: a new clock, to 11100 */
	{ 6100, IN(.working_set = 1000),
	  { E, 1, 0, 25, 500, 800, 200, 200, 5000, A_NONE } },
	{ 11099, IN(.working_set = 1000),
	  { E, 0, 0, 25, 500, 800, 200, 0, 0, A_NONE } },
	{ 11100, IN(.working_set = 1000),
	  { E, 0, 0, 25, 500, 800, 200, 200, 5000, A_HIGH } },
};

/* memory.events counters reset (cgroup recreated) while the clock runs. */
static const struct tick_step ticks_events_reset[] = {
	{ 0, IN(.working_set = 1100, EV(0, 5, 5)),
	  { E, 1, 0, 25, 500, 800, 300, 300, 5000, A_NONE } },
	{ 5000, IN(.working_set = 1100, EV(0, 5, 5)),
	  { E, 0, 0, 25, 500, 800, 300, 300, 5000, A_HIGH }, .apply = true },
	{ 5100, IN(.working_set = 1100, EV(0, 0, 0)),
	  { E, 0, 0, 25, 500, 800, 300, 0, 0, A_NONE } },
	/* max grew from the new baseline */
	{ 10000, IN(.working_set = 1100, EV(0, 1, 0)),
	  { E, 0, 0, 25, 500, 800, 300, 300, 5000, A_KILL } },
};

/* A budget raised under EMERGENCY (SET_BUDGET): the next tick's level is
 * the new budget's at once, not EMERGENCY held with gc 100 % and no
 * throttle, which disagree with it; lowered again, it rises at once. */
static const struct tick_step ticks_budget_changed[] = {
	{ 0, IN(.working_set = 1100), { E, 1, 0, 25, 500, 800, 300, 300, 5000, A_NONE } },
	{ 100, { .budget = 2000, .working_set = 1100 },
	  { N, 0, 1, 0, 0, 1600, 0, 0, 0, A_NONE } },
	{ 200, { .budget = 2000, .working_set = 1100 },
	  { N, 0, 0, 0, 0, 1600, 0, 0, 0, A_NONE } },
	/* u = .9 of 1222: CRITICAL */
	{ 300, { .budget = 1222, .working_set = 1100 },
	  { C, 1, 0, 75, 251, 977, 123, 123, 5000, A_NONE } },
};

static const struct tick_case tick_cases[] = {
	{ "budget changed", NULL, NULL, ticks_budget_changed, ARRAY_SIZE(ticks_budget_changed) },
	{ "ladder to kill and back", NULL, NULL, ticks_ladder, ARRAY_SIZE(ticks_ladder) },
	{ "high without memory.events growth", NULL, NULL, ticks_no_kill, ARRAY_SIZE(ticks_no_kill) },
	{ "throttled at memory.high: kill", NULL, NULL, ticks_throttled_kill,
	  ARRAY_SIZE(ticks_throttled_kill) },
	{ "no budget", NULL, NULL, ticks_no_budget, ARRAY_SIZE(ticks_no_budget) },
	{ "events baseline", NULL, NULL, ticks_events, ARRAY_SIZE(ticks_events) },
	{ "host squeeze", NULL, NULL, ticks_squeeze, ARRAY_SIZE(ticks_squeeze) },
	{ "EMA", NULL, &params_ema, ticks_ema, ARRAY_SIZE(ticks_ema) },
	{ "enforce notify", &svc_notify, NULL, ticks_notify, ARRAY_SIZE(ticks_notify) },
	{ "clock stops below CRITICAL", NULL, NULL, ticks_clock_stops,
	  ARRAY_SIZE(ticks_clock_stops) },
	{ "events reset under the clock", NULL, NULL, ticks_events_reset,
	  ARRAY_SIZE(ticks_events_reset) },
};

static struct tick_want tick_got(const struct policy_decision *d)
{
	return (struct tick_want){
		.level = d->level, .rose = d->rose, .cleared = d->cleared,
		.gc = d->directive.gc_percent, .throttle = d->directive.throttle,
		.soft = d->directive.soft_limit, .target = d->target,
		.release = d->directive.release, .deadline = d->directive.deadline_ms,
		.action = d->action,
	};
}

static bool tick_equal(const struct tick_want *a, const struct tick_want *b)
{
	return a->level == b->level && a->rose == b->rose && a->cleared == b->cleared &&
	       a->gc == b->gc && a->throttle == b->throttle && a->soft == b->soft &&
	       a->target == b->target && a->release == b->release &&
	       a->deadline == b->deadline && a->action == b->action;
}

static const char *tick_format(const struct tick_want *w, char *buf, size_t size)
{
	snprintf(buf, size, "{%d %d %d %u %u %" PRIu64 " %" PRIu64 " %" PRIu64 " %u %d}",
		 w->level, w->rose, w->cleared, w->gc, w->throttle, w->soft, w->target,
		 w->release, w->deadline, w->action);
	return buf;
}

static void test_ticks(void **state)
{
	struct policy_params def = params_default();
	unsigned failed = 0;

	for (size_t i = 0; i < ARRAY_SIZE(tick_cases); i++) {
		const struct tick_case *c = &tick_cases[i];
		const struct conf_service *svc = c->svc ? c->svc : &svc_default;
		struct policy_state s;

		policy_state_init(&s);
		for (size_t k = 0; k < c->n; k++) {
			const struct tick_step *step = &c->steps[k];
			struct policy_decision d;
			struct tick_want got;
			char a[160], b[160];

			memset(&d, 0xaa, sizeof(d));
			policy_tick(&s, c->params ? c->params : &def, svc, &step->in, step->now,
				    &d);
			got = tick_got(&d);
			if (!tick_equal(&got, &step->want) || d.directive.level != d.level) {
				print_error("%s: step %zu (t=%" PRIu64 "): %s, want %s\n",
					    c->name, k, step->now, tick_format(&got, a, sizeof(a)),
					    tick_format(&step->want, b, sizeof(b)));
				failed++;
			}
			if (d.utilization !=
			    policy_utilization_bp(step->in.working_set, step->in.budget))
				fail_msg("%s: step %zu: utilization %u", c->name, k,
					 d.utilization);
			if (step->apply)
				policy_escalated(&s, svc, d.action, step->now);
		}
	}
	if (failed)
		fail_msg("%u steps differ", failed);
}

static void test_tick_out(void **state)
{
	/* The decision carries the smoothed output. */
	struct policy_state s;
	struct policy_decision d;
	struct policy_input in = { .working_set = 900, .budget = 1000 };
	static const double want[] = { 5, 9, 12.2 };

	policy_state_init(&s);
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		policy_tick(&s, &params_ema, &svc_default, &in, i * 100, &d);
		if (!near(d.out, want[i]) || !near(s.out, want[i]))
			fail_msg("tick %zu: out %f, want %f", i, d.out, want[i]);
	}
}

static void test_directive_changed(void **state)
{
	static const struct mg_directive base = {
		.level = W, .gc_percent = 92, .throttle = 0, .soft_limit = 800,
	};
	static const struct {
		const char *name;
		struct mg_directive new;
		bool want;
	} t[] = {
		{ "same", { .level = W, .gc_percent = 92, .soft_limit = 800 }, false },
		{ "level", { .level = C, .gc_percent = 92, .soft_limit = 800 }, true },
		{ "cleared", { .level = N }, true },
		{ "gc", { .level = W, .gc_percent = 91, .soft_limit = 800 }, true },
		{ "throttle",
		  { .level = W, .gc_percent = 92, .throttle = 1, .soft_limit = 800 }, true },
		{ "soft limit", { .level = W, .gc_percent = 92, .soft_limit = 801 }, true },
		{ "bytes demanded",
		  { .level = W, .gc_percent = 92, .soft_limit = 800, .release = 1 }, true },
		{ "deadline without bytes",
		  { .level = W, .gc_percent = 92, .soft_limit = 800, .deadline_ms = 5000 },
		  false },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++)
		if (policy_directive_changed(&base, &t[i].new) != t[i].want)
			fail_msg("%s: want %d", t[i].name, t[i].want);

	/* the same demand again is still sent */
	struct mg_directive demand = base;
	demand.release = 50;
	assert_true(policy_directive_changed(&demand, &demand));
	/* a demand ending alone is not */
	assert_false(policy_directive_changed(&demand, &base));
	/* nothing sent yet */
	assert_true(policy_directive_changed(NULL, &base));

	/* at NORMAL a share that moves by less than 1/16 is no news */
	struct mg_directive n0 = { .level = N, .soft_limit = 1600 }, n1 = n0;
	n1.soft_limit = 1699;
	assert_false(policy_directive_changed(&n0, &n1));
	n1.soft_limit = 1501;
	assert_false(policy_directive_changed(&n0, &n1));
	n1.soft_limit = 1700;
	assert_true(policy_directive_changed(&n0, &n1));
	n1.soft_limit = 1500;
	assert_true(policy_directive_changed(&n0, &n1));
	n1.soft_limit = 0;                       /* the budget became unknown */
	assert_true(policy_directive_changed(&n0, &n1));
	/* at WARN every byte counts, as before */
	n0.level = n1.level = W;
	n1.soft_limit = 1601;
	assert_true(policy_directive_changed(&n0, &n1));
}

/* --- growth, sampling and look-ahead ----------------------------------- */

#define MIB (UINT64_C(1) << 20)

static void test_projected(void **state)
{
	static const struct {
		uint64_t ws;
		double growth;
		uint32_t reaction_ms;
		uint64_t want;
	} t[] = {
		{ 500, 0, 1000, 500 },                   /* flat */
		{ 500, -1e9, 1000, 500 },                /* shrinking: never lower */
		{ 500, 1000, 0, 500 },                   /* no reaction time */
		{ 500 * MIB, 360.0 * MIB, 100, 536 * MIB }, /* 36 MiB in 100 ms */
		{ 500, 1000, 250, 750 },
		{ UINT64_MAX - 10, 1e9, 1000, UINT64_MAX }, /* saturates */
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint64_t got = policy_projected(t[i].ws, t[i].growth, t[i].reaction_ms);

		if (got != t[i].want)
			fail_msg("case %zu: %" PRIu64 ", want %" PRIu64, i, got, t[i].want);
	}
}

/* Thresholds are armed from half of warn (default warn 80 %: 40 %). */
static void test_thresholds_due(void **state)
{
	static const struct {
		uint64_t ws, budget;
		bool want;
	} t[] = {
		{ 0, 1000, false },              /* empty */
		{ 399, 1000, false },            /* just under 40 % */
		{ 400, 1000, true },             /* half of warn */
		{ 900, 1000, true },             /* above warn: still armed */
		{ 2000, 1000, true },            /* over the budget */
		{ 500, 0, false },               /* no budget: nothing to arm at */
		{ UINT64_MAX, UINT64_MAX, true }, /* no overflow */
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++)
		if (policy_thresholds_due(&svc_default, t[i].ws, t[i].budget) != t[i].want)
			fail_msg("case %zu: want %d", i, t[i].want);
}

static void test_sample_interval(void **state)
{
	static const struct {
		uint64_t ws, budget;
		double growth;                   /* bytes/s */
		uint32_t tick, want;
	} t[] = {
		{ 500, 1000, 0, 1000, 1000 },            /* flat: the tick */
		{ 500, 1000, -50, 1000, 1000 },          /* shrinking: the tick */
		{ 500, 0, 1e6, 1000, 1000 },             /* no budget */
		{ 500, 1000, 100, 1000, 1000 },          /* warn in 3 s: the tick */
		{ 500, 1000, 400, 1000, 375 },           /* warn in 750 ms */
		{ 850, 1000, 100, 1000, 250 },           /* critical in 500 ms */
		{ 950, 1000, 100, 1000, 250 },           /* the budget in 500 ms */
		{ 1000, 1000, 1e9, 1000, 1000 },         /* over it: nothing to cross */
		{ 799, 1000, 1000, 1000, 10 },           /* 0.5 ms: the floor */
		{ 500, 1000, 400, 100, 100 },            /* never over the tick */
		{ 500, 1000, 1e9, 5, 5 },                /* a tick under the floor */
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint32_t got = policy_sample_interval(&svc_default, t[i].ws, t[i].budget,
						      t[i].growth, t[i].tick);

		if (got != t[i].want)
			fail_msg("case %zu: %u ms, want %u", i, got, t[i].want);
	}
}

/*
 * Series of samples of a 1000 MiB budget (warn 800, critical 900), each
 * sample taken when the previous one's interval said; the level decided
 * with a reaction time of 20 ms (the clients' answer) plus that interval.
 * Rates and intervals computed by hand from policy.h's rules.
 */
struct growth_step {
	uint64_t ms, ws_mib;
	double rate_mib;                 /* MiB/s, to 0.1 */
	uint32_t interval;
	enum mg_level level;
};

static const struct growth_step growth_flat[] = {
	{ 0, 500, 0, 1000, N },
	{ 1000, 500, 0, 1000, N },
	{ 2000, 500, 0, 1000, N },
};

/* 10 MiB/s: warn is 29 s away, the tick is soon enough. */
static const struct growth_step growth_slow[] = {
	{ 0, 500, 0, 1000, N },
	{ 1000, 510, 10, 1000, N },
	{ 2000, 520, 10, 1000, N },
};

/* 400 MiB/s: the interval halves toward warn, and the look-ahead says
 * WARN at 790 MiB (79 %), 25 ms before the working set crosses 800. */
static const struct growth_step growth_fast[] = {
	{ 0, 100, 0, 1000, N },
	{ 1000, 500, 400, 375, N },              /* 300 MiB to go: 750 ms / 2 */
	{ 1375, 650, 400, 187, N },              /* projected 732.8 */
	{ 1562, 725, 401.1, 93, N },             /* 75 MiB in 187 ms: faster */
	{ 1655, 762, 400.8, 47, N },             /* slower: EMA, weight 93/1093 */
	{ 1702, 781, 404.3, 23, N },             /* projected 798.4 */
	{ 1725, 790, 404.0, 12, W },             /* projected 802.9 */
};

/* A burst of 500 MiB/s for 100 ms, then flat: the rate is remembered for
 * about τ = 1 s, the interval widens back to the tick. */
static const struct growth_step growth_bursty[] = {
	{ 0, 500, 0, 1000, N },
	{ 100, 550, 500, 250, N },               /* 250 MiB to go at 500 MiB/s */
	{ 350, 550, 400, 312, N },               /* weight 250/1250 toward 0 */
	{ 662, 550, 304.9, 410, N },
	{ 1072, 550, 216.2, 578, N },
	{ 1650, 550, 137.0, 912, N },
	{ 2562, 550, 71.7, 1000, N },
	{ 3562, 550, 35.8, 1000, N },
};

/* One jump to 78 %: sampled fast, but no level before a second sample
 * confirms the growth; it is flat, so none. */
static const struct growth_step growth_jump[] = {
	{ 0, 700, 0, 1000, N },
	{ 100, 780, 800, 12, N },                /* would project 805.6 */
	{ 112, 780, 790.5, 12, N },
	{ 1112, 780, 395.3, 25, N },
	{ 3112, 780, 131.75, 75, N },
};

/* A burst of two samples that reaches 78 %: WARN from the look-ahead once
 * confirmed, and held (78 % is inside the 5-point band) once it is flat,
 * as today. */
static const struct growth_step growth_burst_warn[] = {
	{ 0, 700, 0, 1000, N },
	{ 50, 740, 800, 37, N },                 /* 60 MiB to go: 75 ms / 2 */
	{ 100, 780, 800, 12, W },                /* projected 805.6 */
	{ 112, 780, 790.5, 12, W },
	{ 1112, 780, 395.3, 25, W },
	{ 3112, 780, 131.75, 75, W },
};

static void run_growth(const char *name, const struct growth_step *t, size_t n)
{
	struct policy_params p = params_default();
	struct policy_growth g = { 0 };
	struct policy_state s;

	policy_state_init(&s);
	for (size_t i = 0; i < n; i++) {
		uint64_t ws = t[i].ws_mib * MIB;
		double rate = policy_growth_update(&g, &p, ws, t[i].ms);
		uint32_t iv = policy_sample_interval(&svc_default, ws, 1000 * MIB, rate, 1000);
		struct policy_input in = {
			.working_set = ws, .budget = 1000 * MIB,
			.growth = policy_growth_ahead(&g), .reaction_ms = 20 + iv,
		};
		struct policy_decision d;
		double mib = rate / MIB;

		policy_tick(&s, &p, &svc_default, &in, t[i].ms, &d);
		if (mib < t[i].rate_mib - 0.05 || mib > t[i].rate_mib + 0.05 ||
		    iv != t[i].interval || d.level != t[i].level)
			fail_msg("%s: step %zu (t=%" PRIu64 "): rate %.2f MiB/s, %u ms, level "
				 "%d; want %.1f, %u, %d", name, i, t[i].ms, mib, iv, d.level,
				 t[i].rate_mib, t[i].interval, t[i].level);
	}
}

static void test_growth_series(void **state)
{
	run_growth("flat", growth_flat, ARRAY_SIZE(growth_flat));
	run_growth("slow", growth_slow, ARRAY_SIZE(growth_slow));
	run_growth("fast", growth_fast, ARRAY_SIZE(growth_fast));
	run_growth("bursty", growth_bursty, ARRAY_SIZE(growth_bursty));
	run_growth("one jump", growth_jump, ARRAY_SIZE(growth_jump));
	run_growth("burst to WARN", growth_burst_warn, ARRAY_SIZE(growth_burst_warn));
}

static void test_growth_update(void **state)
{
	struct policy_params p = params_default();
	struct policy_growth g = { 0 };

	/* first sample: no rate */
	assert_true(near(policy_growth_update(&g, &p, 1000, 50), 0));
	assert_true(g.have && g.working_set == 1000 && g.ms == 50);
	/* the same millisecond: ignored, the base stays */
	assert_true(near(policy_growth_update(&g, &p, 9000, 50), 0));
	assert_true(g.working_set == 1000);
	/* 1000 bytes in 100 ms */
	assert_true(near(policy_growth_update(&g, &p, 2000, 150), 10000));
	/* shrinking 1000 bytes in 1 s: halfway (τ = 1 s) to −1000 */
	assert_true(near(policy_growth_update(&g, &p, 1000, 1150), 4500));
	/* a clock that went back: ignored */
	assert_true(near(policy_growth_update(&g, &p, 5000, 100), 4500));
	/* grew at the last two samples? (1000 → 2000 → 1000 → 5000: no) */
	assert_true(near(policy_growth_ahead(&g), 0));
	/* τ = 0 is taken as 1 ms: a 1 s gap forgets nearly all */
	p.growth_tau_ms = 0;
	assert_true(policy_growth_update(&g, &p, 1000, 2150) < 5);
	/* growing twice in a row: the rate is looked ahead with */
	policy_growth_update(&g, &p, 2000, 2250);
	assert_true(near(policy_growth_ahead(&g), 0));
	policy_growth_update(&g, &p, 3000, 2350);
	assert_true(near(policy_growth_ahead(&g), 10000));
	policy_growth_update(&g, &p, 3000, 2450);
	assert_true(near(policy_growth_ahead(&g), 0));
}

/* Look-ahead changes nothing for a flat or shrinking service: every tick
 * table gives the same decisions with growth 0 or negative, however long
 * the reaction time. */
static void test_lookahead_flat_and_falling(void **state)
{
	static const double growths[] = { 0, -1e12 };
	struct policy_params def = params_default();

	for (size_t gi = 0; gi < ARRAY_SIZE(growths); gi++)
		for (size_t i = 0; i < ARRAY_SIZE(tick_cases); i++) {
			const struct tick_case *c = &tick_cases[i];
			const struct conf_service *svc = c->svc ? c->svc : &svc_default;
			const struct policy_params *p = c->params ? c->params : &def;
			struct policy_state s;

			policy_state_init(&s);
			for (size_t k = 0; k < c->n; k++) {
				struct policy_input in = c->steps[k].in;
				struct policy_decision d;
				struct tick_want got;

				in.growth = growths[gi];
				in.reaction_ms = 60000;
				policy_tick(&s, p, svc, &in, c->steps[k].now, &d);
				got = tick_got(&d);
				if (!tick_equal(&got, &c->steps[k].want))
					fail_msg("%s, growth %g: step %zu differs", c->name,
						 growths[gi], k);
				if (c->steps[k].apply)
					policy_escalated(&s, svc, d.action, c->steps[k].now);
			}
		}
}

/* Hysteresis with look-ahead and probes: a level rises on the projection,
 * probes raise but never count calm ticks, a drop takes 2 ticks under the
 * band as today. */
static const struct tick_step ticks_probe[] = {
	/* 70 % growing 1000 bytes/s, 100 ms ahead: 80 %, WARN */
	{ 0, IN(.working_set = 700, .growth = 1000, .reaction_ms = 100),
	  { W, 1, 0, 100, 0, 800, 0, 0, 0, A_NONE } },
	/* probes far under the band: no calm tick counted */
	{ 10, IN(.working_set = 100, .probe = true),
	  { W, 0, 0, 100, 0, 800, 0, 0, 0, A_NONE } },
	{ 20, IN(.working_set = 100, .probe = true),
	  { W, 0, 0, 100, 0, 800, 0, 0, 0, A_NONE } },
	{ 30, IN(.working_set = 100, .probe = true),
	  { W, 0, 0, 100, 0, 800, 0, 0, 0, A_NONE } },
	/* a probe that projects past critical raises at once: 85 % + 50 */
	{ 40, IN(.working_set = 850, .growth = 1000, .reaction_ms = 50, .probe = true),
	  { C, 1, 0, 75, 250, 800, 100, 100, 5000, A_NONE } },
	/* the ticks: the first calm one (no throttle while the level
	 * waits), then the drop */
	{ 100, IN(.working_set = 100), { C, 0, 0, 75, 0, 800, 0, 0, 0, A_NONE } },
	{ 200, IN(.working_set = 100), { N, 0, 1, 0, 0, 800, 0, 0, 0, A_NONE } },
};

static void test_probe_hysteresis(void **state)
{
	struct policy_params p = params_default();
	struct policy_state s;

	policy_state_init(&s);
	for (size_t k = 0; k < ARRAY_SIZE(ticks_probe); k++) {
		struct policy_decision d;
		struct tick_want got;
		char a[160], b[160];

		policy_tick(&s, &p, &svc_default, &ticks_probe[k].in, ticks_probe[k].now, &d);
		got = tick_got(&d);
		if (!tick_equal(&got, &ticks_probe[k].want))
			fail_msg("step %zu: %s, want %s", k, tick_format(&got, a, sizeof(a)),
				 tick_format(&ticks_probe[k].want, b, sizeof(b)));
	}
}

/* The same in time (tick_ms 1000), as the daemon runs it: probes count
 * calm as ticks do, and the drop comes 2 s after the last sample that
 * held the level, not two fast ticks later.  The level and its GC target
 * stay; the throttle follows the working set (test_hold_throttle). */
static void test_probe_hysteresis_time(void **state)
{
	struct policy_params p = params_default();
	struct policy_state s;
	struct policy_decision d;
	struct policy_input in = IN(.working_set = 850, .growth = 1000, .reaction_ms = 50,
				    .tick_ms = 1000);

	policy_state_init(&s);
	policy_tick(&s, &p, &svc_default, &in, 40, &d);
	assert_int_equal(d.level, C);
	assert_int_equal(d.directive.throttle, 250);
	in = (struct policy_input)IN(.working_set = 100, .tick_ms = 1000);
	for (uint64_t t = 50; t < 2040; t += 10) {
		in.probe = t % 100 != 0;
		policy_tick(&s, &p, &svc_default, &in, t, &d);
		if (d.level != C || d.directive.gc_percent != 75 || d.directive.throttle != 0)
			fail_msg("t=%" PRIu64 ": level %d, gc %u, throttle %u", t, d.level,
				 d.directive.gc_percent, d.directive.throttle);
	}
	in.probe = true;
	policy_tick(&s, &p, &svc_default, &in, 2040, &d);
	assert_int_equal(d.level, N);
	assert_true(d.cleared);
	assert_int_equal(d.directive.throttle, 0);
}

/* While a level waits out its calm, its throttle is the law's at the
 * working set now: none under the band, CRITICAL's own back in it (and the
 * calm starts again), the law's above, EMERGENCY's at the budget. */
static void test_hold_throttle(void **state)
{
	static const struct {
		uint64_t now, working_set;
		enum mg_level level;
		uint16_t gc, throttle;
	} t[] = {
		{ 0, 1000, E, 25, 500 },   /* at the budget */
		{ 100, 500, E, 25, 0 },    /* under every band: calm */
		{ 200, 870, E, 25, 250 },  /* 87 %: CRITICAL's band holds its throttle */
		{ 300, 920, E, 25, 375 },  /* 92 %: the law's 37.5 */
		{ 400, 960, E, 25, 500 },  /* 96 %: EMERGENCY's band, calm again */
		{ 500, 780, E, 25, 0 },    /* WARN's band: no throttle */
		{ 1400, 780, E, 25, 0 },   /* a sample counts at most a tick */
		{ 1900, 780, W, 100, 0 },  /* 2 ticks of calm after 96 %: WARN */
	};
	struct policy_params p = params_default();
	struct policy_state s;

	policy_state_init(&s);
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		struct policy_input in = IN(.working_set = t[i].working_set, .tick_ms = 500);
		struct policy_decision d;

		policy_tick(&s, &p, &svc_default, &in, t[i].now, &d);
		if (d.level != t[i].level || d.directive.gc_percent != t[i].gc ||
		    d.directive.throttle != t[i].throttle)
			fail_msg("case %zu: level %d gc %u throttle %u, want %d %u %u", i,
				 d.level, d.directive.gc_percent, d.directive.throttle,
				 t[i].level, t[i].gc, t[i].throttle);
	}
}

/* The soft limit leaves out what the cgroup holds besides the clients'
 * heaps, down to half of warn · budget. */
static void test_soft_limit_unowned(void **state)
{
	static const struct {
		uint64_t unowned, want;
	} t[] = {
		{ 0, 800 }, { 100, 700 }, { 399, 401 }, { 400, 400 }, { 600, 400 },
		{ UINT64_MAX, 400 },
	};
	struct policy_params p = params_default();

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		struct policy_input in = { .working_set = 500, .budget = 1000,
					   .unowned = t[i].unowned };
		struct policy_state s;
		struct policy_decision d;

		policy_state_init(&s);
		policy_tick(&s, &p, &svc_default, &in, 0, &d);
		if (d.directive.soft_limit != t[i].want)
			fail_msg("case %zu: %" PRIu64 ", want %" PRIu64, i,
				 d.directive.soft_limit, t[i].want);
	}
}

static void test_level_out(void **state)
{
	assert_true(near(policy_level_out(0.05, &svc_default, N), 0));
	assert_true(near(policy_level_out(0.05, &svc_default, W), 0));
	assert_true(near(policy_level_out(0.05, &svc_default, C), 25));
	assert_true(near(policy_level_out(0.05, &svc_default, E), POLICY_OUT_MAX));
}

/* An EMERGENCY directive acts as one, whatever raised the level. */
static void test_emergency_directive(void **state)
{
	struct policy_params p = params_default();
	struct policy_params ema = params_ema;
	struct policy_state s;
	struct policy_decision d;
	struct policy_input in;

	/* memory.max events at the OOM kill; the working set left is the
	 * dying process's, 171 MiB of 1 GiB (issue 16's run) */
	policy_state_init(&s);
	in = (struct policy_input){ .working_set = 171 * MIB, .budget = 1024 * MIB };
	policy_tick(&s, &p, &svc_default, &in, 0, &d);
	in.events.max = 3;
	in.events.oom = 1;
	policy_tick(&s, &p, &svc_default, &in, 100, &d);
	assert_int_equal(d.level, E);
	assert_int_equal(d.directive.gc_percent, 25);
	assert_int_equal(d.directive.throttle, 500);

	/* the budget raised at runtime under EMERGENCY: u = 50 %, the level
	 * follows the new budget at once, and the directive with it */
	policy_state_init(&s);
	in = (struct policy_input){ .working_set = 1000, .budget = 1000 };
	policy_tick(&s, &p, &svc_default, &in, 0, &d);
	assert_int_equal(d.level, E);
	in.budget = 2000;
	policy_tick(&s, &p, &svc_default, &in, 100, &d);
	assert_int_equal(d.level, N);
	assert_int_equal(d.directive.gc_percent, MG_GC_DEFAULT);
	assert_int_equal(d.directive.throttle, 0);
	/* lowered under it: EMERGENCY at once, acting as one */
	in.budget = 900;
	policy_tick(&s, &p, &svc_default, &in, 200, &d);
	assert_int_equal(d.level, E);
	assert_int_equal(d.directive.gc_percent, 25);
	assert_int_equal(d.directive.throttle, 500);

	/* a smoothed output still low when usage jumps over the budget */
	policy_state_init(&s);
	in = (struct policy_input){ .working_set = 1100, .budget = 1000 };
	policy_tick(&s, &ema, &svc_default, &in, 0, &d);
	assert_int_equal(d.level, E);
	assert_true(d.out < 20);
	assert_int_equal(d.directive.gc_percent, 25);
	assert_int_equal(d.directive.throttle, 500);

	/* with max_throttle 0 the service never sheds, even then */
	{
		struct conf_service svc = svc_default;

		svc.max_throttle = 0;
		policy_state_init(&s);
		policy_tick(&s, &p, &svc, &in, 0, &d);
		assert_int_equal(d.directive.gc_percent, 25);
		assert_int_equal(d.directive.throttle, 0);
	}
}

/*
 * Every field that DIRECTIVE carries is state, but the demand: each bit of
 * an encoded body changed alone is news, except in deadline_ms (without
 * bytes demanded).  Driven by the encoder's field table, so a field
 * appended to DIRECTIVE is checked here without editing this test.
 */
static void test_directive_changed_every_field(void **state)
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_DIRECTIVE } }, d;
	uint8_t base[MG_MSG_MAX], deadline[MG_MSG_MAX], buf[MG_MSG_MAX];
	int n, n2, checked = 0;

	m.directive = (struct mg_directive){ .level = W, .gc_percent = 92, .throttle = 10,
					     .soft_limit = 800, .deadline_ms = 0 };
	n = proto_msg_encode(&m, base, sizeof(base));
	assert_true(n > MG_HEADER_SIZE);
	/* Where deadline_ms lies: the bytes that change with it alone. */
	m.directive.deadline_ms = UINT32_MAX;
	n2 = proto_msg_encode(&m, deadline, sizeof(deadline));
	assert_int_equal(n2, n);
	m.directive.deadline_ms = 0;

	for (int i = MG_HEADER_SIZE; i < n; i++) {
		for (int bit = 0; bit < 8; bit++) {
			memcpy(buf, base, (size_t)n);
			buf[i] ^= (uint8_t)(1u << bit);
			if (proto_msg_decode(buf, (size_t)n, &d) < 0)
				continue;  /* out of range: never sent */
			bool want = base[i] == deadline[i];

			if (policy_directive_changed(&m.directive, &d.directive) != want)
				fail_msg("body byte %d bit %d: changed should be %d", i - MG_HEADER_SIZE,
					 bit, want);
			checked++;
		}
	}
	assert_true(checked > 8 * 20);
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_utilization),
		cmocka_unit_test(test_level_raw),
		cmocka_unit_test(test_level_hold),
		cmocka_unit_test(test_level_sequences),
		cmocka_unit_test(test_level_fast_samples),
		cmocka_unit_test(test_calm_credit),
		cmocka_unit_test(test_output),
		cmocka_unit_test(test_output_smooth),
		cmocka_unit_test(test_gc_percent),
		cmocka_unit_test(test_throttle),
		cmocka_unit_test(test_release_target),
		cmocka_unit_test(test_soft_limit_deadline),
		cmocka_unit_test(test_releasable),
		cmocka_unit_test(test_report_clamp),
		cmocka_unit_test(test_split),
		cmocka_unit_test(test_client_directives),
		cmocka_unit_test(test_squeeze_need),
		cmocka_unit_test(test_squeeze),
		cmocka_unit_test(test_escalate),
		cmocka_unit_test(test_escalated),
		cmocka_unit_test(test_ticks),
		cmocka_unit_test(test_tick_out),
		cmocka_unit_test(test_directive_changed),
		cmocka_unit_test(test_directive_changed_every_field),
		cmocka_unit_test(test_projected),
		cmocka_unit_test(test_sample_interval),
		cmocka_unit_test(test_thresholds_due),
		cmocka_unit_test(test_growth_update),
		cmocka_unit_test(test_growth_series),
		cmocka_unit_test(test_lookahead_flat_and_falling),
		cmocka_unit_test(test_probe_hysteresis),
		cmocka_unit_test(test_probe_hysteresis_time),
		cmocka_unit_test(test_hold_throttle),
		cmocka_unit_test(test_level_out),
		cmocka_unit_test(test_soft_limit_unowned),
		cmocka_unit_test(test_emergency_directive),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
