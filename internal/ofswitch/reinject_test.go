package ofswitch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/openflow"
)

// testMark is the re-injection mark of these tests.
var testMark = openflow.Reg{Index: 13, Value: 1, Mask: 1}

func TestReinject(t *testing.T) {
	f := newFakeSwitch(t)
	s := start(t, f, nil, func(sw *Switch) { sw.cfg.Mark = testMark })
	f.waitConn(t)
	expectHandshake(t, f)
	waitFor(t, "connected", s.sw.Connected)

	frame := bytes.Repeat([]byte{0x5a}, 60)
	if err := s.sw.Reinject(7, frame); err != nil {
		t.Fatal(err)
	}
	if err := s.sw.PacketOut(7, frame); err != nil {
		t.Fatal(err)
	}
	po := f.next(t, openflow.TypePacketOut)
	want, err := openflow.AppendPacketOutResubmit(nil, binary.BigEndian.Uint32(po[4:]), 7, testMark, 60, frame)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(po, want) {
		t.Fatalf("re-injection\n got %x\nwant %x", po, want)
	}
	po = f.next(t, openflow.TypePacketOut)
	if want := openflow.AppendPacketOut(nil, binary.BigEndian.Uint32(po[4:]), openflow.PortController, 7, frame); !bytes.Equal(po, want) {
		t.Fatalf("answer after a re-injection\n got %x\nwant %x", po, want)
	}
	waitFor(t, "packet_outs counted", func() bool { return s.sw.Stats()["packet_outs"] == 2 })
	if err := s.sw.Reinject(7, make([]byte, openflow.MaxResubmitData+1)); !errors.Is(err, ErrFrameTooLong) {
		t.Errorf("long frame: %v", err)
	}
	st := s.sw.Stats()
	if st["reinjects"] != 1 || st["packet_out_errors"] != 1 {
		t.Errorf("stats %v", st)
	}
}

func TestReinjectErrors(t *testing.T) {
	for _, mark := range []openflow.Reg{{}, {Index: 13, Mask: 1}, {Index: 16, Value: 1, Mask: 1}} {
		sw := New(Config{Target: "unix:/nonexistent", TableID: 60, Mark: mark})
		c := &conn{pkts: make(chan *[]byte, 1), done: make(chan struct{})}
		sw.cur.Store(c)
		if err := sw.Reinject(1, []byte{1}); !errors.Is(err, ErrNoMark) {
			t.Errorf("mark %+v: %v", mark, err)
		}
		if len(c.pkts) != 0 || sw.Stats()["packet_out_errors"] != 1 {
			t.Errorf("mark %+v: queued %d, stats %v", mark, len(c.pkts), sw.Stats())
		}
	}
	sw := New(Config{Target: "unix:/nonexistent", TableID: 60, Mark: testMark})
	if err := sw.Reinject(1, []byte{1}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("before connecting: %v", err)
	}
	c := &conn{pkts: make(chan *[]byte, 1), done: make(chan struct{})}
	sw.cur.Store(c)
	if err := sw.Reinject(1, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := sw.Reinject(1, []byte{1}); !errors.Is(err, ErrQueueFull) {
		t.Errorf("full queue: %v", err)
	}
	st := sw.Stats()
	if st["reinjects"] != 1 || st["packet_out_queue_full"] != 1 || st["packet_out_errors"] != 2 {
		t.Errorf("stats %v", st)
	}
	frame := make([]byte, 300)
	sw.bufs.Put(<-c.pkts)
	if a := testing.AllocsPerRun(100, func() {
		if err := sw.Reinject(1, frame); err != nil {
			t.Fatal(err)
		}
		sw.bufs.Put(<-c.pkts)
	}); a != 0 {
		t.Errorf("Reinject allocates %v times", a)
	}
}
