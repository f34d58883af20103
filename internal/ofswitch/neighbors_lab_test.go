package ofswitch

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/openflow"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/pipeline"
)

// The isolated network of these tests: the lab's subnets, but gateway
// addresses no port holds (the lab's own gateways, 10.0.0.1 and
// fd00:10::1, are the bridge's LOCAL port).
var (
	isolatedGW4 = netip.MustParseAddr("10.0.0.254")
	isolatedGW6 = netip.MustParseAddr("fd00:10::fe")
	serviceV6   = netip.MustParseAddr("fd00::254")
	responder   = net.HardwareAddr(pipeline.DefaultResponderMAC[:]).String()
)

// inVM runs a command in vm and returns its combined output; a failure
// fails the test unless mayFail.
func inVM(t *testing.T, vm *lab.VM, mayFail bool, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := vm.Command(ctx, name, args...).CombinedOutput()
	if err != nil && !mayFail {
		t.Fatalf("%s %v in %s: %v\n%s", name, args, vm.Name, err, out)
	}
	return string(out)
}

// isolate routes vm's service addresses via the isolated network's
// gateways, for which (unlike the lab's own) it has no neighbour entry:
// the VM of an isolated network, which must resolve its gateway first.
func isolate(t *testing.T, vm *lab.VM) {
	t.Helper()
	inVM(t, vm, false, "ip", "route", "replace", "169.254.169.254/32", "via", isolatedGW4.String(), "dev", "eth0")
	inVM(t, vm, false, "ip", "-6", "route", "replace", "fd00::254/128", "via", isolatedGW6.String(), "dev", "eth0")
}

// neighbor returns vm's neighbour entry for addr ("" when none).
func neighbor(t *testing.T, vm *lab.VM, addr netip.Addr) string {
	t.Helper()
	return strings.TrimSpace(inVM(t, vm, false, "ip", "neigh", "show", addr.String(), "dev", "eth0"))
}

// resolved reports whether vm's entry for addr has the responder MAC in a
// usable state.
func resolved(entry string) bool {
	if !strings.Contains(entry, "lladdr "+responder) {
		return false
	}
	for _, state := range []string{"REACHABLE", "STALE", "DELAY", "PROBE"} {
		if strings.HasSuffix(entry, state) {
			return true
		}
	}
	return false
}

// tcpdump captures in vm until the returned stop, which returns what
// tcpdump -l -vv -n -e printed.
func tcpdump(t *testing.T, vm *lab.VM, filter string) (stop func() string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := vm.Command(ctx, "tcpdump", "-l", "-vv", "-n", "-e", "-i", "eth0", filter)
	cmd.WaitDelay = 2 * time.Second
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() string {
		once.Do(func() {
			time.Sleep(200 * time.Millisecond) // the last lines
			cancel()
			_ = cmd.Wait()
		})
		return out.String()
	}
	t.Cleanup(func() { stop() })
	waitFor(t, "tcpdump listening", func() bool { return strings.Contains(out.String(), "listening on") })
	return stop
}

// lockedBuffer is an io.Writer safe for a command's two output streams.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

var nPackets = regexp.MustCompile(`n_packets=(\d+),`)

// flowPackets returns n_packets of the flows of l's bridge that match
// filter (ovs-ofctl syntax) and whose text contains part, summed.
func flowPackets(t *testing.T, l *lab.Lab, filter, part string) int {
	t.Helper()
	out, err := l.Ofctl("dump-flows", l.Bridge, filter)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if m := nPackets.FindStringSubmatch(line); m != nil && strings.Contains(line, part) {
			v, _ := strconv.Atoi(m[1])
			n += v
		}
	}
	return n
}

// flowsWith returns the daemon's flows on l whose text contains part.
func flowsWith(t *testing.T, l *lab.Lab, cookie uint64, part string) []string {
	t.Helper()
	flows, err := l.DumpFlows(cookie)
	if err != nil {
		t.Fatal(err)
	}
	var with []string
	for _, f := range flows {
		if strings.Contains(f, part) {
			with = append(with, f)
		}
	}
	return with
}

// digOK runs dig in vm against server and fails the test unless it gets
// an answer.
func digOK(t *testing.T, vm *lab.VM, server string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := vm.Dig(ctx, "+tries=2", "@"+server, "www.example.test", "A")
	if err != nil || !strings.Contains(out, "status: NOERROR") {
		t.Errorf("dig @%s from %s: %v\n%s", server, vm.Name, err, out)
	}
}

// TestRealOVSNeighborAnswers runs the neighbour answers on Open vSwitch's
// userspace datapath with VMs of an isolated network (routes via a
// gateway address no port holds, no neighbour entry for it): the flows
// answer vm1's ARP for the gateway and its Neighbor Solicitations for the
// IPv6 gateway and for fd00::254 with the responder MAC, without a
// packet-in, with valid checksums (tcpdump -vv in the VM, and the VM's
// kernel takes the answers); DNS then works through them. The IPv4
// service address is answered for any port with an on-link route. What
// is not declared (another address, a port not listed) is not answered,
// frames sent to the responder MAC reach no other VM, the set survives
// the reconcile dumps, the answers are gone within a second of a Refresh
// with a State that drops them, and a duplicate address detection probe
// for a declared address is not answered.
func TestRealOVSNeighborAnswers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts Open vSwitch in network namespaces")
	}
	if testing.Short() {
		t.Skip("slow: real Open vSwitch")
	}
	l, vm1, vm2 := twoVMLab(t)
	isolate(t, vm1)
	isolate(t, vm2)
	const cookie = 0x444e53
	spec := pipeline.Spec{Table: 60, Priority: 102, Cookie: cookie, ControllerID: 53, NeighborAnswers: true,
		Services: []netip.AddrPort{netip.MustParseAddrPort("169.254.169.254:53"), netip.MustParseAddrPort("[fd00::254]:53")}}
	declared := pipeline.State{VMPorts: []uint32{vm1.OFPort, vm2.OFPort}, Neighbors: []pipeline.Neighbor{
		{Addr: isolatedGW4, Ports: []uint32{vm1.OFPort}},
		{Addr: isolatedGW6, Ports: []uint32{vm1.OFPort}},
		{Addr: serviceV6, Ports: []uint32{vm1.OFPort}},
	}}
	var st atomic.Pointer[pipeline.State]
	st.Store(&declared)
	sw, r, _ := runSwitch(t, l, spec, &st, pipeline.ReinjectMark(), 0)

	// 2 service flows per port and 2 generic ones; 1 ARP answer, 2
	// advertisements and their 2 DAD exceptions, the link-layer address
	// flow, the service ARP and the drop.
	const full = 4 + 2 + 1 + 2 + 2 + 1 + 1 + 1
	waitFor(t, "answer flows", func() bool {
		flows, _ := l.DumpFlows(cookie)
		return len(flows) == full
	})
	flows, _ := l.DumpFlows(cookie)
	t.Logf("flows:\n%s", strings.Join(flows, "\n"))

	capture := tcpdump(t, vm1, "arp or icmp6")
	pins := func() uint64 { return sw.Stats()["packet_ins"] }

	// IPv4 via the gateway: ARP answered by the flows, one packet-in for
	// the query only.
	before := pins()
	digOK(t, vm1, "169.254.169.254")
	if n := pins() - before; n != 1 {
		t.Errorf("%d packet-ins for one query through the gateway's ARP", n)
	}
	if e := neighbor(t, vm1, isolatedGW4); !resolved(e) {
		t.Errorf("vm1's entry for %s: %q", isolatedGW4, e)
	}
	// IPv6 via the gateway, then fd00::254 on-link: Neighbor
	// Advertisements, one packet-in per query.
	before = pins()
	digOK(t, vm1, "fd00::254")
	inVM(t, vm1, false, "ip", "-6", "route", "replace", "fd00::254/128", "dev", "eth0")
	digOK(t, vm1, "fd00::254")
	if n := pins() - before; n != 2 {
		t.Errorf("%d packet-ins for two IPv6 queries", n)
	}
	for _, addr := range []netip.Addr{isolatedGW6, serviceV6} {
		if e := neighbor(t, vm1, addr); !resolved(e) {
			t.Errorf("vm1's entry for %s: %q", addr, e)
		}
	}
	// 169.254.169.254 on-link, from vm1 and from vm2, which is listed for
	// no address: the service ARP answers any untagged port.
	for _, vm := range []*lab.VM{vm1, vm2} {
		inVM(t, vm, false, "ip", "route", "replace", "169.254.169.254/32", "dev", "eth0")
		digOK(t, vm, "169.254.169.254")
		if e := neighbor(t, vm, netip.MustParseAddr("169.254.169.254")); !resolved(e) {
			t.Errorf("%s's entry for 169.254.169.254: %q", vm.Name, e)
		}
	}

	dump := capture()
	t.Logf("tcpdump in vm1:\n%s", dump)
	for _, want := range []string{
		fmt.Sprintf("%s > %s, ethertype ARP (0x0806)", responder, vm1.MAC),
		fmt.Sprintf("Reply %s is-at %s", isolatedGW4, responder),
		fmt.Sprintf("Reply 169.254.169.254 is-at %s", responder),
		fmt.Sprintf("%s > %s: [icmp6 sum ok] ICMP6, neighbor advertisement, length 32, tgt is %s, Flags [solicited, override]", isolatedGW6, vm1.IPv6, isolatedGW6),
		fmt.Sprintf("%s > %s: [icmp6 sum ok] ICMP6, neighbor advertisement, length 32, tgt is %s, Flags [solicited, override]", serviceV6, vm1.IPv6, serviceV6),
		"destination link-address option (2), length 8 (1): " + responder,
		"(hlim 255, next-header ICMPv6 (58) payload length: 32) " + isolatedGW6.String(),
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("tcpdump lacks %q", want)
		}
	}
	if strings.Contains(dump, "bad icmp6 cksum") {
		t.Error("an ICMPv6 checksum is bad")
	}
	if served, captured, _, reinjects := r.counts(); served != 5 || captured != 0 || reinjects != 0 {
		t.Errorf("interceptor: %d answered, %d captured, %d re-injected; want 5, 0, 0", served, captured, reinjects)
	}

	// Not declared: vm2 is not listed for the gateways, and nobody for
	// 10.0.0.253 or fd00:10::fd. Pings make the kernel ask.
	before = pins()
	noAnswer := []struct {
		vm   *lab.VM
		addr netip.Addr
	}{{vm2, isolatedGW4}, {vm2, isolatedGW6}, {vm1, netip.MustParseAddr("10.0.0.253")}, {vm1, netip.MustParseAddr("fd00:10::fd")}}
	for _, c := range noAnswer {
		inVM(t, c.vm, true, "ping", "-c", "2", "-i", "0.3", "-W", "1", c.addr.String())
	}
	for _, c := range noAnswer {
		if e := neighbor(t, c.vm, c.addr); strings.Contains(e, "lladdr") {
			t.Errorf("%s got an answer for %s: %q", c.vm.Name, c.addr, e)
		}
	}
	if n := pins() - before; n != 0 {
		t.Errorf("%d packet-ins for unanswered requests", n)
	}

	// vm1's pings to its gateway go to the responder MAC: dropped, vm2
	// sees none of them.
	drops := flowPackets(t, l, "table=60", "priority=101,dl_dst="+responder+" ")
	seen := tcpdump(t, vm2, "ether dst "+responder)
	inVM(t, vm1, true, "ping", "-c", "3", "-i", "0.2", "-W", "1", isolatedGW4.String())
	if out := seen(); strings.Contains(out, responder) {
		t.Errorf("vm2 saw frames to the responder MAC:\n%s", out)
	}
	if n := flowPackets(t, l, "table=60", "priority=101,dl_dst="+responder+" ") - drops; n < 3 {
		t.Errorf("the drop flow counted %d of 3 pings", n)
	}

	// Two reconcile dumps later, the flows read back as declared.
	time.Sleep(2500 * time.Millisecond)
	stats := sw.Stats()
	if stats["flow_reinstalls"] != 0 || stats["stale_flows_removed"] != 0 || stats["openflow_errors"] != 0 {
		t.Errorf("stats %v", stats)
	}

	// A State without neighbours: the answers go at once (the service
	// ARP and the drop stay).
	st.Store(&pipeline.State{VMPorts: declared.VMPorts})
	begin := time.Now()
	sw.Refresh()
	waitFor(t, "answers gone", func() bool {
		flows, _ := l.DumpFlows(cookie)
		return len(flows) == full-6
	})
	took := time.Since(begin)
	t.Logf("answers gone %v after Refresh", took)
	if took > time.Second {
		t.Errorf("answers gone only after %v", took)
	}
	inVM(t, vm1, false, "ip", "neigh", "flush", "to", isolatedGW4.String(), "dev", "eth0")
	inVM(t, vm1, true, "ping", "-c", "2", "-i", "0.3", "-W", "1", isolatedGW4.String())
	if e := neighbor(t, vm1, isolatedGW4); strings.Contains(e, "lladdr") {
		t.Errorf("vm1 still answered for %s after the Refresh: %q", isolatedGW4, e)
	}

	// Back, then vm1 claims the IPv6 gateway: its duplicate address
	// detection probe goes on unanswered (the kernel keeps the address).
	st.Store(&declared)
	sw.Refresh()
	waitFor(t, "answers back", func() bool {
		flows, _ := l.DumpFlows(cookie)
		return len(flows) == full
	})
	advertised := flowPackets(t, l, "table=60,icmp6,icmp_type=136", "")
	inVM(t, vm1, false, "sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_dad=1")
	inVM(t, vm1, false, "ip", "-6", "addr", "add", isolatedGW6.String()+"/128", "dev", "eth0")
	time.Sleep(2500 * time.Millisecond) // one probe, one second to wait for an answer
	addr := inVM(t, vm1, false, "ip", "-6", "addr", "show", "dev", "eth0", "to", isolatedGW6.String()+"/128")
	t.Logf("after duplicate address detection: %s", addr)
	if !strings.Contains(addr, isolatedGW6.String()) || strings.Contains(addr, "dadfailed") || strings.Contains(addr, "tentative") {
		t.Errorf("duplicate address detection answered: %q", addr)
	}
	if n := flowPackets(t, l, fmt.Sprintf("table=60,icmp6,ipv6_src=::,icmp_type=135,nd_target=%s", isolatedGW6), ""); n != 1 {
		t.Errorf("the DAD exception saw %d probes, want 1", n)
	}
	if n := flowPackets(t, l, "table=60,icmp6,icmp_type=136", "") - advertised; n != 0 {
		t.Errorf("%d advertisements made for the probe", n)
	}
}

// sendUDP sends payload from vm to addr:53 with bash's /dev/udp.
func sendUDP(t *testing.T, vm *lab.VM, addr netip.Addr, payload string) {
	t.Helper()
	inVM(t, vm, false, "bash", "-c", fmt.Sprintf("printf %%s %q > /dev/udp/%s/53", payload, addr))
}

// TestRealOVSInterceptVMPorts runs intercept mode with the neighbour
// answers on Open vSwitch's userspace datapath: only the VM ports of the
// State get intercept flows; a frame the daemon re-injects is never
// captured again, by any flow: a malformed query to a service address
// (sent through the lab's gateway or through the responder MAC) and a
// query to an outside resolver through the responder MAC give exactly one
// packet-in each, the latter then dropped rather than flooded. With a
// mark the flows do not exclude, the malformed query loops (the control).
func TestRealOVSInterceptVMPorts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts Open vSwitch in network namespaces")
	}
	if testing.Short() {
		t.Skip("slow: real Open vSwitch")
	}
	l, vm1, vm2 := twoVMLab(t)
	outside := startOutsideResolver(t, l)
	const cookie = 0x444e53
	spec := pipeline.Spec{Table: 60, Priority: 102, Cookie: cookie, ControllerID: 53, InterceptAll: true, NeighborAnswers: true,
		Services: []netip.AddrPort{netip.MustParseAddrPort("169.254.169.254:53"), netip.MustParseAddrPort("[fd00::254]:53")}}
	var st atomic.Pointer[pipeline.State]
	st.Store(&pipeline.State{VMPorts: []uint32{vm1.OFPort}, Neighbors: []pipeline.Neighbor{{Addr: isolatedGW4, Ports: []uint32{vm1.OFPort}}}})
	_, r, stop := runSwitch(t, l, spec, &st, pipeline.ReinjectMark(), 0)

	// 2 service flows per port, 2 intercept and 2 responder-MAC DNS flows
	// for vm1, 2 generic flows, the ARP answer, the service ARP, the drop.
	const n = 4 + 2 + 2 + 2 + 1 + 1 + 1
	waitFor(t, "flows", func() bool {
		flows, _ := l.DumpFlows(cookie)
		return len(flows) == n
	})
	if got := flowsWith(t, l, cookie, "priority=101,udp"); len(got) != 2 || !strings.Contains(got[0], fmt.Sprintf("in_port=%d,", vm1.OFPort)) ||
		!strings.Contains(got[1], fmt.Sprintf("in_port=%d,", vm1.OFPort)) {
		t.Errorf("intercept flows %q, want vm1's two only", got)
	}

	// check waits for a looping frame to come back, then compares the
	// interceptor's counts.
	check := func(what string, served, captured, frames, reinjects int) {
		t.Helper()
		time.Sleep(300 * time.Millisecond)
		s, c, f, re := r.counts()
		if s != served || c != captured || f != frames || re != reinjects {
			t.Errorf("%s: served %d, captured %d (%d distinct frames), reinjected %d; want %d, %d, %d, %d",
				what, s, c, f, re, served, captured, frames, reinjects)
		}
	}
	// vm2 is no VM port: its query to the outside resolver is not
	// intercepted; vm1's is, once.
	digOK(t, vm2, l.Gateway4.String())
	check("vm2's query", 0, 0, 0, 0)
	digOK(t, vm1, l.Gateway4.String())
	check("vm1's query", 0, 1, 1, 1)
	if q := outside.queries.Load(); q != 2 {
		t.Errorf("outside resolver got %d queries, want 2", q)
	}

	// A malformed query to the service address, through the lab's
	// gateway: captured by the service flow once, re-injected, not
	// captured again.
	sendUDP(t, vm1, netip.MustParseAddr("169.254.169.254"), "xx")
	check("malformed query to the service address", 0, 2, 2, 2)

	// Through the responder MAC: the malformed query (service flow), and
	// a query to an outside address routed via the isolated gateway
	// (responder-MAC DNS flow): once each, then dropped.
	isolate(t, vm1)
	inVM(t, vm1, false, "ip", "route", "replace", "192.0.2.0/24", "via", isolatedGW4.String(), "dev", "eth0")
	drops := flowPackets(t, l, "table=60", "priority=101,dl_dst="+responder+" ")
	sendUDP(t, vm1, netip.MustParseAddr("169.254.169.254"), "yy")
	check("malformed query via the responder MAC", 0, 3, 3, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := vm1.Dig(ctx, "@192.0.2.53", "www.example.test", "A"); err == nil {
		t.Errorf("a query to 192.0.2.53 via the responder MAC was answered: %s", out)
	}
	check("query via the responder MAC", 0, 4, 4, 4)
	if got := flowPackets(t, l, "table=60", "priority=101,dl_dst="+responder+" ") - drops; got != 2 {
		t.Errorf("the drop flow took %d re-injected frames, want 2", got)
	}
	digOK(t, vm1, "169.254.169.254")
	check("query to the service address via the responder MAC", 1, 4, 4, 4)
	r.mu.Lock()
	if len(r.errs) != 0 {
		t.Errorf("interceptor errors: %v", r.errs)
	}
	r.mu.Unlock()
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Control: with a mark the flows do not exclude, the malformed query
	// comes back (capped at 3 re-injections).
	_, r, stop = runSwitch(t, l, spec, &st, openflow.Reg{Index: 14, Value: 1, Mask: 1}, 3)
	waitFor(t, "flows", func() bool {
		flows, _ := l.DumpFlows(cookie)
		return len(flows) == n
	})
	sendUDP(t, vm1, netip.MustParseAddr("169.254.169.254"), "zz")
	time.Sleep(300 * time.Millisecond)
	_, captured, frames, reinjects := r.counts()
	t.Logf("wrong mark: one malformed query captured %d times, re-injected %d times", captured, reinjects)
	if captured != 4 || frames != 1 || reinjects != 3 {
		t.Errorf("wrong mark: captured %d (%d frames), reinjected %d; want 4, 1, 3", captured, frames, reinjects)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
