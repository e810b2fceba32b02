package agentsim_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// externalBroker prepares a control plane in external-broker mode: it
// writes the broker files from dataDir's CA (gantry-controlplane
// mosquitto-files), starts Debian's mosquitto with deploy/mosquitto's
// configuration on a free loopback port and returns the serve flags and
// mosquitto's pid.
func externalBroker(t *testing.T, dataDir string, storeArgs []string) (flags []string, pid int) {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		t.Skip("mosquitto not installed")
	}
	dir := t.TempDir()
	args := append([]string{"mosquitto-files", "--data-dir", dataDir, "--out", dir, "--hosts", "127.0.0.1"}, storeArgs...)
	if out, err := exec.Command(controlPlaneBinary(t), args...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto-files: %v\n%s", err, out)
	}
	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	conf, err := os.ReadFile("../../deploy/mosquitto/mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	c := strings.ReplaceAll(string(conf), "/etc/mosquitto/gantry", dir)
	c = strings.Replace(c, "listener 8883", "listener "+port+" 127.0.0.1", 1)
	if os.Geteuid() == 0 {
		c += "\nuser root\n"
	}
	acl, err := os.ReadFile("../../deploy/mosquitto/acl.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "acl.conf"), acl, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(c), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "mosquitto.conf"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; ; i++ {
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			break
		}
		if i == 100 {
			t.Fatal("mosquitto does not listen")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return []string{"--mqtt-listen", "off", "--mqtt-external", "tls://" + addr, "--mqtt-crl-file", filepath.Join(dir, "crl.pem")}, cmd.Process.Pid
}
