package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	"github.com/google/go-cmp/cmp"
)

var ctx = context.Background()

func tenantWide(id string) authz.Scope { return authz.Scope{Kind: authz.ScopeTenant, ID: id} }

// newTenant creates a tenant with an admin and returns both.
func newTenant(t *testing.T, s store.Store, name string) (store.Tenant, store.User) {
	t.Helper()
	ten, admin, err := s.CreateTenantWithAdmin(ctx, store.Tenant{Name: name, Kind: authz.KindOperator, TenantRoles: []authz.TenantRole{authz.OperatorInternalService}},
		store.User{Email: "admin@" + name + ".example", DisplayName: "Admin", PasswordHash: "h"})
	if err != nil {
		t.Fatalf("CreateTenantWithAdmin: %v", err)
	}
	return ten, admin
}

func adminAssignment(t *testing.T, s store.Store, tenantID, userID string) string {
	t.Helper()
	as, err := s.ListAssignments(ctx, tenantID, userID)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		if a.Role == authz.TenantAdmin {
			return a.ID
		}
	}
	return ""
}

func TestTenantsAndUsers(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		s := newStore(t)
		ten, admin := newTenant(t, s, "acme")
		got, err := s.GetTenant(ctx, ten.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ten, got); diff != "" {
			t.Errorf("GetTenant (-want +got):\n%s", diff)
		}
		if !got.CreatedAt.Equal(ten.CreatedAt) || got.CreatedAt.Location() != time.UTC {
			t.Errorf("timestamps do not round-trip in UTC: %v vs %v", got.CreatedAt, ten.CreatedAt)
		}
		if aid := adminAssignment(t, s, ten.ID, admin.ID); aid == "" {
			t.Errorf("first user is not Tenant Admin")
		}
		u, err := s.CreateUser(ctx, store.User{TenantID: ten.ID, Email: "Bob@Acme.example", DisplayName: "Bob", PasswordHash: "h"},
			[]store.RoleGrant{{Role: authz.WorkshopManager, Scope: tenantWide(ten.ID)}}, admin.ID)
		if err != nil {
			t.Fatal(err)
		}
		if u.Email != "bob@acme.example" {
			t.Errorf("email not lower-cased: %s", u.Email)
		}
		if _, err := s.CreateUser(ctx, store.User{TenantID: ten.ID, Email: "BOB@acme.example", DisplayName: "Bob2", PasswordHash: "h"}, nil, ""); !errors.Is(err, store.ErrConflict) {
			t.Errorf("duplicate e-mail: %v, want ErrConflict", err)
		}
		byMail, err := s.GetUserByEmail(ctx, "bob@ACME.example")
		if err != nil || byMail.ID != u.ID {
			t.Errorf("GetUserByEmail = %v, %v", byMail, err)
		}
		if _, err := s.GetUser(ctx, "missing"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetUser(missing) = %v", err)
		}
		if err := s.SetUserStatus(ctx, "missing", store.UserActive); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("SetUserStatus(missing) = %v", err)
		}
		if err := s.SetPassword(ctx, u.ID, "h2"); err != nil {
			t.Fatal(err)
		}
		us, err := s.ListUsers(ctx, ten.ID)
		if err != nil || len(us) != 2 {
			t.Errorf("ListUsers = %d users, %v", len(us), err)
		}
		ten.CompanyInfo, ten.PrimaryColor = "We build CNCs", "#112233"
		if err := s.UpdateTenant(ctx, ten); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.GetTenant(ctx, ten.ID); got.CompanyInfo != "We build CNCs" || got.PrimaryColor != "#112233" {
			t.Errorf("UpdateTenant not stored: %+v", got)
		}
		if err := s.UpdateTenant(ctx, store.Tenant{ID: "missing"}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("UpdateTenant(missing) = %v", err)
		}
	})
}

func TestAdminInvariants(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		s := newStore(t)
		ten, admin := newTenant(t, s, "acme")
		if err := s.DeleteUser(ctx, admin.ID, admin.ID); !errors.Is(err, store.ErrSelf) {
			t.Errorf("self-delete = %v, want ErrSelf", err)
		}
		aid := adminAssignment(t, s, ten.ID, admin.ID)
		if err := s.RemoveAssignment(ctx, admin.ID, aid); !errors.Is(err, store.ErrSelf) {
			t.Errorf("self-demotion = %v, want ErrSelf", err)
		}
		other, err := s.CreateUser(ctx, store.User{TenantID: ten.ID, Email: "x@acme.example", DisplayName: "X", PasswordHash: "h"}, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		// A non-admin actor removing the last admin still hits the invariant.
		if err := s.RemoveAssignment(ctx, "", aid); !errors.Is(err, store.ErrLastAdmin) {
			t.Errorf("removing the last admin = %v, want ErrLastAdmin", err)
		}
		if err := s.DeleteUser(ctx, other.ID, admin.ID); !errors.Is(err, store.ErrLastAdmin) {
			t.Errorf("deleting the last admin = %v, want ErrLastAdmin", err)
		}
		if err := s.RemoveAssignment(ctx, admin.ID, "missing"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("RemoveAssignment(missing) = %v", err)
		}
		// With a second admin, deletion works and takes assignments and sessions along.
		if _, err := s.AddAssignment(ctx, store.Assignment{TenantID: ten.ID, UserID: other.ID, Role: authz.TenantAdmin, Scope: tenantWide(ten.ID)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddAssignment(ctx, store.Assignment{TenantID: ten.ID, UserID: other.ID, Role: authz.TenantAdmin, Scope: tenantWide(ten.ID)}); !errors.Is(err, store.ErrConflict) {
			t.Errorf("duplicate assignment = %v, want ErrConflict", err)
		}
		if err := s.CreateSession(ctx, store.Session{TokenHash: []byte("tok"), UserID: admin.ID, TenantID: ten.ID, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteUser(ctx, other.ID, admin.ID); err != nil {
			t.Fatalf("delete admin with another admin left: %v", err)
		}
		if _, err := s.GetSession(ctx, []byte("tok"), time.Now()); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("session of deleted user survives: %v", err)
		}
		if as, _ := s.ListAssignments(ctx, ten.ID, admin.ID); len(as) != 0 {
			t.Errorf("assignments of deleted user survive: %v", as)
		}
	})
}

// TestConcurrentDemotion: two admins demote each other at the same moment,
// many times; the tenant always keeps an admin.
func TestConcurrentDemotion(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		s := newStore(t)
		lastAdminSeen := 0
		for i := 0; i < 30; i++ {
			ten, a := newTenant(t, s, "race"+string(rune('a'+i%26))+time.Now().Format("150405.000000"))
			b, err := s.CreateUser(ctx, store.User{TenantID: ten.ID, Email: "b" + ten.ID + "@x.example", DisplayName: "B", PasswordHash: "h"},
				[]store.RoleGrant{{Role: authz.TenantAdmin, Scope: tenantWide(ten.ID)}}, a.ID)
			if err != nil {
				t.Fatal(err)
			}
			aid, bid := adminAssignment(t, s, ten.ID, a.ID), adminAssignment(t, s, ten.ID, b.ID)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			start := make(chan struct{})
			wg.Add(2)
			go func() { defer wg.Done(); <-start; errs[0] = s.RemoveAssignment(ctx, a.ID, bid) }()
			go func() { defer wg.Done(); <-start; errs[1] = s.RemoveAssignment(ctx, b.ID, aid) }()
			close(start)
			wg.Wait()
			left := 0
			if adminAssignment(t, s, ten.ID, a.ID) != "" {
				left++
			}
			if adminAssignment(t, s, ten.ID, b.ID) != "" {
				left++
			}
			if left == 0 {
				t.Fatalf("round %d: both demotions succeeded (%v, %v)", i, errs[0], errs[1])
			}
			if errs[0] == nil && errs[1] == nil {
				t.Fatalf("round %d: both calls reported success", i)
			}
			for _, err := range errs {
				if err != nil && !errors.Is(err, store.ErrLastAdmin) && !errors.Is(err, store.ErrActorChanged) && !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("round %d: unexpected error %v", i, err)
				}
				if errors.Is(err, store.ErrLastAdmin) || errors.Is(err, store.ErrActorChanged) {
					lastAdminSeen++
				}
			}
		}
		if lastAdminSeen == 0 {
			t.Errorf("no round was refused by the invariant")
		}
	})
}

func TestInvitations(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		s := newStore(t)
		ten, admin := newTenant(t, s, "acme")
		now := time.Now().UTC()
		inv, err := s.CreateInvitation(ctx, store.Invitation{TenantID: ten.ID, Email: "new@acme.example", TokenHash: []byte("secret"),
			Roles: []store.RoleGrant{{Role: authz.MachineOperator, Scope: tenantWide(ten.ID)}}, CreatedBy: admin.ID, ExpiresAt: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		// Concurrent acceptance: exactly one wins.
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, used := 0, 0
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.AcceptInvitation(ctx, []byte("secret"), store.User{DisplayName: "New", PasswordHash: "h"}, now)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, store.ErrUsed), errors.Is(err, store.ErrConflict):
					used++
				default:
					t.Errorf("accept: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 || used != 7 {
			t.Errorf("wins=%d used=%d, want 1 and 7", wins, used)
		}
		u, err := s.GetUserByEmail(ctx, "new@acme.example")
		if err != nil {
			t.Fatal(err)
		}
		as, _ := s.ListAssignments(ctx, ten.ID, u.ID)
		if len(as) != 1 || as[0].Role != authz.MachineOperator {
			t.Errorf("invitee roles = %v", as)
		}
		invs, err := s.ListInvitations(ctx, ten.ID)
		if err != nil || len(invs) != 1 || invs[0].UsedAt == nil || invs[0].ID != inv.ID {
			t.Errorf("ListInvitations = %+v, %v", invs, err)
		}
		if _, err := s.CreateInvitation(ctx, store.Invitation{TenantID: ten.ID, Email: "late@acme.example", TokenHash: []byte("late"), CreatedBy: admin.ID, ExpiresAt: now.Add(-time.Second)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AcceptInvitation(ctx, []byte("late"), store.User{DisplayName: "L", PasswordHash: "h"}, now); !errors.Is(err, store.ErrExpired) {
			t.Errorf("expired = %v", err)
		}
		if _, err := s.AcceptInvitation(ctx, []byte("nope"), store.User{DisplayName: "L", PasswordHash: "h"}, now); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown token = %v", err)
		}
	})
}

func TestSessionsCustomRolesAudit(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		s := newStore(t)
		ten, admin := newTenant(t, s, "acme")
		now := time.Now().UTC()
		if err := s.CreateSession(ctx, store.Session{TokenHash: []byte("a"), UserID: admin.ID, TenantID: ten.ID, ExpiresAt: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetSession(ctx, []byte("a"), now); err != nil {
			t.Errorf("live session: %v", err)
		}
		if _, err := s.GetSession(ctx, []byte("a"), now.Add(2*time.Minute)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("expired session = %v", err)
		}
		if err := s.DeleteSession(ctx, []byte("a")); err != nil {
			t.Fatal(err)
		}
		cr, err := s.CreateCustomRole(ctx, store.CustomRole{ID: "custom:1", TenantID: ten.ID, Name: "Lead", Rank: 60, ManageUsers: true,
			Features: map[authz.Feature]authz.Level{authz.DigitalShopfloor: authz.Manage}})
		if err != nil {
			t.Fatal(err)
		}
		crs, err := s.ListCustomRoles(ctx, ten.ID)
		if err != nil || len(crs) != 1 {
			t.Fatalf("ListCustomRoles = %v, %v", crs, err)
		}
		if diff := cmp.Diff(cr, crs[0]); diff != "" {
			t.Errorf("custom role round trip (-want +got):\n%s", diff)
		}
		if _, err := s.AddAssignment(ctx, store.Assignment{TenantID: ten.ID, UserID: admin.ID, Role: cr.ID, Scope: tenantWide(ten.ID)}); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteCustomRole(ctx, ten.ID, cr.ID); !errors.Is(err, store.ErrInUse) {
			t.Errorf("delete used custom role = %v, want ErrInUse", err)
		}
		for i := 0; i < 5; i++ {
			if err := s.AppendAudit(ctx, store.AuditEvent{TenantID: ten.ID, ActorID: admin.ID, Action: "test", Target: string(rune('a' + i))}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.AppendAudit(ctx, store.AuditEvent{TenantID: "other", ActorID: "x", Action: "test", Target: "z"}); err != nil {
			t.Fatal(err)
		}
		page1, err := s.ListAudit(ctx, store.AuditFilter{TenantID: ten.ID, Limit: 3})
		if err != nil || len(page1) != 3 || page1[0].Target != "e" {
			t.Fatalf("audit page 1 = %+v, %v", page1, err)
		}
		page2, err := s.ListAudit(ctx, store.AuditFilter{TenantID: ten.ID, Limit: 3, BeforeID: page1[2].ID})
		if err != nil || len(page2) != 2 || page2[1].Target != "a" {
			t.Fatalf("audit page 2 = %+v, %v", page2, err)
		}
	})
}

func TestMigrationsIdempotent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "g.db")
	for i := 0; i < 2; i++ {
		s, err := store.Open(ctx, p, nil)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if _, _, err := s.CreateTenantWithAdmin(ctx, store.Tenant{Name: "t", Kind: authz.KindOperator},
			store.User{Email: "a" + string(rune('0'+i)) + "@x.example", DisplayName: "A", PasswordHash: "h"}); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	if _, err := store.Open(ctx, "sqlite://", nil); err == nil {
		t.Errorf("empty sqlite path accepted")
	}
}
