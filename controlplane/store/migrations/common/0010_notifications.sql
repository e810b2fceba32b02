CREATE TABLE notifications (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  asset_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  point TEXT NOT NULL,
  kind TEXT NOT NULL,
  level TEXT NOT NULL,
  from_level TEXT NOT NULL,
  value DOUBLE PRECISION NOT NULL,
  threshold DOUBLE PRECISION NOT NULL,
  at BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  case_id TEXT NOT NULL DEFAULT ''
);
-- An agent redelivering an event batch (at-least-once) must not record
-- the transition twice.
CREATE UNIQUE INDEX notifications_event ON notifications(device_id, point, level, at);
CREATE INDEX notifications_tenant ON notifications(tenant_id, asset_id, created_at);
CREATE INDEX notifications_asset_point ON notifications(asset_id, point, case_id);
