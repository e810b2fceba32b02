package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/broker"
	"github.com/gantry-iot/gantry/controlplane/pki"
	"github.com/gantry-iot/gantry/controlplane/presence"
	"github.com/gantry-iot/gantry/controlplane/revocation"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
)

// mqttConnect is a minimal MQTT 3.1.1 CONNECT (clean session, keep-alive
// 60 s) for clientID, so the benchmark's client side costs little beyond
// its TLS handshake.
func mqttConnect(clientID string) []byte {
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, byte(len(clientID) >> 8), byte(len(clientID))}
	body := append(vh, clientID...)
	return append([]byte{0x10, byte(len(body))}, body...)
}

// BenchmarkConnect measures the embedded broker's connect path as a
// reconnect storm sees it: full mTLS handshake, CONNECT with the
// revocation check, CONNACK, then the connection ends (online and offline
// recorded). "store": the previous path, one store lookup per CONNECT and
// one store write per state change; "cached": revocation.Checker (memory)
// and presence.Writer (coalesced writes). SQLite store, 512 devices,
// 16 connecting goroutines per core. Compare connects/s of the two in one
// run.
func BenchmarkConnect(b *testing.B) {
	for _, mode := range []string{"store", "cached"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			st := storetest.SQLite(b)
			ca, err := pki.NewCA("bench", time.Now())
			if err != nil {
				b.Fatal(err)
			}
			ten, _, err := st.CreateTenantWithAdmin(ctx, store.Tenant{Name: "bench", Kind: authz.KindOperator, TenantRoles: []authz.TenantRole{authz.OperatorInternalService}},
				store.User{Email: "bench@x.example", DisplayName: "B", PasswordHash: "h"})
			if err != nil {
				b.Fatal(err)
			}
			type device struct {
				id   string
				conf *tls.Config
			}
			var devs []device
			for i := range 512 {
				d, err := st.CreateDevice(ctx, store.EdgeDevice{TenantID: ten.ID, Name: "d", SerialNumber: fmt.Sprint(i)})
				if err != nil {
					b.Fatal(err)
				}
				cert, err := ca.IssueClient(d.ID, time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				if err := st.SetDeviceCert(ctx, d.ID, pki.SerialString(cert.Leaf), ""); err != nil {
					b.Fatal(err)
				}
				devs = append(devs, device{d.ID, &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"}})
			}
			cfg := broker.Config{Listen: "127.0.0.1:0", ClientCAs: ca.Pool()}
			if cfg.Certificate, err = ca.IssueServer([]string{"127.0.0.1"}, time.Hour); err != nil {
				b.Fatal(err)
			}
			switch mode {
			case "store":
				cfg.IsRevoked = func(id, serial string) bool {
					d, err := st.GetDevice(ctx, id)
					return err != nil || d.CertSerial != serial
				}
				set := func(id string, on bool) {
					if err := st.SetDeviceOnline(ctx, id, on, time.Now()); err != nil {
						b.Error(err)
					}
				}
				cfg.OnConnect = func(id string, _ time.Time) { set(id, true) }
				cfg.OnDisconnect = func(id string, _ time.Time) { set(id, false) }
			case "cached":
				c, err := revocation.New(ctx, st, revocation.Config{}, nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				w := presence.New(st, 0, nil, nil)
				go w.Run(ctx)
				defer w.Close()
				cfg.IsRevoked = c.IsRevoked
				cfg.OnConnect = func(id string, at time.Time) { w.Set(id, true, at) }
				cfg.OnDisconnect = func(id string, at time.Time) { w.Set(id, false, at) }
			}
			br, err := broker.New(cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := br.Start(); err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			addr := br.Addr().String()
			var next, refused atomic.Int64
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ack := make([]byte, 4)
				for pb.Next() {
					d := devs[int(next.Add(1))%len(devs)]
					conn, err := tls.Dial("tcp", addr, d.conf)
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := conn.Write(mqttConnect(d.id)); err != nil {
						b.Error(err)
					}
					if _, err := io.ReadFull(conn, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
						refused.Add(1)
					}
					conn.Close()
				}
			})
			b.StopTimer()
			if n := refused.Load(); n > 0 {
				b.Errorf("%d of %d connects refused", n, b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "connects/s")
		})
	}
}
