package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/httpsignal"
)

// The three systems and the signal types of the order process.
const (
	Shop      = "shop"
	Billing   = "billing"
	Warehouse = "warehouse"

	typePlace    = "order.place"      // form post -> shop
	typePlaced   = "order.placed"     // shop -> billing (HTTP) and warehouse (NATS): fan-out
	typeCaptured = "payment.captured" // billing -> shop
	typeReserved = "stock.reserved"   // warehouse -> shop
	typeShip     = "order.ship"       // shop -> warehouse
	typeShipped  = "order.shipped"    // warehouse -> shop
	topicPlaced  = "orders"
)

// activitiesPerOrder is how many activities one order runs: place, charge,
// reserve, captured, reserved, ship, shipped.
const activitiesPerOrder = 7

var (
	customers = []string{"ada", "grace", "edsger", "barbara", "ken"}
	products  = []string{"kettle", "teapot", "mug"}
	prices    = map[string]int{"kettle": 4900, "teapot": 2900, "mug": 900}
)

// order is what travels in the payloads after the shop took the form.
type order struct {
	Order    string `json:"order"` // the conversation id
	Customer string `json:"customer"`
	Product  string `json:"product"`
	Quantity int    `json:"quantity"`
	Amount   int    `json:"amount"` // cents
}

// orderState is the shop's entity for one order.
type orderState struct {
	Order    order `json:"order"`
	Placed   int   `json:"placed"`   // times order.place applied
	Paid     int   `json:"paid"`     // times payment.captured applied
	Reserved int   `json:"reserved"` // times stock.reserved applied
	Shipping int   `json:"shipping"` // times order.ship was emitted
	Shipped  int   `json:"shipped"`  // times order.shipped applied
}

// accountState is billing's entity for one customer: every charge.
type accountState struct {
	Charges []charge `json:"charges"`
}

type charge struct {
	Order  string `json:"order"`
	Amount int    `json:"amount"`
}

// stockState is the warehouse's entity for one product.
type stockState struct {
	Reservations []string `json:"reservations"` // order ids
}

// shipmentState is the warehouse's entity for one order's shipment.
type shipmentState struct {
	Shipped int `json:"shipped"`
}

func orderKey(conversation string) string { return "order-" + conversation }
func accountKey(customer string) string   { return "account-" + customer }
func stockKey(product string) string      { return "stock-" + product }
func shipmentKey(conversation string) string {
	return "shipment-" + conversation
}

func decodeOrder(sig baton.Signal) (order, error) {
	var o order
	if err := json.Unmarshal(sig.Payload, &o); err != nil {
		return order{}, fmt.Errorf("payload is not an order: %w", err)
	}
	if o.Order != sig.Conversation.String() {
		return order{}, fmt.Errorf("payload names order %q in conversation %s", o.Order, sig.Conversation)
	}
	return o, nil
}

func emitOrder(destination, typ string, o order) baton.Emit {
	payload, _ := json.Marshal(o) // a struct of strings and ints always encodes
	return baton.Emit{Destination: destination, Type: typ, Payload: payload}
}

// registerShop adds the shop's activities. The order entity is touched by
// four signals of its conversation; whichever of payment and reservation
// arrives second asks the warehouse to ship.
func registerShop(e *engine.Engine) error {
	byOrder := func(sig baton.Signal) (string, error) { return orderKey(sig.Conversation.String()), nil }
	place := engine.Activity[orderState]{Type: typePlace, Entity: byOrder,
		Handle: func(ctx context.Context, sig baton.Signal, s *orderState) (engine.Effects, error) {
			o, err := orderFromForm(sig, httpsignal.FormValues(ctx))
			if err != nil {
				return engine.Effects{}, engine.Permanent(err)
			}
			s.Order = o
			s.Placed++
			emit := emitOrder("", typePlaced, o)
			emit.Topic = topicPlaced
			reply, _ := json.Marshal(map[string]any{"order": o.Order, "amount": o.Amount})
			return engine.Effects{Emit: []baton.Emit{emit}, Reply: reply}, nil
		}}
	progress := func(typ string, mark func(*orderState)) engine.Activity[orderState] {
		return engine.Activity[orderState]{Type: typ, Entity: byOrder,
			Handle: func(ctx context.Context, sig baton.Signal, s *orderState) (engine.Effects, error) {
				mark(s)
				if s.Paid > 0 && s.Reserved > 0 && s.Shipping == 0 {
					s.Shipping++
					return engine.Effects{Emit: []baton.Emit{emitOrder(Warehouse, typeShip, s.Order)}}, nil
				}
				return engine.Effects{}, nil
			}}
	}
	for _, err := range []error{
		engine.Register(e, place),
		engine.Register(e, progress(typeCaptured, func(s *orderState) { s.Paid++ })),
		engine.Register(e, progress(typeReserved, func(s *orderState) { s.Reserved++ })),
		engine.Register(e, engine.Activity[orderState]{Type: typeShipped, Entity: byOrder,
			Handle: func(ctx context.Context, sig baton.Signal, s *orderState) (engine.Effects, error) {
				s.Shipped++
				return engine.Effects{}, nil
			}}),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// BrokenEnv, set to "double-charge" in a system's environment, makes
// billing charge every order twice: the tests use it to show that the
// verification catches a broken system.
const BrokenEnv = "BATON_DEMO_BROKEN"

// registerBilling adds the charge: an account is touched by every order of
// its customer.
func registerBilling(e *engine.Engine) error {
	charges := 1
	if os.Getenv(BrokenEnv) == "double-charge" {
		charges = 2
	}
	return engine.Register(e, engine.Activity[accountState]{Type: typePlaced,
		Entity: func(sig baton.Signal) (string, error) {
			o, err := decodeOrder(sig)
			return accountKey(o.Customer), err
		},
		Handle: func(ctx context.Context, sig baton.Signal, s *accountState) (engine.Effects, error) {
			o, err := decodeOrder(sig)
			if err != nil {
				return engine.Effects{}, engine.Permanent(err)
			}
			for range charges {
				s.Charges = append(s.Charges, charge{Order: o.Order, Amount: o.Amount})
			}
			reply, _ := json.Marshal(map[string]any{"charged": o.Amount, "customer": o.Customer})
			return engine.Effects{Emit: []baton.Emit{emitOrder(Shop, typeCaptured, o)}, Reply: reply}, nil
		}})
}

// registerWarehouse adds the reservation (a product's stock is touched by
// every order of it) and the shipment.
func registerWarehouse(e *engine.Engine) error {
	if err := engine.Register(e, engine.Activity[stockState]{Type: typePlaced,
		Entity: func(sig baton.Signal) (string, error) {
			o, err := decodeOrder(sig)
			return stockKey(o.Product), err
		},
		Handle: func(ctx context.Context, sig baton.Signal, s *stockState) (engine.Effects, error) {
			o, err := decodeOrder(sig)
			if err != nil {
				return engine.Effects{}, engine.Permanent(err)
			}
			s.Reservations = append(s.Reservations, o.Order)
			return engine.Effects{Emit: []baton.Emit{emitOrder(Shop, typeReserved, o)}}, nil
		}}); err != nil {
		return err
	}
	return engine.Register(e, engine.Activity[shipmentState]{Type: typeShip,
		Entity: func(sig baton.Signal) (string, error) { return shipmentKey(sig.Conversation.String()), nil },
		Handle: func(ctx context.Context, sig baton.Signal, s *shipmentState) (engine.Effects, error) {
			o, err := decodeOrder(sig)
			if err != nil {
				return engine.Effects{}, engine.Permanent(err)
			}
			s.Shipped++
			return engine.Effects{Emit: []baton.Emit{emitOrder(Shop, typeShipped, o)}}, nil
		}})
}
