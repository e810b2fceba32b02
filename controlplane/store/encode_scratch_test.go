package store

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// encode returns a block's data column on its own, as a reference.
func (b *historyBlock) encode() []byte { return b.appendEncoded(nil, new(encodeScratch)) }

// encodeLatest returns a snapshot's data column on its own.
func encodeLatest(es []latestEntry) []byte { return appendLatest(nil, es) }

// TestScratchColumns: columns encoded one after another into one scratch
// buffer (which grows and is reused as StoreSampleBatches does) equal
// their separate encodings, and appending a column never changes the
// earlier ones.
func TestScratchColumns(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	var batches []SampleBatch
	for d := range 40 {
		bt := SampleBatch{DeviceID: fmt.Sprintf("dev-%02d", d)}
		for p := range 1 + d*7 {
			bt.Samples = append(bt.Samples, Sample{Point: fmt.Sprintf("p%d", p%(3+d)), Value: float64(p), Status: uint32(p % 3), At: t0.Add(time.Duration(p) * time.Millisecond), BatchSeq: uint64(d)})
		}
		batches = append(batches, bt)
	}
	blocks := historyBlocks(batches)
	sc := new(encodeScratch)
	for round := range 2 { // the second round reuses the grown buffers
		sc.buf = sc.buf[:0]
		var cols, want [][]byte
		for _, b := range blocks {
			cols = append(cols, sc.column(func(dst []byte) []byte { return b.appendEncoded(dst, sc) }))
			want = append(want, b.encode())
			es := []latestEntry{{point: b.device, value: float64(b.n), at: b.tMax}}
			cols = append(cols, sc.column(func(dst []byte) []byte { return appendLatest(dst, es) }))
			want = append(want, encodeLatest(es))
		}
		for i := range cols {
			if !bytes.Equal(cols[i], want[i]) {
				t.Fatalf("round %d: column %d differs from its separate encoding", round, i)
			}
			if cap(cols[i]) != len(cols[i]) {
				t.Fatalf("round %d: column %d has spare capacity %d: a later append could overwrite it", round, i, cap(cols[i])-len(cols[i]))
			}
		}
	}
}

// TestMergeLatest: updates replace older entries only; a merge that adds
// no point reuses base, one that adds points leaves base unchanged.
func TestMergeLatest(t *testing.T) {
	e := func(p string, v float64, at int64) latestEntry { return latestEntry{point: p, value: v, at: at} }
	base := func() []latestEntry { return []latestEntry{e("a", 1, 10), e("c", 3, 30), e("e", 5, 50)} }
	cases := []struct {
		name    string
		update  []latestEntry
		want    []latestEntry
		inPlace bool
	}{
		{"same points", []latestEntry{e("a", 11, 11), e("e", 55, 50)}, []latestEntry{e("a", 11, 11), e("c", 3, 30), e("e", 55, 50)}, true},
		{"older value kept", []latestEntry{e("c", 33, 29)}, base(), true},
		{"new points", []latestEntry{e("0", 0, 1), e("c", 33, 31), e("d", 4, 40), e("z", 9, 90)},
			[]latestEntry{e("0", 0, 1), e("a", 1, 10), e("c", 33, 31), e("d", 4, 40), e("e", 5, 50), e("z", 9, 90)}, false},
		{"more points than base", []latestEntry{e("a", 2, 11), e("b", 2, 20), e("c", 4, 31), e("e", 6, 51)},
			[]latestEntry{e("a", 2, 11), e("b", 2, 20), e("c", 4, 31), e("e", 6, 51)}, false},
		{"empty base", []latestEntry{e("x", 1, 1)}, []latestEntry{e("x", 1, 1)}, false},
	}
	for _, c := range cases {
		b := base()
		if c.name == "empty base" {
			b = nil
		}
		orig := slices.Clone(b)
		upd := slices.Clone(c.update)
		got := mergeLatest(b, c.update)
		if diff := cmp.Diff(c.want, got, cmp.AllowUnexported(latestEntry{})); diff != "" {
			t.Errorf("%s: (-want +got)\n%s", c.name, diff)
		}
		if reused := len(b) > 0 && &got[0] == &b[0]; reused != c.inPlace {
			t.Errorf("%s: base reused = %v, want %v", c.name, reused, c.inPlace)
		}
		if !c.inPlace && !slices.Equal(b, orig) {
			t.Errorf("%s: base changed although a new slice was returned", c.name)
		}
		if !slices.Equal(c.update, upd) {
			t.Errorf("%s: update changed", c.name)
		}
	}
}
