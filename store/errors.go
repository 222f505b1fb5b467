package store

import "errors"

// Sentinel errors. Match them with errors.Is; backends wrap them with %w.
var (
	// ErrNotFound: the token or entity does not exist. Not applied.
	ErrNotFound = errors.New("store: not found")
	// ErrExists: a token with this id already exists. Not applied.
	ErrExists = errors.New("store: already exists")
	// ErrConflict: an entity's version is not the one the commit expected.
	// Not applied.
	ErrConflict = errors.New("store: version conflict")
	// ErrNotApplied marks any other failure that a backend knows happened
	// before the write could take effect (for example, the connection was
	// refused). Every error that NotApplied does not recognise means the
	// outcome is unknown.
	ErrNotApplied = errors.New("store: not applied")
	// ErrInvalid: the request is malformed (bad key, too many tokens, a
	// token without an id). Not applied.
	ErrInvalid = errors.New("store: invalid request")
	// ErrClosed: the store was closed. Not applied.
	ErrClosed = errors.New("store: closed")
	// ErrExpired: ClaimRoot found the root token expired. Not applied.
	ErrExpired = errors.New("store: root token expired")
	// ErrNotYours: a store that checks who calls (the token service) found
	// the token addressed to a destination the caller may not consume or
	// read. Not applied; the signal is misaddressed.
	ErrNotYours = errors.New("store: token addressed to another destination")
	// ErrForbidden: a store that checks who calls (the token service)
	// does not let the caller do this at all, as deleting expired roots
	// (ExpireRoots) is left to a system trusted with it. Not applied.
	ErrForbidden = errors.New("store: the caller may not do this")
)

// NotApplied reports whether err proves that a write did not take effect.
// A nil error means it did; false means the outcome is unknown.
func NotApplied(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) ||
		errors.Is(err, ErrConflict) || errors.Is(err, ErrNotApplied) ||
		errors.Is(err, ErrInvalid) || errors.Is(err, ErrClosed) || errors.Is(err, ErrExpired) ||
		errors.Is(err, ErrNotYours) || errors.Is(err, ErrForbidden)
}

// Answered reports whether err is a store's answer to a call, which says
// that the store is up whatever else err matches: the token absent or
// another destination's, the token or entity existing or changed, the call
// invalid, expired or refused to this caller. (A token service's client
// makes its refusals match ErrNotApplied too, as they applied nothing.)
func Answered(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) || errors.Is(err, ErrConflict) ||
		errors.Is(err, ErrInvalid) || errors.Is(err, ErrExpired) || errors.Is(err, ErrNotYours) ||
		errors.Is(err, ErrForbidden)
}
