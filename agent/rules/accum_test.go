package rules

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

var (
	runPt   = machinemodel.DataPoint{NodeID: "ns=2;i=10", Name: "P", Role: machinemodel.RoleRunning}
	ctrPt   = machinemodel.DataPoint{NodeID: "ns=2;i=11", Name: "P", Role: machinemodel.RoleEnergyKWh, Unit: "kWh"}
	powerPt = machinemodel.DataPoint{NodeID: "ns=2;i=12", Name: "P", Role: machinemodel.RolePowerKW, Unit: "kW"}
)

// ticks returns tick steps every step seconds in (from, to].
func ticks(from, to, every float64) []step {
	var s []step
	for x := from + every; x <= to+1e-9; x += every {
		s = append(s, step{at: x, tick: true})
	}
	return s
}

func cat(parts ...[]step) []step {
	var s []step
	for _, p := range parts {
		s = append(s, p...)
	}
	return s
}

func approx(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestRunningHours(t *testing.T) {
	for _, tc := range []struct {
		name   string
		steps  []step
		maxGap time.Duration
		want   float64 // seconds
	}{
		{"one hour between samples", []step{{at: 0, v: 1}, {at: 3600, v: 0}}, time.Hour, 3600},
		{"stopped does not count", []step{{at: 0, v: 0}, {at: 3600, v: 0}, {at: 3700, v: 1}}, time.Hour, 0},
		{"any non-zero value runs", []step{{at: 0, v: -2}, {at: 10, v: 0.5}, {at: 20, v: 0}}, time.Hour, 20},
		{"ticks count a steady run", cat([]step{{at: 0, v: 1}}, ticks(0, 7200, 60)), 5 * time.Minute, 7200},
		{"ticks stop counting when stopped", cat([]step{{at: 0, v: 1}}, ticks(0, 600, 60), []step{{at: 600, v: 0}}, ticks(600, 1200, 60)), 5 * time.Minute, 600},
		{"gap is capped", []step{{at: 0, v: 1}, {at: 3600, v: 1}}, 5 * time.Minute, 300},
		{"duplicates count once", []step{{at: 0, v: 1}, {at: 0, v: 1}, {at: 60, v: 1}, {at: 60, v: 1}, {at: 120, v: 0}}, time.Hour, 120},
		{"out-of-order sample ignored", []step{{at: 0, v: 1}, {at: 100, v: 1}, {at: 50, v: 0}, {at: 200, v: 0}}, time.Hour, 200},
		{"clock jump back: no negative time, counting resumes", []step{{at: 100000, v: 1}, {at: 100200, v: 1}, {at: 0, v: 1}, {at: 200, v: 0}}, 5 * time.Minute, 400},
		{"clock jump forward: capped", []step{{at: 0, v: 1}, {at: 60, v: 1}, {at: 86400, v: 1}, {at: 86460, v: 0}}, 5 * time.Minute, 60 + 300 + 60},
		{"bad sample ends the interval", []step{{at: 0, v: 1}, {at: 600, status: bad}, {at: 1200, v: 1}, {at: 1500, v: 0}}, time.Hour, 600 + 300},
		{"no ticking after a bad sample", cat([]step{{at: 0, v: 1}, {at: 60, status: bad}}, ticks(60, 600, 60)), time.Hour, 60},
		{"implausible bad sample time counts nothing", []step{{at: 0, v: 1}, {at: 7200, status: bad}}, time.Hour, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, clk := newEngine(t, []machinemodel.DataPoint{runPt}, Options{MaxGap: tc.maxGap})
			feed(e, clk, tc.steps)
			got := e.Snapshot().Points[0].RunningHours * 3600
			if !approx(got, tc.want) {
				t.Errorf("running %v s, want %v s", got, tc.want)
			}
		})
	}
}

// TestTickUsesSourceClock: with the PLC clock an hour ahead of the agent,
// ticks still count (the offset of the last sample translates the agent
// clock into source time).
func TestTickUsesSourceClock(t *testing.T) {
	e, clk := newEngine(t, []machinemodel.DataPoint{runPt}, Options{})
	skew := time.Hour
	clk.Set(t0)
	e.Observe(Sample{Point: "P", Value: 1, At: t0.Add(skew)})
	for i := 1; i <= 60; i++ {
		clk.Set(t0.Add(time.Duration(i) * time.Minute))
		e.Tick()
	}
	if got := e.Snapshot().Points[0].RunningHours; !approx(got, 1) {
		t.Errorf("running %v h, want 1", got)
	}
}

func TestEnergyCounter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []step
		want  float64
	}{
		{"increases", []step{{at: 0, v: 100}, {at: 60, v: 101.5}, {at: 120, v: 103}}, 3},
		{"reset counts from the new value", []step{{at: 0, v: 100}, {at: 60, v: 103}, {at: 120, v: 2}, {at: 180, v: 4}}, 5},
		{"out-of-order reading is not a reset", []step{{at: 0, v: 100}, {at: 60, v: 103}, {at: 30, v: 101}, {at: 90, v: 104}}, 4},
		{"bad reading ignored", []step{{at: 0, v: 100}, {at: 60, v: 0, status: bad}, {at: 120, v: 101}}, 1},
		{"glitch to zero is not a reset", []step{{at: 0, v: 100}, {at: 60, v: 0}, {at: 120, v: 101}}, 1},
		{"glitch over several readings", []step{{at: 0, v: 100}, {at: 60, v: 0}, {at: 70, v: 0}, {at: 120, v: 101}}, 1},
		{"real reset then counting", []step{{at: 0, v: 100}, {at: 60, v: 0}, {at: 120, v: 2}, {at: 180, v: 150}}, 150},
		{"long gaps are not capped", []step{{at: 0, v: 100}, {at: 86400, v: 200}}, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, clk := newEngine(t, []machinemodel.DataPoint{ctrPt}, Options{})
			feed(e, clk, tc.steps)
			if got := e.Snapshot().Points[0].EnergyKWh; !approx(got, tc.want) {
				t.Errorf("energy %v kWh, want %v", got, tc.want)
			}
		})
	}
}

func TestPowerIntegration(t *testing.T) {
	for _, tc := range []struct {
		name   string
		steps  []step
		maxGap time.Duration
		want   float64
	}{
		{"constant", []step{{at: 0, v: 10}, {at: 3600, v: 10}}, time.Hour, 10},
		{"ramp is a trapezoid", []step{{at: 0, v: 0}, {at: 3600, v: 10}}, time.Hour, 5},
		{"ticks hold the value", cat([]step{{at: 0, v: 10}}, ticks(0, 3600, 1)), time.Minute, 10},
		{"tick then ramp", cat([]step{{at: 0, v: 10}}, ticks(0, 1800, 60), []step{{at: 1860, v: 70}}), 5 * time.Minute, 10*0.5 + (10+70)/2.0/60},
		{"negative power counts as zero", []step{{at: 0, v: -10}, {at: 3600, v: -10}}, time.Hour, 0},
		{"gap capped", []step{{at: 0, v: 12}, {at: 7200, v: 12}}, 5 * time.Minute, 1},
		{"bad sample ends the interval", []step{{at: 0, v: 10}, {at: 360, status: bad}, {at: 3600, v: 10}}, time.Hour, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, clk := newEngine(t, []machinemodel.DataPoint{powerPt}, Options{MaxGap: tc.maxGap})
			feed(e, clk, tc.steps)
			if got := e.Snapshot().Points[0].EnergyKWh; !approx(got, tc.want) {
				t.Errorf("energy %v kWh, want %v", got, tc.want)
			}
		})
	}
}

func TestSnapshot(t *testing.T) {
	e, clk := newEngine(t, []machinemodel.DataPoint{
		{NodeID: "ns=2;i=1", Name: "Ignored"},
		{NodeID: "ns=2;i=2", Name: "Temp", WarnAbove: f(70)},
		{NodeID: "ns=2;i=3", Name: "Run", Role: machinemodel.RoleRunning},
		{NodeID: "ns=2;i=4", Name: "kWh", Role: machinemodel.RoleEnergyKWh},
	}, Options{MaxGap: time.Hour})
	feed(e, clk, []step{{point: "Temp", at: 0, v: 75}, {point: "Run", at: 0, v: 1}, {point: "Run", at: 1800, v: 1}, {point: "kWh", at: 0, v: 5}, {point: "kWh", at: 10, v: 7}})
	got := e.Snapshot()
	want := Snapshot{Points: []PointState{
		{Point: "Temp", Level: LevelWarning, Value: 75, Valid: true},
		{Point: "Run", Role: machinemodel.RoleRunning, Value: 1, Valid: true, RunningHours: 0.5},
		{Point: "kWh", Role: machinemodel.RoleEnergyKWh, Value: 7, Valid: true, EnergyKWh: 2},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// --- persistence ---

func stateEngine(t *testing.T, path string, opts Options) (*Engine, *fakeClock) {
	t.Helper()
	opts.StateFile = path
	if opts.MaxGap == 0 {
		opts.MaxGap = 2 * time.Hour
	}
	clk := &fakeClock{now: t0}
	opts.Clock = clk.Now
	e, err := New([]machinemodel.DataPoint{
		{NodeID: "ns=2;i=1", Name: "Run", Role: machinemodel.RoleRunning},
		{NodeID: "ns=2;i=2", Name: "kWh", Role: machinemodel.RoleEnergyKWh},
		{NodeID: "ns=2;i=3", Name: "kW", Role: machinemodel.RolePowerKW},
	}, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e, clk
}

func totals(e *Engine) (hours, ctr, pwr float64) {
	s := e.Snapshot()
	return s.Points[0].RunningHours, s.Points[1].EnergyKWh, s.Points[2].EnergyKWh
}

func TestRestartContinues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "running-hours.json")
	e, clk := stateEngine(t, path, Options{})
	feed(e, clk, []step{
		{point: "Run", at: 0, v: 1}, {point: "Run", at: 3600, v: 0},
		{point: "kWh", at: 0, v: 100}, {point: "kWh", at: 3600, v: 150},
		{point: "kW", at: 0, v: 2}, {point: "kW", at: 3600, v: 2},
	})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}

	// A new engine on the same file continues every total; the energy
	// counter continues from its last reading (150), so consumption while
	// the agent was down counts; running time does not bridge the restart.
	e2, clk2 := stateEngine(t, path, Options{})
	if h, c, p := totals(e2); !approx(h, 1) || !approx(c, 50) || !approx(p, 2) {
		t.Fatalf("after restart: %v h, %v kWh, %v kWh", h, c, p)
	}
	feed(e2, clk2, []step{
		{point: "Run", at: 7200, v: 1}, {point: "Run", at: 9000, v: 0},
		{point: "kWh", at: 7200, v: 160},
	})
	if h, c, _ := totals(e2); !approx(h, 1.5) || !approx(c, 60) {
		t.Fatalf("after more data: %v h, %v kWh", h, c)
	}
	if err := e2.Close(); err != nil {
		t.Fatal(err)
	}
	e3, _ := stateEngine(t, path, Options{})
	defer e3.Close()
	if h, c, _ := totals(e3); !approx(h, 1.5) || !approx(c, 60) {
		t.Fatalf("third start: %v h, %v kWh", h, c)
	}
}

// TestTornTempFile: a crash during a save leaves a partial temp file; the
// state file itself is intact, and the next start loads it and removes
// the temp file.
func TestTornTempFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "running-hours.json")
	e, clk := stateEngine(t, path, Options{})
	feed(e, clk, []step{{point: "Run", at: 0, v: 1}, {point: "Run", at: 1800, v: 0}})
	if err := e.Save(); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The "crash": the next save got half-way through its temp file.
	feed(e, clk, []step{{point: "Run", at: 2000, v: 1}, {point: "Run", at: 5600, v: 0}})
	data, _ := e.encodeLocked()
	if err := os.WriteFile(path+".tmp", data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	// (the engine is abandoned without Close, as after kill -9)
	now, err := os.ReadFile(path)
	if err != nil || string(now) != string(good) {
		t.Fatalf("state file changed by the torn write: %v", err)
	}
	e2, _ := stateEngine(t, path, Options{})
	defer e2.Close()
	if h, _, _ := totals(e2); !approx(h, 0.5) {
		t.Errorf("loaded %v h, want 0.5", h)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp file left behind: %v", err)
	}
}

func TestMissingStateStartsAtZero(t *testing.T) {
	path := filepath.Join(t.TempDir(), "running-hours.json")
	e, _ := stateEngine(t, path, Options{})
	defer e.Close()
	if h, c, p := totals(e); h != 0 || c != 0 || p != 0 {
		t.Errorf("totals %v %v %v", h, c, p)
	}
}

func TestCorruptState(t *testing.T) {
	for _, content := range []string{
		`{"version":1,"points":{"Run":{"running_seconds":36`,
		`{"version":1,"points":{"Run":{"running_seconds":-5}}}`,
		`{"version":2,"points":{}}`,
		`{"version":1,"points":{}} trailing`,
		"\x00\x00\x00",
		``,
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, "running-hours.json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := New([]machinemodel.DataPoint{runPt}, Options{StateFile: path})
		if !errors.Is(err, ErrCorruptState) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move the file aside") {
			t.Errorf("%q: want ErrCorruptState naming the file and the fix, got %v", content, err)
		}
		// The file is left alone.
		if b, _ := os.ReadFile(path); string(b) != content {
			t.Errorf("%q: file changed to %q", content, b)
		}
		// With ResetCorruptState the engine starts at zero and the file is
		// moved aside.
		e, err := New([]machinemodel.DataPoint{runPt}, Options{StateFile: path, ResetCorruptState: true, Clock: func() time.Time { return t0 }})
		if err != nil {
			t.Fatalf("%q: reset: %v", content, err)
		}
		if h := e.Snapshot().Points[0].RunningHours; h != 0 {
			t.Errorf("%q: %v h", content, h)
		}
		if b, err := os.ReadFile(path + ".corrupt-" + strconv.FormatInt(t0.Unix(), 10)); err != nil || string(b) != content {
			t.Errorf("%q: not moved aside: %v", content, err)
		}
		_ = e.Close()
	}
}

func TestUnknownPointsKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "running-hours.json")
	doc := `{"version":1,"points":{"Old spindle":{"running_seconds":7200},"Run":{"running_seconds":3600}}}`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := New([]machinemodel.DataPoint{runPt}, Options{StateFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Snapshot().Points) != 1 {
		t.Fatal("unknown point in the snapshot")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	st, err := decodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if st.Points["Old spindle"].RunningSeconds != 7200 {
		t.Errorf("entry of an unconfigured point lost: %s", b)
	}
}

func TestTickSavesPeriodically(t *testing.T) {
	path := filepath.Join(t.TempDir(), "running-hours.json")
	e, clk := stateEngine(t, path, Options{SaveInterval: time.Minute})
	defer e.Close()
	feed(e, clk, cat([]step{{point: "Run", at: 0, v: 1}}, ticks(0, 59, 1)))
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("saved before the interval: %v", err)
	}
	feed(e, clk, ticks(59, 61, 1))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("not saved after the interval: %v", err)
	}
	st, err := decodeState(b)
	if err != nil || st.Points["Run"].RunningSeconds < 60 {
		t.Errorf("saved %s (%v)", b, err)
	}
	// Nothing changed: no new save.
	e2, clk2 := stateEngine(t, filepath.Join(t.TempDir(), "x.json"), Options{SaveInterval: time.Minute})
	defer e2.Close()
	feed(e2, clk2, ticks(0, 120, 1))
	if _, err := os.Stat(e2.opts.StateFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("saved without changes: %v", err)
	}
}

func TestSaveError(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	e, _ := stateEngine(t, filepath.Join(dir, "s.json"), Options{})
	// The state directory becomes a regular file: every write fails.
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.Save(); err == nil || !strings.Contains(err.Error(), "rules.Save") {
		t.Errorf("Save: %v", err)
	}
	if err := e.Close(); err == nil {
		t.Error("Close succeeded without writing")
	}
}
