package tokenservice

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// callers authenticates requests as registered systems. The API and
// RequireObserve share it, so both accept exactly the same credentials.
type callers struct {
	systems []*registered
	byName  map[string]*registered
}

func newCallers(systems []*registered) callers {
	c := callers{systems: systems, byName: make(map[string]*registered, len(systems))}
	for _, sys := range systems {
		c.byName[sys.Name] = sys
	}
	return c
}

func (s *server) authenticate(r *http.Request) (*registered, *Problem) {
	return callers{systems: s.systems, byName: s.byName}.authenticate(r)
}

// authenticate finds the registered system that r comes from: by its
// bearer API key, by its verified client certificate, or both (they must
// then name the same system).
func (s callers) authenticate(r *http.Request) (*registered, *Problem) {
	var byCert, byKey *registered
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		// VerifiedChains is set only when the TLS server verified the
		// certificate against its client CAs.
		cert := r.TLS.VerifiedChains[0][0]
		if n := commonNames(cert); n > 1 {
			return nil, problem(ProblemUnauthorized, "the client certificate's subject has %d common names; it must have one, the system's name", n)
		}
		cn := cert.Subject.CommonName
		byCert = s.byName[cn]
		if byCert == nil {
			return nil, problem(ProblemUnauthorized, "the client certificate's common name %q names no registered system", cn)
		}
	}
	values := r.Header.Values("Authorization")
	switch {
	case len(values) > 1:
		return nil, problem(ProblemUnauthorized, "more than one Authorization header")
	case len(values) == 1:
		scheme, key, ok := strings.Cut(values[0], " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(key) == "" {
			return nil, problem(ProblemUnauthorized, "the Authorization header must be \"Bearer <api key>\"")
		}
		if byKey = s.byKey(strings.TrimSpace(key)); byKey == nil {
			return nil, problem(ProblemUnauthorized, "the API key is not registered")
		}
	}
	switch {
	case byKey != nil && byCert != nil && byKey != byCert:
		return nil, problem(ProblemUnauthorized, "the API key and the client certificate name different systems")
	case byKey != nil:
		return byKey, nil
	case byCert != nil:
		return byCert, nil
	}
	return nil, problem(ProblemUnauthorized, "no credentials: send \"Authorization: Bearer <api key>\" or a client certificate")
}

// oidCommonName is the X.509 attribute type of a common name (CN).
var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// commonNames counts the common names in cert's subject. More than one
// is refused: pkix.Name.CommonName keeps the last, so a CA that vetted
// only the first would let "CN=nobody, CN=billing" authenticate as billing.
func commonNames(cert *x509.Certificate) int {
	n := 0
	for _, attr := range cert.Subject.Names {
		if attr.Type.Equal(oidCommonName) {
			n++
		}
	}
	return n
}

// byKey returns the system whose key hash matches key's. It compares with
// every registered hash in constant time and without an early exit, so the
// time taken says nothing about how close a guess came.
func (s callers) byKey(key string) *registered {
	sum := sha256.Sum256([]byte(key))
	var found *registered
	for _, sys := range s.systems {
		if sys.hasKey && subtle.ConstantTimeCompare(sum[:], sys.hash[:]) == 1 {
			found = sys
		}
	}
	return found
}

// TLSConfig returns the server TLS configuration of `baton serve --tls-cert
// --tls-key [--client-ca]`. With a client CA file, clients may present a
// certificate signed by one of its CAs; its subject's one common name then
// names the calling system. Clients without a certificate still connect and
// authenticate with an API key.
func TLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: TLS certificate: %w", ErrInvalidConfig, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: client CA: %w", ErrInvalidConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: client CA %s holds no PEM certificate", ErrInvalidConfig, clientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}
