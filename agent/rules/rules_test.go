package rules

import (
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gantry-iot/gantry/agent/collector"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// A collector.Sample converts to a Sample.
var _ = Sample(collector.Sample{})

var t0 = time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)

func f(v float64) *float64 { return &v }

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

// fakeClock is the agent clock of a test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func newEngine(t *testing.T, pts []machinemodel.DataPoint, opts Options) (*Engine, *fakeClock) {
	t.Helper()
	clk := &fakeClock{now: t0}
	if opts.Clock == nil {
		opts.Clock = clk.Now
	}
	e, err := New(pts, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, clk
}

// step is one input of a scenario: a sample arriving when the agent clock
// equals its source time, or (tick) a Tick at agent time at.
type step struct {
	at     float64
	v      float64
	status uint32
	tick   bool
	point  string // default "P"
}

// ev is the comparable part of an Event, times in seconds after t0.
type ev struct {
	Level, From Level
	Value, Th   float64
	At          float64
}

func feed(e *Engine, clk *fakeClock, steps []step) []ev {
	var got []ev
	for _, s := range steps {
		clk.Set(at(s.at))
		var evs []Event
		if s.tick {
			evs = e.Tick()
		} else {
			name := s.point
			if name == "" {
				name = "P"
			}
			evs = e.Observe(Sample{Point: name, Value: s.v, Status: s.status, At: at(s.at)})
		}
		for _, x := range evs {
			got = append(got, ev{x.Level, x.From, x.Value, x.Threshold, x.At.Sub(t0).Seconds()})
		}
	}
	return got
}

const bad = 0x80000000 // StatusBad

func TestThresholds(t *testing.T) {
	above := func(h float64, delayMS uint32) machinemodel.DataPoint {
		return machinemodel.DataPoint{NodeID: "ns=2;i=1", Name: "P", WarnAbove: f(70), AlarmAbove: f(85), Hysteresis: h, DelayMS: delayMS}
	}
	below := machinemodel.DataPoint{NodeID: "ns=2;i=1", Name: "P", WarnBelow: f(10), AlarmBelow: f(5), Hysteresis: 1}
	for _, tc := range []struct {
		name  string
		dp    machinemodel.DataPoint
		steps []step
		want  []ev
	}{
		{"at the threshold is not above", above(0, 0), []step{{at: 0, v: 70}, {at: 1, v: 85}}, []ev{{LevelWarning, LevelOK, 85, 70, 1}}},
		{"rise and clear, hysteresis 0", above(0, 0), []step{{at: 0, v: 60}, {at: 1, v: 71}, {at: 2, v: 70}},
			[]ev{{LevelWarning, LevelOK, 71, 70, 1}, {LevelOK, LevelWarning, 70, 70, 2}}},
		{"hysteresis holds the level", above(5, 0), []step{{at: 0, v: 71}, {at: 1, v: 68}, {at: 2, v: 65.0001}, {at: 3, v: 65}},
			[]ev{{LevelWarning, LevelOK, 71, 70, 0}, {LevelOK, LevelWarning, 65, 70, 3}}},
		{"hysteresis does not delay the rise", above(5, 0), []step{{at: 0, v: 71}, {at: 1, v: 66}, {at: 2, v: 71}}, []ev{{LevelWarning, LevelOK, 71, 70, 0}}},
		{"straight to alarm is one event", above(5, 0), []step{{at: 0, v: 90}}, []ev{{LevelAlarm, LevelOK, 90, 85, 0}}},
		{"alarm falls to warning then ok", above(5, 0), []step{{at: 0, v: 90}, {at: 1, v: 81}, {at: 2, v: 80}, {at: 3, v: 66}, {at: 4, v: 64}},
			[]ev{{LevelAlarm, LevelOK, 90, 85, 0}, {LevelWarning, LevelAlarm, 80, 85, 2}, {LevelOK, LevelWarning, 64, 70, 4}}},
		{"alarm straight to ok names the alarm threshold", above(5, 0), []step{{at: 0, v: 90}, {at: 1, v: 0}},
			[]ev{{LevelAlarm, LevelOK, 90, 85, 0}, {LevelOK, LevelAlarm, 0, 85, 1}}},
		{"dip within the delay fires nothing", above(0, 10_000), []step{{at: 0, v: 71}, {at: 9.999, v: 60}, {at: 30, v: 60}}, nil},
		{"delay fires at since+delay on the next sample", above(0, 10_000), []step{{at: 0, v: 71}, {at: 4, v: 72}, {at: 25, v: 60}},
			[]ev{{LevelWarning, LevelOK, 72, 70, 10}}},
		{"delay exactly elapsed fires", above(0, 10_000), []step{{at: 0, v: 71}, {at: 10, v: 71}}, []ev{{LevelWarning, LevelOK, 71, 70, 10}}},
		{"delay fires on Tick", above(0, 10_000), []step{{at: 0, v: 71}, {at: 9, tick: true}, {at: 10, tick: true}, {at: 11, tick: true}},
			[]ev{{LevelWarning, LevelOK, 71, 70, 10}}},
		{"delay restarts after a dip", above(0, 10_000), []step{{at: 0, v: 71}, {at: 5, v: 69}, {at: 6, v: 71}, {at: 15, tick: true}, {at: 16, tick: true}},
			[]ev{{LevelWarning, LevelOK, 71, 70, 16}}},
		{"delay through warning to alarm", above(0, 10_000), []step{{at: 0, v: 71}, {at: 5, v: 90}, {at: 30, tick: true}},
			[]ev{{LevelWarning, LevelOK, 90, 70, 10}, {LevelAlarm, LevelWarning, 90, 85, 15}}},
		{"delay applies to clearing", above(0, 10_000), []step{{at: 0, v: 71}, {at: 10, v: 50}, {at: 15, v: 71}, {at: 16, v: 50}, {at: 26, tick: true}},
			[]ev{{LevelWarning, LevelOK, 71, 70, 10}, {LevelOK, LevelWarning, 50, 70, 26}}},
		{"bad sample neither raises nor clears", above(0, 0), []step{{at: 0, v: 71}, {at: 1, v: 0, status: bad}, {at: 2, v: 100, status: bad}, {at: 3, v: 71}},
			[]ev{{LevelWarning, LevelOK, 71, 70, 0}}},
		{"NaN is a bad sample", above(0, 0), []step{{at: 0, v: 71}, {at: 1, v: math.NaN()}, {at: 2, v: math.Inf(1)}}, []ev{{LevelWarning, LevelOK, 71, 70, 0}}},
		{"bad sample cancels a pending rise", above(0, 10_000), []step{{at: 0, v: 71}, {at: 5, status: bad}, {at: 12, v: 71}, {at: 21, tick: true}, {at: 22, tick: true}},
			[]ev{{LevelWarning, LevelOK, 71, 70, 22}}},
		{"no tick after a bad sample", above(0, 10_000), []step{{at: 0, v: 71}, {at: 5, status: bad}, {at: 60, tick: true}}, nil},
		{"bad sample after the delay: the held value fired", above(0, 10_000), []step{{at: 0, v: 71}, {at: 12, status: bad}},
			[]ev{{LevelWarning, LevelOK, 71, 70, 10}}},
		{"below: alarm, hysteresis, warning, ok", below, []step{{at: 0, v: 4}, {at: 1, v: 5.5}, {at: 2, v: 6}, {at: 3, v: 10.5}, {at: 4, v: 11}},
			[]ev{{LevelAlarm, LevelOK, 4, 5, 0}, {LevelWarning, LevelAlarm, 6, 5, 2}, {LevelOK, LevelWarning, 11, 10, 4}}},
		{"out-of-order sample ignored", above(0, 0), []step{{at: 10, v: 90}, {at: 5, v: 50}, {at: 11, v: 90}}, []ev{{LevelAlarm, LevelOK, 90, 85, 10}}},
		{"duplicate time accepted", above(0, 0), []step{{at: 10, v: 90}, {at: 10, v: 50}}, []ev{{LevelAlarm, LevelOK, 90, 85, 10}, {LevelOK, LevelAlarm, 50, 85, 10}}},
		{"clock jump back restarts the delay", above(0, 10_000), []step{{at: 1000, v: 71}, {at: 0, v: 71}, {at: 9, v: 71}, {at: 10, v: 71}},
			[]ev{{LevelWarning, LevelOK, 71, 70, 10}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, clk := newEngine(t, []machinemodel.DataPoint{tc.dp}, Options{})
			got := feed(e, clk, tc.steps)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			var last Level
			if len(tc.want) > 0 {
				last = tc.want[len(tc.want)-1].Level
			}
			if s := e.Snapshot(); s.Points[0].Level != last {
				t.Errorf("snapshot level %v, want %v", s.Points[0].Level, last)
			}
		})
	}
}

func TestEventFields(t *testing.T) {
	e, _ := newEngine(t, []machinemodel.DataPoint{{NodeID: "ns=2;i=1", Name: "Temp", WarnAbove: f(70)}}, Options{})
	got := e.Observe(Sample{Point: "Temp", Value: 75, At: t0})
	want := []Event{{Point: "Temp", Kind: KindThreshold, Level: LevelWarning, From: LevelOK, Value: 75, Threshold: 70, At: t0}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if evs := e.Observe(Sample{Point: "Other", Value: 1e9, At: t0}); evs != nil {
		t.Errorf("untracked point gave %v", evs)
	}
}

func TestObserveBatch(t *testing.T) {
	e, _ := newEngine(t, []machinemodel.DataPoint{
		{NodeID: "ns=2;i=1", Name: "A", WarnAbove: f(1)},
		{NodeID: "ns=2;i=2", Name: "B", AlarmBelow: f(0)},
	}, Options{})
	evs := e.ObserveBatch([]Sample{{Point: "A", Value: 2, At: t0}, {Point: "X", Value: 2, At: t0}, {Point: "B", Value: -1, At: t0}})
	if len(evs) != 2 || evs[0].Point != "A" || evs[1].Point != "B" || evs[1].Level != LevelAlarm {
		t.Errorf("got %+v", evs)
	}
}

func TestNewRejectsInvalidPoints(t *testing.T) {
	_, err := New([]machinemodel.DataPoint{
		{NodeID: "ns=2;i=1", Name: "A", WarnAbove: f(10), AlarmAbove: f(5)},
		{NodeID: "ns=2;i=2", Name: "C", Role: "hours"},
		{NodeID: "ns=2;i=3", Name: "B", Role: "running"},
		{NodeID: "ns=2;i=4", Name: "B", Role: "running"},
	}, Options{})
	if !errors.Is(err, ErrInvalidPoints) {
		t.Fatalf("want ErrInvalidPoints, got %v", err)
	}
	var ps machinemodel.Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error does not carry Problems: %v", err)
	}
	var paths []string
	for _, p := range ps {
		paths = append(paths, p.Path)
	}
	if diff := cmp.Diff([]string{"data_points[0].warn_above", "data_points[1].role", "data_points[3].name"}, paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
}

func TestLevelText(t *testing.T) {
	for _, l := range []Level{LevelOK, LevelWarning, LevelAlarm} {
		b, err := l.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Level
		if err := back.UnmarshalText(b); err != nil || back != l {
			t.Errorf("%v: round trip gave %v, %v", l, back, err)
		}
	}
	if _, err := Level(7).MarshalText(); err == nil {
		t.Error("Level(7) marshalled")
	}
	var l Level
	if err := l.UnmarshalText([]byte("critical")); err == nil {
		t.Error("unknown level accepted")
	}
}

func TestClosed(t *testing.T) {
	e, err := New([]machinemodel.DataPoint{{NodeID: "ns=2;i=1", Name: "P", WarnAbove: f(1)}}, Options{StateFile: t.TempDir() + "/s.json"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if evs := e.Observe(Sample{Point: "P", Value: 5, At: t0}); evs != nil {
		t.Errorf("Observe after Close: %v", evs)
	}
	if evs := e.Tick(); evs != nil {
		t.Errorf("Tick after Close: %v", evs)
	}
	if err := e.Save(); !errors.Is(err, ErrClosed) {
		t.Errorf("Save after Close: %v", err)
	}
	if err := e.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

// TestConcurrent is for -race: all methods from several goroutines.
func TestConcurrent(t *testing.T) {
	e, err := New([]machinemodel.DataPoint{
		{NodeID: "ns=2;i=1", Name: "T", WarnAbove: f(50), AlarmAbove: f(80), Hysteresis: 2, DelayMS: 10},
		{NodeID: "ns=2;i=2", Name: "R", Role: machinemodel.RoleRunning},
		{NodeID: "ns=2;i=3", Name: "E", Role: machinemodel.RoleEnergyKWh},
		{NodeID: "ns=2;i=4", Name: "W", Role: machinemodel.RolePowerKW},
	}, Options{StateFile: t.TempDir() + "/s.json", SaveInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				now := time.Now()
				switch i % 5 {
				case 0:
					e.Observe(Sample{Point: "T", Value: float64((i * 7) % 100), At: now})
				case 1:
					e.ObserveBatch([]Sample{{Point: "R", Value: float64(i % 2), At: now}, {Point: "E", Value: float64(i), At: now}, {Point: "W", Value: 3, At: now}})
				case 2:
					e.Tick()
				case 3:
					_ = e.Snapshot()
				case 4:
					if g == 0 {
						if err := e.Save(); err != nil {
							t.Error(err)
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}
