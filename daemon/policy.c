/* SPDX-License-Identifier: MIT */
/*
 * The control law of design.md as pure functions.  policy.h is the
 * contract; this file says why.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/policy.h"
#include "proto/macro.h"

#define BP_ONE 10000                     /* bp in a whole */

static uint32_t sub_sat32(uint32_t a, uint32_t b)
{
	return a > b ? a - b : 0;
}

static enum mg_level level_max(enum mg_level a, enum mg_level b)
{
	return a > b ? a : b;
}

static enum mg_level level_min(enum mg_level a, enum mg_level b)
{
	return a < b ? a : b;
}

static double out_max(double a, double b)
{
	return a > b ? a : b;
}

/*
 * floor(a · b / c) without overflow in the product, UINT64_MAX when the
 * quotient does not fit.  c must not be 0.  Byte counts times byte counts
 * (a target times one client's weight) need 128 bits; doubles would round
 * and break "the shares add up to the target exactly".
 */
#ifndef __SIZEOF_INT128__
#error "memguardd needs unsigned __int128 (any 64-bit target of GCC or clang)"
#endif
static uint64_t muldiv(uint64_t a, uint64_t b, uint64_t c)
{
	unsigned __int128 q = (unsigned __int128)a * b / c;

	return q > UINT64_MAX ? UINT64_MAX : (uint64_t)q;
}

/* Round to the nearest integer, halves up; NaN and negatives give 0. */
static uint32_t round_pos(double x)
{
	if (!(x > 0))
		return 0;
	if (x >= UINT32_MAX)
		return UINT32_MAX;
	return (uint32_t)(x + 0.5);
}

void policy_params_init(struct policy_params *ret)
{
	*ret = (struct policy_params){
		.cp = POLICY_DEFAULT_CP,
		.ema_alpha = POLICY_DEFAULT_EMA_ALPHA,
		.hysteresis = POLICY_DEFAULT_HYSTERESIS,
		.drop_ticks = POLICY_DEFAULT_DROP_TICKS,
		.squeeze_step = POLICY_DEFAULT_SQUEEZE_STEP,
		.growth_tau_ms = POLICY_DEFAULT_GROWTH_TAU_MS,
	};
}

void policy_state_init(struct policy_state *s)
{
	*s = (struct policy_state){
		.level = MG_LEVEL_NORMAL,
		.escalation = MG_ESCALATION_NONE,
	};
}

uint32_t policy_utilization_bp(uint64_t working_set, uint64_t budget)
{
	uint64_t u;

	if (budget == 0)
		return POLICY_UTIL_UNKNOWN;
	u = muldiv(working_set, BP_ONE, budget);
	/* UINT32_MAX means "unknown"; a service 400000 times over its budget
	 * is simply very far over it. */
	return u >= POLICY_UTIL_UNKNOWN ? POLICY_UTIL_UNKNOWN - 1 : (uint32_t)u;
}

/* A pressure trigger fires at or above its threshold; 0 turns it off. */
static bool pressure_over(uint32_t avg10, uint32_t threshold)
{
	return threshold > 0 && avg10 >= threshold;
}

/*
 * The level for utilization thresholds lowered by `band` bp, pressure and
 * events as given: band 0 is the rising rule, the hysteresis band the
 * holding rule.
 */
static enum mg_level level_with_band(const struct conf_service *svc,
				     const struct policy_signals *sig, uint32_t band)
{
	enum mg_level l = MG_LEVEL_NORMAL;
	uint32_t u = sig->utilization;

	if (u != POLICY_UTIL_UNKNOWN) {
		if (u >= sub_sat32(POLICY_UTIL_FULL, band))
			l = MG_LEVEL_EMERGENCY;
		else if (u >= sub_sat32(svc->critical, band))
			l = MG_LEVEL_CRITICAL;
		else if (u >= sub_sat32(svc->warn, band))
			l = MG_LEVEL_WARN;
	}
	if (pressure_over(sig->full_avg10, svc->pressure_full))
		l = level_max(l, MG_LEVEL_CRITICAL);
	if (pressure_over(sig->some_avg10, svc->pressure_some))
		l = level_max(l, MG_LEVEL_WARN);
	/* high or max events mean the kernel is already throttling or
	 * reclaiming at a limit: whatever the averages say, it is an
	 * emergency now. */
	if (sig->events_grew)
		l = MG_LEVEL_EMERGENCY;
	return level_max(l, sig->floor);
}

enum mg_level policy_level_raw(const struct conf_service *svc,
			       const struct policy_signals *sig)
{
	return level_with_band(svc, sig, 0);
}

enum mg_level policy_level_hold(const struct conf_service *svc,
				const struct policy_params *p,
				const struct policy_signals *sig)
{
	return level_with_band(svc, sig, p->hysteresis);
}

uint64_t policy_calm_credit(const struct policy_state *s, uint64_t now_ms,
			    uint32_t tick_ms)
{
	uint64_t dt;

	if (tick_ms == 0)
		return 1;
	if (!s->have_seen)
		return tick_ms;
	dt = now_ms > s->seen_ms ? now_ms - s->seen_ms : 0;
	return dt < tick_ms ? dt : tick_ms;
}

/* policy_calm_credit(), and this sample's time noted for the next. */
static uint64_t calm_credit_take(struct policy_state *s, uint64_t now_ms, uint32_t tick_ms)
{
	uint64_t credit = policy_calm_credit(s, now_ms, tick_ms);

	if (tick_ms > 0) {
		s->have_seen = true;
		s->seen_ms = now_ms;
	}
	return credit;
}

/* Calm time (or calls, with a tick_ms of 0) a level needs to drop. */
static uint64_t calm_needed(const struct policy_params *p, uint32_t tick_ms)
{
	uint64_t ticks = p->drop_ticks > 0 ? p->drop_ticks : 1;

	return tick_ms ? ticks * tick_ms : ticks;
}

/* policy_level_step() with the sample's calm credit given. */
static enum mg_level level_step(struct policy_state *s, const struct policy_params *p,
				const struct conf_service *svc,
				const struct policy_signals *sig, uint64_t credit,
				uint64_t need)
{
	enum mg_level raw = policy_level_raw(svc, sig), hold;

	if (raw > s->level) {
		/* Rising is immediate: memory grows faster than a tick, and
		 * a late WARN costs more than an early one. */
		s->level = raw;
		s->calm = 0;
		return s->level;
	}

	hold = policy_level_hold(svc, p, sig);
	if (hold >= s->level) {
		/* Inside the band, or back above it: a drop needs calm
		 * in a row, so start counting again. */
		s->calm = 0;
		return s->level;
	}

	/* Below the band.  Wait out more calm so that a single low sample
	 * (a GC that just finished, a PSI average between windows) does not
	 * flap the level and the clients' caches with it.  In time, not in
	 * samples: a growing service is sampled every 10 ms, and the
	 * saw-tooth of a collected heap would otherwise drop EMERGENCY to
	 * WARN between two collections, the throttle off half the time. */
	s->calm += credit;
	if (s->calm >= need) {
		s->level = hold;
		s->calm = 0;
	}
	return s->level;
}

enum mg_level policy_level_step(struct policy_state *s,
				const struct policy_params *p,
				const struct conf_service *svc,
				const struct policy_signals *sig,
				uint64_t now_ms, uint32_t tick_ms)
{
	uint64_t credit = calm_credit_take(s, now_ms, tick_ms);

	return level_step(s, p, svc, sig, credit, calm_needed(p, tick_ms));
}

double policy_output(double cp, uint32_t warn_bp, uint64_t working_set,
		     uint64_t budget)
{
	double u, w, out;

	if (budget == 0)
		return 0;
	if (working_set >= budget)
		/* 1 / (1 − u) has no finite value here, and the service is
		 * at or over its budget: push as hard as the law allows. */
		return POLICY_OUT_MAX;

	u = (double)working_set / (double)budget;
	w = (double)warn_bp / BP_ONE;
	if (u <= w)
		/* Also covers warn ≥ 100 %, where (1 − warn) would be 0. */
		return 0;

	out = cp / (1 - u) * (u - w) / (1 - w) * 100;
	if (!(out > 0))
		return 0;
	return out > POLICY_OUT_MAX ? POLICY_OUT_MAX : out;
}

double policy_output_smooth(double prev, double raw, double alpha)
{
	if (!(alpha > 0 && alpha <= 1))
		alpha = 1;
	return alpha * raw + (1 - alpha) * prev;
}

uint16_t policy_gc_percent(enum mg_level level, double out,
			   uint32_t min_gc_percent)
{
	uint32_t o = round_pos(out), gc;

	if (level == MG_LEVEL_NORMAL)
		return MG_GC_DEFAULT;

	if (o > POLICY_OUT_MAX)
		o = POLICY_OUT_MAX;
	gc = 100 - o;
	/* The floor keeps a GC-bound service from collecting itself to
	 * death: below it, more GC costs CPU without freeing memory. */
	if (gc < min_gc_percent)
		gc = min_gc_percent;
	return gc > UINT16_MAX ? UINT16_MAX : (uint16_t)gc;
}

uint16_t policy_throttle(enum mg_level level, double out,
			 uint32_t max_throttle)
{
	uint32_t t;

	/* Rejecting work is the one lever users see: keep it for CRITICAL,
	 * when GC and releases have not been enough. */
	if (level < MG_LEVEL_CRITICAL)
		return 0;
	t = round_pos(out * 10);
	if (t > max_throttle)
		t = max_throttle;
	if (t > MG_THROTTLE_MAX)
		t = MG_THROTTLE_MAX;
	return (uint16_t)t;
}

uint64_t policy_soft_limit(enum mg_level level, uint32_t warn_bp,
			   uint64_t budget)
{
	/* At NORMAL too: the clients check it where their heap grows, which
	 * is faster than any sampling (design.md, "Two speeds of control"). */
	(void)level;
	if (budget == 0)
		return 0;
	return muldiv(budget, warn_bp, BP_ONE);
}

uint64_t policy_release_target(enum mg_level level, uint32_t warn_bp,
			       uint64_t working_set, uint64_t budget,
			       uint64_t releasable)
{
	uint64_t goal, excess = 0;

	if (level == MG_LEVEL_NORMAL)
		return 0;

	if (budget > 0) {
		goal = muldiv(budget, warn_bp, BP_ONE);
		if (working_set > goal)
			excess = working_set - goal;
	}

	if (level == MG_LEVEL_EMERGENCY && releasable > excess)
		return releasable;
	return excess;
}

uint32_t policy_deadline_ms(enum mg_level level,
			    uint32_t release_deadline_ms)
{
	return level >= MG_LEVEL_CRITICAL ? release_deadline_ms : 0;
}

static uint64_t clamp_u64(uint64_t v, uint64_t cap)
{
	return v > cap ? cap : v;
}

void policy_report_clamp(struct mg_report *r, uint64_t cap)
{
	if (cap == 0)
		return;
	/* Only what is resident: heap_sys and heap_released count pages
	 * given back to the kernel, which can exceed memory.current. */
	r->heap_inuse = clamp_u64(r->heap_inuse, cap);
	r->heap_idle = clamp_u64(r->heap_idle, cap);
	r->external = clamp_u64(r->external, cap);
}

uint64_t policy_releasable(const struct mg_report *r)
{
	return add_sat(r->heap_idle, r->external);
}

void policy_split(uint64_t total, const uint64_t *weights, size_t n,
		  uint64_t *ret_shares)
{
	uint64_t sum = 0, given = 0, div = 1;
	size_t largest = 0;

	if (n == 0)
		return;

	for (size_t i = 0; i < n; i++) {
		if (weights[i] > weights[largest])
			largest = i;
		if (sum > UINT64_MAX - weights[i]) {
			/* The weights add up past 2^64 bytes: divide them
			 * all by n, which keeps the sum under 2^64 and the
			 * proportions but for rounding. */
			div = n;
		}
		sum = add_sat(sum, weights[i]);
	}
	if (div > 1) {
		sum = 0;
		for (size_t i = 0; i < n; i++)
			sum += weights[i] / div;
	}

	for (size_t i = 0; i < n; i++) {
		if (sum == 0)
			/* Nobody reported anything releasable: ask all
			 * alike rather than nobody. */
			ret_shares[i] = total / n;
		else
			ret_shares[i] = muldiv(total, weights[i] / div, sum);
		given += ret_shares[i];
	}
	/* Each share was rounded down, so given ≤ total; the rest, fewer
	 * than n bytes, goes to whoever has the most to give. */
	ret_shares[largest] += total - given;
}

int policy_client_directives(const struct mg_directive *d,
			     const struct mg_report *reports, size_t n,
			     struct mg_directive *ret)
{
	_cleanup_free_ uint64_t *w = NULL;
	uint64_t *soft, *release;

	if (n == 0)
		return 0;

	/* Two weight arrays and two share arrays, in one allocation. */
	w = calloc(n, 4 * sizeof(uint64_t));
	if (!w)
		return -ENOMEM;
	soft = w + 2 * n;
	release = w + 3 * n;

	for (size_t i = 0; i < n; i++) {
		w[i] = reports[i].heap_inuse;
		w[n + i] = policy_releasable(&reports[i]);
	}
	policy_split(d->soft_limit, w, n, soft);
	policy_split(d->release, w + n, n, release);

	for (size_t i = 0; i < n; i++) {
		ret[i] = *d;
		/* 0 is "no limit" on the wire: the smallest limit there is,
		 * one byte, tells the scavenger to keep no idle page, which
		 * is what a share below a byte means. */
		ret[i].soft_limit = d->soft_limit > 0 && soft[i] == 0 ? 1 : soft[i];
		ret[i].release = release[i];
		ret[i].deadline_ms = release[i] > 0 ? d->deadline_ms : 0;
	}
	return 0;
}

uint64_t policy_squeeze_need(const struct policy_params *p,
			     uint64_t mem_total, uint32_t host_some_avg10,
			     uint32_t host_pressure)
{
	if (!pressure_over(host_some_avg10, host_pressure))
		return 0;
	return muldiv(mem_total, p->squeeze_step, BP_ONE);
}

/* What service `s` can give in a squeeze: down to its protected floor. */
static uint64_t squeezable(const struct policy_squeeze_service *s)
{
	uint64_t keep = s->guarantee;

	if (s->budget > 0 && s->budget < keep)
		keep = s->budget;
	return s->working_set > keep ? s->working_set - keep : 0;
}

/* Whether a is squeezed before b. */
static bool squeeze_before(const struct policy_squeeze_service *a,
			   uint64_t a_give,
			   const struct policy_squeeze_service *b,
			   uint64_t b_give)
{
	if (a->priority != b->priority)
		return a->priority < b->priority;
	return a_give > b_give;
}

uint64_t policy_squeeze(uint32_t host_some_avg10, uint32_t host_pressure,
			uint64_t need,
			const struct policy_squeeze_service *svcs, size_t n,
			struct policy_squeeze_result *ret)
{
	uint64_t asked = 0;

	for (size_t i = 0; i < n; i++)
		ret[i] = (struct policy_squeeze_result){ .floor = MG_LEVEL_NORMAL };

	if (!pressure_over(host_some_avg10, host_pressure))
		return 0;

	/*
	 * Pick the next service in squeeze order until the need is met.
	 * Selection instead of a sort: no allocation, and usually only the
	 * first one or two services are asked at all.  A service once asked
	 * has release > 0 and is not picked again.
	 */
	while (asked < need) {
		size_t best = n;
		uint64_t best_give = 0, take;

		for (size_t i = 0; i < n; i++) {
			uint64_t give = squeezable(&svcs[i]);

			if (ret[i].release > 0 || give == 0)
				continue;
			if (best == n ||
			    squeeze_before(&svcs[i], give, &svcs[best], best_give)) {
				best = i;
				best_give = give;
			}
		}
		if (best == n)
			break;

		take = need - asked < best_give ? need - asked : best_give;
		ret[best].release = take;
		/* At least WARN, so the service's clients also lower their
		 * GC target and drop the retain margin, not only release
		 * once. */
		ret[best].floor = MG_LEVEL_WARN;
		asked += take;
	}
	return asked;
}

enum policy_action policy_escalate(const struct policy_escalation_input *in)
{
	if (in->in_force != MG_ESCALATION_NONE &&
	    (in->level == MG_LEVEL_NORMAL || in->enforce == MG_ENFORCE_NOTIFY))
		/* Every step is undone when the level falls back, and
		 * `notify` never leaves the kernel touched.  After a kill,
		 * memory.high = budget from the step before is still set. */
		return POLICY_ACTION_RESTORE;

	if (in->in_force == MG_ESCALATION_HIGH && in->usage_normal)
		/* memory.high = budget did its job.  The pressure and the
		 * memory.events "high" that may still hold the level up are
		 * its own doing (the kernel throttles the cgroup at it), so
		 * waiting for the level would keep it in force for good. */
		return POLICY_ACTION_RESTORE;

	if (in->in_force == MG_ESCALATION_KILLED)
		return POLICY_ACTION_NONE;

	if (!in->clock_running || in->now_ms < in->deadline_ms)
		/* The clients were given until the deadline. */
		return POLICY_ACTION_NONE;

	switch (in->in_force) {
	case MG_ESCALATION_NONE:
		/* memory.high = 0 would stall the service: never without a
		 * known budget.  Nor when the working set alone is NORMAL:
		 * memory.high would be put back at once (above), and the
		 * pressure holding the level up is someone else's doing. */
		if (in->enforce >= MG_ENFORCE_HIGH && in->level >= MG_LEVEL_CRITICAL &&
		    in->budget > 0 && !in->usage_normal)
			return POLICY_ACTION_HIGH;
		return POLICY_ACTION_NONE;
	case MG_ESCALATION_HIGH:
		/* Last resort, and only on evidence: a whole deadline after
		 * memory.high = budget, the working set is still above it,
		 * and the kernel kept hitting the cgroup's limits meanwhile
		 * (memory.events high, max or oom).  The working set is
		 * what reclaim could not take: above memory.high, the
		 * kernel throttles the service for as long as it stays
		 * there, which is a stall with no end.  (Found on pure v2:
		 * a service holding 80M under a 64M memory.high, throttled
		 * 3009 times in 90 s, that never hit memory.max.) */
		if (in->enforce == MG_ENFORCE_KILL && in->budget > 0 &&
		    in->working_set > in->budget && in->limit_hit)
			return POLICY_ACTION_KILL;
		return POLICY_ACTION_NONE;
	default:
		return POLICY_ACTION_NONE;
	}
}

double policy_growth_update(struct policy_growth *g, const struct policy_params *p,
			    uint64_t working_set, uint64_t now_ms)
{
	double dt, raw, w;

	if (g->have && now_ms > g->ms) {
		dt = (double)(now_ms - g->ms);
		raw = ((double)working_set - (double)g->working_set) * 1000.0 / dt;
		g->rising = working_set > g->working_set ? g->rising + 1 : 0;
		if (raw > g->rate) {
			/* Sampling too fast costs a few reads; too slow, the
			 * service. */
			g->rate = raw;
		} else {
			w = dt / (dt + (p->growth_tau_ms ? p->growth_tau_ms : 1));
			g->rate += w * (raw - g->rate);
		}
	} else if (g->have)
		/* Two samples in the same millisecond: no rate from them. */
		return g->rate;
	g->have = true;
	g->working_set = working_set;
	g->ms = now_ms;
	return g->rate;
}

double policy_growth_ahead(const struct policy_growth *g)
{
	return g->rising >= 2 && g->rate > 0 ? g->rate : 0;
}

uint64_t policy_projected(uint64_t working_set, double growth, uint32_t reaction_ms)
{
	double ahead;

	if (!(growth > 0))
		return working_set;
	ahead = growth * reaction_ms / 1000.0;
	if (ahead >= (double)(UINT64_MAX - working_set))
		return UINT64_MAX;
	return working_set + (uint64_t)ahead;
}

bool policy_thresholds_due(const struct conf_service *svc, uint64_t working_set,
			   uint64_t budget)
{
	return budget > 0 && working_set >= muldiv(budget, svc->warn, 2 * BP_ONE);
}

uint32_t policy_sample_interval(const struct conf_service *svc, uint64_t working_set,
				uint64_t budget, double growth, uint32_t tick_ms)
{
	const uint32_t levels[] = { svc->warn, svc->critical, POLICY_UTIL_FULL };
	uint32_t floor = tick_ms < POLICY_SAMPLE_MIN_MS ? tick_ms : POLICY_SAMPLE_MIN_MS;
	double ms;

	if (budget == 0 || !(growth > 0))
		return tick_ms;
	for (size_t i = 0; i < ARRAY_SIZE(levels); i++) {
		uint64_t at = muldiv(budget, levels[i], BP_ONE);

		if (at <= working_set)
			continue;
		ms = (double)(at - working_set) * 1000.0 / growth / 2;
		if (ms < floor)
			return floor;
		return ms < tick_ms ? (uint32_t)ms : tick_ms;
	}
	/* Over the budget: no threshold left to be early for. */
	return tick_ms;
}

double policy_level_out(double cp, const struct conf_service *svc, enum mg_level level)
{
	switch (level) {
	case MG_LEVEL_EMERGENCY:
		return POLICY_OUT_MAX;
	case MG_LEVEL_CRITICAL:
		return policy_output(cp, svc->warn, svc->critical, BP_ONE);
	default:
		return 0;
	}
}

static bool events_grew(const struct policy_events *now,
			const struct policy_events *before)
{
	/* A counter that went down belongs to a new cgroup of the same
	 * name: no growth, and policy_tick() takes it as the new baseline.
	 * oom too: on cgroup v1 without swap, an OOM kill is the only
	 * counter that moves (failcnt stays 0 with a memsw limit). */
	return now->high > before->high || now->max > before->max ||
	       now->oom > before->oom;
}

static void clock_start(struct policy_state *s, const struct conf_service *svc,
			const struct policy_events *events, uint64_t now_ms)
{
	s->clock_running = true;
	s->clock_deadline_ms = add_sat(now_ms, svc->release_deadline_ms);
	s->clock_events = *events;
}

/*
 * One function of ~120 lines on purpose: its steps (level, output EMA,
 * deadline clock, demand, directive, escalation) are the policy in the
 * order it applies them, each reading the state the one before wrote;
 * the pure helpers above hold the arithmetic.
 */
void policy_tick(struct policy_state *s, const struct policy_params *p,
		 const struct conf_service *svc, const struct policy_input *in,
		 uint64_t now_ms, struct policy_decision *ret)
{
	uint64_t ahead = policy_projected(in->working_set, in->growth, in->reaction_ms);
	struct policy_signals sig = {
		.utilization = policy_utilization_bp(ahead, in->budget),
		.some_avg10 = in->some_avg10,
		.full_avg10 = in->full_avg10,
		.events_grew = s->have_events &&
			       events_grew(&in->events, &s->events),
		.floor = in->floor,
	};
	enum mg_level old = s->level, level, held;
	struct mg_directive *d = &ret->directive;
	/* With ticks counted in calls, a probe counts no calm. */
	bool counts = in->tick_ms > 0 || !in->probe;
	uint64_t credit = counts ? calm_credit_take(s, now_ms, in->tick_ms) : 0;
	uint64_t need = calm_needed(p, in->tick_ms);
	bool demand;
	uint64_t target;
	double raw, out, gc_out, throttle_out;

	if (s->have_budget && s->budget != in->budget) {
		s->level = policy_level_raw(svc, &sig);
		s->calm = 0;
	}
	s->have_budget = true;
	s->budget = in->budget;
	if (counts || policy_level_raw(svc, &sig) > s->level)
		level = level_step(s, p, svc, &sig, credit, need);
	else
		/* A probe raises as a tick does; anything else waits for
		 * the tick. */
		level = s->level;
	s->events = in->events;
	s->have_events = true;
	if (s->clock_running && (in->events.high < s->clock_events.high ||
				 in->events.max < s->clock_events.max ||
				 in->events.oom < s->clock_events.oom))
		/* The cgroup was recreated under the running clock. */
		s->clock_events = in->events;

	/* The EMA runs on every tick, NORMAL ones included (where the raw
	 * output is 0), so a service coming back starts from a decayed
	 * value instead of a stale peak. */
	raw = policy_output(p->cp, svc->warn, ahead, in->budget);
	out = policy_output_smooth(s->out, raw, p->ema_alpha);
	if (!in->probe)
		s->out = out;

	if (level == MG_LEVEL_EMERGENCY && !s->clock_running)
		clock_start(s, svc, &in->events, now_ms);
	else if (level < MG_LEVEL_CRITICAL)
		/* Usage came down: whatever is in force stays until NORMAL,
		 * but nothing further is started. */
		s->clock_running = false;

	target = policy_release_target(level, svc->warn, ahead, in->budget,
				       in->releasable);
	if (level > MG_LEVEL_NORMAL)
		target = add_sat(target, in->extra_release);

	/*
	 * Working set and PSI answer a release late (PSI averages over
	 * windows of 10 s), so repeating the demand on every 100 ms tick
	 * would ask for the same excess again and again.  Ask when the level
	 * rises, and again once the previous demand's deadline has passed.
	 */
	demand = level > MG_LEVEL_NORMAL && target > 0 &&
		 (level > old || !s->demand_active ||
		  now_ms - s->demand_ms >= svc->release_deadline_ms);
	if (demand) {
		s->demand_active = true;
		s->demand_ms = now_ms;
	}
	if (level == MG_LEVEL_NORMAL)
		s->demand_active = false;

	*ret = (struct policy_decision){
		.level = level,
		.rose = level > old,
		.cleared = level == MG_LEVEL_NORMAL && old != MG_LEVEL_NORMAL,
		.utilization = policy_utilization_bp(in->working_set, in->budget),
		.out = out,
		.target = target,
	};
	d->level = (uint8_t)level;
	/* Whatever raised the level (an OOM kill whose working set is the
	 * dying process's, a budget lowered at runtime), the directive acts
	 * at least as hard as the level's own threshold would make it.  The
	 * throttle only while the signals still hold the level: one waiting
	 * out its calm keeps the GC target and the caches' size, but turning
	 * away work that now fits is a cost with nothing to show for it (a
	 * cache that evicted at CRITICAL and is back at 75 % shed a quarter
	 * of its requests for 2 s), and the next sample that needs it brings
	 * it back. */
	held = level_min(level, policy_level_hold(svc, p, &sig));
	gc_out = out_max(out, policy_level_out(p->cp, svc, level));
	throttle_out = out_max(out, policy_level_out(p->cp, svc, held));
	d->gc_percent = policy_gc_percent(level, gc_out, svc->min_gc_percent);
	d->throttle = policy_throttle(level, throttle_out, svc->max_throttle);
	d->soft_limit = policy_soft_limit(level, svc->warn, in->budget);
	/* The clients check the limit against their heaps; what the cgroup
	 * holds besides (code, stacks, page cache, processes that do not
	 * report) is not theirs to give.  Never below half: a stale or odd
	 * report must not take the clients' whole allowance. */
	if (in->unowned > 0) {
		uint64_t floor = d->soft_limit / 2;

		d->soft_limit = d->soft_limit - floor > in->unowned ? d->soft_limit - in->unowned
								       : floor;
	}
	d->release = demand ? target : 0;
	d->deadline_ms = demand ?
		policy_deadline_ms(level, svc->release_deadline_ms) : 0;

	if (sig.utilization != POLICY_UTIL_UNKNOWN &&
	    policy_level_hold(svc, p, &(struct policy_signals){
		    .utilization = sig.utilization,
	    }) == MG_LEVEL_NORMAL)
		s->usage_calm += credit;
	else
		s->usage_calm = 0;
	ret->action = policy_escalate(&(struct policy_escalation_input){
		.enforce = svc->enforce,
		.level = level,
		.in_force = s->escalation,
		.working_set = in->working_set,
		.budget = in->budget,
		.clock_running = s->clock_running,
		.now_ms = now_ms,
		.deadline_ms = s->clock_deadline_ms,
		.limit_hit = events_grew(&in->events, &s->clock_events),
		.usage_normal = s->usage_calm >= need,
	});
}

void policy_escalated(struct policy_state *s, const struct conf_service *svc,
		      enum policy_action action, uint64_t now_ms)
{
	switch (action) {
	case POLICY_ACTION_HIGH:
		s->escalation = MG_ESCALATION_HIGH;
		/* Give the kernel's reclaim at memory.high a whole deadline,
		 * and judge memory.events growth from now on, before a kill. */
		clock_start(s, svc, &s->events, now_ms);
		break;
	case POLICY_ACTION_RESTORE:
		s->escalation = MG_ESCALATION_NONE;
		/* A new escalation needs a new clock: the old deadline has
		 * passed, and the next tick would write memory.high again at
		 * once (tests/vm: a budget raised to 1G, memory.high put back
		 * to 400M, then written as 1G on the next tick, and so on). */
		s->clock_running = false;
		break;
	case POLICY_ACTION_KILL:
		s->escalation = MG_ESCALATION_KILLED;
		s->clock_running = false;
		break;
	case POLICY_ACTION_NONE:
		break;
	}
}

/* The state a directive sets, as the wire carries it: every field of the
 * field table but the demand (release, deadline_ms), which is an event.
 * Encoding instead of comparing members keeps this in step with any field
 * appended to DIRECTIVE.  Returns the body's length, or 0 when `d` does
 * not encode (then it is news whatever it is compared with). */
static size_t directive_state(const struct mg_directive *d, uint8_t buf[static 128])
{
	struct mg_msg m = { .hdr = { .type = MG_MSG_DIRECTIVE } };
	int n;

	m.directive = *d;
	m.directive.release = 0;
	m.directive.deadline_ms = 0;
	n = proto_msg_encode(&m, buf, 128);
	return n > 0 ? (size_t)n : 0;
}

bool policy_directive_changed(const struct mg_directive *old,
			      const struct mg_directive *new)
{
	uint8_t a[128], b[128];
	struct mg_directive o;
	size_t na, nb;

	if (!old)
		return true;
	/* A demand is news even when it repeats the last one's bytes:
	 * policy_tick() only makes one once per deadline. */
	if (new->release > 0)
		return true;
	/* At NORMAL, shares follow every REPORT's heap: a soft limit that
	 * moved by less than 1/POLICY_SOFT_SLACK is no news. */
	o = *old;
	if (new->level == MG_LEVEL_NORMAL && o.level == MG_LEVEL_NORMAL && o.soft_limit &&
	    new->soft_limit) {
		uint64_t d = o.soft_limit > new->soft_limit ? o.soft_limit - new->soft_limit
							  : new->soft_limit - o.soft_limit;

		if (d < o.soft_limit / POLICY_SOFT_SLACK)
			o.soft_limit = new->soft_limit;
	}
	na = directive_state(&o, a);
	nb = directive_state(new, b);
	return na == 0 || na != nb || memcmp(a, b, na) != 0;
}
