package portal_test

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/agent/agenttest"
	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/server"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// shopfloorIDs are the demo's Nordwerk and Sudhaus shop floor rows.
type shopfloorIDs struct {
	nord, sud              store.Tenant
	hall1, hall2, bottling store.Facility
	cnc1041, compressor    store.Asset
	sudAsset               store.Asset
}

func demoShopfloor(t *testing.T, srv *servertest.Server) shopfloorIDs {
	t.Helper()
	ctx := context.Background()
	var ids shopfloorIDs
	ts, err := srv.Store.ListTenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ten := range ts {
		switch ten.Name {
		case "Nordwerk Plant":
			ids.nord = ten
		case "Sudhaus Foods":
			ids.sud = ten
		}
	}
	for _, ten := range []store.Tenant{ids.nord, ids.sud} {
		fs, err := srv.Store.ListFacilities(ctx, ten.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			switch f.Name {
			case "Hall 1":
				ids.hall1 = f
			case "Hall 2":
				ids.hall2 = f
			case "Bottling":
				ids.bottling = f
			}
		}
		as, err := srv.Store.ListAssets(ctx, ten.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			switch a.Name {
			case "CNC-5X #1041":
				ids.cnc1041 = a
			case "Compressor K3":
				ids.compressor = a
			case "CNC-5X #2001":
				ids.sudAsset = a
			}
		}
	}
	if ids.hall1.ID == "" || ids.hall2.ID == "" || ids.bottling.ID == "" || ids.cnc1041.ID == "" || ids.compressor.ID == "" || ids.sudAsset.ID == "" {
		t.Fatalf("demo shop floor incomplete: %+v", ids)
	}
	return ids
}

// proposeMachine has Acme's Customer Data Manager propose a new machine to
// the operator tenant named operator, through the fleet service as the
// API does, and returns the pending proposal.
func proposeMachine(t *testing.T, srv *servertest.Server, operator, name, serial string) store.AssetProposal {
	t.Helper()
	ctx := context.Background()
	c, err := srv.Identity.CallerFor(ctx, user(t, srv, "cdm@acme.example").ID)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := srv.Fleet.ListCustomers(ctx, c, "")
	if err != nil {
		t.Fatal(err)
	}
	models, err := srv.Fleet.ListModels(ctx, c)
	if err != nil || len(models) == 0 {
		t.Fatalf("models: %v %v", models, err)
	}
	for _, cu := range cs {
		if cu.Name != operator {
			continue
		}
		m, err := srv.Fleet.CreateMachine(ctx, c, cu.ID, name, serial, models[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		p, err := srv.Fleet.ProposeAsset(ctx, c, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Fatalf("no customer %q", operator)
	return store.AssetProposal{}
}

func has(body, testid string) bool { return strings.Contains(body, `data-testid="`+testid+`"`) }

// TestShopfloorPagesFollowPermissions: the navigation entry and pages
// follow Digital Shopfloor; readers see disabled controls with a reason
// and their posts are refused; other roles and tenants get 403/404.
func TestShopfloorPagesFollowPermissions(t *testing.T) {
	srv := demo(t)
	ids := demoShopfloor(t, srv)
	prop := proposeMachine(t, srv, "Nordwerk Plant", "CNC-5X #1043", "1043")

	wm := newBrowser(t, srv.URL)
	wm.login("wm@nordwerk.example") // Workshop Manager: Digital Shopfloor = manage
	code, body := wm.get("/shopfloor")
	if code != 200 || !has(body, "nav-shopfloor") {
		t.Fatalf("Workshop Manager /shopfloor: %d", code)
	}
	for _, want := range []string{"Hall 1", "Hall 2", "CNC-5X #1041", "Compressor K3", "CNC-5X #1043", `data-testid="edit-asset"`, `data-testid="accept"`} {
		if !strings.Contains(body, want) {
			t.Errorf("Workshop Manager's shop floor lacks %s", want)
		}
	}
	if has(body, "readonly-reason") || has(body, "edit-asset-disabled") {
		t.Errorf("Workshop Manager sees read-only controls")
	}

	me := newBrowser(t, srv.URL)
	me.login("me@nordwerk.example") // Maintenance Engineer: Digital Shopfloor = read
	code, body = me.get("/shopfloor")
	if code != 200 || !has(body, "nav-shopfloor") || !strings.Contains(body, "CNC-5X #1041") {
		t.Fatalf("Maintenance Engineer /shopfloor: %d", code)
	}
	if !has(body, "readonly-reason") || !has(body, "edit-asset-disabled") || has(body, "edit-asset") || !strings.Contains(body, "Needs Digital Shopfloor = manage") {
		t.Errorf("reader does not see disabled controls with a reason")
	}
	// The server refuses what the page disables.
	for _, post := range []struct {
		path string
		form url.Values
	}{
		{"/shopfloor/facilities", url.Values{"name": {"Hall 9"}}},
		{"/shopfloor/assets", url.Values{"facility_id": {ids.hall1.ID}, "name": {"Lathe"}}},
		{"/shopfloor/facilities/" + ids.hall1.ID, url.Values{"name": {"Renamed"}}},
		{"/shopfloor/assets/" + ids.compressor.ID, url.Values{"facility_id": {ids.hall1.ID}, "name": {"Renamed"}}},
		{"/shopfloor/proposals/" + prop.ID + "/accept", url.Values{"facility_id": {ids.hall1.ID}}},
		{"/shopfloor/proposals/" + prop.ID + "/reject", nil},
	} {
		if code, body := me.post(post.path, post.form); code != 403 || !strings.Contains(body, "Not allowed") || !strings.Contains(body, "Digital Shopfloor") {
			t.Errorf("reader POST %s: %d", post.path, code)
		}
	}
	if f, _ := srv.Store.GetFacility(context.Background(), ids.hall1.ID); f.Name != "Hall 1" {
		t.Errorf("refused rename changed the facility to %q", f.Name)
	}
	if p, _ := srv.Store.GetProposal(context.Background(), prop.ID); p.State != store.ProposalPending {
		t.Errorf("refused decision changed the proposal to %s", p.State)
	}
	if code, _ := me.get("/shopfloor/assets/" + ids.cnc1041.ID); code != 200 {
		t.Errorf("reader's asset dashboard: %d", code)
	}

	// A reader opening an edit page gets the form disabled with the reason.
	for _, path := range []string{"/shopfloor/facilities/" + ids.hall1.ID + "/edit", "/shopfloor/assets/" + ids.cnc1041.ID + "/edit"} {
		code, body := me.get(path)
		if code != 200 || !strings.Contains(body, `<fieldset class="plain" disabled>`) || !has(body, "readonly-reason") {
			t.Errorf("reader GET %s: %d, form not disabled with a reason", path, code)
		}
	}

	// No Digital Shopfloor: Tenant Admin (no operational permissions) and
	// provider users get no navigation entry and 403 pages.
	for _, email := range []string{"admin@nordwerk.example", "st@acme.example", "cdm@acme.example"} {
		b := newBrowser(t, srv.URL)
		b.login(email)
		_, body := b.get("/cases")
		if has(body, "nav-shopfloor") {
			t.Errorf("%s sees the shop floor navigation", email)
		}
		for _, path := range []string{"/shopfloor", "/shopfloor/assets/" + ids.cnc1041.ID, "/shopfloor/assets/" + ids.cnc1041.ID + "/live",
			"/shopfloor/assets/" + ids.cnc1041.ID + "/edit", "/shopfloor/facilities/" + ids.hall1.ID + "/edit"} {
			code, body := b.get(path)
			page := !strings.HasSuffix(path, "/live") // the live partial answers with the message only
			if code != 403 || page && !strings.Contains(body, "Not allowed") {
				t.Errorf("%s GET %s: %d", email, path, code)
			}
		}
		for _, post := range []struct {
			path string
			form url.Values
		}{
			{"/shopfloor/facilities", url.Values{"name": {"Hall 9"}}},
			{"/shopfloor/facilities/" + ids.hall1.ID, url.Values{"name": {"Renamed"}}},
			{"/shopfloor/assets", url.Values{"facility_id": {ids.hall1.ID}, "name": {"Lathe"}}},
			{"/shopfloor/assets/" + ids.compressor.ID, url.Values{"name": {"Renamed"}}},
			{"/shopfloor/proposals/" + prop.ID + "/accept", url.Values{"facility_id": {ids.hall1.ID}}},
			{"/shopfloor/proposals/" + prop.ID + "/reject", nil},
		} {
			if code, _ := b.post(post.path, post.form); code != 403 {
				t.Errorf("%s POST %s: %d", email, post.path, code)
			}
		}
	}

	// Device dashboards: providers with Edge Devices read and operators
	// with Digital Shopfloor read on the device's asset; not the Tenant
	// Admins (no operational permissions).
	dev := demoDevice(t, srv)
	for email, want := range map[string]int{"st@acme.example": 200, "1ls@acme.example": 200, "me@nordwerk.example": 200,
		"admin@acme.example": 403, "admin@nordwerk.example": 403} {
		b := newBrowser(t, srv.URL)
		b.login(email)
		for _, path := range []string{"/devices/" + dev.ID + "/dashboard", "/devices/" + dev.ID + "/dashboard/live"} {
			if code, _ := b.get(path); code != want {
				t.Errorf("%s GET %s: %d, want %d", email, path, code, want)
			}
		}
	}

	// A Workshop Manager scoped to Hall 2 sees only Hall 2 and manages
	// only there.
	ctx := context.Background()
	if _, err := srv.Identity.CreateUserDirect(ctx, ids.nord.ID, "hall2@nordwerk.example", "Hall 2 Manager", server.DemoPassword,
		[]store.RoleGrant{{Role: authz.WorkshopManager, Scope: authz.Scope{Kind: authz.ScopeFacility, ID: ids.hall2.ID}}}); err != nil {
		t.Fatal(err)
	}
	h2 := newBrowser(t, srv.URL)
	h2.login("hall2@nordwerk.example")
	_, body = h2.get("/shopfloor")
	if strings.Contains(body, "Hall 1") || strings.Contains(body, "CNC-5X #1041") || !strings.Contains(body, "CNC-5X #1042") {
		t.Errorf("Hall 2 manager's shop floor shows other facilities or lacks its own")
	}
	if code, _ := h2.get("/shopfloor/assets/" + ids.cnc1041.ID); code != 404 {
		t.Errorf("Hall 2 manager opens a Hall 1 dashboard: %d", code)
	}
	if code, _ := h2.post("/shopfloor/assets", url.Values{"facility_id": {ids.hall1.ID}, "name": {"Lathe"}}); code != 403 {
		t.Errorf("Hall 2 manager adds an asset to Hall 1: %d", code)
	}
	if code, _ := h2.post("/shopfloor/facilities", url.Values{"name": {"Hall 9"}}); code != 403 {
		t.Errorf("Hall 2 manager creates a facility (needs tenant-wide manage): %d", code)
	}
	if code, _ := h2.post("/shopfloor/assets", url.Values{"facility_id": {ids.hall2.ID}, "name": {"Lathe"}}); code != 303 && code != 200 {
		t.Errorf("Hall 2 manager adds an asset to Hall 2: %d", code)
	}
}

// TestShopfloorTenantIsolation: another operator tenant's facilities,
// assets, proposals and dashboards are invisible (404) on every route.
func TestShopfloorTenantIsolation(t *testing.T) {
	srv := demo(t)
	ids := demoShopfloor(t, srv)
	prop := proposeMachine(t, srv, "Nordwerk Plant", "CNC-5X #1043", "1043")
	sud := newBrowser(t, srv.URL)
	sud.login("wm@sudhaus.example") // Workshop Manager of the other operator
	code, body := sud.get("/shopfloor")
	if code != 200 || !strings.Contains(body, "Bottling") {
		t.Fatalf("Sudhaus shop floor: %d", code)
	}
	for _, leak := range []string{"Hall 1", "Hall 2", "CNC-5X #1041", "Compressor K3", "CNC-5X #1043", ids.hall1.ID, ids.cnc1041.ID, prop.ID} {
		if strings.Contains(body, leak) {
			t.Errorf("Sudhaus sees Nordwerk's %s", leak)
		}
	}
	for _, path := range []string{"/shopfloor/assets/" + ids.cnc1041.ID, "/shopfloor/assets/" + ids.cnc1041.ID + "/live", "/shopfloor/assets/" + ids.cnc1041.ID + "/edit",
		"/shopfloor/facilities/" + ids.hall1.ID + "/edit"} {
		if code, body := sud.get(path); code != 404 || strings.Contains(body, "CNC-5X #1041") || strings.Contains(body, "Hall 1") {
			t.Errorf("Sudhaus GET %s: %d", path, code)
		}
	}
	for _, post := range []struct {
		path string
		form url.Values
	}{
		{"/shopfloor/facilities/" + ids.hall1.ID, url.Values{"name": {"Stolen"}}},
		{"/shopfloor/assets/" + ids.cnc1041.ID, url.Values{"facility_id": {ids.bottling.ID}, "name": {"Stolen"}}},
		{"/shopfloor/assets", url.Values{"facility_id": {ids.hall1.ID}, "name": {"Planted"}}},
		{"/shopfloor/assets/" + ids.sudAsset.ID, url.Values{"facility_id": {ids.hall1.ID}, "name": {"Moved"}}},
		{"/shopfloor/proposals/" + prop.ID + "/accept", url.Values{"facility_id": {ids.bottling.ID}}},
		{"/shopfloor/proposals/" + prop.ID + "/reject", nil},
	} {
		if code, _ := sud.post(post.path, post.form); code != 404 {
			t.Errorf("Sudhaus POST %s: %d, want 404", post.path, code)
		}
	}
	ctx := context.Background()
	if a, _ := srv.Store.GetAsset(ctx, ids.cnc1041.ID); a != ids.cnc1041 {
		t.Errorf("Nordwerk asset changed: %+v", a)
	}
	if a, _ := srv.Store.GetAsset(ctx, ids.sudAsset.ID); a != ids.sudAsset {
		t.Errorf("Sudhaus asset moved into Nordwerk: %+v", a)
	}
	if p, _ := srv.Store.GetProposal(ctx, prop.ID); p.State != store.ProposalPending {
		t.Errorf("Sudhaus decided Nordwerk's proposal: %s", p.State)
	}
	// The demo gateway belongs to a Nordwerk asset: its device dashboard is
	// not Sudhaus'.
	dev := demoDevice(t, srv)
	for _, path := range []string{"/devices/" + dev.ID + "/dashboard", "/devices/" + dev.ID + "/dashboard/live"} {
		if code, _ := sud.get(path); code != 404 {
			t.Errorf("Sudhaus GET %s: %d, want 404", path, code)
		}
	}
}

// TestShopfloorForms: validation errors appear next to the fields; valid
// forms create, rename, move, accept and reject.
func TestShopfloorForms(t *testing.T) {
	srv := demo(t)
	ids := demoShopfloor(t, srv)
	ctx := context.Background()
	accept := proposeMachine(t, srv, "Nordwerk Plant", "CNC-5X #1043", "1043")
	reject := proposeMachine(t, srv, "Nordwerk Plant", "CNC-5X #1044", "1044")
	wm := newBrowser(t, srv.URL)
	wm.login("wm@nordwerk.example")

	fieldErr := regexp.MustCompile(`data-testid="([a-z-]+-error)">([^<]*)<`)
	errorsOf := func(body string) map[string]string {
		out := map[string]string{}
		for _, m := range fieldErr.FindAllStringSubmatch(body, -1) {
			out[m[1]] = m[2]
		}
		return out
	}
	for _, tc := range []struct {
		name, path string
		form       url.Values
		field, msg string
	}{
		{"facility without name", "/shopfloor/facilities", url.Values{"name": {"  "}}, "facility-name-error", "a name is required"},
		{"facility name taken", "/shopfloor/facilities", url.Values{"name": {"Hall 1"}}, "facility-name-error", "already used"},
		{"asset without name", "/shopfloor/assets", url.Values{"facility_id": {ids.hall1.ID}, "name": {""}}, "asset-name-error", "a name is required"},
		{"asset serial too long", "/shopfloor/assets", url.Values{"facility_id": {ids.hall1.ID}, "name": {"Lathe"}, "serial_number": {strings.Repeat("9", 101)}}, "asset-serial-error", "at most 100"},
		{"asset without facility", "/shopfloor/assets", url.Values{"name": {"Lathe"}}, "asset-facility-error", "an ID is required"},
		{"rename to nothing", "/shopfloor/facilities/" + ids.hall1.ID, url.Values{"name": {""}}, "facility-name-error", "a name is required"},
		{"asset rename to nothing", "/shopfloor/assets/" + ids.compressor.ID, url.Values{"facility_id": {ids.hall1.ID}, "name": {""}}, "asset-name-error", "a name is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := wm.post(tc.path, tc.form)
			errs := errorsOf(body)
			if code != 400 || !strings.Contains(errs[tc.field], tc.msg) {
				t.Errorf("%d, field errors %v; want %s containing %q", code, errs, tc.field, tc.msg)
			}
			if len(errs) != 1 {
				t.Errorf("errors on other fields too: %v", errs)
			}
			if strings.Contains(body, "goroutine") || !has(body, "nav") {
				t.Errorf("error page is not the portal page")
			}
		})
	}
	// The entered values stay in the form.
	if _, body := wm.post("/shopfloor/assets", url.Values{"facility_id": {ids.hall2.ID}, "name": {""}, "serial_number": {"SN-77"}}); !strings.Contains(body, `value="SN-77"`) {
		t.Errorf("the form lost the entered serial number")
	}

	if code, _ := wm.post("/shopfloor/facilities", url.Values{"name": {"Hall 3"}}); code != 200 { // 303 followed
		t.Fatalf("create facility: %d", code)
	}
	fs, _ := srv.Store.ListFacilities(ctx, ids.nord.ID)
	var hall3 store.Facility
	for _, f := range fs {
		if f.Name == "Hall 3" {
			hall3 = f
		}
	}
	if hall3.ID == "" {
		t.Fatal("Hall 3 not created")
	}
	if code, body := wm.post("/shopfloor/assets", url.Values{"facility_id": {hall3.ID}, "name": {"Press P-9"}, "serial_number": {"P9"}}); code != 200 || !strings.Contains(body, "Press P-9") {
		t.Errorf("create asset: %d", code)
	}
	if code, _ := wm.post("/shopfloor/facilities/"+hall3.ID, url.Values{"name": {"Hall 3 East"}}); code != 200 {
		t.Errorf("rename facility: %d", code)
	}
	if f, _ := srv.Store.GetFacility(ctx, hall3.ID); f.Name != "Hall 3 East" {
		t.Errorf("facility name %q", f.Name)
	}
	if code, _ := wm.post("/shopfloor/assets/"+ids.compressor.ID, url.Values{"facility_id": {hall3.ID}, "name": {"Compressor K3b"}, "serial_number": {"K3B"}}); code != 200 {
		t.Errorf("edit asset: %d", code)
	}
	if a, _ := srv.Store.GetAsset(ctx, ids.compressor.ID); a.FacilityID != hall3.ID || a.Name != "Compressor K3b" || a.SerialNumber != "K3B" {
		t.Errorf("edited asset: %+v", a)
	}
	if _, body := wm.get("/shopfloor/assets/" + ids.compressor.ID + "/edit"); !strings.Contains(body, `value="Compressor K3b"`) || !has(body, "save-asset") {
		t.Errorf("edit page does not show the asset")
	}

	if code, _ := wm.post("/shopfloor/proposals/"+accept.ID+"/accept", url.Values{"facility_id": {ids.hall2.ID}}); code != 200 {
		t.Errorf("accept: %d", code)
	}
	p, _ := srv.Store.GetProposal(ctx, accept.ID)
	a, err := srv.Store.GetAsset(ctx, p.AssetID)
	if p.State != store.ProposalAccepted || err != nil || a.FacilityID != ids.hall2.ID || a.Name != "CNC-5X #1043" || a.ProviderTenantID == "" {
		t.Errorf("accepted proposal %+v → asset %+v (%v)", p, a, err)
	}
	if code, body := wm.post("/shopfloor/proposals/"+accept.ID+"/accept", url.Values{"facility_id": {ids.hall2.ID}}); code != 400 || !strings.Contains(body, "already accepted") || !has(body, "proposal-error") {
		t.Errorf("accepting twice: %d", code)
	}
	if code, _ := wm.post("/shopfloor/proposals/"+reject.ID+"/reject", nil); code != 200 {
		t.Errorf("reject: %d", code)
	}
	if p, _ := srv.Store.GetProposal(ctx, reject.ID); p.State != store.ProposalRejected {
		t.Errorf("rejected proposal is %s", p.State)
	}
	if _, body := wm.get("/shopfloor"); has(body, "proposals") {
		t.Errorf("decided proposals are still offered")
	}
}

// demoDevice returns the demo gateway (Acme's device on CNC-5X #1041).
func demoDevice(t *testing.T, srv *servertest.Server) store.EdgeDevice {
	t.Helper()
	ctx := context.Background()
	ts, err := srv.Store.ListTenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ten := range ts {
		if ten.Kind != authz.KindServiceProvider {
			continue
		}
		ds, err := srv.Store.ListDevices(ctx, ten.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			if d.SerialNumber == "GW-DEMO-1" {
				return d
			}
		}
	}
	t.Fatal("no demo gateway")
	return store.EdgeDevice{}
}

// demoAgent seeds the demo and runs the demo gateway as an in-process
// agent, so tests can publish its data over MQTT.
func demoAgent(t *testing.T) (*servertest.Server, *agenttest.Agent) {
	t.Helper()
	srv := servertest.Start(t, storetest.SQLite(t))
	tokenFile := filepath.Join(t.TempDir(), "demo-agent.token")
	if err := server.SeedDemo(context.Background(), srv.Identity, srv.Store, tokenFile); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	return srv, agenttest.Start(t, srv.URL, strings.TrimSpace(string(tok)), agenttest.Options{})
}

// publishDiagnostics sends what a collecting agent sends: a minute of
// spindle-speed samples ending with last, temperature, the running-hours
// and energy totals, and a threshold event — through the MQTT broker into
// the control plane's ingest.
func publishDiagnostics(t *testing.T, a *agenttest.Agent, last float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Now()
	var samples []*gantryv1.Sample
	for i := 12; i >= 1; i-- {
		samples = append(samples, &gantryv1.Sample{Point: "Spindle speed", Value: 8000 + float64(i%4)*250, At: timestamppb.New(now.Add(-time.Duration(i) * 5 * time.Second))})
	}
	samples = append(samples,
		&gantryv1.Sample{Point: "Spindle speed", Value: last, At: timestamppb.New(now)},
		&gantryv1.Sample{Point: "Temperature", Value: 71.5, At: timestamppb.New(now)},
		&gantryv1.Sample{Point: "Running.running_hours", Value: 1234.5, At: timestamppb.New(now)},
		&gantryv1.Sample{Point: "Energy.energy_kwh", Value: 42.125, At: timestamppb.New(now)})
	if err := a.Publish(ctx, topics.Telemetry, &gantryv1.TelemetryBatch{Seq: uint64(now.UnixNano()), Samples: samples}); err != nil {
		t.Fatal(err)
	}
	ev := &gantryv1.EventBatch{Seq: uint64(now.UnixNano()), Events: []*gantryv1.Event{{Point: "Temperature", Kind: "threshold", Level: "warning", FromLevel: "ok", Value: 71.5, Threshold: 70, At: timestamppb.New(now)}}}
	if err := a.Publish(ctx, topics.Events, ev); err != nil {
		t.Fatal(err)
	}
}

// TestAssetDashboard: values the agent published through MQTT show on the
// asset dashboard with status, source time, a trend chart, running hours,
// energy and the threshold event; the live partial refreshes them; the
// provider reaches the same data through the device dashboard.
func TestAssetDashboard(t *testing.T) {
	srv, agent := demoAgent(t)
	ids := demoShopfloor(t, srv)
	publishDiagnostics(t, agent, 9876)

	me := newBrowser(t, srv.URL)
	me.login("me@nordwerk.example")
	code, body := me.get("/shopfloor/assets/" + ids.cnc1041.ID)
	if code != 200 {
		t.Fatalf("dashboard: %d", code)
	}
	point := regexp.MustCompile(`(?s)data-point="Spindle speed">.*?data-testid="point-value">([^<]+)<.*?data-testid="point-status">([^<]+)<.*?data-testid="trend" data-points="(\d+)"`).FindStringSubmatch(body)
	if point == nil {
		t.Fatalf("no spindle speed with status and trend on the dashboard:\n%s", body)
	}
	if point[1] != "9876" || point[2] != "Good" {
		t.Errorf("spindle speed %s (%s), want 9876 (Good)", point[1], point[2])
	}
	if n, _ := strconv.Atoi(point[3]); n != 13 {
		t.Errorf("trend has %d vertices, want 13 (the samples of the window)", n)
	}
	for _, want := range []string{`data-point="Running">Running: <b>1234.50 h</b>`, `data-point="Energy">Energy: <b>42.125 kWh</b>`, `data-testid="event" data-level="warning"`, `hx-trigger="every `} {
		if !strings.Contains(body, want) {
			t.Errorf("dashboard lacks %s", want)
		}
	}
	if !strings.Contains(body, `data-testid="online">online<`) {
		t.Errorf("the connected demo gateway is not shown online")
	}
	if strings.Contains(body, `data-point="Running.running_hours"`) {
		t.Errorf("accumulators are listed as live values")
	}

	// The live partial (htmx polling) shows a newer value.
	publishDiagnostics(t, agent, 10500)
	code, body = me.get("/shopfloor/assets/" + ids.cnc1041.ID + "/live")
	if code != 200 || !strings.HasPrefix(body, `<div id="live"`) || strings.Contains(body, "<html") || !strings.Contains(body, `data-testid="point-value">10500<`) {
		t.Errorf("live partial: %d\n%s", code, body)
	}
	// After logging out, a refresh asks htmx to open the login page.
	other := newBrowser(t, srv.URL)
	other.login("me@nordwerk.example")
	other.post("/logout", nil)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/shopfloor/assets/"+ids.cnc1041.ID+"/live", nil)
	req.Header.Set("HX-Request", "true")
	resp, err := other.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("HX-Redirect") != "/login?expired=1" {
		t.Errorf("refresh after logout: %d, HX-Redirect %q", resp.StatusCode, resp.Header.Get("HX-Redirect"))
	}
	// An asset without a device says so.
	if _, body := me.get("/shopfloor/assets/" + ids.compressor.ID); !has(body, "no-device") {
		t.Errorf("asset without a device")
	}

	// The provider's technician opens the device dashboard from the devices page.
	st := newBrowser(t, srv.URL)
	st.login("st@acme.example")
	_, body = st.get("/devices")
	link := regexp.MustCompile(`href="(/devices/[^"]+/dashboard)" data-testid="device-dashboard"`).FindStringSubmatch(body)
	if link == nil {
		t.Fatalf("devices page has no dashboard link")
	}
	if code, body := st.get(link[1]); code != 200 || !strings.Contains(body, `data-testid="point-value">10500<`) {
		t.Errorf("provider device dashboard: %d", code)
	}
	// Operators' devices page links to the asset dashboard.
	if _, body := me.get("/devices"); !strings.Contains(body, `href="/shopfloor/assets/`+ids.cnc1041.ID+`" data-testid="device-dashboard"`) {
		t.Errorf("operator devices page does not link the asset dashboard")
	}
	// The other operator tenant gets 404.
	sud := newBrowser(t, srv.URL)
	sud.login("wm@sudhaus.example")
	if code, body := sud.get(link[1]); code != 404 || strings.Contains(body, "10500") {
		t.Errorf("other operator on the device dashboard: %d", code)
	}
	if code, _ := sud.get(link[1] + "/live"); code != 404 {
		t.Errorf("other operator on the live partial: %d", code)
	}
}

// runShopfloorSpec runs browser/shopfloor.spec.mjs against srv: the demo
// gateway (agent) publishes diagnostics through MQTT first, Acme proposes
// a machine to Nordwerk, and each "publish:<value>" line the spec prints
// makes the agent publish that spindle speed.
func runShopfloorSpec(t *testing.T, srv *servertest.Server, agent *agenttest.Agent, env []string) {
	const injected = 9876
	publishDiagnostics(t, agent, injected)
	proposeMachine(t, srv, "Nordwerk Plant", "CNC-5X #1043", "1043")
	cmd := exec.Command("node", "browser/shopfloor.spec.mjs")
	cmd.Env = append(env, "INJECTED="+strconv.Itoa(injected))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after a failed publish
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		t.Log(line)
		if v, ok := strings.CutPrefix(line, "publish:"); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Errorf("spec asked to publish %q", v)
				continue
			}
			publishDiagnostics(t, agent, f)
		}
	}
	err = cmd.Wait()
	if stderr.Len() > 0 {
		t.Logf("%s", stderr.Bytes())
	}
	if err != nil {
		t.Fatalf("shop floor browser test failed: %v", err)
	}
}

// TestAssetDashboardLoad measures the server time of one dashboard
// refresh (the htmx poll) with a full trend window: 4 points sampled at
// 1 Hz for 15 minutes, against the same refresh with one sample per point
// (baseline, same run). Run with GANTRY_BENCH=1 (make bench).
func TestAssetDashboardLoad(t *testing.T) {
	if os.Getenv("GANTRY_BENCH") == "" {
		t.Skip("set GANTRY_BENCH=1 to measure the asset dashboard (part of make bench)")
	}
	srv, agent := demoAgent(t)
	ids := demoShopfloor(t, srv)
	ctx := context.Background()
	me := newBrowser(t, srv.URL)
	me.login("me@nordwerk.example")
	path := "/shopfloor/assets/" + ids.cnc1041.ID + "/live"
	measure := func() (p50, p95 time.Duration) {
		var lat []time.Duration
		for range 40 {
			t0 := time.Now()
			if code, _ := me.get(path); code != 200 {
				t.Fatalf("GET %s: %d", path, code)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		return lat[20], lat[37]
	}
	now := time.Now()
	var latest []store.Sample
	for _, p := range []string{"Spindle speed", "Temperature", "Running", "Energy"} {
		latest = append(latest, store.Sample{Point: p, Value: 1, At: now.Add(-20 * time.Minute)})
	}
	if err := srv.Store.StoreSamples(ctx, agent.DeviceID, latest); err != nil {
		t.Fatal(err)
	}
	b50, b95 := measure()
	var hist []store.Sample
	for i := range 900 {
		at := now.Add(-time.Duration(900-i) * time.Second)
		for j, p := range []string{"Spindle speed", "Temperature", "Running", "Energy"} {
			hist = append(hist, store.Sample{Point: p, Value: float64(i * (j + 1)), At: at})
		}
	}
	if err := srv.Store.StoreSamples(ctx, agent.DeviceID, hist); err != nil {
		t.Fatal(err)
	}
	f50, f95 := measure()
	if _, body := me.get(path); strings.Count(body, `data-points="120"`) != 4 {
		t.Fatalf("the full window is not drawn as 4 thinned trends")
	}
	t.Logf("dashboard refresh, 1 sample per point (baseline): p50 %v, p95 %v", b50, b95)
	t.Logf("dashboard refresh, 4 points × 900 samples: p50 %v (%.1f× baseline), p95 %v", f50, float64(f50)/float64(b50), f95)
}

// TestDeviceDashboardTemplate: the provider's device dashboard (and its
// live partial) shows the OPC-UA template delivery — nothing yet, then
// the model, version, short hash, state and times of an applied template,
// then a refused one with the agent's error and the version it still
// runs; operators do not see it.
func TestDeviceDashboardTemplate(t *testing.T) {
	srv := demo(t) // no agent: the gateway stays offline, nothing is delivered
	ctx := context.Background()
	dev := demoDevice(t, srv)
	m, err := srv.Store.GetCustomerMachine(ctx, dev.CustomerMachineID)
	if err != nil {
		t.Fatal(err)
	}
	page := "/devices/" + dev.ID + "/dashboard"
	st := newBrowser(t, srv.URL)
	st.login("st@acme.example")
	section := func(path string) string {
		t.Helper()
		code, body := st.get(path)
		sec := regexp.MustCompile(`(?s)<table class="grid kv" data-testid="opcua-template".*?</table>`).FindString(body)
		if code != 200 || sec == "" {
			t.Fatalf("GET %s: %d, no OPC-UA template section:\n%s", path, code, body)
		}
		return sec
	}
	want := func(sec string, parts ...string) {
		t.Helper()
		for _, p := range parts {
			if !strings.Contains(sec, p) {
				t.Errorf("template section lacks %s:\n%s", p, sec)
			}
		}
	}
	if sec := section(page); !strings.Contains(sec, `data-state="none"`) || !strings.Contains(sec, "none delivered yet") {
		t.Errorf("before any delivery:\n%s", sec)
	}

	hash1, hash2 := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	sent := time.Date(2026, 12, 2, 9, 30, 0, 0, time.UTC)
	if _, err := srv.Store.RecordTemplateSent(ctx, dev.ID, hash1, m.MachineModelID, sent); err != nil {
		t.Fatal(err)
	}
	if ok, err := srv.Store.RecordTemplateAck(ctx, dev.ID, 1, true, "", sent.Add(2*time.Second)); !ok || err != nil {
		t.Fatalf("ack: %v %v", ok, err)
	}
	sec := section(page)
	want(sec, `data-state="applied"`, `data-testid="template-model">CNC-5X (`+m.MachineModelID+`)<`, `data-testid="template-version">v1 `,
		`data-testid="template-hash">abababababab<`, "applied by the agent",
		`data-testid="template-sent">`+sent.Local().Format("2006-01-02 15:04:05")+`<`,
		`data-testid="template-acked">`+sent.Add(2*time.Second).Local().Format("2006-01-02 15:04:05")+`<`)
	if strings.Contains(sec, hash1) || strings.Contains(sec, "template-error") || strings.Contains(sec, "template-running") {
		t.Errorf("applied template shows the full hash, an error or another running version:\n%s", sec)
	}

	if _, err := srv.Store.RecordTemplateSent(ctx, dev.ID, hash2, m.MachineModelID, sent.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if ok, err := srv.Store.RecordTemplateAck(ctx, dev.ID, 2, false, "template v2 is invalid: data_points[0].node_id <empty>", sent.Add(time.Minute+time.Second)); !ok || err != nil {
		t.Fatalf("error ack: %v %v", ok, err)
	}
	sec = section(page + "/live")
	want(sec, `data-state="error"`, `data-testid="template-version">v2 `, `data-testid="template-hash">cdcdcdcdcdcd<`, "refused by the agent",
		`data-testid="template-running">v1<`, `data-testid="template-error">template v2 is invalid: data_points[0].node_id &lt;empty&gt;<`)

	// Operators see the device's data, not its template delivery.
	me := newBrowser(t, srv.URL)
	me.login("me@nordwerk.example")
	if code, body := me.get(page); code != 200 || has(body, "opcua-template") {
		t.Errorf("operator's device dashboard: %d, template shown: %v", code, has(body, "opcua-template"))
	}
}

// TestAcceptedProposalSendsTemplate: accepting a proposal in the portal
// links the customer machine to an asset; when the machine names no model
// the asset's counts, so the control plane sends its device that model's
// OPC-UA template (server wiring of the fleet hook to template delivery).
func TestAcceptedProposalSendsTemplate(t *testing.T) {
	srv, agent := demoAgent(t)
	ids := demoShopfloor(t, srv)
	ctx := context.Background()
	dev := demoDevice(t, srv)
	m0, err := srv.Store.GetCustomerMachine(ctx, dev.CustomerMachineID)
	if err != nil {
		t.Fatal(err)
	}
	model, err := srv.Store.CreateMachineModel(ctx, store.MachineModel{TenantID: dev.TenantID, Name: "Lathe L2",
		OPCUAJSON: []byte(`{"endpoint_url":"opc.tcp://10.0.0.7:4840","security_mode":"None","data_points":[{"node_id":"ns=2;s=Chuck","name":"chuck"}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	m1, err := srv.Store.CreateCustomerMachine(ctx, store.CustomerMachine{TenantID: dev.TenantID, CustomerID: m0.CustomerID, Name: "Lathe #7", SerialNumber: "7"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Store.LinkDevice(ctx, agent.DeviceID, m1.ID); err != nil { // no model on the machine: nothing to send
		t.Fatal(err)
	}
	p, err := srv.Store.CreateProposal(ctx, store.AssetProposal{ProviderTenantID: dev.TenantID, OperatorTenantID: ids.nord.ID, CustomerMachineID: m1.ID,
		Name: m1.Name, SerialNumber: m1.SerialNumber, MachineModelID: model.ID, State: store.ProposalPending})
	if err != nil {
		t.Fatal(err)
	}
	if tpl, err := srv.Store.GetDeviceTemplate(ctx, agent.DeviceID); err == nil && tpl.ModelID == model.ID {
		t.Fatalf("template of %s sent before the proposal was accepted", model.Name)
	}
	wm := newBrowser(t, srv.URL)
	wm.login("wm@nordwerk.example")
	if code, _ := wm.post("/shopfloor/proposals/"+p.ID+"/accept", url.Values{"facility_id": {ids.hall1.ID}}); code != 200 {
		t.Fatalf("accept: %d", code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		tpl, err := srv.Store.GetDeviceTemplate(ctx, agent.DeviceID)
		if err == nil && tpl.ModelID == model.ID {
			break // sent (the test agent refuses templates: its answer does not matter here)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no template of %s sent after the proposal was accepted: %+v, %v", model.Name, tpl, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
