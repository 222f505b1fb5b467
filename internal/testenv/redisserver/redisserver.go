// Package redisserver starts redis-server processes for tests: on free
// ports, over data directories of their own, so that a test can kill one
// with SIGKILL and start it again over the same data.
package redisserver

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/batonhq/baton/internal/testenv"
)

// Server is a redis-server process that a test starts on a free port
// over its own data directory, so that it can kill it with SIGKILL and
// start it again over the same data.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	args []string
	// Port is the server's port on 127.0.0.1.
	Port int
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
}

// DurableArgs make every acknowledged write durable, as the store requires.
var DurableArgs = []string{"--appendonly", "yes", "--appendfsync", "always"}

// Start starts redis-server with args added to the test
// settings. Outside CI it skips loudly when redis-server is missing.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if testenv.CI() {
			t.Fatalf("redis-server is not on PATH; CI must run tests that start their own Redis servers: %v", err)
		}
		t.Skipf("SKIPPED: redis-server is not on PATH; install it to run tests that start their own Redis servers")
	}
	srv := &Server{t: t, bin: bin, dir: t.TempDir(), args: args}
	srv.Restart()
	t.Cleanup(srv.Kill)
	return srv
}

// URL is the server's address for go-redis and baton.
func (srv *Server) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", srv.Port) }

// Restart runs the server on its old port if it had one, else a free one,
// and waits until it answers (it answers only after loading the AOF).
func (srv *Server) Restart() {
	srv.t.Helper()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if srv.Port == 0 || attempt > 0 {
			srv.Port = FreePort(srv.t)
		}
		if lastErr = srv.TryRestart(); lastErr == nil {
			return
		}
	}
	srv.t.Fatalf("redis-server did not start: %v", lastErr)
}

// TryRestart starts the server again on its port, once, and reports why
// it did not start (the port taken meanwhile, say).
func (srv *Server) TryRestart() error {
	args := append([]string{
		"--port", strconv.Itoa(srv.Port), "--bind", "127.0.0.1",
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

	client := goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", srv.Port), MaxRetries: -1, DialTimeout: time.Second})
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
		var info string
		err := client.Ping(ctx).Err()
		if err == nil {
			info, err = client.Info(ctx, "server").Result()
		}
		cancel()
		if err == nil {
			// The port was free when chosen, but another test's server may
			// have taken it since: then this one exits, and until it does
			// the other answers.
			if !strings.Contains(info, fmt.Sprintf("process_id:%d\r\n", cmd.Process.Pid)) {
				srv.Kill()
				return fmt.Errorf("port %d is another redis-server's", srv.Port)
			}
			return nil
		}
		if time.Now().After(deadline) {
			srv.Kill()
			return fmt.Errorf("redis-server on port %d does not answer PING: %v", srv.Port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PID is the server process's id, 0 while it is not running.
func (srv *Server) PID() int {
	if srv.cmd == nil {
		return 0
	}
	return srv.cmd.Process.Pid
}

// Kill stops the server with SIGKILL, as a crash would.
func (srv *Server) Kill() {
	if srv.cmd == nil {
		return
	}
	srv.cmd.Process.Signal(syscall.SIGKILL)
	<-srv.done
	srv.cmd = nil
}

// Crash kills the server with SIGKILL and starts it again on the same data.
func (srv *Server) Crash() {
	srv.t.Helper()
	srv.Kill()
	srv.Restart()
}

func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
