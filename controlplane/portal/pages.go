package portal

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/cases"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/fleet"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
)

func (p *Portal) loginPage(w http.ResponseWriter, r *http.Request) {
	p.render(w, http.StatusOK, "login", map[string]any{"Next": safeNext(r.URL.Query().Get("next")), "Expired": r.URL.Query().Get("expired") != ""})
}

// safeNext allows only local paths as redirect targets.
func safeNext(n string) string {
	if !strings.HasPrefix(n, "/") || strings.HasPrefix(n, "//") || strings.Contains(n, "\\") {
		return "/"
	}
	return n
}

func (p *Portal) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-site form submissions are refused", http.StatusForbidden)
		return
	}
	email, pw := r.PostFormValue("email"), r.PostFormValue("password")
	token, sess, _, err := p.id.Login(r.Context(), email, pw)
	if err != nil {
		data := map[string]any{"Next": safeNext(r.PostFormValue("next")), "Email": email}
		var ke *errkind.Error
		if errors.As(err, &ke) && ke.Field == "email" {
			data["EmailError"] = ke.Message
		} else if errkind.Of(err) != nil {
			data["Error"] = err.Error()
		} else {
			p.log.Error("login", "err", err)
			data["Error"] = "Something went wrong; try again."
		}
		p.render(w, http.StatusUnauthorized, "login", data)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: token, Path: "/", HttpOnly: true, Secure: p.secure,
		SameSite: http.SameSiteStrictMode, Expires: sess.ExpiresAt})
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (p *Portal) logout(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	_ = p.id.Logout(r.Context(), c)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

type caseRow struct {
	cases.View
	AssetName string
}

func (p *Portal) casesPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	q := r.URL.Query()
	f := cases.ListFilter{Kind: q.Get("kind"), AssignedToMe: q.Get("mine") == "1", State: q.Get("state"), Limit: 200}
	vs, err := p.cases.List(r.Context(), c, f)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	active := "cases"
	if f.AssignedToMe && f.Kind == store.CaseInternal {
		active = "mine"
	}
	p.render(w, http.StatusOK, "cases", map[string]any{"Nav": navFor(c, active), "Cases": vs, "Kind": f.Kind, "Mine": f.AssignedToMe})
}

func (p *Portal) newCasePage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	p.newCaseForm(w, r, c, http.StatusOK, nil, cases.CreateInput{})
}

func (p *Portal) newCaseForm(w http.ResponseWriter, r *http.Request, c *identity.Caller, status int, formErr *errkind.Error, in cases.CreateInput) {
	assets, err := p.fleet.ListAssets(r.Context(), c, "")
	if err != nil {
		p.fail(w, c, err)
		return
	}
	eff := c.Effective()
	kinds := []string{}
	if eff[authz.InternalServiceCases] >= authz.Manage {
		kinds = append(kinds, store.CaseInternal)
	}
	if eff[authz.ServiceCaseManagement] >= authz.Manage {
		kinds = append(kinds, store.CaseShared)
	}
	p.render(w, status, "newcase", map[string]any{"Nav": navFor(c, "cases"), "Assets": assets, "Kinds": kinds, "Err": formErr, "In": in})
}

func (p *Portal) createCase(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	in := cases.CreateInput{AssetID: r.PostFormValue("asset_id"), Kind: r.PostFormValue("kind"), Title: r.PostFormValue("title"), Description: r.PostFormValue("description")}
	v, err := p.cases.Create(r.Context(), c, in)
	if err != nil {
		var ke *errkind.Error
		if errors.As(err, &ke) {
			p.newCaseForm(w, r, c, http.StatusBadRequest, ke, in)
			return
		}
		p.fail(w, c, err)
		return
	}
	http.Redirect(w, r, "/cases/"+v.ID, http.StatusSeeOther)
}

func (p *Portal) caseData(r *http.Request, c *identity.Caller, id string) (map[string]any, error) {
	v, err := p.cases.Get(r.Context(), c, id)
	if err != nil {
		return nil, err
	}
	msgs, err := p.cases.Messages(r.Context(), c, id, 200)
	if err != nil {
		return nil, err
	}
	data := map[string]any{"Nav": navFor(c, "cases"), "Case": v, "Messages": msgs}
	ra, err := p.cases.GetRemoteAccess(r.Context(), c, id)
	if err != nil {
		return nil, err
	}
	data["Remote"] = ra
	if ra.Active {
		data["Remaining"] = int(time.Until(ra.Grant.ExpiresAt).Round(time.Minute) / time.Minute)
		data["Connect"] = p.connectOptions(r, c, id, ra.Grant.ConnectionTypes)
	}
	eff := c.Effective()
	operatorSide := c.Tenant.ID == v.TenantID && eff[authz.ServiceCaseManagement] >= authz.Read && v.State != store.StateClosed
	data["CanActivate"] = operatorSide
	data["CanRequest"] = c.Tenant.ID != v.TenantID && eff[authz.RemoteAccess] >= authz.Manage && !ra.Active
	// Editing: internal cases need Internal Service Cases = manage; the
	// server checks again on submit.
	if (v.Kind == store.CaseInternal && eff[authz.InternalServiceCases] >= authz.Manage) || (v.Kind == store.CaseShared && eff[authz.ServiceCaseManagement] >= authz.Manage) {
		data["CanEdit"] = true
		data["States"] = []string{store.StateNew, store.StateInProgress, store.StateClosed}
		if c.Tenant.ID == v.TenantID {
			engineers, err := p.id.Engineers(r.Context(), c)
			if err != nil {
				return nil, err
			}
			data["Engineers"] = engineers
		}
	}
	return data, nil
}

func (p *Portal) casePage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	data, err := p.caseData(r, c, r.PathValue("id"))
	if err != nil {
		p.fail(w, c, err)
		return
	}
	p.render(w, http.StatusOK, "case", data)
}

func (p *Portal) updateCase(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	cur, err := p.cases.Get(r.Context(), c, id)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	state := r.PostFormValue("state")
	if state == cur.State {
		state = ""
	}
	assignee := r.PostFormValue("assignee_id")
	clear := assignee == "" && cur.AssigneeID != ""
	if assignee == cur.AssigneeID {
		assignee, clear = "", false
	}
	if state == "" && assignee == "" && !clear {
		http.Redirect(w, r, "/cases/"+id, http.StatusSeeOther)
		return
	}
	_, err = p.cases.Update(r.Context(), c, id, state, assignee, clear)
	if state != "" {
		p.grantsChanged() // closing a case ends its grant
	}
	if err != nil {
		data, derr := p.caseData(r, c, id)
		if derr != nil || errkind.Of(err) == nil {
			p.fail(w, c, err)
			return
		}
		data["Error"] = err.Error()
		p.render(w, http.StatusBadRequest, "case", data)
		return
	}
	http.Redirect(w, r, "/cases/"+id, http.StatusSeeOther)
}

func (p *Portal) postMessage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	if _, err := p.cases.Post(r.Context(), c, id, r.PostFormValue("body")); err != nil {
		if r.Header.Get("HX-Request") != "" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(htmlEscape(err.Error())))
			return
		}
		p.fail(w, c, err)
		return
	}
	if r.Header.Get("HX-Request") != "" {
		w.WriteHeader(http.StatusNoContent) // the live stream shows the message
		return
	}
	http.Redirect(w, r, "/cases/"+id+"#chat", http.StatusSeeOther)
}

func (p *Portal) devicesPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	ds, err := p.fleet.ListDevices(r.Context(), c)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	type row struct {
		fleet.DeviceView
		Values []store.Sample
	}
	rows := make([]row, 0, len(ds))
	for _, d := range ds {
		vs, err := p.fleet.LatestValues(r.Context(), c, d.ID)
		if err != nil {
			p.fail(w, c, err)
			return
		}
		rows = append(rows, row{DeviceView: d, Values: vs})
	}
	p.render(w, http.StatusOK, "devices", map[string]any{"Nav": navFor(c, "devices"), "Devices": rows})
}

func htmlEscape(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;")
	return r.Replace(s)
}

// remoteAction handles the remote-access panel's forms.
func (p *Portal) remoteAction(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	var err error
	minutes := func() time.Duration {
		n, _ := strconv.Atoi(r.PostFormValue("minutes"))
		return time.Duration(n) * time.Minute
	}
	switch r.PathValue("action") {
	case "activate":
		_, err = p.cases.Activate(r.Context(), c, id, minutes())
	case "deactivate":
		_, err = p.cases.Deactivate(r.Context(), c, id)
	case "request":
		_, err = p.cases.Request(r.Context(), c, id, r.PostFormValue("reason"), minutes())
	case "approve", "decline":
		_, _, err = p.cases.Decide(r.Context(), c, r.PostFormValue("request_id"), r.PathValue("action") == "approve")
	default:
		err = errkind.NotFoundf("unknown action")
	}
	p.grantsChanged() // like the API: tunnels follow grants now, ending sessions of an ended grant at once
	if err != nil {
		data, derr := p.caseData(r, c, id)
		if derr != nil || errkind.Of(err) == nil {
			p.fail(w, c, err)
			return
		}
		data["RemoteError"] = err.Error()
		p.render(w, http.StatusBadRequest, "case", data)
		return
	}
	http.Redirect(w, r, "/cases/"+id+"#remote", http.StatusSeeOther)
}
