package cases

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// Use is an authorized use of a case's grant: one connection of one type
// to one target.
type Use struct {
	UserID, TenantID string // the user and their tenant
	CaseTenantID     string // the case's (operator) tenant, whose audit log records the use
	CaseID, AssetID  string
	GrantID          string
	DeviceID         string
	ConnectionType   string
	Target           string
	GrantExpires     time.Time
	// Subnets are the template's machine subnets and Ports its SSC port
	// filter (SSC only).
	Subnets, Ports []string
}

// AuthorizeUse decides whether the caller may open a connection of type
// conn to target (empty: the template's first target of that type) through
// the case's active grant (SPEC §4):
//   - internal case: users of the operator tenant with Service Case
//     Management = manage (Maintenance Engineer, Machine Operator,
//     Workshop Manager);
//   - shared case: provider users with Remote Access = manage in scope.
//
// Everyone else is denied. When audit is true every attempt, allowed or
// denied, is written to the case tenant's audit log.
func (s *Service) AuthorizeUse(ctx context.Context, c *identity.Caller, caseID, conn, target string, audit bool) (Use, error) {
	u, cs, err := s.authorizeUse(ctx, c, caseID, conn, target)
	if audit && cs.ID != "" {
		action, detail := "remote_access.use", fmt.Sprintf("%s %s asset %s", conn, u.Target, cs.AssetID)
		if err != nil {
			action, detail = "remote_access.use_denied", fmt.Sprintf("%s %s asset %s: %v", conn, target, cs.AssetID, err)
		}
		s.audit(ctx, cs.TenantID, c, action, cs.ID, detail)
	}
	return u, err
}

func (s *Service) authorizeUse(ctx context.Context, c *identity.Caller, caseID, conn, target string) (Use, store.Case, error) {
	if conn != machinemodel.ConnVNC && conn != machinemodel.ConnDataLink {
		return Use{}, store.Case{}, errkind.Invalidf("connection_type", "use vnc or data_link (SSC configs come from their own call)")
	}
	return s.authorizeGrant(ctx, c, caseID, conn, target)
}

// SSCConfig authorizes the caller to get a Secure Service Connect config
// for the case's active grant — the user rule of AuthorizeUse, connection
// type ssc, and the template must list machine subnets — then calls issue
// with the authorized use (Subnets set). issue returns a detail for the
// audit log (e.g. the engineer's address). Every attempt, including one
// that issue refuses, is written to the case tenant's audit log.
func (s *Service) SSCConfig(ctx context.Context, c *identity.Caller, caseID string, issue func(Use) (string, error)) (Use, error) {
	u, cs, err := s.authorizeGrant(ctx, c, caseID, machinemodel.ConnSSC, "")
	detail := ""
	if err == nil {
		detail, err = issue(u)
	}
	if cs.ID != "" {
		action, msg := "remote_access.ssc_config", fmt.Sprintf("ssc asset %s subnets %v: %s", cs.AssetID, u.Subnets, detail)
		if err != nil {
			action, msg = "remote_access.ssc_config_denied", fmt.Sprintf("ssc asset %s: %v", cs.AssetID, err)
		}
		s.audit(ctx, cs.TenantID, c, action, cs.ID, msg)
	}
	if err != nil {
		return Use{}, err
	}
	return u, nil
}

// authorizeGrant applies the use rule (SPEC §4) for conn; for SSC target
// is empty and the template's machine subnets are returned instead.
func (s *Service) authorizeGrant(ctx context.Context, c *identity.Caller, caseID, conn, target string) (Use, store.Case, error) {
	cs, res, err := s.load(ctx, c, caseID)
	if err != nil {
		return Use{}, store.Case{}, err
	}
	if cs.State == store.StateClosed {
		return Use{}, cs, errkind.New(errkind.Precondition, "case_id", "the case is closed")
	}
	switch {
	case cs.Kind == store.CaseInternal:
		if c.Tenant.ID != cs.TenantID {
			return Use{}, cs, errkind.Deniedf("internal cases are used by the operator's own people only")
		}
		if d := authz.Decide(c.Principal, authz.ServiceCaseManagement, authz.Manage, res); !d.Allowed {
			return Use{}, cs, errkind.Deniedf("cannot use remote access: %s", d.Reason)
		}
	default:
		if c.Tenant.ID == cs.TenantID {
			return Use{}, cs, errkind.Deniedf("remote access on shared cases is used by the service provider's technicians; open an internal case to connect yourself")
		}
		if d := authz.Decide(c.Principal, authz.RemoteAccess, authz.Manage, res); !d.Allowed {
			return Use{}, cs, errkind.Deniedf("cannot use remote access: %s", d.Reason)
		}
	}
	now := s.now().UTC()
	g, err := s.grants().LatestGrant(ctx, cs.ID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !g.Active(now)) {
		if err == nil && g.DeactivatedAt.IsZero() {
			return Use{}, cs, errkind.New(errkind.Precondition, "case_id", "the remote-access grant expired at %s; ask the operator to activate it again", g.ExpiresAt.Format(time.RFC3339))
		}
		if err == nil {
			return Use{}, cs, errkind.New(errkind.Precondition, "case_id", "remote access is not active on this case: its grant was deactivated at %s", g.DeactivatedAt.Format(time.RFC3339))
		}
		return Use{}, cs, errkind.New(errkind.Precondition, "case_id", "remote access is not active on this case")
	}
	if err != nil {
		return Use{}, cs, err
	}
	allowedType := false
	for _, t := range g.ConnectionTypes {
		allowedType = allowedType || t == conn
	}
	if !allowedType {
		return Use{}, cs, errkind.Invalidf("connection_type", "the grant allows %v, not %s", g.ConnectionTypes, conn)
	}
	// The grant is bound to the device that served the asset when it was
	// activated: unlinking or replacing the device ends its use.
	a, err := s.repo.GetAsset(ctx, g.AssetID)
	if err != nil {
		return Use{}, cs, err
	}
	if dev, err := s.grants().DeviceForMachine(ctx, a.CustomerMachineID); a.CustomerMachineID == "" || err != nil || dev.ID != g.DeviceID {
		return Use{}, cs, errkind.New(errkind.Precondition, "case_id", "the edge device of this grant no longer serves asset %s; activate remote access again", a.Name)
	}
	ra, err := s.template(ctx, g.AssetID)
	if err != nil {
		return Use{}, cs, err
	}
	if conn == machinemodel.ConnSSC {
		if !slices.Contains(ra.ConnectionTypes, machinemodel.ConnSSC) {
			return Use{}, cs, errkind.New(errkind.Precondition, "case_id", "the machine model's remote-access template does not allow SSC")
		}
		if len(ra.MachineSubnets) == 0 {
			return Use{}, cs, errkind.New(errkind.Precondition, "case_id", "the machine model's remote-access template lists no machine subnets for SSC")
		}
		return Use{UserID: c.User.ID, TenantID: c.Tenant.ID, CaseTenantID: cs.TenantID, CaseID: cs.ID, AssetID: g.AssetID, GrantID: g.ID, DeviceID: g.DeviceID,
			ConnectionType: conn, GrantExpires: g.ExpiresAt, Subnets: slices.Clone(ra.MachineSubnets), Ports: slices.Clone(ra.SSCPorts)}, cs, nil
	}
	if target == "" {
		if ts := ra.Targets(conn); len(ts) > 0 {
			target = ts[0]
		}
	}
	if !ra.Allows(conn, target) {
		return Use{}, cs, errkind.Invalidf("target", "%s to %q is not allowed by the machine model's remote-access template (allowed: %v)", conn, target, ra.Targets(conn))
	}
	return Use{UserID: c.User.ID, TenantID: c.Tenant.ID, CaseTenantID: cs.TenantID, CaseID: cs.ID, AssetID: g.AssetID, GrantID: g.ID, DeviceID: g.DeviceID,
		ConnectionType: conn, Target: target, GrantExpires: g.ExpiresAt}, cs, nil
}

// template returns the remote-access template of an asset's machine model.
func (s *Service) template(ctx context.Context, assetID string) (machinemodel.RemoteAccess, error) {
	a, err := s.repo.GetAsset(ctx, assetID)
	if err != nil {
		return machinemodel.RemoteAccess{}, err
	}
	var ra machinemodel.RemoteAccess
	if a.MachineModelID == "" {
		return ra, errkind.New(errkind.Precondition, "case_id", "asset %s has no machine model, so no remote connections are allowed", a.Name)
	}
	m, err := s.grants().GetMachineModel(ctx, a.MachineModelID)
	if err != nil {
		return ra, err
	}
	if len(m.RemoteAccessJSON) > 0 {
		if err := json.Unmarshal(m.RemoteAccessJSON, &ra); err != nil {
			return ra, fmt.Errorf("machine model %s: stored remote-access template: %w", m.ID, err)
		}
	}
	return ra, nil
}

// GrantTargets returns the host:port targets an active grant's tunnel may
// reach (VNC and data-link targets the template allows for the grant's
// connection types).
func (s *Service) GrantTargets(ctx context.Context, g store.Grant) ([]string, error) {
	ra, err := s.template(ctx, g.AssetID)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range g.ConnectionTypes {
		out = append(out, ra.Targets(t)...)
	}
	return out, nil
}

// GrantSSC returns the machine subnets and SSC port filter of an active
// grant that allows SSC (none otherwise), for the tunnel's routing.
func (s *Service) GrantSSC(ctx context.Context, g store.Grant) (subnets, ports []string, err error) {
	if !slices.Contains(g.ConnectionTypes, machinemodel.ConnSSC) {
		return nil, nil, nil
	}
	ra, err := s.template(ctx, g.AssetID)
	if err != nil {
		return nil, nil, err
	}
	if !slices.Contains(ra.ConnectionTypes, machinemodel.ConnSSC) {
		return nil, nil, nil
	}
	return slices.Clone(ra.MachineSubnets), slices.Clone(ra.SSCPorts), nil
}

// UseTargets answers, without auditing, whether the caller may use the
// case's active grant for conn, and which targets: the machine model
// template's targets of that type. It applies AuthorizeUse's rules (the
// portal asks it to show or disable its Connect buttons); the error says
// why not. Opening a session still goes through AuthorizeUse.
//
// For conn ssc it applies SSCConfig's rule instead and returns the
// template's machine subnets, without issuing a config.
func (s *Service) UseTargets(ctx context.Context, c *identity.Caller, caseID, conn string) ([]string, error) {
	if conn == machinemodel.ConnSSC {
		u, _, err := s.authorizeGrant(ctx, c, caseID, conn, "")
		return u.Subnets, err
	}
	u, _, err := s.authorizeUse(ctx, c, caseID, conn, "")
	if err != nil {
		return nil, err
	}
	ra, err := s.template(ctx, u.AssetID)
	if err != nil {
		return nil, err
	}
	return ra.Targets(conn), nil
}
