// SPDX-License-Identifier: MIT

package memguard

import (
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Level is how hard the daemon is pushing; the values are those of the
// wire.
type Level uint8

// The levels, in increasing order of pressure.
const (
	Normal    Level = 0 // within budget: the program's own GC settings, nothing shed
	Warn      Level = 1 // near the budget: collect more often, return free pages
	Critical  Level = 2 // close to it: also shed a share of new work
	Emergency Level = 3 // at or over it: release everything releasable now
)

// String returns the level's name as the daemon logs it.
func (l Level) String() string {
	switch l {
	case Normal:
		return "NORMAL"
	case Warn:
		return "WARN"
	case Critical:
		return "CRITICAL"
	case Emergency:
		return "EMERGENCY"
	}
	return fmt.Sprintf("Level(%d)", uint8(l))
}

// DefaultSocket is the daemon's socket when neither Options.Socket nor
// $MEMGUARD_SOCKET names one.
const DefaultSocket = "/run/memguard/memguardd.sock"

// Timing of the connection, as in libmemguard-client.
const (
	backoffMin    = 100 * time.Millisecond // first reconnect delay
	backoffMax    = 800 * time.Millisecond // longest while no daemon answers
	refusedWait   = 5 * time.Second        // after a refusal the same HELLO would meet again (nominal)
	helloTimeout  = 5 * time.Second        // a WELCOME may take this long
	reportDefault = time.Second            // until WELCOME says otherwise
	reportMin     = 10 * time.Millisecond
	reportMax     = time.Minute
	orphanGrace   = 10 * time.Second // the directive outlives the daemon this long
	writeTimeout  = time.Second      // a daemon that does not read is dropped
	drainMax      = 4096             // unread datagrams Close discards, at most
)

// Options configure Start.  The zero value takes everything from the
// environment and the defaults.  The functions are called on the
// client's own goroutine, one at a time, in the order level, GC, release
// for each directive; they must not call Close.
type Options struct {
	// Socket is the daemon's socket.  "": $MEMGUARD_SOCKET, else
	// DefaultSocket.
	Socket string
	// Service names the service this process belongs to (printable
	// ASCII, at most 255 bytes).  "": $MEMGUARD_SERVICE, else the daemon
	// finds it from the process's cgroup.  A name that is not the
	// cgroup's service gets the client refused.
	Service string
	// Process is the name the daemon shows for this process.  "": the
	// base name of os.Args[0], with bytes that may not travel replaced.
	Process string

	// Log receives every problem the client meets: a daemon that cannot
	// be reached (once per outage), a refusal (*RefusedError; once until
	// a daemon accepts the client), a malformed message (*ProtocolError),
	// a lost connection.  The client
	// recovers from each by itself (it reconnects); nil discards them.
	// The package never writes to stderr or panics on the daemon's
	// account.
	Log func(err error)
	// OnLevel is called on every change of level, Normal included.
	OnLevel func(level Level)
	// OnGC is called when the GC percent the daemon asks for changes
	// (0: the program's own again), after the package has set the Go
	// runtime's.  For other collectors the program runs (an embedded
	// interpreter, a cache sized by a percentage).
	OnGC func(percent int)
	// OnRelease is asked to drop up to bytes of the application's
	// caches or pools (math.MaxUint64: everything it can) and returns
	// the bytes it freed.  Whatever it does not free of a demand is then
	// taken from the Go heap with debug.FreeOSMemory, on a goroutine of
	// its own, so that directives coming during that collection take
	// effect at once; RELEASED follows when it is done.  Not while the
	// runtime is at its memory limit with few free pages: it already
	// collects back to back, and the collection would return nothing.
	OnRelease func(bytes uint64) uint64
	// ExternalBytes, when set, returns the memory the application holds
	// outside the Go heap (cgo allocations, mapped buffers) and could
	// drop, as mg_client_set_external_bytes() in C.  The local limit
	// adds it to the runtime's memory, and it goes in every REPORT,
	// where the daemon weighs release demands by it.  A cache on the Go
	// heap is in the runtime's figures already: given here too, it
	// would count twice.
	ExternalBytes func() uint64
}

// RefusedError is an ERROR message: the daemon refused this client.  The
// client reconnects, after 2.5–5 s when the same HELLO would be refused
// again (a wrong service, an unknown one, a version the daemon does not
// speak, no permission).
type RefusedError struct {
	Code uint32 // the error code of docs/protocol.md §8.6
	Text string // the daemon's reason, control characters replaced by '?'
}

// Error says that the daemon refused the client, with the code and the
// daemon's text.
func (e *RefusedError) Error() string {
	return fmt.Sprintf("memguardd refused this client (code %d: %s)", e.Code, e.Text)
}

// ErrStarted is returned by Start while another Client of the process is
// running: the Go runtime's settings are the process's, so one client
// steers them.
var ErrStarted = errors.New("memguard: a client is running in this process already")

// running is the process's one client.
var running atomic.Pointer[Client]

// Stats is the state of a client, for status pages and tests.
type Stats struct {
	Connected      bool   // registered with a daemon now
	ClientID       uint64 // the daemon's id for this connection; 0 when not connected
	Service        string // the service the daemon matched this process to
	Budget         uint64 // the service's budget in bytes; 0 = none known
	Level          Level  // the level in force
	GCPercent      int    // the GC percent the daemon asks for; 0 = the program's own
	Throttle       int    // ‰ of calls Admit rejects now
	SoftLimit      uint64 // the daemon's soft limit in bytes; 0 = none
	LocalLevel     Level  // the level the local limit holds on its own; Normal = none
	GrowthThrottle int    // ‰ the local limit sheds for the heap's growth (limit.go); in Throttle too
	Admitted       uint64 // calls of Admit that admitted, since the process started
	Rejected       uint64 // calls of Admit that rejected
	Releases       uint64 // release demands answered
	ReleasedTotal  uint64 // bytes released on demand, hooks and runtime together
	Connects       uint64 // connections that got a WELCOME
}

// Client is a process's membership of memguard: a goroutine that keeps a
// connection to memguardd, applies its directives to the Go runtime and
// the admission gate, and reports the runtime's memory.
type Client struct {
	opts    Options
	socket  string
	service string
	process string

	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu    sync.Mutex // guards stats for Stats()
	stats Stats

	// Below: the client goroutine's own.
	conn           *net.UnixConn
	quit           chan struct{} // closed when conn is dropped
	in             chan received
	state          int
	seq            uint32
	helloSeq       uint32
	backoff        time.Duration
	failures       int
	refusals       int // ERRORs since the last WELCOME
	nextConnect    time.Time
	helloBy        time.Time
	nextReport     time.Time
	reportEvery    time.Duration
	orphanAt       time.Time
	daemon         directive // the daemon's last, without its demand
	applied        directive // in force: the daemon's merged with the local level's
	localLevel     Level
	growthThrottle uint32 // ‰, the watch's growth throttle in force (limit.go)
	local          localWatch
	levers         runtimeLevers
	rng            *rand.Rand
	gen            uint64 // connections made, to tell a release's connection
	jobs           chan releaseJob
	released       chan []releaseJob
}

const (
	stateIdle  = iota // no connection; connect at nextConnect
	stateHello        // HELLO sent, WELCOME awaited
	stateReady        // WELCOME received: reporting
)

type received struct {
	m   *message
	err error
}

func env(name string) string {
	// As secure_getenv: a set-id program does not take its socket from
	// whoever started it.
	if os.Getuid() != os.Geteuid() || os.Getgid() != os.Getegid() {
		return ""
	}
	return os.Getenv(name)
}

// printableName keeps what may travel as a name: printable ASCII, 255
// bytes.
func printableName(s string) string {
	b := []byte(s)
	if len(b) > nameMax {
		b = b[:nameMax]
	}
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '_'
		}
	}
	return string(b)
}

// Start makes this process a client of memguardd and returns at once: the
// connection is made on the client's goroutine, and a daemon that is
// absent is not an error (the client keeps trying, from 100 ms doubling
// to 0.8 s, and Admit admits everything meanwhile).  Start fails only for
// bad options (a service or process name that is not printable ASCII or
// longer than 255 bytes, a socket path longer than 107 bytes) and with
// ErrStarted while another client of the process runs.
//
// The daemon's directives are applied to the Go runtime: its GC percent
// through debug.SetGCPercent (never above the program's own GOGC), its
// soft limit through debug.SetMemoryLimit (never above the program's own
// GOMEMLIMIT), its release demands through Options.OnRelease and then,
// only for what is still owed, debug.FreeOSMemory (not while the runtime
// is at its memory limit with few free pages); its throttle through
// Admit.  At Normal the program's own GOGC comes back exactly as it was,
// and GOMEMLIMIT is the lower of the program's own and the soft limit
// (which memguardd sends at every level once it knows the budget); at
// Close both come back exactly as they were.  Without a daemon for 10 s
// the last directive lapses to Normal; the throttle lapses at once.
func Start(o Options) (*Client, error) {
	c := &Client{opts: o, socket: o.Socket, service: o.Service, process: o.Process}
	if c.socket == "" {
		c.socket = env("MEMGUARD_SOCKET")
	}
	if c.socket == "" {
		c.socket = DefaultSocket
	}
	if len(c.socket) > 107 {
		return nil, fmt.Errorf("memguard: socket path of %d bytes, over 107", len(c.socket))
	}
	if c.service == "" {
		c.service = env("MEMGUARD_SERVICE")
	}
	if !validName(c.service) {
		return nil, fmt.Errorf("memguard: service %q is not printable ASCII of at most 255 bytes", c.service)
	}
	if c.process == "" {
		c.process = printableName(filepath.Base(os.Args[0]))
	} else if !validName(c.process) {
		return nil, fmt.Errorf("memguard: process %q is not printable ASCII of at most 255 bytes", c.process)
	}
	if !running.CompareAndSwap(nil, c) {
		return nil, ErrStarted
	}
	c.stop = make(chan struct{})
	c.done = make(chan struct{})
	c.backoff = backoffMin
	c.reportEvery = reportDefault
	c.nextConnect = time.Now()
	c.rng = rand.New(rand.NewSource(time.Now().UnixNano() ^ int64(os.Getpid())<<20))
	c.jobs = make(chan releaseJob, 64)
	c.released = make(chan []releaseJob)
	c.local.hit = make(chan struct{}, 1)
	go c.releaser()
	go c.watch()
	go c.run()
	return c, nil
}

// Close says BYE to the daemon, stops the client's goroutine, opens the
// admission gate and puts the program's own GOGC and GOMEMLIMIT back.  It
// returns nil; a second call does nothing.
func (c *Client) Close() error {
	c.once.Do(func() {
		close(c.stop)
		<-c.done
		running.CompareAndSwap(c, nil)
	})
	return nil
}

// Level returns the level in force.
func (c *Client) Level() Level {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats.Level
}

// Stats returns the client's state and counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	s := c.stats
	c.mu.Unlock()
	s.Admitted, s.Rejected = admitCounts()
	return s
}

func (c *Client) log(err error) {
	if c.opts.Log != nil && err != nil {
		c.opts.Log(err)
	}
}

func (c *Client) update(f func(s *Stats)) {
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

// run is the client's goroutine.
func (c *Client) run() {
	defer close(c.done)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-c.stop:
			c.shutdown()
			return
		case r := <-c.in:
			if r.err != nil {
				c.dropOnError(r.err)
			} else {
				c.handle(r.m)
			}
		case batch := <-c.released:
			for _, j := range batch {
				c.finish(j)
			}
			if c.state == stateReady {
				c.sendReport()
			}
		case <-c.local.hit:
			if c.limitEvaluate() {
				c.apply(c.daemon, 0)
			}
		case <-timer.C:
		}
		next := c.timers()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(time.Until(next))
	}
}

func (c *Client) shutdown() {
	// The release goroutine ends after the collection it may be in.
	close(c.jobs)
	// Best effort: the daemon notices a plain close as well (a failed
	// send has closed the connection already).
	if c.conn != nil && c.send(encodeBye(c.nextSeq(), byeNormal)) {
		c.byeClose()
	}
	gate.throttle.Store(0)
	c.levers.apply(0, 0)
}

// timers does what is due and returns when to look again.
func (c *Client) timers() time.Time {
	now := time.Now()
	switch {
	case c.state == stateIdle && !now.Before(c.nextConnect):
		c.connect()
	case c.state == stateHello && !now.Before(c.helloBy):
		c.drop(errors.New("memguardd did not answer HELLO in time"), false)
	case c.state == stateReady && !now.Before(c.nextReport):
		if c.limitEvaluate() {
			c.apply(c.daemon, 0) // and its REPORT
		} else {
			c.sendReport()
		}
	}
	if !c.orphanAt.IsZero() && c.state != stateReady && !time.Now().Before(c.orphanAt) {
		c.orphanAt = time.Time{}
		c.apply(directive{}, 0)
	}
	var next time.Time
	switch c.state {
	case stateIdle:
		next = c.nextConnect
	case stateHello:
		next = c.helloBy
	default:
		next = c.nextReport
	}
	if !c.orphanAt.IsZero() && c.state != stateReady && c.orphanAt.Before(next) {
		next = c.orphanAt
	}
	return next
}

// schedule sets the next attempt (docs/protocol.md §5.2): after the
// backoff, or 5 s after a refusal that would repeat, each with "equal
// jitter" (somewhere in the delay's second half, so clients that lost the
// same daemon do not all come back at once).
func (c *Client) schedule(refused bool) {
	d := c.backoff
	if refused {
		d = refusedWait
	} else if c.backoff *= 2; c.backoff > backoffMax {
		c.backoff = backoffMax
	}
	c.nextConnect = time.Now().Add(d/2 + time.Duration(c.rng.Int63n(int64(d/2)+1)))
}

func (c *Client) connect() {
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: c.socket, Net: "unixpacket"})
	if err != nil {
		if c.failures == 0 {
			c.log(fmt.Errorf("memguardd is not reachable at %s (%w); retrying with backoff", c.socket, err))
		}
		c.failures++
		c.schedule(false)
		return
	}
	c.conn = conn
	c.gen++
	c.seq = 0
	c.quit = make(chan struct{})
	c.in = make(chan received)
	go reader(conn, c.in, c.quit)

	caps := uint32(capGCHook | capReleaseHook | capAdmit)
	c.helloSeq = c.nextSeq()
	c.state = stateHello
	c.helloBy = time.Now().Add(helloTimeout)
	c.send(encodeHello(c.helloSeq, caps, c.service, c.process))
}

// reader turns the connection's datagrams into messages until an error,
// which it passes on as the last thing it sends.
func reader(conn *net.UnixConn, in chan<- received, quit <-chan struct{}) {
	buf := make([]byte, msgMax)
	for {
		var r received
		n, _, flags, _, err := conn.ReadMsgUnix(buf, nil)
		switch {
		case err != nil:
			r.err = fmt.Errorf("lost the connection to memguardd: %w", err)
		case flags&syscall.MSG_TRUNC != 0:
			r.err = malformed("a datagram over %d bytes", msgMax)
		case n == 0:
			// SOCK_SEQPACKET: the end of the stream (an empty datagram
			// could not be told from it, and would be malformed).
			r.err = errors.New("memguardd closed the connection")
		default:
			r.m, r.err = decode(buf[:n])
		}
		select {
		case in <- r:
		case <-quit:
			return
		}
		if r.err != nil {
			return
		}
	}
}

func (c *Client) nextSeq() uint32 {
	if c.seq++; c.seq == 0 {
		c.seq = 1
	}
	return c.seq
}

// send writes one datagram; a failure drops the connection.
func (c *Client) send(b []byte) bool {
	if c.conn == nil {
		return false
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.conn.Write(b); err != nil {
		c.drop(fmt.Errorf("failed to send to memguardd: %w", err), false)
		return false
	}
	return true
}

func (c *Client) closeConn() {
	close(c.quit)
	_ = c.conn.Close()
	c.conn = nil
	c.in = nil
	c.state = stateIdle
}

// byeClose closes the connection after our BYE.  A Unix socket closed with
// unread datagrams makes the daemon's next read fail with ECONNRESET, ahead
// of the BYE: so shut it first (nothing more can arrive), read what had
// arrived, then close (conn_bye() in C).
func (c *Client) byeClose() {
	// The reader may take some of them meanwhile: closeConn stops it.
	_ = c.conn.CloseRead()
	_ = c.conn.CloseWrite()
	_ = c.conn.SetReadDeadline(time.Now().Add(writeTimeout))
	buf := make([]byte, msgMax)
	for i := 0; i < drainMax; i++ {
		if n, err := c.conn.Read(buf); err != nil || n == 0 {
			break
		}
	}
	c.closeConn()
}

// drop closes the connection after err and schedules the next attempt.
// Nobody is left to lift a throttle, so admission opens now; the rest of
// the directive holds for the grace period.
func (c *Client) drop(err error, refused bool) {
	if c.conn != nil {
		c.closeConn()
	}
	c.schedule(refused)
	c.log(err)
	gate.throttle.Store(0)
	if c.orphanAt.IsZero() && c.applied != (directive{}) {
		c.orphanAt = time.Now().Add(orphanGrace)
	}
	c.update(func(s *Stats) {
		s.Connected = false
		s.ClientID = 0
		s.Throttle = 0
	})
}

func (c *Client) dropOnError(err error) {
	c.drop(err, false)
}

func printable(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if ch < 0x20 || ch > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}

func (c *Client) handle(m *message) {
	switch m.typ {
	case msgWelcome:
		if c.state != stateHello || m.seq != c.helloSeq {
			c.drop(malformed("unexpected WELCOME (seq %d)", m.seq), false)
			return
		}
		w := m.welcome
		c.state = stateReady
		c.reportEvery = time.Duration(w.reportInterval) * time.Millisecond
		if w.reportInterval == 0 {
			c.reportEvery = reportDefault
		}
		if c.reportEvery < reportMin {
			c.reportEvery = reportMin
		} else if c.reportEvery > reportMax {
			c.reportEvery = reportMax
		}
		c.backoff = backoffMin
		c.failures = 0
		c.refusals = 0
		// The directive in force follows in a DIRECTIVE; until then
		// the state held from an earlier connection stays (a value
		// that comes back the same tells the hooks nothing).
		c.orphanAt = time.Time{}
		c.update(func(s *Stats) {
			s.Connected = true
			s.ClientID = w.clientID
			s.Service = w.service
			s.Budget = w.budget
			s.Connects++
		})
		c.sendReport()
	case msgDirective:
		if c.state != stateReady {
			c.drop(malformed("DIRECTIVE before WELCOME"), false)
			return
		}
		c.orphanAt = time.Time{}
		c.apply(m.directive, m.seq)
	case msgPing:
		if c.state == stateIdle {
			return
		}
		c.send(encodePong(c.nextSeq(), m.cookie))
	case msgError:
		// Said once: the same refusal every few seconds is no news.
		var err error
		if c.refusals++; c.refusals == 1 {
			err = &RefusedError{Code: m.code, Text: printable(m.text)}
		}
		c.drop(err, m.code == errVersion || m.code == errService ||
			m.code == errNoService || m.code == errPermission)
	case msgBye:
		if m.reason == byeShutdown {
			c.drop(errors.New("memguardd is stopping"), false)
		} else {
			c.drop(errors.New("memguardd said BYE"), false)
		}
	default:
		c.drop(malformed("unexpected message type 0x%04x from memguardd", m.typ), false)
	}
}

// apply puts the daemon's directive d in force, made stricter by the local
// limit where its level is higher (limit.go), in the order the daemon
// expects: the runtime's GC percent and memory limit and the gate, the
// level and GC hooks (when their value changed), the release of what is
// demanded and its RELEASED (seq names the DIRECTIVE; 0 demands nothing),
// and a REPORT showing the result.
func (c *Client) apply(dd directive, seq uint32) {
	t0 := time.Now()
	prev := c.applied
	c.daemon = dd
	c.daemon.release, c.daemon.deadlineMs = 0, 0
	c.limitEvaluate()
	d := limitMerge(dd, c.localLevel, c.growthThrottle)
	c.applied = d
	c.applied.release, c.applied.deadlineMs = 0, 0
	c.levers.apply(d.gcPercent, d.softLimit)
	throttle := d.throttle
	if c.state != stateReady {
		throttle = 0
	}
	gate.throttle.Store(uint32(throttle))
	c.update(func(s *Stats) {
		s.Level = d.level
		s.GCPercent = int(d.gcPercent)
		s.Throttle = int(throttle)
		s.SoftLimit = d.softLimit
		s.LocalLevel = c.localLevel
		s.GrowthThrottle = int(c.growthThrottle)
	})
	if d.level != prev.level && c.opts.OnLevel != nil {
		c.opts.OnLevel(d.level)
	}
	if d.gcPercent != prev.gcPercent && c.opts.OnGC != nil {
		c.opts.OnGC(int(d.gcPercent))
	}
	if seq != 0 && d.release > 0 {
		c.release(releaseJob{gen: c.gen, seq: seq, want: d.release, deadlineMs: d.deadlineMs, t0: t0})
		if c.conn == nil {
			return
		}
	}
	if c.state == stateReady {
		c.sendReport()
	}
}

// releaseJob is a release demand on its way: the bytes the hook freed, and
// whether the runtime's free pages are still to be returned.
type releaseJob struct {
	gen        uint64 // the connection it came on
	seq        uint32 // the DIRECTIVE's
	want       uint64
	deadlineMs uint32
	t0         time.Time
	hook       uint64 // freed by OnRelease
	heap       uint64 // what the runtime returned (releaser)
}

// freeOSMemory is debug.FreeOSMemory; tests replace it.
var freeOSMemory = debug.FreeOSMemory

// heapAtLimit tells a release demand that debug.FreeOSMemory would return
// nothing: the runtime holds its memory limit or more (it counts the limit
// against Sys − Released, HeapStats.Resident), so it already collects back
// to back and returns free pages as it allocates, and it has no more free
// pages in RAM than limitIdleFloor or 1/32 of the limit.  Then the forced
// collection only stops the world.  Measured with the outcome runner's Go
// service at 160 requests/s under memguardd (live ~850 MiB, limit
// 819 MiB): free pages 0 MiB in 36 of 37 samples, 14 MiB once, and its 7
// forced collections in 40 s returned 0 bytes.
func heapAtLimit(h HeapStats, limit int64) bool {
	if limit <= 0 || h.Resident() < uint64(limit) {
		return false
	}
	return h.Idle <= limitIdleFloor || h.Idle <= uint64(limit)/32
}

// limitIdleFloor: free pages too few to be worth a stop of the world.
const limitIdleFloor = 4 << 20

// release frees what a demand asks: first the application's caches
// through OnRelease, on this goroutine like every hook; then, only if
// bytes are still owed (or everything was asked), the Go heap's free pages
// through debug.FreeOSMemory, which collects, is heavy, and so comes last
// (and not at all when heapAtLimit says it would return nothing).
// That runs on the release goroutine: a collection under pressure can take
// seconds, and the directives that come meanwhile (a throttle above all)
// must take effect at once.  RELEASED goes out when it is done (finish).
func (c *Client) release(j releaseJob) {
	if c.opts.OnRelease != nil {
		j.hook = c.opts.OnRelease(j.want)
	}
	if j.want != releaseAll && j.hook >= j.want {
		c.finish(j)
		return
	}
	select {
	case c.jobs <- j:
	default:
		// As many demands outstanding as the queue holds: answer
		// this one with what the hook did.
		c.finish(j)
	}
}

// releaser is the release goroutine: it returns the runtime's free pages
// for the demands queued, one collection for all that are waiting, and
// hands them back to the client's goroutine.
func (c *Client) releaser() {
	for j := range c.jobs {
		batch := []releaseJob{j}
	more:
		for {
			select {
			case j, ok := <-c.jobs:
				if !ok {
					break more
				}
				batch = append(batch, j)
			default:
				break more
			}
		}
		// What the collection returned: the fall of the resident
		// memory, or the rise of the pages released to the kernel when
		// that is larger (requests that allocate meanwhile hide part of
		// the fall; pages they take back from the released hide part of
		// the rise: each is a lower bound).  None when the runtime is at
		// its memory limit (heapAtLimit): 0 bytes, and no stop of the
		// world.
		if before := ReadHeap(); !heapAtLimit(before, debug.SetMemoryLimit(-1)) {
			freeOSMemory()
			after := ReadHeap()
			if before.Resident() > after.Resident() {
				batch[0].heap = before.Resident() - after.Resident()
			}
			if after.Released > before.Released && after.Released-before.Released > batch[0].heap {
				batch[0].heap = after.Released - before.Released
			}
		}
		select {
		case c.released <- batch:
		case <-c.done:
			return
		}
	}
}

// finish answers a release demand with one RELEASED: the larger of what
// the hook reported and what the runtime returned (the fall of its resident
// memory or the rise of its released pages, whichever is larger; the hook's
// garbage is returned by the same collection).  A demand of an
// earlier connection is not answered: its seq means nothing to the daemon
// of the new one.
func (c *Client) finish(j releaseJob) {
	freed := j.hook
	if j.heap > freed {
		freed = j.heap
	}
	c.update(func(s *Stats) {
		s.Releases++
		if s.ReleasedTotal += freed; s.ReleasedTotal < freed {
			s.ReleasedTotal = ^uint64(0)
		}
	})
	if j.gen != c.gen || c.conn == nil {
		return
	}
	us := uint64(time.Since(j.t0) / time.Microsecond)
	if j.deadlineMs != 0 && us > uint64(j.deadlineMs)*1000 {
		c.log(fmt.Errorf("release took %d ms, over the deadline of %d ms", us/1000, j.deadlineMs))
	}
	c.send(encodeReleased(c.nextSeq(), j.seq, freed, us))
}

func (c *Client) sendReport() {
	h := ReadHeap()
	r := report{heapSys: h.Sys, heapInuse: h.Inuse, heapIdle: h.Idle, heapReleased: h.Released,
		gcPercent: c.levers.inForce()}
	if c.opts.ExternalBytes != nil {
		r.external = c.opts.ExternalBytes()
	}
	r.admitted, r.rejected = admitCounts()
	c.mu.Lock()
	r.releasedTotal = c.stats.ReleasedTotal
	c.mu.Unlock()
	c.local.external.Store(r.external)
	var flags uint32
	if c.localLevel != Normal || c.growthThrottle > 0 {
		flags = flagLocalLimit
	}
	c.nextReport = time.Now().Add(c.reportEvery)
	c.send(encodeReport(c.nextSeq(), flags, &r))
}
