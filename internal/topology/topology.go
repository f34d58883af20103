// Package topology derives, from the bridge's VM ports (OVSDB, package
// inventory) and the Neutron records of their networks (package records),
// what the flow set needs beyond port numbers (pipeline.State) and which
// Ethernet source MACs each port's queries may carry. Compute is a pure
// function: the same inputs give the same output, sorted, so that the flow
// reconciler sees a change only when there is one.
//
// The rules:
//
//   - A VM port is a bridge port whose Neutron port, as its network's
//     records list it, has a device_owner of "compute:<zone>" (Nova's).
//     Router interfaces, DHCP ports and load balancers are not; neither is
//     a port whose network has no records yet or whose records do not list
//     it yet.
//   - Neighbour answers (ARP for IPv4, Neighbor Solicitations for IPv6):
//     for a network whose ports on the bridge all carry network_type
//     vxlan, geneve or gre (an overlay network: nobody outside the cloud
//     answers for its gateway), whose records are known and list every one
//     of those ports, every subnet gateway_ip that no Neutron port holds
//     (no router interface, no port with that fixed IP, no allowed address
//     pair covering it) is answered to the network's VM ports; so is every
//     service address the caller passes (fd00::254), on networks with a
//     subnet of its family, unless a port holds it. Flat, VLAN and local
//     networks, and ports whose type is not known, get none: their gateway
//     may be a physical router. An address answered on several networks
//     is one Neighbor with the VM ports of all of them.
//   - Source MACs: a port's queries may come from its attached-mac
//     (OVSDB) and from the MACs of its allowed_address_pairs; from any MAC
//     when its port_security_enabled is false. Until the records list the
//     port, only the attached-mac.
package topology

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/inventory"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/pipeline"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/records"
)

// Records gives the records of a network, nil when they are not known;
// *records.Store implements it.
type Records interface {
	Network(id string) *records.Network
}

// Sources says which Ethernet source MACs a port's queries may carry.
type Sources struct {
	// AttachedMAC is the interface's attached-mac, always accepted.
	AttachedMAC [6]byte
	// AllowedMACs are the MACs of the port's allowed_address_pairs,
	// sorted; shared with the records: do not modify.
	AllowedMACs [][6]byte
	// Any is set when the port's port security is disabled: any MAC.
	Any bool
}

// Accepts reports whether a query from source MAC mac is the port's. It
// does not allocate.
func (s *Sources) Accepts(mac [6]byte) bool {
	return s.Any || mac == s.AttachedMAC || slices.Contains(s.AllowedMACs, mac)
}

// SourcesOf returns the source MACs accepted from bridge port p, given
// the records of its network (nil when not known). It does not allocate.
func SourcesOf(p inventory.Port, n *records.Network) Sources {
	s := Sources{AttachedMAC: p.MAC}
	if p.Network == "" || n.ID() != p.Network {
		return s
	}
	rp, ok := n.Port(p.PortID)
	if !ok {
		return s
	}
	if !rp.PortSecurity {
		s.Any = true
		return s
	}
	s.AllowedMACs = rp.AllowedMACs
	return s
}

// Port is one bridge port as Compute sees it.
type Port struct {
	// OFPort is the OpenFlow port number.
	OFPort uint32
	// PortID and Network are the Neutron port and network ids (OVSDB).
	PortID, Network string
	// VM reports whether the port is an instance's (device_owner
	// compute:*).
	VM bool
	// Sources are the source MACs accepted from the port.
	Sources Sources
}

// Topology is what Compute derives.
type Topology struct {
	// State is what the flow set needs: VM ports and neighbour answers,
	// sorted.
	State pipeline.State
	// Ports are the bridge's VM ports (as the inventory has them), sorted
	// by OFPort.
	Ports []Port
}

// Compute derives the topology of the bridge ports (the inventory's; of
// several entries with one OFPort the first counts) from the records of
// their networks (recs nil: none known) and the service addresses that
// get neighbour answers like gateways (the IPv6 service addresses, such
// as fd00::254). See the package documentation for the rules.
func Compute(ports []inventory.Port, recs Records, services []netip.Addr) Topology {
	sorted := slices.Clone(ports)
	slices.SortStableFunc(sorted, func(a, b inventory.Port) int { return cmp.Compare(a.OFPort, b.OFPort) })
	sorted = slices.CompactFunc(sorted, func(a, b inventory.Port) bool { return a.OFPort == b.OFPort })

	var t Topology
	byNetwork := make(map[string][]inventory.Port)
	for _, p := range sorted {
		n := network(recs, p.Network)
		tp := Port{OFPort: p.OFPort, PortID: p.PortID, Network: p.Network, Sources: SourcesOf(p, n)}
		if rp, ok := n.Port(p.PortID); ok && n.ID() == p.Network {
			tp.VM = isCompute(rp.DeviceOwner)
		}
		if tp.VM {
			t.State.VMPorts = append(t.State.VMPorts, p.OFPort)
		}
		t.Ports = append(t.Ports, tp)
		if p.Network != "" {
			byNetwork[p.Network] = append(byNetwork[p.Network], p)
		}
	}

	answered := make(map[netip.Addr][]uint32)
	for id, ps := range byNetwork {
		n := network(recs, id)
		vms, ok := overlayVMPorts(n, ps)
		if !ok || len(vms) == 0 {
			continue
		}
		for _, addr := range unheld(n, services) {
			answered[addr] = append(answered[addr], vms...)
		}
	}
	for addr, ps := range answered {
		slices.Sort(ps)
		t.State.Neighbors = append(t.State.Neighbors, pipeline.Neighbor{Addr: addr, Ports: slices.Compact(ps)})
	}
	slices.SortFunc(t.State.Neighbors, func(a, b pipeline.Neighbor) int { return a.Addr.Compare(b.Addr) })
	return t
}

// network returns the records of network id, nil when not known.
func network(recs Records, id string) *records.Network {
	if recs == nil || id == "" {
		return nil
	}
	return recs.Network(id)
}

// isCompute reports whether a device_owner is an instance's.
func isCompute(owner string) bool { return strings.HasPrefix(owner, "compute:") }

// overlayVMPorts returns the VM ports of a network's bridge ports ps, and
// whether the network gets neighbour answers: its records n are known and
// list every port of ps, and every port of ps is on an overlay segment.
func overlayVMPorts(n *records.Network, ps []inventory.Port) ([]uint32, bool) {
	if n == nil {
		return nil, false
	}
	var vms []uint32
	for _, p := range ps {
		switch p.NetworkType {
		case inventory.NetworkTypeVXLAN, inventory.NetworkTypeGeneve, inventory.NetworkTypeGRE:
		default:
			return nil, false
		}
		rp, ok := n.Port(p.PortID)
		if !ok {
			return nil, false
		}
		if isCompute(rp.DeviceOwner) {
			vms = append(vms, p.OFPort)
		}
	}
	return vms, true
}

// unheld returns the addresses network n gets neighbour answers for: its
// subnets' gateways and the services of a family it has a subnet of, that
// no port of n holds.
func unheld(n *records.Network, services []netip.Addr) []netip.Addr {
	var addrs []netip.Addr
	has4, has6 := false, false
	for _, s := range n.Subnets() {
		has4 = has4 || s.CIDR.Addr().Is4()
		has6 = has6 || !s.CIDR.Addr().Is4()
		if s.Gateway.IsValid() && !n.Holds(s.Gateway) {
			addrs = append(addrs, s.Gateway)
		}
	}
	for _, a := range services {
		a = a.Unmap()
		if ((a.Is4() && has4) || (!a.Is4() && has6)) && !n.Holds(a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}
