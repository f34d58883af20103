package records

import (
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// checkOwned fails when n has a name that is neither one label (a short
// name) nor strictly below domain (wire form), or a PTR target outside it.
func checkOwned(t *testing.T, n *Network, domain string) {
	t.Helper()
	for name, owned := range n.names {
		short := name[0] != 0 && name[1+int(name[0])] == 0
		if !short && name != domain && !underDomain(name, domain) {
			t.Errorf("name %s is outside the domain", presentation(name))
		}
		if name == domain && owned != nil {
			t.Errorf("the domain %s has addresses %v", presentation(name), owned)
		}
	}
	for addr, name := range n.ptr {
		if !underDomain(name, domain) {
			t.Errorf("PTR %s -> %s is outside the domain", addr, presentation(name))
		}
	}
}

// TestHostileNames builds a network from dns_assignment entries a tenant
// can bring about (through dns_name) or a hostile API could send, and
// checks that no name outside the cloud's domain but short names exists.
func TestHostileNames(t *testing.T) {
	es := []Entry{
		// dns_name "www.example.com" (relative, several labels): Neutron
		// makes it www.example.com.<dns_domain>.
		{Port: "p1", Addr: netip.MustParseAddr("10.0.0.1"), Hostname: "www.example.com", FQDN: "www.example.com.cloud.test."},
		// A forged fqdn outside the domain, with a one-label hostname.
		{Port: "p2", Addr: netip.MustParseAddr("10.0.0.2"), Hostname: "www", FQDN: "www.example.org."},
		// A port named like a TLD and like the reverse zones' labels.
		{Port: "p3", Addr: netip.MustParseAddr("10.0.0.3"), Hostname: "com", FQDN: "com.cloud.test."},
		{Port: "p4", Addr: netip.MustParseAddr("10.0.0.4"), Hostname: "arpa", FQDN: "arpa.cloud.test."},
		{Port: "p5", Addr: netip.MustParseAddr("10.0.0.5"), Hostname: "in-addr", FQDN: "in-addr.cloud.test."},
		// An fqdn equal to the domain, and one that only ends with its
		// text, not at a label boundary.
		{Port: "p6", Addr: netip.MustParseAddr("10.0.0.6"), Hostname: "a.b", FQDN: "cloud.test."},
		{Port: "p7", Addr: netip.MustParseAddr("10.0.0.7"), Hostname: "x.y", FQDN: "evilcloud.test."},
		// An absolute dns_name under the domain: fqdn only.
		{Port: "p8", Addr: netip.MustParseAddr("10.0.0.8"), Hostname: "vm.cloud.test.", FQDN: "vm.cloud.test."},
		// No fqdn given: Neutron's rule makes it.
		{Port: "p9", Addr: netip.MustParseAddr("10.0.0.9"), Hostname: "mail.example.net"},
		{Port: "pa", Addr: netip.MustParseAddr("10.0.0.10"), Hostname: "abs.example.net."},
	}
	n, err := NewNetwork("n", "cloud.test", time.Unix(1, 0), es)
	if err != nil {
		t.Fatal(err)
	}
	checkOwned(t, n, "\x05cloud\x04test\x00")
	for _, tc := range []struct {
		name string
		want []netip.Addr
		ok   bool
	}{
		{"www.example.com.", nil, false},
		{"example.com.", nil, false},
		{"com.", addrs("10.0.0.3"), true}, // a short name
		{"www.example.com.cloud.test.", addrs("10.0.0.1"), true},
		{"example.com.cloud.test.", nil, true},
		{"com.cloud.test.", addrs("10.0.0.3"), true},
		{"www.example.org.", nil, false},
		{"example.org.", nil, false},
		{"www.", addrs("10.0.0.2"), true},
		{"www.cloud.test.", addrs("10.0.0.2"), true},
		{"arpa.", addrs("10.0.0.4"), true},
		{"in-addr.", addrs("10.0.0.5"), true},
		{"in-addr.arpa.", nil, false},
		{"cloud.test.", nil, true}, // the domain: no addresses
		{"test.", nil, false},
		{"a.b.", nil, false},
		{"evilcloud.test.", nil, false},
		{"x.y.", nil, false},
		{"vm.cloud.test.", addrs("10.0.0.8"), true},
		{"vm.", nil, false},
		{"mail.example.net.", nil, false},
		{"mail.example.net.cloud.test.", addrs("10.0.0.9"), true},
		{"abs.example.net.", nil, false},
	} {
		got, ok := n.Lookup(wire(t, tc.name))
		if ok != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("Lookup(%s) = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct{ addr, want string }{
		{"10.0.0.1", "www.example.com.cloud.test."},
		{"10.0.0.2", "www.cloud.test."},
		{"10.0.0.3", "com.cloud.test."},
		{"10.0.0.6", ""},
		{"10.0.0.7", ""},
		{"10.0.0.8", "vm.cloud.test."},
		{"10.0.0.10", ""},
	} {
		got, ok := n.PTR(netip.MustParseAddr(tc.addr))
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("PTR(%s) = %q, %v; want %q", tc.addr, got, ok, tc.want)
		}
	}
}

// TestOneLabelDomain: a port named like a one-label domain does not give
// the domain itself an address.
func TestOneLabelDomain(t *testing.T) {
	n, err := NewNetwork("n", "openstacklocal.", time.Unix(1, 0), []Entry{
		{Port: "p1", Addr: netip.MustParseAddr("10.0.0.1"), Hostname: "openstacklocal"},
		{Port: "p2", Addr: netip.MustParseAddr("10.0.0.2")},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkOwned(t, n, "\x0eopenstacklocal\x00")
	if got, ok := n.Lookup(wire(t, "openstacklocal.")); !ok || got != nil {
		t.Errorf("the domain: %v, %v", got, ok)
	}
	if got, _ := n.Lookup(wire(t, "openstacklocal.openstacklocal.")); !slices.Equal(got, addrs("10.0.0.1")) {
		t.Errorf("fqdn: %v", got)
	}
	if got, _ := n.Lookup(wire(t, "host-10-0-0-2.openstacklocal.")); !slices.Equal(got, addrs("10.0.0.2")) {
		t.Errorf("host-<ip>: %v", got)
	}
	if got, _ := n.PTR(netip.MustParseAddr("10.0.0.2")); got != "host-10-0-0-2.openstacklocal." {
		t.Errorf("PTR = %q", got)
	}
}

// TestNoDomainShortNamesOnly: without a domain, only short names exist.
func TestNoDomainShortNamesOnly(t *testing.T) {
	n, err := NewNetwork("n", "", time.Unix(1, 0), []Entry{
		{Port: "p1", Addr: netip.MustParseAddr("10.0.0.1"), Hostname: "www.example.com", FQDN: "www.example.com."},
		{Port: "p2", Addr: netip.MustParseAddr("10.0.0.2"), Hostname: "vm", FQDN: "vm.example.com."},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(n.names) != 1 || !n.Has(wire(t, "vm.")) || len(n.ptr) != 0 {
		t.Errorf("names %q, PTRs %v", slices.Collect(maps.Keys(n.names)), n.ptr)
	}
}
