package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/agent/collector"
	"github.com/gantry-iot/gantry/agent/link"
	"github.com/gantry-iot/gantry/agent/queue"
	"github.com/gantry-iot/gantry/agent/rules"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

func ptr(v float64) *float64 { return &v }

// queued reads the queue's records as the messages the link would publish.
func queued(t *testing.T, q *queue.Queue, n int) (kinds []topics.Kind, msgs [][]byte) {
	t.Helper()
	for range n {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		rec, err := q.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("record %d of %d: %v", len(kinds)+1, n, err)
		}
		k, m, err := link.Message(rec.Seq, rec.Payload)
		if err != nil {
			t.Fatalf("record %d: %v", rec.Seq, err)
		}
		kinds, msgs = append(kinds, k), append(msgs, m)
	}
	return kinds, msgs
}

// TestEdgeSinkQueuesEvents: samples reach the queue as telemetry, a
// threshold crossing reaches it as an event record (published on the
// events topic), totals as telemetry points <point>.running_hours /
// <point>.energy_kwh; the engine's state file is written on Close.
func TestEdgeSinkQueuesEvents(t *testing.T) {
	dir := t.TempDir()
	q, err := queue.Open(filepath.Join(dir, "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	now := t0
	pts := []machinemodel.DataPoint{
		{NodeID: "ns=2;s=T", Name: "temp", WarnAbove: ptr(50), AlarmAbove: ptr(80)},
		{NodeID: "ns=2;s=R", Name: "spindle", Role: machinemodel.RoleRunning},
		{NodeID: "ns=2;s=P", Name: "power", Unit: "kW", Role: machinemodel.RolePowerKW},
		{NodeID: "ns=2;s=X", Name: "other"},
	}
	eng, err := rules.New(pts, rules.Options{StateFile: filepath.Join(dir, "running-hours.json"), Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	e := &edge{q: q, rules: eng, log: slog.New(slog.DiscardHandler), now: func() time.Time { return now }}
	ctx := t.Context()

	e.samples(ctx, []collector.Sample{{Point: "temp", Value: 20, At: t0}, {Point: "spindle", Value: 1, At: t0}, {Point: "power", Value: 10, At: t0}, {Point: "other", Value: 3, At: t0}})
	e.samples(ctx, []collector.Sample{{Point: "temp", Value: 90, At: t0.Add(3 * time.Minute)}, {Point: "spindle", Value: 1, At: t0.Add(3 * time.Minute)}})
	now = t0.Add(4 * time.Minute)
	e.totals(ctx)

	kinds, msgs := queued(t, q, 4)
	if diff := cmp.Diff([]topics.Kind{topics.Telemetry, topics.Telemetry, topics.Events, topics.Telemetry}, kinds); diff != "" {
		t.Fatalf("record kinds (-want +got):\n%s", diff)
	}
	var tb gantryv1.TelemetryBatch
	if err := proto.Unmarshal(msgs[0], &tb); err != nil || len(tb.Samples) != 4 || tb.Samples[3].Point != "other" || tb.Seq == 0 {
		t.Errorf("first telemetry batch = %v (%v)", &tb, err)
	}
	var eb gantryv1.EventBatch
	if err := proto.Unmarshal(msgs[2], &eb); err != nil {
		t.Fatal(err)
	}
	want := &gantryv1.EventBatch{Seq: eb.Seq, Events: []*gantryv1.Event{{Point: "temp", Kind: rules.KindThreshold, Level: "alarm", FromLevel: "ok",
		Value: 90, Threshold: 80, At: timestamppb.New(t0.Add(3 * time.Minute))}}}
	if diff := cmp.Diff(want, &eb, protocmp.Transform()); diff != "" {
		t.Errorf("event batch (-want +got):\n%s", diff)
	}
	var totals gantryv1.TelemetryBatch
	if err := proto.Unmarshal(msgs[3], &totals); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, s := range totals.Samples {
		got[s.Point] = s.Value
		if !s.At.AsTime().Equal(now) || s.Status != 0 {
			t.Errorf("total %s: at %v status %d", s.Point, s.At.AsTime(), s.Status)
		}
	}
	// Three minutes running (the power point got no second sample and
	// the totals are taken without a Tick, so no energy yet).
	if diff := cmp.Diff(map[string]float64{"spindle.running_hours": 0.05, "power.energy_kwh": 0}, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
		t.Errorf("totals (-want +got):\n%s", diff)
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}
	// After Close the sink still queues telemetry but raises nothing.
	e.samples(ctx, []collector.Sample{{Point: "temp", Value: 10, At: t0.Add(3 * time.Hour)}})
	if kinds, _ := queued(t, q, 1); kinds[0] != topics.Telemetry {
		t.Errorf("after Close: %v", kinds)
	}
}

// TestEdgeRunTicks: run's ticks fire delayed transitions into the queue
// and stop with the context.
func TestEdgeRunTicks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	q, err := queue.Open(t.TempDir(), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	eng, err := rules.New([]machinemodel.DataPoint{{NodeID: "ns=2;s=T", Name: "temp", AlarmAbove: ptr(80), DelayMS: 50}}, rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	e := &edge{q: q, rules: eng, log: slog.New(slog.DiscardHandler), now: time.Now}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { e.run(ctx, 10*time.Millisecond, time.Hour); close(done) }()
	e.samples(ctx, []collector.Sample{{Point: "temp", Value: 99, At: time.Now()}})
	kinds, msgs := queued(t, q, 2)
	cancel()
	<-done
	var eb gantryv1.EventBatch
	if kinds[1] != topics.Events || proto.Unmarshal(msgs[1], &eb) != nil || len(eb.Events) != 1 || eb.Events[0].Level != "alarm" {
		t.Errorf("delayed alarm: %v %v", kinds, &eb)
	}
}
