CREATE TABLE device_values (
  device_id TEXT NOT NULL,
  point TEXT NOT NULL,
  value DOUBLE PRECISION NOT NULL,
  status BIGINT NOT NULL,
  at BIGINT NOT NULL,
  PRIMARY KEY (device_id, point)
);

CREATE TABLE device_value_history (
  device_id TEXT NOT NULL,
  point TEXT NOT NULL,
  value DOUBLE PRECISION NOT NULL,
  status BIGINT NOT NULL,
  at BIGINT NOT NULL,
  batch_seq BIGINT NOT NULL
);
CREATE INDEX device_value_history_point ON device_value_history(device_id, point, at);
