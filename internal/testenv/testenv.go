// Package testenv finds the real services that integration tests need.
//
// A test asks for a service by its environment variable. If the variable is
// set, the test uses it and fails when the service does not answer. If it is
// unset, the test skips with a loud message, except under CI=true, where it
// falls back to the machine's default address and fails when nothing
// answers there: CI must never pass by skipping.
package testenv

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// Service names an external service used by integration tests.
type Service struct {
	Env     string // environment variable holding its address
	Default string // address on the development and CI machines
}

// The services that the integration tests use, as .ci/run sets them.
var (
	Postgres = Service{"BATON_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"}
	Redis    = Service{"BATON_TEST_REDIS", "redis://127.0.0.1:6379/0"}
	RabbitMQ = Service{"BATON_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/"}
	NATS     = Service{"BATON_TEST_NATS", "nats://127.0.0.1:4222"}
	// MySQL takes a go-sql-driver/mysql DSN, not a URL.
	MySQL = Service{"BATON_TEST_MYSQL", "root@tcp(127.0.0.1:3306)/test"}
)

// CI reports whether the tests run under CI (CI=true), where nothing may be
// skipped for want of a service.
func CI() bool { return os.Getenv("CI") == "true" }

// Addr returns the service's address, or skips the test loudly when it is
// not configured outside CI. It fails the test if the address does not
// accept TCP connections.
func Addr(t testing.TB, s Service) string {
	t.Helper()
	addr := os.Getenv(s.Env)
	if addr == "" {
		if !CI() {
			t.Skipf("SKIPPED: %s is not set; set it (for example %s=%s) to run this test against the real service", s.Env, s.Env, s.Default)
		}
		addr = s.Default
	}
	host, err := hostPort(addr)
	if err != nil {
		t.Fatalf("%s=%q: %v", s.Env, addr, err)
	}
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: service at %s does not answer: %v (start it; .ci/run starts every service before the tests)", s.Env, host, err)
	}
	conn.Close()
	return addr
}

func hostPort(addr string) (string, error) {
	if _, rest, ok := strings.Cut(addr, "@tcp("); ok { // a MySQL DSN
		host, _, ok := strings.Cut(rest, ")")
		if !ok {
			return "", fmt.Errorf("DSN has no closing parenthesis after tcp(")
		}
		return host, nil
	}
	if !strings.Contains(addr, "://") {
		return addr, nil
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", err
	}
	if u.Port() == "" {
		return "", fmt.Errorf("address has no port")
	}
	return u.Host, nil
}
