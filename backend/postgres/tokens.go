package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// Transition implements store.TokenStore in one SQL statement (one round
// trip, one commit).
func (s *Store) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	if err := store.ValidateTransition(consume, create); err != nil {
		return false, err
	}
	if err := checkTokenText(create...); err != nil {
		return false, err
	}
	args := append([]any{consume[:]}, tokenArrays(create)...)
	var consumed int
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		return conn.QueryRow(ctx, s.sql.transition, args...).Scan(&consumed)
	})
	if err != nil {
		return false, fmt.Errorf("postgres: transition %s: %w", consume, err)
	}
	return consumed == 1, nil
}

// ClaimRoot implements store.TokenStore in one statement: the update
// clears the expiry of a live token that has not expired; if it updates
// nothing, the same statement reports whether the token exists (expired)
// or not.
func (s *Store) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	at, ns := splitTime(now)
	var kind int
	var tr tokenRow
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		return conn.QueryRow(ctx, s.sql.claimRoot, id[:], at, ns).Scan(append([]any{&kind}, tr.fields()...)...)
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return baton.Token{}, fmt.Errorf("%w: token %s", store.ErrNotFound, id)
	case err != nil:
		return baton.Token{}, fmt.Errorf("postgres: claim root %s: %w", id, err)
	}
	tok, err := tr.token()
	if err != nil {
		return baton.Token{}, err
	}
	if kind != 1 {
		return baton.Token{}, fmt.Errorf("%w: token %s expired at %s", store.ErrExpired, id, tok.ExpiresAt)
	}
	return tok, nil
}

// Get implements store.TokenStore.
func (s *Store) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	var t baton.Token
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		var err error
		t, err = scanToken(conn.QueryRow(ctx, s.sql.get, id[:]))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return baton.Token{}, fmt.Errorf("%w: token %s", store.ErrNotFound, id)
	}
	if err != nil {
		return baton.Token{}, fmt.Errorf("postgres: get %s: %w", id, err)
	}
	return t, nil
}

// ListByConversation implements store.TokenStore.
func (s *Store) ListByConversation(ctx context.Context, conversation baton.TokenID, page store.Page) ([]baton.Token, error) {
	tokens, err := s.list(ctx, s.sql.listByConversation, conversation[:], page)
	if err != nil {
		return nil, fmt.Errorf("postgres: list conversation %s: %w", conversation, err)
	}
	return tokens, nil
}

// ListByDestination implements store.TokenStore.
func (s *Store) ListByDestination(ctx context.Context, destination string, page store.Page) ([]baton.Token, error) {
	if !storableText(destination) {
		return nil, nil // no stored token can have this destination
	}
	tokens, err := s.list(ctx, s.sql.listByDestination, destination, page)
	if err != nil {
		return nil, fmt.Errorf("postgres: list destination %q: %w", destination, err)
	}
	return tokens, nil
}

func (s *Store) list(ctx context.Context, query string, key any, page store.Page) ([]baton.Token, error) {
	var tokens []baton.Token
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, query, key, page.After[:], page.Size())
		if err != nil {
			return err
		}
		tokens, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (baton.Token, error) { return scanToken(row) })
		return err
	})
	return tokens, err
}

// ExpireRoots implements store.TokenStore. It deletes the earliest
// expiries first.
func (s *Store) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	at, ns := splitTime(before)
	var deleted int64
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		tag, err := conn.Exec(ctx, s.sql.expireRoots, at, ns, limit)
		deleted = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: expire roots: %w", err)
	}
	return int(deleted), nil
}

// scanToken reads one row of tokenColumns.
func scanToken(row pgx.Row) (baton.Token, error) {
	var r tokenRow
	if err := row.Scan(r.fields()...); err != nil {
		return baton.Token{}, err
	}
	return r.token()
}

// tokenRow receives the tokens table's columns (tokenColumns). Every field
// is nullable so that an outer join that found no token scans too (id nil).
type tokenRow struct {
	id, conv, cause, digest []byte
	destination, typ        *string
	createdAt, expiresAt    *time.Time
	createdNs, expiresNs    *int16
}

func (r *tokenRow) fields() []any {
	return []any{&r.id, &r.conv, &r.cause, &r.destination, &r.typ, &r.digest, &r.createdAt, &r.createdNs, &r.expiresAt, &r.expiresNs}
}

func (r *tokenRow) token() (baton.Token, error) {
	var t baton.Token
	if len(r.id) != len(t.ID) || len(r.conv) != len(t.Conversation) || (r.cause != nil && len(r.cause) != len(t.Causation)) ||
		len(r.digest) != len(t.Digest) || r.destination == nil || r.typ == nil || r.createdAt == nil || r.createdNs == nil {
		return baton.Token{}, fmt.Errorf("postgres: malformed token row (id of %d bytes)", len(r.id))
	}
	copy(t.ID[:], r.id)
	copy(t.Conversation[:], r.conv)
	copy(t.Causation[:], r.cause)
	copy(t.Digest[:], r.digest)
	t.Destination, t.Type = *r.destination, *r.typ
	t.CreatedAt = joinTime(*r.createdAt, *r.createdNs)
	if r.expiresAt != nil && r.expiresNs != nil {
		t.ExpiresAt = joinTime(*r.expiresAt, *r.expiresNs)
	}
	return t, nil
}

// tokenArrays returns the column arrays, in tokenColumns order, that
// statements turn into token rows with zip.
func tokenArrays(tokens []baton.Token) []any {
	n := len(tokens)
	var (
		ids, convs, causes, digests = make([][]byte, n), make([][]byte, n), make([][]byte, n), make([][]byte, n)
		dests, types                = make([]string, n), make([]string, n)
		createdAt, expiresAt        = make([]time.Time, n), make([]pgtype.Timestamptz, n)
		createdNs, expiresNs        = make([]int16, n), make([]pgtype.Int2, n)
	)
	for i := range tokens {
		t := &tokens[i]
		ids[i], convs[i], causes[i], digests[i] = t.ID[:], t.Conversation[:], optionalID(t.Causation), t.Digest[:]
		dests[i], types[i] = t.Destination, t.Type
		createdAt[i], createdNs[i] = splitTime(t.CreatedAt)
		at, ns := splitOptionalTime(t.ExpiresAt)
		if at != nil {
			expiresAt[i] = pgtype.Timestamptz{Time: *at, Valid: true}
			expiresNs[i] = pgtype.Int2{Int16: *ns, Valid: true}
		}
	}
	return []any{ids, convs, causes, dests, types, digests, createdAt, createdNs, expiresAt, expiresNs}
}

// optionalID stores the zero id (a root token's causation) as NULL.
func optionalID(id baton.TokenID) []byte {
	if id.IsZero() {
		return nil
	}
	return id[:]
}

// splitTime splits t into the microsecond that PostgreSQL stores and the
// remaining nanoseconds, so times round-trip exactly and compare in
// (at, ns) order exactly as time.Time does.
func splitTime(t time.Time) (time.Time, int16) {
	ns := t.Nanosecond() % 1000
	return t.Add(-time.Duration(ns)), int16(ns)
}

// splitOptionalTime stores the zero time (no expiry) as NULL.
func splitOptionalTime(t time.Time) (*time.Time, *int16) {
	if t.IsZero() {
		return nil, nil
	}
	at, ns := splitTime(t)
	return &at, &ns
}

// joinTime undoes splitTime. Times come back in UTC.
func joinTime(at time.Time, ns int16) time.Time {
	return at.Add(time.Duration(ns)).UTC()
}

// checkTokenText refuses names that PostgreSQL text cannot hold (invalid
// UTF-8, NUL), which the baton package's validation lets through.
func checkTokenText(tokens ...baton.Token) error {
	for _, t := range tokens {
		if !storableText(t.Destination) || !storableText(t.Type) {
			return fmt.Errorf("%w: token %s: destination and type must be valid UTF-8 without NUL to be stored in PostgreSQL", store.ErrInvalid, t.ID)
		}
	}
	return nil
}

func storableText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }
