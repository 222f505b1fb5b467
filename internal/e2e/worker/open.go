package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/batonhq/baton/backend/embedded"
	"github.com/batonhq/baton/backend/etcd"
	"github.com/batonhq/baton/backend/mysql"
	"github.com/batonhq/baton/backend/postgres"
	"github.com/batonhq/baton/backend/redis"
	"github.com/batonhq/baton/backend/split"
	"github.com/batonhq/baton/internal/e2e"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/transport"
	"github.com/batonhq/baton/transport/nats"
	"github.com/batonhq/baton/transport/rabbitmq"
)

// stores are the token and entity stores of one worker process, each
// bounded by a deadline per call. When one backend keeps both, tokens and
// entities are the same value, so the engine takes the fast path.
type stores struct {
	tokens   *bounded
	entities *bounded
	closers  []func() error
}

func (s *stores) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

func openStores(ctx context.Context, o options, log *slog.Logger) (_ *stores, err error) {
	s := &stores{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	var pg *postgres.Store
	var my *mysql.Store
	var file *embedded.Store
	openPostgres := func() (*postgres.Store, error) {
		if pg != nil {
			return pg, nil
		}
		if o.postgres == "" || o.pgSchema == "" {
			return nil, fmt.Errorf("-postgres and -pg-schema are required")
		}
		var err error
		pg, err = postgres.Open(ctx, o.postgres, postgres.Config{Schema: o.pgSchema, Logger: log})
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, pg.Close)
		return pg, nil
	}
	openMySQL := func() (*mysql.Store, error) {
		if my != nil {
			return my, nil
		}
		if o.mysql == "" || o.mysqlPrefix == "" {
			return nil, fmt.Errorf("-mysql and -mysql-prefix are required")
		}
		var err error
		my, err = mysql.Open(ctx, o.mysql, mysql.Config{Prefix: o.mysqlPrefix, Logger: log})
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, my.Close)
		return my, nil
	}
	openFile := func() (*embedded.Store, error) {
		if file != nil {
			return file, nil
		}
		if o.file == "" {
			return nil, fmt.Errorf("-file is required")
		}
		var err error
		file, err = embedded.Open(o.file, embedded.Config{OpenTimeout: 5 * time.Second, Logger: log})
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, file.Close)
		return file, nil
	}

	var tokens store.TokenStore
	switch o.tokens {
	case "postgres":
		if tokens, err = openPostgres(); err != nil {
			return nil, err
		}
	case "mysql":
		if tokens, err = openMySQL(); err != nil {
			return nil, err
		}
	case "embedded":
		if tokens, err = openFile(); err != nil {
			return nil, err
		}
	case "redis":
		if o.redis == "" || o.redisPrefix == "" {
			return nil, fmt.Errorf("-redis and -redis-prefix are required")
		}
		// The machine's Redis keeps nothing on disk. The tests kill
		// workers, not Redis, so durability of Redis itself is not what
		// they check (backend/redis's own tests do, with appendfsync
		// always).
		var parts []store.TokenStore
		for _, prefix := range e2e.RedisPartPrefixes(o.redisPrefix, o.redisParts) {
			rs, err := redis.Open(ctx, redis.Config{URL: o.redis, Prefix: prefix, AllowUnsafeDurability: true})
			if err != nil {
				return nil, err
			}
			s.closers = append(s.closers, rs.Close)
			parts = append(parts, rs)
		}
		if len(parts) == 1 {
			tokens = parts[0]
			break
		}
		if tokens, err = split.Open(ctx, parts...); err != nil {
			return nil, err
		}
	case "etcd":
		if o.etcd == "" || o.etcdPrefix == "" {
			return nil, fmt.Errorf("-etcd and -etcd-prefix are required")
		}
		es, err := etcd.Open(ctx, etcd.Config{Endpoints: strings.Split(o.etcd, ","), Prefix: o.etcdPrefix, Logger: log})
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, es.Close)
		tokens = es
	default:
		return nil, fmt.Errorf("-tokens: want postgres, mysql, redis or embedded, got %q", o.tokens)
	}

	var entities store.EntityStore
	switch o.entities {
	case "postgres":
		if entities, err = openPostgres(); err != nil {
			return nil, err
		}
	case "mysql":
		if entities, err = openMySQL(); err != nil {
			return nil, err
		}
	case "embedded":
		if entities, err = openFile(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("-entities: want postgres, mysql or embedded, got %q", o.entities)
	}

	if sameStore(tokens, entities) {
		s.tokens = &bounded{tokens: tokens, entities: entities, timeout: o.storeTimeout}
		s.entities = s.tokens
	} else {
		s.tokens = &bounded{tokens: tokens, timeout: o.storeTimeout}
		s.entities = &bounded{entities: entities, timeout: o.storeTimeout}
	}
	return s, nil
}

func sameStore(tokens store.TokenStore, entities store.EntityStore) bool {
	switch t := tokens.(type) {
	case *postgres.Store:
		e, ok := entities.(*postgres.Store)
		return ok && e == t
	case *mysql.Store:
		e, ok := entities.(*mysql.Store)
		return ok && e == t
	case *embedded.Store:
		e, ok := entities.(*embedded.Store)
		return ok && e == t
	}
	return false
}

type openedTransport struct {
	transport transport.Transport
	close     func() error
}

func openTransport(ctx context.Context, o options, log *slog.Logger) (openedTransport, error) {
	switch o.transport {
	case "nats":
		if o.nats == "" || o.natsStream == "" || o.natsPrefix == "" {
			return openedTransport{}, fmt.Errorf("-nats, -nats-stream and -nats-prefix are required")
		}
		cfg := nats.Config{
			URL:             o.nats,
			ConnectOptions:  []natsgo.Option{natsgo.ReconnectWait(200 * time.Millisecond), natsgo.Timeout(5 * time.Second)},
			Stream:          o.natsStream,
			Prefix:          o.natsPrefix,
			AckWait:         o.ackWait,
			MaxDeliver:      1 << 20, // never park: every signal must get through
			DuplicateWindow: o.natsDupWindow,
			Prefetch:        max(1, o.batch), // a batch's deliveries already here
			Logger:          log,
		}
		// The machine's NATS does not sync every write and has no
		// monitoring port. The tests kill workers, not NATS, so the
		// server's durability is not what they check (transport/nats's
		// own tests do, against an embedded server that syncs always).
		cfg.AllowUnsafeDurability = true
		t, err := nats.New(ctx, cfg)
		if err != nil {
			return openedTransport{}, err
		}
		return openedTransport{t, t.Close}, nil
	case "rabbitmq":
		if o.rabbitmq == "" || o.rabbitName == "" {
			return openedTransport{}, fmt.Errorf("-rabbitmq and -rabbitmq-prefix are required")
		}
		t, err := rabbitmq.New(ctx, rabbitmq.Config{
			URL:     o.rabbitmq,
			Prefix:  o.rabbitName,
			AckWait: o.ackWait,
			Logger:  log,
		})
		if err != nil {
			return openedTransport{}, err
		}
		return openedTransport{t, t.Close}, nil
	}
	return openedTransport{}, fmt.Errorf("-transport: want nats or rabbitmq, got %q", o.transport)
}
