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
