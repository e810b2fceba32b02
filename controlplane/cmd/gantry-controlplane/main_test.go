package main

import (
	"io"
	"runtime/debug"
	"strings"
	"testing"
)

// TestServeFlagErrors: bad process and ingest settings are refused with
// a message naming the flag, before anything starts.
func TestServeFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--memory-limit", "lots"}, "--memory-limit \"lots\": want a size"},
		{[]string{"--memory-limit", "1MiB"}, "at least 64MiB"},
		{[]string{"--ingest-max-group", "-1"}, "--ingest-max-group -1: want 1 to 65536"},
		{[]string{"--ingest-max-group", "100000"}, "--ingest-max-group 100000"},
		{[]string{"--ingest-writers", "-2"}, "--ingest-writers -2: want 1 to 64"},
	} {
		args := append([]string{"serve", "--dev", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0"}, c.args...)
		err := run(args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error containing %q", c.args, err, c.want)
		}
	}
}

func TestSetMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	if err := setMemoryLimit("900MiB"); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != 900<<20 {
		t.Errorf("limit %d, want %d", got, 900<<20)
	}
}
