package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/agent/collector"
	"github.com/gantry-iot/gantry/agent/rules"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// appender is the durable queue as the edge pipeline uses it.
type appender interface {
	Append(ctx context.Context, payload []byte) (uint64, error)
	AppendAsync(ctx context.Context, payload []byte, done func(seq uint64, err error)) error
}

// Suffixes of the telemetry points that carry the rules engine's totals.
const (
	runningHoursSuffix = ".running_hours"
	energyKWhSuffix    = ".energy_kwh"
)

// edge connects the collector to the rules engine and the durable queue:
// samples are queued as telemetry records and observed by the rules;
// the rules' events are queued as event records (the queue record is a
// gantryv1.QueuedRecord, see link.PublishAsync), so both survive broker
// outages the same way. Safe for concurrent use (the engine and the queue
// are).
type edge struct {
	q     appender
	rules *rules.Engine // nil: no rules
	log   *slog.Logger
	now   func() time.Time
	async asyncAppends

	rulesMu  sync.Mutex
	rulesBuf []rules.Sample // samples' scratch slice for the rules
}

// samples is the collector's sink.
func (e *edge) samples(ctx context.Context, ss []collector.Sample) {
	encodeSamples(ss, func(rec []byte) { e.appendAsync(ctx, rec, "telemetry") })
	if e.rules == nil {
		return
	}
	e.rulesMu.Lock()
	rs := e.rulesBuf[:0]
	for _, s := range ss {
		rs = append(rs, rules.Sample(s))
	}
	e.rulesBuf = rs
	evs := e.rules.ObserveBatch(rs)
	e.rulesMu.Unlock()
	e.events(ctx, evs)
}

// events queues the rules' events (nothing when evs is empty).
func (e *edge) events(ctx context.Context, evs []rules.Event) {
	if len(evs) == 0 {
		return
	}
	rec := &gantryv1.QueuedRecord{Events: make([]*gantryv1.Event, 0, len(evs))}
	for _, ev := range evs {
		rec.Events = append(rec.Events, &gantryv1.Event{Point: ev.Point, Kind: ev.Kind, Level: ev.Level.String(), FromLevel: ev.From.String(),
			Value: ev.Value, Threshold: ev.Threshold, At: timestamppb.New(ev.At)})
		e.log.Info("edge rule event", "point", ev.Point, "level", ev.Level, "from", ev.From, "value", ev.Value, "threshold", ev.Threshold)
	}
	e.append(ctx, rec, "events")
}

// totals queues the running hours and energy of the points with a role as
// telemetry samples named <point>.running_hours and <point>.energy_kwh.
func (e *edge) totals(ctx context.Context) {
	if e.rules == nil {
		return
	}
	at := timestamppb.New(e.now())
	rec := &gantryv1.QueuedRecord{}
	for _, p := range e.rules.Snapshot().Points {
		switch p.Role {
		case machinemodel.RoleRunning:
			rec.Samples = append(rec.Samples, &gantryv1.Sample{Point: p.Point + runningHoursSuffix, Value: p.RunningHours, At: at})
		case machinemodel.RoleEnergyKWh, machinemodel.RolePowerKW:
			rec.Samples = append(rec.Samples, &gantryv1.Sample{Point: p.Point + energyKWhSuffix, Value: p.EnergyKWh, At: at})
		}
	}
	if len(rec.Samples) > 0 {
		e.append(ctx, rec, "totals")
	}
}

func (e *edge) append(ctx context.Context, rec *gantryv1.QueuedRecord, what string) {
	payload, err := proto.Marshal(rec)
	if err != nil {
		e.log.Error(what+" not encoded", "err", err)
		return
	}
	if _, err := e.q.Append(ctx, payload); err != nil && ctx.Err() == nil {
		e.log.Warn(what+" not queued", "err", err)
	}
}

// run ticks the rules engine every tick (firing delayed transitions and
// counting time) and queues the totals at the first tick and then every
// totalsEvery, until ctx ends.
func (e *edge) run(ctx context.Context, tick, totalsEvery time.Duration) {
	if e.rules == nil {
		return
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			e.events(ctx, e.rules.Tick())
			if now := e.now(); now.Sub(last) >= totalsEvery {
				last = now
				e.totals(ctx)
			}
		}
	}
}
