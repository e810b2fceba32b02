-- Value history in compact blocks (decision in docs/pending-decisions-ingest.md):
-- one row per device, time bucket and point partition per ingest
-- transaction, holding that group's samples packed (see history_blocks.go).
-- device_value_history (one row per value) is still read and pruned but no
-- longer written.
CREATE TABLE device_history_blocks (
  id INTEGER PRIMARY KEY,
  device_id TEXT NOT NULL,
  bucket BIGINT NOT NULL,
  part BIGINT NOT NULL,
  t_max BIGINT NOT NULL,
  n BIGINT NOT NULL,
  data BLOB NOT NULL
);
CREATE INDEX device_history_blocks_range ON device_history_blocks(device_id, part, bucket);
CREATE INDEX device_history_blocks_t_max ON device_history_blocks(t_max);

-- Latest values: one row per device holding every point's latest value
-- (sorted by point, packed; see latest_snapshot.go). data is NULL while a
-- writer holds the row but has not filled it; devices without a filled
-- row still have their latest values in device_values, which the first
-- write of the device moves into the snapshot.
CREATE TABLE device_latest (
  device_id TEXT PRIMARY KEY,
  data BLOB
);
