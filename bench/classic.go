package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/transport"
)

// Classic deduplication settings. In production the processed table keeps
// a message id for a retention window (7 days, NServiceBus's default
// outbox retention) and a cleanup job deletes older rows every hour; a
// duplicate that arrives after the window is processed again. The job runs
// in the benchmark too, but no row is old enough, so the table grows for
// the whole run.
const (
	ClassicRetention       = 7 * 24 * time.Hour
	classicCleanupInterval = time.Minute
	classicCleanupBatch    = 10000
	// classic-steady's retention and cleanup interval: a week and an hour
	// brought down to a benchmark's seconds, so that rows are deleted
	// while the run is measured and the table stays near its steady size.
	classicSteadyRetention = 2 * time.Second
	classicSteadyCleanup   = 250 * time.Millisecond
	relayBatch             = 200
	relayPoll              = 100 * time.Millisecond
	relayParallel          = 16
)

// sqlSystem is the variants without tokens, over plain tables in one
// PostgreSQL schema: the at-least-once ceiling (classic false) and the
// classic processed-table-plus-outbox approach (classic true).
type sqlSystem struct {
	sqlOptions
	w             workload
	pool          *pgxpool.Pool
	monitor       *pgxpool.Pool
	schema        string
	app           string
	b             *broker
	log           *slog.Logger
	sql           sqlStatements
	batchSQL      batchedStatements
	poke          chan struct{}
	conflictCount atomic.Int64
}

type sqlStatements struct {
	load, loadClassic, insertEntity, updateEntity, state  string
	markProcessed, countProcessed, cleanup                string
	insertOutbox, selectOutbox, deleteOutbox, countOutbox string
}

func newSQLStatements(schema string) sqlStatements {
	q := pgx.Identifier{schema}.Sanitize()
	r := strings.NewReplacer("{entities}", q+".entities", "{processed}", q+".processed", "{outbox}", q+".outbox")
	return sqlStatements{
		load: r.Replace(`SELECT version, state FROM {entities} WHERE key = $1`),
		// The classic consumer learns in one query whether the message
		// was processed and what the entity holds.
		loadClassic: r.Replace(`SELECT e.version, e.state, EXISTS (SELECT 1 FROM {processed} WHERE message_id = $2)
FROM (VALUES (1)) AS one (x) LEFT JOIN {entities} e ON e.key = $1`),
		insertEntity: r.Replace(`INSERT INTO {entities} (key, version, state) VALUES ($1, 1, $2) ON CONFLICT (key) DO NOTHING`),
		updateEntity: r.Replace(`UPDATE {entities} SET version = version + 1, state = $3 WHERE key = $1 AND version = $2`),
		state:        r.Replace(`SELECT state FROM {entities} WHERE key = $1`),

		markProcessed:  r.Replace(`INSERT INTO {processed} (message_id) VALUES ($1) ON CONFLICT DO NOTHING`),
		countProcessed: r.Replace(`SELECT count(*) FROM {processed}`),
		cleanup: r.Replace(`DELETE FROM {processed} WHERE message_id IN (
	SELECT message_id FROM {processed} WHERE processed_at < now() - $1::interval ORDER BY processed_at LIMIT $2)`),

		insertOutbox: r.Replace(`INSERT INTO {outbox} (message_id, conversation, causation, destination, type, payload)
VALUES ($1, $2, $3, $4, $5, $6)`),
		selectOutbox: r.Replace(`SELECT id, message_id, conversation, causation, destination, type, payload
FROM {outbox} ORDER BY id LIMIT $1`),
		deleteOutbox: r.Replace(`DELETE FROM {outbox} WHERE id = ANY($1)`),
		countOutbox:  r.Replace(`SELECT count(*) FROM {outbox}`),
	}
}

const sqlSchema = `
CREATE TABLE {entities} (
	key     text   PRIMARY KEY,
	version bigint NOT NULL,
	state   bytea  NOT NULL
);
-- Classic only: one row per processed message id, kept for the retention
-- window; the index on processed_at serves the cleanup job.
CREATE TABLE {processed} (
	message_id   bytea       PRIMARY KEY,
	processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON {processed} (processed_at);
-- Classic only: the transactional outbox the relay drains.
CREATE TABLE {outbox} (
	id           bigserial PRIMARY KEY,
	message_id   bytea NOT NULL,
	conversation bytea NOT NULL,
	causation    bytea NOT NULL,
	destination  text  NOT NULL,
	type         text  NOT NULL,
	payload      bytea NOT NULL,
	created_at   timestamptz NOT NULL DEFAULT now()
);`

// sqlOptions choose among the variants without tokens.
type sqlOptions struct {
	classic bool // the processed table and outbox; else the ceiling
	batches bool // classic-batched: deliveries handled in batches
	// retention is how long processed rows are kept, cleanupEvery how
	// often the cleanup job runs; zero: ClassicRetention and
	// classicCleanupInterval.
	retention, cleanupEvery time.Duration
}

func openSQLSystem(ctx context.Context, env *env, opts sqlOptions, name string) (system, error) {
	if opts.retention == 0 {
		opts.retention, opts.cleanupEvery = ClassicRetention, classicCleanupInterval
	}
	s := &sqlSystem{sqlOptions: opts, w: env.workload, monitor: env.monitor, log: env.log, poke: make(chan struct{}, 1)}
	s.schema = env.uniqueName(name)
	s.app = "baton-bench-" + s.schema
	pool, err := openPool(ctx, env.cfg.PostgresDSN, s.app, env.poolSize())
	if err != nil {
		return nil, err
	}
	s.pool = pool
	q := pgx.Identifier{s.schema}.Sanitize()
	ddl := "CREATE SCHEMA " + q + ";" + strings.NewReplacer("{entities}", q+".entities", "{processed}", q+".processed", "{outbox}", q+".outbox").Replace(sqlSchema)
	if _, err := pool.Exec(ctx, ddl); err != nil {
		pool.Close()
		return nil, fmt.Errorf("create schema %s: %w", s.schema, err)
	}
	s.sql = newSQLStatements(s.schema)
	s.batchSQL = newBatchedStatements(s.schema)
	if s.b, err = startBroker(ctx, env.dir(name)); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *sqlSystem) start(ctx context.Context, workers int, obs *observer) (func(), error) {
	var waits []func()
	for _, d := range destinations {
		var wait func()
		var err error
		if s.batches {
			wait, err = consumeBatches(ctx, s.b.tr, d, workers, s.log, s.handleClassicBatch, obs)
		} else {
			wait, err = consume(ctx, s.b.tr, d, workers, s.log, s.handle, obs)
		}
		if err != nil {
			for _, w := range waits {
				w()
			}
			return nil, err
		}
		waits = append(waits, wait)
	}
	var wg sync.WaitGroup
	if s.classic {
		wg.Go(func() { s.relay(ctx) })
		wg.Go(func() { s.cleanupLoop(ctx) })
	}
	return func() {
		for _, w := range waits {
			w()
		}
		wg.Wait()
	}, nil
}

// begin publishes the root message straight to the broker: without
// tokens, the edge has nothing to record first.
func (s *sqlSystem) begin(ctx context.Context, p payload) error {
	body, err := jsonBody(p)
	if err != nil {
		return err
	}
	id := baton.NewTokenID()
	return publishRetrying(ctx, s.b.tr, baton.Signal{ID: id, Conversation: id, Destination: destOrders, Type: typePlace, Payload: body})
}

func (s *sqlSystem) handle(ctx context.Context, sig baton.Signal) error {
	if s.classic {
		return s.handleClassic(ctx, sig)
	}
	return s.handleCeiling(ctx, sig)
}

// handleCeiling is at-least-once without deduplication: load the entity,
// run the activity, update the entity (one autocommit statement,
// conditional on the version so that concurrent updates are not lost),
// publish the next signal; the caller then acks. A redelivered message is
// applied again.
func (s *sqlSystem) handleCeiling(ctx context.Context, sig baton.Signal) error {
	key, err := s.route(sig)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		var version int64
		var state []byte
		err := s.pool.QueryRow(ctx, s.sql.load, key).Scan(&version, &state)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("load %s: %w", key, err)
		}
		st, err := applyStep(sig.Type, state, sig.Payload, time.Now())
		if err != nil {
			return err
		}
		var n int64
		if version == 0 {
			tag, err := s.pool.Exec(ctx, s.sql.insertEntity, key, st.state)
			if err != nil {
				return fmt.Errorf("commit %s: %w", key, err)
			}
			n = tag.RowsAffected()
		} else {
			tag, err := s.pool.Exec(ctx, s.sql.updateEntity, key, version, st.state)
			if err != nil {
				return fmt.Errorf("commit %s: %w", key, err)
			}
			n = tag.RowsAffected()
		}
		if n == 0 {
			s.conflictCount.Add(1)
			if err := sleepCtx(ctx, backoff(attempt+1)); err != nil {
				return err
			}
			continue
		}
		if st.emit != nil {
			return publishRetrying(ctx, s.b.tr, childSignal(sig, st.emit, baton.NewTokenID()))
		}
		return nil
	}
}

// handleClassic is the processed-message table and transactional outbox
// of NServiceBus and MassTransit, kept as lean as we could make it:
//
//  1. one query loads the entity and checks the processed table (a hit
//     is a duplicate: ack and stop);
//  2. run the activity;
//  3. one round trip sends BEGIN, the insert of the message id into the
//     processed table, the entity's update conditional on its version
//     and the outbox row of the next message (the way Npgsql sends BEGIN
//     with the first command of a transaction);
//  4. COMMIT, or ROLLBACK and retry from 1 on a version conflict;
//  5. wake the relay, which publishes outbox rows and deletes them in
//     batches; the caller acks.
func (s *sqlSystem) handleClassic(ctx context.Context, sig baton.Signal) error {
	key, err := s.route(sig)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		var version *int64
		var state []byte
		var seen bool
		if err := s.pool.QueryRow(ctx, s.sql.loadClassic, key, sig.ID[:]).Scan(&version, &state, &seen); err != nil {
			return fmt.Errorf("load %s: %w", key, err)
		}
		if seen {
			return nil // processed before: a duplicate
		}
		st, err := applyStep(sig.Type, state, sig.Payload, time.Now())
		if err != nil {
			return err
		}
		var v int64
		if version != nil {
			v = *version
		}
		applied, duplicate, err := s.commitClassic(ctx, sig, key, v, st)
		switch {
		case err != nil:
			return err
		case duplicate:
			return nil
		case !applied:
			s.conflictCount.Add(1)
			if err := sleepCtx(ctx, backoff(attempt+1)); err != nil {
				return err
			}
			continue
		}
		if st.emit != nil {
			select {
			case s.poke <- struct{}{}:
			default:
			}
		}
		return nil
	}
}

func (s *sqlSystem) commitClassic(ctx context.Context, sig baton.Signal, key string, version int64, st step) (applied, duplicate bool, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, false, err
	}
	defer conn.Release()
	var b pgx.Batch
	b.Queue("BEGIN")
	b.Queue(s.sql.markProcessed, sig.ID[:])
	if version == 0 {
		b.Queue(s.sql.insertEntity, key, st.state)
	} else {
		b.Queue(s.sql.updateEntity, key, version, st.state)
	}
	if st.emit != nil {
		child := childSignal(sig, st.emit, baton.NewTokenID())
		b.Queue(s.sql.insertOutbox, child.ID[:], child.Conversation[:], child.Causation[:], child.Destination, child.Type, child.Payload)
	}
	br := conn.SendBatch(ctx, &b)
	_, err = br.Exec()
	var marked, updated int64
	if err == nil {
		var tag interface{ RowsAffected() int64 }
		if tag, err = br.Exec(); err == nil {
			marked = tag.RowsAffected()
			if tag, err = br.Exec(); err == nil {
				updated = tag.RowsAffected()
				if st.emit != nil {
					_, err = br.Exec()
				}
			}
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil || marked == 0 || updated == 0 {
		// A connection left inside a transaction is discarded by the
		// pool if this fails.
		_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return false, err == nil && marked == 0, err
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		return false, false, fmt.Errorf("commit: %w", err)
	}
	return true, false, nil
}

// relay publishes outbox rows in id order and deletes the published ones,
// in batches: woken after each commit that wrote a row, and polling in
// case a wake-up was missed or a publish failed.
func (s *sqlSystem) relay(ctx context.Context) { relayLoop(ctx, s.poke, s.log, s.relayOnce) }

// relayLoop runs once, a relay's pass over its outbox, whenever poke says
// a row was written and every relayPoll, and again at once while a pass
// finds a full batch.
func relayLoop(ctx context.Context, poke <-chan struct{}, log *slog.Logger, once func(context.Context) (int, error)) {
	ticker := time.NewTicker(relayPoll)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-poke:
		case <-ticker.C:
		}
		for ctx.Err() == nil {
			n, err := once(ctx)
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("relay failed", "err", err)
				}
				break
			}
			if n < relayBatch {
				break
			}
		}
	}
}

func (s *sqlSystem) relayOnce(ctx context.Context) (int, error) {
	rows, err := s.pool.Query(ctx, s.sql.selectOutbox, relayBatch)
	if err != nil {
		return 0, err
	}
	type row struct {
		id  int64
		sig baton.Signal
	}
	var batch []row
	for rows.Next() {
		var r row
		var msg, conv, cause []byte
		if err := rows.Scan(&r.id, &msg, &conv, &cause, &r.sig.Destination, &r.sig.Type, &r.sig.Payload); err != nil {
			rows.Close()
			return 0, err
		}
		copy(r.sig.ID[:], msg)
		copy(r.sig.Conversation[:], conv)
		copy(r.sig.Causation[:], cause)
		batch = append(batch, r)
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(batch) == 0 {
		return 0, nil
	}
	published := publishAll(ctx, s.b.tr, len(batch), func(i int) baton.Signal { return batch[i].sig })
	ids := make([]int64, 0, len(batch))
	for i, r := range batch {
		if published[i] {
			ids = append(ids, r.id)
		}
	}
	if _, err := s.pool.Exec(ctx, s.sql.deleteOutbox, ids); err != nil {
		return 0, err
	}
	if len(ids) < len(batch) {
		return len(ids), fmt.Errorf("%d of %d outbox messages not published; retrying", len(batch)-len(ids), len(batch))
	}
	return len(batch), nil
}

// publishAll publishes the n signals that sig returns, relayParallel at a
// time, and reports which the broker accepted: a relay's batch.
func publishAll(ctx context.Context, tr transport.Transport, n int, sig func(int) baton.Signal) []bool {
	published := make([]bool, n)
	sem := make(chan struct{}, relayParallel)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			published[i] = tr.Publish(ctx, sig(i)) == nil
		})
	}
	wg.Wait()
	return published
}

// cleanupLoop is the classic approach's retention job: it deletes
// processed-message rows older than the retention, in batches. With
// ClassicRetention no row of a benchmark run is that old, so it deletes
// nothing and the table grows; it runs so that its cost is part of the
// measurement. classic-steady's short retention makes it delete as many
// rows as the consumers write.
func (s *sqlSystem) cleanupLoop(ctx context.Context) {
	for {
		for ctx.Err() == nil {
			tag, err := s.pool.Exec(ctx, s.sql.cleanup, s.retention, classicCleanupBatch)
			if err != nil || tag.RowsAffected() < classicCleanupBatch {
				break
			}
		}
		if sleepCtx(ctx, s.cleanupEvery) != nil {
			return
		}
	}
}

func (s *sqlSystem) route(sig baton.Signal) (string, error) {
	var p payload
	if err := unmarshalState(sig.Payload, &p); err != nil {
		return "", err
	}
	return s.w.entityKey(sig.Type, p)
}

func (s *sqlSystem) stored(ctx context.Context) (int64, error) {
	if !s.classic {
		return 0, nil
	}
	var n int64
	err := s.monitor.QueryRow(ctx, s.sql.countProcessed).Scan(&n)
	return n, err
}

func (s *sqlSystem) state(ctx context.Context, key string) ([]byte, error) {
	var state []byte
	err := s.pool.QueryRow(ctx, s.sql.state, key).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return state, err
}

func (s *sqlSystem) leftover(ctx context.Context) (string, error) {
	if !s.classic {
		return "", nil
	}
	var n int64
	// The relay may still be deleting its last batch.
	for range 50 {
		if err := s.pool.QueryRow(ctx, s.sql.countOutbox).Scan(&n); err != nil {
			return "", err
		}
		if n == 0 {
			return "", nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Sprintf("%d outbox rows left", n), nil
}

func (s *sqlSystem) serverPIDs(ctx context.Context) []int { return backendPIDs(ctx, s.monitor, s.app) }
func (s *sqlSystem) counts() counts                       { return counts{conflicts: s.conflictCount.Load()} }
func (s *sqlSystem) idle()                                { s.pool.Reset() }

func (s *sqlSystem) close() error {
	if s.b != nil {
		s.b.close()
	}
	if s.pool == nil {
		return nil
	}
	_, err := s.pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{s.schema}.Sanitize()+" CASCADE")
	s.pool.Close()
	return err
}

// childSignal is the signal an activity sends next.
func childSignal(parent baton.Signal, e *emitted, id baton.TokenID) baton.Signal {
	return baton.Signal{ID: id, Conversation: parent.Conversation, Causation: parent.ID,
		Destination: e.destination, Type: e.typ, Payload: e.body}
}
