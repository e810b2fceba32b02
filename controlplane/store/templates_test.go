package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
)

// TestDeviceTemplates: versions count different templates per device, a
// resend keeps the version (and an applied state), acks for other
// versions are ignored, and devices are found by their machine's model or,
// without one, their asset's.
func TestDeviceTemplates(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		s := newStore(t)
		ten, _ := newTenant(t, s, "tpl")
		dev, err := s.CreateDevice(ctx, store.EdgeDevice{TenantID: ten.ID, Name: "gw", SerialNumber: "GW"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetDeviceTemplate(ctx, dev.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("nothing sent yet: %v", err)
		}
		at := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
		v1, err := s.RecordTemplateSent(ctx, dev.ID, "h1", "m1", at)
		if err != nil || v1.Version != 1 || v1.State != store.TemplatePending {
			t.Fatalf("first send: %+v, %v", v1, err)
		}
		if ok, err := s.RecordTemplateAck(ctx, dev.ID, 1, true, "", at.Add(time.Second)); !ok || err != nil {
			t.Fatalf("ack v1: %v %v", ok, err)
		}
		again, _ := s.RecordTemplateSent(ctx, dev.ID, "h1", "m1", at.Add(2*time.Second))
		if again.Version != 1 || again.State != store.TemplateApplied || again.AppliedVersion != 1 {
			t.Errorf("resend of the applied template: %+v", again)
		}
		v2, _ := s.RecordTemplateSent(ctx, dev.ID, "h2", "m1", at.Add(3*time.Second))
		if v2.Version != 2 || v2.State != store.TemplatePending || v2.AppliedVersion != 1 || v2.AppliedHash != "h1" {
			t.Errorf("new template: %+v", v2)
		}
		if ok, _ := s.RecordTemplateAck(ctx, dev.ID, 1, false, "late", at); ok {
			t.Error("ack of an older version recorded")
		}
		if ok, _ := s.RecordTemplateAck(ctx, dev.ID, 2, false, "template v2 is invalid: x", at.Add(4*time.Second)); !ok {
			t.Error("error ack of v2 not recorded")
		}
		got, err := s.GetDeviceTemplate(ctx, dev.ID)
		if err != nil || got.State != store.TemplateError || got.Error != "template v2 is invalid: x" || got.AppliedVersion != 1 || got.Version != 2 ||
			!got.SentAt.Equal(at.Add(3*time.Second)) || !got.AckedAt.Equal(at.Add(4*time.Second)) {
			t.Errorf("after the error ack: %+v, %v", got, err)
		}

		// Devices of a model: through the machine's model, or the asset's
		// when the machine names none.
		org, _ := s.CreateServiceOrg(ctx, store.ServiceOrg{TenantID: ten.ID, Name: "org"})
		cu, _ := s.CreateCustomer(ctx, store.Customer{TenantID: ten.ID, ServiceOrgID: org.ID, Name: "c"})
		fa, _ := s.CreateFacility(ctx, store.Facility{TenantID: ten.ID, Name: "f"})
		withModel, _ := s.CreateCustomerMachine(ctx, store.CustomerMachine{TenantID: ten.ID, CustomerID: cu.ID, Name: "m1", MachineModelID: "model-a"})
		as, _ := s.CreateAsset(ctx, store.Asset{TenantID: ten.ID, FacilityID: fa.ID, Name: "a", MachineModelID: "model-b"})
		viaAsset, err := s.CreateCustomerMachine(ctx, store.CustomerMachine{TenantID: ten.ID, CustomerID: cu.ID, Name: "m2", AssetID: as.ID})
		if err != nil {
			t.Fatal(err)
		}
		dev2, _ := s.CreateDevice(ctx, store.EdgeDevice{TenantID: ten.ID, Name: "gw2", SerialNumber: "GW2"})
		if err := s.LinkDevice(ctx, dev.ID, withModel.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.LinkDevice(ctx, dev2.ID, viaAsset.ID); err != nil {
			t.Fatal(err)
		}
		for model, want := range map[string]string{"model-a": dev.ID, "model-b": dev2.ID} {
			ids, err := s.ListDevicesOfModel(ctx, model)
			if err != nil || len(ids) != 1 || ids[0] != want {
				t.Errorf("devices of %s: %v, %v; want [%s]", model, ids, err, want)
			}
		}
		if ids, _ := s.ListDevicesOfModel(ctx, "model-x"); len(ids) != 0 {
			t.Errorf("devices of an unused model: %v", ids)
		}
		for machine, want := range map[string]string{withModel.ID: dev.ID, viaAsset.ID: dev2.ID} {
			ids, err := s.ListDevicesOfMachine(ctx, machine)
			if err != nil || len(ids) != 1 || ids[0] != want {
				t.Errorf("devices of machine %s: %v, %v; want [%s]", machine, ids, err, want)
			}
		}
		if ids, _ := s.ListDevicesOfMachine(ctx, "machine-x"); len(ids) != 0 {
			t.Errorf("devices of an unknown machine: %v", ids)
		}
	})
}
