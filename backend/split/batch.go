package split

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

var (
	_ store.TokenBatcher      = (*Store)(nil)
	_ store.HintedTokenReader = (*Store)(nil)
)

// GetTokens implements store.TokenBatcher: every part is asked for every
// id at once (a token id does not say its conversation), each in one call
// where the part is a store.TokenBatcher. A token is absent only if every
// part says so; a part that fails makes its ids fail (never a false
// "duplicate").
func (s *Store) GetTokens(ctx context.Context, ids []baton.TokenID) ([]baton.Token, []error, error) {
	lookups := make([]store.TokenLookup, len(ids))
	for i, id := range ids {
		lookups[i].ID = id
	}
	return s.GetTokensIn(ctx, lookups)
}

// GetTokensIn implements store.HintedTokenReader: the tokens with a
// conversation are asked of their conversations' parts, one call per
// part; then those without one, and those their part did not have, of
// every other part at once. So a batch of a conversation's signals costs
// one part one call, not every part one each. A token is absent only if
// every part says so; a part that fails makes its ids fail (never a false
// "duplicate").
func (s *Store) GetTokensIn(ctx context.Context, lookups []store.TokenLookup) ([]baton.Token, []error, error) {
	if err := notStarted(ctx); err != nil {
		return nil, nil, err
	}
	tokens, errs := make([]baton.Token, len(lookups)), make([]error, len(lookups))
	asked := make([]int, len(lookups)) // the part of the first round, or -1
	hinted := make([][]int, len(s.parts))
	for i, l := range lookups {
		errs[i], asked[i] = store.ErrNotFound, -1
		if !l.Conversation.IsZero() {
			asked[i] = PartOf(l.Conversation, len(s.parts))
			hinted[asked[i]] = append(hinted[asked[i]], i)
		}
	}
	s.readParts(ctx, hinted, lookups, tokens, errs)
	rest := make([][]int, len(s.parts))
	for i := range lookups {
		if errs[i] == nil {
			continue
		}
		for p := range s.parts {
			if p != asked[i] {
				rest[p] = append(rest[p], i)
			}
		}
	}
	s.readParts(ctx, rest, lookups, tokens, errs)
	return tokens, errs, nil
}

// readParts asks each part p, all at once, for the tokens of lookups[i]
// for each i of byPart[p], and keeps in tokens and errs a token found,
// else the first failure other than ErrNotFound.
func (s *Store) readParts(ctx context.Context, byPart [][]int, lookups []store.TokenLookup, tokens []baton.Token, errs []error) {
	type answer struct {
		tokens []baton.Token
		errs   []error
	}
	answers := make([]answer, len(s.parts))
	var wg sync.WaitGroup
	for p, indexes := range byPart {
		if len(indexes) == 0 {
			continue
		}
		wg.Go(func() {
			ids := make([]baton.TokenID, len(indexes))
			for k, i := range indexes {
				ids[k] = lookups[i].ID
			}
			got, gotErrs, err := store.BatcherOf(s.parts[p]).GetTokens(ctx, ids)
			if err == nil && (len(got) != len(ids) || len(gotErrs) != len(ids)) {
				err = fmt.Errorf("split: part %d answered %d tokens and %d errors for %d ids", p, len(got), len(gotErrs), len(ids))
			}
			if err != nil {
				got, gotErrs = make([]baton.Token, len(ids)), make([]error, len(ids))
				for k := range gotErrs {
					gotErrs[k] = err
				}
			}
			answers[p] = answer{got, gotErrs}
		})
	}
	wg.Wait()
	for p, indexes := range byPart {
		for k, i := range indexes {
			switch err := answers[p].errs[k]; {
			case errs[i] == nil: // found in another part
			case err == nil:
				tokens[i], errs[i] = answers[p].tokens[k], nil
			case !errors.Is(err, store.ErrNotFound) && errors.Is(errs[i], store.ErrNotFound):
				errs[i] = err
			}
		}
	}
}

// TransitionTokens implements store.TokenBatcher: each part runs the
// transitions of its conversations in one call (where it is a
// store.TokenBatcher). A transition's part is its children's conversation's,
// or the hinted one's (TokenTransition.Conversation); one with neither, or
// whose hinted part did not have the token (unless the caller bound the
// conversations, store.BindConversations), goes through Transition, which
// finds the token in whichever part has it.
func (s *Store) TransitionTokens(ctx context.Context, transitions []store.TokenTransition) ([]bool, []error, error) {
	if err := store.ValidateTokenTransitions(transitions); err != nil {
		return nil, nil, err
	}
	if err := notStarted(ctx); err != nil {
		return nil, nil, err
	}
	byPart := make(map[int][]int) // part -> indexes into transitions
	var unrouted []int
	for i, t := range transitions {
		conversation := t.Conversation
		if len(t.Create) > 0 {
			conversation = t.Create[0].Conversation
			if err := oneConversation(t.Create); err != nil {
				return nil, nil, err
			}
		}
		if conversation.IsZero() {
			unrouted = append(unrouted, i)
			continue
		}
		part := PartOf(conversation, len(s.parts))
		byPart[part] = append(byPart[part], i)
	}
	consumed, errs := make([]bool, len(transitions)), make([]error, len(transitions))
	var wg sync.WaitGroup
	for part, indexes := range byPart {
		wg.Go(func() {
			batch := make([]store.TokenTransition, len(indexes))
			for k, i := range indexes {
				batch[k] = transitions[i]
			}
			got, gotErrs, err := store.BatcherOf(s.parts[part]).TransitionTokens(ctx, batch)
			if err == nil && (len(got) != len(batch) || len(gotErrs) != len(batch)) {
				// Answered in part: each outcome unknown.
				err = fmt.Errorf("outcome unknown: split: part %d answered %d results and %d errors for %d transitions", part, len(got), len(gotErrs), len(batch))
			}
			for k, i := range indexes {
				if err != nil {
					errs[i] = err
					continue
				}
				consumed[i], errs[i] = got[k], gotErrs[k]
			}
		})
	}
	wg.Wait()
	for _, indexes := range byPart {
		for _, i := range indexes {
			// A hint that named another conversation than the token's: the
			// token may be in another part, unless the caller bound it.
			if len(transitions[i].Create) == 0 && !consumed[i] && errs[i] == nil && !store.ConversationsBound(ctx) {
				unrouted = append(unrouted, i)
			}
		}
	}
	for _, i := range unrouted {
		consumed[i], errs[i] = s.Transition(ctx, transitions[i].Consume, nil)
	}
	return consumed, errs, nil
}

// oneConversation refuses children of more than one conversation, as
// Transition does.
func oneConversation(create []baton.Token) error {
	for _, t := range create[1:] {
		if t.Conversation != create[0].Conversation {
			return fmt.Errorf("%w: the tokens a transition creates are of one conversation, the consumed token's (got %s and %s)", store.ErrInvalid, create[0].Conversation, t.Conversation)
		}
	}
	return nil
}

// notStarted refuses a batch whose context ended before it started, so
// that the whole call, not each item, says nothing was applied.
func notStarted(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("split: %w: %w", store.ErrNotApplied, err)
	}
	return nil
}
