package main

import (
	"bytes"
	"fmt"
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/agent/collector"
	"github.com/gantry-iot/gantry/agent/link"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// marshalSamples is the encoding the agent used before encodeSamples:
// one proto message per sample, proto.Marshal of the record.
func marshalSamples(ss []collector.Sample) []byte {
	rec := &gantryv1.QueuedRecord{Samples: make([]*gantryv1.Sample, 0, len(ss))}
	for _, s := range ss {
		rec.Samples = append(rec.Samples, &gantryv1.Sample{Point: s.Point, Value: s.Value, Status: s.Status, At: timestamppb.New(s.At)})
	}
	b, err := proto.Marshal(rec)
	if err != nil {
		panic(err)
	}
	return b
}

func loadSamples(n int) []collector.Sample {
	at := time.Date(2026, 12, 2, 8, 30, 0, 123456789, time.UTC)
	ss := make([]collector.Sample, n)
	for i := range ss {
		ss[i] = collector.Sample{Point: fmt.Sprintf("gen%d", i), Value: float64(i) * 0.37, At: at.Add(time.Duration(i) * time.Millisecond)}
	}
	return ss
}

// TestEncodeSamplesMatchesProto: the hand-written encoding is byte for
// byte proto.Marshal's, including zero and negative-zero values, NaN,
// status codes, whole-second and zero times and empty names; records
// split at the sample and byte limits and keep the order.
func TestEncodeSamplesMatchesProto(t *testing.T) {
	at := time.Date(2026, 12, 2, 8, 30, 0, 5, time.UTC)
	edge := []collector.Sample{
		{Point: "a", Value: 1.5, At: at},
		{Point: "zero", Value: 0, At: at},
		{Point: "negzero", Value: math.Copysign(0, -1), At: at},
		{Point: "nan", Value: math.NaN(), At: at},
		{Point: "inf", Value: math.Inf(-1), At: at},
		{Point: "bad", Status: collector.StatusLost, At: at},
		{Point: "whole second", Value: -3, At: at.Truncate(time.Second)},
		{Point: "epoch", Value: 2, At: time.Unix(0, 0)},
		{Point: "zero time", Value: 7},
		{Point: "before epoch", Value: 8, At: time.Unix(-5, 10)},
		{Point: "", Value: 9, At: at},
		{Point: "ünïcode ✓", Value: 1e300, Status: 0x80000000, At: at},
	}
	var got bytes.Buffer
	n := 0
	encodeSamples(edge, func(rec []byte) { got.Write(rec); n++ })
	if want := marshalSamples(edge); !bytes.Equal(got.Bytes(), want) || n != 1 {
		t.Fatalf("encoding differs from proto.Marshal (%d records):\n got %x\nwant %x", n, got.Bytes(), want)
	}

	ss := loadSamples(12000)
	var recs [][]byte
	encodeSamples(ss, func(rec []byte) { recs = append(recs, rec) })
	i := 0
	for _, rec := range recs {
		var r gantryv1.QueuedRecord
		if err := proto.Unmarshal(rec, &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Samples) > maxRecordSamples || len(rec) > maxRecordBytes+1<<10 {
			t.Errorf("record of %d samples, %d bytes: over the limits", len(r.Samples), len(rec))
		}
		if !bytes.Equal(rec, marshalSamples(ss[i:i+len(r.Samples)])) {
			t.Errorf("record at sample %d differs from proto.Marshal", i)
		}
		i += len(r.Samples)
	}
	if i != len(ss) || len(recs) != 3 {
		t.Errorf("%d samples in %d records, want %d in 3", i, len(recs), len(ss))
	}
	long := []collector.Sample{{Point: string(bytes.Repeat([]byte("x"), 300<<10)), At: at}, {Point: "next", At: at}}
	recs = nil
	encodeSamples(long, func(rec []byte) { recs = append(recs, rec) })
	if len(recs) != 2 {
		t.Errorf("an oversized sample: %d records, want it alone in the first", len(recs))
	}
}

// TestRecordSamples: the sent-values counter counts the samples of a
// record and stops at damage.
func TestRecordSamples(t *testing.T) {
	b := marshalSamples(loadSamples(7))
	if n := recordSamples(b); n != 7 {
		t.Errorf("recordSamples = %d, want 7", n)
	}
	if n := recordSamples(b[:len(b)-3]); n != 6 {
		t.Errorf("truncated record: %d, want 6", n)
	}
}

// BenchmarkEncodeTelemetry compares the agent's telemetry path for a
// batch of 5,000 samples, before (proto messages + proto.Marshal, and
// the link's Unmarshal + Marshal into a TelemetryBatch) and after
// (appendSample, and the link's splice of the seq in front of the
// record):
//
//	go test -run '^$' -bench BenchmarkEncodeTelemetry -benchmem ./agent/cmd/gantry-agent
func BenchmarkEncodeTelemetry(b *testing.B) {
	ss := loadSamples(5000)
	b.Run("before/proto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rec := marshalSamples(ss)
			var r gantryv1.QueuedRecord
			if err := proto.Unmarshal(rec, &r); err != nil {
				b.Fatal(err)
			}
			if _, err := proto.Marshal(&gantryv1.TelemetryBatch{Seq: 12345, Samples: r.Samples}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*len(ss))/b.Elapsed().Seconds(), "values/s")
	})
	b.Run("after/protowire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			encodeSamples(ss, func(rec []byte) {
				if _, _, err := link.Message(12345, rec); err != nil {
					b.Fatal(err)
				}
				putRecord(rec) // as the queue's callback does
			})
		}
		b.ReportMetric(float64(b.N*len(ss))/b.Elapsed().Seconds(), "values/s")
	})
}
