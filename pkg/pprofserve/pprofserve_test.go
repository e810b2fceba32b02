package pprofserve

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

func TestServeBadAddress(t *testing.T) {
	if _, err := Serve("256.0.0.1:1", slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "--pprof-listen") {
		t.Fatalf("bad address: %v, want an error naming --pprof-listen", err)
	}
}

func TestServeProfiles(t *testing.T) {
	var out strings.Builder
	logger := slog.New(slog.NewTextHandler(&out, nil))
	stop, err := Serve("127.0.0.1:0", logger)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	_, addr, ok := strings.Cut(out.String(), "addr=")
	if !ok {
		t.Fatalf("no address logged: %q", out.String())
	}
	resp, err := http.Get("http://" + strings.TrimSpace(addr) + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine profile") {
		t.Fatalf("status %d, body %.200q", resp.StatusCode, b)
	}
}
