package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batonhq/baton/backend/postgres"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/store"
)

// Settings of TestOrdersService.
const (
	ordersPlaced     = 150
	ordersBurst      = 10
	ordersProcs      = 2
	ordersStock      = 70 // per SKU, so that some orders are backordered
	ordersBalance    = 100_000_000
	ordersSettleTime = 2 * time.Minute
)

var (
	ordersCustomers = []string{"ada", "grace", "edsger"}
	ordersSKUs      = []string{"mug", "book"}
)

// TestOrdersService runs examples/orders, a service with tables of its own
// (orders, accounts with a ledger, stock with reservations, shipments)
// whose steps are transactional activities and whose HTTP edge starts each
// order's process in the transaction that inserts the order row. Two
// processes share one PostgreSQL and one NATS, both reached through
// toxiproxy, which injects resets, stalls and outages; the test
// SIGKILLs the processes at random while clients place orders, each at
// least once and some several times (a client retries until it sees the
// order). Afterwards SQL over the service's own tables must show every
// order charged once, reserved once or backordered, shipped once when
// reserved, and balances and stock that add up; and baton must have left
// nothing behind (no live token, no outbox entry, no pending start).
func TestOrdersService(t *testing.T) {
	t.Parallel()
	pgURL := testenv.Addr(t, testenv.Postgres)
	natsURL := testenv.Addr(t, testenv.NATS)
	bin, err := buildOrders()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	ns := newNamespace()
	serviceSchema := ns.pgSchema + "_orders"
	pool, err := pgxpool.New(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	t.Cleanup(func() {
		for _, schema := range []string{ns.pgSchema, serviceSchema} {
			if _, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+quoteIdent(schema)+" CASCADE"); err != nil {
				t.Errorf("drop schema %s: %v", schema, err)
			}
		}
	})
	t.Cleanup(func() { deleteStream(t, natsURL, ns.natsStream) })

	f := newFaults(t)
	pgProxy := f.proxy(t, "postgres", pgURL)
	natsProxy := f.proxy(t, "nats", natsURL)
	args := []string{
		"--postgres", pgProxy, "--schema", serviceSchema, "--baton-schema", ns.pgSchema,
		"--nats", natsProxy, "--nats-allow-unsafe-durability", "--nats-stream", ns.natsStream, "--nats-prefix", ns.natsPrefix,
		"--addr", "127.0.0.1:0", "--seed-customers", strings.Join(ordersCustomers, ","), "--seed-skus", strings.Join(ordersSKUs, ","),
		"--seed-balance", fmt.Sprint(ordersBalance), "--seed-stock", fmt.Sprint(ordersStock),
		"--sweep-after", "2s", "--sweep-interval", "500ms", "--ack-wait", "3s", "--log-level", "warn",
	}
	var slots []*workerSlot
	for i := range ordersProcs {
		slots = append(slots, startSlot(t, fmt.Sprintf("orders-%d", i), bin, args))
	}
	stopped := false
	stopAll := func() {
		if !stopped {
			stopped = true
			for _, s := range slots {
				s.stop(20 * time.Second)
			}
		}
	}
	t.Cleanup(stopAll)

	// Chaos while the orders are placed and for a while after.
	chaos, endChaos := context.WithCancel(ctx)
	var chaosDone sync.WaitGroup
	chaosDone.Go(func() { f.run(chaos, t, 1) })
	chaosDone.Go(func() { killAtRandom(chaos, slots) })

	placed := placeOrders(ctx, t, slots)
	sleepCtx(ctx, 3*time.Second)
	endChaos()
	chaosDone.Wait()
	faultCount, faultKinds := f.summary()

	t.Logf("orders placed: %d requests for %d orders; faults %d (%s)", placed.Load(), ordersPlaced, faultCount, faultKinds)
	svc := tablesOf(serviceSchema)
	if !waitSettled(ctx, t, pool, svc) {
		t.Errorf("orders not all shipped or backordered %v after the chaos ended", ordersSettleTime)
	} else {
		waitBatonQuiet(ctx, t, pgURL, ns.pgSchema)
	}
	stopAll()
	var kills, restarts int
	for _, s := range slots {
		c := s.counts()
		kills, restarts = kills+c.kills, restarts+c.restarts
	}
	t.Logf("processes: %d SIGKILLs, %d restarts", kills, restarts)
	checkOrders(ctx, t, pool, svc)
	checkBatonLeftNothing(ctx, t, pgURL, ns.pgSchema)
}

// placeOrders places the orders in bursts of ordersBurst at once (so that
// the processes meet each other on the same stock and accounts), a second
// or so apart (so that the chaos meets orders at every step). Each order
// goes through a random process, retried until one answers with it; every
// fifth is placed a second time once it was placed. It returns how many
// requests were answered.
func placeOrders(ctx context.Context, t *testing.T, slots []*workerSlot) *atomic.Int64 {
	var answered atomic.Int64
	for first := 0; first < ordersPlaced; first += ordersBurst {
		var wg sync.WaitGroup
		for n := first; n < min(first+ordersBurst, ordersPlaced); n++ {
			wg.Go(func() {
				times := 1
				if n%5 == 0 {
					times = 2
				}
				for range times {
					if err := placeOrder(ctx, slots, n); err != nil {
						t.Errorf("order %d: %v", n, err)
						return
					}
					answered.Add(1)
				}
			})
		}
		wg.Wait()
		if !sleepCtx(ctx, time.Duration(500+rand.IntN(1000))*time.Millisecond) {
			break
		}
	}
	return &answered
}

func placeOrder(ctx context.Context, slots []*workerSlot, n int) error {
	body, _ := json.Marshal(map[string]any{
		"id": fmt.Sprintf("o-%d", n), "customer": ordersCustomers[n%len(ordersCustomers)],
		"sku": ordersSKUs[n%len(ordersSKUs)], "qty": 1 + n%2, "amount_cents": 100 + n,
	})
	deadline := time.Now().Add(time.Minute)
	var last string
	for time.Now().Before(deadline) {
		slot := slots[rand.IntN(len(slots))]
		wait, cancel := context.WithTimeout(ctx, 5*time.Second)
		addr, err := slot.waitReady(wait)
		cancel()
		if err != nil {
			last = err.Error()
			continue
		}
		req, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, _ := http.NewRequestWithContext(req, http.MethodPost, "http://"+addr+"/orders", bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(r)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK {
				cancel()
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		cancel()
		if !sleepCtx(ctx, 100*time.Millisecond) {
			break
		}
	}
	return fmt.Errorf("not placed within a minute; last answer: %s", last)
}

// killAtRandom SIGKILLs a random process every 1 to 3 seconds until ctx
// ends; its slot restarts it.
func killAtRandom(ctx context.Context, slots []*workerSlot) {
	for sleepCtx(ctx, time.Duration(1000+rand.IntN(2000))*time.Millisecond) {
		slots[rand.IntN(len(slots))].kill()
	}
}

// serviceTables are the service's tables, qualified.
type serviceTables struct{ orders, accounts, ledger, stock, reservations, shipments string }

func tablesOf(schema string) serviceTables {
	q := func(name string) string { return pgx.Identifier{schema, name}.Sanitize() }
	return serviceTables{q("orders"), q("accounts"), q("ledger"), q("stock"), q("reservations"), q("shipments")}
}

// waitSettled waits until every order was placed and has reached the end
// of its process: shipped, or backordered.
func waitSettled(ctx context.Context, t *testing.T, pool *pgxpool.Pool, svc serviceTables) bool {
	deadline := time.Now().Add(ordersSettleTime)
	for {
		var orders, open int
		err := pool.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE status NOT IN ('shipped', 'backordered')) FROM "+svc.orders).Scan(&orders, &open)
		if err == nil && orders == ordersPlaced && open == 0 {
			return true
		}
		if time.Now().After(deadline) {
			t.Logf("%d orders, %d not finished (err %v)", orders, open, err)
			return false
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return false
		}
	}
}

// checkOrders checks the service's own tables: each step's business rows
// written exactly once, and balances and stock that add up.
func checkOrders(ctx context.Context, t *testing.T, pool *pgxpool.Pool, svc serviceTables) {
	t.Helper()
	var shipped, backordered int
	rows, err := pool.Query(ctx, `SELECT o.id, o.status,
	(SELECT count(*) FROM `+svc.ledger+` l WHERE l.order_id = o.id),
	(SELECT count(*) FROM `+svc.reservations+` r WHERE r.order_id = o.id),
	(SELECT count(*) FROM `+svc.shipments+` s WHERE s.order_id = o.id)
FROM `+svc.orders+` o ORDER BY o.id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, status string
		var charges, reservations, shipments int
		if err := rows.Scan(&id, &status, &charges, &reservations, &shipments); err != nil {
			t.Fatal(err)
		}
		want := [3]int{1, 1, 1}
		switch status {
		case "shipped":
			shipped++
		case "backordered":
			backordered++
			want = [3]int{1, 0, 0}
		}
		if got := [3]int{charges, reservations, shipments}; got != want {
			t.Errorf("order %s (%s): %d ledger entries, %d reservations, %d shipments; want %v", id, status, charges, reservations, shipments, want)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("orders: %d shipped, %d backordered", shipped, backordered)
	if shipped == 0 || backordered == 0 {
		t.Errorf("want both shipped and backordered orders (stock %d per SKU), got %d and %d", ordersStock, shipped, backordered)
	}

	// Every account was charged what its ledger says, once.
	rows, err = pool.Query(ctx, `SELECT a.customer, a.balance_cents, coalesce((SELECT sum(amount_cents) FROM `+svc.ledger+` l WHERE l.customer = a.customer), 0)
FROM `+svc.accounts+` a`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var customer string
		var balance, charged int64
		if err := rows.Scan(&customer, &balance, &charged); err != nil {
			t.Fatal(err)
		}
		if balance != ordersBalance-charged {
			t.Errorf("account %s: balance %d, want %d - %d charged in the ledger", customer, balance, ordersBalance, charged)
		}
	}
	rows.Close()

	// Stock went down by what was reserved, once.
	rows, err = pool.Query(ctx, `SELECT s.sku, s.available, coalesce((SELECT sum(qty) FROM `+svc.reservations+` r WHERE r.sku = s.sku), 0)
FROM `+svc.stock+` s`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var sku string
		var available, reserved int
		if err := rows.Scan(&sku, &available, &reserved); err != nil {
			t.Fatal(err)
		}
		if available != ordersStock-reserved {
			t.Errorf("stock %s: %d available, want %d - %d reserved", sku, available, ordersStock, reserved)
		}
	}
	rows.Close()
}

// batonLeftovers describes what baton's store still holds: live tokens,
// outbox entries waiting, pending starts; "" when nothing.
func batonLeftovers(ctx context.Context, st *postgres.Store) (string, error) {
	var left []string
	for _, d := range []string{"shop", "billing", "stock", "shipping"} {
		n, err := store.CountByDestination(ctx, st, d, 0)
		if err != nil {
			return "", err
		}
		if n != 0 {
			left = append(left, fmt.Sprintf("%s: %d live tokens", d, n))
		}
	}
	later := time.Now().Add(time.Hour)
	stale, err := st.Stale(ctx, later, 100)
	if err != nil {
		return "", err
	}
	if len(stale) != 0 {
		left = append(left, fmt.Sprintf("entities with outbox entries: %v", stale))
	}
	starts, err := st.PendingStarts(ctx, later, 100)
	if err != nil {
		return "", err
	}
	if len(starts) != 0 {
		left = append(left, fmt.Sprintf("pending starts: %d", len(starts)))
	}
	return strings.Join(left, "; "), nil
}

// waitBatonQuiet waits, while the processes run, until baton's store holds
// nothing (batonLeftovers): an order can be settled while the start that
// began it still waits for the sweeper, because the process that sent its
// signal was killed before it deleted the start.
func waitBatonQuiet(ctx context.Context, t *testing.T, pgURL, schema string) {
	t.Helper()
	st := openBatonStore(ctx, t, pgURL, schema)
	start := time.Now()
	deadline := start.Add(ordersSettleTime)
	for waited := false; ; waited = true {
		left, err := batonLeftovers(ctx, st)
		if err == nil && left == "" {
			if waited {
				t.Logf("baton's store quiet %v after the orders settled", time.Since(start).Round(time.Millisecond))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Logf("baton's store not quiet %v after the orders settled: %s (err %v)", ordersSettleTime, left, err)
			return // checkBatonLeftNothing fails on it
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return
		}
	}
}

// openBatonStore opens baton's store in schema, closed with the test.
func openBatonStore(ctx context.Context, t *testing.T, pgURL, schema string) *postgres.Store {
	t.Helper()
	st, err := postgres.Open(ctx, pgURL, postgres.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// checkBatonLeftNothing checks, through baton's store, that no token is
// live, no outbox entry waits and no start is pending.
func checkBatonLeftNothing(ctx context.Context, t *testing.T, pgURL, schema string) {
	t.Helper()
	st := openBatonStore(ctx, t, pgURL, schema)
	left, err := batonLeftovers(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if left != "" {
		t.Errorf("baton's store holds %s, want nothing", left)
	}
}

// deleteStream removes a JetStream stream the run created.
func deleteStream(t *testing.T, natsURL, stream string) {
	nc, err := natsgo.Connect(natsURL)
	if err != nil {
		t.Errorf("nats: %v", err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Errorf("nats: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, stream); err != nil && err != jetstream.ErrStreamNotFound {
		t.Errorf("delete stream %s: %v", stream, err)
	}
}
