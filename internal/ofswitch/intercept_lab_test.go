package ofswitch

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/frame"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/openflow"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/pipeline"
)

// interceptor answers queries to the service addresses with an empty
// NOERROR answer and re-injects every other captured frame (a malformed
// query to a service address too, as the daemon in intercept mode does),
// counting both.
type interceptor struct {
	sw       *Switch
	services []netip.Addr
	// limit caps the re-injections of one frame (0: no cap), so a test
	// with a mark that does not work ends its loop.
	limit int

	mu        sync.Mutex
	buf, msg  []byte
	served    int
	captured  map[string]int // intercepted packet-ins by the frame's bytes
	reinjects int
	errs      []error
}

func (r *interceptor) packetIn(inPort uint32, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var q frame.Query
	if err := frame.ParseQuery(data, &q); err != nil {
		r.errs = append(r.errs, fmt.Errorf("packet-in from %d: %w", inPort, err))
		return
	}
	for _, svc := range r.services {
		var dq dnswire.Query
		if q.Dst == svc && dnswire.ParseQuery(q.Payload, &dq) == nil {
			r.served++
			r.msg = dnswire.AppendError(r.msg[:0], q.Payload, &dq, 0)
			r.buf = frame.AppendReply(r.buf[:0], &q, r.msg)
			if err := r.sw.PacketOut(inPort, r.buf); err != nil {
				r.errs = append(r.errs, err)
			}
			return
		}
	}
	r.captured[string(data)]++
	if r.limit > 0 && r.captured[string(data)] > r.limit {
		return
	}
	if err := r.sw.Reinject(inPort, data); err != nil {
		r.errs = append(r.errs, err)
		return
	}
	r.reinjects++
}

// counts returns the service queries answered, the intercepted packet-ins,
// the distinct frames among them and the re-injections.
func (r *interceptor) counts() (served, captured, frames, reinjects int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.captured {
		captured += n
	}
	return r.served, captured, len(r.captured), r.reinjects
}

// outsideResolver is a DNS server on the gateway's port 53 (the address a
// VM sends its queries to instead of the service address): it answers
// www.example.test with 192.0.2.10 and 2001:db8::10 and counts queries.
type outsideResolver struct {
	servers []*dns.Server
	queries atomic.Int64
}

func startOutsideResolver(t *testing.T, l *lab.Lab) *outsideResolver {
	t.Helper()
	o := &outsideResolver{}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		o.queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		if len(req.Question) == 1 && strings.EqualFold(req.Question[0].Name, "www.example.test.") {
			switch req.Question[0].Qtype {
			case dns.TypeA:
				rr, _ := dns.NewRR("www.example.test. 300 IN A 192.0.2.10")
				m.Answer = append(m.Answer, rr)
			case dns.TypeAAAA:
				rr, _ := dns.NewRR("www.example.test. 300 IN AAAA 2001:db8::10")
				m.Answer = append(m.Answer, rr)
			}
		}
		_ = w.WriteMsg(m)
	})
	for _, addr := range []string{netip.AddrPortFrom(l.Gateway4, 53).String(), netip.AddrPortFrom(l.Gateway6, 53).String()} {
		var pc net.PacketConn
		if err := l.InNetNS(func() (err error) {
			pc, err = net.ListenPacket("udp", addr)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		started := make(chan struct{})
		srv := &dns.Server{PacketConn: pc, Handler: handler, NotifyStartedFunc: func() { close(started) }}
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		o.servers = append(o.servers, srv)
	}
	t.Cleanup(func() {
		for _, srv := range o.servers {
			_ = srv.Shutdown()
		}
	})
	return o
}

// declareFor returns a Config.Declare of spec for the State st holds; while
// st (or what it holds) is nil, every port is a VM port and there are no
// neighbours.
func declareFor(spec pipeline.Spec, st *atomic.Pointer[pipeline.State]) func([]uint32) ([]openflow.MeterMod, []openflow.FlowMod) {
	return func(ports []uint32) ([]openflow.MeterMod, []openflow.FlowMod) {
		if st != nil {
			if cur := st.Load(); cur != nil {
				return spec.Declare(ports, *cur)
			}
		}
		return spec.Declare(ports, pipeline.State{VMPorts: ports})
	}
}

// runSwitch runs a Switch for spec, the State st holds (see declareFor)
// and mark against l and returns it with its interceptor; the returned
// stop ends it and returns Run's error.
func runSwitch(t *testing.T, l *lab.Lab, spec pipeline.Spec, st *atomic.Pointer[pipeline.State], mark openflow.Reg, limit int) (*Switch, *interceptor, func() error) {
	t.Helper()
	sw := New(Config{Target: l.MgmtTarget(), ControllerID: spec.ControllerID, Cookie: spec.Cookie, TableID: spec.Table,
		Declare: declareFor(spec, st), OwnsMeter: spec.OwnsMeter, Mark: mark})
	r := &interceptor{sw: sw, limit: limit, captured: make(map[string]int)}
	for _, svc := range spec.Services {
		r.services = append(r.services, svc.Addr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sw.Run(ctx, r.packetIn) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return sw, r, stop
}

// TestRealOVSInterceptAll runs the intercept flows and re-injection on Open
// vSwitch's userspace datapath: a query a VM sends to an outside resolver
// is captured exactly once, re-injected, and answered by that resolver
// through the normal pipeline (whose flows still apply: a "security
// group" drop stops it); queries to the service address stay with the
// service flows; the flows survive the reconcile dumps unchanged; and
// with a mark the flows do not exclude, the same query comes back again
// and again.
func TestRealOVSInterceptAll(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts Open vSwitch in network namespaces")
	}
	if testing.Short() {
		t.Skip("slow: real Open vSwitch")
	}
	l, vm1, vm2 := twoVMLab(t)
	outside := startOutsideResolver(t, l)

	const cookie = 0x444e53
	spec := pipeline.Spec{Table: 60, Priority: 102, Cookie: cookie, ControllerID: 53, InterceptAll: true,
		Services: []netip.AddrPort{netip.MustParseAddrPort("169.254.169.254:53"), netip.MustParseAddrPort("[fd00::254]:53")}}
	sw, r, stop := runSwitch(t, l, spec, nil, pipeline.ReinjectMark(), 0)

	// Per VM port: 2 service flows and 2 intercept flows; 2 generic flows.
	waitFor(t, "intercept flows", func() bool {
		flows, _ := l.DumpFlows(cookie)
		return len(flows) == 10
	})
	flows, err := l.DumpFlows(cookie)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flows:\n%s", strings.Join(flows, "\n"))
	for _, vm := range []*lab.VM{vm1, vm2} {
		for _, proto := range []string{"udp", "udp6"} {
			want := fmt.Sprintf("priority=101,%s,reg13=0/0x1,in_port=%d,vlan_tci=0x0000/0x1fff,tp_dst=53 actions=meter:%d,controller(",
				proto, vm.OFPort, pipeline.PortMeterID(vm.OFPort))
			if !strings.Contains(strings.Join(flows, "\n"), want) {
				t.Errorf("no flow %q", want)
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Waits long enough for a looping packet to come back, then checks
	// the counts against the expected totals.
	check := func(what string, served, captured, reinjects int, queries int64) {
		t.Helper()
		time.Sleep(300 * time.Millisecond)
		s, c, frames, re := r.counts()
		if s != served || c != captured || frames != captured || re != reinjects || outside.queries.Load() != queries {
			t.Errorf("%s: served %d, captured %d (%d distinct frames), reinjected %d, outside resolver got %d; want %d, %d, %d, %d",
				what, s, c, frames, re, outside.queries.Load(), served, captured, reinjects, queries)
		}
	}

	out, err := vm1.Dig(ctx, "+short", "@"+l.Gateway4.String(), "www.example.test", "A")
	if err != nil || strings.TrimSpace(out) != "192.0.2.10" {
		t.Errorf("dig @%s from vm1: %q, %v", l.Gateway4, out, err)
	}
	check("IPv4 query to the outside resolver", 0, 1, 1, 1)

	out, err = vm2.Dig(ctx, "+short", "@"+l.Gateway6.String(), "www.example.test", "AAAA")
	if err != nil || strings.TrimSpace(out) != "2001:db8::10" {
		t.Errorf("dig @%s from vm2: %q, %v", l.Gateway6, out, err)
	}
	check("IPv6 query to the outside resolver", 0, 2, 2, 2)

	out, err = vm1.Dig(ctx, "@169.254.169.254", "www.example.test", "A")
	if err != nil || !strings.Contains(out, "status: NOERROR") {
		t.Errorf("dig @169.254.169.254 from vm1: %q, %v", out, err)
	}
	out, err = vm2.Dig(ctx, "@fd00::254", "www.example.test", "A")
	if err != nil || !strings.Contains(out, "status: NOERROR") {
		t.Errorf("dig @fd00::254 from vm2: %q, %v", out, err)
	}
	check("queries to the service addresses", 2, 2, 2, 2)

	// The re-injected packet goes through the VM's in_port flow, which
	// sets reg5 (the port) before the firewall: a drop there applies.
	const sgCookie = 0x5347
	if _, err := l.Ofctl("add-flow", l.Bridge, fmt.Sprintf("cookie=%#x,table=94,priority=50,reg5=%d,udp,nw_dst=%s,tp_dst=53,actions=drop",
		sgCookie, vm2.OFPort, l.Gateway4)); err != nil {
		t.Fatal(err)
	}
	if out, err := vm2.Dig(ctx, "+short", "@"+l.Gateway4.String(), "www.example.test", "A"); err == nil {
		t.Errorf("dig through the security group's drop answered: %q", out)
	}
	check("query dropped by the security group", 2, 3, 3, 2)
	sg, err := l.Ofctl("dump-flows", l.Bridge, fmt.Sprintf("cookie=%#x/-1", uint64(sgCookie)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sg, "n_packets=1,") {
		t.Errorf("the drop flow did not see the query once:\n%s", sg)
	}
	out, err = vm1.Dig(ctx, "+short", "@"+l.Gateway4.String(), "www.example.test", "A")
	if err != nil || strings.TrimSpace(out) != "192.0.2.10" {
		t.Errorf("dig from vm1 beside vm2's drop: %q, %v", out, err)
	}
	check("vm1 beside vm2's drop", 2, 4, 4, 3)

	// Two reconcile dumps later, the flows read back as declared.
	time.Sleep(2500 * time.Millisecond)
	st := sw.Stats()
	if st["flow_reinstalls"] != 0 || st["stale_flows_removed"] != 0 || st["openflow_errors"] != 0 ||
		st["packet_out_errors"] != 0 || st["reinjects"] != 4 {
		t.Errorf("stats %v", st)
	}
	r.mu.Lock()
	if len(r.errs) != 0 {
		t.Errorf("responder errors: %v", r.errs)
	}
	r.mu.Unlock()
	t.Logf("stats %v", st)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if flows, _ := l.DumpFlows(cookie); len(flows) != 0 {
		t.Errorf("left behind: %v", flows)
	}

	// Control: with a mark the intercept flows do not exclude, the
	// re-injected query is captured again (capped at 3 re-injections).
	_, r, stop = runSwitch(t, l, spec, nil, openflow.Reg{Index: 14, Value: 1, Mask: 1}, 3)
	waitFor(t, "intercept flows", func() bool {
		flows, _ := l.DumpFlows(cookie)
		return len(flows) == 10
	})
	before := outside.queries.Load()
	_, _ = vm1.Dig(ctx, "+short", "@"+l.Gateway4.String(), "www.example.test", "A")
	time.Sleep(300 * time.Millisecond)
	_, captured, frames, reinjects := r.counts()
	t.Logf("wrong mark: one query captured %d times, re-injected %d times, outside resolver got %d",
		captured, reinjects, outside.queries.Load()-before)
	if captured != 4 || frames != 1 || reinjects != 3 || outside.queries.Load() != before {
		t.Errorf("wrong mark: captured %d (%d frames), reinjected %d; want 4, 1, 3 and no query outside", captured, frames, reinjects)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
