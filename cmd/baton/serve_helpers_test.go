package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/internal/syncio"
	"github.com/batonhq/baton/internal/telemetry"
	"github.com/batonhq/baton/tokenservice"
)

// lines collects what runServe prints on stdout, line by line.
type lines struct {
	mu      sync.Mutex
	partial string
	all     []string
	added   chan struct{}
}

func newLines() *lines { return &lines{added: make(chan struct{}, 100)} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial += string(p)
	for {
		line, rest, ok := strings.Cut(l.partial, "\n")
		if !ok {
			break
		}
		l.all, l.partial = append(l.all, line), rest
		select {
		case l.added <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// withPrefix returns the rest of the first line that starts with prefix.
func (l *lines) withPrefix(prefix string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.all {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			return rest, true
		}
	}
	return "", false
}

// server is `baton serve` running in this process.
type server struct {
	url    string // the API's address
	stdout *lines
	stderr *syncio.Buffer
	done   chan error
}

// keys of the systems that systemsFile registers.
type keys struct{ edge, billing, ops string }

// systemsFile registers edge (issues roots, consumes every destination),
// billing, and ops (observe) in a file of a fresh directory; with
// certOnly, ops and billing have no key and authenticate by certificate.
func systemsFile(t *testing.T, certOnly bool) (string, keys) {
	t.Helper()
	var k keys
	var edgeHash, billingHash, opsHash string
	k.edge, edgeHash = tokenservice.NewAPIKey()
	k.billing, billingHash = tokenservice.NewAPIKey()
	k.ops, opsHash = tokenservice.NewAPIKey()
	if certOnly {
		k.billing, billingHash, k.ops, opsHash = "", "", "", ""
	}
	data, err := json.Marshal(tokenservice.SystemsFile{Systems: []tokenservice.System{
		{Name: "edge", KeySHA256: edgeHash, IssueRoots: true, Destinations: []string{tokenservice.AnyDestination}},
		{Name: "billing", KeySHA256: billingHash},
		{Name: "ops", KeySHA256: opsHash, Observe: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "systems.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, k
}

// options are serve's flags at their defaults, over an embedded store in a
// fresh directory, with the systems of systemsFile.
func options(t *testing.T, systems string) serveOptions {
	return serveOptions{addr: "127.0.0.1:0", store: "embedded", dataDir: t.TempDir(), systems: systems,
		maxBody: tokenservice.DefaultMaxBodyBytes, logLevel: "warn", dashboard: true, stuckAfter: telemetry.DefaultStuckAfter}
}

// start runs runServe with o until the test ends, and waits until it
// listens. It fails the test if runServe returns first.
func start(t *testing.T, o serveOptions) *server {
	t.Helper()
	s, err := tryStart(t, o)
	if err != nil {
		t.Fatalf("baton serve: %v\n%s", err, s.stderr)
	}
	return s
}

// tryStart runs runServe with o and returns once it listens, or with the
// error it returned.
func tryStart(t *testing.T, o serveOptions) (*server, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{stdout: newLines(), stderr: &syncio.Buffer{}, done: make(chan error, 1)}
	go func() { s.done <- runServe(ctx, s.stdout, s.stderr, o) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			t.Error("baton serve did not stop within 20s")
		}
	})
	deadline := time.After(30 * time.Second)
	for {
		if url, ok := s.stdout.withPrefix("listening on "); ok {
			s.url = url
			return s, nil
		}
		select {
		case <-s.stdout.added:
		case err := <-s.done:
			s.done <- err // for the cleanup
			return s, err
		case <-deadline:
			t.Fatal("baton serve did not listen within 30s")
		}
	}
}

// reply is a response read whole.
type reply struct {
	status int
	header http.Header
	body   string
}

// request sends method url with an optional bearer key, Host header and
// JSON body.
func request(t *testing.T, c *http.Client, method, url, key, host string, body any) reply {
	t.Helper()
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if host != "" {
		req.Host = host
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, string(data)}
}

// problemType returns the type of a problem document, or "" if r is none.
func (r reply) problemType() string {
	if r.header.Get("Content-Type") != tokenservice.ProblemContentType {
		return ""
	}
	var p tokenservice.Problem
	if json.Unmarshal([]byte(r.body), &p) != nil || p.Status != r.status {
		return ""
	}
	return p.Type
}

// issueRoot has edge issue a root token addressed to billing and returns it.
func issueRoot(t *testing.T, c *http.Client, url, key string) baton.Token {
	t.Helper()
	body := map[string]string{"destination": "billing", "type": "order.place", "digest": baton.DigestOf(nil).String()}
	r := request(t, c, "POST", url+"/v1/roots", key, "", body)
	if r.status != http.StatusCreated {
		t.Fatalf("issue root: %d %s", r.status, r.body)
	}
	var issued tokenservice.Token
	if err := json.Unmarshal([]byte(r.body), &issued); err != nil {
		t.Fatalf("issue root: %v", err)
	}
	root, err := issued.Decode()
	if err != nil {
		t.Fatalf("issue root: %v", err)
	}
	return root
}

// authority is a test CA that signs server and client certificates.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

func newAuthority(t *testing.T) *authority {
	t.Helper()
	a := &authority{dir: t.TempDir()}
	a.cert, a.key = a.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, "ca")
	return a
}

// sign signs tmpl (by itself, for the CA) and writes NAME.pem and
// NAME-key.pem into the authority's directory.
func (a *authority) sign(t *testing.T, tmpl *x509.Certificate, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber, _ = rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	parent, parentKey := tmpl, key
	if a.cert != nil {
		parent, parentKey = a.cert, a.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(file, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(a.dir, file), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(name+".pem", "CERTIFICATE", der)
	write(name+"-key.pem", "EC PRIVATE KEY", keyDER)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func (a *authority) path(file string) string { return filepath.Join(a.dir, file) }

// server signs a server certificate for 127.0.0.1 and tokens.test into
// server.pem.
func (a *authority) server(t *testing.T) {
	a.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames: []string{"tokens.test"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, "server")
}

// client returns an HTTPS client that trusts the authority and presents
// a certificate for system cn, or none if cn is empty.
func (a *authority) client(t *testing.T, cn string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(a.cert)
	cfg := &tls.Config{RootCAs: pool}
	if cn != "" {
		a.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, cn)
		cert, err := tls.LoadX509KeyPair(a.path(cn+".pem"), a.path(cn+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}
