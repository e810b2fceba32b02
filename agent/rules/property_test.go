package rules

import (
	"math"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// genPoint draws a valid threshold configuration.
func genPoint(t *rapid.T, hyst bool, delay bool) machinemodel.DataPoint {
	d := machinemodel.DataPoint{NodeID: "ns=2;i=1", Name: "P"}
	// Up to four thresholds, drawn in order so they validate:
	// alarm_below ≤ warn_below < warn_above ≤ alarm_above.
	base := float64(rapid.IntRange(-50, 50).Draw(t, "base"))
	gap := float64(rapid.IntRange(1, 40).Draw(t, "gap"))
	wb, wa := base, base+gap
	if rapid.Bool().Draw(t, "warn_below") {
		d.WarnBelow = f(wb)
	}
	if rapid.Bool().Draw(t, "alarm_below") {
		d.AlarmBelow = f(wb - float64(rapid.IntRange(0, 20).Draw(t, "ab")))
	}
	if rapid.Bool().Draw(t, "warn_above") {
		d.WarnAbove = f(wa)
	}
	if rapid.Bool().Draw(t, "alarm_above") || !d.HasThresholds() {
		d.AlarmAbove = f(wa + float64(rapid.IntRange(0, 20).Draw(t, "aa")))
	}
	if hyst {
		d.Hysteresis = rapid.Float64Range(0, gap-0.5).Draw(t, "hysteresis")
	}
	if delay {
		d.DelayMS = uint32(rapid.IntRange(0, 5000).Draw(t, "delay_ms"))
	}
	if ps := d.ValidateRules(); len(ps) != 0 {
		t.Fatalf("generator made an invalid point: %v", ps)
	}
	return d
}

// classify is the level of v without hysteresis or delay.
func classify(d machinemodel.DataPoint, v float64) Level {
	switch {
	case d.AlarmAbove != nil && v > *d.AlarmAbove, d.AlarmBelow != nil && v < *d.AlarmBelow:
		return LevelAlarm
	case d.WarnAbove != nil && v > *d.WarnAbove, d.WarnBelow != nil && v < *d.WarnBelow:
		return LevelWarning
	}
	return LevelOK
}

type input struct {
	dt     time.Duration
	v      float64
	status uint32
	tick   bool
}

func genInputs(t *rapid.T) []input {
	return rapid.SliceOfN(rapid.Custom(func(t *rapid.T) input {
		in := input{
			dt: time.Duration(rapid.IntRange(0, 3000).Draw(t, "dt_ms")) * time.Millisecond,
			v:  float64(rapid.IntRange(-120, 120).Draw(t, "v")) / 2,
		}
		switch rapid.IntRange(0, 9).Draw(t, "kind") {
		case 0:
			in.status = bad
		case 1:
			in.tick = true
		}
		return in
	}), 1, 200).Draw(t, "inputs")
}

// With hysteresis 0 and delay 0 the level after each good sample is the
// direct classification of its value; bad samples change nothing; events
// are emitted exactly on level changes.
func TestPropertyDirectClassification(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		d := genPoint(t, false, false)
		clk := &fakeClock{now: t0}
		e, err := New([]machinemodel.DataPoint{d}, Options{Clock: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		now := t0
		level := LevelOK
		for i, in := range genInputs(t) {
			now = now.Add(in.dt)
			clk.Set(now)
			var evs []Event
			want := level
			if in.tick {
				evs = e.Tick()
			} else {
				evs = e.Observe(Sample{Point: "P", Value: in.v, Status: in.status, At: now})
				if in.status == 0 {
					want = classify(d, in.v)
				}
			}
			got := e.Snapshot().Points[0].Level
			if got != want {
				t.Fatalf("input %d (%+v): level %v, want %v", i, in, got, want)
			}
			if (want != level) != (len(evs) == 1) || len(evs) > 1 {
				t.Fatalf("input %d: level %v → %v with events %+v", i, level, want, evs)
			}
			if len(evs) == 1 && (evs[0].From != level || evs[0].Level != want || !evs[0].At.Equal(now)) {
				t.Fatalf("input %d: event %+v, want %v → %v at %v", i, evs[0], level, want, now)
			}
			level = want
		}
	})
}

// With any hysteresis and delay: events form a chain of real transitions
// (each From is the previous Level, Level ≠ From), in non-decreasing time,
// and the snapshot level is the last event's level; a level never moves
// by a bad sample; and a raise to a level is only reported if the held
// value at that time classifies at least that high (hysteresis only ever
// keeps a level, it never raises one).
func TestPropertyTransitions(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		d := genPoint(t, true, true)
		clk := &fakeClock{now: t0}
		e, err := New([]machinemodel.DataPoint{d}, Options{Clock: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		now := t0
		level := LevelOK
		var lastAt time.Time
		for i, in := range genInputs(t) {
			now = now.Add(in.dt)
			clk.Set(now)
			var evs []Event
			if in.tick {
				evs = e.Tick()
			} else {
				evs = e.Observe(Sample{Point: "P", Value: in.v, Status: in.status, At: now})
			}
			if in.status != 0 && !in.tick && len(evs) > 0 {
				// Only transitions that came due before the bad sample.
				for _, x := range evs {
					if x.At.After(now) {
						t.Fatalf("input %d: bad sample caused %+v", i, x)
					}
				}
			}
			for _, x := range evs {
				if x.From != level || x.Level == x.From {
					t.Fatalf("input %d: event %+v does not follow level %v", i, x, level)
				}
				if x.At.Before(lastAt) || x.At.After(now) {
					t.Fatalf("input %d: event at %v, previous %v, now %v", i, x.At, lastAt, now)
				}
				if x.Level > x.From && classify(d, x.Value) < x.Level {
					t.Fatalf("input %d: raised to %v with value %v (classifies %v)", i, x.Level, x.Value, classify(d, x.Value))
				}
				level, lastAt = x.Level, x.At
			}
			if got := e.Snapshot().Points[0].Level; got != level {
				t.Fatalf("input %d: snapshot %v, events say %v", i, got, level)
			}
		}
	})
}

// Running time never decreases and never exceeds the source time elapsed;
// energy never decreases.
func TestPropertyAccumulators(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		clk := &fakeClock{now: t0}
		e, err := New([]machinemodel.DataPoint{runPt, {NodeID: "ns=2;i=2", Name: "W", Role: machinemodel.RolePowerKW}, {NodeID: "ns=2;i=3", Name: "C", Role: machinemodel.RoleEnergyKWh}},
			Options{Clock: clk.Now, MaxGap: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		now := t0
		var prev PointState
		var prevW, prevC float64
		for i, in := range genInputs(t) {
			// Occasionally the source clock runs backwards.
			if rapid.IntRange(0, 19).Draw(t, "back") == 0 {
				now = now.Add(-time.Duration(rapid.IntRange(0, 10000).Draw(t, "back_ms")) * time.Millisecond)
			} else {
				now = now.Add(in.dt)
			}
			clk.Set(now)
			if in.tick {
				e.Tick()
			} else {
				e.ObserveBatch([]Sample{
					{Point: "P", Value: math.Mod(in.v, 2), Status: in.status, At: now},
					{Point: "W", Value: in.v, Status: in.status, At: now},
					{Point: "C", Value: in.v, Status: in.status, At: now},
				})
			}
			s := e.Snapshot()
			r, w, c := s.Points[0], s.Points[1].EnergyKWh, s.Points[2].EnergyKWh
			if r.RunningHours < prev.RunningHours || w < prevW || c < prevC {
				t.Fatalf("input %d: a total went down: %v→%v h, %v→%v, %v→%v kWh", i, prev.RunningHours, r.RunningHours, prevW, w, prevC, c)
			}
			if step := (r.RunningHours - prev.RunningHours) * 3600; step > 2+1e-9 {
				t.Fatalf("input %d: one step counted %v s > MaxGap", i, step)
			}
			if w-prevW > 60.0*2/3600+1e-9 {
				t.Fatalf("input %d: power step %v kWh too large", i, w-prevW)
			}
			prev, prevW, prevC = r, w, c
		}
	})
}
