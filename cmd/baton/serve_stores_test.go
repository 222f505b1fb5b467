package main

import (
	"net/url"
	"strings"
	"testing"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/internal/testenv/etcdcluster"
	"github.com/batonhq/baton/internal/testenv/redisserver"
	"github.com/batonhq/baton/tokenservice/client"
)

// serveRoundTrip issues a root through the service and consumes it with a
// child, then the child, as a system that issues roots and consumes every
// destination.
func serveRoundTrip(t *testing.T, s *server, key string) {
	t.Helper()
	c, err := client.New(s.url, key, client.Options{})
	must(t, err)
	defer c.Close()
	ctx := t.Context()
	root, err := c.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil)})
	must(t, err)
	child := baton.Token{ID: baton.NewTokenID(), Conversation: root.Conversation, Causation: root.ID, Destination: "shipping",
		Type: "ship", Digest: baton.DigestOf(nil)}
	for _, step := range []struct {
		consume baton.TokenID
		create  []baton.Token
	}{{root.ID, []baton.Token{child}}, {child.ID, nil}} {
		if ok, err := c.Transition(ctx, step.consume, step.create); !ok || err != nil {
			t.Fatalf("transition of %s: %v, %v", step.consume, ok, err)
		}
	}
	if _, err := c.Get(ctx, child.ID); err == nil {
		t.Error("the consumed child is still live")
	}
}

// baton serve --store etcd over a three-member cluster.
func TestServeOnEtcd(t *testing.T) {
	t.Parallel()
	cluster := etcdcluster.Start(t, 3)
	systems, k := systemsFile(t, false)
	o := options(t, systems)
	o.store, o.etcdEndpoints, o.etcdPrefix = "etcd", cluster.Endpoints(), "serve-test/"
	serveRoundTrip(t, start(t, o), k.edge)
}

// baton serve over two Redis servers splits tokens by conversation, and
// refuses the same servers in another order.
func TestServeSplitOverRedis(t *testing.T) {
	t.Parallel()
	a, b := redisserver.Start(t, redisserver.DurableArgs...), redisserver.Start(t, redisserver.DurableArgs...)
	systems, k := systemsFile(t, false)
	o := options(t, systems)
	o.store, o.redisURLs = "redis", []string{a.URL(), b.URL()}
	s := start(t, o)
	for range 10 {
		serveRoundTrip(t, s, k.edge)
	}
	o.redisURLs = []string{b.URL(), a.URL()}
	if _, err := tryStart(t, o); err == nil || !strings.Contains(err.Error(), "do not match their marks") {
		t.Errorf("the parts in another order: %v; want a refusal", err)
	}
}

// A Redis server that does not fsync every write is refused with the flag
// that accepts it, not the Go config field (found in review).
func TestServeStoreRefusalNamesTheFlags(t *testing.T) {
	t.Parallel()
	r := redisserver.Start(t)
	systems, _ := systemsFile(t, false)
	o := options(t, systems)
	o.store, o.redisURLs = "redis", []string{r.URL()}
	_, err := tryStart(t, o)
	if err == nil || !strings.Contains(err.Error(), "pass --allow-unsafe-durability") || strings.Contains(err.Error(), "Config.") {
		t.Errorf("baton serve on a Redis without appendfsync always: %v; want the refusal to name --allow-unsafe-durability and no Go config field", err)
	}
}

// A PostgreSQL server that does not make commits durable is refused in an
// error and a log that name --allow-unsafe-durability, not the Go config
// field (found in review).
func TestServePostgresRefusalNamesTheFlag(t *testing.T) {
	t.Parallel()
	dsn := testenv.Addr(t, testenv.Postgres)
	u, err := url.Parse(dsn)
	must(t, err)
	q := u.Query()
	q.Set("options", "-csynchronous_commit=off")
	u.RawQuery = q.Encode()
	systems, _ := systemsFile(t, false)
	o := options(t, systems)
	o.store, o.postgresDSNs = "postgres", []string{u.String()}
	s, err := tryStart(t, o)
	if err == nil || !strings.Contains(err.Error(), "pass --allow-unsafe-durability") || strings.Contains(err.Error(), "Config.") {
		t.Errorf("baton serve on PostgreSQL with synchronous_commit off: %v; want a refusal that names --allow-unsafe-durability and no Go config field", err)
	}
	if log := s.stderr.String(); !strings.Contains(log, "--allow-unsafe-durability") || strings.Contains(log, "Config.") {
		t.Errorf("the refusal's log names a Go config field, or not the flag:\n%s", log)
	}
}
