package pipeline

import (
	"encoding/hex"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/openflow"
)

var (
	gw4   = netip.MustParseAddr("10.0.0.1")
	gw6   = netip.MustParseAddr("fd00:10::1")
	svc6  = netip.MustParseAddr("fd00::254")
	state = State{
		VMPorts: []uint32{3, 7},
		Neighbors: []Neighbor{
			{Addr: gw4, Ports: []uint32{7, 3, 9}},                              // 9: not on the bridge
			{Addr: netip.MustParseAddr("::ffff:10.0.0.1"), Ports: []uint32{3}}, // a duplicate, mapped
			{Addr: svc6, Ports: []uint32{3}},
			{Addr: gw6, Ports: []uint32{3, 7}},
			{Addr: netip.Addr{}, Ports: []uint32{3}},
			{Addr: netip.IPv4Unspecified(), Ports: []uint32{3}},
			{Addr: netip.MustParseAddr("255.255.255.255"), Ports: []uint32{3}},
			{Addr: netip.MustParseAddr("ff02::1"), Ports: []uint32{3}},
			{Addr: netip.MustParseAddr("10.0.0.2")}, // no ports
		},
	}
)

// neighborSpec is spec with the answers on.
func neighborSpec() Spec {
	s := spec
	s.NeighborAnswers = true
	return s
}

// answerFlows returns the flows of a declaration that are not captures.
func answerFlows(flows []openflow.FlowMod) []openflow.FlowMod {
	var out []openflow.FlowMod
	for _, f := range flows {
		if f.MaxLen == 0 {
			out = append(out, f)
		}
	}
	return out
}

func TestDeclareNeighbors(t *testing.T) {
	s := neighborSpec()
	meters, flows := s.Declare([]uint32{3, 7}, state)
	if len(meters) != 3 {
		t.Errorf("%d meters", len(meters))
	}
	answers := answerFlows(flows)
	if captures := len(flows) - len(answers); captures != 3*len(spec.Services) {
		t.Errorf("%d capture flows", captures)
	}
	mac := DefaultResponderMAC
	type want struct {
		prio  uint16
		match openflow.Match
	}
	nd := func(port uint32, addr netip.Addr) openflow.Match {
		return openflow.Match{InPort: port, Untagged: true, EthType: ethTypeIPv6, IPProto: ipProtoICMPv6,
			ICMPv6Type: icmpv6NS, NDTarget: addr, Reg: unmarked}
	}
	arp := func(port uint32, addr netip.Addr) openflow.Match {
		return openflow.Match{InPort: port, Untagged: true, EthType: ethTypeARP, ARPOp: 1, ARPTPA: addr, Reg: unmarked}
	}
	dad := func(addr netip.Addr) openflow.Match {
		return openflow.Match{EthType: ethTypeIPv6, IPProto: ipProtoICMPv6, ICMPv6Type: icmpv6NS,
			IPv6Src: netip.IPv6Unspecified(), NDTarget: addr, Reg: unmarked}
	}
	wants := []want{
		{102, arp(3, gw4)},
		{102, arp(7, gw4)},
		{102, nd(3, svc6)},
		{102, nd(3, gw6)},
		{102, nd(7, gw6)},
		{103, dad(svc6)},
		{103, dad(gw6)},
		{102, openflow.Match{EthType: ethTypeIPv6, IPProto: ipProtoICMPv6, ICMPv6Type: icmpv6NA, Reg: openflow.Reg{Index: 13, Value: 1, Mask: 1}}},
		{102, arp(0, netip.MustParseAddr("169.254.169.254"))},
		{102, arp(0, netip.MustParseAddr("10.1.2.3"))},
		{101, openflow.Match{EthDst: mac}},
	}
	if len(answers) != len(wants) {
		t.Fatalf("%d answer flows, want %d: %+v", len(answers), len(wants), answers)
	}
	for i, w := range wants {
		f := answers[i]
		if f.Priority != w.prio || f.Match != w.match || f.MeterID != 0 || f.TableID != 60 || f.Cookie != 0x444e53 {
			t.Errorf("answer %d: priority %d match %+v, want %d %+v", i, f.Priority, f.Match, w.prio, w.match)
		}
	}
	// The ARP answers reply from their address; the advertisements
	// resubmit to the table; the drop has no action.
	if a := answers[0].Actions; len(a) != 7 || a[6] != openflow.SetField(openflow.FieldARPSPA, gw4.AsSlice()) ||
		len(answers[0].Output) != 1 || answers[0].Output[0] != openflow.PortInPort {
		t.Errorf("ARP answer actions %+v, output %v", a, answers[0].Output)
	}
	if a := answers[8].Actions; a[6] != openflow.SetField(openflow.FieldARPSPA, []byte{169, 254, 169, 254}) {
		t.Errorf("service ARP actions %+v", a)
	}
	if a := answers[2].Actions; len(a) != 10 || a[3] != openflow.SetField(openflow.FieldIPv6Src, svc6.AsSlice()) ||
		a[8] != setMark || a[9] != openflow.Resubmit(60) || len(answers[2].Output) != 0 {
		t.Errorf("advertisement actions %+v", a)
	}
	if a := answers[7].Actions; len(a) != 1 || a[0] != openflow.SetField(openflow.FieldNDTLL, mac[:]) {
		t.Errorf("link-layer address actions %+v", a)
	}
	if f := answers[10]; len(f.Actions) != 0 || len(f.Output) != 0 || f.MaxLen != 0 {
		t.Errorf("drop flow %+v", f)
	}

	// Off: no answer at all; on without neighbours: the service ARP and
	// the drop only.
	s.NeighborAnswers = false
	if _, flows := s.Declare([]uint32{3, 7}, state); len(answerFlows(flows)) != 0 {
		t.Errorf("answers off: %+v", answerFlows(flows))
	}
	s.NeighborAnswers = true
	if _, flows := s.Declare([]uint32{3, 7}, State{}); len(answerFlows(flows)) != 3 {
		t.Errorf("no neighbours: %+v", answerFlows(flows))
	}
}

func TestDeclareResponderMAC(t *testing.T) {
	s := neighborSpec()
	if s.AnswerMAC() != DefaultResponderMAC || DefaultResponderMAC[0]&3 != 2 || [3]byte(DefaultResponderMAC[:3]) == [3]byte{0xfa, 0x16, 0x3e} {
		t.Errorf("default MAC %x: want locally administered unicast outside fa:16:3e", DefaultResponderMAC)
	}
	s.ResponderMAC = [6]byte{0x0a, 0, 0, 0, 0, 7}
	_, flows := s.Declare([]uint32{3}, State{Neighbors: []Neighbor{{Addr: gw6, Ports: []uint32{3}}}})
	answers := answerFlows(flows)
	if answers[0].Actions[1] != openflow.SetField(openflow.FieldEthSrc, s.ResponderMAC[:]) ||
		answers[2].Actions[0] != openflow.SetField(openflow.FieldNDTLL, s.ResponderMAC[:]) ||
		answers[len(answers)-1].Match.EthDst != s.ResponderMAC {
		t.Errorf("custom MAC not used: %+v", answers)
	}
}

func TestDeclareResponderDNS(t *testing.T) {
	s := neighborSpec()
	s.InterceptAll = true
	_, flows := s.Declare([]uint32{3, 5}, State{VMPorts: []uint32{3}})
	var dns []openflow.FlowMod
	for _, f := range flows {
		if f.Match.EthDst != ([6]byte{}) && f.MaxLen != 0 {
			dns = append(dns, f)
		}
	}
	if len(dns) != 2 {
		t.Fatalf("%d flows for DNS via the responder MAC", len(dns))
	}
	for i, f := range dns {
		checkFlow(t, i, f)
		// Above the drop, with exactly the actions of the port's service
		// flows.
		if f.Priority != 103 || f.Match.InPort != 3 || f.MeterID != PortMeterID(3) || !f.Match.Untagged ||
			f.Match.UDPDst != 53 || f.Match.EthType != []uint16{ethTypeIPv4, ethTypeIPv6}[i] {
			t.Errorf("flow %d: %+v", i, f)
		}
	}
}

// TestDeclareMark: no flow captures or answers a marked packet, but for
// the advertisements' second half, which takes only marked ones; the drop
// ignores the mark.
func TestDeclareMark(t *testing.T) {
	s := neighborSpec()
	s.InterceptAll = true
	_, flows := s.Declare([]uint32{3, 7}, state)
	for i, f := range flows {
		switch {
		case f.Match.EthDst != ([6]byte{}) && f.MaxLen == 0:
			if f.Match.Reg != (openflow.Reg{}) {
				t.Errorf("drop flow matches the mark: %+v", f.Match)
			}
		case f.Match.ICMPv6Type == icmpv6NA:
			if f.Match.Reg != (openflow.Reg{Index: markReg, Value: markBit, Mask: markBit}) {
				t.Errorf("advertisement flow without the mark: %+v", f.Match)
			}
		case f.Match.Reg != unmarked:
			t.Errorf("flow %d takes marked packets: %+v", i, f.Match)
		}
	}
	if m := ReinjectMark(); m.Index != unmarked.Index || m.Mask != unmarked.Mask || m.Value != markBit {
		t.Errorf("mark %+v", m)
	}
}

func TestDeclareNeighborsTopPriority(t *testing.T) {
	s := neighborSpec()
	s.Priority = 0xffff
	_, flows := s.Declare([]uint32{3}, State{Neighbors: []Neighbor{{Addr: gw6, Ports: []uint32{3}}}})
	answers := answerFlows(flows)
	prios := []uint16{0xfffe, 0xffff, 0xfffe, 0xfffe, 0xfffe, 0xfffd} // na, dad, link addr, 2 service ARP, drop
	if len(answers) != len(prios) {
		t.Fatalf("%d answers", len(answers))
	}
	for i, f := range answers {
		if f.Priority != prios[i] {
			t.Errorf("answer %d at %d, want %d", i, f.Priority, prios[i])
		}
	}
}

// TestNeighborFlowsAsOVSSeesThem decodes the answer flows with ovs-ofctl.
func TestNeighborFlowsAsOVSSeesThem(t *testing.T) {
	if _, err := exec.LookPath("ovs-ofctl"); err != nil {
		t.Skip("ovs-ofctl not installed")
	}
	s := neighborSpec()
	s.InterceptAll = true
	s.Services = s.Services[:2]
	_, flows := s.Declare([]uint32{5}, State{VMPorts: []uint32{5}, Neighbors: []Neighbor{
		{Addr: gw4, Ports: []uint32{5}}, {Addr: gw6, Ports: []uint32{5}}}})
	want := []string{
		"priority=103,udp,reg13=0/0x1,in_port=5,nw_dst=169.254.169.254,tp_dst=53 cookie:0x444e53 send_flow_rem actions=meter:3495100421,controller(",
		"priority=103,udp6,reg13=0/0x1,in_port=5,ipv6_dst=fd00::254,tp_dst=53",
		"priority=101,udp,reg13=0/0x1,in_port=5,vlan_tci=0x0000/0x1fff,tp_dst=53 cookie:0x444e53 send_flow_rem actions=meter:3495100421,controller(",
		"priority=103,udp,reg13=0/0x1,in_port=5,vlan_tci=0x0000/0x1fff,dl_dst=02:44:4e:53:00:01,tp_dst=53 cookie:0x444e53 send_flow_rem actions=meter:3495100421,controller(",
		"priority=101,udp6,reg13=0/0x1,in_port=5,vlan_tci=0x0000/0x1fff,tp_dst=53",
		"priority=103,udp6,reg13=0/0x1,in_port=5,vlan_tci=0x0000/0x1fff,dl_dst=02:44:4e:53:00:01,tp_dst=53 cookie:0x444e53 send_flow_rem actions=meter:3495100421,controller(",
		"priority=102,udp,reg13=0/0x1,nw_dst=169.254.169.254,tp_dst=53 cookie:0x444e53 send_flow_rem actions=meter:3495100416,controller(",
		"priority=102,udp6,reg13=0/0x1,ipv6_dst=fd00::254,tp_dst=53",
		"priority=102,arp,reg13=0/0x1,in_port=5,vlan_tci=0x0000/0x1fff,arp_tpa=10.0.0.1,arp_op=1 cookie:0x444e53 send_flow_rem " +
			"actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:44:4e:53:00:01->eth_src,set_field:2->arp_op," +
			"move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:02:44:4e:53:00:01->arp_sha," +
			"move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.0.0.1->arp_spa,IN_PORT",
		"priority=102,icmp6,reg13=0/0x1,in_port=5,vlan_tci=0x0000/0x1fff,icmp_type=135,nd_target=fd00:10::1 cookie:0x444e53 send_flow_rem " +
			"actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:44:4e:53:00:01->eth_src," +
			"move:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],set_field:fd00:10::1->ipv6_src,set_field:136->icmpv6_type," +
			"set_field:1610612736->nd_reserved,set_field:2->nd_options_type,set_field:255->nw_ttl," +
			"set_field:0x1/0x1->reg13,resubmit(,60)",
		"priority=103,icmp6,reg13=0/0x1,ipv6_src=::,icmp_type=135,nd_target=fd00:10::1 cookie:0x444e53 send_flow_rem " +
			"actions=set_field:0x1/0x1->reg13,resubmit(,60)",
		"priority=102,icmp6,reg13=0x1/0x1,icmp_type=136 cookie:0x444e53 send_flow_rem actions=set_field:02:44:4e:53:00:01->nd_tll,IN_PORT",
		"priority=102,arp,reg13=0/0x1,vlan_tci=0x0000/0x1fff,arp_tpa=169.254.169.254,arp_op=1 cookie:0x444e53 send_flow_rem " +
			"actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:02:44:4e:53:00:01->eth_src,set_field:2->arp_op," +
			"move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:02:44:4e:53:00:01->arp_sha," +
			"move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:169.254.169.254->arp_spa,IN_PORT",
		"priority=101,dl_dst=02:44:4e:53:00:01 cookie:0x444e53 send_flow_rem actions=drop",
	}
	if len(flows) != len(want) {
		t.Fatalf("%d flows, want %d", len(flows), len(want))
	}
	for i, f := range flows {
		b, err := openflow.AppendFlowMod(nil, 1, &f)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("ovs-ofctl", "ofp-print", hex.EncodeToString(b)).CombinedOutput()
		if err != nil {
			t.Fatalf("ofp-print: %v\n%s", err, out)
		}
		got := strings.Join(strings.Fields(string(out)), " ")
		if !strings.Contains(got, "table:60 "+want[i]) {
			t.Errorf("flow %d:\n got %q\nwant %q", i, got, want[i])
		}
	}
}
