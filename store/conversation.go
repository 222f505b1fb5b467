package store

import (
	"context"

	"github.com/batonhq/baton"
)

// conversationKey carries the conversation of the token a call names.
type conversationKey struct{}

// WithConversation returns ctx telling the token store that the token which
// calls under it name (Get, ClaimRoot, Transition's consume) belongs to
// conversation. A store split by conversation (package backend/split) then
// asks the part that holds the conversation first, and every other part
// only if that one does not have the token; without it, every part. So it
// only saves reads, and answers never depend on it. Callers pass it where
// they know it: the conversation of the signal whose token they ask about.
// Other stores ignore it. A zero conversation leaves ctx as it is.
func WithConversation(ctx context.Context, conversation baton.TokenID) context.Context {
	if conversation.IsZero() {
		return ctx
	}
	return context.WithValue(ctx, conversationKey{}, conversation)
}

// ConversationFrom returns the conversation that WithConversation put in
// ctx, if any.
func ConversationFrom(ctx context.Context) (baton.TokenID, bool) {
	conversation, ok := ctx.Value(conversationKey{}).(baton.TokenID)
	return conversation, ok
}

type boundKey struct{}

// BindConversations marks ctx so that the conversations a call names
// (WithConversation, TokenTransition.Conversation) are taken as the
// tokens' own, which the caller read there: a store split by conversation
// then consumes or claims a token only in that conversation's part, where
// otherwise, if that part does not have it, it asks the others. Ids are
// unique within a part, not across parts, so a caller may plant a copy of
// another destination's live token id in a conversation of its own; a
// service that authorized the token it read binds its write so, and the
// write lands on that very token, never on the other copy.
func BindConversations(ctx context.Context) context.Context {
	return context.WithValue(ctx, boundKey{}, true)
}

// ConversationsBound reports whether BindConversations marked ctx.
func ConversationsBound(ctx context.Context) bool {
	bound, _ := ctx.Value(boundKey{}).(bool)
	return bound
}

// TokenLookup is one token of GetTokensIn: its id, and the conversation it
// belongs to where the caller knows it (zero where not), a hint as
// WithConversation is for one call.
type TokenLookup struct {
	ID           baton.TokenID
	Conversation baton.TokenID
}

// HintedTokenReader is implemented by a TokenBatcher that reads a batch's
// tokens where their conversations are kept (package backend/split asks
// each token's part instead of every part; the token service's client
// passes the hints on). A hint only says where to look first: a token not
// found there is looked for as GetTokens would, so a wrong hint costs
// reads, never a false ErrNotFound. Answers are as GetTokens's.
type HintedTokenReader interface {
	GetTokensIn(ctx context.Context, lookups []TokenLookup) (tokens []baton.Token, errs []error, err error)
}

// GetTokensIn reads the tokens of lookups from b, with their hints where b
// takes them (HintedTokenReader), else by id alone.
func GetTokensIn(ctx context.Context, b TokenBatcher, lookups []TokenLookup) ([]baton.Token, []error, error) {
	if h, ok := b.(HintedTokenReader); ok {
		return h.GetTokensIn(ctx, lookups)
	}
	ids := make([]baton.TokenID, len(lookups))
	for i, l := range lookups {
		ids[i] = l.ID
	}
	return b.GetTokens(ctx, ids)
}
