package presence_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/presence"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
)

type countingStore struct {
	store.Store
	txs    atomic.Int64
	states atomic.Int64
}

func (s *countingStore) SetDevicesOnline(ctx context.Context, st []store.DeviceOnline) (int, error) {
	s.txs.Add(1)
	s.states.Add(int64(len(st)))
	return s.Store.SetDevicesOnline(ctx, st)
}

func devices(t testing.TB, st store.Store, n int) []string {
	t.Helper()
	ctx := context.Background()
	ten, _, err := st.CreateTenantWithAdmin(ctx, store.Tenant{Name: "p", Kind: authz.KindOperator, TenantRoles: []authz.TenantRole{authz.OperatorInternalService}},
		store.User{Email: "p@x.example", DisplayName: "P", PasswordHash: "h"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range n {
		d, err := st.CreateDevice(ctx, store.EdgeDevice{TenantID: ten.ID, Name: "d", SerialNumber: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	return ids
}

func online(t testing.TB, st store.Store, id string) bool {
	t.Helper()
	d, err := st.GetDevice(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d.Online
}

// TestWriterCoalesces: states of many devices noted concurrently land in
// few transactions; the last state per device wins; a stale "online"
// (older than the "offline" already noted or written) never overtakes it;
// Close writes what is pending.
func TestWriterCoalesces(t *testing.T) {
	ctx := context.Background()
	base := storetest.SQLite(t)
	st := &countingStore{Store: base}
	ids := devices(t, base, 200)
	w := presence.New(st, 50*time.Millisecond, nil, nil)
	go w.Run(ctx)
	t0 := time.Now()
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			w.Set(id, true, t0.Add(time.Duration(i)))
			w.Set(id, i%2 == 0, t0.Add(time.Duration(i)+time.Microsecond)) // odd devices go offline again
		})
	}
	wg.Wait()
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if got := online(t, base, id); got != (i%2 == 0) {
			t.Fatalf("device %d online = %v, want %v", i, got, i%2 == 0)
		}
	}
	if n := st.txs.Load(); n > 10 {
		t.Errorf("%d transactions for 400 states of 200 devices, want a few", n)
	}
	if n := st.states.Load(); n != 200 {
		t.Errorf("%d rows written, want 200 (one per device)", n)
	}
	// LWT "offline" at t2, then a late "online" from the earlier
	// connection (t1 < t2): dropped, in the same interval and after a write.
	id := ids[0]
	t1, t2 := time.Now(), time.Now().Add(time.Millisecond)
	w.Set(id, false, t2)
	w.Set(id, true, t1)
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	w.Set(id, true, t1)
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if online(t, base, id) {
		t.Error("stale online overtook the offline")
	}
	// Close writes what is pending.
	w.Set(id, true, time.Now())
	w.Close()
	if !online(t, base, id) {
		t.Error("state noted before Close not written")
	}
}

// BenchmarkOnlineWrites compares recording connect states with one store
// write each (as before) and coalesced (one transaction per interval),
// in one run, on SQLite.
func BenchmarkOnlineWrites(b *testing.B) {
	ctx := context.Background()
	st := storetest.SQLite(b)
	ids := devices(b, st, 1000)
	b.Run("direct", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if err := st.SetDeviceOnline(ctx, ids[i%len(ids)], true, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("coalesced", func(b *testing.B) {
		w := presence.New(st, presence.DefaultInterval, nil, nil)
		go w.Run(ctx)
		for i := 0; b.Loop(); i++ {
			w.Set(ids[i%len(ids)], true, time.Now())
		}
		w.Close()
	})
}
