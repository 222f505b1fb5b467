package bench

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/transport"
)

// The classic approach with the batching baton-pg has, so that baton's
// batches are compared with batches: a worker takes the deliveries
// already received (up to batchSize, never waiting for more), reads their
// entities and processed marks in one query, and commits them in one
// transaction in which each delivery is applied or refused on its own.

// batchedStatements are classic-batched's SQL, built once per schema.
type batchedStatements struct {
	load, commit, unmark string
}

func newBatchedStatements(schema string) batchedStatements {
	q := pgx.Identifier{schema}.Sanitize()
	r := strings.NewReplacer("{entities}", q+".entities", "{processed}", q+".processed", "{outbox}", q+".outbox")
	return batchedStatements{
		load: r.Replace(`SELECT r.n, e.version, e.state, EXISTS (SELECT 1 FROM {processed} p WHERE p.message_id = r.msg)
FROM (SELECT unnest($1::text[]) AS key, unnest($2::bytea[]) AS msg, unnest($3::int4[]) AS n) AS r
LEFT JOIN {entities} e ON e.key = r.key`),
		// One statement for the whole batch: the entities are locked in
		// key order first (as baton-pg locks them, so that two batches
		// never wait for each other in a cycle); a message id is marked
		// processed unless it already was (a duplicate found at commit);
		// an item's entity is written only for a newly marked id and only
		// at the version read; its outbox row only when that write
		// happened. Marks of items whose write did not happen are undone
		// by the next statement of the same transaction (unmark), since a
		// statement cannot delete rows it inserts itself.
		commit: r.Replace(`WITH input AS (
	SELECT unnest($1::int4[]) AS item, unnest($2::bytea[]) AS msg, unnest($3::text[]) AS key,
		unnest($4::bigint[]) AS version, unnest($5::bytea[]) AS state
), locked AS (
	SELECT key FROM {entities} WHERE key = ANY($3::text[]) ORDER BY key FOR UPDATE
), marked AS (
	INSERT INTO {processed} (message_id)
	SELECT msg FROM input ORDER BY msg
	ON CONFLICT DO NOTHING
	RETURNING message_id
), updated AS (
	UPDATE {entities} AS e SET version = e.version + 1, state = i.state
	FROM input i
	WHERE i.version > 0 AND e.key = i.key AND e.version = i.version
		AND i.msg IN (SELECT message_id FROM marked) AND e.key IN (SELECT key FROM locked)
	RETURNING i.item
), inserted AS (
	INSERT INTO {entities} (key, version, state)
	SELECT key, 1, state FROM input WHERE version = 0 AND msg IN (SELECT message_id FROM marked) ORDER BY key
	ON CONFLICT (key) DO NOTHING
	RETURNING key
), applied AS (
	SELECT item FROM updated
	UNION ALL
	SELECT i.item FROM input i JOIN inserted n ON n.key = i.key WHERE i.version = 0
), sent AS (
	INSERT INTO {outbox} (message_id, conversation, causation, destination, type, payload)
	SELECT message_id, conversation, causation, destination, type, payload
	FROM (SELECT unnest($6::int4[]) AS item, unnest($7::bytea[]) AS message_id, unnest($8::bytea[]) AS conversation,
		unnest($9::bytea[]) AS causation, unnest($10::text[]) AS destination, unnest($11::text[]) AS type,
		unnest($12::bytea[]) AS payload) AS o
	WHERE o.item IN (SELECT item FROM applied)
)
SELECT i.item, i.msg IN (SELECT message_id FROM marked), i.item IN (SELECT item FROM applied) FROM input i`),
		unmark: r.Replace(`DELETE FROM {processed} WHERE message_id = ANY($1::bytea[])`),
	}
}

// classicCommitArgs are the parameters of batchedStatements.commit, one
// entry per item and, for an item that emits, one per outbox row.
type classicCommitArgs struct {
	item                     []int32
	msg                      [][]byte
	key                      []string
	version                  []int64
	state                    [][]byte
	outItem                  []int32
	outID, outConv, outCause [][]byte
	outDest, outType         []string
	outPayload               [][]byte
}

// add adds item j: message msg writes state to key at version, and child
// (nil for none) goes to the outbox if the write happens.
func (a *classicCommitArgs) add(j int32, msg baton.TokenID, key string, version int64, state []byte, child *baton.Signal) {
	a.item, a.msg, a.key, a.version, a.state = append(a.item, j), append(a.msg, msg[:]), append(a.key, key), append(a.version, version), append(a.state, state)
	if child != nil {
		a.outItem, a.outID, a.outConv, a.outCause = append(a.outItem, j), append(a.outID, child.ID[:]), append(a.outConv, child.Conversation[:]), append(a.outCause, child.Causation[:])
		a.outDest, a.outType, a.outPayload = append(a.outDest, child.Destination), append(a.outType, child.Type), append(a.outPayload, child.Payload)
	}
}

func (a *classicCommitArgs) args() []any {
	return []any{a.item, a.msg, a.key, a.version, a.state, a.outItem, a.outID, a.outConv, a.outCause, a.outDest, a.outType, a.outPayload}
}

// classicItem is one delivery of a classic batch.
type classicItem struct {
	i       int // index in the deliveries
	sig     baton.Signal
	key     string
	version int64
	step    step
	child   baton.Signal
}

// handleClassicBatch processes sigs as handleClassic would one by one and
// returns what each would have returned. Deliveries that cannot share the
// batch (a second one for an entity, a refused or conflicting one) are
// processed one by one.
func (s *sqlSystem) handleClassicBatch(ctx context.Context, sigs []baton.Signal) []error {
	errs := make([]error, len(sigs))
	var alone []int
	items := make([]classicItem, 0, len(sigs))
	keys := make(map[string]bool, len(sigs))
	msgs := make(map[baton.TokenID]bool, len(sigs))
	for i, sig := range sigs {
		key, err := s.route(sig)
		if err != nil || keys[key] || msgs[sig.ID] {
			alone = append(alone, i)
			continue
		}
		keys[key], msgs[sig.ID] = true, true
		items = append(items, classicItem{i: i, sig: sig, key: key})
	}
	if len(items) > 1 {
		retry, err := s.commitClassicBatch(ctx, items, errs)
		if err != nil {
			s.log.Info("classic batch failed; processing the messages one by one", "messages", len(items), "err", err)
			for _, it := range items {
				alone = append(alone, it.i)
			}
		} else {
			alone = append(alone, retry...)
		}
	} else {
		for _, it := range items {
			alone = append(alone, it.i)
		}
	}
	for _, i := range alone {
		errs[i] = s.handleClassic(ctx, sigs[i])
	}
	return errs
}

// commitClassicBatch reads and commits items in one query and one
// transaction. It fills errs for the items it settled and returns the
// indexes of those to process alone (version conflicts). A non-nil error
// means none was settled; the caller processes each alone, which finds a
// committed one marked as processed.
func (s *sqlSystem) commitClassicBatch(ctx context.Context, items []classicItem, errs []error) (retry []int, err error) {
	keys := make([]string, len(items))
	msgs := make([][]byte, len(items))
	numbers := make([]int32, len(items))
	for j, it := range items {
		keys[j], msgs[j], numbers[j] = it.key, it.sig.ID[:], int32(j+1)
	}
	rows, err := s.pool.Query(ctx, s.batchSQL.load, keys, msgs, numbers)
	if err != nil {
		return nil, err
	}
	seen := make([]bool, len(items))
	for rows.Next() {
		var n int64
		var version *int64
		var state []byte
		var dup bool
		if err := rows.Scan(&n, &version, &state, &dup); err != nil {
			rows.Close()
			return nil, err
		}
		it := &items[n-1]
		if version != nil {
			it.version = *version
		}
		it.step.state, seen[n-1] = state, dup
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}

	var ready []*classicItem
	for j := range items {
		it := &items[j]
		if seen[j] {
			continue // processed before: a duplicate, acked
		}
		if it.step, err = applyStep(it.sig.Type, it.step.state, it.sig.Payload, time.Now()); err != nil {
			errs[it.i] = err
			continue
		}
		if it.step.emit != nil {
			it.child = childSignal(it.sig, it.step.emit, baton.NewTokenID())
		}
		ready = append(ready, it)
	}
	if len(ready) == 0 {
		return nil, nil
	}

	var in classicCommitArgs
	for j, it := range ready {
		var child *baton.Signal
		if it.step.emit != nil {
			child = &it.child
		}
		in.add(int32(j), it.sig.ID, it.key, it.version, it.step.state, child)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rows, err = tx.Query(ctx, s.batchSQL.commit, in.args()...)
	if err != nil {
		return nil, err
	}
	marked := make([]bool, len(ready))
	applied := make([]bool, len(ready))
	for rows.Next() {
		var j int32
		var m, a bool
		if err := rows.Scan(&j, &m, &a); err != nil {
			rows.Close()
			return nil, err
		}
		marked[j], applied[j] = m, a
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var unmark [][]byte
	for j, it := range ready {
		if marked[j] && !applied[j] {
			unmark = append(unmark, it.sig.ID[:])
		}
	}
	if len(unmark) > 0 {
		if _, err := tx.Exec(ctx, s.batchSQL.unmark, unmark); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	poke := false
	for j, it := range ready {
		switch {
		case applied[j]:
			poke = poke || it.step.emit != nil
		case !marked[j]:
			// Marked by a concurrent transaction since the read: a
			// duplicate found at commit, acked.
		default:
			s.conflictCount.Add(1)
			retry = append(retry, it.i)
		}
	}
	if poke {
		select {
		case s.poke <- struct{}{}:
		default:
		}
	}
	return retry, nil
}

// consumeBatches is consume for a handler of batches: receivers fill a
// buffer that workers drain, each taking what is there, up to batchSize
// deliveries, never waiting for more (as engine.Config.Batch does).
func consumeBatches(ctx context.Context, tr transport.Transport, destination string, workers int, log *slog.Logger,
	handle func(context.Context, []baton.Signal) []error, obs *observer) (wait func(), err error) {
	sub, err := tr.Subscribe(ctx, destination)
	if err != nil {
		return nil, err
	}
	work := context.WithoutCancel(ctx)
	received := make(chan transport.Delivery, workers*batchSize)
	var receivers, handlers sync.WaitGroup
	for range workers {
		receivers.Go(func() {
			receiveAll(ctx, sub, destination, log, func(d transport.Delivery) { received <- d })
		})
		handlers.Go(func() {
			for d := range received {
				batch := []transport.Delivery{d}
			gather:
				for len(batch) < batchSize {
					select {
					case d, ok := <-received:
						if !ok {
							break gather
						}
						batch = append(batch, d)
					default:
						break gather
					}
				}
				sigs := make([]baton.Signal, len(batch))
				for i, d := range batch {
					sigs[i] = d.Signal()
				}
				settleBench(work, tr, log, destination, batch, handle(work, sigs), obs)
			}
		})
	}
	return func() {
		receivers.Wait()
		close(received)
		handlers.Wait()
		sub.Close()
	}, nil
}

// settleBench acks the deliveries that were processed (errs[i] == nil),
// in one exchange where tr is a transport.BatchAcker as the engine does,
// and tells obs; it asks for redelivery of the others.
func settleBench(ctx context.Context, tr transport.Transport, log *slog.Logger, destination string, ds []transport.Delivery, errs []error, obs *observer) {
	var done []transport.Delivery
	for i, err := range errs {
		if err != nil {
			log.Warn("processing failed; will be redelivered", "destination", destination, "err", err)
			_ = ds[i].Nack(ctx, 200*time.Millisecond)
			continue
		}
		done = append(done, ds[i])
	}
	for i, err := range transport.AckAll(ctx, tr, done) {
		if err != nil {
			log.Warn("ack failed", "err", err)
			continue
		}
		obs.finish(done[i].Signal())
	}
}
