// Package pipeline declares the OpenFlow flows ovs-dns-forwarder keeps on
// the integration bridge. It is the one place that says which table,
// priority, cookie, match and actions they have; ofswitch installs and
// reconciles the set, and nothing else builds flows.
//
// Neutron's OVS agent fills table 60 (TRANSIENT_TABLE) with priority 3
// (NORMAL), 90, 100 (in_port -> the firewall) and 101 (DHCP). Our
// priority-102 flows there run before security groups, so they match only
// UDP to the service addresses and send the packet to our own OpenFlow
// connection, chosen by controller id; nothing else is punted.
package pipeline

import (
	"net/netip"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/openflow"
)

// Ethernet types and IP protocol of the captured queries.
const (
	ethTypeIPv4 = 0x0800
	ethTypeIPv6 = 0x86dd
	ipProtoUDP  = 17
)

// Spec is what the flow set depends on: all of it comes from the
// configuration.
type Spec struct {
	// Table and Priority place the capture flows.
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
}

// Flows returns the flow set for s: one capture flow per service address,
// UDP only:
//
//	table=T, priority=P, cookie=C, send_flow_rem,
//	udp,nw_dst=ADDR,tp_dst=PORT (udp6,ipv6_dst=... for IPv6)
//	actions=controller(id=ID, max_len=65535)
func Flows(s Spec) []openflow.FlowMod {
	flows := make([]openflow.FlowMod, 0, len(s.Services))
	for _, svc := range s.Services {
		fm := openflow.FlowMod{
			Cookie:       s.Cookie,
			CookieMask:   ^uint64(0),
			TableID:      s.Table,
			Command:      openflow.FlowAdd,
			Priority:     s.Priority,
			Flags:        openflow.FlagSendFlowRem,
			OutPort:      openflow.PortAny,
			OutGroup:     openflow.GroupAny,
			ControllerID: s.ControllerID,
			MaxLen:       openflow.MaxLenNoBuffer,
			Match: openflow.Match{
				IPProto: ipProtoUDP,
				UDPDst:  svc.Port(),
			},
		}
		if addr := svc.Addr().Unmap(); addr.Is4() {
			fm.Match.EthType = ethTypeIPv4
			fm.Match.IPv4Dst = addr
		} else {
			fm.Match.EthType = ethTypeIPv6
			fm.Match.IPv6Dst = addr
		}
		flows = append(flows, fm)
	}
	return flows
}
