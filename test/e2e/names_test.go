package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
)

// tldZone is a zone for the one-label name "test." (the parent of the
// upstream's example.test.), so that a port named "test" has a public
// name to shadow: its SOA, NS, DS and TXT records.
var tldZone = lab.Zone{Origin: "test.", Records: []string{
	"test. 300 IN SOA ns.test. hostmaster.test. 2024010101 3600 600 86400 300",
	"test. 300 IN NS ns.test.",
	"ns.test. 300 IN A 192.0.2.53",
	"test. 300 IN DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
	`test. 300 IN TXT "the public test."`,
}}

// digView returns the status and the answer and authority sections of
// dig's output (run with +nottlid, so TTLs do not show).
func digView(out string) string {
	var b strings.Builder
	b.WriteString(digStatus(out))
	for _, section := range []string{";; ANSWER SECTION:\n", ";; AUTHORITY SECTION:\n"} {
		if _, rest, ok := strings.Cut(out, section); ok {
			rest, _, _ = strings.Cut(rest, "\n\n")
			b.WriteString("\n" + section + rest)
		}
	}
	return b.String()
}

// direct asks the upstream itself, from the lab namespace.
func (e *neutronEnv) direct(name, qtype string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 10*time.Second)
	defer cancel()
	out, err := e.lab.Command(ctx, "dig", "@127.0.0.1", "-p", strconv.Itoa(int(e.unbound.Port)),
		"+time=2", "+tries=1", "+nottlid", name, qtype).CombinedOutput()
	if err != nil {
		e.t.Fatalf("dig %s %s at the upstream: %v\n%s", name, qtype, err, out)
	}
	return string(out)
}

// metric returns the value of the daemon's metric series (name with its
// labels), 0 when it is absent.
func (e *neutronEnv) metric(series string) int {
	e.t.Helper()
	code, body := e.fetch("http://127.0.0.1:9553/metrics")
	if code != 200 {
		e.t.Fatalf("metrics: %d %s", code, body)
	}
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				e.t.Fatalf("metrics line %q", line)
			}
			return n
		}
	}
	return 0
}

// upstreamExchanges returns how many exchanges with the upstream the
// daemon's metrics count.
func (e *neutronEnv) upstreamExchanges() int {
	e.t.Helper()
	return e.metric(`ovs_dns_forwarder_upstream_exchange_duration_seconds_count{server="` + e.upstream() + `"}`)
}

// TestNeutronTenantNames: what a tenant's port names cannot do to its
// neighbours, and the EDNS and RD=0 rules, on a real Neutron. Network A
// gets two more ports, named "www.example.test" (a name the upstream
// serves) and "test" (the upstream's one-label zone "test.").
func TestNeutronTenantNames(t *testing.T) {
	e := newNeutronEnv(t)
	// The upstream: testZone plus the one-label zone "test.".
	up, err := e.lab.StartUnbound(testZone, tldZone)
	must(t, err)
	e.unbound = up
	netA := e.ports["alpha"].NetworkID
	public, err := e.neutron.CreatePort(netA, "www.example.test", "")
	must(t, err)
	tld, err := e.neutron.CreatePort(netA, "test", "")
	must(t, err)
	if got := public.DNSAssignment[0].FQDN; got != "www.example.test.cloud.test." {
		t.Fatalf("Neutron named the port %q", got)
	}
	e.startNamesDaemon("forwarder")
	beta, gamma := e.vm["beta"], e.vm["gamma"]
	// Both ports are in the records once their names under the domain
	// answer.
	e.eventually(10*time.Second, beta, "www.example.test.cloud.test", "A", public.IPs[0].String())
	e.eventually(10*time.Second, beta, "test.cloud.test", "A", tld.IPs[0].String())

	t.Run("public names unchanged", func(t *testing.T) {
		for _, q := range [][2]string{
			{"www.example.test", "A"}, {"www.example.test", "AAAA"}, {"www.example.test", "TXT"},
			{"test", "SOA"}, {"test", "DS"}, {"test", "NS"}, {"test", "TXT"}, {"test", "DNSKEY"},
			{"example.test", "SOA"},
		} {
			want := digView(e.direct(q[0], q[1]))
			for _, vm := range []*lab.VM{beta, gamma} {
				out := e.dig(vm, "@169.254.169.254", "+nottlid", q[0], q[1])
				if got := digView(out); got != want || strings.Contains(digFlags(out), "aa") {
					t.Errorf("%s: %s %s (flags %s):\n%s\nthe upstream says:\n%s", vm.Name, q[0], q[1], digFlags(out), got, want)
				}
			}
		}
		// What makes the test meaningful: the upstream has these.
		if v := digView(e.direct("test", "SOA")); !strings.Contains(v, "hostmaster.test.") {
			t.Errorf("the upstream has no test. SOA:\n%s", v)
		}
		if v := digView(e.direct("www.example.test", "A")); !strings.Contains(v, "192.0.2.10") {
			t.Errorf("the upstream has no www.example.test. A:\n%s", v)
		}
	})
	t.Run("short name answers addresses", func(t *testing.T) {
		for _, c := range []struct{ qtype, want string }{{"A", tld.IPs[0].String()}, {"AAAA", tld.IPs[1].String()}} {
			out := e.dig(beta, "@169.254.169.254", "test", c.qtype)
			if digStatus(out) != "NOERROR" || digAnswers(out) != 1 || !strings.Contains(out, c.want) || !strings.Contains(digFlags(out), "aa") {
				t.Errorf("test %s, want %s:\n%s", c.qtype, c.want, out)
			}
		}
		// From the other network it is the upstream's: no address.
		if status, answer := e.status(gamma, "test", "A"); strings.Contains(answer, tld.IPs[0].String()) {
			t.Errorf("gamma sees network A's short name: %s %q", status, answer)
		}
	})
	t.Run("EDNS version 1 is BADVERS", func(t *testing.T) {
		before := e.upstreamExchanges()
		for _, name := range []string{"alpha.cloud.test", "www.example.test", "alias.example.test", "nope.cloud.test", "test"} {
			out := e.dig(beta, "@169.254.169.254", "+edns=1", "+noednsneg", name, "A")
			if digStatus(out) != "BADVERS" || !strings.Contains(out, "; EDNS: version: 0,") || digAnswers(out) != 0 {
				t.Errorf("%s with EDNS version 1:\n%s", name, out)
			}
		}
		if after := e.upstreamExchanges(); after != before {
			t.Errorf("the upstream was asked %d times", after-before)
		}
		if n := e.metric(`ovs_dns_forwarder_refusals_total{reason="bad_edns_version"}`); n != 5 {
			t.Errorf("%d BADVERS counted, want 5", n)
		}
		// Version 0 still resolves (the upstream answers the CNAME).
		if out := e.dig(beta, "@169.254.169.254", "+edns=0", "alias.example.test", "A"); digStatus(out) != "NOERROR" || digAnswers(out) < 1 {
			t.Errorf("EDNS version 0:\n%s", out)
		}
	})
	t.Run("RD=0 not answered from the cache", func(t *testing.T) {
		// www.example.test A is in the cache (asked above, TTL 300).
		if out := e.dig(gamma, "@169.254.169.254", "www.example.test", "A"); !strings.Contains(digFlags(out), "rd") || digAnswers(out) != 1 {
			t.Fatalf("recursive query:\n%s", out)
		}
		before := e.upstreamExchanges()
		for _, q := range [][2]string{{"www.example.test", "A"}, {"test", "SOA"}, {"big.example.test", "A"}} {
			out := e.dig(gamma, "@169.254.169.254", "+norec", q[0], q[1])
			if digStatus(out) != "REFUSED" || digAnswers(out) != 0 {
				t.Errorf("+norec %s %s:\n%s", q[0], q[1], out)
			}
		}
		if after := e.upstreamExchanges(); after != before {
			t.Errorf("the upstream was asked %d times", after-before)
		}
		if n := e.metric(`ovs_dns_forwarder_refusals_total{reason="not_recursive"}`); n != 3 {
			t.Errorf("%d RD=0 refusals counted, want 3", n)
		}
		// The asker's own network's names still answer.
		for _, c := range []struct{ name, want string }{
			{"alpha.cloud.test", e.ports["alpha"].IPs[0].String()}, {"test", tld.IPs[0].String()},
		} {
			out := e.dig(beta, "@169.254.169.254", "+norec", "+short", c.name, "A")
			if strings.TrimSpace(out) != c.want {
				t.Errorf("+norec %s from beta: %q, want %s", c.name, out, c.want)
			}
		}
		if out := e.dig(beta, "@169.254.169.254", "+norec", "gamma.cloud.test", "A"); digStatus(out) != "NXDOMAIN" {
			t.Errorf("+norec gamma.cloud.test from beta:\n%s", out)
		}
	})
	t.Run("PTR only under the domain", func(t *testing.T) {
		want := "www.example.test.cloud.test."
		if status, answer := e.status(beta, reverse(t, public.IPs[0]), "PTR"); status != "NOERROR" || !strings.HasSuffix(strings.TrimSpace(answer), want) {
			t.Errorf("PTR of the port: %s %q, want %s", status, answer, want)
		}
	})
}
