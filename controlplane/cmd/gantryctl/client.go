package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"golang.org/x/term"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// env is what a command runs with.
type env struct {
	g      globals
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	conn   *grpc.ClientConn
}

// session is the saved login.
type session struct {
	Server string `json:"server"`
	Token  string `json:"token"`
}

func sessionPath() (string, error) {
	if p := os.Getenv("GANTRY_SESSION_FILE"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find config dir: %w (set GANTRY_SESSION_FILE)", err)
	}
	return filepath.Join(dir, "gantry", "session.json"), nil
}

func saveSession(s session) error {
	p, err := sessionPath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(s)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

func loadSession() (session, error) {
	if t := os.Getenv("GANTRY_TOKEN"); t != "" {
		return session{Token: t}, nil
	}
	p, err := sessionPath()
	if err != nil {
		return session{}, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return session{}, errors.New("not logged in: run 'gantryctl login --email you@example.com'")
	}
	if err != nil {
		return session{}, err
	}
	var s session
	if err := json.Unmarshal(b, &s); err != nil {
		return session{}, fmt.Errorf("read %s: %w (delete it and log in again)", p, err)
	}
	return s, nil
}

// dial connects to the control plane's gRPC endpoint (same listener as the
// portal: h2c for http://, TLS for https://).
func (e *env) dial() (*grpc.ClientConn, error) {
	if e.conn != nil {
		return e.conn, nil
	}
	u, err := url.Parse(e.g.server)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("--server %q: want http://host:port or https://host:port", e.g.server)
	}
	var creds credentials.TransportCredentials
	if u.Scheme == "http" {
		creds = insecure.NewCredentials()
	} else {
		cfg, err := e.tlsConfig()
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(cfg)
	}
	host := u.Host
	if u.Port() == "" {
		if u.Scheme == "http" {
			host += ":80"
		} else {
			host += ":443"
		}
	}
	e.conn, err = grpc.NewClient(host, grpc.WithTransportCredentials(creds))
	return e.conn, err
}

// tlsConfig trusts the system roots, or the --ca bundle.
func (e *env) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.g.ca != "" {
		pem, err := os.ReadFile(e.g.ca)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no PEM certificates found", e.g.ca)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// authed returns a context carrying the saved session token.
func (e *env) authed(ctx context.Context) (context.Context, error) {
	s, err := loadSession()
	if err != nil {
		return nil, err
	}
	if s.Server != "" && !e.g.serverSet {
		e.g.server = s.Server
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.Token), nil
}

// password reads a password from GANTRY_PASSWORD or the terminal.
func (e *env) password(prompt string) (string, error) {
	if p := os.Getenv("GANTRY_PASSWORD"); p != "" {
		return p, nil
	}
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(e.stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		return string(b), err
	}
	line, err := bufio.NewReader(e.stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", errors.New("no password: set GANTRY_PASSWORD or type it at the prompt")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// print writes a message as JSON (--json) or through the table function.
func (e *env) print(m proto.Message, table func(w *tabwriter.Writer)) error {
	if e.g.json {
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(e.stdout, string(b))
		return err
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	table(w)
	return w.Flush()
}

// parseGrant parses ROLE[@KIND:ID].
func parseGrant(s string) (*gantryv1.RoleGrant, error) {
	role, scope, _ := strings.Cut(s, "@")
	g := &gantryv1.RoleGrant{RoleId: role}
	if scope != "" {
		sc, err := parseScope(scope)
		if err != nil {
			return nil, err
		}
		g.Scope = sc
	}
	return g, nil
}

func parseScope(s string) (*gantryv1.Scope, error) {
	kind, id, ok := strings.Cut(s, ":")
	if !ok || kind == "" {
		return nil, fmt.Errorf("scope %q: want KIND:ID, e.g. facility:1234 or tenant:", s)
	}
	return &gantryv1.Scope{Kind: kind, Id: id}, nil
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }
