package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/engine"
)

// The destinations of the workload, in the order a conversation reaches
// them.
const (
	Order    = "order"
	Billing  = "billing"
	Stock    = "stock"
	Shipping = "shipping"
)

// Destinations lists every destination of the workload.
var Destinations = []string{Order, Billing, Stock, Shipping}

// Signal types and the topic of the fan-out.
const (
	TypePlace   = "order.place"
	TypePlaced  = "order.placed"
	TypeCharged = "order.charged"
	TopicPlaced = "order.placed"
)

// Subscriptions is the fan-out of the workload: every engine gets it.
var Subscriptions = map[string][]string{TopicPlaced: {Billing, Stock}}

// Accounts and StockItems are how many shared account and stock entities
// there are. Few of them means many signals per entity, and so version
// conflicts between processes.
const (
	Accounts   = 3
	StockItems = 2
)

// Activity names, as the ledger records them: type@destination, because
// order.placed is one type handled by two destinations.
const (
	ActPlace   = TypePlace + "@" + Order
	ActBill    = TypePlaced + "@" + Billing
	ActReserve = TypePlaced + "@" + Stock
	ActShip    = TypeCharged + "@" + Shipping
)

// Ledger is the state of every entity of the workload.
type Ledger struct {
	// Applied holds one "conversation/activity/token" per activity
	// committed on this entity.
	Applied []string `json:"applied"`
	// Total is business state that the activities change (amounts charged
	// or reserved), so the state is more than the ledger.
	Total int `json:"total,omitempty"`
}

// OrderPayload is the payload of every signal of a conversation.
type OrderPayload struct {
	Amount int `json:"amount"`
}

// Expectation is one activity that a conversation must apply exactly once,
// and the entity it must be recorded on.
type Expectation struct {
	Activity string
	Key      string
}

// Expected returns the activities of one conversation.
func Expected(conversation baton.TokenID) []Expectation {
	return []Expectation{
		{ActPlace, OrderKey(conversation)},
		{ActBill, AccountKey(conversation)},
		{ActReserve, StockKey(conversation)},
		{ActShip, ShipmentKey(conversation)},
	}
}

// Entity keys. Each is a pure function of the signal (protocol R0).
func OrderKey(c baton.TokenID) string    { return "order-" + c.String() }
func AccountKey(c baton.TokenID) string  { return fmt.Sprintf("account-%d", int(c[0])%Accounts) }
func StockKey(c baton.TokenID) string    { return fmt.Sprintf("stock-%d", int(c[1])%StockItems) }
func ShipmentKey(c baton.TokenID) string { return "shipment-" + c.String() }

// SharedKeys returns the keys of the entities that many conversations
// share.
func SharedKeys() []string {
	var keys []string
	for i := range Accounts {
		keys = append(keys, fmt.Sprintf("account-%d", i))
	}
	for i := range StockItems {
		keys = append(keys, fmt.Sprintf("stock-%d", i))
	}
	return keys
}

// KeysOf returns every entity key that the conversations can touch.
func KeysOf(conversations []baton.TokenID) []string {
	keys := SharedKeys()
	for _, c := range conversations {
		keys = append(keys, OrderKey(c), ShipmentKey(c))
	}
	return keys
}

// RootSignal returns the signal that starts a conversation; its token id
// is the conversation id, as engine.IssueRoot makes it.
func RootSignal(id baton.TokenID, amount int) baton.Signal {
	payload, _ := json.Marshal(OrderPayload{Amount: amount})
	return baton.Signal{ID: id, Conversation: id, Destination: Order, Type: TypePlace, Payload: payload}
}

// LedgerEntry formats what an activity appends to its entity's ledger.
func LedgerEntry(sig baton.Signal) string {
	return fmt.Sprintf("%s/%s@%s/%s", sig.Conversation, sig.Type, sig.Destination, sig.ID)
}

// ParseLedgerEntry splits an entry into its conversation, activity and
// token.
func ParseLedgerEntry(entry string) (conversation baton.TokenID, activity string, token baton.TokenID, err error) {
	parts := strings.Split(entry, "/")
	if len(parts) != 3 {
		return conversation, "", token, fmt.Errorf("ledger entry %q: want conversation/activity/token", entry)
	}
	if conversation, err = baton.ParseTokenID(parts[0]); err != nil {
		return conversation, "", token, fmt.Errorf("ledger entry %q: %w", entry, err)
	}
	if token, err = baton.ParseTokenID(parts[2]); err != nil {
		return conversation, "", token, fmt.Errorf("ledger entry %q: %w", entry, err)
	}
	return conversation, parts[1], token, nil
}

// Register adds the workload's activity for e's destination to e.
func Register(e *engine.Engine) error {
	byConversation := func(key func(baton.TokenID) string) func(baton.Signal) (string, error) {
		return func(sig baton.Signal) (string, error) { return key(sig.Conversation), nil }
	}
	apply := func(emit func(OrderPayload) []baton.Emit) func(context.Context, baton.Signal, *Ledger) (engine.Effects, error) {
		return func(_ context.Context, sig baton.Signal, l *Ledger) (engine.Effects, error) {
			var p OrderPayload
			if err := json.Unmarshal(sig.Payload, &p); err != nil {
				return engine.Effects{}, engine.Permanent(fmt.Errorf("e2e: payload of %s: %w", sig.ID, err))
			}
			l.Applied = append(l.Applied, LedgerEntry(sig))
			l.Total += p.Amount
			var emits []baton.Emit
			if emit != nil {
				emits = emit(p)
			}
			return engine.Effects{Emit: emits}, nil
		}
	}
	forward := func(template baton.Emit) func(OrderPayload) []baton.Emit {
		return func(p OrderPayload) []baton.Emit {
			// A copy per call: handlers run concurrently, and writing the
			// payload into the captured template raced between them.
			emit := template
			emit.Payload, _ = json.Marshal(p)
			return []baton.Emit{emit}
		}
	}
	switch e.Destination() {
	case Order:
		return engine.Register(e, engine.Activity[Ledger]{Type: TypePlace, Entity: byConversation(OrderKey),
			Handle: apply(forward(baton.Emit{Topic: TopicPlaced, Type: TypePlaced}))})
	case Billing:
		return engine.Register(e, engine.Activity[Ledger]{Type: TypePlaced, Entity: byConversation(AccountKey),
			Handle: apply(forward(baton.Emit{Destination: Shipping, Type: TypeCharged}))})
	case Stock:
		return engine.Register(e, engine.Activity[Ledger]{Type: TypePlaced, Entity: byConversation(StockKey),
			Handle: apply(nil)})
	case Shipping:
		return engine.Register(e, engine.Activity[Ledger]{Type: TypeCharged, Entity: byConversation(ShipmentKey),
			Handle: apply(nil)})
	}
	return fmt.Errorf("e2e: unknown destination %q", e.Destination())
}

// RedisPartPrefixes are the key prefixes of the Redis token stores that a
// run's tokens are split over (backend/split), parts of them: the prefix
// itself for one part, else <prefix>:p0, <prefix>:p1, ... (under the
// prefix, so that a scan of it finds every part's keys).
func RedisPartPrefixes(prefix string, parts int) []string {
	if parts <= 1 {
		return []string{prefix}
	}
	out := make([]string, parts)
	for i := range out {
		out[i] = fmt.Sprintf("%s:p%d", prefix, i)
	}
	return out
}
