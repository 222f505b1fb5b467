package tokenservice_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
)

// authority is a test CA that signs server and client certificates.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newAuthority(t *testing.T, name string) *authority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &authority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a certificate for cn; a server certificate is for 127.0.0.1.
func (a *authority) issue(t *testing.T, cn string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	return a.issueFor(t, pkix.Name{CommonName: cn}, server)
}

// issueFor signs a certificate for subject.
func (a *authority) issueFor(t *testing.T, subject pkix.Name, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serveMutualTLS serves cfg's token service over TLS that requires client
// certificates of a test CA, and returns the CA, the server and a pool
// that trusts the server's certificate.
func serveMutualTLS(t *testing.T, cfg tokenservice.Config) (*authority, *httptest.Server, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	ca := newAuthority(t, "baton test CA")
	serverCert, serverKey := ca.issue(t, "token service", true)
	tlsCfg, err := tokenservice.TLSConfig(writeFile(t, dir, "server.pem", serverCert), writeFile(t, dir, "server.key", serverKey),
		writeFile(t, dir, "ca.pem", ca.pem))
	if err != nil {
		t.Fatal(err)
	}
	h, err := tokenservice.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = tlsCfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	return ca, srv, roots
}

// Mutual TLS: a client certificate's common name names the system.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	ordersKey, ordersHash := tokenservice.NewAPIKey()
	tokens := memory.NewTokenStore()
	ca, srv, roots := serveMutualTLS(t, tokenservice.Config{Tokens: tokens, Systems: []tokenservice.System{
		{Name: "orders", KeySHA256: ordersHash, IssueRoots: true},
		{Name: "billing"}, // certificate only
	}})

	httpClient := func(certPEM, keyPEM []byte) *http.Client {
		cfg := &tls.Config{RootCAs: roots}
		if certPEM != nil {
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	newClient := func(key string, hc *http.Client) *client.Client {
		c, err := client.New(srv.URL, key, client.Options{HTTPClient: hc})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := t.Context()

	// orders authenticates with its key alone: a certificate is optional.
	orders := newClient(ordersKey, httpClient(nil, nil))
	var issued []baton.Token
	for _, tok := range []baton.Token{rootToken("orders"), rootToken("billing")} {
		root, err := orders.Issue(ctx, tok)
		if err != nil {
			t.Fatalf("Issue with a key over TLS: %v", err)
		}
		issued = append(issued, root)
	}
	forOrders, forBilling := issued[0], issued[1]

	// billing authenticates with its certificate alone.
	billingCert, billingKey := ca.issue(t, "billing", false)
	billing := newClient("", httpClient(billingCert, billingKey))
	if _, err := billing.Get(ctx, forBilling.ID); err != nil {
		t.Errorf("billing reading its token by certificate: %v", err)
	}
	if _, err := billing.Transition(ctx, forOrders.ID, nil); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("billing consuming orders' token = %v, want ErrForbidden", err)
	}
	if ok, err := billing.Transition(ctx, forBilling.ID, nil); err != nil || !ok {
		t.Errorf("billing consuming its token by certificate = %v, %v", ok, err)
	}

	// A certificate whose name is not registered is refused.
	strangerCert, strangerKey := ca.issue(t, "stranger", false)
	if _, err := newClient("", httpClient(strangerCert, strangerKey)).Get(ctx, forOrders.ID); !errors.Is(err, client.ErrUnauthorized) {
		t.Errorf("unregistered certificate = %v, want ErrUnauthorized", err)
	}
	// A key and a certificate of different systems are refused.
	if _, err := newClient(ordersKey, httpClient(billingCert, billingKey)).Get(ctx, forOrders.ID); !errors.Is(err, client.ErrUnauthorized) {
		t.Errorf("orders' key with billing's certificate = %v, want ErrUnauthorized", err)
	}
	// A certificate from another CA fails the handshake; nothing is served.
	rogue := newAuthority(t, "rogue CA")
	rogueCert, rogueKey := rogue.issue(t, "billing", false)
	if _, err := newClient("", httpClient(rogueCert, rogueKey)).Get(ctx, forOrders.ID); err == nil {
		t.Error("a certificate from an unknown CA was accepted")
	}
	// Nor does a client without credentials get anywhere.
	if _, err := newClient("", httpClient(nil, nil)).Get(ctx, forOrders.ID); !errors.Is(err, client.ErrUnauthorized) {
		t.Errorf("no credentials over TLS = %v, want ErrUnauthorized", err)
	}
	if _, err := tokens.Get(ctx, forOrders.ID); err != nil {
		t.Errorf("orders' root was touched: %v", err)
	}
	if _, err := tokens.Get(ctx, forBilling.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("billing's root is still live: %v", err)
	}
}

// A client certificate whose subject has several common names is refused,
// whichever of them a system has: pkix.Name keeps the last, so
// "CN=nobody, CN=billing" authenticated as billing, an identity that a CA
// checking the first name never vetted (found in review).
func TestMutualTLSRefusesSeveralCommonNames(t *testing.T) {
	t.Parallel()
	ca, srv, roots := serveMutualTLS(t, tokenservice.Config{Tokens: memory.NewTokenStore(), Systems: []tokenservice.System{{Name: "billing"}}})
	get := func(certPEM, keyPEM []byte) int {
		t.Helper()
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}}}
		resp, err := hc.Get(srv.URL + "/v1/tokens/" + baton.NewTokenID().String())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	commonName := asn1.ObjectIdentifier{2, 5, 4, 3}
	names := func(cns ...string) pkix.Name {
		var n pkix.Name
		for _, cn := range cns {
			n.ExtraNames = append(n.ExtraNames, pkix.AttributeTypeAndValue{Type: commonName, Value: cn})
		}
		return n
	}

	if status := get(ca.issueFor(t, names("billing"), false)); status != http.StatusNotFound {
		t.Errorf("billing's certificate: %d, want 404 (authenticated, no such token)", status)
	}
	for _, cns := range [][]string{{"nobody", "billing"}, {"billing", "nobody"}, {"billing", "billing"}} {
		if status := get(ca.issueFor(t, names(cns...), false)); status != http.StatusUnauthorized {
			t.Errorf("certificate with the common names %q, in this order: %d, want 401", cns, status)
		}
	}
}

func TestTLSConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newAuthority(t, "ca")
	cert, key := ca.issue(t, "server", true)
	certFile, keyFile := writeFile(t, dir, "c.pem", cert), writeFile(t, dir, "k.pem", key)
	if _, err := tokenservice.TLSConfig(certFile, filepath.Join(dir, "missing"), ""); !errors.Is(err, tokenservice.ErrInvalidConfig) {
		t.Errorf("missing key file: %v", err)
	}
	if _, err := tokenservice.TLSConfig(certFile, keyFile, writeFile(t, dir, "empty.pem", []byte("no pem here"))); !errors.Is(err, tokenservice.ErrInvalidConfig) {
		t.Errorf("CA file without PEM: %v", err)
	}
	cfg, err := tokenservice.TLSConfig(certFile, keyFile, "")
	if err != nil || cfg.ClientAuth != tls.NoClientCert {
		t.Errorf("without a client CA: %v, client auth %v", err, cfg.ClientAuth)
	}
}
