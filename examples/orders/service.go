package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/engine"
)

//go:embed schema.sql
var schemaSQL string

// Order is the body of POST /orders and the payload of every signal of the
// order's conversation.
type Order struct {
	ID          string `json:"id"`
	Customer    string `json:"customer"`
	SKU         string `json:"sku"`
	Qty         int    `json:"qty"`
	AmountCents int64  `json:"amount_cents"`
}

func (o Order) validate() error {
	switch {
	case o.ID == "" || len(o.ID) > 100:
		return errors.New("id must be 1 to 100 characters")
	case o.Customer == "" || len(o.Customer) > 100 || o.SKU == "" || len(o.SKU) > 100:
		return errors.New("customer and sku must be 1 to 100 characters")
	case o.Qty <= 0 || o.AmountCents <= 0:
		return errors.New("qty and amount_cents must be positive")
	}
	return nil
}

// tables are the service's tables, qualified with its schema.
type tables struct{ orders, accounts, ledger, stock, reservations, shipments string }

func tablesIn(schema string) tables {
	q := func(name string) string { return pgx.Identifier{schema, name}.Sanitize() }
	return tables{q("orders"), q("accounts"), q("ledger"), q("stock"), q("reservations"), q("shipments")}
}

// migrate creates the service's schema and tables if they are missing.
func migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	quoted := pgx.Identifier{schema}.Sanitize()
	// Serialise processes that start together.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", "orders-migrate/"+schema); err != nil {
		return err
	}
	for _, stmt := range []string{"CREATE SCHEMA IF NOT EXISTS " + quoted, "SET LOCAL search_path TO " + quoted, schemaSQL} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("migrate %s: %w", schema, err)
		}
	}
	return tx.Commit(ctx)
}

// Destinations and their activities. Each activity is a transactional one:
// its writes to the service's tables commit with baton's outbox entry and
// token transition, in one PostgreSQL transaction, or not at all.
const (
	billing  = "billing"
	stock    = "stock"
	shipping = "shipping"
)

// register adds the activity of destination d to e.
func register(e *engine.Engine, d string, t tables) error {
	switch d {
	case billing:
		// Charging touches the customer's account row: the account is the
		// entity, so charges of one customer are serialised.
		return engine.RegisterTx(e, engine.TxActivity[struct{}, pgx.Tx]{Type: "charge",
			Entity: byOrder(func(o Order) string { return "account-" + o.Customer }),
			Handle: func(ctx context.Context, tx pgx.Tx, sig baton.Signal, _ *struct{}) (engine.Effects, error) {
				o, err := orderOf(sig)
				if err != nil {
					return engine.Effects{}, err
				}
				if _, err := tx.Exec(ctx, "INSERT INTO "+t.ledger+" (order_id, customer, amount_cents) VALUES ($1, $2, $3)", o.ID, o.Customer, o.AmountCents); err != nil {
					return engine.Effects{}, err
				}
				if _, err := tx.Exec(ctx, "UPDATE "+t.accounts+" SET balance_cents = balance_cents - $2 WHERE customer = $1", o.Customer, o.AmountCents); err != nil {
					return engine.Effects{}, err
				}
				if _, err := tx.Exec(ctx, "UPDATE "+t.orders+" SET status = 'charged' WHERE id = $1", o.ID); err != nil {
					return engine.Effects{}, err
				}
				return engine.Effects{Emit: []baton.Emit{{Destination: stock, Type: "reserve", Payload: sig.Payload}}}, nil
			}})
	case stock:
		// One stock row is hot: every order of the SKU reserves on it.
		return engine.RegisterTx(e, engine.TxActivity[struct{}, pgx.Tx]{Type: "reserve",
			Entity: byOrder(func(o Order) string { return "sku-" + o.SKU }),
			Handle: func(ctx context.Context, tx pgx.Tx, sig baton.Signal, _ *struct{}) (engine.Effects, error) {
				o, err := orderOf(sig)
				if err != nil {
					return engine.Effects{}, err
				}
				tag, err := tx.Exec(ctx, "UPDATE "+t.stock+" SET available = available - $2 WHERE sku = $1 AND available >= $2", o.SKU, o.Qty)
				if err != nil {
					return engine.Effects{}, err
				}
				if tag.RowsAffected() == 0 {
					_, err := tx.Exec(ctx, "UPDATE "+t.orders+" SET status = 'backordered' WHERE id = $1", o.ID)
					return engine.Effects{}, err
				}
				if _, err := tx.Exec(ctx, "INSERT INTO "+t.reservations+" (order_id, sku, qty) VALUES ($1, $2, $3)", o.ID, o.SKU, o.Qty); err != nil {
					return engine.Effects{}, err
				}
				return engine.Effects{Emit: []baton.Emit{{Destination: shipping, Type: "ship", Payload: sig.Payload}}}, nil
			}})
	case shipping:
		return engine.RegisterTx(e, engine.TxActivity[struct{}, pgx.Tx]{Type: "ship",
			Entity: byOrder(func(o Order) string { return "order-" + o.ID }),
			Handle: func(ctx context.Context, tx pgx.Tx, sig baton.Signal, _ *struct{}) (engine.Effects, error) {
				o, err := orderOf(sig)
				if err != nil {
					return engine.Effects{}, err
				}
				if _, err := tx.Exec(ctx, "INSERT INTO "+t.shipments+" (order_id) VALUES ($1)", o.ID); err != nil {
					return engine.Effects{}, err
				}
				_, err = tx.Exec(ctx, "UPDATE "+t.orders+" SET status = 'shipped' WHERE id = $1", o.ID)
				return engine.Effects{}, err
			}})
	}
	return fmt.Errorf("unknown destination %q", d)
}

// orderOf decodes a signal's payload; a payload that is no order can never
// be processed, so the signal is parked.
func orderOf(sig baton.Signal) (Order, error) {
	var o Order
	if err := json.Unmarshal(sig.Payload, &o); err != nil {
		return o, engine.Permanent(fmt.Errorf("payload is not an order: %w", err))
	}
	if err := o.validate(); err != nil {
		return o, engine.Permanent(err)
	}
	return o, nil
}

// byOrder routes a signal by its order: the entity is a pure function of
// the signal (R0).
func byOrder(key func(Order) string) func(baton.Signal) (string, error) {
	return func(sig baton.Signal) (string, error) {
		o, err := orderOf(sig)
		if err != nil {
			return "", err
		}
		return key(o), nil
	}
}

// shop is the service's HTTP edge.
type shop struct {
	pool   *pgxpool.Pool
	t      tables
	engine *engine.Engine // the "shop" engine: records starts and sweeps them
}

// placeOrder handles POST /orders: the order row and the start of its
// conversation are written in one transaction, so an order exists exactly
// when its process runs. Placing an order id that exists changes nothing
// and answers with the order as it is: clients retry freely.
func (s *shop) placeOrder(w http.ResponseWriter, r *http.Request) {
	var o Order
	dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		http.Error(w, "bad order: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := o.validate(); err != nil {
		http.Error(w, "bad order: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	payload, _ := json.Marshal(o)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		http.Error(w, "database unavailable", http.StatusServiceUnavailable)
		return
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// The conversation's id is known before the insert: the start is
	// recorded in the same transaction, after the row.
	start, err := engine.StartTx(ctx, s.engine, tx, baton.Emit{Destination: billing, Type: "charge", Payload: payload})
	if err != nil {
		http.Error(w, "cannot start the order: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	tag, err := tx.Exec(ctx, "INSERT INTO "+s.t.orders+" (id, customer, sku, qty, amount_cents, status, conversation) VALUES ($1, $2, $3, $4, $5, 'placed', $6) ON CONFLICT (id) DO NOTHING",
		o.ID, o.Customer, o.SKU, o.Qty, o.AmountCents, start.ID[:])
	if err != nil {
		http.Error(w, "cannot place the order", http.StatusServiceUnavailable)
		return
	}
	if tag.RowsAffected() == 0 {
		// Placed before: the start goes with the rollback.
		_ = tx.Rollback(ctx)
		s.writeOrder(ctx, w, o.ID, http.StatusOK)
		return
	}
	if err := tx.Commit(ctx); err != nil {
		http.Error(w, "cannot place the order", http.StatusServiceUnavailable)
		return
	}
	// Committed: send the signal now. If this fails or the process dies,
	// the shop engine's sweeper launches the start.
	if _, err := s.engine.Launch(context.WithoutCancel(ctx), start); err != nil {
		w.Header().Set("Warning", `199 - "placed; the process starts within the sweep interval"`)
	}
	s.writeOrder(ctx, w, o.ID, http.StatusCreated)
}

// getOrder handles GET /orders/{id}.
func (s *shop) getOrder(w http.ResponseWriter, r *http.Request) {
	s.writeOrder(r.Context(), w, r.PathValue("id"), http.StatusOK)
}

func (s *shop) writeOrder(ctx context.Context, w http.ResponseWriter, id string, status int) {
	var o struct {
		Order
		Status       string `json:"status"`
		Conversation string `json:"conversation"`
	}
	var conversation []byte
	err := s.pool.QueryRow(ctx, "SELECT id, customer, sku, qty, amount_cents, status, conversation FROM "+s.t.orders+" WHERE id = $1", id).
		Scan(&o.ID, &o.Customer, &o.SKU, &o.Qty, &o.AmountCents, &o.Status, &conversation)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		http.Error(w, "no such order", http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, "database unavailable", http.StatusServiceUnavailable)
		return
	}
	var c baton.TokenID
	copy(c[:], conversation)
	o.Conversation = c.String()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(o)
}

// seed gives every customer and SKU a starting balance and stock, once.
func seed(ctx context.Context, pool *pgxpool.Pool, t tables, customers, skus []string, balance int64, available int) error {
	for _, c := range customers {
		if _, err := pool.Exec(ctx, "INSERT INTO "+t.accounts+" (customer, balance_cents) VALUES ($1, $2) ON CONFLICT DO NOTHING", c, balance); err != nil {
			return err
		}
	}
	for _, sku := range skus {
		if _, err := pool.Exec(ctx, "INSERT INTO "+t.stock+" (sku, available) VALUES ($1, $2) ON CONFLICT DO NOTHING", sku, available); err != nil {
			return err
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
