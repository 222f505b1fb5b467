package baton_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/batonhq/baton"
)

// Names are 1 to MaxNameBytes bytes of UTF-8 without spaces or control
// characters (docs/protocol.md 2.4), whatever part of a signal they name.
func TestNames(t *testing.T) {
	for name, valid := range map[string]bool{
		"billing":                   true,
		"billing.v2/charge-ünïcode": true,
		strings.Repeat("a", 200):    true,
		"":                          false,
		strings.Repeat("a", 201):    false,
		"bill ing":                  false,
		"bill\ting":                 false,
		"bill\x00ing":               false,
		"bill\x7fing":               false,
		"bill\xffing":               false, // not UTF-8
		"bill\xc3":                  false, // a cut sequence
		"\xed\xa0\x80surrogate":     false,
		"bill\ufffding":             false, // what a decoder made of bytes that were not UTF-8
		"\ufffd":                    false,
	} {
		sig := baton.Signal{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: name, Type: "t"}
		if err := sig.Validate(); (err == nil) != valid {
			t.Errorf("destination %q: Validate = %v, want valid %t", name, err, valid)
		} else if err != nil && !errors.Is(err, baton.ErrInvalidSignal) {
			t.Errorf("destination %q: Validate = %v, want ErrInvalidSignal", name, err)
		}
		sig.Destination, sig.Type = "d", name
		if err := sig.Validate(); (err == nil) != valid {
			t.Errorf("type %q: Validate = %v, want valid %t", name, err, valid)
		}
	}
}
