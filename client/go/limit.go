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
)

// localWatch is what the watch goroutine shares with the client's.
type localWatch struct {
	next     atomic.Uint64 // heap at which the local level would rise; 0 = nothing to watch
	external atomic.Uint64 // Options.ExternalBytes as last read
	hit      chan struct{} // the heap went past next (capacity 1)
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
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		wait := limitPollFar
		if next := c.local.next.Load(); next != 0 {
			heap := ReadHeap().Resident() + c.local.external.Load()
			if heap > next {
				select {
				case c.local.hit <- struct{}{}:
				default:
				}
			} else if heap > next-next/4 {
				wait = limitPollNear
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
	return c.localLevel != before
}

// limitMerge is the directive in force: the daemon's, made as strict as
// the local level's actions where they are stricter.
func limitMerge(d directive, local Level) directive {
	var gc, throttle uint16
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
