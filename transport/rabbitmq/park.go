package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/batonhq/baton"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Delay buckets are powers of two of a millisecond, from minDelay to
// maxDelay. A Nack's delay is rounded up to the next bucket, so the
// signal comes back no sooner than asked and at most about twice as late.
const (
	minDelay = 8 * time.Millisecond
	maxDelay = (1 << 25) * time.Millisecond // about 9h19m
)

// ErrDelayTooLong is returned by Nack for a delay over the longest delay
// bucket (about 9h19m). The delivery is left as it was.
var ErrDelayTooLong = errors.New("rabbitmq transport: nack delay longer than the longest delay bucket")

// delayBucket returns the shortest bucket not shorter than delay.
func delayBucket(delay time.Duration) (time.Duration, error) {
	if delay > maxDelay {
		return 0, fmt.Errorf("%w (%v > %v)", ErrDelayTooLong, delay, maxDelay)
	}
	bucket := minDelay
	for bucket < delay {
		bucket *= 2
	}
	return bucket, nil
}

// publishDelayed publishes a copy of sig into the delay bucket for delay,
// from where the broker dead-letters it back into the destination's queue
// when the bucket's TTL runs out. The copy records how many deliveries the
// signal had (HeaderAttempts), since its queue counts the copy's from zero.
func (t *Transport) publishDelayed(ctx context.Context, sig baton.Signal, attempts int, delay time.Duration) error {
	bucket, err := delayBucket(delay)
	if err != nil {
		return err
	}
	h, err := encodeHeaders(sig)
	if err != nil {
		return err
	}
	h[HeaderAttempts] = int64(attempts)
	ctx, cancel := context.WithTimeout(ctx, t.cfg.PublishTimeout)
	defer cancel()
	if err := t.declareDelay(ctx, bucket); err != nil {
		return err
	}
	name := t.delayName(bucket)
	msg := amqp.Publishing{
		Headers:      h,
		Body:         sig.Payload,
		DeliveryMode: amqp.Persistent,
		MessageId:    sig.ID.String(),
		AppId:        "baton",
	}
	// The routing key is not used by the fanout exchange; it is the key
	// the broker dead-letters the message with when its time is up.
	return t.publish(ctx, name, t.signalQueue(sig.Destination), msg, "delay:"+name)
}

// maxReasonBytes bounds the park reason header.
const maxReasonBytes = 1024

// parkCopy publishes a copy of msg, with reason and attempt, to
// destination's parked queue and waits for the broker's confirm. The copy
// keeps msg's headers and body, so an operator sees what arrived, except
// headers that would steer where the copy goes (CC, BCC) or that the
// broker manages (x-delivery-count, x-acquired-count).
func (t *Transport) parkCopy(ctx context.Context, msg *amqp.Delivery, destination, reason string, attempt int) error {
	h := amqp.Table{}
	for key, value := range msg.Headers {
		switch key {
		case "CC", "BCC", headerDeliveryCount, headerAcquiredCount:
			continue
		}
		h[key] = value
	}
	h[HeaderParkReason] = cleanReason(reason)
	h[HeaderParkAttempt] = int64(attempt)
	ctx, cancel := context.WithTimeout(ctx, t.cfg.PublishTimeout)
	defer cancel()
	if err := t.declareDestination(ctx, destination); err != nil {
		return err
	}
	parked := amqp.Publishing{
		Headers:         h,
		Body:            msg.Body,
		DeliveryMode:    amqp.Persistent,
		ContentType:     msg.ContentType,
		ContentEncoding: msg.ContentEncoding,
		MessageId:       msg.MessageId,
		AppId:           msg.AppId,
		Timestamp:       time.Now(), // when it was parked
	}
	if err := parked.Headers.Validate(); err != nil {
		// A header the library decoded but will not encode: keep what
		// matters to an operator.
		parked.Headers = amqp.Table{
			HeaderParkReason:  h[HeaderParkReason],
			HeaderParkAttempt: h[HeaderParkAttempt],
			HeaderParkDropped: "headers that could not be copied: " + err.Error(),
		}
	}
	if err := t.publish(ctx, "", t.parkedQueue(destination), parked, "dest:"+destination); err != nil {
		return fmt.Errorf("rabbitmq transport: park a message of %q: %w", destination, err)
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
