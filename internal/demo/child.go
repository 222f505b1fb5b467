package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// child is one system's process, which the demo starts, kills and starts
// again on the same address and data.
type child struct {
	role string
	url  string
	cfg  SystemConfig
	opts *Options
	log  string // file that receives the process's output
	// listener is the system's socket, held by the demo; each process gets
	// a copy as its inheritedListenerFD.
	listener *net.TCPListener

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

var statusClient = &http.Client{Timeout: 2 * time.Second}

// startSystems starts the three systems. Each keeps the socket it got
// first for the whole demo (the run and the lingering after it), so a page
// a person has open keeps working. The demo holds the sockets and hands
// them to the processes: a port chosen here and bound by the child later
// could be taken in between, and a restarted system's callers wait in the
// socket's queue instead of being refused.
func (d *demo) startSystems(ctx context.Context, keys map[string]string, chaos Chaos) error {
	if d.listeners == nil {
		d.listeners = map[string]*net.TCPListener{}
	}
	for _, role := range roles {
		if d.listeners[role] != nil {
			continue
		}
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return fmt.Errorf("demo: listen for %s: %w", role, err)
		}
		d.listeners[role] = ln
	}
	addr := func(role string) string { return d.listeners[role].Addr().String() }
	for i, role := range roles {
		c := &child{
			role:     role,
			url:      "http://" + addr(role),
			opts:     &d.opts,
			listener: d.listeners[role],
			log:      filepath.Join(d.dataDir, role+".log"),
			cfg: SystemConfig{
				Role: role, DataDir: d.dataDir, TokenService: d.tsURL, APIKey: keys[role],
				NATSURL: d.natsURL, NATSMonitor: d.natsMonitor,
				Listen: addr(role), InheritsListener: true, BillingURL: "http://" + addr(Billing) + "/signals",
				Chaos: chaos, Seed: d.opts.Seed + uint64(i), ParentPID: os.Getpid(),
			},
		}
		d.systems[role] = c
		if err := c.start(ctx); err != nil {
			return err
		}
	}
	return nil
}

// closeListeners closes the systems' sockets once no process of theirs
// runs.
func (d *demo) closeListeners() {
	for _, ln := range d.listeners {
		_ = ln.Close()
	}
}

func (d *demo) stopSystems() {
	var wg sync.WaitGroup
	for _, c := range d.systems {
		wg.Go(c.stop)
	}
	wg.Wait()
}

// start runs the system's process and waits until it answers.
func (c *child) start(ctx context.Context) error {
	cfg, err := json.Marshal(c.cfg)
	if err != nil {
		return err
	}
	out, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := c.opts.Command()
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, SystemEnv+"="+string(cfg))
	cmd.Stdout, cmd.Stderr = out, out
	socket, err := c.listener.File() // a duplicate, closed once the process has its own
	if err != nil {
		return fmt.Errorf("demo: %s's socket: %w", c.role, err)
	}
	defer socket.Close()
	cmd.ExtraFiles = []*os.File{socket}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("demo: start %s: %w", c.role, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.mu.Lock()
	c.cmd, c.done = cmd, done
	c.mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("demo: %s exited at start:\n%s", c.role, logTail(c.log))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if resp, err := statusClient.Get(c.url + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("demo: %s did not answer within 30s:\n%s", c.role, logTail(c.log))
}

// logTail is the end of a system's log, for an error: the log itself is
// removed with the run's temporary directory.
func logTail(path string) string {
	const limit = 4 << 10
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(its log %s: %v)", path, err)
	}
	if len(b) > limit {
		b = b[len(b)-limit:]
	}
	if len(b) == 0 {
		return "(its log is empty)"
	}
	return string(b)
}

// kill ends the process with SIGKILL: no cleanup, no graceful shutdown.
func (c *child) kill() error {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("%s is not running", c.role)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-done
	return nil
}

// stop asks the process to finish (SIGTERM) and kills it if it does not.
func (c *child) stop() {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

func (c *child) status(ctx context.Context) (Status, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url+"/status", nil)
	if err != nil {
		return Status{}, err
	}
	resp, err := statusClient.Do(req)
	if err != nil {
		return Status{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Status{}, fmt.Errorf("%s: status %s", c.role, resp.Status)
	}
	return decodeStatus(resp.Body)
}
