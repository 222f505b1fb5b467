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

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

var statusClient = &http.Client{Timeout: 2 * time.Second}

// startSystems starts the three systems. Each keeps the address it got
// first for the whole demo (the run and the lingering after it), so a page
// a person has open keeps working.
func (d *demo) startSystems(ctx context.Context, keys map[string]string, chaos Chaos) error {
	if d.addrs == nil {
		d.addrs = map[string]string{}
	}
	addrs := d.addrs
	for _, role := range roles {
		if addrs[role] != "" {
			continue
		}
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		addrs[role] = addr
	}
	for i, role := range roles {
		c := &child{
			role: role,
			url:  "http://" + addrs[role],
			opts: &d.opts,
			log:  filepath.Join(d.dataDir, role+".log"),
			cfg: SystemConfig{
				Role: role, DataDir: d.dataDir, TokenService: d.tsURL, APIKey: keys[role],
				NATSURL: d.natsURL, NATSMonitor: d.natsMonitor,
				Listen: addrs[role], BillingURL: "http://" + addrs[Billing] + "/signals",
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
			return fmt.Errorf("demo: %s exited at start; see %s", c.role, c.log)
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
	return fmt.Errorf("demo: %s did not answer within 30s; see %s", c.role, c.log)
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

// freeAddr picks a free loopback port for a system. A system keeps its
// address across restarts, so its callers need no rediscovery.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
