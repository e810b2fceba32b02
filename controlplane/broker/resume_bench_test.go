package broker

import (
	"crypto/tls"
	"fmt"
	"io"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/controlplane/pki"
)

// BenchmarkHandshake measures connects/s to one broker as a reconnect
// storm sees it: TLS handshake, MQTT CONNECT (revocation check), CONNACK,
// close; 256 devices, 16 connecting goroutines per core, client and
// server in this process. "full": a full mTLS handshake each time (no
// session cache); "resumed": each device resumes from its session ticket
// (as after a control-plane restart with persistent ticket keys). Run it
// a few times so the two alternate:
//
//	go test -c -o /tmp/broker.test ./controlplane/broker
//	for i in 1 2 3; do /tmp/broker.test -test.run '^$' -test.bench BenchmarkHandshake -test.benchtime 2s; done
func BenchmarkHandshake(b *testing.B) {
	ca, err := pki.NewCA("bench", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	keys, err := pki.LoadOrCreateTicketKeys(b.TempDir(), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	srvCert, err := ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	br, err := New(Config{Listen: "127.0.0.1:0", Certificate: srvCert, ClientCAs: ca.Pool(), SessionTicketKeys: keys.Keys(),
		IsRevoked: func(string, string) bool { return false }}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := br.Start(); err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	addr := br.Addr().String()
	type device struct {
		id         string
		full, resu *tls.Config
	}
	devs := make([]device, 256)
	for i := range devs {
		id := fmt.Sprintf("dev-%03d", i)
		c, err := ca.IssueClient(id, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		base := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{c}}
		devs[i] = device{id: id, full: base, resu: base.Clone()}
		devs[i].resu.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		if _, err := connectOnce(addr, devs[i].resu, id); err != nil {
			b.Fatal(err)
		}
	}
	for _, mode := range []string{"full", "resumed"} {
		b.Run(mode, func(b *testing.B) {
			var next, bad atomic.Int64
			r0, f0 := br.Stats.Resumed.Load(), br.Stats.FullTLS.Load()
			cpu0 := processCPU()
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					d := devs[int(next.Add(1))%len(devs)]
					tc := d.full
					if mode == "resumed" {
						tc = d.resu
					}
					if _, err := connectOnce(addr, tc, d.id); err != nil {
						bad.Add(1)
					}
				}
			})
			b.StopTimer()
			cpu := processCPU() - cpu0
			if n := bad.Load(); n > 0 {
				b.Errorf("%d of %d connects failed", n, b.N)
			}
			resumed, full := br.Stats.Resumed.Load()-r0, br.Stats.FullTLS.Load()-f0
			if (mode == "resumed") != (resumed > full) {
				b.Errorf("%s: %d resumed, %d full handshakes", mode, resumed, full)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "connects/s")
			b.ReportMetric(float64(resumed)/float64(max(1, resumed+full)), "resumed-fraction")
			// CPU time of client and server per connect: less sensitive
			// than connects/s to other load on the machine.
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/connect")
		})
	}
}

// processCPU is the user + system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// connectOnce does a TLS handshake, CONNECT and CONNACK, reads the
// PINGRESP of a PINGREQ (so the session ticket sent after the handshake
// is taken in) and closes; it reports whether the session was resumed.
func connectOnce(addr string, tc *tls.Config, id string) (bool, error) {
	conn, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, byte(len(id) >> 8), byte(len(id))}
	body := append(vh, id...)
	if _, err := conn.Write(append(append([]byte{0x10, byte(len(body))}, body...), 0xc0, 0)); err != nil {
		return false, err
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return false, err
	}
	if buf[0] != 0x20 || buf[3] != 0 || buf[4] != 0xd0 {
		return false, fmt.Errorf("CONNACK/PINGRESP %x", buf)
	}
	return conn.ConnectionState().DidResume, nil
}
