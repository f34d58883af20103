package records

import (
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"
)

// subnet returns a subnet as Neutron lists it with subnetFields; gateway
// "" is JSON null.
func subnet(id, network, cidr, gateway string, version int) map[string]any {
	s := map[string]any{"id": id, "network_id": network, "cidr": cidr, "ip_version": version, "gateway_ip": nil}
	if gateway != "" {
		s["gateway_ip"] = gateway
	}
	return s
}

// withAttrs sets a listed port's device_owner, port_security_enabled
// (nil: not reported) and allowed_address_pairs ({ip, mac} pairs, mac ""
// for none).
func withAttrs(p map[string]any, owner string, security *bool, pairs ...[2]string) map[string]any {
	p["device_owner"] = owner
	if security != nil {
		p["port_security_enabled"] = *security
	}
	list := []any{}
	for _, pr := range pairs {
		e := map[string]any{"ip_address": pr[0]}
		if pr[1] != "" {
			e["mac_address"] = pr[1]
		}
		list = append(list, e)
	}
	p["allowed_address_pairs"] = list
	return p
}

func ptr[T any](v T) *T { return &v }

func mac(t testing.TB, s string) [6]byte {
	t.Helper()
	m, ok := parseMAC(s)
	if !ok {
		t.Fatalf("bad MAC %q", s)
	}
	return m
}

func TestDetails(t *testing.T) {
	f := newFakeNeutron(t)
	vm := port("p-vm", netA, "vm", "cloud.example.", true, "10.0.0.5", "fd00:10::5")
	vm["mac_address"] = "fa:16:3e:00:00:05"
	f.setPorts(
		withAttrs(vm, "compute:nova", ptr(true),
			[2]string{"10.0.0.50", "fa:16:3e:aa:00:02"},
			[2]string{"10.0.0.51", "FA:16:3E:AA:00:01"},
			[2]string{"10.0.0.52", "fa:16:3e:aa:00:02"},
			[2]string{"192.168.7.0/24", "fa:16:3e:00:00:05"},
			[2]string{"not-an-ip", "not-a-mac"}),
		withAttrs(port("p-router", netA, "", "cloud.example.", false, "10.0.0.1"), "network:router_interface", ptr(true)),
		withAttrs(port("p-dhcp", netA, "", "cloud.example.", false, "10.0.0.2"), "network:dhcp", nil),
		withAttrs(port("p-open", netB, "open", "cloud.example.", true, "10.0.0.5"), "compute:az1", ptr(false)),
		withAttrs(port("p-other", "cccccccc-0000-0000-0000-000000000003", "x", "cloud.example.", true, "10.9.0.1"), "compute:nova", nil),
	)
	f.subnets = []map[string]any{
		subnet("s-v6", netA, "fd00:10::/64", "fd00:10::1", 6),
		subnet("s-v4", netA, "10.0.0.0/24", "10.0.0.1", 4),
		subnet("s-nogw", netA, "10.0.1.0/24", "", 4),
		subnet("s-badgw", netA, "10.0.2.0/24", "fd00::1", 4),
		subnet("s-badcidr", netA, "10.0.3.0/33", "10.0.3.1", 4),
		subnet("s-b", netB, "10.0.0.0/24", "10.0.0.254", 4),
		subnet("s-other", "cccccccc-0000-0000-0000-000000000003", "10.9.0.0/24", "10.9.0.254", 4),
	}
	s := newStore(t, f, nil)
	if err := s.sync(t.Context(), []string{netA, netB}); err != nil {
		t.Fatal(err)
	}
	a, b := s.Network(netA), s.Network(netB)

	wantA := []Subnet{
		{ID: "s-badgw", CIDR: netip.MustParsePrefix("10.0.2.0/24")},
		{ID: "s-nogw", CIDR: netip.MustParsePrefix("10.0.1.0/24")},
		{ID: "s-v4", CIDR: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.0.1")},
		{ID: "s-v6", CIDR: netip.MustParsePrefix("fd00:10::/64"), Gateway: netip.MustParseAddr("fd00:10::1")},
	}
	if got := a.Subnets(); !slices.Equal(got, wantA) {
		t.Errorf("net A subnets %v, want %v", got, wantA)
	}
	if got := b.Subnets(); len(got) != 1 || got[0].ID != "s-b" || got[0].Gateway != netip.MustParseAddr("10.0.0.254") {
		t.Errorf("net B subnets %v", got)
	}

	p, ok := a.Port("p-vm")
	if !ok || p.DeviceOwner != "compute:nova" || !p.PortSecurity || p.MAC != mac(t, "fa:16:3e:00:00:05") {
		t.Errorf("p-vm = %+v, %v", p, ok)
	}
	wantMACs := [][6]byte{mac(t, "fa:16:3e:00:00:05"), mac(t, "fa:16:3e:aa:00:01"), mac(t, "fa:16:3e:aa:00:02")}
	if !slices.Equal(p.AllowedMACs, wantMACs) {
		t.Errorf("p-vm allowed MACs %x, want %x", p.AllowedMACs, wantMACs)
	}
	wantPrefixes := []netip.Prefix{netip.MustParsePrefix("10.0.0.50/32"), netip.MustParsePrefix("10.0.0.51/32"),
		netip.MustParsePrefix("10.0.0.52/32"), netip.MustParsePrefix("192.168.7.0/24")}
	if !slices.Equal(p.AllowedPrefixes, wantPrefixes) {
		t.Errorf("p-vm allowed prefixes %v, want %v", p.AllowedPrefixes, wantPrefixes)
	}
	if !slices.Equal(p.Addrs, addrs("10.0.0.5", "fd00:10::5")) {
		t.Errorf("p-vm addresses %v", p.Addrs)
	}
	if p, ok := a.Port("p-dhcp"); !ok || p.DeviceOwner != "network:dhcp" || !p.PortSecurity || len(p.AllowedMACs) != 0 {
		t.Errorf("p-dhcp (port_security_enabled not reported) = %+v, %v", p, ok)
	}
	if p, ok := b.Port("p-open"); !ok || p.PortSecurity || p.DeviceOwner != "compute:az1" {
		t.Errorf("p-open = %+v, %v", p, ok)
	}
	for _, c := range []struct {
		n  *Network
		id string
	}{{a, "p-open"}, {b, "p-vm"}, {a, "p-other"}, {a, ""}, {nil, "p-vm"}} {
		if p, ok := c.n.Port(c.id); ok {
			t.Errorf("%s.Port(%q) = %+v", c.n.ID(), c.id, p)
		}
	}

	for _, c := range []struct {
		n    *Network
		addr string
		want bool
	}{
		{a, "10.0.0.1", true}, // the router interface
		{a, "10.0.0.2", true}, // the DHCP port
		{a, "10.0.0.5", true},
		{a, "fd00:10::5", true},
		{a, "::ffff:10.0.0.5", true},
		{a, "10.0.0.51", true},     // an allowed address pair
		{a, "192.168.7.200", true}, // within an allowed prefix
		{a, "fd00:10::1", false},
		{a, "10.0.0.254", false},
		{a, "10.0.0.53", false},
		{b, "10.0.0.5", true},
		{b, "10.0.0.1", false},
		{b, "10.0.0.254", false},
		{nil, "10.0.0.5", false},
	} {
		if got := c.n.Holds(netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("%s.Holds(%s) = %v, want %v", c.n.ID(), c.addr, got, c.want)
		}
	}
	if s.Network("cccccccc-0000-0000-0000-000000000003") != nil {
		t.Error("a network not asked for has records")
	}
}

func TestSubnetQueries(t *testing.T) {
	f := newFakeNeutron(t)
	s := newStore(t, f, nil)
	ids := make([]string, 0, 120)
	for i := range 120 {
		ids = append(ids, "net-"+strconv.Itoa(1000+i))
	}
	if err := s.sync(t.Context(), ids); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	ports, subnets := slices.Clone(f.queries), slices.Clone(f.subnetQueries)
	f.mu.Unlock()
	// One ports and one subnets request per 50 networks, asking the same
	// networks.
	if len(ports) != 3 || len(subnets) != 3 {
		t.Fatalf("%d ports and %d subnets requests, want 3 and 3", len(ports), len(subnets))
	}
	for i, q := range subnets {
		if !slices.Equal(q["network_id"], ports[i]["network_id"]) {
			t.Errorf("request %d: subnets of %v, ports of %v", i, q["network_id"], ports[i]["network_id"])
		}
		if got := q["fields"]; !slices.Equal(got, []string{"id", "network_id", "cidr", "gateway_ip", "ip_version"}) {
			t.Errorf("subnet fields = %v", got)
		}
	}
}

func TestSubnetPagination(t *testing.T) {
	f := newFakeNeutron(t)
	f.pageSize = 2
	for i := range 5 {
		f.subnets = append(f.subnets, subnet("s"+strconv.Itoa(i), netA, "10.0."+strconv.Itoa(i)+".0/24", "10.0."+strconv.Itoa(i)+".1", 4))
	}
	s := newStore(t, f, nil)
	if err := s.sync(t.Context(), []string{netA}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.subnetQueries); n != 3 {
		t.Errorf("%d subnet requests, want 3 pages", n)
	}
	if got := s.Network(netA).Subnets(); len(got) != 5 {
		t.Errorf("subnets %v", got)
	}
}

// A failed subnet list fails the sync: the last good records, names and
// details together, stay.
func TestSubnetFailureKeepsRecords(t *testing.T) {
	f := newFakeNeutron(t)
	f.setPorts(withAttrs(port("p1", netA, "web", "cloud.example.", true, "10.0.0.5"), "compute:nova", nil))
	f.subnets = []map[string]any{subnet("s1", netA, "10.0.0.0/24", "10.0.0.1", 4)}
	s := newStore(t, f, nil)
	if err := s.sync(t.Context(), []string{netA}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.failSubnets = true
	f.subnets = nil
	f.mu.Unlock()
	f.setPorts()
	if err := s.sync(t.Context(), []string{netA}); err == nil {
		t.Fatal("no error from a failing subnet list")
	}
	n := s.Network(netA)
	if _, ok := n.Port("p1"); !ok || len(n.Subnets()) != 1 || !n.Has(wire(t, "web.")) {
		t.Error("last good records not kept")
	}
}

func TestSynced(t *testing.T) {
	f := newFakeNeutron(t)
	s := newStore(t, f, nil)
	signaled := func() bool {
		select {
		case <-s.Synced():
			return true
		default:
			return false
		}
	}
	if signaled() {
		t.Fatal("signal before any sync")
	}
	if err := s.sync(t.Context(), []string{netA}); err != nil {
		t.Fatal(err)
	}
	if err := s.sync(t.Context(), []string{netA}); err != nil {
		t.Fatal(err)
	}
	if !signaled() || signaled() {
		t.Error("two syncs: want one coalesced signal")
	}
	f.setFail(true)
	if err := s.sync(t.Context(), []string{netA}); err == nil {
		t.Fatal("no error")
	}
	if !signaled() {
		t.Error("no signal after a failed sync")
	}
}

func TestWithDetails(t *testing.T) {
	n, err := NewNetwork(netA, "cloud.example.", time.Now(), []Entry{{Port: "p1", Addr: netip.MustParseAddr("10.0.0.5"), Hostname: "web"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Port("p1"); ok || n.Subnets() != nil || n.Holds(netip.MustParseAddr("10.0.0.5")) {
		t.Error("NewNetwork has details")
	}
	subnets := []Subnet{{ID: "s2", CIDR: netip.MustParsePrefix("fd00::/64")}, {ID: "s1", CIDR: netip.MustParsePrefix("10.0.0.0/24")}}
	d := n.WithDetails(subnets, []Port{
		{ID: "p1", DeviceOwner: "compute:nova", Addrs: addrs("10.0.0.5")},
		{ID: "p1", DeviceOwner: "ignored"},
		{ID: "p2", AllowedPrefixes: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}},
	})
	if subnets[0].ID != "s2" {
		t.Error("WithDetails sorted the caller's slice")
	}
	if got := d.Subnets(); len(got) != 2 || got[0].ID != "s1" {
		t.Errorf("subnets %v", got)
	}
	if p, _ := d.Port("p1"); p.DeviceOwner != "compute:nova" {
		t.Errorf("p1 = %+v: the first of one ID counts", p)
	}
	if !d.Holds(netip.MustParseAddr("10.0.0.5")) || !d.Holds(netip.MustParseAddr("10.0.1.9")) || d.Holds(netip.MustParseAddr("10.0.2.1")) {
		t.Error("Holds")
	}
	if !d.Has(wire(t, "web.cloud.example.")) {
		t.Error("names lost")
	}
	if _, ok := n.Port("p1"); ok {
		t.Error("WithDetails changed the original")
	}
}

func TestPortAllocs(t *testing.T) {
	f := newFakeNeutron(t)
	f.setPorts(withAttrs(port("p1", netA, "web", "cloud.example.", true, "10.0.0.5"), "compute:nova", nil,
		[2]string{"10.0.0.6", "fa:16:3e:aa:00:01"}))
	s := newStore(t, f, nil)
	if err := s.sync(t.Context(), []string{netA}); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if p, ok := s.Network(netA).Port("p1"); !ok || len(p.AllowedMACs) != 1 {
			t.Fatal("miss")
		}
	})
	if allocs != 0 {
		t.Errorf("Port allocates %v times", allocs)
	}
}

func TestParsePrefix(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // "" for rejected
	}{
		{"10.0.0.5", "10.0.0.5/32"},
		{"10.0.0.5/24", "10.0.0.0/24"},
		{"fd00::5", "fd00::5/128"},
		{"fd00::5/64", "fd00::/64"},
		{"::ffff:10.0.0.5", "10.0.0.5/32"},
		{"::ffff:10.0.0.0/120", "10.0.0.0/24"},
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"fe80::1%eth0", ""},
		{"10.0.0.5/33", ""},
		{"", ""},
		{"host", ""},
	} {
		p, ok := parsePrefix(c.in)
		if got := p.String(); (c.want == "" && ok) || (c.want != "" && (!ok || got != c.want)) {
			t.Errorf("parsePrefix(%q) = %s %v, want %q", c.in, got, ok, c.want)
		}
	}
}
