package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/batonhq/baton/store"
)

// DefaultPrefix starts the store's table names unless Config.Prefix says
// otherwise.
const DefaultPrefix = "baton_"

// DefaultMaxConns is Config.MaxConns unless set.
const DefaultMaxConns = 16

// Config configures a Store.
type Config struct {
	// Prefix starts every table name, so that several stores share one
	// database. Letters, digits and underscores, at most 36 (MySQL names
	// have at most 64 characters, and the longest name adds 28). Empty means
	// DefaultPrefix.
	Prefix string
	// AllowUnsafeDurability opens the store, and uses connections, even
	// if the server may acknowledge a commit before it is on disk
	// (innodb_flush_log_at_trx_commit other than 1, sync_binlog other
	// than 1 while the binary log is on, innodb_flush_method nosync or
	// littlesync, or the redo log disabled). A crash may then lose
	// acknowledged tokens: a lost token drops its signal as a duplicate,
	// a consumed one that comes back lets a duplicate through. The store
	// logs a warning. Zero value: refuse with ErrUnsafeDurability.
	AllowUnsafeDurability bool
	// MaxConns bounds the store's connections to the server (InnoDB
	// serves few concurrent transactions well, and servers refuse
	// connections past max_connections). Default DefaultMaxConns.
	MaxConns int
	// SkipMigrate leaves the schema alone: a deployment step creates it
	// with Migrate. Open then refuses tables at another version than this
	// code's, or none (ErrSchemaVersion).
	SkipMigrate bool
	// Logger receives warnings. Nil discards.
	Logger *slog.Logger
}

var prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_]{1,36}$`)

func (c Config) withDefaults() (Config, error) {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if !prefixPattern.MatchString(c.Prefix) {
		return c, fmt.Errorf("%w: mysql: prefix %q must be 1 to 36 letters, digits or underscores", store.ErrInvalid, c.Prefix)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	return c, nil
}

// Store keeps tokens and entities in MySQL or MariaDB (InnoDB). It
// implements store.TokenStore, store.EntityStore, store.CommitTransitioner,
// store.TokenLoader, store.BatchCommitter, store.BatchLoader,
// store.TransitionBatcher, store.TxCommitter[*sql.Tx] and
// store.Starter[*sql.Tx].
type Store struct {
	db  *sql.DB
	cfg Config
	sql statements
	// session reads and restores the session settings an activity may
	// change (restoreSession), with the server's names for them.
	session sessionStatements
	closed  atomic.Bool
	// retried counts transactions that the server rolled back for a
	// deadlock or a lock wait timeout and that ran again.
	retried atomic.Int64
}

var (
	_ store.TokenStore         = (*Store)(nil)
	_ store.EntityStore        = (*Store)(nil)
	_ store.CommitTransitioner = (*Store)(nil)
	_ store.TokenLoader        = (*Store)(nil)
	_ store.BatchCommitter     = (*Store)(nil)
	_ store.BatchLoader        = (*Store)(nil)
)

// Open connects to the server of dsn (go-sql-driver/mysql's format, for
// example "user:password@tcp(127.0.0.1:3306)/db"), checks on every new
// connection that commits are durable, migrates the schema (with
// cfg.SkipMigrate: checks its version), and returns the store, which owns its connections.
func Open(ctx context.Context, dsn string, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	dc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("mysql: open: %w", err)
	}
	// One round trip per statement: the driver quotes the arguments
	// itself instead of preparing every statement on the server.
	dc.InterpolateParams = true
	dc.MultiStatements = false
	connector, err := mysql.NewConnector(dc)
	if err != nil {
		return nil, fmt.Errorf("mysql: open: %w", err)
	}
	db := sql.OpenDB(&checkedConnector{Connector: connector, allowUnsafe: cfg.AllowUnsafeDurability, log: cfg.Logger})
	db.SetMaxOpenConns(cfg.MaxConns)
	db.SetMaxIdleConns(cfg.MaxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	s := &Store{db: db, cfg: cfg, sql: newStatements(cfg.Prefix)}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("mysql: open: %w", err)
	}
	if s.session, err = newSessionStatements(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("mysql: open: %w", err)
	}
	migrate := s.Migrate
	if cfg.SkipMigrate {
		migrate = s.checkSchema
	}
	if err := migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// DB is the store's connection pool, for a caller's transactions (StartTx)
// and the service's own tables.
func (s *Store) DB() *sql.DB { return s.db }

// Prefix is the prefix of the store's table names.
func (s *Store) Prefix() string { return s.cfg.Prefix }

// Close releases the connections. Later calls fail with store.ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.db.Close()
}

// usable returns a not-applied error if a call must not start.
func (s *Store) usable(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("mysql: %s: %w", op, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mysql: %s: %w: %w", op, store.ErrNotApplied, err)
	}
	return nil
}

// MySQL error numbers the store acts on.
const (
	errDuplicateKey = 1062 // ER_DUP_ENTRY
	errNoSuchTable  = 1146 // ER_NO_SUCH_TABLE
	// ER_UNKNOWN_SYSTEM_VARIABLE
	errUnknownSystemVariable = 1193
	errLockWaitTimeout       = 1205 // ER_LOCK_WAIT_TIMEOUT: the statement was rolled back
	errNoSuchSavepoint       = 1305 // ER_SP_DOES_NOT_EXIST
	errDeadlock              = 1213 // ER_LOCK_DEADLOCK: the whole transaction was rolled back
	// ER_CHECKREAD: MariaDB's snapshot isolation (innodb_snapshot_isolation,
	// on by default from 11.6.2) found a row that changed after the
	// transaction's first read; the whole transaction was rolled back.
	errRecordChanged = 1020
)

func mysqlErrorNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// retryable reports a transaction that the server rolled back because of
// contention: running it again is safe and usually succeeds.
func retryable(err error) bool {
	n := mysqlErrorNumber(err)
	return n == errDeadlock || n == errLockWaitTimeout || n == errRecordChanged
}

// isStoreSentinel reports an error that already says what happened.
func isStoreSentinel(err error) bool {
	return errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrInvalid) ||
		errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExpired) || errors.Is(err, store.ErrNotApplied) ||
		errors.Is(err, store.ErrClosed)
}

// maxTxAttempts bounds the retries of a transaction that deadlocked.
const maxTxAttempts = 8

// inTx runs fn in a transaction and commits it, again when the server
// rolled it back for a deadlock, a lock wait timeout or a row changed
// under snapshot isolation. An error before
// COMMIT means nothing was applied: the server rolls back a transaction
// that is not committed, also when the connection is lost. An error of
// COMMIT means the same only if it says the transaction was rolled back
// (a deadlock or a lock wait timeout); any other, and none (the connection
// lost while committing), leaves the outcome unknown.
func (s *Store) inTx(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	if err := s.usable(ctx, op); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		err := s.tryTx(ctx, fn)
		switch {
		case err == nil:
			return nil
		case retryable(err) && attempt < maxTxAttempts && ctx.Err() == nil:
			s.retried.Add(1)
			time.Sleep(time.Duration(attempt) * time.Millisecond)
			continue
		case isStoreSentinel(err) || errors.As(err, new(errHandler)):
			return err
		case errors.As(err, new(commitUnknown)):
			return fmt.Errorf("mysql: %s: %w", op, err)
		default:
			return fmt.Errorf("mysql: %s: %w: %w", op, store.ErrNotApplied, err)
		}
	}
}

// commitUnknown marks a COMMIT whose answer was lost.
type commitUnknown struct{ err error }

func (e commitUnknown) Error() string { return "commit: outcome unknown: " + e.err.Error() }
func (e commitUnknown) Unwrap() error { return e.err }

func (s *Store) tryTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		if errors.As(err, new(sessionUnsafe)) {
			// Its SET outlives the transaction: the pool must not hand
			// this session out again.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		if retryable(err) {
			return err // the server rolled it back
		}
		// Any other answer, or none, leaves the outcome unknown: a server
		// may answer COMMIT with an error although it committed (a session
		// killed, or a server shut down, while it waited for a
		// semi-synchronous replica's acknowledgement).
		return commitUnknown{err}
	}
	return nil
}

// exec runs one statement on its own (autocommit). A server error means
// the statement did nothing, but for an interruption (classifyStatement);
// a lost connection leaves the outcome unknown.
func (s *Store) exec(ctx context.Context, op, query string, args ...any) (sql.Result, error) {
	if err := s.usable(ctx, op); err != nil {
		return nil, err
	}
	res, err := s.db.ExecContext(ctx, query, args...)
	if err != nil {
		return nil, classifyStatement(op, err)
	}
	return res, nil
}

// interruptions are the server errors that say a statement was stopped
// from outside, which may happen after an autocommit statement committed
// (while it waited for a semi-synchronous replica's acknowledgement).
var interruptions = map[uint16]bool{
	1053: true, // ER_SERVER_SHUTDOWN
	1317: true, // ER_QUERY_INTERRUPTED
	1927: true, // ER_CONNECTION_KILLED (MariaDB)
	1969: true, // ER_STATEMENT_TIMEOUT (MariaDB)
	3169: true, // ER_SESSION_WAS_KILLED (MySQL)
	4031: true, // ER_CLIENT_INTERACTION_TIMEOUT (MySQL)
}

// classifyStatement wraps the error of one autocommit statement: a server
// error means it did nothing, but for an interruption; so does a
// connection that could not be opened; no answer leaves the outcome
// unknown.
func classifyStatement(op string, err error) error {
	n := mysqlErrorNumber(err)
	switch {
	case errors.As(err, new(connectError)):
		return fmt.Errorf("mysql: %s: %w: %w", op, store.ErrNotApplied, err)
	case n == errDuplicateKey:
		return fmt.Errorf("mysql: %s: %w: %w", op, store.ErrExists, err)
	case n != 0 && !interruptions[n]:
		return fmt.Errorf("mysql: %s: %w: %w", op, store.ErrNotApplied, err)
	}
	return fmt.Errorf("mysql: %s: %w", op, err)
}

// table names one of the store's tables.
func table(prefix, name string) string { return "`" + prefix + name + "`" }

// placeholders returns "(?, ?, ...)" rows for a multi-row insert.
func placeholders(rows, columns int) string {
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", columns), ", ") + ")"
	return strings.TrimSuffix(strings.Repeat(row+", ", rows), ", ")
}

// sortByKey sorts the indexes of entities by key.
func sortByKey(order []int, entities []store.Entity) {
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(entities[a].Key, entities[b].Key) })
}
