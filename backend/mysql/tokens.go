package mysql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// tokenRow is a token as its row holds it.
type tokenRow struct {
	id, conversation, causation, destination, typ, digest []byte
	createdS, createdNs, expiresS, expiresNs              sql.NullInt64 // NULL where a join found no token
}

func (r *tokenRow) fields() []any {
	return []any{&r.id, &r.conversation, &r.causation, &r.destination, &r.typ, &r.digest, &r.createdS, &r.createdNs, &r.expiresS, &r.expiresNs}
}

func (r *tokenRow) token() (baton.Token, error) {
	var t baton.Token
	if len(r.id) != 16 || len(r.conversation) != 16 || len(r.digest) != 32 || (r.causation != nil && len(r.causation) != 16) {
		return t, errors.New("mysql: a token row has ids or a digest of the wrong length")
	}
	copy(t.ID[:], r.id)
	copy(t.Conversation[:], r.conversation)
	copy(t.Causation[:], r.causation)
	copy(t.Digest[:], r.digest)
	t.Destination, t.Type = string(r.destination), string(r.typ)
	t.CreatedAt = fromColumns(r.createdS.Int64, r.createdNs.Int64)
	if r.expiresS.Valid {
		t.ExpiresAt = fromColumns(r.expiresS.Int64, r.expiresNs.Int64)
	}
	return t, nil
}

// tokenArgs are the insert's arguments for t.
func tokenArgs(t baton.Token) []any {
	var causation, expiresS, expiresNs any
	if !t.Causation.IsZero() {
		causation = t.Causation[:]
	}
	if !t.ExpiresAt.IsZero() {
		expiresS, expiresNs = toColumns(t.ExpiresAt)
	}
	createdS, createdNs := toColumns(t.CreatedAt)
	return []any{t.ID[:], t.Conversation[:], causation, []byte(t.Destination), []byte(t.Type), t.Digest[:], createdS, createdNs, expiresS, expiresNs}
}

// insertTokens creates tokens in tx: ErrExists if one exists. One
// statement holds at most maxStatementBytes of tokens (a batch's children
// may pass max_allowed_packet together).
func (s *Store) insertTokens(ctx context.Context, tx *sql.Tx, tokens []baton.Token) error {
	start, size := 0, 0
	for i, t := range tokens {
		n := len(t.Destination) + len(t.Type) + 200 // ids, digest, times, quoting
		if i > start && size+n > maxStatementBytes {
			if err := s.insertTokenRows(ctx, tx, tokens[start:i]); err != nil {
				return err
			}
			start, size = i, 0
		}
		size += n
	}
	return s.insertTokenRows(ctx, tx, tokens[start:])
}

// insertTokenRows is one statement of insertTokens.
func (s *Store) insertTokenRows(ctx context.Context, tx *sql.Tx, tokens []baton.Token) error {
	if len(tokens) == 0 {
		return nil
	}
	args := make([]any, 0, 10*len(tokens))
	for _, t := range tokens {
		args = append(args, tokenArgs(t)...)
	}
	if _, err := tx.ExecContext(ctx, s.sql.insertToken+placeholders(len(tokens), 10), args...); err != nil {
		if mysqlErrorNumber(err) == errDuplicateKey {
			return fmt.Errorf("%w: a token to create exists", store.ErrExists)
		}
		return err
	}
	return nil
}

// Transition implements store.TokenStore in one transaction: delete the
// token, and only if that deleted a row, insert the children. Under READ
// COMMITTED or REPEATABLE READ alike, InnoDB's DELETE reads the latest
// committed row and locks it, so of concurrent transitions of one token
// exactly one deletes it; the others find no row and create nothing.
func (s *Store) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	if err := store.ValidateTransition(consume, create); err != nil {
		return false, err
	}
	var consumed bool
	err := s.inTx(ctx, "transition", func(tx *sql.Tx) error {
		consumed = false
		res, err := tx.ExecContext(ctx, s.sql.deleteToken, consume[:])
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // not live: nothing to create
		}
		consumed = true
		return s.insertTokens(ctx, tx, create)
	})
	if err != nil {
		return false, err
	}
	return consumed, nil
}

// Issue implements store.TokenStore with one insert under a fresh id (a
// fresh one again in the unlikely case that the id exists).
func (s *Store) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	return store.IssueBy(ctx, root, rand.Reader, s.CreateRoot)
}

// CreateRoot implements store.RootCreator with one insert.
func (s *Store) CreateRoot(ctx context.Context, root baton.Token) (baton.Token, error) {
	if err := store.ValidateRoot(root); err != nil {
		return baton.Token{}, err
	}
	if _, err := s.exec(ctx, "issue", s.sql.insertToken+placeholders(1, 10), tokenArgs(root)...); err != nil {
		return baton.Token{}, err
	}
	return root, nil
}

// ClaimRoot implements store.TokenStore in one transaction that locks the
// token first.
func (s *Store) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	var tok baton.Token
	err := s.inTx(ctx, "claim root", func(tx *sql.Tx) error {
		var r tokenRow
		err := tx.QueryRowContext(ctx, s.sql.lockToken, id[:]).Scan(r.fields()...)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: token %s", store.ErrNotFound, id)
		}
		if err != nil {
			return err
		}
		if tok, err = r.token(); err != nil {
			return err
		}
		switch {
		case tok.ExpiresAt.IsZero():
			return nil
		case !now.Before(tok.ExpiresAt):
			return fmt.Errorf("%w: token %s expired at %s", store.ErrExpired, id, tok.ExpiresAt.Format(time.RFC3339Nano))
		}
		if _, err := tx.ExecContext(ctx, s.sql.claim, id[:]); err != nil {
			return err
		}
		tok.ExpiresAt = time.Time{}
		return nil
	})
	if err != nil {
		return baton.Token{}, err
	}
	return tok, nil
}

// Get implements store.TokenStore.
func (s *Store) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	if err := s.usable(ctx, "get"); err != nil {
		return baton.Token{}, err
	}
	var r tokenRow
	err := s.db.QueryRowContext(ctx, s.sql.getToken, id[:]).Scan(r.fields()...)
	if errors.Is(err, sql.ErrNoRows) {
		return baton.Token{}, fmt.Errorf("%w: token %s", store.ErrNotFound, id)
	}
	if err != nil {
		return baton.Token{}, fmt.Errorf("mysql: get: %w", err)
	}
	return r.token()
}

// ListByConversation implements store.TokenStore.
func (s *Store) ListByConversation(ctx context.Context, conversation baton.TokenID, page store.Page) ([]baton.Token, error) {
	return s.list(ctx, s.sql.byConversation, conversation[:], page)
}

// ListByDestination implements store.TokenStore.
func (s *Store) ListByDestination(ctx context.Context, destination string, page store.Page) ([]baton.Token, error) {
	return s.list(ctx, s.sql.byDestination, []byte(destination), page)
}

func (s *Store) list(ctx context.Context, query string, by []byte, page store.Page) ([]baton.Token, error) {
	if err := s.usable(ctx, "list"); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, query, by, page.After[:], page.Size())
	if err != nil {
		return nil, fmt.Errorf("mysql: list: %w", err)
	}
	defer rows.Close()
	var out []baton.Token
	for rows.Next() {
		var r tokenRow
		if err := rows.Scan(r.fields()...); err != nil {
			return nil, fmt.Errorf("mysql: list: %w", err)
		}
		t, err := r.token()
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mysql: list: %w", err)
	}
	return out, nil
}

// ExpireRoots implements store.TokenStore with one delete.
func (s *Store) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	sec, ns := toColumns(before)
	res, err := s.exec(ctx, "expire roots", s.sql.expire, sec, ns, limit)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// toColumns splits t into seconds since the Unix epoch and nanoseconds
// within the second, the two columns that hold a time.
func toColumns(t time.Time) (int64, int64) { return t.Unix(), int64(t.Nanosecond()) }

// fromColumns is the time, in UTC, that toColumns split.
func fromColumns(sec, ns int64) time.Time { return time.Unix(sec, ns).UTC() }
