package portal_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// otherProvider adds a second service-provider tenant with a machine
// model and a customer, and returns their IDs (for tenant isolation).
func otherProvider(t *testing.T, srv *servertest.Server) (modelID, customerID string) {
	t.Helper()
	ctx := context.Background()
	tn, err := srv.Store.CreateTenant(ctx, store.Tenant{Name: "Other Builders", Kind: authz.KindServiceProvider})
	if err != nil {
		t.Fatal(err)
	}
	m, err := srv.Store.CreateMachineModel(ctx, store.MachineModel{TenantID: tn.ID, Name: "Secret press", RemoteAccessJSON: []byte(`{"connection_types":[]}`), OPCUAJSON: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	org, err := srv.Store.CreateServiceOrg(ctx, store.ServiceOrg{TenantID: tn.ID, Name: "Other Service"})
	if err != nil {
		t.Fatal(err)
	}
	cu, err := srv.Store.CreateCustomer(ctx, store.Customer{TenantID: tn.ID, ServiceOrgID: org.ID, Name: "Secret customer"})
	if err != nil {
		t.Fatal(err)
	}
	return m.ID, cu.ID
}

// modelID finds the demo model's ID by name on the models page.
func (b *browser) modelID(name string) string {
	b.t.Helper()
	_, body := b.get("/models")
	m := regexp.MustCompile(`<a href="/models/([0-9a-f-]{36})">` + regexp.QuoteMeta(name) + `</a>`).FindStringSubmatch(body)
	if m == nil {
		b.t.Fatalf("model %q not in the list:\n%s", name, body)
	}
	return m[1]
}

// validModelForm is a complete, valid model form.
func validModelForm(name string) url.Values {
	return url.Values{
		"name":                                      {name},
		"remote_access.connection_types":            {"vnc", "ssc"},
		"remote_access.vnc_targets":                 {"10.1.0.20:5900"},
		"remote_access.machine_subnets":             {"10.1.0.0/24"},
		"remote_access.ssc_ports":                   {"tcp/102\r\nudp/161"},
		"opcua.endpoint_url":                        {"opc.tcp://10.1.0.30:4840"},
		"opcua.security_mode":                       {"None"},
		"opcua.data_points[0].node_id":              {"ns=2;s=Press.Force"},
		"opcua.data_points[0].name":                 {"Force"},
		"opcua.data_points[0].unit":                 {"kN"},
		"opcua.data_points[0].deadband_type":        {"absolute"},
		"opcua.data_points[0].deadband_value":       {"0.5"},
		"opcua.data_points[0].warn_above":           {"800"},
		"opcua.data_points[0].alarm_above":          {"950"},
		"opcua.data_points[0].sampling_interval_ms": {"250"},
		"opcua.data_points[1].node_id":              {""}, // the blank row
		"opcua.data_points[1].deadband_type":        {"none"},
	}
}

// fieldError returns the error shown right after the input named field.
func fieldError(body, field string) string {
	i := strings.Index(body, `name="`+field+`"`)
	if i < 0 {
		return "<no field " + field + ">"
	}
	rest := body[i:]
	end := strings.Index(rest, "</div>")
	if end < 0 {
		end = len(rest)
	}
	m := regexp.MustCompile(`<p class="field-error" data-testid="field-error">([^<]*)</p>`).FindStringSubmatch(rest[:end])
	if m == nil {
		return ""
	}
	return html.UnescapeString(m[1])
}

// TestModelsAndCustomersRoutes: every new route answers each role as
// SPEC §2's matrices say, and another tenant's IDs are not found.
func TestModelsAndCustomersRoutes(t *testing.T) {
	srv := demo(t)
	otherModel, otherCustomer := otherProvider(t, srv)
	b := map[string]*browser{}
	for _, e := range []string{"mdm@acme.example", "1ls@acme.example", "st@acme.example", "cdm@acme.example", "sm@acme.example", "admin@acme.example", "me@nordwerk.example", "admin@nordwerk.example"} {
		b[e] = sessionBrowser(t, srv, srv.URL, e)
	}
	mdm := b["mdm@acme.example"]
	cnc := mdm.modelID("CNC-5X")
	cdm := b["cdm@acme.example"]
	_, body := cdm.get("/customers")
	m := regexp.MustCompile(`<a href="/customers/([0-9a-f-]{36})">Nordwerk Plant</a>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("CDM customer list lacks Nordwerk Plant:\n%s", body)
	}
	nordwerk := m[1]

	for _, tc := range []struct {
		user, method, path string
		want               int
		contains           string // in the body
	}{
		// Machine Models: read for 1LS, ST, CDM; manage for MDM and SM; none elsewhere.
		{"mdm@acme.example", "GET", "/models", 200, `data-testid="new-model"`},
		{"sm@acme.example", "GET", "/models", 200, `data-testid="new-model"`},
		{"1ls@acme.example", "GET", "/models", 200, `data-testid="readonly-reason"`},
		{"st@acme.example", "GET", "/models", 200, "CNC-5X"},
		{"cdm@acme.example", "GET", "/models", 200, "CNC-5X"},
		{"admin@acme.example", "GET", "/models", 403, "Machine Models"},
		{"me@nordwerk.example", "GET", "/models", 403, "service_provider tenants"},
		{"mdm@acme.example", "GET", "/models/new", 200, `data-testid="model-form"`},
		{"1ls@acme.example", "GET", "/models/new", 403, "needs manage"},
		{"me@nordwerk.example", "GET", "/models/new", 403, "Not allowed"},
		{"mdm@acme.example", "GET", "/models/" + cnc, 200, `value="ns=1;s=cnc1.SpindleSpeed"`},
		{"1ls@acme.example", "GET", "/models/" + cnc, 200, `disabled title="Read only`},
		{"me@nordwerk.example", "GET", "/models/" + cnc, 403, "Machine Models"},
		{"mdm@acme.example", "GET", "/models/" + otherModel, 404, "not found"},
		{"mdm@acme.example", "GET", "/models/not-a-uuid", 404, "not-a-uuid"},
		{"1ls@acme.example", "POST", "/models", 403, "cannot create machine models"},
		{"me@nordwerk.example", "POST", "/models", 403, "service_provider tenants"},
		{"1ls@acme.example", "POST", "/models/" + cnc, 403, "cannot edit machine models"},
		{"mdm@acme.example", "POST", "/models/" + otherModel, 404, "not found"},
		{"me@nordwerk.example", "POST", "/models/" + otherModel, 403, "Machine Models"},
		// Customer Management: CDM and SM only.
		{"cdm@acme.example", "GET", "/customers", 200, "Sudhaus Foods"},
		{"sm@acme.example", "GET", "/customers", 200, "Nordwerk Plant"},
		{"mdm@acme.example", "GET", "/customers", 403, "Customer Management"},
		{"st@acme.example", "GET", "/customers", 403, "Customer Management"},
		{"me@nordwerk.example", "GET", "/customers", 403, "service_provider tenants"},
		{"cdm@acme.example", "GET", "/customers/" + nordwerk, 200, "CNC-5X #1042"},
		{"sm@acme.example", "GET", "/customers/" + nordwerk, 200, `data-testid="machine-case"`},
		{"st@acme.example", "GET", "/customers/" + nordwerk, 403, "Customer Management"},
		{"admin@nordwerk.example", "GET", "/customers/" + nordwerk, 403, "service_provider tenants"},
		{"cdm@acme.example", "GET", "/customers/" + otherCustomer, 404, "not found"},
	} {
		t.Run(tc.user+" "+tc.method+" "+tc.path, func(t *testing.T) {
			var code int
			if tc.method == "GET" {
				code, body = b[tc.user].get(tc.path)
			} else {
				code, body = b[tc.user].post(tc.path, validModelForm("Route check "+tc.user))
			}
			if code != tc.want || !strings.Contains(body, tc.contains) {
				t.Errorf("%d, want %d with %q\n%s", code, tc.want, tc.contains, body)
			}
			if strings.Contains(body, "goroutine ") || strings.Contains(body, "panic") {
				t.Errorf("stack trace in the page")
			}
		})
	}

	// The navigation follows the same permissions.
	for user, want := range map[string][2]bool{ // models, customers
		"mdm@acme.example": {true, false}, "1ls@acme.example": {true, false}, "cdm@acme.example": {true, true},
		"sm@acme.example": {true, true}, "admin@acme.example": {false, false}, "me@nordwerk.example": {false, false},
	} {
		_, body := b[user].get("/cases/none") // any page with the layout
		if got := strings.Contains(body, `data-testid="nav-models"`); got != want[0] {
			t.Errorf("%s: models link %v, want %v", user, got, want[0])
		}
		if got := strings.Contains(body, `data-testid="nav-customers"`); got != want[1] {
			t.Errorf("%s: customers link %v, want %v", user, got, want[1])
		}
	}
	// Nothing of the other tenant leaks into lists.
	for _, p := range []string{"/models", "/customers"} {
		if _, body := b["sm@acme.example"].get(p); strings.Contains(body, "Secret") {
			t.Errorf("%s shows another tenant's data", p)
		}
	}
	// The read-only model form cannot be saved even if submitted: 1LS's
	// post above got 403 and the model is unchanged.
	if _, body := mdm.get("/models/" + cnc); !strings.Contains(body, `value="CNC-5X"`) {
		t.Errorf("CNC-5X renamed by a denied post")
	}
}

// TestModelForm: server validation errors land next to the exact field,
// the form keeps what the user typed, and valid input is saved.
func TestModelForm(t *testing.T) {
	srv := demo(t)
	mdm := sessionBrowser(t, srv, srv.URL, "mdm@acme.example")

	bad := validModelForm("Press P-200")
	bad.Set("opcua.data_points[0].node_id", "Press Force")       // not a node ID
	bad.Set("opcua.data_points[0].warn_above", "1000")           // above the alarm
	bad.Set("opcua.data_points[0].sampling_interval_ms", "fast") // not a number
	bad.Set("remote_access.vnc_targets", "10.1.0.20:5900\nhmi:99999")
	bad.Set("remote_access.ssc_ports", "tcp/102\nsctp/9")
	code, body := mdm.post("/models", bad)
	if code != 400 {
		t.Fatalf("invalid model: %d\n%s", code, body)
	}
	for field, want := range map[string]string{
		"opcua.data_points[0].node_id":              `"Press Force" is not an OPC-UA node ID`,
		"opcua.data_points[0].warn_above":           "warning threshold 1000 is above the alarm threshold 950",
		"opcua.data_points[0].sampling_interval_ms": `"fast" is not a whole number`,
		"remote_access.vnc_targets":                 `line 2: "hmi:99999": port must be 1..65535`,
		"remote_access.ssc_ports":                   `line 2: "sctp/9" is not a port rule`,
		"opcua.data_points[0].name":                 "",
		"name":                                      "",
	} {
		if got := fieldError(body, field); !strings.Contains(got, want) || (want == "" && got != "") {
			t.Errorf("error next to %s = %q, want %q", field, got, want)
		}
	}
	for _, kept := range []string{`value="Press Force"`, `value="fast"`, `value="1000"`, "10.1.0.20:5900\nhmi:99999", `value="Press P-200"`} {
		if !strings.Contains(body, kept) {
			t.Errorf("form lost the input %s", kept)
		}
	}
	// Only the service's own rules: a bad name is reported next to it.
	noName := validModelForm("")
	if code, body := mdm.post("/models", noName); code != 400 || fieldError(body, "name") == "" || !strings.Contains(body, `value="ns=2;s=Press.Force"`) {
		t.Errorf("empty name: %d %q", code, fieldError(body, "name"))
	}
	// Nothing was saved by the failed posts.
	if _, body := mdm.get("/models"); strings.Contains(body, "Press P-200") {
		t.Fatalf("an invalid model was saved")
	}

	// "Add a data point" shows one more row and saves nothing.
	add := validModelForm("Press P-200")
	add.Set("add_point", "1")
	code, body = mdm.post("/models", add)
	if code != 200 || strings.Count(body, `data-testid="point"`) != 3 {
		t.Errorf("add a data point: %d, %d rows", code, strings.Count(body, `data-testid="point"`))
	}

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/models", strings.NewReader(validModelForm("Press P-200").Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", srv.URL)
	mdm.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := mdm.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	mdm.c.CheckRedirect = nil
	if resp.StatusCode != http.StatusSeeOther || !regexp.MustCompile(`^/models/[0-9a-f-]{36}\?saved=1$`).MatchString(loc) {
		t.Fatalf("create: %d %q", resp.StatusCode, loc)
	}
	id := strings.TrimSuffix(strings.TrimPrefix(loc, "/models/"), "?saved=1")
	ms, err := srv.Fleet.ListModels(context.Background(), callerFor(t, srv, "mdm@acme.example"))
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, m := range ms {
		if m.ID == id {
			found = true
			dp := m.OPCUA.DataPoints
			if m.Name != "Press P-200" || len(dp) != 1 || dp[0].NodeID != "ns=2;s=Press.Force" || dp[0].SamplingIntervalMS != 250 ||
				dp[0].DeadbandType != "absolute" || dp[0].DeadbandValue != 0.5 || dp[0].WarnAbove == nil || *dp[0].WarnAbove != 800 ||
				dp[0].AlarmAbove == nil || *dp[0].AlarmAbove != 950 || dp[0].WarnBelow != nil ||
				strings.Join(m.RemoteAccess.ConnectionTypes, ",") != "vnc,ssc" || strings.Join(m.RemoteAccess.MachineSubnets, ",") != "10.1.0.0/24" || strings.Join(m.RemoteAccess.SSCPorts, ",") != "tcp/102,udp/161" {
				t.Errorf("stored model: %+v", m)
			}
		}
	}
	if !found {
		t.Fatalf("created model %s not stored", id)
	}
	_, body = mdm.get(loc)
	if !strings.Contains(body, `data-testid="saved"`) || !strings.Contains(body, `value="ns=2;s=Press.Force"`) {
		t.Errorf("saved model page")
	}

	// Edit: a bad subnet on update shows next to the subnets, a duplicate
	// name next to the name.
	edit := validModelForm("Press P-200")
	edit.Set("remote_access.machine_subnets", "10.1.0.1/24")
	code, body = mdm.post("/models/"+id, edit)
	if code != 400 || !strings.Contains(fieldError(body, "remote_access.machine_subnets"), "has host bits set; did you mean 10.1.0.0/24") {
		t.Errorf("bad subnet: %d %q", code, fieldError(body, "remote_access.machine_subnets"))
	}
	edit = validModelForm("CNC-5X")
	code, body = mdm.post("/models/"+id, edit)
	if code != 400 || !strings.Contains(fieldError(body, "name"), "already used") {
		t.Errorf("duplicate name: %d %q\n%s", code, fieldError(body, "name"), body)
	}
	edit = validModelForm("Press P-210")
	edit.Set("opcua.data_points[0].warn_above", "")
	if code, body := mdm.post("/models/"+id, edit); code != 200 || !strings.Contains(body, `value="Press P-210"`) || !strings.Contains(body, "Saved.") {
		t.Errorf("update: %d", code)
	}
}

func callerFor(t *testing.T, srv *servertest.Server, email string) *identity.Caller {
	t.Helper()
	c, err := srv.Identity.CallerFor(context.Background(), user(t, srv, email).ID)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCustomersFollowScope: a Customer Data Manager scoped to one
// customer sees only that customer and its machines; the other customer
// is not found.
func TestCustomersFollowScope(t *testing.T) {
	srv := demo(t)
	ctx := context.Background()
	acme := user(t, srv, "cdm@acme.example").TenantID
	cs, err := srv.Store.ListCustomers(ctx, acme)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, c := range cs {
		ids[c.Name] = c.ID
	}
	if _, err := srv.Identity.CreateUserDirect(ctx, acme, "cdm-sudhaus@acme.example", "CDM Sudhaus", servertest.Password,
		[]store.RoleGrant{{Role: authz.CustomerDataManager, Scope: authz.Scope{Kind: authz.ScopeCustomer, ID: ids["Sudhaus Foods"]}}}); err != nil {
		t.Fatal(err)
	}
	b := sessionBrowser(t, srv, srv.URL, "cdm-sudhaus@acme.example")
	code, body := b.get("/customers")
	if code != 200 || !strings.Contains(body, "Sudhaus Foods") || strings.Contains(body, "Nordwerk Plant") {
		t.Errorf("scoped customer list: %d\n%s", code, body)
	}
	// Machine models are tenant-wide: a customer-scoped role does not
	// reach them, so no link (and the customer page works without them).
	if strings.Contains(body, `data-testid="nav-models"`) {
		t.Errorf("customer-scoped CDM sees the machine models link")
	}
	if code, _ := b.get("/models"); code != 403 {
		t.Errorf("customer-scoped CDM on /models: %d", code)
	}
	if code, body := b.get("/customers/" + ids["Sudhaus Foods"]); code != 200 || !strings.Contains(body, "CNC-5X #2001") {
		t.Errorf("own customer: %d\n%s", code, body)
	}
	if code, body := b.get("/customers/" + ids["Nordwerk Plant"]); code != 404 || strings.Contains(body, "CNC-5X #1041") {
		t.Errorf("customer outside the scope: %d", code)
	}
}
