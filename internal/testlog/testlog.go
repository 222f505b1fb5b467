// Package testlog records the log of the code under test, for tests that
// check what an operator reads: that an outage is one line, not one per
// request, and that its end is said too.
package testlog

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

// Recorder is a slog.Handler that keeps every record.
type Recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *Recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *Recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

func (r *Recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *Recorder) WithGroup(string) slog.Handler      { return r }

// Records returns the records at min or above, oldest first.
func (r *Recorder) Records(min slog.Level) []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []slog.Record
	for _, rec := range r.records {
		if rec.Level >= min {
			out = append(out, rec)
		}
	}
	return out
}

// Messages returns the messages of the records at min or above, oldest
// first; All is every record's.
func (r *Recorder) Messages(min slog.Level) []string {
	var out []string
	for _, rec := range r.Records(min) {
		out = append(out, rec.Message)
	}
	return out
}

// All is the lowest level: Messages(All) and Records(All) are every
// record's.
const All = slog.Level(math.MinInt)

// Count returns how many messages begin with prefix.
func (r *Recorder) Count(prefix string) int {
	n := 0
	for _, m := range r.Messages(All) {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// CountLevel returns how many records are at level.
func (r *Recorder) CountLevel(level slog.Level) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.records {
		if rec.Level == level {
			n++
		}
	}
	return n
}

// WaitFor waits until a message begins with prefix, and fails t if none
// does within timeout.
func (r *Recorder) WaitFor(t testing.TB, prefix string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for r.Count(prefix) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q within %v; got %q", prefix, timeout, r.Messages(All))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
