package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	goredis "github.com/redis/go-redis/v9"
)

// env is what the systems of one run share: the configuration, the
// monitor pool (counts and pg_stat_activity, kept apart so their cost is
// not billed to a variant), the data directories and the redis-server
// the benchmark starts.
type env struct {
	cfg         Config
	workload    workload
	log         *slog.Logger
	monitor     *pgxpool.Pool
	tmp         string
	runID       string
	redisServer *redisServer
	// vacuum: the server has autovacuum off, so the run vacuums its own
	// tables (see vacuum.go).
	vacuum bool
}

// contended is e for the comparison under contention: charges spread
// over ContentionAccounts accounts, in schemas and prefixes of their own.
func (e *env) contended() *env {
	c := *e
	c.cfg.Accounts = c.cfg.ContentionAccounts
	c.workload.Accounts = c.cfg.ContentionAccounts
	c.runID += "c"
	return &c
}

// uniqueName is a schema name or key prefix of this run for a variant.
func (e *env) uniqueName(name string) string {
	return "bench_" + strings.ReplaceAll(name, "-", "_") + "_" + e.runID
}

// dir returns a fresh data directory for name.
func (e *env) dir(name string) string {
	d, err := os.MkdirTemp(e.tmp, name+"-")
	if err != nil {
		// The parent exists and is ours; a failure here is a full disk,
		// which the store that uses the directory reports.
		return filepath.Join(e.tmp, name)
	}
	return d
}

// poolSize is the connections one variant needs: every worker of both
// destinations, the producers, the relay and the cleanup job.
func (e *env) poolSize() int { return 2*e.cfg.maxWorkers() + producers(e.cfg.InFlight) + 2 }

// machineRedisPIDs are the redis-server processes on this host other
// than the one the benchmark started. The machine's Redis may serve
// other clients too.
func (e *env) machineRedisPIDs() []int {
	pids := pidsNamed("redis-server")
	if e.redisServer != nil {
		pids = slices.DeleteFunc(pids, func(p int) bool { return p == e.redisServer.pid })
	}
	return pids
}

func newRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// checkPostgres opens the monitor pool, or says in one line why not.
func checkPostgres(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	pool, err := openPool(ctx, dsn, "baton-bench-monitor", 2)
	if err != nil {
		return nil, fmt.Errorf("bench: %w (set --postgres-dsn or BATON_BENCH_POSTGRES)", err)
	}
	return pool, nil
}

// checkRedis pings the Redis server at url, or says in one line why not.
func checkRedis(ctx context.Context, url string) error {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		return fmt.Errorf("bench: --redis-url is not a valid redis:// URL")
	}
	opts.MaxRetries = -1
	client := goredis.NewClient(opts)
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("bench: Redis at %s is unreachable: %v (set --redis-url, or leave out the baton-redis variant)", opts.Addr, err)
	}
	return nil
}

// redisServer is a redis-server that fsyncs every write, started on a
// free port over a directory of the run.
type redisServer struct {
	port int
	pid  int
	cmd  *exec.Cmd
	done chan struct{}
}

func (r *redisServer) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

func (r *redisServer) pids() []int { return []int{r.pid} }

func startRedisServer(ctx context.Context, bin, dir string) (*redisServer, error) {
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			return nil, fmt.Errorf("bench: redis-server is not on PATH; install it or leave out the baton-redis-fsync variant")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var out bytes.Buffer
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--daemonize", "no", "--appendonly", "yes", "--appendfsync", "always")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start redis-server: %w", err)
	}
	r := &redisServer{port: port, pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(r.done) }()
	client := goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1})
	defer client.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-r.done:
			return nil, fmt.Errorf("bench: redis-server exited: %s", strings.TrimSpace(out.String()))
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := client.Ping(pctx).Err()
		cancel()
		if err == nil {
			return r, nil
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("bench: redis-server on port %d does not answer: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *redisServer) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}
