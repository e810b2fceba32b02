package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // substring of the error, or of the help output
	}{
		{"help", []string{"--help"}, "Ctrl-C (SIGINT)"},
		{"no server", []string{"--agents", "3"}, "--server is required"},
		{"several problems", []string{"--server", "http://x:1", "--agents", "-1", "--rate", "0"}, "--agents -1: want at least 1\n--rate 0"},
		{"bad log level", []string{"--server", "http://x:1", "--log-level", "loud"}, `--log-level "loud"`},
		{"stray argument", []string{"--server", "http://x:1", "extra"}, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(tc.args, &out, &errOut)
			if tc.name == "help" {
				if !errors.Is(err, flag.ErrHelp) || !strings.Contains(errOut.String(), tc.want) || !strings.Contains(errOut.String(), "-connect-concurrency") {
					t.Errorf("--help: %v\n%s", err, errOut.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run(%q) = %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}
