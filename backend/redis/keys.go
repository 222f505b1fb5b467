package redis

import (
	"strings"

	"github.com/batonhq/baton"
)

// keyLayout names the keys of one store. The standalone scripts build the
// same names in Lua (see luaLibrary); in cluster mode every key a script
// touches comes from here, in KEYS. The values of the lookup and the
// index members differ in cluster mode (see lookupValue, indexMember and
// doc.go).
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

// tokenPrefix starts the token keys of a conversation.
func (k keyLayout) tokenPrefix(conversation baton.TokenID) string {
	return k.prefix + ":{" + conversation.String() + "}:t:"
}

// In cluster mode a lookup is a set of members "<conv> <nonce>" and the
// destination and expiry indexes hold members "<id>:<conv>:<nonce>" (see
// doc.go). The nonce names one creation attempt, so that whoever removes
// an entry removes only its own.

func lookupValue(conversation baton.TokenID, nonce string) string {
	return conversation.String() + " " + nonce
}

// parseLookupValue splits a lookup's value.
func parseLookupValue(v string) (conversation baton.TokenID, nonce string, ok bool) {
	c, n, found := strings.Cut(v, " ")
	conv, err := baton.ParseTokenID(c)
	return conv, n, found && err == nil && len(n) == nonceLen
}

func indexMember(id, conversation baton.TokenID, nonce string) string {
	return id.String() + ":" + conversation.String() + ":" + nonce
}

// member is one parsed member of the destination or expiry index.
type member struct {
	id, conversation baton.TokenID
	nonce            string
}

func parseIndexMember(m string) (member, bool) {
	parts := strings.Split(m, ":")
	if len(parts) != 3 || len(parts[2]) != nonceLen {
		return member{}, false
	}
	id, err1 := baton.ParseTokenID(parts[0])
	conv, err2 := baton.ParseTokenID(parts[1])
	return member{id: id, conversation: conv, nonce: parts[2]}, err1 == nil && err2 == nil
}

// afterID is the ZRANGEBYLEX bound just past every member of id: members
// continue with ':' after the id, and ';' sorts after ':' and before any
// longer id prefix (ids are fixed-length hex).
func afterID(id baton.TokenID) string { return "(" + id.String() + ";" }
