package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestCheckAccepts(t *testing.T) {
	for _, doc := range []string{
		`null`,
		`12`,
		`"Destination"`,
		`[]`,
		`{}`,
		`{"destination":"billing","type":"charge","ttl_seconds":60}`,
		`{"a":{"a":1},"b":[{"a":1},{"a":2}]}`,    // the same key in different objects
		`{"a":"a","b":"a","c":["a","a"]}`,        // values may repeat
		`{"a":"Destination","b":{"c":"\u212a"}}`, // values may be anything
		`{"a":"\"","b":"\\","c":"x\"y\\"}`,       // escaped quotes end no string
		`{"\u0061":1}`,                           // an escaped key is read unescaped
		`{"n":1e400,"m":-0.5E-3,"o":123456789012345678901234567890,"t":true,"f":false,"z":null}`,
		"{\n\t\"a\" : [ 1 , { \"b\" : null } ] \r\n}",
		manyKeys(40, "") + `,"x":` + manyKeys(40, "") + "}}",    // keys past the map's start
		`[` + manyKeys(40, "") + `},` + manyKeys(40, "") + `}]`, // each object its own keys
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	} {
		if err := Check([]byte(doc)); err != nil {
			t.Errorf("Check(%.60q) = %v, want nil", doc, err)
		}
	}
}

// manyKeys is an object of n keys k0, k1, …, then extra, left open.
func manyKeys(n int, extra string) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		fmt.Fprintf(&b, `"k%d":%d,`, i, i)
	}
	b.WriteString(extra)
	return strings.TrimSuffix(b.String(), ",")
}

func TestCheckRefuses(t *testing.T) {
	for _, c := range []struct{ doc, says string }{
		{`{"observe":false,"observe":true}`, `key "observe" at line 1, column 18 appears twice in one object`},
		{`{"a":{"b":1},"a":2}`, `key "a" at line 1, column 14 appears twice`},
		{`{"x":[{"a":1},{"a":1,"a":1}]}`, `key "a" at line 1, column 22 appears twice`},
		{`{"a":1,"\u0061":2}`, `key "a" at line 1, column 8 appears twice`},
		{`{"a":"\"","a":1}`, `key "a" at line 1, column 11 appears twice`},
		{manyKeys(40, `"k3":0`) + "}", `key "k3"`},   // a key of the first few, again past them
		{manyKeys(40, `"k30":0`) + "}", `key "k30"`}, // a key in the map
		{manyKeys(16, `"k16":0,"k16":0`) + "}", `key "k16"`},
		{`{"destination":"billing","Destination":"orders"}`, `key "Destination" at line 1, column 26 is not a field name`},
		{`{"DESTINATION":"orders"}`, `key "DESTINATION" at line 1, column 2 is not a field name`},
		{`{"a":"\\","A":1}`, `key "A" at line 1, column 11`},
		{"{\"\u212aey_sha256\":\"\"}", `key "\u212aey_sha256" at line 1, column 2 is not a field name`}, // KELVIN SIGN
		{`{"\u212aey_sha256":""}`, `key "\u212aey_sha256"`},
		{"{\"ob\u017ferve\":true}", `key "ob\u017ferve"`}, // LATIN SMALL LETTER LONG S
		{`{"":1}`, `key "" at line 1, column 2 is not a field name`},
		{`{"ttl-seconds":1}`, `key "ttl-seconds"`},
		{`{"a b":1}`, `key "a b"`},
		{`{"\ud800":1}`, `key "\ufffd"`}, // a lone surrogate reads as U+FFFD
		{"{\"systems\":[\n  {\"name\":\"x\",\n   \"OBSERVE\":true}]}", `key "OBSERVE" at line 3, column 4 is not a field name`},
		{"{\"a\":\"bill\xffing\"}", `not UTF-8 at line 1, column 11`},
		{"{\"\xc3\":1}", `not UTF-8 at line 1, column 3`},
		{"{\"ä\":\"\xed\xa0\x80\"}", `not UTF-8 at line 1, column 7`}, // an encoded surrogate
		{strings.Repeat("[", 10001) + strings.Repeat("]", 10001), `exceeded max depth`},
		{``, `unexpected end of JSON input`},
		{`{"a":`, `unexpected end of JSON input`},
		{`{"a" 1}`, `invalid character`},
		{`{"a":1}}`, `invalid character`},
		{`{"a":1,}`, `invalid character`},
		{`{} {"a":1}`, `invalid character '{' after top-level value`},
	} {
		err := Check([]byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("Check(%.60q) = %v, want an error that says %q", c.doc, err, c.says)
		}
	}
}

// A key of a megabyte is not repeated whole in the error, and is cut
// between characters.
func TestCheckCutsLongKeys(t *testing.T) {
	for _, char := range []string{"A", "\u00e4", "\u212a"} {
		key := strings.Repeat(char, 1<<20/len(char))
		err := Check([]byte(`{"` + key + `":1}`))
		if err == nil || len(err.Error()) > 500 || !strings.Contains(err.Error(), fmt.Sprintf("(%d bytes)", len(key))) ||
			strings.Contains(err.Error(), `\ufffd`) || strings.Contains(err.Error(), `\x`) {
			t.Errorf("Check of a key of 1 MiB of %q = %.600v", char, err)
		}
	}
}

// Checking a body of many small items costs next to nothing beside
// decoding it: the service's body limit is 2 MiB.
func TestCheckAllocatesLittle(t *testing.T) {
	for _, item := range []string{`{}`, `""`, `{"a":0,"b":"x"}`, `[{"a":[]}]`} {
		body := []byte(`{"items":[` + strings.TrimSuffix(strings.Repeat(item+",", (2<<20)/(len(item)+1)), ",") + `]}`)
		allocs := testing.AllocsPerRun(1, func() {
			if err := Check(body); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > 20 {
			t.Errorf("Check of 2 MiB of %s: %.0f allocations", item, allocs)
		}
	}
}

func TestIsWireName(t *testing.T) {
	for name, want := range map[string]bool{
		"destination": true, "ttl_seconds": true, "key_sha256": true, "_": true,
		"": false, "Destination": false, "ttl-seconds": false, "a b": false,
		"\u212a": false, "\u017f": false, "é": false, "a\x00": false,
	} {
		if got := IsWireName(name); got != want {
			t.Errorf("IsWireName(%q) = %t, want %t", name, got, want)
		}
	}
}

type embedded struct {
	Kind string `json:"kind"`
}

type embeddedUntagged struct {
	Bad string
}

func TestFits(t *testing.T) {
	type child struct {
		Name string `json:"name"`
	}
	type unread struct {
		Skipped map[string]int `json:"-"`
		hidden  map[string]int
	}
	fit := []any{
		struct {
			A       string    `json:"a,omitempty"`
			B       []child   `json:"b"`
			C       *child    `json:"c"`
			D       [2]int    `json:"d"`
			E       time.Time `json:"e"`
			Created string    `json:"created_at"`
		}{},
		struct {
			embedded
			unread
		}{},
	}
	for _, v := range fit {
		if err := Fits(reflect.TypeOf(v)); err != nil {
			t.Errorf("Fits(%T) = %v, want nil", v, err)
		}
	}
	for _, c := range []struct {
		v    any
		says string
	}{
		{struct{ Name string }{}, "Name has no json tag"},
		{struct {
			Name string `json:",omitempty"`
		}{}, "Name has no json tag"},
		{struct {
			Name string `json:"Name"`
		}{}, "Name has no json tag"},
		{struct {
			Types map[string][]string `json:"types"`
		}{}, ".types is a map"},
		{struct {
			Items []struct {
				Extra any `json:"extra"`
			} `json:"items"`
		}{}, ".items[].extra is a interface"},
		{struct{ embeddedUntagged }{}, "Bad has no json tag"},
	} {
		err := Fits(reflect.TypeOf(c.v))
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("Fits(%T) = %v, want an error that says %q", c.v, err, c.says)
		}
	}
}

// Check refuses exactly what reference refuses.
func FuzzCheck(f *testing.F) {
	f.Add([]byte(`{"a":{"b":[1,"x",null]},"c":true}`))
	f.Add([]byte(`{"a":1,"a":2}`))
	f.Add([]byte(`{"a":"\"","b":{"a":"\\"},"b":1}`))
	f.Add([]byte(`{"destination":"billing","Destination":"orders"}`))
	f.Add([]byte("{\"\u212a\":1}"))
	f.Add([]byte(`{"\ud800":"\udc00","\u0062":[]}`))
	f.Add([]byte("{\"a\":\"\xff\"}"))
	f.Add([]byte(manyKeys(20, `"k18":[]`) + "}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		err := Check(data)
		if want := reference(data); (err == nil) != want {
			t.Fatalf("Check(%q) = %v, where the reference accepts: %t", data, err, want)
		}
	})
}

// reference is Check done the slow and plain way, with json.Decoder.Token
// and a map of keys per object: whether it accepts data.
func reference(data []byte) bool {
	if !utf8.Valid(data) || !json.Valid(data) {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type object struct {
		keys    map[string]bool
		wantKey bool
	}
	var open []*object // nil for an array
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			return false
		}
		var top *object
		if len(open) > 0 {
			top = open[len(open)-1]
		}
		switch {
		case tok == json.Delim('}') || tok == json.Delim(']'):
			open = open[:len(open)-1]
			if len(open) > 0 && open[len(open)-1] != nil {
				open[len(open)-1].wantKey = true
			}
		case top != nil && top.wantKey:
			key := tok.(string)
			if !IsWireName(key) || top.keys[key] {
				return false
			}
			top.keys[key], top.wantKey = true, false
		case tok == json.Delim('{'):
			open = append(open, &object{keys: map[string]bool{}, wantKey: true})
		case tok == json.Delim('['):
			open = append(open, nil)
		case top != nil:
			top.wantKey = true
		}
	}
}
