// Package agenttest runs an enrolled agent inside a test process: the
// real enrollment, MQTT link, signed-command handler and tunnel manager,
// without the collector and queue. Control-plane tests use it where the
// agent binary (tested end to end in testbed/e2e) would be too slow to
// start for every case.
package agenttest

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/agent/control"
	"github.com/gantry-iot/gantry/agent/enroll"
	"github.com/gantry-iot/gantry/agent/link"
	"github.com/gantry-iot/gantry/agent/tunnel"
	"github.com/gantry-iot/gantry/pkg/command"
	"github.com/gantry-iot/gantry/pkg/topics"
	"google.golang.org/protobuf/proto"
)

// Agent is a running in-process agent.
type Agent struct {
	DeviceID string
	Tunnels  *tunnel.Manager
	link     *link.Link
}

// Options configure Start.
type Options struct {
	// Dial maps targets to test servers (see tunnel.Options.Dial).
	Dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger *slog.Logger
}

// Start enrolls with token at serverURL and connects; it stops when the
// test ends.
func Start(t testing.TB, serverURL, token string, o Options) *Agent {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := enroll.Enroll(ctx, enroll.Options{Server: serverURL, Token: token, StateDir: dir, AgentVersion: "agenttest"}); err != nil {
		t.Fatalf("agenttest: enroll: %v", err)
	}
	st, cert, pool, err := enroll.Load(dir)
	if err != nil {
		t.Fatalf("agenttest: %v", err)
	}
	v, err := command.NewVerifier(st.CommandPublicKey, st.DeviceID, filepath.Join(dir, "nonces.json"), nil)
	if err != nil {
		t.Fatalf("agenttest: %v", err)
	}
	a := &Agent{DeviceID: st.DeviceID, Tunnels: tunnel.New(tunnel.Options{Dial: o.Dial, Logger: o.Logger})}
	h := control.New(v, control.Actions{TunnelUp: a.Tunnels.Up, TunnelDown: a.Tunnels.Down}, o.Logger)
	var l *link.Link
	ready := make(chan struct{})
	l, err = link.Dial(ctx, link.Config{DeviceID: st.DeviceID, BrokerURL: st.MQTTURL, Certificate: cert, RootCAs: pool, AgentVersion: "agenttest",
		OnCommand: func(p []byte) {
			ack := h.Handle(p)
			<-ready
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_ = l.Publish(pctx, topics.CmdAck, ack)
		}}, o.Logger)
	if err != nil {
		t.Fatalf("agenttest: connect: %v", err)
	}
	a.link = l
	close(ready)
	t.Cleanup(func() {
		a.Tunnels.Close()
		_ = l.Close()
	})
	return a
}

// Publish sends m on the device's topic of kind k over the agent's MQTT
// link (QoS 1, as the forwarder sends queued records), e.g. a
// TelemetryBatch or an EventBatch, and returns after the broker's PUBACK.
func (a *Agent) Publish(ctx context.Context, k topics.Kind, m proto.Message) error {
	payload, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return a.link.Publish(ctx, k, payload)
}
