package acceptance

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// TestInternalCasesNeverLeak walks every case endpoint as users of other
// tenants (the linked provider, an unrelated provider, another operator)
// and proves no internal case, its chat or its existence shows up.
func TestInternalCasesNeverLeak(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		ctx := context.Background()
		secret := "internal-secret-note"
		if _, err := w.caseClient("O1/ME").PostMessage(ctx, connect.NewRequest(&gantryv1.PostMessageRequest{CaseId: w.id("I1"), Body: secret})); err != nil {
			t.Fatalf("ME posts to I1: %v", err)
		}
		internal := []string{w.id("I1"), w.id("I3")}
		for _, who := range []string{"P1/1LS", "P1/ST", "P1/admin", "P1/MDM", "P1/CDM", "P1/ST-C2", "P2/ST", "O2/MO", "O2/admin"} {
			t.Run(strings.ReplaceAll(who, "/", "_"), func(t *testing.T) {
				c := w.caseClient(who)
				for _, kind := range []string{"", "internal", "shared"} {
					for _, mine := range []bool{false, true} {
						resp, err := c.ListCases(ctx, connect.NewRequest(&gantryv1.ListCasesRequest{Kind: kind, AssignedToMe: mine}))
						if err != nil {
							continue // a denial leaks nothing
						}
						for _, cs := range resp.Msg.Cases {
							if cs.Kind == "internal" || cs.TenantId != w.tenants["O1"].ID && cs.TenantId != w.tenants["O2"].ID {
								t.Errorf("ListCases(kind=%q, mine=%v) shows %s (%s)", kind, mine, cs.Title, cs.Kind)
							}
						}
					}
				}
				for _, id := range internal {
					if _, err := c.GetCase(ctx, connect.NewRequest(&gantryv1.GetCaseRequest{Id: id})); connect.CodeOf(err) != connect.CodeNotFound {
						t.Errorf("GetCase(internal) = %v, want not found (existence hidden)", err)
					}
					if r, err := c.ListMessages(ctx, connect.NewRequest(&gantryv1.ListMessagesRequest{CaseId: id})); err == nil {
						t.Errorf("ListMessages(internal) returned %d messages", len(r.Msg.Messages))
					}
					if _, err := c.PostMessage(ctx, connect.NewRequest(&gantryv1.PostMessageRequest{CaseId: id, Body: "x"})); err == nil {
						t.Errorf("PostMessage(internal) succeeded")
					}
					if _, err := c.UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: id, State: "closed"})); err == nil {
						t.Errorf("UpdateCase(internal) succeeded")
					}
					// Server stream over connect.
					sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					st, err := c.StreamMessages(sctx, connect.NewRequest(&gantryv1.StreamMessagesRequest{CaseId: id}))
					if err == nil {
						if st.Receive() {
							t.Errorf("StreamMessages(internal) delivered %v", st.Msg())
						}
						if connect.CodeOf(st.Err()) != connect.CodeNotFound {
							t.Errorf("StreamMessages(internal) ended with %v, want not found", st.Err())
						}
						st.Close()
					}
					cancel()
					// Server-Sent Events.
					req, _ := http.NewRequest(http.MethodGet, w.srv.URL+"/api/cases/"+id+"/chat/events", nil)
					req.Header.Set("Authorization", "Bearer "+w.actor(who).Token)
					resp, err := w.srv.HTTP.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
					resp.Body.Close()
					if resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), secret) {
						t.Errorf("SSE for internal case: %d %s", resp.StatusCode, body)
					}
				}
			})
		}
	})
}

// TestChatLive: a message posted on a shared case reaches the provider's
// live stream (connect server stream and SSE).
func TestChatLive(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		st, err := w.caseClient("P1/ST").StreamMessages(ctx, connect.NewRequest(&gantryv1.StreamMessagesRequest{CaseId: w.id("S1")}))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.srv.URL+"/api/cases/"+w.id("S1")+"/chat/events", nil)
		req.Header.Set("Authorization", "Bearer "+w.actor("P1/1LS").Token)
		resp, err := w.srv.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		sse := bufio.NewReader(resp.Body)
		if line, err := sse.ReadString('\n'); err != nil || !strings.HasPrefix(line, ": subscribed") {
			t.Fatalf("SSE preamble %q %v", line, err)
		}
		got := make(chan string, 1)
		go func() {
			if st.Receive() {
				got <- st.Msg().Body
			}
			close(got)
		}()
		// The connect stream is registered once the server handles it; post until it arrives.
		deadline := time.After(10 * time.Second)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
	loop:
		for {
			if _, err := w.caseClient("O1/MO").PostMessage(ctx, connect.NewRequest(&gantryv1.PostMessageRequest{CaseId: w.id("S1"), Body: "live hello"})); err != nil {
				t.Fatal(err)
			}
			select {
			case body := <-got:
				if body != "live hello" {
					t.Fatalf("stream got %q", body)
				}
				break loop
			case <-tick.C:
			case <-deadline:
				t.Fatal("no message on the live stream within 10s")
			}
		}
		for {
			line, err := sse.ReadString('\n')
			if err != nil {
				t.Fatalf("SSE: %v", err)
			}
			if strings.HasPrefix(line, "data: ") {
				if !strings.Contains(line, "live hello") {
					t.Fatalf("SSE data %q", line)
				}
				return
			}
		}
	})
}
