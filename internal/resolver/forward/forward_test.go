package forward

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/upstream"
)

const clientID = 0x1234

// server is a test upstream on 127.0.0.1 answering with rcode and, for
// NOERROR, one A record holding addr. A silent server never answers.
type server struct {
	addr    netip.AddrPort
	queries atomic.Int64
}

func startServer(t *testing.T, rcode int, addr string, silent bool) *server {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: conn.LocalAddr().(*net.UDPAddr).AddrPort()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65535)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.queries.Add(1)
			if silent {
				continue
			}
			var req dns.Msg
			if err := req.Unpack(buf[:n]); err != nil {
				t.Error(err)
				continue
			}
			m := new(dns.Msg)
			m.SetRcode(&req, rcode)
			if rcode == dns.RcodeSuccess {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.ParseIP(addr),
				})
			}
			out, err := m.Pack()
			if err != nil {
				t.Error(err)
				continue
			}
			conn.WriteToUDPAddrPort(out, from)
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		wg.Wait()
	})
	return s
}

// closedPort returns a loopback UDP address nothing listens on.
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

func request(t *testing.T) *resolver.Request {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("www.example.org.", dns.TypeA)
	m.Id = clientID
	msg, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	r := &resolver.Request{Msg: msg}
	if err := dnswire.ParseQuery(msg, &r.Query); err != nil {
		t.Fatal(err)
	}
	return r
}

func newForward(t *testing.T, timeout time.Duration, logger *slog.Logger, servers ...netip.AddrPort) *Forward {
	t.Helper()
	c, err := upstream.New(upstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return New(c, servers, timeout, logger)
}

// serve runs f on a fresh request with a prefixed dst and returns the
// answer without the prefix.
func serve(t *testing.T, ctx context.Context, f *Forward) (*dns.Msg, error) {
	t.Helper()
	out, err := f.ServeDNS(ctx, request(t), []byte("prefix"))
	if !strings.HasPrefix(string(out), "prefix") {
		t.Fatalf("dst prefix lost: %q", out)
	}
	if err != nil {
		if len(out) != len("prefix") {
			t.Errorf("error %v with %d bytes appended", err, len(out)-len("prefix"))
		}
		return nil, err
	}
	var m dns.Msg
	if err := m.Unpack(out[len("prefix"):]); err != nil {
		t.Fatalf("unpack answer: %v", err)
	}
	if m.Id != clientID {
		t.Errorf("answer ID %#x, want the client's", m.Id)
	}
	return &m, nil
}

func answerA(t *testing.T, m *dns.Msg) string {
	t.Helper()
	if len(m.Answer) != 1 {
		t.Fatalf("answer %v", m)
	}
	return m.Answer[0].(*dns.A).A.String()
}

func TestOrder(t *testing.T) {
	first := startServer(t, dns.RcodeSuccess, "192.0.2.1", false)
	second := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
	f := newForward(t, time.Second, nil, first.addr, second.addr)
	for range 10 {
		m, err := serve(t, context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		if got := answerA(t, m); got != "192.0.2.1" {
			t.Errorf("answer from %s, want the first server", got)
		}
	}
	if n := second.queries.Load(); n != 0 {
		t.Errorf("second server asked %d times", n)
	}
}

func TestFailoverAfterSilentServer(t *testing.T) {
	silent := startServer(t, 0, "", true)
	good := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
	const timeout = 200 * time.Millisecond
	f := newForward(t, timeout, nil, silent.addr, good.addr)
	start := time.Now()
	m, err := serve(t, context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if got := answerA(t, m); got != "192.0.2.2" {
		t.Errorf("answer %s", got)
	}
	if d := time.Since(start); d < timeout || d > timeout+3*time.Second {
		t.Errorf("answered after %v, want a little over %v", d, timeout)
	}
	if silent.queries.Load() != 1 {
		t.Errorf("silent server asked %d times", silent.queries.Load())
	}
}

func TestFailoverAfterClosedPort(t *testing.T) {
	good := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
	f := newForward(t, 10*time.Second, nil, closedPort(t), good.addr)
	start := time.Now()
	m, err := serve(t, context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if got := answerA(t, m); got != "192.0.2.2" {
		t.Errorf("answer %s", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("port unreachable waited %v, not failing at once", d)
	}
}

func TestAllFailed(t *testing.T) {
	a := startServer(t, 0, "", true)
	b := startServer(t, 0, "", true)
	f := newForward(t, 100*time.Millisecond, nil, a.addr, b.addr)
	if _, err := serve(t, context.Background(), f); !errors.Is(err, ErrAllFailed) || !errors.Is(err, upstream.ErrTimeout) {
		t.Errorf("err %v, want ErrAllFailed wrapping the timeout", err)
	}
	if a.queries.Load() != 1 || b.queries.Load() != 1 {
		t.Errorf("queries %d, %d; want each server asked once", a.queries.Load(), b.queries.Load())
	}
	f = newForward(t, 100*time.Millisecond, nil)
	if _, err := serve(t, context.Background(), f); !errors.Is(err, ErrAllFailed) {
		t.Errorf("no servers: err %v, want ErrAllFailed", err)
	}
}

func TestRcodes(t *testing.T) {
	servfail := startServer(t, dns.RcodeServerFailure, "", false)
	refused := startServer(t, dns.RcodeRefused, "", false)
	nxdomain := startServer(t, dns.RcodeNameError, "", false)
	good := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
	silent := startServer(t, 0, "", true)
	for _, tc := range []struct {
		name    string
		servers []*server
		rcode   int
	}{
		{"refused then good", []*server{refused, good}, dns.RcodeSuccess},
		{"servfail then good", []*server{servfail, good}, dns.RcodeSuccess},
		{"servfail, refused, silent: last answer", []*server{servfail, refused, silent}, dns.RcodeRefused},
		{"silent then servfail", []*server{silent, servfail}, dns.RcodeServerFailure},
		{"nxdomain passes through", []*server{nxdomain, good}, dns.RcodeNameError},
		{"refused then nxdomain", []*server{refused, nxdomain}, dns.RcodeNameError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var addrs []netip.AddrPort
			for _, s := range tc.servers {
				addrs = append(addrs, s.addr)
			}
			f := newForward(t, 100*time.Millisecond, nil, addrs...)
			m, err := serve(t, context.Background(), f)
			if err != nil {
				t.Fatal(err)
			}
			if m.Rcode != tc.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.rcode])
			}
			if tc.rcode == dns.RcodeSuccess {
				answerA(t, m)
			}
		})
	}
}

func TestContextEndsTheChain(t *testing.T) {
	silent := startServer(t, 0, "", true)
	good := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
	f := newForward(t, time.Second, nil, silent.addr, good.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := serve(t, ctx, f); !errors.Is(err, ErrAllFailed) {
		t.Errorf("err %v, want ErrAllFailed", err)
	}
	if n := good.queries.Load(); n != 0 {
		t.Errorf("second server asked %d times after the context ended", n)
	}
}

// records collects log records.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *records) Enabled(context.Context, slog.Level) bool { return true }
func (h *records) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *records) WithGroup(string) slog.Handler            { return h }
func (h *records) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r)
	h.mu.Unlock()
	return nil
}

func (h *records) failures(t *testing.T) []int64 {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []int64
	for _, r := range h.recs {
		if r.Level != slog.LevelWarn {
			t.Errorf("logged at %v: %s", r.Level, r.Message)
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "failures" {
				out = append(out, int64(a.Value.Uint64()))
			}
			return true
		})
	}
	return out
}

func TestFailureLogRateLimited(t *testing.T) {
	h := &records{}
	refused := startServer(t, dns.RcodeRefused, "", false)
	f := newForward(t, time.Second, slog.New(h), refused.addr)
	for range 5 {
		if _, err := serve(t, context.Background(), f); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.failures(t); len(got) != 1 || got[0] != 1 {
		t.Fatalf("failures logged %v, want one line for the first", got)
	}
	f.health[0].mu.Lock()
	f.health[0].last = time.Now().Add(-logInterval)
	f.health[0].mu.Unlock()
	if _, err := serve(t, context.Background(), f); err != nil {
		t.Fatal(err)
	}
	if got := h.failures(t); len(got) != 2 || got[1] != 5 {
		t.Errorf("failures logged %v, want a second line counting 5", got)
	}
}
