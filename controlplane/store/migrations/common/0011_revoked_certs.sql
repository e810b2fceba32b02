-- Device certificates revoked by re-enrollment; exported as the CRL an
-- external broker (Mosquitto) loads. Rows outlive their device on purpose.
CREATE TABLE revoked_certs (
  serial TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  revoked_at BIGINT NOT NULL
);
