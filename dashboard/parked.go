package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/batonhq/baton/internal/strictjson"
	"github.com/batonhq/baton/parked"
	"github.com/batonhq/baton/transport"
)

// ErrNoCredentials is what Config.Operate returns (wrapped) for a request
// that carries no credentials or unknown ones: the dashboard answers 401.
// Any other error from Operate is a 403.
var ErrNoCredentials = errors.New("dashboard: no valid credentials")

// Bounds of the parked-signal actions.
const (
	maxActionBody     = 8 << 10
	maxWhyBytes       = 1000
	parkedRefresh     = 3 * time.Second
	parkedListTimeout = 10 * time.Second
	actionTimeout     = 30 * time.Second
)

// brokerParkedResponse is the body of GET /api/parked.
type brokerParkedResponse struct {
	Time      time.Time       `json:"time"`
	Available bool            `json:"available"` // a park place is configured
	Actions   bool            `json:"actions"`   // replay and discard are configured (each request still needs operate credentials)
	Signals   []brokerParked  `json:"signals"`
	Errors    []string        `json:"errors"` // destinations that could not be listed
	Filter    brokerParkedSel `json:"filter"`
}

type brokerParkedSel struct {
	Destination string `json:"destination,omitempty"`
	Type        string `json:"type,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

type brokerParked struct {
	ID           string    `json:"id"`
	Token        string    `json:"token"`
	Conversation string    `json:"conversation"`
	Destination  string    `json:"destination"`
	Type         string    `json:"type"`
	Reason       string    `json:"reason"`
	Attempts     int       `json:"attempts"`
	ParkedAt     time.Time `json:"parked_at"`
	AgeMS        int64     `json:"age_ms"`
	Payload      string    `json:"payload"`
}

// brokerParkedReading is one listing of the park place, shared by every
// viewer for parkedRefresh (on RabbitMQ a listing takes and returns every
// parked message, so it must not run once per open page).
type brokerParkedReading struct {
	signals []transport.ParkedSignal
	errors  []string
}

// listParked reads the park place: all at once where the transport can,
// else destination by destination.
func (d *dashboard) listParked(ctx context.Context) (brokerParkedReading, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), parkedListTimeout)
	defer cancel()
	var r brokerParkedReading
	all, err := d.cfg.Parked.ListParked(ctx, "", MaxParked)
	if err == nil {
		r.signals = all
		return r, nil
	}
	if !errors.Is(err, transport.ErrDestinationRequired) {
		r.errors = append(r.errors, clip(err.Error()))
		return r, nil
	}
	var failed []string
	var firstErr error
	defer func() { d.parkedFailures.report(d.cfg.Logger, d.cfg.Now(), failed, firstErr) }()
	for _, dest := range d.destinations() {
		some, err := d.cfg.Parked.ListParked(ctx, dest, MaxParked)
		if err != nil {
			r.errors = append(r.errors, clip(fmt.Sprintf("%s: %v", dest, err)))
			if failed = append(failed, dest); firstErr == nil {
				firstErr = err
			}
			continue
		}
		r.signals = append(r.signals, some...)
	}
	return r, nil
}

func (d *dashboard) brokerParked(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sel := brokerParkedSel{Destination: q.Get("destination"), Type: q.Get("type"), Reason: q.Get("reason")}
	resp := brokerParkedResponse{Time: d.cfg.Now(), Available: d.cfg.Parked != nil, Actions: d.actionsEnabled(),
		Signals: []brokerParked{}, Errors: []string{}, Filter: sel}
	if d.cfg.Parked == nil {
		writeJSON(w, http.StatusOK, resp)
		return
	}
	reading, err := d.parkedSignals.Get(r.Context())
	if err != nil { // only a request that gave up waiting for the first reading
		resp.Errors = append(resp.Errors, clip(err.Error()))
	}
	resp.Errors = append(resp.Errors, reading.errors...)
	for _, p := range reading.signals {
		s := p.Signal
		switch {
		case sel.Destination != "" && s.Destination != sel.Destination:
		case sel.Type != "" && s.Type != sel.Type:
		case sel.Reason != "" && !strings.Contains(p.Reason, sel.Reason):
		case len(resp.Signals) == MaxParked:
		default:
			resp.Signals = append(resp.Signals, brokerParked{ID: p.ID, Token: s.ID.String(), Conversation: s.Conversation.String(),
				Destination: s.Destination, Type: s.Type, Reason: clip(p.Reason), Attempts: p.Attempts, ParkedAt: p.ParkedAt,
				AgeMS: max(resp.Time.Sub(p.ParkedAt), 0).Milliseconds(), Payload: clip(string(s.Payload))})
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (d *dashboard) actionsEnabled() bool {
	return d.cfg.Parked != nil && d.cfg.Operate != nil && d.cfg.Tokens != nil
}

// actionRequest is the body of POST /api/parked/replay and
// /api/parked/discard. The id is in the body, not the path, because a
// park place's ids may hold a slash (RabbitMQ's "<destination>/<token>").
type actionRequest struct {
	ID  string `json:"id"`
	Why string `json:"why"` // discard only: recorded with the operator's name
}

// actionResponse answers an action.
type actionResponse struct {
	Action       string `json:"action"`
	ID           string `json:"id"`
	Operator     string `json:"operator"`
	Token        string `json:"token"`
	Destination  string `json:"destination"`
	Type         string `json:"type"`
	TokenRetired *bool  `json:"token_retired,omitempty"` // discard only
}

// authorizeAction admits an action request: actions configured, sent by
// the page itself (not by another site the operator's browser visits,
// which would carry the operator's client certificate along), and by a
// system that may operate. It answers the refusal itself and returns ""
// for one.
func (d *dashboard) authorizeAction(w http.ResponseWriter, r *http.Request) (operator string, body actionRequest) {
	if !d.actionsEnabled() {
		writeError(w, http.StatusNotFound, "parked-signal actions are not enabled here (they need a broker, a token store and operators)")
		return "", body
	}
	if msg := crossSite(r); msg != "" {
		writeError(w, http.StatusForbidden, msg)
		return "", body
	}
	operator, err := d.cfg.Operate(r)
	switch {
	case errors.Is(err, ErrNoCredentials):
		writeError(w, http.StatusUnauthorized, clip(err.Error()))
		return "", body
	case err != nil:
		writeError(w, http.StatusForbidden, clip(err.Error()))
		return "", body
	case strings.TrimSpace(operator) == "":
		writeError(w, http.StatusForbidden, "the operator has no name")
		return "", body
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxActionBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", maxActionBody))
		return "", body
	}
	// Strict as the token service's bodies: a key in another case or twice
	// is refused, not read one way here and another by a proxy.
	err = strictjson.Check(data)
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		err = dec.Decode(&body)
	}
	if err != nil || body.ID == "" {
		msg := "body must be a JSON object like {\"id\": \"<parked id>\", \"why\": \"...\"}"
		if err != nil {
			msg += ": " + clip(err.Error())
		}
		writeError(w, http.StatusBadRequest, msg)
		return "", body
	}
	return operator, body
}

// crossSite explains why r may come from another site, or returns "".
// Actions need Content-Type application/json, which a form on another
// site cannot send without the browser asking first (CORS, which this
// server never allows), and a same-origin Origin or Sec-Fetch-Site where
// the browser sends them.
func crossSite(r *http.Request) string {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return "actions need Content-Type: application/json"
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return "actions are accepted only from the dashboard's own page (Sec-Fetch-Site: " + site + ")"
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		u, err := url.Parse(origin)
		if err != nil || u.Host != r.Host {
			return "actions are accepted only from the dashboard's own page (Origin " + clip(origin) + ")"
		}
	}
	return ""
}

func (d *dashboard) replayParked(w http.ResponseWriter, r *http.Request) {
	operator, body := d.authorizeAction(w, r)
	if operator == "" {
		return
	}
	id := body.ID
	ctx, cancel := context.WithTimeout(r.Context(), actionTimeout)
	defer cancel()
	p, err := parked.Replay(ctx, d.cfg.Parked, id)
	d.parkedSignals.Expire()
	if err != nil {
		d.actionFailed(w, "replay", id, operator, err)
		return
	}
	d.cfg.Logger.Info("dashboard: parked signal replayed", "id", id, "operator", operator, "token", p.Signal.ID,
		"destination", p.Signal.Destination, "type", p.Signal.Type)
	writeJSON(w, http.StatusOK, actionResponse{Action: "replay", ID: id, Operator: operator, Token: p.Signal.ID.String(),
		Destination: p.Signal.Destination, Type: p.Signal.Type})
}

func (d *dashboard) discardParked(w http.ResponseWriter, r *http.Request) {
	operator, body := d.authorizeAction(w, r)
	if operator == "" {
		return
	}
	id, why := body.ID, strings.TrimSpace(body.Why)
	if why == "" || len(why) > maxWhyBytes {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("a discard needs a reason of 1 to %d bytes in \"why\"; it is recorded", maxWhyBytes))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), actionTimeout)
	defer cancel()
	rec, err := parked.Discard(ctx, d.cfg.Parked, d.cfg.Tokens, id, operator, why, d.cfg.Audit, d.cfg.Now())
	d.parkedSignals.Expire()
	if err != nil {
		d.actionFailed(w, "discard", id, operator, err)
		return
	}
	d.cfg.Logger.Info("dashboard: parked signal discarded", "id", id, "operator", operator, "token", rec.Token,
		"destination", rec.Destination, "type", rec.Type, "why", why, "token_retired", rec.TokenRetired)
	writeJSON(w, http.StatusOK, actionResponse{Action: "discard", ID: id, Operator: operator, Token: rec.Token,
		Destination: rec.Destination, Type: rec.Type, TokenRetired: &rec.TokenRetired})
}

func (d *dashboard) actionFailed(w http.ResponseWriter, action, id, operator string, err error) {
	d.cfg.Logger.Warn("dashboard: parked-signal action failed", "action", action, "id", id, "operator", operator, "err", err)
	status := http.StatusBadGateway
	if errors.Is(err, transport.ErrNotParked) {
		status = http.StatusNotFound
	}
	writeError(w, status, clip(fmt.Sprintf("%s %s: %v", action, id, err)))
}
