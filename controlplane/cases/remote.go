package cases

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// Remote-access grant durations.
const (
	DefaultGrant    = 2 * time.Hour
	DefaultMaxGrant = 8 * time.Hour
)

// GrantRepo is the persistence remote-access grants need.
type GrantRepo interface {
	store.Grants
	GetCustomerMachine(ctx context.Context, id string) (store.CustomerMachine, error)
	GetMachineModel(ctx context.Context, id string) (store.MachineModel, error)
	AppendAudit(ctx context.Context, e store.AuditEvent) error
}

// RemoteAccess is a case's current grant and requests.
type RemoteAccess struct {
	Grant    *store.Grant
	Active   bool
	Requests []store.AccessRequest
}

func (s *Service) grants() GrantRepo { return s.repo }

// operatorSide checks that the caller may (de)activate remote access on a
// case: operator users of the case's tenant with Service Case Management
// ≥ read (SPEC §4).
func operatorSide(c *identity.Caller, cs store.Case, res authz.Resource) error {
	if c.Tenant.ID != cs.TenantID {
		return errkind.Deniedf("remote access is activated by the machine operator's side; service providers request it on shared cases")
	}
	if cs.State == store.StateClosed {
		return errkind.New(errkind.Precondition, "case_id", "the case is closed; reopen it to activate remote access")
	}
	if d := authz.Decide(c.Principal, authz.ServiceCaseManagement, authz.Read, res); !d.Allowed {
		return errkind.Deniedf("cannot activate remote access: %s", d.Reason)
	}
	return nil
}

func (s *Service) maxGrant(c *identity.Caller) time.Duration {
	if c.Tenant.MaxGrantDuration > 0 {
		return c.Tenant.MaxGrantDuration
	}
	return DefaultMaxGrant
}

// Activate grants remote access on a case for d (0: default), or extends
// an active grant, up to the tenant's maximum.
func (s *Service) Activate(ctx context.Context, c *identity.Caller, caseID string, d time.Duration) (store.Grant, error) {
	cs, res, err := s.load(ctx, c, caseID)
	if err != nil {
		return store.Grant{}, err
	}
	if err := operatorSide(c, cs, res); err != nil {
		return store.Grant{}, err
	}
	return s.activate(ctx, c, cs, d)
}

func (s *Service) activate(ctx context.Context, c *identity.Caller, cs store.Case, d time.Duration) (store.Grant, error) {
	if d == 0 {
		d = DefaultGrant
	}
	max := s.maxGrant(c)
	if d < time.Minute || d > max {
		return store.Grant{}, errkind.Invalidf("duration_minutes", "between 1 and %d minutes (your company's maximum)", int(max/time.Minute))
	}
	now := s.now().UTC()
	g, err := s.grants().LatestGrant(ctx, cs.ID)
	if err == nil && g.Active(now) {
		exp := now.Add(d)
		if exp.Before(g.ExpiresAt) {
			exp = g.ExpiresAt
		}
		if err := s.grants().ExtendGrant(ctx, g.ID, exp); err != nil {
			return store.Grant{}, err
		}
		g.ExpiresAt = exp
		s.audit(ctx, cs.TenantID, c, "remote_access.extend", cs.ID, "until "+exp.Format(time.RFC3339))
		return g, nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.Grant{}, err
	}
	a, err := s.repo.GetAsset(ctx, cs.AssetID)
	if err != nil {
		return store.Grant{}, err
	}
	if a.CustomerMachineID == "" {
		return store.Grant{}, errkind.New(errkind.Precondition, "case_id", "asset %s has no edge device, so remote access is impossible", a.Name)
	}
	dev, err := s.grants().DeviceForMachine(ctx, a.CustomerMachineID)
	if err != nil {
		return store.Grant{}, errkind.New(errkind.Precondition, "case_id", "asset %s has no edge device, so remote access is impossible", a.Name)
	}
	var types []string
	if a.MachineModelID != "" {
		if m, err := s.grants().GetMachineModel(ctx, a.MachineModelID); err == nil && len(m.RemoteAccessJSON) > 0 {
			var ra machinemodel.RemoteAccess
			if err := json.Unmarshal(m.RemoteAccessJSON, &ra); err == nil {
				types = ra.ConnectionTypes
			}
		}
	}
	if len(types) == 0 {
		return store.Grant{}, errkind.New(errkind.Precondition, "case_id", "the machine model of asset %s allows no remote connections; its remote-access template must list some", a.Name)
	}
	g, err = s.grants().CreateGrant(ctx, store.Grant{TenantID: cs.TenantID, CaseID: cs.ID, AssetID: a.ID, DeviceID: dev.ID, ConnectionTypes: types,
		ActivatedBy: c.User.ID, ActivatedAt: now, ExpiresAt: now.Add(d)})
	if err != nil {
		return store.Grant{}, err
	}
	s.audit(ctx, cs.TenantID, c, "remote_access.activate", cs.ID, fmt.Sprintf("%s for %v on device %s", strings.Join(types, ","), d, dev.ID))
	return g, nil
}

// Deactivate ends the case's active grant.
func (s *Service) Deactivate(ctx context.Context, c *identity.Caller, caseID string) (store.Grant, error) {
	cs, res, err := s.load(ctx, c, caseID)
	if err != nil {
		return store.Grant{}, err
	}
	if c.Tenant.ID != cs.TenantID {
		return store.Grant{}, errkind.Deniedf("remote access is deactivated by the machine operator's side")
	}
	if d := authz.Decide(c.Principal, authz.ServiceCaseManagement, authz.Read, res); !d.Allowed {
		return store.Grant{}, errkind.Deniedf("cannot deactivate remote access: %s", d.Reason)
	}
	now := s.now().UTC()
	g, err := s.grants().LatestGrant(ctx, cs.ID)
	if err != nil || !g.Active(now) {
		return store.Grant{}, errkind.New(errkind.Precondition, "case_id", "remote access is not active on this case")
	}
	if err := s.grants().EndGrant(ctx, g.ID, c.User.ID, now); err != nil {
		return store.Grant{}, err
	}
	g.DeactivatedAt, g.DeactivatedBy = now, c.User.ID
	s.audit(ctx, cs.TenantID, c, "remote_access.deactivate", cs.ID, "")
	return g, nil
}

// GetRemoteAccess returns the case's grant and requests (anyone who can
// read the case).
func (s *Service) GetRemoteAccess(ctx context.Context, c *identity.Caller, caseID string) (RemoteAccess, error) {
	cs, _, err := s.load(ctx, c, caseID)
	if err != nil {
		return RemoteAccess{}, err
	}
	var out RemoteAccess
	if g, err := s.grants().LatestGrant(ctx, cs.ID); err == nil {
		out.Grant, out.Active = &g, g.Active(s.now())
	} else if !errors.Is(err, store.ErrNotFound) {
		return RemoteAccess{}, err
	}
	out.Requests, err = s.grants().ListAccessRequests(ctx, cs.ID)
	return out, err
}

// Request asks the operator to activate remote access on a shared case
// (provider users with Remote Access = manage in scope).
func (s *Service) Request(ctx context.Context, c *identity.Caller, caseID, reason string, d time.Duration) (store.AccessRequest, error) {
	cs, res, err := s.load(ctx, c, caseID)
	if err != nil {
		return store.AccessRequest{}, err
	}
	if c.Tenant.ID == cs.TenantID {
		return store.AccessRequest{}, errkind.Invalidf("case_id", "you can activate remote access on your own case directly")
	}
	if dec := authz.Decide(c.Principal, authz.RemoteAccess, authz.Manage, res); !dec.Allowed {
		return store.AccessRequest{}, errkind.Deniedf("cannot request remote access: %s", dec.Reason)
	}
	reason = strings.TrimSpace(reason)
	if reason == "" || len(reason) > 1000 {
		return store.AccessRequest{}, errkind.Invalidf("reason", "a reason of 1..1000 characters is required")
	}
	if d == 0 {
		d = DefaultGrant
	}
	if d < time.Minute || d > 24*time.Hour {
		return store.AccessRequest{}, errkind.Invalidf("duration_minutes", "between 1 and 1440 minutes")
	}
	r, err := s.grants().CreateAccessRequest(ctx, store.AccessRequest{CaseID: cs.ID, RequestedBy: c.User.ID, RequesterTenantID: c.Tenant.ID,
		Reason: reason, DurationMinutes: int(d / time.Minute), State: store.RequestPending, CreatedAt: s.now().UTC()})
	if err != nil {
		return store.AccessRequest{}, err
	}
	s.audit(ctx, cs.TenantID, c, "remote_access.request", cs.ID, reason)
	return r, nil
}

// Decide approves (activating remote access) or declines a request.
func (s *Service) Decide(ctx context.Context, c *identity.Caller, requestID string, approve bool) (store.AccessRequest, *store.Grant, error) {
	if err := identity.CheckID("request_id", requestID); err != nil {
		return store.AccessRequest{}, nil, err
	}
	r, err := s.grants().GetAccessRequest(ctx, requestID)
	if err != nil {
		return store.AccessRequest{}, nil, errkind.NotFoundf("access request %q not found", requestID)
	}
	cs, res, err := s.load(ctx, c, r.CaseID)
	if err != nil {
		return store.AccessRequest{}, nil, errkind.NotFoundf("access request %q not found", requestID)
	}
	if err := operatorSide(c, cs, res); err != nil {
		return store.AccessRequest{}, nil, err
	}
	state := store.RequestDeclined
	if approve {
		state = store.RequestApproved
	}
	if err := s.grants().DecideAccessRequest(ctx, r.ID, state, c.User.ID); errors.Is(err, store.ErrUsed) {
		return store.AccessRequest{}, nil, errkind.New(errkind.Precondition, "request_id", "the request was already %s", r.State)
	} else if err != nil {
		return store.AccessRequest{}, nil, err
	}
	r.State, r.DecidedBy = state, c.User.ID
	s.audit(ctx, cs.TenantID, c, "remote_access.request."+state, cs.ID, r.ID)
	if !approve {
		return r, nil, nil
	}
	d := time.Duration(r.DurationMinutes) * time.Minute
	if max := s.maxGrant(c); d > max {
		d = max
	}
	g, err := s.activate(ctx, c, cs, d)
	if err != nil {
		return r, nil, err
	}
	return r, &g, nil
}

func (s *Service) audit(ctx context.Context, tenantID string, c *identity.Caller, action, target, detail string) {
	if err := s.grants().AppendAudit(ctx, store.AuditEvent{TenantID: tenantID, ActorID: c.User.ID, Action: action, Target: target, Detail: detail, At: s.now().UTC()}); err != nil {
		s.log.ErrorContext(ctx, "audit append failed", "action", action, "err", err)
	}
}
