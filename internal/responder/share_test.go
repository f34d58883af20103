package responder

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
)

// holding returns a handler that blocks every query until release is
// closed, announcing each on started, then answers it.
func holding(started chan<- string, release <-chan struct{}) resolver.HandlerFunc {
	answer := answering(1)
	return func(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
		started <- string(r.Query.Name)
		<-release
		return answer(ctx, r, dst)
	}
}

// ask sends r one A query for name from OpenFlow port port.
func ask(t *testing.T, r *Responder, port uint32, name string) {
	t.Helper()
	r.HandlePacketIn(port, requestFrame(t, vm4, service4, query(t, name, dns.TypeA, 0)))
}

// TestPortShare: a port with its share of slots in use is refused at once
// and counted; another port still gets a slot; the slots come back when
// the queries end.
func TestPortShare(t *testing.T) {
	s := newSender()
	started, release := make(chan string, 10), make(chan struct{})
	r := New(Config{Services: []netip.AddrPort{service4}, Handler: holding(started, release), Out: s,
		MaxInflight: 10, MaxInflightPerPort: 2, MaxUDPSize: 1232, MTU: 1500})
	ask(t, r, 1, "one.")
	ask(t, r, 1, "two.")
	<-started
	<-started
	ask(t, r, 1, "three.")
	if p := s.next(t); p.msg.Rcode != dns.RcodeRefused || p.msg.Question[0].Name != "three." || p.inPort != 1 {
		t.Fatalf("over the port's share: %v", p.msg)
	}
	ask(t, r, 2, "other-port.")
	if name := <-started; name != "\x0aother-port\x00" {
		t.Fatalf("started %q, want the other port's query", name)
	}
	if got := [3]int{r.PortInflight(1), r.PortInflight(2), int(r.Inflight())}; got != [3]int{2, 1, 3} {
		t.Fatalf("in flight (port 1, port 2, all) %v, want [2 1 3]", got)
	}
	close(release)
	for range 3 {
		if p := s.next(t); p.msg.Rcode != dns.RcodeSuccess {
			t.Errorf("held query: %v", p.msg)
		}
	}
	waitStat(t, r, "answers", 4)
	if st := r.Stats(); st["refused_port_inflight"] != 1 || st["refused_inflight"] != 0 {
		t.Errorf("stats %v", st)
	}
	// The slots are given back after the answer is sent.
	deadline := time.Now().Add(5 * time.Second)
	for r.Inflight() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if r.PortInflight(1) != 0 || r.PortInflight(2) != 0 {
		t.Errorf("ports still in flight after every answer: %d, %d", r.PortInflight(1), r.PortInflight(2))
	}
}

// TestPortShareWithinTotal: the total bound still holds when no port is
// over its share, and a query refused by it does not keep its port's slot.
func TestPortShareWithinTotal(t *testing.T) {
	s := newSender()
	started, release := make(chan string, 10), make(chan struct{})
	defer close(release)
	r := New(Config{Services: []netip.AddrPort{service4}, Handler: holding(started, release), Out: s,
		MaxInflight: 2, MaxInflightPerPort: 2, MaxUDPSize: 1232, MTU: 1500})
	ask(t, r, 1, "one.")
	ask(t, r, 1, "two.")
	<-started
	<-started
	ask(t, r, 2, "three.")
	if p := s.next(t); p.msg.Rcode != dns.RcodeRefused || p.inPort != 2 {
		t.Fatalf("over the total: %v", p.msg)
	}
	if st := r.Stats(); st["refused_inflight"] != 1 || st["refused_port_inflight"] != 0 {
		t.Errorf("stats %v", st)
	}
	if n := r.PortInflight(2); n != 0 {
		t.Errorf("port 2 keeps %d slots after its refusal", n)
	}
}

// TestPortShareReservedPorts: the reserved OpenFlow ports (LOCAL and the
// like) share one counter, away from the VM ports; without a share no
// counter is kept.
func TestPortShareReservedPorts(t *testing.T) {
	if portSlot(0xfffffffe) != portSlot(0xff00) || portSlot(0xfffffffe) == portSlot(1) || portSlot(0xfeff) != 0xfeff {
		t.Errorf("slots: LOCAL %d, 0xff00 %d, 1 %d, 0xfeff %d", portSlot(0xfffffffe), portSlot(0xff00), portSlot(1), portSlot(0xfeff))
	}
	s := newSender()
	started, release := make(chan string, 10), make(chan struct{})
	defer close(release)
	r := New(Config{Services: []netip.AddrPort{service4}, Handler: holding(started, release), Out: s,
		MaxInflight: 10, MaxInflightPerPort: 1, MaxUDPSize: 1232, MTU: 1500})
	ask(t, r, 0xfffffffe, "local.")
	<-started
	ask(t, r, 0xff00, "reserved.")
	if p := s.next(t); p.msg.Rcode != dns.RcodeRefused || p.inPort != 0xff00 {
		t.Fatalf("second reserved port: %v", p.msg)
	}
	if got := New(Config{MaxInflight: 1}).PortInflight(1); got != 0 || New(Config{MaxInflight: 1}).portInflight != nil {
		t.Errorf("without a share: %d in flight, table kept", got)
	}
}

// raceEnabled is set when the tests run with the race detector.
var raceEnabled bool

// discard is a Sender that drops every frame.
type discard struct{}

func (discard) PacketOut(uint32, []byte) error { return nil }

// TestPortShareRefusalAllocates: refusing a query over its port's share,
// on the OpenFlow read loop, allocates nothing.
func TestPortShareRefusalAllocates(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool allocate")
	}
	started, release := make(chan string, 1), make(chan struct{})
	defer close(release)
	r := New(Config{Services: []netip.AddrPort{service4}, Handler: holding(started, release), Out: discard{},
		MaxInflight: 10, MaxInflightPerPort: 1, MaxUDPSize: 1232, MTU: 1500})
	frame := requestFrame(t, vm4, service4, query(t, "held.", dns.TypeA, 0))
	r.HandlePacketIn(7, frame)
	<-started
	refused := requestFrame(t, vm4, service4, query(t, "refused.", dns.TypeA, 0))
	r.HandlePacketIn(7, refused) // warms the pooled job's buffers
	if n := testing.AllocsPerRun(1000, func() { r.HandlePacketIn(7, refused) }); n != 0 {
		t.Errorf("%v allocations per refused query", n)
	}
	if st := r.Stats(); st["refused_port_inflight"] != 1002 {
		t.Errorf("refused %d, want 1002", st["refused_port_inflight"])
	}
}
