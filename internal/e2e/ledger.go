package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/store"
)

// Snapshot is what the stores hold: the input of Check.
type Snapshot struct {
	// Entities holds every entity of KeysOf(conversations) that was ever
	// committed, by key.
	Entities map[string]store.Entity
	// Tokens are the live tokens found (ListByDestination for every
	// destination, plus whatever a backend lists beyond that).
	Tokens []baton.Token
	// StaleKeys are the keys that EntityStore.Stale returned for a cut-off
	// far in the future: every entity that still has an outbox entry.
	StaleKeys []string
	// ExtraKeys are entity keys a store holds that the workload never
	// touches, for stores that can list their keys.
	ExtraKeys []string
	// Roots maps each conversation to the id of its root token, which the
	// token store chose; nil skips the check that the root activity was
	// applied for its root.
	Roots map[baton.TokenID]baton.TokenID
}

// Report is the verdict of Check. Every list names one violation.
type Report struct {
	Conversations int
	Expected      int // activities that must be applied exactly once
	Applied       int // ledger entries found

	Lost         []string // expected activities not applied
	Duplicated   []string // expected activities applied more than once
	Unexpected   []string // ledger entries that no conversation explains
	Inconsistent []string // entities whose state disagrees with their ledger
	LiveTokens   []string
	Outbox       []string // outbox entries still held
	ExtraKeys    []string
}

// Quiet reports whether the system has nothing left to do: every expected
// activity applied, no live token, no outbox entry.
func (r Report) Quiet() bool {
	return len(r.Lost) == 0 && len(r.LiveTokens) == 0 && len(r.Outbox) == 0
}

// OK reports whether the run was exactly once: quiet, and nothing applied
// twice or unexplained.
func (r Report) OK() bool {
	return r.Quiet() && len(r.Duplicated) == 0 && len(r.Unexpected) == 0 &&
		len(r.Inconsistent) == 0 && len(r.ExtraKeys) == 0
}

// Summary is one line of counts.
func (r Report) Summary() string {
	return fmt.Sprintf("conversations=%d expected=%d applied=%d lost=%d duplicated=%d unexpected=%d inconsistent=%d live_tokens=%d outbox_entries=%d extra_entities=%d",
		r.Conversations, r.Expected, r.Applied, len(r.Lost), len(r.Duplicated), len(r.Unexpected),
		len(r.Inconsistent), len(r.LiveTokens), len(r.Outbox), len(r.ExtraKeys))
}

// String is the summary followed by up to ten examples of each violation.
func (r Report) String() string {
	var b strings.Builder
	b.WriteString(r.Summary())
	for _, list := range []struct {
		name  string
		items []string
	}{
		{"lost", r.Lost}, {"duplicated", r.Duplicated}, {"unexpected", r.Unexpected},
		{"inconsistent", r.Inconsistent}, {"live token", r.LiveTokens}, {"outbox entry", r.Outbox},
		{"extra entity", r.ExtraKeys},
	} {
		for i, item := range list.items {
			if i == 10 {
				fmt.Fprintf(&b, "\n  %s: ... and %d more", list.name, len(list.items)-i)
				break
			}
			fmt.Fprintf(&b, "\n  %s: %s", list.name, item)
		}
	}
	return b.String()
}

// Check compares a snapshot with what the conversations must have done.
// amounts holds each conversation's order amount (the Amount of its root
// signal); every entity's Total must be the sum over its ledger.
func Check(amounts map[baton.TokenID]int, snap Snapshot) Report {
	conversations := make([]baton.TokenID, 0, len(amounts))
	for c := range amounts {
		conversations = append(conversations, c)
	}
	slices.SortFunc(conversations, func(a, b baton.TokenID) int { return strings.Compare(a.String(), b.String()) })
	r := Report{Conversations: len(conversations)}

	// Where each expected activity must be recorded.
	type slot struct {
		conversation baton.TokenID
		activity     string
	}
	want := map[slot]string{}
	for _, c := range conversations {
		for _, exp := range Expected(c) {
			want[slot{c, exp.Activity}] = exp.Key
		}
	}
	r.Expected = len(want)

	got := map[slot]int{}
	tokens := map[baton.TokenID]string{}
	keys := make([]string, 0, len(snap.Entities))
	for key := range snap.Entities {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	for _, key := range keys {
		ent := snap.Entities[key]
		for _, entry := range ent.Outbox {
			r.Outbox = append(r.Outbox, fmt.Sprintf("%s holds the entry of token %s (created %s)", key, entry.Token, entry.CreatedAt.Format("15:04:05.000")))
		}
		var l Ledger
		if len(ent.State) > 0 {
			if err := json.Unmarshal(ent.State, &l); err != nil {
				r.Unexpected = append(r.Unexpected, fmt.Sprintf("%s: state is not a ledger: %v", key, err))
				continue
			}
		}
		total := 0
		for _, entry := range l.Applied {
			r.Applied++
			c, activity, token, err := ParseLedgerEntry(entry)
			if err != nil {
				r.Unexpected = append(r.Unexpected, fmt.Sprintf("%s: %v", key, err))
				continue
			}
			wantKey, known := want[slot{c, activity}]
			switch {
			case !known:
				r.Unexpected = append(r.Unexpected, fmt.Sprintf("%s: %s is no activity of the workload's conversations", key, entry))
				continue
			case wantKey != key:
				r.Unexpected = append(r.Unexpected, fmt.Sprintf("%s: %s belongs on %s", key, entry, wantKey))
				continue
			case activity == ActPlace && snap.Roots != nil && token != snap.Roots[c]:
				r.Unexpected = append(r.Unexpected, fmt.Sprintf("%s: %s was applied for a token other than the root", key, entry))
			}
			if other, seen := tokens[token]; seen {
				r.Unexpected = append(r.Unexpected, fmt.Sprintf("%s: token %s applied twice (also %s)", key, token, other))
			}
			tokens[token] = entry
			got[slot{c, activity}]++
			total += amounts[c]
		}
		if total != l.Total {
			r.Inconsistent = append(r.Inconsistent, fmt.Sprintf("%s: total %d, but its ledger adds up to %d", key, l.Total, total))
		}
	}
	for _, c := range conversations {
		for _, exp := range Expected(c) {
			switch n := got[slot{c, exp.Activity}]; {
			case n == 0:
				r.Lost = append(r.Lost, fmt.Sprintf("%s/%s on %s", c, exp.Activity, exp.Key))
			case n > 1:
				r.Duplicated = append(r.Duplicated, fmt.Sprintf("%s/%s applied %d times on %s", c, exp.Activity, n, exp.Key))
			}
		}
	}

	seen := map[baton.TokenID]bool{}
	for _, tok := range snap.Tokens {
		if seen[tok.ID] {
			continue
		}
		seen[tok.ID] = true
		r.LiveTokens = append(r.LiveTokens, fmt.Sprintf("%s for %s (%s, conversation %s, created %s)",
			tok.ID, tok.Destination, tok.Type, tok.Conversation, tok.CreatedAt.Format("15:04:05.000")))
	}
	for _, key := range snap.StaleKeys {
		if ent, ok := snap.Entities[key]; ok && len(ent.Outbox) > 0 {
			continue // already reported with its entries
		}
		r.Outbox = append(r.Outbox, fmt.Sprintf("%s has an outbox entry (found by Stale)", key))
	}
	r.ExtraKeys = append(r.ExtraKeys, snap.ExtraKeys...)
	return r
}
