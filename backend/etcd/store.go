package etcd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// DefaultPrefix starts every key the store writes.
const DefaultPrefix = "baton/"

// Config configures Open.
type Config struct {
	// Endpoints are the cluster members' client URLs. Required unless
	// Client is set.
	Endpoints []string
	// Client, if set, is used instead of one made from Endpoints; Close
	// then leaves it open.
	Client *clientv3.Client
	// Prefix starts every key, so that several stores share a cluster.
	// Default DefaultPrefix.
	Prefix string
	// DialTimeout bounds the first connection. Default 5s.
	DialTimeout time.Duration
	// Logger receives the store's warnings. Nil discards.
	Logger *slog.Logger
}

// Store is a token store on an etcd cluster.
type Store struct {
	client    *clientv3.Client
	ownClient bool
	keys      keys
	log       *slog.Logger
	closed    atomic.Bool
}

var (
	_ store.TokenStore  = (*Store)(nil)
	_ store.RootCreator = (*Store)(nil)
)

// Open connects to the cluster and checks that it answers.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{client: cfg.Client, keys: keys{prefix: cfg.Prefix}, log: cfg.Logger}
	if s.client == nil {
		if len(cfg.Endpoints) == 0 {
			return nil, fmt.Errorf("%w: etcd: no endpoints", store.ErrInvalid)
		}
		c, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout, Context: ctx,
			Logger: zap.NewNop()})
		if err != nil {
			return nil, fmt.Errorf("etcd: connect to %v: %w", cfg.Endpoints, err)
		}
		s.client, s.ownClient = c, true
	}
	// A linearizable read of nothing: the cluster has a leader and answers.
	if _, err := s.client.Get(ctx, s.keys.prefix+"ping", clientv3.WithCountOnly()); err != nil {
		s.Close()
		return nil, fmt.Errorf("etcd: the cluster does not answer: %w", err)
	}
	return s, nil
}

// Client is the store's etcd client, for tests and tools that look at
// the keys themselves.
func (s *Store) Client() *clientv3.Client { return s.client }

// Prefix is the prefix of every key the store writes.
func (s *Store) Prefix() string { return s.keys.prefix }

// Close closes the client if Open made it.
func (s *Store) Close() error {
	if s.closed.Swap(true) || !s.ownClient {
		return nil
	}
	return s.client.Close()
}

func (s *Store) usable(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", store.ErrNotApplied, err)
	}
	return nil
}

// keys lays out the store's keys under its prefix. A token's value is
// kept under its own key and under one key per listing it appears in, all
// written in the same transaction (so they share their ModRevision):
//
//	<prefix>t/<id>                          the token
//	<prefix>c/<conversation>/<id>           its conversation's listing
//	<prefix>d/<hex of destination>/<id>     its destination's listing
//	<prefix>e/<expiry, 20-digit ns>/<id>    an expiring root, by expiry
type keys struct{ prefix string }

func (k keys) token(id baton.TokenID) string { return k.prefix + "t/" + id.String() }

func (k keys) conversation(conv baton.TokenID) string { return k.prefix + "c/" + conv.String() + "/" }

func (k keys) destination(dest string) string {
	return k.prefix + "d/" + hex.EncodeToString([]byte(dest)) + "/"
}

func (k keys) expiries() string { return k.prefix + "e/" }

func (k keys) expiry(at time.Time) string {
	return fmt.Sprintf("%s%020d/", k.expiries(), at.UnixNano())
}

// all returns every key of t.
func (k keys) all(t baton.Token) []string {
	out := []string{k.token(t.ID), k.conversation(t.Conversation) + t.ID.String(), k.destination(t.Destination) + t.ID.String()}
	if !t.ExpiresAt.IsZero() {
		out = append(out, k.expiry(t.ExpiresAt)+t.ID.String())
	}
	return out
}

func encode(t baton.Token) string {
	t.CreatedAt, t.ExpiresAt = t.CreatedAt.UTC(), t.ExpiresAt.UTC()
	if t.ExpiresAt.Equal(time.Time{}.UTC()) {
		t.ExpiresAt = time.Time{}
	}
	data, err := json.Marshal(t)
	if err != nil {
		panic(err) // a Token always encodes
	}
	return string(data)
}

func decode(value []byte) (baton.Token, error) {
	var t baton.Token
	if err := json.Unmarshal(value, &t); err != nil {
		return t, fmt.Errorf("etcd: a stored token does not decode: %w", err)
	}
	return t, nil
}

// puts returns the operations that write every key of t.
func (k keys) puts(t baton.Token) []clientv3.Op {
	value := encode(t)
	var ops []clientv3.Op
	for _, key := range k.all(t) {
		ops = append(ops, clientv3.OpPut(key, value))
	}
	return ops
}

// deletes returns the operations that delete every key of t.
func (k keys) deletes(t baton.Token) []clientv3.Op {
	var ops []clientv3.Op
	for _, key := range k.all(t) {
		ops = append(ops, clientv3.OpDelete(key))
	}
	return ops
}

// getToWrite reads a token for a transaction that compares its revision:
// first from the member the client talks to, without asking the leader
// (a serializable read, which may be stale); a token found there is
// checked by the transaction itself, which fails if the token changed
// since, and then reads again linearizably. Only "absent" must be
// linearizable at once, so a token not found there is read again.
func (s *Store) getToWrite(ctx context.Context, id baton.TokenID) (baton.Token, int64, error) {
	t, rev, err := s.get(ctx, id, clientv3.WithSerializable())
	if err == nil {
		return t, rev, nil
	}
	return s.get(ctx, id)
}

// get reads a live token and the revision it was last written at, with a
// linearizable read unless opts say otherwise.
func (s *Store) get(ctx context.Context, id baton.TokenID, opts ...clientv3.OpOption) (baton.Token, int64, error) {
	resp, err := s.client.Get(ctx, s.keys.token(id), opts...)
	if err != nil {
		// A read applies nothing.
		return baton.Token{}, 0, fmt.Errorf("%w: etcd: read token %s: %w", store.ErrNotApplied, id, err)
	}
	if len(resp.Kvs) == 0 {
		return baton.Token{}, 0, fmt.Errorf("%w: token %s", store.ErrNotFound, id)
	}
	t, err := decode(resp.Kvs[0].Value)
	return t, resp.Kvs[0].ModRevision, err
}

// Get implements store.TokenStore with a linearizable read.
func (s *Store) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	if err := s.usable(ctx); err != nil {
		return baton.Token{}, err
	}
	t, _, err := s.get(ctx, id)
	return t, err
}

// Transition implements store.TokenStore as one etcd transaction: if the
// token is still as read, delete its keys and write the children's, if
// none of them exists yet.
func (s *Store) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	if err := store.ValidateTransition(consume, create); err != nil {
		return false, err
	}
	if err := s.usable(ctx); err != nil {
		return false, err
	}
	for attempt := 0; ; attempt++ {
		var parent baton.Token
		var rev int64
		var err error
		if attempt == 0 {
			parent, rev, err = s.getToWrite(ctx, consume)
		} else {
			parent, rev, err = s.get(ctx, consume) // the transaction failed: read what is
		}
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.keys.token(consume)), "=", rev)}
		ops := s.keys.deletes(parent)
		for _, t := range create {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.keys.token(t.ID)), "=", 0))
			ops = append(ops, s.keys.puts(t)...)
		}
		resp, err := s.client.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return false, s.txnError("transition "+consume.String(), err)
		}
		if resp.Succeeded {
			return true, nil
		}
		// Why it failed: the token consumed or changed (claimed) since it
		// was read, or a child exists.
		_, nowRev, err := s.get(ctx, consume)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return false, nil
		case err != nil:
			return false, err
		case nowRev == rev:
			return false, fmt.Errorf("%w: a token that transition %s creates exists", store.ErrExists, consume)
		}
	}
}

// txnError classifies a failed transaction: refused by the server as too
// large (not applied, with what to change), else outcome unknown.
func (s *Store) txnError(what string, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "too many operations in txn request"):
		return fmt.Errorf("%w: etcd: %s: %v (the cluster's --max-txn-ops must be at least 3 per token created plus 4; 3100 takes every transition)", store.ErrNotApplied, what, err)
	case strings.Contains(msg, "request is too large"):
		return fmt.Errorf("%w: etcd: %s: %v (raise the cluster's --max-request-bytes)", store.ErrNotApplied, what, err)
	}
	return fmt.Errorf("etcd: %s: outcome unknown: %w", what, err)
}

// Issue implements store.TokenStore under a fresh id from crypto/rand.
func (s *Store) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	return store.IssueBy(ctx, root, rand.Reader, s.CreateRoot)
}

// CreateRoot implements store.RootCreator as one transaction.
func (s *Store) CreateRoot(ctx context.Context, root baton.Token) (baton.Token, error) {
	if err := store.ValidateRoot(root); err != nil {
		return baton.Token{}, err
	}
	if err := s.usable(ctx); err != nil {
		return baton.Token{}, err
	}
	resp, err := s.client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(s.keys.token(root.ID)), "=", 0)).
		Then(s.keys.puts(root)...).Commit()
	if err != nil {
		return baton.Token{}, s.txnError("issue "+root.ID.String(), err)
	}
	if !resp.Succeeded {
		return baton.Token{}, fmt.Errorf("%w: token %s", store.ErrExists, root.ID)
	}
	return decodeAsStored(root)
}

// decodeAsStored returns t as Get would read it back.
func decodeAsStored(t baton.Token) (baton.Token, error) { return decode([]byte(encode(t))) }

// ClaimRoot implements store.TokenStore: the root rewritten without its
// expiry if it is still as read.
func (s *Store) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	if err := s.usable(ctx); err != nil {
		return baton.Token{}, err
	}
	for attempt := 0; ; attempt++ {
		var t baton.Token
		var rev int64
		var err error
		if attempt == 0 {
			// Only a claim that the transaction checks may rest on a
			// possibly stale read; every answer without one must not.
			t, rev, err = s.get(ctx, id, clientv3.WithSerializable())
			if err != nil || t.ExpiresAt.IsZero() || t.Expired(now) {
				t, rev, err = s.get(ctx, id)
			}
		} else {
			t, rev, err = s.get(ctx, id)
		}
		if err != nil {
			return baton.Token{}, err
		}
		switch {
		case t.Expired(now):
			return baton.Token{}, fmt.Errorf("%w: token %s expired at %s", store.ErrExpired, id, t.ExpiresAt)
		case t.ExpiresAt.IsZero():
			return t, nil
		}
		claimed := t
		claimed.ExpiresAt = time.Time{}
		ops := append(s.keys.puts(claimed), clientv3.OpDelete(s.keys.expiry(t.ExpiresAt)+id.String()))
		resp, err := s.client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.keys.token(id)), "=", rev)).Then(ops...).Commit()
		if err != nil {
			return baton.Token{}, s.txnError("claim root "+id.String(), err)
		}
		if resp.Succeeded {
			return claimed, nil
		}
	}
}

// ListByConversation implements store.TokenStore with one range read.
func (s *Store) ListByConversation(ctx context.Context, conversation baton.TokenID, page store.Page) ([]baton.Token, error) {
	return s.list(ctx, s.keys.conversation(conversation), page)
}

// ListByDestination implements store.TokenStore with one range read.
func (s *Store) ListByDestination(ctx context.Context, destination string, page store.Page) ([]baton.Token, error) {
	return s.list(ctx, s.keys.destination(destination), page)
}

func (s *Store) list(ctx context.Context, prefix string, page store.Page) ([]baton.Token, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	from := prefix
	if !page.After.IsZero() {
		from = prefix + page.After.String() + "\x00"
	}
	resp, err := s.client.Get(ctx, from, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithLimit(int64(page.Size())))
	if err != nil {
		return nil, fmt.Errorf("etcd: list %s: %w", prefix, err)
	}
	out := make([]baton.Token, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		t, err := decode(kv.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// ExpireRoots implements store.TokenStore: the expiry listing read up to
// before, and each root deleted in a transaction of its own if it is still
// as listed (a claim meanwhile keeps it).
func (s *Store) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	if limit <= 0 {
		return 0, nil
	}
	resp, err := s.client.Get(ctx, s.keys.expiries(), clientv3.WithRange(s.keys.expiry(before)), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return 0, fmt.Errorf("etcd: list expiring roots: %w", err)
	}
	deleted := 0
	for _, kv := range resp.Kvs {
		t, err := decode(kv.Value)
		if err != nil {
			return deleted, err
		}
		txn, err := s.client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.keys.token(t.ID)), "=", kv.ModRevision)).
			Then(s.keys.deletes(t)...).Commit()
		if err != nil {
			return deleted, s.txnError("expire root "+t.ID.String(), err)
		}
		if txn.Succeeded {
			deleted++
		}
	}
	return deleted, nil
}
