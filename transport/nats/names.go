package nats

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/batonhq/baton"
)

// subjectToken turns a destination name into one NATS subject token that
// is also a valid consumer name. Destinations may contain '.', '*', '>' and
// other bytes that mean something to NATS, so every byte outside
// [A-Za-z0-9_-] becomes '~' and two uppercase hex digits. The encoding is
// injective: two destinations never share a subject or a consumer.
func subjectToken(destination string) string {
	var b strings.Builder
	for i := 0; i < len(destination); i++ {
		c := destination[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "~%02X", c)
	}
	return b.String()
}

// destinationOf is the destination whose subject token is token: the
// inverse of subjectToken.
func destinationOf(token string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(token); i++ {
		if token[i] != '~' {
			b.WriteByte(token[i])
			continue
		}
		if i+2 >= len(token) {
			return "", fmt.Errorf("subject token %q ends inside an escape", token)
		}
		v, err := hex.DecodeString(token[i+1 : i+3])
		if err != nil {
			return "", fmt.Errorf("subject token %q has a bad escape: %w", token, err)
		}
		b.WriteByte(v[0])
		i += 2
	}
	return b.String(), nil
}

// maxConsumerName keeps consumer names well under JetStream's 255 and
// short enough for file names on every platform.
const maxConsumerName = 128

// consumerName is the durable consumer shared by every subscriber of
// destination. Long names are hashed; "~h" never occurs in subjectToken's
// output ('~' is always followed by uppercase hex), so a hashed name never
// equals a plain one.
func consumerName(destination string) string {
	token := subjectToken(destination)
	if len(token) <= maxConsumerName {
		return token
	}
	sum := sha256.Sum256([]byte(destination))
	return "~h" + hex.EncodeToString(sum[:16])
}

// validSubjectPrefix reports whether prefix is one or more literal subject
// tokens (no wildcards, no empty tokens, no whitespace).
func validSubjectPrefix(prefix string) error {
	if prefix == "" {
		return fmt.Errorf("empty subject prefix")
	}
	for _, token := range strings.Split(prefix, ".") {
		if token == "" {
			return fmt.Errorf("subject prefix %q has an empty token", prefix)
		}
		if token == "*" || token == ">" || strings.ContainsAny(token, "*> \t\r\n") {
			return fmt.Errorf("subject prefix %q contains a wildcard or whitespace", prefix)
		}
	}
	return nil
}

// validStreamName applies JetStream's rules for stream names, which become
// directory names on the server.
func validStreamName(name string) error {
	if name == "" {
		return fmt.Errorf("empty stream name")
	}
	if len(name) > 255 {
		return fmt.Errorf("stream name longer than 255 bytes")
	}
	if strings.ContainsAny(name, ".*> /\\\t\r\n\x00") {
		return fmt.Errorf("stream name %q contains '.', '*', '>', a path separator or whitespace", name)
	}
	return nil
}

// validDestination applies baton's rules for destination names (as
// baton.Signal.Validate does), so Subscribe refuses what Publish would.
func validDestination(destination string) error {
	return baton.ValidateName("destination", destination)
}
