-- The OPC-UA template last sent to each device by signed reload_config
-- (issue 6) and the agent's answer. version counts the different
-- templates sent to the device; applied_* is the last one the agent
-- acknowledged as running.
CREATE TABLE device_templates (
  device_id TEXT PRIMARY KEY REFERENCES edge_devices(id) ON DELETE CASCADE,
  version BIGINT NOT NULL,
  hash TEXT NOT NULL,
  model_id TEXT NOT NULL DEFAULT '',
  sent_at BIGINT NOT NULL,
  state TEXT NOT NULL DEFAULT 'pending',
  error TEXT NOT NULL DEFAULT '',
  acked_at BIGINT NOT NULL DEFAULT 0,
  applied_version BIGINT NOT NULL DEFAULT 0,
  applied_hash TEXT NOT NULL DEFAULT ''
);
