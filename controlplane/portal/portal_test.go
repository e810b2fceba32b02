package portal_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-iot/gantry/agent/agenttest"
	"github.com/gantry-iot/gantry/controlplane/server"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	"github.com/gantry-iot/gantry/testbed/rfbserver"
)

// demo starts a control plane with the demo data.
func demo(t *testing.T) *servertest.Server {
	t.Helper()
	srv := servertest.Start(t, storetest.SQLite(t))
	if err := server.SeedDemo(context.Background(), srv.Identity, srv.Store, ""); err != nil {
		t.Fatal(err)
	}
	return srv
}

type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar}}
}

func (b *browser) get(path string) (int, string) {
	b.t.Helper()
	resp, err := b.c.Get(b.base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (b *browser) post(path string, form url.Values) (int, string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", b.base)
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (b *browser) login(email string) {
	b.t.Helper()
	if code, body := b.post("/login", url.Values{"email": {email}, "password": {server.DemoPassword}}); code != 200 || !strings.Contains(body, `data-testid="nav"`) {
		b.t.Fatalf("login %s: %d\n%s", email, code, body)
	}
}

func TestPagesFollowPermissions(t *testing.T) {
	srv := demo(t)
	// Not logged in → login page.
	anon := newBrowser(t, srv.URL)
	if code, body := anon.get("/cases"); code != 200 || !strings.Contains(body, "Log in to Gantry") {
		t.Fatalf("anonymous /cases: %d", code)
	}
	if code, body := anon.post("/login", url.Values{"email": {"me@nordwerk.example"}, "password": {"nope-nope-nope"}}); code != 401 || !strings.Contains(body, "wrong e-mail address or password") {
		t.Errorf("bad login: %d", code)
	}
	if code, body := anon.post("/login", url.Values{"email": {"not-an-email"}, "password": {"x"}}); code != 401 || !strings.Contains(body, `class="field-error"`) {
		t.Errorf("bad e-mail not shown next to the field: %d\n%s", code, body)
	}

	me := newBrowser(t, srv.URL)
	me.login("me@nordwerk.example")
	_, body := me.get("/cases")
	for _, want := range []string{`data-testid="nav-mine"`, `data-testid="internal-label"`, "Coolant pump noisy", "Spindle vibration", `data-testid="new-case"`} {
		if !strings.Contains(body, want) {
			t.Errorf("ME case list lacks %s", want)
		}
	}
	_, body = me.get("/cases?kind=shared")
	if strings.Contains(body, "Coolant pump noisy") {
		t.Errorf("SHARED filter shows the internal case")
	}
	if strings.Contains(body, `data-testid="nav-users"`) {
		t.Errorf("ME sees user management")
	}

	st := newBrowser(t, srv.URL)
	st.login("st@acme.example")
	_, body = st.get("/cases")
	if strings.Contains(body, "Coolant pump") || strings.Contains(body, "internal-label") || strings.Contains(body, "nav-mine") {
		t.Errorf("provider sees internal cases or the internal navigation")
	}
	if !strings.Contains(body, "Spindle vibration") || strings.Contains(body, `data-testid="new-case"`) {
		t.Errorf("provider case list wrong")
	}
	if code, body := st.get("/users"); code != 403 || !strings.Contains(body, "Not allowed") || strings.Contains(body, "goroutine") {
		t.Errorf("provider technician on /users: %d", code)
	}
	if code, _ := st.get("/cases/does-not-exist"); code != 404 {
		t.Errorf("unknown case: %d", code)
	}

	admin := newBrowser(t, srv.URL)
	admin.login("admin@nordwerk.example")
	_, body = admin.get("/")
	if !strings.Contains(body, `data-testid="users"`) {
		t.Errorf("admin does not land on the users page")
	}
	_, body = admin.get("/users")
	if !strings.Contains(body, "me@nordwerk.example") || !strings.Contains(body, "Maintenance Engineer") {
		t.Errorf("admin users page")
	}
	_, body = admin.get("/cases")
	if strings.Contains(body, "nav-cases") {
		t.Errorf("Tenant Admin sees service cases in the navigation (no operational permissions)")
	}

	// Cross-site form posts are refused even with a valid cookie.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/logout", nil)
	req.Header.Set("Origin", "https://evil.example")
	resp, err := me.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin POST: %d", resp.StatusCode)
	}
	// Open redirect is refused.
	code, _ := anon.post("/login", url.Values{"email": {"me@nordwerk.example"}, "password": {server.DemoPassword}, "next": {"//evil.example/"}})
	if code != 200 {
		t.Errorf("login with foreign next: %d", code)
	}
}

// TestBrowser drives Debian's chromium with playwright-core through the
// main flows; screenshots go to test-artifacts/screenshots.
func TestBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (apt-get install -y chromium; make deps does it)")
	}
	root, _ := filepath.Abs("../..")
	if _, err := os.Stat(filepath.Join(root, "node_modules", "playwright-core")); err != nil {
		t.Skip("playwright-core not installed (npm ci; make deps does it)")
	}
	if _, err := os.Stat("static/vendor/htmx.min.js"); err != nil {
		t.Skip("htmx not copied into the portal assets (make web)")
	}
	if _, err := os.Stat("static/vendor/novnc/core/rfb.js"); err != nil {
		t.Skip("noVNC not copied into the portal assets (make web)")
	}
	srv := servertest.Start(t, storetest.SQLite(t))
	tokenFile := filepath.Join(t.TempDir(), "demo-agent.token")
	if err := server.SeedDemo(context.Background(), srv.Identity, srv.Store, tokenFile); err != nil {
		t.Fatal(err)
	}
	agent, pixels := startDemoAgent(t, srv.URL, tokenFile)
	shots := filepath.Join(root, "test-artifacts", "screenshots")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "BASE_URL="+srv.URL, "CHROMIUM="+chromium, "SHOTS="+shots, "PASSWORD="+server.DemoPassword)
	t.Run("portal", func(t *testing.T) {
		runSpec(t, "browser/portal.spec.mjs", append(env, "RFB_PIXELS="+pixels))
	})
	t.Run("shopfloor", func(t *testing.T) { runShopfloorSpec(t, srv, agent, env) })
	// Machine models, customers and SSC on a control plane of their own
	// (no agent needed: the hub issues configs for an active grant).
	t.Run("models", func(t *testing.T) {
		srv := demo(t)
		runSpec(t, "browser/models.spec.mjs", append(os.Environ(), "BASE_URL="+srv.URL, "CHROMIUM="+chromium, "SHOTS="+shots, "PASSWORD="+server.DemoPassword, "HUB_ENDPOINT="+srv.Hub.Endpoint()))
	})
	// Every demo user's navigation, on untouched demo data.
	t.Run("nav", func(t *testing.T) {
		srv := demo(t)
		runSpec(t, "browser/nav.spec.mjs", append(os.Environ(), "BASE_URL="+srv.URL, "CHROMIUM="+chromium, "SHOTS="+shots, "PASSWORD="+server.DemoPassword))
	})
}

// runSpec runs one browser spec with node and fails the test if it fails.
func runSpec(t *testing.T, spec string, env []string) {
	t.Helper()
	cmd := exec.Command("node", spec)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("browser test %s failed: %v", spec, err)
	}
}

// rfbSize is the demo machine's HMI screen in the browser test.
const rfbW, rfbH = 320, 240

// startDemoAgent runs the demo gateway as an in-process agent (enrolled
// with the demo token) whose tunnels reach the CNC-5X template's VNC
// target 192.168.10.20:5900 on a local rfbserver. It returns sample
// pixels of the test pattern (generation 0) as JSON for the browser test.
func startDemoAgent(t *testing.T, serverURL, tokenFile string) (*agenttest.Agent, string) {
	t.Helper()
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	rfb := rfbserver.New(rfbserver.Config{Width: rfbW, Height: rfbH}, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = rfb.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done; rfb.Close() })
	var d net.Dialer
	agent := agenttest.Start(t, serverURL, strings.TrimSpace(string(tok)), agenttest.Options{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == "192.168.10.20:5900" {
			addr = l.Addr().String()
		}
		return d.DialContext(ctx, network, addr)
	}})
	type px struct{ X, Y, R, G, B int }
	var out []px
	for _, p := range [][2]int{{0, 0}, {rfbW - 1, 0}, {0, rfbH - 1}, {100, 50}, {40, 200}, {rfbW - 1, rfbH - 1}, {200, 130}} {
		c := rfbserver.Pixel(p[0], p[1], rfbW, rfbH, 0)
		out = append(out, px{p[0], p[1], int(c.R), int(c.G), int(c.B)})
	}
	b, _ := json.Marshal(map[string]any{"width": rfbW, "height": rfbH, "pixels": out})
	return agent, string(b)
}
