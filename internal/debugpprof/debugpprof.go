// Package debugpprof serves Go's profiles (net/http/pprof) of a running
// daemon on an address of the operator's choice, for finding out where a
// daemon's CPU time and memory go (bench/ profiles the agent during
// iperf3 with it). roles/agent wires it behind the hidden flag
// --pprof-listen; nothing listens unless that flag is given.
package debugpprof

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"time"
)

// Listen listens on addr: a unix socket when addr starts with "/" (mode
// 0600; reachable from every network namespace of the machine), TCP
// host:port otherwise (use a loopback address: the profiles are not
// authenticated).
func Listen(addr string) (net.Listener, error) {
	if strings.HasPrefix(addr, "/") {
		if err := os.Remove(addr); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("pprof: remove stale socket %s: %w", addr, err)
		}
		ln, err := net.Listen("unix", addr)
		if err != nil {
			return nil, fmt.Errorf("pprof: listen %s: %w", addr, err)
		}
		if err := os.Chmod(addr, 0o600); err != nil {
			ln.Close()
			return nil, fmt.Errorf("pprof: chmod %s: %w", addr, err)
		}
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof: listen %s: %w", addr, err)
	}
	return ln, nil
}

// Handler serves the pprof index and profiles under /debug/pprof/.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// Serve serves Handler on ln until ctx ends, then closes ln and returns.
func Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(sctx) // profiles in progress end with their conns
		srv.Close()
	}()
	err := srv.Serve(ln)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("pprof: %w", err)
}
