package local

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/records"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
)

const (
	netA   = "net-a"
	netB   = "net-b"
	domain = "cloud.example."
	ttl    = 7
)

var synced = time.Unix(1700000000, 0)

// fakeSource serves fixed networks.
type fakeSource map[string]*records.Network

func (f fakeSource) Network(id string) *records.Network { return f[id] }

func mustNetwork(t testing.TB, id string, entries ...records.Entry) *records.Network {
	t.Helper()
	n, err := records.NewNetwork(id, domain, synced, entries)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func entry(port, ip, host string) records.Entry {
	e := records.Entry{Port: port, Addr: netip.MustParseAddr(ip), Hostname: host}
	if host != "" {
		e.FQDN = host + "." + domain
	}
	return e
}

func source(t testing.TB) fakeSource {
	return fakeSource{
		netA: mustNetwork(t, netA,
			entry("a1", "10.0.0.5", "web"),
			entry("a2", "10.0.0.6", "dual"),
			entry("a2", "fd00::6", "dual"),
			entry("a3", "fd00::7", "six"),
			entry("a4", "10.0.0.8", ""),
			records.Entry{Port: "a5", Addr: netip.MustParseAddr("10.0.0.9"), Hostname: "deep", FQDN: "deep.sub.cloud.example."},
		),
		netB: mustNetwork(t, netB,
			entry("b1", "10.0.0.5", "db"),
			entry("b2", "fd00::6", "cache"),
		),
	}
}

// nextStub counts the queries passed to it and answers them REFUSED.
type nextStub struct{ calls int }

func (n *nextStub) ServeDNS(_ context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
	n.calls++
	return dnswire.AppendError(dst, r.Msg, &r.Query, dns.RcodeRefused), nil
}

func request(t testing.TB, network, name string, qtype uint16, mod func(*dns.Msg)) *resolver.Request {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0x4242
	m.RecursionDesired = true
	if mod != nil {
		mod(m)
	}
	msg, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	r := &resolver.Request{Msg: msg, Network: network}
	if err := dnswire.ParseQuery(msg, &r.Query); err != nil {
		t.Fatal(err)
	}
	return r
}

type want struct {
	passed bool
	rcode  int
	answer []string // RR strings without TTL/class, e.g. "web.cloud.example. A 10.0.0.5"
	soa    bool
}

func rrString(rr dns.RR) string {
	h := rr.Header()
	data := strings.TrimPrefix(rr.String(), h.String())
	return h.Name + " " + dns.TypeToString[h.Rrtype] + " " + data
}

func check(t *testing.T, l *Local, next *nextStub, r *resolver.Request, w want) *dns.Msg {
	t.Helper()
	before := next.calls
	out, err := l.ServeDNS(t.Context(), r, []byte("prefix"))
	if err != nil {
		t.Fatalf("ServeDNS: %v", err)
	}
	if string(out[:6]) != "prefix" {
		t.Fatal("dst prefix clobbered")
	}
	if w.passed {
		if next.calls != before+1 {
			t.Errorf("not passed to next")
		}
		return nil
	}
	if next.calls != before {
		t.Errorf("passed to next")
	}
	m := new(dns.Msg)
	if err := m.Unpack(out[6:]); err != nil {
		t.Fatalf("unpack: %v", err)
	}
	q := r.Query
	if m.Id != q.ID || !m.Response || !m.Authoritative || !m.RecursionAvailable || !m.RecursionDesired || m.Rcode != w.rcode {
		t.Errorf("header: %v", m.MsgHdr)
	}
	if len(m.Question) != 1 || m.Question[0].Name != dnsName(r) || m.Question[0].Qtype != q.Type {
		t.Errorf("question %v", m.Question)
	}
	if len(m.Extra) != 0 {
		t.Errorf("additional section %v", m.Extra)
	}
	var got []string
	for _, rr := range m.Answer {
		if rr.Header().Ttl != ttl || rr.Header().Class != dns.ClassINET {
			t.Errorf("rr %v: ttl/class", rr)
		}
		got = append(got, rrString(rr))
	}
	if !slices.Equal(got, w.answer) {
		t.Errorf("answer\n got %q\nwant %q", got, w.answer)
	}
	if w.soa {
		if len(m.Ns) != 1 {
			t.Fatalf("authority %v", m.Ns)
		}
		soa, ok := m.Ns[0].(*dns.SOA)
		if !ok || !strings.EqualFold(soa.Hdr.Name, domain) || !strings.EqualFold(soa.Ns, "ns."+domain) ||
			!strings.EqualFold(soa.Mbox, "hostmaster."+domain) || soa.Serial != uint32(synced.Unix()) ||
			soa.Minttl != ttl || soa.Hdr.Ttl != ttl || soa.Refresh == 0 || soa.Retry == 0 || soa.Expire == 0 {
			t.Errorf("soa %v", m.Ns[0])
		}
	} else if len(m.Ns) != 0 {
		t.Errorf("authority %v", m.Ns)
	}
	return m
}

func dnsName(r *resolver.Request) string {
	name, _, err := dns.UnpackDomainName(r.Msg, 12)
	if err != nil {
		return "?"
	}
	return name
}

func TestServeDNS(t *testing.T) {
	pass := want{passed: true}
	for _, tc := range []struct {
		network string
		name    string
		qtype   uint16
		want    want
	}{
		{netA, "web.cloud.example.", dns.TypeA, want{answer: []string{"web.cloud.example. A 10.0.0.5"}}},
		{netA, "WeB.Cloud.EXAMPLE.", dns.TypeA, want{answer: []string{"WeB.Cloud.EXAMPLE. A 10.0.0.5"}}},
		{netA, "web.", dns.TypeA, want{answer: []string{"web. A 10.0.0.5"}}},
		{netA, "Web.", dns.TypeA, want{answer: []string{"Web. A 10.0.0.5"}}},
		{netA, "dual.cloud.example.", dns.TypeAAAA, want{answer: []string{"dual.cloud.example. AAAA fd00::6"}}},
		{netA, "dual.cloud.example.", dns.TypeANY, want{answer: []string{"dual.cloud.example. A 10.0.0.6", "dual.cloud.example. AAAA fd00::6"}}},
		{netA, "host-10-0-0-8.cloud.example.", dns.TypeA, want{answer: []string{"host-10-0-0-8.cloud.example. A 10.0.0.8"}}},
		{netA, "host-10-0-0-8.", dns.TypeA, want{answer: []string{"host-10-0-0-8. A 10.0.0.8"}}},
		{netA, "deep.sub.cloud.example.", dns.TypeA, want{answer: []string{"deep.sub.cloud.example. A 10.0.0.9"}}},
		// NODATA: an existing name without the type.
		{netA, "six.cloud.example.", dns.TypeA, want{soa: true}},
		{netA, "web.cloud.example.", dns.TypeAAAA, want{soa: true}},
		{netA, "web.cloud.example.", dns.TypeMX, want{soa: true}},
		{netA, "sub.cloud.example.", dns.TypeA, want{soa: true}}, // empty non-terminal
		{netA, "cloud.example.", dns.TypeA, want{soa: true}},
		{netA, "six.", dns.TypeA, want{}}, // outside the domain: no SOA to give
		// The domain's SOA.
		{netA, "Cloud.Example.", dns.TypeSOA, want{answer: []string{"Cloud.Example. SOA ns.Cloud.Example. hostmaster.Cloud.Example. 1700000000 3600 600 86400 7"}}},
		// NXDOMAIN under the domain.
		{netA, "nope.cloud.example.", dns.TypeA, want{rcode: dns.RcodeNameError, soa: true}},
		{netA, "x.web.cloud.example.", dns.TypeA, want{rcode: dns.RcodeNameError, soa: true}},
		{netA, "NOPE.Cloud.Example.", dns.TypeAAAA, want{rcode: dns.RcodeNameError, soa: true}},
		// Other networks' names do not leak.
		{netA, "db.cloud.example.", dns.TypeA, want{rcode: dns.RcodeNameError, soa: true}},
		{netA, "db.", dns.TypeA, pass},
		{netB, "web.cloud.example.", dns.TypeA, want{rcode: dns.RcodeNameError, soa: true}},
		{netB, "db.cloud.example.", dns.TypeA, want{answer: []string{"db.cloud.example. A 10.0.0.5"}}},
		// PTR, per network.
		{netA, "5.0.0.10.in-addr.arpa.", dns.TypePTR, want{answer: []string{"5.0.0.10.in-addr.arpa. PTR web.cloud.example."}}},
		{netB, "5.0.0.10.IN-ADDR.ARPA.", dns.TypePTR, want{answer: []string{"5.0.0.10.IN-ADDR.ARPA. PTR db.cloud.example."}}},
		{netA, "5.0.0.10.in-addr.arpa.", dns.TypeANY, want{answer: []string{"5.0.0.10.in-addr.arpa. PTR web.cloud.example."}}},
		{netA, mustReverse("fd00::6"), dns.TypePTR, want{answer: []string{mustReverse("fd00::6") + " PTR dual.cloud.example."}}},
		{netB, mustReverse("fd00::6"), dns.TypePTR, want{answer: []string{mustReverse("fd00::6") + " PTR cache.cloud.example."}}},
		{netA, strings.ToUpper(mustReverse("fd00::7")), dns.TypePTR, want{answer: []string{strings.ToUpper(mustReverse("fd00::7")) + " PTR six.cloud.example."}}},
		{netB, mustReverse("fd00::7"), dns.TypePTR, pass}, // netA's address
		{netA, "99.0.0.10.in-addr.arpa.", dns.TypePTR, pass},
		{netA, "5.0.0.10.in-addr.arpa.", dns.TypeA, pass},
		{netA, "0.0.10.in-addr.arpa.", dns.TypePTR, pass},
		{netA, "05.0.0.10.in-addr.arpa.", dns.TypePTR, pass},
		{netA, "256.0.0.10.in-addr.arpa.", dns.TypePTR, pass},
		{netA, "x.5.0.0.10.in-addr.arpa.", dns.TypePTR, pass},
		{netA, "6.0.0.f.d.ip6.arpa.", dns.TypePTR, pass},
		// Outside the domain, unknown: next.
		{netA, "example.org.", dns.TypeA, pass},
		{netA, "example.", dns.TypeA, pass},
		{netA, "xcloud.example.", dns.TypeA, pass},
		// Not a VM port, or a network without records: next.
		{"", "web.cloud.example.", dns.TypeA, pass},
		{"net-unknown", "web.cloud.example.", dns.TypeA, pass},
	} {
		t.Run(tc.network+"/"+tc.name+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
			next := &nextStub{}
			l := New(Config{Records: source(t), Domain: domain, TTL: ttl, Authoritative: true}, next)
			check(t, l, next, request(t, tc.network, tc.name, tc.qtype, nil), tc.want)
		})
	}
}

// TestTenantNames: ports named after public names, TLDs or the reverse
// zones' labels answer their own short name for addresses only, and never
// make a public name NXDOMAIN, NODATA or an answer.
func TestTenantNames(t *testing.T) {
	hostile := fakeSource{netA: mustNetwork(t, netA,
		entry("a1", "10.0.0.1", "com"),
		entry("a1", "fd00::1", "com"),
		entry("a2", "10.0.0.2", "www.example.com"),
		entry("a3", "10.0.0.3", "arpa"),
		entry("a4", "10.0.0.4", "in-addr"),
		entry("a5", "10.0.0.5", "v4only"),
		// A forged fqdn outside the domain.
		records.Entry{Port: "a6", Addr: netip.MustParseAddr("10.0.0.6"), Hostname: "x.example.org", FQDN: "x.example.org."},
	)}
	pass := want{passed: true}
	for _, tc := range []struct {
		name  string
		qtype uint16
		want  want
	}{
		{"com.", dns.TypeA, want{answer: []string{"com. A 10.0.0.1"}}},
		{"COM.", dns.TypeAAAA, want{answer: []string{"COM. AAAA fd00::1"}}},
		{"com.", dns.TypeANY, want{answer: []string{"com. A 10.0.0.1", "com. AAAA fd00::1"}}},
		{"v4only.", dns.TypeAAAA, want{}}, // NODATA, no SOA: not in our zone
		{"com.", dns.TypeDS, pass},
		{"com.", dns.TypeSOA, pass},
		{"com.", dns.TypeNS, pass},
		{"com.", dns.TypeDNSKEY, pass},
		{"com.", dns.TypeTXT, pass},
		{"com.", dns.TypeMX, pass},
		{"example.com.", dns.TypeA, pass},
		{"example.com.", dns.TypeDS, pass},
		{"www.example.com.", dns.TypeA, pass},
		{"www.example.com.", dns.TypeAAAA, pass},
		{"x.example.org.", dns.TypeA, pass},
		{"example.org.", dns.TypeSOA, pass},
		{"arpa.", dns.TypeSOA, pass},
		{"arpa.", dns.TypeA, want{answer: []string{"arpa. A 10.0.0.3"}}},
		{"in-addr.arpa.", dns.TypeSOA, pass},
		{"in-addr.arpa.", dns.TypeNS, pass},
		{"10.in-addr.arpa.", dns.TypeNS, pass},
		{"1.0.0.10.in-addr.arpa.", dns.TypeSOA, pass},
		{"nope.", dns.TypeA, pass},
		{".", dns.TypeNS, pass},
		// Below the domain they are the cloud's.
		{"www.example.com.cloud.example.", dns.TypeA, want{answer: []string{"www.example.com.cloud.example. A 10.0.0.2"}}},
		{"example.com.cloud.example.", dns.TypeA, want{soa: true}},
		{"com.cloud.example.", dns.TypeDS, want{soa: true}},
		{"1.0.0.10.in-addr.arpa.", dns.TypePTR, want{answer: []string{"1.0.0.10.in-addr.arpa. PTR com.cloud.example."}}},
		{"6.0.0.10.in-addr.arpa.", dns.TypePTR, pass}, // its fqdn is not ours
	} {
		t.Run(tc.name+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
			next := &nextStub{}
			l := New(Config{Records: hostile, Domain: domain, TTL: ttl, Authoritative: true}, next)
			check(t, l, next, request(t, netA, tc.name, tc.qtype, nil), tc.want)
		})
	}
}

func mustReverse(ip string) string {
	s, _ := dns.ReverseAddr(ip)
	return s
}

func TestNonAuthoritative(t *testing.T) {
	next := &nextStub{}
	l := New(Config{Records: source(t), Domain: "Cloud.Example", TTL: ttl}, next)
	for _, tc := range []struct {
		name  string
		qtype uint16
		w     want
	}{
		{"web.cloud.example.", dns.TypeA, want{answer: []string{"web.cloud.example. A 10.0.0.5"}}},
		{"nope.cloud.example.", dns.TypeA, want{passed: true}},
		{"web.cloud.example.", dns.TypeAAAA, want{passed: true}},
		{"cloud.example.", dns.TypeSOA, want{passed: true}},
		{"sub.cloud.example.", dns.TypeA, want{passed: true}},
		{"5.0.0.10.in-addr.arpa.", dns.TypePTR, want{answer: []string{"5.0.0.10.in-addr.arpa. PTR web.cloud.example."}}},
	} {
		check(t, l, next, request(t, netA, tc.name, tc.qtype, nil), tc.w)
	}
	st := l.Stats()
	if st["answered"] != 2 || st["passed"] != 4 || st["nxdomain"] != 0 || st["nodata"] != 0 {
		t.Errorf("stats %v", st)
	}
}

func TestNoDomain(t *testing.T) {
	next := &nextStub{}
	l := New(Config{Records: source(t), TTL: ttl, Authoritative: true}, next)
	// Without a domain only short names are the cloud's.
	check(t, l, next, request(t, netA, "web.", dns.TypeA, nil), want{answer: []string{"web. A 10.0.0.5"}})
	check(t, l, next, request(t, netA, "web.cloud.example.", dns.TypeA, nil), want{passed: true})
	check(t, l, next, request(t, netA, "nope.cloud.example.", dns.TypeA, nil), want{passed: true})
	check(t, l, next, request(t, netA, "web.", dns.TypeTXT, nil), want{passed: true})
	// An invalid domain is ignored.
	l = New(Config{Records: source(t), Domain: "a..b", TTL: ttl, Authoritative: true}, next)
	check(t, l, next, request(t, netA, "nope.cloud.example.", dns.TypeA, nil), want{passed: true})
}

func TestFlagsAndEDNS(t *testing.T) {
	next := &nextStub{}
	l := New(Config{Records: source(t), Domain: domain, TTL: ttl, Authoritative: true}, next)
	r := request(t, netA, "web.cloud.example.", dns.TypeA, func(m *dns.Msg) {
		m.RecursionDesired = false
		m.CheckingDisabled = true
		m.SetEdns0(4096, true)
	})
	out, err := l.ServeDNS(t.Context(), r, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		t.Fatal(err)
	}
	if m.RecursionDesired || !m.CheckingDisabled || m.AuthenticatedData || len(m.Extra) != 0 || !m.Authoritative {
		t.Errorf("flags/edns: %v", m)
	}
	// Class CH is not ours.
	r = request(t, netA, "web.cloud.example.", dns.TypeA, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS })
	check(t, l, next, r, want{passed: true})
}

func TestIntercepted(t *testing.T) {
	next := &nextStub{}
	l := New(Config{Records: source(t), Domain: domain, TTL: ttl, Authoritative: true}, next)
	for _, tc := range []struct {
		network, name string
		local         bool
	}{
		{netA, "web.cloud.example.", true},
		{netA, "nope.cloud.example.", true},
		{netA, "5.0.0.10.in-addr.arpa.", true},
		{netA, "example.org.", false},
		{netA, "db.", false},
		{netA, "99.0.0.10.in-addr.arpa.", false},
		{"", "web.cloud.example.", false},
	} {
		qtype := dns.TypeA
		if strings.HasSuffix(tc.name, "arpa.") {
			qtype = dns.TypePTR
		}
		r := request(t, tc.network, tc.name, qtype, nil)
		r.Intercepted = true
		out, err := l.ServeDNS(t.Context(), r, nil)
		if tc.local != (err == nil) || (!tc.local && (!errors.Is(err, ErrNotLocal) || len(out) != 0)) {
			t.Errorf("%s %s: %v %d bytes", tc.network, tc.name, err, len(out))
		}
	}
	if next.calls != 0 {
		t.Error("intercepted query passed to next")
	}
	// Without next, a non-local query is ErrNotLocal too.
	l = New(Config{Records: source(t), Domain: domain}, nil)
	if _, err := l.ServeDNS(t.Context(), request(t, netA, "example.org.", dns.TypeA, nil), nil); !errors.Is(err, ErrNotLocal) {
		t.Errorf("nil next: %v", err)
	}
	// No records source at all.
	l = New(Config{Domain: domain}, next)
	check(t, l, next, request(t, netA, "web.cloud.example.", dns.TypeA, nil), want{passed: true})
}

func TestStats(t *testing.T) {
	next := &nextStub{}
	l := New(Config{Records: source(t), Domain: domain, TTL: ttl, Authoritative: true}, next)
	for _, n := range []string{"web.cloud.example.", "nope.cloud.example.", "six.cloud.example.", "example.org."} {
		if _, err := l.ServeDNS(t.Context(), request(t, netA, n, dns.TypeA, nil), nil); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]uint64{"answered": 1, "nxdomain": 1, "nodata": 1, "passed": 1}
	for k, v := range want {
		if l.Stats()[k] != v {
			t.Errorf("stats %v", l.Stats())
		}
	}
}

func TestManyAddresses(t *testing.T) {
	var es []records.Entry
	for i := range 5000 {
		a := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		es = append(es, records.Entry{Port: "p", Addr: a, Hostname: "dup", FQDN: "dup." + domain})
		es = append(es, records.Entry{Port: "p", Addr: netip.AddrFrom16([16]byte{0xfd, 14: byte(i >> 8), 15: byte(i)}), Hostname: "dup", FQDN: "dup." + domain})
	}
	l := New(Config{Records: fakeSource{netA: mustNetwork(t, netA, es...)}, Domain: domain, TTL: ttl, Authoritative: true}, &nextStub{})
	out, err := l.ServeDNS(t.Context(), request(t, netA, "dup.cloud.example.", dns.TypeANY, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) > 65535 {
		t.Fatalf("answer of %d bytes", len(out))
	}
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		t.Fatal(err)
	}
	if len(m.Answer) < 2000 {
		t.Errorf("%d answers", len(m.Answer))
	}
}

func TestAllocs(t *testing.T) {
	next := &nextStub{}
	l := New(Config{Records: source(t), Domain: domain, TTL: ttl, Authoritative: true}, next)
	buf := make([]byte, 0, 512)
	for _, name := range []string{"web.cloud.example.", "nope.cloud.example.", "5.0.0.10.in-addr.arpa.", mustReverse("fd00::6")} {
		qtype := dns.TypeA
		if strings.HasSuffix(name, "arpa.") {
			qtype = dns.TypePTR
		}
		r := request(t, netA, name, qtype, nil)
		ctx := context.Background()
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := l.ServeDNS(ctx, r, buf[:0]); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations", name, allocs)
		}
	}
}

func TestReverseAddr(t *testing.T) {
	for _, ip := range []string{"10.0.0.5", "0.0.0.0", "255.255.255.255", "fd00::6", "2001:db8::abcd:1", "::"} {
		w := make([]byte, 256)
		n, err := dns.PackDomainName(mustReverse(ip), w, 0, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := reverseAddr(w[:n])
		if !ok || got != netip.MustParseAddr(ip) {
			t.Errorf("reverseAddr(%s) = %v, %v", ip, got, ok)
		}
	}
}

func FuzzServeDNS(f *testing.F) {
	for _, n := range []string{"web.cloud.example.", "5.0.0.10.in-addr.arpa.", mustReverse("fd00::6"), "nope.cloud.example.", "web.", "Web."} {
		for _, qtype := range []uint16{dns.TypeANY, dns.TypeDS} {
			m := new(dns.Msg)
			m.SetQuestion(n, qtype)
			b, _ := m.Pack()
			f.Add(b)
		}
	}
	src := source(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		r := &resolver.Request{Msg: msg, Network: netA}
		if dnswire.ParseQuery(msg, &r.Query) != nil {
			return
		}
		next := &nextStub{}
		l := New(Config{Records: src, Domain: domain, TTL: ttl, Authoritative: true}, next)
		out, err := l.ServeDNS(t.Context(), r, nil)
		if err != nil {
			t.Fatal(err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(out); err != nil {
			t.Fatalf("unpack: %v", err)
		}
		if next.calls > 0 {
			return
		}
		// Answered here: a name of the domain, a reverse name (PTR,
		// ANY), or a short name (A, AAAA, ANY).
		q := m.Question[0]
		labels := dns.CountLabel(q.Name)
		switch {
		case dns.IsSubDomain(domain, strings.ToLower(q.Name)):
		case dns.IsSubDomain("arpa.", strings.ToLower(q.Name)) && (q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY):
		case labels == 1 && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
		default:
			t.Fatalf("answered %s %s: %v", q.Name, dns.TypeToString[q.Qtype], m)
		}
	})
}

func BenchmarkServeDNS(b *testing.B) {
	l := New(Config{Records: source(b), Domain: domain, TTL: ttl, Authoritative: true}, &nextStub{})
	r := request(b, netA, "Web.Cloud.Example.", dns.TypeA, nil)
	buf := make([]byte, 0, 512)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.ServeDNS(ctx, r, buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

// TestResponderPath runs answers through what the responder does with them:
// the client's EDNS added, then fitted to 512 bytes.
func TestResponderPath(t *testing.T) {
	var es []records.Entry
	for i := range 60 {
		es = append(es, records.Entry{Port: "p", Addr: netip.AddrFrom4([4]byte{10, 2, 0, byte(i)}), Hostname: "many", FQDN: "many." + domain})
	}
	src := source(t)
	src[netA] = mustNetwork(t, netA, append(es, entry("a1", "10.0.0.5", "web"))...)
	l := New(Config{Records: src, Domain: domain, TTL: ttl, Authoritative: true}, &nextStub{})
	for _, tc := range []struct {
		name  string
		qtype uint16
	}{
		{"Web.cloud.example.", dns.TypeA},
		{"nope.Cloud.example.", dns.TypeA},
		{"web.cloud.example.", dns.TypeAAAA},
		{"cloud.example.", dns.TypeSOA},
		{"5.0.0.10.in-addr.arpa.", dns.TypePTR},
		{"many.cloud.example.", dns.TypeA},
	} {
		r := request(t, netA, tc.name, tc.qtype, func(m *dns.Msg) { m.SetEdns0(1232, true) })
		out, err := l.ServeDNS(t.Context(), r, nil)
		if err != nil {
			t.Fatal(err)
		}
		client, err := dnswire.AppendClientAnswer(nil, out, &r.Query, 1232, false)
		if err != nil {
			t.Fatalf("%s: AppendClientAnswer: %v", tc.name, err)
		}
		fitted, err := dnswire.Fit(nil, client, 512)
		if err != nil {
			t.Fatalf("%s: Fit: %v", tc.name, err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(fitted); err != nil {
			t.Fatalf("%s: unpack: %v", tc.name, err)
		}
		if m.IsEdns0() == nil || !m.Authoritative {
			t.Errorf("%s: %v", tc.name, m)
		}
		if tc.name == "many.cloud.example." && (!m.Truncated || len(fitted) > 512) {
			t.Errorf("many: not truncated (%d bytes)", len(fitted))
		}
	}
}

// immediateNext answers every query at once, REFUSED.
type immediateNext struct{ nextStub }

func (n *immediateNext) ServeImmediate(r *resolver.Request, dst []byte) ([]byte, bool) {
	n.calls++
	return dnswire.AppendError(dst, r.Msg, &r.Query, dns.RcodeRefused), true
}

func TestServeImmediate(t *testing.T) {
	next := &immediateNext{}
	l := New(Config{Records: source(t), Domain: domain, TTL: ttl, Authoritative: true}, next)
	out, ok := l.ServeImmediate(request(t, netA, "WEB.cloud.example.", dns.TypeA, nil), nil)
	m := new(dns.Msg)
	if !ok || m.Unpack(out) != nil || len(m.Answer) != 1 || next.calls != 0 {
		t.Fatalf("local name: ok %v, %v, next calls %d", ok, m, next.calls)
	}
	// Not local: the next step's immediate answer.
	if _, ok := l.ServeImmediate(request(t, netA, "example.org.", dns.TypeA, nil), nil); !ok || next.calls != 1 {
		t.Fatalf("not local: ok %v, next calls %d", ok, next.calls)
	}
	// Intercepted and not local: nothing immediate.
	r := request(t, netA, "example.org.", dns.TypeA, nil)
	r.Intercepted = true
	if _, ok := l.ServeImmediate(r, nil); ok || next.calls != 1 {
		t.Fatalf("intercepted: ok %v, next calls %d", ok, next.calls)
	}
	// A next step without an immediate path.
	l = New(Config{Records: source(t), Domain: domain, Authoritative: true}, &nextStub{})
	if _, ok := l.ServeImmediate(request(t, netA, "example.org.", dns.TypeA, nil), nil); ok {
		t.Fatal("immediate answer without an immediate next")
	}
}
