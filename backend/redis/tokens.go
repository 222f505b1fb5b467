package redis

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// expireBatch bounds how many tokens one expiry script deletes, so that a
// large ExpireRoots does not block the server for long.
const expireBatch = 1000

// TokenStore is a store.TokenStore kept in Redis. Use Open to create one.
type TokenStore struct {
	client  goredis.UniversalClient
	cluster bool // Redis Cluster: see cluster.go
	keys    keyLayout
	logger  *slog.Logger
	now     func() time.Time // draws the time in cluster-mode nonces
	closed  atomic.Bool
}

var _ store.TokenStore = (*TokenStore)(nil)

// Open connects to the server, checks that it can run the store (Redis 7.0
// or later) and that it fsyncs every write before acknowledging it, and
// returns the store. A server in cluster mode (or cfg.ClusterOptions)
// opens the store in cluster mode, and every master of the cluster is
// checked. It returns an error wrapping ErrUnsafeDurability for a server
// without appendonly yes, appendfsync always and no-appendfsync-on-rewrite
// no unless cfg.AllowUnsafeDurability is set, and ErrUnsupportedServer for a server
// it cannot run on.
func Open(ctx context.Context, cfg Config) (*TokenStore, error) {
	cc, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	var s *TokenStore
	if cc.cluster != nil {
		s = newClusterStore(cc.prefix, cc.cluster, cc.logger)
	} else {
		s = newTokenStore(cc.prefix, cc.opts, cc.logger)
		info, err := s.client.Info(ctx, "cluster").Result()
		if err != nil {
			s.client.Close()
			return nil, fmt.Errorf("redis: open: INFO: %w", err)
		}
		if parseInfo(info)["cluster_enabled"] == "1" {
			s.client.Close()
			opts, err := clusterOptions(cc.opts)
			if err != nil {
				return nil, err
			}
			s = newClusterStore(cc.prefix, opts, cc.logger)
		}
	}
	if err := s.checkServer(ctx, cfg.AllowUnsafeDurability, cfg.AllowAsyncReplication); err != nil {
		s.client.Close()
		return nil, err
	}
	return s, nil
}

// newTokenStore builds a store on one standalone server without talking
// to it.
func newTokenStore(prefix string, opts *goredis.Options, logger *slog.Logger) *TokenStore {
	client := goredis.NewClient(opts)
	client.AddHook(dialMarker{})
	return &TokenStore{client: client, keys: keyLayout{prefix: prefix}, logger: logger, now: time.Now}
}

// newClusterStore builds a store on Redis Cluster without talking to it.
func newClusterStore(prefix string, opts *goredis.ClusterOptions, logger *slog.Logger) *TokenStore {
	client := goredis.NewClusterClient(opts)
	// Dial failures happen in the node clients; mark them there.
	client.OnNewNode(func(node *goredis.Client) { node.AddHook(dialMarker{}) })
	return &TokenStore{client: client, cluster: true, keys: keyLayout{prefix: prefix}, logger: logger, now: time.Now}
}

// checkServer verifies the version, durability and replication of the
// server, or of every master of a cluster: each holds some slots, so each
// must keep every acknowledged write.
func (s *TokenStore) checkServer(ctx context.Context, allowUnsafe, allowReplication bool) error {
	var nodes []*goredis.Client
	switch c := s.client.(type) {
	case *goredis.ClusterClient:
		var mu sync.Mutex
		err := c.ForEachMaster(ctx, func(ctx context.Context, node *goredis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			nodes = append(nodes, node)
			return nil
		})
		if err != nil {
			return fmt.Errorf("redis: open: list the cluster's masters: %w", err)
		}
		if len(nodes) == 0 {
			return fmt.Errorf("%w: the cluster reports no masters", ErrUnsupportedServer)
		}
	case *goredis.Client:
		nodes = []*goredis.Client{c}
	}
	var unsafe, replicated []string
	for _, node := range nodes {
		found, err := s.checkNode(ctx, node)
		if err != nil {
			return err
		}
		where := ""
		if s.cluster {
			where = "master " + node.Options().Addr + ": "
		}
		if found.durability != "" {
			unsafe = append(unsafe, where+found.durability)
		}
		if found.replication != "" {
			replicated = append(replicated, where+found.replication)
		}
	}
	if len(replicated) > 0 {
		reason := strings.Join(replicated, "; ")
		if !allowReplication {
			return fmt.Errorf("%w: %s; a failover to a replica that lags loses acknowledged transitions (a consumed token comes back and lets a duplicate through; a created one is lost and drops its signal); set Config.AllowAsyncReplication only if no replica is ever promoted", ErrAsyncReplication, reason)
		}
		s.logger.Warn("redis token store: replicas are asynchronous: a failover may bring consumed tokens back and lose created ones",
			"reason", reason)
	}
	if len(unsafe) == 0 {
		return nil
	}
	reason := strings.Join(unsafe, "; ")
	if !allowUnsafe {
		return fmt.Errorf("%w: %s; set them in redis.conf (or with CONFIG SET), or set Config.AllowUnsafeDurability to accept that a crash may lose acknowledged tokens", ErrUnsafeDurability, reason)
	}
	s.logger.Warn("redis token store: durability is not guaranteed: a server crash may lose acknowledged tokens, and a lost token drops its signal as a duplicate",
		"reason", reason, "required", requiredSettingsText)
	return nil
}

// nodeProblems are why one server may lose acknowledged writes: in a
// crash (durability) or in a failover (replication); "" for none.
type nodeProblems struct{ durability, replication string }

// checkNode checks one server's version, mode and role, and returns why it
// may lose acknowledged writes.
func (s *TokenStore) checkNode(ctx context.Context, node *goredis.Client) (nodeProblems, error) {
	info, err := node.Info(ctx, "server", "cluster", "replication").Result()
	if err != nil {
		return nodeProblems{}, fmt.Errorf("redis: open: INFO: %w", err)
	}
	fields := parseInfo(info)
	version := fields["redis_version"]
	if major, _, _ := strings.Cut(version, "."); atoiOr(major, 0) < 7 {
		return nodeProblems{}, fmt.Errorf("%w: server reports redis_version %q; the store's scripts need Redis 7.0 or later", ErrUnsupportedServer, version)
	}
	if clustered := fields["cluster_enabled"] == "1"; clustered != s.cluster {
		return nodeProblems{}, fmt.Errorf("%w: server %s reports cluster_enabled %q, but the store was opened for the other mode (a cluster needs ClusterOptions or a URL of one of its nodes)", ErrUnsupportedServer, node.Options().Addr, fields["cluster_enabled"])
	}
	if fields["role"] == "slave" {
		return nodeProblems{}, fmt.Errorf("%w: server %s is a replica (of %s:%s); the store writes, so it needs the master", ErrUnsupportedServer, node.Options().Addr, fields["master_host"], fields["master_port"])
	}
	var found nodeProblems
	if n := atoiOr(fields["connected_slaves"], 0); n > 0 {
		found.replication = fmt.Sprintf("the server replicates to %d replica(s) asynchronously", n)
	}
	found.durability, err = s.durabilityProblem(ctx, node)
	return found, err
}

// durabilityProblem returns why the server's settings do not make every
// acknowledged write durable, or "" if they do.
func (s *TokenStore) durabilityProblem(ctx context.Context, node *goredis.Client) (string, error) {
	for _, w := range requiredSettings {
		got, err := node.ConfigGet(ctx, w[0]).Result()
		if err != nil {
			var reply goredis.Error
			if errors.As(err, &reply) {
				return fmt.Sprintf("CONFIG GET %s is not available (%v), so the settings cannot be checked", w[0], err), nil
			}
			return "", fmt.Errorf("redis: open: CONFIG GET %s: %w", w[0], err)
		}
		value, ok := got[w[0]]
		if !ok {
			return fmt.Sprintf("CONFIG GET %s returned no value, so the settings cannot be checked", w[0]), nil
		}
		if !strings.EqualFold(value, w[1]) {
			return fmt.Sprintf("the server has %s %q, want %q", w[0], value, w[1]), nil
		}
	}
	return "", nil
}

// Close releases the connections. Later calls fail with store.ErrClosed.
func (s *TokenStore) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.client.Close()
}

// usable returns a not-applied error if the call must not start.
func (s *TokenStore) usable(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("redis: %s: %w", op, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis: %s: %w: %w", op, store.ErrNotApplied, err)
	}
	return nil
}

// Transition implements store.TokenStore with one script.
func (s *TokenStore) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	if err := store.ValidateTransition(consume, create); err != nil {
		return false, err
	}
	if err := s.usable(ctx, "transition"); err != nil {
		return false, err
	}
	if s.cluster {
		return s.clusterTransition(ctx, consume, create)
	}
	n, err := transitionScript.Run(ctx, s.client, nil, s.transitionArgs(consume, create)...).Int()
	return transitioned(consume, n, err)
}

// transitionArgs returns the ARGV of transitionScript.
func (s *TokenStore) transitionArgs(consume baton.TokenID, create []baton.Token) []any {
	args := make([]any, 0, 2+tokenFields*len(create))
	args = append(args, s.keys.prefix, consume.String())
	for _, t := range create {
		args = appendTokenFields(args, t)
	}
	return args
}

// transitioned reads transitionScript's answer for consume.
func transitioned(consume baton.TokenID, n int, err error) (bool, error) {
	if err != nil {
		return false, classify("transition "+consume.String(), err)
	}
	return n == 1, nil
}

// Issue implements store.TokenStore: the root gets a fresh id from
// crypto/rand, drawn again in the unlikely case that it is taken.
func (s *TokenStore) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	return store.IssueBy(ctx, root, rand.Reader, s.CreateRoot)
}

// CreateRoot implements store.RootCreator with one script.
func (s *TokenStore) CreateRoot(ctx context.Context, root baton.Token) (baton.Token, error) {
	if err := store.ValidateRoot(root); err != nil {
		return baton.Token{}, err
	}
	if err := s.usable(ctx, "issue"); err != nil {
		return baton.Token{}, err
	}
	var err error
	if s.cluster {
		err = s.clusterIssue(ctx, root)
	} else if err = issueScript.Run(ctx, s.client, nil, appendTokenFields([]any{s.keys.prefix}, root)...).Err(); err != nil {
		err = classify("issue "+root.ID.String(), err)
	}
	if err != nil {
		return baton.Token{}, err
	}
	// The store keeps microseconds; answer the token as it is kept.
	root.CreatedAt = root.CreatedAt.Truncate(time.Microsecond)
	root.ExpiresAt = root.ExpiresAt.Truncate(time.Microsecond)
	return root, nil
}

// ClaimRoot implements store.TokenStore with one script (in the
// conversation's slot on a cluster), at microsecond precision as
// ExpireRoots.
func (s *TokenStore) ClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	if err := s.usable(ctx, "claim root"); err != nil {
		return baton.Token{}, err
	}
	if s.cluster {
		return s.clusterClaimRoot(ctx, id, now)
	}
	reply, err := claimRootScript.Run(ctx, s.client, nil, s.keys.prefix, id.String(), now.UnixMicro()).Slice()
	if err != nil {
		return baton.Token{}, classify("claim root "+id.String(), err)
	}
	return claimed(id, reply)
}

// claimed reads the reply of a claim script: {0} not live, {1, token}
// claimed, {2, token} expired.
func claimed(id baton.TokenID, reply []any) (baton.Token, error) {
	status, _ := reply[0].(int64)
	if status == 0 || len(reply) < 2 {
		return baton.Token{}, fmt.Errorf("redis: claim root: %w: token %s", store.ErrNotFound, id)
	}
	tok, err := decodeToken(reply[1])
	if err != nil {
		return baton.Token{}, err
	}
	if status == 2 {
		return baton.Token{}, fmt.Errorf("redis: claim root: %w: token %s expired at %s", store.ErrExpired, id, tok.ExpiresAt)
	}
	return tok, nil
}

// Get implements store.TokenStore.
func (s *TokenStore) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	if err := s.usable(ctx, "get"); err != nil {
		return baton.Token{}, err
	}
	if s.cluster {
		return s.clusterGet(ctx, id)
	}
	reply, err := getScript.Run(ctx, s.client, nil, s.getArgs(id)...).Result()
	return gotToken(id, reply, err)
}

// getArgs returns the ARGV of getScript.
func (s *TokenStore) getArgs(id baton.TokenID) []any { return []any{s.keys.prefix, id.String()} }

// gotToken reads getScript's answer for id: nil means the token is not live.
func gotToken(id baton.TokenID, reply any, err error) (baton.Token, error) {
	if errors.Is(err, goredis.Nil) {
		return baton.Token{}, fmt.Errorf("redis: get: %w: token %s", store.ErrNotFound, id)
	}
	if err != nil {
		return baton.Token{}, classify("get "+id.String(), err)
	}
	return decodeToken(reply)
}

// ListByConversation implements store.TokenStore.
func (s *TokenStore) ListByConversation(ctx context.Context, conversation baton.TokenID, page store.Page) ([]baton.Token, error) {
	if s.cluster {
		if err := s.usable(ctx, "list"); err != nil {
			return nil, err
		}
		return s.clusterListByConversation(ctx, conversation, page)
	}
	return s.list(ctx, listConversationScript, conversation.String(), page)
}

// ListByDestination implements store.TokenStore.
func (s *TokenStore) ListByDestination(ctx context.Context, destination string, page store.Page) ([]baton.Token, error) {
	if s.cluster {
		if err := s.usable(ctx, "list"); err != nil {
			return nil, err
		}
		return s.clusterListByDestination(ctx, destination, page)
	}
	return s.list(ctx, listDestinationScript, destination, page)
}

func (s *TokenStore) list(ctx context.Context, script *goredis.Script, index string, page store.Page) ([]baton.Token, error) {
	if err := s.usable(ctx, "list"); err != nil {
		return nil, err
	}
	from := "-"
	if !page.After.IsZero() {
		from = "(" + page.After.String()
	}
	reply, err := script.Run(ctx, s.client, nil, s.keys.prefix, index, from, page.Size()).Result()
	if err != nil {
		return nil, classify("list", err)
	}
	return decodeTokens(reply)
}

// ExpireRoots implements store.TokenStore. It works at microsecond
// precision: a token expires when its ExpiresAt, truncated to the
// microsecond, is before the given time truncated likewise. It deletes in
// batches of at most 1000 tokens, each batch atomic; an error after some
// batches returns their count with the error.
func (s *TokenStore) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := s.usable(ctx, "expire roots"); err != nil {
		return 0, err
	}
	if s.cluster {
		return s.clusterExpireRoots(ctx, before, limit)
	}
	total := 0
	for total < limit {
		batch := min(limit-total, expireBatch)
		n, err := expireScript.Run(ctx, s.client, nil, s.keys.prefix, before.UnixMicro(), batch).Int()
		if err != nil {
			return total, classify("expire roots", err)
		}
		total += n
		if n < batch {
			break
		}
	}
	return total, nil
}

// parseInfo reads the "field:value" lines of an INFO reply.
func parseInfo(info string) map[string]string {
	fields := make(map[string]string)
	for line := range strings.Lines(info) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
	return fields
}

func atoiOr(s string, fallback int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fallback
	}
	return n
}
