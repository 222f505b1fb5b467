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

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
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
	pool := newPool(b, 1)
	b.Cleanup(pool.Close)
	s, err := New(b.Context(), pool, Config{Schema: uniqueSchema(b)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	var pid int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		b.Fatal(err)
	}
	if _, ok := proccpu.Of([]int{pid}); !ok {
		b.Skip("PostgreSQL's processes are not readable in /proc: the server runs elsewhere")
	}
	cpu := func() time.Duration { used, _ := proccpu.Of([]int{pid}); return used[pid] }

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
