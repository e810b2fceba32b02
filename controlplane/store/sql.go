package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" database/sql driver
	_ "modernc.org/sqlite"             // "sqlite" database/sql driver
)

//go:embed migrations
var migrations embed.FS

type dialect int

const (
	sqlite dialect = iota
	postgres
)

// db is the Store implementation shared by both backends: the same SQL
// (written with ? placeholders, rebound to $n for PostgreSQL) over
// database/sql, with the modernc SQLite driver or pgx's driver.
type db struct {
	sql     *sql.DB
	dialect dialect
	log     *slog.Logger

	// SQLite: the background WAL checkpointer (see checkpoints).
	stopCkpt chan struct{}
	ckptDone chan struct{}

	// SQLite: committed latest-value snapshots (see latestCache); nil on
	// PostgreSQL.
	latest *latestCache
}

// Open opens the store named by dsn and applies pending migrations.
// "postgres://…" or "postgresql://…" selects PostgreSQL (pgx; a
// search_path parameter selects the schema); "sqlite://PATH" or a plain
// file path selects SQLite.
func Open(ctx context.Context, dsn string, logger *slog.Logger) (Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var (
		d   = &db{log: logger}
		err error
	)
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		d.dialect = postgres
		d.sql, err = sql.Open("pgx", dsn)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		d.sql.SetMaxOpenConns(20)
	default:
		p := strings.TrimPrefix(dsn, "sqlite://")
		if p == "" {
			return nil, errors.New("open sqlite: empty path; give a file path such as /var/lib/gantry/gantry.db")
		}
		d.dialect = sqlite
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "foreign_keys(1)")
		q.Add("_pragma", "synchronous(NORMAL)")
		// Checkpoints run in the background (checkpoints), not in
		// whichever transaction crosses the WAL threshold: under
		// telemetry load that was the ingest writer, which then spent
		// most of its time copying pages back and in fsync.
		q.Add("_pragma", "wal_autocheckpoint(0)")
		// 32 MiB of page cache per connection (SQLite's default is 2
		// MiB): the latest-value snapshots of 10,000 devices alone
		// fill more than that, and every miss is a read system call.
		q.Add("_pragma", "cache_size(-32768)")
		// Statement journals in memory: every multi-row INSERT or upsert
		// keeps one (to undo just that statement on a constraint error),
		// and on disk its page copies were a write system call each — a
		// tenth of the telemetry writer's time with 10,000 devices.
		q.Add("_pragma", "temp_store(MEMORY)")
		q.Set("_txlock", "immediate")
		d.sql, err = sql.Open("sqlite", "file:"+p+"?"+q.Encode())
		if err != nil {
			return nil, fmt.Errorf("open sqlite %s: %w", p, err)
		}
		d.sql.SetMaxOpenConns(8)
		d.latest = newLatestCache()
	}
	if err := d.sql.PingContext(ctx); err != nil {
		d.sql.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := d.migrate(ctx); err != nil {
		d.sql.Close()
		return nil, err
	}
	if d.dialect == sqlite {
		d.stopCkpt, d.ckptDone = make(chan struct{}), make(chan struct{})
		go d.checkpoints(checkpointEvery)
	}
	return d, nil
}

func (d *db) Close() error {
	if d.stopCkpt != nil {
		close(d.stopCkpt)
		<-d.ckptDone
		d.stopCkpt = nil
	}
	return d.sql.Close()
}

const (
	// checkpointEvery is how often the SQLite WAL is copied back into
	// the database file.
	checkpointEvery = 500 * time.Millisecond
	// walTruncateFrames: a WAL longer than this (pages; 64 MiB of 4 KiB
	// pages) is truncated, which waits for the writer of the moment
	// rather than letting the file grow while writers never pause.
	walTruncateFrames = 16384
)

// checkpoints copies the WAL back into the database every interval
// without blocking writers (PASSIVE), and truncates a WAL that grew past
// walTruncateFrames, until Close. A final TRUNCATE leaves the database
// file complete on its own.
func (d *db) checkpoints(interval time.Duration) {
	defer close(d.ckptDone)
	ctx := context.Background()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-d.stopCkpt:
			if _, _, err := d.checkpoint(ctx, "TRUNCATE"); err != nil {
				d.log.Warn("store: final WAL checkpoint", "err", err)
			}
			return
		case <-tick.C:
		}
		logFrames, _, err := d.checkpoint(ctx, "PASSIVE")
		if err != nil {
			d.log.Warn("store: WAL checkpoint", "err", err)
			continue
		}
		if logFrames > walTruncateFrames {
			if _, _, err := d.checkpoint(ctx, "TRUNCATE"); err != nil {
				d.log.Warn("store: WAL truncate", "frames", logFrames, "err", err)
			}
		}
	}
}

// checkpoint runs PRAGMA wal_checkpoint(mode) and returns the WAL's
// length and how much of it is now in the database file, in pages.
func (d *db) checkpoint(ctx context.Context, mode string) (logFrames, checkpointed int, err error) {
	var busy int
	err = d.sql.QueryRowContext(ctx, "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &logFrames, &checkpointed)
	return logFrames, checkpointed, err
}

// rebind turns ? placeholders into $n for PostgreSQL, and drops row locks
// for SQLite (whose write transactions lock the database up front).
func (d *db) rebind(q string) string {
	if d.dialect == sqlite {
		return strings.ReplaceAll(q, " FOR UPDATE", "")
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// querier is *sql.DB or *sql.Tx.
type querier interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func (d *db) exec(ctx context.Context, q querier, query string, args ...any) (sql.Result, error) {
	res, err := q.ExecContext(ctx, d.rebind(query), args...)
	return res, d.mapErr(err)
}

func (d *db) query(ctx context.Context, q querier, query string, args ...any) (*sql.Rows, error) {
	rows, err := q.QueryContext(ctx, d.rebind(query), args...)
	return rows, d.mapErr(err)
}

func (d *db) row(ctx context.Context, q querier, query string, args ...any) *sql.Row {
	return q.QueryRowContext(ctx, d.rebind(query), args...)
}

// mapErr maps unique violations to ErrConflict.
func (d *db) mapErr(err error) error {
	if err == nil {
		return nil
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) && pg.Code == "23505" {
		return fmt.Errorf("%w (%s)", ErrConflict, pg.ConstraintName)
	}
	if strings.Contains(err.Error(), "UNIQUE constraint failed") {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return err
}

// tx runs fn in a transaction, committing when it returns nil.
func (d *db) tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", d.mapErr(err))
	}
	return nil
}

// lockTenant serializes transactions that check tenant-wide invariants.
func (d *db) lockTenant(ctx context.Context, tx *sql.Tx, tenantID string) error {
	var id string
	err := d.row(ctx, tx, `SELECT id FROM tenants WHERE id = ? FOR UPDATE`, tenantID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("tenant %s: %w", tenantID, ErrNotFound)
	}
	return err
}

// ---- migrations ----

type migration struct {
	version int
	name    string
	sql     string
}

// migrationFiles lists the migrations for the dialect: migrations/common
// holds those whose SQL both databases accept; migrations/<dialect> holds
// the ones that differ (a version must not be in both).
func (d *db) migrationFiles() ([]migration, error) {
	own := "migrations/sqlite"
	if d.dialect == postgres {
		own = "migrations/postgres"
	}
	byVersion := map[int]migration{}
	for _, dir := range []string{"migrations/common", own} {
		entries, err := fs.ReadDir(migrations, dir)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			name := e.Name()
			if !strings.HasSuffix(name, ".sql") {
				continue
			}
			v, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
			if err != nil {
				return nil, fmt.Errorf("migration %s: file names start with a version number", name)
			}
			if prev, dup := byVersion[v]; dup {
				return nil, fmt.Errorf("migration version %d is both %s and %s", v, prev.name, name)
			}
			b, err := migrations.ReadFile(path.Join(dir, name))
			if err != nil {
				return nil, err
			}
			byVersion[v] = migration{v, name, string(b)}
		}
	}
	out := make([]migration, 0, len(byVersion))
	for _, m := range byVersion {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration versions must be 1, 2, 3, …; %s breaks the sequence", m.name)
		}
	}
	return out, nil
}

// migrate applies pending migrations, each in its own transaction.
func (d *db) migrate(ctx context.Context) error {
	if _, err := d.sql.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	ms, err := d.migrationFiles()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var current int
	if err := d.sql.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if latest := ms[len(ms)-1].version; current > latest {
		return fmt.Errorf("migrate: the database is at schema version %d but this binary knows only up to %d; run a newer gantry-controlplane", current, latest)
	}
	for _, m := range ms {
		if m.version <= current {
			continue
		}
		err := d.tx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return err
			}
			_, err := d.exec(ctx, tx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`, m.version, m.name, toMicros(time.Now()))
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate %s: %w", m.name, err)
		}
		d.log.Info("store migrated", "version", m.version, "name", m.name)
	}
	return nil
}

// ---- helpers ----

func toMicros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// nowIfZero returns t (or now, when zero) in UTC at the microsecond
// precision the store keeps, so values round-trip exactly.
func nowIfZero(t time.Time) time.Time {
	if t.IsZero() {
		t = time.Now()
	}
	return t.UTC().Truncate(time.Microsecond)
}

func newID(id string) string {
	if id == "" {
		return uuid.NewString()
	}
	return id
}

func hexHash(b []byte) string { return hex.EncodeToString(b) }

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("store: marshal %T: %v", v, err))
	}
	return string(b)
}

func notFound(op, id string, err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s %s: %w", op, id, ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", op, id, err)
}

// requireRow turns "no row changed" into ErrNotFound.
func requireRow(op, id string, res sql.Result, err error) error {
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%s %s: %w", op, id, ErrNotFound)
	}
	return nil
}

// Analyze refreshes the query planner's statistics (used after bulk loads).
func (d *db) Analyze(ctx context.Context) error {
	_, err := d.sql.ExecContext(ctx, "ANALYZE")
	return err
}
