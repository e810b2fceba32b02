package api

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func userPB(c *identity.Caller, u store.User, as []store.Assignment) *gantryv1.User {
	out := &gantryv1.User{Id: u.ID, TenantId: u.TenantID, Email: u.Email, DisplayName: u.DisplayName, Status: string(u.Status), CreatedAt: ts(u.CreatedAt)}
	for _, a := range as {
		out.Assignments = append(out.Assignments, assignmentPB(c, a))
	}
	return out
}

func assignmentPB(c *identity.Caller, a store.Assignment) *gantryv1.Assignment {
	return &gantryv1.Assignment{Id: a.ID, UserId: a.UserID, RoleId: string(a.Role), RoleName: c.RoleName(a.Role),
		Scope: &gantryv1.Scope{Kind: string(a.Scope.Kind), Id: a.Scope.ID}, CreatedAt: ts(a.CreatedAt)}
}

func tenantPB(t store.Tenant) *gantryv1.Tenant {
	out := &gantryv1.Tenant{Id: t.ID, Name: t.Name, Kind: string(t.Kind), CompanyInfo: t.CompanyInfo, LogoUrl: t.LogoURL, PrimaryColor: t.PrimaryColor, CreatedAt: ts(t.CreatedAt), CaseStatuses: t.CaseStatuses}
	for _, r := range t.TenantRoles {
		out.TenantRoles = append(out.TenantRoles, string(r))
	}
	return out
}

func featuresPB(m map[authz.Feature]authz.Level) []*gantryv1.FeatureLevel {
	var out []*gantryv1.FeatureLevel
	for _, f := range authz.AllFeatures() {
		if l, ok := m[f]; ok && l > authz.None {
			out = append(out, &gantryv1.FeatureLevel{Feature: string(f), Level: l.String()})
		}
	}
	return out
}

func rolePB(r authz.Role) *gantryv1.Role {
	return &gantryv1.Role{Id: string(r.ID), Name: r.Name, Rank: int32(r.Rank), BuiltIn: r.BuiltIn, ManageUsers: r.ManageUsers, Assignable: r.Assignable, Features: featuresPB(r.Features)}
}

func grantsFromPB(in []*gantryv1.RoleGrant) ([]store.RoleGrant, error) {
	out := make([]store.RoleGrant, 0, len(in))
	for i, g := range in {
		if g == nil || g.RoleId == "" {
			return nil, errkind.Invalidf("roles", "role %d: role_id is required", i)
		}
		sc, err := scopeFromPB(g.Scope)
		if err != nil {
			return nil, err
		}
		out = append(out, store.RoleGrant{Role: authz.RoleID(g.RoleId), Scope: sc})
	}
	return out, nil
}

func grantsPB(in []store.RoleGrant) []*gantryv1.RoleGrant {
	out := make([]*gantryv1.RoleGrant, 0, len(in))
	for _, g := range in {
		out = append(out, &gantryv1.RoleGrant{RoleId: string(g.Role), Scope: &gantryv1.Scope{Kind: string(g.Scope.Kind), Id: g.Scope.ID}})
	}
	return out
}

var scopeKinds = map[string]authz.ScopeKind{
	"": authz.ScopeTenant, "tenant": authz.ScopeTenant, "facility": authz.ScopeFacility, "asset": authz.ScopeAsset,
	"service_org": authz.ScopeServiceOrg, "customer": authz.ScopeCustomer, "customer_machine": authz.ScopeCustomerMachine,
}

func scopeFromPB(s *gantryv1.Scope) (authz.Scope, error) {
	if s == nil {
		return authz.Scope{Kind: authz.ScopeTenant}, nil
	}
	k, ok := scopeKinds[s.Kind]
	if !ok {
		return authz.Scope{}, errkind.Invalidf("scope.kind", "unknown scope kind %q; use tenant, facility, asset, service_org, customer or customer_machine", s.Kind)
	}
	if k != authz.ScopeTenant && s.Id == "" {
		return authz.Scope{}, errkind.Invalidf("scope.id", "a %s scope needs the %s's ID", k, k)
	}
	if s.Id != "" {
		if err := identity.CheckID("scope.id", s.Id); err != nil {
			return authz.Scope{}, err
		}
	}
	return authz.Scope{Kind: k, ID: s.Id}, nil
}

// ---- SessionService ----

type sessionService struct{ *Server }

func (s *sessionService) Login(ctx context.Context, req *connect.Request[gantryv1.LoginRequest]) (*connect.Response[gantryv1.LoginResponse], error) {
	token, sess, u, err := s.id.Login(ctx, req.Msg.Email, req.Msg.Password)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.LoginResponse{Token: token, ExpiresAt: ts(sess.ExpiresAt),
		User: &gantryv1.User{Id: u.ID, TenantId: u.TenantID, Email: u.Email, DisplayName: u.DisplayName, Status: string(u.Status)}}), nil
}

func (s *sessionService) Logout(ctx context.Context, _ *connect.Request[gantryv1.LogoutRequest]) (*connect.Response[gantryv1.LogoutResponse], error) {
	if err := s.id.Logout(ctx, CallerFrom(ctx)); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.LogoutResponse{}), nil
}

func (s *sessionService) WhoAmI(ctx context.Context, _ *connect.Request[gantryv1.WhoAmIRequest]) (*connect.Response[gantryv1.WhoAmIResponse], error) {
	c := CallerFrom(ctx)
	as, err := s.id.ListAssignments(ctx, c, "")
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.WhoAmIResponse{User: userPB(c, c.User, as), Tenant: tenantPB(c.Tenant),
		Features: featuresPB(c.Effective()), ManageUsers: c.ManagesUsers()}), nil
}

// ---- TenantService ----

type tenantService struct{ *Server }

func (s *tenantService) GetTenant(ctx context.Context, req *connect.Request[gantryv1.GetTenantRequest]) (*connect.Response[gantryv1.GetTenantResponse], error) {
	t, err := s.id.GetTenant(ctx, CallerFrom(ctx), req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.GetTenantResponse{Tenant: tenantPB(t)}), nil
}

func (s *tenantService) UpdateTenant(ctx context.Context, req *connect.Request[gantryv1.UpdateTenantRequest]) (*connect.Response[gantryv1.UpdateTenantResponse], error) {
	m := req.Msg
	t, err := s.id.UpdateTenant(ctx, CallerFrom(ctx), m.Id, identity.TenantUpdate{Name: m.Name, CompanyInfo: m.CompanyInfo, LogoURL: m.LogoUrl, PrimaryColor: m.PrimaryColor,
		CaseStatuses: m.CaseStatuses, SetCaseStatuses: m.SetCaseStatuses})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.UpdateTenantResponse{Tenant: tenantPB(t)}), nil
}

// ---- UserService ----

type userService struct{ *Server }

func (s *userService) ListUsers(ctx context.Context, _ *connect.Request[gantryv1.ListUsersRequest]) (*connect.Response[gantryv1.ListUsersResponse], error) {
	c := CallerFrom(ctx)
	us, err := s.id.ListUsers(ctx, c)
	if err != nil {
		return nil, err
	}
	byUser, err := s.id.TenantAssignments(ctx, c)
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListUsersResponse{}
	for _, u := range us {
		out.Users = append(out.Users, userPB(c, u, byUser[u.ID]))
	}
	return connect.NewResponse(out), nil
}

func (s *userService) GetUser(ctx context.Context, req *connect.Request[gantryv1.GetUserRequest]) (*connect.Response[gantryv1.GetUserResponse], error) {
	c := CallerFrom(ctx)
	u, err := s.id.GetUser(ctx, c, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	as, err := s.id.ListAssignments(ctx, c, u.ID)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.GetUserResponse{User: userPB(c, u, as)}), nil
}

func (s *userService) InviteUser(ctx context.Context, req *connect.Request[gantryv1.InviteUserRequest]) (*connect.Response[gantryv1.InviteUserResponse], error) {
	grants, err := grantsFromPB(req.Msg.Roles)
	if err != nil {
		return nil, err
	}
	inv, err := s.id.InviteUser(ctx, CallerFrom(ctx), req.Msg.Email, grants)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.InviteUserResponse{InvitationId: inv.Invitation.ID, Token: inv.Token, Link: inv.Link,
		ExpiresAt: ts(inv.Invitation.ExpiresAt), Roles: grantsPB(inv.Invitation.Roles)}), nil
}

func (s *userService) ListInvitations(ctx context.Context, _ *connect.Request[gantryv1.ListInvitationsRequest]) (*connect.Response[gantryv1.ListInvitationsResponse], error) {
	invs, err := s.id.ListInvitations(ctx, CallerFrom(ctx))
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListInvitationsResponse{}
	for _, inv := range invs {
		out.Invitations = append(out.Invitations, &gantryv1.Invitation{Id: inv.ID, Email: inv.Email, Roles: grantsPB(inv.Roles), ExpiresAt: ts(inv.ExpiresAt), Used: inv.UsedAt != nil})
	}
	return connect.NewResponse(out), nil
}

func (s *userService) AcceptInvitation(ctx context.Context, req *connect.Request[gantryv1.AcceptInvitationRequest]) (*connect.Response[gantryv1.AcceptInvitationResponse], error) {
	u, err := s.id.AcceptInvitation(ctx, req.Msg.Token, req.Msg.DisplayName, req.Msg.Password)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.AcceptInvitationResponse{User: &gantryv1.User{Id: u.ID, TenantId: u.TenantID, Email: u.Email, DisplayName: u.DisplayName, Status: string(u.Status)}}), nil
}

func (s *userService) Register(ctx context.Context, req *connect.Request[gantryv1.RegisterRequest]) (*connect.Response[gantryv1.RegisterResponse], error) {
	m := req.Msg
	u, err := s.id.Register(ctx, m.TenantId, m.Email, m.DisplayName, m.Password)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.RegisterResponse{User: &gantryv1.User{Id: u.ID, TenantId: u.TenantID, Email: u.Email, DisplayName: u.DisplayName, Status: string(u.Status)}}), nil
}

func (s *userService) VerifyUser(ctx context.Context, req *connect.Request[gantryv1.VerifyUserRequest]) (*connect.Response[gantryv1.VerifyUserResponse], error) {
	c := CallerFrom(ctx)
	grants, err := grantsFromPB(req.Msg.Roles)
	if err != nil {
		return nil, err
	}
	u, err := s.id.VerifyUser(ctx, c, req.Msg.Id, grants)
	if err != nil {
		return nil, err
	}
	as, err := s.id.ListAssignments(ctx, c, u.ID)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.VerifyUserResponse{User: userPB(c, u, as)}), nil
}

func (s *userService) DeleteUser(ctx context.Context, req *connect.Request[gantryv1.DeleteUserRequest]) (*connect.Response[gantryv1.DeleteUserResponse], error) {
	if err := s.id.DeleteUser(ctx, CallerFrom(ctx), req.Msg.Id); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.DeleteUserResponse{}), nil
}

// ---- RoleService ----

type roleService struct{ *Server }

func (s *roleService) ListRoles(ctx context.Context, req *connect.Request[gantryv1.ListRolesRequest]) (*connect.Response[gantryv1.ListRolesResponse], error) {
	rs, err := s.id.ListRoles(ctx, CallerFrom(ctx), req.Msg.AssignableOnly)
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListRolesResponse{}
	for _, r := range rs {
		out.Roles = append(out.Roles, rolePB(r.Role))
	}
	return connect.NewResponse(out), nil
}

func (s *roleService) AssignRole(ctx context.Context, req *connect.Request[gantryv1.AssignRoleRequest]) (*connect.Response[gantryv1.AssignRoleResponse], error) {
	c := CallerFrom(ctx)
	if req.Msg.RoleId == "" {
		return nil, errkind.Invalidf("role_id", "a role is required")
	}
	sc, err := scopeFromPB(req.Msg.Scope)
	if err != nil {
		return nil, err
	}
	a, err := s.id.AssignRole(ctx, c, req.Msg.UserId, store.RoleGrant{Role: authz.RoleID(req.Msg.RoleId), Scope: sc})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.AssignRoleResponse{Assignment: assignmentPB(c, a)}), nil
}

func (s *roleService) RevokeRole(ctx context.Context, req *connect.Request[gantryv1.RevokeRoleRequest]) (*connect.Response[gantryv1.RevokeRoleResponse], error) {
	if err := s.id.RevokeRole(ctx, CallerFrom(ctx), req.Msg.AssignmentId); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.RevokeRoleResponse{}), nil
}

func (s *roleService) ListAssignments(ctx context.Context, req *connect.Request[gantryv1.ListAssignmentsRequest]) (*connect.Response[gantryv1.ListAssignmentsResponse], error) {
	c := CallerFrom(ctx)
	as, err := s.id.ListAssignments(ctx, c, req.Msg.UserId)
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListAssignmentsResponse{}
	for _, a := range as {
		out.Assignments = append(out.Assignments, assignmentPB(c, a))
	}
	return connect.NewResponse(out), nil
}

func (s *roleService) CreateCustomRole(ctx context.Context, req *connect.Request[gantryv1.CreateCustomRoleRequest]) (*connect.Response[gantryv1.CreateCustomRoleResponse], error) {
	m := req.Msg
	feats := map[authz.Feature]authz.Level{}
	for i, fl := range m.Features {
		f, err := authz.ParseFeature(fl.GetFeature())
		if err != nil {
			return nil, errkind.Invalidf("features", "feature %d: %v", i, err)
		}
		l, err := authz.ParseLevel(fl.GetLevel())
		if err != nil {
			return nil, errkind.Invalidf("features", "feature %s: %v", f, err)
		}
		if _, dup := feats[f]; dup {
			return nil, errkind.Invalidf("features", "feature %s is listed twice", f)
		}
		feats[f] = l
	}
	r, err := s.id.CreateCustomRole(ctx, CallerFrom(ctx), identity.CustomRoleSpec{Name: m.Name, Rank: int(m.Rank), Features: feats, ManageUsers: m.ManageUsers})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.CreateCustomRoleResponse{Role: rolePB(r)}), nil
}

func (s *roleService) DeleteCustomRole(ctx context.Context, req *connect.Request[gantryv1.DeleteCustomRoleRequest]) (*connect.Response[gantryv1.DeleteCustomRoleResponse], error) {
	if err := s.id.DeleteCustomRole(ctx, CallerFrom(ctx), req.Msg.Id); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.DeleteCustomRoleResponse{}), nil
}

// ---- AuditService ----

type auditService struct{ *Server }

func (s *auditService) ListAudit(ctx context.Context, req *connect.Request[gantryv1.ListAuditRequest]) (*connect.Response[gantryv1.ListAuditResponse], error) {
	evs, err := s.id.ListAudit(ctx, CallerFrom(ctx), int(req.Msg.Limit), req.Msg.BeforeId)
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListAuditResponse{}
	for _, e := range evs {
		out.Events = append(out.Events, &gantryv1.AuditEvent{Id: e.ID, ActorId: e.ActorID, Action: e.Action, Target: e.Target, Detail: e.Detail, At: ts(e.At)})
	}
	return connect.NewResponse(out), nil
}
