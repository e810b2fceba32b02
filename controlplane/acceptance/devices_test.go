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

func (w *world) deviceClient(key string) gantryv1connect.DeviceServiceClient {
	return gantryv1connect.NewDeviceServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor(key).Token))
}

func runDeviceRow(t *testing.T, w *world, r rule) error {
	t.Helper()
	switch r.Action {
	case "create enrollment token":
		resp, err := w.deviceClient(r.Actor).CreateEnrollmentToken(context.Background(), connect.NewRequest(&gantryv1.CreateEnrollmentTokenRequest{DeviceId: w.id("D1")}))
		if err == nil && (!strings.HasPrefix(resp.Msg.Token, "gantry-enroll-") || !strings.Contains(resp.Msg.Command, resp.Msg.Token)) {
			t.Errorf("row %s: token %q / command %q", r.ID, resp.Msg.Token, resp.Msg.Command)
		}
		return err
	}
	t.Fatalf("row %s: no driver for device action %q", r.ID, r.Action)
	return nil
}

// TestDeviceVisibility: providers see their devices within scope;
// operators see the devices on their own assets, read-only; nobody else.
func TestDeviceVisibility(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		ctx := context.Background()
		names := func(key string) (string, error) {
			resp, err := w.deviceClient(key).ListDevices(ctx, connect.NewRequest(&gantryv1.ListDevicesRequest{}))
			if err != nil {
				return "", err
			}
			var ns []string
			for _, d := range resp.Msg.Devices {
				ns = append(ns, d.Name)
			}
			return strings.Join(ns, ","), nil
		}
		for _, tc := range []struct{ who, want string }{
			{"P1/ST", "D1,D3,DB1"},
			{"P1/1LS", "D1,D3,DB1"},
			{"P1/ST-C2", "DB1"},
			{"O1/MO", "D1,D3"},
			{"O1/ME-F1", "D1"},
			{"O2/MO", "DB1"},
			{"P2/ST", ""},
		} {
			got, err := names(tc.who)
			if err != nil || got != tc.want {
				t.Errorf("%s sees %q (%v), want %q", tc.who, got, err, tc.want)
			}
		}
		if _, err := names("O1/admin"); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("operator admin lists devices: %v, want denied", err)
		}
		// Operators cannot manage devices, other providers cannot see them.
		if _, err := w.deviceClient("O1/WM").CreateEnrollmentToken(ctx, connect.NewRequest(&gantryv1.CreateEnrollmentTokenRequest{DeviceId: w.id("D1")})); err == nil {
			t.Errorf("operator created an enrollment token")
		}
		if _, err := w.deviceClient("P2/ST").GetDevice(ctx, connect.NewRequest(&gantryv1.GetDeviceRequest{Id: w.id("D1")})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("foreign provider reads D1: %v", err)
		}
		if _, err := w.deviceClient("P1/ST-C2").CreateEnrollmentToken(ctx, connect.NewRequest(&gantryv1.CreateEnrollmentTokenRequest{DeviceId: w.id("D1")})); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("out-of-scope technician created a token: %v", err)
		}
		// Registration and linking.
		st := w.deviceClient("P1/ST")
		d, err := st.CreateDevice(ctx, connect.NewRequest(&gantryv1.CreateDeviceRequest{Name: "GW new", SerialNumber: "SN-NEW"}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateDevice(ctx, connect.NewRequest(&gantryv1.CreateDeviceRequest{Name: "GW dup", SerialNumber: "SN-NEW"})); connect.CodeOf(err) != connect.CodeAlreadyExists {
			t.Errorf("duplicate serial: %v", err)
		}
		if _, err := st.CreateDevice(ctx, connect.NewRequest(&gantryv1.CreateDeviceRequest{Name: "GW", SerialNumber: ""})); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("empty serial: %v", err)
		}
		l, err := st.LinkDevice(ctx, connect.NewRequest(&gantryv1.LinkDeviceRequest{Id: d.Msg.Device.Id, CustomerMachineId: w.id("CM-A1")}))
		if err != nil || l.Msg.Device.AssetId != w.id("A1") {
			t.Fatalf("link: %v %v", l, err)
		}
		if _, err := st.CreateEnrollmentToken(ctx, connect.NewRequest(&gantryv1.CreateEnrollmentTokenRequest{DeviceId: d.Msg.Device.Id, TtlSeconds: 5})); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("too-short ttl: %v", err)
		}
	})
}

// TestBrowseDeviceAuthorization: only providers with Machine Models or
// Edge Devices = manage may have a device browse a machine; other tenants
// do not even learn the device exists. (Refusals happen before any
// command is sent, so no agent runs here; testbed/e2e browses for real.)
func TestBrowseDeviceAuthorization(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		ctx := context.Background()
		for who, want := range map[string]connect.Code{
			"P2/ST":  connect.CodeNotFound,         // another provider
			"O1/ME":  connect.CodePermissionDenied, // operators never browse
			"O1/MO":  connect.CodePermissionDenied,
			"P1/1LS": connect.CodePermissionDenied, // Edge Devices read, Machine Models read
			"P1/MDM": connect.CodeFailedPrecondition,
			"P1/ST":  connect.CodeFailedPrecondition, // allowed; D1 has no agent here
			"P1/CDM": connect.CodeFailedPrecondition, // Edge Devices manage
		} {
			_, err := w.deviceClient(who).BrowseDevice(ctx, connect.NewRequest(&gantryv1.BrowseDeviceRequest{DeviceId: w.id("D1"), TimeoutSeconds: 1}))
			if connect.CodeOf(err) != want {
				t.Errorf("%s browses D1: %v, want %v", who, err, want)
			}
		}
		if _, err := w.deviceClient("P1/ST").BrowseDevice(ctx, connect.NewRequest(&gantryv1.BrowseDeviceRequest{DeviceId: w.id("D1"), MaxDepth: 11})); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("max_depth 11: %v", err)
		}
	})
}
