// Package nodeopcua runs server.mjs, an OPC-UA server built on node-opcua
// (an implementation independent of gopcua, installed from npm by
// `npm ci`), for the agent's security interop tests: Basic256Sha256 with
// Sign and SignAndEncrypt, username login, X.509 user certificate login
// (Options.TrustedUserCert), no anonymous access, and the
// changing variables ns=1;s=Temperature and ns=1;s=Counter.
package nodeopcua

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// User is the login the server accepts (with the password given to Start).
const User = "operator"

// Node IDs of the server's variables.
const (
	Temperature   = "ns=1;s=Temperature"
	Counter       = "ns=1;s=Counter"       // +1 every 100 ms
	Subscriptions = "ns=1;s=Subscriptions" // the server's live subscriptions
)

// ErrUnavailable means node or the node-opcua package is missing.
var ErrUnavailable = errors.New("node-opcua unavailable")

// root is the repository root (node_modules lives there).
func root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Available reports why the server cannot run here, or nil.
func Available() error {
	if _, err := exec.LookPath("node"); err != nil {
		return fmt.Errorf("%w: node not installed (apt-get install -y nodejs; make deps does it)", ErrUnavailable)
	}
	if _, err := os.Stat(filepath.Join(root(), "node_modules", "node-opcua")); err != nil {
		return fmt.Errorf("%w: node-opcua not installed (npm ci; make deps does it)", ErrUnavailable)
	}
	return nil
}

// Server is a running node-opcua server.
type Server struct {
	URL    string // opc.tcp://127.0.0.1:PORT
	Port   int
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	stderr bytes.Buffer
}

// Start runs the server on a free loopback port with its PKI in pkiDir
// and waits until it listens (node-opcua creates its certificate first).
func Start(ctx context.Context, password, pkiDir string) (*Server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return StartOn(ctx, port, password, pkiDir)
}

// Options are the server's optional settings.
type Options struct {
	// TrustedUserCert is a PEM or DER certificate file whose holder may
	// log in with an X.509 user identity token; the server rejects every
	// other user certificate. Empty: none is trusted.
	TrustedUserCert string
}

// StartOn is Start on a given port, e.g. to restart a server where its
// clients expect it (same pkiDir: same certificate).
func StartOn(ctx context.Context, port int, password, pkiDir string) (*Server, error) {
	return StartWith(ctx, port, password, pkiDir, Options{})
}

// StartWith is StartOn with Options; port 0 picks a free port.
func StartWith(ctx context.Context, port int, password, pkiDir string, o Options) (*Server, error) {
	if port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	if err := Available(); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(rctx, "node", filepath.Join(root(), "testbed", "nodeopcua", "server.mjs"), strconv.Itoa(port), pkiDir)
	cmd.Env = append(os.Environ(), "OPCUA_USER="+User, "OPCUA_PASSWORD="+password, "OPCUA_TRUSTED_USER_CERT="+o.TrustedUserCert)
	s := &Server{URL: "opc.tcp://127.0.0.1:" + strconv.Itoa(port), Port: port, cancel: cancel, done: make(chan struct{})}
	cmd.Stderr = (*lockedWriter)(s)
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	ready := make(chan struct{})
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "READY ") {
				close(ready)
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case <-ready:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("node-opcua server exited: %s", s.Stderr())
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("node-opcua server not ready: %w; stderr: %s", ctx.Err(), s.Stderr())
	case <-time.After(90 * time.Second):
		s.Close()
		return nil, fmt.Errorf("node-opcua server not ready within 90 s: %s", s.Stderr())
	}
}

type lockedWriter Server

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stderr.Write(p)
}

// Stderr is what the server printed on standard error.
func (s *Server) Stderr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// Close stops the server and waits for it.
func (s *Server) Close() {
	s.cancel()
	<-s.done
}
