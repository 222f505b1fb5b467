package mysql

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// TestCommitTxNoticesALostTransaction: MySQL rolls back the whole
// transaction on a deadlock and leaves the session in autocommit, unlike
// PostgreSQL, whose aborted transaction refuses every later statement. An
// activity that logs and ignores the error of one of its statements (a
// best-effort audit insert, say) then returns as if all went well: the
// store's writes that follow would each commit on their own, the token
// consumed and the entity committed while the activity's earlier writes
// are gone, and CommitTx would report the step applied. It must fail
// instead, and leave the token live.
func TestCommitTxNoticesALostTransaction(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, fused := range []bool{true, false} {
		h := txHarness(fused)
		s := h.New(t).(*Store)
		tok, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		child := baton.Token{ID: baton.NewTokenID(), Conversation: tok.Conversation, Causation: tok.ID,
			Destination: "shipping", Type: "ship", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}
		step := store.TxStep{Key: "account", Token: tok.ID, Fused: fused}
		_, consumed, err := s.CommitTx(ctx, step, func(ctx context.Context, tx *sql.Tx) (store.Entity, []baton.Token, error) {
			if err := h.Put(ctx, s, tx, "charge", []byte("12")); err != nil {
				return store.Entity{}, nil, err
			}
			// What a deadlock leaves: the transaction rolled back, the
			// session in autocommit; the activity ignores the error.
			if _, err := tx.ExecContext(ctx, "ROLLBACK"); err != nil {
				return store.Entity{}, nil, err
			}
			e := store.Entity{Key: step.Key, Outbox: []store.OutboxEntry{{Token: tok.ID, CreatedAt: time.Now(), Signals: []baton.Signal{{ID: child.ID,
				Conversation: child.Conversation, Causation: child.Causation, Destination: child.Destination, Type: child.Type}}}}}
			return e, []baton.Token{child}, nil
		})
		_, wrote, gerr := h.Get(ctx, s, "charge")
		if gerr != nil {
			t.Fatal(gerr)
		}
		e, lerr := s.Load(ctx, "account")
		if lerr != nil {
			t.Fatal(lerr)
		}
		_, terr := s.Get(ctx, tok.ID)
		if err == nil {
			t.Errorf("fused %v: CommitTx over a transaction the server rolled back = applied (consumed %v); the activity's row written: %v, entity at version %d, token live: %v",
				fused, consumed, wrote, e.Version, terr == nil)
			continue
		}
		if wrote || e.Version != 0 || errors.Is(terr, store.ErrNotFound) {
			t.Errorf("fused %v: CommitTx = %v, but the activity's row written: %v, entity at version %d, token live: %v", fused, err, wrote, e.Version, terr == nil)
		}
	}
}
