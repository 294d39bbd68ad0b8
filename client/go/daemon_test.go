// SPDX-License-Identifier: MIT

package memguard

// Tests against the real memguardd named by $MEMGUARDD, started on a
// private directory as tests/integration/fixture.c does: a fixture cgroup
// tree of regular files that the test rewrites to play the kernel, and a
// fake /proc that maps this process to the service "web".

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

const budget = 100 * MiB

type realDaemon struct {
	t   *testing.T
	dir string
	cmd *exec.Cmd
}

func (d *realDaemon) put(rel, text string) {
	d.t.Helper()
	// In place: the daemon preads the inode it opened.
	f, err := os.OpenFile(filepath.Join(d.dir, rel), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err == nil {
		_, err = f.WriteString(text)
		f.Close()
	}
	if err != nil {
		d.t.Fatal(err)
	}
}

func (d *realDaemon) sock() string { return filepath.Join(d.dir, "memguardd.sock") }

// setUsage makes the service's working set `bytes`.
func (d *realDaemon) setUsage(bytes uint64) {
	d.put("cg/web/memory.current", fmt.Sprintf("%d\n", bytes))
	d.put("cg/web/memory.stat", fmt.Sprintf("anon %d\nfile 0\ninactive_file 0\n", bytes))
}

func newRealDaemon(t *testing.T) *realDaemon {
	exe := os.Getenv("MEMGUARDD")
	if exe == "" {
		t.Skip("MEMGUARDD is not set: no memguardd to test against (tools/check sets it to the built daemon)")
	}
	d := &realDaemon{t: t, dir: t.TempDir()}
	for _, dir := range []string{"cg/web", "proc/self", "proc/pressure", fmt.Sprintf("proc/%d", os.Getpid())} {
		if err := os.MkdirAll(filepath.Join(d.dir, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	psi := "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
	d.put("proc/self/mountinfo", fmt.Sprintf("41 31 0:38 / %s/cg rw,relatime - cgroup2 cgroup2 rw\n", d.dir))
	d.put("proc/meminfo", "MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n")
	d.put("proc/pressure/memory", psi)
	d.put(fmt.Sprintf("proc/%d/cgroup", os.Getpid()), "0::/web\n")
	d.put("cg/web/memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
	d.put("cg/web/memory.max", "max\n")
	d.put("cg/web/memory.high", "max\n")
	d.put("cg/web/cgroup.kill", "0\n")
	d.put("cg/web/memory.pressure", psi)
	d.setUsage(10 * MiB)
	d.put("memguard.conf", "[daemon]\ntick = 50ms\n[web]\ncgroup = web\nbudget = 100M\nrelease_deadline = 500ms\n")
	d.start()
	t.Cleanup(func() {
		d.stop(syscall.SIGTERM)
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(d.dir, "memguardd.log"))
			t.Logf("memguardd's log:\n%s", log)
		}
	})
	return d
}

func (d *realDaemon) start() {
	d.t.Helper()
	log, err := os.OpenFile(filepath.Join(d.dir, "memguardd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	defer log.Close()
	d.cmd = exec.Command(os.Getenv("MEMGUARDD"), "--config", filepath.Join(d.dir, "memguard.conf"),
		"--socket", d.sock(), "--cgroup-root", filepath.Join(d.dir, "cg"),
		"--proc-root", filepath.Join(d.dir, "proc"))
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatalf("starting memguardd: %v", err)
	}
	for i := 0; i < 500; i++ {
		if c, err := net.Dial("unixpacket", d.sock()); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.t.Fatalf("memguardd did not listen on %s", d.sock())
}

func (d *realDaemon) stop(sig syscall.Signal) {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(sig)
	_ = d.cmd.Wait()
	d.cmd = nil
}

// The daemon's directives at WARN, CRITICAL and NORMAL, read back from the
// runtime, and the hooks.
func TestDaemonDirectives(t *testing.T) {
	ownSettings(t, 137, 3<<30)
	d := newRealDaemon(t)
	var rec logRecorder
	h := &hooks{freed: func(b uint64) uint64 { return b }}
	c := start(t, h.install(Options{Socket: d.sock(), Service: "web", Log: rec.log}))
	await(t, "registration", func() bool { return c.Stats().Connected })
	if st := c.Stats(); st.Service != "web" || st.Budget != budget || st.ClientID == 0 {
		t.Fatalf("WELCOME: %+v", st)
	}

	// 85 %: WARN, a lower GC percent and a soft limit, in the runtime.
	d.setUsage(budget * 85 / 100)
	await(t, "WARN", func() bool { return c.Level() == Warn })
	await(t, "a release demand", func() bool { return c.Stats().Releases > 0 })
	st := c.Stats()
	if st.GCPercent <= 0 || st.GCPercent >= 100 || st.SoftLimit == 0 || st.SoftLimit > budget {
		t.Fatalf("at WARN: %+v", st)
	}
	if gcPercent() != st.GCPercent || memoryLimit() != int64(st.SoftLimit) {
		t.Fatalf("at WARN: GOGC %d, GOMEMLIMIT %d; directed %d %%, %d bytes",
			gcPercent(), memoryLimit(), st.GCPercent, st.SoftLimit)
	}
	if _, _, asked := h.told(); asked[0] != budget*85/100-budget*80/100 {
		t.Errorf("asked to release %d bytes", asked[0])
	}

	// 93 %: CRITICAL; Admit sheds the throttle's share.
	d.setUsage(budget * 93 / 100)
	await(t, "CRITICAL", func() bool { return c.Level() == Critical && c.Stats().Throttle > 0 })
	th := float64(c.Stats().Throttle) / 1000
	if s := shedShare(100000); s < th-0.02 || s > th+0.02 || c.Stats().Throttle != int(th*1000) {
		t.Fatalf("shed %.4f at a throttle of %.3f", s, th)
	}
	if gcPercent() != c.Stats().GCPercent {
		t.Fatalf("at CRITICAL: GOGC %d, directed %d", gcPercent(), c.Stats().GCPercent)
	}

	// 40 %: NORMAL, the program's own GOGC exactly. memguardd sends a soft
	// limit at every level (the client's share of warn × budget, its local
	// limit), so GOMEMLIMIT is the lower of that and the program's own.
	d.setUsage(budget * 40 / 100)
	await(t, "NORMAL", func() bool { return c.Level() == Normal })
	st = c.Stats()
	want := int64(3 << 30)
	if st.SoftLimit > 0 && int64(st.SoftLimit) < want {
		want = int64(st.SoftLimit)
	}
	if gcPercent() != 137 || memoryLimit() != want || shedShare(10000) != 0 {
		t.Fatalf("at NORMAL: GOGC %d, GOMEMLIMIT %d; soft limit %d", gcPercent(), memoryLimit(),
			st.SoftLimit)
	}
	if st.SoftLimit == 0 || st.SoftLimit > budget*80/100 {
		t.Errorf("at NORMAL: soft limit %d, want the share of warn × budget", st.SoftLimit)
	}
	if levels, _, _ := h.told(); len(levels) < 3 || levels[0] != Warn || levels[len(levels)-1] != Normal {
		t.Errorf("level hook: %v", levels)
	}
	if n := rec.count(func(error) bool { return true }); n != 0 {
		t.Errorf("log: %v", rec.errs)
	}
	// Closed: nothing of memguard's is left in the runtime.
	c.Close()
	if gcPercent() != 137 || memoryLimit() != 3<<30 {
		t.Fatalf("after Close: GOGC %d, GOMEMLIMIT %d", gcPercent(), memoryLimit())
	}
}

// The daemon SIGKILLed and started again: the client is back within 2 s,
// the directive in force was kept meanwhile (admission open), and the
// level hook is not told WARN a second time.
func TestDaemonRestart(t *testing.T) {
	ownSettings(t, 100, math.MaxInt64)
	d := newRealDaemon(t)
	var rec logRecorder
	h := &hooks{}
	c := start(t, h.install(Options{Socket: d.sock(), Log: rec.log}))
	await(t, "registration", func() bool { return c.Stats().Connected })
	d.setUsage(budget * 85 / 100)
	await(t, "WARN", func() bool { return c.Level() == Warn })
	gc := gcPercent()

	d.stop(syscall.SIGKILL)
	await(t, "the loss noticed", func() bool { return !c.Stats().Connected })
	if !Admit() || c.Level() != Warn || gcPercent() != gc {
		t.Fatalf("without the daemon: level %v, GOGC %d (was %d)", c.Level(), gcPercent(), gc)
	}
	t0 := time.Now()
	d.start()
	await(t, "reconnection", func() bool { return c.Stats().Connected })
	if took := time.Since(t0); took > 2*time.Second {
		t.Errorf("back after %v", took)
	}
	await(t, "WARN again", func() bool { return c.Stats().Connects == 2 && c.Level() == Warn })
	time.Sleep(300 * time.Millisecond)
	if levels, _, _ := h.told(); len(levels) != 1 || levels[0] != Warn {
		t.Errorf("level hook: %v", levels)
	}
	if rec.count(func(e error) bool { return errors.As(e, new(*ProtocolError)) }) != 0 {
		t.Errorf("log: %v", rec.errs)
	}
}
