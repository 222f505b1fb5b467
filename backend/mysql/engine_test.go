package mysql

import (
	"context"
	"database/sql"
	"sync"
	"testing"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/store"
)

// TestEngineWritesTheServiceTablesInTheStepsTransaction: the engine over
// a MySQL store runs a transactional activity whose handler inserts a
// row of the service's own table in the step's *sql.Tx; a duplicate of
// the signal writes nothing more, and a conversation started in the
// caller's transaction starts only if that transaction commits.
func TestEngineWritesTheServiceTablesInTheStepsTransaction(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newStore(t)
	charges := table(s.Prefix(), "charges")
	if _, err := s.DB().ExecContext(ctx, "CREATE TABLE "+charges+" (token BINARY(16) PRIMARY KEY, amount INT NOT NULL) ENGINE = InnoDB"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = s.DB().ExecContext(context.Background(), "DROP TABLE IF EXISTS "+charges) })
	e, err := engine.New(engine.Config{Destination: "billing", Tokens: s, Entities: s, Dispatch: engine.Routes{}})
	if err != nil {
		t.Fatal(err)
	}
	err = engine.RegisterTx(e, engine.TxActivity[struct{}, *sql.Tx]{Type: "charge",
		Entity: func(baton.Signal) (string, error) { return "account-ada", nil },
		Handle: func(ctx context.Context, tx *sql.Tx, sig baton.Signal, _ *struct{}) (engine.Effects, error) {
			_, err := tx.ExecContext(ctx, "INSERT INTO "+charges+" (token, amount) VALUES (?, 12)", sig.ID[:])
			return engine.Effects{}, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	count := func() int {
		var n int
		if err := s.DB().QueryRowContext(ctx, "SELECT count(*) FROM "+charges).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	sig, err := e.IssueRoot(ctx, baton.Emit{Destination: "billing", Type: "charge"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second is a duplicate
		if _, err := e.Process(ctx, sig); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(); n != 1 {
		t.Fatalf("%d charge rows after a signal and its duplicate, want 1", n)
	}

	// Started in a transaction that rolls back: nothing starts.
	tx, err := s.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	start, err := engine.StartTx(ctx, e, tx, baton.Emit{Destination: "billing", Type: "charge"})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadStart(ctx, start.ID); err == nil {
		t.Errorf("a start of a rolled-back transaction was recorded")
	}
	if toks, err := s.ListByDestination(ctx, "billing", store.Page{}); err != nil || len(toks) != 0 {
		t.Errorf("live tokens after a rolled-back start: %d, %v", len(toks), err)
	}
}

// countingPublisher counts the signals an engine sends.
type countingPublisher struct {
	mu   sync.Mutex
	sent int
}

func (p *countingPublisher) Publish(context.Context, baton.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent++
	return nil
}

// TestLaunchSendsACommittedStartOnce: StartTx hands the caller a claimed
// start (the tokens are here too); Launch must still read it, so that a
// start whose transaction rolled back sends nothing, and a second launch
// after the first finished sends nothing more.
func TestLaunchSendsACommittedStartOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newStore(t)
	pub := &countingPublisher{}
	e, err := engine.New(engine.Config{Destination: "shop", Tokens: s, Entities: s, Dispatch: pub})
	if err != nil {
		t.Fatal(err)
	}
	start := func(commit bool) store.Start {
		tx, err := s.DB().BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		st, err := engine.StartTx(ctx, e, tx, baton.Emit{Destination: "billing", Type: "charge"})
		if err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if sig, err := e.Launch(ctx, start(false)); err != nil || !sig.ID.IsZero() {
		t.Errorf("Launch of a rolled-back start = %v, %v; want the zero signal", sig.ID, err)
	}
	committed := start(true)
	for i := range 2 {
		sig, err := e.Launch(ctx, committed)
		if err != nil || sig.ID.IsZero() != (i == 1) {
			t.Errorf("Launch %d = %v, %v; want the root signal once, then the zero signal", i+1, sig.ID, err)
		}
	}
	if pub.sent != 1 || e.Stats().StartsLaunched != 1 {
		t.Errorf("%d signals sent, %d starts launched; want 1 and 1", pub.sent, e.Stats().StartsLaunched)
	}
}
