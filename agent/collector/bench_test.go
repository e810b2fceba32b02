package collector

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// legacy is the collector's per-value path before the per-point state
// (kept here as the benchmark's baseline): the handle looked up in a map,
// the status and last value in maps keyed by name, the lock taken per
// value.
type legacy struct {
	handles  map[uint32]machinemodel.DataPoint
	mu       sync.Mutex
	statuses map[string]string
	last     map[string]float64
}

func (c *legacy) sample(d machinemodel.DataPoint, dv *ua.DataValue) (Sample, bool) {
	s := Sample{Point: d.Name, Status: uint32(dv.Status), At: dv.SourceTimestamp}
	if s.At.IsZero() {
		s.At = time.Now()
	}
	if dv.Status != ua.StatusOK {
		c.mu.Lock()
		c.statuses[d.Name] = fmt.Sprintf("bad value: %v", dv.Status)
		c.mu.Unlock()
		return s, true
	}
	v, err := toFloat(dv.Value)
	if err != nil {
		return s, false
	}
	s.Value = v
	c.mu.Lock()
	defer c.mu.Unlock()
	c.statuses[d.Name] = "ok"
	last, seen := c.last[d.Name]
	if seen {
		delta := math.Abs(v - last)
		switch d.DeadbandType {
		case "absolute":
			if delta < d.DeadbandValue {
				return s, false
			}
		case "percent":
			if last != 0 && delta/math.Abs(last)*100 < d.DeadbandValue {
				return s, false
			}
		}
	}
	c.last[d.Name] = v
	return s, true
}

func (c *legacy) samples(items []*ua.MonitoredItemNotification) []Sample {
	var pending []Sample
	for _, it := range items {
		d, ok := c.handles[it.ClientHandle]
		if !ok || it.Value == nil {
			continue
		}
		if s, keep := c.sample(d, it.Value); keep {
			pending = append(pending, s)
		}
	}
	return pending
}

// BenchmarkSamples compares the collector's handling of one data change
// notification of 1,000 items (10,000 points, half of them with a
// deadband), before and after the per-point state:
//
//	go test -run '^$' -bench BenchmarkSamples -benchmem ./agent/collector
func BenchmarkSamples(b *testing.B) {
	const points = 10000
	tpl := machinemodel.OPCUA{EndpointURL: "opc.tcp://127.0.0.1:4840", SecurityMode: "None"}
	for i := range points {
		d := machinemodel.DataPoint{NodeID: fmt.Sprintf("ns=2;i=%d", i+1), Name: fmt.Sprintf("gen%d", i), SamplingIntervalMS: 100}
		if i%2 == 0 {
			d.DeadbandType, d.DeadbandValue = "absolute", 0.01
		}
		tpl.DataPoints = append(tpl.DataPoints, d)
	}
	now := time.Now()
	notification := func(round int) []*ua.MonitoredItemNotification {
		items := make([]*ua.MonitoredItemNotification, 1000)
		for i := range items {
			h := uint32((round*1000+i)%points + 1)
			items[i] = &ua.MonitoredItemNotification{ClientHandle: h, Value: &ua.DataValue{Value: ua.MustVariant(float64(round) + float64(i)/7), SourceTimestamp: now}}
		}
		return items
	}
	rounds := make([][]*ua.MonitoredItemNotification, 10)
	for r := range rounds {
		rounds[r] = notification(r)
	}
	b.Run("before/maps", func(b *testing.B) {
		l := &legacy{handles: map[uint32]machinemodel.DataPoint{}, statuses: map[string]string{}, last: map[string]float64{}}
		for i, d := range tpl.DataPoints {
			l.handles[uint32(i+1)] = d
		}
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			l.samples(rounds[n%len(rounds)])
			n++
		}
		b.ReportMetric(float64(n*1000)/b.Elapsed().Seconds(), "values/s")
	})
	b.Run("after/per-point", func(b *testing.B) {
		c, err := New(tpl, func([]Sample) {}, Options{})
		if err != nil {
			b.Fatal(err)
		}
		pending := make([]Sample, 0, 5000)
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			pending = c.samples(rounds[n%len(rounds)], pending[:0])
			n++
		}
		b.ReportMetric(float64(n*1000)/b.Elapsed().Seconds(), "values/s")
	})
}
