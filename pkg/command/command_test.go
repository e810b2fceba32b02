package command

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

func ping(dev string, now time.Time) *gantryv1.Command {
	c := New(dev, time.Minute, now)
	c.Body = &gantryv1.Command_Ping{Ping: &gantryv1.Ping{}}
	return c
}

func TestVerify(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	sign := func(k ed25519.PrivateKey, c *gantryv1.Command) []byte {
		b, err := Sign(k, c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := sign(key, ping("dev-1", now))
	tampered := func() []byte {
		var sc gantryv1.SignedCommand
		_ = proto.Unmarshal(good, &sc)
		sc.Command[len(sc.Command)-1] ^= 1
		b, _ := proto.Marshal(&sc)
		return b
	}()
	unsigned := func() []byte {
		body, _ := proto.Marshal(ping("dev-1", now))
		b, _ := proto.Marshal(&gantryv1.SignedCommand{Command: body})
		return b
	}()
	long := ping("dev-1", now)
	long.ExpiresAt = timestamppb.New(now.Add(time.Hour))
	future := ping("dev-1", now.Add(5*time.Minute))
	noBody := New("dev-1", time.Minute, now)
	for _, tc := range []struct {
		name    string
		payload []byte
		want    error
	}{
		{"garbage", []byte{0xff, 0x01, 0x02}, ErrMalformed},
		{"unsigned", unsigned, ErrUnsigned},
		{"tampered", tampered, ErrBadSignature},
		{"foreign key", sign(otherKey, ping("dev-1", now)), ErrBadSignature},
		{"other device", sign(key, ping("dev-2", now)), ErrWrongDevice},
		{"expired", sign(key, ping("dev-1", now.Add(-2*time.Minute))), ErrExpired},
		{"future", sign(key, future), ErrNotYetValid},
		{"window too long", sign(key, long), ErrTooLong},
		{"no body", sign(key, noBody), ErrMalformed},
	} {
		v, err := NewVerifier(pub, "dev-1", "", clock)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(tc.payload); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Accept once; refuse the replay, also after a restart with the nonce log.
	log := filepath.Join(t.TempDir(), "nonces.json")
	v, _ := NewVerifier(pub, "dev-1", log, clock)
	c, err := v.Verify(good)
	if err != nil || c.GetPing() == nil {
		t.Fatalf("good command: %v", err)
	}
	if _, err := v.Verify(good); !errors.Is(err, ErrReplay) {
		t.Errorf("replay: %v", err)
	}
	v2, err := NewVerifier(pub, "dev-1", log, clock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.Verify(good); !errors.Is(err, ErrReplay) {
		t.Errorf("replay after restart: %v", err)
	}
	if _, err := NewVerifier(nil, "dev-1", "", nil); err == nil {
		t.Errorf("verifier without key accepted")
	}
}

func FuzzVerify(f *testing.F) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	b, _ := Sign(key, ping("dev-1", time.Now()))
	f.Add(b)
	f.Fuzz(func(t *testing.T, payload []byte) {
		v, _ := NewVerifier(pub, "dev-1", "", nil)
		c, err := v.Verify(payload)
		if err == nil && c.DeviceId != "dev-1" {
			t.Fatalf("accepted a command for %q", c.DeviceId)
		}
	})
}
