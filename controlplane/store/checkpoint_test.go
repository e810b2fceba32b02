package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/controlplane/store"
)

// TestSQLiteBackgroundCheckpoint: transactions do not copy the WAL back
// into the database file themselves (wal_autocheckpoint is off, so the
// telemetry writer never pays for it); the store's background
// checkpointer does, within a second or so of the writes.
func TestSQLiteBackgroundCheckpoint(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "gantry.db")
	st, err := store.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	time.Sleep(time.Second) // the migrations' pages are checkpointed
	before := size(path)
	var batches []store.SampleBatch
	for d := range 2000 {
		var ss []store.Sample
		for p := range 20 {
			ss = append(ss, store.Sample{Point: fmt.Sprintf("point-%d", p), Value: float64(d*p) + 0.5, At: time.Now()})
		}
		batches = append(batches, store.SampleBatch{DeviceID: fmt.Sprintf("device-%04d", d), Samples: ss})
	}
	if err := st.StoreSampleBatches(ctx, batches); err != nil {
		t.Fatal(err)
	}
	wal := size(path + "-wal")
	if wal < 1<<20 {
		t.Fatalf("WAL holds %d bytes after writing 2,000 devices' values; want the pages in the WAL first", wal)
	}
	deadline := time.Now().Add(5 * time.Second)
	for size(path)-before < wal/4 {
		if time.Now().After(deadline) {
			t.Fatalf("database file grew by %d bytes in 5 s with %d bytes in the WAL: no checkpoint ran", size(path)-before, wal)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
