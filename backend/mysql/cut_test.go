package mysql

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// cuttingProxy forwards connections to a server and, once armed, passes
// the next COMMIT to the server but drops the connection before the
// server's answer reaches the client: the commit happened, its
// acknowledgement was lost.
type cuttingProxy struct {
	ln    net.Listener
	addr  string
	armed atomic.Bool
	cut   atomic.Int64
	wg    sync.WaitGroup
	// refuse, when armed, passes COMMIT on and answers the client with
	// this server error in place of the server's OK.
	refuse atomic.Pointer[mysqlError]
}

type mysqlError struct {
	match    string // the statement whose answer is replaced starts so
	number   uint16
	message  string
	replaced atomic.Bool // set once the answer was replaced
}

func newCuttingProxy(t *testing.T, target string) *cuttingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttingProxy{ln: ln, addr: ln.Addr().String()}
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	p.wg.Go(func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			p.wg.Go(func() { p.pipe(client, server) })
		}
	})
	return p
}

func (p *cuttingProxy) pipe(client, server net.Conn) {
	var answering sync.WaitGroup
	var replace atomic.Pointer[mysqlError]
	answering.Go(func() {
		defer client.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 {
				out := buf[:n]
				if e := replace.Swap(nil); e != nil && n >= 5 && out[4] == 0x00 { // an OK packet
					// An ERR packet with the OK's sequence number.
					payload := append([]byte{0xff, byte(e.number), byte(e.number >> 8), '#'}, "HY000"+e.message...)
					out = append([]byte{byte(len(payload)), byte(len(payload) >> 8), byte(len(payload) >> 16), out[3]}, payload...)
					e.replaced.Store(true)
				}
				if _, err := client.Write(out); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	buf := make([]byte, 64<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			if e := p.refuse.Load(); e != nil && bytes.Contains(buf[:n], []byte("\x03"+e.match)) && p.refuse.CompareAndSwap(e, nil) {
				replace.Store(e)
			}
			_, werr := server.Write(buf[:n])
			// COM_QUERY (3) "COMMIT" right after a packet header.
			if werr == nil && p.armed.Load() && bytes.Contains(buf[:n], []byte("\x03COMMIT")) && p.armed.CompareAndSwap(true, false) {
				p.cut.Add(1)
				client.Close() // the answer is lost
				time.Sleep(200 * time.Millisecond)
				server.Close()
				break
			}
			if werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	server.Close()
	client.Close()
	answering.Wait()
}

// TestCommitWhoseAnswerIsLostIsOutcomeUnknown: a connection cut after
// COMMIT reached the server must come back as an error that is not
// store.ErrNotApplied (docs/protocol.md 4.3): the write did happen.
func TestCommitWhoseAnswerIsLostIsOutcomeUnknown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	addr := strings.TrimSuffix(strings.SplitN(strings.SplitN(dsn(t), "tcp(", 2)[1], ")", 2)[0], ")")
	proxy := newCuttingProxy(t, addr)
	s := openPrefix(t, strings.Replace(dsn(t), "tcp("+addr+")", "tcp("+proxy.addr+")", 1), uniquePrefix())
	root := func() baton.Token {
		tok, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	entity := func(key string) store.Entity {
		return store.Entity{Key: key, State: []byte("s"), Outbox: []store.OutboxEntry{{Token: baton.NewTokenID(), CreatedAt: time.Now()}}}
	}
	// committed reports whether the entity key was written (version 1).
	committed := func(key string) func() bool {
		return func() bool {
			e, err := s.Load(ctx, key)
			return err == nil && e.Version == 1
		}
	}
	for _, c := range []struct {
		name string
		call func() error
		// applied checks that the call took effect.
		applied func() bool
	}{
		{"Transition", func() error { tok := root(); _, err := s.Transition(ctx, tok.ID, nil); return err }, nil},
		{"CommitTransition", func() error { _, _, err := s.CommitTransition(ctx, entity("fast"), root().ID, nil); return err }, committed("fast")},
		{"Commit", func() error { _, err := s.Commit(ctx, entity("plain")); return err }, committed("plain")},
		{"CommitBatch", func() error {
			res, err := s.CommitBatch(ctx, []store.Entity{entity("b1"), entity("b2"), entity("b3")})
			if err == nil && errors.Join(res...) != nil {
				t.Errorf("CommitBatch results %v", res)
			}
			return err
		}, committed("b3")},
		{"CommitTransitions", func() error {
			res, err := s.CommitTransitions(ctx, []store.Transition{{Entity: entity("t1"), Token: root().ID}, {Entity: entity("t2"), Token: root().ID}})
			if err == nil && errors.Join(res...) != nil {
				t.Errorf("CommitTransitions results %v", res)
			}
			return err
		}, committed("t2")},
	} {
		before := proxy.cut.Load()
		proxy.armed.Store(true)
		err := c.call()
		proxy.armed.Store(false)
		if proxy.cut.Load() == before {
			t.Errorf("%s: no COMMIT was cut (err %v)", c.name, err)
			continue
		}
		switch {
		case err == nil:
			t.Errorf("%s over a connection cut after COMMIT: no error", c.name)
		case errors.Is(err, store.ErrNotApplied):
			t.Errorf("%s over a connection cut after COMMIT = %v, which says not applied", c.name, err)
		}
		if c.applied != nil {
			time.Sleep(300 * time.Millisecond) // the proxy lets the server finish
			if !c.applied() {
				t.Logf("%s: the server did not commit (the cut came first)", c.name)
			}
		}
	}
}

// TestCommitAnsweredWithAnErrorIsOutcomeUnknown: a server may answer
// COMMIT with an error although the transaction committed (a session
// killed while it waits for a semi-synchronous replica's acknowledgement,
// or shut down then). Only the errors that say the transaction was rolled
// back (a deadlock, a lock wait timeout) mean not applied; any other must
// not come back as store.ErrNotApplied.
func TestCommitAnsweredWithAnErrorIsOutcomeUnknown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	addr := strings.TrimSuffix(strings.SplitN(strings.SplitN(dsn(t), "tcp(", 2)[1], ")", 2)[0], ")")
	proxy := newCuttingProxy(t, addr)
	s := openPrefix(t, strings.Replace(dsn(t), "tcp("+addr+")", "tcp("+proxy.addr+")", 1), uniquePrefix())
	tok, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	refusal := &mysqlError{match: "COMMIT", number: 1317, message: "Query execution was interrupted"}
	proxy.refuse.Store(refusal)
	consumed, err := s.Transition(ctx, tok.ID, nil)
	if !refusal.replaced.Load() {
		t.Fatalf("the COMMIT's answer was not replaced (Transition = %v, %v)", consumed, err)
	}
	_, gerr := s.Get(ctx, tok.ID)
	if !errors.Is(gerr, store.ErrNotFound) {
		t.Fatalf("the server did not commit the transition: Get = %v", gerr)
	}
	if err == nil || errors.Is(err, store.ErrNotApplied) {
		t.Fatalf("Transition whose COMMIT was committed but answered with error 1317 = %v, %v; want an outcome unknown", consumed, err)
	}
}

// TestStatementAnsweredWithAnInterruptionIsOutcomeUnknown: a statement
// outside a transaction commits on its own, so an answer that says it was
// interrupted (killed, or the server shutting down) may come after its
// commit: Issue must not report it as store.ErrNotApplied.
func TestStatementAnsweredWithAnInterruptionIsOutcomeUnknown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	addr := strings.TrimSuffix(strings.SplitN(strings.SplitN(dsn(t), "tcp(", 2)[1], ")", 2)[0], ")")
	proxy := newCuttingProxy(t, addr)
	s := openPrefix(t, strings.Replace(dsn(t), "tcp("+addr+")", "tcp("+proxy.addr+")", 1), uniquePrefix())
	for _, number := range []uint16{1317, 1927, 1053} {
		refusal := &mysqlError{match: "INSERT INTO", number: number, message: "interrupted"}
		proxy.refuse.Store(refusal)
		_, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
		if !refusal.replaced.Load() {
			t.Fatalf("the INSERT's answer was not replaced (Issue = %v)", err)
		}
		if err == nil || errors.Is(err, store.ErrNotApplied) {
			t.Errorf("Issue whose INSERT committed but was answered with error %d = %v; want an outcome unknown", number, err)
		}
	}
	toks, err := s.ListByDestination(ctx, "billing", store.Page{})
	if err != nil || len(toks) != 3 {
		t.Errorf("%d roots live after three inserts answered with errors, %v; want 3 (they committed)", len(toks), err)
	}
}

// TestRefusedConnectionIsNotApplied: a call that could not get a
// connection (the server unreachable, or a new connection refused by the
// store's checks) sent nothing: store.ErrNotApplied, for the statements
// outside a transaction (Issue) as for the transactions (Transition).
func TestRefusedConnectionIsNotApplied(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	addr := strings.TrimSuffix(strings.SplitN(strings.SplitN(dsn(t), "tcp(", 2)[1], ")", 2)[0], ")")
	proxy := newCuttingProxy(t, addr)
	s := openPrefix(t, strings.Replace(dsn(t), "tcp("+addr+")", "tcp("+proxy.addr+")", 1), uniquePrefix())
	s.DB().SetMaxIdleConns(0) // every call opens a connection
	proxy.ln.Close()          // and none can be opened
	_, err := s.Issue(ctx, baton.Token{Destination: "billing", Type: "charge", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
	if !errors.Is(err, store.ErrNotApplied) {
		t.Errorf("Issue without a reachable server = %v, want ErrNotApplied", err)
	}
	if _, err := s.Transition(ctx, baton.NewTokenID(), nil); !errors.Is(err, store.ErrNotApplied) {
		t.Errorf("Transition without a reachable server = %v, want ErrNotApplied", err)
	}
	if _, err := s.ExpireRoots(ctx, time.Now(), 10); !errors.Is(err, store.ErrNotApplied) {
		t.Errorf("ExpireRoots without a reachable server = %v, want ErrNotApplied", err)
	}
}
