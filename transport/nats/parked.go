package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batonhq/baton/transport"
)

var _ transport.ParkedStore = (*Transport)(nil)

// ListParked implements transport.ParkedStore. It reads the stream's
// parked subjects message by message (a direct get of the next message of
// a subject), so it needs no consumer: the stream is a work queue, where
// a consumer would take the messages it reads.
func (t *Transport) ListParked(ctx context.Context, destination string, limit int) ([]transport.ParkedSignal, error) {
	stream, err := t.js.Stream(ctx, t.cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("nats transport: list parked: %w", err)
	}
	subject := t.cfg.Prefix + ".parked.>"
	if destination != "" {
		subject = t.parkedSubject(destination)
	}
	var out []transport.ParkedSignal
	for seq := uint64(1); len(out) < limit; {
		msg, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("nats transport: list parked: %w", err)
		}
		p, err := t.parkedOf(msg)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
		seq = msg.Sequence + 1
	}
	return out, nil
}

// GetParked implements transport.ParkedStore; the id is the stream
// sequence of the parked copy.
func (t *Transport) GetParked(ctx context.Context, id string) (transport.ParkedSignal, error) {
	msg, err := t.parkedMsg(ctx, id)
	if err != nil {
		return transport.ParkedSignal{}, err
	}
	return t.parkedOf(msg)
}

// Replay implements transport.ParkedStore. The copy is published under a
// message id of its own (the signal's id is in JetStream's duplicate
// window for a while after its first publish), the same for every replay
// of one parked copy, so two replays close together publish it once.
func (t *Transport) Replay(ctx context.Context, id string) error {
	msg, err := t.parkedMsg(ctx, id)
	if err != nil {
		return err
	}
	p, err := t.parkedOf(msg)
	if err != nil {
		return err
	}
	out, err := t.message(p.Signal)
	if err != nil {
		return err
	}
	if _, err := t.js.PublishMsg(ctx, out, jetstream.WithMsgID("replay-"+id), jetstream.WithExpectStream(t.cfg.Stream)); err != nil {
		return fmt.Errorf("nats transport: replay parked %s: %w", id, err)
	}
	return t.RemoveParked(ctx, id)
}

// RemoveParked implements transport.ParkedStore.
func (t *Transport) RemoveParked(ctx context.Context, id string) error {
	seq, err := parkedSeq(id)
	if err != nil {
		return err
	}
	stream, err := t.js.Stream(ctx, t.cfg.Stream)
	if err != nil {
		return fmt.Errorf("nats transport: remove parked %s: %w", id, err)
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) || strings.Contains(err.Error(), "no message found") {
			return fmt.Errorf("%w: %s", transport.ErrNotParked, id)
		}
		return fmt.Errorf("nats transport: remove parked %s: %w", id, err)
	}
	return nil
}

func parkedSeq(id string) (uint64, error) {
	seq, err := strconv.ParseUint(id, 10, 64)
	if err != nil || seq == 0 {
		return 0, fmt.Errorf("%w: %q is not a stream sequence", transport.ErrNotParked, id)
	}
	return seq, nil
}

// parkedMsg reads the parked copy with sequence id.
func (t *Transport) parkedMsg(ctx context.Context, id string) (*jetstream.RawStreamMsg, error) {
	seq, err := parkedSeq(id)
	if err != nil {
		return nil, err
	}
	stream, err := t.js.Stream(ctx, t.cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("nats transport: get parked %s: %w", id, err)
	}
	msg, err := stream.GetMsg(ctx, seq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, fmt.Errorf("%w: %s", transport.ErrNotParked, id)
	case err != nil:
		return nil, fmt.Errorf("nats transport: get parked %s: %w", id, err)
	case !strings.HasPrefix(msg.Subject, t.cfg.Prefix+".parked."):
		return nil, fmt.Errorf("%w: message %s is not parked", transport.ErrNotParked, id)
	}
	return msg, nil
}

// parkedOf decodes a parked copy.
func (t *Transport) parkedOf(msg *jetstream.RawStreamMsg) (transport.ParkedSignal, error) {
	id := strconv.FormatUint(msg.Sequence, 10)
	p := transport.ParkedSignal{ID: id, ParkedAt: msg.Time, Reason: msg.Header.Get(HeaderParkReason)}
	p.Attempts, _ = strconv.Atoi(msg.Header.Get(HeaderParkAttempt))
	token := strings.TrimPrefix(msg.Subject, t.cfg.Prefix+".parked.")
	destination, derr := destinationOf(token)
	sig, err := decodeSignal(nats.Header(msg.Header), destination, msg.Data)
	if derr != nil {
		err = derr
	}
	if err != nil {
		// Parked because it could not be decoded, or its headers were
		// dropped: shown with what there is, but it cannot be replayed.
		p.Reason = strings.TrimSpace(p.Reason + " (not a readable signal: " + err.Error() + ")")
		return p, nil
	}
	p.Signal = sig
	return p, nil
}
