package outage_test

import (
	"testing"
	"time"

	"github.com/batonhq/baton/internal/outage"
)

func TestSpell(t *testing.T) {
	var s outage.Spell
	t0 := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	if line, due := s.Failed(t0, time.Minute); !due || !line.First || line.Failed != 1 {
		t.Fatalf("first failure: %+v, %v; want a first line", line, due)
	}
	if _, due := s.Failed(t0.Add(time.Second), time.Minute); due {
		t.Fatal("a failure a second later was due a line")
	}
	line, due := s.Failed(t0.Add(61*time.Second), time.Minute)
	if !due || line.First || line.Failed != 3 || line.Unlogged != 1 || !line.Since.Equal(t0) {
		t.Fatalf("a failure a minute later: %+v, %v; want a line that is not the first, 3 failures, 1 unlogged", line, due)
	}
	ended := s.End()
	if !ended.Begun() || !ended.Logged() || ended.Failures() != 3 || !ended.Since().Equal(t0) {
		t.Fatalf("End = %+v", ended)
	}
	if again := s.End(); again.Begun() {
		t.Fatal("End of no spell returned one that had begun")
	}
	// A spell that begins within the interval of the last line is not
	// logged at once (a failure that comes and goes), and its end is not
	// worth a line either.
	if _, due := s.Failed(t0.Add(62*time.Second), time.Minute); due {
		t.Fatal("a new spell right after a line was due one")
	}
	if ended := s.End(); !ended.Begun() || ended.Logged() {
		t.Fatalf("End = %+v; want a spell begun and not logged", ended)
	}
}
