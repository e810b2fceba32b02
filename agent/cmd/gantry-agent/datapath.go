package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gantry-iot/gantry/agent/forward"
)

// countingPublisher counts the telemetry values in the records the broker
// acknowledged (gantry_agent_values_sent_total), so the data path's
// delivered rate is measured in values, not in batches of varying size.
type countingPublisher struct {
	forward.Publisher
	values atomic.Int64
}

func (p *countingPublisher) PublishAsync(seq uint64, payload []byte, done func(error)) {
	n := int64(recordSamples(payload))
	p.Publisher.PublishAsync(seq, payload, func(err error) {
		if err == nil {
			p.values.Add(n)
		}
		done(err)
	})
}

// recordSamples counts the samples (field 2) of a queued record without
// decoding them; a malformed record counts what precedes the damage.
func recordSamples(b []byte) int {
	n := 0
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return n
		}
		b = b[l:]
		if l = protowire.ConsumeFieldValue(num, typ, b); l < 0 {
			return n
		}
		b = b[l:]
		if num == 2 && typ == protowire.BytesType {
			n++
		}
	}
	return n
}

// dataPathMetrics registers the values counters of the OPC-UA data path:
// collected from the server (before the deadband) and acknowledged by the
// broker.
func dataPathMetrics(reg prometheus.Registerer, status *statusPage, pub *countingPublisher) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_agent_values_collected_total", Help: "OPC-UA values received from the server (before the deadband)."}, func() float64 {
			if c := status.collector.Load(); c != nil {
				return float64(c.Collected.Load())
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_agent_values_sent_total", Help: "Telemetry values in queued records acknowledged by the broker (PUBACK)."}, func() float64 { return float64(pub.values.Load()) }))
}

// servePprof serves net/http/pprof on addr (a profiling aid, off unless
// --pprof-listen names an address; bind it to loopback).
func servePprof(addr string, logger *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof: listen on %s: %w (choose another with --pprof-listen)", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	logger.Info("pprof listening", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}
