package conformance

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/httpsignal"
)

// check is one property of a participant, from a section of protocol.md.
type check struct {
	name    string
	section string
	run     func(context.Context, *run) error
}

// checks are run in this order; each uses entities of its own.
var checks = []check{
	{"a signal is applied once and answered", "3.2, 5.2", checkApplied},
	{"a copy after processing is a duplicate", "5.2, 5.3", checkDuplicate},
	{"a token never issued is a duplicate", "5.3", checkNeverIssued},
	{"concurrent copies apply once", "5.5", checkConcurrentCopies},
	{"a tampered body is refused, its token stays live", "2.3, 5.2", checkTamperedBody},
	{"a copy with another conversation is refused", "3.2, 5.2", checkTamperedConversation},
	{"a signal for another destination is refused", "3.2, 5.2", checkWrongDestination},
	{"a token for another destination is refused", "3.2, 5.2", checkForeignToken},
	{"malformed requests are refused", "5.1, 5.2", checkMalformed},
	{"a payload over 1 MiB is refused", "5.1, 9", checkTooLarge},
	{"an expiring root is claimed and applied", "3.2, 7.1", checkRootClaimed},
	{"an expired root is refused", "7.1", checkExpiredRoot},
	{"a lost response: processing goes on, a retry is answered", "5.5", checkLostResponse},
	{"token service down: retry asked, nothing applied", "3.7", checkTokenServiceDown},
	{"token service refuses the key: retry asked, not refused", "3.7", checkKeyRefused},
	{"transition fails after the commit: retried, applied once", "3.2, 3.7", checkTransitionFails},
	{"transition answer lost: carried on, applied once", "3.2, 4.3", checkTransitionAnswerLost},
}

// applied checks that a is a fresh application of sig with count want.
func applied(a answer, sig baton.Signal, want int) error {
	if a.status != http.StatusOK || a.outcome != httpsignal.OutcomeApplied {
		return fmt.Errorf("answered %s, want 200 applied", a)
	}
	if a.token != sig.ID.String() {
		return fmt.Errorf("Baton-Token %q, want the signal's token %s", a.token, sig.ID)
	}
	if n, err := a.count(); err != nil {
		return err
	} else if n != want {
		return fmt.Errorf("the reply's count is %d, want %d", n, want)
	}
	return nil
}

// refused checks that a refuses the signal with status and problem, and
// that the signal's token stayed live.
func refused(ctx context.Context, r *run, a answer, sig baton.Signal, status int, problem string) error {
	if !a.is(status, problem) {
		return fmt.Errorf("answered %s, want %d (%s)", a, status, problem)
	}
	if !r.live(ctx, sig) {
		return fmt.Errorf("the refused signal's token was consumed; a refusal leaves it live")
	}
	return nil
}

func checkApplied(ctx context.Context, r *run) error {
	entity := r.entity("applied")
	sig, err := r.child(ctx, entity)
	if err != nil {
		return err
	}
	a, err := r.send(ctx, sig, nil)
	if err != nil {
		return err
	}
	if err := applied(a, sig, 1); err != nil {
		return err
	}
	if !strings.Contains(a.cacheControl, "no-store") {
		return fmt.Errorf("Cache-Control %q, want no-store", a.cacheControl)
	}
	if r.live(ctx, sig) {
		return fmt.Errorf("the token is still live after 200 applied; step 5 consumes it")
	}
	return r.expectApplied(ctx, entity, 1)
}

func checkDuplicate(ctx context.Context, r *run) error {
	entity := r.entity("duplicate")
	sig, err := r.child(ctx, entity)
	if err != nil {
		return err
	}
	if _, err := r.settle(ctx, sig); err != nil {
		return err
	}
	for range 3 {
		a, err := r.send(ctx, sig, nil)
		if err != nil {
			return err
		}
		if !a.is(http.StatusConflict, "already-processed") || a.outcome != httpsignal.OutcomeDuplicate {
			return fmt.Errorf("a copy answered %s, want 409 duplicate (already-processed)", a)
		}
	}
	return r.expectApplied(ctx, entity, 1)
}

func checkNeverIssued(ctx context.Context, r *run) error {
	entity := r.entity("never-issued")
	sig, err := r.child(ctx, entity)
	if err != nil {
		return err
	}
	sig.ID = baton.NewTokenID() // a token nobody created
	a, err := r.send(ctx, sig, nil)
	if err != nil {
		return err
	}
	if !a.is(http.StatusConflict, "already-processed") {
		return fmt.Errorf("answered %s, want 409 duplicate (already-processed)", a)
	}
	return r.expectApplied(ctx, entity, 0)
}

func checkConcurrentCopies(ctx context.Context, r *run) error {
	const copies = 16
	entity := r.entity("concurrent")
	sig, err := r.child(ctx, entity)
	if err != nil {
		return err
	}
	answers := make([]answer, copies)
	errs := make([]error, copies)
	var wg sync.WaitGroup
	for i := range copies {
		wg.Go(func() { answers[i], errs[i] = r.send(ctx, sig, nil) })
	}
	wg.Wait()
	appliedCount := 0
	for i, a := range answers {
		if errs[i] != nil {
			return errs[i]
		}
		switch {
		case a.status == http.StatusOK && a.outcome == httpsignal.OutcomeApplied:
			appliedCount++
		case a.status == http.StatusOK && a.outcome == httpsignal.OutcomeReplayed,
			a.is(http.StatusConflict, "already-processed"), a.is(http.StatusConflict, "in-progress"),
			a.status == http.StatusServiceUnavailable:
		default:
			return fmt.Errorf("a copy answered %s, want 200 applied or replayed, 409 or 503", a)
		}
		if a.status == http.StatusOK {
			if n, err := a.count(); err != nil || n != 1 {
				return fmt.Errorf("a copy answered %s with the reply %q, want the count 1", a, clip(a.body))
			}
		}
	}
	if appliedCount > 1 {
		return fmt.Errorf("%d of %d copies answered applied, want at most one", appliedCount, copies)
	}
	if _, err := r.settle(ctx, sig); err != nil {
		return err
	}
	return r.expectApplied(ctx, entity, 1)
}

func checkTamperedBody(ctx context.Context, r *run) error {
	other := r.entity("tampered-body-other")
	err := tamperedThenGenuine(ctx, r, "tampered-body", func(s *baton.Signal) { s.Payload = payloadFor(other) }, "digest-mismatch")
	if err != nil {
		return err
	}
	return r.expectApplied(ctx, other, 0)
}

func checkTamperedConversation(ctx context.Context, r *run) error {
	return tamperedThenGenuine(ctx, r, "tampered-conversation", func(s *baton.Signal) { s.Conversation = baton.NewTokenID() }, "rejected")
}

// tamperedThenGenuine sends a copy of a fresh signal altered by tamper,
// wants it refused with 422 and problem, its token left live, and then the
// genuine signal applied.
func tamperedThenGenuine(ctx context.Context, r *run, name string, tamper func(*baton.Signal), problem string) error {
	sig, err := r.child(ctx, r.entity(name))
	if err != nil {
		return err
	}
	tampered := sig
	tamper(&tampered)
	a, err := r.send(ctx, tampered, nil)
	if err != nil {
		return err
	}
	if err := refused(ctx, r, a, sig, http.StatusUnprocessableEntity, problem); err != nil {
		return err
	}
	if a, err = r.send(ctx, sig, nil); err != nil {
		return err
	}
	if err := applied(a, sig, 1); err != nil {
		return fmt.Errorf("the genuine signal after the tampered one: %w", err)
	}
	return nil
}

func checkWrongDestination(ctx context.Context, r *run) error {
	entity := r.entity("wrong-destination")
	sig, err := r.childTo(ctx, otherDestination, entity)
	if err != nil {
		return err
	}
	a, err := r.send(ctx, sig, nil)
	if err != nil {
		return err
	}
	if err := refused(ctx, r, a, sig, http.StatusForbidden, "misaddressed"); err != nil {
		return err
	}
	return r.expectApplied(ctx, entity, 0)
}

func checkForeignToken(ctx context.Context, r *run) error {
	entity := r.entity("foreign-token")
	sig, err := r.childTo(ctx, otherDestination, entity)
	if err != nil {
		return err
	}
	// The request claims the participant's destination; the token, which
	// only the token service shows, is for another.
	a, err := r.send(ctx, sig, func(req *http.Request) { req.Header.Set(httpsignal.HeaderDestination, r.cfg.Destination) })
	if err != nil {
		return err
	}
	if err := refused(ctx, r, a, sig, http.StatusForbidden, "misaddressed"); err != nil {
		return err
	}
	return r.expectApplied(ctx, entity, 0)
}

func checkMalformed(ctx context.Context, r *run) error {
	sig, err := r.child(ctx, r.entity("malformed"))
	if err != nil {
		return err
	}
	cases := []struct {
		what    string
		change  func(*http.Request)
		status  int
		problem string
	}{
		{"without Baton-Token", func(r *http.Request) { r.Header.Del(httpsignal.HeaderToken) }, 400, "malformed-signal"},
		{"with two Baton-Token headers", func(r *http.Request) { r.Header.Add(httpsignal.HeaderToken, sig.ID.String()) }, 400, "malformed-signal"},
		{"with a malformed token id", func(r *http.Request) { r.Header.Set(httpsignal.HeaderToken, "not-a-token") }, 400, "malformed-signal"},
		{"with the all-zero token id", func(r *http.Request) { r.Header.Set(httpsignal.HeaderToken, baton.TokenID{}.String()) }, 400, "malformed-signal"},
		{"with an Idempotency-Key that is not the token", func(r *http.Request) {
			r.Header.Set(httpsignal.HeaderIdempotencyKey, `"`+baton.NewTokenID().String()+`"`)
		}, 400, "malformed-signal"},
		{"without Baton-Type", func(r *http.Request) { r.Header.Del(httpsignal.HeaderType) }, 400, "malformed-signal"},
		{"as GET", func(r *http.Request) { r.Method = http.MethodGet; r.Body, r.ContentLength = http.NoBody, 0 }, 405, "method-not-allowed"},
	}
	for _, c := range cases {
		a, err := r.send(ctx, sig, c.change)
		if err != nil {
			return fmt.Errorf("%s: %w", c.what, err)
		}
		if !a.is(c.status, c.problem) {
			return fmt.Errorf("a request %s answered %s, want %d (%s)", c.what, a, c.status, c.problem)
		}
		if c.status == 405 && !strings.Contains(a.allow, http.MethodPost) {
			return fmt.Errorf("a request %s answered without Allow: POST", c.what)
		}
	}
	if !r.live(ctx, sig) {
		return fmt.Errorf("a malformed request consumed the token")
	}
	a, err := r.send(ctx, sig, nil)
	if err != nil {
		return err
	}
	return applied(a, sig, 1)
}

func checkTooLarge(ctx context.Context, r *run) error {
	entity := r.entity("too-large")
	sig, err := r.child(ctx, entity)
	if err != nil {
		return err
	}
	big := make([]byte, baton.MaxPayloadBytes+1)
	for i := range big {
		big[i] = ' '
	}
	a, err := r.send(ctx, sig, func(r *http.Request) {
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(big)), int64(len(big))
		r.GetBody = nil
	})
	if err != nil {
		return err
	}
	return refused(ctx, r, a, sig, http.StatusRequestEntityTooLarge, "payload-too-large")
}

func checkRootClaimed(ctx context.Context, r *run) error {
	entity := r.entity("root")
	sig, err := r.root(ctx, entity, 10*time.Minute)
	if err != nil {
		return err
	}
	a, err := r.send(ctx, sig, nil)
	if err != nil {
		return err
	}
	if err := applied(a, sig, 1); err != nil {
		return err
	}
	if r.live(ctx, sig) {
		return fmt.Errorf("the root is still live after 200 applied")
	}
	return nil
}

func checkExpiredRoot(ctx context.Context, r *run) error {
	const ttl = 300 * time.Millisecond
	entity := r.entity("expired-root")
	sig, err := r.root(ctx, entity, ttl)
	if err != nil {
		return err
	}
	time.Sleep(2 * ttl)
	a, err := r.send(ctx, sig, nil)
	if err != nil {
		return err
	}
	if !a.is(http.StatusGone, "expired") {
		return fmt.Errorf("answered %s, want 410 (expired)", a)
	}
	return r.expectApplied(ctx, entity, 0)
}

func checkLostResponse(ctx context.Context, r *run) error {
	entity := r.entity("lost-response")
	sig, err := r.child(ctx, entity)
	if err != nil {
		return err
	}
	if err := r.hangUp(ctx, sig); err != nil {
		return err
	}
	a, err := r.settle(ctx, sig)
	if err != nil {
		return err
	}
	switch {
	case a.status == http.StatusOK && (a.outcome == httpsignal.OutcomeReplayed || a.outcome == httpsignal.OutcomeApplied):
	case a.is(http.StatusConflict, "already-processed"):
	default:
		return fmt.Errorf("the retry answered %s, want 200 replayed or 409 duplicate", a)
	}
	return r.expectApplied(ctx, entity, 1)
}

// hangUp sends sig's request and closes the connection before the answer,
// as a sender whose answer is lost sees it.
func (r *run) hangUp(ctx context.Context, sig baton.Signal) error {
	req, err := r.request(ctx, sig, nil)
	if err != nil {
		return err
	}
	u, _ := url.Parse(r.participant)
	if u.Scheme != "http" {
		return fmt.Errorf("the lost-response check needs a plain http participant URL")
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	conn, err := (&net.Dialer{Timeout: r.cfg.Timeout}).DialContext(ctx, "tcp", host)
	if err != nil {
		return fmt.Errorf("no answer: %w", err)
	}
	w := bufio.NewWriter(conn)
	err = req.Write(w)
	if err == nil {
		err = w.Flush()
	}
	time.Sleep(20 * time.Millisecond) // the request arrives, the answer does not
	_ = conn.Close()
	return err
}

// underFault sends a fresh signal while the token service shows f, wants
// it answered 503 unavailable, heals, and returns the signal and entity.
func underFault(ctx context.Context, r *run, f fault, name string, wantUnavailable bool) (baton.Signal, string, error) {
	entity := r.entity(name)
	sig, err := r.child(ctx, entity)
	if err != nil {
		return sig, entity, err
	}
	r.tokens.inject(f)
	a, err := r.send(ctx, sig, nil)
	r.tokens.inject(healthy)
	if err != nil {
		return sig, entity, err
	}
	if wantUnavailable && !a.is(http.StatusServiceUnavailable, "unavailable") {
		return sig, entity, fmt.Errorf("answered %s, want 503 (unavailable)", a)
	}
	if a.status == http.StatusServiceUnavailable && a.retryAfter == "" {
		return sig, entity, fmt.Errorf("answered 503 without Retry-After")
	}
	if a.status >= 400 && a.status < 500 {
		return sig, entity, fmt.Errorf("answered %s: a failure of the token service is no fault of the signal, so it must not be refused", a)
	}
	return sig, entity, nil
}

func checkTokenServiceDown(ctx context.Context, r *run) error {
	sig, entity, err := underFault(ctx, r, storeDown, "token-service-down", true)
	if err != nil {
		return err
	}
	if !r.live(ctx, sig) {
		return fmt.Errorf("the token was consumed during the outage")
	}
	a, err := r.settle(ctx, sig)
	if err != nil {
		return err
	}
	if err := applied(a, sig, 1); err != nil {
		return fmt.Errorf("after the outage: %w", err)
	}
	return r.expectApplied(ctx, entity, 1)
}

func checkKeyRefused(ctx context.Context, r *run) error {
	sig, entity, err := underFault(ctx, r, keyRefused, "key-refused", true)
	if err != nil {
		return err
	}
	a, err := r.settle(ctx, sig)
	if err != nil {
		return err
	}
	if err := applied(a, sig, 1); err != nil {
		return fmt.Errorf("after the key is accepted again: %w", err)
	}
	return r.expectApplied(ctx, entity, 1)
}

// settledOnce checks the answer to a retry of a signal whose activity may
// have been committed already: a reply with the count 1, or a duplicate.
func settledOnce(ctx context.Context, r *run, sig baton.Signal, entity string) error {
	a, err := r.settle(ctx, sig)
	if err != nil {
		return err
	}
	switch {
	case a.status == http.StatusOK:
		if n, err := a.count(); err != nil || n != 1 {
			return fmt.Errorf("the retry answered %s with the reply %q, want the count 1", a, clip(a.body))
		}
	case a.is(http.StatusConflict, "already-processed"):
	default:
		return fmt.Errorf("the retry answered %s, want 200 or 409 duplicate", a)
	}
	if r.live(ctx, sig) {
		return fmt.Errorf("the token is still live after the retry settled")
	}
	return r.expectApplied(ctx, entity, 1)
}

func checkTransitionFails(ctx context.Context, r *run) error {
	sig, entity, err := underFault(ctx, r, transitionsFail, "transition-fails", false)
	if err != nil {
		return err
	}
	return settledOnce(ctx, r, sig, entity)
}

func checkTransitionAnswerLost(ctx context.Context, r *run) error {
	sig, entity, err := underFault(ctx, r, transitionAnswersLost, "transition-answer-lost", false)
	if err != nil {
		return err
	}
	return settledOnce(ctx, r, sig, entity)
}
