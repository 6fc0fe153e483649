package cliutil

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"meshd/internal/server"
)

// MetricsFlag is --metrics-listen, where a role serves Prometheus /metrics.
// It is its own plain-HTTP address, never the public HTTPS port: counts of
// peers, logins and bytes are for the operator's scraper, not for anyone
// who can reach the server.
func MetricsFlag(example string) cli.Flag {
	return &cli.StringFlag{Name: "metrics-listen",
		Usage: "`HOST:PORT` to serve Prometheus /metrics on (plain HTTP; keep it private, e.g. " + example + "; default: off)"}
}

// ServeMetrics serves the collectors, with the Go runtime's and the
// process's, as /metrics on addr until ctx ends. The returned channel
// yields what serving ended with (at once, nil, when addr is empty: the
// flag was not given). Each call has its own registry: no process-wide
// default registry is involved.
func ServeMetrics(ctx context.Context, log *zap.Logger, addr string, cs ...prometheus.Collector) (<-chan error, error) {
	done := make(chan error, 1)
	if addr == "" {
		close(done)
		return done, nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	srv := server.New(log.Named("metrics"), nil)
	srv.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4}))
	ln, err := srv.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w (is another process on that port? pick another)", err)
	}
	go func() { done <- srv.Serve(ctx, ln) }()
	return done, nil
}
