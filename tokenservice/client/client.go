package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
)

// Errors that a refused request matches besides store.ErrNotApplied.
var (
	// ErrUnauthorized: the service did not recognise the credentials (401).
	ErrUnauthorized = errors.New("client: unauthorized")
	// ErrForbidden: the calling system may not do this (403): the token is
	// addressed to another destination, a created token is not a child of
	// the consumed one, or the system lacks a permission.
	ErrForbidden = errors.New("client: forbidden")
)

// ErrInvalidConfig wraps the errors of New.
var ErrInvalidConfig = errors.New("client: invalid config")

// Options configures a Client. The zero value is ready to use.
type Options struct {
	// HTTPClient sends the requests. Nil means a client of its own with a
	// pool of up to 64 idle connections to the service and no overall
	// timeout: every call is bounded by its context. Redirects are not
	// followed (a redirect is an answer of unknown outcome) unless
	// HTTPClient has a CheckRedirect of its own: net/http would send the
	// API key along to another port, scheme or subdomain of the host.
	HTTPClient *http.Client
	// UserAgent is sent with every request. Empty means "baton-client-go".
	UserAgent string
}

// Client is a store.TokenStore backed by the token service.
type Client struct {
	base   string // scheme, host and path prefix, without a trailing slash
	auth   string
	http   *http.Client
	agent  string
	closed chan struct{}
}

var _ store.TokenStore = (*Client)(nil)

// maxAnswerBytes bounds how much of an answer the client reads: a full
// page of tokens is well under 1 MiB.
const maxAnswerBytes = 8 << 20

// New returns a client of the service at baseURL (http or https, without a
// query) that authenticates with apiKey. An empty apiKey sends no
// Authorization header, for a client that authenticates with a TLS client
// certificate configured in Options.HTTPClient.
func New(baseURL, apiKey string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("%w: base URL: %w", ErrInvalidConfig, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: base URL %q must be http(s)://host[:port][/path]", ErrInvalidConfig, u.Redacted())
	}
	if strings.ContainsAny(apiKey, " \t\r\n") {
		return nil, fmt.Errorf("%w: API key contains whitespace", ErrInvalidConfig)
	}
	c := &Client{base: strings.TrimRight(u.String(), "/"), http: opts.HTTPClient, agent: opts.UserAgent, closed: make(chan struct{})}
	if apiKey != "" {
		c.auth = "Bearer " + apiKey
	}
	if c.http == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		c.http = &http.Client{Transport: t}
	}
	if c.http.CheckRedirect == nil {
		own := *c.http
		own.CheckRedirect = followNoRedirect
		c.http = &own
	}
	if c.agent == "" {
		c.agent = "baton-client-go"
	}
	return c, nil
}

// followNoRedirect makes a redirect the answer: the service never
// redirects its routes, and following one would carry the Authorization
// header to wherever it points on the same host (another port, plain
// http) or a subdomain of it.
func followNoRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Close makes every later call fail with store.ErrClosed and closes idle
// connections. Calls in flight finish.
func (c *Client) Close() error {
	select {
	case <-c.closed:
	default:
		close(c.closed)
		c.http.CloseIdleConnections()
	}
	return nil
}

// Transition implements store.TokenStore.
func (c *Client) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	var answer tokenservice.TransitionResponse
	if err := c.do(ctx, http.MethodPost, "/v1/transitions", nil, transitionRequest(consume, create), http.StatusOK, &answer); err != nil {
		return false, fmt.Errorf("client: transition %s: %w", consume, err)
	}
	return answer.Consumed, nil
}

func transitionRequest(consume baton.TokenID, create []baton.Token) tokenservice.TransitionRequest {
	req := tokenservice.TransitionRequest{Consume: idString(consume), Create: make([]tokenservice.Token, len(create))}
	for i, t := range create {
		req.Create[i] = tokenservice.EncodeToken(t)
	}
	return req
}

// Issue implements store.TokenStore: the service chooses the root's id
// and sets its creation time.
func (c *Client) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	// Checked here as any store checks it, so that a bad root is refused
	// without a round trip.
	if _, err := store.NewRoot(root, rand.Reader); err != nil {
		return baton.Token{}, fmt.Errorf("client: issue: %w", err)
	}
	req := tokenservice.EncodeToken(root)
	req.CreatedAt = ""
	var answer tokenservice.Token
	if err := c.do(ctx, http.MethodPost, "/v1/roots", nil, req, http.StatusCreated, &answer); err != nil {
		return baton.Token{}, fmt.Errorf("client: issue: %w", err)
	}
	tok, err := answer.Decode()
	if err != nil {
		return baton.Token{}, fmt.Errorf("client: issue: outcome unknown: unreadable answer: %v", err)
	}
	return tok, nil
}

// ClaimRoot implements store.TokenStore. The service's clock, not now,
// decides whether the root expired.
func (c *Client) ClaimRoot(ctx context.Context, id baton.TokenID, _ time.Time) (baton.Token, error) {
	if id.IsZero() {
		return baton.Token{}, fmt.Errorf("client: claim: %w: the zero id is no token's", store.ErrNotFound)
	}
	var answer tokenservice.Token
	if err := c.do(ctx, http.MethodPost, "/v1/tokens/"+id.String()+"/claim", nil, nil, http.StatusOK, &answer); err != nil {
		return baton.Token{}, fmt.Errorf("client: claim %s: %w", id, err)
	}
	tok, err := answer.Decode()
	if err != nil {
		return baton.Token{}, fmt.Errorf("client: claim %s: outcome unknown: unreadable answer: %v", id, err)
	}
	return tok, nil
}

// Get implements store.TokenStore.
func (c *Client) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	if id.IsZero() {
		return baton.Token{}, fmt.Errorf("client: get: %w: the zero id is no token's", store.ErrNotFound)
	}
	var answer tokenservice.Token
	if err := c.do(ctx, http.MethodGet, "/v1/tokens/"+id.String(), nil, nil, http.StatusOK, &answer); err != nil {
		return baton.Token{}, fmt.Errorf("client: get %s: %w", id, err)
	}
	tok, err := answer.Decode()
	if err != nil {
		return baton.Token{}, fmt.Errorf("client: get %s: unreadable answer: %v", id, err)
	}
	return tok, nil
}

// ListByConversation implements store.TokenStore.
func (c *Client) ListByConversation(ctx context.Context, conversation baton.TokenID, page store.Page) ([]baton.Token, error) {
	tokens, err := c.list(ctx, "/v1/conversations/"+conversation.String()+"/tokens", page)
	if err != nil {
		return nil, fmt.Errorf("client: list conversation %s: %w", conversation, err)
	}
	return tokens, nil
}

// ListByDestination implements store.TokenStore.
func (c *Client) ListByDestination(ctx context.Context, destination string, page store.Page) ([]baton.Token, error) {
	tokens, err := c.list(ctx, "/v1/destinations/"+url.PathEscape(destination)+"/tokens", page)
	if err != nil {
		return nil, fmt.Errorf("client: list destination %q: %w", destination, err)
	}
	return tokens, nil
}

func (c *Client) list(ctx context.Context, path string, page store.Page) ([]baton.Token, error) {
	q := url.Values{"limit": {strconv.Itoa(page.Size())}}
	if !page.After.IsZero() {
		q.Set("after", page.After.String())
	}
	var answer tokenservice.TokenList
	if err := c.do(ctx, http.MethodGet, path, q, nil, http.StatusOK, &answer); err != nil {
		return nil, err
	}
	tokens := make([]baton.Token, len(answer.Tokens))
	for i, j := range answer.Tokens {
		t, err := j.Decode()
		if err != nil {
			return nil, fmt.Errorf("unreadable answer: %v", err)
		}
		tokens[i] = t
	}
	return tokens, nil
}

// ExpireRoots implements store.TokenStore. The service caps one call at
// tokenservice.MaxExpireLimit deletions.
func (c *Client) ExpireRoots(ctx context.Context, before time.Time, limit int) (int, error) {
	limit = max(limit, 0)
	req := tokenservice.ExpirationRequest{Before: tokenservice.FormatTime(before), Limit: &limit}
	var answer tokenservice.ExpirationResponse
	if err := c.do(ctx, http.MethodPost, "/v1/expirations", nil, req, http.StatusOK, &answer); err != nil {
		return 0, fmt.Errorf("client: expire roots: %w", err)
	}
	return answer.Expired, nil
}

// do sends one request and decodes the answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body any, want int, out any) error {
	return c.doWithHeader(ctx, method, path, query, nil, body, want, out)
}

// doWithHeader is do with header's fields added to the request's.
func (c *Client) doWithHeader(ctx context.Context, method, path string, query url.Values, header http.Header, body any, want int, out any) error {
	select {
	case <-c.closed:
		return store.ErrClosed
	default:
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", store.ErrNotApplied, err)
	}
	// path is escaped already (ids are hex, destinations PathEscape'd).
	target := c.base + path
	if q := query.Encode(); q != "" {
		target += "?" + q
	}
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%w: encode request: %w", store.ErrInvalid, err)
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, reader)
	if err != nil {
		return fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", c.agent)
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	if conversation, ok := store.ConversationFrom(ctx); ok {
		// The service's store may be split by conversation: one part then
		// answers instead of every part.
		req.Header.Set(tokenservice.ConversationHeader, conversation.String())
	}
	for name, values := range header {
		req.Header[name] = values
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if notSent(err) {
			return fmt.Errorf("%w: %w", store.ErrNotApplied, err)
		}
		return fmt.Errorf("outcome unknown: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return fmt.Errorf("outcome unknown: reading the answer: %w", err)
	}
	if resp.StatusCode != want {
		return readProblem(resp, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("outcome unknown: unreadable answer (%d bytes): %w", len(data), err)
	}
	return nil
}

// notSent reports whether err proves the request never reached the
// service: the connection (or its TLS handshake) could not be made.
func notSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &dns) || errors.As(err, &unknownAuthority) || errors.As(err, &hostname) || errors.As(err, &verify)
}

// ProblemError is an error answer of the service, an RFC 9457 problem
// document. It matches (errors.Is) the store sentinel its type maps to.
type ProblemError struct {
	tokenservice.Problem
}

func (p *ProblemError) Error() string { return p.Problem.Error() }

// Unwrap returns the sentinels the problem matches.
func (p *ProblemError) Unwrap() []error {
	switch p.Type {
	case tokenservice.ProblemInvalid, tokenservice.ProblemTooLarge, tokenservice.ProblemMediaType:
		return []error{store.ErrInvalid}
	case tokenservice.ProblemNotFound:
		return []error{store.ErrNotFound}
	case tokenservice.ProblemExists:
		return []error{store.ErrExists}
	case tokenservice.ProblemExpired:
		return []error{store.ErrExpired}
	case tokenservice.ProblemNotApplied:
		return []error{store.ErrNotApplied}
	case tokenservice.ProblemUnauthorized:
		return []error{ErrUnauthorized, store.ErrNotApplied}
	case tokenservice.ProblemNotYourToken:
		return []error{ErrForbidden, store.ErrNotYours, store.ErrNotApplied}
	case tokenservice.ProblemForbidden, tokenservice.ProblemNotAChild:
		return []error{ErrForbidden, store.ErrForbidden, store.ErrNotApplied}
	case tokenservice.ProblemNoRoute, tokenservice.ProblemMethod:
		// A service that does not serve the route (an older one, without
		// the batch routes) ran nothing.
		return []error{store.ErrNotApplied}
	}
	// An answer without a known type (a proxy's error page, a 500): the
	// status alone says nothing was applied only for these.
	switch p.Status {
	case http.StatusUnauthorized:
		return []error{ErrUnauthorized, store.ErrNotApplied}
	case http.StatusForbidden:
		return []error{ErrForbidden, store.ErrForbidden, store.ErrNotApplied}
	case http.StatusRequestEntityTooLarge:
		return []error{store.ErrInvalid}
	}
	return nil
}

// readProblem turns an error answer into a *ProblemError. An answer that is
// not a problem document keeps its status and gets no type.
func readProblem(resp *http.Response, body []byte) error {
	p := &ProblemError{tokenservice.Problem{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err == nil && mt == tokenservice.ProblemContentType {
		var doc tokenservice.Problem
		if json.Unmarshal(body, &doc) == nil {
			doc.Status = resp.StatusCode // the status line is authoritative (RFC 9457 3.1.2)
			if doc.Title == "" {
				doc.Title = p.Title
			}
			p.Problem = doc
		}
	}
	return p
}

func idString(id baton.TokenID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}
