package etcd_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"

	"github.com/batonhq/baton/backend/etcd"
	"github.com/batonhq/baton/internal/testenv/etcdcluster"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

// shared is a three-member cluster that the suites share, each store
// under a prefix of its own.
var shared *etcdcluster.Cluster

func TestMain(m *testing.M) {
	etcdcluster.MemberMain()
	dir, err := os.MkdirTemp("", "baton-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if shared, err = etcdcluster.New(dir, 3); err != nil {
		fmt.Fprintln(os.Stderr, "start the etcd cluster of the tests:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	shared.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

// openShared opens a store on the shared cluster under a fresh prefix.
func openShared(t testing.TB) *etcd.Store {
	t.Helper()
	return openOn(t, shared)
}

func openOn(t testing.TB, c *etcdcluster.Cluster) *etcd.Store {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	s, err := etcd.Open(t.Context(), etcd.Config{Endpoints: c.Endpoints(), Prefix: "baton-test-" + hex.EncodeToString(b) + "/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.RunTokenStore(t, storetest.TokenHarness{New: func(t *testing.T) store.TokenStore { return openShared(t) }})
}

func TestLinearizability(t *testing.T) {
	t.Parallel()
	storetest.RunLinearizabilityWithFaults(t, storetest.TokenHarness{New: func(t *testing.T) store.TokenStore { return openShared(t) }})
}
