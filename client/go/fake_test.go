// SPDX-License-Identifier: MIT

package memguard

// Tests against a fake daemon: a SOCK_SEQPACKET listener in a temporary
// directory that this test drives message by message.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const MiB = 1 << 20

// ---- the daemon's side of the wire ----------------------------------------

func encodeWelcome(seq uint32, id, budget uint64, interval uint32, service string) []byte {
	body := binary.LittleEndian.AppendUint64(nil, id)
	body = binary.LittleEndian.AppendUint64(body, budget)
	body = binary.LittleEndian.AppendUint32(body, interval)
	body = appendStr(body, service)
	return encode(msgWelcome, seq, body)
}

func encodeDirective(seq uint32, d directive) []byte {
	body := []byte{byte(d.level)}
	body = binary.LittleEndian.AppendUint16(body, d.gcPercent)
	body = binary.LittleEndian.AppendUint16(body, d.throttle)
	body = binary.LittleEndian.AppendUint64(body, d.softLimit)
	body = binary.LittleEndian.AppendUint64(body, d.release)
	body = binary.LittleEndian.AppendUint32(body, d.deadlineMs)
	return encode(msgDirective, seq, body)
}

func encodeError(seq, code uint32, text string) []byte {
	return encode(msgError, seq, appendStr(binary.LittleEndian.AppendUint32(nil, code), text))
}

type fakeDaemon struct {
	t    *testing.T
	sock string
	ln   *net.UnixListener
	seq  uint32
}

func newFake(t *testing.T) *fakeDaemon {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "memguardd.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	f := &fakeDaemon{t: t, sock: sock, ln: ln}
	t.Cleanup(func() { ln.Close() })
	return f
}

type fakeConn struct {
	f *fakeDaemon
	c *net.UnixConn
}

func (f *fakeDaemon) nextSeq() uint32 {
	f.seq++
	return f.seq
}

func (f *fakeDaemon) accept(within time.Duration) *fakeConn {
	f.t.Helper()
	_ = f.ln.SetDeadline(time.Now().Add(within))
	c, err := f.ln.AcceptUnix()
	if err != nil {
		f.t.Fatalf("no client connected within %v: %v", within, err)
	}
	fc := &fakeConn{f: f, c: c}
	f.t.Cleanup(func() { c.Close() })
	return fc
}

// recv returns the next datagram of the type wanted, skipping REPORTs
// unless they are wanted.
func (fc *fakeConn) recv(want uint16, within time.Duration) (uint32, []byte) {
	fc.f.t.Helper()
	buf := make([]byte, msgMax)
	deadline := time.Now().Add(within)
	for {
		_ = fc.c.SetReadDeadline(deadline)
		n, err := fc.c.Read(buf)
		if err != nil {
			fc.f.t.Fatalf("waiting for message 0x%04x: %v", want, err)
		}
		if n < headerSize {
			fc.f.t.Fatalf("client sent %d bytes", n)
		}
		b := buf[:n]
		typ := binary.LittleEndian.Uint16(b)
		if int(binary.LittleEndian.Uint32(b[4:])) != n-headerSize ||
			binary.LittleEndian.Uint16(b[2:]) != 1 || binary.LittleEndian.Uint32(b[8:]) == 0 {
			fc.f.t.Fatalf("client sent a bad header: % x", b[:headerSize])
		}
		if typ == want {
			return binary.LittleEndian.Uint32(b[8:]), append([]byte(nil), b[headerSize:]...)
		}
		if typ != msgReport {
			fc.f.t.Fatalf("client sent 0x%04x, waiting for 0x%04x", typ, want)
		}
	}
}

// reportGC waits for a REPORT whose gc_percent is want.
func (fc *fakeConn) reportGC(want uint16) {
	fc.f.t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if _, body := fc.recv(msgReport, 5*time.Second); binary.LittleEndian.Uint16(body[64:]) == want {
			return
		}
	}
	fc.f.t.Fatalf("no REPORT with gc_percent %d", want)
}

func (fc *fakeConn) send(b []byte) {
	fc.f.t.Helper()
	if _, err := fc.c.Write(b); err != nil {
		fc.f.t.Fatalf("send: %v", err)
	}
}

// register answers the HELLO with a WELCOME and the directive in force.
func (fc *fakeConn) register(d directive) {
	fc.f.t.Helper()
	seq, body := fc.recv(msgHello, 5*time.Second)
	if binary.LittleEndian.Uint32(body)&(capGCHook|capReleaseHook|capAdmit) != capGCHook|capReleaseHook|capAdmit {
		fc.f.t.Fatalf("HELLO capabilities % x", body[:4])
	}
	fc.send(encodeWelcome(seq, 7, 1<<30, 50, "web"))
	fc.send(encodeDirective(fc.f.nextSeq(), d))
}

func (fc *fakeConn) direct(d directive) uint32 {
	seq := fc.f.nextSeq()
	fc.send(encodeDirective(seq, d))
	return seq
}

// ---- helpers ----------------------------------------------------------------

// gcPercent reads GOGC back without changing it.
func gcPercent() int {
	p := debug.SetGCPercent(-1)
	debug.SetGCPercent(p)
	return p
}

func memoryLimit() int64 {
	return debug.SetMemoryLimit(-1)
}

// await polls cond for up to 5 s.
func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type logRecorder struct {
	mu   sync.Mutex
	errs []error
}

func (l *logRecorder) log(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
}

func (l *logRecorder) count(pred func(error) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.errs {
		if pred(e) {
			n++
		}
	}
	return n
}

// hooks records what the client's hooks were told.
type hooks struct {
	mu     sync.Mutex
	levels []Level
	gcs    []int
	asked  []uint64
	freed  func(asked uint64) uint64 // what OnRelease returns; nil: 0
}

// install returns o with hooks that record into h.
func (h *hooks) install(o Options) Options {
	o.OnLevel = func(l Level) { h.mu.Lock(); h.levels = append(h.levels, l); h.mu.Unlock() }
	o.OnGC = func(p int) { h.mu.Lock(); h.gcs = append(h.gcs, p); h.mu.Unlock() }
	o.OnRelease = func(b uint64) uint64 {
		h.mu.Lock()
		h.asked = append(h.asked, b)
		h.mu.Unlock()
		if h.freed == nil {
			return 0
		}
		return h.freed(b)
	}
	return o
}

// told returns copies of what the hooks were told.
func (h *hooks) told() ([]Level, []int, []uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Level(nil), h.levels...), append([]int(nil), h.gcs...),
		append([]uint64(nil), h.asked...)
}

func start(t *testing.T, o Options) *Client {
	t.Helper()
	c, err := Start(o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ownSettings gives the program GOGC and GOMEMLIMIT of its own for the
// test and puts the test binary's back afterwards.
func ownSettings(t *testing.T, gc int, limit int64) {
	oldGC := debug.SetGCPercent(gc)
	oldLimit := debug.SetMemoryLimit(limit)
	t.Cleanup(func() {
		debug.SetGCPercent(oldGC)
		debug.SetMemoryLimit(oldLimit)
	})
}

// shedShare is the share of n calls of Admit that were rejected.
func shedShare(n int) float64 {
	rejected := 0
	for i := 0; i < n; i++ {
		if !Admit() {
			rejected++
		}
	}
	return float64(rejected) / float64(n)
}

// ---- tests ------------------------------------------------------------------

// The HELLO of docs/protocol.md §9, byte for byte.
func TestHelloGolden(t *testing.T) {
	want := []byte{
		0x01, 0x00, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x0b, 0x00, 0x00, 0x00, 0x03, 0x00, 0x77, 0x65, 0x62, 0x0a, 0x00, 0x61, 0x70, 0x69, 0x2d, 0x73,
		0x65, 0x72, 0x76, 0x65, 0x72,
	}
	if got := encodeHello(1, 0x0b, "web", "api-server"); !bytes.Equal(got, want) {
		t.Fatalf("HELLO\n got % x\nwant % x", got, want)
	}
}

func TestDecode(t *testing.T) {
	d := directive{level: Critical, gcPercent: 40, throttle: 250, softLimit: 800 * MiB,
		release: 5 * MiB, deadlineMs: 500}
	m, err := decode(encodeDirective(9, d))
	if err != nil || m.typ != msgDirective || m.seq != 9 || m.directive != d {
		t.Fatalf("DIRECTIVE: %+v, %v", m, err)
	}
	// Bytes appended to a body are ignored.
	b := encodeWelcome(3, 11, 1<<30, 1000, "web")
	b = append(b, 1, 2, 3)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-headerSize))
	m, err = decode(b)
	if err != nil || m.welcome != (welcome{clientID: 11, budget: 1 << 30, reportInterval: 1000, service: "web"}) {
		t.Fatalf("WELCOME with a longer body: %+v, %v", m, err)
	}
	m, err = decode(encodeError(4, 3, "wrong service"))
	if err != nil || m.code != 3 || m.text != "wrong service" {
		t.Fatalf("ERROR: %+v, %v", m, err)
	}
}

// malformedDatagrams are datagrams a client must refuse: each closes the
// connection, is logged, and is followed by a reconnect.
func malformedDatagrams() map[string][]byte {
	dir := encodeDirective(5, directive{level: Warn, gcPercent: 90})
	withLen := func(b []byte, n uint32) []byte {
		b = append([]byte(nil), b...)
		binary.LittleEndian.PutUint32(b[4:], n)
		return b
	}
	m := map[string][]byte{
		"shorter than a header": {1, 2, 3},
		"length too long":       withLen(dir, 26),
		"length too short":      withLen(dir, 24),
		"version 2": func() []byte {
			b := append([]byte(nil), dir...)
			b[2] = 2
			return b
		}(),
		"unknown type":          encode(0x0777, 5, nil),
		"short DIRECTIVE":       encode(msgDirective, 5, dir[headerSize:headerSize+24]),
		"level 4":               encodeDirective(5, directive{level: 4}),
		"throttle 1001":         encodeDirective(5, directive{throttle: 1001}),
		"short PING":            encode(msgPing, 5, []byte{1, 2, 3}),
		"ERROR text with NUL":   encodeError(5, 1, "a\x00b"),
		"ERROR text too long":   encodeError(5, 1, string(bytes.Repeat([]byte{'x'}, 1025))),
		"ERROR string past end": encode(msgError, 5, []byte{1, 0, 0, 0, 9, 0, 'a'}),
		"a type clients send":   encodeReport(5, 0, &report{}),
		"an admin answer":       encode(0x0304, 5, []byte{0, 0, 0, 0, 0, 0}),
		"over 4096 bytes":       encode(msgPing, 5, make([]byte, 5000)),
	}
	return m
}

func TestDecodeRejects(t *testing.T) {
	for name, b := range malformedDatagrams() {
		if name == "a type clients send" || name == "an admin answer" || name == "over 4096 bytes" {
			continue // well-formed, refused by the session or the reader
		}
		if _, err := decode(b); err == nil {
			t.Errorf("%s: decoded", name)
		} else if !errors.As(err, new(*ProtocolError)) {
			t.Errorf("%s: %T %v", name, err, err)
		}
	}
	// Random bytes, and random changes to valid messages: errors, never
	// a panic.
	rng := rand.New(rand.NewSource(1))
	valid := [][]byte{encodeDirective(1, directive{level: Warn}), encodeWelcome(1, 1, 1, 1, "web"),
		encodeError(1, 2, "x"), encodePong(1, 3), encodeBye(1, 1)}
	for i := 0; i < 200000; i++ {
		var b []byte
		if i%2 == 0 {
			b = make([]byte, rng.Intn(80))
			rng.Read(b)
		} else {
			b = append([]byte(nil), valid[rng.Intn(len(valid))]...)
			b[rng.Intn(len(b))] ^= byte(1 + rng.Intn(255))
		}
		_, _ = decode(b)
	}
}

// Every directive's effect on the runtime, read back; the hooks; the
// program's own settings back exactly at NORMAL and at Close.
func TestFakeDirectives(t *testing.T) {
	ownSettings(t, 137, 3<<30)
	f := newFake(t)
	h := &hooks{freed: func(uint64) uint64 { return 2 * MiB }}
	c := start(t, h.install(Options{Socket: f.sock, Service: "web",
		ExternalBytes: func() uint64 { return 42 }}))
	fc := f.accept(5 * time.Second)
	fc.register(directive{})

	// A REPORT carries the runtime's figures and the external bytes.
	_, body := fc.recv(msgReport, 5*time.Second)
	if len(body) < 66 || binary.LittleEndian.Uint64(body[32:]) != 42 ||
		binary.LittleEndian.Uint64(body[0:]) == 0 || binary.LittleEndian.Uint64(body[8:]) == 0 {
		t.Fatalf("REPORT % x", body)
	}

	// WARN: GOGC and GOMEMLIMIT as directed.
	fc.direct(directive{level: Warn, gcPercent: 60, softLimit: 512 * MiB})
	await(t, "WARN", func() bool { return c.Level() == Warn })
	if gcPercent() != 60 || memoryLimit() != 512*MiB {
		t.Fatalf("at WARN: GOGC %d, GOMEMLIMIT %d", gcPercent(), memoryLimit())
	}
	fc.reportGC(60)

	// A release: the hook first; it freed less than asked, so the rest
	// comes from the heap; RELEASED names the DIRECTIVE.
	seq := fc.direct(directive{level: Warn, gcPercent: 50, softLimit: 512 * MiB,
		release: 8 * MiB, deadlineMs: 1000})
	_, body = fc.recv(msgReleased, 5*time.Second)
	if binary.LittleEndian.Uint32(body) != seq || binary.LittleEndian.Uint64(body[4:]) < 2*MiB {
		t.Fatalf("RELEASED % x for DIRECTIVE %d", body, seq)
	}
	if gcPercent() != 50 {
		t.Fatalf("GOGC %d", gcPercent())
	}

	// A GC percent above the program's own does not raise it; a soft
	// limit above its own does not raise that.
	fc.direct(directive{level: Critical, gcPercent: 200, throttle: 300, softLimit: 4 << 30})
	await(t, "CRITICAL", func() bool { return c.Level() == Critical })
	if gcPercent() != 137 || memoryLimit() != 3<<30 {
		t.Fatalf("at CRITICAL: GOGC %d, GOMEMLIMIT %d", gcPercent(), memoryLimit())
	}
	fc.reportGC(0) // the program's own is in force
	// The gate sheds the throttle's share.
	if s := shedShare(100000); s < 0.29 || s > 0.31 {
		t.Fatalf("shed %.4f of the calls at a throttle of 30 %%", s)
	}
	if st := c.Stats(); st.Throttle != 300 || st.Rejected == 0 {
		t.Fatalf("stats %+v", st)
	}

	// NORMAL: the program's own values exactly, everything admitted.
	fc.direct(directive{})
	await(t, "NORMAL", func() bool { return c.Level() == Normal })
	if gcPercent() != 137 || memoryLimit() != 3<<30 {
		t.Fatalf("at NORMAL: GOGC %d, GOMEMLIMIT %d", gcPercent(), memoryLimit())
	}
	if s := shedShare(10000); s != 0 {
		t.Fatalf("shed %.4f at NORMAL", s)
	}
	levels, gcs, asked := h.told()
	if len(levels) != 3 || levels[0] != Warn || levels[1] != Critical || levels[2] != Normal {
		t.Errorf("level hook: %v", levels)
	}
	if len(gcs) != 4 || gcs[0] != 60 || gcs[1] != 50 || gcs[2] != 200 || gcs[3] != 0 {
		t.Errorf("GC hook: %v", gcs)
	}
	if len(asked) != 1 || asked[0] != 8*MiB {
		t.Errorf("release hook: %v", asked)
	}

	// EMERGENCY, then Close: BYE, and the program's own values back.
	fc.direct(directive{level: Emergency, gcPercent: 10, throttle: 500, softLimit: 100 * MiB})
	await(t, "EMERGENCY", func() bool { return gcPercent() == 10 })
	c.Close()
	_, body = fc.recv(msgBye, 5*time.Second)
	if binary.LittleEndian.Uint32(body) != byeNormal {
		t.Fatalf("BYE % x", body)
	}
	if gcPercent() != 137 || memoryLimit() != 3<<30 || !Admit() {
		t.Fatalf("after Close: GOGC %d, GOMEMLIMIT %d", gcPercent(), memoryLimit())
	}
}

// "Everything you can": the hook is asked for all, the heap is returned
// as well.
func TestFakeReleaseAll(t *testing.T) {
	f := newFake(t)
	var got uint64
	start(t, Options{Socket: f.sock, OnRelease: func(b uint64) uint64 { got = b; return 1 }})
	fc := f.accept(5 * time.Second)
	fc.register(directive{})
	keep := make([]byte, 64*MiB) // garbage once the test drops it
	keep[0] = 1
	keep = nil
	seq := fc.direct(directive{level: Emergency, release: math.MaxUint64})
	_, body := fc.recv(msgReleased, 5*time.Second)
	if binary.LittleEndian.Uint32(body) != seq || got != math.MaxUint64 {
		t.Fatalf("RELEASED % x, hook asked %d", body, got)
	}
	if b := binary.LittleEndian.Uint64(body[4:]); b < 32*MiB {
		t.Fatalf("released %d bytes of a 64 MiB garbage block", b)
	}
	_ = keep
}

func TestFakePing(t *testing.T) {
	f := newFake(t)
	start(t, Options{Socket: f.sock})
	fc := f.accept(5 * time.Second)
	fc.register(directive{})
	fc.send(encode(msgPing, f.nextSeq(), binary.LittleEndian.AppendUint64(nil, 0xfeedbeef)))
	_, body := fc.recv(msgPong, 5*time.Second)
	if binary.LittleEndian.Uint64(body) != 0xfeedbeef {
		t.Fatalf("PONG % x", body)
	}
}

// Each malformed message: logged as a *ProtocolError, the connection
// closed, a new HELLO on a new one; and the directive in force meanwhile
// stays (the throttle opens).
func TestFakeMalformedReconnects(t *testing.T) {
	ownSettings(t, 100, math.MaxInt64)
	f := newFake(t)
	var rec logRecorder
	c := start(t, Options{Socket: f.sock, Log: rec.log})
	for name, b := range malformedDatagrams() {
		fc := f.accept(5 * time.Second)
		fc.register(directive{level: Critical, gcPercent: 70, throttle: 1000})
		await(t, "CRITICAL", func() bool { return !Admit() })
		before := rec.count(func(error) bool { return true })
		fc.send(b)
		// The client closes: our next read sees the end.
		_ = fc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, msgMax)
		for {
			n, err := fc.c.Read(buf)
			if err != nil || n == 0 {
				break
			}
		}
		await(t, name+" logged", func() bool { return rec.count(func(error) bool { return true }) > before })
		if name != "over 4096 bytes" && rec.count(func(e error) bool { return errors.As(e, new(*ProtocolError)) }) == 0 {
			t.Fatalf("%s: no ProtocolError logged: %v", name, rec.errs)
		}
		if !Admit() || gcPercent() != 70 {
			t.Fatalf("%s: after the drop Admit is closed or GOGC %d", name, gcPercent())
		}
		fc.c.Close()
	}
	if st := c.Stats(); st.Connects != uint64(len(malformedDatagrams())) {
		t.Fatalf("%d connections", st.Connects)
	}
}

// A refusal that would repeat: the next attempt comes 2.5–5 s later (a
// nominal 5 s with jitter), not at the backoff's pace.
func TestFakeRefusalWaits(t *testing.T) {
	f := newFake(t)
	var rec logRecorder
	start(t, Options{Socket: f.sock, Service: "wrong", Log: rec.log})
	fc := f.accept(5 * time.Second)
	seq, _ := fc.recv(msgHello, 5*time.Second)
	fc.send(encodeError(seq, errService, "service does not match\x01"))
	t0 := time.Now()
	fc2 := f.accept(10 * time.Second)
	if d := time.Since(t0); d < 2400*time.Millisecond {
		t.Fatalf("reconnected %v after a refusal", d)
	}
	seq, _ = fc2.recv(msgHello, 5*time.Second)
	var re *RefusedError
	if rec.count(func(e error) bool { return errors.As(e, &re) }) != 1 || re.Code != errService ||
		re.Text != "service does not match?" {
		t.Fatalf("log: %v", rec.errs)
	}
	// Refused again: said once only.
	fc2.send(encodeError(seq, errService, "service does not match"))
	_ = fc2.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := fc2.c.Read(make([]byte, msgMax)); err == nil && n > 0 {
		t.Fatalf("the client sent %d bytes after a refusal", n)
	}
	if n := rec.count(func(error) bool { return true }); n != 1 {
		t.Fatalf("log after a second refusal: %v", rec.errs)
	}
}

// BYE SHUTDOWN: back within the first backoff step.
func TestFakeByeReconnects(t *testing.T) {
	f := newFake(t)
	start(t, Options{Socket: f.sock})
	fc := f.accept(5 * time.Second)
	fc.register(directive{})
	fc.send(encodeBye(f.nextSeq(), byeShutdown))
	t0 := time.Now()
	f.accept(5*time.Second).recv(msgHello, 5*time.Second)
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("reconnected after %v", d)
	}
}

// Close with datagrams the client never read: the daemon still reads the
// BYE, then the end; not ECONNRESET, which a Unix socket closed with
// unread datagrams gives its peer ahead of what it sent (as the C
// client's test_bye_after_queue_and_unread).
func TestFakeByeAfterUnread(t *testing.T) {
	f := newFake(t)
	held := make(chan struct{})
	c := start(t, Options{Socket: f.sock, OnLevel: func(Level) { <-held }})
	fc := f.accept(5 * time.Second)
	fc.register(directive{})
	fc.direct(directive{level: Warn}) // the hook holds the client's goroutine
	for i := 0; i < 20; i++ {
		fc.send(encode(msgPing, f.nextSeq(), binary.LittleEndian.AppendUint64(nil, uint64(1+i))))
	}
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	<-c.stop
	close(held)
	<-closed
	buf := make([]byte, msgMax)
	_ = fc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := fc.c.Read(buf)
		if err != nil || n < headerSize {
			t.Fatalf("before the BYE: %d bytes, %v", n, err)
		}
		if binary.LittleEndian.Uint16(buf) == msgBye {
			break
		}
	}
}

// No daemon: no effect, and one message in the log for the outage.
func TestNoDaemon(t *testing.T) {
	ownSettings(t, 100, math.MaxInt64)
	var rec logRecorder
	c := start(t, Options{Socket: filepath.Join(t.TempDir(), "absent.sock"), Log: rec.log})
	time.Sleep(2 * time.Second) // several attempts
	if s := shedShare(10000); s != 0 || gcPercent() != 100 || memoryLimit() != math.MaxInt64 {
		t.Fatalf("without a daemon: shed %.3f, GOGC %d", s, gcPercent())
	}
	if n := rec.count(func(error) bool { return true }); n != 1 {
		t.Fatalf("%d log messages for one outage: %v", n, rec.errs)
	}
	if st := c.Stats(); st.Connected || st.Level != Normal {
		t.Fatalf("stats %+v", st)
	}
	if _, err := Start(Options{}); err != ErrStarted {
		t.Fatalf("a second Start: %v", err)
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{{Service: "caf\xc3\xa9"}, {Process: string(bytes.Repeat([]byte{'p'}, 256))},
		{Socket: "/" + string(bytes.Repeat([]byte{'s'}, 107))}} {
		if c, err := Start(o); err == nil {
			c.Close()
			t.Errorf("Start(%+v) succeeded", o)
		}
	}
}

func TestEnvironment(t *testing.T) {
	f := newFake(t)
	t.Setenv("MEMGUARD_SOCKET", f.sock)
	t.Setenv("MEMGUARD_SERVICE", "from-env")
	start(t, Options{})
	_, body := f.accept(5*time.Second).recv(msgHello, 5*time.Second)
	if s, _, err := readStr(body, 4, nameMax, true); err != nil || s != "from-env" {
		t.Fatalf("HELLO service %q, %v", s, err)
	}
}

// The middleware and the plain check at a throttle of 100 % and 0 %.
func TestMiddlewareAndCheck(t *testing.T) {
	f := newFake(t)
	start(t, Options{Socket: f.sock})
	fc := f.accept(5 * time.Second)
	fc.register(directive{level: Critical, throttle: 1000})
	await(t, "throttle", func() bool { return !Admit() })
	h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, httptest.NewRequest("GET", "/", nil))
	if rr.Code != http.StatusServiceUnavailable || rr.Header().Get("Retry-After") != "1" {
		t.Fatalf("shed request: %d, Retry-After %q", rr.Code, rr.Header().Get("Retry-After"))
	}
	if err := Check(context.Background()); err != ErrShed {
		t.Fatalf("Check: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Check(ctx); err != context.Canceled {
		t.Fatalf("Check of a cancelled context: %v", err)
	}
	fc.direct(directive{})
	await(t, "no throttle", func() bool { return Admit() })
	rr = httptest.NewRecorder()
	h.ServeHTTP(rr, httptest.NewRequest("GET", "/", nil))
	if rr.Code != 204 || Check(context.Background()) != nil {
		t.Fatalf("admitted request: %d", rr.Code)
	}
}

// Admit from many goroutines at once (for -race), and its share.
func TestAdmitConcurrent(t *testing.T) {
	gate.throttle.Store(200)
	defer gate.throttle.Store(0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	total, rejected := 0, 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := 0
			for i := 0; i < 50000; i++ {
				if !Admit() {
					r++
				}
			}
			mu.Lock()
			total += 50000
			rejected += r
			mu.Unlock()
		}()
	}
	wg.Wait()
	if s := float64(rejected) / float64(total); s < 0.19 || s > 0.21 {
		t.Fatalf("shed %.4f at 20 %%", s)
	}
}

func BenchmarkAdmit(b *testing.B) {
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			Admit()
		}
	})
}

// A collection for a release demand can take seconds under pressure: the
// directives that come meanwhile take effect at once, and RELEASED goes
// out when it is done, naming its DIRECTIVE.
func TestFakeThrottleDuringRelease(t *testing.T) {
	ownSettings(t, 100, math.MaxInt64)
	unblock := make(chan struct{})
	collecting := make(chan struct{}, 1)
	freeOSMemory = func() {
		collecting <- struct{}{}
		<-unblock
	}
	t.Cleanup(func() { freeOSMemory = debug.FreeOSMemory })
	f := newFake(t)
	c := start(t, Options{Socket: f.sock})
	fc := f.accept(5 * time.Second)
	fc.register(directive{})
	seq := fc.direct(directive{level: Warn, gcPercent: 80, release: 16 * MiB})
	<-collecting
	fc.direct(directive{level: Critical, gcPercent: 50, throttle: 1000})
	await(t, "the throttle while the release runs", func() bool { return !Admit() })
	if gcPercent() != 50 || c.Stats().Releases != 0 {
		t.Fatalf("during the release: GOGC %d, %d releases", gcPercent(), c.Stats().Releases)
	}
	close(unblock)
	_, body := fc.recv(msgReleased, 5*time.Second)
	if binary.LittleEndian.Uint32(body) != seq {
		t.Fatalf("RELEASED % x for DIRECTIVE %d", body, seq)
	}
	await(t, "the release counted", func() bool { return c.Stats().Releases == 1 })
}

// At its memory limit with few free pages, the runtime already collects
// back to back: a release demand is answered at once with what the hook
// freed (nothing here), and no forced collection; under the limit the
// forced collection comes.
func TestFakeReleaseAtLimit(t *testing.T) {
	ownSettings(t, 100, 1*MiB) // far under what this test process holds
	calls := make(chan struct{}, 4)
	freeOSMemory = func() { calls <- struct{}{} }
	t.Cleanup(func() { freeOSMemory = debug.FreeOSMemory })
	f := newFake(t)
	start(t, Options{Socket: f.sock})
	fc := f.accept(5 * time.Second)
	fc.register(directive{})
	await(t, "the runtime at its memory limit", func() bool {
		return heapAtLimit(ReadHeap(), memoryLimit())
	})
	seq := fc.direct(directive{level: Warn, gcPercent: 50, release: 8 * MiB})
	_, body := fc.recv(msgReleased, 5*time.Second)
	if binary.LittleEndian.Uint32(body) != seq || binary.LittleEndian.Uint64(body[4:]) != 0 ||
		len(calls) != 0 {
		t.Fatalf("at the limit: RELEASED % x for DIRECTIVE %d, %d forced collections",
			body, seq, len(calls))
	}

	debug.SetMemoryLimit(math.MaxInt64)
	seq = fc.direct(directive{level: Warn, gcPercent: 50, release: 8 * MiB})
	_, body = fc.recv(msgReleased, 5*time.Second)
	if binary.LittleEndian.Uint32(body) != seq || len(calls) != 1 {
		t.Fatalf("under no limit: RELEASED % x for DIRECTIVE %d, %d forced collections",
			body, seq, len(calls))
	}
}

func TestHeapAtLimit(t *testing.T) {
	for _, c := range []struct {
		h     HeapStats
		limit int64
		want  bool
	}{
		{HeapStats{Sys: 900 * MiB}, 819 * MiB, true},                       // over it, no free pages
		{HeapStats{Sys: 819 * MiB}, 819 * MiB, true},                       // at it
		{HeapStats{Sys: 900 * MiB, Idle: 25 * MiB}, 819 * MiB, true},       // under 1/32 of it free
		{HeapStats{Sys: 900 * MiB, Idle: 26 * MiB}, 819 * MiB, false},      // more free: worth returning
		{HeapStats{Sys: 900 * MiB, Released: 100 * MiB}, 819 * MiB, false}, // 800 MiB resident: under it
		{HeapStats{Sys: 64 * MiB, Idle: 4 * MiB}, 32 * MiB, true},          // the 4 MiB floor
		{HeapStats{Sys: 64 * MiB, Idle: 5 * MiB}, 32 * MiB, false},
		{HeapStats{Sys: 900 * MiB}, math.MaxInt64, false}, // no limit
		{HeapStats{Sys: 900 * MiB}, 0, false},
	} {
		if got := heapAtLimit(c.h, c.limit); got != c.want {
			t.Errorf("heapAtLimit(%+v, %d) = %v", c.h, c.limit, got)
		}
	}
}

// reportFlags waits for a REPORT whose header flags are want.
func (fc *fakeConn) reportFlags(want uint32) {
	fc.f.t.Helper()
	buf := make([]byte, msgMax)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		_ = fc.c.SetReadDeadline(deadline)
		n, err := fc.c.Read(buf)
		if err != nil {
			break
		}
		if n >= headerSize && binary.LittleEndian.Uint16(buf) == msgReport &&
			binary.LittleEndian.Uint32(buf[12:]) == want {
			return
		}
	}
	fc.f.t.Fatalf("no REPORT with flags 0x%x", want)
}

// The local limit: past the soft limit the client takes a WARN's actions
// by itself, past 9/8 of it a CRITICAL's, flags its REPORTs LOCAL_LIMIT,
// and ends them when the daemon says NORMAL with the heap back under.
func TestFakeLocalLimit(t *testing.T) {
	ownSettings(t, 100, math.MaxInt64)
	var external atomic.Uint64
	f := newFake(t)
	h := &hooks{}
	c := start(t, h.install(Options{Socket: f.sock,
		ExternalBytes: func() uint64 { return external.Load() }}))
	fc := f.accept(5 * time.Second)
	const soft = 1 << 30
	fc.register(directive{softLimit: soft})
	await(t, "the soft limit", func() bool { return c.Stats().SoftLimit == soft })
	fc.reportFlags(0)
	// Past 9/8 the heap jumps up: the growth throttle sheds while the
	// jump counts in the growth rate, then the local level alone acts.
	// (The first jump, past the soft limit, may come before the watch
	// has looked at the heap with a soft limit, so it is not awaited.)
	flat := func() {
		t.Helper()
		await(t, "the jump's growth throttle", func() bool { return c.Stats().GrowthThrottle > 0 })
		await(t, "no growth throttle", func() bool { return c.Stats().GrowthThrottle == 0 })
	}
	if memoryLimit() != soft || gcPercent() != 100 {
		t.Fatalf("at NORMAL: GOGC %d, GOMEMLIMIT %d", gcPercent(), memoryLimit())
	}

	// Past the soft limit (heap + external), under 9/8 of it: WARN.
	external.Store(soft + 8*MiB)
	fc.reportFlags(flagLocalLimit)
	await(t, "local WARN", func() bool { return c.Stats().LocalLevel == Warn })
	if c.Level() != Warn || gcPercent() != limitWarnGC || shedShare(1000) != 0 {
		t.Fatalf("local WARN: level %v, GOGC %d", c.Level(), gcPercent())
	}
	// A rate takes two looks: the watch looks at this heap before the
	// jump (it looks every limitPollFar at most, and both steps can come
	// within one of those).
	looks := c.local.looks.Load()
	await(t, "the watch's look at the heap", func() bool { return c.local.looks.Load() > looks+1 })

	// Past 9/8: CRITICAL, a quarter shed; the daemon's own NORMAL does
	// not lift it while the heap is over.
	external.Store(soft / 8 * 9)
	await(t, "local CRITICAL", func() bool { return c.Stats().LocalLevel == Critical })
	flat()
	if gcPercent() != limitCritGC || c.Stats().Throttle != limitCritThrottle {
		t.Fatalf("local CRITICAL: GOGC %d, stats %+v", gcPercent(), c.Stats())
	}
	if s := shedShare(100000); s < 0.24 || s > 0.26 {
		t.Fatalf("shed %.4f at local CRITICAL", s)
	}
	fc.direct(directive{softLimit: soft})
	fc.reportFlags(flagLocalLimit)
	if c.Stats().LocalLevel != Critical {
		t.Fatalf("a NORMAL directive lifted the local level over the limit: %+v", c.Stats())
	}

	// Under 17/16 of the limit: back to WARN's actions, nothing shed.
	external.Store(soft + 8*MiB)
	await(t, "local WARN again", func() bool { return c.Stats().LocalLevel == Warn })
	if gcPercent() != limitWarnGC || shedShare(1000) != 0 {
		t.Fatalf("under 17/16: GOGC %d", gcPercent())
	}

	// The daemon at WARN (its GC percent is stricter than the local
	// one), then the heap back under: WARN's actions stay while the
	// daemon says WARN, still flagged.
	fc.direct(directive{level: Warn, gcPercent: 40, softLimit: soft})
	await(t, "the daemon's WARN", func() bool { return c.Stats().GCPercent == 40 })
	external.Store(0)
	fc.reportFlags(flagLocalLimit)
	fc.reportFlags(flagLocalLimit)
	if st := c.Stats(); st.LocalLevel != Warn || gcPercent() != 40 || shedShare(1000) != 0 {
		t.Fatalf("back under at WARN: GOGC %d, stats %+v", gcPercent(), st)
	}

	// NORMAL with the heap under: over, the program's GOGC is back.
	fc.direct(directive{softLimit: soft})
	fc.reportFlags(0)
	await(t, "local NORMAL", func() bool { return c.Stats().LocalLevel == Normal })
	if c.Level() != Normal || gcPercent() != 100 || memoryLimit() != soft {
		t.Fatalf("NORMAL: level %v, GOGC %d, GOMEMLIMIT %d", c.Level(), gcPercent(), memoryLimit())
	}
	levels, _, _ := h.told()
	want := []Level{Warn, Critical, Warn, Normal}
	if len(levels) != len(want) {
		t.Fatalf("level hook: %v, want %v", levels, want)
	}
	for i := range want {
		if levels[i] != want[i] {
			t.Fatalf("level hook: %v, want %v", levels, want)
		}
	}
}

// The growth throttle's rule (limit.go): the share of the growth that
// does not fit under 9/8 of the soft limit within limitHorizon.
func TestGrowthThrottle(t *testing.T) {
	const ceil = 920 * MiB
	for _, c := range []struct {
		heap, ceiling uint64
		rate          float64
		want          uint32
	}{
		{720 * MiB, 0, 200 * MiB, 0},           // no soft limit
		{720 * MiB, ceil, 0, 0},                // flat
		{720 * MiB, ceil, -50 * MiB, 0},        // shrinking
		{720 * MiB, ceil, math.NaN(), 0},       // nothing known
		{520 * MiB, ceil, 200 * MiB, 0},        // 400 MiB of room: 2 s of growth
		{620 * MiB, ceil, 200 * MiB, 250},      // 300: a quarter does not fit
		{720 * MiB, ceil, 200 * MiB, 500},      // 200: half
		{820 * MiB, ceil, 200 * MiB, 750},      // 100: three quarters
		{900 * MiB, ceil, 200 * MiB, 950},      // 20: nearly all
		{720 * MiB, ceil, 120 * MiB, 167},      // slower growth, less shed
		{ceil, ceil, 10 * MiB, limitGrowthMax}, // at the ceiling and growing
		{ceil, ceil, 7 * MiB, 0},               // under the floor: 14 of 920 MiB in 2 s
		{ceil - 10*MiB, ceil, 7 * MiB, 0},
		{ceil + MiB, ceil, 0, 0}, // over it but flat: the local level's
	} {
		if got := growthThrottle(c.heap, c.ceiling, c.rate); got != c.want {
			t.Errorf("growthThrottle(%d MiB, %d MiB, %.0f MiB/s) = %d, want %d",
				c.heap/MiB, c.ceiling/MiB, c.rate/MiB, got, c.want)
		}
	}
}

// The growth rate is an average over limitGrowthTau: it follows a steady
// growth and decays to nothing once the heap is flat.
func TestGrowthRate(t *testing.T) {
	var g growthRate
	t0 := time.Unix(1000, 0)
	if r := g.update(100*MiB, t0); r != 0 {
		t.Fatalf("first look: %f", r)
	}
	heap, now := uint64(100*MiB), t0
	for i := 0; i < 200; i++ { // 2 s at 200 MiB/s, a look every 10 ms
		heap += 2 * MiB
		now = now.Add(10 * time.Millisecond)
		g.update(heap, now)
	}
	if r := g.rate / MiB; r < 199 || r > 201 {
		t.Fatalf("steady 200 MiB/s: %.1f MiB/s", r)
	}
	if r := g.update(heap+MiB, now.Add(time.Microsecond)); r != g.rate || g.heap != heap {
		t.Fatalf("a look within a millisecond counted")
	}
	for i := 0; i < 200; i++ { // 2 s flat
		now = now.Add(10 * time.Millisecond)
		g.update(heap, now)
	}
	if r := g.rate / MiB; r > 0.1 || r < 0 {
		t.Fatalf("flat for 2 s: %.3f MiB/s", r)
	}
}

// Under memguard at NORMAL, a heap growing fast toward its soft limit is
// shed from before it reaches the limit, the local level still NORMAL;
// once it stops growing nothing is shed.
func TestFakeGrowthThrottle(t *testing.T) {
	ownSettings(t, 100, math.MaxInt64)
	var external atomic.Uint64
	f := newFake(t)
	c := start(t, Options{Socket: f.sock, ExternalBytes: func() uint64 { return external.Load() }})
	fc := f.accept(5 * time.Second)
	const soft = 2 << 30
	fc.register(directive{softLimit: soft})
	await(t, "the soft limit", func() bool { return c.Stats().SoftLimit == soft })

	// 1 GiB/s, by the clock, up to 64 MiB under the soft limit.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t0 := time.Now()
		for {
			grown := uint64(time.Since(t0).Seconds() * (1 << 30))
			if grown > soft-64*MiB {
				grown = soft - 64*MiB
			}
			external.Store(grown)
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stop); <-done }()
	await(t, "a growth throttle at NORMAL", func() bool {
		st := c.Stats()
		return st.GrowthThrottle > 0 && st.Throttle >= st.GrowthThrottle &&
			st.LocalLevel == Normal && st.Level == Normal
	})
	await(t, "the growth throttle gone once flat", func() bool {
		st := c.Stats()
		return external.Load() == soft-64*MiB && st.GrowthThrottle == 0 && st.Throttle == 0
	})
	if st := c.Stats(); st.LocalLevel != Normal || st.Level != Normal || shedShare(1000) != 0 {
		t.Fatalf("flat under the limit: %+v", st)
	}
}
