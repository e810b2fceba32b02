package main

import (
	"context"
	"math"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gantry-iot/gantry/agent/collector"
)

// Limits of one telemetry record: the control plane accepts at most
// 10,000 samples per batch (telemetry.MaxSamples) and the embedded broker
// 1 MiB per packet; these stay well inside both.
const (
	maxRecordSamples = 5000
	maxRecordBytes   = 256 << 10
)

// appendSample appends s as field 2 (samples) of a gantryv1.QueuedRecord,
// byte for byte what proto.Marshal writes for the same Sample (proto3:
// zero fields omitted, fields in number order), without the per-sample
// messages and timestamps proto.Marshal needs.
func appendSample(b []byte, s *collector.Sample) []byte {
	secs, nanos := s.At.Unix(), int32(s.At.Nanosecond())
	tsLen := 0
	if secs != 0 {
		tsLen += 1 + protowire.SizeVarint(uint64(secs))
	}
	if nanos != 0 {
		tsLen += 1 + protowire.SizeVarint(uint64(nanos))
	}
	n := 0
	if s.Point != "" {
		n += 1 + protowire.SizeBytes(len(s.Point))
	}
	if s.Value != 0 || math.Signbit(s.Value) {
		n += 1 + 8
	}
	n += 1 + protowire.SizeBytes(tsLen)
	if s.Status != 0 {
		n += 1 + protowire.SizeVarint(uint64(s.Status))
	}
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	if s.Point != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, s.Point)
	}
	if s.Value != 0 || math.Signbit(s.Value) {
		b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(s.Value))
	}
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(tsLen))
	if secs != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(secs))
	}
	if nanos != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(nanos))
	}
	if s.Status != 0 {
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(s.Status))
	}
	return b
}

// encodeSamples encodes ss as telemetry records (gantryv1.QueuedRecord
// with samples) of at most maxRecordSamples samples and about
// maxRecordBytes each, calling emit with each record in order; emit owns
// the record it gets (from recordPool: give it back with putRecord when
// done, or drop it).
func encodeSamples(ss []collector.Sample, emit func(rec []byte)) {
	for len(ss) > 0 {
		b := getRecord(min(maxRecordBytes+4<<10, len(ss)*48))
		i := 0
		for i < len(ss) && i < maxRecordSamples && len(b) < maxRecordBytes {
			b = appendSample(b, &ss[i])
			i++
		}
		emit(b)
		ss = ss[i:]
	}
}

// recordPool recycles record buffers once the queue has written them.
var recordPool sync.Pool

func getRecord(size int) []byte {
	if p, ok := recordPool.Get().(*[]byte); ok && cap(*p) >= size {
		return (*p)[:0]
	}
	return make([]byte, 0, max(size, maxRecordBytes+4<<10))
}

func putRecord(b []byte) {
	if cap(b) <= 2*maxRecordBytes {
		recordPool.Put(&b)
	}
}

// maxAsyncAppends bounds the telemetry records handed to the queue and
// not yet fsync'd (≤ 16 × 256 KiB in memory): beyond it the collector
// waits, as it did for every record before appends were asynchronous.
const maxAsyncAppends = 16

// asyncAppends is the bound on an edge's asynchronous appends.
type asyncAppends struct {
	once sync.Once
	sem  chan struct{}
}

// appendAsync queues a telemetry record without waiting for its fsync, so
// the collector goes on receiving while the queue group-commits; order is
// kept (one goroutine, the collector, calls it). Errors are logged.
func (e *edge) appendAsync(ctx context.Context, rec []byte, what string) {
	e.async.once.Do(func() { e.async.sem = make(chan struct{}, maxAsyncAppends) })
	select {
	case e.async.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	err := e.q.AppendAsync(ctx, rec, func(_ uint64, err error) {
		putRecord(rec) // written (or refused): the queue is done with it
		<-e.async.sem
		if err != nil && ctx.Err() == nil {
			e.log.Warn(what+" not queued", "err", err)
		}
	})
	if err != nil {
		<-e.async.sem
		if ctx.Err() == nil {
			e.log.Warn(what+" not queued", "err", err)
		}
	}
}
