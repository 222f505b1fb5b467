package httpsignal

import (
	"crypto/subtle"
	"time"
)

// Waiting reports how many copies wait for a first copy of their signal.
func (s *Server) Waiting() int64 { return s.waiting.Load() }

// SetClock replaces the limiter's clock.
func (l *RateLimiter) SetClock(now func() time.Time) { l.now = now }

// CountKeyComparisons runs f and returns the lengths of the values that
// APIKeys compared meanwhile, one per comparison.
func CountKeyComparisons(f func()) []int {
	var lengths []int
	compareKeyHashes = func(a, b []byte) int {
		lengths = append(lengths, len(a), len(b))
		return subtle.ConstantTimeCompare(a, b)
	}
	defer func() { compareKeyHashes = subtle.ConstantTimeCompare }()
	f()
	return lengths
}
