package dashboard

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/conversation"
	"github.com/batonhq/baton/store"
)

// conversationsResponse is the body of GET /api/conversations.
type conversationsResponse struct {
	Time          time.Time          `json:"time"`
	Total         int                `json:"total"` // conversations recorded
	Conversations []conversationItem `json:"conversations"`
}

type conversationItem struct {
	conversation.Summary
	Root *nodeLabel `json:"root,omitempty"`
}

type nodeLabel struct {
	Type        string `json:"type"`
	Destination string `json:"destination"`
}

func (d *dashboard) listConversations(w http.ResponseWriter, r *http.Request) {
	limit := DefaultListLimit
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be a positive integer, got %q", s))
			return
		}
		limit = min(n, MaxListLimit)
	}
	all := d.cfg.Recorder.List(0)
	resp := conversationsResponse{Time: d.cfg.Now(), Total: len(all), Conversations: []conversationItem{}}
	for _, s := range all[:min(limit, len(all))] {
		item := conversationItem{Summary: s}
		if root, ok := d.cfg.Recorder.Root(s.ID); ok {
			item.Root = &nodeLabel{Type: root.Type, Destination: root.Destination}
		}
		resp.Conversations = append(resp.Conversations, item)
	}
	writeJSON(w, http.StatusOK, resp)
}

// conversationResponse is the body of GET /api/conversations/{id}.
type conversationResponse struct {
	Time time.Time `json:"time"`
	conversation.Conversation
	TotalNodes int `json:"total_nodes"` // signals recorded
	// Truncated: only the first MaxNodes recorded signals are listed, or
	// the recorder dropped some (Dropped counts the events about them).
	Truncated bool `json:"truncated"`
}

func (d *dashboard) getConversation(w http.ResponseWriter, r *http.Request) {
	id, err := baton.ParseTokenID(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	c, ok := d.cfg.Recorder.Get(id)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("conversation %s is not recorded (unknown, or evicted as one of the oldest)", id))
		return
	}
	resp := conversationResponse{Time: d.cfg.Now(), Conversation: c, TotalNodes: len(c.Nodes), Truncated: c.Dropped > 0}
	if len(c.Nodes) > MaxNodes {
		resp.Nodes, resp.Truncated = c.Nodes[:MaxNodes], true
	}
	if resp.Nodes == nil {
		resp.Nodes = []conversation.Node{}
	}
	for i := range resp.Nodes { // Get returned copies
		resp.Nodes[i].Reason = clip(resp.Nodes[i].Reason)
	}
	writeJSON(w, http.StatusOK, resp)
}

// ageBuckets are the upper bounds of the token age buckets; the last bucket
// holds everything older.
var ageBuckets = []struct {
	label string
	below time.Duration
}{
	{"<1s", time.Second},
	{"<10s", 10 * time.Second},
	{"<1m", time.Minute},
	{"<10m", 10 * time.Minute},
	{"older", 0},
}

// tokensResponse is the body of GET /api/tokens.
type tokensResponse struct {
	Time         time.Time          `json:"time"`
	Available    bool               `json:"available"` // a token store is configured
	Buckets      []string           `json:"buckets"`
	StuckAfterMS int64              `json:"stuck_after_ms"`
	Destinations []destinationCount `json:"destinations"`
	Oldest       []liveToken        `json:"oldest"` // the oldest live tokens of all destinations
	Parked       []parkedSignal     `json:"parked"` // from the recorder, most recent first
}

type destinationCount struct {
	Destination string `json:"destination"`
	Count       int    `json:"count"`
	Capped      bool   `json:"capped"` // more than MaxTokensPerDestination are live
	Ages        []int  `json:"ages"`   // counts per bucket of Buckets
	OldestMS    int64  `json:"oldest_ms"`
	Stuck       int    `json:"stuck"` // live tokens older than StuckAfterMS
	// StuckAfterMS is the destination's threshold.
	StuckAfterMS int64  `json:"stuck_after_ms"`
	Error        string `json:"error,omitempty"`
}

type liveToken struct {
	ID           baton.TokenID `json:"id"`
	Conversation baton.TokenID `json:"conversation"`
	Destination  string        `json:"destination"`
	Type         string        `json:"type"`
	CreatedAt    time.Time     `json:"created_at"`
	AgeMS        int64         `json:"age_ms"`
	Stuck        bool          `json:"stuck"` // older than StuckAfter
}

type parkedSignal struct {
	ID           baton.TokenID `json:"id"`
	Conversation baton.TokenID `json:"conversation"`
	Destination  string        `json:"destination"`
	Type         string        `json:"type"`
	Reason       string        `json:"reason"`
	Since        time.Time     `json:"since"`
}

func (d *dashboard) tokens(w http.ResponseWriter, r *http.Request) {
	resp := d.readTokens(r.Context())
	resp.Parked = d.parked()
	writeJSON(w, http.StatusOK, resp)
}

// readTokens returns the shared reading of the live tokens (see
// dashboard.liveTokens).
func (d *dashboard) readTokens(ctx context.Context) tokensResponse {
	resp, _ := d.liveTokens.Get(ctx)
	if resp == nil {
		// Only a request that waited for the first reading and gave up
		// gets none.
		return d.emptyTokens(d.cfg.Now())
	}
	return *resp
}

func (d *dashboard) emptyTokens(now time.Time) tokensResponse {
	resp := tokensResponse{Time: now, Available: d.cfg.Tokens != nil, StuckAfterMS: d.cfg.StuckAfter.Milliseconds(),
		Destinations: []destinationCount{}, Oldest: []liveToken{}}
	for _, b := range ageBuckets {
		resp.Buckets = append(resp.Buckets, b.label)
	}
	return resp
}

// listTokens lists the live tokens of every destination. It serves every
// viewer, so the request that happens to run it must not cut it short by
// going away: only tokenListingTimeout does.
func (d *dashboard) listTokens(ctx context.Context) (*tokensResponse, error) {
	now := d.cfg.Now()
	resp := d.emptyTokens(now)
	if d.cfg.Tokens == nil {
		return &resp, nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tokenListingTimeout)
	defer cancel()
	var all []liveToken
	var failed []string
	var firstErr error
	defer func() { d.tokenFailures.report(d.cfg.Logger, now, failed, firstErr) }()
	for _, dest := range d.destinations() {
		stuckAfter := d.stuckAfter(dest)
		count := destinationCount{Destination: dest, Ages: make([]int, len(ageBuckets)), StuckAfterMS: stuckAfter.Milliseconds()}
		toks, capped, err := d.listDestination(ctx, dest)
		if err != nil {
			count.Error = clip(err.Error())
			if failed = append(failed, dest); firstErr == nil {
				firstErr = err
			}
		}
		count.Count, count.Capped = len(toks), capped
		for _, t := range toks {
			age := max(now.Sub(t.CreatedAt), 0)
			count.Ages[bucketOf(age)]++
			count.OldestMS = max(count.OldestMS, age.Milliseconds())
			stuck := age >= stuckAfter
			if stuck {
				count.Stuck++
			}
			all = append(all, liveToken{ID: t.ID, Conversation: t.Conversation, Destination: t.Destination, Type: t.Type,
				CreatedAt: t.CreatedAt, AgeMS: age.Milliseconds(), Stuck: stuck})
		}
		resp.Destinations = append(resp.Destinations, count)
	}
	slices.SortFunc(all, func(a, b liveToken) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), slices.Compare(a.ID[:], b.ID[:]))
	})
	resp.Oldest = append(resp.Oldest, all[:min(len(all), MaxOldest)]...)
	return &resp, nil
}

// stuckAfter is the threshold of destination.
func (d *dashboard) stuckAfter(destination string) time.Duration {
	if t, ok := d.cfg.StuckAfterByDestination[destination]; ok && t > 0 {
		return t
	}
	return d.cfg.StuckAfter
}

func bucketOf(age time.Duration) int {
	for i, b := range ageBuckets {
		if b.below == 0 || age < b.below {
			return i
		}
	}
	return len(ageBuckets) - 1
}

// listDestination pages through the live tokens of one destination, up to
// MaxTokensPerDestination of them.
func (d *dashboard) listDestination(ctx context.Context, dest string) (toks []baton.Token, capped bool, err error) {
	limit := d.cfg.MaxTokensPerDestination
	var after baton.TokenID
	for len(toks) < limit+1 { // one more than the cap tells that it is exceeded
		want := min(limit+1-len(toks), store.MaxPageLimit)
		page, err := d.cfg.Tokens.ListByDestination(ctx, dest, store.Page{After: after, Limit: want})
		if err != nil {
			return toks[:min(len(toks), limit)], len(toks) > limit, fmt.Errorf("list tokens of %q: %w", dest, err)
		}
		toks = append(toks, page...)
		if len(page) == 0 || len(page) < want || page[len(page)-1].ID == after {
			break
		}
		after = page[len(page)-1].ID
	}
	if len(toks) > limit {
		return toks[:limit], true, nil
	}
	return toks, false, nil
}

// destinations returns Config.Destinations, or else every destination seen
// in the recorded conversations, sorted and bounded.
func (d *dashboard) destinations() []string {
	var names []string
	if d.cfg.Destinations != nil {
		names = slices.Clone(d.cfg.Destinations())
	} else {
		names = d.cfg.Recorder.Destinations()
	}
	names = slices.DeleteFunc(names, func(n string) bool { return n == "" || len(n) > maxDestinationNameSize })
	slices.Sort(names)
	names = slices.Compact(names)
	return names[:min(len(names), MaxDestinations)]
}

// parked returns the most recently parked signals of the recorded
// conversations.
func (d *dashboard) parked() []parkedSignal {
	out := []parkedSignal{}
	for _, p := range d.cfg.Recorder.ParkedSignals(MaxParked) {
		out = append(out, parkedSignal{ID: p.ID, Conversation: p.Conversation, Destination: p.Destination, Type: p.Type,
			Reason: clip(p.Reason), Since: p.Updated})
	}
	return out
}

// statsResponse is the body of GET /api/stats.
type statsResponse struct {
	Time          time.Time        `json:"time"`
	Counters      map[string]int64 `json:"counters"`
	Truncated     bool             `json:"truncated"` // more than MaxCounters counters
	Conversations recordedTotals   `json:"conversations"`
}

// recordedTotals sums the recorder's conversations and says what its
// limits dropped.
type recordedTotals = conversation.Stats

func (d *dashboard) stats(w http.ResponseWriter, r *http.Request) {
	resp := statsResponse{Time: d.cfg.Now(), Counters: map[string]int64{}}
	if d.cfg.Stats != nil {
		counters := d.cfg.Stats()
		names := slices.Sorted(maps.Keys(counters))
		resp.Truncated = len(names) > MaxCounters
		for _, name := range names[:min(len(names), MaxCounters)] {
			resp.Counters[name] = counters[name]
		}
	}
	resp.Conversations = d.cfg.Recorder.Stats()
	writeJSON(w, http.StatusOK, resp)
}

func (d *dashboard) report(w http.ResponseWriter, r *http.Request) {
	if d.cfg.Report == nil {
		writeError(w, http.StatusNotFound, "no report is configured")
		return
	}
	body, err := json.Marshal(struct {
		Time   time.Time `json:"time"`
		Report any       `json:"report"`
	}{d.cfg.Now(), d.cfg.Report()})
	switch {
	case err != nil:
		writeError(w, http.StatusInternalServerError, "encode report: "+err.Error())
	case len(body) > MaxReportBytes:
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("report of %d bytes exceeds the limit of %d", len(body), MaxReportBytes))
	default:
		writeBody(w, http.StatusOK, body)
	}
}

// clip bounds a free-text field (an error, a reason) in a response.
func clip(s string) string {
	if len(s) <= maxTextBytes {
		return s
	}
	return strings.ToValidUTF8(s[:maxTextBytes], "") + "…"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Every response type here encodes; this is a programming error.
		writeError(w, http.StatusInternalServerError, "encode response: "+err.Error())
		return
	}
	writeBody(w, status, body)
}

func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(map[string]string{"error": msg})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}
