package e2e

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// ledgerFixture builds the snapshot of a correct run of the given
// conversations: every activity applied once, on its entity.
func ledgerFixture(t *testing.T, n int) (map[baton.TokenID]int, Snapshot) {
	t.Helper()
	amounts := map[baton.TokenID]int{}
	ledgers := map[string]*Ledger{}
	for i := range n {
		c := baton.NewTokenID()
		amounts[c] = 10 + i
		for _, exp := range Expected(c) {
			token := baton.NewTokenID()
			if exp.Activity == ActPlace {
				token = c
			}
			l := ledgers[exp.Key]
			if l == nil {
				l = &Ledger{}
				ledgers[exp.Key] = l
			}
			l.Applied = append(l.Applied, c.String()+"/"+exp.Activity+"/"+token.String())
			l.Total += amounts[c]
		}
	}
	snap := Snapshot{Entities: map[string]store.Entity{}, Roots: map[baton.TokenID]baton.TokenID{}}
	for c := range amounts {
		snap.Roots[c] = c // the fixture's roots have their conversation's id
	}
	for key, l := range ledgers {
		snap.Entities[key] = entityOf(t, key, *l)
	}
	return amounts, snap
}

func entityOf(t *testing.T, key string, l Ledger) store.Entity {
	t.Helper()
	state, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	return store.Entity{Key: key, Version: 1, State: state}
}

func ledgerOf(t *testing.T, e store.Entity) Ledger {
	t.Helper()
	var l Ledger
	if err := json.Unmarshal(e.State, &l); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestCheckPassesACorrectRun(t *testing.T) {
	t.Parallel()
	amounts, snap := ledgerFixture(t, 20)
	r := Check(amounts, snap)
	if !r.OK() || r.Applied != 80 || r.Expected != 80 {
		t.Fatalf("a correct run failed the check:\n%s", r)
	}
}

// Every kind of violation must fail the check, each on its own.
func TestCheckCatchesEveryViolation(t *testing.T) {
	t.Parallel()
	someConversation := func(amounts map[baton.TokenID]int) baton.TokenID {
		var ids []baton.TokenID
		for c := range amounts {
			ids = append(ids, c)
		}
		slices.SortFunc(ids, func(a, b baton.TokenID) int { return slices.Compare(a[:], b[:]) })
		return ids[0]
	}
	cases := []struct {
		name   string
		break_ func(t *testing.T, amounts map[baton.TokenID]int, snap *Snapshot)
		caught func(Report) bool
	}{
		{"lost activity", func(t *testing.T, amounts map[baton.TokenID]int, snap *Snapshot) {
			delete(snap.Entities, ShipmentKey(someConversation(amounts)))
		}, func(r Report) bool { return len(r.Lost) == 1 && !r.Quiet() }},
		{"activity applied twice with another token", func(t *testing.T, amounts map[baton.TokenID]int, snap *Snapshot) {
			c := someConversation(amounts)
			e := snap.Entities[AccountKey(c)]
			l := ledgerOf(t, e)
			l.Applied = append(l.Applied, c.String()+"/"+ActBill+"/"+baton.NewTokenID().String())
			l.Total += amounts[c]
			snap.Entities[e.Key] = entityOf(t, e.Key, l)
		}, func(r Report) bool { return len(r.Duplicated) == 1 }},
		{"one token applied twice", func(t *testing.T, amounts map[baton.TokenID]int, snap *Snapshot) {
			e := snap.Entities[OrderKey(someConversation(amounts))]
			l := ledgerOf(t, e)
			l.Applied = append(l.Applied, l.Applied[0])
			l.Total *= 2
			snap.Entities[e.Key] = entityOf(t, e.Key, l)
		}, func(r Report) bool { return len(r.Duplicated) == 1 && len(r.Unexpected) == 1 }},
		{"activity on the wrong entity", func(t *testing.T, amounts map[baton.TokenID]int, snap *Snapshot) {
			c := someConversation(amounts)
			from, to := snap.Entities[ShipmentKey(c)], snap.Entities[OrderKey(c)]
			moved := ledgerOf(t, from)
			l := ledgerOf(t, to)
			l.Applied = append(l.Applied, moved.Applied...)
			l.Total += moved.Total
			snap.Entities[to.Key] = entityOf(t, to.Key, l)
			delete(snap.Entities, from.Key)
		}, func(r Report) bool { return len(r.Unexpected) == 1 && len(r.Lost) == 1 }},
		{"activity of an unknown conversation", func(t *testing.T, amounts map[baton.TokenID]int, snap *Snapshot) {
			stranger := baton.NewTokenID()
			key := StockKey(stranger)
			var l Ledger
			if e, ok := snap.Entities[key]; ok {
				l = ledgerOf(t, e)
			}
			l.Applied = append(l.Applied, stranger.String()+"/"+ActReserve+"/"+baton.NewTokenID().String())
			snap.Entities[key] = entityOf(t, key, l)
		}, func(r Report) bool { return len(r.Unexpected) == 1 }},
		{"root activity under another token", func(t *testing.T, amounts map[baton.TokenID]int, snap *Snapshot) {
			c := someConversation(amounts)
			snap.Entities[OrderKey(c)] = entityOf(t, OrderKey(c), Ledger{
				Applied: []string{c.String() + "/" + ActPlace + "/" + baton.NewTokenID().String()}, Total: amounts[c]})
		}, func(r Report) bool { return len(r.Unexpected) == 1 }},
		{"state and ledger disagree", func(t *testing.T, amounts map[baton.TokenID]int, snap *Snapshot) {
			e := snap.Entities[AccountKey(someConversation(amounts))]
			l := ledgerOf(t, e)
			l.Total++
			snap.Entities[e.Key] = entityOf(t, e.Key, l)
		}, func(r Report) bool { return len(r.Inconsistent) == 1 }},
		{"live token", func(t *testing.T, amounts map[baton.TokenID]int, snap *Snapshot) {
			snap.Tokens = append(snap.Tokens, baton.Token{ID: baton.NewTokenID(), Destination: Billing, Type: TypePlaced})
		}, func(r Report) bool { return len(r.LiveTokens) == 1 && !r.Quiet() }},
		{"outbox entry", func(t *testing.T, amounts map[baton.TokenID]int, snap *Snapshot) {
			key := OrderKey(someConversation(amounts))
			e := snap.Entities[key]
			e.Outbox = []store.OutboxEntry{{Token: baton.NewTokenID(), CreatedAt: time.Now()}}
			snap.Entities[key] = e
			snap.StaleKeys = append(snap.StaleKeys, key)
		}, func(r Report) bool { return len(r.Outbox) == 1 && !r.Quiet() }},
		{"outbox entry seen only by Stale", func(t *testing.T, amounts map[baton.TokenID]int, snap *Snapshot) {
			snap.StaleKeys = append(snap.StaleKeys, "order-unknown")
		}, func(r Report) bool { return len(r.Outbox) == 1 }},
		{"entity the workload never touches", func(t *testing.T, amounts map[baton.TokenID]int, snap *Snapshot) {
			snap.ExtraKeys = append(snap.ExtraKeys, "entity stray")
		}, func(r Report) bool { return len(r.ExtraKeys) == 1 }},
		{"state that is no ledger", func(t *testing.T, amounts map[baton.TokenID]int, snap *Snapshot) {
			key := AccountKey(someConversation(amounts))
			snap.Entities[key] = store.Entity{Key: key, Version: 3, State: []byte("{not json")}
		}, func(r Report) bool { return len(r.Unexpected) == 1 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			amounts, snap := ledgerFixture(t, 10)
			tc.break_(t, amounts, &snap)
			r := Check(amounts, snap)
			if r.OK() {
				t.Fatalf("the check passed: %s", r)
			}
			if !tc.caught(r) {
				t.Fatalf("the check did not report this violation as expected:\n%s", r)
			}
		})
	}
}

func TestLedgerEntryRoundTrips(t *testing.T) {
	t.Parallel()
	c, id := baton.NewTokenID(), baton.NewTokenID()
	sig := baton.Signal{ID: id, Conversation: c, Destination: Billing, Type: TypePlaced}
	gotC, act, gotID, err := ParseLedgerEntry(LedgerEntry(sig))
	if err != nil || gotC != c || act != ActBill || gotID != id {
		t.Fatalf("ParseLedgerEntry(%q) = %s, %q, %s, %v", LedgerEntry(sig), gotC, act, gotID, err)
	}
	for _, bad := range []string{"", "a/b", c.String() + "/x/y", "x/" + ActBill + "/" + id.String()} {
		if _, _, _, err := ParseLedgerEntry(bad); err == nil {
			t.Errorf("ParseLedgerEntry(%q) accepted it", bad)
		}
	}
}
