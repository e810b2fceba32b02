package link

import (
	"crypto/tls"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
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

func TestWait(t *testing.T) {
	const s = time.Second
	for _, tc := range []struct {
		n      int
		jitter float64
		r      float64
		want   time.Duration
	}{
		{1, 1, 0.5, 500 * time.Millisecond},  // backoff 1 s, full jitter
		{2, 1, 0.5, s},                       // 2 s
		{4, 1, 0, 8 * s},                     // 8 s
		{4, 0.2, 1, 6400 * time.Millisecond}, // 8 s − 20 %
		{20, 1, 0.75, 15 * s},                // capped at 60 s
		{3, 0, 0.9, 4 * s},                   // no jitter
		{0, 1, 0.5, 0},                       // not an attempt
	} {
		if got := Wait(tc.n, s, 60*s, tc.jitter, tc.r); got != tc.want {
			t.Errorf("attempt %d jitter %v r %v: %v, want %v", tc.n, tc.jitter, tc.r, got, tc.want)
		}
	}
}

// TestBackoffSchedule: without jitter (r = 0) the waits double from min;
// after losing a connection that was up they are capped at 8 × min for
// RecentWindow, then grow to max; a stable connection starts the next
// outage from min again, a flapping one keeps doubling.
func TestBackoffSchedule(t *testing.T) {
	const s = time.Second
	b := &Backoff{Min: s, Max: 60 * s, Jitter: 1, Rand: func() float64 { return 0 }}
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var got []time.Duration
	step := func(k int) {
		for range k {
			_, d := b.Next(now)
			got = append(got, d)
			now = now.Add(d)
		}
	}
	// Never connected (initial connect retries): plain doubling.
	step(7)
	want := []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 60 * s}
	if !slices.Equal(got, want) {
		t.Fatalf("never connected: %v, want %v", got, want)
	}
	b.Connected(now)
	now = now.Add(time.Hour)
	got = nil
	step(6)
	want = []time.Duration{s, 2 * s, 4 * s, 8 * s, 8 * s, 8 * s}
	if !slices.Equal(got, want) {
		t.Fatalf("after a lost connection: %v, want %v", got, want)
	}
	now = now.Add(RecentWindow) // outage longer than RecentWindow
	got = nil
	step(3)
	want = []time.Duration{60 * s, 60 * s, 60 * s}
	if !slices.Equal(got, want) {
		t.Fatalf("long outage: %v, want %v", got, want)
	}
	// A connection that drops within StableAfter keeps the count.
	b.Connected(now)
	now = now.Add(StableAfter / 2)
	if n, d := b.Next(now); n != 10 || d != 8*s {
		t.Fatalf("flapping: attempt %d wait %v, want 10 and the recent cap 8s", n, d)
	}
	b.Connected(now)
	now = now.Add(StableAfter)
	if n, d := b.Next(now); n != 1 || d != s {
		t.Fatalf("after a stable connection: attempt %d wait %v, want 1 and 1s", n, d)
	}
	// Full jitter: r = 0.5 halves the wait.
	b.Rand = func() float64 { return 0.5 }
	if _, d := b.Next(now); d != s {
		t.Errorf("second attempt with r 0.5: %v, want 1s", d)
	}
}

// TestSessionCache: a session survives two failed uses and is dropped at
// the third in a row; a new session resets the count; another key misses.
func TestSessionCache(t *testing.T) {
	c := &sessionCache{}
	s1, s2 := &tls.ClientSessionState{}, &tls.ClientSessionState{}
	c.Put("broker", s1)
	c.Put("broker", nil)
	c.Put("broker", nil)
	if got, ok := c.Get("broker"); !ok || got != s1 {
		t.Fatal("session dropped after two failures")
	}
	c.Put("broker", s2) // a successful handshake's new ticket
	c.Put("broker", nil)
	c.Put("broker", nil)
	if got, _ := c.Get("broker"); got != s2 {
		t.Fatal("count not reset by a new session")
	}
	c.Put("other", nil)
	c.Put("broker", nil)
	if _, ok := c.Get("broker"); ok {
		t.Fatal("session kept after three failures in a row")
	}
	c.Put("broker", s1)
	if _, ok := c.Get("other"); ok {
		t.Fatal("session returned for another key")
	}
}

// TestCopyingStore: the store gives paho's resume a copy of a stored
// PUBLISH, so marking it as a duplicate does not touch the packet paho's
// writer may be encoding at that moment (paho#703).
func TestCopyingStore(t *testing.T) {
	s := newCopyingStore()
	s.Open()
	defer s.Close()
	pub := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pub.Qos, pub.MessageID, pub.TopicName, pub.Payload = 1, 7, "gantry/v1/dev/d1/telemetry", []byte("x")
	s.Put("o.7", pub)
	got, ok := s.Get("o.7").(*packets.PublishPacket)
	if !ok || got == pub || got.MessageID != 7 || got.TopicName != pub.TopicName || string(got.Payload) != "x" {
		t.Fatalf("Get = %#v, want a copy of the stored PUBLISH", got)
	}
	got.Dup = true
	if pub.Dup {
		t.Error("setting Dup on the returned packet changed the stored one")
	}
	sub := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	sub.MessageID = 8
	s.Put("o.8", sub)
	if s.Get("o.8") != sub {
		t.Error("other packets are returned as stored")
	}
	if len(s.All()) != 2 {
		t.Errorf("All = %v", s.All())
	}
}
