package acceptance

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

// TestNotificationVisibility: notifications are read like a device's
// latest values — providers in Edge Devices scope, operators on assets
// they may read — and operators never see another tenant's notifications,
// even of a device now linked to their asset.
func TestNotificationVisibility(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		ctx := context.Background()
		o1, o2 := w.tenants["O1"].ID, w.tenants["O2"].ID
		at := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
		for i, n := range []struct{ point, tenant, asset, device string }{
			{"D1-own", o1, "A1", "D1"},
			{"D1-foreign", o2, "B1", "D1"}, // recorded while D1's machine was another tenant's
			{"D3-own", o1, "A3", "D3"},
			{"DB1-own", o2, "B1", "DB1"},
		} {
			if _, _, err := w.srv.Store.AddNotification(ctx, store.Notification{TenantID: n.tenant, AssetID: w.id(n.asset), DeviceID: w.id(n.device),
				Point: n.point, Kind: "threshold", Level: "alarm", FromLevel: "ok", Value: 90, Threshold: 80, At: at.Add(time.Duration(i) * time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
		list := func(who, device string) (string, error) {
			c := gantryv1connect.NewNotificationServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor(who).Token))
			resp, err := c.ListNotifications(ctx, connect.NewRequest(&gantryv1.ListNotificationsRequest{DeviceId: w.id(device)}))
			if err != nil {
				return "", err
			}
			var ps []string
			for _, n := range resp.Msg.Notifications {
				ps = append(ps, n.Point)
			}
			return strings.Join(ps, ","), nil
		}
		for _, tc := range []struct {
			who, device, want string
			code              connect.Code
		}{
			{"P1/ST", "D1", "D1-foreign,D1-own", 0}, // the provider's own device: all of it, newest first
			{"P1/ST", "DB1", "DB1-own", 0},
			{"P1/ST-C2", "DB1", "DB1-own", 0},
			{"P1/ST-C2", "D1", "", connect.CodePermissionDenied},
			{"P2/ST", "D1", "", connect.CodeNotFound},
			{"O1/MO", "D1", "D1-own", 0},
			{"O1/MO", "D3", "D3-own", 0},
			{"O1/ME-F1", "D1", "D1-own", 0},
			{"O1/ME-F1", "D3", "", connect.CodeNotFound},
			{"O1/MO", "DB1", "", connect.CodeNotFound},
			{"O2/MO", "DB1", "DB1-own", 0},
			{"O2/MO", "D1", "", connect.CodeNotFound},
			{"O1/admin", "D1", "", connect.CodePermissionDenied},
		} {
			got, err := list(tc.who, tc.device)
			if connect.CodeOf(err) != tc.code && !(tc.code == 0 && err == nil) || got != tc.want {
				t.Errorf("%s lists %s: %q (%v), want %q (code %v)", tc.who, tc.device, got, err, tc.want, tc.code)
			}
		}
		c := gantryv1connect.NewNotificationServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor("P1/ST").Token))
		if _, err := c.ListNotifications(ctx, connect.NewRequest(&gantryv1.ListNotificationsRequest{DeviceId: w.id("D1"), Limit: 5000})); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("limit 5000: %v", err)
		}
		resp, err := c.ListNotifications(ctx, connect.NewRequest(&gantryv1.ListNotificationsRequest{DeviceId: w.id("D1"), Limit: 1}))
		if err != nil || len(resp.Msg.Notifications) != 1 {
			t.Fatalf("limit 1: %v %v", resp, err)
		}
		n := resp.Msg.Notifications[0]
		if n.AssetId != w.id("B1") || n.Level != "alarm" || n.FromLevel != "ok" || n.Value != 90 || n.Threshold != 80 || !n.At.AsTime().Equal(at.Add(time.Minute)) || n.Id == "" || n.CreatedAt == nil {
			t.Errorf("notification %v", n)
		}
	})
}

// TestMachineModelRulesRoundTrip: the edge-rules fields of a data point
// survive UpdateMachineModel → GetMachineModel.
func TestMachineModelRulesRoundTrip(t *testing.T) {
	w := newWorld(t, storetest.SQLite(t))
	ctx := context.Background()
	mc := gantryv1connect.NewMachineModelServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor("P1/MDM").Token))
	f := func(v float64) *float64 { return &v }
	want := &gantryv1.OpcuaTemplate{EndpointUrl: "opc.tcp://10.0.0.5:4840", SecurityMode: "None", DataPoints: []*gantryv1.DataPoint{
		{NodeId: "ns=2;s=Temp", Name: "temp", Unit: "°C", WarnAbove: f(60), AlarmAbove: f(80), WarnBelow: f(5), AlarmBelow: f(1), Hysteresis: 2, DelayMs: 1500, OpenCaseOnAlarm: true},
		{NodeId: "ns=2;s=Run", Name: "running", Role: "running"},
		{NodeId: "ns=2;s=Energy", Name: "energy", Unit: "kWh", Role: "energy_kwh"},
	}}
	if _, err := mc.UpdateMachineModel(ctx, connect.NewRequest(&gantryv1.UpdateMachineModelRequest{Model: &gantryv1.MachineModel{Id: w.id("M1"), Name: "M1", Opcua: want}})); err != nil {
		t.Fatal(err)
	}
	got, err := mc.GetMachineModel(ctx, connect.NewRequest(&gantryv1.GetMachineModelRequest{Id: w.id("M1")}))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got.Msg.Model.Opcua, protocmp.Transform()); diff != "" {
		t.Errorf("template (-want +got):\n%s", diff)
	}
}
