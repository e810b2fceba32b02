package tunnelproto

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	r := Request{GrantID: "g-123", Target: "10.0.0.10:5900"}
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadRequest(bytes.NewReader(append(b, "trailing payload"...)))
	if err != nil || got != r {
		t.Fatalf("got %+v, %v; want %+v", got, err, r)
	}
	var buf bytes.Buffer
	if err := WriteOK(&buf); err != nil || ReadResponse(&buf) != nil {
		t.Fatalf("OK round trip failed")
	}
	buf.Reset()
	_ = WriteErr(&buf, "target 10.0.0.99:22 is not allowed\nby the grant")
	err = ReadResponse(&buf)
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, "not allowed by the grant") {
		t.Fatalf("ERR round trip: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	for name, line := range map[string]string{
		"empty":        "\n",
		"wrong magic":  "HELLO g 1.2.3.4:5\n",
		"missing port": "GANTRY-TUNNEL/1 g 1.2.3.4\n",
		"port 0":       "GANTRY-TUNNEL/1 g 1.2.3.4:0\n",
		"port 70000":   "GANTRY-TUNNEL/1 g 1.2.3.4:70000\n",
		"extra field":  "GANTRY-TUNNEL/1 g 1.2.3.4:5 x\n",
		"empty grant":  "GANTRY-TUNNEL/1  1.2.3.4:5\n",
		"no newline":   "GANTRY-TUNNEL/1 g 1.2.3.4:5",
		"too long":     "GANTRY-TUNNEL/1 " + strings.Repeat("g", MaxLine) + " 1.2.3.4:5\n",
	} {
		if _, err := ReadRequest(strings.NewReader(line)); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: got %v, want a protocol error", name, err)
		}
	}
	if _, err := (Request{GrantID: "g", Target: "bad target"}).Encode(); err == nil {
		t.Error("encoded an invalid target")
	}
	if err := ReadResponse(strings.NewReader("MAYBE\n")); !errors.Is(err, ErrProtocol) {
		t.Errorf("odd response: %v", err)
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add("GANTRY-TUNNEL/1 g-1 10.0.0.10:5900")
	f.Add("GANTRY-TUNNEL/1 g [::1]:502")
	f.Add("x")
	f.Fuzz(func(t *testing.T, line string) {
		r, err := ParseRequest(line)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error without ErrProtocol: %v", err)
			}
			return
		}
		b, err := r.Encode()
		if err != nil {
			t.Fatalf("parsed %q but cannot encode: %v", line, err)
		}
		r2, err := ParseRequest(string(b))
		if err != nil || r2 != r {
			t.Fatalf("round trip of %q: %+v %v", line, r2, err)
		}
	})
}
