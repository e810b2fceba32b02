package acceptance

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

// TestShopfloorEdit: ShopfloorService.UpdateFacility and UpdateAsset need
// Digital Shopfloor = manage (at the asset and the target facility), stay
// inside the tenant and validate their input.
func TestShopfloorEdit(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		ctx := context.Background()
		client := func(actor string) gantryv1connect.ShopfloorServiceClient {
			return gantryv1connect.NewShopfloorServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor(actor).Token))
		}
		wm, me := client("O1/WM"), client("O1/ME")
		for _, tc := range []struct {
			name string
			call func() error
			code connect.Code
			msg  string
		}{
			{"reader renames", func() error {
				_, err := me.UpdateFacility(ctx, connect.NewRequest(&gantryv1.UpdateFacilityRequest{Id: w.id("F1"), Name: "X"}))
				return err
			}, connect.CodePermissionDenied, "Digital Shopfloor"},
			{"reader edits an asset", func() error {
				_, err := me.UpdateAsset(ctx, connect.NewRequest(&gantryv1.UpdateAssetRequest{Id: w.id("A2"), Name: "X"}))
				return err
			}, connect.CodePermissionDenied, "Digital Shopfloor"},
			{"other tenant's facility", func() error {
				_, err := wm.UpdateFacility(ctx, connect.NewRequest(&gantryv1.UpdateFacilityRequest{Id: w.id("FB"), Name: "X"}))
				return err
			}, connect.CodeNotFound, "facility"},
			{"other tenant's asset", func() error {
				_, err := wm.UpdateAsset(ctx, connect.NewRequest(&gantryv1.UpdateAssetRequest{Id: w.id("B1"), Name: "X"}))
				return err
			}, connect.CodeNotFound, "asset"},
			{"move into another tenant's facility", func() error {
				_, err := wm.UpdateAsset(ctx, connect.NewRequest(&gantryv1.UpdateAssetRequest{Id: w.id("A2"), FacilityId: w.id("FB"), Name: "A2"}))
				return err
			}, connect.CodeNotFound, "facility"},
			{"empty name", func() error {
				_, err := wm.UpdateFacility(ctx, connect.NewRequest(&gantryv1.UpdateFacilityRequest{Id: w.id("F1"), Name: " "}))
				return err
			}, connect.CodeInvalidArgument, "name"},
			{"name taken", func() error {
				_, err := wm.UpdateFacility(ctx, connect.NewRequest(&gantryv1.UpdateFacilityRequest{Id: w.id("F1"), Name: "F2"}))
				return err
			}, connect.CodeAlreadyExists, "already used"},
			{"serial too long", func() error {
				_, err := wm.UpdateAsset(ctx, connect.NewRequest(&gantryv1.UpdateAssetRequest{Id: w.id("A2"), Name: "A2", SerialNumber: strings.Repeat("9", 101)}))
				return err
			}, connect.CodeInvalidArgument, "serial_number"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := tc.call()
				if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("got %v, want %v containing %q", err, tc.code, tc.msg)
				}
			})
		}
		if _, err := wm.UpdateFacility(ctx, connect.NewRequest(&gantryv1.UpdateFacilityRequest{Id: w.id("F1"), Name: "Hall North"})); err != nil {
			t.Fatal(err)
		}
		res, err := wm.UpdateAsset(ctx, connect.NewRequest(&gantryv1.UpdateAssetRequest{Id: w.id("A2"), FacilityId: w.id("F2"), Name: "A2 moved", SerialNumber: "SN-2"}))
		if err != nil {
			t.Fatal(err)
		}
		if a := res.Msg.Asset; a.FacilityId != w.id("F2") || a.Name != "A2 moved" || a.SerialNumber != "SN-2" {
			t.Errorf("updated asset %v", a)
		}
		fs, err := wm.ListFacilities(ctx, connect.NewRequest(&gantryv1.ListFacilitiesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range fs.Msg.Facilities {
			names = append(names, f.Name)
		}
		if strings.Join(names, ",") != "F2,Hall North" {
			t.Errorf("facilities after rename: %v", names)
		}
		// The Maintenance Engineer scoped to F1 no longer sees A2 (moved to F2).
		as, err := client("O1/ME-F1").ListAssets(ctx, connect.NewRequest(&gantryv1.ListAssetsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as.Msg.Assets {
			if a.Id == w.id("A2") {
				t.Errorf("F1-scoped reader still sees the moved asset")
			}
		}
	})
}
