package httpsignal_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/httpsignal"
)

// A destination served over HTTP, and a caller that sends it the same
// signal twice: the activity runs once, the second call counts as
// delivered.
func Example() {
	ctx := context.Background()
	tokens := memory.NewTokenStore()
	billing, _ := engine.New(engine.Config{Destination: "billing", Tokens: tokens,
		Entities: memory.NewEntityStore(), Dispatch: engine.Routes{}})
	_ = engine.Register(billing, engine.Activity[int]{Type: "charge",
		Entity: func(sig baton.Signal) (string, error) { return "account-" + string(sig.Payload), nil },
		Handle: func(ctx context.Context, sig baton.Signal, charges *int) (engine.Effects, error) {
			*charges++
			return engine.Effects{Reply: fmt.Appendf(nil, "charge #%d", *charges)}, nil
		}})
	srv := httptest.NewServer(httpsignal.Middleware(billing, httpsignal.Options{})(nil))
	defer srv.Close()

	client, _ := httpsignal.NewPublisher(httpsignal.PublisherConfig{Endpoints: map[string]string{"billing": srv.URL}})
	sig, _ := billing.IssueRoot(ctx, baton.Emit{Destination: "billing", Type: "charge", Payload: []byte("42")}, 0)
	for range 2 {
		reply, outcome, err := client.Call(ctx, sig)
		fmt.Printf("%s %q %v\n", outcome, reply, err)
	}
	// Output:
	// applied "charge #1" <nil>
	// duplicate "" <nil>
}
