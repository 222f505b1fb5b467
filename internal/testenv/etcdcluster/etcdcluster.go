// Package etcdcluster runs real etcd clusters for tests: every member is a
// process of its own (the test binary itself, running the etcd server
// embedded in it), so that a test can kill one with SIGKILL, the leader
// included, and start it again over its data. Every member's peer traffic
// comes in through a toxiproxy proxy, so that a test can cut a member off
// from the others.
//
// A test package that uses it calls MemberMain first in its TestMain:
//
//	func TestMain(m *testing.M) {
//		etcdcluster.MemberMain()
//		os.Exit(m.Run())
//	}
package etcdcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/batonhq/baton/internal/testenv"
)

// memberEnv holds a member's settings as JSON in the environment of the
// process that runs it.
const memberEnv = "BATON_ETCD_MEMBER"

// MaxTxnOps is the members' --max-txn-ops: a transition with the most
// children a token store must take (1000) needs 3 operations per child.
const MaxTxnOps = 3200

type memberConfig struct {
	Name           string `json:"name"`
	Dir            string `json:"dir"`
	ClientAddr     string `json:"client_addr"`
	PeerAddr       string `json:"peer_addr"`       // where it listens
	AdvertisedPeer string `json:"advertised_peer"` // its proxy
	InitialCluster string `json:"initial_cluster"`
	State          string `json:"state"`
}

// MemberMain runs an etcd member and never returns if this process was
// started as one (by Start); otherwise it returns at once.
func MemberMain() {
	raw := os.Getenv(memberEnv)
	if raw == "" {
		return
	}
	var mc memberConfig
	if err := json.Unmarshal([]byte(raw), &mc); err != nil {
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		os.Exit(2)
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = mc.Name, mc.Dir
	cfg.ListenClientUrls = []url.URL{{Scheme: "http", Host: mc.ClientAddr}}
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	cfg.ListenPeerUrls = []url.URL{{Scheme: "http", Host: mc.PeerAddr}}
	cfg.AdvertisePeerUrls = []url.URL{{Scheme: "http", Host: mc.AdvertisedPeer}}
	cfg.InitialCluster, cfg.InitialClusterToken, cfg.ClusterState = mc.InitialCluster, "baton-test", mc.State
	cfg.MaxTxnOps = MaxTxnOps
	cfg.TickMs, cfg.ElectionMs = 50, 500 // quick failovers; the machine is local
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(mc.Dir, "..", mc.Name+".log")}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		os.Exit(1)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stdout, "ready")
	err = <-e.Err()
	fmt.Fprintln(os.Stderr, "etcd member stopped:", err)
	os.Exit(1)
}

var nopLogger = zap.NewNop()

// Cluster is a running etcd cluster of member processes.
type Cluster struct {
	members []*member
	proxies *toxiproxy.ApiServer
}

type member struct {
	cfg   memberConfig
	proxy *toxiproxy.Proxy
	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	cut   bool
}

// Start starts a cluster of n members for t, over its temporary
// directory, stopped when t ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	c, err := New(t.TempDir(), n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// New starts a cluster of n members with their data under dir, and waits
// until it has a leader. Close stops it. A member's ports are free when
// chosen but may be taken before it binds them (by another test's
// server): a cluster that does not start is started again, on new ports
// and in a new directory, up to three times in all.
func New(dir string, n int) (*Cluster, error) {
	var errs []error
	for attempt := range 3 {
		sub := filepath.Join(dir, fmt.Sprintf("attempt%d", attempt))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return nil, err
		}
		c, err := newOnce(sub, n)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func newOnce(dir string, n int) (*Cluster, error) {
	c := &Cluster{proxies: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())}
	var initial []string
	for i := range n {
		m := &member{cfg: memberConfig{Name: fmt.Sprintf("m%d", i), Dir: filepath.Join(dir, fmt.Sprintf("m%d", i)), State: "new"}}
		m.cfg.ClientAddr, m.cfg.PeerAddr = stableAddr(), stableAddr()
		p, err := c.startProxy(m.cfg.Name, m.cfg.PeerAddr)
		if err != nil {
			c.Close()
			return nil, err
		}
		m.proxy, m.cfg.AdvertisedPeer = p, p.Listen
		initial = append(initial, fmt.Sprintf("%s=http://%s", m.cfg.Name, m.cfg.AdvertisedPeer))
		c.members = append(c.members, m)
	}
	for _, m := range c.members {
		m.cfg.InitialCluster = strings.Join(initial, ",")
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range c.members {
		wg.Go(func() { errs[i] = c.run(m) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	for _, m := range c.members {
		m.cfg.State = "existing" // a restart rejoins the cluster
	}
	if c.Leader(30*time.Second) < 0 {
		c.Close()
		return nil, errors.New("the etcd cluster has no leader after 30s")
	}
	return c, nil
}

// stableAddr returns a loopback address whose port is free now and below
// the ephemeral range, so that a restarted member gets it back.
func stableAddr() string {
	for {
		addr := testenv.StableAddr()
		if l, err := net.Listen("tcp", addr); err == nil {
			addr = l.Addr().String()
			l.Close()
			return addr
		}
	}
}

func (c *Cluster) startProxy(name, upstream string) (*toxiproxy.Proxy, error) {
	for attempt := 0; ; attempt++ {
		p := toxiproxy.NewProxy(c.proxies, name, stableAddr(), upstream)
		err := p.Start()
		if err == nil {
			return p, nil
		}
		if attempt == 20 {
			return nil, fmt.Errorf("toxiproxy for %s: %w", name, err)
		}
	}
}

// run starts m's process and waits until it serves.
func (c *Cluster) run(m *member) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfg, _ := json.Marshal(m.cfg)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), memberEnv+"="+string(cfg))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	ready := make(chan bool, 1)
	go func() {
		buf := make([]byte, 64)
		n, _ := out.Read(buf)
		ready <- strings.HasPrefix(string(buf[:n]), "ready")
		for { // keep the pipe drained
			if _, err := out.Read(buf); err != nil {
				return
			}
		}
	}()
	go func() { cmd.Wait(); close(done) }()
	m.mu.Lock()
	m.cmd, m.done = cmd, done
	m.mu.Unlock()
	select {
	case ok := <-ready:
		if !ok {
			return fmt.Errorf("etcd member %s did not start (see its log in %s)", m.cfg.Name, filepath.Dir(m.cfg.Dir))
		}
		return nil
	case <-time.After(60 * time.Second):
		return fmt.Errorf("etcd member %s not ready after 60s", m.cfg.Name)
	}
}

// Endpoints are the members' client addresses.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, "http://"+m.cfg.ClientAddr)
	}
	return out
}

// PIDs are the members' process ids (0 for a member that is down).
func (c *Cluster) PIDs() []int {
	var out []int
	for _, m := range c.members {
		m.mu.Lock()
		pid := 0
		if m.cmd != nil {
			pid = m.cmd.Process.Pid
		}
		m.mu.Unlock()
		out = append(out, pid)
	}
	return out
}

// Size is the number of members.
func (c *Cluster) Size() int { return len(c.members) }

// Kill kills member i with SIGKILL, as a crash would.
func (c *Cluster) Kill(i int) {
	m := c.members[i]
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Restart starts the killed member i again over its data.
func (c *Cluster) Restart(i int) error { return c.run(c.members[i]) }

// Cut cuts member i off: no other member reaches it, and what it sends
// is never answered.
func (c *Cluster) Cut(i int) {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.cut {
		m.proxy.Stop()
		m.cut = true
	}
}

// Heal undoes Cut.
func (c *Cluster) Heal(i int) error {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.cut {
		return nil
	}
	for attempt := 0; ; attempt++ {
		err := m.proxy.Start()
		if err == nil {
			break
		}
		if attempt == 50 {
			return fmt.Errorf("heal %s: %w", m.cfg.Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	m.cut = false
	return nil
}

// Leader returns the index of the member that leads, or -1 if none is
// known within timeout.
func (c *Cluster) Leader(timeout time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for ctx.Err() == nil {
		for i, m := range c.members {
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + m.cfg.ClientAddr}, DialTimeout: time.Second,
				Logger: nopLogger})
			if err != nil {
				continue
			}
			sctx, scancel := context.WithTimeout(ctx, time.Second)
			status, err := cli.Status(sctx, "http://"+m.cfg.ClientAddr)
			scancel()
			cli.Close()
			if err == nil && status.Leader != 0 && status.Leader == status.Header.MemberId {
				return i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return -1
}

// Close kills every member and stops the proxies.
func (c *Cluster) Close() {
	for i, m := range c.members {
		c.Kill(i)
		if m.proxy != nil {
			m.proxy.Stop()
		}
	}
}

// ChaosLog counts what Chaos did.
type ChaosLog struct {
	Kills, LeaderKills, Cuts, LeaderCuts atomic.Int64
}

func (c *ChaosLog) String() string {
	return fmt.Sprintf("%d kills (%d of the leader), %d cuts (%d of the leader)", c.Kills.Load(), c.LeaderKills.Load(), c.Cuts.Load(), c.LeaderCuts.Load())
}

// Chaos alternates until ctx ends, a second apart: kill the leader (now
// and then another member) with SIGKILL and start it again a second later,
// then cut a member off (mostly the leader) for 1.5s. It leaves every
// member running and connected; it returns the first restart or heal that
// failed.
func (c *Cluster) Chaos(ctx context.Context, log *ChaosLog) error {
	pause := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for round := 0; ; round++ {
		if !pause(time.Second) {
			return nil
		}
		leader := c.Leader(5 * time.Second)
		victim := leader
		if victim < 0 || rand.IntN(4) == 0 {
			victim = rand.IntN(c.Size())
		}
		if round%2 == 0 {
			c.Kill(victim)
			log.Kills.Add(1)
			if victim == leader {
				log.LeaderKills.Add(1)
			}
			pause(time.Second)
			if err := c.Restart(victim); err != nil {
				return fmt.Errorf("restart member %d: %w", victim, err)
			}
			continue
		}
		c.Cut(victim)
		log.Cuts.Add(1)
		if victim == leader {
			log.LeaderCuts.Add(1)
		}
		pause(1500 * time.Millisecond)
		if err := c.Heal(victim); err != nil {
			return err
		}
	}
}
