package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

var (
	_ store.TxCommitter[pgx.Tx] = (*Store)(nil)
	_ store.Starter[pgx.Tx]     = (*Store)(nil)
)

// txStatements is the SQL of transactional commits and starts, for one
// schema.
type txStatements struct {
	lock, insertRoot                                 string
	insertStart, loadStart, updateStart, deleteStart string
	pendingStarts                                    string
}

const startColumns = "id, version, root, claimed, destination, type, payload, traceparent, tracestate, created_at, created_ns"

func newTxStatements(cfg Config) txStatements {
	r := strings.NewReplacer(
		"{tokens}", cfg.table("tokens"),
		"{entities}", cfg.table("entities"),
		"{starts}", cfg.table("starts"),
		"{columns}", tokenColumns,
		"{start_columns}", startColumns,
	)
	return txStatements{
		// The token first, then the entity, as every other statement of
		// this package locks them, so that a transactional commit never
		// waits for one of them in a cycle; the count makes the token's
		// lock come first whatever the plan. A new entity has no row to
		// lock: the advisory lock on its key stands in for it, so that
		// concurrent first activities of one entity run one after the
		// other instead of both running their handlers.
		lock: r.Replace(`WITH t AS (
	SELECT id FROM {tokens} WHERE $3::bool AND id = $1 FOR UPDATE
), a AS (
	SELECT pg_advisory_xact_lock(hashtextextended($4::text, 0)) FROM (SELECT count(*) FROM t) AS c
), e AS (
	SELECT version FROM {entities} WHERE key = $2 AND (SELECT count(*) FROM a) >= 0 FOR UPDATE
)
SELECT (SELECT count(*) FROM t), (SELECT version FROM e)`),
		insertRoot:  r.Replace(`INSERT INTO {tokens} ({columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING`),
		insertStart: r.Replace(`INSERT INTO {starts} ({start_columns}) VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`),
		loadStart:   r.Replace(`SELECT {start_columns} FROM {starts} WHERE id = $1`),
		updateStart: r.Replace(`UPDATE {starts} SET version = version + 1, root = $3, claimed = $4
WHERE id = $1 AND version = $2 RETURNING version`),
		deleteStart: r.Replace(`DELETE FROM {starts} WHERE id = $1`),
		pendingStarts: r.Replace(`SELECT {start_columns} FROM {starts}
WHERE (created_at, created_ns) < ($1, $2) ORDER BY created_at, created_ns, id LIMIT $3`),
	}
}

// errUndurableStep: synchronous_commit was off in the step's transaction,
// set by the activity or, before it, on the pooled connection by its
// other users; CommitTx closes the connection, so that the pool opens a
// new one, checked anew, instead of refusing every step that lands on it.
var errUndurableStep = fmt.Errorf("%w: %w: synchronous_commit was off in the step's transaction (an activity's SET or SET LOCAL, or a SET on the pooled connection), so its commit would be acknowledged before it is durable; the step is rolled back and the connection closed", store.ErrNotApplied, ErrUnsafeServer)

// errHandler marks the error of an activity run inside CommitTx, so that it
// reaches the caller as it is rather than as a database failure.
type errHandler struct{ err error }

func (e errHandler) Error() string { return e.err.Error() }
func (e errHandler) Unwrap() error { return e.err }

// CommitTx implements store.TxCommitter in one transaction on a connection
// of the store's pool: it locks the token (step.Fused) and the entity (an
// advisory lock on its key stands in for a new entity's row), runs write,
// then writes the entity with its outbox entry and, with step.Fused, runs
// the transition with the fast path's statement, and commits. The
// transaction is READ COMMITTED; the entity's lock serialises the
// activities of one entity, so the handler's reads of its own rows see
// every earlier activity of that entity. A deadlock or serialization
// failure in the handler's own statements comes back as the handler's
// error, rolled back: the engine retries the signal.
func (s *Store) CommitTx(ctx context.Context, step store.TxStep, write func(context.Context, pgx.Tx) (store.Entity, []baton.Token, error)) (uint64, bool, error) {
	if !storableText(step.Key) || len(step.Key) == 0 || len(step.Key) > store.MaxEntityKeyBytes {
		return 0, false, fmt.Errorf("%w: entity key %q cannot be stored", store.ErrInvalid, step.Key)
	}
	if step.Fused && step.Token.IsZero() {
		return 0, false, fmt.Errorf("%w: a fused commit without a token", store.ErrInvalid)
	}
	consumed := true
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }() // a no-op after Commit
		var live int
		var current *int64
		lockKey := s.schema + "/" + step.Key // schema names hold no "/"
		if err := tx.QueryRow(ctx, s.tx.lock, step.Token[:], step.Key, step.Fused, lockKey).Scan(&live, &current); err != nil {
			return err
		}
		if step.Fused && live == 0 {
			consumed = false
			return nil // a duplicate: nothing to do
		}
		if at := currentVersion(current); at != step.Version {
			return fmt.Errorf("%w: entity %q is at version %d, not %d", store.ErrConflict, step.Key, at, step.Version)
		}
		next, children, err := write(ctx, tx)
		if err != nil {
			return errHandler{err}
		}
		if err := s.writeStep(ctx, tx, step, next, children); err != nil {
			if errors.Is(err, errUndurableStep) {
				_ = tx.Rollback(ctx)
				_ = conn.Conn().Close(ctx) // the pool drops it on release
			}
			return err
		}
		return tx.Commit(ctx)
	})
	var handlerErr errHandler
	switch {
	case errors.As(err, &handlerErr):
		return 0, false, handlerErr.err
	case err != nil:
		return 0, false, fmt.Errorf("postgres: transactional commit of %q: %w", step.Key, err)
	case !consumed:
		return 0, false, nil
	}
	return step.Version + 1, true, nil
}

func currentVersion(v *int64) uint64 {
	if v == nil {
		return 0
	}
	return uint64(*v)
}

// writeStep writes the entity that write returned and, fused, the
// transition, in tx, whose locks guarantee that the entity is at
// step.Version and the token live. The same round trip reads
// synchronous_commit: an activity that turned it off in its transaction
// (SET or SET LOCAL) would have the step acknowledged before it is
// durable, so the step is refused (and the rollback undoes the SET),
// unless Config.AllowUnsafe accepts commits that are not durable.
func (s *Store) writeStep(ctx context.Context, tx pgx.Tx, step store.TxStep, next store.Entity, children []baton.Token) error {
	if next.Key != step.Key || next.Version != step.Version {
		return fmt.Errorf("%w: the activity returned entity %q at version %d for a commit of %q at version %d", store.ErrInvalid, next.Key, next.Version, step.Key, step.Version)
	}
	row, err := newEntityRow(next)
	if err != nil {
		return err
	}
	var b pgx.Batch
	var syncCommit string
	b.Queue(`SELECT current_setting('synchronous_commit')`).QueryRow(func(r pgx.Row) error { return r.Scan(&syncCommit) })
	if !step.Fused {
		query, args := s.sql.updateEntity, []any{next.Key, int64(next.Version), next.State, row.outbox, row.oldestAt, row.oldestNs}
		if next.Version == 0 {
			query, args = s.sql.insertEntity, []any{next.Key, next.State, row.outbox, row.oldestAt, row.oldestNs}
		}
		b.Queue(query, args...).Exec(func(tag pgconn.CommandTag) error {
			if tag.RowsAffected() != 1 {
				return fmt.Errorf("%w: entity %q is not at version %d", store.ErrConflict, next.Key, next.Version)
			}
			return nil
		})
	} else {
		if err := store.ValidateTransition(step.Token, children); err != nil {
			return err
		}
		if err := checkTokenText(children...); err != nil {
			return err
		}
		query, args := s.sql.fastPathCall(step.Token, next, row, children)
		b.Queue(query, args...).QueryRow(func(r pgx.Row) error {
			var n int
			err := r.Scan(&n)
			var pgErr *pgconn.PgError
			switch {
			case errors.As(err, &pgErr) && pgErr.Code == "23514" && pgErr.ConstraintName == "entity_version_conflict":
				return fmt.Errorf("%w: entity %q is not at version %d", store.ErrConflict, next.Key, next.Version)
			case err != nil:
				return err
			case n != 1:
				// The token is locked by this transaction: it cannot be gone.
				return fmt.Errorf("postgres: token %s vanished under its lock", step.Token)
			}
			return nil
		})
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return err
	}
	if syncCommit == "off" && !s.durability.allowUnsafe {
		return errUndurableStep
	}
	return nil
}

// RecordStart implements store.Starter in the caller's transaction tx,
// which must be on this store's database. With root set, the root token is
// created in tx too, under a fresh id, and the start is recorded claimed.
func (s *Store) RecordStart(ctx context.Context, tx pgx.Tx, start store.Start, root *baton.Token) (store.Start, error) {
	if err := store.ValidateStart(start); err != nil {
		return store.Start{}, err
	}
	if !storableText(start.Destination) || !storableText(start.Type) || !storableText(start.Trace.Parent) || !storableText(start.Trace.State) {
		return store.Start{}, fmt.Errorf("%w: start %s: names must be valid UTF-8 without NUL", store.ErrInvalid, start.ID)
	}
	start.Version, start.Root, start.Claimed = 1, baton.TokenID{}, false
	if root != nil {
		tok, err := s.insertRoot(ctx, tx, *root)
		if err != nil {
			return store.Start{}, err
		}
		*root = tok
		start.Root, start.Claimed = tok.ID, true
	}
	at, ns := splitTime(start.CreatedAt)
	_, err := tx.Exec(ctx, s.tx.insertStart, start.ID[:], optionalID(start.Root), start.Claimed, start.Destination, start.Type,
		nonNil(start.Payload), start.Trace.Parent, start.Trace.State, at, ns)
	if err != nil {
		return store.Start{}, fmt.Errorf("postgres: record start %s: %w", start.ID, err)
	}
	return start, nil
}

// insertRoot creates a root token in tx under a fresh id.
func (s *Store) insertRoot(ctx context.Context, tx pgx.Tx, root baton.Token) (baton.Token, error) {
	for {
		tok, err := store.NewRoot(root, rand.Reader)
		if err != nil {
			return baton.Token{}, err
		}
		if err := checkTokenText(tok); err != nil {
			return baton.Token{}, err
		}
		createdAt, createdNs := splitTime(tok.CreatedAt)
		expiresAt, expiresNs := splitOptionalTime(tok.ExpiresAt)
		tag, err := tx.Exec(ctx, s.tx.insertRoot, tok.ID[:], tok.Conversation[:], nil, tok.Destination, tok.Type, tok.Digest[:],
			createdAt, createdNs, expiresAt, expiresNs)
		if err != nil {
			return baton.Token{}, fmt.Errorf("postgres: create root token: %w", err)
		}
		if tag.RowsAffected() == 1 {
			return tok, nil
		}
	}
}

// LoadStart implements store.Starts.
func (s *Store) LoadStart(ctx context.Context, id baton.TokenID) (store.Start, error) {
	var start store.Start
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		var err error
		start, err = scanStart(conn.QueryRow(ctx, s.tx.loadStart, id[:]))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Start{}, fmt.Errorf("%w: start %s", store.ErrNotFound, id)
	}
	if err != nil {
		return store.Start{}, fmt.Errorf("postgres: load start %s: %w", id, err)
	}
	return start, nil
}

// UpdateStart implements store.Starts: a compare-and-set on the version of
// its root and claim.
func (s *Store) UpdateStart(ctx context.Context, start store.Start) (store.Start, error) {
	if err := store.ValidateStart(start); err != nil {
		return store.Start{}, err
	}
	var version int64
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		return conn.QueryRow(ctx, s.tx.updateStart, start.ID[:], int64(start.Version), optionalID(start.Root), start.Claimed).Scan(&version)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		if _, lerr := s.LoadStart(ctx, start.ID); errors.Is(lerr, store.ErrNotFound) {
			return store.Start{}, lerr
		}
		return store.Start{}, fmt.Errorf("%w: start %s is not at version %d", store.ErrConflict, start.ID, start.Version)
	}
	if err != nil {
		return store.Start{}, fmt.Errorf("postgres: update start %s: %w", start.ID, err)
	}
	start.Version = uint64(version)
	return start, nil
}

// DeleteStart implements store.Starts.
func (s *Store) DeleteStart(ctx context.Context, id baton.TokenID) error {
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		_, err := conn.Exec(ctx, s.tx.deleteStart, id[:])
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: delete start %s: %w", id, err)
	}
	return nil
}

// PendingStarts implements store.Starts.
func (s *Store) PendingStarts(ctx context.Context, before time.Time, limit int) ([]store.Start, error) {
	if limit <= 0 {
		return nil, nil
	}
	at, ns := splitTime(before)
	var out []store.Start
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, s.tx.pendingStarts, at, ns, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Start, error) { return scanStart(row) })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: pending starts: %w", err)
	}
	return out, nil
}

func scanStart(row pgx.Row) (store.Start, error) {
	var start store.Start
	var id, root []byte
	var version int64
	var at time.Time
	var ns int16
	if err := row.Scan(&id, &version, &root, &start.Claimed, &start.Destination, &start.Type, &start.Payload,
		&start.Trace.Parent, &start.Trace.State, &at, &ns); err != nil {
		return store.Start{}, err
	}
	if len(id) != len(start.ID) || (root != nil && len(root) != len(start.Root)) {
		return store.Start{}, fmt.Errorf("postgres: malformed start row")
	}
	copy(start.ID[:], id)
	copy(start.Root[:], root)
	start.Version = uint64(version)
	start.CreatedAt = joinTime(at, ns)
	return start, nil
}

// nonNil stores a nil payload as empty: the column is NOT NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
