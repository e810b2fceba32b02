package rules

import (
	"fmt"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// benchPoints is a model of n points: every fourth has thresholds with
// hysteresis and delay, one is a running condition, one a power point, the
// rest are untracked.
func benchPoints(n int) []machinemodel.DataPoint {
	pts := make([]machinemodel.DataPoint, n)
	for i := range pts {
		pts[i] = machinemodel.DataPoint{NodeID: fmt.Sprintf("ns=2;i=%d", i+1), Name: fmt.Sprintf("p%d", i)}
		if i%4 == 0 {
			pts[i].WarnAbove, pts[i].AlarmAbove, pts[i].Hysteresis, pts[i].DelayMS = f(70), f(85), 2, 1000
		}
	}
	pts[1].Role = machinemodel.RoleRunning
	pts[2].Role = machinemodel.RolePowerKW
	return pts
}

// BenchmarkObserve measures Observe on a 1,000-point model, samples 100 ms
// apart, for a threshold point whose value steps between 60 and 90 every
// 2 s (so it raises and clears an alarm after its 1 s delay), a running point, a power point and an untracked
// point. Each reports x-baseline: its time per sample divided by that of
// the baseline, a bare lookup of the sample's point in a map[string]*struct
// plus one comparison (the least any rules engine must do per sample).
func BenchmarkObserve(b *testing.B) {
	pts := benchPoints(1000)
	baseline := map[string]*struct{ th float64 }{}
	for _, p := range pts {
		baseline[p.Name] = &struct{ th float64 }{70}
	}
	for _, bc := range []struct {
		name  string
		point string
		value func(i int) float64
	}{
		{"threshold", "p0", func(i int) float64 { return float64(60 + i/20%2*30) }},
		{"running", "p1", func(i int) float64 { return float64(i / 100 % 2) }},
		{"power", "p2", func(i int) float64 { return float64(i % 50) }},
		{"untracked", "p3", func(i int) float64 { return float64(i) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			samples := make([]Sample, 1024)
			for i := range samples {
				samples[i] = Sample{Point: bc.point, Value: bc.value(i)}
			}
			// Baseline first, timed by hand over the same samples.
			hits := 0
			start := time.Now()
			for i := 0; i < b.N; i++ {
				s := &samples[i&1023]
				if p := baseline[s.Point]; p != nil && s.Value > p.th {
					hits++
				}
			}
			base := time.Since(start)
			e, err := New(pts, Options{})
			if err != nil {
				b.Fatal(err)
			}
			t := time.Now()
			events := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s := samples[i&1023]
				s.At = t.Add(time.Duration(i) * 100 * time.Millisecond)
				events += len(e.Observe(s))
			}
			b.StopTimer()
			if base > 0 {
				b.ReportMetric(float64(b.Elapsed())/float64(base), "x-baseline")
			}
			b.ReportMetric(float64(events)/float64(b.N), "events/op")
			_ = hits
		})
	}
}
