// Package pipeline declares the OpenFlow flows and meters ovs-dns-forwarder
// keeps on the integration bridge. It is the one place that says which
// table, priority, cookie, meter, match and actions they have; ofswitch
// installs and reconciles the set, and nothing else builds flows.
//
// Neutron's OVS agent fills table 60 (TRANSIENT_TABLE) with priority 3
// (NORMAL), 90, 100 (in_port -> the firewall) and 101 (DHCP). Our flows
// there run before security groups, so they take only what the daemon
// serves: UDP DNS, sent to our own OpenFlow connection (chosen by
// controller id), and, with Spec.NeighborAnswers, ARP requests and
// Neighbor Solicitations for the addresses the daemon declares, answered
// by the flows themselves. Nothing else is punted or answered.
//
// # The flows
//
// Spec.Declare returns the set for the bridge's ports and a State; each
// kind of flow is built by the function of its name. Priorities: P is the
// per-port one (Spec.Priority+1), G the generic one (Spec.Priority), I the
// intercept one (G-1): 103, 102 and 101 by default. "Unmarked" is
// reg13=0/0x1: no capture flow takes a packet that carries ReinjectMark,
// and no answer flow either but naLinkAddr, which takes only the marked
// advertisements naAnswer makes. T is Spec.Table, MAC the responder MAC
// (Spec.AnswerMAC).
//
//	portCapture    P  per port and service S: in_port, udp|udp6, dst S, tp_dst, unmarked
//	                  -> meter:port, controller            (not with NoMeters)
//	responderDNS   P  per VM port: in_port, untagged, dl_dst=MAC, udp|udp6, tp_dst=53, unmarked
//	                  -> meter:port, controller            (InterceptAll and NeighborAnswers)
//	dadPass        P  per IPv6 neighbour A: icmp6, type 135, ipv6_src=::, nd_target=A, unmarked
//	                  -> mark, resubmit(,T)                (NeighborAnswers)
//	genericCapture G  per service S: udp|udp6, dst S, tp_dst, unmarked
//	                  -> meter:global, controller
//	arpAnswer      G  per IPv4 neighbour A and its port: in_port, untagged, arp, arp_op=1, arp_tpa=A, unmarked
//	                  -> ARP reply from A at MAC, IN_PORT  (NeighborAnswers)
//	serviceARP     G  per IPv4 service address S: untagged, arp, arp_op=1, arp_tpa=S, unmarked
//	                  -> ARP reply from S at MAC, IN_PORT  (NeighborAnswers)
//	naAnswer       G  per IPv6 neighbour A and its port: in_port, untagged, icmp6, type 135, nd_target=A, unmarked
//	                  -> advertisement from A, mark, resubmit(,T)   (NeighborAnswers)
//	naLinkAddr     G  one: icmp6, type 136, marked
//	                  -> nd_tll=MAC, IN_PORT               (NeighborAnswers, with an IPv6 neighbour)
//	intercept      I  per VM port: in_port, untagged, udp|udp6, tp_dst=53, unmarked
//	                  -> meter:port, controller            (InterceptAll)
//	responderDrop  I  one: dl_dst=MAC -> drop              (NeighborAnswers)
//
// "Per port" means every bridge port 1..MaxMeteredPort the session knows;
// "per VM port" the known ports among State.VMPorts; a neighbour's ports
// are the known ones among its Neighbor.Ports. With NoMeters, no flow
// names a meter and portCapture is left out.
//
// # Overload protection and fairness
//
// Every punted query costs ovs-vswitchd 12-24 µs of its main thread and a
// place in the connection's packet-in queue, which holds 100 messages: past
// that OVS drops packet-ins, whoever sent them. A meter drops the excess in
// the datapath instead, before it costs an upcall. One meter for everybody
// would let one flooding VM use up the whole budget, so the set is
// per port:
//
//   - For every bridge port P (1..MaxMeteredPort) and service address S, at
//     Priority+1: in_port=P, udp, nw_dst=S, tp_dst=53, unmarked
//     actions=meter:PortMeterID(P), controller(id). Meter PortMeterID(P)
//     has one drop band of PortMeterRate packets/s, burst PortMeterBurst.
//     A flooding VM fills only its own meter; the others keep theirs.
//   - Per service address, at Priority, the generic flow of earlier
//     versions, through the global meter GlobalMeterID (MeterRate,
//     MeterBurst): it catches ports the daemon has not learnt yet (between
//     a port's creation and its PORT_STATUS) and ports above
//     MaxMeteredPort.
//
// The set is a function of the bridge's ports (Spec.Declare); ofswitch
// learns them from PORT_DESC at connect and PORT_STATUS afterwards and adds
// or removes a port's flows and meter as it comes and goes.
//
// Meter ids: Open vSwitch's meter ids are per bridge and carry no cookie.
// Neutron's QoS driver picks random ids in 1..max_meter (262144 on the
// userspace datapath), so ours live far above it, in the 64 Ki block at
// MeterIDBase (0xd0530000, below OpenFlow's limit 0xffff0000): the global
// meter is MeterIDBase itself, port P's is MeterIDBase+P. The daemon
// deletes meters of that block it does not declare and never touches
// another id.
//
// Rates on the userspace (netdev) datapath, measured with Open vSwitch 3.1:
// a pktps drop band refills by the millisecond and passes rate plus burst
// over a run (1000 pps, burst 100, 4 s of a 20 000-150 000 pps flood from
// one namespace: 1024 passed per second; 5000 pps, burst 500: about 5000).
// The bucket refills by the millisecond and the datapath hands packets over
// in batches of up to 32, so keep the burst at least 32 and at least a few
// milliseconds' worth of the rate (rate/100 or more). Around 10 000 pps on
// this 2-core machine the flood itself saturates ovs-vswitchd's main thread
// (which also receives the packets on the netdev datapath) and the figures
// stop being clean; the per-port rates are far below that.
//
// Fairness, measured (TestRealOVSPortMeters in ofswitch): VM 1 floods with
// dnsperf at 30 000 qps while VM 2 asks 500 qps for 5 s. With per-port
// meters VM 2 kept 100 % of its answers (2499 of 2500) and VM 1 got 1005/s;
// with one global meter of 2048 pps instead, VM 2 kept 64 %.
//
// Defaults and why:
//   - PortMeterRate 1024 pps, PortMeterBurst 100: a VM's own stub resolver
//     rarely needs more than a few hundred queries per second (AWS allows
//     1024 packets/s per interface to its VPC resolver); the burst, the
//     packet-in queue's depth, lets a VM's burst through whole but can
//     never fill OVS's queue by itself.
//   - MeterRate 10000 pps, MeterBurst 100 (the global meter of the
//     fallback flows): "sized to OVS's packet-in queue": the burst is the
//     queue's 100 messages, so whatever the meter lets through at once
//     fits the queue even while the daemon is not reading, and the rate is
//     what the daemon drains while forwarding to upstreams (about 12 000
//     queries/s measured here), so the queue does not grow at that rate
//     either. It carries little in normal operation (ports are learnt
//     within milliseconds) and caps the whole bridge if port learning
//     fails.
//
// # Interception of DNS sent anywhere
//
// With Spec.InterceptAll, every VM port P (State.VMPorts: Neutron ports
// of device_owner compute:*, never router, DHCP or load-balancer ports)
// also gets two flows (IPv4 and IPv6) at InterceptPriority, just below the
// generic flows and above Neutron's priority-100 in_port flows:
//
//	in_port=P, untagged (vlan_tci=0x0000/0x1fff), udp|udp6, tp_dst=53,
//	  reg13=0/0x1 actions=meter:PortMeterID(P), controller(id)
//
// They capture DNS a VM sends to any address; the service flows above them
// still take the service addresses. A captured query the daemon does not
// answer itself goes back into the pipeline with ofswitch's Reinject: a
// packet-out with in_port=P whose actions set the mark (ReinjectMark,
// reg13 bit 0) and resubmit to the capture table. Every capture flow, the
// service flows included, excludes marked packets, so the packet is not
// captured again, whatever it holds (a malformed query to a service
// address too): it falls through to Neutron's in_port flow (the firewall
// with the VM's security groups, then NORMAL) as if it had just come from
// the VM, once. It has already been through the tables before the capture
// table (0 and 59) when it was captured.
//
// Why reg13: Open vSwitch's registers start at zero for every packet
// (a packet-out's too) and exist only while the bridge processes it; they
// do not cross patch ports. Neutron's OVS agent uses reg2 (DSCP marking,
// table 0), reg3 and reg4 (QoS queues and minimum-bandwidth packet
// marks, table 0), reg5
// (port), reg6 (network / conntrack zone) and reg7 (remote group) of the
// OVS firewall; reg8..reg15 (Open vSwitch 2.6 and later) are unused, and
// none of Neutron's flows matches reg13, so the mark changes nothing else
// the pipeline does.
//
// Why untagged only: packets from VM ports are untagged in table 60,
// while packets from the patch ports to br-tun and the physical bridges
// carry the network's local VLAN there. Queries arriving from other nodes,
// for example for a DHCP agent's dnsmasq on this node, are thus never
// captured or metered by the intercept flows.
//
// An intercepted query counts against its port's meter like a query to a
// service address: past PortMeterRate a VM's DNS is dropped, wherever it
// was sent.
//
// # Neighbour answers
//
// A VM on an isolated network routes 169.254.169.254 (and fd00::254) via
// its subnet's gateway address, which no router holds there: its ARP or
// Neighbor Solicitation goes unanswered and it sends no DNS at all. With
// Spec.NeighborAnswers the flows answer for the addresses the daemon
// declares in State.Neighbors (it decides which: gateways and service
// addresses no Neutron port holds), only to the ports listed with each,
// with the responder MAC, without a packet-in per request, as Neutron's
// arp_responder does in br-tun. The VM then sends its queries to that
// MAC, and the capture flows take them by destination address as usual.
//
// arpAnswer turns the request into the reply in place: eth_dst = the
// requester, eth_src = MAC, arp_op = 2, arp_tha = arp_sha, arp_sha = MAC,
// arp_tpa = arp_spa, arp_spa = A, and sends it back out of the port it
// came in on. serviceARP does the same for the IPv4 service addresses,
// from any untagged port (a VM with an on-link route to 169.254.169.254),
// at the generic priority: below Neutron master's metadata_path extension
// (priority 200, which answers 169.254.169.254 with its own MAC and must
// win) and any per-port answer, above Neutron's in_port flows.
//
// naAnswer turns a Neighbor Solicitation into a Neighbor Advertisement
// (RFC 4861 7.2.4): eth_dst = the solicitor, eth_src = MAC, ipv6_dst = the
// solicitation's source, ipv6_src = A, type 136, the reserved word
// 0x60000000 (Solicited and Override), the first option's type 2 (target
// link-layer address), hop limit 255. The option's address cannot be set
// in the same flow: Open vSwitch accepts a set of nd_tll only in a flow
// whose match is an advertisement (it checks against the match, not the
// actions before), and a set of nd_sll is ignored once the type is 136. So
// naAnswer marks the packet and resubmits it to T, where naLinkAddr, which
// matches a marked advertisement (only naAnswer makes one), sets nd_tll to
// MAC and sends it back out of IN_PORT. Open vSwitch applies nd_reserved
// and nd_options_type before the link-layer address, so the address lands
// in the option once it is of type 2, and keeps the ICMPv6 checksum valid
// through the rewrites (TestRealOVSNeighborAnswers checks the answer with
// tcpdump -vv and the VM's kernel). A solicitation without options (Linux
// always sends one) was not tested.
//
// A duplicate address detection probe (source ::) must not be answered
// (the answer would go to ::): dadPass, one priority above, takes it
// first, marks it and resubmits it, so it goes on through Neutron's flows
// as if ours were not there.
//
// responderDrop drops what is sent to MAC and no flow above took: a VM
// that believes the gateway is at MAC sends all its off-link traffic
// there, and with no one behind that MAC every frame would be flooded as
// unknown unicast to every port of the network, on every node. It is at
// the intercept priority, under every answer and capture flow (a unicast
// ARP request or solicitation to MAC, sent to revalidate an entry, is
// still answered) and above Neutron's in_port flows; it ignores the mark,
// so an intercepted query the daemon re-injects toward MAC is dropped too
// rather than flooded. In intercept mode, an intercept flow (same
// priority) and responderDrop would both match a query sent via MAC:
// responderDNS, at the per-port priority with exactly the per-port
// capture's actions, takes those first.
package pipeline

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/openflow"
)

// Ethernet types, IP protocols and message types of what the flows match.
const (
	ethTypeIPv4   = 0x0800
	ethTypeARP    = 0x0806
	ethTypeIPv6   = 0x86dd
	ipProtoUDP    = 17
	ipProtoICMPv6 = 58
	dnsPort       = 53
	arpOpRequest  = 1
	arpOpReply    = 2
	icmpv6NS      = 135
	icmpv6NA      = 136
	// naFlags is the reserved word of an advertisement that answers a
	// solicitation: Solicited (0x40000000) and Override (0x20000000).
	naFlags = 0x60000000
	// ndOptTargetLL is the option type of a target link-layer address.
	ndOptTargetLL = 2
	// ndHopLimit is the only hop limit ND messages may carry.
	ndHopLimit = 255
)

// The mark of packets our flows must leave alone: bit 0 of reg13 (see the
// package documentation). Re-injected packets carry it, and so do the
// packets naAnswer and dadPass resubmit.
const (
	markReg uint8  = 13
	markBit uint32 = 1
)

// ReinjectMark returns the register mark that re-injected packets carry
// and every capture and answer flow excludes: ofswitch's Config.Mark.
func ReinjectMark() openflow.Reg {
	return openflow.Reg{Index: markReg, Value: markBit, Mask: markBit}
}

// Meter ids (see the package documentation).
const (
	// MeterIDBase is the first id of the daemon's block of meter ids and
	// the id of the global meter.
	MeterIDBase uint32 = 0xd0530000
	// GlobalMeterID is the meter of the generic (fallback) capture flows.
	GlobalMeterID = MeterIDBase
	// MaxMeteredPort is the highest port number that gets its own flows
	// and meter (Open vSwitch numbers ports below 0xff00).
	MaxMeteredPort uint32 = 0xfeff
	// meterIDLast is the last id of the block.
	meterIDLast = MeterIDBase + 0xffff
)

// Defaults of the meter settings, used for a zero Spec field.
const (
	DefaultMeterRate      uint32 = 10000
	DefaultMeterBurst     uint32 = 100
	DefaultPortMeterRate  uint32 = 1024
	DefaultPortMeterBurst uint32 = 100
)

// meterFlags are the flags of every meter: packets per second, with a
// burst size, keeping statistics (the drop counts).
const meterFlags = openflow.MeterFlagPktps | openflow.MeterFlagBurst | openflow.MeterFlagStats

// DefaultResponderMAC is the MAC the neighbour answers give when
// Spec.ResponderMAC is zero: 02:44:4e:53:00:01, locally administered
// unicast ("DNS" in its middle bytes, as in the default cookie), outside
// Neutron's fa:16:3e base, so no Neutron port has it.
var DefaultResponderMAC = [6]byte{0x02, 0x44, 0x4e, 0x53, 0x00, 0x01}

// Spec is what the flow set depends on: all of it comes from the
// configuration.
type Spec struct {
	// Table and Priority place the flows: the generic ones at Priority,
	// the per-port ones at Priority+1 (at 65535, the generic ones move to
	// 65534), the intercept flows and responderDrop one below the generic
	// ones (see InterceptPriority).
	Table    uint8
	Priority uint16
	// Cookie marks every flow of the set; the daemon removes and counts
	// its flows by it and never touches another cookie.
	Cookie uint64
	// ControllerID is the id of the daemon's OpenFlow connection; the
	// flows' controller action sends packet-ins only there.
	ControllerID uint16
	// Services are the addresses and ports VMs send DNS queries to.
	Services []netip.AddrPort
	// MeterRate and MeterBurst (packets/s, packets) size the global meter
	// of the generic flows; zero means DefaultMeterRate and
	// DefaultMeterBurst.
	MeterRate, MeterBurst uint32
	// PortMeterRate and PortMeterBurst (packets/s, packets) size each
	// port's meter; zero means DefaultPortMeterRate and
	// DefaultPortMeterBurst.
	PortMeterRate, PortMeterBurst uint32
	// NoMeters declares the generic flows only, without meters, for a
	// datapath that has no meters (flows naming a meter would fail there).
	NoMeters bool
	// InterceptAll also captures UDP DNS (destination port 53) that VM
	// ports (State.VMPorts) send to any address, except packets carrying
	// ReinjectMark (see the package documentation).
	InterceptAll bool
	// NeighborAnswers declares the neighbour answers: ARP replies and
	// Neighbor Advertisements from flows for State.Neighbors, ARP replies
	// for the IPv4 service addresses, and the drop of frames sent to the
	// responder MAC (see the package documentation). Off, none of them is
	// declared and State.Neighbors is ignored.
	NeighborAnswers bool
	// ResponderMAC is the MAC the answers give, a unicast MAC no port of
	// the bridge has; zero means DefaultResponderMAC.
	ResponderMAC [6]byte
}

// State is what the flow set needs to know of the bridge beyond its port
// numbers. It comes from OVSDB (which port is which Neutron port, on which
// network and network type) and from Neutron (device owners, subnets,
// which addresses a port holds); the daemon recomputes it when they change
// and asks ofswitch to reconcile (ofswitch's Refresh). Ports the bridge
// does not have (yet) get no flows; they come when it does.
type State struct {
	// VMPorts are the OpenFlow ports of Neutron VM ports (device_owner
	// compute:*), in any order. With InterceptAll only they get intercept
	// flows: never router, DHCP or load-balancer ports.
	VMPorts []uint32
	// Neighbors are the addresses whose ARP requests (IPv4) or Neighbor
	// Solicitations (IPv6), sent by one of the listed ports, the bridge
	// answers itself, from flows, with the responder MAC (with
	// Spec.NeighborAnswers). Invalid, unspecified, multicast and broadcast
	// addresses are ignored, IPv4-mapped ones are taken as IPv4, and an
	// address listed twice for a port is answered once.
	Neighbors []Neighbor
}

// Neighbor is one address the bridge answers ARP or NS for, and the ports
// whose requests it answers (the VM ports of the network it serves).
type Neighbor struct {
	Addr  netip.Addr
	Ports []uint32
}

// InterceptPriority returns the priority of the intercept flows and of
// responderDrop: one below the generic flows' (0 when they are at 0). It
// must stay above Neutron's 100 for the flows to see anything.
func (s Spec) InterceptPriority() uint16 {
	generic, _ := s.priorities()
	if generic == 0 {
		return 0
	}
	return generic - 1
}

// priorities returns the generic and per-port flows' priorities.
func (s Spec) priorities() (generic, port uint16) {
	if s.Priority == 0xffff {
		return 0xfffe, 0xffff
	}
	return s.Priority, s.Priority + 1
}

// AnswerMAC returns the MAC the neighbour answers give: ResponderMAC, or
// DefaultResponderMAC when it is zero.
func (s Spec) AnswerMAC() [6]byte {
	if s.ResponderMAC == [6]byte{} {
		return DefaultResponderMAC
	}
	return s.ResponderMAC
}

// PortMeterID returns the id of port's meter.
func PortMeterID(port uint32) uint32 {
	return MeterIDBase + port
}

// OwnsMeter reports whether id is in the daemon's block of meter ids.
func (s Spec) OwnsMeter(id uint32) bool {
	return id >= MeterIDBase && id <= meterIDLast
}

// orDefault returns v, or def when v is zero.
func orDefault(v, def uint32) uint32 {
	if v == 0 {
		return def
	}
	return v
}

// Declare returns the meters and flows for the bridge's ports (physical
// port numbers; LOCAL and numbers above MaxMeteredPort get no flows of
// their own, duplicates count once) and st. Meters come first: a flow may
// only name an existing meter. The flows are those of the package
// documentation, in this order: per port its portCapture flows; per VM
// port its intercept and responderDNS flows; the genericCapture flows;
// then the neighbour answers (arpAnswer and naAnswer per address and
// port, dadPass per IPv6 address, naLinkAddr, serviceARP, responderDrop).
// The meters:
//
//	meter=MeterIDBase+P pktps burst stats bands=type=drop rate=PR burst_size=PB
//	meter=MeterIDBase pktps burst stats bands=type=drop rate=R burst_size=B
//
// With NoMeters there are none.
func (s Spec) Declare(ports []uint32, st State) ([]openflow.MeterMod, []openflow.FlowMod) {
	known := knownPorts(ports)
	vmPorts := among(st.VMPorts, known)
	var meters []openflow.MeterMod
	var flows []openflow.FlowMod
	if !s.NoMeters {
		meters = make([]openflow.MeterMod, 0, len(known)+1)
		rate := orDefault(s.PortMeterRate, DefaultPortMeterRate)
		burst := orDefault(s.PortMeterBurst, DefaultPortMeterBurst)
		for _, p := range known {
			meters = append(meters, openflow.MeterMod{Command: openflow.MeterAdd, Flags: meterFlags,
				MeterID: PortMeterID(p), Rate: rate, Burst: burst})
			for _, svc := range s.Services {
				flows = append(flows, s.portCapture(p, svc))
			}
		}
		meters = append(meters, openflow.MeterMod{Command: openflow.MeterAdd, Flags: meterFlags,
			MeterID: GlobalMeterID, Rate: orDefault(s.MeterRate, DefaultMeterRate),
			Burst: orDefault(s.MeterBurst, DefaultMeterBurst)})
	}
	if s.InterceptAll {
		for _, p := range vmPorts {
			for _, ethType := range []uint16{ethTypeIPv4, ethTypeIPv6} {
				flows = append(flows, s.intercept(p, ethType))
				if s.NeighborAnswers {
					flows = append(flows, s.responderDNS(p, ethType))
				}
			}
		}
	}
	for _, svc := range s.Services {
		flows = append(flows, s.genericCapture(svc))
	}
	if s.NeighborAnswers {
		flows = append(flows, s.neighborAnswers(known, st.Neighbors)...)
	}
	return meters, flows
}

// knownPorts returns the sorted, distinct ports in 1..MaxMeteredPort.
func knownPorts(ports []uint32) []uint32 {
	known := make([]uint32, 0, len(ports))
	for _, p := range ports {
		if p >= 1 && p <= MaxMeteredPort {
			known = append(known, p)
		}
	}
	slices.Sort(known)
	return slices.Compact(known)
}

// among returns the sorted, distinct ports of ports that known (sorted)
// holds.
func among(ports, known []uint32) []uint32 {
	var in []uint32
	for _, p := range ports {
		if _, ok := slices.BinarySearch(known, p); ok {
			in = append(in, p)
		}
	}
	slices.Sort(in)
	return slices.Compact(in)
}

// answerable returns addr unmapped and without zone, and whether the
// flows may answer for it: a unicast address.
func answerable(addr netip.Addr) (netip.Addr, bool) {
	addr = addr.Unmap().WithZone("")
	ok := addr.IsValid() && !addr.IsUnspecified() && !addr.IsMulticast() &&
		addr != netip.AddrFrom4([4]byte{255, 255, 255, 255})
	return addr, ok
}

// neighborAnswers returns the answer flows: arpAnswer and naAnswer for
// each answerable address and each of its known ports, dadPass for each
// IPv6 address answered on some port, naLinkAddr when there is one,
// serviceARP for each IPv4 service address, and responderDrop.
func (s Spec) neighborAnswers(known []uint32, neighbors []Neighbor) []openflow.FlowMod {
	type answer struct {
		addr netip.Addr
		port uint32
	}
	var answers []answer
	for _, n := range neighbors {
		addr, ok := answerable(n.Addr)
		if !ok {
			continue
		}
		for _, p := range among(n.Ports, known) {
			answers = append(answers, answer{addr, p})
		}
	}
	slices.SortFunc(answers, func(a, b answer) int {
		if c := a.addr.Compare(b.addr); c != 0 {
			return c
		}
		return cmp.Compare(a.port, b.port)
	})
	answers = slices.Compact(answers)
	var flows []openflow.FlowMod
	var dad []netip.Addr
	for _, a := range answers {
		if a.addr.Is4() {
			flows = append(flows, s.arpAnswer(a.addr, a.port))
			continue
		}
		flows = append(flows, s.naAnswer(a.addr, a.port))
		if len(dad) == 0 || dad[len(dad)-1] != a.addr {
			dad = append(dad, a.addr)
		}
	}
	for _, addr := range dad {
		flows = append(flows, s.dadPass(addr))
	}
	if len(dad) > 0 {
		flows = append(flows, s.naLinkAddr())
	}
	var services []netip.Addr
	for _, svc := range s.Services {
		if addr, ok := answerable(svc.Addr()); ok && addr.Is4() && !slices.Contains(services, addr) {
			services = append(services, addr)
			flows = append(flows, s.serviceARP(addr))
		}
	}
	return append(flows, s.responderDrop())
}

// unmarked is the match of packets without the mark.
var unmarked = openflow.Reg{Index: markReg, Value: 0, Mask: markBit}

// setMark is the action that marks a packet.
var setMark = openflow.LoadReg(openflow.Reg{Index: markReg, Value: markBit, Mask: markBit})

// base returns a flow of the set at priority, without match or actions.
func (s Spec) base(priority uint16) openflow.FlowMod {
	return openflow.FlowMod{
		Cookie:     s.Cookie,
		CookieMask: ^uint64(0),
		TableID:    s.Table,
		Command:    openflow.FlowAdd,
		Priority:   priority,
		Flags:      openflow.FlagSendFlowRem,
		OutPort:    openflow.PortAny,
		OutGroup:   openflow.GroupAny,
	}
}

// capture returns a flow at priority that sends what it matches to the
// daemon's connection through meter (none when zero or with NoMeters).
func (s Spec) capture(priority uint16, meter uint32, m openflow.Match) openflow.FlowMod {
	fm := s.base(priority)
	fm.Match = m
	fm.ControllerID = s.ControllerID
	fm.MaxLen = openflow.MaxLenNoBuffer
	if !s.NoMeters {
		fm.MeterID = meter
	}
	return fm
}

// serviceMatch returns the match of unmarked UDP to svc.
func serviceMatch(svc netip.AddrPort) openflow.Match {
	m := openflow.Match{IPProto: ipProtoUDP, UDPDst: svc.Port(), Reg: unmarked}
	if addr := svc.Addr().Unmap(); addr.Is4() {
		m.EthType = ethTypeIPv4
		m.IPv4Dst = addr
	} else {
		m.EthType = ethTypeIPv6
		m.IPv6Dst = addr
	}
	return m
}

// portCapture is port's flow for the service svc, through its meter.
func (s Spec) portCapture(port uint32, svc netip.AddrPort) openflow.FlowMod {
	_, prio := s.priorities()
	m := serviceMatch(svc)
	m.InPort = port
	return s.capture(prio, PortMeterID(port), m)
}

// genericCapture is the flow for the service svc of ports without their
// own, through the global meter.
func (s Spec) genericCapture(svc netip.AddrPort) openflow.FlowMod {
	prio, _ := s.priorities()
	return s.capture(prio, GlobalMeterID, serviceMatch(svc))
}

// intercept is port's flow capturing DNS of ethType sent anywhere.
func (s Spec) intercept(port uint32, ethType uint16) openflow.FlowMod {
	return s.capture(s.InterceptPriority(), PortMeterID(port), openflow.Match{
		InPort:   port,
		Untagged: true,
		EthType:  ethType,
		IPProto:  ipProtoUDP,
		UDPDst:   dnsPort,
		Reg:      unmarked,
	})
}

// responderDNS is port's flow capturing DNS of ethType sent via the
// responder MAC, above responderDrop, with the per-port capture's actions.
func (s Spec) responderDNS(port uint32, ethType uint16) openflow.FlowMod {
	_, prio := s.priorities()
	return s.capture(prio, PortMeterID(port), openflow.Match{
		InPort:   port,
		EthDst:   s.AnswerMAC(),
		Untagged: true,
		EthType:  ethType,
		IPProto:  ipProtoUDP,
		UDPDst:   dnsPort,
		Reg:      unmarked,
	})
}

// arpMatch returns the match of unmarked, untagged ARP requests for addr.
func arpMatch(addr netip.Addr) openflow.Match {
	return openflow.Match{Untagged: true, EthType: ethTypeARP, ARPOp: arpOpRequest, ARPTPA: addr, Reg: unmarked}
}

// arpReply returns the actions that turn an ARP request for addr into
// its reply from mac and send it back where it came from.
func arpReply(addr netip.Addr, mac [6]byte) ([]openflow.Action, []uint32) {
	return []openflow.Action{
		openflow.Move(openflow.FieldEthSrc, openflow.FieldEthDst),
		openflow.SetField(openflow.FieldEthSrc, mac[:]),
		openflow.SetField(openflow.FieldARPOp, []byte{0, arpOpReply}),
		openflow.Move(openflow.FieldARPSHA, openflow.FieldARPTHA),
		openflow.SetField(openflow.FieldARPSHA, mac[:]),
		openflow.Move(openflow.FieldARPSPA, openflow.FieldARPTPA),
		openflow.SetField(openflow.FieldARPSPA, addr.AsSlice()),
	}, []uint32{openflow.PortInPort}
}

// arpAnswer is port's flow answering ARP requests for the IPv4 addr.
func (s Spec) arpAnswer(addr netip.Addr, port uint32) openflow.FlowMod {
	prio, _ := s.priorities()
	fm := s.base(prio)
	fm.Match = arpMatch(addr)
	fm.Match.InPort = port
	fm.Actions, fm.Output = arpReply(addr, s.AnswerMAC())
	return fm
}

// serviceARP is the flow answering ARP requests for the IPv4 service
// address addr from any untagged port.
func (s Spec) serviceARP(addr netip.Addr) openflow.FlowMod {
	prio, _ := s.priorities()
	fm := s.base(prio)
	fm.Match = arpMatch(addr)
	fm.Actions, fm.Output = arpReply(addr, s.AnswerMAC())
	return fm
}

// naAnswer is port's flow turning Neighbor Solicitations for the IPv6
// addr into the advertisement, all but its link-layer address, which
// naLinkAddr sets after the resubmit.
func (s Spec) naAnswer(addr netip.Addr, port uint32) openflow.FlowMod {
	prio, _ := s.priorities()
	mac := s.AnswerMAC()
	fm := s.base(prio)
	fm.Match = openflow.Match{InPort: port, Untagged: true, EthType: ethTypeIPv6, IPProto: ipProtoICMPv6,
		ICMPv6Type: icmpv6NS, NDTarget: addr, Reg: unmarked}
	fm.Actions = []openflow.Action{
		openflow.Move(openflow.FieldEthSrc, openflow.FieldEthDst),
		openflow.SetField(openflow.FieldEthSrc, mac[:]),
		openflow.Move(openflow.FieldIPv6Src, openflow.FieldIPv6Dst),
		openflow.SetField(openflow.FieldIPv6Src, addr.AsSlice()),
		openflow.SetField(openflow.FieldICMPv6Type, []byte{icmpv6NA}),
		openflow.SetField(openflow.FieldNDReserved, binary.BigEndian.AppendUint32(nil, naFlags)),
		openflow.SetField(openflow.FieldNDOptionsType, []byte{ndOptTargetLL}),
		openflow.SetField(openflow.FieldIPTTL, []byte{ndHopLimit}),
		setMark,
		openflow.Resubmit(s.Table),
	}
	return fm
}

// naLinkAddr is the flow that finishes naAnswer's advertisements: the
// target link-layer address, and out where the solicitation came from.
func (s Spec) naLinkAddr() openflow.FlowMod {
	prio, _ := s.priorities()
	mac := s.AnswerMAC()
	fm := s.base(prio)
	fm.Match = openflow.Match{EthType: ethTypeIPv6, IPProto: ipProtoICMPv6, ICMPv6Type: icmpv6NA,
		Reg: openflow.Reg{Index: markReg, Value: markBit, Mask: markBit}}
	fm.Actions = []openflow.Action{openflow.SetField(openflow.FieldNDTLL, mac[:])}
	fm.Output = []uint32{openflow.PortInPort}
	return fm
}

// dadPass is the flow that lets duplicate address detection probes for
// the IPv6 addr go on unanswered, above naAnswer.
func (s Spec) dadPass(addr netip.Addr) openflow.FlowMod {
	_, prio := s.priorities()
	fm := s.base(prio)
	fm.Match = openflow.Match{EthType: ethTypeIPv6, IPProto: ipProtoICMPv6, ICMPv6Type: icmpv6NS,
		IPv6Src: netip.IPv6Unspecified(), NDTarget: addr, Reg: unmarked}
	fm.Actions = []openflow.Action{setMark, openflow.Resubmit(s.Table)}
	return fm
}

// responderDrop is the flow dropping frames sent to the responder MAC that
// no flow above took.
func (s Spec) responderDrop() openflow.FlowMod {
	fm := s.base(s.InterceptPriority())
	fm.Match = openflow.Match{EthDst: s.AnswerMAC()}
	return fm
}
