package telemetry

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/controlplane/store"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// referenceDecode is what Ingest did before decodeBatch: proto.Unmarshal
// and the conversion to store samples.
func referenceDecode(payload []byte, now time.Time) (uint64, []store.Sample, error) {
	var b gantryv1.TelemetryBatch
	if err := proto.Unmarshal(payload, &b); err != nil {
		return 0, nil, err
	}
	if len(b.Samples) > MaxSamples {
		return 0, nil, errTooManySamples
	}
	var out []store.Sample
	for _, s := range b.Samples {
		if s.Point == "" || len(s.Point) > maxPointLen {
			continue
		}
		at := now
		if s.At != nil {
			at = s.At.AsTime()
		}
		out = append(out, store.Sample{Point: s.Point, Value: s.Value, Status: s.Status, At: at, BatchSeq: b.Seq})
	}
	return b.Seq, out, nil
}

// batchSeeds are payloads for the decoder tests: typical, edge values,
// unknown fields, merged timestamps, malformed.
func batchSeeds(t testing.TB) [][]byte {
	mk := func(m *gantryv1.TelemetryBatch) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	long := make([]byte, maxPointLen+1)
	for i := range long {
		long[i] = 'x'
	}
	at := timestamppb.New(time.Date(2026, 12, 3, 8, 0, 0, 123456789, time.UTC))
	typical := mk(&gantryv1.TelemetryBatch{Seq: 42, Samples: []*gantryv1.Sample{
		{Point: "spindle_speed", Value: 1200.5, At: at, Status: 0},
		{Point: "temperature", Value: math.Inf(-1), Status: 0x80000000},
		{Point: "", Value: 1},
		{Point: string(long), Value: 2},
		{Point: "old", Value: math.NaN(), At: &timestamppb.Timestamp{Seconds: -5, Nanos: 7}},
		{Point: "zero-time", At: &timestamppb.Timestamp{}},
	}})
	return [][]byte{
		typical,
		mk(&gantryv1.TelemetryBatch{}),
		mk(&gantryv1.TelemetryBatch{Seq: math.MaxUint64}),
		// Unknown fields (varint 9, bytes 10, fixed32 11, group 12) and a
		// second timestamp for the first sample, which merges.
		append(append([]byte{}, typical...), 0x48, 0x01, 0x52, 0x02, 'h', 'i', 0x5d, 1, 2, 3, 4, 0x63, 0x08, 0x01, 0x64,
			0x12, 0x06, 0x0a, 0x01, 'a', 0x1a, 0x01, 0x08),
		{0x12, 0x03, 0x0a, 0x01, 0xff}, // point not UTF-8
		{0x12, 0x05, 0x0a, 0x01, 'a'},  // sample cut short
		{0x08},                         // varint cut short
		{0x64},                         // end group without start
		{0x00, 0x01},                   // field number 0
		{0x12, 0x02, 0x1a, 0x00},       // empty timestamp on a nameless sample
		{0x0a, 0x01, 'x', 0x08, 0x07},  // seq as bytes (unknown), then seq 7
	}
}

// TestDecodeBatchMatchesProto: decodeBatch gives what proto.Unmarshal and
// the old conversion gave on typical, edge and malformed payloads.
func TestDecodeBatchMatchesProto(t *testing.T) {
	now := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	for i, p := range batchSeeds(t) {
		checkDecode(t, i, p, now)
	}
	// More than MaxSamples is refused by both.
	var many gantryv1.TelemetryBatch
	for range MaxSamples + 1 {
		many.Samples = append(many.Samples, &gantryv1.Sample{Point: "p"})
	}
	b, _ := proto.Marshal(&many)
	if _, _, err := decodeBatch(b, now); err == nil {
		t.Errorf("%d samples accepted", MaxSamples+1)
	}
}

func checkDecode(t *testing.T, i int, payload []byte, now time.Time) {
	t.Helper()
	wantSeq, want, wantErr := referenceDecode(payload, now)
	gotSeq, got, err := decodeBatch(payload, now)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("payload %d %x: error %v, proto.Unmarshal's %v", i, payload, err, wantErr)
	}
	if err != nil {
		return
	}
	if gotSeq != wantSeq {
		t.Errorf("payload %d %x: seq %d, want %d", i, payload, gotSeq, wantSeq)
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b float64) bool {
		return math.Float64bits(a) == math.Float64bits(b)
	})); diff != "" {
		t.Errorf("payload %d %x (-proto +decodeBatch):\n%s", i, payload, diff)
	}
}

// FuzzDecodeBatch: on any payload decodeBatch agrees with proto.Unmarshal
// (error or not, and the samples).
//
//	go test -run '^$' -fuzz FuzzDecodeBatch -fuzztime 60s ./controlplane/telemetry
func FuzzDecodeBatch(f *testing.F) {
	for _, p := range batchSeeds(f) {
		f.Add(p)
	}
	now := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, payload []byte) {
		checkDecode(t, 0, payload, now)
	})
}

// BenchmarkDecodeBatch: agentsim's message (10 samples) by proto.Unmarshal
// and conversion vs decodeBatch.
func BenchmarkDecodeBatch(b *testing.B) {
	m := &gantryv1.TelemetryBatch{Seq: 12345678}
	for i := range 10 {
		m.Samples = append(m.Samples, &gantryv1.Sample{Point: "point-" + string(rune('a'+i)), Value: float64(i) * 1.5, At: timestamppb.Now()})
	}
	payload, _ := proto.Marshal(m)
	now := time.Now()
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := referenceDecode(payload, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("protowire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := decodeBatch(payload, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}
