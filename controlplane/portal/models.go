package portal

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/fleet"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// Machine models with their remote-access and OPC-UA templates (provider
// tenants, Machine Models ≥ read to see, = manage to change). The form's
// input names are the validation paths of pkg/machinemodel
// ("opcua.data_points[2].node_id"), so a validation problem lands next to
// the field it is about.

// maxFormPoints bounds the data-point rows one form post may carry.
const maxFormPoints = machinemodel.MaxDataPoints

// Form field names that are not per data point.
const (
	fName      = "name"
	fConnTypes = "remote_access.connection_types"
	fVNC       = "remote_access.vnc_targets"
	fDataLink  = "remote_access.data_link_targets"
	fSubnets   = "remote_access.machine_subnets"
	fSSCPorts  = "remote_access.ssc_ports"
	fEndpoint  = "opcua.endpoint_url"
	fSecurity  = "opcua.security_mode"
	fPoints    = "opcua.data_points"
)

// pointCols are a data point's form columns in order: the JSON name of
// the field in machinemodel.DataPoint, its label and input kind.
var pointCols = []struct {
	Key, Label, Kind string
	Options          []string
}{
	{"node_id", "Node ID", "text", nil},
	{"name", "Name", "text", nil},
	{"unit", "Unit", "text", nil},
	{"sampling_interval_ms", "Sampling interval (ms)", "number", nil},
	{"deadband_type", "Deadband", "select", []string{"none", "absolute", "percent"}},
	{"deadband_value", "Deadband value", "number", nil},
	{"warn_above", "Warn above", "number", nil},
	{"alarm_above", "Alarm above", "number", nil},
	{"warn_below", "Warn below", "number", nil},
	{"alarm_below", "Alarm below", "number", nil},
	{"hysteresis", "Hysteresis", "number", nil},
	{"delay_ms", "Delay (ms)", "number", nil},
	{"role", "Role", "select", []string{"", machinemodel.RoleRunning, machinemodel.RoleEnergyKWh, machinemodel.RolePowerKW}},
	{"open_case_on_alarm", "Open a case on alarm", "checkbox", nil},
}

// modelForm is what the model form shows: the user's raw input (kept
// when saving fails) and the problems per field.
type modelForm struct {
	ID             string
	Name           string
	ConnTypes      []string
	VNCTargets     string // one host:port per line
	DataLinks      string
	Subnets        string // one CIDR per line
	SSCPorts       string // one port rule per line (tcp/102, udp/161, icmp)
	Endpoint       string
	Security       string
	Points         []map[string]string // column key → raw value
	Errors         map[string]string   // form field name → message
	General        string              // a problem with no field
	ReadOnlyReason string
	Saved          bool
}

// Err returns the problem of a form field, if any.
func (f *modelForm) Err(field string) string { return f.Errors[field] }

// HasConn reports whether a connection type is ticked.
func (f *modelForm) HasConn(t string) bool { return slices.Contains(f.ConnTypes, t) }

// pointField is one cell of a data-point row for the template.
type pointField struct {
	Name, Label, Kind, Value, Err string
	Options                       []string
}

// pointRow is one data point of the form.
type pointRow struct {
	Num    int // 1-based, for people
	Fields []pointField
}

// Rows returns the data-point rows as fields with their problems.
func (f *modelForm) Rows() []pointRow {
	out := make([]pointRow, len(f.Points))
	for i, p := range f.Points {
		out[i].Num = i + 1
		for _, c := range pointCols {
			pf := pointField{Name: pointName(i, c.Key), Label: c.Label, Kind: c.Kind, Value: p[c.Key], Options: c.Options}
			pf.Err = f.Errors[pf.Name]
			out[i].Fields = append(out[i].Fields, pf)
		}
	}
	return out
}

func pointName(i int, key string) string { return fmt.Sprintf("%s[%d].%s", fPoints, i, key) }

func lines(ss []string) string { return strings.Join(ss, "\n") }

func fmtFloat(p *float64) string {
	if p == nil {
		return ""
	}
	return strconv.FormatFloat(*p, 'g', -1, 64)
}

// formFromModel fills the form from a stored model.
func formFromModel(m fleet.Model) *modelForm {
	f := &modelForm{ID: m.ID, Name: m.Name, ConnTypes: m.RemoteAccess.ConnectionTypes, VNCTargets: lines(m.RemoteAccess.VNCTargets),
		DataLinks: lines(m.RemoteAccess.DataLinkTargets), Subnets: lines(m.RemoteAccess.MachineSubnets), SSCPorts: lines(m.RemoteAccess.SSCPorts),
		Endpoint: m.OPCUA.EndpointURL, Security: m.OPCUA.SecurityMode, Errors: map[string]string{}}
	for _, d := range m.OPCUA.DataPoints {
		p := map[string]string{"node_id": d.NodeID, "name": d.Name, "unit": d.Unit, "deadband_type": d.DeadbandType, "role": d.Role,
			"warn_above": fmtFloat(d.WarnAbove), "alarm_above": fmtFloat(d.AlarmAbove), "warn_below": fmtFloat(d.WarnBelow), "alarm_below": fmtFloat(d.AlarmBelow)}
		if d.SamplingIntervalMS != 0 {
			p["sampling_interval_ms"] = strconv.FormatUint(uint64(d.SamplingIntervalMS), 10)
		}
		if d.DeadbandValue != 0 {
			p["deadband_value"] = strconv.FormatFloat(d.DeadbandValue, 'g', -1, 64)
		}
		if d.Hysteresis != 0 {
			p["hysteresis"] = strconv.FormatFloat(d.Hysteresis, 'g', -1, 64)
		}
		if d.DelayMS != 0 {
			p["delay_ms"] = strconv.FormatUint(uint64(d.DelayMS), 10)
		}
		if d.OpenCaseOnAlarm {
			p["open_case_on_alarm"] = "on"
		}
		f.Points = append(f.Points, p)
	}
	return f
}

var pointKeyRE = regexp.MustCompile(`^opcua\.data_points\[(\d{1,6})\]\.([a-z_]+)$`)

// formFromRequest reads the posted form. Rows left completely empty are
// dropped (the form always offers a blank row), unless keepBlank.
func formFromRequest(r *http.Request, keepBlank bool) (*modelForm, error) {
	if err := r.ParseForm(); err != nil {
		return nil, errkind.Invalidf("", "the form could not be read: %v", err)
	}
	pf := r.PostForm
	f := &modelForm{Name: pf.Get(fName), ConnTypes: pf[fConnTypes], VNCTargets: pf.Get(fVNC), DataLinks: pf.Get(fDataLink),
		Subnets: pf.Get(fSubnets), SSCPorts: pf.Get(fSSCPorts), Endpoint: pf.Get(fEndpoint), Security: pf.Get(fSecurity), Errors: map[string]string{}}
	rows := map[int]map[string]string{}
	maxRow := -1
	for k, v := range pf {
		m := pointKeyRE.FindStringSubmatch(k)
		if m == nil || len(v) == 0 {
			continue
		}
		i, _ := strconv.Atoi(m[1])
		if i >= maxFormPoints+1 {
			return nil, errkind.Invalidf(fPoints, "at most %d data points", machinemodel.MaxDataPoints)
		}
		if rows[i] == nil {
			rows[i] = map[string]string{}
		}
		rows[i][m[2]] = strings.TrimSpace(v[0])
		maxRow = max(maxRow, i)
	}
	for i := 0; i <= maxRow; i++ {
		row := rows[i]
		blank := true
		for k, v := range row {
			if v != "" && !(k == "deadband_type" && v == "none") {
				blank = false
			}
		}
		if row == nil { // an index nobody posted
			continue
		}
		if !blank || keepBlank {
			f.Points = append(f.Points, row)
		}
	}
	return f, nil
}

// model converts the form into a model; input that is not even of the
// right type (a number field with letters) is recorded in f.Errors.
func (f *modelForm) model() fleet.Model {
	m := fleet.Model{ID: f.ID, Name: strings.TrimSpace(f.Name)}
	m.RemoteAccess.ConnectionTypes = f.ConnTypes
	m.RemoteAccess.VNCTargets = splitLines(f.VNCTargets)
	m.RemoteAccess.DataLinkTargets = splitLines(f.DataLinks)
	m.RemoteAccess.MachineSubnets = splitLines(f.Subnets)
	m.RemoteAccess.SSCPorts = splitLines(f.SSCPorts)
	m.OPCUA.EndpointURL = strings.TrimSpace(f.Endpoint)
	m.OPCUA.SecurityMode = f.Security
	for i, p := range f.Points {
		d := machinemodel.DataPoint{NodeID: p["node_id"], Name: p["name"], Unit: p["unit"], DeadbandType: p["deadband_type"], Role: p["role"],
			OpenCaseOnAlarm: p["open_case_on_alarm"] != ""}
		if d.DeadbandType == "none" {
			d.DeadbandType = ""
		}
		num := func(key string) *float64 {
			s := p[key]
			if s == "" {
				return nil
			}
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				f.Errors[pointName(i, key)] = fmt.Sprintf("%q is not a number", s)
				return nil
			}
			return &v
		}
		whole := func(key string) uint32 {
			s := p[key]
			if s == "" {
				return 0
			}
			v, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				f.Errors[pointName(i, key)] = fmt.Sprintf("%q is not a whole number of milliseconds", s)
			}
			return uint32(v)
		}
		d.SamplingIntervalMS = whole("sampling_interval_ms")
		d.DelayMS = whole("delay_ms")
		if v := num("deadband_value"); v != nil {
			d.DeadbandValue = *v
		}
		if v := num("hysteresis"); v != nil {
			d.Hysteresis = *v
		}
		d.WarnAbove, d.AlarmAbove, d.WarnBelow, d.AlarmBelow = num("warn_above"), num("alarm_above"), num("warn_below"), num("alarm_below")
		m.OPCUA.DataPoints = append(m.OPCUA.DataPoints, d)
	}
	// No OPC-UA endpoint and no points: the model has no OPC-UA data (the
	// security select always sends a value).
	if m.OPCUA.EndpointURL == "" && len(m.OPCUA.DataPoints) == 0 {
		m.OPCUA.SecurityMode = ""
	}
	return m
}

func splitLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

var listIndexRE = regexp.MustCompile(`^(remote_access\.[a-z_]+)\[(\d+)\]$`)

// fieldFor maps a validation path to the form field that shows it and
// prefixes list entries with their line.
func fieldFor(path, msg string) (string, string) {
	if m := listIndexRE.FindStringSubmatch(path); m != nil {
		n, _ := strconv.Atoi(m[2])
		if m[1] == fConnTypes {
			return m[1], msg
		}
		return m[1], fmt.Sprintf("line %d: %s", n+1, msg)
	}
	return path, msg
}

// addProblems records every problem of m's templates next to its field.
// The service validates again (and decides); this only spreads its
// findings over the form, since the service's error names the first.
func (f *modelForm) addProblems(m fleet.Model) {
	for _, p := range append(m.RemoteAccess.Validate(), m.OPCUA.Validate()...) {
		k, msg := fieldFor(p.Path, p.Message)
		if _, taken := f.Errors[k]; !taken {
			f.Errors[k] = msg
		}
	}
}

// canManageModels: whether the form is editable for the caller (the
// service decides on save).
func canManageModels(c *identity.Caller) bool { return modelsAllowed(c, authz.Manage) }

const readOnlyModels = "Read only: changing machine models and their templates needs Machine Models = manage (Master Data Manager)."

func (p *Portal) modelsPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	ms, err := p.fleet.ListModels(r.Context(), c)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	p.render(w, http.StatusOK, "models", map[string]any{"Nav": navFor(c, "models"), "Models": ms, "CanManage": canManageModels(c)})
}

func (p *Portal) newModelPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	if _, err := p.fleet.ListModels(r.Context(), c); err != nil { // Machine Models ≥ read, provider tenant
		p.fail(w, c, err)
		return
	}
	if !canManageModels(c) {
		p.fail(w, c, errkind.Deniedf("cannot create machine models: your roles give Machine Models %s; creating needs manage", c.Effective()[authz.MachineModels]))
		return
	}
	f := &modelForm{Security: "None", Errors: map[string]string{}}
	p.modelForm(w, c, http.StatusOK, f, 1)
}

func (p *Portal) modelPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	m, err := p.fleet.GetModel(r.Context(), c, r.PathValue("id"))
	if err != nil {
		p.fail(w, c, err)
		return
	}
	f := formFromModel(m)
	f.Saved = r.URL.Query().Get("saved") != ""
	p.modelForm(w, c, http.StatusOK, f, 1)
}

// modelForm renders the form with blank extra rows for new data points.
func (p *Portal) modelForm(w http.ResponseWriter, c *identity.Caller, status int, f *modelForm, blank int) {
	if !canManageModels(c) {
		f.ReadOnlyReason = readOnlyModels
		blank = 0
	}
	for range blank {
		f.Points = append(f.Points, map[string]string{})
	}
	if f.Security == "" {
		f.Security = "None"
	}
	p.render(w, status, "model", map[string]any{"Nav": navFor(c, "models"), "Form": f, "Cols": pointCols,
		"Conns":    []string{machinemodel.ConnVNC, machinemodel.ConnDataLink, machinemodel.ConnSSC},
		"Security": []string{"None", "Sign", "SignAndEncrypt"}})
}

// saveModel handles POST /models (create) and POST /models/{id} (update).
func (p *Portal) saveModel(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	addRow := r.PostFormValue("add_point") != ""
	f, err := formFromRequest(r, addRow)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	f.ID = id
	if addRow { // "Add a data point": show the form again, save nothing
		var err error
		if id != "" {
			_, err = p.fleet.GetModel(r.Context(), c, id)
		} else {
			_, err = p.fleet.ListModels(r.Context(), c)
		}
		if err != nil {
			p.fail(w, c, err)
			return
		}
		p.modelForm(w, c, http.StatusOK, f, 1)
		return
	}
	m := f.model()
	if len(f.Errors) > 0 {
		f.General = "Some values are not numbers; nothing was saved."
		f.addProblems(m)
		p.modelForm(w, c, http.StatusBadRequest, f, 1)
		return
	}
	if id == "" {
		m, err = p.fleet.CreateModel(r.Context(), c, m)
	} else {
		m, err = p.fleet.UpdateModel(r.Context(), c, m)
	}
	if err != nil {
		var ke *errkind.Error
		k := errkind.Of(err)
		if errors.As(err, &ke) && (k == errkind.Invalid || k == errkind.Conflict) {
			f.addProblems(f.model())
			if ke.Field != "" && !strings.HasPrefix(ke.Field, "remote_access.") && !strings.HasPrefix(ke.Field, "opcua.") {
				f.Errors[ke.Field] = ke.Message
			}
			if len(f.Errors) == 0 {
				f.General = p.userMessage(err)
			} else {
				f.General = "Nothing was saved; fix the fields marked below."
			}
			p.modelForm(w, c, http.StatusBadRequest, f, 1)
			return
		}
		p.fail(w, c, err)
		return
	}
	p.log.Info("machine model saved", "model", m.ID, "tenant", c.Tenant.ID, "user", c.User.ID, "created", id == "")
	http.Redirect(w, r, "/models/"+m.ID+"?saved=1", http.StatusSeeOther)
}
