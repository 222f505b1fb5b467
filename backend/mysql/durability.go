package mysql

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// ErrUnsafeDurability: the server may acknowledge a commit before it is on
// disk. The store refuses such a server, on every new connection, unless
// Config.AllowUnsafeDurability is set.
var ErrUnsafeDurability = errors.New("mysql: server may lose acknowledged commits in a crash; it needs innodb_flush_log_at_trx_commit = 1, sync_binlog = 1 when the binary log is on, fsync (no innodb_flush_method nosync or littlesync) and the redo log enabled")

// durabilityQueries read the settings that decide whether a commit is on
// disk when the server acknowledges it, as (name, value) rows; a server
// without one (innodb_flush_method is deprecated in MariaDB 11, the redo
// log can be switched off only in MySQL 8.0.21 and later) has no row for
// it. They are global, and may change while the server runs (SET GLOBAL,
// ALTER INSTANCE), so every new connection reads them again.
var durabilityQueries = []string{
	"SHOW GLOBAL VARIABLES WHERE Variable_name IN ('innodb_flush_log_at_trx_commit', 'sync_binlog', 'log_bin', 'innodb_flush_method')",
	"SHOW GLOBAL STATUS WHERE Variable_name = 'Innodb_redo_log_enabled'",
}

// durabilityProblem says why settings do not make every acknowledged
// commit durable, or "" if they do.
func durabilityProblem(settings map[string]string) string {
	var problems []string
	if v := settings["innodb_flush_log_at_trx_commit"]; v != "1" {
		problems = append(problems, fmt.Sprintf("innodb_flush_log_at_trx_commit is %s (1 writes and flushes the redo log at every commit)", v))
	}
	if on(settings["log_bin"]) && settings["sync_binlog"] != "1" {
		problems = append(problems, fmt.Sprintf("the binary log is on and sync_binlog is %s (1 syncs it at every commit)", settings["sync_binlog"]))
	}
	// nosync and littlesync skip the fsync of data or log files (for
	// tests only, say both servers' manuals).
	if v := settings["innodb_flush_method"]; strings.EqualFold(v, "nosync") || strings.EqualFold(v, "littlesync") {
		problems = append(problems, fmt.Sprintf("innodb_flush_method is %s (it skips fsync; use fsync, O_DSYNC or O_DIRECT)", v))
	}
	if v, ok := settings["Innodb_redo_log_enabled"]; ok && !on(v) {
		problems = append(problems, "the redo log is disabled (ALTER INSTANCE DISABLE INNODB REDO_LOG; enable it again)")
	}
	return strings.Join(problems, "; ")
}

// on reads a boolean setting as SHOW prints it.
func on(v string) bool { return strings.EqualFold(v, "ON") || v == "1" }

// checkedConnector checks the durability settings on each connection it
// opens, before the pool hands it out.
type checkedConnector struct {
	driver.Connector
	allowUnsafe bool
	log         *slog.Logger
}

// connectError is the error of a connection that could not be opened, or
// that the store refused: the call that needed it sent nothing.
type connectError struct{ err error }

func (e connectError) Error() string { return e.err.Error() }
func (e connectError) Unwrap() error { return e.err }

func (c *checkedConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, connectError{err}
	}
	return conn, nil
}

func (c *checkedConnector) connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	problem, err := readDurability(ctx, conn)
	if err == nil && problem != "" {
		if !c.allowUnsafe {
			err = fmt.Errorf("%w: %s; set them in the server's configuration, or set Config.AllowUnsafeDurability to accept that a crash may lose acknowledged tokens", ErrUnsafeDurability, problem)
		} else {
			c.log.Warn("mysql store: durability is not guaranteed: a server crash may lose acknowledged commits", "reason", problem)
		}
	}
	if err == nil {
		err = prepareSession(ctx, conn)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// ErrUnsafeIsolation: the connection's isolation level is READ
// UNCOMMITTED, under which a plain read (Load, LoadWithToken) sees other
// transactions' uncommitted writes: an outbox entry of a commit that then
// rolls back would be driven, its children created and its signals sent,
// although its activity never happened.
var ErrUnsafeIsolation = errors.New("mysql: the session's isolation level is READ-UNCOMMITTED, under which reads see uncommitted entities and tokens")

// strictSession makes the session's sql_mode strict for every table: a
// value longer than its column, or otherwise not storable, fails its
// statement instead of being truncated or replaced with a warning. It
// turns autocommit on and COMMIT's chaining off: with autocommit off (a
// server's default, init_connect or the DSN), or with completion_type
// CHAIN, which begins a transaction at every COMMIT, a statement outside
// the store's transactions (Issue, ExpireRoots) would stay in a
// transaction that nothing commits, reported done but lost with the
// connection, and plain reads would keep one snapshot.
const strictSession = restoreSessionStatement + ", autocommit = 1"

// isolationQuery reads the session's isolation level under the name of
// MySQL 8 (transaction_isolation) or of MariaDB (tx_isolation).
const isolationQuery = "SHOW SESSION VARIABLES WHERE Variable_name IN ('transaction_isolation', 'tx_isolation')"

// prepareSession makes the session strict and autocommit, and refuses READ
// UNCOMMITTED, whether the server's defaults or the DSN's parameters set
// them otherwise.
func prepareSession(ctx context.Context, conn driver.Conn) error {
	x, okx := conn.(driver.ExecerContext)
	q, okq := conn.(driver.QueryerContext)
	if !okx || !okq {
		return errors.New("mysql: the driver's connection cannot set the session's sql_mode")
	}
	if _, err := x.ExecContext(ctx, strictSession, nil); err != nil {
		return fmt.Errorf("mysql: set a strict sql_mode: %w", err)
	}
	rows, err := q.QueryContext(ctx, isolationQuery, nil)
	if err != nil {
		return fmt.Errorf("mysql: read the isolation level: %w", err)
	}
	defer rows.Close()
	values := make([]driver.Value, len(rows.Columns()))
	for {
		if err := rows.Next(values); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("mysql: read the isolation level: %w", err)
		}
		if level := text(values[1]); strings.EqualFold(level, "READ-UNCOMMITTED") {
			return fmt.Errorf("%w; set the server's transaction_isolation (tx_isolation on MariaDB before 11.1), or the DSN's, to READ-COMMITTED or REPEATABLE-READ", ErrUnsafeIsolation)
		}
	}
}

func readDurability(ctx context.Context, conn driver.Conn) (string, error) {
	q, ok := conn.(driver.QueryerContext)
	if !ok {
		return "", errors.New("mysql: the driver's connection cannot run the durability check")
	}
	settings := map[string]string{}
	for _, query := range durabilityQueries {
		if err := readSettings(ctx, q, query, settings); err != nil {
			return "", fmt.Errorf("mysql: durability check: %w", err)
		}
	}
	return durabilityProblem(settings), nil
}

// readSettings adds the (name, value) rows of a SHOW statement to settings.
func readSettings(ctx context.Context, q driver.QueryerContext, query string, settings map[string]string) error {
	rows, err := q.QueryContext(ctx, query, nil)
	if err != nil {
		return err
	}
	defer rows.Close()
	values := make([]driver.Value, len(rows.Columns()))
	if len(values) != 2 {
		return fmt.Errorf("%d columns, want 2", len(values))
	}
	for {
		err := rows.Next(values)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		settings[text(values[0])] = text(values[1])
	}
}

func text(v driver.Value) string {
	switch v := v.(type) {
	case []byte:
		return string(v)
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}
