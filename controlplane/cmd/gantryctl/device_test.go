package main

import (
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// TestWriteDevice: `devices get` shows the template's model, version,
// short hash, delivery state with its times, what the agent still runs
// and the agent's error.
func TestWriteDevice(t *testing.T) {
	sent := time.Date(2026, 12, 2, 9, 30, 0, 0, time.UTC)
	acked := sent.Add(2 * time.Second)
	at := func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") }
	hash := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	dev := func(tpl *gantryv1.TemplateStatus) *gantryv1.EdgeDevice {
		return &gantryv1.EdgeDevice{Id: "d1", Name: "Gateway", SerialNumber: "GW1", Online: true, CustomerMachineId: "m1", Template: tpl}
	}
	for _, tc := range []struct {
		name      string
		dev       *gantryv1.EdgeDevice
		want, not []string
	}{
		{name: "applied",
			dev: dev(&gantryv1.TemplateStatus{Version: 3, Hash: hash, State: "applied", AppliedVersion: 3, MachineModelId: "mm1", MachineModelName: "CNC-5X",
				SentAt: timestamppb.New(sent), AckedAt: timestamppb.New(acked)}),
			want: []string{"TEMPLATE MODEL CNC-5X (mm1)", "TEMPLATE VERSION v3, hash 0123456789ab ¶",
				"TEMPLATE STATE applied: sent " + at(sent) + ", acked " + at(acked)},
			not: []string{"TEMPLATE ERROR", "TEMPLATE RUNNING", hash}},
		{name: "refused",
			dev: dev(&gantryv1.TemplateStatus{Version: 4, Hash: hash, State: "error", Error: "template v4 is invalid: data_points[0].node_id", AppliedVersion: 3,
				MachineModelId: "mm1", MachineModelName: "CNC-5X", SentAt: timestamppb.New(sent), AckedAt: timestamppb.New(acked)}),
			want: []string{"TEMPLATE STATE refused by the agent: sent " + at(sent) + ", answered " + at(acked),
				"TEMPLATE RUNNING v3", "TEMPLATE ERROR template v4 is invalid: data_points[0].node_id"}},
		{name: "pending",
			dev:  dev(&gantryv1.TemplateStatus{Version: 1, Hash: hash, State: "pending", MachineModelId: "mm1", SentAt: timestamppb.New(sent)}),
			want: []string{"TEMPLATE MODEL mm1 ¶", "TEMPLATE STATE pending: sent " + at(sent) + ", no answer yet", "TEMPLATE RUNNING none"}},
		{name: "unlinked",
			dev:  dev(&gantryv1.TemplateStatus{Version: 2, Hash: hash, State: "applied", AppliedVersion: 2, SentAt: timestamppb.New(sent), AckedAt: timestamppb.New(acked)}),
			want: []string{"TEMPLATE MODEL none (empty template: collection stopped)"}},
		{name: "never sent",
			dev:  dev(&gantryv1.TemplateStatus{State: "none"}),
			want: []string{"TEMPLATE none delivered yet"}, not: []string{"TEMPLATE MODEL"}},
		{name: "operator view", dev: dev(nil), want: []string{"SERIAL GW1", "ONLINE yes"}, not: []string{"TEMPLATE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
			writeDevice(w, tc.dev)
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			out := strings.Join(strings.Fields(strings.ReplaceAll(b.String(), "\n", " ¶ ")), " ") // columns as single spaces
			for _, s := range tc.want {
				if !strings.Contains(out, s) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tc.not {
				if strings.Contains(out, s) {
					t.Errorf("output has %q:\n%s", s, out)
				}
			}
		})
	}
}
