package records

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Subnet is one subnet of a network, as Neutron lists it.
type Subnet struct {
	// ID is the subnet's UUID.
	ID string
	// CIDR is its prefix, masked.
	CIDR netip.Prefix
	// Gateway is its gateway_ip, of CIDR's family; invalid when the subnet
	// has none.
	Gateway netip.Addr
}

// Port is what a network's records keep of one of its Neutron ports
// beside its names.
type Port struct {
	// ID is the port's UUID.
	ID string
	// DeviceOwner is its device_owner: "compute:<zone>" for an
	// instance's port, "network:router_interface", "network:dhcp", ...
	DeviceOwner string
	// MAC is its mac_address; zero when Neutron's value does not parse.
	MAC [6]byte
	// PortSecurity is its port_security_enabled; true when Neutron does
	// not report it (without the port_security extension the port is
	// secured).
	PortSecurity bool
	// AllowedMACs are the distinct MACs of its allowed_address_pairs,
	// sorted (the port's own MAC among them when a pair has no MAC of its
	// own: Neutron fills it in). Shared: do not modify.
	AllowedMACs [][6]byte
	// Addrs are the addresses of its fixed_ips. Shared: do not modify.
	Addrs []netip.Addr
	// AllowedPrefixes are the ip_address of its allowed_address_pairs,
	// masked, a single address as a full-length prefix. Shared: do not
	// modify.
	AllowedPrefixes []netip.Prefix
}

// details are the parts of a Network beside its names.
type details struct {
	// subnets are sorted by ID.
	subnets []Subnet
	// portByID holds every port listed for the network.
	portByID map[string]Port
	// held are the fixed IPs of every port; heldPrefixes the prefixes of
	// every allowed address pair, sorted and unique.
	held         map[netip.Addr]struct{}
	heldPrefixes []netip.Prefix
}

// Subnets returns the network's subnets, sorted by ID. The slice is
// shared: callers must not modify it.
func (n *Network) Subnets() []Subnet {
	if n == nil {
		return nil
	}
	return n.subnets
}

// Port returns the port of the network with Neutron id, and whether the
// records list it. It takes no lock and does not allocate; the slices of
// the returned Port are shared.
func (n *Network) Port(id string) (Port, bool) {
	if n == nil {
		return Port{}, false
	}
	p, ok := n.portByID[id]
	return p, ok
}

// Holds reports whether a port of the network holds addr: a fixed IP of
// any port, whatever its device_owner (router interfaces and DHCP ports
// included), or an address within an allowed address pair of any port.
func (n *Network) Holds(addr netip.Addr) bool {
	if n == nil {
		return false
	}
	addr = addr.Unmap()
	if _, ok := n.held[addr]; ok {
		return true
	}
	for _, p := range n.heldPrefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// WithDetails returns a copy of n (not nil) whose subnets and ports are
// the given ones instead of n's, as a sync sets them (subnets sorted by
// ID; of ports with one ID the first counts). It is meant for tests of
// the packages that use records.
func (n *Network) WithDetails(subnets []Subnet, ports []Port) *Network {
	c := *n
	c.details = newDetails(slices.Clone(subnets), ports)
	return &c
}

// newDetails builds the details of subnets (sorted in place) and ports.
func newDetails(subnets []Subnet, ports []Port) details {
	slices.SortStableFunc(subnets, func(a, b Subnet) int { return strings.Compare(a.ID, b.ID) })
	d := details{
		subnets:  subnets,
		portByID: make(map[string]Port, len(ports)),
		held:     make(map[netip.Addr]struct{}),
	}
	for _, p := range ports {
		if _, dup := d.portByID[p.ID]; dup {
			continue
		}
		d.portByID[p.ID] = p
		for _, a := range p.Addrs {
			d.held[a.Unmap()] = struct{}{}
		}
		d.heldPrefixes = append(d.heldPrefixes, p.AllowedPrefixes...)
	}
	slices.SortFunc(d.heldPrefixes, comparePrefix)
	d.heldPrefixes = slices.Compact(d.heldPrefixes)
	return d
}

// comparePrefix orders prefixes by address, then length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// addDetails gives every network of nets its subnets and ports from the
// API's lists; entries of other networks and values that do not parse
// are skipped (logged at debug level).
func addDetails(nets map[string]*Network, ports []apiPort, subnets []apiSubnet, log *slog.Logger) {
	subnetsOf := make(map[string][]Subnet, len(nets))
	for i := range subnets {
		a := &subnets[i]
		if _, ok := nets[a.NetworkID]; !ok {
			continue
		}
		if s, ok := toSubnet(a, log); ok {
			subnetsOf[a.NetworkID] = append(subnetsOf[a.NetworkID], s)
		}
	}
	portsOf := make(map[string][]Port, len(nets))
	for i := range ports {
		a := &ports[i]
		if _, ok := nets[a.NetworkID]; !ok {
			continue
		}
		portsOf[a.NetworkID] = append(portsOf[a.NetworkID], toPort(a, log))
	}
	for id, n := range nets {
		n.details = newDetails(subnetsOf[id], portsOf[id])
	}
}

// toSubnet converts a listed subnet; false when its cidr does not parse.
// A gateway_ip that does not parse, or is not of the cidr's family, is
// dropped.
func toSubnet(a *apiSubnet, log *slog.Logger) (Subnet, bool) {
	cidr, err := netip.ParsePrefix(a.CIDR)
	if err != nil || (a.IPVersion == 4 && !cidr.Addr().Is4()) || (a.IPVersion == 6 && !cidr.Addr().Is6()) {
		log.Debug("records: bad subnet cidr", "subnet", a.ID, "cidr", a.CIDR, "ip_version", a.IPVersion)
		return Subnet{}, false
	}
	s := Subnet{ID: a.ID, CIDR: cidr.Masked()}
	if a.GatewayIP == nil || *a.GatewayIP == "" {
		return s, true
	}
	gw, err := netip.ParseAddr(*a.GatewayIP)
	if err != nil || gw.Unmap().Is4() != cidr.Addr().Is4() || gw.Zone() != "" {
		log.Debug("records: bad subnet gateway_ip", "subnet", a.ID, "gateway_ip", *a.GatewayIP)
		return s, true
	}
	s.Gateway = gw.Unmap()
	return s, true
}

// toPort converts a listed port's attributes beside its names.
func toPort(a *apiPort, log *slog.Logger) Port {
	p := Port{ID: a.ID, DeviceOwner: a.DeviceOwner, PortSecurity: true}
	if a.PortSecurityEnabled != nil {
		p.PortSecurity = *a.PortSecurityEnabled
	}
	if mac, ok := parseMAC(a.MACAddress); ok {
		p.MAC = mac
	}
	for _, f := range a.FixedIPs {
		if addr, err := netip.ParseAddr(f.IPAddress); err == nil {
			p.Addrs = append(p.Addrs, addr.Unmap())
		}
	}
	for _, pair := range a.AllowedAddressPairs {
		if mac, ok := parseMAC(pair.MACAddress); ok {
			p.AllowedMACs = append(p.AllowedMACs, mac)
		} else if pair.MACAddress != "" {
			log.Debug("records: bad allowed_address_pairs mac_address", "port", a.ID, "mac_address", pair.MACAddress)
		}
		if prefix, ok := parsePrefix(pair.IPAddress); ok {
			p.AllowedPrefixes = append(p.AllowedPrefixes, prefix)
		} else {
			log.Debug("records: bad allowed_address_pairs ip_address", "port", a.ID, "ip_address", pair.IPAddress)
		}
	}
	slices.SortFunc(p.AllowedMACs, func(x, y [6]byte) int { return slices.Compare(x[:], y[:]) })
	p.AllowedMACs = slices.Clip(slices.Compact(p.AllowedMACs))
	slices.SortFunc(p.AllowedPrefixes, comparePrefix)
	p.AllowedPrefixes = slices.Clip(slices.Compact(p.AllowedPrefixes))
	return p
}

// parseMAC parses a 48-bit MAC as Neutron writes it ("fa:16:3e:00:00:01").
func parseMAC(s string) ([6]byte, bool) {
	var mac [6]byte
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != len(mac) {
		return mac, false
	}
	copy(mac[:], hw)
	return mac, true
}

// parsePrefix parses an allowed address pair's ip_address: a prefix
// ("10.0.0.0/24"), masked, or an address, as a full-length prefix. An
// IPv4-mapped IPv6 prefix of 96 bits or more becomes its IPv4 prefix.
func parsePrefix(s string) (netip.Prefix, bool) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, false
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), true
}
