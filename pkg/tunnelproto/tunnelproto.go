// Package tunnelproto is the one-line handshake the control plane sends
// over a grant's WireGuard tunnel to ask the agent for a connection to a
// target on the machine network, and the agent's one-line answer.
//
//	request:  "GANTRY-TUNNEL/1 <grant-id> <host:port>\n"
//	response: "OK\n" | "ERR <reason>\n"
//
// After "OK" the connection carries the target's bytes unchanged. Lines
// are at most MaxLine bytes; anything else is a protocol error and the
// connection is closed.
package tunnelproto

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// Port is the TCP port the agent listens on inside the tunnel.
const Port = 7000

// MaxLine bounds request and response lines, newline included.
const MaxLine = 512

const magic = "GANTRY-TUNNEL/1"

// ErrProtocol marks malformed handshake lines.
var ErrProtocol = errors.New("tunnel protocol")

// Request is a connection request.
type Request struct {
	GrantID string
	Target  string // host:port
}

// CheckTarget reports whether t is a usable host:port: a non-empty host
// without spaces or control characters and a port 1..65535.
func CheckTarget(t string) error {
	host, port, err := net.SplitHostPort(t)
	if err != nil {
		return fmt.Errorf("%w: target %q is not host:port", ErrProtocol, t)
	}
	if host == "" || !printable(host) {
		return fmt.Errorf("%w: target %q has an empty or invalid host", ErrProtocol, t)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%w: target %q has an invalid port (1..65535)", ErrProtocol, t)
	}
	return nil
}

func printable(s string) bool {
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// Encode returns the request line.
func (r Request) Encode() ([]byte, error) {
	if r.GrantID == "" || !printable(r.GrantID) {
		return nil, fmt.Errorf("%w: invalid grant ID %q", ErrProtocol, r.GrantID)
	}
	if err := CheckTarget(r.Target); err != nil {
		return nil, err
	}
	line := magic + " " + r.GrantID + " " + r.Target + "\n"
	if len(line) > MaxLine {
		return nil, fmt.Errorf("%w: request longer than %d bytes", ErrProtocol, MaxLine)
	}
	return []byte(line), nil
}

// ParseRequest parses one request line (with or without its newline).
func ParseRequest(line string) (Request, error) {
	line = strings.TrimSuffix(line, "\n")
	if len(line) >= MaxLine {
		return Request{}, fmt.Errorf("%w: request longer than %d bytes", ErrProtocol, MaxLine)
	}
	f := strings.Split(line, " ")
	if len(f) != 3 || f[0] != magic {
		return Request{}, fmt.Errorf("%w: expected %q <grant> <host:port>", ErrProtocol, magic)
	}
	r := Request{GrantID: f[1], Target: f[2]}
	if r.GrantID == "" || !printable(r.GrantID) {
		return Request{}, fmt.Errorf("%w: invalid grant ID", ErrProtocol)
	}
	if err := CheckTarget(r.Target); err != nil {
		return Request{}, err
	}
	return r, nil
}

// ReadLine reads one newline-terminated line of at most MaxLine bytes
// without consuming anything after it.
func ReadLine(r io.Reader) (string, error) {
	var b [1]byte
	var sb strings.Builder
	for sb.Len() < MaxLine {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return "", fmt.Errorf("%w: connection closed before the end of the line", ErrProtocol)
			}
			return "", err
		}
		if b[0] == '\n' {
			return sb.String(), nil
		}
		sb.WriteByte(b[0])
	}
	return "", fmt.Errorf("%w: line longer than %d bytes", ErrProtocol, MaxLine)
}

// ReadRequest reads and parses a request from r.
func ReadRequest(r io.Reader) (Request, error) {
	line, err := ReadLine(r)
	if err != nil {
		return Request{}, err
	}
	return ParseRequest(line)
}

// WriteOK answers a request positively.
func WriteOK(w io.Writer) error {
	_, err := io.WriteString(w, "OK\n")
	return err
}

// WriteErr refuses a request with a reason (newlines and overlong text
// are cut).
func WriteErr(w io.Writer, reason string) error {
	reason = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, reason)
	if len(reason) > MaxLine-8 {
		reason = reason[:MaxLine-8]
	}
	_, err := io.WriteString(w, "ERR "+reason+"\n")
	return err
}

// RefusedError is the agent's reason for refusing a request.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "the edge device refused the connection: " + e.Reason }

// ReadResponse reads the agent's answer: nil for OK, *RefusedError for
// ERR, an ErrProtocol error for anything else.
func ReadResponse(r io.Reader) error {
	line, err := ReadLine(r)
	if err != nil {
		return err
	}
	switch {
	case line == "OK":
		return nil
	case strings.HasPrefix(line, "ERR "):
		return &RefusedError{Reason: strings.TrimPrefix(line, "ERR ")}
	}
	return fmt.Errorf("%w: unexpected response %q", ErrProtocol, truncate(line, 64))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
