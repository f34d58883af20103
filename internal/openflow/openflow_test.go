package openflow

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

// ofpPrint decodes msg with ovs-ofctl, the golden oracle, skipping the test
// when ovs-ofctl is not installed.
func ofpPrint(t *testing.T, msg []byte) string {
	t.Helper()
	path, err := exec.LookPath("ovs-ofctl")
	if err != nil {
		t.Skip("ovs-ofctl not installed")
	}
	out, err := exec.Command(path, "ofp-print", hex.EncodeToString(msg)).CombinedOutput()
	if err != nil {
		t.Fatalf("ovs-ofctl ofp-print %x: %v\n%s", msg, err, out)
	}
	return string(out)
}

// wantPrint checks that ofp-print's text of msg contains every part.
func wantPrint(t *testing.T, msg []byte, parts ...string) {
	t.Helper()
	text := ofpPrint(t, msg)
	if strings.Contains(text, "***decode error") || strings.Contains(text, "bad") {
		t.Errorf("ofp-print reports a problem:\n%s", text)
	}
	for _, p := range parts {
		if !strings.Contains(text, p) {
			t.Errorf("ofp-print of %x lacks %q:\n%s", msg, p, text)
		}
	}
}

var (
	dnsV4 = netip.MustParseAddr("169.254.169.254")
	dnsV6 = netip.MustParseAddr("fd00::254")
)

// dnsFlow is a flow like the daemon's.
func dnsFlow(v6 bool) *FlowMod {
	fm := &FlowMod{
		Cookie: 0x444e53, TableID: 60, Command: FlowAdd, Priority: 102,
		Flags:        FlagSendFlowRem,
		Match:        Match{EthType: 0x0800, IPProto: 17, IPv4Dst: dnsV4, UDPDst: 53},
		ControllerID: 53, MaxLen: MaxLenNoBuffer,
	}
	if v6 {
		fm.Match = Match{EthType: 0x86dd, IPProto: 17, IPv6Dst: dnsV6, UDPDst: 53}
	}
	return fm
}

func TestGoldenSimple(t *testing.T) {
	wantPrint(t, AppendHello(nil, 1), "OFPT_HELLO (OF1.3) (xid=0x1)", "version bitmap: 0x04")
	wantPrint(t, AppendEchoRequest(nil, 2, []byte("ping")), "OFPT_ECHO_REQUEST (OF1.3) (xid=0x2): 4 bytes of payload", "|ping")
	wantPrint(t, AppendEchoReply(nil, 3, []byte("ab")), "OFPT_ECHO_REPLY (OF1.3) (xid=0x3): 2 bytes of payload")
	wantPrint(t, AppendFeaturesRequest(nil, 4), "OFPT_FEATURES_REQUEST (OF1.3) (xid=0x4)")
	wantPrint(t, AppendSetConfig(nil, 5, 0, MaxLenNoBuffer), "OFPT_SET_CONFIG (OF1.3) (xid=0x5): frags=normal miss_send_len=65535")
	wantPrint(t, AppendSetControllerID(nil, 6, 53), "NXT_SET_CONTROLLER_ID (OF1.3) (xid=0x6): id=53")
	wantPrint(t, AppendBarrierRequest(nil, 7), "OFPT_BARRIER_REQUEST (OF1.3) (xid=0x7)")
}

func TestGoldenFlowMod(t *testing.T) {
	b, err := AppendFlowMod(nil, 8, dnsFlow(false))
	if err != nil {
		t.Fatal(err)
	}
	wantPrint(t, b, "OFPT_FLOW_MOD (OF1.3) (xid=0x8): ADD table:60 priority=102,udp,nw_dst=169.254.169.254,tp_dst=53 cookie:0x444e53 send_flow_rem actions=controller(id=53)")

	b, err = AppendFlowMod(nil, 9, dnsFlow(true))
	if err != nil {
		t.Fatal(err)
	}
	wantPrint(t, b, "ADD table:60 priority=102,udp6,ipv6_dst=fd00::254,tp_dst=53 cookie:0x444e53 send_flow_rem actions=controller(id=53)")

	fm := &FlowMod{
		TableID: 3, Command: FlowAdd, Priority: 7, IdleTimeout: 10, HardTimeout: 20,
		Match:        Match{InPort: 4, EthType: 0x0800},
		ControllerID: 0, MaxLen: 128,
		Output: []uint32{2, PortNormal},
	}
	b, err = AppendFlowMod(nil, 10, fm)
	if err != nil {
		t.Fatal(err)
	}
	wantPrint(t, b, "ADD table:3 priority=7,ip,in_port=4 idle:10 hard:20 actions=CONTROLLER:128,output:2,NORMAL")

	del := &FlowMod{
		Cookie: 0x444e53, CookieMask: ^uint64(0), TableID: TableAll, Command: FlowDelete,
		OutPort: PortAny, OutGroup: GroupAny, ControllerID: 53, MaxLen: MaxLenNoBuffer,
	}
	b, err = AppendFlowMod(nil, 11, del)
	if err != nil {
		t.Fatal(err)
	}
	wantPrint(t, b, "OFPT_FLOW_MOD (OF1.3) (xid=0xb): DEL table:255 priority=0 cookie:0x444e53/0xffffffffffffffff actions=drop")
	if len(b) != 56 {
		t.Errorf("delete carries instructions: %d bytes", len(b))
	}

	strict := &FlowMod{Cookie: 1, CookieMask: ^uint64(0), TableID: 60, Command: FlowDeleteStrict, Priority: 102,
		OutPort: 5, OutGroup: GroupAny, Match: dnsFlow(false).Match}
	b, err = AppendFlowMod(nil, 12, strict)
	if err != nil {
		t.Fatal(err)
	}
	wantPrint(t, b, "DEL_STRICT table:60 priority=102,udp,nw_dst=169.254.169.254,tp_dst=53 cookie:0x1/0xffffffffffffffff out_port:5")
}

func TestFlowModErrors(t *testing.T) {
	bad := []Match{
		{EthType: 0x0800, IPv4Dst: dnsV6},
		{EthType: 0x86dd, IPv6Dst: dnsV4},
		{EthType: 0x86dd, IPv6Dst: netip.MustParseAddr("::ffff:1.2.3.4")},
	}
	for _, m := range bad {
		dst := []byte{1, 2}
		out, err := AppendFlowMod(dst, 1, &FlowMod{Match: m, MaxLen: 1})
		if err == nil {
			t.Errorf("match %+v: no error", m)
		}
		if !bytes.Equal(out, dst) {
			t.Errorf("match %+v: dst changed to %x", m, out)
		}
	}
	huge := &FlowMod{Output: make([]uint32, 5000)}
	if out, err := AppendFlowMod([]byte{9}, 1, huge); err == nil || len(out) != 1 {
		t.Errorf("oversized flow-mod: err %v, %d bytes", err, len(out))
	}
	// An IPv4-mapped address is accepted as IPv4.
	b, err := AppendFlowMod(nil, 1, &FlowMod{Match: Match{EthType: 0x0800, IPv4Dst: netip.MustParseAddr("::ffff:10.1.2.3")}})
	if err != nil {
		t.Fatal(err)
	}
	wantPrint(t, b, "nw_dst=10.1.2.3")
}

func TestGoldenPacketOut(t *testing.T) {
	frame := udpFrame()
	b := AppendPacketOut(nil, 13, PortController, 5, frame)
	wantPrint(t, b, "OFPT_PACKET_OUT (OF1.3) (xid=0xd): in_port=CONTROLLER actions=output:5 data_len=46",
		"udp,vlan_tci=0x0000,dl_src=fa:16:3e:00:00:02,dl_dst=fa:16:3e:00:00:01,nw_src=10.0.0.2,nw_dst=10.0.0.1",
		"tp_src=53,tp_dst=4242")
	if len(b) != 40+len(frame) || !bytes.Equal(b[40:], frame) {
		t.Errorf("packet-out data: %x", b)
	}
}

func TestGoldenFlowStatsRequest(t *testing.T) {
	b := AppendFlowStatsRequest(nil, 14, 60, 0x444e53, ^uint64(0))
	wantPrint(t, b, "OFPST_FLOW request (OF1.3) (xid=0xe): table=60")
	// ofp-print omits the cookie: check its place.
	if got := binary.BigEndian.Uint64(b[32:]); got != 0x444e53 {
		t.Errorf("cookie %#x", got)
	}
	if got := binary.BigEndian.Uint64(b[40:]); got != ^uint64(0) {
		t.Errorf("cookie mask %#x", got)
	}
}

// udpFrame is an Ethernet/IPv4/UDP frame from 10.0.0.2:53 to 10.0.0.1:4242.
func udpFrame() []byte {
	f, _ := hex.DecodeString(
		"fa163e000001fa163e0000020800" + // Ethernet
			"4500002000004000401126c40a0000020a000001" + // IPv4, 32 bytes
			"00351092000c0000" + "74657374") // UDP, "test"
	return f
}

// msgBytes builds a message of type typ from hex parts, with its length.
func msgBytes(t *testing.T, typ uint8, xid uint32, parts ...string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(parts, ""))
	if err != nil {
		t.Fatal(err)
	}
	h := []byte{Version, typ, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(h[2:], uint16(len(b)+8))
	binary.BigEndian.PutUint32(h[4:], xid)
	return append(h, b...)
}

// packetIn is a hand-built PACKET_IN of udpFrame from port 5 whose match
// also has a Nicira register and a masked field.
func packetIn(t *testing.T) []byte {
	return msgBytes(t, TypePacketIn, 0,
		"ffffffff"+"002e"+"01"+"3c"+"0000000000444e53",
		"0001"+"0020"+"80000004"+"00000005"+"00010804"+"00000007"+"80001908"+"0a0000000affffff", // match, 32 bytes
		"0000", hex.EncodeToString(udpFrame()))
}

func TestParsePacketIn(t *testing.T) {
	msg := packetIn(t)
	wantPrint(t, msg, "OFPT_PACKET_IN (OF1.3) (xid=0x0): table_id=60 cookie=0x444e53 total_len=46 reg4=0x7,in_port=5,nw_dst=10.0.0.0/10.255.255.255 (via action) data_len=46 (unbuffered)",
		"udp,vlan_tci=0x0000,dl_src=fa:16:3e:00:00:02,dl_dst=fa:16:3e:00:00:01,nw_src=10.0.0.2,nw_dst=10.0.0.1")
	var pi PacketIn
	if err := ParsePacketIn(msg, &pi); err != nil {
		t.Fatal(err)
	}
	want := PacketIn{BufferID: NoBuffer, TotalLen: 46, Reason: ReasonAction, TableID: 60, Cookie: 0x444e53, InPort: 5}
	if !bytes.Equal(pi.Data, udpFrame()) {
		t.Errorf("data %x", pi.Data)
	}
	pi.Data = nil
	if pi.BufferID != want.BufferID || pi.TotalLen != want.TotalLen || pi.Reason != want.Reason ||
		pi.TableID != want.TableID || pi.Cookie != want.Cookie || pi.InPort != want.InPort {
		t.Errorf("got %+v, want %+v", pi, want)
	}
	for n := range len(msg) {
		if err := ParsePacketIn(msg[:n], &pi); err == nil {
			t.Errorf("truncated to %d: no error", n)
		}
	}
	if err := ParsePacketIn(AppendBarrierRequest(nil, 1), &pi); !errors.Is(err, ErrType) {
		t.Errorf("barrier as packet-in: %v", err)
	}
	bad := bytes.Clone(msg)
	bad[25] = 2 // match type standard
	if err := ParsePacketIn(bad, &pi); !errors.Is(err, ErrMatch) {
		t.Errorf("bad match type: %v", err)
	}
	bad = bytes.Clone(msg)
	bad[0] = 1
	if err := ParsePacketIn(bad, &pi); !errors.Is(err, ErrType) {
		t.Errorf("OpenFlow 1.0: %v", err)
	}
	if a := testing.AllocsPerRun(100, func() { _ = ParsePacketIn(msg, &pi) }); a != 0 {
		t.Errorf("ParsePacketIn allocates %v times", a)
	}
}

func TestParseFlowRemoved(t *testing.T) {
	msg := msgBytes(t, TypeFlowRemoved, 0x22,
		"0000000000444e53"+"0066"+"02"+"3c"+"00000003"+"00000004"+"0000"+"0000"+"0000000000000009"+"0000000000000100",
		"0001"+"001d"+"80000a020800"+"8000140111"+"80001804a9fea9fe"+"800020020035"+"000000")
	wantPrint(t, msg, "OFPT_FLOW_REMOVED (OF1.3) (xid=0x22): priority=102,udp,nw_dst=169.254.169.254,tp_dst=53 reason=delete table_id=60 cookie:0x444e53 duration3.000000004s idle0 pkts9 bytes256")
	fr, err := ParseFlowRemoved(msg)
	if err != nil {
		t.Fatal(err)
	}
	want := FlowRemoved{Cookie: 0x444e53, Priority: 102, Reason: RemovedDelete, TableID: 60,
		DurationSec: 3, DurationNsec: 4, PacketCount: 9, ByteCount: 256, Match: dnsFlow(false).Match}
	if fr != want {
		t.Errorf("got %+v\nwant %+v", fr, want)
	}
	for n := range len(msg) {
		if _, err := ParseFlowRemoved(msg[:n]); err == nil {
			t.Errorf("truncated to %d: no error", n)
		}
	}
}

func TestParseError(t *testing.T) {
	req := AppendBarrierRequest(nil, 0x99)
	msg := msgBytes(t, TypeError, 0x99, "0002"+"0004", hex.EncodeToString(req))
	wantPrint(t, msg, "OFPT_ERROR (OF1.3) (xid=0x99): OFPBAC_BAD_OUT_PORT", "OFPT_BARRIER_REQUEST")
	e, err := ParseError(msg)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != 2 || e.Code != 4 || !bytes.Equal(e.Data, req) || e.TypeName() != "BAD_ACTION" {
		t.Errorf("got %+v", e)
	}
	if got := e.Error(); got != "openflow error BAD_ACTION code 4" {
		t.Errorf("Error() = %q", got)
	}
	ex := msgBytes(t, TypeError, 1, "ffff"+"0010"+"00002320", hex.EncodeToString(req))
	e, err = ParseError(ex)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != ErrorTypeExperimenter || e.Code != 16 || e.Experimenter != ExperimenterNicira || !bytes.Equal(e.Data, req) {
		t.Errorf("experimenter error: %+v", e)
	}
	if got := e.Error(); got != "openflow error EXPERIMENTER code 16 experimenter 0x2320" {
		t.Errorf("Error() = %q", got)
	}
	if _, err := ParseError(ex[:14]); err == nil {
		t.Error("truncated experimenter error: no error")
	}
	e.Type = 77
	if e.TypeName() != "77" {
		t.Errorf("unknown type name %q", e.TypeName())
	}
}

// flowStatsEntry is one hand-built flow stats entry with a match of
// eth_type, ip_proto, ipv6_dst, udp_dst and an apply-actions instruction.
const flowStatsEntry = "0078" + "3c" + "00" + "00000005" + "00000006" + "0066" + "0000" + "0000" + "0001" + "00000000" +
	"0000000000444e53" + "0000000000000002" + "0000000000000080" +
	"0001" + "0029" + "80000a0286dd" + "8000140111" + "80003610fd000000000000000000000000000254" + "800020020035" + "00000000000000" +
	"0004" + "0018" + "00000000" + "ffff0010000023200014ffff00350100"

func TestParseFlowStatsReply(t *testing.T) {
	msg := msgBytes(t, TypeMultipartReply, 5, "0001"+"0001"+"00000000", flowStatsEntry, flowStatsEntry)
	wantPrint(t, msg, "OFPST_FLOW reply (OF1.3) (xid=0x5): flags=[more]",
		"cookie=0x444e53, duration=5.000000006s, table=60, n_packets=2, n_bytes=128, send_flow_rem priority=102,udp6,ipv6_dst=fd00::254,tp_dst=53 actions=controller(id=53)")
	if typ, err := MultipartType(msg); err != nil || typ != MultipartFlow {
		t.Errorf("MultipartType = %d, %v", typ, err)
	}
	got, more, err := ParseFlowStatsReply(msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := FlowStats{TableID: 60, DurationSec: 5, DurationNsec: 6, Priority: 102, Flags: FlagSendFlowRem,
		Cookie: 0x444e53, PacketCount: 2, ByteCount: 128, Match: dnsFlow(true).Match}
	if !more || len(got) != 2 || got[0] != want || got[1] != want {
		t.Errorf("got %+v more=%v\nwant 2 x %+v", got, more, want)
	}
	empty := msgBytes(t, TypeMultipartReply, 5, "0001"+"0000"+"00000000")
	got, more, err = ParseFlowStatsReply(empty, got[:0])
	if err != nil || more || len(got) != 0 {
		t.Errorf("empty reply: %v %v %v", got, more, err)
	}
	for n := 17; n < len(msg); n++ {
		if n == 16+len(flowStatsEntry)/2 {
			continue // one whole entry
		}
		cut := bytes.Clone(msg[:n])
		binary.BigEndian.PutUint16(cut[2:], uint16(n))
		if _, _, err := ParseFlowStatsReply(cut, nil); err == nil {
			t.Errorf("cut to %d: no error", n)
		}
	}
	desc := msgBytes(t, TypeMultipartReply, 5, "0000"+"0000"+"00000000")
	if _, _, err := ParseFlowStatsReply(desc, nil); !errors.Is(err, ErrType) {
		t.Errorf("DESC reply: %v", err)
	}
}

func TestParseHello(t *testing.T) {
	v, err := ParseHello(AppendHello(nil, 1))
	if err != nil || v != 1<<4 {
		t.Errorf("own hello: %#x %v", v, err)
	}
	// Open vSwitch offering 1.0, 1.3 and 1.4.
	ovs := []byte{0x05, 0, 0, 16, 0, 0, 0, 1, 0, 1, 0, 8, 0, 0, 0, 0x32}
	if v, err := ParseHello(ovs); err != nil || v != 0x32 {
		t.Errorf("ovs hello: %#x %v", v, err)
	}
	// No bitmap: every version up to the header's.
	if v, err := ParseHello([]byte{0x01, 0, 0, 8, 0, 0, 0, 1}); err != nil || v != 0x03 {
		t.Errorf("1.0 hello: %#x %v", v, err)
	}
	// An unknown element first, padded.
	other := []byte{0x06, 0, 0, 28, 0, 0, 0, 1, 0, 9, 0, 5, 1, 0, 0, 0, 0, 1, 0, 8, 0, 0, 0, 0x40, 0, 0, 0, 0}
	if v, err := ParseHello(other); err != nil || v != 0x40 {
		t.Errorf("hello with unknown element: %#x %v", v, err)
	}
	if _, err := ParseHello([]byte{0x04, 0, 0, 12, 0, 0, 0, 1, 0, 1, 0, 9}); err == nil {
		t.Error("element beyond message: no error")
	}
	if _, err := ParseHello(AppendEchoRequest(nil, 1, nil)); !errors.Is(err, ErrType) {
		t.Errorf("echo as hello: %v", err)
	}
}

func TestEchoData(t *testing.T) {
	d, err := EchoData(AppendEchoRequest(nil, 1, []byte("xyz")))
	if err != nil || string(d) != "xyz" {
		t.Errorf("%q %v", d, err)
	}
	if _, err := EchoData(AppendHello(nil, 1)); err == nil {
		t.Error("hello as echo: no error")
	}
}

func TestReadMessage(t *testing.T) {
	var stream []byte
	stream = AppendHello(stream, 1)
	stream = AppendEchoRequest(stream, 2, bytes.Repeat([]byte{7}, 100))
	stream = append(stream, packetIn(t)...)
	r := bufio.NewReader(bytes.NewReader(stream))
	buf := make([]byte, 0, 64)
	var types []uint8
	for {
		h, msg, err := ReadMessage(r, buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if int(h.Length) != len(msg) {
			t.Errorf("length %d, message %d", h.Length, len(msg))
		}
		types = append(types, h.Type)
	}
	if !bytes.Equal(types, []uint8{TypeHello, TypeEchoRequest, TypePacketIn}) {
		t.Errorf("types %v", types)
	}

	_, _, err := ReadMessage(bufio.NewReader(bytes.NewReader([]byte{4, 0, 0, 7, 0, 0, 0, 0})), nil)
	if !errors.Is(err, ErrBadLength) {
		t.Errorf("length 7: %v", err)
	}
	_, _, err = ReadMessage(bufio.NewReader(bytes.NewReader(AppendHello(nil, 1)[:12])), nil)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut message: %v", err)
	}

	one := packetIn(t)
	big := make([]byte, MaxMessageLen)
	rd := bytes.NewReader(nil)
	br := bufio.NewReader(rd)
	allocs := testing.AllocsPerRun(100, func() {
		rd.Reset(one)
		br.Reset(rd)
		if _, _, err := ReadMessage(br, big); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("ReadMessage allocates %v times", allocs)
	}
}

func TestRoundTripMatch(t *testing.T) {
	for _, m := range []Match{
		{},
		{InPort: 9},
		dnsFlow(false).Match,
		dnsFlow(true).Match,
		{InPort: 1, EthType: 0x86dd, IPProto: 17, IPv6Dst: dnsV6, UDPDst: 5353},
	} {
		b := appendMatch(nil, &m)
		if len(b)%8 != 0 {
			t.Errorf("%+v: length %d not padded", m, len(b))
		}
		var got Match
		n, err := parseMatch(b, &got)
		if err != nil || n != len(b) || got != m {
			t.Errorf("%+v: got %+v, %d, %v", m, got, n, err)
		}
	}
}

func TestRoundTripFlowMod(t *testing.T) {
	fm := dnsFlow(false)
	fm.Output = []uint32{PortController}
	b, err := AppendFlowMod(nil, 77, fm)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := ParseHeader(b)
	if h != (Header{Version: Version, Type: TypeFlowMod, Length: uint16(len(b)), XID: 77}) {
		t.Errorf("header %+v", h)
	}
	var m Match
	if _, err := parseMatch(b[48:], &m); err != nil || m != fm.Match {
		t.Errorf("match %+v %v", m, err)
	}
	wantPrint(t, b, "actions=controller(id=53),CONTROLLER:65535")
}

func TestAppendNoAlloc(t *testing.T) {
	buf := make([]byte, 0, 2048)
	frame := udpFrame()
	fm := dnsFlow(true)
	allocs := testing.AllocsPerRun(100, func() {
		buf = AppendPacketOut(buf[:0], 1, PortController, 3, frame)
		buf = AppendEchoReply(buf, 2, frame)
		buf, _ = AppendFlowMod(buf, 3, fm)
	})
	if allocs != 0 {
		t.Errorf("appenders allocate %v times", allocs)
	}
}

func TestPacketOutTooLong(t *testing.T) {
	b := AppendPacketOut(nil, 1, PortController, 1, make([]byte, MaxPacketOutData+10))
	if len(b) != MaxMessageLen || binary.BigEndian.Uint16(b[2:]) != MaxMessageLen {
		t.Errorf("length %d", len(b))
	}
}

// parseAll runs every decoder on msg; none may panic, and what they return
// must lie within msg.
func parseAll(t *testing.T, msg []byte) {
	var pi PacketIn
	if err := ParsePacketIn(msg, &pi); err == nil && len(pi.Data) > len(msg) {
		t.Fatalf("packet-in data longer than the message")
	}
	_, _ = ParseFlowRemoved(msg)
	if e, err := ParseError(msg); err == nil {
		_ = e.Error()
	}
	_, _, _ = ParseFlowStatsReply(msg, nil)
	_, _, _ = ParseMeterStatsReply(msg, nil)
	_, _, _ = ParsePortDescReply(msg, nil)
	_, _ = ParsePortStatus(msg)
	_, _ = MultipartType(msg)
	_, _ = ParseHello(msg)
	_, _ = EchoData(msg)
}

func FuzzReadMessage(f *testing.F) {
	f.Add(AppendHello(nil, 1))
	f.Add(packetIn(&testing.T{}))
	f.Add(append(AppendEchoRequest(nil, 1, []byte("x")), AppendBarrierRequest(nil, 2)...))
	f.Add(msgBytes(&testing.T{}, TypeMultipartReply, 5, "0001"+"0000"+"00000000", flowStatsEntry))
	f.Add(msgBytes(&testing.T{}, TypeError, 1, "ffff"+"0010"+"00002320"))
	f.Add(msgBytes(&testing.T{}, TypeMultipartReply, 6, "0009"+"0000"+"00000000", meterStatsEntry))
	f.Add(msgBytes(&testing.T{}, TypePortStatus, 7, "00"+"00000000000000", portEntry))
	f.Add(flowStatsOf(&testing.T{}, arpAnswer()))
	f.Add(flowStatsOf(&testing.T{}, naAnswer()))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		buf := make([]byte, 0, 128)
		for {
			h, msg, err := ReadMessage(r, buf)
			if err != nil {
				return
			}
			if len(msg) != int(h.Length) {
				t.Fatalf("message of %d bytes, header says %d", len(msg), h.Length)
			}
			parseAll(t, msg)
		}
	})
}

func FuzzParsePacketIn(f *testing.F) {
	f.Add(packetIn(&testing.T{}))
	f.Fuzz(func(t *testing.T, msg []byte) {
		parseAll(t, msg)
	})
}
