// SPDX-License-Identifier: MIT

// Command http-service is a small HTTP service that takes part in
// memguard: it starts a client, sheds requests through the middleware
// when the daemon throttles, and drops its cache when the daemon demands
// memory back.
//
//	go run ./examples/http-service -listen 127.0.0.1:8080
//
// GET /item?key=K returns a 64 KiB value for K, cached; GET /status shows
// the client's state.  Run it in a service's cgroup, with memguardd
// configured for that service, or with MEMGUARD_SOCKET and
// MEMGUARD_SERVICE set; without a daemon it serves everything.
package main

import (
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"memguard.dev/memguard"
)

const valueSize = 64 << 10

// cache is a map of values that the daemon can empty.
type cache struct {
	mu    sync.Mutex
	items map[string][]byte
}

func (c *cache) get(key string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.items[key]; ok {
		return v
	}
	v := make([]byte, valueSize)
	sum := sha256.Sum256([]byte(key))
	for i := range v {
		v[i] = sum[i%len(sum)]
	}
	c.items[key] = v
	return v
}

// release drops entries until `want` bytes are gone (all for the maximum)
// and returns the bytes dropped.  The Go collector frees them; memguard
// returns the pages.
func (c *cache) release(want uint64) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var freed uint64
	for k := range c.items {
		if freed >= want {
			break
		}
		delete(c.items, k)
		freed += valueSize
	}
	return freed
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on (loopback)")
	flag.Parse()
	logger := log.New(os.Stdout, "http-service: ", log.LstdFlags)
	c := &cache{items: map[string][]byte{}}

	client, err := memguard.Start(memguard.Options{
		Log:       func(err error) { logger.Print(err) },
		OnLevel:   func(l memguard.Level) { logger.Printf("memguard level %s", l) },
		OnRelease: c.release,
	})
	if err != nil {
		logger.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/item", func(w http.ResponseWriter, r *http.Request) {
		v := c.get(r.URL.Query().Get("key"))
		fmt.Fprintf(w, "%x\n", sha256.Sum256(v))
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(client.Stats())
	})
	// /status is outside the gate, so the state can be seen while
	// requests are shed.
	root := http.NewServeMux()
	root.Handle("/status", mux)
	root.Handle("/", memguard.Middleware(mux))
	srv := &http.Server{Addr: *listen, Handler: root}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		_ = srv.Close()
	}()
	logger.Printf("serving on %s", *listen)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		logger.Print(err)
	}
	client.Close()
}
