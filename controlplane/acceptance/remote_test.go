package acceptance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/agent/agenttest"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	"github.com/gantry-iot/gantry/pkg/wsconn"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
	"github.com/gantry-iot/gantry/testbed/rfbserver"
)

func (w *world) remoteClient(key string) gantryv1connect.RemoteAccessServiceClient {
	return gantryv1connect.NewRemoteAccessServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor(key).Token))
}

// buildGrants: active on S1 and I1, expired on S3 (world header).
func (w *world) buildGrants(ctx context.Context, st store.Store) {
	now := time.Now().UTC()
	for _, g := range []struct {
		c       string
		asset   string
		dev     string
		expires time.Time
	}{{"S1", "A1", "D1", now.Add(time.Hour)}, {"I1", "A1", "D1", now.Add(time.Hour)}, {"S3", "A3", "D3", now.Add(-time.Minute)}} {
		_, err := st.CreateGrant(ctx, store.Grant{TenantID: w.tenants["O1"].ID, CaseID: w.ids[g.c], AssetID: w.ids[g.asset], DeviceID: w.ids[g.dev],
			ConnectionTypes: []string{"vnc", "data_link", "ssc"}, ActivatedBy: w.actor("O1/ME").ID, ActivatedAt: now.Add(-2 * time.Hour), ExpiresAt: g.expires})
		if err != nil {
			w.t.Fatalf("world: grant on %s: %v", g.c, err)
		}
	}
}

func runRemoteRow(t *testing.T, w *world, r rule) error {
	t.Helper()
	ctx := context.Background()
	c := w.remoteClient(r.Actor)
	switch r.Action {
	case "activate remote access":
		resp, err := c.ActivateRemoteAccess(ctx, connect.NewRequest(&gantryv1.ActivateRemoteAccessRequest{CaseId: w.id(r.Target)}))
		if err == nil {
			g := resp.Msg.Grant
			if !g.Active || g.DeviceId != w.id("D1") || strings.Join(g.ConnectionTypes, ",") != "vnc,data_link,ssc" {
				t.Errorf("row %s: grant %v", r.ID, g)
			}
			if d := g.ExpiresAt.AsTime().Sub(g.ActivatedAt.AsTime()); d != 2*time.Hour {
				t.Errorf("row %s: default grant lasts %v, want 2h", r.ID, d)
			}
		} else if ra, _ := w.remoteClient("O1/ME").GetRemoteAccess(ctx, connect.NewRequest(&gantryv1.GetRemoteAccessRequest{CaseId: w.id(r.Target)})); ra != nil && ra.Msg.Grant.GetActive() {
			t.Errorf("row %s: refused but a grant is active", r.ID)
		}
		return err
	case "request remote access":
		resp, err := c.RequestRemoteAccess(ctx, connect.NewRequest(&gantryv1.RequestRemoteAccessRequest{CaseId: w.id(r.Target), Reason: "drive parameters", DurationMinutes: 60}))
		if err == nil && resp.Msg.Request.State != "pending" {
			t.Errorf("row %s: request %v", r.ID, resp.Msg.Request)
		}
		return err
	case "use remote access VNC":
		if r.Expected == "allow" {
			w.startAgent(t, "D1")
		}
		return w.useVNC(ctx, c, w.id(r.Target))
	}
	t.Fatalf("row %s: no driver for remote-access action %q", r.ID, r.Action)
	return nil
}

// TestRule_ActivatingAnActiveGrantExtendsIt and the request/approve flow.
func TestRule_ActivatingAnActiveGrantExtendsIt(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		ctx := context.Background()
		me := w.remoteClient("O1/ME")
		first, err := me.ActivateRemoteAccess(ctx, connect.NewRequest(&gantryv1.ActivateRemoteAccessRequest{CaseId: w.id("S2"), DurationMinutes: 30}))
		if err != nil {
			t.Fatal(err)
		}
		second, err := me.ActivateRemoteAccess(ctx, connect.NewRequest(&gantryv1.ActivateRemoteAccessRequest{CaseId: w.id("S2"), DurationMinutes: 240}))
		if err != nil {
			t.Fatal(err)
		}
		if second.Msg.Grant.Id != first.Msg.Grant.Id || !second.Msg.Grant.ExpiresAt.AsTime().After(first.Msg.Grant.ExpiresAt.AsTime().Add(3*time.Hour)) {
			t.Errorf("re-activation did not extend the grant: %v → %v", first.Msg.Grant, second.Msg.Grant)
		}
		if _, err := me.ActivateRemoteAccess(ctx, connect.NewRequest(&gantryv1.ActivateRemoteAccessRequest{CaseId: w.id("S2"), DurationMinutes: 600})); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("beyond the tenant maximum: %v", err)
		}
		if _, err := me.DeactivateRemoteAccess(ctx, connect.NewRequest(&gantryv1.DeactivateRemoteAccessRequest{CaseId: w.id("S2")})); err != nil {
			t.Fatal(err)
		}
		ra, err := w.remoteClient("P1/ST").GetRemoteAccess(ctx, connect.NewRequest(&gantryv1.GetRemoteAccessRequest{CaseId: w.id("S2")}))
		if err != nil || ra.Msg.Grant.Active || ra.Msg.Grant.DeactivatedBy != w.actor("O1/ME").ID {
			t.Errorf("after deactivation: %v %v", ra, err)
		}
		// A2 has no device: no grant possible.
		cs, err := w.caseClient("O1/ME").CreateCase(ctx, connect.NewRequest(&gantryv1.CreateCaseRequest{AssetId: w.id("A2"), Kind: "internal", Title: "no device"}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := me.ActivateRemoteAccess(ctx, connect.NewRequest(&gantryv1.ActivateRemoteAccessRequest{CaseId: cs.Msg.Case.Id})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Errorf("activation without a device: %v", err)
		}
		// Provider request → operator approval activates.
		req, err := w.remoteClient("P1/ST").RequestRemoteAccess(ctx, connect.NewRequest(&gantryv1.RequestRemoteAccessRequest{CaseId: w.id("S2"), Reason: "firmware check", DurationMinutes: 45}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.remoteClient("P1/1LS").RequestRemoteAccess(ctx, connect.NewRequest(&gantryv1.RequestRemoteAccessRequest{CaseId: w.id("S2"), Reason: "x"})); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("1LS (no Remote Access) requests: %v", err)
		}
		if _, err := w.remoteClient("P1/ST").DecideAccessRequest(ctx, connect.NewRequest(&gantryv1.DecideAccessRequestRequest{RequestId: req.Msg.Request.Id, Approve: true})); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("provider approves its own request: %v", err)
		}
		dec, err := w.remoteClient("O1/MO").DecideAccessRequest(ctx, connect.NewRequest(&gantryv1.DecideAccessRequestRequest{RequestId: req.Msg.Request.Id, Approve: true}))
		if err != nil || dec.Msg.Request.State != "approved" || !dec.Msg.Grant.GetActive() {
			t.Fatalf("approve: %v %v", dec, err)
		}
		if d := dec.Msg.Grant.ExpiresAt.AsTime().Sub(dec.Msg.Grant.ActivatedAt.AsTime()); d != 45*time.Minute {
			t.Errorf("approved grant lasts %v, want the requested 45m", d)
		}
		if _, err := w.remoteClient("O1/MO").DecideAccessRequest(ctx, connect.NewRequest(&gantryv1.DecideAccessRequestRequest{RequestId: req.Msg.Request.Id, Approve: false})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Errorf("deciding twice: %v", err)
		}
		// Internal cases: providers cannot even see the grant.
		if _, err := w.remoteClient("P1/ST").GetRemoteAccess(ctx, connect.NewRequest(&gantryv1.GetRemoteAccessRequest{CaseId: w.id("I1")})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("provider reads internal grant: %v", err)
		}
	})
}

// startAgent enrolls an in-process agent as device dev whose tunnels reach
// the world's VNC target (10.0.0.10:5900) on a local rfbserver.
func (w *world) startAgent(t *testing.T, dev string) *agenttest.Agent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rfb := rfbserver.New(rfbserver.Config{Width: 64, Height: 48}, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { rfb.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done; rfb.Close() })
	tok, err := w.deviceClient("P1/ST").CreateEnrollmentToken(ctx, connect.NewRequest(&gantryv1.CreateEnrollmentTokenRequest{DeviceId: w.id(dev)}))
	if err != nil {
		t.Fatalf("enrollment token for %s: %v", dev, err)
	}
	var d net.Dialer
	return agenttest.Start(t, w.srv.URL, tok.Msg.Token, agenttest.Options{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == "10.0.0.10:5900" {
			addr = l.Addr().String()
		}
		return d.DialContext(ctx, network, addr)
	}})
}

// useVNC opens a VNC session on a case and really connects: the RFB
// server's greeting must arrive through the WebSocket, the hub and the
// agent.
func (w *world) useVNC(ctx context.Context, c gantryv1connect.RemoteAccessServiceClient, caseID string) error {
	conn, err := w.openVNC(ctx, c, caseID)
	if err != nil {
		return err
	}
	return conn.Close()
}

// openVNC opens a session and returns it after the RFB greeting.
func (w *world) openVNC(ctx context.Context, c gantryv1connect.RemoteAccessServiceClient, caseID string) (net.Conn, error) {
	s, err := c.OpenSession(ctx, connect.NewRequest(&gantryv1.OpenSessionRequest{CaseId: caseID, ConnectionType: "vnc"}))
	if err != nil {
		return nil, err
	}
	if s.Msg.Target != "10.0.0.10:5900" {
		return nil, fmt.Errorf("session target %q, want the template's 10.0.0.10:5900", s.Msg.Target)
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := wsconn.Dial(dctx, "ws"+strings.TrimPrefix(w.srv.URL, "http")+s.Msg.WebsocketPath+"?token="+s.Msg.Token, nil)
	if err != nil {
		return nil, fmt.Errorf("session allowed but not opened: %w", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	greeting := make([]byte, 12)
	if _, err := io.ReadFull(conn, greeting); err != nil || string(greeting) != "RFB 003.008\n" {
		conn.Close()
		return nil, fmt.Errorf("no RFB greeting through the session: %q %v", greeting, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return conn, nil
}

// waitClosed waits for the server to end a session and returns the close
// reason and how long it took.
func waitClosed(t *testing.T, conn net.Conn, within time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(within))
	_, err := io.Copy(io.Discard, conn)
	var cr *wsconn.CloseReason
	if !errors.As(err, &cr) {
		t.Fatalf("session not ended by the server within %v: %v", within, err)
	}
	return cr.Text, time.Since(start)
}

// TestRule_LiveSessionsEndWhenAccessEnds: role removal, expiry and device
// unlink end a live session within 1 s (3 s allowed under -race), with
// the reason in the WebSocket close frame; more denials for "use".
func TestRule_LiveSessionsEndWhenAccessEnds(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		w.startAgent(t, "D1")
		ctx := context.Background()
		me := w.remoteClient("O1/ME")

		// Role removal.
		conn, err := w.openVNC(ctx, me, w.id("I1"))
		if err != nil {
			t.Fatal(err)
		}
		admin := gantryv1connect.NewRoleServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor("O1/admin").Token))
		as, err := admin.ListAssignments(ctx, connect.NewRequest(&gantryv1.ListAssignmentsRequest{UserId: w.actor("O1/ME").ID}))
		if err != nil || len(as.Msg.Assignments) != 1 {
			t.Fatalf("ME's assignments: %v %v", as, err)
		}
		if _, err := admin.RevokeRole(ctx, connect.NewRequest(&gantryv1.RevokeRoleRequest{AssignmentId: as.Msg.Assignments[0].Id})); err != nil {
			t.Fatal(err)
		}
		reason, took := waitClosed(t, conn, 10*time.Second)
		t.Logf("role removed → session closed in %v: %s", took.Round(time.Millisecond), reason)
		if took > 3*time.Second || !strings.Contains(reason, "access ended") {
			t.Errorf("role removal: closed after %v with %q", took, reason)
		}

		// Expiry: the grant on I1 runs out in a moment.
		mo := w.remoteClient("O1/MO")
		conn, err = w.openVNC(ctx, mo, w.id("I1"))
		if err != nil {
			t.Fatal(err)
		}
		g, err := w.srv.Store.LatestGrant(ctx, w.id("I1"))
		if err != nil {
			t.Fatal(err)
		}
		expires := time.Now().Add(500 * time.Millisecond)
		if err := w.srv.Store.ExtendGrant(ctx, g.ID, expires); err != nil {
			t.Fatal(err)
		}
		reason, _ = waitClosed(t, conn, 10*time.Second)
		// Whichever notices first words it: the session re-check ("expired")
		// or the tunnel manager ending the grant.
		if late := time.Since(expires); late > 3*time.Second || !strings.Contains(reason, "expired") && !strings.Contains(reason, "grant ended") {
			t.Errorf("expiry: closed %v after expiry with %q", late, reason)
		}

		// Device unlink: the shared case S1's grant belongs to D1.
		st := w.remoteClient("P1/ST")
		conn, err = w.openVNC(ctx, st, w.id("S1"))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.srv.Store.LinkDevice(ctx, w.id("D1"), ""); err != nil {
			t.Fatal(err)
		}
		reason, took = waitClosed(t, conn, 10*time.Second)
		if took > 3*time.Second || !strings.Contains(reason, "no longer serves") {
			t.Errorf("device unlink: closed after %v with %q", took, reason)
		}

		// Case closing ends the grant and the session (WM may use I1 too).
		if err := w.srv.Store.LinkDevice(ctx, w.id("D1"), w.id("CM-A1")); err != nil {
			t.Fatal(err)
		}
		conn, err = w.openVNC(ctx, w.remoteClient("O1/WM"), w.id("I1"))
		if err == nil {
			t.Fatal("session opened on I1 after its grant expired")
		}
		if _, err := w.remoteClient("O1/OISC").ActivateRemoteAccess(ctx, connect.NewRequest(&gantryv1.ActivateRemoteAccessRequest{CaseId: w.id("I1"), DurationMinutes: 10})); err != nil {
			t.Fatal(err)
		}
		conn, err = w.openVNC(ctx, w.remoteClient("O1/WM"), w.id("I1"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.caseClient("O1/ME2").UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("I1"), State: "closed"})); err != nil {
			t.Fatal(err)
		}
		reason, took = waitClosed(t, conn, 10*time.Second)
		if took > 3*time.Second || !strings.Contains(reason, "grant ended") && !strings.Contains(reason, "not active") && !strings.Contains(reason, "closed") {
			t.Errorf("case closing: closed after %v with %q", took, reason)
		}
		// Every attempt and every session is in the operator's audit log,
		// sessions with their byte counts. A session's record is written
		// when its relay has finished, just after the close frame the
		// client saw: wait for it.
		audit := gantryv1connect.NewAuditServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor("O1/admin").Token))
		var count map[string]int
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			evs, err := audit.ListAudit(ctx, connect.NewRequest(&gantryv1.ListAuditRequest{Limit: 200}))
			if err != nil {
				t.Fatal(err)
			}
			count = map[string]int{}
			for _, e := range evs.Msg.Events {
				count[e.Action]++
				if e.Action == "remote_access.session" && (!strings.Contains(e.Detail, "bytes to the machine") || !strings.Contains(e.Detail, "10.0.0.10:5900") || e.Target == "") {
					t.Errorf("session audit lacks target/bytes: %+v", e)
				}
			}
			if count["remote_access.session"] >= 4 || time.Now().After(deadline) {
				break
			}
		}
		if count["remote_access.use"] < 4 || count["remote_access.session"] < 4 || count["remote_access.use_denied"] < 1 {
			t.Errorf("audit counts %v: want every allowed attempt, denied attempt and ended session", count)
		}

		// More "use" denials: Master Data Manager and an unrelated provider.
		for _, who := range []string{"P1/MDM", "P2/ST", "O2/MO", "O1/admin"} {
			_, err := w.remoteClient(who).OpenSession(ctx, connect.NewRequest(&gantryv1.OpenSessionRequest{CaseId: w.id("S1"), ConnectionType: "vnc"}))
			switch connect.CodeOf(err) {
			case connect.CodePermissionDenied, connect.CodeNotFound:
			default:
				t.Errorf("%s uses S1: %v", who, err)
			}
		}
	})
}
