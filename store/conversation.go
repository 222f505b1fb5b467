package store

import (
	"context"

	"github.com/batonhq/baton"
)

// conversationKey carries the conversation of the token a call names.
type conversationKey struct{}

// WithConversation returns ctx telling the token store that the token which
// calls under it name (Get, ClaimRoot, Transition's consume) belongs to
// conversation. A store split by conversation (package split) then asks
// only the part that holds the conversation; without it, it asks every
// part. Callers pass it only when they know it: the conversation of the
// signal whose token they ask about, which its token must match anyway
// (a signal that names another conversation than its token's is refused).
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
