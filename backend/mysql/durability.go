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
var ErrUnsafeDurability = errors.New("mysql: server may lose acknowledged commits in a crash; it needs innodb_flush_log_at_trx_commit = 1, and sync_binlog = 1 when the binary log is on")

// durabilityQuery reads the settings that decide whether a commit is on
// disk when the server acknowledges it. They are global, and may change
// while the server runs (SET GLOBAL), so every new connection reads them
// again.
const durabilityQuery = "SELECT @@GLOBAL.innodb_flush_log_at_trx_commit, @@GLOBAL.sync_binlog, @@GLOBAL.log_bin"

// durabilityProblem says why settings do not make every acknowledged
// commit durable, or "" if they do.
func durabilityProblem(flushLogAtCommit, syncBinlog, logBin string) string {
	var problems []string
	if flushLogAtCommit != "1" {
		problems = append(problems, fmt.Sprintf("innodb_flush_log_at_trx_commit is %s (1 writes and flushes the redo log at every commit)", flushLogAtCommit))
	}
	if logBin == "1" && syncBinlog != "1" {
		problems = append(problems, fmt.Sprintf("the binary log is on and sync_binlog is %s (1 syncs it at every commit)", syncBinlog))
	}
	return strings.Join(problems, "; ")
}

// checkedConnector checks the durability settings on each connection it
// opens, before the pool hands it out.
type checkedConnector struct {
	driver.Connector
	allowUnsafe bool
	log         *slog.Logger
}

func (c *checkedConnector) Connect(ctx context.Context) (driver.Conn, error) {
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
// statement instead of being truncated or replaced with a warning.
const strictSession = "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES')"

// isolationQuery reads the session's isolation level under the name of
// MySQL 8 (transaction_isolation) or of MariaDB (tx_isolation).
const isolationQuery = "SHOW SESSION VARIABLES WHERE Variable_name IN ('transaction_isolation', 'tx_isolation')"

// prepareSession makes the session strict and refuses READ UNCOMMITTED,
// whether the server's defaults or the DSN's parameters set them.
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
		if level := fmt.Sprintf("%s", values[1]); strings.EqualFold(level, "READ-UNCOMMITTED") {
			return fmt.Errorf("%w; set the server's transaction_isolation (tx_isolation on MariaDB before 11.1), or the DSN's, to READ-COMMITTED or REPEATABLE-READ", ErrUnsafeIsolation)
		}
	}
}

func readDurability(ctx context.Context, conn driver.Conn) (string, error) {
	q, ok := conn.(driver.QueryerContext)
	if !ok {
		return "", errors.New("mysql: the driver's connection cannot run the durability check")
	}
	rows, err := q.QueryContext(ctx, durabilityQuery, nil)
	if err != nil {
		return "", fmt.Errorf("mysql: durability check: %w", err)
	}
	defer rows.Close()
	values := make([]driver.Value, 3)
	if err := rows.Next(values); err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("no row")
		}
		return "", fmt.Errorf("mysql: durability check: %w", err)
	}
	text := func(v driver.Value) string {
		switch v := v.(type) {
		case []byte:
			return string(v)
		case nil:
			return ""
		default:
			return fmt.Sprint(v)
		}
	}
	return durabilityProblem(text(values[0]), text(values[1]), text(values[2])), nil
}
