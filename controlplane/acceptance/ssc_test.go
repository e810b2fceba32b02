package acceptance

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	"github.com/gantry-iot/gantry/pkg/wg"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

func (w *world) ssc(ctx context.Context, who, caseName, pub string) (*gantryv1.GetSSCConfigResponse, error) {
	r, err := w.remoteClient(who).GetSSCConfig(ctx, connect.NewRequest(&gantryv1.GetSSCConfigRequest{CaseId: w.id(caseName), PublicKey: pub}))
	if err != nil {
		return nil, err
	}
	return r.Msg, nil
}

// waitPeerGone fails unless the hub drops the peer within d.
func (w *world) waitPeerGone(t *testing.T, pub string, d time.Duration) time.Duration {
	t.Helper()
	k, err := wg.ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for w.srv.Hub.HasPeerKey(k) {
		if time.Since(start) > d {
			t.Fatalf("the hub still has engineer peer %s %v after the grant ended", pub, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// TestRule_SSCConfig: who may get a Secure Service Connect config (the
// use rule of SPEC §4 with connection type ssc), what it contains, bad
// keys, auditing, and that the engineer peer leaves the hub when the
// grant ends.
func TestRule_SSCConfig(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		ctx := context.Background()

		// Allowed: ME on the internal case (generated keys), ST on the
		// shared case with its own key.
		me, err := w.ssc(ctx, "O1/ME", "I1", "")
		if err != nil {
			t.Fatalf("ME on I1: %v", err)
		}
		priv, _ := wg.NewPrivateKey()
		st, err := w.ssc(ctx, "P1/ST", "S1", priv.Public().String())
		if err != nil {
			t.Fatalf("ST on S1 with own key: %v", err)
		}
		for _, r := range []*gantryv1.GetSSCConfigResponse{me, st} {
			a, err := netip.ParsePrefix(r.Address)
			if err != nil || a.Bits() != 32 || !netip.MustParsePrefix("100.97.0.0/16").Contains(a.Addr()) {
				t.Errorf("address %q", r.Address)
			}
			// The machine subnet 10.0.0.0/24 maps onto a virtual /24.
			v, err := netip.ParsePrefix(strings.Join(r.AllowedIps, ","))
			if err != nil || v.Bits() != 24 || !netip.MustParsePrefix("100.64.0.0/10").Contains(v.Addr()) || !strings.Contains(r.Config, "AllowedIPs = "+v.String()+"\n") ||
				!strings.Contains(r.Config, "# machine network 10.0.0.0/24 is reached as "+v.String()) || strings.Join(r.MachineSubnets, ",") != "10.0.0.0/24" ||
				!strings.Contains(r.Config, "Endpoint = "+w.srv.Hub.Endpoint()) || strings.Contains(r.Config, "DNS") {
				t.Errorf("config:\n%s", r.Config)
			}
			k, err := wg.ParsePublicKey(r.PublicKey)
			if err != nil || !w.srv.Hub.HasPeerKey(k) {
				t.Errorf("hub lacks engineer peer %s: %v", r.PublicKey, err)
			}
		}
		if me.Address == st.Address || !me.PrivateKeyIncluded || !strings.Contains(me.Config, "PrivateKey = ") {
			t.Errorf("ME's config: %+v", me)
		}
		if st.PrivateKeyIncluded || st.PublicKey != priv.Public().String() || strings.Contains(st.Config, "\nPrivateKey = ") {
			t.Errorf("ST's config for its own key: %+v", st)
		}

		// Denied: the use rule, scope, tenants, expiry.
		for _, tc := range []struct {
			who, cs string
			code    connect.Code
		}{
			{"P1/1LS", "S1", connect.CodePermissionDenied},  // no Remote Access
			{"P1/MDM", "S1", connect.CodeNotFound},          // does not even see cases
			{"O1/OISC", "I1", connect.CodePermissionDenied}, // activates, does not use
			{"O1/ME", "S1", connect.CodePermissionDenied},   // operators do not use shared cases
			{"P1/ST", "I1", connect.CodeNotFound},           // providers never see internal cases
			{"P2/ST", "S1", connect.CodeNotFound},           // another provider
			{"O2/MO", "S1", connect.CodeNotFound},           // another operator
			{"P1/ST", "S3", connect.CodeFailedPrecondition}, // grant expired
			{"P1/ST", "S2", connect.CodeFailedPrecondition}, // no grant
		} {
			if _, err := w.ssc(ctx, tc.who, tc.cs, ""); connect.CodeOf(err) != tc.code {
				t.Errorf("%s on %s: %v, want %v", tc.who, tc.cs, err, tc.code)
			}
		}
		// Malformed keys: clear invalid-argument errors, no peer added.
		for _, k := range []string{"zzz", strings.Repeat("A", 43) + "=", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", strings.Repeat("A", 40) + "=="} {
			_, err := w.ssc(ctx, "O1/ME", "I1", k)
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "public_key") {
				t.Errorf("key %q: %v", k, err)
			}
		}

		// Every attempt is in the operator's audit log.
		audit := gantryv1connect.NewAuditServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor("O1/admin").Token))
		evs, err := audit.ListAudit(ctx, connect.NewRequest(&gantryv1.ListAuditRequest{Limit: 200}))
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		for _, e := range evs.Msg.Events {
			count[e.Action]++
			if e.Action == "remote_access.ssc_config" && !strings.Contains(e.Detail, "100.97.") {
				t.Errorf("ssc audit lacks the engineer address: %+v", e)
			}
		}
		// Allowed: 2; denied on O1's cases: 1LS, OISC, ME on S1, ST on S3
		// and S2, 4 bad keys (callers who cannot see the case are not
		// audited on it: that would reveal it exists).
		if count["remote_access.ssc_config"] != 2 || count["remote_access.ssc_config_denied"] != 9 {
			t.Errorf("audit counts %v", count)
		}

		// Deactivation removes ME's engineer peer within 1 s; ST's on S1 stays.
		if _, err := w.remoteClient("O1/ME").DeactivateRemoteAccess(ctx, connect.NewRequest(&gantryv1.DeactivateRemoteAccessRequest{CaseId: w.id("I1")})); err != nil {
			t.Fatal(err)
		}
		took := w.waitPeerGone(t, me.PublicKey, time.Second)
		t.Logf("deactivation → engineer peer removed in %v", took.Round(time.Millisecond))
		stKey, _ := wg.ParsePublicKey(st.PublicKey)
		if !w.srv.Hub.HasPeerKey(stKey) {
			t.Error("the engineer peer of another, still active grant was removed")
		}
		if _, err := w.ssc(ctx, "O1/ME", "I1", ""); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Errorf("config after deactivation: %v", err)
		}
		// Expiry: S1's grant runs out in a moment (the tunnel manager
		// reconciles every second, so allow that period on top).
		g, err := w.srv.Store.LatestGrant(ctx, w.id("S1"))
		if err != nil {
			t.Fatal(err)
		}
		expires := time.Now().Add(300 * time.Millisecond)
		if err := w.srv.Store.ExtendGrant(ctx, g.ID, expires); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Until(expires))
		took = w.waitPeerGone(t, st.PublicKey, 2*time.Second)
		t.Logf("expiry → engineer peer removed %v after expiry", took.Round(time.Millisecond))
	})
}
