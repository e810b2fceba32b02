package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gantry-iot/gantry/agent/config"
	"github.com/gantry-iot/gantry/agent/queue"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/testbed/opcuasim"
)

func testTemplate(endpoint string, nodes ...string) machinemodel.OPCUA {
	t := machinemodel.OPCUA{EndpointURL: endpoint, SecurityMode: "None"}
	for _, n := range nodes {
		t.DataPoints = append(t.DataPoints, machinemodel.DataPoint{NodeID: n, Name: strings.TrimPrefix(n, "ns=2;s="), SamplingIntervalMS: 100})
	}
	return t
}

func deliver(version uint64, tpl machinemodel.OPCUA) *gantryv1.DeviceTemplate {
	return &gantryv1.DeviceTemplate{Version: version, Hash: tpl.Hash(), Opcua: tpl.ToPB(), MachineModelId: "m-1"}
}

// TestTemplateFromCommand: a delivered template is validated and its hash
// checked; every refusal says what is wrong.
func TestTemplateFromCommand(t *testing.T) {
	good := testTemplate("opc.tcp://127.0.0.1:4840", "ns=2;s=cnc1.SpindleSpeed")
	st, err := templateFromCommand(deliver(3, good))
	if err != nil || st.Version != 3 || st.Hash != good.Hash() || st.MachineModelID != "m-1" || len(st.OPCUA.DataPoints) != 1 {
		t.Fatalf("good template: %+v, %v", st, err)
	}
	bad := testTemplate("opc.tcp://127.0.0.1:4840", "not-a-node")
	badHash := deliver(4, good)
	badHash.Hash = strings.Repeat("0", 64)
	noVersion := deliver(0, good)
	tampered := deliver(5, good)
	tampered.Opcua.DataPoints[0].NodeId = "ns=2;s=cnc1.Temperature" // content changed, hash not
	for name, tc := range map[string]struct {
		in   *gantryv1.DeviceTemplate
		want string
	}{
		"invalid node":  {deliver(4, bad), "template v4 is invalid: opcua.data_points[0].node_id"},
		"hash mismatch": {badHash, "does not match its content"},
		"content edit":  {tampered, "does not match its content"},
		"no version":    {noVersion, "has no version"},
	} {
		if _, err := templateFromCommand(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want it to contain %q", name, err, tc.want)
		}
	}
	// The empty template is valid: the device has none any more.
	if st, err := templateFromCommand(deliver(6, machinemodel.OPCUA{})); err != nil || !st.OPCUA.IsEmpty() {
		t.Errorf("empty template: %+v, %v", st, err)
	}
}

// TestMergeTemplate: a site endpoint named "machine" replaces the
// template's URL and mode; overrides change sampling and deadband or drop
// a point; an override of an unknown node is a note, not an error.
func TestMergeTemplate(t *testing.T) {
	tpl := testTemplate("opc.tcp://10.0.0.5:4840", "ns=2;s=a", "ns=2;s=b", "ns=2;s=c")
	site := config.OPCUA{
		Endpoints: []config.Endpoint{{Name: "other", URL: "opc.tcp://10.9.9.9:4840"}, {Name: TemplateEndpointName, URL: "opc.tcp://192.168.1.20:4840", SecurityMode: config.SecurityModeNone}},
		Overrides: []config.Override{
			{NodeID: "ns=2;s=a", SamplingInterval: 2 * time.Second},
			{NodeID: "ns=2;s=b", Deadband: &config.Deadband{Type: config.DeadbandPercent, Value: 5}},
			{NodeID: "ns=2;s=c", Disabled: true},
			{NodeID: "ns=2;s=gone", Disabled: true},
		},
	}
	got, notes, err := mergeTemplate(tpl, site)
	if err != nil {
		t.Fatal(err)
	}
	if got.EndpointURL != "opc.tcp://192.168.1.20:4840" || got.SecurityMode != "None" {
		t.Errorf("endpoint %s %s, want the site's", got.EndpointURL, got.SecurityMode)
	}
	if len(got.DataPoints) != 2 || got.DataPoints[0].SamplingIntervalMS != 2000 || got.DataPoints[1].DeadbandType != "percent" || got.DataPoints[1].DeadbandValue != 5 {
		t.Errorf("points %+v", got.DataPoints)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "ns=2;s=gone") {
		t.Errorf("notes %q, want one about ns=2;s=gone", notes)
	}
	if tpl.EndpointURL != "opc.tcp://10.0.0.5:4840" || len(tpl.DataPoints) != 3 || tpl.DataPoints[0].SamplingIntervalMS != 100 {
		t.Error("mergeTemplate changed its input")
	}
	// Without a "machine" endpoint the template's endpoint stays.
	got, _, _ = mergeTemplate(tpl, config.OPCUA{Endpoints: site.Endpoints[:1]})
	if got.EndpointURL != tpl.EndpointURL {
		t.Errorf("endpoint %s replaced by an endpoint of another name", got.EndpointURL)
	}
	// The empty template stays empty whatever the site says.
	if got, _, err := mergeTemplate(machinemodel.OPCUA{}, site); err != nil || !got.IsEmpty() {
		t.Errorf("empty template merged: %+v, %v", got, err)
	}
}

// TestTemplatePersistence: save writes 0600 atomically and load reads it
// back; a torn or edited file is a clear ErrCorruptTemplate; a leftover
// temp file (a save cut short) does not hide the complete file.
func TestTemplatePersistence(t *testing.T) {
	dir := t.TempDir()
	if st, err := loadTemplate(dir); st != nil || err != nil {
		t.Fatalf("no file: %v, %v", st, err)
	}
	tpl := testTemplate("opc.tcp://127.0.0.1:4840", "ns=2;s=a")
	want := storedTemplate{Format: storedTemplateFormat, Version: 7, Hash: tpl.Hash(), MachineModelID: "m-1", ReceivedAt: time.Now().UTC().Truncate(time.Second), OPCUA: tpl}
	if err := saveTemplate(dir, want); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, TemplateFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v (%v), want 0600", fi.Mode(), err)
	}
	got, err := loadTemplate(dir)
	if err != nil || got.Version != 7 || got.Hash != want.Hash || got.OPCUA.DataPoints[0].NodeID != "ns=2;s=a" || !got.ReceivedAt.Equal(want.ReceivedAt) {
		t.Fatalf("loaded %+v, %v", got, err)
	}
	// A save that died before its rename leaves path.tmp: ignored, removed.
	if err := os.WriteFile(path+".tmp", []byte(`{"format":1,"vers`), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := loadTemplate(dir); err != nil || got.Version != 7 {
		t.Fatalf("with a leftover temp file: %+v, %v", got, err)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover temp file not removed: %v", err)
	}
	full, _ := os.ReadFile(path)
	for name, content := range map[string]string{
		"torn":          string(full[:len(full)/2]),
		"empty":         "",
		"edited":        strings.Replace(string(full), "ns=2;s=a", "ns=2;s=b", 1),
		"other format":  strings.Replace(string(full), `"format": 1`, `"format": 9`, 1),
		"trailing data": string(full) + "{}",
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadTemplate(dir)
		if !errors.Is(err, ErrCorruptTemplate) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "reload_config") {
			t.Errorf("%s file: %v, want ErrCorruptTemplate naming the file and the remedy", name, err)
		}
	}
}

func startSim(t *testing.T) *opcuasim.Sim {
	t.Helper()
	sim, err := opcuasim.New(opcuasim.Config{Profiles: []opcuasim.Profile{{Name: "cnc1", Kind: "cnc"}}, Interval: opcuasim.Duration(100 * time.Millisecond)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Stop() })
	return sim
}

// pointsQueued reads queue records until one carries point (or times out).
func pointsQueued(t *testing.T, q *queue.Queue, point string, within time.Duration) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	for {
		rec, err := q.Next(ctx)
		if err != nil {
			return false
		}
		_ = q.Ack(rec.Seq)
		var r gantryv1.QueuedRecord
		if proto.Unmarshal(rec.Payload, &r) != nil {
			continue
		}
		for _, s := range r.Samples {
			if s.Point == point {
				return true
			}
		}
	}
}

// TestCollectionApply runs delivered templates against the OPC-UA
// simulator: a good one is persisted and collected; an invalid one, a
// resend and one that cannot be persisted leave the running template in
// place (data keeps flowing); the empty template stops collection; a new
// collection starts from the persisted template; a --opcua-template pins.
func TestCollectionApply(t *testing.T) {
	sim := startSim(t)
	ns := sim.Namespace()
	node := func(v string) string { return opcuasim.NodeID(ns, "cnc1", v) }
	dir := t.TempDir()
	q, err := queue.Open(filepath.Join(dir, "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	cfg := config.Default()
	cfg.StateDir = dir
	status := &statusPage{}
	logger := slog.New(slog.DiscardHandler)
	c := newCollection(t.Context(), cfg, "dev-1", q, status, logger)
	if err := c.start(nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.template(); ok {
		t.Fatal("collecting without any template")
	}
	if err := c.restart(); err == nil {
		t.Error("restart_collector without a template succeeded")
	}

	v1 := machinemodel.OPCUA{EndpointURL: sim.Endpoint(), SecurityMode: "None", DataPoints: []machinemodel.DataPoint{{NodeID: node("SpindleSpeed"), Name: "spindle", SamplingIntervalMS: 100}}}
	if err := c.apply(deliver(1, v1)); err != nil {
		t.Fatal(err)
	}
	if !pointsQueued(t, q, "spindle", 10*time.Second) {
		t.Fatal("no spindle values after template v1")
	}
	if st, err := loadTemplate(dir); err != nil || st.Version != 1 {
		t.Fatalf("persisted: %+v, %v", st, err)
	}
	// Invalid: refused, v1 still runs.
	bad := v1
	bad.DataPoints = append([]machinemodel.DataPoint{}, v1.DataPoints...)
	bad.DataPoints = append(bad.DataPoints, machinemodel.DataPoint{NodeID: "ns=2;x=1", Name: "bad"})
	if err := c.apply(deliver(2, bad)); err == nil || !strings.Contains(err.Error(), "template v2 is invalid") {
		t.Fatalf("invalid template: %v", err)
	}
	if ts := status.template.Load(); ts == nil || ts.Version != 1 || !strings.Contains(ts.Error, "v2 is invalid") {
		t.Errorf("status after refusal: %+v", ts)
	}
	if !pointsQueued(t, q, "spindle", 5*time.Second) {
		t.Fatal("v1 stopped after an invalid template was refused")
	}
	if st, _ := loadTemplate(dir); st.Version != 1 {
		t.Errorf("refused template persisted: v%d", st.Version)
	}
	// A resend of the running version is acknowledged without a restart.
	if err := c.apply(deliver(1, v1)); err != nil {
		t.Errorf("resend of v1: %v", err)
	}
	// A template the site config cannot serve (its login's password file is
	// missing) is refused before anything is persisted.
	cfgBadLogin := cfg
	cfgBadLogin.OPCUA.Endpoints = []config.Endpoint{{Name: "plc", URL: "opc.tcp://127.0.0.1:1", Auth: config.Auth{Type: config.AuthUsername, Username: "u", PasswordFile: filepath.Join(dir, "missing")}}}
	c.cfg = cfgBadLogin
	badLogin := machinemodel.OPCUA{EndpointURL: "opc.tcp://127.0.0.1:1", SecurityMode: "None", DataPoints: v1.DataPoints}
	if err := c.apply(deliver(3, badLogin)); err == nil || !strings.Contains(err.Error(), "password_file") {
		t.Fatalf("template with an unusable site login: %v", err)
	}
	c.cfg = cfg
	// Persisting fails (the temp file's name is taken by a directory, which
	// stops root too): refused, not applied, v1 keeps running.
	v2 := v1
	v2.DataPoints = append(append([]machinemodel.DataPoint{}, v1.DataPoints...), machinemodel.DataPoint{NodeID: node("Temperature"), Name: "temp", SamplingIntervalMS: 100})
	blocker := filepath.Join(dir, TemplateFile+".tmp")
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := c.apply(deliver(2, v2)); err == nil || !strings.Contains(err.Error(), "persist the OPC-UA template") {
		t.Fatalf("unwritable state dir: %v", err)
	}
	if tpl, _ := c.template(); len(tpl.DataPoints) != 1 {
		t.Errorf("template not persisted but applied: %d points", len(tpl.DataPoints))
	}
	if !pointsQueued(t, q, "spindle", 5*time.Second) {
		t.Fatal("v1 stopped after a template could not be persisted")
	}
	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}
	// v2 adds a point: both arrive.
	if err := c.apply(deliver(2, v2)); err != nil {
		t.Fatal(err)
	}
	if !pointsQueued(t, q, "temp", 10*time.Second) {
		t.Fatal("no temp values after template v2")
	}
	// The same content under another version number: recorded, the
	// running collector kept.
	running := status.collector.Load()
	if err := c.apply(deliver(9, v2)); err != nil {
		t.Fatal(err)
	}
	if status.collector.Load() != running {
		t.Error("same template under a new version restarted the collector")
	}
	if st, err := loadTemplate(dir); err != nil || st.Version != 9 {
		t.Errorf("persisted after a renumbering: %+v, %v", st, err)
	}
	if err := c.apply(deliver(2, v2)); err != nil { // back to the control plane's number
		t.Fatal(err)
	}
	if err := c.restart(); err != nil {
		t.Errorf("restart_collector: %v", err)
	}
	c.stop()

	// A new start (agent restart) runs the persisted v2.
	c2 := newCollection(t.Context(), cfg, "dev-1", q, status, logger)
	if err := c2.start(nil); err != nil {
		t.Fatal(err)
	}
	if tpl, ok := c2.template(); !ok || len(tpl.DataPoints) != 2 {
		t.Fatalf("after restart: %+v %v", tpl, ok)
	}
	if ts := status.template.Load(); ts.Source != sourcePersisted || ts.Version != 2 {
		t.Errorf("status after restart: %+v", ts)
	}
	if !pointsQueued(t, q, "temp", 10*time.Second) {
		t.Fatal("no values from the persisted template")
	}
	// The empty template stops collection and is persisted as such.
	if err := c2.apply(deliver(3, machinemodel.OPCUA{})); err != nil {
		t.Fatal(err)
	}
	if _, ok := c2.template(); ok || status.collector.Load() != nil {
		t.Error("still collecting after the empty template")
	}
	if st, err := loadTemplate(dir); err != nil || st.Version != 3 || !st.OPCUA.IsEmpty() {
		t.Errorf("persisted after unlink: %+v, %v", st, err)
	}
	c2.stop()

	// A corrupt persisted file: the agent starts without a template and
	// says why.
	if err := os.WriteFile(filepath.Join(dir, TemplateFile), []byte(`{"format":1,"version":4,"ha`), 0o600); err != nil {
		t.Fatal(err)
	}
	c3 := newCollection(t.Context(), cfg, "dev-1", q, status, logger)
	if err := c3.start(nil); err != nil {
		t.Fatal(err)
	}
	if ts := status.template.Load(); !strings.Contains(ts.Error, "corrupt") {
		t.Errorf("status with a corrupt file: %+v", ts)
	}
	// A delivered template replaces it.
	if err := c3.apply(deliver(4, v1)); err != nil {
		t.Fatal(err)
	}
	c3.stop()

	// --opcua-template pins: delivered templates are refused.
	c4 := newCollection(t.Context(), cfg, "dev-1", q, status, logger)
	if err := c4.start(&v2); err != nil {
		t.Fatal(err)
	}
	if err := c4.apply(deliver(5, v1)); err == nil || !strings.Contains(err.Error(), "--opcua-template") {
		t.Errorf("pinned agent accepted a template: %v", err)
	}
	if tpl, _ := c4.template(); len(tpl.DataPoints) != 2 {
		t.Errorf("pinned template replaced: %+v", tpl)
	}
	c4.stop()
}
