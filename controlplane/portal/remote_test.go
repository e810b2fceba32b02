package portal_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/gantry-iot/gantry/controlplane/portal"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// sessionBrowser is a browser logged in as email through a session made
// directly in the store (skips the deliberately slow password hashing).
func sessionBrowser(t *testing.T, srv *servertest.Server, base, email string) *browser {
	t.Helper()
	u := user(t, srv, email)
	b := newBrowser(t, base)
	bu, _ := url.Parse(base)
	b.c.Jar.SetCookies(bu, []*http.Cookie{{Name: portal.CookieName, Value: srv.Session(t, u.ID, u.TenantID), Path: "/"}})
	return b
}

// caseID finds a case's ID by its title in the caller's case list.
func (b *browser) caseID(title string) string {
	b.t.Helper()
	_, body := b.get("/cases")
	m := regexp.MustCompile(`<a href="/cases/([0-9a-f-]{36})"><strong>` + regexp.QuoteMeta(title) + `</strong>`).FindStringSubmatch(body)
	if m == nil {
		b.t.Fatalf("case %q not in the list", title)
	}
	return m[1]
}

// internalCaseWithDevice opens an internal case as b on the demo asset
// that has the demo gateway (CNC-5X #1041) and activates remote access.
func internalCaseWithDevice(t *testing.T, srv *servertest.Server, b *browser) string {
	t.Helper()
	me := user(t, srv, "me@nordwerk.example")
	assets, err := srv.Store.ListAssets(context.Background(), me.TenantID)
	if err != nil {
		t.Fatal(err)
	}
	var assetID string
	for _, a := range assets {
		if a.Name == "CNC-5X #1041" {
			assetID = a.ID
		}
	}
	b.post("/cases", url.Values{"kind": {"internal"}, "asset_id": {assetID}, "title": {"Remote check of the HMI"}})
	id := b.caseID("Remote check of the HMI")
	if code, body := b.post("/cases/"+id+"/remote/activate", url.Values{"minutes": {"120"}}); code != 200 || !strings.Contains(body, "Active —") {
		t.Fatalf("activate: %d\n%s", code, body)
	}
	return id
}

// connectItem returns the remote panel's list item of a connection type.
func connectItem(t *testing.T, body, conn string) string {
	t.Helper()
	i := strings.Index(body, `<li data-conn="`+conn+`"`)
	if i < 0 {
		t.Fatalf("no %s item in the remote-access panel", conn)
	}
	return body[i : i+strings.Index(body[i:], "</li>")]
}

// TestRemoteAccessPages: the remote-access panel's Connect buttons and
// the VNC viewer page (one demo control plane for all, it is slow to seed).
func TestRemoteAccessPages(t *testing.T) {
	srv := demo(t)
	me := sessionBrowser(t, srv, srv.URL, "me@nordwerk.example")
	oisc := sessionBrowser(t, srv, srv.URL, "oisc@nordwerk.example")
	st := sessionBrowser(t, srv, srv.URL, "st@acme.example")
	internal := internalCaseWithDevice(t, srv, me)
	t.Run("panel asks the service", func(t *testing.T) { testRemotePanel(t, srv, me, oisc, st, internal) })
	t.Run("viewer issues tokens only to allowed users", func(t *testing.T) { testVNCPage(t, srv, me, oisc, st, internal) })
	t.Run("without a hub", func(t *testing.T) { testConnectWithoutHub(t, srv, internal) })

	// Once the grant ends: no Connect buttons and no more tokens.
	me.post("/cases/"+internal+"/remote/deactivate", nil)
	if _, body := me.get("/cases/" + internal); strings.Contains(body, `data-testid="connect"`) {
		t.Errorf("Connect buttons shown without an active grant")
	}
	if code, body := me.get("/cases/" + internal + "/vnc"); code != 409 || !strings.Contains(body, "not active") {
		t.Errorf("viewer after deactivation: %d", code)
	}
}

// testRemotePanel: the Connect buttons follow the cases service's use
// rule (SPEC §4) per role, with its reason when disabled.
func testRemotePanel(t *testing.T, srv *servertest.Server, me, oisc, st *browser, internal string) {
	shared := me.caseID("Spindle vibration above limit")
	if code, _ := me.post("/cases/"+shared+"/remote/activate", url.Values{"minutes": {"60"}}); code != 200 {
		t.Fatalf("activate shared: %d", code)
	}

	type want struct {
		vncLink    bool   // an enabled Connect link to the viewer
		reason     string // disabled: part of the service's reason
		dataLink   bool
		remainText bool
	}
	for _, tc := range []struct {
		name   string
		b      *browser
		caseID string
		want   want
	}{
		{"maintenance engineer on an internal case", me, internal, want{vncLink: true, dataLink: true, remainText: true}},
		{"OISC (SCM read) on an internal case", oisc, internal, want{reason: "cannot use remote access"}},
		{"provider technician on a shared case", st, shared, want{vncLink: true, dataLink: true}},
		{"operator engineer on a shared case", me, shared, want{reason: "used by the service provider"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := tc.b.get("/cases/" + tc.caseID)
			if code != 200 {
				t.Fatalf("case page: %d", code)
			}
			vnc := connectItem(t, body, "vnc")
			dl := connectItem(t, body, "data_link")
			link := `<a class="btn primary" href="/cases/` + tc.caseID + `/vnc" data-testid="connect-vnc">`
			if got := strings.Contains(vnc, link); got != tc.want.vncLink {
				t.Errorf("VNC Connect link shown = %v, want %v\n%s", got, tc.want.vncLink, vnc)
			}
			if !tc.want.vncLink && !strings.Contains(vnc, `<button type="button" disabled data-testid="connect-vnc"`) {
				t.Errorf("no disabled VNC button\n%s", vnc)
			}
			if tc.want.reason != "" && (!strings.Contains(vnc, tc.want.reason) || !strings.Contains(dl, tc.want.reason)) {
				t.Errorf("reason %q not shown\n%s\n%s", tc.want.reason, vnc, dl)
			}
			cmd := "gantryctl tunnel " + tc.caseID + " --target 192.168.10.30:102 --listen 127.0.0.1:10102"
			if got := strings.Contains(dl, cmd); got != tc.want.dataLink {
				t.Errorf("data-link command shown = %v, want %v\n%s", got, tc.want.dataLink, dl)
			}
			if tc.want.dataLink && !strings.Contains(dl, "--target 192.168.10.30:4840 --listen 127.0.0.1:4840") {
				t.Errorf("data-link targets incomplete\n%s", dl)
			}
			if !strings.Contains(body, `data-testid="grant-left">Sessions end when the grant ends, in `) {
				t.Errorf("remaining grant time not shown")
			}
		})
	}

}

// testVNCPage: the viewer page and its reconnect endpoint issue
// single-use tokens through the cases service's AuthorizeUse, audit every
// attempt, and refuse everyone else with 403.
func testVNCPage(t *testing.T, srv *servertest.Server, me, oisc, st *browser, id string) {
	tokenRE := regexp.MustCompile(`data-token="([0-9a-f]{48})"`)

	resp, err := me.c.Get(srv.URL + "/cases/" + id + "/vnc")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("viewer page Cache-Control %q, want no-store (it carries a token)", cc)
	}
	code, body := me.get("/cases/" + id + "/vnc")
	m := tokenRE.FindStringSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("ME viewer page: %d, token %v\n%s", code, m, body)
	}
	for _, want := range []string{`data-ws-path="/remote/ws"`, `<script type="module" src="/static/vnc.js">`, `data-testid="vnc-target">192.168.10.20:5900<`} {
		if !strings.Contains(body, want) {
			t.Errorf("viewer page lacks %s", want)
		}
	}
	code, js := me.post("/cases/"+id+"/vnc/session", nil)
	var s struct{ Token, WebsocketPath, Target string }
	if err := json.Unmarshal([]byte(js), &s); code != 200 || err != nil || len(s.Token) != 48 || s.Token == m[1] || s.WebsocketPath != "/remote/ws" || s.Target != "192.168.10.20:5900" {
		t.Errorf("reconnect token: %d %s", code, js)
	}

	if code, body := oisc.get("/cases/" + id + "/vnc"); code != 403 || tokenRE.MatchString(body) || !strings.Contains(body, "cannot use remote access") {
		t.Errorf("OISC viewer page: %d\n%s", code, body)
	}
	if code, js := oisc.post("/cases/"+id+"/vnc/session", nil); code != 403 || strings.Contains(js, "token") || !strings.Contains(js, "cannot use remote access") {
		t.Errorf("OISC reconnect: %d %s", code, js)
	}
	if code, _ := st.get("/cases/" + id + "/vnc"); code != 404 {
		t.Errorf("provider on an internal case's viewer: %d, want 404", code)
	}

	// A cross-site page cannot mint tokens with the user's cookie.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/cases/"+id+"/vnc/session", nil)
	req.Header.Set("Origin", "https://evil.example")
	if resp, err := me.c.Do(req); err != nil || resp.StatusCode != 403 {
		t.Errorf("cross-origin token request: %v %v", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}

	// Every attempt is in the case tenant's audit log: three tokens for ME
	// (two page views, one reconnect), two refusals of OISC.
	meU, oiscU := user(t, srv, "me@nordwerk.example"), user(t, srv, "oisc@nordwerk.example")
	evs, err := srv.Store.ListAudit(context.Background(), store.AuditFilter{TenantID: meU.TenantID, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range evs {
		if e.Target == id {
			count[e.ActorID+" "+e.Action]++
		}
	}
	if count[meU.ID+" remote_access.use"] != 3 || count[oiscU.ID+" remote_access.use_denied"] != 2 {
		t.Errorf("audit of session attempts: %v", count)
	}
}

// testConnectWithoutHub: a portal without remote sessions (no WireGuard
// hub) keeps the buttons disabled and explains why.
func testConnectWithoutHub(t *testing.T, srv *servertest.Server, id string) {
	pt, err := portal.New(srv.Identity, srv.Fleet, srv.Cases, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	pt.Mount(mux)
	hs := httptest.NewServer(mux)
	defer hs.Close()
	b := sessionBrowser(t, srv, hs.URL, "me@nordwerk.example")
	_, body := b.get("/cases/" + id)
	vnc := connectItem(t, body, "vnc")
	if !strings.Contains(vnc, "disabled") || !strings.Contains(vnc, "remote access is not enabled on this control plane") {
		t.Errorf("VNC item without hub:\n%s", vnc)
	}
	if code, body := b.get("/cases/" + id + "/vnc"); code != 409 || !strings.Contains(body, "not enabled") {
		t.Errorf("viewer without hub: %d", code)
	}
}
