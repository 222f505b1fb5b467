package httpsignal

import "time"

// Waiting reports how many copies wait for a first copy of their signal.
func (s *Server) Waiting() int64 { return s.waiting.Load() }

// SetClock replaces the limiter's clock.
func (l *RateLimiter) SetClock(now func() time.Time) { l.now = now }
