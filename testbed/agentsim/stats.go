package agentsim

import (
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Error kinds counted in Summary.Errors.
const (
	ErrKindCreateDevice = "create_device"
	ErrKindToken        = "enrollment_token"
	ErrKindEnroll       = "enroll"
	ErrKindLoadState    = "load_state"
	ErrKindConnect      = "connect"
	ErrKindPublish      = "publish"
	ErrKindTimeout      = "publish_timeout"
	ErrKindBehind       = "behind_schedule" // a tick skipped because the previous publish was still waiting for its PUBACK
	ErrKindCommand      = "command_rejected"
	ErrKindAck          = "command_ack"
)

// counters are the run's live figures. Safe for concurrent use.
type counters struct {
	enrolled, connected, sent, acked, values, commands atomic.Int64

	mu   sync.Mutex
	errs map[string]int64
}

func (c *counters) fail(kind string) {
	c.mu.Lock()
	if c.errs == nil {
		c.errs = map[string]int64{}
	}
	c.errs[kind]++
	c.mu.Unlock()
}

func (c *counters) errors() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int64, len(c.errs))
	for k, v := range c.errs {
		m[k] = v
	}
	return m
}

// maxSamples bounds the latency reservoir (8 bytes each).
const maxSamples = 1 << 20

// latencies keeps a uniform reservoir sample of publish latencies for the
// whole run and every sample of the current progress window. Safe for
// concurrent use.
type latencies struct {
	mu     sync.Mutex
	seen   int64
	all    []time.Duration
	window []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen++
	if len(l.all) < maxSamples {
		l.all = append(l.all, d)
	} else if i := rand.Int64N(l.seen); i < maxSamples {
		l.all[i] = d
	}
	if len(l.window) < maxSamples {
		l.window = append(l.window, d)
	}
}

// takeWindow returns p50/p99 of the samples since the last call.
func (l *latencies) takeWindow() (p50, p99 time.Duration) {
	l.mu.Lock()
	w := l.window
	l.window = make([]time.Duration, 0, len(w))
	l.mu.Unlock()
	return percentiles(w)
}

func (l *latencies) total() (p50, p99 time.Duration) {
	l.mu.Lock()
	all := slices.Clone(l.all)
	l.mu.Unlock()
	return percentiles(all)
}

func percentiles(s []time.Duration) (p50, p99 time.Duration) {
	if len(s) == 0 {
		return 0, 0
	}
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99)
}

// ProcRSS returns the resident set size of process pid (0 for this
// process) from /proc; 0 where /proc is unavailable.
func ProcRSS(pid int) int64 {
	b, err := os.ReadFile(procPath(pid, "status"))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// ProcCPU returns the user+system CPU time process pid (0 for this
// process) has used, from /proc; 0 where /proc is unavailable.
func ProcCPU(pid int) time.Duration {
	b, err := os.ReadFile(procPath(pid, "stat"))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields after ")" are fixed.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 { // utime and stime are fields 14 and 15 of stat, 12 and 13 here
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on every Linux platform Go supports
	return time.Duration(ut+st) * time.Second / clkTck
}

func procPath(pid int, name string) string {
	if pid == 0 {
		return "/proc/self/" + name
	}
	return "/proc/" + strconv.Itoa(pid) + "/" + name
}
