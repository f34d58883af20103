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
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/upstream"
)

const clientID = 0x1234

// testServer is a test upstream on 127.0.0.1 answering with rcode and, for
// NOERROR, one A record holding a. While silent it answers nothing.
type testServer struct {
	addr    netip.AddrPort
	a       string
	queries atomic.Int64 // every datagram, probes included
	probes  atomic.Int64 // ". NS" queries
	silent  atomic.Bool
	// slowZone, when set, is a domain whose names get no answer: the
	// server is silent for them only.
	slowZone atomic.Pointer[string]
}

func startServer(t *testing.T, rcode int, a string, silent bool) *testServer {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), a: a}
	s.silent.Store(silent)
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
			var req dns.Msg
			if err := req.Unpack(buf[:n]); err != nil {
				t.Error(err)
				continue
			}
			if req.Question[0].Name == "." && req.Question[0].Qtype == dns.TypeNS {
				s.probes.Add(1)
			}
			if s.silent.Load() {
				continue
			}
			if z := s.slowZone.Load(); z != nil && dns.IsSubDomain(*z, req.Question[0].Name) {
				continue
			}
			m := new(dns.Msg)
			m.SetRcode(&req, rcode)
			if rcode == dns.RcodeSuccess && req.Question[0].Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.ParseIP(a),
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

func requestFor(t *testing.T, name string) *resolver.Request {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
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

func addrs(servers ...*testServer) []netip.AddrPort {
	var out []netip.AddrPort
	for _, s := range servers {
		out = append(out, s.addr)
	}
	return out
}

// newForward returns a Forward on a fresh client, closed with the test.
func newForward(t *testing.T, cfg Config) *Forward {
	t.Helper()
	c, err := upstream.New(upstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		c.Close()
	})
	return f
}

// serveName runs f for name with a prefixed dst and returns the answer
// without the prefix.
func serveName(t *testing.T, ctx context.Context, f *Forward, name string) (*dns.Msg, error) {
	t.Helper()
	out, err := f.ServeDNS(ctx, requestFor(t, name), []byte("prefix"))
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

func serve(t *testing.T, ctx context.Context, f *Forward) (*dns.Msg, error) {
	t.Helper()
	return serveName(t, ctx, f, "www.example.org.")
}

func answerA(t *testing.T, m *dns.Msg) string {
	t.Helper()
	if len(m.Answer) != 1 {
		t.Fatalf("answer %v", m)
	}
	return m.Answer[0].(*dns.A).A.String()
}

// mustAnswer serves one query and returns the A record it got.
func mustAnswer(t *testing.T, f *Forward) string {
	t.Helper()
	m, err := serve(t, context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	return answerA(t, m)
}

// waitUp polls until server i of f is up (or down when up is false).
func waitUp(t *testing.T, f *Forward, i int, up bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.Health()[i].Up != up {
		if time.Now().After(deadline) {
			t.Fatalf("server %d: up %v after 5s, want %v: %+v", i, !up, up, f.Health()[i])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSequential(t *testing.T) {
	first := startServer(t, dns.RcodeSuccess, "192.0.2.1", false)
	second := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
	f := newForward(t, Config{Servers: addrs(first, second), Timeout: time.Second})
	for range 10 {
		if got := mustAnswer(t, f); got != "192.0.2.1" {
			t.Errorf("answer from %s, want the first server", got)
		}
	}
	if n := second.queries.Load(); n != 0 {
		t.Errorf("second server asked %d times", n)
	}
}

func TestRoundRobin(t *testing.T) {
	a := startServer(t, dns.RcodeSuccess, "192.0.2.1", false)
	b := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
	c := startServer(t, dns.RcodeSuccess, "192.0.2.3", false)
	f := newForward(t, Config{Servers: addrs(a, b, c), Policy: RoundRobin, Timeout: time.Second})
	var got []string
	for range 30 {
		got = append(got, mustAnswer(t, f))
	}
	for i := 3; i < len(got); i++ {
		if got[i] != got[i-3] || got[i] == got[i-1] {
			t.Fatalf("answers do not rotate: %v", got)
		}
	}
	for _, s := range []*testServer{a, b, c} {
		if n := s.queries.Load(); n != 10 {
			t.Errorf("server %s asked %d times, want 10", s.a, n)
		}
	}
}

func TestRandom(t *testing.T) {
	a := startServer(t, dns.RcodeSuccess, "192.0.2.1", false)
	b := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
	c := startServer(t, dns.RcodeSuccess, "192.0.2.3", false)
	f := newForward(t, Config{Servers: addrs(a, b, c), Policy: Random, Timeout: time.Second})
	for range 300 {
		mustAnswer(t, f)
	}
	// Each expects 100; below 50 has a probability far under 1e-9.
	for _, s := range []*testServer{a, b, c} {
		if n := s.queries.Load(); n < 50 {
			t.Errorf("server %s asked %d times of 300", s.a, n)
		}
	}
}

func TestOrderPolicies(t *testing.T) {
	servers := []*server{{addr: netip.MustParseAddrPort("127.0.0.1:1")}, {addr: netip.MustParseAddrPort("127.0.0.1:2")},
		{addr: netip.MustParseAddrPort("127.0.0.1:3")}, {addr: netip.MustParseAddrPort("127.0.0.1:4")}}
	servers[1].down.Store(true)
	st := &set{servers: servers}
	ports := func(order []*server) []uint16 {
		var out []uint16
		for _, s := range order {
			out = append(out, s.addr.Port())
		}
		return out
	}
	if got := ports(st.order(Sequential, nil)); !equal(got, []uint16{1, 3, 4, 2}) {
		t.Errorf("sequential %v", got)
	}
	for _, want := range [][]uint16{{1, 3, 4, 2}, {3, 4, 1, 2}, {4, 1, 3, 2}, {1, 3, 4, 2}} {
		if got := ports(st.order(RoundRobin, nil)); !equal(got, want) {
			t.Errorf("round robin %v, want %v", got, want)
		}
	}
	for range 20 {
		if got := ports(st.order(Random, nil)); len(got) != 4 || got[3] != 2 {
			t.Errorf("random %v: the down server must come last", got)
		}
	}
	var stack [maxStackServers]*server
	if n := testing.AllocsPerRun(100, func() { st.order(Random, stack[:0]) }); n != 0 {
		t.Errorf("order allocates %v times", n)
	}
}

func equal(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDeadServerCostsOneTimeout is the requirement: after the first
// server dies, one query pays its timeout and the next ones go straight to
// the healthy server.
func TestDeadServerCostsOneTimeout(t *testing.T) {
	for _, p := range []Policy{Sequential, RoundRobin, Random} {
		t.Run(p.String(), func(t *testing.T) {
			dead := startServer(t, 0, "", true)
			good := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
			logs := &records{}
			f := newForward(t, Config{
				Servers: addrs(dead, good), Policy: p, Timeout: 500 * time.Millisecond,
				ProbeInterval: time.Hour, Logger: slog.New(logs),
			})
			for range 20 {
				if got := mustAnswer(t, f); got != "192.0.2.2" {
					t.Errorf("answer %s", got)
				}
			}
			if n := dead.queries.Load() - dead.probes.Load(); n > 1 {
				t.Errorf("dead server asked %d queries, want at most one", n)
			}
			if n := dead.queries.Load() - dead.probes.Load(); p == Sequential && n != 1 {
				t.Errorf("dead first server asked %d queries, want one", n)
			}
			if dead.queries.Load()-dead.probes.Load() == 1 {
				// Its check probe fails too: it is marked down.
				waitUp(t, f, 0, false)
				h := f.Health()[0]
				if h.ConsecutiveFailures != 2 || !errors.Is(h.LastError, upstream.ErrTimeout) || h.Server != dead.addr {
					t.Errorf("health %+v", h)
				}
				if got := logs.messages(slog.LevelWarn); len(got) != 1 {
					t.Errorf("warnings %v, want one", got)
				}
				st := f.Stats()
				if st["marked_down"] != 1 || st["servers_down"] != 1 || st["timeouts"] != 1 || st["checks"] != 1 ||
					st["checks_passed"] != 0 || st["probes"] != 1 || st["probe_failures"] != 1 {
					t.Errorf("stats %v", st)
				}
			}
			if h := f.Health()[1]; !h.Up || h.LastRTT <= 0 || h.AvgRTT <= 0 || h.LastError != nil {
				t.Errorf("healthy server %+v", h)
			}
		})
	}
}

func TestConcurrentFailover(t *testing.T) {
	dead := startServer(t, 0, "", true)
	good := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
	f := newForward(t, Config{Servers: addrs(dead, good), Timeout: 500 * time.Millisecond, ProbeInterval: time.Hour})
	const workers = 20
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if _, err := serve(t, context.Background(), f); err != nil {
					t.Error(err)
				}
				f.Health()
				f.Stats()
			}
		}()
	}
	wg.Wait()
	// Only the queries in flight when it died may have asked it.
	if n := dead.queries.Load() - dead.probes.Load(); n < 1 || n > workers {
		t.Errorf("dead server asked %d queries", n)
	}
	waitUp(t, f, 0, false)
	if st := f.Stats(); st["marked_down"] != 1 || st["answered"] != workers*10 {
		t.Errorf("stats %v", st)
	}
}

func TestProbeRevivesServer(t *testing.T) {
	first := startServer(t, dns.RcodeSuccess, "192.0.2.1", true)
	second := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
	logs := &records{}
	f := newForward(t, Config{
		Servers: addrs(first, second), Timeout: 500 * time.Millisecond,
		ProbeInterval: 20 * time.Millisecond, Logger: slog.New(logs),
	})
	if got := mustAnswer(t, f); got != "192.0.2.2" {
		t.Fatalf("answer %s", got)
	}
	waitUp(t, f, 0, false)
	// Probes keep coming while it is down; queries do not.
	deadline := time.Now().Add(5 * time.Second)
	for first.probes.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if first.probes.Load() < 2 {
		t.Fatalf("%d probes", first.probes.Load())
	}
	if got := mustAnswer(t, f); got != "192.0.2.2" {
		t.Fatalf("answer %s while the first server is down", got)
	}
	first.silent.Store(false)
	waitUp(t, f, 0, true)
	if got := mustAnswer(t, f); got != "192.0.2.1" {
		t.Errorf("answer %s after the first server came back", got)
	}
	if got := logs.messages(slog.LevelWarn); len(got) != 1 {
		t.Errorf("warnings %v, want one", got)
	}
	if got := logs.messages(slog.LevelInfo); len(got) != 1 || !strings.Contains(got[0], "up") {
		t.Errorf("info %v, want one", got)
	}
	st := f.Stats()
	if st["marked_up"] != 1 || st["servers_down"] != 0 || st["probes"] < 2 || st["probe_failures"] < 1 {
		t.Errorf("stats %v", st)
	}
	// The probe goroutine ends once the server is up: no probe later.
	n := first.probes.Load()
	time.Sleep(100 * time.Millisecond)
	if m := first.probes.Load(); m != n {
		t.Errorf("probes went on after the server came back: %d -> %d", n, m)
	}
	// It can go down and come back again.
	first.silent.Store(true)
	mustAnswer(t, f)
	waitUp(t, f, 0, false)
	first.silent.Store(false)
	waitUp(t, f, 0, true)
}

func TestAllDownStillTried(t *testing.T) {
	a := startServer(t, dns.RcodeSuccess, "192.0.2.1", true)
	b := startServer(t, dns.RcodeSuccess, "192.0.2.2", true)
	f := newForward(t, Config{Servers: addrs(a, b), Timeout: 300 * time.Millisecond, ProbeInterval: time.Hour})
	for range 2 {
		if _, err := serve(t, context.Background(), f); !errors.Is(err, ErrAllFailed) || !errors.Is(err, upstream.ErrTimeout) {
			t.Fatalf("err %v, want ErrAllFailed wrapping the timeout", err)
		}
	}
	if na, nb := a.queries.Load()-a.probes.Load(), b.queries.Load()-b.probes.Load(); na != 2 || nb != 2 {
		t.Errorf("queries %d, %d; want each server asked every time", na, nb)
	}
	waitUp(t, f, 0, false)
	waitUp(t, f, 1, false)
	if h := f.Health(); h[0].ConsecutiveFailures != 3 {
		t.Errorf("health %+v, want 2 queries and a probe failed", h)
	}
	// A down server that answers a query is up again.
	b.silent.Store(false)
	if got := mustAnswer(t, f); got != "192.0.2.2" {
		t.Errorf("answer %s", got)
	}
	if h := f.Health(); h[0].Up || !h[1].Up || h[1].ConsecutiveFailures != 0 {
		t.Errorf("health %+v", h)
	}
	if n := a.queries.Load() - a.probes.Load(); n != 3 {
		t.Errorf("first server asked %d queries, want 3", n)
	}
}

// TestRefusedPortMarksDownAfterCheck: a port unreachable fails at once,
// and so does the check probe: the server is marked down without waiting
// for any timeout.
func TestRefusedPortMarksDownAfterCheck(t *testing.T) {
	good := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
	f := newForward(t, Config{Servers: []netip.AddrPort{closedPort(t), good.addr}, Timeout: 10 * time.Second, ProbeInterval: time.Hour})
	start := time.Now()
	if got := mustAnswer(t, f); got != "192.0.2.2" {
		t.Errorf("answer %s", got)
	}
	waitUp(t, f, 0, false)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("port unreachable took %v to mark the server down, not failing at once", d)
	}
	h := f.Health()[0]
	if h.ConsecutiveFailures != 2 || !errors.Is(h.LastError, syscall.ECONNREFUSED) {
		t.Errorf("health %+v", h)
	}
}

func TestAnswersKeepServerUp(t *testing.T) {
	servfail := startServer(t, dns.RcodeServerFailure, "", false)
	good := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
	f := newForward(t, Config{Servers: addrs(servfail, good), Timeout: time.Second})
	for range 5 {
		mustAnswer(t, f)
	}
	if n := servfail.queries.Load(); n != 5 {
		t.Errorf("SERVFAIL server asked %d times, want every time", n)
	}
	if h := f.Health()[0]; !h.Up || h.ConsecutiveFailures != 0 {
		t.Errorf("health %+v", h)
	}
	if st := f.Stats(); st["bad_rcodes"] != 5 || st["failovers"] != 5 || st["answered"] != 5 {
		t.Errorf("stats %v", st)
	}
}

func TestAllFailedNoServers(t *testing.T) {
	f := newForward(t, Config{Timeout: 100 * time.Millisecond})
	if _, err := serve(t, context.Background(), f); !errors.Is(err, ErrAllFailed) {
		t.Errorf("no servers: err %v, want ErrAllFailed", err)
	}
	if st := f.Stats(); st["failed"] != 1 {
		t.Errorf("stats %v", st)
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
		servers []*testServer
		rcode   int
	}{
		{"refused then good", []*testServer{refused, good}, dns.RcodeSuccess},
		{"servfail then good", []*testServer{servfail, good}, dns.RcodeSuccess},
		{"servfail, refused, silent: last answer", []*testServer{servfail, refused, silent}, dns.RcodeRefused},
		{"silent then servfail", []*testServer{silent, servfail}, dns.RcodeServerFailure},
		{"nxdomain passes through", []*testServer{nxdomain, good}, dns.RcodeNameError},
		{"refused then nxdomain", []*testServer{refused, nxdomain}, dns.RcodeNameError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newForward(t, Config{Servers: addrs(tc.servers...), Timeout: 300 * time.Millisecond})
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
	f := newForward(t, Config{Servers: addrs(silent, good), Timeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := serve(t, ctx, f); !errors.Is(err, ErrAllFailed) {
		t.Errorf("err %v, want ErrAllFailed", err)
	}
	if n := good.queries.Load(); n != 0 {
		t.Errorf("second server asked %d times after the context ended", n)
	}
	// The query's end says nothing about the server.
	if h := f.Health()[0]; !h.Up || h.ConsecutiveFailures != 0 {
		t.Errorf("health %+v", h)
	}
}

func TestZones(t *testing.T) {
	def := startServer(t, dns.RcodeSuccess, "192.0.2.1", false)
	corp := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
	example := startServer(t, dns.RcodeSuccess, "192.0.2.3", false)
	lab := startServer(t, dns.RcodeSuccess, "192.0.2.4", false)
	f := newForward(t, Config{
		Servers: addrs(def),
		Zones: []Zone{
			{Name: "example.com", Servers: addrs(example)},
			{Name: "Corp.Example.COM.", Servers: addrs(corp, def)},
			{Name: "lab.test", Servers: addrs(lab)},
		},
		Timeout: time.Second,
	})
	for _, tc := range []struct {
		name string
		set  uint32
		a    string
	}{
		{"www.corp.example.com.", 2, "192.0.2.2"},
		{"CORP.example.Com.", 2, "192.0.2.2"}, // the apex, another case
		{"a.b.Corp.Example.com.", 2, "192.0.2.2"},
		{"xcorp.example.com.", 1, "192.0.2.3"}, // not below corp: label-wise
		{"example.com.", 1, "192.0.2.3"},
		{"www.example.com.", 1, "192.0.2.3"},
		{"com.", 0, "192.0.2.1"},
		{"example.com.org.", 0, "192.0.2.1"},
		{"www.example.org.", 0, "192.0.2.1"},
		{"lab.test.", 3, "192.0.2.4"},
		{"vm1.LAB.test.", 3, "192.0.2.4"},
		{"test.", 0, "192.0.2.1"},
		{".", 0, ""},
	} {
		if got := f.Set(requestFor(t, tc.name)); got != tc.set {
			t.Errorf("Set(%s) = %d, want %d", tc.name, got, tc.set)
		}
		if tc.a == "" {
			continue
		}
		m, err := serveName(t, context.Background(), f, tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if got := answerA(t, m); got != tc.a {
			t.Errorf("%s answered by %s, want %s", tc.name, got, tc.a)
		}
	}
	if st := f.Stats(); st["zone_queries"] != 8 {
		t.Errorf("stats %v", st)
	}
	// The default server appears in two sets but has one health state.
	if h := f.Health(); len(h) != 4 || h[0].Server != def.addr || h[3].Server != lab.addr {
		t.Errorf("health %+v", h)
	}
	r := requestFor(t, "www.corp.example.com.")
	if n := testing.AllocsPerRun(100, func() { f.Set(r) }); n != 0 {
		t.Errorf("Set allocates %v times", n)
	}
}

func TestRootZone(t *testing.T) {
	def := startServer(t, dns.RcodeSuccess, "192.0.2.1", false)
	root := startServer(t, dns.RcodeSuccess, "192.0.2.9", false)
	f := newForward(t, Config{Servers: addrs(def), Zones: []Zone{{Name: ".", Servers: addrs(root)}}})
	if got := mustAnswer(t, f); got != "192.0.2.9" {
		t.Errorf("answer %s, want the root zone's server", got)
	}
}

func TestParseZones(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		in   string
		want []Zone
	}{
		{"", nil},
		{" ; \n ", nil},
		{"corp.example.com=10.1.1.1:53,10.1.1.2; lab.test=[2001:db8::1]:5353", []Zone{
			{"corp.example.com", []netip.AddrPort{ap("10.1.1.1:53"), ap("10.1.1.2:53")}},
			{"lab.test", []netip.AddrPort{ap("[2001:db8::1]:5353")}},
		}},
		{"\n a.example. = 2001:db8::2 , ::ffff:10.0.0.1\nb.example=10.0.0.2:5300;\n", []Zone{
			{"a.example.", []netip.AddrPort{ap("[2001:db8::2]:53"), ap("10.0.0.1:53")}},
			{"b.example", []netip.AddrPort{ap("10.0.0.2:5300")}},
		}},
		{".=10.0.0.3", []Zone{{".", []netip.AddrPort{ap("10.0.0.3:53")}}}},
	} {
		got, err := ParseZones(tc.in)
		if err != nil {
			t.Errorf("ParseZones(%q): %v", tc.in, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("ParseZones(%q) = %v, want %v", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i].Name != tc.want[i].Name || len(got[i].Servers) != len(tc.want[i].Servers) {
				t.Errorf("ParseZones(%q)[%d] = %v, want %v", tc.in, i, got[i], tc.want[i])
				continue
			}
			for j := range got[i].Servers {
				if got[i].Servers[j] != tc.want[i].Servers[j] {
					t.Errorf("ParseZones(%q)[%d] = %v, want %v", tc.in, i, got[i], tc.want[i])
				}
			}
		}
	}
	for _, tc := range []struct{ in, entry string }{
		{"corp.example.com", "corp.example.com"},
		{"ok.example=10.0.0.1; corp.example.com 10.0.0.1", "corp.example.com 10.0.0.1"},
		{"=10.0.0.1", "=10.0.0.1"},
		{"bad..name=10.0.0.1", "bad..name"},
		{"sp ace.example=10.0.0.1", "sp ace"},
		{`esc\.aped=10.0.0.1`, `esc\\.aped`},
		{strings.Repeat("a", 64) + ".example=10.0.0.1", "aaaa"},
		{"empty.example=", "empty.example="},
		{"empty.example= , ", "empty.example"},
		{"host.example=10.0.0.1:0", "10.0.0.1:0"},
		{"host.example=0.0.0.0", "0.0.0.0"},
		{"host.example=[::]:53", "[::]:53"},
		{"host.example=dns.example", "dns.example"},
		{"host.example=2001:db8::1:5353:x", "2001:db8::1:5353:x"},
		{"host.example=10.0.0.1:99999", "10.0.0.1:99999"},
		{"dup.example=10.0.0.1; DUP.example.=10.0.0.2", "DUP.example."},
	} {
		_, err := ParseZones(tc.in)
		if err == nil {
			t.Errorf("ParseZones(%q) accepted", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.entry) {
			t.Errorf("ParseZones(%q): error %q does not name %q", tc.in, err, tc.entry)
		}
	}
}

func TestNewErrors(t *testing.T) {
	c, err := upstream.New(upstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	good := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"policy", Config{Servers: good, Policy: Random + 1}},
		{"negative timeout", Config{Servers: good, Timeout: -1}},
		{"negative probe interval", Config{Servers: good, ProbeInterval: -1}},
		{"port 0", Config{Servers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}}},
		{"zero server", Config{Servers: []netip.AddrPort{{}}}},
		{"zone without servers", Config{Servers: good, Zones: []Zone{{Name: "a.example"}}}},
		{"bad zone name", Config{Servers: good, Zones: []Zone{{Name: "a..example", Servers: good}}}},
		{"empty zone name", Config{Servers: good, Zones: []Zone{{Name: "", Servers: good}}}},
		{"duplicate zone", Config{Servers: good, Zones: []Zone{{Name: "a.example", Servers: good}, {Name: "A.example.", Servers: good}}}},
		{"bad zone server", Config{Servers: good, Zones: []Zone{{Name: "a.example", Servers: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:53")}}}}},
	} {
		if _, err := New(c, tc.cfg); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, err := New(nil, Config{Servers: good}); err == nil {
		t.Error("nil client accepted")
	}
}

func TestPolicyNames(t *testing.T) {
	for _, p := range []Policy{Sequential, RoundRobin, Random} {
		got, err := ParsePolicy(strings.ToUpper(p.String()))
		if err != nil || got != p {
			t.Errorf("ParsePolicy(%s) = %v, %v", p, got, err)
		}
	}
	if _, err := ParsePolicy("fastest"); err == nil {
		t.Error("unknown policy accepted")
	}
	if s := Policy(7).String(); s != "Policy(7)" {
		t.Errorf("String %q", s)
	}
}

func TestCloseStopsProbes(t *testing.T) {
	dead := startServer(t, 0, "", true)
	c, err := upstream.New(upstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f, err := New(c, Config{Servers: addrs(dead), Timeout: 50 * time.Millisecond, ProbeInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, context.Background(), f)
	waitUp(t, f, 0, false)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	n := dead.queries.Load()
	time.Sleep(100 * time.Millisecond)
	if m := dead.queries.Load(); m != n {
		t.Errorf("probes after Close: %d -> %d", n, m)
	}
	// Queries still work, and a failure after Close starts no probe.
	serve(t, context.Background(), f)
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

// messages returns the messages logged at level.
func (h *records) messages(level slog.Level) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		if r.Level == level {
			out = append(out, r.Message)
		}
	}
	return out
}
