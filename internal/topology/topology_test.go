package topology

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/inventory"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/pipeline"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/records"
)

// recordSet is a Records of fixed networks.
type recordSet map[string]*records.Network

func (r recordSet) Network(id string) *records.Network { return r[id] }

// net builds the records of network id with subnets ("cidr gateway" or
// "cidr") and ports.
func net(t *testing.T, id string, subnets []string, ports ...records.Port) *records.Network {
	t.Helper()
	n, err := records.NewNetwork(id, "cloud.test.", time.Unix(0, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	var ss []records.Subnet
	for i, s := range subnets {
		cidr, gw, _ := strings.Cut(s, " ")
		sub := records.Subnet{ID: id + "-s" + strconv.Itoa(i), CIDR: netip.MustParsePrefix(cidr)}
		if gw != "" {
			sub.Gateway = netip.MustParseAddr(gw)
		}
		ss = append(ss, sub)
	}
	return n.WithDetails(ss, ports)
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func macOf(b byte) [6]byte { return [6]byte{0xfa, 0x16, 0x3e, 0, 0, b} }

// rport is a Neutron port of the records.
func rport(id, owner string, ips ...string) records.Port {
	return records.Port{ID: id, DeviceOwner: owner, PortSecurity: true, Addrs: addrs(ips...)}
}

// bport is a bridge port of the inventory.
func bport(ofport uint32, id, network, netType string) inventory.Port {
	return inventory.Port{OFPort: ofport, Name: "tap" + id, PortID: id, MAC: macOf(byte(ofport)),
		Network: network, NetworkType: netType, Tag: 1}
}

var fd00254 = netip.MustParseAddr("fd00::254")

func TestCompute(t *testing.T) {
	vmAAP := rport("a-vm2", "compute:nova", "10.0.0.6")
	vmAAP.AllowedMACs = [][6]byte{{0x02, 0, 0, 0, 0, 0x66}}
	vmAAP.AllowedPrefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.66/32")}
	open := rport("b-vm", "compute:az1", "10.0.0.5")
	open.PortSecurity = false
	recs := recordSet{
		// A: VXLAN, dual-stack; a (DVR) router interface holds the IPv4
		// gateway and is on the bridge too.
		"net-a": net(t, "net-a", []string{"10.0.0.0/24 10.0.0.1", "fd00:10::/64 fd00:10::1"},
			rport("a-vm1", "compute:nova", "10.0.0.5", "fd00:10::5"), vmAAP,
			rport("a-router", "network:router_interface_distributed", "10.0.0.1", "fd00:10::2"),
			rport("a-dhcp", "network:dhcp", "10.0.0.2")),
		// B: VLAN: no neighbour answers, whatever its gateway.
		"net-b": net(t, "net-b", []string{"10.0.0.0/24 10.0.0.1"}, open),
		// D: Geneve, but the records do not list d-new yet.
		"net-d": net(t, "net-d", []string{"10.4.0.0/24 10.4.0.1"}, rport("d-vm", "compute:nova", "10.4.0.5")),
		// E: GRE, IPv4 only, unheld gateway; a subnet without gateway.
		"net-e": net(t, "net-e", []string{"10.0.0.0/24 10.0.0.1", "10.5.0.0/24"}, rport("e-vm", "compute:nova", "10.0.0.9")),
		// F: VXLAN, IPv6 only, a port holds fd00::254 itself.
		"net-f": net(t, "net-f", []string{"fd00::/64 fd00::1"}, rport("f-vm", "compute:nova", "fd00::5"),
			rport("f-svc", "compute:nova", "fd00::254")),
		// G: VXLAN with only a router port on the bridge: no VM to answer.
		"net-g": net(t, "net-g", []string{"10.7.0.0/24 10.7.0.1"}, rport("g-router", "network:router_interface")),
	}
	ports := []inventory.Port{
		bport(5, "a-vm1", "net-a", "vxlan"),
		bport(6, "a-vm2", "net-a", "vxlan"),
		bport(7, "a-router", "net-a", "vxlan"),
		bport(8, "b-vm", "net-b", "vlan"),
		bport(9, "c-vm", "net-c", "vxlan"), // no records for net-c
		bport(10, "d-vm", "net-d", "geneve"),
		bport(11, "d-new", "net-d", "geneve"),
		bport(12, "e-vm", "net-e", "gre"),
		bport(13, "f-vm", "net-f", "vxlan"),
		bport(14, "f-svc", "net-f", "vxlan"),
		bport(15, "g-router", "net-g", "vxlan"),
		bport(16, "unbound", "", ""),
	}
	got := Compute(ports, recs, []netip.Addr{fd00254})

	want := pipeline.State{
		VMPorts: []uint32{5, 6, 8, 10, 12, 13, 14},
		Neighbors: []pipeline.Neighbor{
			// net-e's gateway; net-a's and net-b's (same address) are
			// not answered: held by a router, or VLAN.
			{Addr: netip.MustParseAddr("10.0.0.1"), Ports: []uint32{12}},
			{Addr: netip.MustParseAddr("fd00::1"), Ports: []uint32{13, 14}},
			{Addr: fd00254, Ports: []uint32{5, 6}},
			{Addr: netip.MustParseAddr("fd00:10::1"), Ports: []uint32{5, 6}},
		},
	}
	if !reflect.DeepEqual(got.State, want) {
		t.Errorf("State\n got %+v\nwant %+v", got.State, want)
	}

	if len(got.Ports) != len(ports) {
		t.Fatalf("%d ports, want %d", len(got.Ports), len(ports))
	}
	byOF := map[uint32]Port{}
	for i, p := range got.Ports {
		if i > 0 && got.Ports[i-1].OFPort >= p.OFPort {
			t.Errorf("ports not sorted: %v", got.Ports)
		}
		byOF[p.OFPort] = p
	}
	for _, c := range []struct {
		ofport  uint32
		vm      bool
		any     bool
		allowed [][6]byte
	}{
		{5, true, false, nil},
		{6, true, false, [][6]byte{{0x02, 0, 0, 0, 0, 0x66}}},
		{7, false, false, nil},
		{8, true, true, nil},
		{9, false, false, nil},
		{11, false, false, nil},
		{16, false, false, nil},
	} {
		p := byOF[c.ofport]
		if p.VM != c.vm || p.Sources.Any != c.any || !slices.Equal(p.Sources.AllowedMACs, c.allowed) ||
			p.Sources.AttachedMAC != macOf(byte(c.ofport)) {
			t.Errorf("port %d: %+v, want VM %v, any %v, allowed %x", c.ofport, p, c.vm, c.any, c.allowed)
		}
	}
	if p := byOF[6]; p.PortID != "a-vm2" || p.Network != "net-a" {
		t.Errorf("port 6: %+v", p)
	}
}

func TestNetworkTypes(t *testing.T) {
	recs := recordSet{"n": net(t, "n", []string{"10.0.0.0/24 10.0.0.1", "fd00::/64 fd00::1"}, rport("vm", "compute:nova", "10.0.0.5"))}
	for _, c := range []struct {
		typ  string
		want bool
	}{
		{"vxlan", true}, {"geneve", true}, {"gre", true},
		{"flat", false}, {"vlan", false}, {"local", false}, {"", false},
	} {
		got := Compute([]inventory.Port{bport(3, "vm", "n", c.typ)}, recs, []netip.Addr{fd00254})
		if (len(got.State.Neighbors) == 3) != c.want || (!c.want && len(got.State.Neighbors) != 0) {
			t.Errorf("%q: neighbours %v, want answered %v", c.typ, got.State.Neighbors, c.want)
		}
		if !slices.Equal(got.State.VMPorts, []uint32{3}) {
			t.Errorf("%q: VM ports %v", c.typ, got.State.VMPorts)
		}
	}
	// Ports of one network with different types: none.
	recs["n"] = net(t, "n", []string{"10.0.0.0/24 10.0.0.1"}, rport("vm", "compute:nova"), rport("vm2", "compute:nova"))
	got := Compute([]inventory.Port{bport(3, "vm", "n", "vxlan"), bport(4, "vm2", "n", "flat")}, recs, nil)
	if len(got.State.Neighbors) != 0 {
		t.Errorf("mixed types: %v", got.State.Neighbors)
	}
}

// Until the records are known, nothing is answered and only the
// attached-mac is accepted.
func TestNoRecords(t *testing.T) {
	ports := []inventory.Port{bport(1, "vm", "n", "vxlan"), bport(2, "x", "", "")}
	for _, recs := range []Records{nil, recordSet{}} {
		got := Compute(ports, recs, []netip.Addr{fd00254})
		if got.State.VMPorts != nil || got.State.Neighbors != nil {
			t.Errorf("%v: state %+v", recs, got.State)
		}
		for _, p := range got.Ports {
			if p.VM || p.Sources.Any || p.Sources.AllowedMACs != nil {
				t.Errorf("%v: port %+v", recs, p)
			}
		}
	}
	if got := Compute(nil, nil, nil); got.Ports != nil || got.State.VMPorts != nil || got.State.Neighbors != nil {
		t.Errorf("no ports: %+v", got)
	}
}

// The same gateway unheld on two overlay networks is one Neighbor with
// the VM ports of both.
func TestSharedGateway(t *testing.T) {
	recs := recordSet{
		"x": net(t, "x", []string{"10.0.0.0/24 10.0.0.1"}, rport("x1", "compute:nova"), rport("x2", "compute:nova")),
		"y": net(t, "y", []string{"10.0.0.0/24 10.0.0.1"}, rport("y1", "compute:nova")),
	}
	got := Compute([]inventory.Port{bport(9, "x1", "x", "vxlan"), bport(2, "y1", "y", "vxlan"), bport(4, "x2", "x", "vxlan")}, recs, nil)
	want := []pipeline.Neighbor{{Addr: netip.MustParseAddr("10.0.0.1"), Ports: []uint32{2, 4, 9}}}
	if !reflect.DeepEqual(got.State.Neighbors, want) {
		t.Errorf("neighbours %+v, want %+v", got.State.Neighbors, want)
	}
}

// An allowed address pair covering the gateway holds it (a VM acting as
// the gateway).
func TestGatewayHeldByAddressPair(t *testing.T) {
	router := rport("vm-router", "compute:nova", "10.0.0.10")
	router.AllowedPrefixes = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/30")}
	recs := recordSet{"n": net(t, "n", []string{"10.0.0.0/24 10.0.0.1"}, rport("vm", "compute:nova"), router)}
	got := Compute([]inventory.Port{bport(1, "vm", "n", "vxlan")}, recs, nil)
	if len(got.State.Neighbors) != 0 {
		t.Errorf("neighbours %v", got.State.Neighbors)
	}
}

// The output does not depend on the order of the input.
func TestDeterministic(t *testing.T) {
	recs := recordSet{}
	var ports []inventory.Port
	for k := range 40 {
		id := string(rune('a' + k%8))
		if recs[id] == nil {
			recs[id] = net(t, id, []string{"10.0.0.0/24 10.0.0.1", "fd00::/64 fd00::1"})
		}
		pid := id + strconv.Itoa(k)
		ports = append(ports, bport(uint32(k+1), pid, id, []string{"vxlan", "geneve", "gre"}[k%3]))
	}
	// Every network's records list its ports.
	for id := range recs {
		var rs []records.Port
		for _, p := range ports {
			if p.Network == id {
				rs = append(rs, rport(p.PortID, "compute:nova"))
			}
		}
		recs[id] = net(t, id, []string{"10.0.0.0/24 10.0.0.1", "fd00::/64 fd00::1"}, rs...)
	}
	first := Compute(ports, recs, []netip.Addr{fd00254})
	if len(first.State.VMPorts) != 40 || len(first.State.Neighbors) != 3 || len(first.State.Neighbors[0].Ports) != 40 {
		t.Fatalf("state %+v", first.State)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		shuffled := slices.Clone(ports)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := Compute(shuffled, recs, []netip.Addr{fd00254}); !reflect.DeepEqual(got, first) {
			t.Fatalf("shuffled input gives another topology")
		}
	}
	// Of two entries with one OFPort the first counts.
	dup := append([]inventory.Port{bport(1, "other", "z", "vxlan")}, ports...)
	if got := Compute(dup, recs, nil); len(got.Ports) != 40 || got.Ports[0].PortID != "other" {
		t.Errorf("duplicate ofport: %+v", got.Ports[0])
	}
}

func TestSourcesOf(t *testing.T) {
	aap := rport("p", "compute:nova")
	aap.AllowedMACs = [][6]byte{{2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2}}
	n := net(t, "n", nil, aap)
	p := bport(4, "p", "n", "vxlan")
	s := SourcesOf(p, n)
	for _, c := range []struct {
		mac  [6]byte
		want bool
	}{{macOf(4), true}, {[6]byte{2, 0, 0, 0, 0, 1}, true}, {[6]byte{2, 0, 0, 0, 0, 2}, true}, {[6]byte{2, 0, 0, 0, 0, 3}, false}, {macOf(5), false}} {
		if got := s.Accepts(c.mac); got != c.want {
			t.Errorf("Accepts(%x) = %v, want %v", c.mac, got, c.want)
		}
	}
	// Records of another network, or none: the attached-mac only.
	for _, other := range []*records.Network{nil, net(t, "m", nil, aap)} {
		if s := SourcesOf(p, other); s.Accepts([6]byte{2, 0, 0, 0, 0, 1}) || !s.Accepts(macOf(4)) {
			t.Errorf("records of %q: %+v", other.ID(), s)
		}
	}
	open := rport("p", "compute:nova")
	open.PortSecurity = false
	if s := SourcesOf(p, net(t, "n", nil, open)); !s.Accepts([6]byte{0x0e, 1, 2, 3, 4, 5}) {
		t.Errorf("port security off: %+v", s)
	}
	allocs := testing.AllocsPerRun(100, func() {
		s := SourcesOf(p, n)
		if !s.Accepts([6]byte{2, 0, 0, 0, 0, 2}) {
			t.Fatal("rejected")
		}
	})
	if allocs != 0 {
		t.Errorf("SourcesOf and Accepts allocate %v times", allocs)
	}
}
