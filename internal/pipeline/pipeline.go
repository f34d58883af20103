// Package pipeline declares the OpenFlow flows and meters ovs-dns-forwarder
// keeps on the integration bridge. It is the one place that says which
// table, priority, cookie, meter, match and actions they have; ofswitch
// installs and reconciles the set, and nothing else builds flows.
//
// Neutron's OVS agent fills table 60 (TRANSIENT_TABLE) with priority 3
// (NORMAL), 90, 100 (in_port -> the firewall) and 101 (DHCP). Our flows
// there run before security groups, so they match only UDP to the service
// addresses and send the packet to our own OpenFlow connection, chosen by
// controller id; nothing else is punted.
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
//     Priority+1: in_port=P, udp, nw_dst=S, tp_dst=53
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
// With Spec.InterceptAll, every known port P (1..MaxMeteredPort) also
// gets two flows (IPv4 and IPv6) at InterceptPriority, just below the
// generic flows and above Neutron's priority-100 in_port flows:
//
//	in_port=P, untagged (vlan_tci=0x0000/0x1fff), udp|udp6, tp_dst=53,
//	  reg13=0/0x1 actions=meter:PortMeterID(P), controller(id)
//
// They capture DNS a VM sends to any address; the service flows above them
// still take the service addresses. A captured query the daemon does not
// answer itself goes back into the pipeline with ofswitch's Reinject: a
// packet-out with in_port=P whose actions set the mark (ReinjectMark,
// reg13 bit 0) and resubmit to the capture table. The intercept flows
// exclude marked packets, so the packet is not captured again: it falls
// through to Neutron's in_port flow (the firewall with the VM's security
// groups, then NORMAL) as if it had just come from the VM, once. It has
// already been through the tables before the capture table (0 and 59)
// when it was captured.
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
package pipeline

import (
	"net/netip"
	"slices"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/openflow"
)

// Ethernet types and IP protocol of the captured queries.
const (
	ethTypeIPv4 = 0x0800
	ethTypeIPv6 = 0x86dd
	ipProtoUDP  = 17
	dnsPort     = 53
)

// The mark of re-injected packets: bit 0 of reg13 (see the package
// documentation).
const (
	markReg uint8  = 13
	markBit uint32 = 1
)

// ReinjectMark returns the register mark that re-injected packets carry
// and the intercept flows exclude: ofswitch's Config.Mark.
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

// Spec is what the flow set depends on: all of it comes from the
// configuration.
type Spec struct {
	// Table and Priority place the capture flows: the generic ones at
	// Priority, the per-port ones at Priority+1 (at 65535, the generic
	// ones move to 65534), the intercept flows one below the generic ones
	// (see InterceptPriority).
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
	// InterceptAll also captures UDP DNS (destination port 53) that known
	// ports send to any address, except packets carrying ReinjectMark (see
	// the package documentation).
	InterceptAll bool
}

// InterceptPriority returns the priority of the intercept flows: one below
// the generic flows' (0 when they are at 0). It must stay above Neutron's
// 100 for the flows to see anything.
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
// their own, duplicates count once). Meters come first: a flow may only
// name an existing meter. See the package documentation for the set:
//
//	meter=MeterIDBase+P pktps burst stats bands=type=drop rate=PR burst_size=PB
//	table=T, priority=P+1, cookie=C, send_flow_rem, in_port=P,
//	  udp,nw_dst=ADDR,tp_dst=PORT (udp6,ipv6_dst=... for IPv6)
//	  actions=meter:MeterIDBase+P,controller(id=ID, max_len=65535)
//	with InterceptAll, at InterceptPriority, for IPv4 and IPv6:
//	table=T, priority=P-1, cookie=C, send_flow_rem, in_port=P,
//	  vlan_tci=0x0000/0x1fff,udp,tp_dst=53,reg13=0/0x1
//	  actions=meter:MeterIDBase+P,controller(id=ID)
//	meter=MeterIDBase pktps burst stats bands=type=drop rate=R burst_size=B
//	table=T, priority=P, cookie=C, send_flow_rem,
//	  udp,nw_dst=ADDR,tp_dst=PORT actions=meter:MeterIDBase,controller(id=ID)
//
// With NoMeters, the per-port service flows and all meters are left out,
// and the intercept flows name no meter.
func (s Spec) Declare(ports []uint32) ([]openflow.MeterMod, []openflow.FlowMod) {
	genericPrio, portPrio := s.priorities()
	known := make([]uint32, 0, len(ports))
	for _, p := range ports {
		if p >= 1 && p <= MaxMeteredPort {
			known = append(known, p)
		}
	}
	slices.Sort(known)
	known = slices.Compact(known)
	perPort := 0
	if !s.NoMeters {
		perPort += len(s.Services)
	}
	if s.InterceptAll {
		perPort += 2
	}
	var meters []openflow.MeterMod
	flows := make([]openflow.FlowMod, 0, len(known)*perPort+len(s.Services))
	if !s.NoMeters {
		meters = make([]openflow.MeterMod, 0, len(known)+1)
		rate := orDefault(s.PortMeterRate, DefaultPortMeterRate)
		burst := orDefault(s.PortMeterBurst, DefaultPortMeterBurst)
		for _, p := range known {
			meters = append(meters, openflow.MeterMod{Command: openflow.MeterAdd, Flags: meterFlags,
				MeterID: PortMeterID(p), Rate: rate, Burst: burst})
			for _, svc := range s.Services {
				fm := s.flow(portPrio, svc)
				fm.Match.InPort = p
				fm.MeterID = PortMeterID(p)
				flows = append(flows, fm)
			}
		}
		meters = append(meters, openflow.MeterMod{Command: openflow.MeterAdd, Flags: meterFlags,
			MeterID: GlobalMeterID, Rate: orDefault(s.MeterRate, DefaultMeterRate),
			Burst: orDefault(s.MeterBurst, DefaultMeterBurst)})
	}
	if s.InterceptAll {
		for _, p := range known {
			for _, ethType := range []uint16{ethTypeIPv4, ethTypeIPv6} {
				fm := s.intercept(p, ethType)
				if !s.NoMeters {
					fm.MeterID = PortMeterID(p)
				}
				flows = append(flows, fm)
			}
		}
	}
	for _, svc := range s.Services {
		fm := s.flow(genericPrio, svc)
		if !s.NoMeters {
			fm.MeterID = GlobalMeterID
		}
		flows = append(flows, fm)
	}
	return meters, flows
}

// intercept returns port's intercept flow for ethType, without meter.
func (s Spec) intercept(port uint32, ethType uint16) openflow.FlowMod {
	fm := s.base(s.InterceptPriority())
	fm.Match = openflow.Match{
		InPort:   port,
		Untagged: true,
		EthType:  ethType,
		IPProto:  ipProtoUDP,
		UDPDst:   dnsPort,
		Reg:      openflow.Reg{Index: markReg, Value: 0, Mask: markBit},
	}
	return fm
}

// base returns a capture flow at priority without match or meter.
func (s Spec) base(priority uint16) openflow.FlowMod {
	return openflow.FlowMod{
		Cookie:       s.Cookie,
		CookieMask:   ^uint64(0),
		TableID:      s.Table,
		Command:      openflow.FlowAdd,
		Priority:     priority,
		Flags:        openflow.FlagSendFlowRem,
		OutPort:      openflow.PortAny,
		OutGroup:     openflow.GroupAny,
		ControllerID: s.ControllerID,
		MaxLen:       openflow.MaxLenNoBuffer,
	}
}

// flow returns the capture flow of svc at priority, without meter or port.
func (s Spec) flow(priority uint16, svc netip.AddrPort) openflow.FlowMod {
	fm := s.base(priority)
	fm.Match = openflow.Match{
		IPProto: ipProtoUDP,
		UDPDst:  svc.Port(),
	}
	if addr := svc.Addr().Unmap(); addr.Is4() {
		fm.Match.EthType = ethTypeIPv4
		fm.Match.IPv4Dst = addr
	} else {
		fm.Match.EthType = ethTypeIPv6
		fm.Match.IPv6Dst = addr
	}
	return fm
}

// State is what the flow set needs to know of the bridge beyond its port
// numbers. It comes from OVSDB (which port is which Neutron port, on which
// network and network type) and from Neutron (device owners, subnets,
// which addresses a port holds); the daemon recomputes it when they change
// and asks ofswitch to reconcile.
type State struct {
	// VMPorts are the OpenFlow ports of Neutron VM ports (device_owner
	// compute:*), sorted. With InterceptAll only they get intercept flows:
	// never router, DHCP or load-balancer ports.
	VMPorts []uint32
	// Neighbors are the addresses whose ARP requests (IPv4) or Neighbor
	// Solicitations (IPv6), sent by one of the listed ports, the bridge
	// answers itself, from flows, with the responder MAC.
	Neighbors []Neighbor
}

// Neighbor is one address the bridge answers ARP or NS for, and the ports
// whose requests it answers (the VM ports of the network it serves).
type Neighbor struct {
	Addr  netip.Addr
	Ports []uint32
}
