package ofswitch

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/openflow"
)

// answerFlow is a flow with actions like the daemon's ARP answers, for
// the address 10.0.0.<last>.
func answerFlow(last byte) openflow.FlowMod {
	addr := netip.AddrFrom4([4]byte{10, 0, 0, last})
	mac := []byte{2, 0x44, 0x4e, 0x53, 0, 1}
	return openflow.FlowMod{TableID: 60, Priority: 102,
		Match: openflow.Match{InPort: 5, Untagged: true, EthType: 0x0806, ARPOp: 1, ARPTPA: addr,
			Reg: openflow.Reg{Index: 13, Mask: 1}},
		Actions: []openflow.Action{openflow.Move(openflow.FieldEthSrc, openflow.FieldEthDst),
			openflow.SetField(openflow.FieldEthSrc, mac), openflow.SetField(openflow.FieldARPSPA, addr.AsSlice())},
		Output: []uint32{openflow.PortInPort}}
}

// expectDeleteStrict checks that the next message deletes fm strictly.
func expectDeleteStrict(t *testing.T, f *fakeSwitch, fm openflow.FlowMod) {
	t.Helper()
	del := f.next(t, openflow.TypeFlowMod)
	want, _ := openflow.AppendFlowMod(nil, binary.BigEndian.Uint32(del[4:]), &openflow.FlowMod{
		Cookie: testCookie, CookieMask: ^uint64(0), TableID: fm.TableID, Command: openflow.FlowDeleteStrict,
		Priority: fm.Priority, OutPort: openflow.PortAny, OutGroup: openflow.GroupAny, Match: fm.Match,
	})
	if !bytes.Equal(del, want) {
		t.Errorf("strict delete:\n got %x\nwant %x", del, want)
	}
}

// TestRefresh: the set follows what Declare reads besides the ports when
// Refresh is called: flows added, changed (same match, other actions) and
// deleted, nothing sent when nothing changed, and a Refresh made while
// disconnected applied by the next session.
func TestRefresh(t *testing.T) {
	f := newFakeSwitch(t)
	var extra atomic.Pointer[[]openflow.FlowMod]
	declare := func(ports []uint32) ([]openflow.MeterMod, []openflow.FlowMod) {
		meters, flows := testDeclare(ports)
		if e := extra.Load(); e != nil {
			flows = append(flows, *e...)
		}
		return meters, flows
	}
	s := start(t, f, nil, func(sw *Switch) {
		sw.cfg.Declare = declare
		sw.checkInterval = time.Hour
	})
	f.waitConn(t)
	expectHandshake(t, f)
	waitFor(t, "connected", s.sw.Connected)

	set := func(flows ...openflow.FlowMod) {
		extra.Store(&flows)
		s.sw.Refresh()
	}
	set(answerFlow(1), answerFlow(2))
	expectFlow(t, f, 0, answerFlow(1))
	expectFlow(t, f, 1, answerFlow(2))
	waitFor(t, "answers installed", func() bool { return f.flowCount(testCookie) == 4 })

	changed := answerFlow(2)
	changed.Actions = changed.Actions[:2]
	set(answerFlow(1), changed)
	expectFlow(t, f, 1, changed)

	set(answerFlow(1), changed)
	set(changed)
	expectDeleteStrict(t, f, answerFlow(1))
	waitFor(t, "answer 1 gone", func() bool { return f.flowCount(testCookie) == 3 })
	if st := s.sw.Stats(); st["flows"] != 3 || st["openflow_errors"] != 0 {
		t.Errorf("stats %v", st)
	}

	// Disconnected: the Refresh waits for the next session.
	f.mu.Lock()
	f.conn.Close()
	f.mu.Unlock()
	waitFor(t, "disconnected", func() bool { return !s.sw.Connected() })
	set()
	f.waitConn(t)
	// The new session installs the set it had, then applies the Refresh.
	for _, typ := range []uint8{openflow.TypeHello, openflow.TypeSetConfig, openflow.TypeExperimenter,
		openflow.TypeMeterMod, openflow.TypeMeterMod} {
		f.next(t, typ)
	}
	for i, want := range append(testFlows(), changed) {
		expectFlow(t, f, i, want)
	}
	f.next(t, openflow.TypeBarrierRequest)
	expectDeleteStrict(t, f, changed)
	waitFor(t, "answers gone", func() bool { return s.sw.Stats()["flows"] == 2 })
}
