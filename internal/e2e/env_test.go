package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/embedded"
	"github.com/batonhq/baton/backend/etcd"
	"github.com/batonhq/baton/backend/mysql"
	"github.com/batonhq/baton/backend/postgres"
	"github.com/batonhq/baton/backend/redis"
	"github.com/batonhq/baton/backend/split"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/internal/testenv/etcdcluster"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/transport"
	"github.com/batonhq/baton/transport/nats"
)

// natsDuplicateWindow is the JetStream deduplication window of the e2e
// stream: the shortest JetStream allows. The transport sends the token id
// as Nats-Msg-Id, so with the default window (2m) JetStream itself would
// drop the duplicates that the test publishes, and they would never reach
// the engines. Copies are published at least duplicateGap apart.
const (
	natsDuplicateWindow = 100 * time.Millisecond
	duplicateGap        = 250 * time.Millisecond
)

// namespace names everything one run creates on the shared services, so
// that runs (and other tests) never see each other's data.
type namespace struct {
	id          string
	pgSchema    string
	mysqlPrefix string
	redisPrefix string
	etcdPrefix  string
	natsStream  string
	natsPrefix  string
	amqpPrefix  string
}

func newNamespace() namespace {
	var b [5]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	return namespace{
		id:          id,
		pgSchema:    "e2e_" + id,
		mysqlPrefix: "e2e_" + id + "_",
		redisPrefix: "e2e-" + id,
		etcdPrefix:  "e2e-" + id + "/",
		natsStream:  "E2E_" + id,
		natsPrefix:  "e2e_" + id,
		amqpPrefix:  "e2e-" + id,
	}
}

// services are the test's own, direct connections (no proxy) for one run.
type services struct {
	ns namespace

	pgURL, mysqlDSN, redisURL, natsURL, amqpURL string

	pg    *postgres.Store // when tokens or entities are in PostgreSQL
	my    *mysql.Store    // when tokens or entities are in MySQL
	split *split.Store    // when tokens are split over several Redis stores
	etcd  *etcd.Store     // when tokens are in etcd
	// etcdCluster is the row's own etcd cluster, when tokens are in etcd.
	etcdCluster *etcdcluster.Cluster
	pub         transport.Transport                // the test publishes root signals with it
	tokens      store.TokenStore                   // direct token store, nil for embedded
	ents        store.EntityStore                  // direct entity store, nil for embedded
	drain       func(context.Context) (int, error) // signals still queued
}

// connect finds the services that row needs (skipping or failing as
// testenv decides), opens the test's own connections and registers the
// removal of everything the run creates.
func connect(t *testing.T, ctx context.Context, r row, ns namespace) *services {
	t.Helper()
	s := &services{ns: ns}
	if r.tokens == "postgres" || r.entities == "postgres" {
		s.pgURL = testenv.Addr(t, testenv.Postgres)
	}
	if r.tokens == "mysql" || r.entities == "mysql" {
		s.mysqlDSN = testenv.Addr(t, testenv.MySQL)
	}
	if r.tokens == "redis" {
		s.redisURL = testenv.Addr(t, testenv.Redis)
	}
	switch r.transport {
	case "nats":
		s.natsURL = testenv.Addr(t, testenv.NATS)
	case "rabbitmq":
		s.amqpURL = testenv.Addr(t, testenv.RabbitMQ)
	}

	if s.pgURL != "" {
		pg, err := postgres.Open(ctx, s.pgURL, postgres.Config{Schema: ns.pgSchema})
		if err != nil {
			t.Fatalf("postgres: %v", err)
		}
		t.Cleanup(func() { pg.Close() })
		t.Cleanup(func() {
			if _, err := pg.Pool().Exec(context.Background(), "DROP SCHEMA "+quoteIdent(ns.pgSchema)+" CASCADE"); err != nil {
				t.Errorf("drop schema %s: %v", ns.pgSchema, err)
			}
		})
		s.pg = pg
		if r.tokens == "postgres" {
			s.tokens = pg
		}
		if r.entities == "postgres" {
			s.ents = pg
		}
	}
	if s.mysqlDSN != "" {
		my, err := mysql.Open(ctx, s.mysqlDSN, mysql.Config{Prefix: ns.mysqlPrefix})
		if err != nil {
			t.Fatalf("mysql: %v", err)
		}
		t.Cleanup(func() { my.Close() })
		t.Cleanup(func() {
			for _, table := range []string{"tokens", "entities", "starts", "schema_migrations"} {
				if _, err := my.DB().Exec("DROP TABLE IF EXISTS `" + ns.mysqlPrefix + table + "`"); err != nil {
					t.Errorf("drop table %s%s: %v", ns.mysqlPrefix, table, err)
				}
			}
		})
		s.my = my
		if r.tokens == "mysql" {
			s.tokens = my
		}
		if r.entities == "mysql" {
			s.ents = my
		}
	}
	if s.redisURL != "" {
		var parts []store.TokenStore
		for _, prefix := range RedisPartPrefixes(ns.redisPrefix, r.redisParts) {
			rs, err := redis.Open(ctx, redis.Config{URL: s.redisURL, Prefix: prefix, AllowUnsafeDurability: true})
			if err != nil {
				t.Fatalf("redis: %v", err)
			}
			t.Cleanup(func() { rs.Close() })
			parts = append(parts, rs)
		}
		s.tokens = parts[0]
		if len(parts) > 1 {
			tokens, err := split.Open(ctx, parts...)
			if err != nil {
				t.Fatalf("split over %d Redis stores: %v", len(parts), err)
			}
			s.tokens, s.split = tokens, tokens
		}
		t.Cleanup(func() {
			keys, err := redisKeys(context.Background(), s.redisURL, ns.redisPrefix)
			if err == nil && len(keys) > 0 {
				err = withRedis(context.Background(), s.redisURL, func(c *goredis.Client) error {
					return c.Del(context.Background(), keys...).Err()
				})
			}
			if err != nil {
				t.Errorf("remove redis keys %s:*: %v", ns.redisPrefix, err)
			}
		})
	}
	if r.tokens == "etcd" {
		s.etcdCluster = etcdcluster.Start(t, 3)
		es, err := etcd.Open(ctx, etcd.Config{Endpoints: s.etcdCluster.Endpoints(), Prefix: ns.etcdPrefix})
		if err != nil {
			t.Fatalf("etcd: %v", err)
		}
		t.Cleanup(func() { es.Close() })
		s.etcd, s.tokens = es, es
	}
	switch r.transport {
	case "nats":
		// The machine's NATS does not sync every write and has no
		// monitoring port. The test kills workers, not the server, so the
		// server's durability is not what it checks (transport/nats's own
		// tests do, against an embedded server that syncs always).
		tr, err := nats.New(ctx, nats.Config{URL: s.natsURL, Stream: ns.natsStream, Prefix: ns.natsPrefix,
			DuplicateWindow: natsDuplicateWindow, MaxDeliver: 1 << 20, AllowUnsafeDurability: true})
		if err != nil {
			t.Fatalf("nats: %v", err)
		}
		t.Cleanup(func() { tr.Close() })
		nc, err := natsgo.Connect(s.natsURL)
		if err != nil {
			t.Fatalf("nats: %v", err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatalf("nats: %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := js.DeleteStream(ctx, ns.natsStream); err != nil {
				t.Errorf("delete stream %s: %v", ns.natsStream, err)
			}
			nc.Close()
		})
		s.pub = tr
		s.drain = func(ctx context.Context) (int, error) {
			stream, err := js.Stream(ctx, ns.natsStream)
			if err != nil {
				return 0, err
			}
			info, err := stream.Info(ctx)
			if err != nil {
				return 0, err
			}
			return int(info.State.Msgs), nil
		}
	case "rabbitmq":
		s.pub, s.drain = connectRabbitMQ(t, ctx, s.amqpURL, ns)
	default:
		t.Fatalf("unknown transport %q", r.transport)
	}
	return s
}

// issue creates the root token of sig in tokens, in sig's conversation,
// and returns sig with the id the store chose. Each root has a
// conversation of its own, so after an unknown outcome the conversation
// tells whether the root was created (a second one would stay live).
func issue(ctx context.Context, tokens store.TokenStore, sig baton.Signal) (baton.Signal, error) {
	tok := sig.Token()
	tok.ID, tok.CreatedAt = baton.TokenID{}, time.Now()
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		var root baton.Token
		if root, err = tokens.Issue(ctx, tok); err == nil {
			sig.ID = root.ID
			return sig, nil
		}
		if !store.NotApplied(err) {
			if live, lerr := tokens.ListByConversation(ctx, sig.Conversation, store.Page{}); lerr == nil && len(live) > 0 {
				sig.ID = live[0].ID
				return sig, nil
			}
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			break
		}
	}
	return sig, fmt.Errorf("issue root of conversation %s: %w", sig.Conversation, err)
}

// publish sends sig, retrying: every error means "outcome unknown", and a
// second copy is harmless by design.
func publish(ctx context.Context, tr transport.Transport, sig baton.Signal) error {
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = tr.Publish(pctx, sig)
		cancel()
		if err == nil {
			return nil
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			break
		}
	}
	return fmt.Errorf("publish %s: %w", sig.ID, err)
}

// A reader reads part of a snapshot: the entities under keys and the live
// tokens of destinations.
type reader interface {
	read(ctx context.Context, keys, destinations []string) (part, error)
}

type part struct {
	Entities  []store.Entity `json:"entities"`
	Tokens    []baton.Token  `json:"tokens"`
	StaleKeys []string       `json:"stale_keys"`
}

// storeReader reads stores directly; either may be nil.
type storeReader struct {
	tokens   store.TokenStore
	entities store.EntityStore
}

func (r storeReader) read(ctx context.Context, keys, destinations []string) (part, error) {
	var p part
	if r.entities != nil {
		for _, key := range keys {
			e, err := r.entities.Load(ctx, key)
			if err != nil {
				return p, err
			}
			if e.Version > 0 {
				p.Entities = append(p.Entities, e)
			}
		}
		stale, err := r.entities.Stale(ctx, time.Now().Add(24*time.Hour), store.MaxPageLimit)
		if err != nil {
			return p, err
		}
		p.StaleKeys = stale
	}
	if r.tokens != nil {
		for _, d := range destinations {
			page := store.Page{Limit: store.MaxPageLimit}
			for {
				tokens, err := r.tokens.ListByDestination(ctx, d, page)
				if err != nil {
					return p, err
				}
				p.Tokens = append(p.Tokens, tokens...)
				if len(tokens) < page.Limit {
					break
				}
				page.After = tokens[len(tokens)-1].ID
			}
		}
	}
	return p, nil
}

// workerReader asks a worker process to read its own (embedded) stores.
type workerReader struct{ slot *workerSlot }

func (r workerReader) read(ctx context.Context, keys, destinations []string) (part, error) {
	var p part
	addr, err := r.slot.waitReady(ctx)
	if err != nil {
		return p, err
	}
	body, _ := json.Marshal(map[string][]string{"keys": keys, "destinations": destinations})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/snapshot", bytes.NewReader(body))
	if err != nil {
		return p, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return p, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return p, fmt.Errorf("%s: snapshot: %s", r.slot.name, resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&p)
	return p, err
}

// readJob is one reader with what to read through it.
type readJob struct {
	reader       reader
	keys         []string
	destinations []string
}

// snapshot runs the jobs and merges their parts.
func snapshot(ctx context.Context, jobs []readJob) (Snapshot, error) {
	snap := Snapshot{Entities: map[string]store.Entity{}}
	for _, j := range jobs {
		p, err := j.reader.read(ctx, j.keys, j.destinations)
		if err != nil {
			return snap, err
		}
		for _, e := range p.Entities {
			snap.Entities[e.Key] = e
		}
		snap.Tokens = append(snap.Tokens, p.Tokens...)
		snap.StaleKeys = append(snap.StaleKeys, p.StaleKeys...)
	}
	return snap, nil
}

// residue lists what the shared backends hold beyond what the workload's
// keys and destinations show: entity rows under other keys, token rows for
// other destinations, and Redis keys of the run's prefix (none may be left
// once every token is consumed).
func (s *services) residue(ctx context.Context, known []string) ([]string, error) {
	var extra []string
	if s.ents == store.EntityStore(s.pg) && s.pg != nil {
		rows, err := s.pg.Pool().Query(ctx, "SELECT key FROM "+quoteIdent(s.ns.pgSchema)+".entities")
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var key string
			if err := rows.Scan(&key); err != nil {
				rows.Close()
				return nil, err
			}
			if !slices.Contains(known, key) {
				extra = append(extra, "entity "+key)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	if s.tokens == store.TokenStore(s.pg) && s.pg != nil {
		var n int
		err := s.pg.Pool().QueryRow(ctx, "SELECT count(*) FROM "+quoteIdent(s.ns.pgSchema)+".tokens").Scan(&n)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			extra = append(extra, fmt.Sprintf("%d rows in the tokens table", n))
		}
	}
	if s.my != nil {
		found, err := s.mysqlResidue(ctx, known)
		if err != nil {
			return nil, err
		}
		extra = append(extra, found...)
	}
	if s.etcd != nil {
		resp, err := s.etcd.Client().Get(ctx, s.etcd.Prefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return nil, err
		}
		for _, kv := range resp.Kvs {
			extra = append(extra, "etcd key "+string(kv.Key))
		}
	}
	if s.redisURL != "" {
		keys, err := redisKeys(ctx, s.redisURL, s.ns.redisPrefix)
		if err != nil {
			return nil, err
		}
		marks, err := s.splitMarks(ctx)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if !marks(k) {
				extra = append(extra, "redis key "+k)
			}
		}
	}
	return extra, nil
}

// mysqlResidue lists entity rows under other keys and token rows left in
// the run's MySQL tables.
func (s *services) mysqlResidue(ctx context.Context, known []string) ([]string, error) {
	var extra []string
	if s.ents == store.EntityStore(s.my) {
		rows, err := s.my.DB().QueryContext(ctx, "SELECT `key` FROM `"+s.ns.mysqlPrefix+"entities`")
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			var key []byte
			if err := rows.Scan(&key); err != nil {
				return nil, err
			}
			if !slices.Contains(known, string(key)) {
				extra = append(extra, "entity "+string(key))
			}
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	if s.tokens == store.TokenStore(s.my) {
		var n int
		if err := s.my.DB().QueryRowContext(ctx, "SELECT count(*) FROM `"+s.ns.mysqlPrefix+"tokens`").Scan(&n); err != nil {
			return nil, err
		}
		if n > 0 {
			extra = append(extra, fmt.Sprintf("%d rows in the tokens table", n))
		}
	}
	return extra, nil
}

func redisKeys(ctx context.Context, url, prefix string) ([]string, error) {
	var keys []string
	err := withRedis(ctx, url, func(c *goredis.Client) error {
		iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		return iter.Err()
	})
	return keys, err
}

func withRedis(ctx context.Context, url string, fn func(*goredis.Client) error) error {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		return err
	}
	c := goredis.NewClient(opts)
	defer c.Close()
	return fn(c)
}

// openFile opens an embedded store file in the test process; the worker
// that uses it must be stopped.
func openFile(t *testing.T, path string) *embedded.Store {
	t.Helper()
	s, err := embedded.Open(path, embedded.Config{OpenTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return s
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// splitMarks returns whether a Redis key belongs to the marks that a split
// store keeps in each of its parts for good (split.MarkDestination).
func (s *services) splitMarks(ctx context.Context) (func(key string) bool, error) {
	if s.split == nil {
		return func(string) bool { return false }, nil
	}
	marks, err := s.split.ListByDestination(ctx, split.MarkDestination, store.Page{Limit: store.MaxPageLimit})
	if err != nil {
		return nil, err
	}
	return func(key string) bool {
		if strings.HasSuffix(key, ":dest:"+split.MarkDestination) {
			return true
		}
		for _, m := range marks {
			if strings.Contains(key, m.ID.String()) || strings.Contains(key, m.Conversation.String()) {
				return true
			}
		}
		return false
	}, nil
}
