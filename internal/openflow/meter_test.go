package openflow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestGoldenMeterMod(t *testing.T) {
	flags := MeterFlagPktps | MeterFlagBurst | MeterFlagStats
	b := AppendMeterMod(nil, 20, &MeterMod{Command: MeterAdd, Flags: flags, MeterID: 0xd0530001, Rate: 1000, Burst: 100})
	wantPrint(t, b, "OFPT_METER_MOD (OF1.3) (xid=0x14): ADD meter=3495100417 pktps burst stats bands=",
		"type=drop rate=1000 burst_size=100")
	b = AppendMeterMod(nil, 21, &MeterMod{Command: MeterModify, Flags: flags, MeterID: 7, Rate: 20000, Burst: 100})
	wantPrint(t, b, "MOD meter=7 pktps burst stats bands=", "type=drop rate=20000 burst_size=100")
	b = AppendMeterMod(nil, 22, &MeterMod{Command: MeterDelete, MeterID: 7, Rate: 5})
	wantPrint(t, b, "OFPT_METER_MOD (OF1.3) (xid=0x16): DEL meter=7")
	if len(b) != 16 {
		t.Errorf("delete carries a band: %d bytes", len(b))
	}
	b = AppendMeterMod(nil, 23, &MeterMod{Command: MeterDelete, MeterID: MeterAll})
	wantPrint(t, b, "DEL meter=all")
}

func TestGoldenFlowModMeter(t *testing.T) {
	fm := dnsFlow(false)
	fm.MeterID = 0xd0530005
	fm.Priority = 103
	fm.Match.InPort = 5
	b, err := AppendFlowMod(nil, 24, fm)
	if err != nil {
		t.Fatal(err)
	}
	wantPrint(t, b, "ADD table:60 priority=103,udp,in_port=5,nw_dst=169.254.169.254,tp_dst=53 cookie:0x444e53 send_flow_rem actions=meter:3495100421,controller(id=53)")
	fm.MaxLen = 0
	b, err = AppendFlowMod(nil, 25, fm)
	if err != nil {
		t.Fatal(err)
	}
	wantPrint(t, b, "actions=meter:3495100421")
}

func TestGoldenMultipartRequests(t *testing.T) {
	wantPrint(t, AppendMeterStatsRequest(nil, 26, MeterAll), "OFPST_METER request (OF1.3) (xid=0x1a): meter=all")
	wantPrint(t, AppendMeterStatsRequest(nil, 27, 9), "OFPST_METER request (OF1.3) (xid=0x1b): meter=9")
	wantPrint(t, AppendPortDescRequest(nil, 28), "OFPST_PORT_DESC request (OF1.3) (xid=0x1c): port=ANY")
}

// meterStatsEntry is meter 0xd0530001 with two bands.
const meterStatsEntry = "d0530001" + "0048" + "000000000000" + "00000002" +
	"0000000000001388" + "00000000000186a0" + "00000007" + "00000008" +
	"0000000000000fa0" + "0000000000013880" + "0000000000000001" + "0000000000000002"

func TestParseMeterStatsReply(t *testing.T) {
	other := "00000001" + "0028" + "000000000000" + "00000000" + "0000000000000000" + "0000000000000000" + "00000001" + "00000000"
	msg := msgBytes(t, TypeMultipartReply, 6, "0009"+"0001"+"00000000", meterStatsEntry, other)
	wantPrint(t, msg, "OFPST_METER reply (OF1.3) (xid=0x6): flags=[more]",
		"meter:3495100417 flow_count:2 packet_in_count:5000 byte_in_count:100000 duration:7.000000008s bands:",
		"0: packet_count:4000 byte_count:80000", "1: packet_count:1 byte_count:2",
		"meter:1 flow_count:0")
	got, more, err := ParseMeterStatsReply(msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := MeterStats{MeterID: 0xd0530001, FlowCount: 2, PacketInCount: 5000, ByteInCount: 100000,
		DurationSec: 7, DurationNsec: 8, BandPackets: 4001, BandBytes: 80002}
	if !more || len(got) != 2 || got[0] != want || got[1] != (MeterStats{MeterID: 1, DurationSec: 1}) {
		t.Errorf("got %+v more=%v", got, more)
	}
	for n := 17; n < len(msg); n++ {
		if n == 16+len(meterStatsEntry)/2 {
			continue
		}
		cut := bytes.Clone(msg[:n])
		binary.BigEndian.PutUint16(cut[2:], uint16(n))
		if _, _, err := ParseMeterStatsReply(cut, nil); err == nil {
			t.Errorf("cut to %d: no error", n)
		}
	}
	odd := msgBytes(t, TypeMultipartReply, 6, "0009"+"0000"+"00000000", "00000001"+"0030", "0000000000000000000000000000000000000000000000000000000000000000000000000000")
	if _, _, err := ParseMeterStatsReply(odd, nil); !errors.Is(err, ErrBadLength) {
		t.Errorf("band stats of 8 bytes: %v", err)
	}
	if _, _, err := ParseMeterStatsReply(msgBytes(t, TypeMultipartReply, 6, "0001"+"0000"+"00000000"), nil); !errors.Is(err, ErrType) {
		t.Errorf("FLOW reply: %v", err)
	}
}

// portEntry is port 5, "tap-vm1", fa:16:3e:00:00:01, link down.
const portEntry = "00000005" + "00000000" + "fa163e000001" + "0000" + "7461702d766d31000000000000000000" +
	"00000000" + "00000001" + "00000000" + "00000000" + "00000000" + "00000000" + "00000000" + "00000000"

func TestParsePortDescReply(t *testing.T) {
	local := "fffffffe" + "00000000" + "fa163eff0001" + "0000" + "62722d696e7400000000000000000000" +
		"00000001" + "00000000" + "00000000" + "00000000" + "00000000" + "00000000" + "00000000" + "00000000"
	msg := msgBytes(t, TypeMultipartReply, 8, "000d"+"0000"+"00000000", portEntry, local)
	wantPrint(t, msg, "OFPST_PORT_DESC reply (OF1.3) (xid=0x8):",
		"5(tap-vm1): addr:fa:16:3e:00:00:01", "LOCAL(br-int): addr:fa:16:3e:ff:00:01", "state:      LINK_DOWN", "config:     PORT_DOWN")
	got, more, err := ParsePortDescReply(msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Port{
		{No: 5, HWAddr: [6]byte{0xfa, 0x16, 0x3e, 0, 0, 1}, Name: "tap-vm1", State: 1},
		{No: PortLocal, HWAddr: [6]byte{0xfa, 0x16, 0x3e, 0xff, 0, 1}, Name: "br-int", Config: 1},
	}
	if more || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v more=%v", got, more)
	}
	cut := msgBytes(t, TypeMultipartReply, 8, "000d"+"0000"+"00000000", portEntry[:100])
	if _, _, err := ParsePortDescReply(cut, nil); !errors.Is(err, ErrBadLength) {
		t.Errorf("partial port: %v", err)
	}
}

func TestParsePortStatus(t *testing.T) {
	msg := msgBytes(t, TypePortStatus, 0, "01"+"00000000000000", portEntry)
	wantPrint(t, msg, "OFPT_PORT_STATUS (OF1.3) (xid=0x0): DEL: 5(tap-vm1): addr:fa:16:3e:00:00:01")
	ps, err := ParsePortStatus(msg)
	if err != nil {
		t.Fatal(err)
	}
	if ps.Reason != PortDeleted || ps.Port.No != 5 || ps.Port.Name != "tap-vm1" {
		t.Errorf("%+v", ps)
	}
	if _, err := ParsePortStatus(msg[:len(msg)-1]); err == nil {
		t.Error("truncated port status: no error")
	}
	short := bytes.Clone(msg[:40])
	binary.BigEndian.PutUint16(short[2:], 40)
	if _, err := ParsePortStatus(short); !errors.Is(err, ErrTruncated) {
		t.Errorf("short port status: %v", err)
	}
}
