package sim

import (
	"context"
	"fmt"

	"github.com/batonhq/baton"
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
		return engine.Register(e, engine.Activity[ledgerState]{Type: "order.placed",
			Entity: func(sig baton.Signal) (string, error) { return fmt.Sprintf("account-%d", sig.Conversation[0]%2), nil },
			Handle: apply(baton.Emit{Destination: "shipping", Type: "order.charged"})})
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
