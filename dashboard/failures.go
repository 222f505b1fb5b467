package dashboard

import (
	"log/slog"
	"sync"
	"time"
)

// failureReportInterval is how often, at most, a failing reading is logged
// while it keeps failing.
const failureReportInterval = time.Minute

// failures logs a reading (of the token store, of the park place) that
// fails when it begins to, at most once a minute while it goes on, and
// once when it works again: open pages refresh every few seconds, for
// every destination, and a line for each would bury the one that matters.
type failures struct {
	what string // "listing live tokens"

	mu      sync.Mutex
	since   time.Time // zero while the reading works
	last    time.Time // the last line
	dropped int       // failures not logged since last
}

// report records the outcome of one reading: the destinations that failed
// (none: it worked) and the first error.
func (f *failures) report(log *slog.Logger, now time.Time, failed []string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(failed) == 0 {
		if !f.since.IsZero() {
			log.Info("dashboard: "+f.what+" works again", "failed_for", now.Sub(f.since).Round(time.Millisecond).String())
			f.since, f.dropped = time.Time{}, 0
		}
		return
	}
	if f.since.IsZero() {
		f.since = now
	}
	if !f.last.IsZero() && now.Sub(f.last) < failureReportInterval {
		f.dropped++
		return
	}
	log.Warn("dashboard: "+f.what+" failed", "destinations", failed, "since", f.since.UTC().Format(time.RFC3339),
		"failed_readings_not_logged", f.dropped, "err", err)
	f.last, f.dropped = now, 0
}
