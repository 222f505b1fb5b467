package bench

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/postgres"
	"github.com/batonhq/baton/internal/proccpu"
	"github.com/batonhq/baton/internal/stepcosts"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/store"
)

// costsBatch is the batch of BenchmarkBatchStepCosts: about the
// activities per batch commit of baton-pg in a full run (12.2).
const costsBatch = 12

// BenchmarkBatchStepCosts is backend/postgres's BenchmarkStepCosts for
// batches: the statements of baton-pg and classic-batched for b.N
// conversations in batches of costsBatch, on one connection, one step kind
// at a time, with the server CPU of that connection's backend for each.
// baton: roots issued together (the store groups concurrent Issue calls),
// LoadWithTokens, CommitTransitions, the removals (CommitBatch), and the
// same reads and commits for the accounts. classic-batched: its load, its
// commit statement in a transaction, the relay's select and delete, and
// the same for the accounts. -v logs each step. Metrics: baton- and
// classic-server-µs/conversation and baton/classic.
func BenchmarkBatchStepCosts(b *testing.B) {
	dsn := testenv.Addr(b, testenv.Postgres)
	ctx := b.Context()
	pool, err := openPool(ctx, dsn, "baton-bench-batchcosts", 1)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	// VACUUM runs on a connection of its own: its CPU is not the
	// statements', as the benchmark's vacuuming is not the variants'.
	monitor, err := openPool(ctx, dsn, "baton-bench-batchcosts-vacuum", 1)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(monitor.Close)
	var pid int
	if err := pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		b.Fatal(err)
	}
	if _, ok := proccpu.Of([]int{pid}); !ok {
		b.Skip("PostgreSQL's processes are not readable in /proc: the server runs elsewhere")
	}
	used := func() time.Duration { cpu, _ := proccpu.Of([]int{pid}); return cpu[pid] }
	must := func(err error) {
		b.Helper()
		if err != nil {
			b.Fatal(err)
		}
	}
	suffix := strings.ReplaceAll(baton.NewTokenID().String()[:12], "-", "")
	batonSchema, classicSchema := "bbatch_"+suffix, "cbatch_"+suffix
	b.Cleanup(func() {
		for _, schema := range []string{batonSchema, classicSchema} {
			_, _ = pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		}
	})
	s, err := postgres.New(ctx, pool, postgres.Config{Schema: batonSchema})
	must(err)
	q := pgx.Identifier{classicSchema}.Sanitize()
	_, err = pool.Exec(ctx, "CREATE SCHEMA "+q+";"+strings.NewReplacer("{entities}", q+".entities", "{processed}", q+".processed", "{outbox}", q+".outbox").Replace(sqlSchema))
	must(err)
	classic, classicBatch := newSQLStatements(classicSchema), newBatchedStatements(classicSchema)

	const accounts = 100
	state := []byte(`{"status":"placed","amount":4200,"account":"account-1"}`)
	batonVersions, classicVersions := make([]uint64, accounts), make([]int64, accounts)
	for a := range accounts {
		key := fmt.Sprintf("account-%d", a)
		batonVersions[a], err = s.Commit(ctx, store.Entity{Key: key, State: state})
		must(err)
		_, err = pool.Exec(ctx, classic.insertEntity, key, state)
		must(err)
		classicVersions[a] = 1
	}
	n := b.N
	orderKey := func(i int) string { return fmt.Sprintf("order-%d", i) }
	accountOf := func(i int) (int, string) { return i % accounts, fmt.Sprintf("account-%d", i%accounts) }
	var steps []stepcosts.Step
	// vacuum stands in for the benchmark's vacuuming every 5 seconds (and
	// autovacuum): without it every phase reads past the dead rows of the
	// ones before, which a running system does not keep.
	vacuum := func() {
		for _, t := range []string{batonSchema + ".tokens", batonSchema + ".entities", classicSchema + ".entities", classicSchema + ".processed", classicSchema + ".outbox"} {
			schema, table, _ := strings.Cut(t, ".")
			_, err := monitor.Exec(ctx, "VACUUM "+pgx.Identifier{schema, table}.Sanitize())
			must(err)
		}
	}
	// phase runs each over the batches of the n conversations.
	phase := func(name string, each func(from, to int)) {
		b.StopTimer()
		vacuum()
		b.StartTimer()
		start := used()
		for from := 0; from < n; from += costsBatch {
			each(from, min(from+costsBatch, n))
		}
		steps = append(steps, stepcosts.Step{Name: name, CPU: used() - start})
	}
	b.ResetTimer()

	roots, children := make([]baton.Token, n), make([]baton.Token, n)
	phase("baton: issue the roots together", func(from, to int) {
		var wg sync.WaitGroup
		for i := from; i < to; i++ {
			wg.Go(func() {
				root, err := s.Issue(ctx, baton.Token{Destination: destOrders, Type: typePlace, Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
				must(err)
				roots[i] = root
				children[i] = baton.Token{ID: baton.NewTokenID(), Conversation: root.Conversation, Causation: root.ID,
					Destination: destBilling, Type: typeCharge, Digest: baton.DigestOf(nil), CreatedAt: time.Now().UTC()}
			})
		}
		wg.Wait()
	})
	loadWithTokens := func(key func(i int) string, token func(i int) baton.TokenID) func(from, to int) {
		return func(from, to int) {
			var reads []store.TokenRead
			for i := from; i < to; i++ {
				reads = append(reads, store.TokenRead{Key: key(i), Token: token(i)})
			}
			_, err := s.LoadWithTokens(ctx, reads)
			must(err)
		}
	}
	commitTransitions := func(transitions []store.Transition) {
		results, err := s.CommitTransitions(ctx, transitions)
		must(err)
		for _, r := range results {
			must(r)
		}
	}
	phase("baton: load orders with tokens", loadWithTokens(orderKey, func(i int) baton.TokenID { return roots[i].ID }))
	phase("baton: commit orders, transitions", func(from, to int) {
		var ts []store.Transition
		for i := from; i < to; i++ {
			entry := store.OutboxEntry{Token: roots[i].ID, CreatedAt: time.Now().UTC(), Signals: []baton.Signal{{ID: children[i].ID,
				Conversation: children[i].Conversation, Causation: children[i].Causation, Destination: destBilling, Type: typeCharge}}}
			ts = append(ts, store.Transition{Entity: store.Entity{Key: orderKey(i), State: state, Outbox: []store.OutboxEntry{entry}},
				Token: roots[i].ID, Create: []baton.Token{children[i]}})
		}
		commitTransitions(ts)
	})
	phase("baton: remove the orders' entries", func(from, to int) {
		var es []store.Entity
		for i := from; i < to; i++ {
			es = append(es, store.Entity{Key: orderKey(i), Version: 1, State: state})
		}
		results, err := s.CommitBatch(ctx, es)
		must(err)
		for _, r := range results {
			must(r)
		}
	})
	phase("baton: load accounts with tokens", loadWithTokens(func(i int) string { _, key := accountOf(i); return key },
		func(i int) baton.TokenID { return children[i].ID }))
	phase("baton: commit accounts, transitions", func(from, to int) {
		var ts []store.Transition
		for i := from; i < to; i++ {
			a, key := accountOf(i)
			ts = append(ts, store.Transition{Entity: store.Entity{Key: key, Version: batonVersions[a], State: state}, Token: children[i].ID})
			batonVersions[a]++
		}
		commitTransitions(ts)
	})
	batonSteps := len(steps)

	conn, err := pool.Acquire(ctx) // BEGIN and COMMIT must share a connection
	must(err)
	defer conn.Release()
	messages, next := make([]baton.TokenID, n), make([]baton.TokenID, n)
	load := func(key func(i int) string, msg func(i int) baton.TokenID) func(from, to int) {
		return func(from, to int) {
			var keys []string
			var msgs [][]byte
			var numbers []int32
			for i := from; i < to; i++ {
				id := msg(i)
				keys, msgs, numbers = append(keys, key(i)), append(msgs, id[:]), append(numbers, int32(i-from+1))
			}
			rows, err := conn.Query(ctx, classicBatch.load, keys, msgs, numbers)
			must(err)
			rows.Close()
			must(rows.Err())
		}
	}
	// commit runs classic-batched's commit statement in a transaction:
	// items[j] is (message, key, version), and emit says whether each
	// writes an outbox row for its next message.
	commit := func(from, to int, msg func(i int) baton.TokenID, key func(i int) (string, int64), emit bool) {
		var in classicCommitArgs
		for i := from; i < to; i++ {
			k, v := key(i)
			var child *baton.Signal
			if emit {
				id := msg(i)
				child = &baton.Signal{ID: next[i], Conversation: id, Causation: id, Destination: destBilling, Type: typeCharge, Payload: []byte(`{"amount":4200}`)}
			}
			in.add(int32(i-from), msg(i), k, v, state, child)
		}
		batch := &pgx.Batch{}
		batch.Queue("BEGIN")
		batch.Queue(classicBatch.commit, in.args()...)
		must(conn.SendBatch(ctx, batch).Close())
		_, err := conn.Exec(ctx, "COMMIT")
		must(err)
	}
	phase("classic: load orders, processed?", load(orderKey, func(i int) baton.TokenID {
		messages[i], next[i] = baton.NewTokenID(), baton.NewTokenID()
		return messages[i]
	}))
	phase("classic: mark, insert orders, outbox", func(from, to int) {
		commit(from, to, func(i int) baton.TokenID { return messages[i] }, func(i int) (string, int64) { return orderKey(i), 0 }, true)
	})
	phase("classic: relay selects and deletes", func(from, to int) {
		rows, err := conn.Query(ctx, classic.selectOutbox, to-from)
		must(err)
		var ids []int64
		for rows.Next() {
			var id int64
			var msg, conv, cause, payload []byte
			var dest, typ string
			must(rows.Scan(&id, &msg, &conv, &cause, &dest, &typ, &payload))
			ids = append(ids, id)
		}
		must(rows.Err())
		_, err = conn.Exec(ctx, classic.deleteOutbox, ids)
		must(err)
	})
	phase("classic: load accounts, processed?", load(func(i int) string { _, key := accountOf(i); return key }, func(i int) baton.TokenID { return next[i] }))
	phase("classic: mark, update accounts", func(from, to int) {
		commit(from, to, func(i int) baton.TokenID { return next[i] }, func(i int) (string, int64) {
			a, key := accountOf(i)
			classicVersions[a]++
			return key, classicVersions[a] - 1
		}, false)
	})
	b.StopTimer()

	stepcosts.Report(b, steps, batonSteps, n)
}
