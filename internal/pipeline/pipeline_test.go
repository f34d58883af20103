package pipeline

import (
	"encoding/hex"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/openflow"
)

var spec = Spec{
	Table:        60,
	Priority:     102,
	Cookie:       0x444e53,
	ControllerID: 53,
	Services: []netip.AddrPort{
		netip.MustParseAddrPort("169.254.169.254:53"),
		netip.MustParseAddrPort("[fd00::254]:53"),
		netip.MustParseAddrPort("[::ffff:10.1.2.3]:5353"),
	},
}

// checkFlow checks what every capture flow has in common.
func checkFlow(t *testing.T, i int, f openflow.FlowMod) {
	t.Helper()
	if f.TableID != 60 || f.Cookie != 0x444e53 || f.ControllerID != 53 ||
		f.Flags&openflow.FlagSendFlowRem == 0 || f.MaxLen != openflow.MaxLenNoBuffer || f.Command != openflow.FlowAdd {
		t.Errorf("flow %d: %+v", i, f)
	}
	if f.Match.IPProto != ipProtoUDP || f.Match.Reg != unmarked || len(f.Actions) != 0 || len(f.Output) != 0 {
		t.Errorf("flow %d match: %+v", i, f.Match)
	}
}

func TestDeclareNoPorts(t *testing.T) {
	meters, flows := spec.Declare(nil, State{})
	want := openflow.MeterMod{Command: openflow.MeterAdd, Flags: meterFlags, MeterID: GlobalMeterID,
		Rate: DefaultMeterRate, Burst: DefaultMeterBurst}
	if len(meters) != 1 || meters[0] != want {
		t.Errorf("meters %+v", meters)
	}
	if len(flows) != len(spec.Services) {
		t.Fatalf("%d flows for %d services", len(flows), len(spec.Services))
	}
	for i, f := range flows {
		checkFlow(t, i, f)
		if f.Priority != 102 || f.MeterID != GlobalMeterID || f.Match.InPort != 0 || f.Match.UDPDst != spec.Services[i].Port() {
			t.Errorf("flow %d: %+v", i, f)
		}
	}
	if flows[2].Match.EthType != ethTypeIPv4 || flows[2].Match.IPv4Dst != netip.MustParseAddr("10.1.2.3") {
		t.Errorf("mapped IPv4 service: %+v", flows[2].Match)
	}
}

func TestDeclarePorts(t *testing.T) {
	s := spec
	s.PortMeterRate, s.PortMeterBurst, s.MeterRate, s.MeterBurst = 500, 50, 9000, 90
	meters, flows := s.Declare([]uint32{7, 3, openflow.PortLocal, MaxMeteredPort + 1, 7}, State{})
	wantMeters := []openflow.MeterMod{
		{Command: openflow.MeterAdd, Flags: meterFlags, MeterID: MeterIDBase + 3, Rate: 500, Burst: 50},
		{Command: openflow.MeterAdd, Flags: meterFlags, MeterID: MeterIDBase + 7, Rate: 500, Burst: 50},
		{Command: openflow.MeterAdd, Flags: meterFlags, MeterID: MeterIDBase, Rate: 9000, Burst: 90},
	}
	if len(meters) != 3 || meters[0] != wantMeters[0] || meters[1] != wantMeters[1] || meters[2] != wantMeters[2] {
		t.Errorf("meters %+v", meters)
	}
	if len(flows) != 3*len(spec.Services) {
		t.Fatalf("%d flows", len(flows))
	}
	for i, f := range flows {
		checkFlow(t, i, f)
		port := []uint32{3, 7, 0}[i/len(spec.Services)]
		prio := uint16(103)
		meter := PortMeterID(port)
		if port == 0 {
			prio, meter = 102, GlobalMeterID
		}
		if f.Match.InPort != port || f.Priority != prio || f.MeterID != meter {
			t.Errorf("flow %d: port %d priority %d meter %#x", i, f.Match.InPort, f.Priority, f.MeterID)
		}
	}
	for _, id := range []uint32{MeterIDBase, MeterIDBase + 7, MeterIDBase + 0xffff} {
		if !s.OwnsMeter(id) {
			t.Errorf("%#x not owned", id)
		}
	}
	for _, id := range []uint32{1, 262144, MeterIDBase - 1, MeterIDBase + 0x10000} {
		if s.OwnsMeter(id) {
			t.Errorf("%#x owned", id)
		}
	}
}

func TestDeclareNoMeters(t *testing.T) {
	s := spec
	s.NoMeters = true
	meters, flows := s.Declare([]uint32{1, 2}, State{VMPorts: []uint32{1, 2}})
	if len(meters) != 0 || len(flows) != len(spec.Services) {
		t.Fatalf("%d meters, %d flows", len(meters), len(flows))
	}
	for i, f := range flows {
		if f.MeterID != 0 || f.Match.InPort != 0 {
			t.Errorf("flow %d: %+v", i, f)
		}
	}
}

func TestDeclareTopPriority(t *testing.T) {
	s := spec
	s.Priority = 0xffff
	_, flows := s.Declare([]uint32{1}, State{})
	if flows[0].Priority != 0xffff || flows[len(flows)-1].Priority != 0xfffe {
		t.Errorf("priorities %d and %d", flows[0].Priority, flows[len(flows)-1].Priority)
	}
}

// TestFlowsAsOVSSeesThem decodes the encoded meter-mods and flow-mods with
// ovs-ofctl, the reference decoder.
func TestFlowsAsOVSSeesThem(t *testing.T) {
	if _, err := exec.LookPath("ovs-ofctl"); err != nil {
		t.Skip("ovs-ofctl not installed")
	}
	print := func(b []byte) string {
		out, err := exec.Command("ovs-ofctl", "ofp-print", hex.EncodeToString(b)).CombinedOutput()
		if err != nil {
			t.Fatalf("ofp-print: %v\n%s", err, out)
		}
		return strings.Join(strings.Fields(string(out)), " ")
	}
	s := spec
	s.InterceptAll = true
	meters, flows := s.Declare([]uint32{5}, State{VMPorts: []uint32{5}})
	wantMeters := []string{
		"ADD meter=3495100421 pktps burst stats bands= type=drop rate=1024 burst_size=100",
		"ADD meter=3495100416 pktps burst stats bands= type=drop rate=10000 burst_size=100",
	}
	for i := range meters {
		if got := print(openflow.AppendMeterMod(nil, 1, &meters[i])); !strings.Contains(got, wantMeters[i]) {
			t.Errorf("meter %d: %q lacks %q", i, got, wantMeters[i])
		}
	}
	want := []string{
		"table:60 priority=103,udp,reg13=0/0x1,in_port=5,nw_dst=169.254.169.254,tp_dst=53 cookie:0x444e53 send_flow_rem actions=meter:3495100421,controller(",
		"table:60 priority=103,udp6,reg13=0/0x1,in_port=5,ipv6_dst=fd00::254,tp_dst=53",
		"table:60 priority=103,udp,reg13=0/0x1,in_port=5,nw_dst=10.1.2.3,tp_dst=5353",
		"table:60 priority=101,udp,reg13=0/0x1,in_port=5,vlan_tci=0x0000/0x1fff,tp_dst=53 cookie:0x444e53 send_flow_rem actions=meter:3495100421,controller(",
		"table:60 priority=101,udp6,reg13=0/0x1,in_port=5,vlan_tci=0x0000/0x1fff,tp_dst=53 cookie:0x444e53 send_flow_rem actions=meter:3495100421,controller(",
		"table:60 priority=102,udp,reg13=0/0x1,nw_dst=169.254.169.254,tp_dst=53 cookie:0x444e53 send_flow_rem actions=meter:3495100416,controller(",
		"table:60 priority=102,udp6,reg13=0/0x1,ipv6_dst=fd00::254,tp_dst=53",
		"table:60 priority=102,udp,reg13=0/0x1,nw_dst=10.1.2.3,tp_dst=5353",
	}
	for i, f := range flows {
		b, err := openflow.AppendFlowMod(nil, 1, &f)
		if err != nil {
			t.Fatal(err)
		}
		got := print(b)
		for _, w := range []string{want[i], "cookie:0x444e53", "send_flow_rem", "controller(", "id=53"} {
			if !strings.Contains(got, w) {
				t.Errorf("flow %d: %q lacks %q", i, got, w)
			}
		}
	}
}

func TestDeclareInterceptAll(t *testing.T) {
	s := spec
	s.InterceptAll = true
	// Port 9 is a VM port the bridge does not have; 5 is not a VM port.
	meters, flows := s.Declare([]uint32{7, 3, 5, openflow.PortLocal, 3}, State{VMPorts: []uint32{7, 9, 3, 3}})
	if len(meters) != 4 {
		t.Errorf("%d meters", len(meters))
	}
	// Per port: the service flows; then the intercept flows of each VM
	// port; then the generic flows.
	n := len(spec.Services)
	if len(flows) != 3*n+2*2+n {
		t.Fatalf("%d flows", len(flows))
	}
	intercepts := flows[3*n : 3*n+4]
	for i, f := range intercepts {
		checkFlow(t, i, f)
		port := []uint32{3, 3, 7, 7}[i]
		ethType := []uint16{ethTypeIPv4, ethTypeIPv6}[i%2]
		want := openflow.Match{InPort: port, Untagged: true, EthType: ethType, IPProto: ipProtoUDP, UDPDst: 53,
			Reg: openflow.Reg{Index: 13, Mask: 1}}
		if f.Match != want || f.Priority != 101 || f.MeterID != PortMeterID(port) {
			t.Errorf("intercept flow %d: %+v", i, f)
		}
	}
	if m := ReinjectMark(); m.Index != intercepts[0].Match.Reg.Index || m.Mask != intercepts[0].Match.Reg.Mask || m.Value&m.Mask == 0 {
		t.Errorf("mark %+v does not leave the intercept flows' match %+v", m, intercepts[0].Match.Reg)
	}
	if f := flows[len(flows)-1]; f.Priority != 102 || f.Match.InPort != 0 {
		t.Errorf("last flow not generic: %+v", f)
	}

	s.NoMeters = true
	meters, flows = s.Declare([]uint32{3}, State{VMPorts: []uint32{3}})
	if len(meters) != 0 || len(flows) != 2+n {
		t.Fatalf("no meters: %d meters, %d flows", len(meters), len(flows))
	}
	for i, f := range flows {
		if f.MeterID != 0 || (i < 2) != (f.Match.InPort == 3 && f.Priority == 101) {
			t.Errorf("no meters, flow %d: %+v", i, f)
		}
	}

	for _, tc := range []struct{ prio, want uint16 }{{102, 101}, {0xffff, 0xfffd}, {1, 0}, {0, 0}} {
		s.Priority = tc.prio
		if got := s.InterceptPriority(); got != tc.want {
			t.Errorf("priority %d: intercept at %d, want %d", tc.prio, got, tc.want)
		}
	}
}
