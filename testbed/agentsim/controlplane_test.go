package agentsim_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

// Demo user of a --dev control plane with Edge Devices = manage.
const (
	demoEmail    = "st@acme.example"
	demoPassword = "gantry-demo-1"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// TestMain removes the built binary after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// controlPlaneBinary builds gantry-controlplane once per test binary.
func controlPlaneBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "gantry-agentsim-bin-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binDir+"/", "../../controlplane/cmd/gantry-controlplane").CombinedOutput()
		if err != nil {
			buildErr = &buildError{err, string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return filepath.Join(binDir, "gantry-controlplane")
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// controlPlane is a gantry-controlplane --dev process on free ports (a
// separate process, so its RSS and CPU can be measured apart from the
// simulated agents).
type controlPlane struct {
	url      string
	cmd      *exec.Cmd
	http     *http.Client
	stopOnce sync.Once
}

var pprofStarts atomic.Int32

func startControlPlane(t testing.TB, dataDir string, extra ...string) *controlPlane {
	t.Helper()
	args := append([]string{"serve", "--dev", "--listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-level", "warn"}, extra...)
	// GANTRY_BENCH_CP_PPROF=127.0.0.1:PORT profiles the control planes
	// under load: the first one started serves pprof on PORT, the next on
	// PORT+1, and so on (the baseline's control plane is still running).
	if addr := os.Getenv("GANTRY_BENCH_CP_PPROF"); addr != "" {
		host, port, err := net.SplitHostPort(addr)
		p, perr := strconv.Atoi(port)
		if err != nil || perr != nil {
			t.Fatalf("GANTRY_BENCH_CP_PPROF=%q: want host:port", addr)
		}
		n := int(pprofStarts.Add(1)) - 1
		args = append(args, "--pprof-listen", net.JoinHostPort(host, strconv.Itoa(p+n)))
		t.Logf("control plane %d: pprof on %s:%d", n, host, p+n)
	}
	// GANTRY_BENCH_CP_ARGS adds serve flags, e.g. to compare settings.
	args = append(args, strings.Fields(os.Getenv("GANTRY_BENCH_CP_ARGS"))...)
	cmd := exec.Command(controlPlaneBinary(t), args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Its own transport: a restarted control plane on the same port must
	// not get the previous one's idle connections.
	cp := &controlPlane{cmd: cmd, http: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: 30 * time.Second}}
	t.Cleanup(cp.stop)
	sc := bufio.NewScanner(out)
	re := regexp.MustCompile(`listening on (http://\S+)`)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			cp.url = m[1]
		}
		if strings.HasPrefix(sc.Text(), "Try:") {
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	if cp.url == "" {
		t.Fatal("control plane printed no URL")
	}
	return cp
}

// stop interrupts the control plane and waits for it to exit (killing it
// after 15 s). Safe to call more than once.
func (cp *controlPlane) stop() {
	cp.stopOnce.Do(func() {
		_ = cp.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cp.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cp.cmd.Process.Kill()
			<-done
		}
	})
}

// devices returns a DeviceService client logged in as the demo user.
func (cp *controlPlane) devices(t testing.TB) gantryv1connect.DeviceServiceClient {
	t.Helper()
	r, err := gantryv1connect.NewSessionServiceClient(cp.http, cp.url).Login(context.Background(), connect.NewRequest(&gantryv1.LoginRequest{Email: demoEmail, Password: demoPassword}))
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	tok := r.Msg.Token
	return gantryv1connect.NewDeviceServiceClient(cp.http, cp.url, connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+tok)
			return next(ctx, req)
		}
	})))
}

// metric reads one unlabelled sample from the control plane's /metrics.
func (cp *controlPlane) metric(t testing.TB, name string) float64 {
	t.Helper()
	v, err := cp.tryMetric(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// tryMetric is metric returning its error (e.g. a control plane too busy
// to answer within the client's timeout).
func (cp *controlPlane) tryMetric(name string) (float64, error) {
	resp, err := cp.http.Get(cp.url + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				return 0, fmt.Errorf("metric %s: %q: %w", name, line, err)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("metric %s not exported", name)
}

// online counts the devices among ids whose online flag is set.
func online(t testing.TB, dc gantryv1connect.DeviceServiceClient, ids []string) int {
	t.Helper()
	r, err := dc.ListDevices(context.Background(), connect.NewRequest(&gantryv1.ListDevicesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	n := 0
	for _, d := range r.Msg.Devices {
		if want[d.Id] && d.Online {
			n++
		}
	}
	return n
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// eventually polls cond every 100 ms until it holds or within passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last: %s", what, within, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
