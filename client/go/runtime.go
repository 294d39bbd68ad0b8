// SPDX-License-Identifier: MIT

package memguard

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// HeapStats are the Go runtime's memory figures, from runtime/metrics, in
// the terms of the REPORT message; all in bytes.
type HeapStats struct {
	Sys      uint64 // all memory the runtime has mapped (/memory/classes/total)
	Inuse    uint64 // in heap objects, live or not yet swept (/memory/classes/heap/objects)
	Idle     uint64 // free heap pages still resident (/memory/classes/heap/free)
	Released uint64 // free heap pages returned to the kernel (/memory/classes/heap/released)
}

// Resident is the memory of the runtime that occupies RAM: Sys − Released.
func (h HeapStats) Resident() uint64 {
	if h.Released > h.Sys {
		return 0
	}
	return h.Sys - h.Released
}

var heapMetrics = []string{
	"/memory/classes/total:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
}

// ReadHeap reads the runtime's memory figures.  It does not stop the
// world.
func ReadHeap() HeapStats {
	s := make([]metrics.Sample, len(heapMetrics))
	for i, n := range heapMetrics {
		s[i].Name = n
	}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	return HeapStats{Sys: v(0), Inuse: v(1), Idle: v(2), Released: v(3)}
}

// GCCPUFraction is the share of the CPU time available to the program
// that the garbage collector has used since the program started
// (runtime.MemStats.GCCPUFraction).  Go 1.19's runtime/metrics has no
// such figure, so it stops the world briefly to read MemStats.
func GCCPUFraction() float64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.GCCPUFraction
}

// runtimeLevers applies the daemon's GC percent and soft limit to the Go
// runtime and puts the program's own settings back when the daemon asks
// for nothing any more.  Used by the client's goroutine only.
type runtimeLevers struct {
	directed bool  // our values are in force, not the program's
	ownGC    int   // the program's GOGC when we took over (-1: off)
	ownLimit int64 // the program's GOMEMLIMIT when we took over
	gc       int   // GC percent we set
	limit    int64 // memory limit we set
}

// apply sets GOGC to min(program's, gcPercent) and GOMEMLIMIT to
// min(program's, softLimit), 0 meaning "the program's own" for each.
// When both are 0 the program's own values come back exactly as they were
// when the first directive took over.
func (r *runtimeLevers) apply(gcPercent uint16, softLimit uint64) {
	if gcPercent == 0 && softLimit == 0 {
		if r.directed {
			debug.SetGCPercent(r.ownGC)
			debug.SetMemoryLimit(r.ownLimit)
			r.directed = false
		}
		return
	}
	if !r.directed {
		// Reading GOGC means setting it: set what we are about to set
		// anyway, or "off", which by itself starts no collection.
		if gcPercent > 0 {
			r.ownGC = debug.SetGCPercent(int(gcPercent))
		} else {
			r.ownGC = debug.SetGCPercent(-1)
		}
		r.gc = math.MinInt
		r.ownLimit = debug.SetMemoryLimit(-1)
		r.limit = r.ownLimit
		r.directed = true
	}
	gc := r.ownGC
	if gcPercent > 0 && (gc < 0 || int(gcPercent) < gc) {
		gc = int(gcPercent)
	}
	limit := r.ownLimit
	if softLimit > 0 && softLimit < uint64(limit) {
		limit = int64(softLimit)
	}
	if gc != r.gc {
		debug.SetGCPercent(gc)
		r.gc = gc
	}
	if limit != r.limit {
		debug.SetMemoryLimit(limit)
		r.limit = limit
	}
}

// inForce is the GC percent of a directive that is in force now, for
// REPORT: 0 when the program's own GOGC is (no directive, or one that
// would have raised it).
func (r *runtimeLevers) inForce() uint16 {
	if !r.directed || r.gc == r.ownGC || r.gc <= 0 || r.gc > 0xffff {
		return 0
	}
	return uint16(r.gc)
}
