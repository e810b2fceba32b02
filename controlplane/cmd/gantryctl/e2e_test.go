package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// build compiles the binaries once per test binary into dir.
func build(t *testing.T, dir string) (controlplane, ctl string) {
	t.Helper()
	controlplane = filepath.Join(dir, "gantry-controlplane")
	ctl = filepath.Join(dir, "gantryctl")
	for _, b := range []struct{ out, pkg string }{{controlplane, "../gantry-controlplane"}, {ctl, "."}} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return controlplane, ctl
}

// TestDevServerLoginAndListUsers runs what the README promises: the
// control plane in dev mode prints its URL and demo logins, and gantryctl
// logs in as a demo admin and lists users.
func TestDevServerLoginAndListUsers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	dir := t.TempDir()
	cpBin, ctlBin := build(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp := exec.CommandContext(ctx, cpBin, "serve", "--dev", "--listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"))
	stdout, err := cp.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cp.Stderr = &stderr
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cp.Process.Signal(os.Interrupt)
		_ = cp.Wait()
	})
	sc := bufio.NewScanner(stdout)
	var url string
	var printed []string
	re := regexp.MustCompile(`listening on (http://\S+)`)
	for sc.Scan() {
		line := sc.Text()
		printed = append(printed, line)
		if m := re.FindStringSubmatch(line); m != nil {
			url = m[1]
		}
		if strings.HasPrefix(line, "Try:") {
			break
		}
	}
	if url == "" {
		t.Fatalf("control plane printed no URL:\n%s\nstderr:\n%s", strings.Join(printed, "\n"), stderr.String())
	}
	out := strings.Join(printed, "\n")
	if !strings.Contains(out, "MQTT broker") || !strings.Contains(out, "tls://127.0.0.1:") {
		t.Errorf("the embedded MQTT broker is not announced:\n%s", out)
	}
	for _, want := range []string{"admin@nordwerk.example", "me@nordwerk.example", "st@acme.example", "admin@appforge.example"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo logins do not list %s:\n%s", want, out)
		}
	}
	go func() { // keep draining stdout
		for sc.Scan() {
		}
	}()

	env := append(os.Environ(), "GANTRY_SESSION_FILE="+filepath.Join(dir, "session.json"), "GANTRY_SERVER="+url)
	ctl := func(stdin string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, ctlBin, args...)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	if out, err := ctl("wrong-password\n", "login", "--email", "admin@nordwerk.example"); err == nil || !strings.Contains(out, "wrong e-mail address or password") {
		t.Fatalf("login with a wrong password: err=%v out=%s", err, out)
	}
	if out, err := ctl("gantry-demo-1\n", "login", "--email", "admin@nordwerk.example"); err != nil {
		t.Fatalf("login: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(dir, "session.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("session file: %v mode %v, want 0600", err, fi.Mode().Perm())
	}
	out, err = ctl("", "users", "list")
	if err != nil {
		t.Fatalf("users list: %v\n%s", err, out)
	}
	for _, want := range []string{"me@nordwerk.example", "Maintenance Engineer", "oisc@nordwerk.example"} {
		if !strings.Contains(out, want) {
			t.Errorf("users list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "acme.example") {
		t.Errorf("users list shows another tenant's users:\n%s", out)
	}
	out, err = ctl("", "users", "invite", "--email", "new.engineer@nordwerk.example", "--role", "maintenance_engineer")
	if err != nil || !strings.Contains(out, "/invite?token=") {
		t.Fatalf("invite: %v\n%s", err, out)
	}
	out, err = ctl("", "roles", "assign", "--user", "nobody", "--role", "machine_operator")
	if err == nil || !strings.Contains(out, "NotFound") {
		t.Errorf("assign to unknown user: err=%v\n%s", err, out)
	}
	if out, err := ctl("", "help"); err != nil || !strings.Contains(out, "users invite") {
		t.Errorf("help: %v\n%s", err, out)
	}
	// Service cases with the demo data: My Internal Service Cases of the
	// Maintenance Engineer, and the provider never sees internal cases.
	if out, err := ctl("gantry-demo-1\n", "login", "--email", "me@nordwerk.example"); err != nil {
		t.Fatalf("login me: %v\n%s", err, out)
	}
	out, err = ctl("", "cases", "list", "--kind", "internal", "--mine")
	if err != nil || !strings.Contains(out, "Coolant pump noisy") || strings.Contains(out, "Spindle vibration") {
		t.Errorf("my internal cases: %v\n%s", err, out)
	}
	// Secure Service Connect: activate remote access on ME's internal
	// case, then `gantryctl ssc CASE > gantry.conf` writes only the
	// wg-quick file to stdout; hints go to stderr.
	out, err = ctl("", "--json", "cases", "list", "--kind", "internal", "--mine")
	var listed struct{ Cases []struct{ ID string } }
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil || len(listed.Cases) == 0 {
		t.Fatalf("cases list --json: %v\n%s", err, out)
	}
	caseID := listed.Cases[0].ID
	if out, err := ctl("", "remote", "activate", caseID); err != nil {
		t.Fatalf("remote activate: %v\n%s", err, out)
	}
	var sscOut, sscErr bytes.Buffer
	ssc := exec.CommandContext(ctx, ctlBin, "ssc", caseID)
	ssc.Env, ssc.Stdout, ssc.Stderr = env, &sscOut, &sscErr
	if err := ssc.Run(); err != nil {
		t.Fatalf("ssc: %v\n%s", err, sscErr.String())
	}
	conf := sscOut.String()
	if !strings.HasPrefix(conf, "# Gantry Secure Service Connect") || !strings.Contains(conf, "[Interface]\nPrivateKey = ") ||
		!strings.Contains(conf, "AllowedIPs = 100.64.") || !strings.Contains(conf, "# machine network 192.168.10.0/24 is reached as 100.64.") || !strings.Contains(conf, "PersistentKeepalive = 25") || strings.Contains(conf, "chmod") {
		t.Errorf("ssc stdout is not just the config:\n%s", conf)
	}
	if !strings.Contains(sscErr.String(), "chmod 600") || !strings.Contains(sscErr.String(), "(machine network 192.168.10.0/24, same host numbers)") {
		t.Errorf("ssc hints on stderr: %s", sscErr.String())
	}
	if out, err := ctl("", "ssc", caseID, "--public-key", "not-a-key"); err == nil || !strings.Contains(out, "InvalidArgument") || !strings.Contains(out, "base64") {
		t.Errorf("ssc with a malformed key: %v\n%s", err, out)
	}
	// Shop floor over gRPC: the Workshop Manager renames a facility and
	// moves an asset into it.
	if out, err := ctl("gantry-demo-1\n", "login", "--email", "wm@nordwerk.example"); err != nil {
		t.Fatalf("login wm: %v\n%s", err, out)
	}
	var facs struct{ Facilities []struct{ ID, Name string } }
	if out, err := ctl("", "--json", "facilities", "list"); err != nil || json.Unmarshal([]byte(out), &facs) != nil || len(facs.Facilities) != 2 {
		t.Fatalf("facilities list: %v\n%s", err, out)
	}
	hall2 := facs.Facilities[1]
	if out, err := ctl("", "facilities", "rename", hall2.ID, "--name", "Hall 2 West"); err != nil || !strings.Contains(out, "renamed facility "+hall2.ID+" to Hall 2 West") {
		t.Errorf("facilities rename: %v\n%s", err, out)
	}
	var assets struct{ Assets []struct{ ID, Name string } }
	if out, err := ctl("", "--json", "assets", "list"); err != nil || json.Unmarshal([]byte(out), &assets) != nil {
		t.Fatalf("assets list: %v\n%s", err, out)
	}
	moved := false
	for _, a := range assets.Assets {
		if a.Name == "Compressor K3" {
			moved = true
			out, err := ctl("", "assets", "update", a.ID, "--name", "Compressor K3", "--serial", "K3-2019", "--facility", hall2.ID)
			if err != nil || !strings.Contains(out, `serial "K3-2019", facility `+hall2.ID) {
				t.Errorf("assets update: %v\n%s", err, out)
			}
		}
	}
	if !moved {
		t.Errorf("no Compressor K3 in the assets list: %+v", assets)
	}
	if out, err := ctl("", "assets", "update", "nope", "--name", "X"); err == nil || !strings.Contains(out, "NotFound") {
		t.Errorf("assets update of an unknown asset: %v\n%s", err, out)
	}
	if out, err := ctl("gantry-demo-1\n", "login", "--email", "st@acme.example"); err != nil {
		t.Fatalf("login st: %v\n%s", err, out)
	}
	out, err = ctl("", "cases", "list")
	if err != nil || !strings.Contains(out, "Spindle vibration") || strings.Contains(out, "INTERNAL") || strings.Contains(out, "Coolant") {
		t.Errorf("provider case list: %v\n%s", err, out)
	}
	out, err = ctl("", "models", "list")
	if err != nil || !strings.Contains(out, "CNC-5X") {
		t.Errorf("models list: %v\n%s", err, out)
	}
	// One device with its OPC-UA template: the demo gateway's agent never
	// ran here, so nothing was delivered yet.
	var devs struct {
		Devices []struct{ ID, SerialNumber string }
	}
	if out, err := ctl("", "--json", "devices", "list"); err != nil || json.Unmarshal([]byte(out), &devs) != nil {
		t.Fatalf("devices list: %v\n%s", err, out)
	}
	gateway := false
	for _, d := range devs.Devices {
		if d.SerialNumber != "GW-DEMO-1" {
			continue
		}
		gateway = true
		out, err := ctl("", "devices", "get", d.ID)
		if err != nil || !regexp.MustCompile(`(?m)^SERIAL +GW-DEMO-1$`).MatchString(out) || !regexp.MustCompile(`(?m)^TEMPLATE +none delivered yet$`).MatchString(out) {
			t.Errorf("devices get: %v\n%s", err, out)
		}
		// protojson varies its spacing on purpose: parse, do not match text.
		var got struct {
			Device struct{ Template struct{ State string } }
		}
		out, err = ctl("", "--json", "devices", "get", d.ID)
		if err != nil || json.Unmarshal([]byte(out), &got) != nil || got.Device.Template.State != "none" {
			t.Errorf("devices get --json: %v\n%s", err, out)
		}
	}
	if !gateway {
		t.Errorf("no demo gateway in the devices list: %+v", devs)
	}
	if out, err := ctl("", "devices", "get", "nope"); err == nil || !strings.Contains(out, "NotFound") {
		t.Errorf("devices get of an unknown device: %v\n%s", err, out)
	}
	// Documents through gRPC: upload a machine-model document and fetch it back.
	modelID := strings.Fields(strings.Split(out, "\n")[1])[0]
	pdfPath := filepath.Join(dir, "manual.pdf")
	if err := os.WriteFile(pdfPath, []byte("%PDF-1.4\n%%EOF\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = ctl("", "documents", "upload", "--owner-kind", "machine_model", "--owner", modelID, "--type", "application/pdf", pdfPath)
	if err != nil || !strings.Contains(out, "uploaded manual.pdf") {
		t.Fatalf("documents upload: %v\n%s", err, out)
	}
	docID := strings.TrimSuffix(strings.Fields(out)[2], ",")[1:]
	out, err = ctl("", "documents", "get", docID, "-o", filepath.Join(dir, "copy.pdf"))
	if got, _ := os.ReadFile(filepath.Join(dir, "copy.pdf")); err != nil || string(got) != "%PDF-1.4\n%%EOF\n" {
		t.Errorf("documents get: %v\n%s", err, out)
	}
	if out, err := ctl("", "logout"); err != nil {
		t.Errorf("logout: %v\n%s", err, out)
	}
	if out, err := ctl("", "users", "list"); err == nil {
		t.Errorf("users list after logout succeeded:\n%s", out)
	}
}
