package store_test

import (
	"errors"
	"testing"

	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
)

// TestUpdateFacilityAndAsset: renames and moves stay inside the tenant,
// names stay unique per tenant, and unknown rows are ErrNotFound.
func TestUpdateFacilityAndAsset(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		s := newStore(t)
		ten, _ := newTenant(t, s, "nord")
		other, _ := newTenant(t, s, "sud")
		mk := func(tenantID, name string) store.Facility {
			t.Helper()
			f, err := s.CreateFacility(ctx, store.Facility{TenantID: tenantID, Name: name})
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
		h1, h2, foreign := mk(ten.ID, "Hall 1"), mk(ten.ID, "Hall 2"), mk(other.ID, "Bottling")

		if err := s.UpdateFacility(ctx, store.Facility{ID: h1.ID, TenantID: ten.ID, Name: "Hall 1 North"}); err != nil {
			t.Fatal(err)
		}
		if f, _ := s.GetFacility(ctx, h1.ID); f.Name != "Hall 1 North" {
			t.Errorf("renamed facility: %q", f.Name)
		}
		if err := s.UpdateFacility(ctx, store.Facility{ID: h1.ID, TenantID: ten.ID, Name: "Hall 2"}); !errors.Is(err, store.ErrConflict) {
			t.Errorf("duplicate name: %v, want ErrConflict", err)
		}
		if err := s.UpdateFacility(ctx, store.Facility{ID: foreign.ID, TenantID: ten.ID, Name: "Stolen"}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("other tenant's facility: %v, want ErrNotFound", err)
		}
		if f, _ := s.GetFacility(ctx, foreign.ID); f.Name != "Bottling" {
			t.Errorf("other tenant's facility changed to %q", f.Name)
		}

		a, err := s.CreateAsset(ctx, store.Asset{TenantID: ten.ID, FacilityID: h1.ID, Name: "Press 1", SerialNumber: "P-1"})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.UpdateAsset(ctx, store.Asset{ID: a.ID, TenantID: ten.ID, FacilityID: h2.ID, Name: "Press 1b", SerialNumber: "P-1B"}); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetAsset(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != "Press 1b" || got.SerialNumber != "P-1B" || got.FacilityID != h2.ID || got.TenantID != ten.ID {
			t.Errorf("updated asset: %+v", got)
		}
		// Moving into another tenant's facility is refused and changes nothing.
		if err := s.UpdateAsset(ctx, store.Asset{ID: a.ID, TenantID: ten.ID, FacilityID: foreign.ID, Name: "Moved"}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("move to other tenant's facility: %v, want ErrNotFound", err)
		}
		if err := s.UpdateAsset(ctx, store.Asset{ID: a.ID, TenantID: other.ID, FacilityID: foreign.ID, Name: "Moved"}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("update through other tenant: %v, want ErrNotFound", err)
		}
		if got2, _ := s.GetAsset(ctx, a.ID); got2 != got {
			t.Errorf("refused updates changed the asset: %+v", got2)
		}
	})
}
