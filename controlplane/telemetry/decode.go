package telemetry

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gantry-iot/gantry/controlplane/store"
)

// maxPointLen bounds a data point name; longer ones are skipped.
const maxPointLen = 200

var errTooManySamples = fmt.Errorf("more than %d samples in one batch", MaxSamples)

// decodeBatch decodes a gantry.v1.TelemetryBatch payload into its
// sequence number and store samples: what proto.Unmarshal and the
// conversion that used to follow it produced (FuzzDecodeBatch compares
// them), without protobuf's reflection and one allocation per sample — a
// noticeable share of the control plane's CPU at 10,000 messages/s.
// Samples without a point name or with one longer than maxPointLen are
// skipped; a sample without a time gets now. Unknown fields are skipped
// as proto3 requires; a malformed payload, a point name that is not UTF-8
// or more than MaxSamples samples is an error.
func decodeBatch(b []byte, now time.Time) (seq uint64, samples []store.Sample, err error) {
	n := 0
	if err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.VarintType:
			seq = x
		case num == 2 && typ == protowire.BytesType:
			if n++; n > MaxSamples {
				return errTooManySamples
			}
			s, ok, err := decodeSample(v, now)
			if err != nil {
				return fmt.Errorf("sample %d: %w", n, err)
			}
			if ok {
				if samples == nil {
					samples = make([]store.Sample, 0, countSamples(b))
				}
				samples = append(samples, s)
			}
		}
		return nil
	}); err != nil {
		return 0, nil, err
	}
	for i := range samples {
		samples[i].BatchSeq = seq
	}
	return seq, samples, nil
}

// countSamples is an upper bound for the samples of a well-formed batch
// (its length-delimited fields 2), to size the result once.
func countSamples(b []byte) int {
	n := 0
	_ = eachField(b, func(num protowire.Number, typ protowire.Type, _ []byte, _ uint64) error {
		if num == 2 && typ == protowire.BytesType {
			n++
		}
		return nil
	})
	return min(n, MaxSamples)
}

// decodeSample decodes a gantry.v1.Sample; ok is false for one that is
// skipped (no point name, or a too long one).
func decodeSample(b []byte, now time.Time) (s store.Sample, ok bool, err error) {
	var point []byte
	var hasAt bool
	var secs int64
	var nanos int32
	err = eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			if !utf8.Valid(v) {
				return errors.New("point name is not valid UTF-8")
			}
			point = v
		case num == 2 && typ == protowire.Fixed64Type:
			s.Value = math.Float64frombits(x)
		case num == 3 && typ == protowire.BytesType:
			// Repeated occurrences merge, as protobuf merges messages.
			hasAt = true
			return eachField(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
				switch {
				case num == 1 && typ == protowire.VarintType:
					secs = int64(x)
				case num == 2 && typ == protowire.VarintType:
					nanos = int32(x)
				}
				return nil
			})
		case num == 4 && typ == protowire.VarintType:
			s.Status = uint32(x)
		}
		return nil
	})
	if err != nil || len(point) == 0 || len(point) > maxPointLen {
		return store.Sample{}, false, err
	}
	s.Point = string(point)
	s.At = now
	if hasAt {
		s.At = time.Unix(secs, int64(nanos)).UTC()
	}
	return s, true, nil
}

// eachField calls fn for each field of a protobuf message: v is a
// length-delimited field's bytes, x a varint's or fixed field's value.
// Groups and malformed fields are errors (fn sees no group).
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("field number %d out of range", num)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			var x32 uint32
			x32, n = protowire.ConsumeFixed32(b)
			x = uint64(x32)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.StartGroupType {
			continue // an unknown group, skipped whole
		}
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
