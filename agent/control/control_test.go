package control

import (
	"crypto/ed25519"
	"crypto/rand"
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
