// Package testwatch makes a test package that hangs say where, in the
// last lines of its output.
//
// When `go test -timeout` runs out, the testing package prints every
// goroutine's stack and the list of running tests at the top of that
// dump; a CI log that keeps only the tail of a long run then shows the
// writer goroutines of some server and not the test that hung. Run,
// called from TestMain, fires shortly before the timeout instead: it
// prints the full dump and then, last, one line per goroutine that is
// in test code (its state, how long it has waited, the innermost frame
// and the innermost frame in a _test.go file), and exits with status 3.
package testwatch

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Run runs the package's tests under the watchdog and returns their
// exit code; use it as os.Exit(testwatch.Run(m)) in TestMain.
func Run(m *testing.M) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	if d := fireAfter(timeoutFlag()); d > 0 {
		start := time.Now()
		t := time.AfterFunc(d, func() {
			report(os.Stderr, time.Since(start), allStacks())
			os.Exit(3)
		})
		defer t.Stop()
	}
	return m.Run()
}

// timeoutFlag is the value of -test.timeout (0: none).
func timeoutFlag() time.Duration {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return 0
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return 0
	}
	d, _ := g.Get().(time.Duration)
	return d
}

// fireAfter is when the watchdog fires for a timeout: a tenth of it
// (at most two minutes, at least five seconds) before, so the testing
// package's own dump does not come first. 0: no watchdog.
func fireAfter(timeout time.Duration) time.Duration {
	if timeout <= 0 {
		return 0
	}
	margin := min(max(timeout/10, 5*time.Second), 2*time.Minute)
	if timeout <= margin {
		return 0
	}
	return timeout - margin
}

func allStacks() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}

// report writes the dump, then the summary of goroutines in test code.
func report(w io.Writer, ran time.Duration, dump []byte) {
	fmt.Fprintf(w, "testwatch: tests still running after %v, close to -test.timeout; all goroutines:\n\n", ran.Round(time.Second))
	w.Write(dump)
	lines := Summary(dump)
	fmt.Fprintf(w, "\ntestwatch: %d goroutines in test code (the hung test is among them):\n", len(lines))
	for _, l := range lines {
		fmt.Fprintln(w, "  "+l)
	}
}

// Summary returns one line per goroutine of a runtime.Stack(all) dump
// that has a frame in a _test.go file: "goroutine N [state]: innermost
// function ← test function (file:line)". Goroutines parked in the
// testing package itself (a test waiting for its subtests) are left out.
func Summary(dump []byte) []string {
	var out []string
	for _, g := range bytes.Split(dump, []byte("\n\n")) {
		lines := strings.Split(strings.TrimSpace(string(g)), "\n")
		if len(lines) < 3 || !strings.HasPrefix(lines[0], "goroutine ") {
			continue
		}
		header := strings.TrimSuffix(lines[0], ":")
		top := funcName(lines[1])
		if strings.HasPrefix(top, "testing.") {
			continue // the framework waiting for subtests: they are listed themselves
		}
		for i := 1; i+1 < len(lines); i += 2 {
			loc := strings.TrimSpace(lines[i+1])
			if j := strings.LastIndex(loc, " +0x"); j >= 0 {
				loc = loc[:j]
			}
			if strings.Contains(loc, "_test.go:") {
				out = append(out, fmt.Sprintf("%s: %s ← %s (%s)", header, top, funcName(lines[i]), shortPath(loc)))
				break
			}
		}
	}
	return out
}

// funcName drops a frame line's arguments.
func funcName(frame string) string {
	if i := strings.LastIndex(frame, "("); i > 0 {
		frame = frame[:i]
	}
	if i := strings.LastIndex(frame, "/"); i >= 0 {
		frame = frame[i+1:]
	}
	return frame
}

// shortPath keeps a location's last two path elements.
func shortPath(loc string) string {
	parts := strings.Split(loc, "/")
	if len(parts) > 2 {
		return strings.Join(parts[len(parts)-2:], "/")
	}
	return loc
}
