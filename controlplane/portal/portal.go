// Package portal serves the browser portal: server-rendered Go templates
// (htmx for small live updates), embedded in the binary. Every page and
// form goes through the same identity, fleet and case services as the API,
// so the server enforces every rule; the templates only hide what the
// user may not do. Sessions use an HttpOnly, SameSite=Strict cookie
// carrying the same token as the API's bearer header; state-changing
// requests must come from the portal's own origin.
package portal

import (
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/cases"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/fleet"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// CookieName is the session cookie (same value as the API bearer token).
const CookieName = "gantry_session"

// Portal serves the pages. Safe for concurrent use.
type Portal struct {
	id     *identity.Service
	fleet  *fleet.Service
	cases  *cases.Service
	remote RemoteSessions // nil: remote access disabled (no WireGuard hub)
	ssc    SSCIssuer      // nil: no SSC configs (no WireGuard hub)
	secure bool           // set Secure on cookies (HTTPS)
	log    *slog.Logger
	tmpl   map[string]*template.Template
}

// New parses the templates. secure marks cookies Secure (HTTPS deployments).
func New(id *identity.Service, fl *fleet.Service, cs *cases.Service, secure bool, logger *slog.Logger) (*Portal, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Portal{id: id, fleet: fl, cases: cs, secure: secure, log: logger, tmpl: map[string]*template.Template{}}
	funcs := template.FuncMap{
		"when":  func(t time.Time) string { return t.Local().Format("2006-01-02 15:04") },
		"label": stateLabel,
		"args":  templateArgs,
		"scope": func(k authz.ScopeKind) string { return stateLabel(string(k)) },
		"connName": func(c string) string {
			return map[string]string{"vnc": "VNC tunnel", "data_link": "SSC Data Link", "ssc": "Secure Service Connect"}[c]
		},
	}
	for _, page := range []string{"login", "cases", "case", "newcase", "users", "devices", "error", "invite", "register", "userdelete", "audit", "roles", "company", "vnc", "shopfloor", "facility", "assetedit", "asset", "models", "model", "customers", "customer", "ssc"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+page+".html")
		if err != nil {
			return nil, err
		}
		p.tmpl[page] = t
	}
	return p, nil
}

// templateArgs builds a map from key/value pairs, for sub-templates that
// need more than one value.
func templateArgs(kv ...any) map[string]any {
	m := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := kv[i].(string)
		m[k] = kv[i+1]
	}
	return m
}

func stateLabel(s string) string {
	return strings.ToUpper(s[:1]) + strings.ReplaceAll(s[1:], "_", " ")
}

// Mount registers the portal's routes.
func (p *Portal) Mount(mux *http.ServeMux) {
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /login", p.loginPage)
	mux.HandleFunc("POST /login", p.login)
	mux.HandleFunc("GET /invite", p.invitePage)
	mux.HandleFunc("POST /invite", p.acceptInvite)
	mux.HandleFunc("GET /register", p.registerPage)
	mux.HandleFunc("POST /register", p.register)
	mux.HandleFunc("POST /logout", p.authed(p.logout))
	mux.HandleFunc("GET /{$}", p.authed(p.home))
	mux.HandleFunc("GET /cases", p.authed(p.casesPage))
	mux.HandleFunc("GET /cases/new", p.authed(p.newCasePage))
	mux.HandleFunc("POST /cases", p.authed(p.createCase))
	mux.HandleFunc("GET /cases/{id}", p.authed(p.casePage))
	mux.HandleFunc("POST /cases/{id}", p.authed(p.updateCase))
	mux.HandleFunc("POST /cases/{id}/messages", p.authed(p.postMessage))
	mux.HandleFunc("POST /cases/{id}/remote/{action}", p.authed(p.remoteAction))
	mux.HandleFunc("GET /cases/{id}/vnc", p.authed(p.vncPage))
	mux.HandleFunc("POST /cases/{id}/vnc/session", p.authed(p.vncSessionJSON))
	mux.HandleFunc("GET /users", p.authed(p.usersPage))
	mux.HandleFunc("POST /users/invite", p.authed(p.inviteUser))
	mux.HandleFunc("POST /users/{id}/roles", p.authed(p.assignRole))
	mux.HandleFunc("POST /users/{id}/roles/{aid}/revoke", p.authed(p.revokeRole))
	mux.HandleFunc("POST /users/{id}/verify", p.authed(p.verifyUser))
	mux.HandleFunc("GET /users/{id}/delete", p.authed(p.deleteUserPage))
	mux.HandleFunc("POST /users/{id}/delete", p.authed(p.deleteUser))
	mux.HandleFunc("GET /audit", p.authed(p.auditPage))
	mux.HandleFunc("GET /roles", p.authed(p.rolesPage))
	mux.HandleFunc("POST /roles", p.authed(p.createRole))
	mux.HandleFunc("POST /roles/{id}/delete", p.authed(p.deleteRole))
	mux.HandleFunc("GET /company", p.authed(p.companyPage))
	mux.HandleFunc("POST /company", p.authed(p.updateCompany))
	mux.HandleFunc("GET /devices", p.authed(p.devicesPage))
	mux.HandleFunc("GET /models", p.authed(p.modelsPage))
	mux.HandleFunc("GET /models/new", p.authed(p.newModelPage))
	mux.HandleFunc("POST /models", p.authed(p.saveModel))
	mux.HandleFunc("GET /models/{id}", p.authed(p.modelPage))
	mux.HandleFunc("POST /models/{id}", p.authed(p.saveModel))
	mux.HandleFunc("GET /customers", p.authed(p.customersPage))
	mux.HandleFunc("GET /customers/{id}", p.authed(p.customerPage))
	mux.HandleFunc("POST /cases/{id}/ssc", p.authed(p.generateSSC))
	mux.HandleFunc("POST /cases/{id}/ssc/download", p.authed(p.downloadSSC))
	p.mountShopfloor(mux)
}

// nav is what the layout shows for the caller.
type nav struct {
	User          store.User
	Tenant        store.Tenant
	Color         string
	Cases         bool
	MyInternal    bool
	Users         bool
	Admin         bool // Tenant Admin: audit log, custom roles, company
	Devices       bool
	Models        bool // machine models (provider, Machine Models ≥ read)
	Customers     bool // customers and machines (provider, Customer Management ≥ read)
	Shopfloor     bool // facilities, assets, proposals, asset dashboards
	Active        string
	CanCreateCase bool
}

func navFor(c *identity.Caller, active string) nav {
	eff := c.Effective()
	n := nav{User: c.User, Tenant: c.Tenant, Active: active, Color: c.Tenant.PrimaryColor}
	if n.Color == "" {
		n.Color = "#1f5fa8"
	}
	n.Cases = eff[authz.ServiceCaseManagement] >= authz.Read || eff[authz.InternalServiceCases] >= authz.Read
	for _, a := range c.Principal.Assignments {
		n.MyInternal = n.MyInternal || a.Role == authz.MaintenanceEngineer
	}
	n.Users = c.ManagesUsers()
	n.Admin = c.IsTenantAdmin()
	n.Devices = eff[authz.EdgeDevices] >= authz.Read || (c.Tenant.Kind == authz.KindOperator && eff[authz.DigitalShopfloor] >= authz.Read)
	n.Models, n.Customers = modelsVisible(c), customersVisible(c)
	n.Shopfloor = shopfloorNav(c)
	n.CanCreateCase = c.Tenant.Kind == authz.KindOperator && (eff[authz.ServiceCaseManagement] >= authz.Manage || eff[authz.InternalServiceCases] >= authz.Manage)
	return n
}

type handler func(w http.ResponseWriter, r *http.Request, c *identity.Caller)

// authed resolves the session cookie, redirects to /login without one, and
// refuses cross-origin form posts.
func (p *Portal) authed(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie(CookieName)
		if err != nil {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		c, err := p.id.Authenticate(r.Context(), ck.Value)
		if err != nil {
			http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1})
			http.Redirect(w, r, "/login?expired=1", http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost && !sameOrigin(r) {
			http.Error(w, "cross-site form submissions are refused", http.StatusForbidden)
			return
		}
		h(w, r, c)
	}
}

func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return r.Header.Get("Sec-Fetch-Site") == "" || r.Header.Get("Sec-Fetch-Site") == "same-origin"
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func (p *Portal) render(w http.ResponseWriter, status int, page string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' https: data:")
	w.WriteHeader(status)
	if err := p.tmpl[page].Execute(w, data); err != nil {
		p.log.Error("render", "page", page, "err", err)
	}
}

// fail renders an error page with the user-facing message; internal
// errors are logged and shown generically.
func (p *Portal) fail(w http.ResponseWriter, c *identity.Caller, err error) {
	status, msg := p.statusFor(err)
	var n nav
	if c != nil {
		n = navFor(c, "")
	}
	p.render(w, status, "error", map[string]any{"Nav": n, "Message": msg, "Status": status})
}

// statusFor maps a service error to an HTTP status and a user-facing
// message; internal errors are logged and described generically.
func (p *Portal) statusFor(err error) (int, string) {
	status, msg := http.StatusInternalServerError, "Something went wrong on our side; the server log has the details."
	switch errkind.Of(err) {
	case errkind.Invalid:
		status, msg = http.StatusBadRequest, err.Error()
	case errkind.Denied:
		status, msg = http.StatusForbidden, err.Error()
	case errkind.NotFound:
		status, msg = http.StatusNotFound, err.Error()
	case errkind.Precondition, errkind.Conflict:
		status, msg = http.StatusConflict, err.Error()
	default:
		p.log.Error("portal request failed", "err", err)
	}
	return status, msg
}

// home sends the user to the first page their roles allow.
func (p *Portal) home(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	n := navFor(c, "")
	switch {
	case n.Cases:
		http.Redirect(w, r, "/cases", http.StatusSeeOther)
	case n.Users:
		http.Redirect(w, r, "/users", http.StatusSeeOther)
	case n.Shopfloor:
		http.Redirect(w, r, "/shopfloor", http.StatusSeeOther)
	case n.Devices:
		http.Redirect(w, r, "/devices", http.StatusSeeOther)
	case n.Customers:
		http.Redirect(w, r, "/customers", http.StatusSeeOther)
	case n.Models:
		http.Redirect(w, r, "/models", http.StatusSeeOther)
	default:
		p.fail(w, c, errkind.Deniedf("your account has no roles yet; ask an admin of %s to assign you one", c.Tenant.Name))
	}
}
