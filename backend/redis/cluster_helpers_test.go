package redis

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/internal/testenv/redisserver"
)

// redisCluster is a Redis Cluster of three masters (no replicas) that a
// test starts over its own data directories, in the durable mode.
type redisCluster struct {
	t       testing.TB
	servers []*redisserver.Server
}

// startRedisCluster starts three masters, assigns the slots with
// redis-cli --cluster create and waits until every node reports
// cluster_state:ok. Outside CI it skips loudly when redis-server or
// redis-cli is missing; the servers stop when the test ends.
func startRedisCluster(t testing.TB) *redisCluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		if testenv.CI() {
			t.Fatalf("redis-cli is not on PATH; CI must run the Redis Cluster tests of the Redis backend: %v", err)
		}
		t.Skipf("SKIPPED: redis-cli is not on PATH; install it to run the Redis Cluster tests of the Redis backend")
	}
	c := &redisCluster{t: t}
	for range 3 {
		// The bus port is set explicitly: the default, port+10000, may
		// exceed 65535 for a free port from the ephemeral range.
		args := append([]string{
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(redisserver.FreePort(t)), "--cluster-node-timeout", "5000",
		}, redisserver.DurableArgs...)
		c.servers = append(c.servers, redisserver.Start(t, args...))
	}
	create := []string{"--cluster", "create"}
	for _, srv := range c.servers {
		create = append(create, fmt.Sprintf("127.0.0.1:%d", srv.Port))
	}
	create = append(create, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, create...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(create, " "), err, out)
	}
	c.waitOK()
	return c
}

// url is a seed node's address; Open finds the other nodes from it.
func (c *redisCluster) URL() string { return c.servers[0].URL() }

// waitOK waits until every node reports cluster_state:ok and knows all
// 16384 slots.
func (c *redisCluster) waitOK() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, srv := range c.servers {
		client := goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", srv.Port), MaxRetries: -1})
		for {
			info, err := client.ClusterInfo(context.Background()).Result()
			fields := parseInfo(info)
			if err == nil && fields["cluster_state"] == "ok" && fields["cluster_slots_ok"] == "16384" {
				break
			}
			if time.Now().After(deadline) {
				client.Close()
				c.t.Fatalf("cluster node %d is not ok after 30s: %v %s", srv.Port, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		client.Close()
	}
}

// crash kills every master with SIGKILL and starts each again on its
// port over its data (AOF and nodes.conf), then waits for the cluster.
func (c *redisCluster) Crash() {
	c.t.Helper()
	for _, srv := range c.servers {
		srv.Kill()
	}
	for _, srv := range c.servers {
		if err := srv.TryRestart(); err != nil {
			c.t.Fatalf("restart cluster node on port %d: %v", srv.Port, err)
		}
	}
	c.waitOK()
}

// openCluster opens a store on the cluster with a fresh prefix and
// registers its cleanup: close it, then delete every key of the prefix on
// every master.
func openCluster(t testing.TB, c *redisCluster) *TokenStore {
	t.Helper()
	s, err := Open(t.Context(), Config{URL: c.URL(), Prefix: testPrefix()})
	if err != nil {
		t.Fatalf("Open(cluster %s): %v", c.URL(), err)
	}
	if !s.cluster {
		t.Fatalf("Open(cluster %s) did not detect cluster mode", c.URL())
	}
	t.Cleanup(func() {
		s.Close()
		deleteClusterKeys(t, c, s.keys)
	})
	return s
}

// clusterKeys lists the keys of a prefix on every master.
func clusterKeys(t testing.TB, c *redisCluster, keys keyLayout) []string {
	t.Helper()
	var all []string
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, srv := range c.servers {
		client := goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", srv.Port), MaxRetries: -1})
		iter := client.Scan(ctx, 0, keys.pattern(), 1000).Iterator()
		for iter.Next(ctx) {
			all = append(all, iter.Val())
		}
		err := iter.Err()
		client.Close()
		if err != nil && !isDialFailure(err) {
			t.Errorf("SCAN %s on port %d: %v", keys.pattern(), srv.Port, err)
		}
	}
	return all
}

// deleteClusterKeys deletes a prefix's keys one by one: a multi-key DEL
// would span slots.
func deleteClusterKeys(t testing.TB, c *redisCluster, keys keyLayout) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: []string{strings.TrimSuffix(strings.TrimPrefix(c.URL(), "redis://"), "/0")}})
	defer client.Close()
	pipe := client.Pipeline()
	for _, k := range clusterKeys(t, c, keys) {
		pipe.Del(ctx, k)
	}
	pipe.Exec(ctx)
}
