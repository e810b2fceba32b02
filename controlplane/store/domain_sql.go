package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
)

// ---- facilities ----

func (d *db) CreateFacility(ctx context.Context, f Facility) (Facility, error) {
	f.ID, f.CreatedAt = newID(f.ID), nowIfZero(f.CreatedAt)
	_, err := d.exec(ctx, d.sql, `INSERT INTO facilities (id, tenant_id, name, created_at) VALUES (?, ?, ?, ?)`, f.ID, f.TenantID, f.Name, toMicros(f.CreatedAt))
	if err != nil {
		return Facility{}, fmt.Errorf("store.CreateFacility: %w", err)
	}
	return f, nil
}

func scanFacility(s scanner) (Facility, error) {
	var f Facility
	var created int64
	err := s.Scan(&f.ID, &f.TenantID, &f.Name, &created)
	f.CreatedAt = fromMicros(created)
	return f, err
}

func (d *db) GetFacility(ctx context.Context, id string) (Facility, error) {
	f, err := scanFacility(d.row(ctx, d.sql, `SELECT id, tenant_id, name, created_at FROM facilities WHERE id = ?`, id))
	if err != nil {
		return Facility{}, notFound("store.GetFacility", id, err)
	}
	return f, nil
}

func (d *db) ListFacilities(ctx context.Context, tenantID string) ([]Facility, error) {
	rows, err := d.query(ctx, d.sql, `SELECT id, tenant_id, name, created_at FROM facilities WHERE tenant_id = ? ORDER BY name`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("store.ListFacilities: %w", err)
	}
	return collect(rows, scanFacility)
}

// UpdateFacility renames a facility (ErrNotFound, ErrConflict).
func (d *db) UpdateFacility(ctx context.Context, f Facility) error {
	res, err := d.exec(ctx, d.sql, `UPDATE facilities SET name = ? WHERE id = ? AND tenant_id = ?`, f.Name, f.ID, f.TenantID)
	if err != nil {
		return fmt.Errorf("store.UpdateFacility: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("store.UpdateFacility %s: %w", f.ID, ErrNotFound)
	}
	return nil
}

// ---- assets ----

const assetCols = `id, tenant_id, facility_id, name, serial_number, machine_model_id, provider_tenant_id, customer_machine_id, created_at`

func scanAsset(s scanner) (Asset, error) {
	var a Asset
	var created int64
	err := s.Scan(&a.ID, &a.TenantID, &a.FacilityID, &a.Name, &a.SerialNumber, &a.MachineModelID, &a.ProviderTenantID, &a.CustomerMachineID, &created)
	a.CreatedAt = fromMicros(created)
	return a, err
}

func (d *db) insertAsset(ctx context.Context, q querier, a Asset) (Asset, error) {
	a.ID, a.CreatedAt = newID(a.ID), nowIfZero(a.CreatedAt)
	_, err := d.exec(ctx, q, `INSERT INTO assets (`+assetCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ID, a.TenantID, a.FacilityID, a.Name, a.SerialNumber, a.MachineModelID, a.ProviderTenantID, a.CustomerMachineID, toMicros(a.CreatedAt))
	if err != nil {
		return Asset{}, fmt.Errorf("insert asset: %w", err)
	}
	return a, nil
}

func (d *db) CreateAsset(ctx context.Context, a Asset) (Asset, error) {
	a, err := d.insertAsset(ctx, d.sql, a)
	if err != nil {
		return Asset{}, fmt.Errorf("store.CreateAsset: %w", err)
	}
	return a, nil
}

// UpdateAsset changes an asset's name, serial number and facility (the
// facility must be of the same tenant: ErrNotFound otherwise).
func (d *db) UpdateAsset(ctx context.Context, a Asset) error {
	res, err := d.exec(ctx, d.sql, `UPDATE assets SET name = ?, serial_number = ?, facility_id = ? WHERE id = ? AND tenant_id = ?
		AND EXISTS (SELECT 1 FROM facilities f WHERE f.id = ? AND f.tenant_id = ?)`,
		a.Name, a.SerialNumber, a.FacilityID, a.ID, a.TenantID, a.FacilityID, a.TenantID)
	if err != nil {
		return fmt.Errorf("store.UpdateAsset: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("store.UpdateAsset %s: %w", a.ID, ErrNotFound)
	}
	return nil
}

func (d *db) GetAsset(ctx context.Context, id string) (Asset, error) {
	a, err := scanAsset(d.row(ctx, d.sql, `SELECT `+assetCols+` FROM assets WHERE id = ?`, id))
	if err != nil {
		return Asset{}, notFound("store.GetAsset", id, err)
	}
	return a, nil
}

func (d *db) ListAssets(ctx context.Context, tenantID string) ([]Asset, error) {
	rows, err := d.query(ctx, d.sql, `SELECT `+assetCols+` FROM assets WHERE tenant_id = ? ORDER BY name, id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("store.ListAssets: %w", err)
	}
	return collect(rows, scanAsset)
}

// ---- proposals ----

const proposalCols = `id, provider_tenant_id, operator_tenant_id, customer_machine_id, name, serial_number, machine_model_id, state, asset_id, created_at`

func scanProposal(s scanner) (AssetProposal, error) {
	var p AssetProposal
	var created int64
	err := s.Scan(&p.ID, &p.ProviderTenantID, &p.OperatorTenantID, &p.CustomerMachineID, &p.Name, &p.SerialNumber, &p.MachineModelID, &p.State, &p.AssetID, &created)
	p.CreatedAt = fromMicros(created)
	return p, err
}

func (d *db) CreateProposal(ctx context.Context, p AssetProposal) (AssetProposal, error) {
	p.ID, p.CreatedAt = newID(p.ID), nowIfZero(p.CreatedAt)
	if p.State == "" {
		p.State = ProposalPending
	}
	_, err := d.exec(ctx, d.sql, `INSERT INTO asset_proposals (`+proposalCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		p.ID, p.ProviderTenantID, p.OperatorTenantID, p.CustomerMachineID, p.Name, p.SerialNumber, p.MachineModelID, p.State, p.AssetID, toMicros(p.CreatedAt))
	if err != nil {
		return AssetProposal{}, fmt.Errorf("store.CreateProposal: %w", err)
	}
	return p, nil
}

func (d *db) GetProposal(ctx context.Context, id string) (AssetProposal, error) {
	p, err := scanProposal(d.row(ctx, d.sql, `SELECT `+proposalCols+` FROM asset_proposals WHERE id = ?`, id))
	if err != nil {
		return AssetProposal{}, notFound("store.GetProposal", id, err)
	}
	return p, nil
}

func (d *db) ListProposals(ctx context.Context, operatorTenantID string) ([]AssetProposal, error) {
	rows, err := d.query(ctx, d.sql, `SELECT `+proposalCols+` FROM asset_proposals WHERE operator_tenant_id = ? ORDER BY created_at DESC, id`, operatorTenantID)
	if err != nil {
		return nil, fmt.Errorf("store.ListProposals: %w", err)
	}
	return collect(rows, scanProposal)
}

func (d *db) AcceptProposal(ctx context.Context, proposalID string, a Asset) (Asset, error) {
	err := d.tx(ctx, func(tx *sql.Tx) error {
		res, err := d.exec(ctx, tx, `UPDATE asset_proposals SET state = ? WHERE id = ? AND state = ?`, ProposalAccepted, proposalID, ProposalPending)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("proposal %s: %w", proposalID, ErrUsed)
		}
		if a, err = d.insertAsset(ctx, tx, a); err != nil {
			return err
		}
		if _, err := d.exec(ctx, tx, `UPDATE asset_proposals SET asset_id = ? WHERE id = ?`, a.ID, proposalID); err != nil {
			return err
		}
		res, err = d.exec(ctx, tx, `UPDATE customer_machines SET asset_id = ? WHERE id = ?`, a.ID, a.CustomerMachineID)
		return requireRow("customer machine", a.CustomerMachineID, res, err)
	})
	if err != nil {
		return Asset{}, fmt.Errorf("store.AcceptProposal: %w", err)
	}
	return a, nil
}

func (d *db) RejectProposal(ctx context.Context, proposalID string) error {
	res, err := d.exec(ctx, d.sql, `UPDATE asset_proposals SET state = ? WHERE id = ? AND state = ?`, ProposalRejected, proposalID, ProposalPending)
	if err != nil {
		return fmt.Errorf("store.RejectProposal: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("store.RejectProposal %s: %w", proposalID, ErrUsed)
	}
	return nil
}

// ---- service orgs, customers, machines ----

func (d *db) CreateServiceOrg(ctx context.Context, o ServiceOrg) (ServiceOrg, error) {
	o.ID, o.CreatedAt = newID(o.ID), nowIfZero(o.CreatedAt)
	_, err := d.exec(ctx, d.sql, `INSERT INTO service_orgs (id, tenant_id, name, created_at) VALUES (?, ?, ?, ?)`, o.ID, o.TenantID, o.Name, toMicros(o.CreatedAt))
	if err != nil {
		return ServiceOrg{}, fmt.Errorf("store.CreateServiceOrg: %w", err)
	}
	return o, nil
}

func scanServiceOrg(s scanner) (ServiceOrg, error) {
	var o ServiceOrg
	var created int64
	err := s.Scan(&o.ID, &o.TenantID, &o.Name, &created)
	o.CreatedAt = fromMicros(created)
	return o, err
}

func (d *db) GetServiceOrg(ctx context.Context, id string) (ServiceOrg, error) {
	o, err := scanServiceOrg(d.row(ctx, d.sql, `SELECT id, tenant_id, name, created_at FROM service_orgs WHERE id = ?`, id))
	if err != nil {
		return ServiceOrg{}, notFound("store.GetServiceOrg", id, err)
	}
	return o, nil
}

func (d *db) ListServiceOrgs(ctx context.Context, tenantID string) ([]ServiceOrg, error) {
	rows, err := d.query(ctx, d.sql, `SELECT id, tenant_id, name, created_at FROM service_orgs WHERE tenant_id = ? ORDER BY name`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("store.ListServiceOrgs: %w", err)
	}
	return collect(rows, scanServiceOrg)
}

const customerCols = `id, tenant_id, service_org_id, name, operator_tenant_id, created_at`

func scanCustomer(s scanner) (Customer, error) {
	var c Customer
	var created int64
	err := s.Scan(&c.ID, &c.TenantID, &c.ServiceOrgID, &c.Name, &c.OperatorTenantID, &created)
	c.CreatedAt = fromMicros(created)
	return c, err
}

func (d *db) CreateCustomer(ctx context.Context, c Customer) (Customer, error) {
	c.ID, c.CreatedAt = newID(c.ID), nowIfZero(c.CreatedAt)
	_, err := d.exec(ctx, d.sql, `INSERT INTO customers (`+customerCols+`) VALUES (?, ?, ?, ?, ?, ?)`, c.ID, c.TenantID, c.ServiceOrgID, c.Name, c.OperatorTenantID, toMicros(c.CreatedAt))
	if err != nil {
		return Customer{}, fmt.Errorf("store.CreateCustomer: %w", err)
	}
	return c, nil
}

func (d *db) GetCustomer(ctx context.Context, id string) (Customer, error) {
	c, err := scanCustomer(d.row(ctx, d.sql, `SELECT `+customerCols+` FROM customers WHERE id = ?`, id))
	if err != nil {
		return Customer{}, notFound("store.GetCustomer", id, err)
	}
	return c, nil
}

func (d *db) ListCustomers(ctx context.Context, tenantID string) ([]Customer, error) {
	rows, err := d.query(ctx, d.sql, `SELECT `+customerCols+` FROM customers WHERE tenant_id = ? ORDER BY name, id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("store.ListCustomers: %w", err)
	}
	return collect(rows, scanCustomer)
}

func (d *db) SetCustomerOperator(ctx context.Context, customerID, operatorTenantID string) error {
	res, err := d.exec(ctx, d.sql, `UPDATE customers SET operator_tenant_id = ? WHERE id = ?`, operatorTenantID, customerID)
	return requireRow("store.SetCustomerOperator", customerID, res, err)
}

const machineCols = `id, tenant_id, customer_id, name, serial_number, machine_model_id, asset_id, created_at`

func scanMachine(s scanner) (CustomerMachine, error) {
	var m CustomerMachine
	var created int64
	err := s.Scan(&m.ID, &m.TenantID, &m.CustomerID, &m.Name, &m.SerialNumber, &m.MachineModelID, &m.AssetID, &created)
	m.CreatedAt = fromMicros(created)
	return m, err
}

func (d *db) CreateCustomerMachine(ctx context.Context, m CustomerMachine) (CustomerMachine, error) {
	m.ID, m.CreatedAt = newID(m.ID), nowIfZero(m.CreatedAt)
	_, err := d.exec(ctx, d.sql, `INSERT INTO customer_machines (`+machineCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		m.ID, m.TenantID, m.CustomerID, m.Name, m.SerialNumber, m.MachineModelID, m.AssetID, toMicros(m.CreatedAt))
	if err != nil {
		return CustomerMachine{}, fmt.Errorf("store.CreateCustomerMachine: %w", err)
	}
	return m, nil
}

func (d *db) GetCustomerMachine(ctx context.Context, id string) (CustomerMachine, error) {
	m, err := scanMachine(d.row(ctx, d.sql, `SELECT `+machineCols+` FROM customer_machines WHERE id = ?`, id))
	if err != nil {
		return CustomerMachine{}, notFound("store.GetCustomerMachine", id, err)
	}
	return m, nil
}

func (d *db) ListCustomerMachines(ctx context.Context, tenantID string) ([]CustomerMachine, error) {
	rows, err := d.query(ctx, d.sql, `SELECT `+machineCols+` FROM customer_machines WHERE tenant_id = ? ORDER BY name, id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("store.ListCustomerMachines: %w", err)
	}
	return collect(rows, scanMachine)
}

// ---- machine models ----

const modelCols = `id, tenant_id, name, remote_access, opcua, compatible_apps, created_at, updated_at`

func scanModel(s scanner) (MachineModel, error) {
	var m MachineModel
	var ra, op, apps string
	var created, updated int64
	if err := s.Scan(&m.ID, &m.TenantID, &m.Name, &ra, &op, &apps, &created, &updated); err != nil {
		return MachineModel{}, err
	}
	m.RemoteAccessJSON, m.OPCUAJSON = []byte(ra), []byte(op)
	if err := json.Unmarshal([]byte(apps), &m.CompatibleApps); err != nil {
		return MachineModel{}, fmt.Errorf("model %s apps: %w", m.ID, err)
	}
	m.CreatedAt, m.UpdatedAt = fromMicros(created), fromMicros(updated)
	return m, nil
}

func orJSON(b []byte, def string) string {
	if len(b) == 0 {
		return def
	}
	return string(b)
}

func (d *db) CreateMachineModel(ctx context.Context, m MachineModel) (MachineModel, error) {
	m.ID, m.CreatedAt = newID(m.ID), nowIfZero(m.CreatedAt)
	if m.UpdatedAt.IsZero() {
		m.UpdatedAt = m.CreatedAt
	}
	if m.CompatibleApps == nil {
		m.CompatibleApps = []string{}
	}
	_, err := d.exec(ctx, d.sql, `INSERT INTO machine_models (`+modelCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		m.ID, m.TenantID, m.Name, orJSON(m.RemoteAccessJSON, "{}"), orJSON(m.OPCUAJSON, "{}"), mustJSON(m.CompatibleApps), toMicros(m.CreatedAt), toMicros(m.UpdatedAt))
	if err != nil {
		return MachineModel{}, fmt.Errorf("store.CreateMachineModel: %w", err)
	}
	return m, nil
}

func (d *db) GetMachineModel(ctx context.Context, id string) (MachineModel, error) {
	m, err := scanModel(d.row(ctx, d.sql, `SELECT `+modelCols+` FROM machine_models WHERE id = ?`, id))
	if err != nil {
		return MachineModel{}, notFound("store.GetMachineModel", id, err)
	}
	return m, nil
}

func (d *db) ListMachineModels(ctx context.Context, tenantID string) ([]MachineModel, error) {
	rows, err := d.query(ctx, d.sql, `SELECT `+modelCols+` FROM machine_models WHERE tenant_id = ? ORDER BY name`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("store.ListMachineModels: %w", err)
	}
	return collect(rows, scanModel)
}

func (d *db) UpdateMachineModel(ctx context.Context, m MachineModel) error {
	if m.CompatibleApps == nil {
		m.CompatibleApps = []string{}
	}
	res, err := d.exec(ctx, d.sql, `UPDATE machine_models SET name = ?, remote_access = ?, opcua = ?, compatible_apps = ?, updated_at = ? WHERE id = ? AND tenant_id = ?`,
		m.Name, orJSON(m.RemoteAccessJSON, "{}"), orJSON(m.OPCUAJSON, "{}"), mustJSON(m.CompatibleApps), toMicros(nowIfZero(m.UpdatedAt)), m.ID, m.TenantID)
	return requireRow("store.UpdateMachineModel", m.ID, res, err)
}

// ---- cases ----

const caseCols = `c.id, c.tenant_id, c.asset_id, c.kind, c.title, c.description, c.state, c.assignee_id, c.created_by, c.provider_tenant_id, c.ticket_type, c.responsible, c.created_at, c.updated_at`

func scanCase(s scanner) (Case, error) {
	var c Case
	var created, updated int64
	err := s.Scan(&c.ID, &c.TenantID, &c.AssetID, &c.Kind, &c.Title, &c.Description, &c.State, &c.AssigneeID, &c.CreatedBy, &c.ProviderTenantID, &c.TicketType, &c.Responsible, &created, &updated)
	c.CreatedAt, c.UpdatedAt = fromMicros(created), fromMicros(updated)
	return c, err
}

func (d *db) CreateCase(ctx context.Context, c Case) (Case, error) {
	c.ID, c.CreatedAt = newID(c.ID), nowIfZero(c.CreatedAt)
	if c.UpdatedAt.IsZero() {
		c.UpdatedAt = c.CreatedAt
	}
	_, err := d.exec(ctx, d.sql, `INSERT INTO cases (id, tenant_id, asset_id, kind, title, description, state, assignee_id, created_by, provider_tenant_id, ticket_type, responsible, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.ID, c.TenantID, c.AssetID, c.Kind, c.Title, c.Description, c.State, c.AssigneeID, c.CreatedBy, c.ProviderTenantID, c.TicketType, c.Responsible, toMicros(c.CreatedAt), toMicros(c.UpdatedAt))
	if err != nil {
		return Case{}, fmt.Errorf("store.CreateCase: %w", err)
	}
	return c, nil
}

func (d *db) GetCase(ctx context.Context, id string) (Case, error) {
	c, err := scanCase(d.row(ctx, d.sql, `SELECT `+caseCols+` FROM cases c WHERE c.id = ?`, id))
	if err != nil {
		return Case{}, notFound("store.GetCase", id, err)
	}
	return c, nil
}

func (d *db) UpdateCase(ctx context.Context, c Case) error {
	res, err := d.exec(ctx, d.sql, `UPDATE cases SET state = ?, assignee_id = ?, title = ?, description = ?, updated_at = ? WHERE id = ?`,
		c.State, c.AssigneeID, c.Title, c.Description, toMicros(nowIfZero(c.UpdatedAt)), c.ID)
	return requireRow("store.UpdateCase", c.ID, res, err)
}

// scopeSQL renders a ScopeSet as a SQL condition over the given columns.
func scopeSQL(s ScopeSet, cols map[string]string, args *[]any) string {
	if s.All {
		return "1=1"
	}
	var parts []string
	add := func(col string, ids []string) {
		if len(ids) == 0 || col == "" {
			return
		}
		parts = append(parts, col+" IN ("+strings.TrimSuffix(strings.Repeat("?, ", len(ids)), ", ")+")")
		for _, id := range ids {
			*args = append(*args, id)
		}
	}
	add(cols["facility"], s.Facilities)
	add(cols["asset"], s.Assets)
	add(cols["service_org"], s.ServiceOrgs)
	add(cols["customer"], s.Customers)
	add(cols["customer_machine"], s.CustomerMachines)
	if len(parts) == 0 {
		return "1=0"
	}
	return "(" + strings.Join(parts, " OR ") + ")"
}

func (d *db) ListCases(ctx context.Context, q CaseQuery) ([]Case, error) {
	var args []any
	var where []string
	from := `cases c JOIN assets a ON a.id = c.asset_id`
	switch {
	case q.OperatorTenant != "":
		cols := map[string]string{"facility": "a.facility_id", "asset": "a.id"}
		where = append(where, "c.tenant_id = ?")
		args = append(args, q.OperatorTenant)
		shared := scopeSQL(q.SharedScope, cols, &args)
		internal := scopeSQL(q.InternalScope, cols, &args)
		where = append(where, "((c.kind = 'shared' AND "+shared+") OR (c.kind = 'internal' AND "+internal+"))")
	case q.ProviderTenant != "":
		from += ` LEFT JOIN customer_machines cm ON cm.id = a.customer_machine_id LEFT JOIN customers cu ON cu.id = cm.customer_id`
		where = append(where, "c.kind = 'shared'", "c.provider_tenant_id = ?", "a.provider_tenant_id = ?")
		args = append(args, q.ProviderTenant, q.ProviderTenant)
		where = append(where, scopeSQL(q.ProviderScope, map[string]string{"service_org": "cu.service_org_id", "customer": "cm.customer_id", "customer_machine": "cm.id"}, &args))
	default:
		return nil, fmt.Errorf("store.ListCases: the query names no tenant")
	}
	for _, f := range []struct{ col, v string }{{"c.kind", q.Kind}, {"c.state", q.State}, {"c.asset_id", q.AssetID}, {"c.assignee_id", q.AssigneeID}} {
		if f.v != "" {
			where = append(where, f.col+" = ?")
			args = append(args, f.v)
		}
	}
	if q.OnlyFacilities != nil {
		where = append(where, scopeSQL(ScopeSet{Facilities: q.OnlyFacilities}, map[string]string{"facility": "a.facility_id"}, &args))
	}
	if q.Before != nil {
		where = append(where, "(c.created_at < ? OR (c.created_at = ? AND c.id < ?))")
		us := toMicros(q.Before.CreatedAt)
		args = append(args, us, us, q.Before.ID)
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	args = append(args, q.Limit)
	rows, err := d.query(ctx, d.sql, `SELECT `+caseCols+` FROM `+from+` WHERE `+strings.Join(where, " AND ")+` ORDER BY c.created_at DESC, c.id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("store.ListCases: %w", err)
	}
	return collect(rows, scanCase)
}

// ---- chat ----

func (d *db) AddChatMessage(ctx context.Context, m ChatMessage) (ChatMessage, error) {
	m.ID, m.At = newID(m.ID), nowIfZero(m.At)
	_, err := d.exec(ctx, d.sql, `INSERT INTO chat_messages (id, case_id, author_id, author_name, author_tenant_id, body, at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		m.ID, m.CaseID, m.AuthorID, m.AuthorName, m.AuthorTenantID, m.Body, toMicros(m.At))
	if err != nil {
		return ChatMessage{}, fmt.Errorf("store.AddChatMessage: %w", err)
	}
	return m, nil
}

func (d *db) ListChatMessages(ctx context.Context, caseID string, limit int) ([]ChatMessage, error) {
	if limit <= 0 {
		limit = 200
	}
	rows, err := d.query(ctx, d.sql, `SELECT id, case_id, author_id, author_name, author_tenant_id, body, at FROM chat_messages
		WHERE case_id = ? ORDER BY at DESC, id DESC LIMIT ?`, caseID, limit)
	if err != nil {
		return nil, fmt.Errorf("store.ListChatMessages: %w", err)
	}
	ms, err := collect(rows, func(s scanner) (ChatMessage, error) {
		var m ChatMessage
		var at int64
		err := s.Scan(&m.ID, &m.CaseID, &m.AuthorID, &m.AuthorName, &m.AuthorTenantID, &m.Body, &at)
		m.At = fromMicros(at)
		return m, err
	})
	for i, j := 0, len(ms)-1; i < j; i, j = i+1, j-1 {
		ms[i], ms[j] = ms[j], ms[i]
	}
	return ms, err
}

// ---- external users ----

func (d *db) SetExternalUser(ctx context.Context, e ExternalUser) error {
	now := toMicros(nowIfZero(e.UpdatedAt))
	profile := mustJSON(e.Profile)
	return d.tx(ctx, func(tx *sql.Tx) error {
		res, err := d.exec(ctx, tx, `UPDATE external_users SET tenant_id = ?, provider_tenant_id = ?, customer_id = ?, profile = ?, updated_at = ? WHERE user_id = ?`,
			e.TenantID, e.ProviderTenantID, e.CustomerID, profile, now, e.UserID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		_, err = d.exec(ctx, tx, `INSERT INTO external_users (user_id, tenant_id, provider_tenant_id, customer_id, profile, updated_at) VALUES (?, ?, ?, ?, ?, ?)`,
			e.UserID, e.TenantID, e.ProviderTenantID, e.CustomerID, profile, now)
		return err
	})
}

func (d *db) GetExternalUser(ctx context.Context, userID string) (ExternalUser, error) {
	var e ExternalUser
	var profile string
	var updated int64
	err := d.row(ctx, d.sql, `SELECT user_id, tenant_id, provider_tenant_id, customer_id, profile, updated_at FROM external_users WHERE user_id = ?`, userID).
		Scan(&e.UserID, &e.TenantID, &e.ProviderTenantID, &e.CustomerID, &profile, &updated)
	if err != nil {
		return ExternalUser{}, notFound("store.GetExternalUser", userID, err)
	}
	if err := json.Unmarshal([]byte(profile), &e.Profile); err != nil {
		return ExternalUser{}, fmt.Errorf("external user %s profile: %w", userID, err)
	}
	e.UpdatedAt = fromMicros(updated)
	return e, nil
}

// ---- service contracts ----

func (d *db) CreateServiceContract(ctx context.Context, c ServiceContract) (ServiceContract, error) {
	c.ID, c.CreatedAt = newID(c.ID), nowIfZero(c.CreatedAt)
	_, err := d.exec(ctx, d.sql, `INSERT INTO service_contracts (id, tenant_id, customer_id, name, start_date, end_date, terms, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		c.ID, c.TenantID, c.CustomerID, c.Name, c.StartDate, c.EndDate, c.Terms, toMicros(c.CreatedAt))
	if err != nil {
		return ServiceContract{}, fmt.Errorf("store.CreateServiceContract: %w", err)
	}
	return c, nil
}

func (d *db) ListServiceContracts(ctx context.Context, customerID string) ([]ServiceContract, error) {
	rows, err := d.query(ctx, d.sql, `SELECT id, tenant_id, customer_id, name, start_date, end_date, terms, created_at FROM service_contracts WHERE customer_id = ? ORDER BY start_date, id`, customerID)
	if err != nil {
		return nil, fmt.Errorf("store.ListServiceContracts: %w", err)
	}
	return collect(rows, func(s scanner) (ServiceContract, error) {
		var c ServiceContract
		var created int64
		err := s.Scan(&c.ID, &c.TenantID, &c.CustomerID, &c.Name, &c.StartDate, &c.EndDate, &c.Terms, &created)
		c.CreatedAt = fromMicros(created)
		return c, err
	})
}
