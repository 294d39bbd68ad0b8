// SPDX-License-Identifier: MIT

// Package memguard makes a Go program a client of memguardd, the daemon
// that keeps the services of a Linux host inside their memory budgets.
//
// A service calls Start once and Close when it exits:
//
//	c, err := memguard.Start(memguard.Options{})
//	if err != nil { ... }        // bad options only
//	defer c.Close()
//	http.ListenAndServe(addr, memguard.Middleware(mux))
//
// The client speaks docs/protocol.md over a SOCK_SEQPACKET Unix socket
// ("unixpacket"), with the Go standard library only.  It turns the
// daemon's directives into the Go runtime's own levers: the GC percent
// into debug.SetGCPercent, the soft limit into debug.SetMemoryLimit (so
// the runtime's scavenger returns pages by itself), a release demand into
// the application's OnRelease hook and then, for what is still owed,
// debug.FreeOSMemory (unless the runtime is at its memory limit with few
// free pages, where it returns nothing), and the throttle into Admit,
// Middleware and Check.
// At Normal the program's own GOGC comes back as it was, and GOMEMLIMIT is
// the lower of the program's own and the daemon's soft limit (sent at every
// level once the budget is known); Close puts both back as they were.
// Every report interval it sends the runtime's memory figures
// (runtime/metrics) to the daemon.
//
// Between directives the client enforces the soft limit by itself (the
// local limit): a goroutine compares the runtime's resident memory plus
// Options.ExternalBytes with it, and past it the client takes a Warn's
// actions on its own (GC percent 50 at most), past 9/8 of it a Critical's
// (GC percent 25, a quarter of Admit's calls rejected), and flags its
// reports so that the daemon looks at once (Stats.LocalLevel).  While the
// heap grows, at any level, Admit also rejects the share of the growth
// that would not fit under 9/8 of the soft limit within 2 seconds, all of
// it once past 9/8 (Stats.GrowthThrottle): work that stays live is shed
// before it is admitted, not once it is.
//
// Without a daemon nothing changes: Admit admits, the runtime keeps its
// settings, and the client reconnects in the background.  Problems go to
// Options.Log as error values; the package never panics on the daemon's
// account and never writes to stderr.
//
// A Go program does not fork without exec, so the C library's fork rules
// have no counterpart here: a child started with os/exec is a new program
// that starts its own client.
package memguard
