package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// modes runs a test with group commit on and off.
var modes = []struct {
	name string
	cfg  Config
}{
	{"GroupCommit", Config{}},
	{"NoGroupCommit", Config{NoGroupCommit: true}},
}

// TestConformance runs the store suites over a fresh file per check, with
// group commit on and off; Reopen closes the file and opens it again.
func TestConformance(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			t.Run("TokenStore", func(t *testing.T) {
				t.Parallel()
				storetest.RunTokenStore(t, storetest.TokenHarness{
					New:    func(t *testing.T) store.TokenStore { return openTemp(t, m.cfg) },
					Reopen: func(t *testing.T, s store.TokenStore) store.TokenStore { return reopen(t, s.(*Store)) },
				})
			})
			t.Run("EntityStore", func(t *testing.T) {
				t.Parallel()
				storetest.RunEntityStore(t, storetest.EntityHarness{
					New:    func(t *testing.T) store.EntityStore { return openTemp(t, m.cfg) },
					Reopen: func(t *testing.T, s store.EntityStore) store.EntityStore { return reopen(t, s.(*Store)) },
				})
			})
		})
	}
}

func openTemp(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "baton.db"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// reopen closes s and opens its file again with the same config.
func reopen(t testing.TB, s *Store) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(s.Path(), s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	return s2
}

func newID(t testing.TB) baton.TokenID {
	t.Helper()
	return baton.NewTokenID()
}

// rootTemplate returns tk as Issue takes it: without an id.
func rootTemplate(tk baton.Token) baton.Token {
	tk.ID = baton.TokenID{}
	return tk
}

// issue issues tk as a root, which must succeed, and returns it as the
// store keeps it, under the id the store chose.
func issue(ctx context.Context, t testing.TB, s *Store, tk baton.Token) baton.Token {
	t.Helper()
	got, err := s.Issue(ctx, rootTemplate(tk))
	if err != nil {
		t.Fatalf("Issue = %v", err)
	}
	return got
}

// idFeed is a source of ids that hands out the ids pushed into it.
type idFeed struct{ pending []byte }

func (f *idFeed) push(id baton.TokenID) { f.pending = append(f.pending, id[:]...) }

func (f *idFeed) Read(p []byte) (int, error) {
	if len(f.pending) < len(p) {
		return 0, errors.New("idFeed: no id pushed")
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}

func token(t testing.TB, conversation, causation baton.TokenID, destination string) baton.Token {
	return baton.Token{
		ID:           newID(t),
		Conversation: conversation,
		Causation:    causation,
		Destination:  destination,
		Type:         "test.step",
		Digest:       baton.DigestOf([]byte(destination)),
		CreatedAt:    time.Now(),
	}
}

// sameToken compares tokens, times by instant.
func sameToken(a, b baton.Token) bool {
	return a.ID == b.ID && a.Conversation == b.Conversation && a.Causation == b.Causation &&
		a.Destination == b.Destination && a.Type == b.Type && a.Digest == b.Digest &&
		a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}

func TestTokens(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := openTemp(t, m.cfg)
			conv := newID(t)
			root := token(t, conv, baton.TokenID{}, "shop")
			root.ExpiresAt = time.Now().Add(time.Hour)
			root = issue(ctx, t, s, root)
			if _, err := s.Issue(ctx, root); !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("Issue naming the id of a live root: %v, want ErrInvalid", err)
			}
			got, err := s.Get(ctx, root.ID)
			if err != nil || !sameToken(got, root) {
				t.Fatalf("Get = %+v, %v; want %+v", got, err, root)
			}
			if got.CreatedAt.Location() != time.UTC {
				t.Errorf("CreatedAt location %v, want UTC", got.CreatedAt.Location())
			}

			a, b := token(t, conv, root.ID, "billing"), token(t, conv, root.ID, "warehouse")
			if ok, err := s.Transition(ctx, root.ID, []baton.Token{a, b}); !ok || err != nil {
				t.Fatalf("Transition = %v, %v; want true", ok, err)
			}
			if ok, err := s.Transition(ctx, root.ID, []baton.Token{token(t, conv, root.ID, "x")}); ok || err != nil {
				t.Fatalf("Transition of a consumed token = %v, %v; want false, nil", ok, err)
			}
			if _, err := s.Get(ctx, root.ID); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Get consumed: %v, want ErrNotFound", err)
			}

			// A child that exists refuses the whole transition.
			c := token(t, conv, a.ID, "shop")
			if ok, err := s.Transition(ctx, a.ID, []baton.Token{c, b}); ok || !errors.Is(err, store.ErrExists) {
				t.Fatalf("Transition with an existing child = %v, %v; want ErrExists", ok, err)
			}
			if _, err := s.Get(ctx, a.ID); err != nil {
				t.Fatalf("parent after refused transition: %v", err)
			}
			if _, err := s.Get(ctx, c.ID); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("new child after refused transition: %v, want ErrNotFound", err)
			}
			if _, err := s.Transition(ctx, a.ID, []baton.Token{{ID: newID(t)}}); !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("invalid child: %v, want ErrInvalid", err)
			}

			s = reopen(t, s)
			list, err := s.ListByConversation(ctx, conv, store.Page{})
			if err != nil {
				t.Fatal(err)
			}
			want := []baton.Token{a, b}
			slices.SortFunc(want, func(x, y baton.Token) int { return bytes.Compare(x.ID[:], y.ID[:]) })
			if len(list) != 2 || !sameToken(list[0], want[0]) || !sameToken(list[1], want[1]) {
				t.Fatalf("ListByConversation after reopen = %+v, want %+v", list, want)
			}
			if list, err := s.ListByDestination(ctx, "billing", store.Page{}); err != nil || len(list) != 1 || list[0].ID != a.ID {
				t.Fatalf("ListByDestination(billing) = %+v, %v", list, err)
			}
		})
	}
}

func TestListPaging(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTemp(t, Config{})
	conv, other := newID(t), newID(t)
	var ids []baton.TokenID
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		for i := range 250 {
			tk := token(t, conv, baton.TokenID{}, "dest")
			ids = append(ids, tk.ID)
			if err := b.putToken(tk); err != nil {
				return err
			}
			// Neighbours that a prefix scan must not return.
			for _, d := range []string{"des", "dest2", fmt.Sprint("d", i)} {
				if err := b.putToken(token(t, other, baton.TokenID{}, d)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ids, func(a, b baton.TokenID) int { return bytes.Compare(a[:], b[:]) })
	for name, list := range map[string]func(store.Page) ([]baton.Token, error){
		"conversation": func(p store.Page) ([]baton.Token, error) { return s.ListByConversation(ctx, conv, p) },
		"destination":  func(p store.Page) ([]baton.Token, error) { return s.ListByDestination(ctx, "dest", p) },
	} {
		var got []baton.TokenID
		page := store.Page{Limit: 7}
		for {
			tokens, err := list(page)
			if err != nil {
				t.Fatal(err)
			}
			if len(tokens) > 7 {
				t.Fatalf("%s: page of %d, limit 7", name, len(tokens))
			}
			if len(tokens) == 0 {
				break
			}
			for _, tk := range tokens {
				got = append(got, tk.ID)
			}
			page.After = tokens[len(tokens)-1].ID
		}
		if !slices.Equal(got, ids) {
			t.Errorf("%s: paged listing has %d ids, want the %d in order", name, len(got), len(ids))
		}
		if all, _ := list(store.Page{}); len(all) != store.DefaultPageLimit {
			t.Errorf("%s: default page has %d tokens, want %d", name, len(all), store.DefaultPageLimit)
		}
	}
}

func TestExpireRoots(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTemp(t, Config{})
	conv := newID(t)
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var roots []baton.Token
	for i := range 5 {
		r := token(t, conv, baton.TokenID{}, "shop")
		r.ExpiresAt = base.Add(time.Duration(i) * time.Minute)
		roots = append(roots, issue(ctx, t, s, r))
	}
	forever := issue(ctx, t, s, token(t, conv, baton.TokenID{}, "shop"))
	// Before base+2m: the roots expiring at base and base+1m, one at a time.
	for _, want := range []int{1, 1, 0} {
		if n, err := s.ExpireRoots(ctx, base.Add(2*time.Minute), 1); n != want || err != nil {
			t.Fatalf("ExpireRoots = %d, %v; want %d", n, err, want)
		}
	}
	if _, err := s.Get(ctx, roots[2].ID); err != nil {
		t.Fatalf("root expiring at the bound was deleted: %v", err)
	}
	if n, err := s.ExpireRoots(ctx, base.Add(time.Hour), 100); n != 3 || err != nil {
		t.Fatalf("ExpireRoots = %d, %v; want 3", n, err)
	}
	if _, err := s.Get(ctx, forever.ID); err != nil {
		t.Fatalf("root without expiry was deleted: %v", err)
	}
	if list, _ := s.ListByConversation(ctx, conv, store.Page{}); len(list) != 1 {
		t.Fatalf("conversation lists %d tokens after expiry, want 1", len(list))
	}
	checkIndexes(t, s)
}

func TestEntities(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := openTemp(t, m.cfg)
			e, err := s.Load(ctx, "order/1")
			if err != nil || !reflect.DeepEqual(e, store.Entity{Key: "order/1"}) {
				t.Fatalf("Load missing = %+v, %v", e, err)
			}
			created := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)
			e.State = []byte(`{"paid":true}`)
			e.Outbox = []store.OutboxEntry{{
				Token:     newID(t),
				CreatedAt: created,
				Reply:     []byte("ok"),
				Signals: []baton.Signal{{
					ID: newID(t), Conversation: newID(t), Causation: newID(t),
					Destination: "billing", Type: "charge", Payload: []byte{1, 2, 3},
					Trace: baton.TraceContext{Parent: "00-abc-def-01", State: "k=v"},
				}},
			}}
			v, err := s.Commit(ctx, e)
			if v != 1 || err != nil {
				t.Fatalf("Commit = %d, %v; want 1", v, err)
			}
			if _, err := s.Commit(ctx, e); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("stale Commit: %v, want ErrConflict", err)
			}
			if _, err := s.Commit(ctx, store.Entity{}); !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("Commit without key: %v, want ErrInvalid", err)
			}
			s = reopen(t, s)
			got, err := s.Load(ctx, "order/1")
			want := e
			want.Version = 1
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("Load after reopen = %+v, %v\nwant %+v", got, err, want)
			}
			if keys, err := s.Stale(ctx, created.Add(time.Nanosecond), 10); err != nil || !slices.Equal(keys, []string{"order/1"}) {
				t.Fatalf("Stale = %v, %v", keys, err)
			}
			if keys, err := s.Stale(ctx, created, 10); err != nil || len(keys) != 0 {
				t.Fatalf("Stale at the entry's own time = %v, %v; want none", keys, err)
			}
			got = got.WithoutEntry(e.Outbox[0].Token)
			if v, err := s.Commit(ctx, got); v != 2 || err != nil {
				t.Fatalf("Commit removing the entry = %d, %v", v, err)
			}
			if keys, err := s.Stale(ctx, created.Add(time.Hour), 10); err != nil || len(keys) != 0 {
				t.Fatalf("Stale after removal = %v, %v; want none", keys, err)
			}
			checkIndexes(t, s)
		})
	}
}

func TestCommitTransition(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := openTemp(t, m.cfg)
			conv := newID(t)
			root := issue(ctx, t, s, token(t, conv, baton.TokenID{}, "shop"))
			entry := func(tok baton.TokenID, children ...baton.Token) store.OutboxEntry {
				o := store.OutboxEntry{Token: tok, CreatedAt: time.Now()}
				for _, c := range children {
					o.Signals = append(o.Signals, baton.Signal{ID: c.ID, Conversation: c.Conversation, Causation: c.Causation, Destination: c.Destination, Type: c.Type})
				}
				return o
			}
			a, b := token(t, conv, root.ID, "billing"), token(t, conv, root.ID, "warehouse")
			e := store.Entity{Key: "order/1", State: []byte("placed"), Outbox: []store.OutboxEntry{entry(root.ID, a, b)}}

			// Conflict: nothing consumed, nothing committed.
			conflicting := e
			conflicting.Version = 3
			if _, ok, err := s.CommitTransition(ctx, conflicting, root.ID, []baton.Token{a, b}); ok || !errors.Is(err, store.ErrConflict) {
				t.Fatalf("CommitTransition with a stale version = %v, %v; want ErrConflict", ok, err)
			}
			if _, err := s.Get(ctx, root.ID); err != nil {
				t.Fatalf("token consumed by a conflicting CommitTransition: %v", err)
			}
			if _, err := s.Get(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("child created by a conflicting CommitTransition: %v", err)
			}

			// A child that exists: nothing applied.
			clash := issue(ctx, t, s, token(t, conv, baton.TokenID{}, "shop"))
			if _, ok, err := s.CommitTransition(ctx, e, root.ID, []baton.Token{a, clash}); ok || !errors.Is(err, store.ErrExists) {
				t.Fatalf("CommitTransition with an existing child = %v, %v; want ErrExists", ok, err)
			}
			if got, _ := s.Load(ctx, "order/1"); got.Version != 0 {
				t.Fatalf("entity committed by a refused CommitTransition: version %d", got.Version)
			}

			// Applied.
			v, ok, err := s.CommitTransition(ctx, e, root.ID, []baton.Token{a, b})
			if v != 1 || !ok || err != nil {
				t.Fatalf("CommitTransition = %d, %v, %v; want 1, true", v, ok, err)
			}
			if _, err := s.Get(ctx, root.ID); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("token after CommitTransition: %v, want ErrNotFound", err)
			}
			for _, c := range []baton.Token{a, b} {
				if _, err := s.Get(ctx, c.ID); err != nil {
					t.Fatalf("child after CommitTransition: %v", err)
				}
			}
			if got, _ := s.Load(ctx, "order/1"); got.Version != 1 || string(got.State) != "placed" || len(got.Outbox) != 1 {
				t.Fatalf("entity after CommitTransition = %+v", got)
			}

			// Duplicate: the token is gone, nothing is committed, whatever
			// the version.
			dup := e
			dup.Version = 1
			dup.State = []byte("placed twice")
			for _, version := range []uint64{1, 7} {
				dup.Version = version
				c := token(t, conv, root.ID, "billing")
				if v, ok, err := s.CommitTransition(ctx, dup, root.ID, []baton.Token{c}); v != 0 || ok || err != nil {
					t.Fatalf("duplicate CommitTransition = %d, %v, %v; want 0, false, nil", v, ok, err)
				}
				if _, err := s.Get(ctx, c.ID); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("child created by a duplicate: %v", err)
				}
			}
			s = reopen(t, s)
			if got, _ := s.Load(ctx, "order/1"); got.Version != 1 || string(got.State) != "placed" {
				t.Fatalf("entity after duplicates and reopen = %+v", got)
			}
			checkIndexes(t, s)
		})
	}
}

// TestGroupCommitIsolatesConflicts runs many concurrent commits of a few
// entities: in every group, the losers of a compare-and-set get
// ErrConflict and the winners commit, and exactly one commit wins each
// version.
func TestGroupCommitIsolatesConflicts(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := openTemp(t, m.cfg)
			const workers, keys, rounds = 16, 3, 10
			var mu sync.Mutex
			wins := make(map[string]map[uint64]int)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					key := fmt.Sprint("k", w%keys)
					for range rounds {
						e, err := s.Load(ctx, key)
						if err != nil {
							t.Error(err)
							return
						}
						e.State = append(e.State, byte(w))
						v, err := s.Commit(ctx, e)
						switch {
						case errors.Is(err, store.ErrConflict):
						case err != nil:
							t.Error(err)
							return
						default:
							mu.Lock()
							if wins[key] == nil {
								wins[key] = make(map[uint64]int)
							}
							wins[key][v]++
							mu.Unlock()
						}
					}
				})
			}
			wg.Wait()
			for key, versions := range wins {
				e, err := s.Load(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				if uint64(len(versions)) != e.Version || len(e.State) != int(e.Version) {
					t.Errorf("%s: %d winning versions, stored version %d with %d state bytes", key, len(versions), e.Version, len(e.State))
				}
				for v, n := range versions {
					if n != 1 {
						t.Errorf("%s: version %d won %d times", key, v, n)
					}
				}
			}
		})
	}
}

func TestSecondOpenFailsWhileLocked(t *testing.T) {
	t.Parallel()
	s := openTemp(t, Config{})
	start := time.Now()
	_, err := Open(s.Path(), Config{OpenTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("second Open took %v", waited) // hang guard, not a timing check
	}
	t.Log(err)
	// After Close the file opens again.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(s.Path(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
}

func TestClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTemp(t, Config{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	conv := newID(t)
	tk := token(t, conv, baton.TokenID{}, "shop")
	checks := map[string]error{}
	_, checks["Issue"] = s.Issue(ctx, rootTemplate(tk))
	_, checks["Transition"] = s.Transition(ctx, tk.ID, nil)
	_, checks["Get"] = s.Get(ctx, tk.ID)
	_, checks["ListByConversation"] = s.ListByConversation(ctx, conv, store.Page{})
	_, checks["ListByDestination"] = s.ListByDestination(ctx, "shop", store.Page{})
	_, checks["ExpireRoots"] = s.ExpireRoots(ctx, time.Now(), 10)
	_, checks["Load"] = s.Load(ctx, "k")
	_, checks["Commit"] = s.Commit(ctx, store.Entity{Key: "k"})
	_, _, checks["CommitTransition"] = s.CommitTransition(ctx, store.Entity{Key: "k"}, tk.ID, nil)
	_, checks["Stale"] = s.Stale(ctx, time.Now(), 10)
	for op, err := range checks {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", op, err)
		}
	}
}

func TestCancelledContextNotApplied(t *testing.T) {
	t.Parallel()
	s := openTemp(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tk := token(t, newID(t), baton.TokenID{}, "shop")
	if _, err := s.Issue(ctx, rootTemplate(tk)); !errors.Is(err, store.ErrNotApplied) {
		t.Fatalf("Issue with a cancelled context: %v, want ErrNotApplied", err)
	}
	if live, err := s.ListByConversation(context.Background(), tk.Conversation, store.Page{}); err != nil || len(live) != 0 {
		t.Fatalf("token issued despite the cancelled context: %v, %v", live, err)
	}
}

func TestOpenRefusesUnknownFormat(t *testing.T) {
	t.Parallel()
	s := openTemp(t, Config{})
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFormat, []byte{99}) })
	if err != nil {
		t.Fatal(err)
	}
	path := s.Path()
	s.Close()
	if _, err := Open(path, Config{}); !errors.Is(err, ErrUnsupportedFormat) {
		t.Fatalf("Open of a format-99 file: %v, want ErrUnsupportedFormat", err)
	}
}

// TestOpenRaisesAnOlderFormat: a file of format 1 opens and is marked as
// the current format, so that an older version refuses it from then on.
func TestOpenRaisesAnOlderFormat(t *testing.T) {
	t.Parallel()
	s := openTemp(t, Config{})
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFormat, []byte{1}) }); err != nil {
		t.Fatal(err)
	}
	path := s.Path()
	s.Close()
	again, err := Open(path, Config{})
	if err != nil {
		t.Fatalf("Open of a format-1 file: %v", err)
	}
	defer again.Close()
	var format []byte
	again.db.View(func(tx *bolt.Tx) error { format = append(format, tx.Bucket(bucketMeta).Get(keyFormat)...); return nil })
	if len(format) != 1 || format[0] != fileFormat {
		t.Errorf("file format after Open = %v, want %d", format, fileFormat)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{{MaxGroupSize: -1}, {OpenTimeout: -1}, {FileMode: 0o4755 | 1<<31}} {
		if _, err := Open(filepath.Join(t.TempDir(), "x.db"), cfg); err == nil {
			t.Errorf("Open accepted %+v", cfg)
		}
	}
}

// TestIndexesMatchModel applies random operations to the embedded store
// and to the in-memory reference stores, compares every answer, and checks
// after each round that every index holds exactly the entries its records
// imply.
func TestIndexesMatchModel(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			runModel(t, m.cfg, 2, 400)
		})
	}
}

func runModel(t *testing.T, cfg Config, seed uint64, steps int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, seed))
	// Both stores draw root ids from one feed, which the embedded store
	// fills with the id it drew: the reference then issues the same id.
	feed := &idFeed{}
	s := openTemp(t, cfg)
	tokens, entities := memory.NewTokenStoreFrom(feed), memory.NewEntityStore()
	convs := []baton.TokenID{newID(t), newID(t), newID(t)}
	dests := []string{"a", "ab", "b"}
	keys := []string{"e1", "e2", "e3", "e4"}
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var live []baton.TokenID // may hold consumed ids: they exercise the absent path
	newToken := func(causation baton.TokenID) baton.Token {
		tk := token(t, convs[rng.IntN(len(convs))], causation, dests[rng.IntN(len(dests))])
		tk.CreatedAt = base.Add(time.Duration(rng.IntN(1000)) * time.Second)
		if causation.IsZero() && rng.IntN(2) == 0 {
			tk.ExpiresAt = base.Add(time.Duration(rng.IntN(100)) * time.Minute)
		}
		return tk
	}
	children := func(parent baton.TokenID) []baton.Token {
		var out []baton.Token
		for range rng.IntN(3) {
			out = append(out, newToken(parent))
		}
		if len(live) > 0 && rng.IntN(10) == 0 {
			out = append(out, baton.Token{ID: live[rng.IntN(len(live))], Conversation: convs[0], Destination: "a", Type: "t"})
		}
		return out
	}
	pick := func() baton.TokenID {
		if len(live) == 0 || rng.IntN(8) == 0 {
			return newID(t)
		}
		return live[rng.IntN(len(live))]
	}
	entity := func(key string, version uint64) store.Entity {
		e := store.Entity{Key: key, Version: version, State: []byte{byte(rng.IntN(256))}}
		for range rng.IntN(3) {
			e.Outbox = append(e.Outbox, store.OutboxEntry{Token: newID(t), CreatedAt: base.Add(time.Duration(rng.IntN(10)) * time.Second)})
		}
		return e
	}
	for step := range steps {
		switch op := rng.IntN(6); op {
		case 0:
			tk := rootTemplate(newToken(baton.TokenID{}))
			gotE, errE := s.Issue(ctx, tk)
			feed.push(gotE.ID)
			gotM, errM := tokens.Issue(ctx, tk)
			sameOutcome(t, step, "Issue", errE, errM)
			if !sameToken(gotE, gotM) {
				t.Fatalf("step %d: Issue returned %+v and %+v", step, gotE, gotM)
			}
			live = append(live, gotE.ID)
		case 1, 2:
			parent := pick()
			create := children(parent)
			okE, errE := s.Transition(ctx, parent, create)
			okM, errM := tokens.Transition(ctx, parent, create)
			sameOutcome(t, step, "Transition", errE, errM)
			if okE != okM {
				t.Fatalf("step %d: Transition consumed %v, reference %v", step, okE, okM)
			}
			for _, c := range create {
				live = append(live, c.ID)
			}
		case 3:
			key := keys[rng.IntN(len(keys))]
			cur, _ := entities.Load(ctx, key)
			version := cur.Version
			if rng.IntN(4) == 0 {
				version++ // a stale or future version: conflict
			}
			e := entity(key, version)
			vE, errE := s.Commit(ctx, e)
			vM, errM := entities.Commit(ctx, e)
			sameOutcome(t, step, "Commit", errE, errM)
			if vE != vM {
				t.Fatalf("step %d: Commit version %d, reference %d", step, vE, vM)
			}
		case 4:
			// CommitTransition against the reference: both or neither.
			key := keys[rng.IntN(len(keys))]
			cur, _ := entities.Load(ctx, key)
			version := cur.Version
			if rng.IntN(4) == 0 {
				version += 2
			}
			parent := pick()
			create := children(parent)
			e := entity(key, version)
			vE, okE, errE := s.CommitTransition(ctx, e, parent, create)
			var vM uint64
			var okM bool
			errM := store.ValidateTransition(parent, create)
			if _, err := tokens.Get(ctx, parent); errM == nil && err == nil {
				if cur.Version != e.Version {
					errM = store.ErrConflict
				} else if errM = checkAbsent(ctx, tokens, create); errM == nil {
					if vM, errM = entities.Commit(ctx, e); errM == nil {
						okM, errM = tokens.Transition(ctx, parent, create)
					}
				}
			}
			sameOutcome(t, step, "CommitTransition", errE, errM)
			if vE != vM || okE != okM {
				t.Fatalf("step %d: CommitTransition = %d, %v; reference %d, %v", step, vE, okE, vM, okM)
			}
			for _, c := range create {
				live = append(live, c.ID)
			}
		case 5:
			before := base.Add(time.Duration(rng.IntN(100)) * time.Minute)
			nE, errE := s.ExpireRoots(ctx, before, 1000)
			nM, errM := tokens.ExpireRoots(ctx, before, 1000)
			sameOutcome(t, step, "ExpireRoots", errE, errM)
			if nE != nM {
				t.Fatalf("step %d: ExpireRoots deleted %d, reference %d", step, nE, nM)
			}
		}
		if step%50 == 49 {
			if rng.IntN(2) == 0 {
				s = reopen(t, s)
			}
			compareWithModel(t, s, tokens, entities, convs, dests, keys, base)
			checkIndexes(t, s)
		}
	}
}

// checkAbsent returns ErrExists if a token of create is live in the
// reference, as a CommitTransition must check before committing.
func checkAbsent(ctx context.Context, tokens *memory.TokenStore, create []baton.Token) error {
	for _, c := range create {
		if _, err := tokens.Get(ctx, c.ID); err == nil {
			return store.ErrExists
		}
	}
	return nil
}

func sameOutcome(t *testing.T, step int, op string, got, want error) {
	t.Helper()
	for _, sentinel := range []error{nil, store.ErrExists, store.ErrConflict, store.ErrInvalid, store.ErrNotFound} {
		if (sentinel == nil && (got == nil) != (want == nil)) || (sentinel != nil && errors.Is(got, sentinel) != errors.Is(want, sentinel)) {
			t.Fatalf("step %d: %s error %v, reference %v", step, op, got, want)
		}
	}
}

func compareWithModel(t *testing.T, s *Store, tokens *memory.TokenStore, entities *memory.EntityStore, convs []baton.TokenID, dests []string, keys []string, base time.Time) {
	t.Helper()
	ctx := context.Background()
	same := func(what string, got, want []baton.Token) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d tokens, reference %d", what, len(got), len(want))
		}
		for i := range got {
			if !sameToken(got[i], want[i]) {
				t.Fatalf("%s[%d] = %+v, reference %+v", what, i, got[i], want[i])
			}
		}
	}
	total := 0
	for _, c := range convs {
		got, err := s.ListByConversation(ctx, c, store.Page{Limit: store.MaxPageLimit})
		if err != nil {
			t.Fatal(err)
		}
		want, _ := tokens.ListByConversation(ctx, c, store.Page{Limit: store.MaxPageLimit})
		same("ListByConversation", got, want)
		total += len(got)
	}
	if total != tokens.Len() {
		t.Fatalf("conversations list %d tokens, reference holds %d", total, tokens.Len())
	}
	for _, d := range dests {
		got, err := s.ListByDestination(ctx, d, store.Page{Limit: store.MaxPageLimit})
		if err != nil {
			t.Fatal(err)
		}
		want, _ := tokens.ListByDestination(ctx, d, store.Page{Limit: store.MaxPageLimit})
		same("ListByDestination "+d, got, want)
	}
	for _, k := range keys {
		got, err := s.Load(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := entities.Load(ctx, k)
		if !sameEntity(got, want) {
			t.Fatalf("Load(%s) = %+v, reference %+v", k, got, want)
		}
	}
	for sec := range 12 {
		before := base.Add(time.Duration(sec) * time.Second)
		got, err := s.Stale(ctx, before, 100)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := entities.Stale(ctx, before, 100)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("Stale(%v) = %v, reference %v", before, got, want)
		}
	}
}

func sameEntity(a, b store.Entity) bool {
	if a.Key != b.Key || a.Version != b.Version || !bytes.Equal(a.State, b.State) || len(a.Outbox) != len(b.Outbox) {
		return false
	}
	for i := range a.Outbox {
		x, y := a.Outbox[i], b.Outbox[i]
		if x.Token != y.Token || !x.CreatedAt.Equal(y.CreatedAt) || !bytes.Equal(x.Reply, y.Reply) || !reflect.DeepEqual(x.Signals, y.Signals) {
			return false
		}
	}
	return true
}

// checkIndexes verifies that every index bucket holds exactly the keys
// that the records imply.
func checkIndexes(t testing.TB, s *Store) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		want := map[string]map[string]bool{}
		for _, name := range [][]byte{bucketByConversation, bucketByDestination, bucketRootExpiry, bucketOutboxCreated} {
			want[string(name)] = map[string]bool{}
		}
		err := tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
			tk, err := decodeToken(v)
			if err != nil {
				return err
			}
			if !bytes.Equal(k, tk.ID[:]) {
				return fmt.Errorf("token %s stored under %x", tk.ID, k)
			}
			want[string(bucketByConversation)][string(conversationKey(tk.Conversation, tk.ID))] = true
			want[string(bucketByDestination)][string(destinationKey(tk.Destination, tk.ID))] = true
			if !tk.ExpiresAt.IsZero() {
				want[string(bucketRootExpiry)][string(expiryKey(tk.ExpiresAt, tk.ID))] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketEntities).ForEach(func(k, v []byte) error {
			e, err := decodeEntity(string(k), v)
			if err != nil {
				return err
			}
			for _, o := range e.Outbox {
				want[string(bucketOutboxCreated)][string(outboxKey(o.CreatedAt, e.Key))] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		for name, keys := range want {
			got := map[string]bool{}
			if err := tx.Bucket([]byte(name)).ForEach(func(k, _ []byte) error { got[string(k)] = true; return nil }); err != nil {
				return err
			}
			if !reflect.DeepEqual(got, keys) {
				return fmt.Errorf("index %s holds %d keys, records imply %d (or different ones)", name, len(got), len(keys))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
