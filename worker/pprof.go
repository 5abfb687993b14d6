package main

import (
	"net"
	"net/http"
	"net/http/pprof"
	"os"
)

// MORAG_WORKER_PPROF=127.0.0.1:6060 serves net/http/pprof on that address:
// a hidden switch for profiling the worker while it drains a queue (set it
// before `make bench`: the bench's workers inherit the environment). It is not a flag on purpose: it
// is a tool for whoever measures the worker, not something to deploy.
func init() {
	addr := os.Getenv("MORAG_WORKER_PPROF")
	if addr == "" {
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	go http.Serve(ln, mux) //nolint:errcheck // owner: the process; a profiling aid
}
