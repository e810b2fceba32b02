// Package storetest runs tests against every store backend: SQLite always
// (a file in a temp dir) and PostgreSQL when GANTRY_TEST_POSTGRES is set
// (a fresh schema per store, dropped when the test ends).
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/gantry-iot/gantry/controlplane/store"
	_ "github.com/jackc/pgx/v5/stdlib" // pgx database/sql driver for schema setup
)

// Factory opens a fresh, empty store for t; it is closed when t ends.
type Factory func(t testing.TB) store.Store

// ForEach runs fn as a subtest per backend ("sqlite", "postgres").
func ForEach(t *testing.T, fn func(t *testing.T, newStore Factory)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { fn(t, SQLite) })
	t.Run("postgres", func(t *testing.T) {
		if os.Getenv("GANTRY_TEST_POSTGRES") == "" {
			t.Skip("GANTRY_TEST_POSTGRES not set: skipping the PostgreSQL backend (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
		}
		fn(t, Postgres)
	})
}

// SQLite opens a fresh SQLite store in a temp dir.
func SQLite(t testing.TB) store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "gantry.db"), nil)
	if err != nil {
		t.Fatalf("storetest: open sqlite: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Postgres opens a fresh PostgreSQL store in a new schema of the database
// named by GANTRY_TEST_POSTGRES.
func Postgres(t testing.TB) store.Store {
	t.Helper()
	dsn := os.Getenv("GANTRY_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("GANTRY_TEST_POSTGRES not set")
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "gantry_test_" + hex.EncodeToString(b)
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	defer admin.Close()
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		t.Fatalf("storetest: create schema (is PostgreSQL at GANTRY_TEST_POSTGRES reachable?): %v", err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("storetest: GANTRY_TEST_POSTGRES: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	// A lock wait behind a transaction someone forgot to end fails the
	// test that waits, with PostgreSQL's "lock timeout" error, instead of
	// hanging the package until go test's timeout.
	q.Set("lock_timeout", "60000")
	q.Set("idle_in_transaction_session_timeout", "120000")
	u.RawQuery = q.Encode()
	s, err := store.Open(context.Background(), u.String(), nil)
	if err != nil {
		t.Fatalf("storetest: open postgres: %v", err)
	}
	t.Cleanup(func() {
		s.Close()
		if a, err := sql.Open("pgx", dsn); err == nil {
			_, _ = a.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
			a.Close()
		}
	})
	return s
}

// Analyze refreshes planner statistics (PostgreSQL: ANALYZE; SQLite:
// ANALYZE too) after a bulk load in a test.
func Analyze(s store.Store) error {
	a, ok := s.(interface{ Analyze(context.Context) error })
	if !ok {
		return nil
	}
	return a.Analyze(context.Background())
}
