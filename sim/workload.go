package sim

import (
	"context"
	"fmt"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
)

// The workload: an order (order) fans out to billing and stock (topic
// "placed"); billing charges one of two shared accounts and tells shipping.
// Accounts and the single stock entity are touched by many signals.
var destinations = []string{"order", "billing", "stock", "shipping"}

// expectedTypes lists the activities of one conversation, each to be
// applied exactly once.
var expectedTypes = []string{"order.place", "order.placed@billing", "order.placed@stock", "order.charged"}

// ledgerState is every entity's state: the activities applied to it.
type ledgerState struct {
	Applied []string `json:"applied"` // "conversation/activity/token"
}

func activityName(sig baton.Signal) string {
	if sig.Type == "order.placed" {
		return sig.Type + "@" + sig.Destination
	}
	return sig.Type
}

func record(sig baton.Signal, s *ledgerState) {
	s.Applied = append(s.Applied, fmt.Sprintf("%s/%s/%s", sig.Conversation, activityName(sig), sig.ID))
}

func register(e *engine.Engine) error {
	apply := func(emits ...baton.Emit) func(context.Context, baton.Signal, *ledgerState) (engine.Effects, error) {
		return func(_ context.Context, sig baton.Signal, s *ledgerState) (engine.Effects, error) {
			record(sig, s)
			return engine.Effects{Emit: emits}, nil
		}
	}
	byConversation := func(prefix string) func(baton.Signal) (string, error) {
		return func(sig baton.Signal) (string, error) { return prefix + sig.Conversation.String(), nil }
	}
	switch e.Destination() {
	case "order":
		return engine.Register(e, engine.Activity[ledgerState]{Type: "order.place", Entity: byConversation("order-"),
			Handle: apply(baton.Emit{Topic: "placed", Type: "order.placed"})})
	case "billing":
		// A transactional activity: the charge is also a row of the
		// billing service's own table, written in the commit's transaction.
		return engine.RegisterTx(e, engine.TxActivity[ledgerState, *memory.Tx]{Type: "order.placed",
			Entity: func(sig baton.Signal) (string, error) { return fmt.Sprintf("account-%d", sig.Conversation[0]%2), nil },
			Handle: func(_ context.Context, tx *memory.Tx, sig baton.Signal, s *ledgerState) (engine.Effects, error) {
				record(sig, s)
				tx.Put(sideTable, sig.Conversation.String(), []byte(sig.ID.String()))
				return engine.Effects{Emit: []baton.Emit{{Destination: "shipping", Type: "order.charged"}}}, nil
			}})
	case "stock":
		return engine.Register(e, engine.Activity[ledgerState]{Type: "order.placed",
			Entity: func(baton.Signal) (string, error) { return "stock", nil },
			Handle: apply()})
	case "shipping":
		return engine.Register(e, engine.Activity[ledgerState]{Type: "order.charged", Entity: byConversation("shipment-"),
			Handle: apply()})
	}
	return fmt.Errorf("sim: unknown destination %q", e.Destination())
}

// root is a conversation the simulation started: its root token, and the
// activities it must apply (by activityName), the root's own first.
type root struct {
	id, conversation baton.TokenID
	expires          bool // issued with a time to live
	activities       []string
}

// heldKey names the signals that the blocked-entry probe holds back: those
// of one conversation to one destination.
type heldKey struct {
	conversation baton.TokenID
	destination  string
}

func (s *Sim) refusesPublish(sig baton.Signal) bool {
	return s.held[heldKey{sig.Conversation, sig.Destination}]
}

// probeBlockedEntry checks, with faults off, that a signal is never
// blocked by another signal's unfinished outbox entry on the same entity
// (the state change is committed in step 4, whatever else is pending).
// Two root signals go to billing for one account; the first one's emitted
// signal cannot be dispatched, so its outbox entry stays unfinished; the
// second, delivered alone while it is, must be applied and acknowledged.
// Then the hold is lifted and both conversations must finish as any other.
func (s *Sim) probeBlockedEntry() {
	ctx := context.Background()
	var sigs [2]baton.Signal
	for i := range sigs {
		conversation := s.randomID()
		conversation[0] &^= 1 // one account: routing takes the first byte mod 2
		tok, err := s.tokens.Issue(ctx, baton.Token{Conversation: conversation, Destination: "billing", Type: "order.placed",
			Digest: baton.DigestOf(nil), CreatedAt: s.now()})
		if err != nil {
			s.violate("probe: issue: %v", err)
			return
		}
		sigs[i] = baton.Signal{ID: tok.ID, Conversation: conversation, Destination: "billing", Type: "order.placed"}
		s.roots = append(s.roots, root{id: tok.ID, conversation: conversation,
			activities: []string{"order.placed@billing", "order.charged"}})
	}
	stuck, probe := sigs[0], sigs[1]
	s.held[heldKey{stuck.Conversation, "shipping"}] = true
	s.runAlone(stuck)
	if !s.pendingEntry("billing", stuck.ID) {
		s.violate("probe: the held signal %s left no pending outbox entry to block on", short(stuck.ID))
		return
	}
	s.runAlone(probe)
	switch {
	case s.ledger[probe.Conversation.String()+"/order.placed@billing"] != 1:
		s.violate("signal %s was not applied while another signal's outbox entry on its entity was unfinished (blocked)", short(probe.ID))
	case !s.acked[probe.ID]:
		s.violate("signal %s was not acknowledged while another signal's outbox entry on its entity was unfinished (blocked)", short(probe.ID))
	case !s.pendingEntry("billing", stuck.ID):
		s.violate("probe: the held signal's outbox entry was finished although its dispatch was held back")
	default:
		s.count("probe: a signal went past another's unfinished outbox entry")
	}
	delete(s.held, heldKey{stuck.Conversation, "shipping"})
}

// runAlone delivers sig once and runs only that worker until it ends.
func (s *Sim) runAlone(sig baton.Signal) {
	s.enqueue(sig)
	m := s.messages[len(s.messages)-1]
	s.deliver(m)
	for a := s.actors[len(s.actors)-1]; !a.done; {
		s.step++
		s.resume(a)
	}
}

// pendingEntry reports whether an entity of destination d holds an outbox
// entry for token.
func (s *Sim) pendingEntry(d string, token baton.TokenID) bool {
	inner := s.entities[d].inner
	for _, key := range inner.Keys() {
		e, _ := inner.Load(context.Background(), key)
		if _, ok := e.Entry(token); ok {
			return true
		}
	}
	return false
}

func (s *Sim) randomID() baton.TokenID {
	id, _ := baton.ReadTokenID(randomReader{s})
	return id
}

// sideTable is the billing service's own table, which its transactional
// activity writes: one row per charged conversation.
const sideTable = "charges"

// rowWritten checks a row that a committed transaction added.
func (s *Sim) rowWritten(destination, key string) {
	if s.rows[key] != "" {
		s.violate("row %s of %s written twice", key, destination)
	}
	s.rows[key] = destination
}

// startInTransaction starts a conversation the way a service's request
// handler does (engine.StartTx): an order row and the start in one
// transaction of the order destination's store; a tenth roll back, and
// start nothing. A caller launches each committed start, and may crash
// doing so; the sweeper launches what it leaves.
func (s *Sim) startInTransaction() error {
	tx := s.entities["order"].inner.Begin()
	start, err := engine.StartTx(context.Background(), s.engines["order"], tx, baton.Emit{Destination: "order", Type: "order.place"})
	if err != nil {
		return err
	}
	tx.Put("orders", start.ID.String(), []byte("new"))
	if s.rng.IntN(10) == 0 {
		tx.Rollback()
		s.count("fault: a caller's transaction rolled back its start")
		s.rolledBack = append(s.rolledBack, start.ID)
		return nil
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.roots = append(s.roots, root{conversation: start.ID, activities: expectedTypes})
	s.start(&actor{name: "caller@order", dest: "order", run: func(ctx context.Context) {
		if _, err := s.engines["order"].Launch(ctx, start); err == nil {
			s.count("path: start launched by its caller")
		}
	}})
	return nil
}
