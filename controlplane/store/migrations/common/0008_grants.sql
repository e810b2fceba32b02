CREATE TABLE grants (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  case_id TEXT NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
  asset_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  connection_types TEXT NOT NULL,
  activated_by TEXT NOT NULL,
  activated_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  deactivated_at BIGINT NOT NULL DEFAULT 0,
  deactivated_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX grants_case ON grants(case_id, activated_at);
CREATE INDEX grants_device ON grants(device_id, expires_at);

CREATE TABLE access_requests (
  id TEXT PRIMARY KEY,
  case_id TEXT NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
  requested_by TEXT NOT NULL,
  requester_tenant_id TEXT NOT NULL,
  reason TEXT NOT NULL,
  duration_minutes INTEGER NOT NULL,
  state TEXT NOT NULL,
  decided_by TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL
);
CREATE INDEX access_requests_case ON access_requests(case_id, created_at);
