package rabbitmq

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// proxy is a TCP proxy between the transport and the broker that a test
// can cut (close every connection), make refuse new connections, or make
// hold the broker's replies (so a publish's confirm never arrives).
type proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	refuse bool
	open   chan struct{} // closed while replies flow
	// stall makes new connections pass the broker's first reply
	// (connection.start) and hold the rest until the test ends: a broker
	// that is too slow to finish the handshake.
	stall   bool
	stopped chan struct{} // closed when the test ends
}

func startProxy(t *testing.T, brokerURL string) *proxy {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: u.Host, conns: map[net.Conn]struct{}{}, open: make(chan struct{}), stopped: make(chan struct{})}
	close(p.open)
	go p.serve()
	t.Cleanup(func() {
		close(p.stopped)
		ln.Close()
		p.cut()
		p.holdReplies(false)
	})
	return p
}

// url returns brokerURL with the proxy's address in place of the broker's.
func (p *proxy) url(brokerURL string) string {
	u, _ := url.Parse(brokerURL)
	u.Host = p.ln.Addr().String()
	return u.String()
}

func (p *proxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		p.mu.Unlock()
		if refuse {
			client.Close()
			continue
		}
		broker, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns[client] = struct{}{}
		p.conns[broker] = struct{}{}
		p.mu.Unlock()
		go func() {
			_, _ = io.Copy(broker, client)
			broker.Close()
			client.Close()
		}()
		go func() {
			p.replies(client, broker)
			broker.Close()
			client.Close()
		}()
	}
}

// replies copies the broker's bytes to the client, waiting while they are
// held.
func (p *proxy) replies(client, broker net.Conn) {
	buf := make([]byte, 32<<10)
	p.mu.Lock()
	stall := p.stall
	p.mu.Unlock()
	for sent := 0; ; sent++ {
		n, err := broker.Read(buf)
		if stall && sent > 0 {
			<-p.stopped
			return
		}
		if n > 0 {
			p.mu.Lock()
			open := p.open
			p.mu.Unlock()
			<-open
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cut closes every proxied connection, as a network failure would.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

// setRefuse makes the proxy close new connections at once (the broker is
// unreachable) or accept them again.
func (p *proxy) setRefuse(refuse bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = refuse
}

// holdReplies stops or resumes the bytes from the broker to the client.
func (p *proxy) holdReplies(hold bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		if hold {
			p.open = make(chan struct{})
		}
	default:
		if !hold {
			close(p.open)
		}
	}
}
