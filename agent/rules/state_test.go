package rules

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzDecodeState: the state decoder never panics, and what it accepts
// has finite, non-negative totals and survives an encode/decode round trip.
func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"version":1,"saved_at":"2026-11-24T08:00:00Z","points":{"Run":{"running_seconds":3600},"kWh":{"energy_kwh":5,"counter_kwh":105}}}`))
	f.Add([]byte(`{"version":1,"points":{"Run":{"running_seconds":-1}}}`))
	f.Add([]byte(`{"version":1,"points":{"Run":{"running_seconds":1e300}}}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"points":{}} {}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeState(data)
		if err != nil {
			return
		}
		for name, ent := range st.Points {
			if !(ent.RunningSeconds >= 0) || !(ent.EnergyKWh >= 0) || ent.check() != nil {
				t.Fatalf("accepted %q: %+v", name, ent)
			}
		}
		out, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeState(out)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", out, err)
		}
		if diff := cmp.Diff(st.Points, back.Points); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}
