package demo

import (
	"encoding/json"
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
// they are checked here as any input from outside is, and a refusal says
// why to the person (httpsignal.Refuse).
func orderFromForm(sig baton.Signal, v url.Values) (order, error) {
	o := order{Order: sig.Conversation.String(), Customer: v.Get("customer"), Product: v.Get("product")}
	if !slices.Contains(customers, o.Customer) {
		return order{}, httpsignal.Refuse("unknown customer %q", o.Customer)
	}
	price, ok := prices[o.Product]
	if !ok {
		return order{}, httpsignal.Refuse("unknown product %q", o.Product)
	}
	qty, err := strconv.Atoi(v.Get("quantity"))
	if err != nil || qty < 1 || qty > 10 {
		return order{}, httpsignal.Refuse("quantity must be 1 to 10, got %q", v.Get("quantity"))
	}
	o.Quantity, o.Amount = qty, qty*price
	return o, nil
}

// pageStyle is the shop's look, shared by its pages.
const pageStyle = `<style>body{font:16px system-ui,sans-serif;max-width:34rem;margin:3rem auto;color:#1f2937}
label{display:block;margin:.8rem 0 .2rem}select,input{font:inherit;padding:.3rem}
button{margin-top:1.2rem;font:inherit;padding:.5rem 1.4rem;background:#4f46e5;color:#fff;border:0;border-radius:6px}
.note{color:#6b7280;font-size:.9rem}ol{padding-left:1.2rem}li{margin:.3rem 0}.done{color:#047857}.todo{color:#9ca3af}
a{color:#4f46e5}</style>`

var orderPage = template.Must(template.New("order").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>baton shop</title>
` + pageStyle + `</head>
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

// statusPage shows one order and how far its process got. It reloads
// itself until the order shipped, so a person watches it move.
var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>baton shop: order {{.Short}}</title>
{{if not .Shipped}}<meta http-equiv="refresh" content="1">{{end}}
` + pageStyle + `</head>
<body><h1>Order {{.Short}}</h1>
{{if .Known}}<p>{{.Order.Quantity}} × {{.Order.Product}} for {{.Order.Customer}}, {{.Amount}}</p>
<ol>{{range .Steps}}<li class="{{if .Done}}done{{else}}todo{{end}}">{{if .Done}}✓{{else}}…{{end}} {{.Name}}</li>{{end}}</ol>
{{else}}<p>This order is being placed; this page follows it.</p>{{end}}
{{if .Resubmitted}}<p class="note">This form was submitted before: here is the order it placed, once.</p>{{end}}
<p><a href="/">Back to the shop</a></p></body></html>`))

var problemPage = template.Must(template.New("problem").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>baton shop: {{.Title}}</title>
` + pageStyle + `</head>
<body><h1>{{.Title}}</h1><p>{{.Detail}}</p><p><a href="/">Back to the shop</a></p></body></html>`))

// renderSubmission answers a form post: a placed order, or a copy of a
// form that placed one before (a double click, Back and submit again, a
// reload), goes to the order's page, derived from the form's token (the
// order is the conversation the token started); anything else shows what
// went wrong.
func renderSubmission(w http.ResponseWriter, r *http.Request, a httpsignal.FormAnswer) {
	if a.Status == http.StatusOK || a.Outcome == httpsignal.OutcomeDuplicate {
		target := "/orders/" + a.Signal.Conversation.String()
		if a.Outcome == httpsignal.OutcomeDuplicate {
			target += "?again=1"
		}
		http.Redirect(w, r, target, http.StatusSeeOther)
		return
	}
	page := map[string]string{"Title": "The order was not placed", "Detail": "Please try again."}
	if a.Problem != nil {
		page["Detail"] = a.Problem.Title + ": " + a.Problem.Detail
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(a.Status)
	_ = problemPage.Execute(w, page)
}

// orderStatus renders GET /orders/{id}.
func (s *system) orderStatus(w http.ResponseWriter, r *http.Request) {
	id, err := baton.ParseTokenID(r.PathValue("id"))
	if err != nil {
		http.Error(w, "no such order", http.StatusNotFound)
		return
	}
	var st orderState
	ent, err := s.entities.Load(r.Context(), orderKey(id.String()))
	if err != nil {
		http.Error(w, "the shop cannot read its orders right now; try again", http.StatusServiceUnavailable)
		return
	}
	known := ent.Version > 0 && json.Unmarshal(ent.State, &st) == nil
	type step struct {
		Name string
		Done bool
	}
	page := map[string]any{
		"Short": id.String()[:8], "Known": known, "Order": st.Order, "Shipped": st.Shipped > 0,
		"Amount":      fmt.Sprintf("$%d.%02d", st.Order.Amount/100, st.Order.Amount%100),
		"Resubmitted": r.URL.Query().Get("again") != "",
		"Steps": []step{{"placed", st.Placed > 0}, {"paid", st.Paid > 0}, {"stock reserved", st.Reserved > 0},
			{"shipping", st.Shipping > 0}, {"shipped", st.Shipped > 0}},
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = statusPage.Execute(w, page)
}
