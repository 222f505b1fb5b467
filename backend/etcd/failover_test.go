package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/etcd"
	"github.com/batonhq/baton/internal/testenv/etcdcluster"
	"github.com/batonhq/baton/store"
)

// TestFailover runs a storm of transitions against a three-member cluster
// of processes while a chaos loop kills the leader with SIGKILL (and starts
// it again) and cuts members, the leader among them, off from the others.
// Each worker walks a chain of its own: a root, then transitions that each
// consume the chain's token and create the next, retrying a call whose
// outcome is unknown and then reading which way it went. Afterwards, with
// the cluster whole again, exactly the last token of every chain is live:
// no acknowledged write lost (a created token gone, a transition that
// finds its live token absent), no consumed token back, no transition
// applied in part.
func TestFailover(t *testing.T) {
	t.Parallel()
	cluster := etcdcluster.Start(t, 3)
	s := openOn(t, cluster)
	duration := 15 * time.Second
	if testing.Short() {
		duration = 5 * time.Second
	}
	ctx, stop := context.WithTimeout(t.Context(), duration)
	defer stop()

	var chaos etcdcluster.ChaosLog
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		if err := cluster.Chaos(ctx, &chaos); err != nil {
			t.Error(err)
		}
	}()

	const workers = 8
	chains := make([]*chain, workers)
	var wg sync.WaitGroup
	for i := range chains {
		chains[i] = &chain{}
		wg.Go(func() { chains[i].walk(ctx, t, s) })
	}
	wg.Wait()
	<-chaosDone
	for i := range cluster.Size() {
		if err := cluster.Heal(i); err != nil {
			t.Fatal(err)
		}
	}
	if cluster.Leader(30*time.Second) < 0 {
		t.Fatal("no leader after the chaos")
	}

	check, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	transitions, unknown := 0, 0
	for i, c := range chains {
		transitions += len(c.tokens) - 1
		unknown += c.unknown
		for k, tok := range c.tokens {
			_, err := getSettled(check, s, tok)
			last := k == len(c.tokens)-1
			switch {
			case last && err != nil:
				t.Errorf("chain %d: its last token %s (step %d) is not live: %v (an acknowledged write lost)", i, tok, k, err)
			case !last && !errors.Is(err, store.ErrNotFound):
				t.Errorf("chain %d: token %s (step %d of %d) was consumed but reads %v (a consumed token back)", i, tok, k, len(c.tokens)-1, err)
			}
		}
		for _, v := range c.violations {
			t.Errorf("chain %d: %s", i, v)
		}
	}
	t.Logf("%d chains, %d transitions applied, %d calls with an unknown outcome; chaos: %s", len(chains), transitions, unknown, chaos.String())
	if transitions < 50 {
		t.Errorf("only %d transitions in %s: the storm proves little", transitions, duration)
	}
	if chaos.Kills.Load() == 0 || chaos.Cuts.Load() == 0 {
		t.Errorf("the chaos did not happen: %s", chaos.String())
	}
}

// chain is one worker's walk: tokens[k+1] was created by the transition
// that consumed tokens[k].
type chain struct {
	tokens     []baton.TokenID
	unknown    int
	violations []string
}

const callTimeout = 2 * time.Second

func (c *chain) walk(ctx context.Context, t *testing.T, s *etcd.Store) {
	var root baton.Token
	for ctx.Err() == nil {
		call, cancel := context.WithTimeout(ctx, callTimeout)
		var err error
		root, err = s.Issue(call, baton.Token{Destination: "storm", Type: "root", Digest: baton.DigestOf(nil), CreatedAt: time.Now()})
		cancel()
		if err == nil {
			break
		}
		c.unknown++ // a root the lost answer created stays unused
		time.Sleep(20 * time.Millisecond)
	}
	if root.ID.IsZero() {
		return
	}
	c.tokens = append(c.tokens, root.ID)
	for ctx.Err() == nil {
		parent := c.tokens[len(c.tokens)-1]
		child := baton.Token{ID: baton.NewTokenID(), Conversation: root.Conversation, Causation: parent, Destination: "storm",
			Type: "step", Digest: baton.DigestOf(nil), CreatedAt: time.Now()}
		applied, known := c.step(ctx, s, parent, child)
		if !known {
			return // the storm ended while the outcome was unknown: settled below
		}
		if applied {
			c.tokens = append(c.tokens, child.ID)
		}
	}
}

// step runs one transition until its outcome is known: a call that answers
// says so; after one that did not, the child's presence does.
func (c *chain) step(ctx context.Context, s *etcd.Store, parent baton.TokenID, child baton.Token) (applied, known bool) {
	uncertain := false
	for {
		call, cancel := context.WithTimeout(context.Background(), callTimeout)
		consumed, err := s.Transition(call, parent, []baton.Token{child})
		cancel()
		switch {
		case err == nil && consumed:
			return true, true
		case err == nil && !uncertain:
			// Nobody else consumes this chain's tokens, and no earlier
			// attempt of this step may have applied.
			c.violations = append(c.violations, fmt.Sprintf("transition of live token %s found it absent (an acknowledged write lost)", parent))
			return false, true
		case err == nil:
			// An earlier attempt applied, or the token is gone: the child says which.
			return c.settle(ctx, s, parent, child)
		case errors.Is(err, store.ErrNotApplied):
		default:
			uncertain = true
			c.unknown++
		}
		if ctx.Err() != nil && !uncertain {
			return false, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settle reads which way an uncertain transition went, and that it went
// one way whole: the parent gone with the child created, or neither.
func (c *chain) settle(ctx context.Context, s *etcd.Store, parent baton.TokenID, child baton.Token) (applied, known bool) {
	check, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, childErr := getSettled(check, s, child.ID)
	_, parentErr := getSettled(check, s, parent)
	switch {
	case childErr == nil && errors.Is(parentErr, store.ErrNotFound):
		return true, true
	case errors.Is(childErr, store.ErrNotFound) && !errors.Is(parentErr, store.ErrNotFound):
		c.violations = append(c.violations, fmt.Sprintf("transition of %s answered false, yet the token is live", parent))
		return false, true
	default:
		c.violations = append(c.violations, fmt.Sprintf("transition of %s applied in part: parent %v, child %v", parent, parentErr, childErr))
		return false, true
	}
}

// getSettled reads a token, retrying while the cluster does not answer.
func getSettled(ctx context.Context, s *etcd.Store, id baton.TokenID) (baton.Token, error) {
	for {
		call, cancel := context.WithTimeout(ctx, callTimeout)
		tok, err := s.Get(call, id)
		cancel()
		if err == nil || errors.Is(err, store.ErrNotFound) || ctx.Err() != nil {
			return tok, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
