package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// maxIssueGroup bounds the roots that one INSERT writes.
const maxIssueGroup = 256

// errIDTaken says a root was not written because its id exists.
var errIDTaken = errors.New("postgres: root id taken")

// issueGroup gathers the roots that callers issue at the same time into
// shared writes (group commit): a caller that finds no write in progress
// writes its root at once; roots issued while a write is in progress wait
// for it and then go together in the next one. A root costs a commit, so
// requests that arrive together at an edge share one.
type issueGroup struct {
	mu      sync.Mutex
	pending []*issueCall
	writing bool
	// beforeWrite, if set (by tests), runs before each write with the
	// number of roots it takes.
	beforeWrite func(roots int)
}

// issueCall is one root waiting for its write. done receives nil when the
// root was written, errIDTaken when its id was taken (nothing was written
// for it), or the write's error.
type issueCall struct {
	ctx  context.Context
	tok  baton.Token
	done chan error
}

// Issue implements store.TokenStore: the root gets a fresh id from
// crypto/rand, and is written together with the roots that other callers
// issue at the same time (issueGroup). An id that is taken (never seen in
// practice with 128 random bits) is replaced and the root written again.
func (s *Store) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	return store.IssueBy(ctx, root, rand.Reader, s.CreateRoot)
}

// CreateRoot implements store.RootCreator, in the group writes of Issue.
func (s *Store) CreateRoot(ctx context.Context, root baton.Token) (baton.Token, error) {
	if err := store.ValidateRoot(root); err != nil {
		return baton.Token{}, err
	}
	if err := checkTokenText(root); err != nil {
		return baton.Token{}, err
	}
	if s.closed.Load() {
		return baton.Token{}, store.ErrClosed
	}
	err := s.issueInGroup(ctx, root)
	if errors.Is(err, errIDTaken) {
		return baton.Token{}, fmt.Errorf("%w: token %s", store.ErrExists, root.ID)
	}
	if err != nil {
		return baton.Token{}, fmt.Errorf("postgres: issue root: %w", err)
	}
	return root, nil
}

// issueInGroup queues tok and waits until a write took it. The caller
// that finds no write in progress does the writing, for as long as roots
// keep arriving.
func (s *Store) issueInGroup(ctx context.Context, tok baton.Token) error {
	call := &issueCall{ctx: ctx, tok: tok, done: make(chan error, 1)}
	g := &s.issues
	g.mu.Lock()
	g.pending = append(g.pending, call)
	if !g.writing {
		g.writing = true
		g.mu.Unlock()
		// The writer writes for others too, so it does not stop when its
		// own caller gives up; it returns once nothing is pending.
		go s.writeIssues()
	} else {
		g.mu.Unlock()
	}
	select {
	case err := <-call.done:
		return err
	case <-ctx.Done():
		g.mu.Lock()
		defer g.mu.Unlock()
		if i := slices.Index(g.pending, call); i >= 0 {
			g.pending = slices.Delete(g.pending, i, i+1)
			return fmt.Errorf("%w: %w", store.ErrNotApplied, ctx.Err())
		}
		// Taken by a write in progress: it may or may not commit.
		return fmt.Errorf("outcome unknown: %w", ctx.Err())
	}
}

// writeIssues writes the pending roots in groups until none is left.
func (s *Store) writeIssues() {
	g := &s.issues
	for {
		g.mu.Lock()
		n := min(len(g.pending), maxIssueGroup)
		if n == 0 {
			g.writing = false
			g.mu.Unlock()
			return
		}
		group := slices.Clone(g.pending[:n])
		g.pending = slices.Delete(g.pending, 0, n)
		g.mu.Unlock()
		if g.beforeWrite != nil {
			g.beforeWrite(len(group))
		}
		s.writeIssueGroup(group)
	}
}

// writeIssueGroup writes group in one statement, which inserts every root
// whose id is free and reports the ids it inserted.
func (s *Store) writeIssueGroup(group []*issueCall) {
	ctx, cancel := groupContext(group)
	defer cancel()
	tokens := make([]baton.Token, len(group))
	for i, c := range group {
		tokens[i] = c.tok
	}
	written := make(map[baton.TokenID]bool, len(group))
	err := s.withConn(ctx, func(conn *pgxpool.Conn) error {
		rows, err := conn.Query(ctx, s.sql.issue, tokenArrays(tokens)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var raw []byte
			if err := rows.Scan(&raw); err != nil {
				return err
			}
			var id baton.TokenID
			copy(id[:], raw)
			written[id] = true
		}
		return rows.Err()
	})
	for _, c := range group {
		switch {
		case err != nil:
			c.done <- err
		case written[c.tok.ID]:
			c.done <- nil
		default:
			c.done <- errIDTaken
		}
	}
}

// groupContext is the context of a shared write: the values of the first
// caller's (tracing), none of the callers' cancellation (one caller giving
// up must not fail the others), and the latest of their deadlines, if
// every caller has one.
func groupContext(group []*issueCall) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, c := range group {
		d, ok := c.ctx.Deadline()
		if !ok {
			return context.WithoutCancel(group[0].ctx), func() {}
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.WithoutCancel(group[0].ctx), latest)
}
