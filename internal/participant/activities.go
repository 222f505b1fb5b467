package participant

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/conformance"
	"github.com/batonhq/baton/engine"
)

// account is the state of one billing account.
type account struct {
	Balance int64 `json:"balance"`
	Charges int   `json:"charges"`
}

type charge struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

// decodeCharge reads a charge; a malformed one can never succeed, so it is
// refused for good.
func decodeCharge(sig baton.Signal) (charge, error) {
	var c charge
	if err := json.Unmarshal(sig.Payload, &c); err != nil {
		return c, engine.Permanent(fmt.Errorf("charge: payload is not {\"account\", \"amount\"}: %w", err))
	}
	if c.Account == "" {
		return c, engine.Permanent(fmt.Errorf("charge: no account"))
	}
	return c, nil
}

var chargeActivity = engine.Activity[account]{
	Type: "charge",
	Entity: func(sig baton.Signal) (string, error) {
		c, err := decodeCharge(sig)
		return "account/" + c.Account, err
	},
	Handle: func(_ context.Context, sig baton.Signal, a *account) (engine.Effects, error) {
		c, err := decodeCharge(sig)
		if err != nil {
			return engine.Effects{}, err
		}
		a.Balance += c.Amount
		a.Charges++
		reply, err := json.Marshal(map[string]any{"account": c.Account, "balance": a.Balance, "charges": a.Charges})
		return engine.Effects{Reply: reply}, err
	},
}

// counter is the state of the conformance kit's counting activity.
type counter struct {
	Count int `json:"count"`
}

func countingEntity(sig baton.Signal) (string, error) {
	var p struct {
		Entity string `json:"entity"`
	}
	if err := json.Unmarshal(sig.Payload, &p); err != nil || p.Entity == "" {
		return "", engine.Permanent(fmt.Errorf("%s: payload is not {\"entity\": name}", conformance.DefaultType))
	}
	return "count/" + p.Entity, nil
}

// countingActivity counts its entity's applications and, when forwardTo
// names a destination, passes the signal on to it: a chain of participants
// in which every hop must apply each signal once.
func countingActivity(forwardTo string) engine.Activity[counter] {
	return engine.Activity[counter]{
		Type:   conformance.DefaultType,
		Entity: countingEntity,
		Handle: func(_ context.Context, sig baton.Signal, c *counter) (engine.Effects, error) {
			c.Count++
			reply, err := json.Marshal(c)
			effects := engine.Effects{Reply: reply}
			if forwardTo != "" {
				effects.Emit = []baton.Emit{{Destination: forwardTo, Type: conformance.DefaultType, Payload: sig.Payload}}
			}
			return effects, err
		},
	}
}
