package portal

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/fleet"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// The digital shop floor pages: facilities with their assets, asset
// proposals, and the asset dashboard (seed 003's diagnostics view). Every
// read and change goes through fleet.Service, which checks Digital
// Shopfloor (and Edge Devices for device data) in scope like the API; the
// pages only hide or disable what the user may not do.

// Dashboard parameters.
const (
	// trendWindow is how far back the trend charts reach.
	trendWindow = 15 * time.Minute
	// trendLimit bounds the history samples read per point and refresh.
	trendLimit = 5000
	// trendMaxPoints bounds the vertices of one chart.
	trendMaxPoints = 120
	// eventsShown is how many threshold events the dashboard lists.
	eventsShown = 20
	// livePoll is the dashboard's htmx refresh interval.
	livePoll = "3s"
	// chart size in SVG user units.
	chartW, chartH = 240.0, 48.0
)

// Telemetry name suffixes of the agent's accumulators (agent/cmd/gantry-agent).
const (
	runningHoursSuffix = ".running_hours"
	energyKWhSuffix    = ".energy_kwh"
)

// mountShopfloor registers the shop floor routes (called from Mount).
func (p *Portal) mountShopfloor(mux *http.ServeMux) {
	mux.HandleFunc("GET /shopfloor", p.authed(p.shopfloorPage))
	mux.HandleFunc("POST /shopfloor/facilities", p.authed(p.createFacility))
	mux.HandleFunc("GET /shopfloor/facilities/{id}/edit", p.authed(p.editFacilityPage))
	mux.HandleFunc("POST /shopfloor/facilities/{id}", p.authed(p.updateFacility))
	mux.HandleFunc("POST /shopfloor/assets", p.authed(p.createAsset))
	mux.HandleFunc("GET /shopfloor/assets/{id}", p.authed(p.assetDashboard))
	mux.HandleFunc("GET /shopfloor/assets/{id}/live", p.authedPartial(p.assetDashboardLive))
	mux.HandleFunc("GET /shopfloor/assets/{id}/edit", p.authed(p.editAssetPage))
	mux.HandleFunc("POST /shopfloor/assets/{id}", p.authed(p.updateAsset))
	mux.HandleFunc("POST /shopfloor/proposals/{id}/accept", p.authed(p.acceptProposal))
	mux.HandleFunc("POST /shopfloor/proposals/{id}/reject", p.authed(p.rejectProposal))
	mux.HandleFunc("GET /devices/{id}/dashboard", p.authed(p.deviceDashboard))
	mux.HandleFunc("GET /devices/{id}/dashboard/live", p.authedPartial(p.deviceDashboardLive))
}

// authedPartial is authed for htmx refreshes (GET only): without a valid
// session it answers 401 with HX-Redirect, so htmx opens the login page
// instead of swapping it into the polled section.
func (p *Portal) authedPartial(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie(CookieName)
		var c *identity.Caller
		if err == nil {
			c, err = p.id.Authenticate(r.Context(), ck.Value)
		}
		if err != nil {
			w.Header().Set("HX-Redirect", "/login?expired=1")
			http.Error(w, "your session has ended; log in again", http.StatusUnauthorized)
			return
		}
		h(w, r, c)
	}
}

// shopfloorNav reports whether the caller may read the shop floor pages.
func shopfloorNav(c *identity.Caller) bool {
	return c.Tenant.Kind == authz.KindOperator && c.Effective()[authz.DigitalShopfloor] >= authz.Read
}

// manageReason explains a disabled control to a user who may only read.
const manageReason = "Needs Digital Shopfloor = manage here; your roles give read access only."

// formErrors maps a form field to its message; "" is the form as a whole.
type formErrors map[string]string

// formError turns a user-facing validation or conflict error into form
// errors; other errors (denied, not found, internal) are for p.fail.
func formError(err error) (formErrors, bool) {
	var ke *errkind.Error
	if !errors.As(err, &ke) {
		return nil, false
	}
	switch errkind.Of(err) {
	case errkind.Invalid, errkind.Conflict, errkind.Precondition:
		return formErrors{ke.Field: ke.Message}, true
	}
	return nil, false
}

type assetRow struct {
	store.Asset
	CanManage bool
}

type facilityRow struct {
	store.Facility
	Assets    []assetRow
	CanManage bool
}

// shopfloorForm is what the shop floor page's forms send back on errors.
type shopfloorForm struct {
	FacilityName                       string
	AssetFacility, AssetName, AssetSNo string
	FacErr, AssetErr, PropErr          formErrors
}

func (p *Portal) shopfloorPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	p.renderShopfloor(w, r, c, http.StatusOK, shopfloorForm{})
}

func (p *Portal) renderShopfloor(w http.ResponseWriter, r *http.Request, c *identity.Caller, status int, form shopfloorForm) {
	ctx := r.Context()
	fs, err := p.fleet.ListFacilities(ctx, c)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	as, err := p.fleet.ListAssets(ctx, c, "")
	if err != nil {
		p.fail(w, c, err)
		return
	}
	props, err := p.fleet.ListProposals(ctx, c)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	rows := make([]facilityRow, 0, len(fs))
	var manageable []store.Facility
	for _, f := range fs {
		row := facilityRow{Facility: f, CanManage: fleet.MayManageFacility(c, f)}
		for _, a := range as {
			if a.FacilityID == f.ID {
				row.Assets = append(row.Assets, assetRow{Asset: a, CanManage: fleet.MayManageAsset(c, a)})
			}
		}
		if row.CanManage {
			manageable = append(manageable, f)
		}
		rows = append(rows, row)
	}
	var pending []store.AssetProposal
	for _, pr := range props {
		if pr.State == store.ProposalPending {
			pending = append(pending, pr)
		}
	}
	eff := c.Effective()
	p.render(w, status, "shopfloor", map[string]any{
		"Nav":               navFor(c, "shopfloor"),
		"Facilities":        rows,
		"Manageable":        manageable,
		"Proposals":         pending,
		"CanCreateFacility": facilityTenantWide(c),
		"CanReject":         eff[authz.DigitalShopfloor] >= authz.Manage,
		"Reason":            manageReason,
		"Form":              form,
	})
}

// facilityTenantWide: creating facilities needs Digital Shopfloor = manage
// on the whole tenant (fleet.CreateFacility).
func facilityTenantWide(c *identity.Caller) bool {
	return authz.Decide(c.Principal, authz.DigitalShopfloor, authz.Manage, authz.Resource{Owner: authz.Location{Tenant: c.Tenant.ID}}).Allowed
}

func (p *Portal) createFacility(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	name := r.PostFormValue("name")
	f, err := p.fleet.CreateFacility(r.Context(), c, name)
	if err != nil {
		if fe, ok := formError(err); ok {
			p.renderShopfloor(w, r, c, http.StatusBadRequest, shopfloorForm{FacilityName: name, FacErr: fe})
			return
		}
		p.fail(w, c, err)
		return
	}
	http.Redirect(w, r, "/shopfloor#facility-"+f.ID, http.StatusSeeOther)
}

func (p *Portal) createAsset(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	form := shopfloorForm{AssetFacility: r.PostFormValue("facility_id"), AssetName: r.PostFormValue("name"), AssetSNo: r.PostFormValue("serial_number")}
	a, err := p.fleet.CreateAsset(r.Context(), c, form.AssetFacility, form.AssetName, form.AssetSNo)
	if err != nil {
		if fe, ok := formError(err); ok {
			form.AssetErr = fe
			p.renderShopfloor(w, r, c, http.StatusBadRequest, form)
			return
		}
		p.fail(w, c, err)
		return
	}
	http.Redirect(w, r, "/shopfloor#asset-"+a.ID, http.StatusSeeOther)
}

func (p *Portal) acceptProposal(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	a, err := p.fleet.AcceptProposal(r.Context(), c, id, r.PostFormValue("facility_id"))
	if err != nil {
		if fe, ok := formError(err); ok {
			p.renderShopfloor(w, r, c, http.StatusBadRequest, shopfloorForm{PropErr: fe})
			return
		}
		p.fail(w, c, err)
		return
	}
	http.Redirect(w, r, "/shopfloor#asset-"+a.ID, http.StatusSeeOther)
}

func (p *Portal) rejectProposal(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	if err := p.fleet.RejectProposal(r.Context(), c, id); err != nil {
		if fe, ok := formError(err); ok {
			p.renderShopfloor(w, r, c, http.StatusBadRequest, shopfloorForm{PropErr: fe})
			return
		}
		p.fail(w, c, err)
		return
	}
	http.Redirect(w, r, "/shopfloor", http.StatusSeeOther)
}

// ---- edit forms ----

func (p *Portal) editFacilityPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	f, err := p.fleet.GetFacility(r.Context(), c, r.PathValue("id"))
	if err != nil {
		p.fail(w, c, err)
		return
	}
	p.renderFacilityForm(w, c, http.StatusOK, f, f.Name, nil)
}

func (p *Portal) renderFacilityForm(w http.ResponseWriter, c *identity.Caller, status int, f store.Facility, name string, fe formErrors) {
	p.render(w, status, "facility", map[string]any{"Nav": navFor(c, "shopfloor"), "Facility": f, "Name": name, "Err": fe,
		"CanManage": fleet.MayManageFacility(c, f), "Reason": manageReason})
}

func (p *Portal) updateFacility(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id, name := r.PathValue("id"), r.PostFormValue("name")
	if _, err := p.fleet.UpdateFacility(r.Context(), c, id, name); err != nil {
		if fe, ok := formError(err); ok {
			f, gerr := p.fleet.GetFacility(r.Context(), c, id)
			if gerr != nil {
				p.fail(w, c, gerr)
				return
			}
			p.renderFacilityForm(w, c, http.StatusBadRequest, f, name, fe)
			return
		}
		p.fail(w, c, err)
		return
	}
	http.Redirect(w, r, "/shopfloor#facility-"+id, http.StatusSeeOther)
}

func (p *Portal) editAssetPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	a, err := p.fleet.GetAsset(r.Context(), c, r.PathValue("id"))
	if err != nil {
		p.fail(w, c, err)
		return
	}
	p.renderAssetForm(w, r, c, http.StatusOK, a, a, nil)
}

// renderAssetForm shows the edit form of cur with the values of in.
func (p *Portal) renderAssetForm(w http.ResponseWriter, r *http.Request, c *identity.Caller, status int, cur, in store.Asset, fe formErrors) {
	fs, err := p.fleet.ListFacilities(r.Context(), c)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	// Offer the current facility and those the user may move assets into.
	var targets []store.Facility
	for _, f := range fs {
		if f.ID == cur.FacilityID || fleet.MayManageFacility(c, f) {
			targets = append(targets, f)
		}
	}
	p.render(w, status, "assetedit", map[string]any{"Nav": navFor(c, "shopfloor"), "Asset": cur, "In": in, "Facilities": targets, "Err": fe,
		"CanManage": fleet.MayManageAsset(c, cur), "Reason": manageReason})
}

func (p *Portal) updateAsset(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	in := store.Asset{ID: id, FacilityID: r.PostFormValue("facility_id"), Name: r.PostFormValue("name"), SerialNumber: r.PostFormValue("serial_number")}
	if _, err := p.fleet.UpdateAsset(r.Context(), c, id, in.FacilityID, in.Name, in.SerialNumber); err != nil {
		if fe, ok := formError(err); ok {
			cur, gerr := p.fleet.GetAsset(r.Context(), c, id)
			if gerr != nil {
				p.fail(w, c, gerr)
				return
			}
			p.renderAssetForm(w, r, c, http.StatusBadRequest, cur, in, fe)
			return
		}
		p.fail(w, c, err)
		return
	}
	http.Redirect(w, r, "/shopfloor#asset-"+id, http.StatusSeeOther)
}

// ---- dashboard ----

// pointView is one data point's latest value with its trend.
type pointView struct {
	Point      string
	Value      string
	Status     string // Good, Uncertain or Bad (with the code)
	StatusKind string // good, uncertain, bad: CSS class
	At         string // source timestamp
	Trend      trend
}

// trend is a server-rendered sparkline of a point's recent history.
type trend struct {
	Points   string // SVG polyline points
	N        int    // vertices
	Min, Max string
}

// counterView is an accumulator (running hours or energy) of a point.
type counterView struct {
	Point string
	Value string
	At    string
}

type eventView struct {
	store.Notification
	AtText string
}

// deviceDash is the diagnostics of one edge device.
type deviceDash struct {
	fleet.DeviceView
	Points       []pointView
	RunningHours []counterView
	Energy       []counterView
	Events       []eventView
	OPCUA        *templateView // nil: not shown (operators, asset dashboards)
}

// templateView is the OPC-UA template delivery state of a device.
type templateView struct {
	State     string // none, pending, applied, error
	StateText string
	Model     string // name (ID), or what the empty template means
	Version   uint64
	Hash      string // first 12 hex digits
	Sent      string
	Acked     string
	Running   string // the version the agent runs when not Version
	Error     string
}

// newTemplateView describes d's template delivery (nil when d carries
// none, as in device lists).
func newTemplateView(d fleet.DeviceView) *templateView {
	t := d.Template
	if t == nil {
		return nil
	}
	if t.State == fleet.TemplateNone || t.Version == 0 {
		return &templateView{State: fleet.TemplateNone, StateText: "none delivered yet"}
	}
	v := &templateView{State: t.State, Version: t.Version, Hash: t.Hash, Error: t.Error, Sent: stamp(t.SentAt),
		Model: "none (empty template: collection stopped)"}
	if len(v.Hash) > 12 {
		v.Hash = v.Hash[:12]
	}
	switch {
	case d.TemplateModel != "":
		v.Model = d.TemplateModel + " (" + t.ModelID + ")"
	case t.ModelID != "":
		v.Model = t.ModelID
	}
	if !t.AckedAt.IsZero() {
		v.Acked = stamp(t.AckedAt)
	}
	switch t.State {
	case store.TemplatePending:
		v.StateText = "pending: sent, no answer yet"
	case store.TemplateApplied:
		v.StateText = "applied by the agent"
	case store.TemplateError:
		v.StateText = "refused by the agent"
	default:
		v.StateText = t.State
	}
	if t.AppliedVersion != t.Version {
		v.Running = "none"
		if t.AppliedVersion != 0 {
			v.Running = "v" + strconv.FormatUint(t.AppliedVersion, 10)
		}
	}
	return v
}

func (p *Portal) assetDashboard(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	data, err := p.assetDashData(r, c)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	p.render(w, http.StatusOK, "asset", data)
}

func (p *Portal) assetDashboardLive(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	data, err := p.assetDashData(r, c)
	if err != nil {
		p.failPartial(w, err)
		return
	}
	p.renderPartial(w, "asset", "live", data)
}

func (p *Portal) deviceDashboard(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	data, err := p.deviceDashData(r, c)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	p.render(w, http.StatusOK, "asset", data)
}

func (p *Portal) deviceDashboardLive(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	data, err := p.deviceDashData(r, c)
	if err != nil {
		p.failPartial(w, err)
		return
	}
	p.renderPartial(w, "asset", "live", data)
}

// assetDashData gathers the diagnostics of an asset: the devices linked to
// it (through its customer machine) with their latest values, trends,
// accumulators and the asset's threshold events.
func (p *Portal) assetDashData(r *http.Request, c *identity.Caller) (map[string]any, error) {
	ctx := r.Context()
	a, err := p.fleet.GetAsset(ctx, c, r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	f, err := p.fleet.GetFacility(ctx, c, a.FacilityID)
	if err != nil {
		return nil, err
	}
	ds, err := p.fleet.ListDevices(ctx, c)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var dash []deviceDash
	for _, d := range ds {
		if d.AssetID != a.ID {
			continue
		}
		dd, err := p.deviceDiagnostics(r, c, d, a.ID, now)
		if err != nil {
			return nil, err
		}
		dash = append(dash, dd)
	}
	return map[string]any{"Nav": navFor(c, "shopfloor"), "Asset": a, "Facility": f, "Devices": dash,
		"LiveURL": "/shopfloor/assets/" + a.ID + "/live", "Poll": "every " + livePoll, "Window": int(trendWindow / time.Minute), "Now": now.Format("15:04:05")}, nil
}

// deviceDashData is the dashboard of one device (providers reach it from
// the devices page; operators see only devices of assets they may read).
func (p *Portal) deviceDashData(r *http.Request, c *identity.Caller) (map[string]any, error) {
	d, err := p.fleet.GetDevice(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	dd, err := p.deviceDiagnostics(r, c, d, "", now)
	if err != nil {
		return nil, err
	}
	return map[string]any{"Nav": navFor(c, "devices"), "Device": d, "Devices": []deviceDash{dd},
		"LiveURL": "/devices/" + d.ID + "/dashboard/live", "Poll": "every " + livePoll, "Window": int(trendWindow / time.Minute), "Now": now.Format("15:04:05")}, nil
}

// deviceDiagnostics reads a device's data through the fleet service (which
// checks that the caller may read the device). assetID, if set, limits
// the events to that asset's.
func (p *Portal) deviceDiagnostics(r *http.Request, c *identity.Caller, d fleet.DeviceView, assetID string, now time.Time) (deviceDash, error) {
	ctx := r.Context()
	dd := deviceDash{DeviceView: d, OPCUA: newTemplateView(d)}
	latest, err := p.fleet.LatestValues(ctx, c, d.ID)
	if err != nil {
		return dd, err
	}
	slices.SortFunc(latest, func(a, b store.Sample) int { return strings.Compare(a.Point, b.Point) })
	from := now.Add(-trendWindow)
	for _, s := range latest {
		switch {
		case strings.HasSuffix(s.Point, runningHoursSuffix):
			dd.RunningHours = append(dd.RunningHours, counterView{Point: strings.TrimSuffix(s.Point, runningHoursSuffix), Value: fmt.Sprintf("%.2f h", s.Value), At: stamp(s.At)})
		case strings.HasSuffix(s.Point, energyKWhSuffix):
			dd.Energy = append(dd.Energy, counterView{Point: strings.TrimSuffix(s.Point, energyKWhSuffix), Value: fmt.Sprintf("%.3f kWh", s.Value), At: stamp(s.At)})
		default:
			hist, err := p.fleet.History(ctx, c, d.ID, s.Point, from, now.Add(time.Second), trendLimit)
			if err != nil {
				return dd, err
			}
			st, kind := opcStatus(s.Status)
			dd.Points = append(dd.Points, pointView{Point: s.Point, Value: strconv.FormatFloat(s.Value, 'g', 6, 64), Status: st, StatusKind: kind,
				At: stamp(s.At), Trend: sparkline(hist, from, now)})
		}
	}
	ns, err := p.fleet.Notifications(ctx, c, d.ID, 100)
	if err != nil {
		return dd, err
	}
	for _, n := range ns {
		if (assetID == "" || n.AssetID == assetID) && len(dd.Events) < eventsShown {
			dd.Events = append(dd.Events, eventView{Notification: n, AtText: stamp(n.At)})
		}
	}
	return dd, nil
}

func stamp(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") }

// opcStatus names an OPC-UA status code by its severity bits.
func opcStatus(code uint32) (string, string) {
	switch code >> 30 {
	case 0:
		if code == 0 {
			return "Good", "good"
		}
		return fmt.Sprintf("Good (0x%08X)", code), "good"
	case 1:
		return fmt.Sprintf("Uncertain (0x%08X)", code), "uncertain"
	}
	return fmt.Sprintf("Bad (0x%08X)", code), "bad"
}

// sparkline maps samples in [from, to] onto the chart: time on x (from
// the first sample, so a device that just started still fills the chart),
// value on y (scaled to the samples' range). Bad samples are left out; at
// most trendMaxPoints vertices (evenly picked, always with the newest). A
// single sample is drawn as a level line.
func sparkline(hist []store.Sample, from, to time.Time) trend {
	good := make([]store.Sample, 0, len(hist))
	for _, s := range hist {
		if s.Status>>30 != 2 && !math.IsNaN(s.Value) && !math.IsInf(s.Value, 0) {
			good = append(good, s)
		}
	}
	if len(good) == 0 {
		return trend{}
	}
	if len(good) > trendMaxPoints {
		picked := make([]store.Sample, 0, trendMaxPoints)
		step := float64(len(good)-1) / float64(trendMaxPoints-1)
		for i := range trendMaxPoints {
			picked = append(picked, good[int(math.Round(float64(i)*step))])
		}
		good = picked
	}
	lo, hi := good[0].Value, good[0].Value
	for _, s := range good {
		lo, hi = min(lo, s.Value), max(hi, s.Value)
	}
	tr := trend{N: len(good), Min: strconv.FormatFloat(lo, 'g', 6, 64), Max: strconv.FormatFloat(hi, 'g', 6, 64)}
	if len(good) == 1 {
		tr.Points = fmt.Sprintf("0,%.1f %.1f,%.1f", chartH/2, chartW, chartH/2)
		return tr
	}
	if first := good[0].At; first.After(from) {
		from = first
	}
	span := max(to.Sub(from).Seconds(), 1)
	var b strings.Builder
	for i, s := range good {
		x := chartW * s.At.Sub(from).Seconds() / span
		x = min(max(x, 0), chartW)
		y := chartH / 2
		if hi > lo {
			y = 2 + (chartH-4)*(hi-s.Value)/(hi-lo)
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", x, y)
	}
	tr.Points = b.String()
	return tr
}

// renderPartial renders one named template of a page (htmx swaps).
func (p *Portal) renderPartial(w http.ResponseWriter, page, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := p.tmpl[page].ExecuteTemplate(w, name, data); err != nil {
		p.log.Error("render", "page", page, "template", name, "err", err)
	}
}

// failPartial answers a failed htmx refresh with its status and asks htmx
// to reload the page (HX-Refresh), so the user sees the error page rather
// than values that stopped updating.
func (p *Portal) failPartial(w http.ResponseWriter, err error) {
	status, msg := p.statusFor(err)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("HX-Refresh", "true")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `<p class="error" data-testid="live-error">%s</p>`, htmlEscape(msg))
}
