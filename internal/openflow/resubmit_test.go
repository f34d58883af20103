package openflow

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"testing"
)

// mark is a register mark like the daemon's re-injection mark.
var mark = Reg{Index: 13, Value: 1, Mask: 1}

// interceptMatch is a match like the daemon's intercept flows'.
func interceptMatch() Match {
	return Match{InPort: 5, Untagged: true, EthType: 0x0800, IPProto: 17, UDPDst: 53, Reg: Reg{Index: 13, Mask: 1}}
}

func TestGoldenPacketOutResubmit(t *testing.T) {
	frame := udpFrame()
	b, err := AppendPacketOutResubmit(nil, 15, 5, mark, 60, frame)
	if err != nil {
		t.Fatal(err)
	}
	wantPrint(t, b, "OFPT_PACKET_OUT (OF1.3) (xid=0xf): in_port=5 actions=set_field:0x1/0x1->reg13,resubmit(,60) data_len=46",
		"udp,vlan_tci=0x0000,dl_src=fa:16:3e:00:00:02,dl_dst=fa:16:3e:00:00:01,nw_src=10.0.0.2,nw_dst=10.0.0.1")
	want, _ := hex.DecodeString("040d006e0000000f" + "ffffffff" + "00000005" + "0028" + "000000000000" +
		"ffff0018" + "00002320" + "0021" + "00011b08" + "00000001" + "00000001" + "0000" + // NXAST_REG_LOAD2
		"ffff0010" + "00002320" + "000e" + "fff8" + "3c000000") // NXAST_RESUBMIT_TABLE
	if !bytes.Equal(b[:len(want)], want) || !bytes.Equal(b[len(want):], frame) {
		t.Errorf("packet-out\n got %x\nwant %x + frame", b, want)
	}

	b, err = AppendPacketOutResubmit(nil, 16, 0xfeff, Reg{Index: 0, Value: 7, Mask: ^uint32(0)}, 0, frame)
	if err != nil {
		t.Fatal(err)
	}
	wantPrint(t, b, "in_port=65279 actions=set_field:0x7->reg0,resubmit(,0) data_len=46")

	b, err = AppendPacketOutResubmit(nil, 17, 5, Reg{}, 61, frame)
	if err != nil {
		t.Fatal(err)
	}
	wantPrint(t, b, "in_port=5 actions=resubmit(,61) data_len=46")
	if len(b) != 40+len(frame) {
		t.Errorf("without a mark: %d bytes", len(b))
	}
}

func TestPacketOutResubmitErrors(t *testing.T) {
	dst := []byte("prefix")
	for _, r := range []Reg{{Index: 16, Value: 1, Mask: 1}, {Index: 1, Value: 3, Mask: 1}} {
		b, err := AppendPacketOutResubmit(dst, 1, 5, r, 60, udpFrame())
		if err == nil || string(b) != "prefix" {
			t.Errorf("%+v: %q, %v", r, b, err)
		}
	}
	b, err := AppendPacketOutResubmit(nil, 1, 5, mark, 60, make([]byte, MaxResubmitData+10))
	if err != nil || len(b) != MaxMessageLen || binary.BigEndian.Uint16(b[2:]) != MaxMessageLen {
		t.Errorf("long frame: length %d, %v", len(b), err)
	}
	buf := make([]byte, 0, 2048)
	frame := udpFrame()
	if a := testing.AllocsPerRun(100, func() {
		buf, _ = AppendPacketOutResubmit(buf[:0], 1, 5, mark, 60, frame)
	}); a != 0 {
		t.Errorf("AppendPacketOutResubmit allocates %v times", a)
	}
}

func TestGoldenMatchRegAndVLAN(t *testing.T) {
	fm := dnsFlow(false)
	fm.Priority = 101
	fm.Match = interceptMatch()
	fm.MeterID = 7
	b, err := AppendFlowMod(nil, 18, fm)
	if err != nil {
		t.Fatal(err)
	}
	wantPrint(t, b, "ADD table:60 priority=101,udp,reg13=0/0x1,in_port=5,vlan_tci=0x0000/0x1fff,tp_dst=53 cookie:0x444e53 send_flow_rem actions=meter:7,controller(id=53)")

	fm.Match = Match{EthType: 0x86dd, IPProto: 17, UDPDst: 53, Reg: Reg{Index: 15, Value: 0x50, Mask: ^uint32(0)}}
	if b, err = AppendFlowMod(nil, 19, fm); err != nil {
		t.Fatal(err)
	}
	wantPrint(t, b, "priority=101,udp6,reg15=0x50,tp_dst=53")

	for _, r := range []Reg{{Index: 16, Mask: 1}, {Index: 3, Value: 2, Mask: 1}} {
		fm.Match.Reg = r
		if _, err := AppendFlowMod(nil, 20, fm); err == nil {
			t.Errorf("register %+v accepted", r)
		}
	}
}

func TestRoundTripMatchRegAndVLAN(t *testing.T) {
	for _, m := range []Match{
		interceptMatch(),
		{Untagged: true},
		{Reg: Reg{Index: 0, Value: 0x80000000, Mask: 0xc0000000}},
		{InPort: 3, Reg: Reg{Index: 15, Value: 9, Mask: ^uint32(0)}},
	} {
		b := appendMatch(nil, &m)
		var got Match
		n, err := parseMatch(b, &got)
		if err != nil || n != len(b) || got != m {
			t.Errorf("%+v: got %+v, %d, %v", m, got, n, err)
		}
	}
}

func TestParseMatchForeignFields(t *testing.T) {
	for _, tc := range []struct {
		name, oxm string
		want      Match
	}{
		{"tagged", "80000c02" + "1005", Match{}},
		{"any tag", "80000d04" + "10001000", Match{}},
		{"register 16", "00012004" + "00000001", Match{}},
		{"short register", "00011a02" + "0001", Match{}},
		{"value outside mask", "00011b08" + "00000003" + "00000001", Match{Reg: Reg{Index: 13, Value: 1, Mask: 1}}},
		{"last register", "00010804" + "00000007" + "00011b08" + "00000000" + "00000001", Match{Reg: Reg{Index: 13, Mask: 1}}},
		{"untagged", "80000c02" + "0000", Match{Untagged: true}},
	} {
		raw, err := hex.DecodeString(tc.oxm)
		if err != nil {
			t.Fatal(err)
		}
		b := []byte{0, matchTypeOXM, 0, byte(4 + len(raw))}
		b = append(b, raw...)
		b = append(b, make([]byte, pad8(len(b)))...)
		var got Match
		if _, err := parseMatch(b, &got); err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}
