package link

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

func samplesRecord(n int) []byte {
	r := &gantryv1.QueuedRecord{}
	for i := range n {
		r.Samples = append(r.Samples, &gantryv1.Sample{Point: fmt.Sprintf("gen%d", i), Value: float64(i) / 3, Status: uint32(i % 2), At: timestamppb.Now()})
	}
	b, _ := proto.Marshal(r)
	return b
}

// TestMessageFastPathMatchesDecoding: for sample records the spliced
// batch is byte for byte the decoded-and-encoded one; records with events,
// a bare TelemetryBatch's seq or unknown fields take the decoding path and
// come out as before; garbage is still a permanent error.
func TestMessageFastPathMatchesDecoding(t *testing.T) {
	for _, n := range []int{0, 1, 1000} {
		rec := samplesRecord(n)
		if _, ok := telemetryFast(42, rec); !ok {
			t.Fatalf("%d samples: fast path declined", n)
		}
		k1, m1, err1 := Message(42, rec)
		k2, m2, err2 := messageDecoded(42, rec)
		if err1 != nil || err2 != nil || k1 != topics.Telemetry || k1 != k2 || !bytes.Equal(m1, m2) {
			t.Errorf("%d samples: fast %v %x %v, decoded %v %x %v", n, k1, m1[:min(len(m1), 32)], err1, k2, m2[:min(len(m2), 32)], err2)
		}
	}
	ev, _ := proto.Marshal(&gantryv1.QueuedRecord{Events: []*gantryv1.Event{{Point: "p", Kind: "threshold", Level: "alarm"}}})
	legacy, _ := proto.Marshal(&gantryv1.TelemetryBatch{Seq: 9, Samples: []*gantryv1.Sample{{Point: "p", Value: 1}}})
	unknown := append(samplesRecord(2), 0x48, 0x01) // field 9, varint 1
	for name, rec := range map[string][]byte{"events": ev, "legacy batch": legacy, "unknown field": unknown} {
		if _, ok := telemetryFast(42, rec); ok {
			t.Errorf("%s: fast path taken", name)
		}
		k, m, err := Message(42, rec)
		var b interface {
			proto.Message
			GetSeq() uint64
		} = &gantryv1.TelemetryBatch{}
		if name == "events" {
			b = &gantryv1.EventBatch{}
		}
		if err != nil || proto.Unmarshal(m, b) != nil || b.GetSeq() != 42 {
			t.Errorf("%s: %v %v %v", name, k, err, b.GetSeq())
		}
	}
	if _, _, err := Message(1, []byte{0x12, 0x05, 0x01}); err == nil {
		t.Error("a broken record gave no error")
	} else if p, ok := err.(interface{ Permanent() bool }); !ok || !p.Permanent() {
		t.Errorf("broken record: %v is not permanent", err)
	}
}

// BenchmarkMessage compares turning a queued record of 5,000 samples
// into its TelemetryBatch by decoding and encoding (before) and by
// splicing the seq in front (after):
//
//	go test -run '^$' -bench BenchmarkMessage -benchmem ./agent/link
func BenchmarkMessage(b *testing.B) {
	rec := samplesRecord(5000)
	for _, c := range []struct {
		name string
		f    func(uint64, []byte) (topics.Kind, []byte, error)
	}{{"before/decode-encode", messageDecoded}, {"after/splice", Message}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(rec)))
			for b.Loop() {
				if _, _, err := c.f(7, rec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
