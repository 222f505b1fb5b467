package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/store"
	natstransport "github.com/batonhq/baton/transport/nats"
)

// natsNode is one server of an in-process JetStream cluster, restartable
// over its own directory and ports.
type natsNode struct {
	opts *server.Options
	mu   sync.Mutex
	srv  *server.Server
}

func (n *natsNode) start() error {
	srv, err := server.NewServer(n.opts)
	if err != nil {
		return err
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("nats node %s did not start", n.opts.ServerName)
	}
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
	return nil
}

func (n *natsNode) stop() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(freeLoopbackAddr(t))
	p, _ := strconv.Atoi(port)
	return p
}

// startNATSCluster starts three JetStream servers that sync every write,
// routed to each other, and returns them and a client URL of all three.
func startNATSCluster(t *testing.T) ([]*natsNode, string) {
	t.Helper()
	const size = 3
	clientPorts, clusterPorts := make([]int, size), make([]int, size)
	for i := range size {
		clientPorts[i], clusterPorts[i] = freePort(t), freePort(t)
	}
	var nodes []*natsNode
	var urls []string
	for i := range size {
		var routes []string
		for j := range size {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", clusterPorts[j]))
			}
		}
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: clientPorts[i],
			JetStream: true, StoreDir: t.TempDir(), SyncAlways: true, NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "baton", Host: "127.0.0.1", Port: clusterPorts[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		}
		nodes = append(nodes, &natsNode{opts: opts})
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]))
	}
	for _, n := range nodes {
		if err := n.start(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop()
		}
	})
	return nodes, strings.Join(urls, ",")
}

// streamLeader names the server that leads stream, or "".
func streamLeader(ctx context.Context, url, stream string) string {
	nc, err := natsgo.Connect(url)
	if err != nil {
		return ""
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return ""
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return ""
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// TestClusteredNATSFailover runs conversations (orders, then a charge at
// billing) over a three-node JetStream cluster whose stream has three
// replicas, and kills nodes mid-run, the stream's leader most often,
// restarting each after a moment. Every activity must be applied once:
// nothing lost in a leader election, nothing applied twice when a
// publish's answer was lost and it was sent again.
func TestClusteredNATSFailover(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	nodes, url := startNATSCluster(t)
	const stream, orders = "BATON_CLUSTER", 120
	var tr *natstransport.Transport
	var err error
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		// The cluster elects its JetStream meta leader first; until then
		// creating the stream waits, so each try gets a deadline.
		attempt, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
		tr, err = natstransport.New(attempt, natstransport.Config{URL: url, Stream: stream, Prefix: "cluster", Replicas: 3,
			AllowUnsafeDurability: true, AckWait: 2 * time.Second})
		cancelAttempt()
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("transport on the cluster: %v", err)
	}
	t.Cleanup(func() { tr.Close() })

	tokens := memory.NewTokenStore()
	newEngine := func(destination string) (*engine.Engine, *memory.EntityStore) {
		entities := memory.NewEntityStore()
		e, err := engine.New(engine.Config{Destination: destination, Tokens: tokens, Entities: entities, Dispatch: tr, Source: tr,
			RedeliveryDelay: 50 * time.Millisecond, MaxAttempts: 1000, SweepAfter: time.Second, SweepInterval: 500 * time.Millisecond,
			CallTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return e, entities
	}
	shop, _ := newEngine("orders")
	billing, ledgerStore := newEngine("billing")
	if err := engine.Register(shop, engine.Activity[struct{}]{Type: "place",
		Entity: func(sig baton.Signal) (string, error) { return "order-" + sig.Conversation.String(), nil },
		Handle: func(_ context.Context, sig baton.Signal, _ *struct{}) (engine.Effects, error) {
			return engine.Effects{Emit: []baton.Emit{{Destination: "billing", Type: "charge", Payload: sig.Payload}}}, nil
		}}); err != nil {
		t.Fatal(err)
	}
	type account struct {
		Charged map[string]int `json:"charged"`
	}
	if err := engine.Register(billing, engine.Activity[account]{Type: "charge",
		Entity: func(sig baton.Signal) (string, error) { return "account-" + string(sig.Payload), nil },
		Handle: func(_ context.Context, sig baton.Signal, a *account) (engine.Effects, error) {
			if a.Charged == nil {
				a.Charged = map[string]int{}
			}
			a.Charged[sig.Conversation.String()]++
			return engine.Effects{}, nil
		}}); err != nil {
		t.Fatal(err)
	}
	runCtx, stopEngines := context.WithCancel(ctx)
	var running sync.WaitGroup
	for _, e := range []*engine.Engine{shop, billing} {
		running.Go(func() { _ = e.Run(runCtx) })
	}
	defer func() { stopEngines(); running.Wait() }()

	// Kill a node every 1 to 2 s (the stream's leader two times in three),
	// bring it back after 0.5 to 1.5 s.
	killing, stopKilling := context.WithCancel(ctx)
	var kills, leaderKills atomic.Int64
	var chaos sync.WaitGroup
	chaos.Go(func() {
		for sleepCtx(killing, time.Duration(1000+rand.IntN(1000))*time.Millisecond) {
			victim := nodes[rand.IntN(len(nodes))]
			if rand.IntN(3) > 0 {
				if leader := streamLeader(killing, url, stream); leader != "" {
					for _, n := range nodes {
						if n.opts.ServerName == leader {
							victim = n
							leaderKills.Add(1)
						}
					}
				}
			}
			victim.stop()
			kills.Add(1)
			sleepCtx(killing, time.Duration(500+rand.IntN(1000))*time.Millisecond)
			if err := victim.start(); err != nil {
				t.Errorf("restart: %v", err)
				return
			}
		}
	})

	accounts := []string{"ada", "grace", "edsger"}
	var conversations []baton.TokenID
	for i := range orders {
		sig, err := shop.IssueRoot(ctx, baton.Emit{Destination: "orders", Type: "place", Payload: []byte(accounts[i%len(accounts)])}, 0)
		if err != nil {
			t.Fatal(err)
		}
		conversations = append(conversations, sig.Conversation)
		// The edge publishes until the cluster takes it (a leader
		// election refuses publishes for a moment).
		publish := func() error {
			attempt, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
			defer cancelAttempt()
			return tr.Publish(attempt, sig)
		}
		for err := publish(); err != nil; err = publish() {
			if ctx.Err() != nil {
				t.Fatalf("publishing order %d: %v", i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopKilling()
	chaos.Wait()

	// Wait until every token is consumed: every conversation finished.
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		live := 0
		for _, d := range []string{"orders", "billing"} {
			toks, _ := tokens.ListByDestination(ctx, d, store.Page{Limit: store.MaxPageLimit})
			live += len(toks)
		}
		if live == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tokens still live 90s after the last order", live)
		}
	}
	charged := map[string]int{}
	for _, a := range accounts {
		ent, err := ledgerStore.Load(ctx, "account-"+a)
		if err != nil {
			t.Fatal(err)
		}
		var acc account
		if len(ent.State) > 0 {
			if err := json.Unmarshal(ent.State, &acc); err != nil {
				t.Fatal(err)
			}
		}
		for conv, n := range acc.Charged {
			charged[conv] += n
		}
	}
	wrong := 0
	for _, c := range conversations {
		if n := charged[c.String()]; n != 1 {
			wrong++
			if wrong <= 10 {
				t.Errorf("order %s charged %d times, want 1", c, n)
			}
		}
	}
	st := billing.Stats().Plus(shop.Stats())
	t.Logf("%d orders over a 3-node JetStream cluster (stream replicas 3): %d node kills (%d of the stream leader); %d charges wrong; engines: applied %d, duplicates dropped %d, dispatch retries %d, swept %d",
		orders, kills.Load(), leaderKills.Load(), wrong, st.Applied, st.Duplicates, st.DispatchRetries, st.Swept)
	if kills.Load() == 0 || leaderKills.Load() == 0 {
		t.Error("no node (or no stream leader) was killed: the run proves nothing about failover")
	}
}
