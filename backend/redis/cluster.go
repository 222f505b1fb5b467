package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// Cluster mode (see doc.go, "Redis Cluster"). The token hashes and the
// conversation's set, in the conversation's slot, are the only truth.
// The lookups and the two indexes live in other slots; they are written
// before a token is created and removed after it is gone, so that every
// live token is always reachable, and a reader that finds an entry
// without its token skips it.

const (
	// claimTTL bounds how long after its nonce was drawn a creation may
	// still apply: clusterCreateScript refuses it later, by the clock of
	// the node that runs it.
	claimTTL = time.Minute
	// pruneAge is how old an entry's nonce must be before anyone deletes
	// the entry because its token is absent. Every creation that the entry
	// could be waiting for has then applied or been refused; pruneAge -
	// claimTTL is the clock skew tolerated between clients and nodes.
	pruneAge = 15 * time.Minute
	// nonceLen is the length of a nonce: 16 hex digits of unix µs and 16
	// random ones.
	nonceLen = 32
	// cleanupTimeout bounds the removal of entries after a call is decided.
	cleanupTimeout = 5 * time.Second
)

// attempt is one call's creation of tokens of one conversation.
type attempt struct {
	conv   baton.TokenID
	nonce  string
	micros int64
	tokens []baton.Token
}

// conflict is a lookup that names another conversation.
type conflict struct {
	id    baton.TokenID
	value string
}

func (s *TokenStore) newAttempt(conv baton.TokenID, tokens []baton.Token) *attempt {
	micros := s.now().UnixMicro()
	var r [8]byte
	rand.Read(r[:])
	nonce := fmt.Sprintf("%016x", uint64(micros)) + hex.EncodeToString(r[:])
	return &attempt{conv: conv, nonce: nonce, micros: micros, tokens: tokens}
}

// old reports whether a nonce was drawn more than pruneAge ago.
func (s *TokenStore) old(nonce string) bool {
	if len(nonce) != nonceLen {
		return false
	}
	micros, err := strconv.ParseUint(nonce[:16], 16, 64)
	return err == nil && s.now().UnixMicro()-int64(micros) > pruneAge.Microseconds()
}

// cleanupContext outlives a cancelled call: its entries must still go.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}

// claim adds, before anything is created, a's member to the lookup of
// each of a's tokens and a's index entries, and reads one member of the
// parent's lookup (if parent is not zero) in the same round trip. An
// error means nothing was created.
//
// A lookup is a set of the members "<conv> <nonce>" of every attempt
// that may still create, or has created, a live token with that id. Each
// member is removed only by its own attempt once it certainly created
// nothing (release), by the removal of the token it created (retire), or
// by pruning once its creation can no longer apply and its token is not
// live (pruneLookup). So a live token's lookup always holds its
// creator's member, and once no token is live and no attempt is pending
// the set is empty, which deletes the key.
func (s *TokenStore) claim(ctx context.Context, a *attempt, parent baton.TokenID) (parentLookup string, conflicts []conflict, err error) {
	pipe := s.client.Pipeline()
	var get *goredis.StringCmd
	if !parent.IsZero() {
		get = pipe.SRandMember(ctx, s.keys.lookup(parent))
	}
	value := lookupValue(a.conv, a.nonce)
	claims := make([]*goredis.Cmd, len(a.tokens))
	for i, t := range a.tokens {
		claims[i] = pipe.Eval(ctx, claimScript, []string{s.keys.lookup(t.ID)}, value)
		m := indexMember(t.ID, a.conv, a.nonce)
		pipe.ZAdd(ctx, s.keys.destination(t.Destination), goredis.Z{Member: m})
		if !t.ExpiresAt.IsZero() {
			pipe.ZAdd(ctx, s.keys.expiries(), goredis.Z{Score: float64(t.ExpiresAt.UnixMicro()), Member: m})
		}
	}
	cmds, _ := pipe.Exec(ctx)
	for i, c := range claims {
		if r, err := c.Text(); err == nil && strings.HasPrefix(r, "other ") {
			conflicts = append(conflicts, conflict{id: a.tokens[i].ID, value: strings.TrimPrefix(r, "other ")})
		}
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil && !(c == get && errors.Is(err, goredis.Nil)) {
			return "", nil, err
		}
	}
	if get != nil {
		parentLookup = get.Val()
	}
	return parentLookup, conflicts, nil
}

// release removes what claim wrote for an attempt that created nothing:
// its own lookup members and index entries. Members of other attempts
// (one may have created a live token with the same id) stay.
func (s *TokenStore) release(ctx context.Context, a *attempt) {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	pipe := s.client.Pipeline()
	value := lookupValue(a.conv, a.nonce)
	for _, t := range a.tokens {
		pipe.SRem(ctx, s.keys.lookup(t.ID), value)
		m := indexMember(t.ID, a.conv, a.nonce)
		pipe.ZRem(ctx, s.keys.destination(t.Destination), m)
		if !t.ExpiresAt.IsZero() {
			pipe.ZRem(ctx, s.keys.expiries(), m)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.logger.Debug("redis token store: entries of a failed creation left for pruning", "err", err)
	}
}

// retire removes the entries of a token that is gone (consumed or
// expired), given the fields its script returned: its creator's lookup
// member and index entries. Members of attempts still pending stay (such
// an attempt may yet create the id again: a store-level Issue of the same
// id may linearize after the removal); each removes its own.
func (s *TokenStore) retire(ctx context.Context, id, conv baton.TokenID, dest, expires, nonce string) {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	pipe := s.client.Pipeline()
	pipe.SRem(ctx, s.keys.lookup(id), lookupValue(conv, nonce))
	m := indexMember(id, conv, nonce)
	pipe.ZRem(ctx, s.keys.destination(dest), m)
	if expires != "" {
		pipe.ZRem(ctx, s.keys.expiries(), m)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.logger.Debug("redis token store: entries of a removed token left for pruning", "token", id, "err", err)
	}
}

// definite reports whether a failed creation script certainly applied
// nothing, so that its attempt's entries may be released.
func definite(err error) bool {
	return goredis.HasErrorPrefix(err, errExistsPrefix) || goredis.HasErrorPrefix(err, errStalePrefix) || notSent(err)
}

// create runs the creation script in the conversation's slot. It returns
// the script's reply: {0}, {1} or {1, dest, expires, nonce}.
func (s *TokenStore) create(ctx context.Context, a *attempt, parent baton.TokenID) ([]any, error) {
	keys := make([]string, 0, 2+len(a.tokens))
	args := make([]any, 0, 5+tokenFields*len(a.tokens))
	keys = append(keys, s.keys.conversation(a.conv))
	parentArg := ""
	if !parent.IsZero() {
		parentArg = parent.String()
		keys = append(keys, s.keys.token(a.conv, parent))
	}
	args = append(args, parentArg, a.conv.String(), a.nonce, a.micros, claimTTL.Microseconds())
	for _, t := range a.tokens {
		keys = append(keys, s.keys.token(a.conv, t.ID))
		args = appendTokenFields(args, t)
	}
	reply, err := clusterCreateScript.Run(ctx, s.client, keys, args...).Slice()
	if err == nil && len(reply) == 0 {
		err = fmt.Errorf("redis: empty reply from the creation script")
	}
	return reply, err
}

// sameConversation returns the one conversation of tokens, or an error
// matching store.ErrInvalid: a transition's script runs in one slot.
func sameConversation(op string, tokens []baton.Token) (baton.TokenID, error) {
	var conv baton.TokenID
	for i, t := range tokens {
		if i == 0 {
			conv = t.Conversation
		} else if t.Conversation != conv {
			return conv, fmt.Errorf("redis: %s: %w: on Redis Cluster the tokens that one transition creates must share one conversation, their parent's (tokens %s and %s differ)", op, store.ErrInvalid, tokens[0].ID, t.ID)
		}
	}
	return conv, nil
}

func (s *TokenStore) clusterTransition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	op := "transition " + consume.String()
	conv, err := sameConversation(op, create)
	if err != nil {
		return false, err
	}
	a := s.newAttempt(conv, create)
	value, conflicts, err := s.claim(ctx, a, consume)
	if err != nil {
		s.release(ctx, a)
		return false, notApplied(op, err)
	}
	if value == "" {
		// No lookup: the parent is not live (a live token always has one).
		s.release(ctx, a)
		return false, nil
	}
	parentConv, _, ok := parseLookupValue(value)
	if !ok {
		s.release(ctx, a)
		return false, fmt.Errorf("redis: %s: %w: malformed lookup %q", op, store.ErrNotApplied, value)
	}
	if len(create) == 0 {
		a.conv = parentConv
	} else if parentConv != conv {
		s.release(ctx, a)
		return false, fmt.Errorf("redis: %s: %w: on Redis Cluster children must be in their parent's conversation %s, not %s", op, store.ErrInvalid, parentConv, conv)
	}
	if len(conflicts) > 0 {
		s.release(ctx, a)
		c := conflicts[0]
		s.pruneLookup(ctx, c.id, c.value)
		return false, fmt.Errorf("redis: %s: %w: token id %s is held by another conversation; retry later", op, store.ErrNotApplied, c.id)
	}
	reply, err := s.create(ctx, a, consume)
	if err != nil {
		if definite(err) {
			s.release(ctx, a)
		}
		return false, classify(op, err)
	}
	if n, _ := reply[0].(int64); n != 1 {
		s.release(ctx, a)
		s.pruneLookup(ctx, consume, value)
		return false, nil
	}
	if len(reply) == 4 {
		f := make([]string, 3)
		for i := range f {
			f[i], _ = reply[i+1].(string)
		}
		s.retire(ctx, consume, parentConv, f[0], f[1], f[2])
	}
	return true, nil
}

func (s *TokenStore) clusterIssue(ctx context.Context, root baton.Token) error {
	op := "issue " + root.ID.String()
	a := s.newAttempt(root.Conversation, []baton.Token{root})
	_, conflicts, err := s.claim(ctx, a, baton.TokenID{})
	if err != nil {
		s.release(ctx, a)
		return notApplied(op, err)
	}
	if len(conflicts) > 0 {
		s.release(ctx, a)
		c := conflicts[0]
		if conv, _, ok := parseLookupValue(c.value); ok {
			if live, err := s.readTokens(ctx, conv, []baton.TokenID{c.id}, []string{""}); err == nil && live[0] != nil {
				return fmt.Errorf("redis: %s: %w: token %s (in conversation %s)", op, store.ErrExists, c.id, conv)
			}
		}
		s.pruneLookup(ctx, c.id, c.value)
		return fmt.Errorf("redis: %s: %w: token id %s is held by another conversation; retry later", op, store.ErrNotApplied, c.id)
	}
	if _, err := s.create(ctx, a, baton.TokenID{}); err != nil {
		if definite(err) {
			s.release(ctx, a)
		}
		return classify(op, err)
	}
	return nil
}

// clusterClaimRoot finds the token's conversation by its lookup, claims
// it with one script in that conversation's slot, and then takes its entry
// out of the expiry index (clusterExpireRoots skips an entry whose token
// no longer expires, and prunes it once the token is gone).
func (s *TokenStore) clusterClaimRoot(ctx context.Context, id baton.TokenID, now time.Time) (baton.Token, error) {
	op := "claim root " + id.String()
	value, err := s.client.SRandMember(ctx, s.keys.lookup(id)).Result()
	if errors.Is(err, goredis.Nil) {
		return baton.Token{}, fmt.Errorf("redis: %s: %w", op, store.ErrNotFound)
	}
	if err != nil {
		return baton.Token{}, notApplied(op, err)
	}
	conv, _, ok := parseLookupValue(value)
	if !ok {
		return baton.Token{}, fmt.Errorf("redis: %s: %w: malformed lookup %q", op, store.ErrNotApplied, value)
	}
	reply, err := clusterClaimScript.Run(ctx, s.client, []string{s.keys.token(conv, id)}, id.String(), conv.String(), now.UnixMicro()).Slice()
	if err != nil {
		return baton.Token{}, classify(op, err)
	}
	tok, err := claimed(id, reply)
	if err != nil {
		return baton.Token{}, err
	}
	if len(reply) == 3 { // it had an expiry: its index entry goes
		if nonce, _ := reply[2].(string); nonce != "" {
			cctx, cancel := cleanupContext(ctx)
			if err := s.client.ZRem(cctx, s.keys.expiries(), indexMember(id, conv, nonce)).Err(); err != nil {
				s.logger.Debug("redis token store: expiry entry of a claimed root left for pruning", "token", id, "err", err)
			}
			cancel()
		}
	}
	return tok, nil
}

func (s *TokenStore) clusterGet(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	value, err := s.client.SRandMember(ctx, s.keys.lookup(id)).Result()
	if errors.Is(err, goredis.Nil) {
		return baton.Token{}, fmt.Errorf("redis: get: %w: token %s", store.ErrNotFound, id)
	}
	if err != nil {
		return baton.Token{}, classify("get "+id.String(), err)
	}
	conv, _, ok := parseLookupValue(value)
	if !ok {
		return baton.Token{}, fmt.Errorf("redis: get %s: malformed lookup %q", id, value)
	}
	tokens, err := s.readTokens(ctx, conv, []baton.TokenID{id}, []string{""})
	if err != nil {
		return baton.Token{}, classify("get "+id.String(), err)
	}
	if tokens[0] == nil {
		s.pruneLookup(ctx, id, value)
		return baton.Token{}, fmt.Errorf("redis: get: %w: token %s", store.ErrNotFound, id)
	}
	return *tokens[0], nil
}

// readTokens reads tokens of one conversation; nil where a token is not
// live or does not carry the nonce asked for ("" for any).
func (s *TokenStore) readTokens(ctx context.Context, conv baton.TokenID, ids []baton.TokenID, nonces []string) ([]*baton.Token, error) {
	keys := make([]string, len(ids))
	args := make([]any, 0, 1+2*len(ids))
	args = append(args, conv.String())
	for i, id := range ids {
		keys[i] = s.keys.token(conv, id)
		args = append(args, id.String(), nonces[i])
	}
	reply, err := clusterGetScript.Run(ctx, s.client, keys, args...).Slice()
	if err != nil {
		return nil, err
	}
	return decodeOptionalTokens(reply, len(ids))
}

func decodeOptionalTokens(reply []any, n int) ([]*baton.Token, error) {
	if len(reply) != n {
		return nil, fmt.Errorf("redis: script returned %d tokens for %d ids", len(reply), n)
	}
	out := make([]*baton.Token, n)
	for i, r := range reply {
		if _, ok := r.([]any); !ok {
			continue
		}
		t, err := decodeToken(r)
		if err != nil {
			return nil, err
		}
		out[i] = &t
	}
	return out, nil
}

// pruneLookup removes the members of an id's lookup (value is one of
// them, naming its conversation) whose nonce is older than pruneAge and
// whose token is not live with that nonce: every creation that such a
// member could serve has applied or been refused by then. SREM of a
// named member spares every other claim, and the key goes with its last
// member.
func (s *TokenStore) pruneLookup(ctx context.Context, id baton.TokenID, value string) {
	conv, _, ok := parseLookupValue(value)
	if !ok {
		return
	}
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	members, err := s.client.SMembers(ctx, s.keys.lookup(id)).Result()
	if err != nil {
		return
	}
	var old []string
	for _, m := range members {
		if c, n, ok := parseLookupValue(m); ok && c == conv && s.old(n) {
			old = append(old, m)
		}
	}
	if len(old) == 0 {
		return
	}
	ids, nonces := make([]baton.TokenID, len(old)), make([]string, len(old))
	for i, m := range old {
		ids[i] = id
		_, nonces[i], _ = parseLookupValue(m)
	}
	live, err := s.readTokens(ctx, conv, ids, nonces)
	if err != nil {
		return
	}
	var garbage []any
	for i, m := range old {
		if live[i] == nil {
			garbage = append(garbage, m)
		}
	}
	if len(garbage) > 0 {
		s.client.SRem(ctx, s.keys.lookup(id), garbage...)
	}
}

func (s *TokenStore) clusterListByConversation(ctx context.Context, conv baton.TokenID, page store.Page) ([]baton.Token, error) {
	from := "-"
	if !page.After.IsZero() {
		from = "(" + page.After.String()
	}
	reply, err := clusterListConversationScript.Run(ctx, s.client, []string{s.keys.conversation(conv)},
		s.keys.tokenPrefix(conv), conv.String(), from, page.Size()).Result()
	if err != nil {
		return nil, classify("list", err)
	}
	return decodeTokens(reply)
}

// clusterListByDestination pages through the destination's index and
// reads each entry's token in its conversation's slot, skipping entries
// whose token is absent (a creation in flight, or garbage; old garbage is
// pruned on the way).
func (s *TokenStore) clusterListByDestination(ctx context.Context, dest string, page store.Page) ([]baton.Token, error) {
	size := page.Size()
	key := s.keys.destination(dest)
	from := "-"
	if !page.After.IsZero() {
		from = afterID(page.After)
	}
	out := make([]baton.Token, 0, size)
	for len(out) < size {
		want := size - len(out)
		members, err := s.client.ZRangeByLex(ctx, key, &goredis.ZRangeBy{Min: from, Max: "+", Count: int64(want)}).Result()
		if err != nil {
			return nil, classify("list", err)
		}
		found, err := s.resolveMembers(ctx, key, members)
		if err != nil {
			return nil, classify("list", err)
		}
		out = append(out, found...)
		if len(members) < want {
			break
		}
		from = "(" + members[len(members)-1]
	}
	return out, nil
}

// resolveMembers returns, in order, the live tokens that index members
// name, one round trip per conversation.
func (s *TokenStore) resolveMembers(ctx context.Context, key string, members []string) ([]baton.Token, error) {
	parsed := make([]member, len(members))
	byConv := make(map[baton.TokenID][]int)
	var order []baton.TokenID
	for i, m := range members {
		p, ok := parseIndexMember(m)
		if !ok {
			continue
		}
		parsed[i] = p
		if _, seen := byConv[p.conversation]; !seen {
			order = append(order, p.conversation)
		}
		byConv[p.conversation] = append(byConv[p.conversation], i)
	}
	tokens := make([]*baton.Token, len(members))
	for _, conv := range order {
		idx := byConv[conv]
		ids, nonces := make([]baton.TokenID, len(idx)), make([]string, len(idx))
		for j, i := range idx {
			ids[j], nonces[j] = parsed[i].id, parsed[i].nonce
		}
		got, err := s.readTokens(ctx, conv, ids, nonces)
		if err != nil {
			return nil, err
		}
		for j, i := range idx {
			tokens[i] = got[j]
		}
	}
	var out []baton.Token
	var garbage []any
	for i, t := range tokens {
		switch {
		case t != nil:
			out = append(out, *t)
		case parsed[i].nonce != "" && s.old(parsed[i].nonce):
			garbage = append(garbage, members[i])
		}
	}
	if len(garbage) > 0 {
		cctx, cancel := cleanupContext(ctx)
		s.client.ZRem(cctx, key, garbage...)
		cancel()
	}
	return out, nil
}

// clusterExpireRoots walks the expiry index in score order and expires
// each token in its own slot, one atomic script per token. Entries whose
// token is absent are skipped, and pruned once old.
func (s *TokenStore) clusterExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	total, offset := 0, 0
	cutoff := before.UnixMicro()
	for total < limit {
		batch := min(limit-total, expireBatch)
		members, err := s.client.ZRangeByScore(ctx, s.keys.expiries(), &goredis.ZRangeBy{
			Min: "-inf", Max: "(" + strconv.FormatInt(cutoff, 10), Offset: int64(offset), Count: int64(batch),
		}).Result()
		if err != nil {
			return total, classify("expire roots", err)
		}
		for _, m := range members {
			if total == limit {
				break
			}
			p, ok := parseIndexMember(m)
			if !ok {
				offset++
				continue
			}
			reply, err := clusterExpireScript.Run(ctx, s.client,
				[]string{s.keys.conversation(p.conversation), s.keys.token(p.conversation, p.id)},
				p.id.String(), p.nonce, cutoff).Slice()
			if err != nil {
				return total, classify("expire roots", err)
			}
			deleted, _ := reply[0].(int64)
			switch {
			case deleted == 1 && len(reply) == 2:
				total++
				dest, _ := reply[1].(string)
				s.retire(ctx, p.id, p.conversation, dest, "expiring", p.nonce)
			case reply[1] == int64(0) && s.old(p.nonce):
				if err := s.client.ZRem(ctx, s.keys.expiries(), m).Err(); err != nil {
					offset++
				}
			default:
				offset++ // live and not expired at the microsecond, or a creation in flight
			}
		}
		if len(members) < batch {
			break
		}
	}
	return total, nil
}

// notApplied wraps an error of a step that ran before any token changed.
func notApplied(op string, err error) error {
	if errors.Is(err, goredis.ErrClosed) {
		return fmt.Errorf("redis: %s: %w", op, store.ErrClosed)
	}
	return fmt.Errorf("redis: %s: %w: %w", op, store.ErrNotApplied, err)
}
