package store

import "sync"

// maxCachedLatest bounds the latest-value entries latestCache holds
// (≈ 50 bytes each): 10,000 devices with 10 points each take 100,000.
const maxCachedLatest = 1 << 19

// latestCache keeps the committed latest-value snapshot of recently
// written devices, so that a telemetry transaction on SQLite need not read
// and decode every device's snapshot row before merging into it (a
// quarter of the ingest writer's time with 10,000 small devices).
//
// It is exact only because every write of device_latest goes through
// StoreSampleBatches in this process and holds mu from reading the cache
// to updating it after the commit; SQLite allows one writer anyway.
// PostgreSQL's writers run in parallel and lock rows instead, so they do
// not use it. StoreSampleBatches merges into a cached slice in place
// (mergeLatest) while it holds mu, and forgets its devices if the
// transaction fails, so the cache never serves an uncommitted value.
type latestCache struct {
	mu      sync.Mutex
	devices map[string][]latestEntry
	entries int
}

func newLatestCache() *latestCache {
	return &latestCache{devices: map[string][]latestEntry{}}
}

// get returns the device's committed snapshot; mu must be held.
func (c *latestCache) get(dev string) ([]latestEntry, bool) {
	es, ok := c.devices[dev]
	return es, ok
}

// put records committed snapshots, evicting arbitrary devices beyond
// maxCachedLatest; mu must be held.
func (c *latestCache) put(snaps map[string][]latestEntry) {
	for dev, es := range snaps {
		c.entries += len(es) - len(c.devices[dev])
		c.devices[dev] = es
	}
	for dev, es := range c.devices {
		if c.entries <= maxCachedLatest {
			break
		}
		delete(c.devices, dev)
		c.entries -= len(es)
	}
}

// forget drops devices whose transaction failed (its outcome unknown);
// mu must be held.
func (c *latestCache) forget(devices []string) {
	for _, dev := range devices {
		c.entries -= len(c.devices[dev])
		delete(c.devices, dev)
	}
}
