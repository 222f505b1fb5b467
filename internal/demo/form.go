package demo

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/httpsignal"
)

// orderFromForm reads what the person chose. The form's values are not in
// the token's digest (the token was issued before the person typed), so
// they are checked here as any input from outside is.
func orderFromForm(sig baton.Signal, v url.Values) (order, error) {
	o := order{Order: sig.Conversation.String(), Customer: v.Get("customer"), Product: v.Get("product")}
	if !slices.Contains(customers, o.Customer) {
		return order{}, fmt.Errorf("unknown customer %q", o.Customer)
	}
	price, ok := prices[o.Product]
	if !ok {
		return order{}, fmt.Errorf("unknown product %q", o.Product)
	}
	qty, err := strconv.Atoi(v.Get("quantity"))
	if err != nil || qty < 1 || qty > 10 {
		return order{}, fmt.Errorf("quantity must be 1 to 10, got %q", v.Get("quantity"))
	}
	o.Quantity, o.Amount = qty, qty*price
	return o, nil
}

var orderPage = template.Must(template.New("order").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>baton shop</title>
<style>body{font:16px system-ui,sans-serif;max-width:34rem;margin:3rem auto;color:#1f2937}
label{display:block;margin:.8rem 0 .2rem}select,input{font:inherit;padding:.3rem}
button{margin-top:1.2rem;font:inherit;padding:.5rem 1.4rem;background:#4f46e5;color:#fff;border:0;border-radius:6px}
.note{color:#6b7280;font-size:.9rem}</style></head>
<body><h1>baton shop</h1>
<p class="note">This form carries a one-time root token. Click twice, press reload, go back and submit again:
the order is placed once.</p>
<form method="post" action="/orders">
{{.Token}}
<label for="customer">Customer</label>
<select id="customer" name="customer">{{range .Customers}}<option>{{.}}</option>{{end}}</select>
<label for="product">Product</label>
<select id="product" name="product">{{range .Products}}<option>{{.}}</option>{{end}}</select>
<label for="quantity">Quantity</label>
<input id="quantity" name="quantity" type="number" min="1" max="10" value="1">
<br><button type="submit">Place order</button>
</form></body></html>`))

// orderForm renders a fresh order form with its own root token.
func (s *system) orderForm(w http.ResponseWriter, r *http.Request) {
	fields, err := httpsignal.FormToken(r.Context(), s.engine,
		baton.Emit{Destination: Shop, Type: typePlace, Payload: []byte("order-form")}, formTTL)
	if err != nil {
		s.log.Warn("issue form token", "err", err)
		http.Error(w, "the shop cannot take orders right now; try again", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = orderPage.Execute(w, map[string]any{"Token": fields.HTML(), "Customers": customers, "Products": products})
}
