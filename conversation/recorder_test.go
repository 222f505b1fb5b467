package conversation_test

import (
	"context"
	"strings"
	"testing"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/conversation"
	"github.com/batonhq/baton/engine"
	memtransport "github.com/batonhq/baton/transport/memory"
)

type nothing struct{}

func TestRecorderDrawsAConversation(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(0)
	tokens := memory.NewTokenStore()
	broker := memtransport.New(memtransport.Config{})
	newEngine := func(dest string) *engine.Engine {
		e, err := engine.New(engine.Config{Destination: dest, Tokens: tokens, Entities: memory.NewEntityStore(),
			Dispatch: broker, OnEvent: rec.Observe})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	byConv := func(s baton.Signal) (string, error) { return s.Conversation.String(), nil }
	shop, billing := newEngine("shop"), newEngine("billing")
	if err := engine.Register(shop, engine.Activity[nothing]{Type: "order.place", Entity: byConv,
		Handle: func(context.Context, baton.Signal, *nothing) (engine.Effects, error) {
			return engine.Effects{Emit: []baton.Emit{{Destination: "billing", Type: "charge"}}}, nil
		}}); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	root, err := shop.IssueRoot(ctx, baton.Emit{Destination: "shop", Type: "order.place"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shop.Process(ctx, root); err != nil {
		t.Fatal(err)
	}
	if _, err := shop.Process(ctx, root); err != nil { // a duplicate
		t.Fatal(err)
	}
	_ = billing

	list := rec.List(10)
	if len(list) != 1 || list[0].Signals != 2 || list[0].InFlight != 1 || list[0].Duplicates != 1 {
		t.Fatalf("list = %+v", list)
	}
	c, ok := rec.Get(root.Conversation)
	if !ok {
		t.Fatal("conversation not recorded")
	}
	var b strings.Builder
	if err := c.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{"order.place @shop  done  (1 duplicates dropped)", "└─ charge @billing  in_flight"} {
		if !strings.Contains(text, want) {
			t.Errorf("text graph lacks %q:\n%s", want, text)
		}
	}
}

func TestRecorderKeepsOnlyTheLimit(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(3)
	for range 10 {
		id := baton.NewTokenID()
		rec.Observe(engine.Event{Kind: engine.EventRootIssued, Signal: baton.Signal{ID: id, Conversation: id, Type: "x", Destination: "d"}})
	}
	if n := len(rec.List(0)); n != 3 {
		t.Fatalf("kept %d conversations, want 3", n)
	}
}

func TestRecordTokensSeesRootsAndTransitions(t *testing.T) {
	t.Parallel()
	rec := conversation.NewRecorder(0)
	tokens := conversation.RecordTokens(memory.NewTokenStore(), rec, nil)
	ctx := t.Context()
	root := baton.Signal{ID: baton.NewTokenID(), Destination: "shop", Type: "order.place"}
	root.Conversation = root.ID
	if err := tokens.Issue(ctx, root.Token()); err != nil {
		t.Fatal(err)
	}
	child := baton.Signal{ID: baton.NewTokenID(), Conversation: root.ID, Causation: root.ID, Destination: "billing", Type: "charge"}
	if _, err := tokens.Transition(ctx, root.ID, []baton.Token{child.Token()}); err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Transition(ctx, root.ID, nil); err != nil { // already consumed: not recorded
		t.Fatal(err)
	}
	c, ok := rec.Get(root.ID)
	if !ok || len(c.Nodes) != 2 || c.Nodes[0].State != conversation.Done || c.Nodes[1].State != conversation.InFlight {
		t.Fatalf("conversation = %+v", c)
	}
}
