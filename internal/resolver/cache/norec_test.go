package cache

import (
	"testing"

	"github.com/miekg/dns"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
)

func withoutRD(m *dns.Msg) { m.RecursionDesired = false }

// TestNoRecursionRefused: a query without RD is REFUSED, whether the cache
// holds its answer or not, on both paths; next is never asked and nothing
// of the cached answer shows.
func TestNoRecursionRefused(t *testing.T) {
	next := &fake{}
	next.set(positive(300))
	c, _ := newCache(Config{Size: 100, ServeStale: true, Prefetch: true}, next)
	if m := ask(t, c, request(t, "www.example.com.", dns.TypeA, 1)); len(m.Answer) != 1 {
		t.Fatalf("filling the cache: %v", m)
	}
	check := func(what string, out []byte, r *resolver.Request, edns bool) {
		t.Helper()
		m := new(dns.Msg)
		if err := m.Unpack(out); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if m.Rcode != dns.RcodeRefused || m.Id != r.Query.ID || m.RecursionDesired || len(m.Question) != 1 ||
			m.Question[0].Name != "www.example.com." || len(m.Answer)+len(m.Ns) != 0 || (m.IsEdns0() != nil) != edns {
			t.Errorf("%s: %v", what, m)
		}
		// The responder's rewrite takes it.
		if _, err := dnswire.AppendClientAnswer(nil, out, &r.Query, 1232, false); err != nil {
			t.Errorf("%s: AppendClientAnswer: %v", what, err)
		}
	}
	cached := request(t, "www.example.com.", dns.TypeA, 2, withoutRD)
	out, err := c.ServeDNS(t.Context(), cached, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("cached, ServeDNS", out, cached, false)
	out, ok := c.ServeImmediate(cached, nil)
	if !ok {
		t.Fatal("ServeImmediate did not answer")
	}
	check("cached, ServeImmediate", out, cached, false)
	edns := request(t, "www.example.com.", dns.TypeA, 3, withoutRD, withDO)
	out, _ = c.ServeDNS(t.Context(), edns, nil)
	check("cached, EDNS", out, edns, true)
	unknown := request(t, "www.example.com.", dns.TypeAAAA, 4, withoutRD)
	out, _ = c.ServeDNS(t.Context(), unknown, nil)
	check("not cached", out, unknown, false)
	if n := next.calls.Load(); n != 1 {
		t.Errorf("next asked %d times, want 1 (the recursive query)", n)
	}
	if st := c.Stats(); st["refused_norec"] != 4 || st["hits"] != 0 || st["misses"] != 1 {
		t.Errorf("stats %v", st)
	}
	if cached.Source != resolver.SourceNone {
		t.Errorf("source %v", cached.Source)
	}
}
