package frame

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/ipv4"
)

var (
	vmMAC  = [6]byte{0xfa, 0x16, 0x3e, 0x01, 0x02, 0x03}
	svcMAC = [6]byte{0xfa, 0x16, 0x3e, 0xaa, 0xbb, 0xcc}
	vm4    = netip.MustParseAddr("10.0.0.5")
	svc4   = netip.MustParseAddr("169.254.169.254")
	vm6    = netip.MustParseAddr("fd00::5")
	svc6   = netip.MustParseAddr("fd00::254")
	dnsMsg = []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01")
)

// refChecksum is a deliberately simple RFC 1071 checksum, independent of
// the package's implementation.
func refChecksum(chunks ...[]byte) uint16 {
	var all []byte
	for _, c := range chunks {
		all = append(all, c...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var sum uint32
	for i := 0; i < len(all); i += 2 {
		sum += uint32(all[i])<<8 | uint32(all[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// ethHeader returns an Ethernet header from the VM to the service MAC with
// the given EtherType and optional (TPID, TCI) tags.
func ethHeader(etherType uint16, tags ...[2]uint16) []byte {
	b := append(svcMAC[:], vmMAC[:]...)
	for _, t := range tags {
		b = binary.BigEndian.AppendUint16(b, t[0])
		b = binary.BigEndian.AppendUint16(b, t[1])
	}
	return binary.BigEndian.AppendUint16(b, etherType)
}

// udpDatagram returns a UDP header (with a garbage checksum, as with TX
// offload) followed by payload.
func udpDatagram(sport, dport uint16, payload []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	b = binary.BigEndian.AppendUint16(b, uint16(8+len(payload)))
	b = binary.BigEndian.AppendUint16(b, 0xdead)
	return append(b, payload...)
}

// ipv4Packet returns an IPv4 packet with the given options and payload.
func ipv4Packet(src, dst netip.Addr, proto byte, options, payload []byte) []byte {
	hl := 20 + len(options)
	b := make([]byte, hl, hl+len(payload))
	b[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(hl+len(payload)))
	binary.BigEndian.PutUint16(b[4:], 0x1234)
	b[8] = 64
	b[9] = proto
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], options)
	return append(b, payload...)
}

// ipv6Packet returns an IPv6 packet with next header next and payload.
func ipv6Packet(src, dst netip.Addr, next byte, payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = next
	b[7] = 255
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(b, payload...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func query4() []byte {
	return cat(ethHeader(0x0800), ipv4Packet(vm4, svc4, 17, nil, udpDatagram(40000, 53, dnsMsg)))
}

func query6() []byte {
	return cat(ethHeader(0x86dd), ipv6Packet(vm6, svc6, 17, udpDatagram(40001, 53, dnsMsg)))
}

// set returns a copy of b with b[off:] overwritten by v.
func set(b []byte, off int, v ...byte) []byte {
	c := bytes.Clone(b)
	copy(c[off:], v)
	return c
}

func TestParseQueryValid(t *testing.T) {
	opts := []byte{0x01, 0x01, 0x01, 0x00} // NOP NOP NOP EOL
	tests := []struct {
		name    string
		frame   []byte
		tagged  bool
		tci     uint16
		src     netip.Addr
		dst     netip.Addr
		sport   uint16
		payload []byte
	}{
		{"ipv4", query4(), false, 0, vm4, svc4, 40000, dnsMsg},
		{"ipv4 padded", append(query4(), make([]byte, 20)...), false, 0, vm4, svc4, 40000, dnsMsg},
		{"ipv4 options", cat(ethHeader(0x0800), ipv4Packet(vm4, svc4, 17, opts, udpDatagram(40000, 53, dnsMsg))), false, 0, vm4, svc4, 40000, dnsMsg},
		{"ipv4 DF", set(query4(), 14+6, 0x40), false, 0, vm4, svc4, 40000, dnsMsg},
		{"ipv4 vlan", cat(ethHeader(0x0800, [2]uint16{0x8100, 0xa00b}), ipv4Packet(vm4, svc4, 17, nil, udpDatagram(40000, 53, dnsMsg))), true, 0xa00b, vm4, svc4, 40000, dnsMsg},
		{"ipv4 empty payload", cat(ethHeader(0x0800), ipv4Packet(vm4, svc4, 17, nil, udpDatagram(1, 53, nil))), false, 0, vm4, svc4, 1, []byte{}},
		{"ipv4 udp shorter than ip payload", set(cat(ethHeader(0x0800), ipv4Packet(vm4, svc4, 17, nil, udpDatagram(40000, 53, dnsMsg))), 14+20+4, 0, 10), false, 0, vm4, svc4, 40000, dnsMsg[:2]},
		{"ipv6", query6(), false, 0, vm6, svc6, 40001, dnsMsg},
		{"ipv6 padded vlan", append(cat(ethHeader(0x86dd, [2]uint16{0x8100, 0x0064}), ipv6Packet(vm6, svc6, 17, udpDatagram(40001, 53, dnsMsg))), 0, 0, 0, 0), true, 0x0064, vm6, svc6, 40001, dnsMsg},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := Query{InPort: 7, Tagged: true, TCI: 99}
			if err := ParseQuery(tt.frame, &q); err != nil {
				t.Fatalf("ParseQuery: %v", err)
			}
			if q.InPort != 7 {
				t.Errorf("InPort changed to %d", q.InPort)
			}
			if q.SrcMAC != vmMAC || q.DstMAC != svcMAC {
				t.Errorf("MACs %x %x", q.SrcMAC, q.DstMAC)
			}
			if q.Tagged != tt.tagged || q.TCI != tt.tci {
				t.Errorf("tag %v %#x, want %v %#x", q.Tagged, q.TCI, tt.tagged, tt.tci)
			}
			if q.Src != tt.src || q.Dst != tt.dst {
				t.Errorf("addresses %v -> %v", q.Src, q.Dst)
			}
			if q.SrcPort != tt.sport || q.DstPort != 53 {
				t.Errorf("ports %d -> %d", q.SrcPort, q.DstPort)
			}
			if !bytes.Equal(q.Payload, tt.payload) {
				t.Errorf("payload %x, want %x", q.Payload, tt.payload)
			}
		})
	}
}

func TestParseQueryErrors(t *testing.T) {
	q4, q6 := query4(), query6()
	tagged := cat(ethHeader(0x0800, [2]uint16{0x8100, 5}), ipv4Packet(vm4, svc4, 17, nil, udpDatagram(40000, 53, dnsMsg)))
	tests := []struct {
		name   string
		frame  []byte
		err    error
		reason string
	}{
		{"empty", nil, ErrTruncated, "truncated"},
		{"short ethernet", q4[:13], ErrTruncated, "truncated"},
		{"short vlan", tagged[:16], ErrTruncated, "truncated"},
		{"qinq", cat(ethHeader(0x0800, [2]uint16{0x88a8, 5}, [2]uint16{0x8100, 6}), ipv4Packet(vm4, svc4, 17, nil, udpDatagram(1, 53, dnsMsg))), ErrVLANStacked, "vlan_stacked"},
		{"double 802.1Q", cat(ethHeader(0x0800, [2]uint16{0x8100, 5}, [2]uint16{0x8100, 6}), ipv4Packet(vm4, svc4, 17, nil, udpDatagram(1, 53, dnsMsg))), ErrVLANStacked, "vlan_stacked"},
		{"vlan then qinq", cat(ethHeader(0x0800, [2]uint16{0x8100, 5}, [2]uint16{0x88a8, 6}), ipv4Packet(vm4, svc4, 17, nil, udpDatagram(1, 53, dnsMsg))), ErrVLANStacked, "vlan_stacked"},
		{"arp", set(q4, 12, 0x08, 0x06), ErrNotIP, "not_ip"},
		{"short ipv4", q4[:14+19], ErrTruncated, "truncated"},
		{"ipv4 version 6", set(q4, 14, 0x65), ErrIPVersion, "bad_ip_version"},
		{"ipv4 ihl 4", set(q4, 14, 0x44), ErrIPHeader, "bad_ip_header"},
		{"ipv4 ihl beyond frame", set(q4, 14, 0x4f)[:14+40], ErrIPHeader, "bad_ip_header"},
		{"ipv4 total below ihl", set(q4, 16, 0, 19), ErrIPLength, "bad_ip_length"},
		{"ipv4 total beyond frame", set(q4, 16, 0xff, 0xff), ErrIPLength, "bad_ip_length"},
		{"ipv4 more fragments", set(q4, 20, 0x20, 0x00), ErrFragment, "fragment"},
		{"ipv4 last fragment", set(q4, 20, 0x00, 0x10), ErrFragment, "fragment"},
		{"ipv4 tcp", set(q4, 23, 6), ErrNotUDP, "not_udp"},
		{"ipv4 udp header cut by total length", set(q4, 16, 0, 27), ErrTruncated, "truncated"},
		{"udp length 7", set(q4, 14+20+4, 0, 7), ErrUDPLength, "bad_udp_length"},
		{"udp length beyond ip", set(q4, 14+20+4, 0, byte(8+len(dnsMsg)+1)), ErrUDPLength, "bad_udp_length"},
		{"udp length into padding", append(set(q4, 14+20+4, 0, byte(8+len(dnsMsg)+2)), 0, 0), ErrUDPLength, "bad_udp_length"},
		{"short ipv6", q6[:14+39], ErrTruncated, "truncated"},
		{"ipv6 version 4", set(q6, 14, 0x40), ErrIPVersion, "bad_ip_version"},
		{"ipv6 payload beyond frame", set(q6, 18, 0x01, 0x00), ErrIPLength, "bad_ip_length"},
		{"ipv6 hop-by-hop", set(q6, 20, 0), ErrIPv6ExtHeader, "ipv6_ext_header"},
		{"ipv6 routing", set(q6, 20, 43), ErrIPv6ExtHeader, "ipv6_ext_header"},
		{"ipv6 dest options", set(q6, 20, 60), ErrIPv6ExtHeader, "ipv6_ext_header"},
		{"ipv6 fragment", set(q6, 20, 44), ErrFragment, "fragment"},
		{"ipv6 icmp", set(q6, 20, 58), ErrNotUDP, "not_udp"},
		{"ipv6 zero payload length", set(q6, 18, 0, 0), ErrTruncated, "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q Query
			err := ParseQuery(tt.frame, &q)
			if err != tt.err {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if got := Reason(err); got != tt.reason {
				t.Errorf("Reason %q, want %q", got, tt.reason)
			}
		})
	}
}

func TestReason(t *testing.T) {
	if got := Reason(nil); got != "" {
		t.Errorf("Reason(nil) = %q", got)
	}
	if got := Reason(net.ErrClosed); got != "other" {
		t.Errorf("Reason(foreign) = %q", got)
	}
	seen := map[string]bool{}
	for _, err := range []error{ErrTruncated, ErrVLANStacked, ErrNotIP, ErrIPVersion, ErrIPHeader, ErrIPLength, ErrFragment, ErrIPv6ExtHeader, ErrNotUDP, ErrUDPLength} {
		r := Reason(err)
		if err.Error() != "frame: "+r {
			t.Errorf("Error() = %q", err.Error())
		}
		if r == "" || r == "other" || seen[r] {
			t.Errorf("bad or duplicate reason %q for %v", r, err)
		}
		seen[r] = true
	}
}

func TestMaxPayload(t *testing.T) {
	tests := []struct {
		src, dst netip.Addr
		mtu      int
		want     int
	}{
		{vm4, svc4, 1500, 1472},
		{vm6, svc6, 1500, 1452},
		{vm4, svc4, 1450, 1422},
		{vm6, svc6, 1280, 1232},
		{vm4, svc6, 1500, 1452},
		{vm4, svc4, 10, 0},
		{netip.Addr{}, netip.Addr{}, 1500, 1452},
	}
	for _, tt := range tests {
		q := Query{Src: tt.src, Dst: tt.dst}
		if got := MaxPayload(&q, tt.mtu); got != tt.want {
			t.Errorf("MaxPayload(%v->%v, %d) = %d, want %d", tt.src, tt.dst, tt.mtu, got, tt.want)
		}
	}
}

// checkReply verifies the frame built by AppendReply(q, msg) field by
// field, recomputing both checksums independently.
func checkReply(t *testing.T, q *Query, msg, b []byte) {
	t.Helper()
	if !bytes.Equal(b[0:6], q.SrcMAC[:]) || !bytes.Equal(b[6:12], q.DstMAC[:]) {
		t.Fatalf("MACs %x", b[:12])
	}
	off := 12
	if q.Tagged {
		if binary.BigEndian.Uint16(b[12:]) != 0x8100 || binary.BigEndian.Uint16(b[14:]) != q.TCI {
			t.Fatalf("tag %x", b[12:16])
		}
		off += 4
	}
	etherType := binary.BigEndian.Uint16(b[off:])
	off += 2
	ip := b[off:]
	var udp, pseudo []byte
	if q.Src.Is4() && q.Dst.Is4() {
		if etherType != 0x0800 {
			t.Fatalf("EtherType %#x", etherType)
		}
		h, err := ipv4.ParseHeader(ip)
		if err != nil {
			t.Fatalf("ipv4.ParseHeader: %v", err)
		}
		if h.Version != 4 || h.Len != 20 || h.TOS != 0 || h.TotalLen != 28+len(msg) || h.ID != 0 ||
			h.Flags != ipv4.DontFragment || h.FragOff != 0 || h.TTL != 64 || h.Protocol != 17 {
			t.Errorf("IPv4 header %+v", h)
		}
		if !h.Src.Equal(q.Dst.AsSlice()) || !h.Dst.Equal(q.Src.AsSlice()) {
			t.Errorf("IPv4 addresses %v -> %v", h.Src, h.Dst)
		}
		if refChecksum(ip[:20]) != 0 {
			t.Errorf("IPv4 header checksum %#04x wrong", h.Checksum)
		}
		if len(ip) != 28+len(msg) {
			t.Fatalf("IPv4 packet %d bytes, want %d", len(ip), 28+len(msg))
		}
		udp = ip[20:]
		pseudo = cat(ip[12:20], []byte{0, 17}, binary.BigEndian.AppendUint16(nil, uint16(len(udp))))
	} else {
		if etherType != 0x86dd {
			t.Fatalf("EtherType %#x", etherType)
		}
		if binary.BigEndian.Uint32(ip) != 0x60000000 || ip[6] != 17 || ip[7] != 64 ||
			int(binary.BigEndian.Uint16(ip[4:])) != 8+len(msg) || len(ip) != 48+len(msg) {
			t.Fatalf("IPv6 header %x", ip[:40])
		}
		src, dst := q.Dst.As16(), q.Src.As16()
		if !bytes.Equal(ip[8:24], src[:]) || !bytes.Equal(ip[24:40], dst[:]) {
			t.Errorf("IPv6 addresses %x", ip[8:40])
		}
		udp = ip[40:]
		pseudo = cat(ip[8:40], binary.BigEndian.AppendUint32(nil, uint32(len(udp))), []byte{0, 0, 0, 17})
	}
	if binary.BigEndian.Uint16(udp) != q.DstPort || binary.BigEndian.Uint16(udp[2:]) != q.SrcPort ||
		int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		t.Errorf("UDP header %x", udp[:8])
	}
	if !bytes.Equal(udp[8:], msg) {
		t.Errorf("payload differs")
	}
	stored := binary.BigEndian.Uint16(udp[6:])
	if stored == 0 {
		t.Errorf("UDP checksum 0 (none) sent")
	}
	if refChecksum(pseudo, udp) != 0 {
		zeroed := set(udp, 6, 0, 0)
		t.Errorf("UDP checksum %#04x, want %#04x", stored, refChecksum(pseudo, zeroed))
	}
}

func TestAppendReply(t *testing.T) {
	big := bytes.Repeat([]byte{0xab, 0xcd, 0xef}, 500)
	tests := []struct {
		name  string
		frame []byte
		msg   []byte
	}{
		{"ipv4", query4(), dnsMsg},
		{"ipv4 options", cat(ethHeader(0x0800), ipv4Packet(vm4, svc4, 17, []byte{1, 1, 1, 0}, udpDatagram(40000, 53, dnsMsg))), dnsMsg},
		{"ipv4 vlan", cat(ethHeader(0x0800, [2]uint16{0x8100, 0xe123}), ipv4Packet(vm4, svc4, 17, nil, udpDatagram(40000, 53, dnsMsg))), dnsMsg},
		{"ipv4 odd big", query4(), big[:1471]},
		{"ipv4 empty", query4(), nil},
		{"ipv6", query6(), dnsMsg},
		{"ipv6 vlan odd", cat(ethHeader(0x86dd, [2]uint16{0x8100, 0x0fff}), ipv6Packet(vm6, svc6, 17, udpDatagram(40001, 53, dnsMsg))), big[:1451]},
		{"ipv6 4in6", cat(ethHeader(0x86dd), ipv6Packet(netip.MustParseAddr("::ffff:10.0.0.5"), svc6, 17, udpDatagram(40001, 53, dnsMsg))), dnsMsg},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q Query
			if err := ParseQuery(tt.frame, &q); err != nil {
				t.Fatal(err)
			}
			prefix := []byte("prefix")
			out := AppendReply(bytes.Clone(prefix), &q, tt.msg)
			if !bytes.HasPrefix(out, prefix) {
				t.Fatal("prefix lost")
			}
			b := out[len(prefix):]
			checkReply(t, &q, tt.msg, b)
			var r Query
			if err := ParseQuery(b, &r); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			if r.SrcMAC != q.DstMAC || r.DstMAC != q.SrcMAC || r.Src != q.Dst || r.Dst != q.Src ||
				r.SrcPort != q.DstPort || r.DstPort != q.SrcPort || r.Tagged != q.Tagged || r.TCI != q.TCI ||
				!bytes.Equal(r.Payload, tt.msg) {
				t.Errorf("round trip %+v from %+v", r, q)
			}
		})
	}
}

// TestAppendReplyChecksumZero finds a payload whose UDP checksum computes
// to 0 and checks that 0xffff is sent instead.
func TestAppendReplyChecksumZero(t *testing.T) {
	for _, frame := range [][]byte{query4(), query6()} {
		var q Query
		if err := ParseQuery(frame, &q); err != nil {
			t.Fatal(err)
		}
		msg := []byte{0, 0}
		out := AppendReply(nil, &q, msg)
		udp := out[len(out)-10:]
		// Choosing the payload word as the current checksum makes the
		// ones' complement sum 0xffff, so the checksum computes to 0.
		copy(msg, udp[6:8])
		out = AppendReply(nil, &q, msg)
		udp = out[len(out)-10:]
		if got := binary.BigEndian.Uint16(udp[6:]); got != 0xffff {
			t.Errorf("checksum field %#04x, want 0xffff", got)
		}
		checkReply(t, &q, msg, out)
	}
}

func TestAppendReplyTooBig(t *testing.T) {
	var q Query
	if err := ParseQuery(query4(), &q); err != nil {
		t.Fatal(err)
	}
	dst := []byte{1, 2, 3}
	if out := AppendReply(dst, &q, make([]byte, 65508)); !bytes.Equal(out, dst) {
		t.Errorf("oversized IPv4 message appended %d bytes", len(out)-len(dst))
	}
	out := AppendReply(nil, &q, make([]byte, 65507))
	checkReply(t, &q, make([]byte, 65507), out)
	q6 := Query{Src: vm6, Dst: svc6}
	if out := AppendReply(dst, &q6, make([]byte, 65528)); !bytes.Equal(out, dst) {
		t.Errorf("oversized IPv6 message appended %d bytes", len(out)-len(dst))
	}
	out = AppendReply(nil, &q6, make([]byte, 65527))
	checkReply(t, &q6, make([]byte, 65527), out)
}

func TestAppendReplyZeroQuery(t *testing.T) {
	var q Query
	out := AppendReply(nil, &q, dnsMsg)
	checkReply(t, &q, dnsMsg, out)
}

func TestAllocs(t *testing.T) {
	frames := [][]byte{query4(), query6()}
	var q Query
	buf := make([]byte, 0, 2048)
	for _, f := range frames {
		if n := testing.AllocsPerRun(100, func() {
			if err := ParseQuery(f, &q); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("ParseQuery allocates %v times", n)
		}
		if n := testing.AllocsPerRun(100, func() { _ = ParseQuery(f[:30], &q) }); n != 0 {
			t.Errorf("failing ParseQuery allocates %v times", n)
		}
		if n := testing.AllocsPerRun(100, func() { buf = AppendReply(buf[:0], &q, q.Payload) }); n != 0 {
			t.Errorf("AppendReply allocates %v times", n)
		}
	}
}

func FuzzParseQuery(f *testing.F) {
	f.Add(query4())
	f.Add(query6())
	f.Add(cat(ethHeader(0x0800, [2]uint16{0x8100, 0xa00b}), ipv4Packet(vm4, svc4, 17, []byte{1, 1, 1, 0}, udpDatagram(40000, 53, dnsMsg))))
	f.Add(cat(ethHeader(0x86dd, [2]uint16{0x8100, 7}), ipv6Packet(vm6, svc6, 17, udpDatagram(1, 53, nil))))
	f.Add(set(query4(), 20, 0x20))
	f.Add(set(query6(), 20, 0))
	f.Fuzz(func(t *testing.T, frame []byte) {
		var q Query
		if err := ParseQuery(frame, &q); err != nil {
			if r := Reason(err); r == "" || r == "other" {
				t.Fatalf("error %v without a reason", err)
			}
			return
		}
		if q.Src.Is4() != q.Dst.Is4() || q.Src.Zone() != "" {
			t.Fatalf("addresses %v %v", q.Src, q.Dst)
		}
		if len(q.Payload) > MaxPayload(&q, 65535+40) {
			t.Fatalf("payload of %d bytes", len(q.Payload))
		}
		reply := AppendReply(nil, &q, q.Payload)
		checkReply(t, &q, q.Payload, reply)
		var r Query
		if err := ParseQuery(reply, &r); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if r.SrcMAC != q.DstMAC || r.DstMAC != q.SrcMAC || r.Src != q.Dst || r.Dst != q.Src ||
			r.SrcPort != q.DstPort || r.DstPort != q.SrcPort || r.Tagged != q.Tagged || r.TCI != q.TCI ||
			!bytes.Equal(r.Payload, q.Payload) {
			t.Fatalf("round trip %+v from %+v", r, q)
		}
	})
}

func BenchmarkParseQuery(b *testing.B) {
	frame := query4()
	var q Query
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if err := ParseQuery(frame, &q); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendReply(b *testing.B) {
	var q Query
	if err := ParseQuery(query4(), &q); err != nil {
		b.Fatal(err)
	}
	msg := bytes.Repeat([]byte{0x5a}, 512)
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		buf = AppendReply(buf[:0], &q, msg)
	}
}

func TestReasons(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		if r == "" || seen[r] {
			t.Errorf("label %q empty or repeated", r)
		}
		seen[r] = true
	}
	if !seen[Reason(ErrNotUDP)] || !seen[Reason(ErrTruncated)] || !seen["other"] {
		t.Errorf("missing labels in %v", Reasons())
	}
}

func TestFixUDPChecksum(t *testing.T) {
	for _, addrs := range [][2]string{{"10.0.0.11", "192.0.2.53"}, {"fd00:10::11", "2001:db8::53"}} {
		orig := Query{SrcMAC: [6]byte{2, 0, 0, 0, 0, 1}, DstMAC: [6]byte{2, 0, 0, 0, 0, 2},
			Src: netip.MustParseAddr(addrs[1]), Dst: netip.MustParseAddr(addrs[0]), SrcPort: 53, DstPort: 40000}
		// A frame from the VM to the resolver, built as a reply of the
		// swapped query, with its checksum then spoiled.
		good := AppendReply(nil, &orig, []byte("some dns payload"))
		bad := append([]byte(nil), good...)
		var q Query
		if err := ParseQuery(bad, &q); err != nil {
			t.Fatal(err)
		}
		udpStart := len(bad) - len(q.Payload) - udpHeaderLen
		bad[udpStart+6], bad[udpStart+7] = 0x12, 0x34
		FixUDPChecksum(bad, &q)
		if !bytes.Equal(bad, good) {
			t.Errorf("%v: fixed frame\n%x\nwant\n%x", addrs, bad, good)
		}
	}
}
