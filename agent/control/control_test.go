package control

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gantry-iot/gantry/pkg/command"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

func TestHandle(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	v, err := command.NewVerifier(pub, "dev-1", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	reloaded := 0
	h := New(v, Actions{ReloadConfig: func() error { reloaded++; return nil }}, nil)
	send := func(dev string, body *gantryv1.Command) *gantryv1.CommandAck {
		c := command.New(dev, time.Minute, time.Now())
		c.Body = body.Body
		p, _ := command.Sign(key, c)
		var ack gantryv1.CommandAck
		if err := proto.Unmarshal(h.Handle(p), &ack); err != nil {
			t.Fatal(err)
		}
		if ack.Nonce != c.Nonce {
			t.Errorf("ack nonce %q, want %q", ack.Nonce, c.Nonce)
		}
		return &ack
	}
	if a := send("dev-1", &gantryv1.Command{Body: &gantryv1.Command_Ping{Ping: &gantryv1.Ping{}}}); !a.Ok {
		t.Errorf("ping: %v", a)
	}
	if a := send("dev-1", &gantryv1.Command{Body: &gantryv1.Command_ReloadConfig{ReloadConfig: &gantryv1.ReloadConfig{}}}); !a.Ok || reloaded != 1 {
		t.Errorf("reload: %v (reloaded %d)", a, reloaded)
	}
	if a := send("dev-1", &gantryv1.Command{Body: &gantryv1.Command_RestartCollector{RestartCollector: &gantryv1.RestartCollector{}}}); a.Ok || !strings.Contains(a.Error, "not available") {
		t.Errorf("restart collector without a collector: %v", a)
	}
	if a := send("dev-2", &gantryv1.Command{Body: &gantryv1.Command_Ping{Ping: &gantryv1.Ping{}}}); a.Ok || !strings.Contains(a.Error, "another device") {
		t.Errorf("foreign device: %v", a)
	}
	var garbage gantryv1.CommandAck
	_ = proto.Unmarshal(h.Handle([]byte("junk")), &garbage)
	if garbage.Ok || !strings.HasPrefix(garbage.Error, "rejected") {
		t.Errorf("garbage: %v", &garbage)
	}
	if h.Stats.Executed.Load() != 2 || h.Stats.Rejected.Load() != 2 || h.Stats.Failed.Load() != 1 {
		t.Errorf("stats executed=%d rejected=%d failed=%d", h.Stats.Executed.Load(), h.Stats.Rejected.Load(), h.Stats.Failed.Load())
	}
}

// TestHandleTemplate: a reload_config with a template goes to
// ApplyTemplate (and only then); its error becomes the ack's; a tampered
// template command is rejected before anything runs.
func TestHandleTemplate(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	v, err := command.NewVerifier(pub, "dev-1", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []*gantryv1.DeviceTemplate
	reloaded := 0
	h := New(v, Actions{
		ReloadConfig: func() error { reloaded++; return nil },
		ApplyTemplate: func(tp *gantryv1.DeviceTemplate) error {
			got = append(got, tp)
			if tp.Version == 2 {
				return errors.New("template v2 refused: bad")
			}
			return nil
		},
	}, nil)
	sign := func(version uint64) []byte {
		c := command.New("dev-1", time.Minute, time.Now())
		c.Body = &gantryv1.Command_ReloadConfig{ReloadConfig: &gantryv1.ReloadConfig{Template: &gantryv1.DeviceTemplate{Version: version, Hash: "h",
			Opcua: &gantryv1.OpcuaTemplate{EndpointUrl: "opc.tcp://127.0.0.1:4840", SecurityMode: "None"}}}}
		p, _ := command.Sign(key, c)
		return p
	}
	ack := func(p []byte) *gantryv1.CommandAck {
		var a gantryv1.CommandAck
		if err := proto.Unmarshal(h.Handle(p), &a); err != nil {
			t.Fatal(err)
		}
		return &a
	}
	if a := ack(sign(1)); !a.Ok || len(got) != 1 || got[0].GetOpcua().GetEndpointUrl() != "opc.tcp://127.0.0.1:4840" || reloaded != 0 {
		t.Fatalf("template v1: ack %v, applied %d, reloaded %d", a, len(got), reloaded)
	}
	if a := ack(sign(2)); a.Ok || a.Error != "template v2 refused: bad" {
		t.Fatalf("template v2: ack %v, want the action's error", a)
	}
	// Tampered: change the endpoint inside the signed bytes.
	var sc gantryv1.SignedCommand
	_ = proto.Unmarshal(sign(3), &sc)
	var c gantryv1.Command
	_ = proto.Unmarshal(sc.Command, &c)
	c.GetReloadConfig().Template.Opcua.EndpointUrl = "opc.tcp://evil.example:4840"
	sc.Command, _ = proto.Marshal(&c)
	tampered, _ := proto.Marshal(&sc)
	if a := ack(tampered); a.Ok || !strings.HasPrefix(a.Error, "rejected") || len(got) != 2 {
		t.Fatalf("tampered template: ack %v, applied %d times, want rejected and not applied", a, len(got))
	}
	// Unsigned: no signature at all.
	sc.Signature = nil
	unsigned, _ := proto.Marshal(&sc)
	if a := ack(unsigned); a.Ok || !strings.HasPrefix(a.Error, "rejected") || len(got) != 2 {
		t.Fatalf("unsigned template: ack %v, applied %d times", a, len(got))
	}
	// Without ApplyTemplate the agent says so.
	h2 := New(v, Actions{}, nil)
	var a gantryv1.CommandAck
	_ = proto.Unmarshal(h2.Handle(sign(4)), &a)
	if a.Ok || !strings.Contains(a.Error, "not available") {
		t.Fatalf("no ApplyTemplate: %v", &a)
	}
}
