package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/engine"
)

// workerSlot keeps one worker process running: it starts the worker binary,
// restarts it whenever it exits (after a SIGKILL from the test, or a crash
// of its own), and stops it for good on stop.
type workerSlot struct {
	t       *testing.T
	name    string
	bin     string
	args    []string
	env     []string // added to the test's environment
	listen  string   // if set, ready once a TCP connection to it succeeds (no READY line)
	logPath string

	mu       sync.Mutex
	cmd      *exec.Cmd
	ready    chan struct{} // closed when the current process printed READY
	http     string        // its snapshot address
	killed   bool          // the current process was killed by the test
	stopping bool
	stats    engine.Stats // summed over past processes (the last report of each)
	kills    int
	restarts int
	crashes  int // exits after READY that the test did not cause
	failed   int // processes that exited before READY (could not start)
	done     chan struct{}
}

func startSlot(t *testing.T, name, bin string, args []string) *workerSlot {
	s := &workerSlot{
		t: t, name: name, bin: bin, args: args,
		logPath: fmt.Sprintf("%s/%s.log", t.TempDir(), name),
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
	}
	go s.loop()
	return s
}

func (s *workerSlot) loop() {
	defer close(s.done)
	for first := true; ; first = false {
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			return
		}
		if !first {
			s.restarts++
		}
		s.mu.Unlock()
		s.runOnce()
		s.mu.Lock()
		stopping := s.stopping
		s.mu.Unlock()
		if stopping {
			return
		}
		// Restart after a pause, as a process supervisor would.
		time.Sleep(time.Duration(200+rand.IntN(600)) * time.Millisecond)
	}
}

// runOnce runs one process until it exits.
func (s *workerSlot) runOnce() {
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.t.Errorf("%s: %v", s.name, err)
		return
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "=== %s start %s\n", s.name, time.Now().Format("15:04:05.000"))
	cmd := exec.Command(s.bin, s.args...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stderr = logFile
	out, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Errorf("%s: %v", s.name, err)
		return
	}
	ready := make(chan struct{})
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return
	}
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		s.t.Errorf("%s: start: %v", s.name, err)
		time.Sleep(time.Second)
		return
	}
	s.cmd, s.ready, s.http, s.killed = cmd, ready, "", false
	s.mu.Unlock()
	exited := make(chan struct{})
	defer close(exited)
	if s.listen != "" {
		go awaitListening(s.listen, ready, exited)
	}

	var life engine.Stats // the latest counters of this process
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		line := lines.Text()
		switch {
		case strings.HasPrefix(line, "READY http="):
			s.mu.Lock()
			s.http = strings.TrimPrefix(line, "READY http=")
			s.mu.Unlock()
			close(ready)
		case strings.HasPrefix(line, "STATS "):
			var st engine.Stats
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "STATS ")), &st); err == nil {
				life = st
			}
		}
	}
	err = cmd.Wait()
	fmt.Fprintf(logFile, "=== %s exit %s: %v\n", s.name, time.Now().Format("15:04:05.000"), err)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmd = nil
	s.stats = s.stats.Plus(life)
	switch {
	case s.killed || s.stopping:
	case !isClosed(ready):
		// Starting under network faults may fail (a connection reset
		// during the first query); the slot tries again.
		s.failed++
	default:
		// A worker only returns on SIGTERM once it is ready: this is a
		// crash, and a failure of the run.
		s.crashes++
		s.t.Errorf("%s crashed (%v); its log ends:\n%s", s.name, err, tail(s.logPath, 30))
	}
}

// awaitListening closes ready once addr accepts a TCP connection, unless
// the process exits first.
func awaitListening(addr string, ready, exited chan struct{}) {
	for {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			close(ready)
			return
		}
		select {
		case <-exited:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kill sends SIGKILL to the running process, if there is one that is
// ready, and reports whether it did.
func (s *workerSlot) kill() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.killed || s.stopping || !isClosed(s.ready) {
		return false
	}
	s.killed = true
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return false
	}
	s.kills++
	return true
}

// waitReady waits until the current process printed READY and returns its
// snapshot address.
func (s *workerSlot) waitReady(ctx context.Context) (string, error) {
	for {
		s.mu.Lock()
		ready, running := s.ready, s.cmd != nil
		s.mu.Unlock()
		if running {
			select {
			case <-ready:
				s.mu.Lock()
				addr, same := s.http, s.ready == ready
				s.mu.Unlock()
				if same {
					return addr, nil
				}
				continue
			case <-ctx.Done():
				return "", fmt.Errorf("%s is not ready: %w", s.name, ctx.Err())
			case <-time.After(100 * time.Millisecond):
				continue
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%s is not running: %w", s.name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends the slot: SIGTERM to the process, SIGKILL if it has not exited
// within the timeout. It reports whether the process stopped cleanly.
func (s *workerSlot) stop(timeout time.Duration) bool {
	s.mu.Lock()
	s.stopping = true
	if s.cmd != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
	}
	s.mu.Unlock()
	select {
	case <-s.done:
		return true
	case <-time.After(timeout):
	}
	// SIGQUIT makes a Go process print every goroutine's stack and exit:
	// what it was waiting for is the point of the report.
	before := tail(s.logPath, 15)
	s.signal(syscall.SIGQUIT)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.signal(syscall.SIGKILL)
		<-s.done
	}
	s.t.Errorf("%s did not stop within %v of SIGTERM; killed. Its log ended:\n%s\nGoroutines in baton code at SIGQUIT:\n%s",
		s.name, timeout, before, batonStacks(s.logPath, 80))
	return false
}

func (s *workerSlot) signal(sig os.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.cmd.Process.Signal(sig)
	}
}

// batonStacks returns, from the goroutine dump at the end of a Go
// process's log, the goroutines with frames in baton's code: each header
// and those frames, at most n lines.
func batonStacks(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	text := string(b)
	start := strings.Index(text, "SIGQUIT")
	if start < 0 {
		return "    (no goroutine dump in the log)"
	}
	var out []string
	for block := range strings.SplitSeq(text[start:], "\n\n") {
		lines := strings.Split(block, "\n")
		var frames []string
		for _, line := range lines[1:] {
			if strings.Contains(line, "batonhq/baton") && !strings.HasPrefix(line, "\t") {
				frames = append(frames, "  "+line)
			}
		}
		if len(frames) > 0 {
			out = append(out, lines[0])
			out = append(out, frames...)
		}
	}
	out = out[:min(len(out), n)]
	return "    " + strings.Join(out, "\n    ")
}

// slotCounts is what a slot saw.
type slotCounts struct {
	kills, restarts, crashes, failedStarts int
	stats                                  engine.Stats
}

func (s *workerSlot) counts() slotCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slotCounts{s.kills, s.restarts, s.crashes, s.failed, s.stats}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}
