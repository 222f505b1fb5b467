package engine

import (
	"errors"
	"fmt"
)

// Errors returned by Process. Those that are permanent (IsPermanent) park
// the signal at once; others are retried.
var (
	ErrUnknownType     = errors.New("engine: no activity for signal type")
	ErrUnroutable      = errors.New("engine: signal does not route to an entity")
	ErrMisaddressed    = errors.New("engine: token is addressed to another destination")
	ErrDigestMismatch  = errors.New("engine: payload does not match the token's digest")
	ErrTokenMismatch   = errors.New("engine: signal does not match its token's type, conversation or causation")
	ErrExpired         = errors.New("engine: root token expired")
	ErrConflictRetries = errors.New("engine: too many version conflicts")
	ErrRejected        = errors.New("engine: dispatch rejected by the receiver")
)

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent marks err as one that retrying will not fix. A handler returns
// Permanent(err) to park a signal at once instead of retrying it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked by Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

func permanentf(sentinel error, format string, args ...any) error {
	return Permanent(fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...))
}
