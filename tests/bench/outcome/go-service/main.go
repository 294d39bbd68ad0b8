// SPDX-License-Identifier: MIT

// Command go-service is the Go service of the outcome experiment
// (tests/bench/outcome), after the seed material's MemLimiter experiment:
// an HTTP service where each request allocates 1 MiB (by default), touches
// it and keeps it for 6 s, and a load generator that sends requests on an
// exact schedule and measures each one's latency from its scheduled
// arrival.
//
//	go-service serve --listen PATH [--socket S --service NAME] [--request-kb N]
//	                 [--keep SEC] [--pointers]
//	go-service load --target PATH --rate N --duration SEC
//
// serve listens on the Unix socket PATH (HTTP), imports memguard and
// calls memguard.Start with the socket and service given (without a
// daemon listening there, that has no effect), and sheds requests through
// memguard.Middleware.  --pointers keeps each request's memory as a linked
// list of 128-byte nodes instead of one byte slice: the same bytes, 8192
// pointers per MiB for the collector to trace.  It prints a line of
// figures per second and, on SIGTERM, a 'done:' line as the C examples
// print it (requests, admitted, rejected, levels seen; tools/demo reads
// it) and a 'summary:' line: the lowest GC percent the daemon set, GC CPU
// since the start, the levels seen.
//
// load runs outside the service's cgroup.  Request i is due at
// start + i/rate; its latency runs from then to the end of its response,
// so time queued behind a collection counts.  A 503 is a shed request; a
// request that fails (the service died) is counted as failed.  It prints
// a 'summary:' line: requests, ok, shed (and %), failed, p50/p99/max of
// the requests served.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"memguard.dev/memguard"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go-service serve|load [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "load":
		load(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "go-service: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

// ---- the service -------------------------------------------------------------

type node struct {
	next *node
	pad  [120]byte
}

type held struct {
	until time.Time
	bytes []byte
	list  *node
}

// store keeps each request's memory until its time is up.
type store struct {
	mu    sync.Mutex
	items []held
	bytes int64
}

func (s *store) add(h held, size int) {
	s.mu.Lock()
	s.items = append(s.items, h)
	s.bytes += int64(size)
	s.mu.Unlock()
}

func (s *store) expire(now time.Time, size int) {
	s.mu.Lock()
	n := 0
	for n < len(s.items) && !s.items[n].until.After(now) {
		s.items[n] = held{}
		n++
	}
	s.items = s.items[n:]
	s.bytes -= int64(n * size)
	s.mu.Unlock()
}

func (s *store) live() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "", "Unix socket path to serve HTTP on")
	socket := fs.String("socket", "", "memguardd's socket (default: $MEMGUARD_SOCKET, else the default)")
	service := fs.String("service", "", "memguard service name")
	requestKB := fs.Int("request-kb", 1024, "KiB allocated and kept per request")
	keep := fs.Duration("keep", 6*time.Second, "how long a request's memory is kept")
	pointers := fs.Bool("pointers", false, "keep the memory as 128-byte nodes of a linked list")
	_ = fs.Parse(args)
	size := *requestKB << 10

	var mu sync.Mutex
	minGC, levels := 0, map[memguard.Level]bool{}
	client, err := memguard.Start(memguard.Options{Socket: *socket, Service: *service,
		Log: func(err error) { fmt.Printf("memguard: %v\n", err) },
		OnLevel: func(l memguard.Level) {
			mu.Lock()
			levels[l] = true
			mu.Unlock()
			fmt.Printf("memguard: level %v\n", l)
		},
		OnGC: func(p int) {
			mu.Lock()
			if p > 0 && (minGC == 0 || p < minGC) {
				minGC = p
			}
			mu.Unlock()
		},
	})
	if err != nil {
		fmt.Printf("go-service: %v\n", err)
		os.Exit(1)
	}

	st := &store{}
	var served atomic.Uint64
	work := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := held{until: time.Now().Add(*keep)}
		if *pointers {
			var head *node
			for i := 0; i < size/128; i++ {
				n := &node{next: head}
				n.pad[0], n.pad[119] = byte(i), byte(i>>8)
				head = n
			}
			h.list = head
		} else {
			b := make([]byte, size)
			for i := 0; i < len(b); i += 4096 {
				b[i] = byte(i)
			}
			h.bytes = b
		}
		st.add(h, size)
		served.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})
	mux := http.NewServeMux()
	mux.Handle("/work", memguard.Middleware(work))

	_ = os.Remove(*listen)
	ln, err := net.Listen("unix", *listen)
	if err != nil {
		fmt.Printf("go-service: %v\n", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var ms runtime.MemStats
	for i := 1; ; i++ {
		select {
		case <-stop:
			_ = srv.Close()
			s := client.Stats()
			client.Close()
			runtime.ReadMemStats(&ms)
			mu.Lock()
			lv := ""
			for l, c := range []string{"N", "W", "C", "E"} {
				if levels[memguard.Level(l)] {
					lv += c
				}
			}
			// The C examples' 'done:' line, which tools/demo reads.
			fmt.Printf("done: requests=%d admitted=%d rejected=%d levels=%s\n",
				s.Admitted+s.Rejected, s.Admitted, s.Rejected, lv)
			fmt.Printf("summary: seconds=%.1f served=%d admitted=%d rejected=%d min_gc_pct=%d "+
				"gc_cpu_pct=%.2f gc_cycles=%d forced_gc=%d releases=%d levels=%s\n",
				time.Since(start).Seconds(), served.Load(), s.Admitted, s.Rejected, minGC,
				100*ms.GCCPUFraction, ms.NumGC, ms.NumForcedGC, s.Releases, lv)
			mu.Unlock()
			return
		case now := <-tick.C:
			st.expire(now, size)
			if i%10 != 0 {
				continue
			}
			h := memguard.ReadHeap()
			gc := debug.SetGCPercent(-1)
			debug.SetGCPercent(gc)
			s := client.Stats()
			fmt.Printf("t=%ds level=%v local=%v gogc=%d gomemlimit_mib=%d throttle=%d live_mib=%d "+
				"heap_inuse_mib=%d idle_mib=%d resident_mib=%d admitted=%d rejected=%d "+
				"released_mib=%d gc_cpu_pct=%.2f\n",
				i/10, s.Level, s.LocalLevel, gc, debug.SetMemoryLimit(-1)>>20, s.Throttle, st.live()>>20,
				h.Inuse>>20, h.Idle>>20, h.Resident()>>20, s.Admitted, s.Rejected, s.ReleasedTotal>>20,
				100*memguard.GCCPUFraction())
		}
	}
}

// ---- the load generator ------------------------------------------------------

func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	target := fs.String("target", "", "the service's Unix socket")
	rate := fs.Int("rate", 120, "requests per second")
	duration := fs.Int("duration", 40, "seconds of load")
	_ = fs.Parse(args)

	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", *target)
		},
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 4096,
		DisableCompression:  true,
	}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	n := *rate * *duration
	lat := make([]time.Duration, n)
	status := make([]int, n) // HTTP status, or -1 for a failure
	var wg sync.WaitGroup
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	start := time.Now().Add(100 * time.Millisecond)
	sent := 0
loop:
	for i := 0; i < n; i++ {
		due := start.Add(time.Duration(i) * time.Second / time.Duration(*rate))
		if d := time.Until(due); d > 0 {
			select {
			case <-stop:
				break loop
			case <-time.After(d):
			}
		}
		sent++
		wg.Add(1)
		go func(i int, due time.Time) {
			defer wg.Done()
			resp, err := client.Get("http://go-service/work")
			if err != nil {
				status[i] = -1
			} else {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status[i] = resp.StatusCode
			}
			lat[i] = time.Since(due)
		}(i, due)
	}
	wg.Wait()

	var ok []time.Duration
	shed, failed := 0, 0
	for i := 0; i < sent; i++ {
		switch status[i] {
		case http.StatusNoContent:
			ok = append(ok, lat[i])
		case http.StatusServiceUnavailable:
			shed++
		default:
			failed++
		}
	}
	sort.Slice(ok, func(a, b int) bool { return ok[a] < ok[b] })
	q := func(p float64) float64 {
		if len(ok) == 0 {
			return 0
		}
		return float64(ok[int(p*float64(len(ok)-1))]) / float64(time.Millisecond)
	}
	pct := 0.0
	if sent > 0 {
		pct = 100 * float64(shed) / float64(sent)
	}
	fmt.Printf("summary: requests=%d ok=%d shed=%d shed_pct=%.2f failed=%d p50_ms=%.3f "+
		"p99_ms=%.3f max_ms=%.3f\n", sent, len(ok), shed, pct, failed, q(0.50), q(0.99), q(1))
}
