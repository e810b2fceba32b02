package link

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gantry-iot/gantry/agent/forward"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMessage: queue records become telemetry or event batches stamped
// with their sequence; a bare TelemetryBatch queued by an older agent is
// still telemetry; malformed records are permanent failures.
func TestMessage(t *testing.T) {
	sample := &gantryv1.Sample{Point: "temp", Value: 1}
	event := &gantryv1.Event{Point: "temp", Kind: "threshold", Level: "alarm", FromLevel: "ok"}
	for _, tc := range []struct {
		name    string
		payload []byte
		kind    topics.Kind
		want    proto.Message
	}{
		{"samples", marshal(t, &gantryv1.QueuedRecord{Samples: []*gantryv1.Sample{sample}}), topics.Telemetry, &gantryv1.TelemetryBatch{Seq: 7, Samples: []*gantryv1.Sample{sample}}},
		{"legacy telemetry batch", marshal(t, &gantryv1.TelemetryBatch{Seq: 3, Samples: []*gantryv1.Sample{sample}}), topics.Telemetry, &gantryv1.TelemetryBatch{Seq: 7, Samples: []*gantryv1.Sample{sample}}},
		{"events", marshal(t, &gantryv1.QueuedRecord{Events: []*gantryv1.Event{event}}), topics.Events, &gantryv1.EventBatch{Seq: 7, Events: []*gantryv1.Event{event}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, out, err := Message(7, tc.payload)
			if err != nil || k != tc.kind {
				t.Fatalf("Message = %q, %v; want %q", k, err, tc.kind)
			}
			got := tc.want.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(out, got); err != nil || !proto.Equal(got, tc.want) {
				t.Errorf("message = %v (%v), want %v", got, err, tc.want)
			}
		})
	}
	for name, payload := range map[string][]byte{
		"garbage": {0xff, 0xff, 0xff},
		"both":    marshal(t, &gantryv1.QueuedRecord{Samples: []*gantryv1.Sample{sample}, Events: []*gantryv1.Event{event}}),
	} {
		var perm forward.Permanent
		if _, _, err := Message(1, payload); !errors.As(err, &perm) || !perm.Permanent() {
			t.Errorf("%s: %v, want a permanent error", name, err)
		}
	}
}

func TestJitterDelay(t *testing.T) {
	const s = time.Second
	for _, tc := range []struct {
		n      int
		jitter float64
		r      float64
		want   time.Duration
	}{
		{1, 0.2, 0.5, 100 * time.Millisecond}, // backoff 1 s
		{2, 0.2, 0.5, 200 * time.Millisecond}, // 2 s
		{4, 0.2, 1, 1600 * time.Millisecond},  // 8 s
		{20, 0.2, 1, 12 * s},                  // capped at 60 s
		{3, 0, 1, 0},                          // no jitter
		{0, 0.2, 1, 0},                        // not an attempt
	} {
		if got := JitterDelay(tc.n, s, 60*s, tc.jitter, tc.r); got != tc.want {
			t.Errorf("attempt %d jitter %v r %v: %v, want %v", tc.n, tc.jitter, tc.r, got, tc.want)
		}
	}
}
