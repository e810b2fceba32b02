// Package cases implements service cases (seed 000, SPEC §3): internal and
// shared cases on operator assets, their states and assignees, the list
// views, and each case's chat room and conferencing link. Every call is
// authorized with package authz against the case's location: the operator
// tenant's facility and asset, and — for shared cases — the linked
// provider's service organisation, customer and customer machine.
// Internal cases never leave the operator tenant.
package cases

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// Repo is the persistence the case service needs.
type Repo interface {
	GetAsset(ctx context.Context, id string) (store.Asset, error)
	GetUser(ctx context.Context, id string) (store.User, error)
	ListAssignments(ctx context.Context, tenantID, userID string) ([]store.Assignment, error)
	CreateCase(ctx context.Context, c store.Case) (store.Case, error)
	GetCase(ctx context.Context, id string) (store.Case, error)
	UpdateCase(ctx context.Context, c store.Case) error
	ListCases(ctx context.Context, q store.CaseQuery) ([]store.Case, error)
	AddChatMessage(ctx context.Context, m store.ChatMessage) (store.ChatMessage, error)
	ListChatMessages(ctx context.Context, caseID string, limit int) ([]store.ChatMessage, error)
	GetExternalUser(ctx context.Context, userID string) (store.ExternalUser, error)
	GetTenant(ctx context.Context, id string) (store.Tenant, error)
	GrantRepo
}

// Locator resolves where an asset sits for authorization.
type Locator interface {
	AssetResource(ctx context.Context, a store.Asset) (authz.Resource, error)
}

// Config holds the case service's settings.
type Config struct {
	// ConferenceBaseURL is the conferencing provider's base URL; a case's
	// room is ConferenceBaseURL + "/gantry-case-" + case ID.
	ConferenceBaseURL string
}

// Service implements the case use cases. Safe for concurrent use.
type Service struct {
	repo Repo
	loc  Locator
	cfg  Config
	hub  *Hub
	log  *slog.Logger
	now  func() time.Time
}

// New returns a Service. logger may be nil.
func New(repo Repo, loc Locator, cfg Config, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ConferenceBaseURL == "" {
		cfg.ConferenceBaseURL = "https://meet.example.com"
	}
	return &Service{repo: repo, loc: loc, cfg: cfg, hub: NewHub(), log: logger, now: time.Now}
}

// Limits.
const (
	MaxTitleLen       = 200
	MaxDescriptionLen = 10000
	MaxMessageLen     = 4000
)

// View is a case with what the caller needs to display it.
type View struct {
	store.Case
	ConferenceURL string
}

func (s *Service) view(c store.Case) View {
	return View{Case: c, ConferenceURL: strings.TrimRight(s.cfg.ConferenceBaseURL, "/") + "/gantry-case-" + c.ID}
}

func hasTenantRole(t store.Tenant, r authz.TenantRole) bool {
	for _, x := range t.TenantRoles {
		if x == r {
			return true
		}
	}
	return false
}

// asset loads an asset the caller may address and its resource.
func (s *Service) asset(ctx context.Context, c *identity.Caller, id string) (store.Asset, authz.Resource, error) {
	if err := identity.CheckID("asset_id", id); err != nil {
		return store.Asset{}, authz.Resource{}, err
	}
	a, err := s.repo.GetAsset(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && a.TenantID != c.Tenant.ID) {
		return store.Asset{}, authz.Resource{}, errkind.NotFoundf("asset %q not found in your tenant", id)
	}
	if err != nil {
		return store.Asset{}, authz.Resource{}, err
	}
	res, err := s.loc.AssetResource(ctx, a)
	return a, res, err
}

// CreateInput describes a new case.
type CreateInput struct {
	AssetID, Kind, Title, Description string
	TicketType                        string // optional; external users: one of their allowed types
	Responsible                       string // optional provider user ID or "group:<name>"; external users: one of theirs
}

// external returns the caller's external-user profile, or nil.
func (s *Service) external(ctx context.Context, c *identity.Caller) (*store.ExternalProfile, error) {
	if c.Tenant.Kind != authz.KindOperator {
		return nil, nil
	}
	e, err := s.repo.GetExternalUser(ctx, c.User.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil || e.TenantID != c.Tenant.ID {
		return nil, err
	}
	return &e.Profile, nil
}

// readable is the set of facilities an external user may read.
func readable(p *store.ExternalProfile) []string {
	out := append([]string{p.AddressFacility}, p.ReadFacilities...)
	return append(out, p.WriteFacilities...)
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// Create opens a case on an asset of the caller's (operator) tenant.
func (s *Service) Create(ctx context.Context, c *identity.Caller, in CreateInput) (View, error) {
	assetID, kind, title, description := in.AssetID, in.Kind, in.Title, in.Description
	if c.Tenant.Kind != authz.KindOperator {
		return View{}, errkind.Deniedf("service cases are opened by the machine operator's tenant; a %s may request remote access on a shared case instead", c.Tenant.Kind)
	}
	title = strings.TrimSpace(title)
	if title == "" || utf8.RuneCountInString(title) > MaxTitleLen {
		return View{}, errkind.Invalidf("title", "a title of 1..%d characters is required", MaxTitleLen)
	}
	if utf8.RuneCountInString(description) > MaxDescriptionLen {
		return View{}, errkind.Invalidf("description", "at most %d characters", MaxDescriptionLen)
	}
	if len(in.TicketType) > 50 {
		return View{}, errkind.Invalidf("ticket_type", "at most 50 characters")
	}
	if len(in.Responsible) > 80 {
		return View{}, errkind.Invalidf("responsible", "at most 80 characters")
	}
	a, res, err := s.asset(ctx, c, assetID)
	if err != nil {
		return View{}, err
	}
	ext, err := s.external(ctx, c)
	if err != nil {
		return View{}, err
	}
	if ext != nil {
		if kind != store.CaseShared {
			return View{}, errkind.Deniedf("external users open shared cases with their service provider only")
		}
		if !contains(ext.WriteFacilities, a.FacilityID) {
			return View{}, errkind.Deniedf("you may not open cases for this site; your write addresses do not include it")
		}
		if !contains(ext.TicketTypes, in.TicketType) {
			return View{}, errkind.Invalidf("ticket_type", "%q is not one of your ticket types (%s)", in.TicketType, strings.Join(ext.TicketTypes, ", "))
		}
		group, isGroup := strings.CutPrefix(in.Responsible, "group:")
		if !(isGroup && contains(ext.ResponsibleGroups, group)) && !(!isGroup && contains(ext.ResponsibleUsers, in.Responsible)) {
			return View{}, errkind.Invalidf("responsible", "cases can only be sent to your responsible persons or groups")
		}
	}
	cs := store.Case{TenantID: c.Tenant.ID, AssetID: a.ID, Kind: kind, Title: title, Description: description, State: store.StateNew, CreatedBy: c.User.ID,
		TicketType: in.TicketType, Responsible: in.Responsible}
	switch kind {
	case store.CaseInternal:
		if !hasTenantRole(c.Tenant, authz.OperatorInternalService) {
			return View{}, errkind.Deniedf("internal service cases need the Operator Internal Service tenant role, which your tenant lacks")
		}
		if d := authz.Decide(c.Principal, authz.InternalServiceCases, authz.Manage, res); !d.Allowed {
			return View{}, errkind.Deniedf("cannot open an internal case: %s", d.Reason)
		}
	case store.CaseShared:
		if d := authz.Decide(c.Principal, authz.ServiceCaseManagement, authz.Manage, res); !d.Allowed {
			return View{}, errkind.Deniedf("cannot open a shared case: %s", d.Reason)
		}
		if a.ProviderTenantID == "" {
			return View{}, errkind.New(errkind.Precondition, "asset_id", "asset %s is not linked to a Service Provider, so a shared case is impossible; open an internal case instead", a.Name)
		}
		cs.ProviderTenantID = a.ProviderTenantID
	default:
		return View{}, errkind.Invalidf("kind", "%q: choose internal or shared", kind)
	}
	cs.CreatedAt = s.now().UTC()
	cs.UpdatedAt = cs.CreatedAt
	cs, err = s.repo.CreateCase(ctx, cs)
	if err != nil {
		return View{}, fmt.Errorf("create case: %w", err)
	}
	return s.view(cs), nil
}

// resource is the authorization resource of a case.
func (s *Service) resource(ctx context.Context, cs store.Case) (authz.Resource, error) {
	a, err := s.repo.GetAsset(ctx, cs.AssetID)
	if err != nil {
		return authz.Resource{}, fmt.Errorf("case %s asset: %w", cs.ID, err)
	}
	res, err := s.loc.AssetResource(ctx, a)
	if err != nil {
		return authz.Resource{}, err
	}
	if cs.Kind == store.CaseInternal {
		res.Shared = nil
		res.TenantPrivate = true
	}
	return res, nil
}

// canRead decides whether the caller may read a case.
func canRead(p authz.Principal, cs store.Case, res authz.Resource) authz.Decision {
	d := authz.Decide(p, authz.ServiceCaseManagement, authz.Read, res)
	if !d.Allowed && cs.Kind == store.CaseInternal && p.Tenant == cs.TenantID {
		if d2 := authz.Decide(p, authz.InternalServiceCases, authz.Read, res); d2.Allowed {
			return d2
		}
	}
	return d
}

// load returns a case the caller may read. Cases of other tenants that
// are not shared with the caller are reported as not found.
func (s *Service) load(ctx context.Context, c *identity.Caller, id string) (store.Case, authz.Resource, error) {
	if err := identity.CheckID("id", id); err != nil {
		return store.Case{}, authz.Resource{}, err
	}
	cs, err := s.repo.GetCase(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Case{}, authz.Resource{}, errkind.NotFoundf("service case %q not found", id)
	}
	if err != nil {
		return store.Case{}, authz.Resource{}, err
	}
	res, err := s.resource(ctx, cs)
	if err != nil {
		return store.Case{}, authz.Resource{}, err
	}
	if d := canRead(c.Principal, cs, res); !d.Allowed {
		if c.Tenant.ID != cs.TenantID {
			return store.Case{}, authz.Resource{}, errkind.NotFoundf("service case %q not found", id)
		}
		return store.Case{}, authz.Resource{}, errkind.Deniedf("cannot read this case: %s", d.Reason)
	}
	ext, err := s.external(ctx, c)
	if err != nil {
		return store.Case{}, authz.Resource{}, err
	}
	if ext != nil && (len(res.Owner.Chain) == 0 || !contains(readable(ext), res.Owner.Chain[0].ID)) {
		return store.Case{}, authz.Resource{}, errkind.NotFoundf("service case %q not found", id)
	}
	return cs, res, nil
}

// Get returns a case the caller may read.
func (s *Service) Get(ctx context.Context, c *identity.Caller, id string) (View, error) {
	cs, _, err := s.load(ctx, c, id)
	if err != nil {
		return View{}, err
	}
	return s.view(cs), nil
}

// Update changes state and/or assignee.
func (s *Service) Update(ctx context.Context, c *identity.Caller, id, state, assigneeID string, clearAssignee bool) (View, error) {
	cs, res, err := s.load(ctx, c, id)
	if err != nil {
		return View{}, err
	}
	need := authz.ServiceCaseManagement
	if cs.Kind == store.CaseInternal {
		need = authz.InternalServiceCases
	}
	if d := authz.Decide(c.Principal, need, authz.Manage, res); !d.Allowed {
		return View{}, errkind.Deniedf("cannot edit this case: %s", d.Reason)
	}
	ext, err := s.external(ctx, c)
	if err != nil {
		return View{}, err
	}
	if ext != nil {
		if assigneeID != "" || clearAssignee {
			return View{}, errkind.Deniedf("external users cannot change the assignee")
		}
		if ext.RestrictStatuses && state != "" && !contains(ext.Statuses, state) {
			return View{}, errkind.Deniedf("you may only set the statuses %s", strings.Join(ext.Statuses, ", "))
		}
	}
	if state == "" && assigneeID == "" && !clearAssignee {
		return View{}, errkind.Invalidf("state", "nothing to change: give a state, an assignee or clear_assignee")
	}
	if state != "" {
		var custom []string
		if cs.Kind == store.CaseShared && cs.ProviderTenantID != "" {
			p, err := s.repo.GetTenant(ctx, cs.ProviderTenantID)
			if err != nil {
				return View{}, err
			}
			custom = p.CaseStatuses
		}
		if err := checkTransition(cs.State, state, custom); err != nil {
			return View{}, err
		}
		cs.State = state
	}
	switch {
	case clearAssignee && assigneeID != "":
		return View{}, errkind.Invalidf("assignee_id", "give an assignee or clear_assignee, not both")
	case clearAssignee:
		cs.AssigneeID = ""
	case assigneeID != "":
		if err := s.checkAssignee(ctx, cs, assigneeID); err != nil {
			return View{}, err
		}
		cs.AssigneeID = assigneeID
	}
	cs.UpdatedAt = s.now().UTC()
	if err := s.repo.UpdateCase(ctx, cs); err != nil {
		return View{}, fmt.Errorf("update case: %w", err)
	}
	if cs.State == store.StateClosed {
		// Closing a case ends its remote access (SPEC §4).
		if g, err := s.grants().LatestGrant(ctx, cs.ID); err == nil && g.Active(cs.UpdatedAt) {
			if err := s.grants().EndGrant(ctx, g.ID, c.User.ID, cs.UpdatedAt); err != nil {
				return View{}, fmt.Errorf("end the closed case's grant: %w", err)
			}
			s.audit(ctx, cs.TenantID, c, "remote_access.deactivate", cs.ID, "case closed")
		}
	}
	return s.view(cs), nil
}

var transitions = map[string][]string{
	store.StateNew:        {store.StateInProgress, store.StateClosed},
	store.StateInProgress: {store.StateClosed},
	store.StateClosed:     {store.StateInProgress},
}

// checkTransition allows New → In Progress → Closed, New → Closed and
// reopening Closed → In Progress; a provider's further statuses (custom,
// shared cases only) behave like In Progress: reachable from New, In
// Progress and each other, and leading to In Progress, Closed or another
// further status.
func checkTransition(from, to string, custom []string) error {
	isCustom := func(s string) bool { return contains(custom, s) }
	if _, ok := transitions[to]; !ok && !isCustom(to) {
		all := append([]string{store.StateNew, store.StateInProgress, store.StateClosed}, custom...)
		return errkind.Invalidf("state", "%q: use one of %s", to, strings.Join(all, ", "))
	}
	allowed := append([]string(nil), transitions[from]...)
	if isCustom(from) {
		allowed = []string{store.StateInProgress, store.StateClosed}
	}
	if from != store.StateClosed {
		for _, c := range custom {
			if c != from {
				allowed = append(allowed, c)
			}
		}
	}
	if contains(allowed, to) {
		return nil
	}
	return errkind.New(errkind.Precondition, "state", "a case cannot go from %s to %s (allowed: %s)", from, to, strings.Join(allowed, ", "))
}

// checkAssignee: the assignee must be an active user of the case's tenant
// holding Maintenance Engineer.
func (s *Service) checkAssignee(ctx context.Context, cs store.Case, userID string) error {
	if err := identity.CheckID("assignee_id", userID); err != nil {
		return err
	}
	u, err := s.repo.GetUser(ctx, userID)
	if err != nil || u.TenantID != cs.TenantID || u.Status != store.UserActive {
		return errkind.Invalidf("assignee_id", "user %q is not an active user of the case's tenant", userID)
	}
	as, err := s.repo.ListAssignments(ctx, cs.TenantID, userID)
	if err != nil {
		return err
	}
	for _, a := range as {
		if a.Role == authz.MaintenanceEngineer {
			return nil
		}
	}
	return errkind.Invalidf("assignee_id", "%s does not hold the Maintenance Engineer role; cases can only be assigned to Maintenance Engineers", u.DisplayName)
}

// ListFilter narrows ListCases.
type ListFilter struct {
	Kind         string // internal, shared or ""
	AssignedToMe bool
	State        string
	AssetID      string
	Limit        int
	Before       *store.CaseCursor
}

// List returns the cases visible to the caller, newest first. Visibility
// is computed from the caller's assignments and filtered in the store.
func (s *Service) List(ctx context.Context, c *identity.Caller, f ListFilter) ([]View, error) {
	switch f.Kind {
	case "", store.CaseInternal, store.CaseShared:
	default:
		return nil, errkind.Invalidf("kind", "%q: use internal, shared or leave empty", f.Kind)
	}
	if f.State != "" && (len(f.State) > 32 || strings.Trim(f.State, "abcdefghijklmnopqrstuvwxyz_") != "") {
		return nil, errkind.Invalidf("state", "%q: use new, in_progress, closed or a further status of your provider", f.State)
	}
	if f.AssetID != "" {
		if err := identity.CheckID("asset_id", f.AssetID); err != nil {
			return nil, err
		}
	}
	if f.Limit <= 0 || f.Limit > 500 {
		f.Limit = 100
	}
	q := store.CaseQuery{Kind: f.Kind, State: f.State, AssetID: f.AssetID, Limit: f.Limit, Before: f.Before}
	if f.AssignedToMe {
		q.AssigneeID = c.User.ID
	}
	p := c.Principal
	switch c.Tenant.Kind {
	case authz.KindOperator:
		q.OperatorTenant = c.Tenant.ID
		q.SharedScope = scopeSet(authz.ScopesWith(p, authz.ServiceCaseManagement, authz.Read))
		q.InternalScope = union(q.SharedScope, scopeSet(authz.ScopesWith(p, authz.InternalServiceCases, authz.Read)))
	case authz.KindServiceProvider:
		q.ProviderTenant = c.Tenant.ID
		q.ProviderScope = scopeSet(authz.ScopesWith(p, authz.ServiceCaseManagement, authz.Read))
		if q.Kind == store.CaseInternal {
			return nil, nil // internal cases never leave the operator tenant
		}
		q.Kind = store.CaseShared
	default:
		return nil, errkind.Deniedf("service cases are between operators and service providers; %s has no Service Case Management permission", c.Tenant.Name)
	}
	if ext, err := s.external(ctx, c); err != nil {
		return nil, err
	} else if ext != nil {
		q.OnlyFacilities = readable(ext)
	}
	if q.SharedScope.Empty() && q.InternalScope.Empty() && q.ProviderScope.Empty() {
		return nil, errkind.Deniedf("your roles give no Service Case Management or Internal Service Cases permission")
	}
	css, err := s.repo.ListCases(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("list cases: %w", err)
	}
	out := make([]View, len(css))
	for i, cs := range css {
		out[i] = s.view(cs)
	}
	return out, nil
}

func scopeSet(scopes []authz.Scope) store.ScopeSet {
	var s store.ScopeSet
	for _, sc := range scopes {
		switch sc.Kind {
		case authz.ScopeTenant:
			s.All = true
		case authz.ScopeFacility:
			s.Facilities = append(s.Facilities, sc.ID)
		case authz.ScopeAsset:
			s.Assets = append(s.Assets, sc.ID)
		case authz.ScopeServiceOrg:
			s.ServiceOrgs = append(s.ServiceOrgs, sc.ID)
		case authz.ScopeCustomer:
			s.Customers = append(s.Customers, sc.ID)
		case authz.ScopeCustomerMachine:
			s.CustomerMachines = append(s.CustomerMachines, sc.ID)
		}
	}
	return s
}

func union(a, b store.ScopeSet) store.ScopeSet {
	return store.ScopeSet{
		All:              a.All || b.All,
		Facilities:       append(append([]string{}, a.Facilities...), b.Facilities...),
		Assets:           append(append([]string{}, a.Assets...), b.Assets...),
		ServiceOrgs:      append(append([]string{}, a.ServiceOrgs...), b.ServiceOrgs...),
		Customers:        append(append([]string{}, a.Customers...), b.Customers...),
		CustomerMachines: append(append([]string{}, a.CustomerMachines...), b.CustomerMachines...),
	}
}
