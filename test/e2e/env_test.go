package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
)

// flowCookie is the daemon's default flow cookie; the tests leave it at the
// default so that they check the documented value.
const flowCookie = 0x444e53

// testZone is what the unbound upstream serves.
var testZone = lab.Zone{Origin: "example.test.", Records: zoneRecords()}

func zoneRecords() []string {
	rrs := []string{
		"www.example.test. 300 IN A 192.0.2.10",
		"www.example.test. 300 IN AAAA 2001:db8::10",
		"alias.example.test. 300 IN CNAME www.example.test.",
	}
	// big: 40 A records, about 680 bytes: more than 512, less than 1232.
	for i := 1; i <= 40; i++ {
		rrs = append(rrs, fmt.Sprintf("big.example.test. 300 IN A 198.51.100.%d", i))
	}
	// huge: 200 A records, about 3.3 kB: more than one 1500-byte frame.
	for i := 0; i < 200; i++ {
		rrs = append(rrs, fmt.Sprintf("huge.example.test. 300 IN A 203.0.113.%d", i))
	}
	return rrs
}

// env is one lab with VMs, an unbound upstream and optionally the daemon.
type env struct {
	t       *testing.T
	lab     *lab.Lab
	vms     []*lab.VM
	unbound *lab.Server
}

// newEnv starts a lab with n VMs and an unbound upstream serving testZone.
func newEnv(t *testing.T, n int) *env {
	t.Helper()
	l, err := lab.Start(lab.Options{})
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	e := &env{t: t, lab: l}
	for i := 1; i <= n; i++ {
		vm, err := l.AddVM(fmt.Sprintf("vm%d", i))
		if err != nil {
			t.Fatalf("vm%d: %v", i, err)
		}
		e.vms = append(e.vms, vm)
	}
	if e.unbound, err = l.StartUnbound(testZone); err != nil {
		t.Fatalf("unbound: %v", err)
	}
	return e
}

// upstream returns the unbound upstream's loopback address as ip:port.
func (e *env) upstream() string {
	return fmt.Sprintf("127.0.0.1:%d", e.unbound.Port)
}

// config returns a daemon configuration in the OVS agent's ini format, with
// Neutron master's option spelling for the upstreams and extra lines
// appended to [dns_forwarder].
func (e *env) config(upstreams []string, extra ...string) string {
	return fmt.Sprintf(`[DEFAULT]
debug = false

[ovs]
integration_bridge = %s
ovsdb_connection = unix:%s/db.sock

[dns_forwarder]
openflow_connection = %s
control_socket = %s/control.sock
upstream_dns_server_ports = %s
upstream_dns_query_timeout = 1
%s
`, e.lab.Bridge, e.lab.RunDir, e.lab.MgmtTarget(), e.lab.Dir, strings.Join(upstreams, ", "), strings.Join(extra, "\n"))
}

// startDaemon starts the daemon with cfg and waits until its flows are on
// the bridge.
func (e *env) startDaemon(cfg string) *lab.Process {
	e.t.Helper()
	p := e.launch("ovs-dns-forwarder", cfg)
	e.waitFlows(e.wantFlows(), 10*time.Second)
	return p
}

// launch starts the daemon as name with cfg and the extra arguments; it is
// stopped at the end of the test, and its log shown if the test failed.
func (e *env) launch(name, cfg string, args ...string) *lab.Process {
	e.t.Helper()
	p, err := e.lab.StartDaemon(daemonBinary, name, cfg, args...)
	if err != nil {
		e.t.Fatalf("daemon: %v", err)
	}
	e.t.Cleanup(func() {
		_ = p.Stop()
		if e.t.Failed() {
			if log, err := os.ReadFile(p.LogPath); err == nil {
				e.t.Logf("daemon log:\n%s", log)
			}
		}
	})
	return p
}

// wantFlows is the number of flows the daemon keeps: per service address
// (two of them) one generic flow and one per VM port, and, with the
// neighbour answers on by default, the ARP answer for 169.254.169.254 and
// the responder MAC's drop flow (without Neutron records no port is known
// to be a VM's, so there is no gateway answer).
func (e *env) wantFlows() int { return 2*(1+len(e.vms)) + 2 }

// waitFlows waits until the bridge holds n flows with the daemon's cookie
// and returns how long that took.
func (e *env) waitFlows(n int, limit time.Duration) time.Duration {
	e.t.Helper()
	start := time.Now()
	for {
		flows, err := e.lab.DumpFlows(flowCookie)
		if err == nil && len(flows) == n {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			e.t.Fatalf("after %v: %d daemon flows (err %v), want %d: %q", limit, len(flows), err, n, flows)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dig runs dig in vm and returns its output.
func (e *env) dig(vm *lab.VM, args ...string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := vm.Dig(ctx, args...)
	if err != nil {
		e.t.Fatalf("dig %s in %s: %v\n%s", strings.Join(args, " "), vm.Name, err, out)
	}
	return out
}

// digStatus returns the status of dig's answer header ("NOERROR", ...).
func digStatus(out string) string {
	_, rest, ok := strings.Cut(out, "status: ")
	if !ok {
		return ""
	}
	status, _, _ := strings.Cut(rest, ",")
	return status
}

// digFlags returns the flags of dig's answer header ("qr rd ra").
func digFlags(out string) string {
	_, rest, ok := strings.Cut(out, ";; flags: ")
	if !ok {
		return ""
	}
	flags, _, _ := strings.Cut(rest, ";")
	return flags
}

// digAnswers counts the records in dig's answer section.
func digAnswers(out string) int {
	_, rest, ok := strings.Cut(out, "ANSWER: ")
	if !ok {
		return -1
	}
	var n int
	fmt.Sscanf(rest, "%d", &n)
	return n
}

// fakeUpstream is a DNS server in the lab's namespace whose behaviour the
// test chooses: it can stay silent, or send forged replies before the real
// one.
type fakeUpstream struct {
	conn net.PacketConn
	addr netip.AddrPort
}

// startFake starts a fake upstream on 127.0.0.1 in the lab's namespace;
// serve is called for each datagram and writes whatever it likes.
func (e *env) startFake(serve func(conn net.PacketConn, from net.Addr, req *dns.Msg)) *fakeUpstream {
	e.t.Helper()
	var conn net.PacketConn
	err := e.lab.InNetNS(func() error {
		var err error
		conn, err = net.ListenPacket("udp4", "127.0.0.1:0")
		return err
	})
	if err != nil {
		e.t.Fatalf("fake upstream: %v", err)
	}
	e.t.Cleanup(func() { conn.Close() })
	f := &fakeUpstream{conn: conn, addr: conn.LocalAddr().(*net.UDPAddr).AddrPort()}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			req := new(dns.Msg)
			if req.Unpack(buf[:n]) != nil || serve == nil {
				continue
			}
			serve(conn, from, req)
		}
	}()
	return f
}

// String returns the fake's address as ip:port.
func (f *fakeUpstream) String() string { return f.addr.String() }

// answerA builds an answer to req with one A record.
func answerA(req *dns.Msg, ip string) []byte {
	m := new(dns.Msg)
	m.SetReply(req)
	rr, _ := dns.NewRR(fmt.Sprintf("%s 60 IN A %s", req.Question[0].Name, ip))
	m.Answer = append(m.Answer, rr)
	b, _ := m.Pack()
	return b
}
