// Package rules is the agent's edge rules engine: it watches the collected
// samples of the machine model's data points and
//
//   - turns thresholds (warn/alarm, above and/or below, with hysteresis and
//     delay) into Events on level transitions;
//   - accumulates running hours from a "running" condition point;
//   - accumulates energy (kWh) from an energy counter or by integrating a
//     power point;
//
// and persists the accumulated totals in a state file.
//
// # Use
//
//	e, err := rules.New(tpl.DataPoints, rules.Options{StateFile: cfg.RunningHoursFile(), Logger: log})
//	defer e.Close()                      // final save
//	evs := e.Observe(rules.Sample(s))    // for each collector.Sample
//	evs = e.Tick()                       // about once a second
//	snap := e.Snapshot()                 // running hours and kWh to publish
//
// Only points with a threshold or a role are tracked; samples of other
// points cost one map lookup.
//
// # Time
//
// Everything is computed in the samples' source time (Sample.At). A value
// is held until the next sample of its point (OPC-UA reports changes only),
// so Tick is needed: it advances every tracked point to "now" translated
// into that point's source time (the agent clock plus the offset between
// the last sample's source time and its arrival), which fires delayed
// transitions and counts running time and energy while the value does not
// change. Samples are ordered per point by source time:
//
//   - a sample older than the point's last sample (but by no more than
//     MaxGap) is out of order and ignored; a duplicate time is accepted;
//   - a sample older by more than MaxGap means the source clock jumped
//     back: the point restarts its timing at the new time (pending delays
//     restart, nothing is counted for the jump);
//   - a single interval counts at most MaxGap, so a forward clock jump or
//     an agent stall adds at most MaxGap of running time or energy.
//
// Running hours and power integration are not bridged across agent
// restarts (the first sample after New starts a new interval); an energy
// counter is, because the counter itself kept counting.
//
// # Thresholds
//
// Each threshold is a latch. An "above" latch turns on when the value is
// > threshold and off when it is ≤ threshold − hysteresis; a "below" latch
// turns on when the value is < threshold and off when it is ≥
// threshold + hysteresis. A latch flips only when its condition has held
// for the point's delay (in source time); a value that returns within the
// delay cancels the flip, so nothing fires. The point's level is the
// highest level among its latches that are on (alarm > warning > ok); an
// Event is emitted only when that level changes. Latches that flip at the
// same instant give one Event (ok → alarm, not ok → warning → alarm).
// Samples with a bad status (Status ≠ 0) or a non-finite value never raise
// or clear a level: they cancel pending flips and leave the level as it
// was. Levels are not persisted: after a restart a value still beyond a
// threshold raises its level again (after the delay).
//
// # Accumulators
//
//   - running: value ≠ 0 means running; running time is the sum of the
//     intervals during which the held value was ≠ 0.
//   - energy_kwh: a monotonic counter; consumption is the sum of its
//     increases. A decrease is a counter reset or rollover: counting
//     continues from the new value (the part consumed between the reset
//     and the new reading is lost, which never overcounts). If the first
//     rise after a "reset" reaches the reading before it, the drop was a
//     glitch (a PLC briefly reporting 0) and only the rise over the old
//     reading counts.
//   - power_kw: integrated with the trapezoidal rule between accounting
//     points (samples and ticks; a tick is a point holding the last value),
//     each interval capped at MaxGap. Negative power counts as zero: the
//     total is consumption.
//
// A bad sample ends the known interval: running time and power are
// counted up to it (when its time is within MaxGap after the previous
// sample) and then not until the next good sample.
//
// # Persistence
//
// The totals (and an energy counter's last reading) are kept in
// Options.StateFile as JSON, written atomically (temp file, fsync, rename,
// directory fsync), by Tick every SaveInterval, by Save, and by Close. A
// missing file starts every total at zero (logged at info: normal on first
// start). A file that exists but cannot be decoded makes New fail with
// ErrCorruptState, so counters are never silently reset; with
// Options.ResetCorruptState the file is renamed to <file>.corrupt-<unix
// time> and the totals start at zero with a logged warning. Entries for
// points no longer configured are kept in the file. One Engine per file.
//
// # Concurrency
//
// An Engine is safe for concurrent use; one mutex guards all point state
// (Observe, Tick and Snapshot hold it briefly). Save takes a second mutex
// so writes are ordered, and does its file I/O without holding the first.
// An Engine starts no goroutines.
package rules

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// Sample is one collected value. It has the same fields as
// collector.Sample, so rules.Sample(s) converts one.
type Sample struct {
	Point  string
	Value  float64
	Status uint32 // OPC-UA status code; 0 is Good
	At     time.Time
}

// Level is a threshold level. Its text form is "ok", "warning" or "alarm".
type Level uint8

// Levels, in increasing severity.
const (
	LevelOK Level = iota
	LevelWarning
	LevelAlarm
)

// String returns the level's name.
func (l Level) String() string {
	switch l {
	case LevelOK:
		return "ok"
	case LevelWarning:
		return "warning"
	case LevelAlarm:
		return "alarm"
	}
	return fmt.Sprintf("Level(%d)", uint8(l))
}

// MarshalText encodes the level as its name.
func (l Level) MarshalText() ([]byte, error) {
	if l > LevelAlarm {
		return nil, fmt.Errorf("rules: unknown level %d", uint8(l))
	}
	return []byte(l.String()), nil
}

// UnmarshalText decodes a level name.
func (l *Level) UnmarshalText(b []byte) error {
	switch string(b) {
	case "ok":
		*l = LevelOK
	case "warning":
		*l = LevelWarning
	case "alarm":
		*l = LevelAlarm
	default:
		return fmt.Errorf("rules: unknown level %q; use ok, warning or alarm", b)
	}
	return nil
}

// KindThreshold is the Kind of threshold events.
const KindThreshold = "threshold"

// Event is a level transition of one data point. Threshold is the
// threshold whose crossing caused it: for a rising level the threshold of
// the new level, for a falling level the threshold of the level that
// cleared.
type Event struct {
	Point     string    `json:"point"`
	Kind      string    `json:"kind"`  // KindThreshold
	Level     Level     `json:"level"` // the new level
	From      Level     `json:"from"`  // the level before
	Value     float64   `json:"value"` // the value that held through the delay
	Threshold float64   `json:"threshold"`
	At        time.Time `json:"at"` // source time at which the delay elapsed
}

// Options tune an Engine. The zero value is usable: no persistence.
type Options struct {
	// StateFile keeps the totals; empty: totals live in memory only.
	StateFile string
	// MaxGap caps the time one interval between two accounting points can
	// count (default 5m). Tick much more often than this.
	MaxGap time.Duration
	// SaveInterval: Tick saves the state when this much agent time has
	// passed since the last save and totals changed (default 1m; negative:
	// only Save and Close write).
	SaveInterval time.Duration
	// ResetCorruptState makes New move a corrupt state file aside and start
	// at zero instead of failing with ErrCorruptState.
	ResetCorruptState bool
	// Clock is the agent clock (default time.Now).
	Clock func() time.Time
	// Logger receives warnings (rate-limited); nil discards.
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultMaxGap       = 5 * time.Minute
	DefaultSaveInterval = time.Minute
	logEvery            = time.Minute // at most one log line per kind and minute
)

// Snapshot is the current state of the tracked points, in the order they
// were given to New.
type Snapshot struct {
	Points []PointState `json:"points"`
}

// PointState is one tracked point in a Snapshot.
type PointState struct {
	Point string `json:"point"`
	Role  string `json:"role,omitempty"`
	Level Level  `json:"level"`
	// Value is the last good value; Valid is false before the first good
	// sample and after a bad one.
	Value float64 `json:"value"`
	Valid bool    `json:"valid"`
	// RunningHours is set for role running, EnergyKWh for energy_kwh and
	// power_kw.
	RunningHours float64 `json:"running_hours,omitempty"`
	EnergyKWh    float64 `json:"energy_kwh,omitempty"`
}

// Engine evaluates rules over samples. See the package comment for the
// concurrency contract.
type Engine struct {
	opts   Options
	log    *slog.Logger
	byName map[string]*point // immutable after New
	order  []*point          // immutable after New
	timed  []*point          // points Tick must advance: delay > 0 or a time-based role

	saveMu sync.Mutex // orders Save calls; taken before mu

	mu       sync.Mutex
	closed   bool
	dirty    bool
	lastSave time.Time             // agent clock
	extra    map[string]stateEntry // file entries of points not configured
	logged   map[string]time.Time  // rate limiting: last log per key
	dropped  map[string]int        // rate limiting: suppressed since
	saveErr  string                // last periodic save error (logged once)
}

// point is the state of one tracked data point; guarded by Engine.mu.
type point struct {
	name    string
	role    string
	delay   time.Duration
	timed   bool    // in Engine.timed: needs the agent clock
	latches []latch // alarm_above, warn_above, alarm_below, warn_below (those set)
	level   Level

	value     float64 // held value, valid if haveValue
	haveValue bool
	lastAt    time.Time // source time of the last accepted good sample
	haveAt    bool
	offset    time.Duration // source − agent time at the last good sample

	cursor  time.Time // accumulated up to here (source time)
	running time.Duration
	energy  float64
	counter float64 // energy_kwh: last reading, valid if haveCtr
	haveCtr bool
	// energy_kwh: the reading before a reset, until the counter next rises
	preReset  float64
	haveReset bool
}

type latch struct {
	threshold float64
	above     bool
	level     Level
	hyst      float64

	on      bool
	pending bool
	since   time.Time
}

// wants reports whether value v, held from now on, would flip the latch.
func (l *latch) wants(v float64) bool {
	switch {
	case l.above && !l.on:
		return v > l.threshold
	case l.above:
		return v <= l.threshold-l.hyst
	case !l.on:
		return v < l.threshold
	default:
		return v >= l.threshold+l.hyst
	}
}

// New builds an Engine for the data points that have a threshold or a
// role, and loads the state file. Points are checked with
// machinemodel.DataPoint.ValidateRules; problems give an error wrapping
// ErrInvalidPoints and the machinemodel.Problems (paths
// "data_points[i].field").
func New(points []machinemodel.DataPoint, opts Options) (*Engine, error) {
	if opts.MaxGap <= 0 {
		opts.MaxGap = DefaultMaxGap
	}
	if opts.SaveInterval == 0 {
		opts.SaveInterval = DefaultSaveInterval
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e := &Engine{
		opts:    opts,
		log:     log,
		byName:  map[string]*point{},
		extra:   map[string]stateEntry{},
		logged:  map[string]time.Time{},
		dropped: map[string]int{},
	}
	var ps machinemodel.Problems
	for i, d := range points {
		for _, p := range d.ValidateRules() {
			ps = append(ps, machinemodel.Problem{Path: fmt.Sprintf("data_points[%d].%s", i, p.Path), Message: p.Message})
		}
		if !d.HasThresholds() && d.Role == "" {
			continue
		}
		if _, dup := e.byName[d.Name]; dup {
			ps = append(ps, machinemodel.Problem{Path: fmt.Sprintf("data_points[%d].name", i), Message: fmt.Sprintf("name %q is used twice", d.Name)})
			continue
		}
		p := &point{name: d.Name, role: d.Role, delay: time.Duration(d.DelayMS) * time.Millisecond}
		for _, th := range []struct {
			v     *float64
			above bool
			level Level
		}{{d.AlarmAbove, true, LevelAlarm}, {d.WarnAbove, true, LevelWarning}, {d.AlarmBelow, false, LevelAlarm}, {d.WarnBelow, false, LevelWarning}} {
			if th.v != nil {
				p.latches = append(p.latches, latch{threshold: *th.v, above: th.above, level: th.level, hyst: d.Hysteresis})
			}
		}
		e.byName[d.Name] = p
		e.order = append(e.order, p)
		if p.delay > 0 || p.role == machinemodel.RoleRunning || p.role == machinemodel.RolePowerKW {
			p.timed = true
			e.timed = append(e.timed, p)
		}
	}
	if len(ps) > 0 {
		return nil, fmt.Errorf("rules.New: %w: %w", ErrInvalidPoints, ps)
	}
	if err := e.load(); err != nil {
		return nil, err
	}
	e.lastSave = opts.Clock()
	return e, nil
}

// Observe evaluates one sample and returns the events it caused (nil when
// none). Samples of untracked points are ignored.
func (e *Engine) Observe(s Sample) []Event {
	p := e.byName[s.Point]
	if p == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	return e.observe(p, s, nil)
}

// ObserveBatch is Observe for a batch (as the collector delivers them),
// taking the lock once; events are appended in sample order.
func (e *Engine) ObserveBatch(ss []Sample) []Event {
	var evs []Event
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	for _, s := range ss {
		if p := e.byName[s.Point]; p != nil {
			evs = e.observe(p, s, evs)
		}
	}
	return evs
}

func (e *Engine) observe(p *point, s Sample, evs []Event) []Event {
	t := s.At
	var now time.Time // agent clock, read only when needed
	if t.IsZero() || p.timed {
		now = e.opts.Clock()
	}
	if t.IsZero() {
		t = now
	}
	good := s.Status == 0 && !math.IsNaN(s.Value) && !math.IsInf(s.Value, 0)
	if !good {
		// Count the held value up to the bad sample when its time is
		// plausible, then forget it: an unknown value neither raises nor
		// clears a level, and does not count.
		if p.haveValue && !t.Before(p.lastAt) && t.Sub(p.lastAt) <= e.opts.MaxGap {
			evs = e.settle(p, t, evs)
			e.accumulate(p, t, 0, false)
		}
		p.haveValue = false
		for i := range p.latches {
			p.latches[i].pending = false
		}
		return evs
	}
	if p.haveAt && t.Before(p.lastAt) {
		if p.lastAt.Sub(t) <= e.opts.MaxGap {
			e.logLimited("out-of-order", "rules: ignoring out-of-order sample", "point", p.name, "at", t, "last", p.lastAt)
			return evs
		}
		e.logLimited("clock-jump", "rules: source clock jumped back; restarting the point's timing", "point", p.name, "from", p.lastAt, "to", t)
		p.cursor = t
		for i := range p.latches {
			if p.latches[i].pending {
				p.latches[i].since = t
			}
		}
	}
	v := s.Value
	if p.haveValue {
		evs = e.settle(p, t, evs)
		e.accumulate(p, t, v, true)
	} else if t.After(p.cursor) {
		p.cursor = t
	}
	if p.role == machinemodel.RoleEnergyKWh {
		e.count(p, v)
	}
	p.value, p.haveValue = v, true
	p.lastAt, p.haveAt = t, true
	if p.timed {
		p.offset = t.Sub(now)
	}
	for i := range p.latches {
		l := &p.latches[i]
		if l.wants(v) {
			if !l.pending {
				l.pending, l.since = true, t
			}
		} else {
			l.pending = false
		}
	}
	return e.settle(p, t, evs)
}

// count adds an energy counter reading. A decrease is a reset: counting
// continues from the new value. When the first increase after a reset
// reaches the reading before the reset, the "reset" was a glitch (a PLC
// briefly reporting 0): only the increase over the pre-reset reading
// counts, so the whole counter is not counted twice.
func (e *Engine) count(p *point, v float64) {
	switch {
	case !p.haveCtr:
	case v > p.counter:
		d := v - p.counter
		if p.haveReset && v >= p.preReset {
			d = v - p.preReset
		}
		p.haveReset = false
		p.energy += d
	case v < p.counter:
		if !p.haveReset || p.counter > p.preReset {
			p.preReset = p.counter
		}
		p.haveReset = true
		e.logLimited("counter-reset", "rules: energy counter went down (reset or rollover); counting from the new value", "point", p.name, "from", p.counter, "to", v)
	}
	if !p.haveCtr || v != p.counter {
		p.counter, p.haveCtr = v, true
		e.dirty = true
	}
}

// settle flips the latches whose delay has elapsed by source time t, in
// the order they came due, and appends an event for each level change.
func (e *Engine) settle(p *point, t time.Time, evs []Event) []Event {
	for {
		// Earliest due deadline.
		var due time.Time
		found := false
		for i := range p.latches {
			l := &p.latches[i]
			if !l.pending {
				continue
			}
			d := l.since.Add(p.delay)
			if d.After(t) {
				continue
			}
			if !found || d.Before(due) {
				due, found = d, true
			}
		}
		if !found {
			return evs
		}
		var flipped [4]*latch
		n := 0
		for i := range p.latches {
			l := &p.latches[i]
			if l.pending && l.since.Add(p.delay).Equal(due) {
				l.on, l.pending = !l.on, false
				flipped[n] = l
				n++
			}
		}
		from := p.level
		p.level = LevelOK
		for i := range p.latches {
			if p.latches[i].on {
				p.level = max(p.level, p.latches[i].level)
			}
		}
		if p.level == from {
			continue
		}
		// The threshold that caused it: for a rise the new level's latch that
		// turned on, for a fall the old level's latch that turned off.
		th := flipped[0].threshold
		for _, l := range flipped[:n] {
			if (p.level > from && l.on && l.level == p.level) || (p.level < from && !l.on && l.level == from) {
				th = l.threshold
				break
			}
		}
		evs = append(evs, Event{Point: p.name, Kind: KindThreshold, Level: p.level, From: from, Value: p.value, Threshold: th, At: due})
	}
}

// accumulate counts the held value from p.cursor up to source time t (at
// most MaxGap); next is the new value at t for the trapezoid when haveNext.
func (e *Engine) accumulate(p *point, t time.Time, next float64, haveNext bool) {
	if !t.After(p.cursor) {
		return
	}
	dt := min(t.Sub(p.cursor), e.opts.MaxGap)
	p.cursor = t
	switch p.role {
	case machinemodel.RoleRunning:
		if p.value != 0 {
			p.running += dt
			e.dirty = true
		}
	case machinemodel.RolePowerKW:
		v1, v2 := max(p.value, 0), max(p.value, 0)
		if haveNext {
			v2 = max(next, 0)
		}
		if kwh := (v1 + v2) / 2 * dt.Hours(); kwh > 0 {
			p.energy += kwh
			e.dirty = true
		}
	}
}

// Tick advances every tracked point to the agent clock's now (translated
// into the point's source time): delayed transitions that came due fire
// and running time and power are counted for the held values. When
// SaveInterval has passed since the last save and totals changed, it also
// saves the state (errors are logged; Save reports them). Call it about
// once a second.
func (e *Engine) Tick() []Event {
	var evs []Event
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	now := e.opts.Clock()
	for _, p := range e.timed {
		if !p.haveValue {
			continue
		}
		t := now.Add(p.offset)
		evs = e.settle(p, t, evs)
		e.accumulate(p, t, 0, false)
	}
	due := e.opts.StateFile != "" && e.opts.SaveInterval > 0 && e.dirty && now.Sub(e.lastSave) >= e.opts.SaveInterval
	e.mu.Unlock()
	if due {
		if err := e.Save(); err != nil && !errors.Is(err, ErrClosed) {
			e.mu.Lock()
			if msg := err.Error(); msg != e.saveErr {
				e.saveErr = msg
				e.log.Warn("rules: saving the running-hours state failed; will retry", "file", e.opts.StateFile, "err", err)
			}
			e.mu.Unlock()
		}
	}
	return evs
}

// Snapshot returns the state of the tracked points.
func (e *Engine) Snapshot() Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Snapshot{Points: make([]PointState, len(e.order))}
	for i, p := range e.order {
		ps := PointState{Point: p.name, Role: p.role, Level: p.level, Valid: p.haveValue}
		if p.haveValue {
			ps.Value = p.value
		}
		switch p.role {
		case machinemodel.RoleRunning:
			ps.RunningHours = p.running.Hours()
		case machinemodel.RoleEnergyKWh, machinemodel.RolePowerKW:
			ps.EnergyKWh = p.energy
		}
		s.Points[i] = ps
	}
	return s
}

// Close saves the state a last time and stops the Engine: later Observe
// and Tick calls do nothing, Save returns ErrClosed. Closing twice returns
// ErrClosed.
func (e *Engine) Close() error {
	e.saveMu.Lock()
	defer e.saveMu.Unlock()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	e.closed = true
	data, err := e.encodeLocked()
	e.mu.Unlock()
	if err != nil || e.opts.StateFile == "" {
		return err
	}
	if err := writeAtomic(e.opts.StateFile, data); err != nil {
		return fmt.Errorf("rules.Close: %w", err)
	}
	return nil
}

// logLimited logs a warning at most once per logEvery and key, with the
// number of suppressed lines. Called with e.mu held.
func (e *Engine) logLimited(key, msg string, args ...any) {
	now := e.opts.Clock()
	if last, ok := e.logged[key]; ok && now.Sub(last) < logEvery {
		e.dropped[key]++
		return
	}
	e.logged[key] = now
	if n := e.dropped[key]; n > 0 {
		args = append(args, "suppressed", n)
		e.dropped[key] = 0
	}
	e.log.Warn(msg, args...)
}
