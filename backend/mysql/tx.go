package mysql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

var (
	_ store.TxCommitter[*sql.Tx] = (*Store)(nil)
	_ store.Starter[*sql.Tx]     = (*Store)(nil)
)

// errHandler marks the error of an activity run inside CommitTx, so that it
// reaches the caller as it is rather than as a database failure.
type errHandler struct{ err error }

func (e errHandler) Error() string { return e.err.Error() }
func (e errHandler) Unwrap() error { return e.err }

// CommitTx implements store.TxCommitter in one transaction of the store's
// pool: it locks the token (step.Fused; none: a duplicate) and the entity's
// row (SELECT ... FOR UPDATE), checks the version, runs write, then writes
// the entity with its outbox entry and, with step.Fused, deletes the token
// and inserts the children, and commits. A new entity has no row to lock:
// two first activities of one entity may both run their handlers, and the
// second insert of the entity fails as a conflict and rolls back its
// handler's writes. A deadlock in the handler's own statements rolls
// everything back and is retried (inTx); any other error of write comes
// back as it is.
func (s *Store) CommitTx(ctx context.Context, step store.TxStep, write func(context.Context, *sql.Tx) (store.Entity, []baton.Token, error)) (uint64, bool, error) {
	if len(step.Key) == 0 || len(step.Key) > store.MaxEntityKeyBytes {
		return 0, false, fmt.Errorf("%w: entity key %q cannot be stored", store.ErrInvalid, step.Key)
	}
	if step.Fused && step.Token.IsZero() {
		return 0, false, fmt.Errorf("%w: a fused commit without a token", store.ErrInvalid)
	}
	consumed := true
	err := s.inTx(ctx, "transactional commit of "+step.Key, func(tx *sql.Tx) error {
		consumed = true
		if step.Fused {
			var r tokenRow
			err := tx.QueryRowContext(ctx, s.sql.lockToken, step.Token[:]).Scan(r.fields()...)
			if errors.Is(err, sql.ErrNoRows) {
				consumed = false
				return nil // a duplicate: nothing to do
			}
			if err != nil {
				return err
			}
		}
		var current uint64
		err := tx.QueryRowContext(ctx, s.sql.lockEntity, []byte(step.Key)).Scan(&current)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if current != step.Version {
			return fmt.Errorf("%w: entity %q is at version %d, not %d", store.ErrConflict, step.Key, current, step.Version)
		}
		if _, err := tx.ExecContext(ctx, "SAVEPOINT "+activitySavepoint); err != nil {
			return err
		}
		next, children, err := runActivity(ctx, tx, write)
		// The activity's SET SESSION outlives the transaction whether
		// the activity succeeded or not.
		if serr := s.restoreSession(ctx, tx); serr != nil {
			if err == nil {
				err = serr
			}
			return sessionUnsafe{err}
		}
		if err != nil {
			return err
		}
		return s.writeStep(ctx, tx, step, next, children)
	})
	var handlerErr errHandler
	switch {
	case errors.As(err, &handlerErr):
		return 0, false, handlerErr.err
	case err != nil:
		return 0, false, err
	case !consumed:
		return 0, false, nil
	}
	return step.Version + 1, true, nil
}

// runActivity runs write in tx after the savepoint and releases it.
func runActivity(ctx context.Context, tx *sql.Tx, write func(context.Context, *sql.Tx) (store.Entity, []baton.Token, error)) (store.Entity, []baton.Token, error) {
	next, children, err := write(ctx, tx)
	if err != nil {
		if retryable(err) {
			return next, children, err // the server rolled it back: run it all again
		}
		return next, children, errHandler{err}
	}
	// The savepoint is gone if the transaction ended while the activity
	// ran: a deadlock or lock wait timeout rolled it back (and left the
	// session in autocommit) and the activity went on, or one of its
	// statements committed implicitly (DDL, LOCK TABLES). The store's
	// writes would then commit each on its own, without the activity's.
	if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT "+activitySavepoint); err != nil {
		if mysqlErrorNumber(err) == errNoSuchSavepoint {
			return next, children, errTxLost
		}
		return next, children, err
	}
	return next, children, nil
}

// sessionUnsafe marks an error after which the connection's session may
// keep what an activity set (errSessionChanged, or the session could not
// be read): tryTx closes the connection instead of returning it to the
// pool.
type sessionUnsafe struct{ err error }

func (e sessionUnsafe) Error() string { return e.err.Error() }
func (e sessionUnsafe) Unwrap() error { return e.err }

// sessionStatements read and set back the session settings that the
// store's statements rely on (strictSession, an isolation level above
// READ UNCOMMITTED, read-write transactions) and that an activity may
// change with SET SESSION, which outlives its transaction.
type sessionStatements struct {
	read, restore string
}

// newSessionStatements names the isolation level and the read-only flag
// as the server does: transaction_isolation and transaction_read_only on
// MySQL 8 and MariaDB from 11.1, tx_isolation and tx_read_only on MariaDB
// before.
func newSessionStatements(ctx context.Context, db *sql.DB) (sessionStatements, error) {
	isolation, readOnly := "transaction_isolation", "transaction_read_only"
	err := db.QueryRowContext(ctx, "SELECT @@SESSION.transaction_isolation").Scan(new(string))
	switch {
	case mysqlErrorNumber(err) == errUnknownSystemVariable:
		isolation, readOnly = "tx_isolation", "tx_read_only"
	case err != nil:
		return sessionStatements{}, fmt.Errorf("read the isolation level: %w", err)
	}
	return sessionStatements{
		read: "SELECT @@SESSION.autocommit, @@SESSION.completion_type, @@SESSION.sql_mode, @@SESSION." + isolation +
			", @@SESSION." + readOnly,
		restore: restoreSessionStatement + ", " + readOnly + " = 0",
	}, nil
}

// restoreSession checks, after the activity ran in tx, the settings that
// prepareSession gave the session. A sql_mode without STRICT_ALL_TABLES
// (the store's writes that follow would be truncated instead of refused),
// a chaining completion_type or read-only transactions (every later write
// on the connection would fail) are set back, inside tx. autocommit off
// cannot be: turning it on in a transaction commits it, the activity's
// writes without the store's; nor can READ UNCOMMITTED, as the level the
// session had is unknown. Either refuses the step (errSessionChanged),
// and the caller closes the connection: with autocommit off every
// statement on it would stay in a transaction that nothing commits, and
// READ UNCOMMITTED would let its reads see uncommitted entities.
func (s *Store) restoreSession(ctx context.Context, tx *sql.Tx) error {
	var autocommit, readOnly int
	var completion, mode, isolation string
	if err := tx.QueryRowContext(ctx, s.session.read).Scan(&autocommit, &completion, &mode, &isolation, &readOnly); err != nil {
		return err
	}
	if autocommit != 1 || strings.EqualFold(isolation, "READ-UNCOMMITTED") {
		return errSessionChanged
	}
	strict := slices.Contains(strings.Split(mode, ","), "STRICT_ALL_TABLES")
	if strict && (strings.EqualFold(completion, "NO_CHAIN") || completion == "0") && readOnly == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, s.session.restore)
	return err
}

// restoreSessionStatement is strictSession without autocommit: what a
// statement inside a transaction may set back (turning autocommit on
// would commit the transaction).
const restoreSessionStatement = "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES'), completion_type = 'NO_CHAIN'"

// errSessionChanged: the activity turned autocommit off or set the
// isolation level READ UNCOMMITTED.
var errSessionChanged = fmt.Errorf("%w: the activity turned autocommit off or set the isolation level READ UNCOMMITTED for the session, which outlives its transaction: the store's statements after it on this connection would never commit or would read uncommitted rows; the step is rolled back and the connection closed; an activity must leave both as they are", store.ErrNotApplied)

// activitySavepoint is set before the activity runs and released after.
const activitySavepoint = "baton_before_activity"

// errTxLost: the transaction ended while the activity ran. Not
// ErrNotApplied: what the activity wrote after its end was committed.
var errTxLost = errors.New("mysql: the transaction ended while the activity ran (a deadlock or lock wait timeout rolled it back and the activity went on without returning the error, or one of its statements committed implicitly); nothing of the step was committed, but the activity's statements after that end may have been")

// writeStep writes the entity that write returned and, fused, the
// transition, in tx, whose locks guarantee the entity's version and the
// token's life.
func (s *Store) writeStep(ctx context.Context, tx *sql.Tx, step store.TxStep, next store.Entity, children []baton.Token) error {
	if next.Key != step.Key || next.Version != step.Version {
		return fmt.Errorf("%w: the activity returned entity %q at version %d for a commit of %q at version %d", store.ErrInvalid, next.Key, next.Version, step.Key, step.Version)
	}
	row, err := newEntityRow(next)
	if err != nil {
		return err
	}
	if err := s.writeEntity(ctx, tx, next, row); err != nil {
		return err
	}
	if !step.Fused {
		return nil
	}
	if err := store.ValidateTransition(step.Token, children); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, s.sql.deleteToken, step.Token[:]); err != nil {
		return err
	}
	return s.insertTokens(ctx, tx, children)
}

// RecordStart implements store.Starter in the caller's transaction tx,
// which must be on this store's database. With root set, the root token is
// created in tx too, under a fresh id, and the start is recorded claimed.
func (s *Store) RecordStart(ctx context.Context, tx *sql.Tx, start store.Start, root *baton.Token) (store.Start, error) {
	if err := store.ValidateStart(start); err != nil {
		return store.Start{}, err
	}
	start.Version, start.Root, start.Claimed = 1, baton.TokenID{}, false
	if root != nil {
		tok, err := store.NewRoot(*root, rand.Reader)
		if err != nil {
			return store.Start{}, err
		}
		if err := s.insertTokens(ctx, tx, []baton.Token{tok}); err != nil {
			return store.Start{}, fmt.Errorf("mysql: create root token: %w", err)
		}
		*root = tok
		start.Root, start.Claimed = tok.ID, true
	}
	sec, ns := toColumns(start.CreatedAt)
	_, err := tx.ExecContext(ctx, s.sql.insertStart, start.ID[:], optionalID(start.Root), start.Claimed, []byte(start.Destination),
		[]byte(start.Type), nonNil(start.Payload), []byte(start.Trace.Parent), []byte(start.Trace.State), sec, ns)
	if err != nil {
		return store.Start{}, fmt.Errorf("mysql: record start %s: %w", start.ID, err)
	}
	return start, nil
}

// LoadStart implements store.Starts.
func (s *Store) LoadStart(ctx context.Context, id baton.TokenID) (store.Start, error) {
	if err := s.usable(ctx, "load start"); err != nil {
		return store.Start{}, err
	}
	start, err := scanStart(s.db.QueryRowContext(ctx, s.sql.loadStart, id[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Start{}, fmt.Errorf("%w: start %s", store.ErrNotFound, id)
	}
	if err != nil {
		return store.Start{}, fmt.Errorf("mysql: load start %s: %w", id, err)
	}
	return start, nil
}

// UpdateStart implements store.Starts: a compare-and-set on the version of
// its root and claim.
func (s *Store) UpdateStart(ctx context.Context, start store.Start) (store.Start, error) {
	if err := store.ValidateStart(start); err != nil {
		return store.Start{}, err
	}
	res, err := s.exec(ctx, "update start", s.sql.updateStart, optionalID(start.Root), start.Claimed, start.ID[:], start.Version)
	if err != nil {
		return store.Start{}, err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		if _, lerr := s.LoadStart(ctx, start.ID); errors.Is(lerr, store.ErrNotFound) {
			return store.Start{}, lerr
		}
		return store.Start{}, fmt.Errorf("%w: start %s is not at version %d", store.ErrConflict, start.ID, start.Version)
	}
	start.Version++
	return start, nil
}

// DeleteStart implements store.Starts.
func (s *Store) DeleteStart(ctx context.Context, id baton.TokenID) error {
	_, err := s.exec(ctx, "delete start", s.sql.deleteStart, id[:])
	return err
}

// PendingStarts implements store.Starts.
func (s *Store) PendingStarts(ctx context.Context, before time.Time, limit int) ([]store.Start, error) {
	if err := s.usable(ctx, "pending starts"); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	sec, ns := toColumns(before)
	rows, err := s.db.QueryContext(ctx, s.sql.pendingStarts, sec, ns, limit)
	if err != nil {
		return nil, fmt.Errorf("mysql: pending starts: %w", err)
	}
	defer rows.Close()
	var out []store.Start
	for rows.Next() {
		start, err := scanStart(rows)
		if err != nil {
			return nil, fmt.Errorf("mysql: pending starts: %w", err)
		}
		out = append(out, start)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mysql: pending starts: %w", err)
	}
	return out, nil
}

func scanStart(row interface{ Scan(...any) error }) (store.Start, error) {
	var start store.Start
	var id, root, destination, typ, parent, state []byte
	var sec int64
	var ns int32
	if err := row.Scan(&id, &start.Version, &root, &start.Claimed, &destination, &typ, &start.Payload,
		&parent, &state, &sec, &ns); err != nil {
		return store.Start{}, err
	}
	if len(id) != len(start.ID) || (root != nil && len(root) != len(start.Root)) {
		return store.Start{}, errors.New("mysql: malformed start row")
	}
	copy(start.ID[:], id)
	copy(start.Root[:], root)
	start.Destination, start.Type = string(destination), string(typ)
	start.Trace.Parent, start.Trace.State = string(parent), string(state)
	start.CreatedAt = fromColumns(sec, int64(ns))
	return start, nil
}

func optionalID(id baton.TokenID) any {
	if id.IsZero() {
		return nil
	}
	return id[:]
}

// nonNil stores a nil payload as empty: the column is NOT NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
