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
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
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
