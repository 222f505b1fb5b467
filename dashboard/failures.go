package dashboard

import (
	"log/slog"
	"sync"
	"time"

	"github.com/batonhq/baton/internal/outage"
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

	mu    sync.Mutex
	spell outage.Spell
}

// report records the outcome of one reading: the destinations that failed
// (none: it worked) and the first error.
func (f *failures) report(log *slog.Logger, now time.Time, failed []string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(failed) == 0 {
		if ended := f.spell.End(); ended.Begun() {
			log.Info("dashboard: "+f.what+" works again", "failed_for", now.Sub(ended.Since()).Round(time.Millisecond).String())
		}
		return
	}
	line, due := f.spell.Failed(now, failureReportInterval)
	if !due {
		return
	}
	log.Warn("dashboard: "+f.what+" failed", "destinations", failed, "since", line.Since.UTC().Format(time.RFC3339),
		"failed_readings_not_logged", line.Unlogged, "err", err)
}
