package responder

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/frame"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
)

var (
	vmMAC      = [6]byte{0xfa, 0x16, 0x3e, 0, 0, 1}
	gwMAC      = [6]byte{0xfa, 0x16, 0x3e, 0xff, 0, 1}
	vm4        = netip.MustParseAddr("10.0.0.11")
	vm6        = netip.MustParseAddr("fd00:10::11")
	service4   = netip.MustParseAddrPort("169.254.169.254:53")
	service6   = netip.MustParseAddrPort("[fd00::254]:53")
	otherAddr4 = netip.MustParseAddrPort("10.0.0.1:53")
)

// sent is one packet-out the test sender got.
type sent struct {
	inPort uint32
	q      frame.Query
	msg    *dns.Msg
	size   int
}

// sender records packet-outs, parsing each reply frame.
type sender struct {
	out  chan sent
	fail bool
}

func newSender() *sender { return &sender{out: make(chan sent, 100)} }

func (s *sender) PacketOut(inPort uint32, data []byte) error {
	if s.fail {
		return errors.New("not connected")
	}
	var q frame.Query
	if err := frame.ParseQuery(data, &q); err != nil {
		return err
	}
	m := new(dns.Msg)
	if err := m.Unpack(q.Payload); err != nil {
		return err
	}
	size := len(q.Payload)
	q.Payload = nil
	s.out <- sent{inPort, q, m, size}
	return nil
}

func (s *sender) next(t *testing.T) sent {
	t.Helper()
	select {
	case p := <-s.out:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no packet-out")
		return sent{}
	}
}

// requestFrame builds the frame a VM sends to service with msg as payload.
func requestFrame(t *testing.T, vm netip.Addr, service netip.AddrPort, msg []byte) []byte {
	t.Helper()
	// A reply from the service to the VM is a request with roles swapped.
	q := frame.Query{SrcMAC: gwMAC, DstMAC: vmMAC, Src: service.Addr(), Dst: vm, SrcPort: service.Port(), DstPort: 40000}
	return frame.AppendReply(nil, &q, msg)
}

func query(t *testing.T, name string, qtype uint16, edns uint16) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0xbeef
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// answering returns a handler answering every query with n A records.
func answering(n int) resolver.HandlerFunc {
	return func(_ context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
		req := new(dns.Msg)
		if err := req.Unpack(r.Msg); err != nil {
			return nil, err
		}
		m := new(dns.Msg)
		m.SetReply(req)
		m.Compress = true
		for i := 0; i < n; i++ {
			rr, _ := dns.NewRR(req.Question[0].Name + " 60 IN A 192.0.2.1")
			rr.(*dns.A).A[3] = byte(i)
			m.Answer = append(m.Answer, rr)
		}
		return m.PackBuffer(dst)
	}
}

func newResponder(h resolver.Handler, out Sender) *Responder {
	return New(Config{
		Services: []netip.AddrPort{service4, service6}, Handler: h, Out: out,
		MaxInflight: 10, MaxUDPSize: 1232, MTU: 1500, Deadline: time.Second,
	})
}

func TestAnswer(t *testing.T) {
	for _, c := range []struct {
		vm      netip.Addr
		service netip.AddrPort
	}{{vm4, service4}, {vm6, service6}} {
		s := newSender()
		r := newResponder(answering(1), s)
		data := requestFrame(t, c.vm, c.service, query(t, "www.example.test.", dns.TypeA, 0))
		r.HandlePacketIn(7, data)
		clear(data) // the read loop reuses its buffer
		p := s.next(t)
		if p.inPort != 7 || p.q.Src != c.service.Addr() || p.q.Dst != c.vm || p.q.SrcPort != 53 || p.q.DstPort != 40000 ||
			p.q.SrcMAC != gwMAC || p.q.DstMAC != vmMAC {
			t.Errorf("%v: reply addressing %+v port %d", c.vm, p.q, p.inPort)
		}
		if p.msg.Id != 0xbeef || !p.msg.Response || len(p.msg.Answer) != 1 {
			t.Errorf("%v: reply %v", c.vm, p.msg)
		}
		waitStat(t, r, "answers", 1)
		if st := r.Stats(); st["queries"] != 1 {
			t.Errorf("stats %v", st)
		}
	}
}

func TestDrops(t *testing.T) {
	s := newSender()
	r := newResponder(answering(1), s)
	r.HandlePacketIn(1, []byte{1, 2, 3})
	r.HandlePacketIn(1, requestFrame(t, vm4, otherAddr4, query(t, "a.", dns.TypeA, 0)))
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, []byte{1, 2, 3}))
	resp := query(t, "a.", dns.TypeA, 0)
	resp[2] |= 0x80 // QR: a response sent to the service
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, resp))
	st := r.Stats()
	for _, name := range []string{"truncated", reasonNotService, reasonDNSHeader, reasonNotQuery} {
		if st[name] != 1 {
			t.Errorf("%s = %d, want 1 (%v)", name, st[name], st)
		}
	}
	select {
	case p := <-s.out:
		t.Errorf("unexpected packet-out %v", p.msg)
	default:
	}
}

func TestErrorAnswers(t *testing.T) {
	s := newSender()
	failing := resolver.HandlerFunc(func(context.Context, *resolver.Request, []byte) ([]byte, error) {
		return nil, errors.New("all upstreams failed")
	})
	r := newResponder(failing, s)

	bad := query(t, "a.example.", dns.TypeA, 0)
	bad = bad[:len(bad)-3] // cut into the question
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, bad))
	if p := s.next(t); p.msg.Rcode != dns.RcodeFormatError || p.msg.Id != 0xbeef {
		t.Errorf("malformed question: %v", p.msg)
	}
	notify := query(t, "a.example.", dns.TypeSOA, 0)
	notify[2] |= 4 << 3 // opcode NOTIFY
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, notify))
	if p := s.next(t); p.msg.Rcode != dns.RcodeNotImplemented {
		t.Errorf("NOTIFY: %v", p.msg)
	}
	v1 := query(t, "a.example.", dns.TypeA, 1232)
	v1[len(v1)-5] = 1 // the OPT record's EDNS version (it ends the message)
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, v1))
	if p := s.next(t); p.msg.Rcode != dns.RcodeBadVers || p.msg.IsEdns0() == nil || p.msg.IsEdns0().Version() != 0 {
		t.Errorf("EDNS version 1: %v", p.msg) // the handler, never asked, would fail
	}
	r.HandlePacketIn(1, requestFrame(t, vm6, service6, query(t, "a.example.", dns.TypeA, 1232)))
	p := s.next(t)
	if p.msg.Rcode != dns.RcodeServerFailure || len(p.msg.Question) != 1 || p.msg.IsEdns0() == nil {
		t.Errorf("handler error: %v", p.msg)
	}
	waitStat(t, r, "answers", 4)
	if st := r.Stats(); st["formerr"] != 1 || st["notimp"] != 1 || st["badvers"] != 1 || st["servfail"] != 1 {
		t.Errorf("stats %v", st)
	}
}

func TestInflightLimit(t *testing.T) {
	s := newSender()
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	blocking := resolver.HandlerFunc(func(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
		started <- struct{}{}
		<-release
		return answering(1)(ctx, r, dst)
	})
	r := New(Config{Services: []netip.AddrPort{service4}, Handler: blocking, Out: s, MaxInflight: 1, MaxUDPSize: 1232, MTU: 1500})
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, query(t, "one.", dns.TypeA, 0)))
	<-started
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, query(t, "two.", dns.TypeA, 0)))
	if p := s.next(t); p.msg.Rcode != dns.RcodeRefused || p.msg.Question[0].Name != "two." {
		t.Errorf("over the limit: %v", p.msg)
	}
	close(release)
	if p := s.next(t); p.msg.Rcode != dns.RcodeSuccess || p.msg.Question[0].Name != "one." {
		t.Errorf("first query: %v", p.msg)
	}
	if st := r.Stats(); st["refused_inflight"] != 1 {
		t.Errorf("stats %v", st)
	}
}

func TestFitsClient(t *testing.T) {
	cases := []struct {
		name    string
		edns    uint16
		mtu     int
		service netip.AddrPort
		vm      netip.Addr
		limit   int
		tc      bool
	}{
		{"no EDNS", 0, 1500, service4, vm4, 512, true},
		{"EDNS 1232", 1232, 1500, service4, vm4, 1232, false},
		{"EDNS 4096 capped by max_udp_size", 4096, 9000, service6, vm6, 1232, false},
		{"MTU 1280 over IPv6", 1232, 1280, service6, vm6, 1232, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSender()
			// 60 A records: about 1000 bytes.
			r := New(Config{Services: []netip.AddrPort{c.service}, Handler: answering(60), Out: s,
				MaxInflight: 10, MaxUDPSize: 1232, MTU: c.mtu})
			r.HandlePacketIn(1, requestFrame(t, c.vm, c.service, query(t, "big.example.", dns.TypeA, c.edns)))
			p := s.next(t)
			if p.size > c.limit || p.msg.Truncated != c.tc {
				t.Errorf("size %d (limit %d), TC %v (want %v)", p.size, c.limit, p.msg.Truncated, c.tc)
			}
			if c.tc && (len(p.msg.Answer) == 0 || len(p.msg.Answer) == 60) {
				t.Errorf("truncated answer has %d records", len(p.msg.Answer))
			}
		})
	}
	// Over the MTU: a 1400-byte limit on a 4096-byte answer.
	s := newSender()
	r := New(Config{Services: []netip.AddrPort{service4}, Handler: answering(250), Out: s, MaxInflight: 10, MaxUDPSize: 4096, MTU: 1428})
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, query(t, "huge.example.", dns.TypeA, 4096)))
	if p := s.next(t); p.size > 1400 || !p.msg.Truncated {
		t.Errorf("over the MTU: size %d, TC %v", p.size, p.msg.Truncated)
	}
}

func TestPacketOutFailureCounted(t *testing.T) {
	s := newSender()
	s.fail = true
	r := newResponder(answering(1), s)
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, query(t, "a.", dns.TypeA, 0)))
	waitStat(t, r, reasonPacketOut, 1)
	deadline := time.Now().Add(5 * time.Second)
	for r.Inflight() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("inflight %d after the query ended", r.Inflight())
		}
		time.Sleep(time.Millisecond)
	}
}

// waitStat waits until counter name reaches want: replies are counted
// after the packet-out returns.
func waitStat(t *testing.T, r *Responder, name string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.Stats()[name] != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: stats %v", name, r.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// denyOdd lets queries from even ports through.
type denyOdd struct{}

func (denyOdd) Allow(key uint32, _ time.Time) bool { return key%2 == 0 }

func TestRateLimited(t *testing.T) {
	s := newSender()
	r := New(Config{Services: []netip.AddrPort{service4}, Handler: answering(1), Out: s,
		MaxInflight: 10, MaxUDPSize: 1232, MTU: 1500, Limiter: denyOdd{}})
	r.HandlePacketIn(3, requestFrame(t, vm4, service4, query(t, "a.", dns.TypeA, 0)))
	r.HandlePacketIn(4, requestFrame(t, vm4, service4, query(t, "b.", dns.TypeA, 0)))
	if p := s.next(t); p.inPort != 4 {
		t.Errorf("answer went to port %d", p.inPort)
	}
	if st := r.Stats(); st[reasonRateLimited] != 1 || st["queries"] != 1 {
		t.Errorf("stats %v", st)
	}
}

// TestClientEDNS: the answer's EDNS follows the client, not the upstream.
func TestClientEDNS(t *testing.T) {
	withOPT := resolver.HandlerFunc(func(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
		req := new(dns.Msg)
		if err := req.Unpack(r.Msg); err != nil {
			return nil, err
		}
		m := new(dns.Msg)
		m.SetReply(req)
		m.AuthenticatedData = true
		m.SetEdns0(4096, true) // the upstream's OPT
		return m.PackBuffer(dst)
	})
	for _, edns := range []uint16{0, 1232} {
		s := newSender()
		r := newResponder(withOPT, s)
		r.HandlePacketIn(1, requestFrame(t, vm4, service4, query(t, "a.example.", dns.TypeA, edns)))
		p := s.next(t)
		opt := p.msg.IsEdns0()
		if (opt != nil) != (edns > 0) || p.msg.AuthenticatedData {
			t.Errorf("client EDNS %d: answer OPT %v, AD %v", edns, opt, p.msg.AuthenticatedData)
		}
		if opt != nil && (opt.UDPSize() != 1232 || opt.Do()) {
			t.Errorf("client EDNS %d: OPT %v", edns, opt)
		}
	}
}

// reinjector records re-injected frames.
type reinjector struct{ frames chan []byte }

func (r *reinjector) Reinject(_ uint32, f []byte) error {
	r.frames <- append([]byte(nil), f...)
	return nil
}

var vmPort = PortsFunc(func(ofport uint32) (PortInfo, bool) {
	if ofport != 7 {
		return PortInfo{}, false
	}
	return PortInfo{MAC: vmMAC, Network: "net-a", PortID: "port-1"}, true
})

func TestSpoofedMAC(t *testing.T) {
	s := newSender()
	var seen resolver.Request
	h := resolver.HandlerFunc(func(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
		seen = *r
		return answering(1)(ctx, r, dst)
	})
	r := New(Config{Services: []netip.AddrPort{service4}, Handler: h, Out: s, MaxInflight: 10, MaxUDPSize: 1232, MTU: 1500, Ports: vmPort})
	spoofed := requestFrame(t, vm4, service4, query(t, "a.", dns.TypeA, 0))
	spoofed[11] ^= 1 // Ethernet source: not the port's attached-mac
	r.HandlePacketIn(7, spoofed)
	r.HandlePacketIn(7, requestFrame(t, vm4, service4, query(t, "b.", dns.TypeA, 0)))
	if p := s.next(t); p.msg.Question[0].Name != "b." {
		t.Errorf("answered %v", p.msg.Question)
	}
	if st := r.Stats(); st[reasonSpoofedMAC] != 1 {
		t.Errorf("stats %v", st)
	}
	if seen.Network != "net-a" || seen.PortID != "port-1" || seen.Intercepted {
		t.Errorf("request %+v", seen)
	}
}

func TestAllowedMACs(t *testing.T) {
	pairMAC := [6]byte{0xfa, 0x16, 0x3e, 0xaa, 0, 2}
	ports := PortsFunc(func(ofport uint32) (PortInfo, bool) {
		switch ofport {
		case 7: // allowed address pairs
			return PortInfo{MAC: vmMAC, AllowedMACs: [][6]byte{{0xfa, 0x16, 0x3e, 0xaa, 0, 1}, pairMAC}, Network: "net-a", PortID: "port-1"}, true
		case 8: // port security disabled
			return PortInfo{MAC: vmMAC, AnyMAC: true, Network: "net-b", PortID: "port-2"}, true
		}
		return PortInfo{}, false
	})
	s := newSender()
	networks := make(chan string, 10)
	h := resolver.HandlerFunc(func(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
		networks <- r.Network
		return answering(1)(ctx, r, dst)
	})
	r := New(Config{Services: []netip.AddrPort{service4}, Handler: h, Out: s, MaxInflight: 10, MaxUDPSize: 1232, MTU: 1500, Ports: ports})
	from := func(src [6]byte, name string) []byte {
		f := requestFrame(t, vm4, service4, query(t, name, dns.TypeA, 0))
		copy(f[6:12], src[:])
		return f
	}
	other := [6]byte{0x0e, 1, 2, 3, 4, 5}
	r.HandlePacketIn(7, from(other, "spoofed."))
	r.HandlePacketIn(7, from(pairMAC, "pair."))
	if p := s.next(t); p.msg.Question[0].Name != "pair." || p.q.DstMAC != pairMAC || p.inPort != 7 {
		t.Errorf("answered %v to %x on %d", p.msg.Question, p.q.DstMAC, p.inPort)
	}
	r.HandlePacketIn(7, from(vmMAC, "attached."))
	if p := s.next(t); p.msg.Question[0].Name != "attached." {
		t.Errorf("answered %v", p.msg.Question)
	}
	r.HandlePacketIn(8, from(other, "open."))
	if p := s.next(t); p.msg.Question[0].Name != "open." || p.q.DstMAC != other || p.inPort != 8 {
		t.Errorf("answered %v to %x on %d", p.msg.Question, p.q.DstMAC, p.inPort)
	}
	for _, want := range []string{"net-a", "net-a", "net-b"} {
		if got := <-networks; got != want {
			t.Errorf("network %q, want %q", got, want)
		}
	}
	if st := r.Stats(); st[reasonSpoofedMAC] != 1 || st["answers"] != 3 {
		t.Errorf("stats %v", st)
	}
	info, _ := ports.Port(7)
	allocs := testing.AllocsPerRun(100, func() {
		if !info.accepts(pairMAC) || info.accepts(other) {
			t.Fatal("accepts")
		}
	})
	if allocs != 0 {
		t.Errorf("the MAC check allocates %v times", allocs)
	}
}

func TestIntercept(t *testing.T) {
	outside := netip.MustParseAddrPort("192.0.2.53:53")
	local := resolver.HandlerFunc(func(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
		if !r.Intercepted {
			t.Errorf("request not marked intercepted")
		}
		if string(r.Query.Name[1:6]) == "local" {
			return answering(1)(ctx, r, dst)
		}
		return nil, resolver.ErrNotLocal
	})
	s, ri := newSender(), &reinjector{frames: make(chan []byte, 10)}
	r := New(Config{Services: []netip.AddrPort{service4}, Handler: local, Out: s, MaxInflight: 10, MaxUDPSize: 1232, MTU: 1500,
		Ports: vmPort, InterceptAll: true, Reinject: ri})

	r.HandlePacketIn(7, requestFrame(t, vm4, outside, query(t, "local.cloud.", dns.TypeA, 0)))
	if p := s.next(t); p.q.Src != outside.Addr() || len(p.msg.Answer) != 1 {
		t.Errorf("local answer from %v: %v", p.q.Src, p.msg)
	}
	external := requestFrame(t, vm4, outside, query(t, "www.example.", dns.TypeA, 0))
	want := append([]byte(nil), external...)
	external[len(external)-len(query(t, "www.example.", dns.TypeA, 0))-2] ^= 0xff // spoil the UDP checksum
	r.HandlePacketIn(7, external)
	select {
	case got := <-ri.frames:
		if string(got) != string(want) {
			t.Errorf("re-injected frame changed:\n%x\nwant\n%x", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not re-injected")
	}
	// From a port that is not a known VM port: straight on.
	r.HandlePacketIn(9, requestFrame(t, vm4, outside, query(t, "local.cloud.", dns.TypeA, 0)))
	select {
	case <-ri.frames:
	case <-time.After(5 * time.Second):
		t.Fatal("unknown port's query not re-injected")
	}
	// EDNS version 1, even for a local name: not ours to judge, it goes on.
	v1 := query(t, "local.cloud.", dns.TypeA, 1232)
	v1[len(v1)-5] = 1
	r.HandlePacketIn(7, requestFrame(t, vm4, outside, v1))
	select {
	case <-ri.frames:
	case <-time.After(5 * time.Second):
		t.Fatal("EDNS version 1 query not re-injected")
	}
	waitStat(t, r, "reinjected", 3)
	if st := r.Stats(); st["badvers"] != 0 {
		t.Errorf("stats %v", st)
	}
}

// immediate answers "hit." at once and everything else through ServeDNS.
type immediate struct{ slow atomic.Int32 }

func (h *immediate) ServeImmediate(r *resolver.Request, dst []byte) ([]byte, bool) {
	if string(r.Query.Name) != "\x03hit\x00" {
		return dst, false
	}
	out, err := answering(1)(context.Background(), r, dst)
	return out, err == nil
}

func (h *immediate) ServeDNS(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
	h.slow.Add(1)
	return answering(1)(ctx, r, dst)
}

func TestImmediate(t *testing.T) {
	s, h := newSender(), &immediate{}
	r := New(Config{Services: []netip.AddrPort{service4}, Handler: h, Out: s, MaxInflight: 1, MaxUDPSize: 1232, MTU: 1500})
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, query(t, "hit.", dns.TypeA, 0)))
	// Answered on the calling goroutine: the packet-out is already queued.
	select {
	case p := <-s.out:
		if len(p.msg.Answer) != 1 {
			t.Errorf("answer %v", p.msg)
		}
	default:
		t.Fatal("no immediate answer")
	}
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, query(t, "miss.", dns.TypeA, 0)))
	s.next(t)
	if h.slow.Load() != 1 || r.Inflight() > 1 {
		t.Errorf("slow path calls %d", h.slow.Load())
	}
}

func TestObserve(t *testing.T) {
	type seen struct {
		name   string
		source resolver.Source
		rcode  int
	}
	got := make(chan seen, 4)
	h := resolver.HandlerFunc(func(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
		if string(r.Query.Name) == "\x04fail\x00" {
			return nil, errors.New("upstreams down")
		}
		r.Source = resolver.SourceUpstream
		return answering(1)(ctx, r, dst)
	})
	s := newSender()
	r := New(Config{Services: []netip.AddrPort{service4}, Handler: h, Out: s, MaxInflight: 10, MaxUDPSize: 1232, MTU: 1500,
		Observe: func(r *resolver.Request, rcode int, d time.Duration) {
			if d <= 0 {
				t.Errorf("duration %v", d)
			}
			got <- seen{string(r.Query.Name), r.Source, rcode}
		}})
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, query(t, "ok.", dns.TypeA, 0)))
	if g := <-got; g.source != resolver.SourceUpstream || g.rcode != dns.RcodeSuccess {
		t.Errorf("answer: %+v", g)
	}
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, query(t, "fail.", dns.TypeA, 0)))
	if g := <-got; g.source != resolver.SourceNone || g.rcode != dns.RcodeServerFailure || g.source.String() != "error" {
		t.Errorf("error answer: %+v", g)
	}
}

func TestAAClearedOnForwarded(t *testing.T) {
	for _, local := range []bool{false, true} {
		h := resolver.HandlerFunc(func(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
			req := new(dns.Msg)
			if err := req.Unpack(r.Msg); err != nil {
				return nil, err
			}
			m := new(dns.Msg)
			m.SetReply(req)
			m.Authoritative = true
			if local {
				r.Source = resolver.SourceLocal
			} else {
				r.Source = resolver.SourceUpstream
			}
			return m.PackBuffer(dst)
		})
		s := newSender()
		newResponder(h, s).HandlePacketIn(1, requestFrame(t, vm4, service4, query(t, "a.", dns.TypeA, 0)))
		if p := s.next(t); p.msg.Authoritative != local {
			t.Errorf("local %v: AA %v", local, p.msg.Authoritative)
		}
	}
}

func TestSetDeadline(t *testing.T) {
	gotDeadline := make(chan bool, 2)
	h := resolver.HandlerFunc(func(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
		_, ok := ctx.Deadline()
		gotDeadline <- ok
		return answering(1)(ctx, r, dst)
	})
	s := newSender()
	r := New(Config{Services: []netip.AddrPort{service4}, Handler: h, Out: s, MaxInflight: 10, MaxUDPSize: 1232, MTU: 1500})
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, query(t, "a.", dns.TypeA, 0)))
	s.next(t)
	r.SetDeadline(time.Second)
	r.HandlePacketIn(1, requestFrame(t, vm4, service4, query(t, "b.", dns.TypeA, 0)))
	s.next(t)
	if first, second := <-gotDeadline, <-gotDeadline; first || !second {
		t.Errorf("deadline before and after SetDeadline: %v, %v", first, second)
	}
}
