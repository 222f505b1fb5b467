package mysql

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// TestConcurrentCommitBatches races batches of compare-and-sets over
// overlapping keys, named in random orders, some of them new, under
// REPEATABLE READ and READ COMMITTED: no call fails (deadlocks are
// retried), and every entity ends at the version that counts the commits
// reported applied to it, with the state of the last: none lost, none
// counted twice.
func TestConcurrentCommitBatches(t *testing.T) {
	t.Parallel()
	for _, isolation := range []string{"REPEATABLE-READ", "READ-COMMITTED"} {
		t.Run(isolation, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			base := newStore(t)
			s, err := Open(ctx, withParams(dsn(t), "tx_isolation=%27"+isolation+"%27"), Config{Prefix: base.Prefix(), SkipMigrate: true})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			const workers, rounds, keys = 6, 25, 12
			var mu sync.Mutex
			known := map[string]uint64{}              // the last version seen per key
			applied := map[string]map[uint64]string{} // key: version written: state
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(w), 7))
					for n := range rounds {
						batch := make([]store.Entity, 0, 6)
						mu.Lock()
						for _, k := range rng.Perm(keys)[:3+rng.IntN(4)] {
							key := fmt.Sprintf("k%02d", k)
							if k >= keys-2 {
								key = fmt.Sprintf("new-%d-%d", n, k) // created by whoever comes first
							}
							var outbox []store.OutboxEntry
							if rng.IntN(2) == 0 {
								outbox = []store.OutboxEntry{{Token: baton.NewTokenID(), CreatedAt: time.Now()}}
							}
							batch = append(batch, store.Entity{Key: key, Version: known[key], State: fmt.Appendf(nil, "w%d-r%d", w, n), Outbox: outbox})
						}
						mu.Unlock()
						results, err := s.CommitBatch(ctx, batch)
						if err != nil || len(results) != len(batch) {
							t.Errorf("CommitBatch = %v, %v", results, err)
							return
						}
						mu.Lock()
						for i, e := range batch {
							switch {
							case results[i] == nil:
								if applied[e.Key] == nil {
									applied[e.Key] = map[uint64]string{}
								}
								if _, twice := applied[e.Key][e.Version+1]; twice {
									t.Errorf("two commits of %q at version %d applied", e.Key, e.Version)
								}
								applied[e.Key][e.Version+1] = string(e.State)
								known[e.Key] = max(known[e.Key], e.Version+1)
							case errors.Is(results[i], store.ErrConflict):
								// Learn the version, as a reload would.
								if cur, err := s.Load(ctx, e.Key); err == nil {
									known[e.Key] = max(known[e.Key], cur.Version)
								}
							default:
								t.Errorf("CommitBatch result for %q = %v", e.Key, results[i])
							}
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			commits := 0
			for key, versions := range applied {
				commits += len(versions)
				e, err := s.Load(ctx, key)
				if err != nil || e.Version != uint64(len(versions)) || string(e.State) != versions[e.Version] {
					t.Errorf("%q at version %d with state %q (%v); %d commits applied, the last %q", key, e.Version, e.State, err, len(versions), versions[uint64(len(versions))])
				}
			}
			t.Logf("%d commits applied, %d transactions retried", commits, s.retried.Load())
		})
	}
}

// TestEntityStoreUnderReadCommitted runs the entity store's conformance
// checks over sessions at READ COMMITTED, where locking reads take no gap
// locks and a new key can be taken between a batch's lock and its insert.
func TestEntityStoreUnderReadCommitted(t *testing.T) {
	t.Parallel()
	storetest.RunEntityStore(t, storetest.EntityHarness{
		New: func(t *testing.T) store.EntityStore {
			base := newStore(t)
			s, err := Open(t.Context(), withParams(dsn(t), "tx_isolation=%27READ-COMMITTED%27"), Config{Prefix: base.Prefix(), SkipMigrate: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	})
}

// TestCommitBatchOfLargeStates: a batch whose states together pass the
// server's max_allowed_packet, each of them well within it, commits: the
// batched statements are split by size.
func TestCommitBatchOfLargeStates(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newStore(t)
	var limit int
	if err := s.DB().QueryRowContext(ctx, "SELECT @@max_allowed_packet").Scan(&limit); err != nil {
		t.Fatal(err)
	}
	state := bytes.Repeat([]byte("s"), limit/3)
	batch := []store.Entity{{Key: "a", State: state}, {Key: "b", State: state}, {Key: "c", State: state}, {Key: "d", State: state}}
	for round := range 2 { // inserts, then updates
		results, err := s.CommitBatch(ctx, batch)
		if err != nil || errors.Join(results...) != nil {
			t.Fatalf("round %d: CommitBatch of %d states of %d bytes (max_allowed_packet %d) = %v, %v", round, len(batch), len(state), limit, results, err)
		}
		for i := range batch {
			batch[i].Version++
		}
	}
}

// TestCommitTransitionsOfManyChildren: a batch of transitions whose
// children together pass the server's max_allowed_packet (each
// transition within the limits of one) commits: the children's inserts
// are split by size.
func TestCommitTransitionsOfManyChildren(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newStore(t)
	var limit int
	if err := s.DB().QueryRowContext(ctx, "SELECT @@max_allowed_packet").Scan(&limit); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("d", 200)
	perChild := 16*3 + 32 + 2*len(long) + 4*20 // ids, digest, names, times as text
	var transitions []store.Transition
	for children := 0; children*perChild <= limit; {
		root, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		create := make([]baton.Token, store.MaxTokensPerTransition)
		for i := range create {
			create[i] = baton.Token{ID: baton.NewTokenID(), Conversation: root.Conversation, Causation: root.ID,
				Destination: long, Type: long, Digest: baton.DigestOf(nil), CreatedAt: time.Now()}
		}
		children += len(create)
		transitions = append(transitions, store.Transition{Entity: store.Entity{Key: fmt.Sprintf("k%d", len(transitions)),
			Outbox: []store.OutboxEntry{{Token: root.ID, CreatedAt: time.Now()}}}, Token: root.ID, Create: create})
	}
	results, err := s.CommitTransitions(ctx, transitions)
	if err != nil || errors.Join(results...) != nil {
		t.Fatalf("CommitTransitions of %d transitions of %d children of about %d bytes (max_allowed_packet %d) = %v",
			len(transitions), store.MaxTokensPerTransition, perChild, limit, err)
	}
	last := transitions[len(transitions)-1].Create
	if _, err := s.Get(ctx, last[len(last)-1].ID); err != nil {
		t.Errorf("the last child: %v", err)
	}
}
