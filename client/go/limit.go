// SPDX-License-Identifier: MIT

package memguard

// The local limit (design.md, "Two speeds of control"; the C client's
// client/limit.c): the daemon's soft limit, checked where the heap grows,
// with no round trip.  GOMEMLIMIT at the soft limit already has the Go
// runtime collect to stay under it; what the runtime cannot do is shed
// work when the live heap itself does not fit.  So a goroutine watches the
// runtime's resident memory (runtime/metrics: total − released, no stop of
// the world) plus Options.ExternalBytes, and past the soft limit the
// client takes a WARN's actions on its own, past 9/8 of it a CRITICAL's
// (GC percent 25, a quarter of the work shed), at once, and says so in its
// REPORTs (header flag LOCAL_LIMIT) so that the daemon samples the service
// now.  The local level rises on its own and falls from CRITICAL to WARN
// once the heap is back under 17/16 of the limit; it ends when the
// daemon's directive is NORMAL and the heap is back under the soft limit.
//
// Those lines are positions, and a heap that grows fast passes them with
// work already admitted that stays live: at 200 MiB/s of work kept 6 s, a
// quarter shed from 9/8 of the limit on, or the daemon's half from its
// CRITICAL on, comes too late.  So the watch also measures how fast the
// heap grows (an average over limitGrowthTau) and sheds, at any level,
// the share of that growth that does not fit in the room left under 9/8
// of the soft limit within limitHorizon:
//
//	throttle = 1 − (9/8 · soft − heap) / (growth · limitHorizon)
//
// from 0 to all of it, and all of it once the heap is past 9/8 while it
// still grows.  Not capped at the daemon's default max_throttle (half), as
// it was: at 200 MiB/s of work kept 6 s, half still lets 100 MiB/s in with
// nothing leaving, so the heap passed 9/8 of the limit by ~90 MiB before
// its first work expired (peaks 972–1010 MiB of a 1 GiB hard limit; all of
// it: 920 MiB).  Work admitted past the line that stays live is what an
// OOM kill takes with everything else.  Under it the
// heap closes in on 9/8 of the limit no faster than with a time constant
// of limitHorizon, whatever it grows from and however long its work
// lives; a heap that stops growing (work that fits: its old work leaves as
// fast as new comes) sheds nothing, and a heap that grows slowly starts
// shedding only when it is close.  It knows neither the request rate nor
// how long work is kept: the share follows the growth it sees.

import (
	"sync/atomic"
	"time"
)

// The rules of client/client-internal.h, "The local limit".
const (
	limitCritNum      = 9 // CRITICAL past 9/8 of the soft limit
	limitCritDen      = 8
	limitCalmNum      = 17 // CRITICAL falls to WARN under 17/16
	limitCalmDen      = 16
	limitWarnGC       = 50  // percent, local WARN's GC target
	limitCritGC       = 25  // percent, local CRITICAL's
	limitCritThrottle = 250 // ‰, local CRITICAL's admission throttle

	// The watch looks at the heap every limitPollNear while it is
	// within a quarter of the next threshold, every limitPollFar
	// otherwise: at 200 MiB/s a heap moves 2 MiB in 10 ms.
	limitPollNear = 10 * time.Millisecond
	limitPollFar  = 100 * time.Millisecond

	flagLocalLimit = 0x1 // REPORT header flag bit 0, LOCAL_LIMIT

	// The growth throttle (above).  limitHorizon is its time constant;
	// limitGrowthTau the averaging of the growth rate, long enough to
	// smooth the garbage of one collection, short against the horizon;
	// a change of the throttle by limitGrowthStep or more wakes the
	// client's goroutine (smaller ones wait for the next).
	limitHorizon     = 2 * time.Second
	limitGrowthTau   = 250 * time.Millisecond
	limitGrowthMax   = throttleMax // ‰, all of it (above)
	limitGrowthStep  = 25          // ‰
	limitGrowthFloor = 64
)

// localWatch is what the watch goroutine shares with the client's.
type localWatch struct {
	next     atomic.Uint64 // heap at which the local level would rise; 0 = nothing to watch
	ceiling  atomic.Uint64 // 9/8 of the soft limit, for the growth throttle; 0 = none
	external atomic.Uint64 // Options.ExternalBytes as last read
	throttle atomic.Uint32 // the growth throttle, ‰
	looks    atomic.Uint64 // looks at the heap with something to watch (tests wait on it)
	hit      chan struct{} // the heap went past next, or the throttle moved (capacity 1)
}

// growthRate is the watch's average of the heap's growth, in bytes/s.
type growthRate struct {
	have bool
	heap uint64
	at   time.Time
	rate float64
}

// update feeds one look at the heap: the rate between two looks, averaged
// with the weight dt / (dt + limitGrowthTau), so a flat heap decays to 0
// in a few τ.  Looks less than a millisecond apart are skipped.
func (g *growthRate) update(heap uint64, now time.Time) float64 {
	if !g.have {
		g.have, g.heap, g.at = true, heap, now
		return g.rate
	}
	dt := now.Sub(g.at)
	if dt < time.Millisecond {
		return g.rate
	}
	inst := (float64(heap) - float64(g.heap)) / dt.Seconds()
	w := float64(dt) / float64(dt+limitGrowthTau)
	g.rate += w * (inst - g.rate)
	g.heap, g.at = heap, now
	return g.rate
}

// growthThrottle is the share of the growth to shed, in ‰ (rule above):
// 0 without a ceiling or while the heap does not grow by more than
// 1/limitGrowthFloor of the ceiling within limitHorizon (the runtime's own
// ups and downs, and the tail of an average that decays but never ends).
func growthThrottle(heap, ceiling uint64, rate float64) uint32 {
	if ceiling == 0 || !(rate*limitHorizon.Seconds() > float64(ceiling/limitGrowthFloor)) {
		return 0
	}
	if heap >= ceiling {
		return limitGrowthMax
	}
	f := 1 - float64(ceiling-heap)/(rate*limitHorizon.Seconds())
	if !(f > 0) {
		return 0
	}
	if t := uint32(f*throttleMax + 0.5); t < limitGrowthMax {
		return t
	}
	return limitGrowthMax
}

// limitNext is the heap at which the local level rises next: the soft
// limit at Normal, 9/8 of it at Warn, 0 (nothing to watch) higher up or
// without a soft limit.
func limitNext(local Level, soft uint64) uint64 {
	switch local {
	case Normal:
		return soft
	case Warn:
		if soft/limitCritDen > ^uint64(0)/limitCritNum {
			return ^uint64(0)
		}
		return soft / limitCritDen * limitCritNum
	}
	return 0
}

// watch is the watch goroutine: it wakes the client's goroutine when the
// heap passes the next threshold, and does nothing else.
func (c *Client) watch() {
	t := time.NewTimer(limitPollFar)
	defer t.Stop()
	var growth growthRate
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		wait := limitPollFar
		next, ceiling := c.local.next.Load(), c.local.ceiling.Load()
		if next == 0 && ceiling == 0 {
			growth = growthRate{}
			c.local.throttle.Store(0)
			t.Reset(wait)
			continue
		}
		heap := ReadHeap().Resident() + c.local.external.Load()
		rate := growth.update(heap, time.Now())
		c.local.looks.Add(1)
		wake := next != 0 && heap > next
		if next != 0 && heap > next-next/4 {
			wait = limitPollNear
		}
		thr := growthThrottle(heap, ceiling, rate)
		if old := c.local.throttle.Load(); thr != old {
			c.local.throttle.Store(thr)
			if thr == 0 || old == 0 || thr >= old+limitGrowthStep || old >= thr+limitGrowthStep {
				wake = true
			}
		}
		if thr > 0 || (ceiling != 0 && rate > 0 &&
			float64(heap)+rate*limitHorizon.Seconds() > float64(ceiling-ceiling/4)) {
			wait = limitPollNear
		}
		if wake {
			select {
			case c.local.hit <- struct{}{}:
			default:
			}
		}
		t.Reset(wait)
	}
}

// limitEvaluate sets the local level from the heap and the daemon's soft
// limit (rules above); true when it changed.  On the client's goroutine.
func (c *Client) limitEvaluate() bool {
	soft, before := c.daemon.softLimit, c.localLevel
	heap := ReadHeap().Resident()
	if c.opts.ExternalBytes != nil {
		ext := c.opts.ExternalBytes()
		c.local.external.Store(ext)
		if heap += ext; heap < ext {
			heap = ^uint64(0)
		}
	}
	want := Normal
	switch {
	case soft == 0:
	case heap/limitCritNum > soft/limitCritDen:
		want = Critical
	case heap > soft:
		want = Warn
	}
	switch {
	case want > c.localLevel:
		// Rising at once: that is the point of it.
		c.localLevel = want
	case want == Normal && (c.daemon.level == Normal || soft == 0):
		// The daemon is the authority: the local action ends when it
		// says Normal and the heap is under the limit again.
		c.localLevel = Normal
	case c.localLevel > Warn && want < c.localLevel &&
		heap/limitCalmNum <= soft/limitCalmDen:
		// Back under 17/16: no more shedding of our own, the rest of
		// a WARN's actions until the daemon says Normal.
		c.localLevel = Warn
	}
	c.local.next.Store(limitNext(c.localLevel, soft))
	c.local.ceiling.Store(limitNext(Warn, soft))
	thr := c.local.throttle.Load()
	if soft == 0 {
		thr = 0
	}
	changed := c.localLevel != before || thr != c.growthThrottle
	c.growthThrottle = thr
	return changed
}

// limitMerge is the directive in force: the daemon's, made as strict as
// the local level's actions and the growth throttle (‰) where they are
// stricter.
func limitMerge(d directive, local Level, growth uint32) directive {
	var gc, throttle uint16
	if growth > uint32(d.throttle) {
		d.throttle = uint16(growth)
	}
	switch local {
	case Warn:
		gc = limitWarnGC
	case Critical, Emergency:
		gc, throttle = limitCritGC, limitCritThrottle
	default:
		return d
	}
	if local > d.level {
		d.level = local
	}
	if d.gcPercent == 0 || gc < d.gcPercent {
		d.gcPercent = gc
	}
	if throttle > d.throttle {
		d.throttle = throttle
	}
	return d
}
