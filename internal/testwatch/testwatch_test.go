package testwatch

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestFireAfter(t *testing.T) {
	for _, c := range []struct{ timeout, want time.Duration }{
		{0, 0},
		{3 * time.Second, 0},
		{time.Minute, 54 * time.Second},
		{10 * time.Minute, 9 * time.Minute},
		{25 * time.Minute, 23 * time.Minute},
	} {
		if got := fireAfter(c.timeout); got != c.want {
			t.Errorf("fireAfter(%v) = %v, want %v", c.timeout, got, c.want)
		}
	}
}

// stuckInTest blocks until release is closed; the summary must name it.
func stuckInTest(ready chan<- struct{}, release <-chan struct{}) {
	close(ready)
	<-release
}

func TestSummaryNamesTheTestFrame(t *testing.T) {
	ready, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	go stuckInTest(ready, release)
	<-ready
	time.Sleep(10 * time.Millisecond) // let it park in the receive

	var out bytes.Buffer
	report(&out, 90*time.Second, allStacks())
	text := out.String()
	tail := text[strings.LastIndex(text, "testwatch: "):]
	if !strings.Contains(tail, "goroutines in test code") {
		t.Fatalf("summary is not last:\n%s", tail)
	}
	var found string
	for _, l := range strings.Split(tail, "\n") {
		if strings.Contains(l, "testwatch.stuckInTest") {
			found = l
		}
	}
	if found == "" {
		t.Fatalf("summary does not name the stuck function:\n%s", tail)
	}
	if !strings.Contains(found, "[chan receive") || !strings.Contains(found, "testwatch/testwatch_test.go:") {
		t.Errorf("summary line %q: want the wait state and the _test.go location", found)
	}
	if !strings.Contains(text, "tests still running after 1m30s") {
		t.Errorf("header does not say how long the tests ran:\n%s", text[:200])
	}
}

func TestSummaryIgnoresGoroutinesOutsideTests(t *testing.T) {
	dump := []byte("goroutine 7 [select, 3 minutes]:\nexample.com/srv.(*Writer).Run(0xc000, {0x1, 0x2})\n\t/src/srv/writer.go:97 +0x32c\ncreated by example.com/srv.Start in goroutine 1\n\t/src/srv/srv.go:12 +0x2c5\n\n" +
		"goroutine 9 [chan receive, 24 minutes]:\nexample.com/acc.waitClosed(0xc000)\n\t/src/acc/remote_test.go:40 +0x10\nexample.com/acc.TestX.func1(0xc000)\n\t/src/acc/remote_test.go:230 +0x20\ntesting.tRunner(0xc000, 0x1)\n\t/go/src/testing/testing.go:1 +0x1\n\n" +
		"goroutine 11 [chan receive]:\ntesting.(*T).Run(0xc000, {0x1, 0x2}, 0x3)\n\t/go/src/testing/testing.go:2 +0x1\nexample.com/acc.TestX(0xc000)\n\t/src/acc/remote_test.go:225 +0x20\n")
	got := Summary(dump)
	want := "goroutine 9 [chan receive, 24 minutes]: acc.waitClosed ← acc.waitClosed (acc/remote_test.go:40)"
	if len(got) != 1 || got[0] != want {
		t.Errorf("Summary = %q, want [%q]", got, want)
	}
}
