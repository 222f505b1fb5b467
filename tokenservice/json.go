package tokenservice

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// writeJSON writes v as the JSON answer with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(marshal(v))
}

// marshal encodes v followed by a newline, without escaping <, > and &:
// answers are JSON for programs, never embedded in HTML.
func marshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only the package's own wire types are written; they always encode.
		panic(err)
	}
	return buf.Bytes()
}
