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

func TestFlows(t *testing.T) {
	flows := Flows(spec)
	if len(flows) != len(spec.Services) {
		t.Fatalf("%d flows for %d services", len(flows), len(spec.Services))
	}
	for i, f := range flows {
		if f.TableID != 60 || f.Priority != 102 || f.Cookie != 0x444e53 || f.ControllerID != 53 ||
			f.Flags&openflow.FlagSendFlowRem == 0 || f.MaxLen != openflow.MaxLenNoBuffer || f.Command != openflow.FlowAdd {
			t.Errorf("flow %d: %+v", i, f)
		}
		if f.Match.IPProto != ipProtoUDP || f.Match.UDPDst != spec.Services[i].Port() {
			t.Errorf("flow %d match: %+v", i, f.Match)
		}
	}
	if flows[2].Match.EthType != ethTypeIPv4 || flows[2].Match.IPv4Dst != netip.MustParseAddr("10.1.2.3") {
		t.Errorf("mapped IPv4 service: %+v", flows[2].Match)
	}
}

// TestFlowsAsOVSSeesThem decodes the encoded flow-mods with ovs-ofctl, the
// reference decoder.
func TestFlowsAsOVSSeesThem(t *testing.T) {
	if _, err := exec.LookPath("ovs-ofctl"); err != nil {
		t.Skip("ovs-ofctl not installed")
	}
	want := []string{
		"table:60 priority=102,udp,nw_dst=169.254.169.254,tp_dst=53",
		"table:60 priority=102,udp6,ipv6_dst=fd00::254,tp_dst=53",
		"table:60 priority=102,udp,nw_dst=10.1.2.3,tp_dst=5353",
	}
	for i, f := range Flows(spec) {
		b, err := openflow.AppendFlowMod(nil, 1, &f)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("ovs-ofctl", "ofp-print", hex.EncodeToString(b)).CombinedOutput()
		if err != nil {
			t.Fatalf("ofp-print: %v\n%s", err, out)
		}
		got := strings.Join(strings.Fields(string(out)), " ")
		for _, w := range []string{want[i], "cookie:0x444e53", "send_flow_rem", "controller(", "id=53"} {
			if !strings.Contains(got, w) {
				t.Errorf("flow %d: %q lacks %q", i, got, w)
			}
		}
	}
}
