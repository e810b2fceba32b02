package store_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
)

// TestDeviceCertRevocation: re-enrollment (a new serial) revokes the
// previous one, the same serial again revokes nothing, and the current
// serials are listed.
func TestDeviceCertRevocation(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		s := newStore(t)
		ten, _ := newTenant(t, s, "certs")
		a, err := s.CreateDevice(ctx, store.EdgeDevice{TenantID: ten.ID, Name: "a", SerialNumber: "A"})
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.CreateDevice(ctx, store.EdgeDevice{TenantID: ten.ID, Name: "b", SerialNumber: "B"})
		if err != nil {
			t.Fatal(err)
		}
		for _, step := range []struct{ id, serial string }{{a.ID, "a1"}, {a.ID, "a1"}, {b.ID, "b1"}, {a.ID, "a2"}, {a.ID, "a3"}} {
			if err := s.SetDeviceCert(ctx, step.id, step.serial, "1.0"); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.SetDeviceCert(ctx, "no-such-device", "x", ""); err == nil {
			t.Error("SetDeviceCert of an unknown device succeeded")
		}
		cur, err := s.ListDeviceCerts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(map[string]string{a.ID: "a3", b.ID: "b1"}, cur); diff != "" {
			t.Errorf("current certs (-want +got):\n%s", diff)
		}
		rev, err := s.ListRevokedCerts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rev {
			if r.DeviceID != a.ID || r.RevokedAt.IsZero() {
				t.Errorf("revoked %+v: want device %s and a time", r, a.ID)
			}
			got = append(got, r.Serial)
		}
		if len(got) == 2 && got[0] > got[1] { // same microsecond: ordered by serial anyway
			got[0], got[1] = got[1], got[0]
		}
		if diff := cmp.Diff([]string{"a1", "a2"}, got); diff != "" {
			t.Errorf("revoked serials (-want +got):\n%s", diff)
		}
	})
}

// TestSetDevicesOnline: one transaction applies the states in order (the
// last entry of a device wins) and counts unknown devices.
func TestSetDevicesOnline(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		s := newStore(t)
		ten, _ := newTenant(t, s, "presence")
		a, _ := s.CreateDevice(ctx, store.EdgeDevice{TenantID: ten.ID, Name: "a", SerialNumber: "A"})
		b, _ := s.CreateDevice(ctx, store.EdgeDevice{TenantID: ten.ID, Name: "b", SerialNumber: "B"})
		t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
		unknown, err := s.SetDevicesOnline(ctx, []store.DeviceOnline{
			{ID: a.ID, Online: true, At: t0},
			{ID: b.ID, Online: true, At: t0},
			{ID: "ghost", Online: true, At: t0},
			{ID: a.ID, Online: false, At: t0.Add(time.Second)},
		})
		if err != nil || unknown != 1 {
			t.Fatalf("SetDevicesOnline = %d, %v; want 1 unknown", unknown, err)
		}
		for _, want := range []struct {
			id     string
			online bool
			at     time.Time
		}{{a.ID, false, t0.Add(time.Second)}, {b.ID, true, t0}} {
			d, err := s.GetDevice(ctx, want.id)
			if err != nil {
				t.Fatal(err)
			}
			if d.Online != want.online || !d.LastSeen.Equal(want.at) {
				t.Errorf("device %s: online %v at %v, want %v at %v", d.Name, d.Online, d.LastSeen, want.online, want.at)
			}
		}
	})
}
