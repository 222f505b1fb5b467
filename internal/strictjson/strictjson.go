// Package strictjson refuses the JSON that encoding/json reads more
// leniently than other parsers, so that a proxy, a firewall or a client in
// another language never reads a document otherwise than baton does.
// encoding/json matches an object key to a struct field case-insensitively
// and with Unicode folding (U+212A KELVIN SIGN matches 'k'), keeps the last
// value of a key given twice, and replaces bytes that are not UTF-8 with
// U+FFFD. Check refuses all three before a document is decoded.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxKeyInError bounds the bytes of a key that an error repeats: a key may
// be megabytes, and errors end up in answers and logs.
const maxKeyInError = 64

// Check refuses data unless it is one JSON value in valid UTF-8 in which
// every key of every object is a wire name (IsWireName) that the object
// holds once. Syntax errors are encoding/json's; the others name the key
// and its line and column. Use it only for documents decoded into types
// that Fits accepts: a map keyed by user data (destination names) may have
// any key.
//
// It reads the bytes itself, once json.Valid has checked them, rather than
// through json.Decoder.Token, which decodes every value into an interface:
// a body of 2 MiB of "" cost half a second and 80 MiB that way.
func Check(data []byte) error {
	if !utf8.Valid(data) {
		return fmt.Errorf("not UTF-8 at %s", position(data, invalidUTF8At(data)))
	}
	if !json.Valid(data) { // also refuses nesting deeper than 10000
		var raw json.RawMessage
		return json.Unmarshal(data, &raw) // says what is wrong, and where
	}
	var open []level
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '{', '[':
			open = push(open, data[i] == '{')
		case '}', ']':
			open = open[:len(open)-1]
		case ',':
			// In a valid document a comma in an object comes before a key.
			top := &open[len(open)-1]
			top.wantKey = top.object
		case '"':
			end := stringEnd(data, i)
			if top := lastLevel(open); top != nil && top.wantKey {
				key := unquote(data[i : end+1])
				if err := top.key(key); err != nil {
					return fmt.Errorf("key %s at %s %w", quote(string(key)), position(data, i), err)
				}
			}
			i = end
		}
	}
	return nil
}

// level is an open object or array.
type level struct {
	object  bool
	wantKey bool     // an object's next string is a key
	keys    [][]byte // an object's keys so far, unescaped
	// many holds the keys too once there are more than fewKeys, so that an
	// object of many keys is not checked in quadratic time.
	many map[string]struct{}
}

// fewKeys is how many keys an object holds before they go into a map too.
const fewKeys = 16

// push opens an object or array, reusing the storage of the last one that
// was as deep: a document of many small objects then allocates nothing.
func push(open []level, object bool) []level {
	if len(open) < cap(open) {
		open = open[:len(open)+1]
	} else {
		open = append(open, level{})
	}
	l := &open[len(open)-1]
	l.object, l.wantKey, l.keys = object, object, l.keys[:0]
	clear(l.many)
	return open
}

func lastLevel(open []level) *level {
	if len(open) == 0 {
		return nil
	}
	return &open[len(open)-1]
}

// key records an object's key, refusing one that is no wire name or that
// the object already has.
func (l *level) key(k []byte) error {
	l.wantKey = false
	if !IsWireName(string(k)) {
		return errors.New("is not a field name: field names are lowercase letters, digits and _, matched exactly")
	}
	if l.has(k) {
		return errors.New("appears twice in one object")
	}
	l.keys = append(l.keys, k)
	switch {
	case len(l.keys) == fewKeys+1:
		if l.many == nil {
			l.many = make(map[string]struct{})
		}
		for _, k := range l.keys {
			l.many[string(k)] = struct{}{}
		}
	case len(l.keys) > fewKeys+1:
		l.many[string(k)] = struct{}{}
	}
	return nil
}

func (l *level) has(k []byte) bool {
	if len(l.keys) > fewKeys {
		_, ok := l.many[string(k)]
		return ok
	}
	for _, seen := range l.keys {
		if bytes.Equal(seen, k) {
			return true
		}
	}
	return false
}

// stringEnd is the offset of the quote that ends the string whose opening
// quote is at data[start], in a valid document.
func stringEnd(data []byte, start int) int {
	for i := start + 1; ; i++ {
		switch data[i] {
		case '\\':
			i++ // the escaped character, which may be a quote
		case '"':
			return i
		}
	}
}

// unquote is a string of a valid document, given with its quotes, as
// encoding/json reads it: escapes resolved, and a lone surrogate as U+FFFD.
func unquote(quoted []byte) []byte {
	if bytes.IndexByte(quoted, '\\') < 0 {
		return quoted[1 : len(quoted)-1]
	}
	var s string
	_ = json.Unmarshal(quoted, &s) // valid: Check has checked the document
	return []byte(s)
}

// IsWireName reports whether s is a wire name: one or more bytes, each a
// lowercase ASCII letter, a digit or '_' (snake_case).
func IsWireName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Fits reports why a document decoded into a value of type t cannot be
// checked with Check, or nil if it can: every field that encoding/json
// reads, at any depth, must be named by a json tag that is a wire name, and
// no map may be among them (its keys are data, not field names). Tests of
// the packages that use Check call it on each type they decode.
func Fits(t reflect.Type) error {
	return fits(t, t.String(), map[reflect.Type]bool{})
}

func fits(t reflect.Type, path string, seen map[reflect.Type]bool) error {
	if seen[t] {
		return nil
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return fits(t.Elem(), path+"[]", seen)
	case reflect.Map, reflect.Interface:
		return fmt.Errorf("%s is a %s: its keys are not field names", path, t.Kind())
	case reflect.Struct:
		for i := range t.NumField() {
			if err := fieldFits(t.Field(i), path, seen); err != nil {
				return err
			}
		}
	}
	return nil
}

func fieldFits(f reflect.StructField, path string, seen map[reflect.Type]bool) error {
	tag := f.Tag.Get("json")
	name, _, _ := strings.Cut(tag, ",")
	switch {
	case tag == "-" || !f.IsExported() && !f.Anonymous:
		return nil // encoding/json never reads it
	case f.Anonymous && name == "":
		return fits(f.Type, path, seen) // its fields are read as f's owner's
	case !IsWireName(name):
		return fmt.Errorf("%s.%s has no json tag that is a wire name", path, f.Name)
	}
	return fits(f.Type, path+"."+name, seen)
}

// invalidUTF8At is the offset of the first byte of data that is not part
// of valid UTF-8.
func invalidUTF8At(data []byte) int {
	var off int
	for off < len(data) {
		r, size := utf8.DecodeRune(data[off:])
		if r == utf8.RuneError && size == 1 {
			break
		}
		off += size
	}
	return off
}

// position is offset as a line and column, both from 1; the column counts
// characters of the valid UTF-8 before it on its line.
func position(data []byte, offset int) string {
	before := data[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	lineStart := bytes.LastIndexByte(before, '\n') + 1
	column := utf8.RuneCount(before[lineStart:]) + 1
	return fmt.Sprintf("line %d, column %d", line, column)
}

// quote is k quoted in ASCII, so that a KELVIN SIGN does not pass for a
// 'K', and cut after maxKeyInError bytes.
func quote(k string) string {
	if len(k) <= maxKeyInError {
		return strconv.QuoteToASCII(k)
	}
	cut := maxKeyInError
	for cut > 0 && !utf8.RuneStart(k[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.QuoteToASCII(k[:cut]), len(k))
}
