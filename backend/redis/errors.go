package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/store"
)

var (
	// ErrUnsafeDurability: the server does not fsync every write before it
	// acknowledges it, or does not let Open check. Open refuses such a
	// server unless Config.AllowUnsafeDurability is set.
	ErrUnsafeDurability = errors.New("redis: server may lose acknowledged writes in a crash; it needs " + requiredSettingsText)

	// ErrAsyncReplication: the server, or a master of the cluster, has
	// replicas. Redis replicates asynchronously, so a failover can lose
	// acknowledged transitions. Open refuses such a server unless
	// Config.AllowAsyncReplication is set.
	ErrAsyncReplication = errors.New("redis: server replicates asynchronously; a failover may lose acknowledged writes")

	// ErrUnsupportedServer: the server cannot run this store (older than
	// Redis 7.0, or a cluster addressed with a database other than 0).
	ErrUnsupportedServer = errors.New("redis: unsupported server")
)

// dialError marks a failure to open a connection: no command was sent on it.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialMarker is a go-redis hook that marks dial failures, so that the store
// can tell "never sent" from "sent, reply lost".
type dialMarker struct{}

func (dialMarker) DialHook(next goredis.DialHook) goredis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil {
			return nil, &dialError{err: err}
		}
		return conn, nil
	}
}

func (dialMarker) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook { return next }

func (dialMarker) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

// rejectedBeforeRunning lists the error replies with which a server refuses
// a command (or a "#!lua" script) before running any of it.
var rejectedBeforeRunning = []string{
	"NOSCRIPT", "OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "MISCONF",
	"NOREPLICAS", "NOPERM", "NOAUTH", "WRONGPASS", "CROSSSLOT", "MOVED", "ASK",
	"TRYAGAIN", "CLUSTERDOWN",
}

// classify maps a client error to the store's error contract: ErrExists
// and ErrNotApplied when the write provably did not happen, ErrClosed for a
// closed client, and a plain error ("outcome unknown") for everything else,
// such as a connection lost after the command was written.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	if goredis.HasErrorPrefix(err, errExistsPrefix) {
		id := strings.TrimSpace(strings.TrimPrefix(err.Error(), errExistsPrefix))
		return fmt.Errorf("redis: %s: %w: token %s", op, store.ErrExists, id)
	}
	if goredis.HasErrorPrefix(err, errStalePrefix) {
		return fmt.Errorf("redis: %s: %w: the creation reached the server more than %s after it started", op, store.ErrNotApplied, claimTTL)
	}
	if errors.Is(err, goredis.ErrClosed) {
		return fmt.Errorf("redis: %s: %w", op, store.ErrClosed)
	}
	if notSent(err) {
		return fmt.Errorf("redis: %s: %w: %w", op, store.ErrNotApplied, err)
	}
	return fmt.Errorf("redis: %s: outcome unknown: %w", op, err)
}

// notSent reports whether err proves that the server did not run the
// command. Anything else, including a timeout or a reset connection after
// the command was written, leaves the outcome unknown.
func notSent(err error) bool {
	var dial *dialError
	if errors.As(err, &dial) {
		return true
	}
	if errors.Is(err, goredis.ErrPoolTimeout) || errors.Is(err, goredis.ErrPoolExhausted) {
		return true
	}
	var reply goredis.Error
	if errors.As(err, &reply) {
		for _, prefix := range rejectedBeforeRunning {
			if goredis.HasErrorPrefix(err, prefix+" ") || reply.Error() == prefix {
				return true
			}
		}
	}
	return false
}
