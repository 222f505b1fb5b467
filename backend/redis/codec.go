package redis

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/batonhq/baton"
)

// appendTokenFields appends t's tokenFields strings (see scripts.go).
func appendTokenFields(args []any, t baton.Token) []any {
	cause := ""
	if !t.Causation.IsZero() {
		cause = t.Causation.String()
	}
	return append(args,
		t.ID.String(),
		t.Conversation.String(),
		cause,
		t.Destination,
		t.Type,
		t.Digest.String(),
		formatMicros(t.CreatedAt),
		formatMicros(t.ExpiresAt),
	)
}

// formatMicros writes a time as decimal unix microseconds, "" for zero.
func formatMicros(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMicro(), 10)
}

func parseMicros(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMicro(n).UTC(), nil
}

// decodeToken reads one token's tokenFields list from a script's reply.
func decodeToken(reply any) (baton.Token, error) {
	fields, ok := reply.([]any)
	if !ok || len(fields) != tokenFields {
		return baton.Token{}, fmt.Errorf("redis: malformed token in script reply: %T of length %d", reply, len(fields))
	}
	s := make([]string, tokenFields)
	for i, f := range fields {
		if s[i], ok = f.(string); !ok {
			return baton.Token{}, fmt.Errorf("redis: malformed token in script reply: field %d is %T", i, f)
		}
	}
	var t baton.Token
	var err error
	if t.ID, err = baton.ParseTokenID(s[0]); err != nil {
		return baton.Token{}, fmt.Errorf("redis: stored token id: %w", err)
	}
	if t.Conversation, err = baton.ParseTokenID(s[1]); err != nil {
		return baton.Token{}, fmt.Errorf("redis: token %s: stored conversation: %w", t.ID, err)
	}
	if s[2] != "" {
		if t.Causation, err = baton.ParseTokenID(s[2]); err != nil {
			return baton.Token{}, fmt.Errorf("redis: token %s: stored causation: %w", t.ID, err)
		}
	}
	t.Destination, t.Type = s[3], s[4]
	if n, err := hex.Decode(t.Digest[:], []byte(s[5])); err != nil || n != len(t.Digest) || len(s[5]) != 2*len(t.Digest) {
		return baton.Token{}, fmt.Errorf("redis: token %s: stored digest %q is not %d hex digits", t.ID, s[5], 2*len(t.Digest))
	}
	if t.CreatedAt, err = parseMicros(s[6]); err != nil {
		return baton.Token{}, fmt.Errorf("redis: token %s: stored created time: %w", t.ID, err)
	}
	if t.ExpiresAt, err = parseMicros(s[7]); err != nil {
		return baton.Token{}, fmt.Errorf("redis: token %s: stored expiry: %w", t.ID, err)
	}
	return t, nil
}

func decodeTokens(reply any) ([]baton.Token, error) {
	items, ok := reply.([]any)
	if !ok {
		return nil, fmt.Errorf("redis: malformed script reply: %T, want a list", reply)
	}
	out := make([]baton.Token, 0, len(items))
	for _, item := range items {
		t, err := decodeToken(item)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}
