// SPDX-License-Identifier: MIT

package memguard

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"time"
)

// ErrShed is what Check returns for a call that the admission gate
// rejected: the daemon asked this process to shed that share of its work.
var ErrShed = errors.New("memguard: request shed to relieve memory pressure")

// The admission gate of the process.  Its throttle is the running
// client's (0 without one), in ‰ of calls to reject.  Each call takes a
// ticket from one counter; a ticket is rejected when a hash of it falls
// under the throttle, so over many calls the share rejected is the
// throttle's, whatever goroutines the calls come from.
var gate struct {
	throttle atomic.Uint32
	calls    atomic.Uint64
	rejected atomic.Uint64
	seed     uint64
}

func init() {
	gate.seed = uint64(time.Now().UnixNano())
}

// splitmix64: turns consecutive tickets into well-spread numbers.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Admit says whether to take on a new piece of work (a request, a job):
// false for the share of calls the daemon's throttle asks to shed, true
// otherwise, and always true while no daemon is connected or throttling.
// It is lock-free (an atomic add and an atomic load) and cheap enough to
// call for every request, from any goroutine.  The calls it admitted and
// rejected are reported to the daemon.
func Admit() bool {
	n := gate.calls.Add(1)
	t := gate.throttle.Load()
	if t == 0 {
		return true
	}
	if ((splitmix64(n^gate.seed)>>32)*throttleMax)>>32 < uint64(t) {
		gate.rejected.Add(1)
		return false
	}
	return true
}

// admitCounts returns the calls of Admit that admitted and that rejected
// work since the process started.
func admitCounts() (admitted, rejected uint64) {
	r := gate.rejected.Load()
	return gate.calls.Load() - r, r
}

// Check is Admit as a plain func(ctx) error, to wire the gate into any
// framework (a gRPC interceptor, a job queue) in one line: it returns
// ctx.Err() for a context already done, ErrShed for a call the gate
// rejected, and nil to go ahead.
func Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !Admit() {
		return ErrShed
	}
	return nil
}

// RetryAfter is the value of the Retry-After header that Middleware sends
// with a shed request's 503, in seconds.
const RetryAfter = "1"

// Middleware wraps h with the admission gate: a request that Admit
// rejects is answered 503 Service Unavailable with "Retry-After: 1" and
// does not reach h; every other request goes to h unchanged.
func Middleware(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !Admit() {
			w.Header().Set("Retry-After", RetryAfter)
			http.Error(w, "memguard: shedding load, retry later", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})
}
