package ofswitch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/openflow"
)

const testCookie = 0x444e53

// fakeFlow is a flow in the fake switch's table, its match kept as bytes.
type fakeFlow struct {
	cookie   uint64
	table    uint8
	priority uint16
	flags    uint16
	match    []byte
	meter    uint32
}

// fakeMeter is a meter of the fake switch.
type fakeMeter struct {
	flags       uint16
	rate, burst uint32
	drops       uint64
}

// fakeSwitch is an OpenFlow 1.3 switch good enough for the session: it
// keeps flows added and deleted by cookie, answers barriers, echoes and flow
// dumps, and records every message it receives.
type fakeSwitch struct {
	t  *testing.T
	ln net.Listener
	mu sync.Mutex
	// hello is the HELLO it sends.
	hello []byte
	// silent makes it stop answering anything.
	silent bool
	flows  map[string]fakeFlow
	meters map[uint32]*fakeMeter
	// ports are the port numbers PORT_DESC reports.
	ports []uint32
	conn  net.Conn
	// msgs receives a copy of every message received.
	msgs  chan []byte
	conns chan struct{}
}

func newFakeSwitch(t *testing.T) *fakeSwitch {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "br-int.mgmt"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSwitch{
		t:      t,
		ln:     ln,
		hello:  []byte{0x05, openflow.TypeHello, 0, 16, 0, 0, 0, 1, 0, 1, 0, 8, 0, 0, 0, 0x32},
		flows:  make(map[string]fakeFlow),
		meters: make(map[uint32]*fakeMeter),
		msgs:   make(chan []byte, 10000),
		conns:  make(chan struct{}, 10),
	}
	go f.accept()
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		if f.conn != nil {
			f.conn.Close()
		}
		f.mu.Unlock()
	})
	return f
}

func (f *fakeSwitch) target() string { return "unix:" + f.ln.Addr().String() }

func (f *fakeSwitch) accept() {
	for {
		nc, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conn = nc
		f.mu.Unlock()
		f.conns <- struct{}{}
		f.serve(nc)
	}
}

// send writes msg to the current connection.
func (f *fakeSwitch) send(msg []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn != nil {
		_, _ = f.conn.Write(msg)
	}
}

func (f *fakeSwitch) serve(nc net.Conn) {
	defer nc.Close()
	f.mu.Lock()
	hello := f.hello
	f.mu.Unlock()
	if _, err := nc.Write(hello); err != nil {
		return
	}
	br := bufio.NewReader(nc)
	buf := make([]byte, openflow.MaxMessageLen)
	for {
		h, msg, err := openflow.ReadMessage(br, buf)
		if err != nil {
			return
		}
		f.msgs <- bytes.Clone(msg)
		f.mu.Lock()
		silent := f.silent
		f.mu.Unlock()
		if silent {
			continue
		}
		switch h.Type {
		case openflow.TypeFlowMod:
			f.flowMod(msg)
		case openflow.TypeBarrierRequest:
			f.send([]byte{openflow.Version, openflow.TypeBarrierReply, 0, 8, msg[4], msg[5], msg[6], msg[7]})
		case openflow.TypeEchoRequest:
			data, _ := openflow.EchoData(msg)
			f.send(openflow.AppendEchoReply(nil, h.XID, data))
		case openflow.TypeMeterMod:
			f.meterMod(msg)
		case openflow.TypeMultipartRequest:
			switch binary.BigEndian.Uint16(msg[8:]) {
			case openflow.MultipartFlow:
				f.send(f.flowStatsReply(h.XID, msg[24], binary.BigEndian.Uint64(msg[32:])))
			case openflow.MultipartMeter:
				f.send(f.meterStatsReply(h.XID))
			case openflow.MultipartPortDesc:
				f.send(f.portDescReply(h.XID))
			}
		}
	}
}

// sendError sends an OpenFlow error answering request msg.
func (f *fakeSwitch) sendError(msg []byte, typ, code uint16) {
	e := []byte{openflow.Version, openflow.TypeError, 0, 0, msg[4], msg[5], msg[6], msg[7]}
	e = binary.BigEndian.AppendUint16(e, typ)
	e = binary.BigEndian.AppendUint16(e, code)
	e = append(e, msg[:min(len(msg), 64)]...)
	binary.BigEndian.PutUint16(e[2:], uint16(len(e)))
	f.send(e)
}

// meterMod applies a METER_MOD as Open vSwitch does: add of an existing
// meter and modify of a missing one fail, delete removes the meter and the
// flows using it.
func (f *fakeSwitch) meterMod(msg []byte) {
	cmd := binary.BigEndian.Uint16(msg[8:])
	id := binary.BigEndian.Uint32(msg[12:])
	m := &fakeMeter{flags: binary.BigEndian.Uint16(msg[10:])}
	if len(msg) >= 32 {
		m.rate = binary.BigEndian.Uint32(msg[20:])
		m.burst = binary.BigEndian.Uint32(msg[24:])
	}
	f.mu.Lock()
	old, exists := f.meters[id]
	switch {
	case cmd == openflow.MeterAdd && exists:
		f.mu.Unlock()
		f.sendError(msg, openflow.ErrorTypeMeterModFailed, openflow.MeterErrExists)
		return
	case cmd == openflow.MeterModify && !exists:
		f.mu.Unlock()
		f.sendError(msg, openflow.ErrorTypeMeterModFailed, openflow.MeterErrUnknown)
		return
	case cmd == openflow.MeterModify:
		m.drops = old.drops
		f.meters[id] = m
	case cmd == openflow.MeterAdd:
		f.meters[id] = m
	case cmd == openflow.MeterDelete:
		delete(f.meters, id)
		for k, x := range f.flows {
			if x.meter == id {
				delete(f.flows, k)
			}
		}
	}
	f.mu.Unlock()
}

// meter returns a copy of meter id and whether it exists.
func (f *fakeSwitch) meter(id uint32) (fakeMeter, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.meters[id]
	if !ok {
		return fakeMeter{}, false
	}
	return *m, true
}

// meterIDs returns the ids of the fake's meters.
func (f *fakeSwitch) meterIDs() []uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]uint32, 0, len(f.meters))
	for id := range f.meters {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// meterStatsReply answers a meter dump with every meter, one band each.
func (f *fakeSwitch) meterStatsReply(xid uint32) []byte {
	msg := []byte{openflow.Version, openflow.TypeMultipartReply, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(msg[4:], xid)
	f.mu.Lock()
	for id, m := range f.meters {
		e := make([]byte, 56)
		binary.BigEndian.PutUint32(e, id)
		binary.BigEndian.PutUint16(e[4:], 56)
		binary.BigEndian.PutUint64(e[40:], m.drops)
		msg = append(msg, e...)
	}
	f.mu.Unlock()
	binary.BigEndian.PutUint16(msg[2:], uint16(len(msg)))
	return msg
}

// portDesc returns an ofp_port of number no.
func portDesc(no uint32) []byte {
	p := make([]byte, 64)
	binary.BigEndian.PutUint32(p, no)
	copy(p[16:], "port")
	return p
}

// portDescReply answers a PORT_DESC request with the fake's ports and LOCAL.
func (f *fakeSwitch) portDescReply(xid uint32) []byte {
	msg := []byte{openflow.Version, openflow.TypeMultipartReply, 0, 0, 0, 0, 0, 0, 0, 13, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(msg[4:], xid)
	f.mu.Lock()
	for _, no := range f.ports {
		msg = append(msg, portDesc(no)...)
	}
	f.mu.Unlock()
	msg = append(msg, portDesc(openflow.PortLocal)...)
	binary.BigEndian.PutUint16(msg[2:], uint16(len(msg)))
	return msg
}

// portStatus sends a PORT_STATUS and updates the fake's ports.
func (f *fakeSwitch) portStatus(reason uint8, no uint32) {
	f.mu.Lock()
	if reason == openflow.PortDeleted {
		f.ports = slices.DeleteFunc(f.ports, func(p uint32) bool { return p == no })
	} else {
		f.ports = append(f.ports, no)
	}
	f.mu.Unlock()
	msg := []byte{openflow.Version, openflow.TypePortStatus, 0, 80, 0, 0, 0, 0, reason, 0, 0, 0, 0, 0, 0, 0}
	f.send(append(msg, portDesc(no)...))
}

// matchBytes returns the padded ofp_match of a flow-mod.
func matchBytes(msg []byte) []byte {
	n := int(binary.BigEndian.Uint16(msg[50:]))
	n += (8 - n%8) % 8
	return msg[48 : 48+n]
}

func (f *fakeSwitch) flowMod(msg []byte) {
	ff := fakeFlow{
		cookie:   binary.BigEndian.Uint64(msg[8:]),
		table:    msg[24],
		priority: binary.BigEndian.Uint16(msg[30:]),
		flags:    binary.BigEndian.Uint16(msg[44:]),
		match:    bytes.Clone(matchBytes(msg)),
	}
	if inst := msg[48+len(ff.match):]; len(inst) >= 8 && binary.BigEndian.Uint16(inst) == 6 {
		ff.meter = binary.BigEndian.Uint32(inst[4:])
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch msg[25] {
	case openflow.FlowAdd:
		if _, ok := f.meters[ff.meter]; ff.meter != 0 && !ok {
			go f.sendError(bytes.Clone(msg), openflow.ErrorTypeMeterModFailed, openflow.MeterErrInvalid)
			return
		}
		f.flows[fakeKey(ff)] = ff
	case openflow.FlowDelete:
		mask := binary.BigEndian.Uint64(msg[16:])
		for k, x := range f.flows {
			if x.cookie&mask == ff.cookie&mask && (ff.table == openflow.TableAll || ff.table == x.table) {
				delete(f.flows, k)
			}
		}
	case openflow.FlowDeleteStrict:
		delete(f.flows, fakeKey(ff))
	}
}

func fakeKey(ff fakeFlow) string {
	return string([]byte{ff.table, byte(ff.priority >> 8), byte(ff.priority)}) + string(ff.match)
}

// addFlow puts a flow in the table directly.
func (f *fakeSwitch) addFlow(ff fakeFlow) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flows[fakeKey(ff)] = ff
}

// flowCount returns how many flows carry cookie.
func (f *fakeSwitch) flowCount(cookie uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, x := range f.flows {
		if x.cookie == cookie {
			n++
		}
	}
	return n
}

// removeAll deletes every flow, sending FLOW_REMOVED for each when notify.
func (f *fakeSwitch) removeAll(notify bool) {
	f.mu.Lock()
	removed := make([]fakeFlow, 0, len(f.flows))
	for k, x := range f.flows {
		removed = append(removed, x)
		delete(f.flows, k)
	}
	f.mu.Unlock()
	if !notify {
		return
	}
	for _, x := range removed {
		msg := []byte{openflow.Version, openflow.TypeFlowRemoved, 0, 0, 0, 0, 0, 0}
		msg = binary.BigEndian.AppendUint64(msg, x.cookie)
		msg = binary.BigEndian.AppendUint16(msg, x.priority)
		msg = append(msg, openflow.RemovedDelete, x.table)
		msg = append(msg, make([]byte, 28)...)
		msg = append(msg, x.match...)
		binary.BigEndian.PutUint16(msg[2:], uint16(len(msg)))
		f.send(msg)
	}
}

// flowStatsReply answers a flow dump of table with cookie.
func (f *fakeSwitch) flowStatsReply(xid uint32, table uint8, cookie uint64) []byte {
	msg := []byte{openflow.Version, openflow.TypeMultipartReply, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(msg[4:], xid)
	f.mu.Lock()
	for _, x := range f.flows {
		if x.cookie != cookie || (table != openflow.TableAll && table != x.table) {
			continue
		}
		e := make([]byte, 48)
		binary.BigEndian.PutUint16(e, uint16(48+len(x.match)))
		e[2] = x.table
		binary.BigEndian.PutUint16(e[12:], x.priority)
		binary.BigEndian.PutUint16(e[18:], x.flags)
		binary.BigEndian.PutUint64(e[24:], x.cookie)
		msg = append(msg, e...)
		msg = append(msg, x.match...)
	}
	f.mu.Unlock()
	binary.BigEndian.PutUint16(msg[2:], uint16(len(msg)))
	return msg
}

// next returns the next message received whose type is not skipped
// (echo requests and flow dumps are skipped unless asked for).
func (f *fakeSwitch) next(t *testing.T, want uint8) []byte {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case msg := <-f.msgs:
			typ := msg[1]
			if typ != want && (typ == openflow.TypeEchoRequest || typ == openflow.TypeMultipartRequest) {
				continue
			}
			if typ != want {
				t.Fatalf("got message type %d, want %d", typ, want)
			}
			return msg
		case <-timeout:
			t.Fatalf("no message of type %d", want)
			return nil
		}
	}
}

// waitConn waits for the fake to accept a connection.
func (f *fakeSwitch) waitConn(t *testing.T) {
	t.Helper()
	select {
	case <-f.conns:
	case <-time.After(5 * time.Second):
		t.Fatal("no connection")
	}
}

// testMeter is the global meter of the test set; port P's is testMeter+P.
const testMeter = 100

// meterFlags are the flags of the test set's meters.
const meterFlags = openflow.MeterFlagPktps | openflow.MeterFlagBurst | openflow.MeterFlagStats

// testFlows are the two generic flows the daemon installs.
func testFlows() []openflow.FlowMod {
	return []openflow.FlowMod{
		{TableID: 60, Priority: 102, MaxLen: openflow.MaxLenNoBuffer, ControllerID: 53, MeterID: testMeter,
			Match: openflow.Match{EthType: 0x0800, IPProto: 17, IPv4Dst: netip.MustParseAddr("169.254.169.254"), UDPDst: 53}},
		{TableID: 60, Priority: 102, MaxLen: openflow.MaxLenNoBuffer, ControllerID: 53, MeterID: testMeter,
			Match: openflow.Match{EthType: 0x86dd, IPProto: 17, IPv6Dst: netip.MustParseAddr("fd00::254"), UDPDst: 53}},
	}
}

// portFlow is the flow of port p in the test set.
func portFlow(p uint32) openflow.FlowMod {
	return openflow.FlowMod{TableID: 60, Priority: 103, MaxLen: openflow.MaxLenNoBuffer, ControllerID: 53, MeterID: testMeter + p,
		Match: openflow.Match{InPort: p, EthType: 0x0800, IPProto: 17, IPv4Dst: netip.MustParseAddr("169.254.169.254"), UDPDst: 53}}
}

// testDeclare is the test set: per port a meter and a flow, then the
// global meter and the generic flows.
func testDeclare(ports []uint32) ([]openflow.MeterMod, []openflow.FlowMod) {
	var meters []openflow.MeterMod
	var flows []openflow.FlowMod
	for _, p := range ports {
		meters = append(meters, openflow.MeterMod{MeterID: testMeter + p, Flags: meterFlags, Rate: 50, Burst: 10})
		flows = append(flows, portFlow(p))
	}
	meters = append(meters, openflow.MeterMod{MeterID: testMeter, Flags: meterFlags, Rate: 1000, Burst: 100})
	return meters, append(flows, testFlows()...)
}

// testOwnsMeter owns the ids 100..199.
func testOwnsMeter(id uint32) bool { return id >= testMeter && id < 200 }

// started runs a Switch against f with short timings; cancel stops it and
// waits for Run to return.
type started struct {
	sw     *Switch
	cancel func() error
}

func start(t *testing.T, f *fakeSwitch, onPacketIn func(uint32, []byte), tweaks ...func(*Switch)) started {
	t.Helper()
	sw := New(Config{Target: f.target(), ControllerID: 53, Cookie: testCookie, TableID: 60, Declare: testDeclare, OwnsMeter: testOwnsMeter})
	sw.checkInterval = 50 * time.Millisecond
	sw.echoInterval = 100 * time.Millisecond
	sw.backoffMin = 10 * time.Millisecond
	sw.backoffMax = 50 * time.Millisecond
	for _, tweak := range tweaks {
		tweak(sw)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sw.Run(ctx, onPacketIn) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(5 * time.Second):
				runErr = errors.New("Run did not return")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return started{sw: sw, cancel: stop}
}

// startConnected starts a session with f, answers its handshake and waits
// until it is connected.
func startConnected(t *testing.T, f *fakeSwitch, onPacketIn func(uint32, []byte)) started {
	t.Helper()
	s := start(t, f, onPacketIn)
	f.waitConn(t)
	expectHandshake(t, f)
	waitFor(t, "connected", s.sw.Connected)
	return s
}

// expectHandshake checks the messages of a connection up to the barrier.
func expectHandshake(t *testing.T, f *fakeSwitch) {
	t.Helper()
	hello := f.next(t, openflow.TypeHello)
	if v, err := openflow.ParseHello(hello); err != nil || v != 1<<4 {
		t.Fatalf("hello offers %#x, %v", v, err)
	}
	sc := f.next(t, openflow.TypeSetConfig)
	if got := binary.BigEndian.Uint16(sc[10:]); got != 0xffff {
		t.Errorf("miss_send_len %d", got)
	}
	id := f.next(t, openflow.TypeExperimenter)
	if !bytes.Equal(id[8:], []byte{0, 0, 0x23, 0x20, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 53}) {
		t.Errorf("set controller id %x", id)
	}
	expectMeter(t, f, openflow.MeterAdd, testMeter, 1000, 100)
	expectMeter(t, f, openflow.MeterModify, testMeter, 1000, 100)
	for i, want := range testFlows() {
		expectFlow(t, f, i, want)
	}
	f.next(t, openflow.TypeBarrierRequest)
}

// expectFlow checks that the next message adds flow want.
func expectFlow(t *testing.T, f *fakeSwitch, i int, want openflow.FlowMod) {
	t.Helper()
	fm := f.next(t, openflow.TypeFlowMod)
	want.Cookie = testCookie
	want.Command = openflow.FlowAdd
	want.Flags = openflow.FlagSendFlowRem
	wantMsg, err := openflow.AppendFlowMod(nil, binary.BigEndian.Uint32(fm[4:]), &want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fm, wantMsg) {
		t.Errorf("flow %d:\n got %x\nwant %x", i, fm, wantMsg)
	}
}

// expectMeter checks that the next message is a METER_MOD cmd of meter id
// with one band of rate and burst (none for a delete).
func expectMeter(t *testing.T, f *fakeSwitch, cmd uint16, id, rate, burst uint32) {
	t.Helper()
	mm := f.next(t, openflow.TypeMeterMod)
	want := openflow.AppendMeterMod(nil, binary.BigEndian.Uint32(mm[4:]), &openflow.MeterMod{
		Command: cmd, Flags: meterFlags, MeterID: id, Rate: rate, Burst: burst})
	if cmd == openflow.MeterDelete {
		want = openflow.AppendMeterMod(nil, binary.BigEndian.Uint32(mm[4:]), &openflow.MeterMod{Command: cmd, MeterID: id})
	}
	if !bytes.Equal(mm, want) {
		t.Errorf("meter-mod:\n got %x\nwant %x", mm, want)
	}
}

// waitFor polls cond for up to 3 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestHandshakeAndShutdown(t *testing.T) {
	f := newFakeSwitch(t)
	s := startConnected(t, f, nil)
	if n := f.flowCount(testCookie); n != 2 {
		t.Fatalf("%d flows installed", n)
	}
	if m, ok := f.meter(testMeter); !ok || m.rate != 1000 || m.burst != 100 || m.flags != meterFlags {
		t.Fatalf("meter %+v %v", m, ok)
	}

	begin := time.Now()
	if err := s.cancel(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(begin); d > 900*time.Millisecond {
		t.Errorf("shutdown took %v though the barrier was answered", d)
	}
	del := f.next(t, openflow.TypeFlowMod)
	want, _ := openflow.AppendFlowMod(nil, binary.BigEndian.Uint32(del[4:]), &openflow.FlowMod{
		Cookie: testCookie, CookieMask: ^uint64(0), TableID: openflow.TableAll, Command: openflow.FlowDelete,
		OutPort: openflow.PortAny, OutGroup: openflow.GroupAny,
	})
	if !bytes.Equal(del, want) {
		t.Errorf("delete:\n got %x\nwant %x", del, want)
	}
	expectMeter(t, f, openflow.MeterDelete, testMeter, 0, 0)
	f.next(t, openflow.TypeBarrierRequest)
	if n := f.flowCount(testCookie); n != 0 {
		t.Errorf("%d flows left", n)
	}
	if ids := f.meterIDs(); len(ids) != 0 {
		t.Errorf("meters left: %v", ids)
	}
	if s.sw.Connected() {
		t.Error("still connected")
	}
	st := s.sw.Stats()
	if st["connects"] != 1 || st["flow_installs"] != 1 || st["flow_reinstalls"] != 0 {
		t.Errorf("stats %v", st)
	}
}

func TestShutdownWithoutBarrierReply(t *testing.T) {
	f := newFakeSwitch(t)
	s := start(t, f, nil, func(sw *Switch) { sw.shutdownTimeout = 200 * time.Millisecond })
	f.waitConn(t)
	expectHandshake(t, f)
	waitFor(t, "connected", s.sw.Connected)
	f.mu.Lock()
	f.silent = true
	f.mu.Unlock()
	begin := time.Now()
	if err := s.cancel(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(begin); d < 150*time.Millisecond || d > time.Second {
		t.Errorf("shutdown took %v, want about 200ms", d)
	}
}

func TestReinstallAfterFlowRemoved(t *testing.T) {
	f := newFakeSwitch(t)
	// Only FLOW_REMOVED may trigger the reinstall.
	s := start(t, f, nil, func(sw *Switch) { sw.checkInterval = time.Hour })
	f.waitConn(t)
	expectHandshake(t, f)
	waitFor(t, "connected", s.sw.Connected)

	begin := time.Now()
	f.removeAll(true)
	expectMeter(t, f, openflow.MeterAdd, testMeter, 1000, 100)
	expectMeter(t, f, openflow.MeterModify, testMeter, 1000, 100)
	f.next(t, openflow.TypeFlowMod)
	f.next(t, openflow.TypeFlowMod)
	f.next(t, openflow.TypeBarrierRequest)
	if d := time.Since(begin); d > time.Second {
		t.Errorf("reinstall took %v", d)
	}
	waitFor(t, "flows back", func() bool { return f.flowCount(testCookie) == 2 })
	time.Sleep(200 * time.Millisecond)
	if n := s.sw.Stats()["flow_reinstalls"]; n != 1 {
		t.Errorf("%d reinstalls for two removals, want 1 (debounced)", n)
	}
}

func TestReinstallAfterFlowDump(t *testing.T) {
	f := newFakeSwitch(t)
	s := startConnected(t, f, nil)

	f.removeAll(false)
	waitFor(t, "flows back", func() bool { return f.flowCount(testCookie) == 2 })
	time.Sleep(300 * time.Millisecond)
	if n := s.sw.Stats()["flow_reinstalls"]; n != 1 {
		t.Errorf("%d reinstalls, want 1", n)
	}
}

func TestStaleFlowRemoved(t *testing.T) {
	f := newFakeSwitch(t)
	stale := openflow.Match{EthType: 0x0800, IPProto: 17, IPv4Dst: netip.MustParseAddr("10.9.9.9"), UDPDst: 53}
	msg, err := openflow.AppendFlowMod(nil, 1, &openflow.FlowMod{TableID: 60, Priority: 102, Match: stale})
	if err != nil {
		t.Fatal(err)
	}
	f.addFlow(fakeFlow{cookie: testCookie, table: 60, priority: 102, match: bytes.Clone(matchBytes(msg))})
	other := fakeFlow{cookie: 1, table: 60, priority: 101, match: bytes.Clone(matchBytes(msg))}
	f.addFlow(other)
	s := start(t, f, nil)
	f.waitConn(t)
	expectHandshake(t, f)

	del := f.next(t, openflow.TypeFlowMod)
	if del[25] != openflow.FlowDeleteStrict || binary.BigEndian.Uint64(del[8:]) != testCookie ||
		binary.BigEndian.Uint64(del[16:]) != ^uint64(0) || !bytes.Equal(matchBytes(del), matchBytes(msg)) {
		t.Errorf("stale delete %x", del)
	}
	waitFor(t, "stale flow gone", func() bool { return f.flowCount(testCookie) == 2 })
	if f.flowCount(1) != 1 {
		t.Error("a flow with another cookie was removed")
	}
	if n := s.sw.Stats()["stale_flows_removed"]; n != 1 {
		t.Errorf("stale_flows_removed %d", n)
	}
}

func TestRedial(t *testing.T) {
	f := newFakeSwitch(t)
	s := startConnected(t, f, nil)

	// The switch restarts: its flows and the connection are gone.
	f.removeAll(false)
	f.mu.Lock()
	f.conn.Close()
	f.mu.Unlock()
	f.waitConn(t)
	expectHandshake(t, f)
	waitFor(t, "reconnected", s.sw.Connected)
	waitFor(t, "flows back", func() bool { return f.flowCount(testCookie) == 2 })
	st := s.sw.Stats()
	if st["connects"] != 2 || st["reconnects"] != 1 || st["disconnects"] != 1 || st["flow_installs"] != 2 {
		t.Errorf("stats %v", st)
	}
}

func TestDeadPeer(t *testing.T) {
	f := newFakeSwitch(t)
	s := startConnected(t, f, nil)
	f.mu.Lock()
	f.silent = true
	f.mu.Unlock()
	begin := time.Now()
	waitFor(t, "echo timeout", func() bool { return s.sw.Stats()["echo_timeouts"] == 1 })
	if d := time.Since(begin); d < 250*time.Millisecond {
		t.Errorf("peer declared dead after %v, want about 3 echo intervals", d)
	}
	f.mu.Lock()
	f.silent = false
	f.mu.Unlock()
	f.waitConn(t)
	waitFor(t, "reconnected", func() bool { return s.sw.Stats()["connects"] == 2 })
}

func TestVersionMismatch(t *testing.T) {
	f := newFakeSwitch(t)
	f.mu.Lock()
	f.hello = []byte{0x01, openflow.TypeHello, 0, 8, 0, 0, 0, 1}
	f.mu.Unlock()
	sw := New(Config{Target: f.target(), Declare: testDeclare})
	err := sw.Run(context.Background(), nil)
	if !errors.Is(err, ErrVersion) {
		t.Fatalf("Run: %v, want ErrVersion", err)
	}
}

func TestBadConfig(t *testing.T) {
	for _, target := range []string{"", "br-int.mgmt", "ssl:1.2.3.4:6653", "unix:"} {
		if err := New(Config{Target: target}).Run(context.Background(), nil); err == nil {
			t.Errorf("target %q: no error", target)
		}
	}
	bad := func([]uint32) ([]openflow.MeterMod, []openflow.FlowMod) {
		return nil, []openflow.FlowMod{{MaxLen: 1, Match: openflow.Match{IPv4Dst: netip.MustParseAddr("::1")}}}
	}
	if err := New(Config{Target: "unix:/nonexistent", Declare: bad}).Run(context.Background(), nil); err == nil {
		t.Error("bad flow: no error")
	}
}

func TestCancelWhileDialing(t *testing.T) {
	sw := New(Config{Target: "unix:" + filepath.Join(t.TempDir(), "none")})
	sw.backoffMin = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := sw.Run(ctx, nil); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if sw.Stats()["dial_errors"] != 1 {
		t.Errorf("stats %v", sw.Stats())
	}
}

func TestPacketInAndEcho(t *testing.T) {
	f := newFakeSwitch(t)
	type pin struct {
		port  uint32
		frame []byte
	}
	got := make(chan pin, 1)
	start(t, f, func(port uint32, frame []byte) { got <- pin{port, bytes.Clone(frame)} })
	f.waitConn(t)
	expectHandshake(t, f)

	frame := []byte("a frame of some bytes")
	pi := []byte{openflow.Version, openflow.TypePacketIn, 0, 0, 0, 0, 0, 0,
		0xff, 0xff, 0xff, 0xff, 0, byte(len(frame)), openflow.ReasonAction, 60, 0, 0, 0, 0, 0, 0x44, 0x4e, 0x53,
		0, 1, 0, 12, 0x80, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 0, // match in_port=7
		0, 0}
	pi = append(pi, frame...)
	binary.BigEndian.PutUint16(pi[2:], uint16(len(pi)))
	f.send(pi)
	select {
	case p := <-got:
		if p.port != 7 || !bytes.Equal(p.frame, frame) {
			t.Errorf("packet-in %d %q", p.port, p.frame)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no packet-in")
	}

	f.send(openflow.AppendEchoRequest(nil, 0xabc, []byte("hi")))
	reply := f.next(t, openflow.TypeEchoReply)
	if !bytes.Equal(reply, openflow.AppendEchoReply(nil, 0xabc, []byte("hi"))) {
		t.Errorf("echo reply %x", reply)
	}
}

func TestOpenFlowError(t *testing.T) {
	f := newFakeSwitch(t)
	s := start(t, f, nil)
	f.waitConn(t)
	expectHandshake(t, f)
	e := []byte{openflow.Version, openflow.TypeError, 0, 20, 0, 0, 0, 9, 0, 2, 0, 4}
	e = append(e, openflow.AppendBarrierRequest(nil, 9)...)
	f.send(e)
	waitFor(t, "error counted", func() bool { return s.sw.Stats()["openflow_errors"] == 1 })
	if s.sw.Stats()["bad_messages"] != 0 {
		t.Error("error message counted as bad")
	}
}

func TestPacketOut(t *testing.T) {
	f := newFakeSwitch(t)
	s := start(t, f, nil)
	frame := bytes.Repeat([]byte{0x5a}, 60)
	f.waitConn(t)
	expectHandshake(t, f)
	waitFor(t, "connected", s.sw.Connected)

	const n = 1000
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range n / 4 {
				fr := append(bytes.Clone(frame), byte(g), byte(i))
				if err := s.sw.PacketOut(uint32(g+1), fr); err != nil {
					t.Errorf("PacketOut: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	for range n {
		po := f.next(t, openflow.TypePacketOut)
		g := po[len(po)-2]
		want := openflow.AppendPacketOut(nil, binary.BigEndian.Uint32(po[4:]), openflow.PortController, uint32(g)+1,
			append(bytes.Clone(frame), g, po[len(po)-1]))
		if !bytes.Equal(po, want) {
			t.Fatalf("packet-out\n got %x\nwant %x", po, want)
		}
	}
	waitFor(t, "packet_outs counted", func() bool { return s.sw.Stats()["packet_outs"] == n })
	if err := s.sw.PacketOut(1, make([]byte, openflow.MaxPacketOutData+1)); !errors.Is(err, ErrFrameTooLong) {
		t.Errorf("long frame: %v", err)
	}
	if got := s.sw.Stats()["packet_out_errors"]; got != 1 {
		t.Errorf("packet_out_errors %d, want 1", got)
	}
}

func TestPacketOutQueueFull(t *testing.T) {
	sw := New(Config{Target: "unix:/nonexistent"})
	if err := sw.PacketOut(1, []byte{1}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("before connecting: %v", err)
	}
	c := &conn{pkts: make(chan *[]byte, 2), done: make(chan struct{})}
	sw.cur.Store(c)
	for i := range 2 {
		if err := sw.PacketOut(1, []byte{1}); err != nil {
			t.Fatalf("packet-out %d: %v", i, err)
		}
	}
	if err := sw.PacketOut(1, []byte{1}); !errors.Is(err, ErrQueueFull) {
		t.Errorf("full queue: %v", err)
	}
	st := sw.Stats()
	if st["packet_out_queue_full"] != 1 || st["packet_out_errors"] != 2 {
		t.Errorf("stats %v", st)
	}
	close(c.done)
	if err := sw.PacketOut(1, []byte{1}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("ended connection: %v", err)
	}
	sw.drop(c)
	if got := sw.Stats()["packet_out_errors"]; got != 5 {
		t.Errorf("packet_out_errors %d after dropping the queue, want 5", got)
	}
}

func BenchmarkPacketOut(b *testing.B) {
	sw := New(Config{Target: "unix:/nonexistent"})
	c := &conn{pkts: make(chan *[]byte, 1024), done: make(chan struct{})}
	sw.cur.Store(c)
	frame := make([]byte, 300)
	b.ReportAllocs()
	for b.Loop() {
		if err := sw.PacketOut(1, frame); err != nil {
			b.Fatal(err)
		}
		sw.bufs.Put(<-c.pkts)
	}
}

func TestPacketInNoAlloc(t *testing.T) {
	f := newFakeSwitch(t)
	var count atomic.Int64
	start(t, f, func(uint32, []byte) { count.Add(1) })
	f.waitConn(t)
	expectHandshake(t, f)

	pi := []byte{openflow.Version, openflow.TypePacketIn, 0, 0, 0, 0, 0, 0,
		0xff, 0xff, 0xff, 0xff, 0, 100, openflow.ReasonAction, 60, 0, 0, 0, 0, 0, 0x44, 0x4e, 0x53,
		0, 1, 0, 12, 0x80, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0}
	pi = append(pi, make([]byte, 100)...)
	binary.BigEndian.PutUint16(pi[2:], uint16(len(pi)))
	const n = 20000
	burst := bytes.Repeat(pi, n)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f.send(burst)
	waitFor(t, "packet-ins", func() bool { return count.Load() == n })
	runtime.ReadMemStats(&after)
	// The keeper, the fake and the test allocate a little meanwhile; one
	// allocation per packet-in would be 20000.
	if d := after.Mallocs - before.Mallocs; d > n/10 {
		t.Errorf("%d allocations for %d packet-ins", d, n)
	}
}
