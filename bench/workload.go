package bench

import (
	"encoding/json"
	"fmt"
	"time"
)

// The process every variant runs: a root signal places an order at the
// orders destination, whose activity emits one charge to the billing
// destination, whose activity emits nothing. Two signals per conversation.
const (
	destOrders  = "orders"
	destBilling = "billing"
	typePlace   = "order.place"
	typeCharge  = "payment.charge"
)

var destinations = []string{destOrders, destBilling}

// payload is the body of both signal types. Sent is when the sender
// decided to send (Unix nanoseconds): latency runs from there to the ack
// after processing, so every cost of sending (a root token, an outbox
// relay) counts.
type payload struct {
	Order   int64 `json:"order"`
	Account int   `json:"account"`
	Amount  int64 `json:"amount"`
	Sent    int64 `json:"sent"`
}

// orderState and accountState are the business state of the two entity
// kinds, stored as JSON by every variant.
type orderState struct {
	Placed int64 `json:"placed"`
	Amount int64 `json:"amount"`
}

type accountState struct {
	Charges int64 `json:"charges"`
	Total   int64 `json:"total"`
}

// workload sizes the entity space. Orders are keyed by conversation number
// modulo Orders (almost no contention); charges go to one of Accounts
// accounts (some contention).
type workload struct {
	Orders   int
	Accounts int
}

// rootPayload is conversation seq's first signal.
func (w workload) rootPayload(seq int64, now time.Time) payload {
	// A multiplicative hash spreads consecutive conversations over the
	// accounts without a random source, so every variant sees the same
	// sequence of accounts.
	account := int((uint64(seq) * 2654435761) % uint64(w.Accounts))
	return payload{Order: seq, Account: account, Amount: seq%100 + 1, Sent: now.UnixNano()}
}

func (w workload) orderKey(p payload) string {
	return fmt.Sprintf("order-%d", p.Order%int64(w.Orders))
}

func accountKey(account int) string { return fmt.Sprintf("account-%d", account) }

// entityKey routes a signal to its entity (protocol R0: a pure function of
// the signal).
func (w workload) entityKey(typ string, p payload) (string, error) {
	switch typ {
	case typePlace:
		return w.orderKey(p), nil
	case typeCharge:
		return accountKey(p.Account), nil
	}
	return "", fmt.Errorf("bench: unknown signal type %q", typ)
}

// placeOrder is the orders activity: it records the order and asks billing
// to charge the account. now stamps the charge's send time.
func placeOrder(st *orderState, p payload, now time.Time) payload {
	st.Placed++
	st.Amount += p.Amount
	next := p
	next.Sent = now.UnixNano()
	return next
}

// charge is the billing activity.
func charge(st *accountState, p payload) {
	st.Charges++
	st.Total += p.Amount
}

// step is one signal's activity over JSON state, the form in which the
// variants that do not use the engine (ceiling, classic) run it; the
// engine runs placeOrder and charge through engine.Register, which does
// the same JSON decoding and encoding.
type step struct {
	state []byte
	emit  *emitted // nil: nothing to send
}

type emitted struct {
	destination, typ string
	body             []byte
}

func applyStep(typ string, state, body []byte, now time.Time) (step, error) {
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return step{}, fmt.Errorf("bench: decode payload: %w", err)
	}
	switch typ {
	case typePlace:
		var st orderState
		if err := unmarshalState(state, &st); err != nil {
			return step{}, err
		}
		next := placeOrder(&st, p, now)
		out, err := json.Marshal(&st)
		if err != nil {
			return step{}, err
		}
		nb, err := json.Marshal(next)
		if err != nil {
			return step{}, err
		}
		return step{state: out, emit: &emitted{destination: destBilling, typ: typeCharge, body: nb}}, nil
	case typeCharge:
		var st accountState
		if err := unmarshalState(state, &st); err != nil {
			return step{}, err
		}
		charge(&st, p)
		out, err := json.Marshal(&st)
		return step{state: out}, err
	}
	return step{}, fmt.Errorf("bench: unknown signal type %q", typ)
}

func unmarshalState(state []byte, v any) error {
	if len(state) == 0 {
		return nil
	}
	if err := json.Unmarshal(state, v); err != nil {
		return fmt.Errorf("bench: decode state: %w", err)
	}
	return nil
}

// sentAt extracts the send stamp of a signal body; zero if it has none.
func sentAt(body []byte) time.Time {
	var p payload
	if json.Unmarshal(body, &p) != nil || p.Sent == 0 {
		return time.Time{}
	}
	return time.Unix(0, p.Sent)
}
