package redis

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/internal/testenv/redisserver"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.RunTokenStore(t, storetest.TokenHarness{
		New: func(t *testing.T) store.TokenStore { return sharedStore(t) },
	})
}

// The machine's Redis keeps nothing on disk; the store must refuse it.
func TestRefusesUnsafeDurabilityByDefault(t *testing.T) {
	t.Parallel()
	url := testenv.Addr(t, testenv.Redis)
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	client := goredis.NewClient(opts)
	defer client.Close()
	settings := map[string]string{}
	durable := true
	for _, w := range requiredSettings {
		got, err := client.ConfigGet(t.Context(), w[0]).Result()
		settings[w[0]] = got[w[0]]
		durable = durable && err == nil && strings.EqualFold(got[w[0]], w[1])
	}

	s, err := Open(t.Context(), Config{URL: url})
	if durable {
		// Someone pointed BATON_TEST_REDIS at a durable server: then the
		// store must accept it.
		if err != nil {
			t.Fatalf("Open of a server with %v = %v, want success", settings, err)
		}
		s.Close()
		return
	}
	if !errors.Is(err, ErrUnsafeDurability) {
		t.Fatalf("Open of a server with %v = %v, want ErrUnsafeDurability", settings, err)
	}
	if !strings.Contains(err.Error(), "appendfsync always") || !strings.Contains(err.Error(), "AllowUnsafeDurability") {
		t.Errorf("refusal does not say how to fix it: %v", err)
	}

	var logged strings.Builder
	s, err = Open(t.Context(), Config{URL: url, AllowUnsafeDurability: true, Logger: newTextLogger(&logged)})
	if err != nil {
		t.Fatalf("Open with AllowUnsafeDurability = %v", err)
	}
	s.Close()
	if got := strings.Count(logged.String(), "level=WARN"); got != 1 {
		t.Errorf("Open with AllowUnsafeDurability logged %d warnings, want 1:\n%s", got, logged.String())
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	for _, c := range []Config{
		{},
		{URL: "redis://127.0.0.1:1/0", Options: &goredis.Options{}},
		{URL: "http://user:secret@127.0.0.1:1/0"},
		{URL: "redis://127.0.0.1:1/0", Prefix: "a{b}"},
		{URL: "redis://127.0.0.1:1/0", Prefix: "a*"},
		{URL: "redis://127.0.0.1:1/0", Prefix: "a b"},
		{URL: "redis://127.0.0.1:1/0", Prefix: strings.Repeat("p", 65)},
	} {
		_, err := Open(t.Context(), c)
		if err == nil {
			t.Errorf("Open(%+v) succeeded, want a config error", c)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("config error reveals the password: %v", err)
		}
	}
}

// Cluster mode reads only from masters: a replica may lag, and a stale
// read would report a live token as absent (or a live parent as gone).
func TestClusterOptionsReadFromMasters(t *testing.T) {
	t.Parallel()
	cc, err := Config{ClusterOptions: &goredis.ClusterOptions{
		Addrs:    []string{"127.0.0.1:1"},
		ReadOnly: true, RouteByLatency: true, RouteRandomly: true,
		MaxRetries: 3, MaxRedirects: 8,
	}}.resolve()
	if err != nil {
		t.Fatal(err)
	}
	o := cc.cluster
	if o.ReadOnly || o.RouteByLatency || o.RouteRandomly || o.MaxRetries != -1 || o.MaxRedirects != -1 {
		t.Errorf("resolved cluster options: ReadOnly %v, RouteByLatency %v, RouteRandomly %v, MaxRetries %d, MaxRedirects %d; want false, false, false, -1, -1",
			o.ReadOnly, o.RouteByLatency, o.RouteRandomly, o.MaxRetries, o.MaxRedirects)
	}
	from, err := clusterOptions(&goredis.Options{Addr: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if from.ReadOnly || from.RouteByLatency || from.RouteRandomly {
		t.Errorf("cluster options from a URL read from replicas: %+v", from)
	}
}

// The documented key layout: a conversation's keys share its hash tag.
func TestKeyLayout(t *testing.T) {
	t.Parallel()
	ctx, s := t.Context(), sharedStore(t)
	root := testRoot("orders")
	root.ExpiresAt = time.Now().Add(time.Hour)
	root = issued(ctx, t, s, root)
	child := testChild(root, "billing")
	if _, err := s.Transition(ctx, root.ID, []baton.Token{child}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		s.keys.token(child.Conversation, child.ID),
		s.keys.conversation(child.Conversation),
		s.keys.lookup(child.ID),
		s.keys.destination("billing"),
	}
	tag := "{" + child.Conversation.String() + "}"
	for _, k := range want[:2] {
		if !strings.Contains(k, tag) {
			t.Errorf("conversation key %q lacks the hash tag %s", k, tag)
		}
	}
	got := keysOf(t, s)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("keys after a transition:\n got %q\nwant %q", got, want)
	}
	fields, err := s.client.HGetAll(ctx, s.keys.token(child.Conversation, child.ID)).Result()
	if err != nil || fields["dest"] != "billing" || fields["cause"] != root.ID.String() {
		t.Errorf("token hash = %v, %v", fields, err)
	}
}

// Space is proportional to the tokens in flight: once every token is
// consumed or expired, no key of the store is left.
func TestNoKeysLeftWhenQuiet(t *testing.T) {
	t.Parallel()
	ctx, s := t.Context(), sharedStore(t)
	root, _ := issueRootAndExpired(ctx, t, s)
	children := []baton.Token{testChild(root, "billing"), testChild(root, "shipping")}
	if _, err := s.Transition(ctx, root.ID, children); err != nil {
		t.Fatal(err)
	}
	for _, c := range children {
		mustConsume(ctx, t, s, c.ID)
	}
	if n, err := s.ExpireRoots(ctx, time.Now(), 10); err != nil || n != 1 {
		t.Fatalf("ExpireRoots = %d, %v; want 1", n, err)
	}
	requireNoKeys(t, keysOf(t, s))
}

func TestTimesMicrosecondsUTC(t *testing.T) {
	t.Parallel()
	ctx, s := t.Context(), sharedStore(t)
	root := testRoot("orders")
	paris := time.FixedZone("CET", 3600)
	root.CreatedAt = time.Date(2030, 5, 6, 7, 8, 9, 123456789, paris)
	root.ExpiresAt = time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC) // before the epoch
	root = issued(ctx, t, s, root)
	got, err := s.Get(ctx, root.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := root.CreatedAt.Truncate(time.Microsecond).UTC(); got.CreatedAt != want {
		t.Errorf("CreatedAt = %v, want %v", got.CreatedAt, want)
	}
	if want := root.ExpiresAt.Truncate(time.Microsecond); got.ExpiresAt != want {
		t.Errorf("ExpiresAt = %v, want %v", got.ExpiresAt, want)
	}
	if got.CreatedAt.Location() != time.UTC || got.ExpiresAt.Location() != time.UTC {
		t.Errorf("times not in UTC: %v, %v", got.CreatedAt.Location(), got.ExpiresAt.Location())
	}
}

// A destination name may contain anything a name allows, braces and colons
// included; it must not reach another destination's index.
func TestOddDestinationNames(t *testing.T) {
	t.Parallel()
	ctx, s := t.Context(), sharedStore(t)
	names := []string{"a", "a:b", "{a}", "a}", "dest:a", "ü*?[x]"}
	for _, n := range names {
		issued(ctx, t, s, testRoot(n))
	}
	for _, n := range names {
		got, err := s.ListByDestination(ctx, n, store.Page{})
		if err != nil || len(got) != 1 || got[0].Destination != n {
			t.Errorf("ListByDestination(%q) = %v, %v; want its one token", n, got, err)
		}
	}
}

func TestClosed(t *testing.T) {
	t.Parallel()
	ctx, s := t.Context(), sharedStore(t)
	s.Close()
	root := testRoot("orders")
	if _, err := s.Issue(ctx, rootTemplate(root)); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Issue after Close = %v, want store.ErrClosed", err)
	}
	if _, err := s.Transition(ctx, root.ID, nil); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Transition after Close = %v, want store.ErrClosed", err)
	}
	if _, err := s.Get(ctx, root.ID); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Get after Close = %v, want store.ErrClosed", err)
	}
}

// A refused connection proves that nothing was sent: not applied.
func TestDialFailureIsNotApplied(t *testing.T) {
	t.Parallel()
	port := redisserver.FreePort(t) // closed again: connections are refused
	s := newTokenStore("baton", &goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1, DialerRetries: 1}, newTextLogger(io.Discard))
	defer s.Close()
	root := testRoot("orders")
	_, err := s.Issue(t.Context(), rootTemplate(root))
	if !errors.Is(err, store.ErrNotApplied) {
		t.Errorf("Issue with the connection refused = %v, want store.ErrNotApplied", err)
	}
	if _, err := s.Transition(t.Context(), root.ID, nil); !errors.Is(err, store.ErrNotApplied) {
		t.Errorf("Transition with the connection refused = %v, want store.ErrNotApplied", err)
	}
}

// A connection lost after the command went out leaves the outcome
// unknown: the error must not claim "not applied", and the client must
// not retry the command.
func TestLostReplyIsOutcomeUnknown(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	var commands []string
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			// Read one command, then drop the connection without a reply.
			line, _ := bufio.NewReader(conn).ReadString('\n')
			mu.Lock()
			commands = append(commands, line)
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
			conn.Close()
		}
	}()
	s := newTokenStore("baton", &goredis.Options{
		Addr: l.Addr().String(), Protocol: 2, DisableIdentity: true, MaxRetries: -1,
	}, newTextLogger(io.Discard))
	defer s.Close()

	root := testRoot("orders")
	consumed, err := s.Transition(t.Context(), root.ID, []baton.Token{testChild(root, "billing")})
	if err == nil || store.NotApplied(err) {
		t.Fatalf("Transition whose reply was lost = %v, %v; want an outcome-unknown error", consumed, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(commands) != 1 {
		t.Errorf("the server received %d connections' commands, want 1 (no client retry): %q", len(commands), commands)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	dialRefused := &dialError{err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}
	cases := []struct {
		err  error
		want error // nil: outcome unknown
	}{
		{redisError("BATON_EXISTS 0123"), store.ErrExists},
		{redisError("READONLY You can't write against a read only replica."), store.ErrNotApplied},
		{redisError("OOM command not allowed when used memory > 'maxmemory'."), store.ErrNotApplied},
		{redisError("LOADING Redis is loading the dataset in memory"), store.ErrNotApplied},
		{redisError("BUSY Redis is busy running a script."), store.ErrNotApplied},
		{redisError("ERR Error running script (call to f_x): @user_script:1: WRONGTYPE"), nil},
		{redisError("BUSYKEY Target key name already exists."), nil},
		{fmt.Errorf("wrapped: %w", dialRefused), store.ErrNotApplied},
		{goredis.ErrPoolTimeout, store.ErrNotApplied},
		{goredis.ErrClosed, store.ErrClosed},
		{io.EOF, nil},
		{&net.OpError{Op: "read", Err: errors.New("connection reset by peer")}, nil},
		{context.DeadlineExceeded, nil},
	}
	for _, c := range cases {
		got := classify("op", c.err)
		if c.want == nil {
			if store.NotApplied(got) {
				t.Errorf("classify(%v) = %v, want outcome unknown", c.err, got)
			}
			continue
		}
		if !errors.Is(got, c.want) {
			t.Errorf("classify(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// redisError is an error reply as the client returns it: a goredis.Error.
type redisError string

func (e redisError) Error() string { return string(e) }
func (redisError) RedisError()     {}

// The transition is one atomic step: concurrent transitions of one token
// consume it exactly once, and an observer never sees both the parent and
// a child live, or neither.
func TestTransitionAtomicUnderConcurrentReads(t *testing.T) {
	t.Parallel()
	ctx, s := t.Context(), sharedStore(t)
	for range 20 {
		root := testRoot("orders")
		root = issued(ctx, t, s, root)
		children := []baton.Token{testChild(root, "billing"), testChild(root, "shipping")}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for range 4 {
			wg.Go(func() {
				consumed, err := s.Transition(ctx, root.ID, children)
				if err != nil && !errors.Is(err, store.ErrExists) {
					t.Errorf("Transition: %v", err)
				}
				if consumed {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			})
		}
		wg.Go(func() {
			for range 20 {
				got, err := s.ListByConversation(ctx, root.Conversation, store.Page{})
				if err != nil {
					t.Errorf("ListByConversation: %v", err)
					return
				}
				if len(got) != 1 && len(got) != 2 {
					t.Errorf("observed %d live tokens in the conversation, want the parent alone or both children", len(got))
				}
			}
		})
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d concurrent transitions consumed the token, want exactly 1", wins)
		}
	}
}

func newTextLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

func testRoot(destination string) baton.Token {
	return baton.Token{
		ID:           baton.NewTokenID(),
		Conversation: baton.NewTokenID(),
		Destination:  destination,
		Type:         "test",
		Digest:       baton.DigestOf([]byte(destination)),
		CreatedAt:    time.Now().UTC().Truncate(time.Microsecond),
	}
}

// rootTemplate returns tok as Issue takes it: without an id.
func rootTemplate(tok baton.Token) baton.Token {
	tok.ID = baton.TokenID{}
	return tok
}

func testChild(parent baton.Token, destination string) baton.Token {
	child := testRoot(destination)
	child.Conversation = parent.Conversation
	child.Causation = parent.ID
	return child
}
