// Package servertest starts a real control plane on a free loopback port
// for tests, on a store the test provides (see store/storetest), and
// offers helpers to create users and sessions quickly.
package servertest

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/server"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// Password is the password of users created by the helpers.
const Password = "test-password-1"

var (
	hashOnce sync.Once
	hash     string
)

// PasswordHash returns an argon2id hash of Password, computed once per
// test binary (hashing is deliberately slow).
func PasswordHash(t testing.TB) string {
	t.Helper()
	hashOnce.Do(func() {
		var err error
		hash, err = identity.HashPassword(Password)
		if err != nil {
			panic(err)
		}
	})
	return hash
}

// Server is a running control plane.
type Server struct {
	*server.Server
	HTTP *http.Client
}

// Start runs a dev-mode control plane on 127.0.0.1:0 with st and stops it
// when the test ends.
func Start(t testing.TB, st store.Store) *Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, server.Config{Dev: true, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", DataDir: t.TempDir(), Store: st}, nil)
	if err != nil {
		cancel()
		t.Fatalf("servertest: start control plane: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("servertest: serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("servertest: server did not stop within 10s")
		}
		s.Close()
	})
	return &Server{Server: s, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// Session creates a session for userID directly in the store and returns
// its bearer token (skips the slow password check of Login).
func (s *Server) Session(t testing.TB, userID, tenantID string) string {
	t.Helper()
	token, h, err := identity.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if err := s.Store.CreateSession(context.Background(), store.Session{TokenHash: h, UserID: userID, TenantID: tenantID, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatalf("servertest: create session: %v", err)
	}
	return token
}

// Bearer returns a connect client option that sends token on every call,
// unary and streaming.
func Bearer(token string) connect.ClientOption {
	return connect.WithInterceptors(bearer(token))
}

type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if b != "" {
			req.Header().Set("Authorization", "Bearer "+string(b))
		}
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if b != "" {
			conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		}
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
