CREATE TABLE facilities (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  UNIQUE (tenant_id, name)
);

CREATE TABLE service_orgs (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  UNIQUE (tenant_id, name)
);

CREATE TABLE customers (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  service_org_id TEXT NOT NULL REFERENCES service_orgs(id),
  name TEXT NOT NULL,
  operator_tenant_id TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL
);
CREATE INDEX customers_tenant ON customers(tenant_id);

CREATE TABLE machine_models (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  remote_access TEXT NOT NULL DEFAULT '{}',
  opcua TEXT NOT NULL DEFAULT '{}',
  compatible_apps TEXT NOT NULL DEFAULT '[]',
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE (tenant_id, name)
);

CREATE TABLE customer_machines (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  customer_id TEXT NOT NULL REFERENCES customers(id),
  name TEXT NOT NULL,
  serial_number TEXT NOT NULL DEFAULT '',
  machine_model_id TEXT NOT NULL DEFAULT '',
  asset_id TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL
);
CREATE INDEX customer_machines_tenant ON customer_machines(tenant_id);
CREATE INDEX customer_machines_customer ON customer_machines(customer_id);

CREATE TABLE assets (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  facility_id TEXT NOT NULL REFERENCES facilities(id),
  name TEXT NOT NULL,
  serial_number TEXT NOT NULL DEFAULT '',
  machine_model_id TEXT NOT NULL DEFAULT '',
  provider_tenant_id TEXT NOT NULL DEFAULT '',
  customer_machine_id TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL
);
CREATE INDEX assets_tenant ON assets(tenant_id, facility_id);

CREATE TABLE asset_proposals (
  id TEXT PRIMARY KEY,
  provider_tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  operator_tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  customer_machine_id TEXT NOT NULL REFERENCES customer_machines(id),
  name TEXT NOT NULL,
  serial_number TEXT NOT NULL DEFAULT '',
  machine_model_id TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  asset_id TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL
);
CREATE INDEX asset_proposals_operator ON asset_proposals(operator_tenant_id);

CREATE TABLE cases (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  asset_id TEXT NOT NULL REFERENCES assets(id),
  kind TEXT NOT NULL,
  title TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  assignee_id TEXT NOT NULL DEFAULT '',
  created_by TEXT NOT NULL,
  provider_tenant_id TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX cases_tenant ON cases(tenant_id, created_at DESC, id DESC);
CREATE INDEX cases_provider ON cases(provider_tenant_id, created_at DESC, id DESC);
CREATE INDEX cases_asset ON cases(asset_id);
CREATE INDEX cases_assignee ON cases(assignee_id);

CREATE TABLE chat_messages (
  id TEXT PRIMARY KEY,
  case_id TEXT NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
  author_id TEXT NOT NULL,
  author_name TEXT NOT NULL,
  author_tenant_id TEXT NOT NULL,
  body TEXT NOT NULL,
  at BIGINT NOT NULL
);
CREATE INDEX chat_case ON chat_messages(case_id, at, id);
