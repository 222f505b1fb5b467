package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"

	"github.com/batonhq/baton"
	batonmysql "github.com/batonhq/baton/backend/mysql"
)

// DefaultMySQLDSN is the MySQL or MariaDB server of the MySQL variants by
// default (go-sql-driver/mysql's DSN format).
const DefaultMySQLDSN = "root@tcp(127.0.0.1:3306)/test"

// checkMySQL opens a connection to the server at dsn, or says in one line
// why not.
func checkMySQL(ctx context.Context, dsn string) error {
	db, err := openMySQLPool(dsn, 1)
	if err != nil {
		return fmt.Errorf("bench: --mysql-dsn: %w", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("bench: MySQL at %s is unreachable: %v (set --mysql-dsn or BATON_BENCH_MYSQL, or leave out the MySQL variants)", redactMySQLDSN(dsn), err)
	}
	return nil
}

func openMySQLPool(dsn string, size int) (*sql.DB, error) {
	cfg, err := mysqldriver.ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	cfg.InterpolateParams = true // one round trip per statement, as the baton store
	connector, err := mysqldriver.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(size)
	db.SetMaxIdleConns(size)
	return db, nil
}

// redactMySQLDSN keeps a DSN's address and database, never its password.
func redactMySQLDSN(dsn string) string {
	cfg, err := mysqldriver.ParseDSN(dsn)
	if err != nil {
		return "(dsn)"
	}
	return cfg.Addr + "/" + cfg.DBName
}

// mysqlServerPIDs are the MySQL or MariaDB server processes on this host:
// both MySQL variants run against the one server, one variant at a time.
func mysqlServerPIDs(context.Context) []int {
	return append(pidsNamed("mariadbd"), pidsNamed("mysqld")...)
}

// openBatonMySQL runs the engine over one MySQL store: tokens and entities
// in one database, so the fast path, with the options of opts.
func openBatonMySQL(ctx context.Context, env *env, name string, opts batonOptions) (system, error) {
	s := &batonSystem{w: env.workload, log: env.log, opts: opts}
	prefix := env.uniqueName(name) + "_"
	st, err := batonmysql.Open(ctx, env.cfg.MySQLDSN, batonmysql.Config{Prefix: prefix, MaxConns: env.poolSize(), Logger: env.log})
	if err != nil {
		return nil, fmt.Errorf("mysql: %w", err)
	}
	monitor, err := openMySQLPool(env.cfg.MySQLDSN, 1)
	if err != nil {
		st.Close()
		return nil, err
	}
	s.closers = append(s.closers, func() error {
		var errs []error
		for _, t := range []string{"tokens", "entities", "starts", "schema_migrations"} {
			if _, err := st.DB().Exec("DROP TABLE IF EXISTS `" + prefix + t + "`"); err != nil {
				errs = append(errs, err)
			}
		}
		errs = append(errs, st.Close(), monitor.Close())
		return errors.Join(errs...)
	})
	s.tokens, s.entities = st, st
	s.countTokens = func(ctx context.Context) (int64, error) {
		var n int64
		err := monitor.QueryRowContext(ctx, "SELECT count(*) FROM `"+prefix+"tokens`").Scan(&n)
		return n, err
	}
	s.pids = mysqlServerPIDs
	if s.b, err = startBroker(ctx, env.dir(name)); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// mysqlClassic is the classic approach on MySQL: the processed-message
// table and the transactional outbox, a relay and a cleanup job, as
// sqlSystem's classic variant does on PostgreSQL.
type mysqlClassic struct {
	w         workload
	db        *sql.DB
	monitor   *sql.DB
	prefix    string
	b         *broker
	log       *slog.Logger
	q         mysqlClassicStatements
	poke      chan struct{}
	conflicts atomic.Int64
}

type mysqlClassicStatements struct {
	load, insertEntity, updateEntity, state, markProcessed, countProcessed, cleanup string
	insertOutbox, selectOutbox, deleteOutbox, countOutbox                           string
	ddl                                                                             []string
}

func newMySQLClassicStatements(prefix string) mysqlClassicStatements {
	r := strings.NewReplacer("{entities}", "`"+prefix+"entities`", "{processed}", "`"+prefix+"processed`", "{outbox}", "`"+prefix+"outbox`")
	return mysqlClassicStatements{
		// One query learns whether the message was processed and what the
		// entity holds.
		load: r.Replace("SELECT e.version, e.state, EXISTS (SELECT 1 FROM {processed} WHERE message_id = ?) " +
			"FROM (SELECT 1 AS one) AS x LEFT JOIN {entities} AS e ON e.k = ?"),
		insertEntity:   r.Replace("INSERT IGNORE INTO {entities} (k, version, state) VALUES (?, 1, ?)"),
		updateEntity:   r.Replace("UPDATE {entities} SET version = version + 1, state = ? WHERE k = ? AND version = ?"),
		state:          r.Replace("SELECT state FROM {entities} WHERE k = ?"),
		markProcessed:  r.Replace("INSERT IGNORE INTO {processed} (message_id) VALUES (?)"),
		countProcessed: r.Replace("SELECT count(*) FROM {processed}"),
		cleanup:        r.Replace("DELETE FROM {processed} WHERE processed_at < NOW(6) - INTERVAL ? SECOND ORDER BY processed_at LIMIT ?"),
		insertOutbox: r.Replace("INSERT INTO {outbox} (message_id, conversation, causation, destination, type, payload) " +
			"VALUES (?, ?, ?, ?, ?, ?)"),
		selectOutbox: r.Replace("SELECT id, message_id, conversation, causation, destination, type, payload FROM {outbox} ORDER BY id LIMIT ?"),
		deleteOutbox: r.Replace("DELETE FROM {outbox} WHERE id IN "),
		countOutbox:  r.Replace("SELECT count(*) FROM {outbox}"),
		ddl: []string{
			r.Replace("CREATE TABLE {entities} (k VARBINARY(512) PRIMARY KEY, version BIGINT NOT NULL, state LONGBLOB NOT NULL) ENGINE = InnoDB"),
			r.Replace("CREATE TABLE {processed} (message_id BINARY(16) PRIMARY KEY, processed_at DATETIME(6) NOT NULL DEFAULT NOW(6), " +
				"KEY (processed_at)) ENGINE = InnoDB"),
			r.Replace("CREATE TABLE {outbox} (id BIGINT AUTO_INCREMENT PRIMARY KEY, message_id BINARY(16) NOT NULL, " +
				"conversation BINARY(16) NOT NULL, causation BINARY(16) NOT NULL, destination VARBINARY(200) NOT NULL, " +
				"type VARBINARY(200) NOT NULL, payload LONGBLOB NOT NULL) ENGINE = InnoDB"),
		},
	}
}

func openMySQLClassic(ctx context.Context, env *env, name string) (system, error) {
	s := &mysqlClassic{w: env.workload, log: env.log, poke: make(chan struct{}, 1), prefix: env.uniqueName(name) + "_"}
	s.q = newMySQLClassicStatements(s.prefix)
	var err error
	if s.db, err = openMySQLPool(env.cfg.MySQLDSN, env.poolSize()); err != nil {
		return nil, err
	}
	if s.monitor, err = openMySQLPool(env.cfg.MySQLDSN, 1); err != nil {
		s.db.Close()
		return nil, err
	}
	for _, stmt := range s.q.ddl {
		if _, err := s.db.ExecContext(ctx, stmt); err != nil {
			s.close()
			return nil, fmt.Errorf("mysql: create tables: %w", err)
		}
	}
	if s.b, err = startBroker(ctx, env.dir(name)); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *mysqlClassic) start(ctx context.Context, workers int, obs *observer) (func(), error) {
	var waits []func()
	for _, d := range destinations {
		wait, err := consume(ctx, s.b.tr, d, workers, s.log, s.handle, obs)
		if err != nil {
			for _, w := range waits {
				w()
			}
			return nil, err
		}
		waits = append(waits, wait)
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.relay(ctx) })
	wg.Go(func() { s.cleanupLoop(ctx) })
	return func() {
		for _, w := range waits {
			w()
		}
		wg.Wait()
	}, nil
}

func (s *mysqlClassic) begin(ctx context.Context, p payload) error {
	body, err := jsonBody(p)
	if err != nil {
		return err
	}
	id := baton.NewTokenID()
	return publishRetrying(ctx, s.b.tr, baton.Signal{ID: id, Conversation: id, Destination: destOrders, Type: typePlace, Payload: body})
}

// handle: load the entity and check the processed table in one query (a
// hit is a duplicate), run the activity, then in one transaction mark the
// message processed, write the entity conditional on its version and add
// the outbox row; a conflict rolls back and runs it again.
func (s *mysqlClassic) handle(ctx context.Context, sig baton.Signal) error {
	var p payload
	if err := unmarshalState(sig.Payload, &p); err != nil {
		return err
	}
	key, err := s.w.entityKey(sig.Type, p)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		var version sql.NullInt64
		var state []byte
		var seen bool
		if err := s.db.QueryRowContext(ctx, s.q.load, sig.ID[:], []byte(key)).Scan(&version, &state, &seen); err != nil {
			return fmt.Errorf("load %s: %w", key, err)
		}
		if seen {
			return nil // processed before: a duplicate
		}
		st, err := applyStep(sig.Type, state, sig.Payload, time.Now())
		if err != nil {
			return err
		}
		applied, duplicate, err := s.commit(ctx, sig, key, version.Int64, st)
		switch {
		case err != nil:
			return err
		case duplicate:
			return nil
		case !applied:
			s.conflicts.Add(1)
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

func (s *mysqlClassic) commit(ctx context.Context, sig baton.Signal, key string, version int64, st step) (applied, duplicate bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, false, err
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit
	res, err := tx.ExecContext(ctx, s.q.markProcessed, sig.ID[:])
	if err != nil {
		return false, false, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, true, nil
	}
	if version == 0 {
		res, err = tx.ExecContext(ctx, s.q.insertEntity, []byte(key), st.state)
	} else {
		res, err = tx.ExecContext(ctx, s.q.updateEntity, st.state, []byte(key), version)
	}
	if err != nil {
		return false, false, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, false, nil
	}
	if st.emit != nil {
		child := childSignal(sig, st.emit, baton.NewTokenID())
		if _, err := tx.ExecContext(ctx, s.q.insertOutbox, child.ID[:], child.Conversation[:], child.Causation[:],
			[]byte(child.Destination), []byte(child.Type), child.Payload); err != nil {
			return false, false, err
		}
	}
	if err := tx.Commit(); err != nil {
		return false, false, fmt.Errorf("commit: %w", err)
	}
	return true, false, nil
}

// relay publishes outbox rows in id order and deletes the published ones,
// in batches, woken after each commit that wrote a row.
func (s *mysqlClassic) relay(ctx context.Context) { relayLoop(ctx, s.poke, s.log, s.relayOnce) }

func (s *mysqlClassic) relayOnce(ctx context.Context) (int, error) {
	rows, err := s.db.QueryContext(ctx, s.q.selectOutbox, relayBatch)
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
		var msg, conv, cause, dest, typ []byte
		if err := rows.Scan(&r.id, &msg, &conv, &cause, &dest, &typ, &r.sig.Payload); err != nil {
			rows.Close()
			return 0, err
		}
		copy(r.sig.ID[:], msg)
		copy(r.sig.Conversation[:], conv)
		copy(r.sig.Causation[:], cause)
		r.sig.Destination, r.sig.Type = string(dest), string(typ)
		batch = append(batch, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(batch) == 0 {
		return 0, nil
	}
	published := publishAll(ctx, s.b.tr, len(batch), func(i int) baton.Signal { return batch[i].sig })
	var ids []any
	for i, r := range batch {
		if published[i] {
			ids = append(ids, r.id)
		}
	}
	if len(ids) > 0 {
		in := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(ids)), ", ") + ")"
		if _, err := s.db.ExecContext(ctx, s.q.deleteOutbox+in, ids...); err != nil {
			return 0, err
		}
	}
	if len(ids) < len(batch) {
		return len(ids), fmt.Errorf("%d of %d outbox messages not published; retrying", len(batch)-len(ids), len(batch))
	}
	return len(batch), nil
}

// cleanupLoop deletes processed rows older than ClassicRetention: none in
// a benchmark run, so the table grows; it runs so that its cost counts.
func (s *mysqlClassic) cleanupLoop(ctx context.Context) {
	for {
		for ctx.Err() == nil {
			res, err := s.db.ExecContext(ctx, s.q.cleanup, int64(ClassicRetention/time.Second), classicCleanupBatch)
			if err != nil {
				break
			}
			if n, _ := res.RowsAffected(); n < classicCleanupBatch {
				break
			}
		}
		if sleepCtx(ctx, classicCleanupInterval) != nil {
			return
		}
	}
}

func (s *mysqlClassic) stored(ctx context.Context) (int64, error) {
	var n int64
	err := s.monitor.QueryRowContext(ctx, s.q.countProcessed).Scan(&n)
	return n, err
}

func (s *mysqlClassic) state(ctx context.Context, key string) ([]byte, error) {
	var state []byte
	err := s.db.QueryRowContext(ctx, s.q.state, []byte(key)).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return state, err
}

func (s *mysqlClassic) leftover(ctx context.Context) (string, error) {
	var n int64
	for range 50 { // the relay may still be deleting its last batch
		if err := s.db.QueryRowContext(ctx, s.q.countOutbox).Scan(&n); err != nil {
			return "", err
		}
		if n == 0 {
			return "", nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Sprintf("%d outbox rows left", n), nil
}

func (s *mysqlClassic) serverPIDs(ctx context.Context) []int { return mysqlServerPIDs(ctx) }
func (s *mysqlClassic) counts() counts                       { return counts{conflicts: s.conflicts.Load()} }
func (s *mysqlClassic) idle()                                {}

func (s *mysqlClassic) close() error {
	if s.b != nil {
		s.b.close()
	}
	var errs []error
	for _, t := range []string{"entities", "processed", "outbox"} {
		if _, err := s.db.Exec("DROP TABLE IF EXISTS `" + s.prefix + t + "`"); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, s.db.Close(), s.monitor.Close())
	return errors.Join(errs...)
}
