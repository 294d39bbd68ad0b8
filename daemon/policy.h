/* SPDX-License-Identifier: MIT */
/*
 * The daemon's decisions, as pure functions: no I/O, no logging, no globals,
 * no clock.  Time comes in as `now_ms` (CLOCK_MONOTONIC, milliseconds) and
 * every bit of memory between ticks lives in a struct policy_state that the
 * caller holds, one per service.
 *
 * Units follow conf.h and the wire: sizes in bytes, durations in ms, ratios
 * and PSI averages in hundredths of a percent ("bp": 8000 = 80 %), throttle
 * in permille, the controller output and GC targets in percent.
 *
 * One tick for one service (design.md, "Control law"):
 *
 *	policy_squeeze()            across services, when the host is under
 *	                            pressure: extra bytes and a floor level
 *	policy_tick()               level with hysteresis, controller output,
 *	                            gc %, throttle, release demand, escalation
 *	policy_client_directives()  the service's directive split per client
 *	policy_directive_changed()  whether a client needs to hear it
 *	policy_escalated()          after the caller carried out an escalation
 *
 * The smaller functions that policy_tick() is made of are public so that
 * each formula and transition can be tested on its own.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "proto/proto.h"

/*
 * Proportional gain of the controller (MemLimiter's law, see
 * policy_output()).  0.05 is MemLimiter's C = 5 in our scale (their output
 * is C / (1 − u) percent; ours multiplies by 100, so Cp = C / 100), tempered
 * by the ramp (u − warn) / (1 − warn).  With warn = 80 % it gives out = 8 at
 * u = 85 %, 25 at u = 90 % (entering CRITICAL: gc 75 %, throttle 250 ‰),
 * 75 at u = 95 % (gc reaches the default floor of 25 %) and saturates at
 * 99 just below u = 96 %: a smooth ramp over the whole WARN..budget band.
 * Cp = 0.2 would already saturate at u = 90 %, i.e. jump from nothing to
 * full GC and full throttle the moment CRITICAL begins: the "all at once"
 * the design rules out.  MemLimiter found C in 1..10 stable and larger
 * gains self-oscillating.  Tune with the benchmarks.
 */
#define POLICY_DEFAULT_CP 0.05           /* dimensionless gain */
#define POLICY_DEFAULT_EMA_ALPHA 1.0     /* new sample's weight; 1 = no smoothing */
#define POLICY_DEFAULT_HYSTERESIS 500    /* bp under a threshold to drop a level */
#define POLICY_DEFAULT_DROP_TICKS 2      /* ticks of calm to drop a level */
#define POLICY_DEFAULT_SQUEEZE_STEP 100  /* bp of MemTotal per host squeeze */

#define POLICY_DEFAULT_GROWTH_TAU_MS 1000 /* ms a burst's growth rate is remembered */

#define POLICY_OUT_MAX 99                /* percent; 100 − out stays ≥ 1 */
#define POLICY_SAMPLE_MIN_MS 10          /* ms: fastest sampling of a growing service */
#define POLICY_SOFT_SLACK 16             /* at NORMAL, soft limit moves < 1/16 are no news */
#define POLICY_UTIL_FULL 10000           /* bp: u = 1, the budget */
#define POLICY_UTIL_UNKNOWN UINT32_MAX   /* utilization without a budget */

struct policy_params {
	double cp;                       /* proportional gain, > 0 */
	double ema_alpha;                /* (0, 1]; outside that range: 1 */
	uint32_t hysteresis;             /* bp */
	unsigned drop_ticks;             /* ticks of calm to drop a level; 0 is taken as 1 */
	uint32_t squeeze_step;           /* bp of MemTotal */
	uint32_t growth_tau_ms;          /* decay of the growth rate; 0 is taken as 1 */
};

/*
 * A service's recent growth, from its working-set samples
 * (policy_growth_update()).  Zero-initialised means nothing seen.
 */
struct policy_growth {
	bool have;                       /* working_set and ms hold a sample */
	uint64_t working_set;            /* bytes, at the last sample */
	uint64_t ms;                     /* when it was taken */
	double rate;                     /* bytes/s; negative while shrinking */
	unsigned rising;                 /* samples in a row that grew */
};

/* memory.events counters, cumulative as the kernel gives them. */
struct policy_events {
	uint64_t high;
	uint64_t max;
	uint64_t oom;
};

/*
 * What a service's level is decided from, for one tick.  A pressure
 * threshold of 0 in struct conf_service turns that trigger off (PSI avg10
 * is 0.00 most of the time, so "≥ 0" would mean "always").
 */
struct policy_signals {
	uint32_t utilization;            /* bp, or POLICY_UTIL_UNKNOWN */
	uint32_t some_avg10;             /* bp, the cgroup's PSI some avg10 */
	uint32_t full_avg10;             /* bp, the cgroup's PSI full avg10 */
	bool events_grew;                /* memory.events high, max or oom grew this tick */
	enum mg_level floor;             /* lowest level allowed (host squeeze) */
};

/* Everything policy_tick() reads about a service for one tick. */
struct policy_input {
	uint64_t working_set;            /* bytes: memory.current − inactive_file */
	uint64_t budget;                 /* bytes; 0 = unknown */
	uint32_t some_avg10;             /* bp */
	uint32_t full_avg10;             /* bp */
	struct policy_events events;     /* now; zeros when unreadable */
	uint64_t releasable;             /* bytes: Σ policy_releasable() of clients */
	enum mg_level floor;             /* policy_squeeze()'s floor, else NORMAL */
	uint64_t extra_release;          /* policy_squeeze()'s bytes, else 0 */
	/* Look-ahead (design.md, "Two speeds of control"): the level, the
	 * controller output and the release target are decided on
	 * policy_projected(working_set, growth, reaction_ms).  0, 0: on the
	 * working set itself, as a flat service is. */
	/* Bytes of the working set outside the clients' heaps (working set
	 * less the resident heaps they reported): taken off the soft limit,
	 * down to half of it at most, so that the clients' local limit is
	 * reached when the cgroup reaches warn. */
	uint64_t unowned;
	double growth;                   /* bytes/s, policy_growth_update() */
	uint32_t reaction_ms;            /* clients' answer time + sampling interval */
	/* The daemon's tick in ms.  A level drops after drop_ticks × tick_ms
	 * of calm time, however often the service is sampled (every sample,
	 * probes included, adds the time since the previous one, at most a
	 * tick).  0: the caller has no clock of ticks; each call that is not
	 * a probe counts as one calm tick. */
	uint32_t tick_ms;
	/* A sample between two ticks: it may raise the level (and so send a
	 * directive at once) but does not move the output's EMA.  With
	 * tick_ms 0 it neither counts a calm tick toward a drop, so
	 * hysteresis runs at the tick's pace. */
	bool probe;
};

/*
 * Per-service memory between ticks.  Zero-initialised (or
 * policy_state_init()) means NORMAL, nothing seen, nothing in force.
 */
struct policy_state {
	enum mg_level level;
	/* Calm, as policy_calm_credit() counts it: ms (or calls, with a
	 * tick_ms of 0) in a row below the level, and in a row the working
	 * set alone was NORMAL (see usage_normal below). */
	uint64_t calm;
	uint64_t usage_calm;
	bool have_seen;                  /* seen_ms holds the last sample's time */
	uint64_t seen_ms;
	double out;                      /* smoothed controller output, percent */
	bool have_events;                /* `events` is the previous tick's */
	struct policy_events events;
	bool clock_running;              /* escalation clock */
	uint64_t clock_deadline_ms;
	struct policy_events clock_events; /* counters when the clock (re)started */
	enum mg_escalation escalation;   /* in force, as the caller carried out */
	bool demand_active;              /* a release was demanded at demand_ms */
	uint64_t demand_ms;
	bool have_budget;                /* `budget` is the previous tick's */
	uint64_t budget;
};

/* Next escalation step; the caller carries it out, then policy_escalated(). */
enum policy_action {
	POLICY_ACTION_NONE = 0,
	POLICY_ACTION_HIGH = 1,          /* write memory.high = budget */
	POLICY_ACTION_RESTORE = 2,       /* put memory.high back as it was */
	POLICY_ACTION_KILL = 3,          /* write 1 to cgroup.kill */
};

/* What policy_escalate() decides from. */
struct policy_escalation_input {
	enum mg_enforce enforce;
	enum mg_level level;             /* after this tick */
	enum mg_escalation in_force;
	uint64_t working_set;            /* bytes */
	uint64_t budget;                 /* bytes; 0 = unknown */
	bool clock_running;
	uint64_t now_ms;
	uint64_t deadline_ms;            /* the clock's deadline, when running */
	bool limit_hit;                  /* memory.events high, max or oom grew
					  * since the clock (re)started: the kernel
					  * throttled the cgroup at memory.high or
					  * found it out of memory */
	bool usage_normal;               /* the working set alone said NORMAL (under
					  * warn minus the hysteresis band, whatever
					  * PSI and memory.events say) for as many
					  * ticks as a level needs to drop */
};

/* One tick's result for one service. */
struct policy_decision {
	enum mg_level level;             /* after this tick */
	bool rose;                       /* the level went up this tick */
	bool cleared;                    /* fell back to NORMAL: send "cleared" */
	uint32_t utilization;            /* bp, or POLICY_UTIL_UNKNOWN */
	double out;                      /* smoothed controller output, 0..99 % */
	uint64_t target;                 /* bytes the service should give back now */
	/* For the whole service: soft_limit and release are totals that
	 * policy_client_directives() splits.  release is the target on ticks
	 * that make a demand, else 0. */
	struct mg_directive directive;
	enum policy_action action;       /* escalation step to take now */
};

/* A service as policy_squeeze() sees it. */
struct policy_squeeze_service {
	int32_t priority;                /* lower is squeezed first */
	uint64_t guarantee;              /* bytes, resolved from conf_size */
	uint64_t working_set;            /* bytes */
	uint64_t budget;                 /* bytes; 0 = unknown */
};

struct policy_squeeze_result {
	uint64_t release;                /* extra bytes to ask of this service */
	enum mg_level floor;             /* NORMAL, or WARN when squeezed */
};

/* policy.c */

/* Fill `*ret` with the POLICY_DEFAULT_* values. */
void policy_params_init(struct policy_params *ret);

/* Reset `*s` to NORMAL with nothing seen and no escalation in force. */
void policy_state_init(struct policy_state *s);

/*
 * working_set / budget in bp, rounded down, saturating at UINT32_MAX − 1.
 * Rounding down keeps "u ≥ threshold" exact for whole-bp thresholds.
 * POLICY_UTIL_UNKNOWN when `budget` is 0.
 */
uint32_t policy_utilization_bp(uint64_t working_set, uint64_t budget);

/*
 * The level the signals call for, without hysteresis: EMERGENCY when
 * u ≥ 100 % or events (high, max, oom) grew; CRITICAL when u ≥ critical or full ≥
 * pressure_full; WARN when u ≥ warn or some ≥ pressure_some; never below
 * sig->floor.
 */
enum mg_level policy_level_raw(const struct conf_service *svc,
			       const struct policy_signals *sig);

/*
 * The highest level the signals still hold a service at, with hysteresis:
 * as policy_level_raw() but with each utilization threshold (warn,
 * critical, 100 %) lowered by p->hysteresis bp.  Pressure and events
 * thresholds are not lowered.  Always ≥ policy_level_raw().
 */
enum mg_level policy_level_hold(const struct conf_service *svc,
				const struct policy_params *p,
				const struct policy_signals *sig);

/*
 * The calm time a sample at `now_ms` adds: the time since the previous
 * sample (s->seen_ms), at most `tick_ms`, so that a daemon that stalled
 * for seconds does not count them as calm it saw; `tick_ms` for the first
 * sample, 0 for one not later than the previous.  With a `tick_ms` of 0,
 * one call.  Does not update s->seen_ms.
 */
uint64_t policy_calm_credit(const struct policy_state *s, uint64_t now_ms,
			    uint32_t tick_ms);

/*
 * One sample of the level state machine at `now_ms`; updates s->level,
 * s->calm and s->seen_ms and returns the new level.  Rising is immediate.
 * The level drops only after policy_level_hold() has been below it for
 * p->drop_ticks × tick_ms of calm time in a row (policy_calm_credit()),
 * and then to policy_level_hold() of the last sample (several levels at
 * once when the inputs justify it).  A sample inside the band or above it
 * starts the count again.  Sampled once a tick, that is drop_ticks calm
 * ticks; sampled every 10 ms, still drop_ticks × tick_ms.  A `tick_ms` of
 * 0 counts calls: p->drop_ticks calm calls in a row.
 */
enum mg_level policy_level_step(struct policy_state *s,
				const struct policy_params *p,
				const struct conf_service *svc,
				const struct policy_signals *sig,
				uint64_t now_ms, uint32_t tick_ms);

/*
 * MemLimiter's proportional law, in percent:
 *	out = clamp(cp / (1 − u) · (u − warn) / (1 − warn) · 100, 0, 99)
 * with u = working_set / budget and warn = warn_bp / 10000.  99 when
 * u ≥ 1 (the formula divides by zero there); 0 when u ≤ warn or the budget
 * is unknown (0).
 */
double policy_output(double cp, uint32_t warn_bp, uint64_t working_set,
		     uint64_t budget);

/*
 * Exponential moving average: alpha · raw + (1 − alpha) · prev.  An alpha
 * outside (0, 1] is taken as 1 (no smoothing: returns raw).
 */
double policy_output_smooth(double prev, double raw, double alpha);

/*
 * GC percent for the directive: MG_GC_DEFAULT at NORMAL, else
 * max(min_gc_percent, 100 − out rounded), at most 65535.
 */
uint16_t policy_gc_percent(enum mg_level level, double out,
			   uint32_t min_gc_percent);

/*
 * Throttle in permille: min(max_throttle, out · 10 rounded) at CRITICAL
 * and EMERGENCY, 0 below.  Never above MG_THROTTLE_MAX.
 */
uint16_t policy_throttle(enum mg_level level, double out,
			 uint32_t max_throttle);

/*
 * Bytes the service should give back, before the host squeeze's extra is
 * added: 0 at NORMAL; working_set − warn · budget (0 when below, or without
 * a budget) at WARN and CRITICAL; at EMERGENCY everything releasable, and
 * never less than the WARN amount (reports can be stale or missing, and an
 * emergency must not ask for less than CRITICAL did).
 */
uint64_t policy_release_target(enum mg_level level, uint32_t warn_bp,
			       uint64_t working_set, uint64_t budget,
			       uint64_t releasable);

/*
 * Soft limit for the whole service in bytes: warn · budget at every level
 * (what the law aims usage back under, and at NORMAL the line past which
 * each client acts on its own at allocation speed, libmemguard-client(3)),
 * 0 (none) without a budget.
 */
uint64_t policy_soft_limit(enum mg_level level, uint32_t warn_bp,
			   uint64_t budget);

/*
 * Deadline of a release demand in ms: `release_deadline_ms` at CRITICAL and
 * EMERGENCY (clients release at once, without pacing), 0 (none: the
 * scavenger paces itself) at WARN and NORMAL.
 */
uint32_t policy_deadline_ms(enum mg_level level,
			    uint32_t release_deadline_ms);

/*
 * Clamp the resident figures of a client's REPORT (heap in use, idle,
 * external) to `cap`, what its cgroup can hold (the service's
 * memory.current, or its budget when that is unknown; 0 = leave the report
 * as it is).  A client's figures are its own word: one that reports more
 * than its cgroup holds must not shrink its neighbours' shares.
 */
void policy_report_clamp(struct mg_report *r, uint64_t cap);


/*
 * Bytes a client can give back quickly, from its REPORT: heap_idle (free
 * pages still resident) + external (caches the application counts and can
 * drop), saturating.  In-use heap is not counted: only a GC can shrink it,
 * and the GC percent already asks for that.
 */
uint64_t policy_releasable(const struct mg_report *r);

/*
 * Split `total` over `n` items in proportion to `weights`, into
 * `ret_shares` (n entries).  Each share is rounded down and the remainder
 * goes to the item with the largest weight (the first of equals), so the
 * shares add up to `total` exactly.  Items of weight 0 get 0, unless all
 * weights are 0: then the split is equal.  Nothing is written when n is 0.
 */
void policy_split(uint64_t total, const uint64_t *weights, size_t n,
		  uint64_t *ret_shares);

/*
 * The directive for each of `n` clients of a service, from the service's
 * directive `d` and each client's last REPORT (zeros when none came yet).
 * Level, gc % and throttle are copied.  d->soft_limit is split in
 * proportion to heap_inuse (live data earns allowance, idle pages do not,
 * so the scavenger's goal pulls them out); d->release in proportion to
 * policy_releasable(); both with policy_split().  A soft-limit share never
 * rounds to 0, which the wire reads as "no limit": a client whose share is
 * below a byte (no REPORT yet, or a tiny heap next to a big one) gets 1,
 * so the shares can add up to a little more than d->soft_limit (fewer
 * than n bytes).  A client whose release share is 0 gets no deadline.
 * The caller clamps the reports first (policy_report_clamp()).  Returns 0,
 * or -ENOMEM.
 */
int policy_client_directives(const struct mg_directive *d,
			     const struct mg_report *reports, size_t n,
			     struct mg_directive *ret);

/*
 * Bytes a host squeeze should free this round: `mem_total` · squeeze_step
 * when host_some_avg10 ≥ host_pressure (both bp; 0 = squeeze off), else 0.
 * A step per round rather than one big ask: host pressure is a 10 s
 * average, so it answers a release late, and demands repeat only once per
 * release deadline.
 */
uint64_t policy_squeeze_need(const struct policy_params *p,
			     uint64_t mem_total, uint32_t host_some_avg10,
			     uint32_t host_pressure);

/*
 * Squeeze services to free `need` bytes when host_some_avg10 ≥
 * host_pressure (0 = off).  Services are taken by priority, lowest first;
 * among equal priorities the one with most to give first, then the lower
 * index.  Each gives at most working_set − min(guarantee, budget) (the
 * guarantee cannot shelter usage above the service's own budget).  Writes
 * all `n` entries of `ret`: the extra release and, for each service asked
 * anything, a floor of WARN.  Returns the bytes asked in total (less than
 * `need` when the services cannot give more).
 */
uint64_t policy_squeeze(uint32_t host_some_avg10, uint32_t host_pressure,
			uint64_t need,
			const struct policy_squeeze_service *svcs, size_t n,
			struct policy_squeeze_result *ret);

/*
 * The next escalation step for a service (design.md: notify | high | kill):
 * - RESTORE when an escalation is in force and the level is back at NORMAL,
 *   or enforce is now `notify` (a reload lowered it);
 * - nothing more once KILLED, nor before the clock's deadline;
 * - HIGH at or past the deadline when enforce is high or kill, the level is
 *   still CRITICAL or above and the budget is known;
 * - KILL at or past the (restarted) deadline when enforce is kill, HIGH is
 *   in force, usage is above the budget and memory.events high, max or oom grew.
 */
enum policy_action policy_escalate(const struct policy_escalation_input *in);

/*
 * Feed one working-set sample taken at `now_ms` into `g` and return the
 * growth rate in bytes/s.  The first sample (or one not later than the
 * previous) gives the rate unchanged (0 at first).  A rate above the
 * current one is taken at once (growth is what the daemon must not be
 * late for); a lower one is approached with the weight
 * dt / (dt + p->growth_tau_ms), so a burst is remembered for about a τ and
 * a flat service decays to 0.
 */
double policy_growth_update(struct policy_growth *g, const struct policy_params *p,
			    uint64_t working_set, uint64_t now_ms);

/*
 * The growth to look ahead with: g->rate while the working set grew at
 * the last two samples in a row, else 0.  One jump alone (page cache
 * turning active, a burst that already ended) speeds up the sampling
 * (policy_sample_interval() takes g->rate) but raises no level before a
 * second sample confirms the growth.
 */
double policy_growth_ahead(const struct policy_growth *g);

/*
 * Where the working set will be `reaction_ms` from now, growing at
 * `growth` bytes/s: working_set + growth · reaction_ms / 1000, saturating.
 * A shrinking or flat service (growth ≤ 0) stays where it is: look-ahead
 * raises levels early, it never lowers one early.
 */
uint64_t policy_projected(uint64_t working_set, double growth, uint32_t reaction_ms);

/*
 * Whether a service's cgroup v1 usage thresholds (warn and critical,
 * through cgroup.event_control) should be armed now that its working set
 * is `working_set`: true from half of warn × budget up.  Registering a
 * threshold blocks the caller for an RCU grace period in the kernel
 * (synchronize_rcu(), 10–30 ms each here), so 1000 services armed at
 * once held the daemon's loop for 28 s; a service far below warn is
 * seen in time by the tick and, once it grows, by the sampling.  False
 * without a budget.  The caller keeps thresholds armed once they are
 * (disarming blocks as long).
 */
bool policy_thresholds_due(const struct conf_service *svc, uint64_t working_set,
			   uint64_t budget);

/*
 * Milliseconds until the next sample of a service: half the time its
 * working set, growing at `growth` bytes/s, takes to reach the next of
 * warn, critical and the budget above it (half, so that one more sample
 * still falls before the crossing), within [POLICY_SAMPLE_MIN_MS,
 * tick_ms].  `tick_ms` when the service is flat or shrinking, has no
 * budget, or is already over it.
 */
uint32_t policy_sample_interval(const struct conf_service *svc, uint64_t working_set,
				uint64_t budget, double growth, uint32_t tick_ms);

/*
 * The least controller output a directive of `level` carries, so that a
 * directive agrees with its level whatever raised it (PSI, memory.events,
 * an OOM kill, a budget lowered at runtime, a smoothed output): 0 below
 * CRITICAL; at CRITICAL the law's output at u = critical (25 % with the
 * defaults); at EMERGENCY POLICY_OUT_MAX (the GC floor, the throttle
 * ceiling).
 */
double policy_level_out(double cp, const struct conf_service *svc, enum mg_level level);

/*
 * One sample for one service (a tick, or a probe between ticks): level
 * (policy_level_step(), calm counted as in->tick_ms says), controller
 * output, directive, release demand and escalation action into `*ret`;
 * updates `*s`.  A release is demanded when the level rose, or when the
 * previous demand is at least release_deadline_ms old; ticks in between
 * carry release 0, so a demand is not answered twice while the working
 * set catches up.  When the budget differs from the previous tick's (a
 * SET_BUDGET, a reload, a new memory.max) the level is the raw level of
 * the new budget at once, down as well as up: hysteresis smooths usage,
 * not an admin's decision, and a level held for a budget that no longer
 * applies would send a directive whose fields disagree with it
 * (EMERGENCY with gc 100 % and no throttle).  The escalation clock starts
 * when the level reaches EMERGENCY and stops when it falls below CRITICAL.
 * Level, output and target are decided on the projected working set
 * (struct policy_input); the decision's utilization is the working set's
 * own.  gc % comes from max(output, policy_level_out(level)), the
 * throttle from max(output, policy_level_out()) of the level the signals
 * hold now (policy_level_hold()), which is lower while `level` waits out
 * its calm: a held level keeps its GC target, not its shedding.
 */
void policy_tick(struct policy_state *s, const struct policy_params *p,
		 const struct conf_service *svc, const struct policy_input *in,
		 uint64_t now_ms, struct policy_decision *ret);

/*
 * Record that the caller carried out `action` at `now_ms`: HIGH sets the
 * escalation to MG_ESCALATION_HIGH and restarts the clock (a full release
 * deadline before a kill is considered), RESTORE sets it to
 * MG_ESCALATION_NONE, KILL to MG_ESCALATION_KILLED.  Not called when the
 * action failed, so the next tick proposes it again.
 */
void policy_escalated(struct policy_state *s, const struct conf_service *svc,
		      enum policy_action action, uint64_t now_ms);

/*
 * Whether `new` must be sent to a client that last got `old` (NULL: none
 * yet): true when any field of the directive's state differs (every wire
 * field but release and deadline_ms, compared in their encoded form, so a
 * field appended to DIRECTIVE counts without touching this function), or
 * when `new` demands bytes.  A release falling back to 0 alone is not news,
 * nor at NORMAL a soft limit that moved by less than 1/POLICY_SOFT_SLACK of
 * the old one (shares follow every REPORT's heap; calm clients must not get
 * a DIRECTIVE each time).
 */
bool policy_directive_changed(const struct mg_directive *old,
			      const struct mg_directive *new);
