ALTER TABLE cases ADD COLUMN ticket_type TEXT NOT NULL DEFAULT '';
ALTER TABLE cases ADD COLUMN responsible TEXT NOT NULL DEFAULT '';

CREATE TABLE external_users (
  user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
  tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  provider_tenant_id TEXT NOT NULL,
  customer_id TEXT NOT NULL,
  profile TEXT NOT NULL,
  updated_at BIGINT NOT NULL
);
