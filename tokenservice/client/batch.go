package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
)

var (
	_ store.TokenBatcher      = (*Client)(nil)
	_ store.HintedTokenReader = (*Client)(nil)
)

// GetTokens implements store.TokenBatcher: one POST /v1/tokens/read for
// every tokenservice.MaxBatch ids. Any request that fails fails the whole
// call.
func (c *Client) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	lookups := make([]store.TokenLookup, len(ids))
	for i, id := range ids {
		lookups[i].ID = id
	}
	return c.GetTokensIn(ctx, lookups)
}

// GetTokensIn implements store.HintedTokenReader: as GetTokens, with each
// token's conversation sent along, so that a service over a store split by
// conversation asks the conversation's part.
func (c *Client) GetTokensIn(ctx context.Context, lookups []store.TokenLookup) ([]baton.Token, []error, error) {
	tokens, errs := make([]baton.Token, len(lookups)), make([]error, len(lookups))
	var send []int // indexes into lookups
	for i, l := range lookups {
		if l.ID.IsZero() {
			// As Get answers it; the service would refuse the whole request.
			errs[i] = fmt.Errorf("client: get: %w: the zero id is no token's", store.ErrNotFound)
		} else {
			send = append(send, i)
		}
	}
	for part := range slices.Chunk(send, tokenservice.MaxBatch) {
		if err := c.readTokens(ctx, lookups, part, tokens, errs); err != nil {
			return nil, nil, fmt.Errorf("client: get tokens: %w", err)
		}
	}
	return tokens, errs, nil
}

// readTokens reads lookups[i] for each i of part in one request, into
// tokens[i] or errs[i].
func (c *Client) readTokens(ctx context.Context, lookups []store.TokenLookup, part []int, tokens []baton.Token, errs []error) error {
	req := tokenservice.TokenReadRequest{IDs: make([]string, len(part))}
	conversations := make([]baton.TokenID, len(part))
	for k, i := range part {
		req.IDs[k], conversations[k] = lookups[i].ID.String(), lookups[i].Conversation
	}
	var answer tokenservice.TokenReadResponse
	if err := c.doWithHeader(ctx, http.MethodPost, "/v1/tokens/read", nil, conversationsHeader(conversations), req, http.StatusOK, &answer); err != nil {
		return err
	}
	if len(answer.Results) != len(part) {
		return fmt.Errorf("unreadable answer: %d results for %d ids", len(answer.Results), len(part))
	}
	for k, i := range part {
		switch res := answer.Results[k]; {
		case (res.Token == nil) == (res.Problem == nil):
			return fmt.Errorf("unreadable answer: result %d is not one of token and problem", k)
		case res.Problem != nil:
			errs[i] = fmt.Errorf("client: get %s: %w", lookups[i].ID, &ProblemError{*res.Problem})
		default:
			tok, err := res.Token.Decode()
			switch {
			case err != nil:
				return fmt.Errorf("unreadable answer: result %d: %v", k, err)
			case tok.ID != lookups[i].ID:
				return fmt.Errorf("unreadable answer: result %d is token %s, not %s", k, tok.ID, lookups[i].ID)
			}
			tokens[i] = tok
		}
	}
	return nil
}

// TransitionTokens implements store.TokenBatcher: one POST
// /v1/transitions/batch for every tokenservice.MaxBatch transitions. An
// error of the whole call means that nothing was applied: the batch is
// invalid, or the first request was refused or never sent. The failure of
// any other request, or one whose outcome is unknown, is the error of
// each of its transitions.
func (c *Client) TransitionTokens(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	// Checked here as any store checks it, so that a bad batch is refused
	// whole before any of its requests is sent.
	if err := store.ValidateTokenTransitions(transitions); err != nil {
		return nil, nil, fmt.Errorf("client: transition tokens: %w", err)
	}
	consumed, errs := make([]bool, len(transitions)), make([]error, len(transitions))
	for start := 0; start < len(transitions); start += tokenservice.MaxBatch {
		part := transitions[start:min(start+tokenservice.MaxBatch, len(transitions))]
		err := c.transitionParts(ctx, part, consumed[start:], errs[start:])
		switch {
		case err == nil:
		case start == 0 && store.NotApplied(err):
			// The first request, refused or not sent: nothing was applied.
			return nil, nil, fmt.Errorf("client: transition tokens: %w", err)
		default:
			// Earlier requests may have been applied, or this one: the
			// error is each of its transitions'.
			for k, t := range part {
				errs[start+k] = fmt.Errorf("client: transition %s: %w", t.Consume, err)
			}
		}
	}
	return consumed, errs, nil
}

// transitionParts runs part in one request, or, when the service finds
// that request too large (413: it ran nothing), in two halves, each the
// same way: a batch of transitions with many children can exceed the
// service's --max-body where each transition alone fits. Its error is
// every transition's of part, as transitionTokens's; after a split, a
// half's error is each of its transitions'.
func (c *Client) transitionParts(ctx context.Context, part []store.TokenTransition, consumed []bool, errs []error) error {
	err := c.transitionTokens(ctx, part, consumed, errs)
	var p *ProblemError
	if len(part) < 2 || !errors.As(err, &p) || p.Status != http.StatusRequestEntityTooLarge {
		return err
	}
	for _, half := range [][2]int{{0, len(part) / 2}, {len(part) / 2, len(part)}} {
		from, to := half[0], half[1]
		if err := c.transitionParts(ctx, part[from:to], consumed[from:], errs[from:]); err != nil {
			for k := from; k < to; k++ {
				errs[k] = fmt.Errorf("client: transition %s: %w", part[k].Consume, err)
			}
		}
	}
	return nil
}

// transitionTokens runs part in one request, into consumed and errs. Its
// error is the request's, every transition's of part: not applied, or of
// unknown outcome.
func (c *Client) transitionTokens(ctx context.Context, part []store.TokenTransition, consumed []bool, errs []error) error {
	req := tokenservice.TransitionBatchRequest{Transitions: make([]tokenservice.TransitionRequest, len(part))}
	conversations := make([]baton.TokenID, len(part))
	for k, t := range part {
		req.Transitions[k], conversations[k] = transitionRequest(t.Consume, t.Create), t.Conversation
	}
	var answer tokenservice.TransitionBatchResponse
	if err := c.doWithHeader(ctx, http.MethodPost, "/v1/transitions/batch", nil, conversationsHeader(conversations), req, http.StatusOK, &answer); err != nil {
		return err
	}
	if len(answer.Results) != len(part) {
		return fmt.Errorf("outcome unknown: unreadable answer: %d results for %d transitions", len(answer.Results), len(part))
	}
	for k, res := range answer.Results {
		if (res.Consumed == nil) == (res.Problem == nil) {
			return fmt.Errorf("outcome unknown: unreadable answer: result %d is not one of consumed and problem", k)
		}
	}
	for k, res := range answer.Results {
		if res.Problem != nil {
			errs[k] = fmt.Errorf("client: transition %s: %w", part[k].Consume, &ProblemError{*res.Problem})
		} else {
			consumed[k] = *res.Consumed
		}
	}
	return nil
}

// conversationsHeader is the tokenservice.ConversationsHeader of a batch
// whose items' conversations are these (zero where not known), or nil
// when none is known.
func conversationsHeader(conversations []baton.TokenID) http.Header {
	entries := make([]string, len(conversations))
	known := false
	for i, c := range conversations {
		if !c.IsZero() {
			entries[i], known = c.String(), true
		}
	}
	if !known {
		return nil
	}
	return http.Header{tokenservice.ConversationsHeader: {strings.Join(entries, ",")}}
}
