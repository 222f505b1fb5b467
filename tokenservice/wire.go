package tokenservice

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/strictjson"
	"github.com/batonhq/baton/store"
)

// TimeFormat is how the API writes times: RFC 3339 in UTC with exactly six
// fractional digits (microseconds, the precision every token store keeps).
// The API reads any RFC 3339 time and truncates it to microseconds.
const TimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// MaxExpireLimit caps how many roots one expiration request deletes.
const MaxExpireLimit = 10000

// MaxBatch caps the items of one batch request: the ids of POST
// /v1/tokens/read and the transitions of POST /v1/transitions/batch.
const MaxBatch = 100

// Token is a token as the API reads and writes it. Ids are 32 lowercase
// hex digits, the digest 64; causation is absent on root tokens and
// expires_at on tokens that do not expire. created_at may be left out of a
// request, and the service then sets its own clock's time.
type Token struct {
	ID           string `json:"id"`
	Conversation string `json:"conversation"`
	Causation    string `json:"causation,omitempty"`
	Destination  string `json:"destination"`
	Type         string `json:"type"`
	Digest       string `json:"digest"`
	CreatedAt    string `json:"created_at,omitempty"`
	ExpiresAt    string `json:"expires_at,omitempty"`
}

// TransitionRequest is the body of POST /v1/transitions, and one
// transition of POST /v1/transitions/batch.
type TransitionRequest struct {
	Consume string    `json:"consume"`
	Create  ChildList `json:"create,omitempty"`
}

// TransitionResponse answers a transition: whether it consumed the token.
type TransitionResponse struct {
	Consumed bool `json:"consumed"`
}

// TransitionBatchRequest is the body of POST /v1/transitions/batch: at
// most MaxBatch transitions, no token in two of them.
type TransitionBatchRequest struct {
	Transitions TransitionList `json:"transitions"`
}

// TransitionBatchResponse answers a batch of transitions: one result for
// each, in order.
type TransitionBatchResponse struct {
	Results []TransitionResult `json:"results"`
}

// TransitionResult is one transition's result in a batch: Consumed, or
// the Problem that POST /v1/transitions would answer for it alone.
type TransitionResult struct {
	Consumed *bool    `json:"consumed,omitempty"`
	Problem  *Problem `json:"problem,omitempty"`
}

// TokenReadRequest is the body of POST /v1/tokens/read: at most MaxBatch
// token ids.
type TokenReadRequest struct {
	IDs IDList `json:"ids"`
}

// TokenReadResponse answers a read of tokens: one result for each id, in
// order.
type TokenReadResponse struct {
	Results []TokenReadResult `json:"results"`
}

// TokenReadResult is one id's result: the Token, or the Problem that GET
// /v1/tokens/{id} would answer for it.
type TokenReadResult struct {
	Token   *Token   `json:"token,omitempty"`
	Problem *Problem `json:"problem,omitempty"`
}

// ExpirationRequest is the body of POST /v1/expirations: delete up to
// limit roots whose expiry is before before.
type ExpirationRequest struct {
	Before string `json:"before"`
	Limit  *int   `json:"limit"`
}

// ExpirationResponse says how many roots an expiration request deleted.
type ExpirationResponse struct {
	Expired int `json:"expired"`
}

// TokenList is one page of a listing. NextAfter is set when the page is
// full: pass it as ?after= to get the next page.
type TokenList struct {
	Tokens    []Token `json:"tokens"`
	NextAfter string  `json:"next_after,omitempty"`
}

// EncodeToken returns t as the API writes it.
func EncodeToken(t baton.Token) Token {
	return Token{
		ID:           encodeID(t.ID),
		Conversation: encodeID(t.Conversation),
		Causation:    encodeID(t.Causation),
		Destination:  t.Destination,
		Type:         t.Type,
		Digest:       t.Digest.String(),
		CreatedAt:    FormatTime(t.CreatedAt),
		ExpiresAt:    FormatTime(t.ExpiresAt),
	}
}

// Decode parses a token as the API reads it. It checks the syntax of every
// field (ids, digest, times); store.ValidateToken checks the rest. Errors
// wrap store.ErrInvalid.
func (j Token) Decode() (baton.Token, error) {
	var t baton.Token
	var err error
	if t.ID, err = parseID("id", j.ID, true); err != nil {
		return t, err
	}
	if t.Conversation, err = parseID("conversation", j.Conversation, true); err != nil {
		return t, err
	}
	if t.Causation, err = parseID("causation", j.Causation, false); err != nil {
		return t, err
	}
	t.Destination, t.Type = j.Destination, j.Type
	if t.Digest, err = parseDigest(j.Digest); err != nil {
		return t, err
	}
	if t.CreatedAt, err = ParseTime("created_at", j.CreatedAt); err != nil {
		return t, err
	}
	if t.ExpiresAt, err = ParseTime("expires_at", j.ExpiresAt); err != nil {
		return t, err
	}
	return t, nil
}

// FormatTime writes t in TimeFormat; the zero time is the empty string.
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Truncate(time.Microsecond).Format(TimeFormat)
}

// ParseTime reads an RFC 3339 time, in UTC and truncated to microseconds;
// the empty string is the zero time. Errors wrap store.ErrInvalid.
func ParseTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %s %q is not an RFC 3339 time", store.ErrInvalid, field, s)
	}
	return t.UTC().Truncate(time.Microsecond), nil
}

func encodeID(id baton.TokenID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// parseID reads a token id: 32 lowercase hex digits, not all zero.
func parseID(field, s string, required bool) (baton.TokenID, error) {
	if s == "" {
		if required {
			return baton.TokenID{}, fmt.Errorf("%w: %s is required", store.ErrInvalid, field)
		}
		return baton.TokenID{}, nil
	}
	id, err := baton.ParseTokenID(s)
	if err != nil {
		return id, fmt.Errorf("%w: %s: %w", store.ErrInvalid, field, err)
	}
	if id.IsZero() {
		return id, fmt.Errorf("%w: %s is the zero id, which no token has", store.ErrInvalid, field)
	}
	return id, nil
}

func parseDigest(s string) (baton.Digest, error) {
	var d baton.Digest
	if len(s) != 2*len(d) || !lowerHex(s) {
		return d, fmt.Errorf("%w: digest must be %d lowercase hex digits", store.ErrInvalid, 2*len(d))
	}
	_, err := hex.Decode(d[:], []byte(s))
	return d, err
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// decodeStrict decodes exactly one JSON value into v, refusing unknown
// fields and trailing data. Errors wrap store.ErrInvalid.
func decodeStrict(data []byte, v any) error {
	if err := decodeJSON(data, v); err != nil {
		return fmt.Errorf("%w: body: %w", store.ErrInvalid, err)
	}
	return nil
}

// decodeJSON decodes exactly one JSON value into v, refusing unknown
// fields and trailing data, and first what encoding/json would read more
// leniently than other parsers (strictjson.Check): a key that is not
// exactly a field's name, a key given twice, bytes that are not UTF-8.
func decodeJSON(data []byte, v any) error {
	if err := strictjson.Check(data); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("more than one JSON value")
	}
	return nil
}

// decodeRoot reads the body of POST /v1/roots: a root token without id,
// which the token store chooses, so that no client can issue the id of a
// consumed token again. A missing conversation is the new id; created_at
// is the service's to set, so a client's value is ignored.
func decodeRoot(data []byte) (baton.Token, error) {
	var j Token
	if err := decodeStrict(data, &j); err != nil {
		return baton.Token{}, err
	}
	if j.ID != "" {
		return baton.Token{}, fmt.Errorf("%w: id: the service chooses a root token's id; send none", store.ErrInvalid)
	}
	if j.Causation != "" {
		return baton.Token{}, fmt.Errorf("%w: a root token has no causation; a transition creates children", store.ErrInvalid)
	}
	if j.Digest == "" {
		j.Digest = baton.DigestOf(nil).String()
	}
	// Decode checks every field's syntax and needs an id: a placeholder,
	// cleared again. The token store checks the rest (store.NewRoot).
	j.ID = baton.NewTokenID().String()
	ownConversation := j.Conversation == ""
	if ownConversation {
		j.Conversation = j.ID
	}
	t, err := j.Decode()
	if err != nil {
		return baton.Token{}, err
	}
	if err := store.ValidateToken(t); err != nil { // with the placeholder ids
		return baton.Token{}, err
	}
	t.ID, t.CreatedAt = baton.TokenID{}, time.Time{}
	if ownConversation {
		t.Conversation = baton.TokenID{}
	}
	return t, nil
}

// decodeTransition reads the body of POST /v1/transitions.
func decodeTransition(data []byte) (store.TokenTransition, error) {
	var req TransitionRequest
	if err := decodeStrict(data, &req); err != nil {
		return store.TokenTransition{}, err
	}
	return req.decode()
}

// decodeTransitionBatch reads the body of POST /v1/transitions/batch: each
// transition as decodeTransition reads it, and no token twice in the batch
// (store.ValidateTokenTransitions).
func decodeTransitionBatch(data []byte) ([]store.TokenTransition, error) {
	var req TransitionBatchRequest
	if err := decodeStrict(data, &req); err != nil {
		return nil, err
	}
	if err := checkBatch("transitions", req.Transitions == nil); err != nil {
		return nil, err
	}
	transitions := make([]store.TokenTransition, len(req.Transitions))
	for i, j := range req.Transitions {
		t, err := j.decode()
		if err != nil {
			return nil, fmt.Errorf("transitions[%d]: %w", i, err)
		}
		transitions[i] = t
	}
	if err := store.ValidateTokenTransitions(transitions); err != nil {
		return nil, err
	}
	return transitions, nil
}

// decode reads a transition, valid as store.ValidateTransition requires.
// Children never expire (docs/protocol.md 7.1).
func (req TransitionRequest) decode() (store.TokenTransition, error) {
	consume, err := parseID("consume", req.Consume, true)
	if err != nil {
		return store.TokenTransition{}, err
	}
	if len(req.Create) > store.MaxTokensPerTransition {
		return store.TokenTransition{}, fmt.Errorf("%w: %d tokens in one transition, more than %d", store.ErrInvalid, len(req.Create), store.MaxTokensPerTransition)
	}
	var create []baton.Token
	if len(req.Create) > 0 {
		create = make([]baton.Token, len(req.Create))
	}
	for i, j := range req.Create {
		if create[i], err = j.Decode(); err != nil {
			return store.TokenTransition{}, fmt.Errorf("create[%d]: %w", i, err)
		}
		if !create[i].ExpiresAt.IsZero() {
			return store.TokenTransition{}, fmt.Errorf("%w: create[%d]: only root tokens expire", store.ErrInvalid, i)
		}
	}
	if err := store.ValidateTransition(consume, create); err != nil {
		return store.TokenTransition{}, err
	}
	return store.TokenTransition{Consume: consume, Create: create}, nil
}

// decodeTokenRead reads the body of POST /v1/tokens/read. An id may be
// given more than once.
func decodeTokenRead(data []byte) ([]baton.TokenID, error) {
	var req TokenReadRequest
	if err := decodeStrict(data, &req); err != nil {
		return nil, err
	}
	if err := checkBatch("ids", req.IDs == nil); err != nil {
		return nil, err
	}
	ids := make([]baton.TokenID, len(req.IDs))
	for i, s := range req.IDs {
		id, err := parseID(fmt.Sprintf("ids[%d]", i), s, true)
		if err != nil {
			return nil, err
		}
		ids[i] = id
	}
	return ids, nil
}

// checkBatch refuses a batch's list of items that is missing.
func checkBatch(field string, missing bool) error {
	if missing {
		return fmt.Errorf("%w: %s is required", store.ErrInvalid, field)
	}
	return nil
}

// The lists of a request whose length has a limit. Decoding one stops at
// the first item past its limit, so that a body full of tiny items (a
// couple of megabytes of "{}") is refused before it is built: without
// the stop, a few hundred thousand of them took hundreds of megabytes.
type (
	// TransitionList is a batch's transitions: at most MaxBatch.
	TransitionList []TransitionRequest
	// ChildList is a transition's children: at most
	// store.MaxTokensPerTransition.
	ChildList []Token
	// IDList is a read's token ids: at most MaxBatch.
	IDList []string
)

func (l *TransitionList) UnmarshalJSON(data []byte) (err error) {
	*l, err = decodeList[TransitionRequest](data, MaxBatch, "transitions in one request")
	return err
}

func (l *ChildList) UnmarshalJSON(data []byte) (err error) {
	*l, err = decodeList[Token](data, store.MaxTokensPerTransition, "tokens in one transition")
	return err
}

func (l *IDList) UnmarshalJSON(data []byte) (err error) {
	*l, err = decodeList[string](data, MaxBatch, "ids in one request")
	return err
}

// decodeList decodes a JSON array item by item, refusing unknown fields as
// decodeJSON does, and stops at the first item past limit. null is nil.
func decodeList[T any](data []byte, limit int, items string) ([]T, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	start, err := dec.Token()
	switch {
	case err != nil:
		return nil, err
	case start == nil:
		return nil, nil
	case start != json.Delim('['):
		return nil, fmt.Errorf("%w: want an array of %s, got %s", store.ErrInvalid, items, jsonKind(start))
	}
	list := []T{}
	for dec.More() {
		if len(list) == limit {
			return nil, fmt.Errorf("%w: more than %d %s", store.ErrInvalid, limit, items)
		}
		var item T
		if err := dec.Decode(&item); err != nil {
			return nil, err
		}
		list = append(list, item)
	}
	return list, nil
}

// jsonKind names the kind of JSON value that starts with token t, for an
// error that must not repeat the value itself (it may be megabytes).
func jsonKind(t json.Token) string {
	switch t.(type) {
	case json.Delim:
		return "an object"
	case string:
		return "a string"
	case float64, json.Number:
		return "a number"
	case bool:
		return "true or false"
	}
	return "another value"
}

// decodeExpiration reads the body of POST /v1/expirations. The limit is
// capped at MaxExpireLimit.
func decodeExpiration(data []byte) (before time.Time, limit int, err error) {
	var req ExpirationRequest
	if err := decodeStrict(data, &req); err != nil {
		return time.Time{}, 0, err
	}
	if req.Before == "" {
		return time.Time{}, 0, fmt.Errorf("%w: before is required", store.ErrInvalid)
	}
	if before, err = ParseTime("before", req.Before); err != nil {
		return time.Time{}, 0, err
	}
	switch {
	case req.Limit == nil:
		return time.Time{}, 0, fmt.Errorf("%w: limit is required", store.ErrInvalid)
	case *req.Limit < 0:
		return time.Time{}, 0, fmt.Errorf("%w: limit %d is negative", store.ErrInvalid, *req.Limit)
	}
	return before, min(*req.Limit, MaxExpireLimit), nil
}
