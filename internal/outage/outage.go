// Package outage keeps the log of a failure that repeats (a store that
// does not answer, a reading that keeps failing) to a few lines: one when
// it begins, at most one per interval while it lasts, one when it ends,
// where a line per failed call would bury the one that matters.
package outage

import "time"

// Spell is the state of one kind of failure. The zero value is a spell
// that has not begun. It is not safe for concurrent use.
type Spell struct {
	since    time.Time // zero while nothing fails
	last     time.Time // the last line logged, kept across spells
	failed   int       // failures since since
	unlogged int       // failures not logged since last
	logged   bool      // a line was logged in this spell
}

// Line is what a line about a failure says.
type Line struct {
	First    bool      // the spell's first line
	Since    time.Time // when the spell began
	Failed   int       // failures in the spell, this one included
	Unlogged int       // failures not logged since the last line
}

// Failed records a failure at now and returns the line to log, if one is
// due: for the first failure of a spell, or the first after every has
// passed since the last line (which is kept from an earlier spell, so
// that a failure that comes and goes is not logged each time).
func (s *Spell) Failed(now time.Time, every time.Duration) (Line, bool) {
	if s.since.IsZero() {
		s.since = now
	}
	s.failed++
	if !s.last.IsZero() && now.Sub(s.last) < every {
		s.unlogged++
		return Line{}, false
	}
	line := Line{First: !s.logged, Since: s.since, Failed: s.failed, Unlogged: s.unlogged}
	s.last, s.logged, s.unlogged = now, true, 0
	return line, true
}

// End records a success and returns the spell it ends (the zero Spell if
// none had begun).
func (s *Spell) End() Spell {
	ended := *s
	*s = Spell{last: s.last}
	return ended
}

// Begun reports whether the spell had begun; Logged whether a line was
// logged in it; Since when it began; Failures how many failures it had.
func (s Spell) Begun() bool      { return !s.since.IsZero() }
func (s Spell) Logged() bool     { return s.logged }
func (s Spell) Since() time.Time { return s.since }
func (s Spell) Failures() int    { return s.failed }
