package redis

import "github.com/batonhq/baton"

// keyLayout names the keys of one store. The scripts build the same names
// in Lua (see luaLibrary); this copy lets Go code and tests address them.
//
//	<p>:{<conv>}:t:<id>   hash: one token's fields
//	<p>:{<conv>}:conv     sorted set: ids of a conversation's live tokens
//	<p>:id:<id>           string: the conversation of a live token
//	<p>:dest:<dest>       sorted set: ids of live tokens addressed to dest
//	<p>:exp               sorted set: ids of expiring roots, score = expiry µs
//
// Ids and conversations are 32 lowercase hex digits. Sorted sets used as
// indexes give every member score 0, so members sort by id and
// ZRANGEBYLEX pages through them.
type keyLayout struct{ prefix string }

func (k keyLayout) token(conversation, id baton.TokenID) string {
	return k.prefix + ":{" + conversation.String() + "}:t:" + id.String()
}

func (k keyLayout) conversation(conversation baton.TokenID) string {
	return k.prefix + ":{" + conversation.String() + "}:conv"
}

func (k keyLayout) lookup(id baton.TokenID) string { return k.prefix + ":id:" + id.String() }

func (k keyLayout) destination(dest string) string { return k.prefix + ":dest:" + dest }

func (k keyLayout) expiries() string { return k.prefix + ":exp" }

// pattern matches every key of the store, for SCAN.
func (k keyLayout) pattern() string { return k.prefix + ":*" }
