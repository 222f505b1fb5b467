package postgres

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/proccpu"
	"github.com/batonhq/baton/internal/stepcosts"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// benchWorkers is the number of concurrent callers in every benchmark.
const benchWorkers = 8

// benchStore returns a store in a fresh schema over a pool of its own with
// a connection per worker.
func benchStore(b *testing.B) *Store {
	b.Helper()
	pool := newPool(b, benchWorkers)
	b.Cleanup(pool.Close)
	s, err := New(b.Context(), pool, Config{Schema: uniqueSchema(b)})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// benchRounds interleaves the approaches a benchmark compares, so that
// drift in the machine's load affects all of them alike.
const benchRounds = 5

// compare runs n operations of every approach, spread over benchWorkers
// goroutines and interleaved in benchRounds rounds, and returns each
// approach's operations per second. An approach prepares a worker
// (untimed) and returns the worker's operation.
func compare(b *testing.B, n int, approaches ...func(worker int) func() error) []float64 {
	b.Helper()
	ops := make([][]func() error, len(approaches))
	for a, newWorker := range approaches {
		ops[a] = make([]func() error, benchWorkers)
		for w := range benchWorkers {
			ops[a][w] = newWorker(w)
		}
	}
	elapsed := make([]time.Duration, len(approaches))
	done := make([]int, len(approaches))
	b.ResetTimer()
	for round := range benchRounds {
		for a := range approaches {
			count := n/benchRounds + boolInt(round < n%benchRounds)
			elapsed[a] += runWorkers(b, count, ops[a])
			done[a] += count
		}
	}
	b.StopTimer()
	rates := make([]float64, len(approaches))
	for a := range rates {
		rates[a] = float64(done[a]) / elapsed[a].Seconds()
	}
	return rates
}

// runWorkers runs n operations spread over the workers and returns how
// long they took.
func runWorkers(b *testing.B, n int, workers []func() error) time.Duration {
	var wg sync.WaitGroup
	start := time.Now()
	for w, op := range workers {
		share := n/len(workers) + boolInt(w < n%len(workers))
		wg.Go(func() {
			for range share {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

func benchToken(conversation, causation baton.TokenID) baton.Token {
	return baton.Token{
		ID: baton.NewTokenID(), Conversation: conversation, Causation: causation,
		Destination: "bench", Type: "step", Digest: baton.DigestOf(nil), CreatedAt: time.Now(),
	}
}

// issueRoot gives a worker the first token of its chain.
func issueRoot(b *testing.B, s *Store) baton.Token {
	return issue(b.Context(), b, s, benchToken(baton.TokenID{}, baton.TokenID{}))
}

// BenchmarkTransition compares Transition (consume a token only if live and
// create its child, atomically) with the same writes done without the
// protocol: a plain INSERT of the child and DELETE of the parent, sent
// together as one implicit transaction (one round trip, one commit, no
// condition). Each worker walks a chain: every child is the next parent.
// Metrics: protocol-ops/s, raw-ops/s and protocol/raw.
func BenchmarkTransition(b *testing.B) {
	s := benchStore(b)
	ctx := b.Context()
	insert := "INSERT INTO " + Config{Schema: s.Schema()}.table("tokens") + " (" + tokenColumns + ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
	remove := "DELETE FROM " + Config{Schema: s.Schema()}.table("tokens") + " WHERE id = $1"

	protocol := func(int) func() error {
		current := issueRoot(b, s)
		return func() error {
			child := benchToken(current.Conversation, current.ID)
			consumed, err := s.Transition(ctx, current.ID, []baton.Token{child})
			if err != nil || !consumed {
				return fmt.Errorf("transition: %v, %v", consumed, err)
			}
			current = child
			return nil
		}
	}
	raw := func(int) func() error {
		current := issueRoot(b, s)
		return func() error {
			child := benchToken(current.Conversation, current.ID)
			at, ns := splitTime(child.CreatedAt)
			var batch pgx.Batch
			batch.Queue(insert, child.ID[:], child.Conversation[:], child.Causation[:], child.Destination, child.Type, child.Digest[:], at, ns, nil, nil)
			batch.Queue(remove, current.ID[:])
			if err := s.Pool().SendBatch(ctx, &batch).Close(); err != nil {
				return err
			}
			current = child
			return nil
		}
	}
	// A first pass warms connections and prepared statements.
	compare(b, 2*benchRounds*benchWorkers, protocol, raw)
	rates := compare(b, b.N, protocol, raw)
	protocolRate, rawRate := rates[0], rates[1]
	b.ReportMetric(protocolRate, "protocol-ops/s")
	b.ReportMetric(rawRate, "raw-ops/s")
	b.ReportMetric(protocolRate/rawRate, "protocol/raw")
}

// BenchmarkStepFourAndFive compares three ways to record one processed
// signal for an entity and emit one signal, each worker on its own entity:
//
//   - fast: CommitTransition, the entity commit (with its outbox entry) and
//     the transition in one statement (the fast path, docs/protocol.md 3.2);
//   - plain: Commit, then Transition (steps 4 and 5 as separate calls);
//   - classic: no tokens; insert the message id into a processed-messages
//     table and update the entity with its outbox in one statement.
//
// Metrics: ops/s of each, fast/classic and plain/classic.
func BenchmarkStepFourAndFive(b *testing.B) {
	s := benchStore(b)
	ctx := b.Context()
	processed := Config{Schema: s.Schema()}.table("processed")
	if _, err := s.Pool().Exec(ctx, "CREATE TABLE "+processed+" (id bytea PRIMARY KEY, processed_at timestamptz NOT NULL DEFAULT now())"); err != nil {
		b.Fatal(err)
	}
	classicSQL := "WITH seen AS (INSERT INTO " + processed + " (id) VALUES ($1)) " +
		"UPDATE " + Config{Schema: s.Schema()}.table("entities") + " SET version = version + 1, state = $3, outbox = $4 WHERE key = $2"

	state := []byte(`{"status":"paid","amount":4200}`)
	var round int
	step := func(fast bool) func(int) func() error {
		round++
		return func(w int) func() error {
			key := fmt.Sprintf("entity-%d-%d-%v", round, w, fast)
			var version uint64
			current := issueRoot(b, s)
			return func() error {
				child := benchToken(current.Conversation, current.ID)
				e := store.Entity{Key: key, Version: version, State: state, Outbox: []store.OutboxEntry{entryFor(current.ID, []baton.Token{child})}}
				var err error
				var consumed bool
				if fast {
					version, consumed, err = s.CommitTransition(ctx, e, current.ID, []baton.Token{child})
				} else {
					if version, err = s.Commit(ctx, e); err == nil {
						consumed, err = s.Transition(ctx, current.ID, []baton.Token{child})
					}
				}
				if err != nil || !consumed {
					return fmt.Errorf("fast %v: %v, %v", fast, consumed, err)
				}
				current = child
				return nil
			}
		}
	}
	classic := func(w int) func() error {
		round++
		key := fmt.Sprintf("classic-%d-%d", round, w)
		if _, err := s.Commit(ctx, store.Entity{Key: key, State: state}); err != nil {
			b.Fatal(err)
		}
		return func() error {
			incoming, outgoing := baton.NewTokenID(), baton.NewTokenID()
			row, err := newEntityRow(store.Entity{Key: key, Outbox: []store.OutboxEntry{entryFor(incoming, []baton.Token{benchToken(outgoing, incoming)})}})
			if err != nil {
				return err
			}
			tag, err := s.Pool().Exec(ctx, classicSQL, incoming[:], key, state, row.outbox)
			if err == nil && tag.RowsAffected() != 1 {
				err = fmt.Errorf("classic: updated %d rows", tag.RowsAffected())
			}
			return err
		}
	}
	compare(b, 2*benchRounds*benchWorkers, step(true), step(false), classic)
	rates := compare(b, b.N, step(true), step(false), classic)
	fastRate, plainRate, classicRate := rates[0], rates[1], rates[2]
	b.ReportMetric(fastRate, "fast-ops/s")
	b.ReportMetric(plainRate, "plain-ops/s")
	b.ReportMetric(classicRate, "classic-ops/s")
	b.ReportMetric(fastRate/classicRate, "fast/classic")
	b.ReportMetric(plainRate/classicRate, "plain/classic")
}

// BenchmarkConversations measures the store as a token store under the
// protocol's load (storetest.BenchmarkConversations), on the machine's
// PostgreSQL, with a connection per client:
//
//	BATON_TEST_POSTGRES=... go test -run XXX -bench Conversations -benchtime 10s ./backend/postgres
func BenchmarkConversations(b *testing.B) {
	pool := newPool(b, 32)
	b.Cleanup(pool.Close)
	s, err := New(b.Context(), pool, Config{Schema: uniqueSchema(b)})
	if err != nil {
		b.Fatal(err)
	}
	storetest.BenchmarkConversations(b, s, nil)
}

// BenchmarkArrayRows compares the two ways of turning array parameters
// into the rows a statement writes: unnest in the select list (zip), as
// every statement of this package does, and unnest(a, b, ...) in FROM. On
// one connection, each statement inserts one token, as an issue of one
// root does, and the forms alternate in benchRounds rounds. Metrics: the
// connection's server CPU per statement for each form (from /proc, so only
// with PostgreSQL on this machine) and from/select.
func BenchmarkArrayRows(b *testing.B) {
	s, cpu := singleConnectionStore(b)
	ctx := b.Context()
	conn, err := s.Pool().Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()

	insert := "INSERT INTO " + Config{Schema: s.Schema()}.table("tokens") + " (" + tokenColumns + ") "
	params := make([]string, len(tokenTypes))
	for i, t := range tokenTypes {
		params[i] = fmt.Sprintf("$%d::%s[]", i+1, t)
	}
	forms := []string{
		insert + "SELECT " + zip(1, tokenTypes...),
		insert + "SELECT * FROM unnest(" + strings.Join(params, ", ") + ")",
	}
	used := make([]time.Duration, len(forms))
	run := func(form, n int) {
		start := cpu()
		for range n {
			if _, err := conn.Exec(ctx, forms[form], tokenArrays([]baton.Token{benchToken(baton.NewTokenID(), baton.TokenID{})})...); err != nil {
				b.Fatal(err)
			}
		}
		used[form] += cpu() - start
	}
	for form := range forms {
		run(form, 20) // prepare the statement, let PostgreSQL settle on its plan
	}
	clear(used)
	b.ResetTimer()
	for round := range benchRounds {
		for form := range forms {
			run(form, b.N/benchRounds+boolInt(round < b.N%benchRounds))
		}
	}
	b.StopTimer()
	perOp := func(form int) float64 { return float64(used[form].Microseconds()) / float64(b.N) }
	b.ReportMetric(perOp(0), "select-server-µs/op")
	b.ReportMetric(perOp(1), "from-server-µs/op")
	if perOp(0) > 0 {
		b.ReportMetric(perOp(1)/perOp(0), "from/select")
	}
}

// BenchmarkStepCosts measures the server CPU of each write and read of one
// conversation of `baton bench` (an order placed, then charged to one of
// 100 accounts), on one connection, one step kind at a time over b.N
// conversations: baton on the fast path (root issue, load, commit with
// transition, removal of the order's entry in batches of 8) and the
// classic processed table and outbox (load with the processed check;
// BEGIN, mark, write and outbox row in one round trip, then COMMIT; the
// relay's delete in batches of 8). It shows where a conversation's cost
// goes without the noise of the whole process; -v logs each step.
// Metrics: baton- and classic-server-µs/conversation and baton/classic.
func BenchmarkStepCosts(b *testing.B) {
	s, used := singleConnectionStore(b)
	pool, ctx := s.Pool(), b.Context()
	table := func(name string) string { return Config{Schema: s.Schema()}.table(name) }
	for _, ddl := range []string{
		"CREATE TABLE " + table("processed") + " (message_id bytea PRIMARY KEY, processed_at timestamptz NOT NULL DEFAULT now())",
		"CREATE INDEX ON " + table("processed") + " (processed_at)",
		"CREATE TABLE " + table("outbox") + " (id bigserial PRIMARY KEY, message_id bytea NOT NULL, destination text NOT NULL, type text NOT NULL, payload bytea NOT NULL)",
		"CREATE TABLE " + table("classic_entities") + " (key text PRIMARY KEY, version bigint NOT NULL, state bytea NOT NULL)",
	} {
		if _, err := pool.Exec(ctx, ddl); err != nil {
			b.Fatal(err)
		}
	}
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	const accounts = 100
	state := []byte(`{"status":"placed","amount":4200,"account":"account-1"}`)
	batonVersions, classicVersions := make([]uint64, accounts), make([]int64, accounts)
	for a := range accounts {
		key := fmt.Sprintf("account-%d", a)
		var err error
		batonVersions[a], err = s.Commit(ctx, store.Entity{Key: key, State: state})
		must(err)
		_, err = pool.Exec(ctx, "INSERT INTO "+table("classic_entities")+" VALUES ($1, 1, $2)", key, state)
		must(err)
		classicVersions[a] = 1
	}
	n := b.N
	orderKey := func(i int) string { return fmt.Sprintf("order-%d", i) }
	accountOf := func(i int) (int, string) { return i % accounts, fmt.Sprintf("account-%d", i%accounts) }

	var steps []stepcosts.Step
	phase := func(name string, each func(i int)) {
		start := used()
		for i := range n {
			each(i)
		}
		steps = append(steps, stepcosts.Step{Name: name, CPU: used() - start})
	}
	b.ResetTimer()

	roots, children, orderVersions := make([]baton.Token, n), make([]baton.Token, n), make([]uint64, n)
	phase("baton: issue the root", func(i int) {
		roots[i] = issue(ctx, b, s, benchToken(baton.TokenID{}, baton.TokenID{}))
		children[i] = benchToken(roots[i].Conversation, roots[i].ID)
	})
	phase("baton: load order with token", func(i int) {
		_, _, err := s.LoadWithToken(ctx, orderKey(i), roots[i].ID)
		must(err)
	})
	phase("baton: commit order, transition", func(i int) {
		e := store.Entity{Key: orderKey(i), State: state, Outbox: []store.OutboxEntry{entryFor(roots[i].ID, []baton.Token{children[i]})}}
		v, consumed, err := s.CommitTransition(ctx, e, roots[i].ID, []baton.Token{children[i]})
		must(err)
		if !consumed {
			b.Fatal("root not consumed")
		}
		orderVersions[i] = v
	})
	var removals []store.Entity
	phase("baton: remove order's entry (by 8)", func(i int) {
		removals = append(removals, store.Entity{Key: orderKey(i), Version: orderVersions[i], State: state})
		if len(removals) == 8 || i == n-1 {
			_, err := s.CommitBatch(ctx, removals)
			must(err)
			removals = removals[:0]
		}
	})
	phase("baton: load account with token", func(i int) {
		_, key := accountOf(i)
		_, _, err := s.LoadWithToken(ctx, key, children[i].ID)
		must(err)
	})
	phase("baton: commit account, transition", func(i int) {
		a, key := accountOf(i)
		v, consumed, err := s.CommitTransition(ctx, store.Entity{Key: key, Version: batonVersions[a], State: state}, children[i].ID, nil)
		must(err)
		if !consumed {
			b.Fatal("token not consumed")
		}
		batonVersions[a] = v
	})
	batonSteps := len(steps)

	conn, err := pool.Acquire(ctx) // BEGIN and COMMIT must share a connection
	must(err)
	defer conn.Release()
	load := `SELECT e.version, e.state, EXISTS (SELECT 1 FROM ` + table("processed") + ` WHERE message_id = $2)
FROM (VALUES (1)) AS one (x) LEFT JOIN ` + table("classic_entities") + ` e ON e.key = $1`
	commit := func(queue func(*pgx.Batch)) {
		batch := &pgx.Batch{}
		batch.Queue("BEGIN")
		queue(batch)
		must(conn.SendBatch(ctx, batch).Close())
		_, err := conn.Exec(ctx, "COMMIT")
		must(err)
	}
	messages, next, outboxIDs := make([]baton.TokenID, n), make([]baton.TokenID, n), make([]int64, n)
	phase("classic: load order, processed?", func(i int) {
		messages[i], next[i] = baton.NewTokenID(), baton.NewTokenID()
		var version *int64
		var st []byte
		var seen bool
		must(conn.QueryRow(ctx, load, orderKey(i), messages[i][:]).Scan(&version, &st, &seen))
	})
	phase("classic: mark, insert order, outbox", func(i int) {
		commit(func(batch *pgx.Batch) {
			batch.Queue("INSERT INTO "+table("processed")+" (message_id) VALUES ($1) ON CONFLICT DO NOTHING", messages[i][:])
			batch.Queue("INSERT INTO "+table("classic_entities")+" (key, version, state) VALUES ($1, 1, $2)", orderKey(i), state)
			batch.Queue("INSERT INTO "+table("outbox")+" (message_id, destination, type, payload) VALUES ($1, 'billing', 'charge', $2) RETURNING id",
				next[i][:], []byte(`{"amount":4200}`)).QueryRow(func(row pgx.Row) error { return row.Scan(&outboxIDs[i]) })
		})
	})
	phase("classic: relay deletes (by 8)", func(i int) {
		if i%8 == 7 || i == n-1 {
			_, err := conn.Exec(ctx, "DELETE FROM "+table("outbox")+" WHERE id = ANY($1)", outboxIDs[i-i%8:i+1])
			must(err)
		}
	})
	phase("classic: load account, processed?", func(i int) {
		_, key := accountOf(i)
		var version *int64
		var st []byte
		var seen bool
		must(conn.QueryRow(ctx, load, key, next[i][:]).Scan(&version, &st, &seen))
	})
	phase("classic: mark, update account", func(i int) {
		a, key := accountOf(i)
		commit(func(batch *pgx.Batch) {
			batch.Queue("INSERT INTO "+table("processed")+" (message_id) VALUES ($1) ON CONFLICT DO NOTHING", next[i][:])
			batch.Queue("UPDATE "+table("classic_entities")+" SET version = version + 1, state = $3 WHERE key = $1 AND version = $2", key, classicVersions[a], state)
		})
		classicVersions[a]++
	})
	b.StopTimer()

	stepcosts.Report(b, steps, batonSteps, n)
}

// singleConnectionStore returns a store over a pool of one connection and
// a function that reads the server CPU that connection's backend has used;
// it skips the benchmark where PostgreSQL's processes are not in this
// machine's /proc.
func singleConnectionStore(b *testing.B) (*Store, func() time.Duration) {
	pool := newPool(b, 1)
	b.Cleanup(pool.Close)
	s, err := New(b.Context(), pool, Config{Schema: uniqueSchema(b)})
	if err != nil {
		b.Fatal(err)
	}
	var pid int
	if err := pool.QueryRow(b.Context(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		b.Fatal(err)
	}
	if _, ok := proccpu.Of([]int{pid}); !ok {
		b.Skip("PostgreSQL's processes are not readable in /proc: the server runs elsewhere")
	}
	return s, func() time.Duration { used, _ := proccpu.Of([]int{pid}); return used[pid] }
}
