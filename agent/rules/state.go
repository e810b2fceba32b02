package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gantry-iot/gantry/pkg/atomicfile"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// stateVersion is the version of the state file format.
const stateVersion = 1

// stateFile is the JSON document in Options.StateFile.
type stateFile struct {
	Version int                   `json:"version"`
	SavedAt time.Time             `json:"saved_at"`
	Points  map[string]stateEntry `json:"points"`
}

// stateEntry holds one point's totals.
type stateEntry struct {
	RunningSeconds float64  `json:"running_seconds,omitempty"`
	EnergyKWh      float64  `json:"energy_kwh,omitempty"`
	CounterKWh     *float64 `json:"counter_kwh,omitempty"` // energy_kwh role: last counter reading
}

func (s stateEntry) check() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"running_seconds", s.RunningSeconds}, {"energy_kwh", s.EnergyKWh}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 {
			return fmt.Errorf("%s is %v; want a finite number ≥ 0", f.name, f.v)
		}
		if f.name == "running_seconds" && f.v > float64(math.MaxInt64/int64(time.Second)) {
			return fmt.Errorf("running_seconds %v is out of range", f.v)
		}
	}
	if s.CounterKWh != nil && (math.IsNaN(*s.CounterKWh) || math.IsInf(*s.CounterKWh, 0)) {
		return fmt.Errorf("counter_kwh is %v; want a finite number", *s.CounterKWh)
	}
	return nil
}

// decodeState parses and checks a state document.
func decodeState(data []byte) (stateFile, error) {
	var st stateFile
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&st); err != nil {
		return st, err
	}
	if dec.More() {
		return st, errors.New("trailing data after the JSON document")
	}
	if st.Version != stateVersion {
		return st, fmt.Errorf("version %d; this agent reads version %d", st.Version, stateVersion)
	}
	for name, ent := range st.Points {
		if err := ent.check(); err != nil {
			return st, fmt.Errorf("points[%q]: %w", name, err)
		}
	}
	return st, nil
}

// load reads Options.StateFile into the points (called by New).
func (e *Engine) load() error {
	path := e.opts.StateFile
	if path == "" {
		return nil
	}
	// A leftover temp file is a save that did not complete; the state file
	// itself is intact.
	_ = os.Remove(path + ".tmp")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		e.log.Info("rules: no running-hours state yet; totals start at zero", "file", path)
		return nil
	}
	if err != nil {
		return fmt.Errorf("rules.New: reading state: %w", err)
	}
	st, err := decodeState(data)
	if err != nil {
		if !e.opts.ResetCorruptState {
			return fmt.Errorf("rules.New: %w: %s: %v; move the file aside to start the running hours and energy totals at zero", ErrCorruptState, path, err)
		}
		aside := path + ".corrupt-" + strconv.FormatInt(e.opts.Clock().Unix(), 10)
		if rerr := os.Rename(path, aside); rerr != nil {
			return fmt.Errorf("rules.New: %w: %s: %v; moving it aside failed: %v", ErrCorruptState, path, err, rerr)
		}
		e.log.Warn("rules: corrupt running-hours state moved aside; totals start at zero", "file", path, "moved_to", aside, "err", err)
		return nil
	}
	for name, ent := range st.Points {
		p := e.byName[name]
		if p == nil {
			e.extra[name] = ent
			continue
		}
		p.running = time.Duration(ent.RunningSeconds * float64(time.Second))
		p.energy = ent.EnergyKWh
		if ent.CounterKWh != nil && p.role == machinemodel.RoleEnergyKWh {
			p.counter, p.haveCtr = *ent.CounterKWh, true
		}
		e.extra[name] = ent // keeps fields of other roles; overwritten on save
	}
	return nil
}

// encodeLocked renders the state document; e.mu must be held.
func (e *Engine) encodeLocked() ([]byte, error) {
	st := stateFile{Version: stateVersion, SavedAt: e.opts.Clock().UTC(), Points: make(map[string]stateEntry, len(e.extra)+len(e.order))}
	for name, ent := range e.extra {
		st.Points[name] = ent
	}
	for _, p := range e.order {
		ent := st.Points[p.name]
		switch p.role {
		case machinemodel.RoleRunning:
			ent.RunningSeconds = p.running.Seconds()
		case machinemodel.RolePowerKW:
			ent.EnergyKWh = p.energy
		case machinemodel.RoleEnergyKWh:
			ent.EnergyKWh = p.energy
			if p.haveCtr {
				c := p.counter
				ent.CounterKWh = &c
			}
		default:
			continue
		}
		st.Points[p.name] = ent
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("rules: encoding state: %w", err)
	}
	return append(data, '\n'), nil
}

// Save writes the state file now (no-op without Options.StateFile).
func (e *Engine) Save() error {
	e.saveMu.Lock()
	defer e.saveMu.Unlock()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	if e.opts.StateFile == "" {
		e.mu.Unlock()
		return nil
	}
	data, err := e.encodeLocked()
	wasDirty := e.dirty
	e.dirty = false
	e.lastSave = e.opts.Clock()
	e.mu.Unlock()
	if err == nil {
		err = writeAtomic(e.opts.StateFile, data)
	}
	if err != nil {
		e.mu.Lock()
		e.dirty = e.dirty || wasDirty
		e.mu.Unlock()
		return fmt.Errorf("rules.Save: %w", err)
	}
	e.mu.Lock()
	e.saveErr = ""
	e.mu.Unlock()
	return nil
}

// writeAtomic creates the state file's directory and replaces the file
// atomically.
func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data)
}
