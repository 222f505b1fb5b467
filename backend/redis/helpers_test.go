package redis

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/testenv"
)

// testPrefix returns a key prefix that no other test uses.
func testPrefix() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "batontest-" + hex.EncodeToString(b)
}

// openTest opens a store on url with a fresh prefix and registers its
// cleanup: close it, then SCAN and DEL every key under the prefix.
func openTest(t testing.TB, url string, allowUnsafe bool) *TokenStore {
	t.Helper()
	s, err := Open(t.Context(), Config{URL: url, Prefix: testPrefix(), AllowUnsafeDurability: allowUnsafe})
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	t.Cleanup(func() {
		s.Close()
		deleteKeys(t, url, s.keys)
	})
	return s
}

// sharedStore opens a store on the machine's Redis (BATON_TEST_REDIS),
// which keeps nothing on disk, so durability is waived.
func sharedStore(t testing.TB) *TokenStore {
	t.Helper()
	return openTest(t, testenv.Addr(t, testenv.Redis), true)
}

// deleteKeys removes every key of a store's prefix. A server that is gone
// (a killed test server) has nothing left to clean.
func deleteKeys(t testing.TB, url string, keys keyLayout) {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	client := goredis.NewClient(opts)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := client.Scan(ctx, 0, keys.pattern(), 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			client.Del(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		client.Del(ctx, batch...)
	}
	if err := iter.Err(); err != nil && !isDialFailure(err) {
		t.Errorf("cleanup of %s: %v", keys.pattern(), err)
	}
}

func isDialFailure(err error) bool {
	var d *net.OpError
	return errors.As(err, &d) && d.Op == "dial"
}

// keysOf lists the keys of a store's prefix.
func keysOf(t *testing.T, s *TokenStore) []string {
	t.Helper()
	var keys []string
	iter := s.client.Scan(t.Context(), 0, s.keys.pattern(), 1000).Iterator()
	for iter.Next(t.Context()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("SCAN %s: %v", s.keys.pattern(), err)
	}
	return keys
}

// redisServer is a redis-server process that a test starts on a free port
// over its own data directory, so that it can kill it with SIGKILL and
// start it again over the same data.
type redisServer struct {
	t    testing.TB
	bin  string
	dir  string
	args []string
	port int
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
}

// durableArgs make every acknowledged write durable, as the store requires.
var durableArgs = []string{"--appendonly", "yes", "--appendfsync", "always"}

// startRedisServer starts redis-server with args added to the test
// settings. Outside CI it skips loudly when redis-server is missing.
func startRedisServer(t testing.TB, args ...string) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if testenv.CI() {
			t.Fatalf("redis-server is not on PATH; CI must run the durable-mode tests of the Redis backend: %v", err)
		}
		t.Skipf("SKIPPED: redis-server is not on PATH; install it to run the durable-mode tests of the Redis backend")
	}
	srv := &redisServer{t: t, bin: bin, dir: t.TempDir(), args: args}
	srv.start()
	t.Cleanup(srv.stop)
	return srv
}

func (srv *redisServer) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", srv.port) }

// start runs the server on its old port if it had one, else a free one,
// and waits until it answers PING (it answers only after loading the AOF).
func (srv *redisServer) start() {
	srv.t.Helper()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if srv.port == 0 || attempt > 0 {
			srv.port = freePort(srv.t)
		}
		if lastErr = srv.tryStart(); lastErr == nil {
			return
		}
	}
	srv.t.Fatalf("redis-server did not start: %v", lastErr)
}

func (srv *redisServer) tryStart() error {
	args := append([]string{
		"--port", strconv.Itoa(srv.port), "--bind", "127.0.0.1",
		"--dir", srv.dir, "--save", "", "--daemonize", "no",
		"--logfile", filepath.Join(srv.dir, "redis.log"),
	}, srv.args...)
	cmd := exec.Command(srv.bin, args...)
	srv.log = new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = srv.log, srv.log
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	srv.cmd, srv.done = cmd, done

	client := goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", srv.port), MaxRetries: -1, DialTimeout: time.Second})
	defer client.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-done:
			logged, _ := os.ReadFile(filepath.Join(srv.dir, "redis.log"))
			return fmt.Errorf("redis-server exited: %s %s", srv.log, logged)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := client.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			srv.kill()
			return fmt.Errorf("redis-server on port %d does not answer PING: %v", srv.port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops the server with SIGKILL, as a crash would.
func (srv *redisServer) kill() {
	if srv.cmd == nil {
		return
	}
	srv.cmd.Process.Signal(syscall.SIGKILL)
	<-srv.done
	srv.cmd = nil
}

// crash kills the server with SIGKILL and starts it again on the same data.
func (srv *redisServer) crash() {
	srv.t.Helper()
	srv.kill()
	srv.start()
}

func (srv *redisServer) stop() { srv.kill() }

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// mustConsume consumes a live token that emits nothing.
func mustConsume(ctx context.Context, t *testing.T, s *TokenStore, id baton.TokenID) {
	t.Helper()
	if consumed, err := s.Transition(ctx, id, nil); err != nil || !consumed {
		t.Fatalf("Transition(%s) = %v, %v", id, consumed, err)
	}
}

// issueRootAndExpired issues a root, and a second one whose expiry has
// passed (for ExpireRoots to delete), for the "no keys left" checks.
func issueRootAndExpired(ctx context.Context, t *testing.T, s *TokenStore) (root, expired baton.Token) {
	t.Helper()
	root = testRoot("orders")
	expired = testRoot("orders")
	expired.ExpiresAt = time.Now().Add(-time.Minute)
	return issued(ctx, t, s, root), issued(ctx, t, s, expired)
}

// issued issues tok as a root, which must succeed, and returns it as the
// store keeps it: under the id the store chose.
func issued(ctx context.Context, t testing.TB, s *TokenStore, tok baton.Token) baton.Token {
	t.Helper()
	tok.ID, tok.Causation = baton.TokenID{}, baton.TokenID{}
	got, err := s.Issue(ctx, tok)
	if err != nil {
		t.Fatalf("Issue = %v", err)
	}
	return got
}

// requireNoKeys fails t if the listed keys are not empty.
func requireNoKeys(t *testing.T, keys []string) {
	t.Helper()
	if len(keys) != 0 {
		t.Errorf("keys left with no live token: %q", keys)
	}
}
