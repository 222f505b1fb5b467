package tokenservice

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// readTokens answers POST /v1/tokens/read: for each id, in order, what GET
// /v1/tokens/{id} would answer, from one read of the store. A participant
// reads the tokens of a batch of signals with it in one round trip.
func (s *server) readTokens(w http.ResponseWriter, r *http.Request, caller *registered) {
	body, p := s.readBody(w, r)
	if p != nil {
		writeProblem(w, p)
		return
	}
	ids, err := decodeTokenRead(body)
	if err != nil {
		writeProblem(w, problem(ProblemInvalid, "%v", err))
		return
	}
	conversations, err := parseConversations(r.Header, len(ids))
	if err != nil {
		writeProblem(w, problem(ProblemInvalid, "%v", err))
		return
	}
	lookups := make([]store.TokenLookup, len(ids))
	for i, id := range ids {
		lookups[i].ID = id
		if conversations != nil {
			lookups[i].Conversation = conversations[i]
		}
	}
	tokens, errs, err := store.GetTokensIn(r.Context(), s.batch, lookups)
	if err != nil {
		s.writeStoreError(w, "read tokens", baton.TokenID{}, err)
		return
	}
	results := make([]TokenReadResult, len(lookups))
	for i, l := range lookups {
		results[i] = s.readResult(caller, l.ID, tokens[i], errs[i])
	}
	writeJSON(w, http.StatusOK, TokenReadResponse{Results: results})
}

// transitionBatch answers POST /v1/transitions/batch: each transition
// checked and run as POST /v1/transitions runs it alone, its result in
// order, from one read of the store and one call that runs those admitted.
// A batch that is invalid as a whole is refused whole: nothing runs.
func (s *server) transitionBatch(w http.ResponseWriter, r *http.Request, caller *registered) {
	body, p := s.readBody(w, r)
	if p != nil {
		writeProblem(w, p)
		return
	}
	transitions, err := decodeTransitionBatch(body)
	if err != nil {
		writeProblem(w, problem(ProblemInvalid, "%v", err))
		return
	}
	conversations, err := parseConversations(r.Header, len(transitions))
	if err != nil {
		writeProblem(w, problem(ProblemInvalid, "%v", err))
		return
	}
	lookups := make([]store.TokenLookup, len(transitions))
	for i, t := range transitions {
		lookups[i].ID = t.Consume
		if conversations != nil {
			lookups[i].Conversation = conversations[i]
		}
	}
	tokens, readErrs, err := store.GetTokensIn(r.Context(), s.batch, lookups)
	if err != nil {
		// No transition ran, whatever the read's error was.
		s.writeStoreError(w, "transition batch: read", baton.TokenID{}, fmt.Errorf("%w: %w", store.ErrNotApplied, err))
		return
	}
	results := make([]TransitionResult, len(transitions))
	var admitted []store.TokenTransition
	var admittedAt []int // admitted[k] is transitions[admittedAt[k]]
	now := s.now()
	for i, t := range transitions {
		res, decided := s.admitTransition(caller, t, tokens[i], readErrs[i])
		if decided {
			results[i] = res
			continue
		}
		stampCreation(t.Create, now)
		// The store, if split by conversation, then runs the transition
		// in its part's batch, as the single route's header lets it.
		t.Conversation = tokens[i].Conversation
		admitted, admittedAt = append(admitted, t), append(admittedAt, i)
	}
	if len(admitted) > 0 {
		// Each admitted transition names its token's conversation, read
		// above: bound, each writes the token it was authorized for.
		consumed, errs, err := s.batch.TransitionTokens(store.BindConversations(r.Context()), admitted)
		if err != nil {
			// Nothing ran (store.TokenBatcher): the batch is refused whole.
			s.writeStoreError(w, "transition batch", baton.TokenID{}, err)
			return
		}
		for k, i := range admittedAt {
			results[i] = s.transitionResult(admitted[k].Consume, consumed[k], errs[k])
		}
	}
	writeJSON(w, http.StatusOK, TransitionBatchResponse{Results: results})
}

// parseConversations reads the ConversationsHeader of a batch of n items:
// nil without one, else one conversation for each item (zero where the
// entry is empty).
func parseConversations(h http.Header, n int) ([]baton.TokenID, error) {
	values := h.Values(ConversationsHeader)
	switch {
	case len(values) == 0:
		return nil, nil
	case len(values) > 1:
		return nil, fmt.Errorf("%w: %s given %d times: give it once, with an entry for each item", store.ErrInvalid, ConversationsHeader, len(values))
	}
	entries := strings.Split(values[0], ",")
	if len(entries) != n {
		return nil, fmt.Errorf("%w: %s has %d entries for %d items: give one for each (empty where not known)", store.ErrInvalid, ConversationsHeader, len(entries), n)
	}
	conversations := make([]baton.TokenID, n)
	for i, e := range entries {
		var err error
		if conversations[i], err = parseID(fmt.Sprintf("%s entry %d", ConversationsHeader, i), strings.TrimSpace(e), false); err != nil {
			return nil, err
		}
	}
	return conversations, nil
}
