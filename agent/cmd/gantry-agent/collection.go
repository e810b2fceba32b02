package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gantry-iot/gantry/agent/collector"
	"github.com/gantry-iot/gantry/agent/config"
	"github.com/gantry-iot/gantry/agent/control"
	"github.com/gantry-iot/gantry/agent/rules"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// Template sources, in the order of precedence at start.
const (
	sourceFlag      = "flag"      // --opcua-template: a local override, pins the template
	sourcePersisted = "persisted" // the state directory's copy of the last delivered one
	sourceCommand   = "command"   // delivered by a signed reload_config while running
)

// collection runs the OPC-UA collector and the edge rules of the current
// template, and swaps them for a new template: the new collector is built
// (and so validated) before the old one stops, and a template that cannot
// be used leaves the old one running. Methods are safe for concurrent use.
type collection struct {
	ctx      context.Context // ends all runs (serve's)
	cfg      config.Config
	deviceID string
	q        appender
	status   *statusPage
	log      *slog.Logger
	tick     time.Duration // edge rules tick (1s)
	totals   time.Duration // totals interval

	mu       sync.Mutex
	pinned   bool            // started with --opcua-template: delivered templates are refused
	current  *storedTemplate // nil: none
	source   string
	run      *pipelineRun // nil: not collecting
	lastErr  string       // why the last delivered template was refused
	restarts chan struct{}
}

// pipelineRun is one template's running collector and rules.
type pipelineRun struct {
	col    *collector.Collector
	eng    *rules.Engine // nil: no rules
	tpl    machinemodel.OPCUA
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newCollection(ctx context.Context, cfg config.Config, deviceID string, q appender, status *statusPage, logger *slog.Logger) *collection {
	return &collection{ctx: ctx, cfg: cfg, deviceID: deviceID, q: q, status: status, log: logger, tick: time.Second, totals: totalsInterval}
}

// start runs the template the agent starts with: the --opcua-template
// file's (flag != nil), else the persisted one. A persisted template that
// cannot be read is logged and the agent runs without one (the control
// plane sends it again); a flag template that cannot run is an error.
func (c *collection) start(flag *machinemodel.OPCUA) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if flag != nil {
		c.pinned = true
		st := &storedTemplate{OPCUA: *flag, Hash: flag.Hash()}
		if err := c.swapLocked(st, sourceFlag); err != nil {
			return err
		}
		c.log.Info("OPC-UA template from --opcua-template; delivered templates are refused while it is given", "points", len(flag.DataPoints))
		return nil
	}
	st, err := loadTemplate(c.cfg.StateDir)
	if err != nil {
		c.lastErr = err.Error()
		c.status.setTemplate(c.templateStatusLocked())
		c.log.Error("persisted OPC-UA template not used", "err", err)
		return nil
	}
	if st == nil {
		c.log.Info("no OPC-UA template yet; waiting for the control plane to deliver one")
		c.status.setTemplate(c.templateStatusLocked())
		return nil
	}
	if err := c.swapLocked(st, sourcePersisted); err != nil {
		c.lastErr = err.Error()
		c.status.setTemplate(c.templateStatusLocked())
		c.log.Error("persisted OPC-UA template not used", "version", st.Version, "err", err)
		return nil
	}
	c.log.Info("OPC-UA template from the state directory", "version", st.Version, "hash", st.Hash, "points", len(st.OPCUA.DataPoints))
	return nil
}

// apply handles a delivered template (control.Actions.ApplyTemplate).
func (c *collection) apply(t *gantryv1.DeviceTemplate) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.applyLocked(t)
	if err != nil {
		c.lastErr = err.Error()
		c.log.Warn("delivered OPC-UA template refused; the current one keeps running", "version", t.GetVersion(), "err", err)
	} else {
		c.lastErr = ""
	}
	c.status.setTemplate(c.templateStatusLocked())
	return err
}

func (c *collection) applyLocked(t *gantryv1.DeviceTemplate) error {
	if c.pinned {
		return fmt.Errorf("template v%d not applied: this agent runs with --opcua-template (a local override); restart it without the flag to use delivered templates", t.GetVersion())
	}
	st, err := templateFromCommand(t)
	if err != nil {
		return err
	}
	st.ReceivedAt = time.Now().UTC()
	if c.current != nil && c.current.Hash == st.Hash && c.source != sourceFlag {
		// Already running this template (a resend, or the same content
		// under a new version number): record the version, restart nothing.
		if c.current.Version != st.Version {
			if err := saveTemplate(c.cfg.StateDir, st); err != nil {
				return fmt.Errorf("template v%d not applied: %w", st.Version, err)
			}
			c.current = &st
		}
		return nil
	}
	// Build first: a template the collector refuses is not persisted.
	next, err := c.buildLocked(st.OPCUA)
	if err != nil {
		return fmt.Errorf("template v%d not applied: %w", st.Version, err)
	}
	if err := saveTemplate(c.cfg.StateDir, st); err != nil {
		return fmt.Errorf("template v%d not applied: %w", st.Version, err)
	}
	if err := c.switchLocked(next, &st, sourceCommand); err != nil {
		return fmt.Errorf("template v%d: %w", st.Version, err)
	}
	c.log.Info("OPC-UA template applied", "version", st.Version, "hash", st.Hash, "points", len(st.OPCUA.DataPoints), "model", st.MachineModelID)
	return nil
}

// builtPipeline is a checked but not yet started template.
type builtPipeline struct {
	tpl machinemodel.OPCUA // merged
	col *collector.Collector
	ed  *edge // the collector's sink; its rules are set when the run starts
}

// buildLocked merges tpl with the site config and builds its collector
// (nil collector for the empty template).
func (c *collection) buildLocked(tpl machinemodel.OPCUA) (*builtPipeline, error) {
	merged, notes, err := mergeTemplate(tpl, c.cfg.OPCUA)
	if err != nil {
		return nil, err
	}
	for _, n := range notes {
		c.log.Warn(n)
	}
	if merged.IsEmpty() {
		return &builtPipeline{tpl: merged}, nil
	}
	ctpl, sec, err := collectorSecurity(c.cfg, merged, c.deviceID)
	if err != nil {
		return nil, err
	}
	ed := &edge{q: c.q, log: c.log, now: time.Now}
	col, err := collector.New(ctpl, func(samples []collector.Sample) { ed.samples(c.ctx, samples) }, collector.Options{Logger: c.log, Security: sec, MaxBatch: c.cfg.MQTT.Batch.MaxMessages, FlushInterval: batchWindow(c.cfg.MQTT.Batch.MaxDelay)})
	if err != nil {
		return nil, err
	}
	return &builtPipeline{tpl: ctpl, col: col, ed: ed}, nil
}

// switchLocked stops the current run and starts next. The rules engine
// is recreated after the old one has saved its totals.
func (c *collection) switchLocked(next *builtPipeline, st *storedTemplate, source string) error {
	c.stopLocked()
	if next.col == nil {
		c.current, c.source = st, source
		c.status.collector.Store(nil)
		c.status.setTemplate(c.templateStatusLocked())
		return nil
	}
	ed := next.ed
	// The rules were validated with the template; rules.New fails only on
	// an unreadable running-hours file. Data still flows then, without
	// rules, and the error is reported.
	eng, rerr := rules.New(next.tpl.DataPoints, rules.Options{StateFile: c.cfg.RunningHoursFile(), Logger: c.log.With("component", "rules")})
	if rerr != nil {
		eng = nil
		rerr = fmt.Errorf("collecting, but the edge rules are not running: %w", rerr)
		c.log.Error("edge rules not running", "err", rerr)
	}
	ed.rules = eng
	rctx, cancel := context.WithCancel(c.ctx)
	r := &pipelineRun{col: next.col, eng: eng, tpl: next.tpl, cancel: cancel}
	r.wg.Go(func() { ed.run(rctx, c.tick, c.totals) })
	c.restarts = make(chan struct{}, 1)
	restarts := c.restarts
	r.wg.Go(func() { c.runCollector(rctx, r.col, restarts) })
	c.run, c.current, c.source = r, st, source
	c.status.collector.Store(next.col)
	c.status.setTemplate(c.templateStatusLocked())
	return rerr
}

// swapLocked builds and starts st (used at start).
func (c *collection) swapLocked(st *storedTemplate, source string) error {
	next, err := c.buildLocked(st.OPCUA)
	if err != nil {
		return err
	}
	return c.switchLocked(next, st, source)
}

// runCollector runs col until ctx ends, restarting it on restart requests.
func (c *collection) runCollector(ctx context.Context, col *collector.Collector, restarts <-chan struct{}) {
	for {
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { _ = col.Run(cctx); close(done) }()
		select {
		case <-ctx.Done():
			cancel()
			<-done
			return
		case <-restarts:
			c.log.Info("restarting the OPC-UA collector on command")
			cancel()
			<-done
		}
	}
}

// stopLocked stops the current run and saves its rules' totals.
func (c *collection) stopLocked() {
	r := c.run
	if r == nil {
		return
	}
	c.run = nil
	r.cancel()
	r.wg.Wait()
	if r.eng != nil {
		if err := r.eng.Close(); err != nil {
			c.log.Warn("edge rules: final save failed", "file", c.cfg.RunningHoursFile(), "err", err)
		}
	}
}

// stop ends collection (serve's shutdown).
func (c *collection) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopLocked()
}

// restart asks the running collector to reconnect (restart_collector).
func (c *collection) restart() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.run == nil {
		return fmt.Errorf("%w: no OPC-UA template is configured", control.ErrUnavailable)
	}
	select {
	case c.restarts <- struct{}{}:
	default: // a restart is already pending
	}
	return nil
}

// template returns the running (merged) template, if any.
func (c *collection) template() (machinemodel.OPCUA, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.run == nil {
		return machinemodel.OPCUA{}, false
	}
	return c.run.tpl, true
}

// templateStatus is the status page's view of the template.
type templateStatus struct {
	Source  string `json:"source,omitempty"` // flag, persisted, command; empty: none
	Version uint64 `json:"version,omitempty"`
	Hash    string `json:"hash,omitempty"`
	Points  int    `json:"points"`
	Error   string `json:"error,omitempty"` // why the last delivered or persisted template was not used
}

func (c *collection) templateStatusLocked() templateStatus {
	s := templateStatus{Source: c.source, Error: c.lastErr}
	if c.current != nil {
		s.Version, s.Hash = c.current.Version, c.current.Hash
	}
	if c.run != nil {
		s.Points = len(c.run.tpl.DataPoints)
	}
	return s
}

// errNoTemplate is returned by browse without endpoint or template.
var errNoTemplate = errors.New("give an endpoint_url: this agent has no OPC-UA template")

// batchWindow is the collector's batch window for mqtt.batch.max_delay: 0s
// means no window (each notification's samples at once).
func batchWindow(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
