package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestHistoryBlockRoundTrip: a block returns each point's samples in
// arrival order with every field, including times before 1970 and at the
// zero time, and skips the other points.
func TestHistoryBlockRoundTrip(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	var batches []SampleBatch
	for seq := range 5 {
		b := SampleBatch{DeviceID: "d"}
		for j := range 3 {
			b.Samples = append(b.Samples, Sample{Point: fmt.Sprintf("p%d", j), Value: float64(seq)*1.5 - float64(j), Status: uint32(0x80000000 + j),
				At: t0.Add(time.Duration(4-seq) * time.Second), BatchSeq: uint64(1 << (10 * seq))})
		}
		batches = append(batches, b)
	}
	batches = append(batches, SampleBatch{DeviceID: "d", Samples: []Sample{{Point: "p0", Value: 7, At: time.Date(1969, 12, 31, 23, 59, 59, 123456000, time.UTC)}}})
	blocks := historyBlocks(batches)
	if len(blocks) != 2 {
		t.Fatalf("%d blocks, want 2 (two buckets)", len(blocks))
	}
	for j := range 3 {
		p := fmt.Sprintf("p%d", j)
		var want, got []Sample
		for _, b := range batches {
			for _, s := range b.Samples {
				if s.Point == p {
					want = append(want, s)
				}
			}
		}
		for _, b := range blocks {
			if err := decodeHistoryBlock(b.bucket, b.encode(), p, func(s Sample) { got = append(got, s) }); err != nil {
				t.Fatal(err)
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", p, diff)
		}
	}
	data := blocks[0].encode()
	for _, n := range []int{0, 1, len(data) / 2, len(data) - 1} {
		if err := decodeHistoryBlock(blocks[0].bucket, data[:n], "p2", func(Sample) {}); err == nil {
			t.Errorf("block cut to %d of %d bytes decoded without error", n, len(data))
		}
	}
}

// TestHistoryBlocksWide: a group with more than widePoints points of one
// device in one bucket is split into partitions by point; a narrow one is
// a single block.
func TestHistoryBlocksWide(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	mk := func(points int) []SampleBatch {
		b := SampleBatch{DeviceID: "d"}
		for j := range points {
			b.Samples = append(b.Samples, Sample{Point: fmt.Sprintf("ns=2;s=n%d", j), At: t0})
		}
		return []SampleBatch{b}
	}
	if bs := historyBlocks(mk(widePoints)); len(bs) != 1 || bs[0].part != 0 {
		t.Errorf("%d points: %d blocks, want 1 with part 0", widePoints, len(bs))
	}
	bs := historyBlocks(mk(10000))
	if len(bs) != historyParts {
		t.Errorf("10,000 points: %d blocks, want %d", len(bs), historyParts)
	}
	for _, b := range bs {
		for _, p := range b.points {
			if partOf(p) != b.part {
				t.Fatalf("point %s in part %d, its part is %d", p, b.part, partOf(p))
			}
		}
	}
}

// TestHistoryReadsOldRows: history written one row per value before the
// blocks existed is still returned, merged in time order with the blocks,
// and pruned.
func TestHistoryReadsOldRows(t *testing.T) {
	ctx := context.Background()
	d := openSQLite(t)
	t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	for _, sec := range []int{1, 3, 5} {
		if _, err := d.exec(ctx, d.sql, `INSERT INTO device_value_history (device_id, point, value, status, at, batch_seq) VALUES (?, ?, ?, ?, ?, ?)`,
			"d", "p", float64(sec), 0, toMicros(t0.Add(time.Duration(sec)*time.Second)), sec); err != nil {
			t.Fatal(err)
		}
	}
	for _, sec := range []int{2, 4, 6} {
		if err := d.StoreSamples(ctx, "d", []Sample{{Point: "p", Value: float64(sec), At: t0.Add(time.Duration(sec) * time.Second), BatchSeq: uint64(sec)}}); err != nil {
			t.Fatal(err)
		}
	}
	values := func(limit int) []float64 {
		h, err := d.History(ctx, "d", "p", t0, t0.Add(time.Minute), limit)
		if err != nil {
			t.Fatal(err)
		}
		var v []float64
		for _, s := range h {
			v = append(v, s.Value)
		}
		return v
	}
	if got := values(0); !cmp.Equal(got, []float64{1, 2, 3, 4, 5, 6}) {
		t.Errorf("history %v, want 1…6", got)
	}
	if got := values(4); !cmp.Equal(got, []float64{1, 2, 3, 4}) {
		t.Errorf("history limit 4: %v", got)
	}
	n, err := d.PruneHistory(ctx, t0.Add(3500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	// Old rows go value by value (1, 3); the block holding 2, 4 and 6
	// (one bucket, stored in three transactions: three blocks) goes
	// block by block: only the block of 2.
	if n != 3 {
		t.Errorf("pruned %d samples, want 3", n)
	}
	if got := values(0); !cmp.Equal(got, []float64{4, 5, 6}) {
		t.Errorf("history after pruning: %v, want 4 5 6", got)
	}
}

// TestLatestFromOldRows: latest values stored one row per point before
// the snapshots existed are read as they are, and merged into the
// device's snapshot by its next write (an older sample does not replace
// a newer stored value).
func TestLatestFromOldRows(t *testing.T) {
	ctx := context.Background()
	d := openSQLite(t)
	t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	for j, p := range []string{"a", "b", "c"} {
		if _, err := d.exec(ctx, d.sql, `INSERT INTO device_values (device_id, point, value, status, at) VALUES (?, ?, ?, ?, ?)`,
			"d", p, float64(j), j, toMicros(t0)); err != nil {
			t.Fatal(err)
		}
	}
	want := []Sample{{Point: "a", Value: 0, At: t0}, {Point: "b", Value: 1, Status: 1, At: t0}, {Point: "c", Value: 2, Status: 2, At: t0}}
	got, err := d.LatestValues(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("before a write (-want +got):\n%s", diff)
	}
	if err := d.StoreSamples(ctx, "d", []Sample{
		{Point: "b", Value: 10, At: t0.Add(time.Second)}, {Point: "c", Value: 20, At: t0.Add(-time.Second)}, {Point: "d", Value: 30, At: t0}}); err != nil {
		t.Fatal(err)
	}
	want = []Sample{want[0], {Point: "b", Value: 10, At: t0.Add(time.Second)}, want[2], {Point: "d", Value: 30, At: t0}}
	got, err = d.LatestValues(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after a write (-want +got):\n%s", diff)
	}
	var left int
	if err := d.row(ctx, d.sql, `SELECT COUNT(*) FROM device_values`).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d rows left in device_values (%v), want them moved", left, err)
	}
}

// TestLatestSnapshotCorrupt: a cut snapshot is an error, not a shorter list.
func TestLatestSnapshotCorrupt(t *testing.T) {
	data := encodeLatest([]latestEntry{{point: "a", value: 1, at: -5}, {point: "bb", status: 7, at: 1 << 50}})
	es, err := decodeLatest(data)
	if err != nil || len(es) != 2 || es[0].at != -5 || es[1].point != "bb" || es[1].status != 7 || es[1].at != 1<<50 {
		t.Fatalf("round trip: %+v, %v", es, err)
	}
	for n := range len(data) {
		if _, err := decodeLatest(data[:n]); err == nil {
			t.Errorf("snapshot cut to %d of %d bytes decoded without error", n, len(data))
		}
	}
}

// TestHistoryBlockManyPoints: past linearPoints a block finds points by
// map; samples of interleaved, repeated points still come back per point
// in arrival order, with a batch's samples spread over two buckets.
func TestHistoryBlockManyPoints(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 8, 0, 59, 0, time.UTC)
	var batches []SampleBatch
	want := map[string][]Sample{}
	for seq := range 6 {
		b := SampleBatch{DeviceID: "d"}
		for j := range 3 * linearPoints {
			p := fmt.Sprintf("p%d", (j*7+seq)%(2*linearPoints+1))
			s := Sample{Point: p, Value: float64(seq*1000 + j), Status: uint32(j), At: t0.Add(time.Duration(seq*j) * 10 * time.Millisecond), BatchSeq: uint64(seq + 1)}
			b.Samples = append(b.Samples, s)
			want[p] = append(want[p], s)
		}
		batches = append(batches, b)
	}
	blocks := historyBlocks(batches)
	if len(blocks) != 2 {
		t.Fatalf("%d blocks, want 2 (two buckets)", len(blocks))
	}
	for p, w := range want {
		var got []Sample
		for _, b := range blocks {
			if err := decodeHistoryBlock(b.bucket, b.encode(), p, func(s Sample) { got = append(got, s) }); err != nil {
				t.Fatal(err)
			}
		}
		// Within each bucket arrival order; buckets in order.
		var wantOrdered []Sample
		for _, b := range blocks {
			for _, s := range w {
				if bucketOf(toMicros(s.At)) == b.bucket {
					wantOrdered = append(wantOrdered, s)
				}
			}
		}
		if diff := cmp.Diff(wantOrdered, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", p, diff)
		}
	}
}

// BenchmarkHistoryBlocks packs and encodes one ingest group: 1,024
// devices with 10 points each (agentsim's shape), and one device with
// 5,000 points (an OPC-UA agent's batch).
func BenchmarkHistoryBlocks(b *testing.B) {
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	for _, shape := range []struct{ devices, points int }{{1024, 10}, {1, 5000}} {
		var batches []SampleBatch
		for d := range shape.devices {
			bt := SampleBatch{DeviceID: fmt.Sprintf("dev-%05d", d)}
			for p := range shape.points {
				bt.Samples = append(bt.Samples, Sample{Point: fmt.Sprintf("ns=2;s=point%d", p), Value: float64(p), At: t0.Add(time.Duration(d) * time.Millisecond), BatchSeq: 7})
			}
			batches = append(batches, bt)
		}
		b.Run(fmt.Sprintf("%dx%d", shape.devices, shape.points), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, blk := range historyBlocks(batches) {
					_ = blk.encode()
				}
			}
		})
	}
}
