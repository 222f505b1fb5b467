package nats

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// maxReasonBytes bounds the park reason header.
const maxReasonBytes = 1024

// HeaderParkDropped replaces the original headers and body of a parked
// message that would not fit in the stream with the reason added.
const HeaderParkDropped = "Baton-Park-Dropped"

// park stores a copy of msg with reason under <prefix>.parked.<destination>
// and, once JetStream confirms the copy, terminates msg so it is not
// redelivered. The copy's message id is derived from msg's stream
// sequence, so parking the same message twice within the duplicate window
// (a lost terminate, a retry) stores one copy.
func (t *Transport) park(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, destination, reason string) error {
	parked := nats.NewMsg(t.parkedSubject(destination))
	size := 0
	for key, values := range msg.Headers() {
		// Nats-* headers steer JetStream (message id, expectations); the
		// copy must not inherit them.
		if strings.HasPrefix(key, "Nats-") {
			continue
		}
		parked.Header[key] = append([]string(nil), values...)
		for _, v := range values {
			size += len(key) + len(v) + 4
		}
	}
	parked.Data = msg.Data()
	if size+len(parked.Data)+maxReasonBytes+256 > maxMsgSize {
		// Only a message that did not come from this transport can be
		// this large; keep the reason so the operator sees something.
		dropped := fmt.Sprintf("%d header bytes and %d body bytes", size, len(parked.Data))
		parked.Header = nats.Header{HeaderParkDropped: {dropped}}
		parked.Data = nil
	}
	parked.Header.Set(HeaderParkReason, cleanReason(reason))
	parked.Header.Set(HeaderParkAttempt, strconv.FormatUint(meta.NumDelivered, 10))

	msgID := "parked-" + strconv.FormatUint(meta.Sequence.Stream, 10)
	if _, err := t.js.PublishMsg(ctx, parked, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(t.cfg.Stream)); err != nil {
		return fmt.Errorf("nats transport: park message %d of %q: %w", meta.Sequence.Stream, destination, err)
	}
	// Plain Term: servers before 2.10 ignore a terminate with a reason.
	if err := msg.Term(); err != nil {
		return fmt.Errorf("nats transport: terminate parked message %d of %q: %w", meta.Sequence.Stream, destination, err)
	}
	return nil
}

// cleanReason makes reason a safe, bounded header value: line breaks and
// other control characters become spaces.
func cleanReason(reason string) string {
	reason = strings.ToValidUTF8(reason, "?")
	reason = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, reason)
	if len(reason) > maxReasonBytes {
		cut := maxReasonBytes
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	if strings.TrimSpace(reason) == "" {
		reason = "no reason given"
	}
	return reason
}
