package ofswitch

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/openflow"
)

// flowRemoved sends a FLOW_REMOVED (reason delete) of fm with the test
// cookie.
func (f *fakeSwitch) flowRemoved(t *testing.T, fm openflow.FlowMod) {
	t.Helper()
	b, err := openflow.AppendFlowMod(nil, 1, &fm)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte{openflow.Version, openflow.TypeFlowRemoved, 0, 0, 0, 0, 0, 0}
	msg = binary.BigEndian.AppendUint64(msg, testCookie)
	msg = binary.BigEndian.AppendUint16(msg, fm.Priority)
	msg = append(msg, openflow.RemovedDelete, fm.TableID)
	msg = append(msg, make([]byte, 28)...)
	msg = append(msg, matchBytes(b)...)
	binary.BigEndian.PutUint16(msg[2:], uint16(len(msg)))
	f.send(msg)
}

func TestPortFlows(t *testing.T) {
	f := newFakeSwitch(t)
	f.mu.Lock()
	f.ports = []uint32{2, 1}
	f.mu.Unlock()
	s := start(t, f, nil, func(sw *Switch) { sw.checkInterval = time.Hour })
	f.waitConn(t)
	expectHandshake(t, f)
	// PORT_DESC: ports 1 and 2 (LOCAL ignored) get meters, then flows.
	expectMeter(t, f, openflow.MeterAdd, testMeter+1, 50, 10)
	expectMeter(t, f, openflow.MeterModify, testMeter+1, 50, 10)
	expectMeter(t, f, openflow.MeterAdd, testMeter+2, 50, 10)
	expectMeter(t, f, openflow.MeterModify, testMeter+2, 50, 10)
	expectFlow(t, f, 1, portFlow(1))
	expectFlow(t, f, 2, portFlow(2))
	waitFor(t, "port flows", func() bool { return f.flowCount(testCookie) == 4 })
	if ids := f.meterIDs(); !slices.Equal(ids, []uint32{100, 101, 102}) {
		t.Errorf("meters %v", ids)
	}

	f.portStatus(openflow.PortAdded, 3)
	expectMeter(t, f, openflow.MeterAdd, testMeter+3, 50, 10)
	expectMeter(t, f, openflow.MeterModify, testMeter+3, 50, 10)
	expectFlow(t, f, 3, portFlow(3))
	waitFor(t, "port 3's flow", func() bool { return f.flowCount(testCookie) == 5 })

	// A modified port changes nothing.
	f.portStatus(openflow.PortModified, 3)

	f.portStatus(openflow.PortDeleted, 1)
	del := f.next(t, openflow.TypeFlowMod)
	pf := portFlow(1)
	want, _ := openflow.AppendFlowMod(nil, binary.BigEndian.Uint32(del[4:]), &openflow.FlowMod{
		Cookie: testCookie, CookieMask: ^uint64(0), TableID: 60, Command: openflow.FlowDeleteStrict,
		Priority: 103, OutPort: openflow.PortAny, OutGroup: openflow.GroupAny, Match: pf.Match,
	})
	if !bytes.Equal(del, want) {
		t.Errorf("strict delete:\n got %x\nwant %x", del, want)
	}
	expectMeter(t, f, openflow.MeterDelete, testMeter+1, 0, 0)
	waitFor(t, "port 1's meter gone", func() bool { return slices.Equal(f.meterIDs(), []uint32{100, 102, 103}) })
	if n := f.flowCount(testCookie); n != 4 {
		t.Errorf("%d flows after port 1 left, want 4", n)
	}
	// The switch reports our own delete: no reinstall for it.
	f.flowRemoved(t, pf)
	time.Sleep(200 * time.Millisecond)
	st := s.sw.Stats()
	if st["flow_reinstalls"] != 0 || st["ports"] != 2 || st["port_changes"] != 3 || st["meters"] != 3 || st["flows"] != 4 {
		t.Errorf("stats %v", st)
	}

	// A deleted port flow that is still declared comes back.
	f.mu.Lock()
	for k, x := range f.flows {
		if x.meter == testMeter+2 {
			delete(f.flows, k)
		}
	}
	f.mu.Unlock()
	f.flowRemoved(t, portFlow(2))
	waitFor(t, "port 2's flow back", func() bool { return f.flowCount(testCookie) == 4 })

	if err := s.cancel(); err != nil {
		t.Fatal(err)
	}
	if n := f.flowCount(testCookie); n != 0 {
		t.Errorf("%d flows left", n)
	}
	if ids := f.meterIDs(); len(ids) != 0 {
		t.Errorf("meters left %v", ids)
	}
}

func TestMeterDeletedIsReinstalled(t *testing.T) {
	f := newFakeSwitch(t)
	s := startConnected(t, f, nil)
	// Someone deletes the global meter: the switch deletes the flows using
	// it (silently here), the dump notices.
	f.meterMod(openflow.AppendMeterMod(nil, 1, &openflow.MeterMod{Command: openflow.MeterDelete, MeterID: testMeter}))
	if f.flowCount(testCookie) != 0 {
		t.Fatal("flows survived their meter")
	}
	waitFor(t, "meter and flows back", func() bool {
		_, ok := f.meter(testMeter)
		return ok && f.flowCount(testCookie) == 2
	})
	if s.sw.Stats()["flow_reinstalls"] == 0 {
		t.Error("no reinstall counted")
	}
	if n := s.sw.Stats()["openflow_errors"]; n != 0 {
		t.Errorf("%d openflow errors (meter exists must be quiet)", n)
	}
}

func TestStaleMeterRemoved(t *testing.T) {
	f := newFakeSwitch(t)
	f.mu.Lock()
	f.meters[150] = &fakeMeter{flags: meterFlags, rate: 1}
	f.meters[7] = &fakeMeter{flags: meterFlags, rate: 1} // Neutron's
	f.mu.Unlock()
	s := start(t, f, nil)
	f.waitConn(t)
	expectHandshake(t, f)
	waitFor(t, "stale meter gone", func() bool { return slices.Equal(f.meterIDs(), []uint32{7, 100}) })
	if n := s.sw.Stats()["stale_meters_removed"]; n != 1 {
		t.Errorf("stale_meters_removed %d", n)
	}
}

func TestMeterDrops(t *testing.T) {
	f := newFakeSwitch(t)
	f.mu.Lock()
	f.ports = []uint32{4}
	f.meters[7] = &fakeMeter{flags: meterFlags, rate: 1, drops: 1000} // not ours
	f.mu.Unlock()
	s := start(t, f, nil)
	f.waitConn(t)
	expectHandshake(t, f)
	waitFor(t, "port meter", func() bool { _, ok := f.meter(testMeter + 4); return ok })
	setDrops := func(id uint32, n uint64) {
		f.mu.Lock()
		f.meters[id].drops = n
		f.mu.Unlock()
	}
	setDrops(testMeter, 40)
	setDrops(testMeter+4, 2)
	waitFor(t, "42 drops", func() bool { return s.sw.Stats()["meter_drops"] == 42 })
	setDrops(testMeter, 100)
	waitFor(t, "102 drops", func() bool { return s.sw.Stats()["meter_drops"] == 102 })
	// The meter is re-created (its count restarts).
	setDrops(testMeter, 5)
	waitFor(t, "107 drops", func() bool { return s.sw.Stats()["meter_drops"] == 107 })
	time.Sleep(150 * time.Millisecond)
	if n := s.sw.Stats()["meter_drops"]; n != 107 {
		t.Errorf("meter_drops %d, want 107", n)
	}
}
