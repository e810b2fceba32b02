package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"
)

// TestLatestCacheMatchesStore: on SQLite the writer merges into cached
// snapshots instead of reading them back; after many transactions that
// each write a random subset of points (some older than what is stored),
// the latest values equal a model of the writes, in this store and in the
// same file reopened (no cache), and a failed transaction leaves nothing
// stale behind.
func TestLatestCacheMatchesStore(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "gantry.db")
	st, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := st.(*db)
	if d.latest == nil {
		t.Fatal("SQLite store without a latest-value cache")
	}
	type val struct {
		v  float64
		at int64
	}
	model := map[string]map[string]val{}
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 60 {
		var batches []SampleBatch
		for dev := range 5 {
			if rng.IntN(3) == 0 {
				continue
			}
			id := fmt.Sprintf("d%d", dev)
			b := SampleBatch{DeviceID: id}
			for p := range 8 {
				if rng.IntN(2) == 0 {
					continue
				}
				at := t0.Add(time.Duration(rng.IntN(100)) * time.Second)
				s := Sample{Point: fmt.Sprintf("p%d", p), Value: float64(round*100 + p), At: at}
				b.Samples = append(b.Samples, s)
				if model[id] == nil {
					model[id] = map[string]val{}
				}
				if old, ok := model[id][s.Point]; !ok || toMicros(at) >= old.at {
					model[id][s.Point] = val{s.Value, toMicros(at)}
				}
			}
			batches = append(batches, b)
		}
		if round == 30 {
			// A transaction that fails: its devices leave the cache.
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if err := st.StoreSampleBatches(cctx, []SampleBatch{{DeviceID: "d0", Samples: []Sample{{Point: "p0", Value: 1e9, At: t0.Add(time.Hour)}}}}); err == nil {
				t.Fatal("a transaction with a cancelled context succeeded")
			}
			d.latest.mu.Lock()
			_, cached := d.latest.get("d0")
			d.latest.mu.Unlock()
			if cached {
				t.Error("d0 still cached after its transaction failed")
			}
		}
		if err := st.StoreSampleBatches(ctx, batches); err != nil {
			t.Fatal(err)
		}
	}
	check := func(st Store, what string) {
		t.Helper()
		for dev, points := range model {
			got, err := st.LatestValues(ctx, dev)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(points) {
				t.Errorf("%s: %s has %d latest values, want %d", what, dev, len(got), len(points))
			}
			for _, s := range got {
				if w := points[s.Point]; s.Value != w.v || toMicros(s.At) != w.at {
					t.Errorf("%s: %s %s = %v at %v, want %v at %v", what, dev, s.Point, s.Value, s.At, w.v, fromMicros(w.at))
				}
			}
		}
	}
	check(st, "cached")
	// Reopened: the snapshots on disk are the same.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st2, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	check(st2, "reopened")
}

// TestLatestCacheBound: the cache holds at most maxCachedLatest entries and
// keeps its count right across replacements and evictions.
func TestLatestCacheBound(t *testing.T) {
	c := newLatestCache()
	es := make([]latestEntry, 1000)
	for round := range 3 {
		snaps := map[string][]latestEntry{}
		for i := range maxCachedLatest / 1000 * 2 {
			snaps[fmt.Sprintf("r%d-d%d", round, i)] = es
		}
		c.put(snaps)
		n := 0
		for _, v := range c.devices {
			n += len(v)
		}
		if n != c.entries || n > maxCachedLatest {
			t.Fatalf("round %d: %d entries held, counted %d, bound %d", round, n, c.entries, maxCachedLatest)
		}
	}
	c.put(map[string][]latestEntry{"x": es[:10]})
	c.put(map[string][]latestEntry{"x": es[:3]})
	c.forget([]string{"x", "never-cached"})
	n := 0
	for _, v := range c.devices {
		n += len(v)
	}
	if n != c.entries {
		t.Fatalf("after replace and forget: %d held, counted %d", n, c.entries)
	}
}

// TestSQLitePragmas: every SQLite connection keeps statement journals in
// memory (see Open) and has the page cache and checkpoint settings.
func TestSQLitePragmas(t *testing.T) {
	ctx := context.Background()
	d := openSQLite(t)
	// Several connections at once, so not only the first is checked.
	var conns []interface{ Close() error }
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 3 {
		c, err := d.sql.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		for pragma, want := range map[string]int64{"temp_store": 2, "cache_size": -32768, "wal_autocheckpoint": 0} {
			var got int64
			if err := c.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("PRAGMA %s = %d, want %d", pragma, got, want)
			}
		}
	}
}

// openSQLite opens a store on a new SQLite file, closed when t ends.
func openSQLite(t *testing.T) *db {
	t.Helper()
	st, err := Open(context.Background(), filepath.Join(t.TempDir(), "gantry.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st.(*db)
}
