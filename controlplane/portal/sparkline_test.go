package portal

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/google/go-cmp/cmp"
)

func TestSparkline(t *testing.T) {
	to := time.Date(2026, 1, 2, 10, 15, 0, 0, time.UTC)
	from := to.Add(-15 * time.Minute)
	at := func(sec int) time.Time { return from.Add(time.Duration(sec) * time.Second) }
	bad := uint32(0x80000000)
	for _, tc := range []struct {
		name string
		hist []store.Sample
		want trend
	}{
		{"no samples", nil, trend{}},
		{"only bad or non-finite samples", []store.Sample{{Value: 1, Status: bad, At: at(0)}, {Value: math.NaN(), At: at(1)}, {Value: math.Inf(1), At: at(2)}}, trend{}},
		{"one sample: level line", []store.Sample{{Value: 7, At: at(600)}}, trend{Points: "0,24.0 240.0,24.0", N: 1, Min: "7", Max: "7"}},
		{"whole window: min at the bottom, max at the top", []store.Sample{{Value: 10, At: at(0)}, {Value: 30, At: at(450)}, {Value: 20, At: at(900)}},
			trend{Points: "0.0,46.0 120.0,2.0 240.0,24.0", N: 3, Min: "10", Max: "30"}},
		{"starts at the first sample", []store.Sample{{Value: 1, At: at(800)}, {Value: 1, At: at(850)}, {Value: 1, At: at(900)}},
			trend{Points: "0.0,24.0 120.0,24.0 240.0,24.0", N: 3, Min: "1", Max: "1"}},
		{"uncertain kept, bad left out", []store.Sample{{Value: 0, At: at(0)}, {Value: 99, Status: bad, At: at(300)}, {Value: 4, Status: 0x40000000, At: at(900)}},
			trend{Points: "0.0,46.0 240.0,2.0", N: 2, Min: "0", Max: "4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, sparkline(tc.hist, from, to)); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
	t.Run("long history is thinned, keeping the newest", func(t *testing.T) {
		var hist []store.Sample
		for i := range 900 {
			hist = append(hist, store.Sample{Value: float64(i), At: at(i)})
		}
		got := sparkline(hist, from, to)
		vs := strings.Fields(got.Points)
		if got.N != trendMaxPoints || len(vs) != trendMaxPoints {
			t.Fatalf("%d vertices (N=%d), want %d", len(vs), got.N, trendMaxPoints)
		}
		if got.Min != "0" || got.Max != "899" || vs[len(vs)-1] != "239.7,2.0" {
			t.Errorf("range %s..%s, last vertex %s", got.Min, got.Max, vs[len(vs)-1])
		}
	})
}

func TestOPCStatus(t *testing.T) {
	for code, want := range map[uint32]string{0: "Good", 0x002D0000: "Good (0x002D0000)", 0x40920000: "Uncertain (0x40920000)", 0x80340000: "Bad (0x80340000)"} {
		if got, _ := opcStatus(code); got != want {
			t.Errorf("opcStatus(%#x) = %q, want %q", code, got, want)
		}
	}
}
