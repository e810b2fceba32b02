package main

import (
	"sync/atomic"

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
