package openflow

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"testing"
)

var (
	responderMAC = []byte{0x02, 0x44, 0x4e, 0x53, 0x00, 0x01}
	gateway4     = netip.MustParseAddr("10.0.0.1")
)

// arpAnswer is a flow like the daemon's ARP answers.
func arpAnswer() *FlowMod {
	return &FlowMod{
		Cookie: 0x444e53, TableID: 60, Command: FlowAdd, Priority: 102, Flags: FlagSendFlowRem,
		Match: Match{InPort: 5, Untagged: true, EthType: 0x0806, ARPOp: 1, ARPTPA: gateway4,
			Reg: Reg{Index: 13, Mask: 1}},
		Actions: []Action{
			Move(FieldEthSrc, FieldEthDst), SetField(FieldEthSrc, responderMAC),
			SetField(FieldARPOp, []byte{0, 2}),
			Move(FieldARPSHA, FieldARPTHA), SetField(FieldARPSHA, responderMAC),
			Move(FieldARPSPA, FieldARPTPA), SetField(FieldARPSPA, gateway4.AsSlice()),
		},
		Output: []uint32{PortInPort},
	}
}

// naAnswer is a flow like the first half of the daemon's Neighbor
// Advertisements.
func naAnswer() *FlowMod {
	return &FlowMod{
		Cookie: 0x444e53, TableID: 60, Command: FlowAdd, Priority: 102,
		Match: Match{InPort: 5, Untagged: true, EthType: 0x86dd, IPProto: 58, ICMPv6Type: 135, NDTarget: dnsV6,
			Reg: Reg{Index: 13, Mask: 1}},
		Actions: []Action{
			Move(FieldEthSrc, FieldEthDst), SetField(FieldEthSrc, responderMAC),
			Move(FieldIPv6Src, FieldIPv6Dst), SetField(FieldIPv6Src, dnsV6.AsSlice()),
			SetField(FieldICMPv6Type, []byte{136}), SetField(FieldNDReserved, []byte{0x60, 0, 0, 0}),
			SetField(FieldNDOptionsType, []byte{2}), SetField(FieldIPTTL, []byte{255}),
			LoadReg(Reg{Index: 13, Value: 1, Mask: 1}), Resubmit(60),
		},
	}
}

func TestGoldenNeighborFlows(t *testing.T) {
	for _, tc := range []struct {
		name string
		fm   *FlowMod
		want string
	}{
		{"arp answer", arpAnswer(), "ADD table:60 priority=102,arp,reg13=0/0x1,in_port=5,vlan_tci=0x0000/0x1fff," +
			"arp_tpa=10.0.0.1,arp_op=1 cookie:0x444e53 send_flow_rem actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]," +
			"set_field:02:44:4e:53:00:01->eth_src,set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[]," +
			"set_field:02:44:4e:53:00:01->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:10.0.0.1->arp_spa,IN_PORT"},
		{"neighbor advertisement", naAnswer(), "ADD table:60 priority=102,icmp6,reg13=0/0x1,in_port=5,vlan_tci=0x0000/0x1fff," +
			"icmp_type=135,nd_target=fd00::254 cookie:0x444e53 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]," +
			"set_field:02:44:4e:53:00:01->eth_src,move:NXM_NX_IPV6_SRC[]->NXM_NX_IPV6_DST[],set_field:fd00::254->ipv6_src," +
			"set_field:136->icmpv6_type,set_field:1610612736->nd_reserved,set_field:2->nd_options_type," +
			"set_field:255->nw_ttl,set_field:0x1/0x1->reg13,resubmit(,60)"},
		{"advertisement's link-layer address", &FlowMod{TableID: 60, Command: FlowAdd, Priority: 102,
			Match:   Match{EthType: 0x86dd, IPProto: 58, ICMPv6Type: 136, Reg: Reg{Index: 13, Value: 1, Mask: 1}},
			Actions: []Action{SetField(FieldNDTLL, responderMAC)}, Output: []uint32{PortInPort}},
			"ADD table:60 priority=102,icmp6,reg13=0x1/0x1,icmp_type=136 actions=set_field:02:44:4e:53:00:01->nd_tll,IN_PORT"},
		{"unspecified source", &FlowMod{TableID: 60, Command: FlowAdd, Priority: 103,
			Match:   Match{EthType: 0x86dd, IPProto: 58, ICMPv6Type: 135, IPv6Src: netip.IPv6Unspecified(), NDTarget: dnsV6},
			Actions: []Action{LoadReg(Reg{Index: 13, Value: 1, Mask: 1}), Resubmit(60)}},
			"ADD table:60 priority=103,icmp6,ipv6_src=::,icmp_type=135,nd_target=fd00::254 actions=set_field:0x1/0x1->reg13,resubmit(,60)"},
		{"drop by destination", &FlowMod{TableID: 60, Command: FlowAdd, Priority: 101, Match: Match{EthDst: [6]byte(responderMAC)}},
			"ADD table:60 priority=101,dl_dst=02:44:4e:53:00:01 actions=drop"},
		{"dns to a MAC", &FlowMod{TableID: 60, Command: FlowAdd, Priority: 103, MeterID: 9, ControllerID: 53, MaxLen: MaxLenNoBuffer,
			Match: Match{InPort: 5, EthDst: [6]byte(responderMAC), Untagged: true, EthType: 0x86dd, IPProto: 17, UDPDst: 53,
				Reg: Reg{Index: 13, Mask: 1}}},
			"ADD table:60 priority=103,udp6,reg13=0/0x1,in_port=5,vlan_tci=0x0000/0x1fff,dl_dst=02:44:4e:53:00:01,tp_dst=53 actions=meter:9,controller(id=53)"},
	} {
		b, err := AppendFlowMod(nil, 1, tc.fm)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		wantPrint(t, b, tc.want)
	}
}

// TestActionBytes pins the encoding of one action of each kind.
func TestActionBytes(t *testing.T) {
	for _, tc := range []struct {
		a    Action
		want string
	}{
		{Move(FieldEthSrc, FieldEthDst), "ffff0018" + "00002320" + "0006" + "0030" + "0000" + "0000" + "80000806" + "80000606"},
		{Move(FieldIPv6Src, FieldIPv6Dst), "ffff0018" + "00002320" + "0006" + "0080" + "0000" + "0000" + "80003410" + "80003610"},
		{SetField(FieldARPOp, []byte{0, 2}), "0019" + "0010" + "80002a02" + "0002" + "000000000000"},
		{SetField(FieldIPv6Src, dnsV6.AsSlice()), "0019" + "0018" + "80003410" + "fd000000000000000000000000000254"},
		{SetField(FieldNDReserved, []byte{0x60, 0, 0, 0}), "0019" + "0010" + "10000204" + "60000000" + "00000000"},
		{SetField(FieldNDOptionsType, []byte{2}), "0019" + "0010" + "10000401" + "02" + "00000000000000"},
		{LoadReg(Reg{Index: 13, Value: 1, Mask: 1}), "ffff0018" + "00002320" + "0021" + "00011b08" + "00000001" + "00000001" + "0000"},
		{Resubmit(60), "ffff0010" + "00002320" + "000e" + "fff8" + "3c000000"},
	} {
		if err := tc.a.check(); err != nil {
			t.Fatalf("%+v: %v", tc.a, err)
		}
		got := tc.a.append(nil)
		if hex.EncodeToString(got) != tc.want || len(got)%8 != 0 {
			t.Errorf("%+v:\n got %x\nwant %s", tc.a, got, tc.want)
		}
	}
}

func TestActionErrors(t *testing.T) {
	for _, a := range []Action{
		{},
		Move(FieldEthSrc, FieldIPv6Dst),
		Move(Field(0x80000600), Field(0x80000800)),
		SetField(FieldEthSrc, []byte{1, 2, 3}),
		SetField(FieldARPOp, nil),
		SetField(Field(0x80000020), make([]byte, 32)),
		LoadReg(Reg{Index: 16, Value: 1, Mask: 1}),
		LoadReg(Reg{Index: 13, Value: 3, Mask: 1}),
		LoadReg(Reg{Index: 13}),
	} {
		dst := []byte("prefix")
		fm := arpAnswer()
		fm.Actions = append(fm.Actions, a)
		out, err := AppendFlowMod(dst, 1, fm)
		if err == nil || !bytes.Equal(out, dst) {
			t.Errorf("%+v: %v, dst %q", a, err, out)
		}
	}
	same := SetField(FieldEthSrc, bytes.Clone(responderMAC))
	if same != SetField(FieldEthSrc, responderMAC) || same == SetField(FieldEthDst, responderMAC) {
		t.Error("actions do not compare by what they do")
	}
}

func TestNeighborMatchErrors(t *testing.T) {
	for _, m := range []Match{
		{EthType: 0x0806, ARPTPA: dnsV6},
		{EthType: 0x86dd, IPv6Src: dnsV4},
		{EthType: 0x86dd, IPv6Src: netip.MustParseAddr("::ffff:10.0.0.1")},
		{EthType: 0x86dd, IPProto: 58, ICMPv6Type: 135, NDTarget: dnsV4},
	} {
		if _, err := AppendFlowMod(nil, 1, &FlowMod{Match: m}); err == nil {
			t.Errorf("match %+v: no error", m)
		}
	}
	b, err := AppendFlowMod(nil, 1, &FlowMod{Match: Match{EthType: 0x0806, ARPTPA: netip.MustParseAddr("::ffff:10.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	wantPrint(t, b, "arp_tpa=10.0.0.1")
}

func TestRoundTripNeighborMatch(t *testing.T) {
	for _, m := range []Match{
		arpAnswer().Match,
		naAnswer().Match,
		{EthType: 0x86dd, IPProto: 58, ICMPv6Type: 135, IPv6Src: netip.IPv6Unspecified(), NDTarget: dnsV6},
		{EthDst: [6]byte(responderMAC)},
		{InPort: 7, EthDst: [6]byte(responderMAC), Untagged: true, EthType: 0x0800, IPProto: 17, UDPDst: 53, Reg: Reg{Index: 13, Mask: 1}},
	} {
		b := appendMatch(nil, &m)
		var got Match
		n, err := parseMatch(b, &got)
		if err != nil || n != len(b) || got != m {
			t.Errorf("%+v: got %+v, %d, %v", m, got, n, err)
		}
	}
}

// flowStatsOf returns a FLOW multipart reply of one entry with fm's table,
// priority, cookie and match, as Open vSwitch would send it back.
func flowStatsOf(t *testing.T, fm *FlowMod) []byte {
	b, err := AppendFlowMod(nil, 1, fm)
	if err != nil {
		t.Fatal(err)
	}
	n := int(binary.BigEndian.Uint16(b[50:]))
	entry := make([]byte, 48, 48+n+pad8(n))
	entry[2] = fm.TableID
	binary.BigEndian.PutUint16(entry[12:], fm.Priority)
	binary.BigEndian.PutUint64(entry[24:], fm.Cookie)
	entry = append(entry, b[48:48+n+pad8(n)]...)
	binary.BigEndian.PutUint16(entry, uint16(len(entry)))
	return msgBytes(t, TypeMultipartReply, 9, "0001"+"0000"+"00000000", hex.EncodeToString(entry))
}

func TestRoundTripFlowStatsNeighbor(t *testing.T) {
	for _, fm := range []*FlowMod{arpAnswer(), naAnswer()} {
		msg := flowStatsOf(t, fm)
		wantPrint(t, msg, "cookie=0x444e53", "priority=102,")
		got, _, err := ParseFlowStatsReply(msg, nil)
		if err != nil || len(got) != 1 || got[0].Match != fm.Match || got[0].Priority != 102 || got[0].TableID != 60 {
			t.Errorf("got %+v, %v", got, err)
		}
	}
}
