package portal_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"html"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	qr "github.com/piglig/go-qr"

	"github.com/gantry-iot/gantry/controlplane/cases"
	"github.com/gantry-iot/gantry/controlplane/portal"
	"github.com/gantry-iot/gantry/controlplane/remote"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/pkg/wg"
)

// hubIssuer issues SSC peers on the test control plane's real hub, for a
// portal built in the test with a log it can read.
// It remembers the routes of the last config it issued.
type hubIssuer struct {
	hub  *remote.Hub
	mu   sync.Mutex
	last []string
}

func (h *hubIssuer) IssueSSC(u cases.Use, publicKey string) (portal.SSCConfig, error) {
	c, err := h.hub.AddEngineer(remote.SSCRequest{GrantID: u.GrantID, UserID: u.UserID, PublicKey: publicKey, Subnets: u.Subnets})
	if err != nil {
		return portal.SSCConfig{}, err
	}
	out := portal.SSCConfig{WGQuick: c.WGQuick(), Address: c.Address.String() + "/32", PublicKey: c.PublicKey.String(), PrivateKeyIncluded: c.Generated, HubEndpoint: c.HubEndpoint}
	for _, p := range c.AllowedIPs {
		out.AllowedIPs = append(out.AllowedIPs, p.String())
	}
	h.mu.Lock()
	h.last = out.AllowedIPs
	h.mu.Unlock()
	return out, nil
}

func (h *hubIssuer) lastRoutes() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

var (
	sscConfigRE = regexp.MustCompile(`(?s)<textarea name="config"[^>]*data-testid="ssc-config">(.*?)</textarea>`)
	sscQRRE     = regexp.MustCompile(`<img src="data:image/png;base64,([^"]+)" alt="QR code`)
)

// TestSSCConfigPage: on a case with an active grant whose template allows
// SSC, an engineer generates a config; the QR code decodes to exactly the
// downloaded file; everyone the cases service refuses gets no button and
// no config; the private key never reaches the log.
func TestSSCConfigPage(t *testing.T) {
	srv := demo(t)
	var logBuf syncBuffer
	pt, err := portal.New(srv.Identity, srv.Fleet, srv.Cases, false, slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	issuer := &hubIssuer{hub: srv.Hub}
	pt.WithSSC(issuer)
	mux := http.NewServeMux()
	pt.Mount(mux)
	hs := httptest.NewServer(mux)
	defer hs.Close()

	me := sessionBrowser(t, srv, hs.URL, "me@nordwerk.example")
	oisc := sessionBrowser(t, srv, hs.URL, "oisc@nordwerk.example")
	st := sessionBrowser(t, srv, hs.URL, "st@acme.example")
	id := internalCaseWithDevice(t, srv, me)

	// The case page offers the form to ME only.
	_, body := me.get("/cases/" + id)
	if item := connectItem(t, body, "ssc"); !strings.Contains(item, `data-testid="ssc-generate"`) || !strings.Contains(item, `action="/cases/`+id+`/ssc"`) {
		t.Fatalf("ME has no SSC button:\n%s", item)
	}
	_, body = oisc.get("/cases/" + id)
	if item := connectItem(t, body, "ssc"); strings.Contains(item, "ssc-generate") || !strings.Contains(item, "cannot use remote access") {
		t.Errorf("OISC SSC item:\n%s", item)
	}

	code, page := me.post("/cases/"+id+"/ssc", nil)
	if code != 200 {
		t.Fatalf("generate: %d\n%s", code, page)
	}
	m := sscConfigRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no config on the page\n%s", page)
	}
	cfg := html.UnescapeString(m[1])
	priv := regexp.MustCompile(`(?m)^PrivateKey = (\S+)$`).FindStringSubmatch(cfg)
	if priv == nil || !strings.Contains(cfg, "\n[Interface]\n") || !strings.Contains(cfg, "Endpoint = "+srv.Hub.Endpoint()+"\n") ||
		strings.Contains(cfg, "DNS") {
		t.Fatalf("config:\n%s", cfg)
	}
	if kb, err := base64.StdEncoding.DecodeString(priv[1]); err != nil {
		t.Errorf("private key: %v", err)
	} else if _, err := wg.KeyFromBytes(kb); err != nil {
		t.Errorf("private key: %v", err)
	}
	// AllowedIPs: only what the hub routes for the template's one /24
	// machine subnet (the subnet itself, or its virtual twin when the hub
	// maps subnets 1:1).
	routes := issuer.lastRoutes()
	if len(routes) != 1 || !strings.HasSuffix(routes[0], "/24") || !strings.Contains(cfg, "\nAllowedIPs = "+routes[0]+"\n") {
		t.Errorf("AllowedIPs: routes %v in\n%s", routes, cfg)
	}
	if !strings.Contains(page, "shown only once") {
		t.Errorf("page does not say the key is shown once")
	}

	// The QR code decodes back to the config text.
	q := sscQRRE.FindStringSubmatch(page)
	if q == nil {
		t.Fatalf("no QR image\n%s", page)
	}
	raw, err := base64.StdEncoding.DecodeString(html.UnescapeString(q[1]))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := qr.Decode(img); err != nil || got != cfg {
		t.Errorf("QR code decodes to %q, %v; want the config", got, err)
	}

	// The download is the same text as a file.
	req, _ := http.NewRequest(http.MethodPost, hs.URL+"/cases/"+id+"/ssc/download", strings.NewReader(url.Values{"config": {cfg}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", hs.URL)
	resp, err := me.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	file, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(file) != cfg || resp.Header.Get("Content-Disposition") != `attachment; filename="gantry-`+id+`.conf"` ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("download: %d %v\n%s", resp.StatusCode, resp.Header, file)
	}
	// Not an SSC config, or a foreign origin: refused.
	if code, _ := me.post("/cases/"+id+"/ssc/download", url.Values{"config": {"<script>alert(1)</script>"}}); code != 400 {
		t.Errorf("download of arbitrary text: %d", code)
	}
	req, _ = http.NewRequest(http.MethodPost, hs.URL+"/cases/"+id+"/ssc", nil)
	req.Header.Set("Origin", "https://evil.example")
	if resp, err := me.c.Do(req); err != nil || resp.StatusCode != 403 {
		t.Errorf("cross-origin generate: %v", err)
	} else {
		resp.Body.Close()
	}

	// With the engineer's own public key the config carries no private key.
	pk, _ := wg.NewPrivateKey()
	_, page = me.post("/cases/"+id+"/ssc", url.Values{"public_key": {pk.Public().String()}})
	if m := sscConfigRE.FindStringSubmatch(page); m == nil || strings.Contains(m[1], "\nPrivateKey =") || !strings.Contains(m[1], "# PrivateKey = &lt;your private key") {
		t.Errorf("config for a given public key:\n%s", page)
	}
	// A malformed key is shown next to the field on the case page.
	code, page = me.post("/cases/"+id+"/ssc", url.Values{"public_key": {"not-a-key"}})
	if code != 400 || !strings.Contains(page, `data-testid="ssc-error"`) || !strings.Contains(page, `value="not-a-key"`) {
		t.Errorf("malformed key: %d\n%s", code, page)
	}

	// Refused users get no config: the server decides, not the button.
	if code, page := oisc.post("/cases/"+id+"/ssc", nil); code != 403 || sscConfigRE.MatchString(page) || !strings.Contains(page, "cannot use remote access") {
		t.Errorf("OISC generate: %d", code)
	}
	if code, page := st.post("/cases/"+id+"/ssc", nil); code != 404 || sscConfigRE.MatchString(page) {
		t.Errorf("provider on an internal case: %d", code)
	}
	if code, _ := st.post("/cases/"+id+"/ssc/download", url.Values{"config": {cfg}}); code != 404 {
		t.Errorf("provider download on an internal case: %d", code)
	}

	other := sessionBrowser(t, srv, hs.URL, "mo@sudhaus.example")
	if code, page := other.post("/cases/"+id+"/ssc", nil); code != 404 || sscConfigRE.MatchString(page) {
		t.Errorf("another operator tenant: %d", code)
	}

	// Shared case: the provider's technician gets configs, the operator's
	// engineer does not (SPEC §4).
	shared := me.caseID("Spindle vibration above limit")
	if code, _ := me.post("/cases/"+shared+"/remote/activate", url.Values{"minutes": {"60"}}); code != 200 {
		t.Fatalf("activate shared: %d", code)
	}
	if _, body := st.get("/cases/" + shared); !strings.Contains(connectItem(t, body, "ssc"), "ssc-generate") {
		t.Errorf("provider technician has no SSC button on the shared case")
	}
	if code, page := st.post("/cases/"+shared+"/ssc", nil); code != 200 || !sscConfigRE.MatchString(page) {
		t.Errorf("provider technician generate on the shared case: %d", code)
	}
	if item := connectItem(t, func() string { _, b := me.get("/cases/" + shared); return b }(), "ssc"); strings.Contains(item, "ssc-generate") || !strings.Contains(item, "used by the service provider") {
		t.Errorf("operator engineer on the shared case:\n%s", item)
	}
	if code, _ := me.post("/cases/"+shared+"/ssc", nil); code != 403 {
		t.Errorf("operator engineer generate on the shared case: %d", code)
	}

	// Every attempt is audited; the private key is in no log line.
	evs, err := srv.Store.ListAudit(context.Background(), store.AuditFilter{TenantID: user(t, srv, "me@nordwerk.example").TenantID, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range evs {
		if e.Target == id {
			count[e.Action]++
		}
	}
	if count["remote_access.ssc_config"] != 2 || count["remote_access.ssc_config_denied"] != 2 { // OISC and the bad key
		t.Errorf("audit: %v", count)
	}
	if strings.Contains(logBuf.String(), priv[1]) {
		t.Errorf("the private key was logged")
	}

	// After deactivation: no button, no config.
	me.post("/cases/"+id+"/remote/deactivate", nil)
	if _, body := me.get("/cases/" + id); strings.Contains(body, "ssc-generate") {
		t.Errorf("SSC button without an active grant")
	}
	if code, _ := me.post("/cases/"+id+"/ssc", nil); code != 409 {
		t.Errorf("generate after deactivation: %d", code)
	}
}

// TestSSCWithoutHub: a portal without a WireGuard hub explains why SSC
// is off and issues nothing.
func TestSSCWithoutHub(t *testing.T) {
	srv := demo(t)
	pt, err := portal.New(srv.Identity, srv.Fleet, srv.Cases, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	pt.Mount(mux)
	hs := httptest.NewServer(mux)
	defer hs.Close()
	me := sessionBrowser(t, srv, hs.URL, "me@nordwerk.example")
	id := internalCaseWithDevice(t, srv, me)
	_, body := me.get("/cases/" + id)
	if item := connectItem(t, body, "ssc"); strings.Contains(item, "ssc-generate") || !strings.Contains(item, "remote access is not enabled") {
		t.Errorf("SSC item without a hub:\n%s", item)
	}
	if code, _ := me.post("/cases/"+id+"/ssc", nil); code != 409 {
		t.Errorf("generate without a hub: %d", code)
	}
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestSSCPageLoad measures the server time of generating an SSC config
// page (hub peer, wg-quick text, QR code PNG) against the case page in the
// same run, and the page size. Run with GANTRY_BENCH=1 (make bench).
func TestSSCPageLoad(t *testing.T) {
	if os.Getenv("GANTRY_BENCH") == "" {
		t.Skip("set GANTRY_BENCH=1 to measure the SSC config page (part of make bench)")
	}
	srv := demo(t)
	me := sessionBrowser(t, srv, srv.URL, "me@nordwerk.example")
	id := internalCaseWithDevice(t, srv, me)
	measure := func(n int, do func() (int, string)) (p50 time.Duration, size int) {
		var lat []time.Duration
		for range n {
			t0 := time.Now()
			code, body := do()
			lat = append(lat, time.Since(t0))
			if code != 200 {
				t.Fatalf("status %d", code)
			}
			size = len(body)
		}
		slices.Sort(lat)
		return lat[len(lat)/2], size
	}
	casePage, caseSize := measure(30, func() (int, string) { return me.get("/cases/" + id) })
	// 8 configs: the hub's per-user limit.
	sscPage, sscSize := measure(8, func() (int, string) { return me.post("/cases/"+id+"/ssc", nil) })
	t.Logf("GET /cases/{id}: p50 %v, %d bytes; POST /cases/{id}/ssc (config + QR PNG): p50 %v, %d bytes; ratio %.2f",
		casePage, caseSize, sscPage, sscSize, float64(sscPage)/float64(casePage))
}
