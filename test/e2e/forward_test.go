package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestResolve: A, AAAA, CNAME and NXDOMAIN over the IPv4 and the IPv6
// service address, from two VMs, answered by a real unbound upstream.
func TestResolve(t *testing.T) {
	e := newEnv(t, 2)
	e.startDaemon(e.config([]string{e.upstream()}))
	for _, vm := range e.vms {
		for _, server := range []string{"@169.254.169.254", "@fd00::254"} {
			t.Run(vm.Name+server, func(t *testing.T) {
				if got := strings.TrimSpace(e.dig(vm, server, "www.example.test", "A", "+short")); got != "192.0.2.10" {
					t.Errorf("A: got %q", got)
				}
				if got := strings.TrimSpace(e.dig(vm, server, "www.example.test", "AAAA", "+short")); got != "2001:db8::10" {
					t.Errorf("AAAA: got %q", got)
				}
				out := e.dig(vm, server, "alias.example.test", "A")
				if !strings.Contains(out, "CNAME\twww.example.test.") {
					t.Errorf("CNAME missing:\n%s", out)
				}
				out = e.dig(vm, server, "nope.example.test", "A")
				if s := digStatus(out); s != "NXDOMAIN" {
					t.Errorf("status %q, want NXDOMAIN:\n%s", s, out)
				}
				// The VM's own ID comes back: dig checks it, a mismatch
				// would be a timeout. The checksums are checked by the
				// VM's kernel, which drops a bad one.
			})
		}
	}
}

// TestAnswerSize: an answer fits the client or comes truncated with TC set,
// never as a frame larger than the MTU.
func TestAnswerSize(t *testing.T) {
	e := newEnv(t, 1)
	e.startDaemon(e.config([]string{e.upstream()}, "max_udp_size = 4096", "mtu = 1500"))
	vm := e.vms[0]
	for _, server := range []string{"@169.254.169.254", "@fd00::254"} {
		t.Run(server, func(t *testing.T) {
			// No EDNS: at most 512 bytes, so 40 A records come with TC.
			out := e.dig(vm, server, "big.example.test", "A", "+noedns", "+ignore")
			if f := digFlags(out); !strings.Contains(f, "tc") {
				t.Errorf("no EDNS: flags %q, want tc:\n%s", f, out)
			}
			// EDNS 1232: the whole answer fits.
			out = e.dig(vm, server, "big.example.test", "A", "+bufsize=1232", "+ignore")
			if f := digFlags(out); strings.Contains(f, "tc") || digAnswers(out) != 40 {
				t.Errorf("EDNS 1232: flags %q, %d answers, want 40 without tc:\n%s", f, digAnswers(out), out)
			}
			// EDNS 4096 but a 1500-byte MTU: 200 records do not fit in one
			// frame, so the answer is truncated rather than oversized.
			out = e.dig(vm, server, "huge.example.test", "A", "+bufsize=4096", "+ignore")
			if f := digFlags(out); !strings.Contains(f, "tc") {
				t.Errorf("EDNS 4096 over MTU 1500: flags %q, want tc:\n%s", f, out)
			}
			if n := digAnswers(out); n <= 0 || n >= 200 {
				t.Errorf("EDNS 4096 over MTU 1500: %d answers, want some but not all", n)
			}
			if !strings.Contains(out, "MSG SIZE  rcvd: ") {
				t.Fatalf("no size in dig output:\n%s", out)
			}
			var size int
			_, rest, _ := strings.Cut(out, "MSG SIZE  rcvd: ")
			fmt.Sscanf(rest, "%d", &size)
			limit := 1500 - 28
			if server == "@fd00::254" {
				limit = 1500 - 48
			}
			if size > limit {
				t.Errorf("answer of %d bytes over a %d-byte payload limit", size, limit)
			}
		})
	}
}

// TestFailover: a silent first upstream, the answer comes from the second
// within the timeout.
func TestFailover(t *testing.T) {
	e := newEnv(t, 1)
	dead := e.startFake(nil)
	e.startDaemon(e.config([]string{dead.String(), e.upstream()}))
	out := e.dig(e.vms[0], "@169.254.169.254", "www.example.test", "A", "+time=4")
	if !strings.Contains(out, "192.0.2.10") {
		t.Fatalf("no answer from the second upstream:\n%s", out)
	}
}

// TestAllUpstreamsDead: every upstream silent gives SERVFAIL, not silence.
func TestAllUpstreamsDead(t *testing.T) {
	e := newEnv(t, 1)
	a, b := e.startFake(nil), e.startFake(nil)
	e.startDaemon(e.config([]string{a.String(), b.String()}))
	out := e.dig(e.vms[0], "@169.254.169.254", "www.example.test", "A", "+time=6")
	if s := digStatus(out); s != "SERVFAIL" {
		t.Fatalf("status %q, want SERVFAIL:\n%s", s, out)
	}
}

// TestForgedReplies: replies from the wrong source port or with the wrong ID
// are ignored; the real answer that follows is used.
func TestForgedReplies(t *testing.T) {
	e := newEnv(t, 1)
	var forger net.PacketConn
	if err := e.lab.InNetNS(func() error {
		var err error
		forger, err = net.ListenPacket("udp4", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	up := e.startFake(func(conn net.PacketConn, from net.Addr, req *dns.Msg) {
		// Right ID, wrong source port.
		forger.WriteTo(answerA(req, "192.0.2.66"), from)
		// Right source, wrong ID.
		wrong := req.Copy()
		wrong.Id ^= 0x5a5a
		conn.WriteTo(answerA(wrong, "192.0.2.67"), from)
		// Right source and ID, another question.
		other := req.Copy()
		other.Question[0].Name = "evil.example.test."
		conn.WriteTo(answerA(other, "192.0.2.68"), from)
		time.Sleep(50 * time.Millisecond)
		conn.WriteTo(answerA(req, "192.0.2.99"), from)
	})
	e.startDaemon(e.config([]string{up.String()}))
	for i := 0; i < 5; i++ {
		got := strings.TrimSpace(e.dig(e.vms[0], "@169.254.169.254", fmt.Sprintf("q%d.example.test", i), "A", "+short", "+time=3"))
		if got != "192.0.2.99" {
			t.Fatalf("query %d: got %q, want the real answer 192.0.2.99", i, got)
		}
	}
}

// TestConcurrentQueries: 200 queries in flight at once from 4 VMs are all
// answered.
func TestConcurrentQueries(t *testing.T) {
	e := newEnv(t, 4)
	e.startDaemon(e.config([]string{e.upstream()}))
	qfile := e.queryFile(50)
	var wg sync.WaitGroup
	outs := make([]string, len(e.vms))
	for i, vm := range e.vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// 50 clients with one query each: all 50 of a VM in flight at once.
			out, err := vm.Command(ctx, "dnsperf", "-s", "169.254.169.254", "-d", qfile,
				"-c", "50", "-q", "50", "-n", "1", "-t", "5").CombinedOutput()
			if err != nil {
				outs[i] = fmt.Sprintf("dnsperf: %v\n%s", err, out)
				return
			}
			outs[i] = string(out)
		}()
	}
	wg.Wait()
	for i, out := range outs {
		if !strings.Contains(out, "Queries completed:    50 ") || !strings.Contains(out, "Queries lost:         0 ") {
			t.Errorf("vm%d: not every query answered:\n%s", i+1, out)
		}
	}
}

// TestMalformedQuery: a message with a header but no valid question gets
// FORMERR; the daemon keeps answering.
func TestMalformedQuery(t *testing.T) {
	e := newEnv(t, 1)
	e.startDaemon(e.config([]string{e.upstream()}))
	// ID 0x1234, RD, QDCOUNT=1, then a question name that runs off the end.
	script := `import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(bytes.fromhex("123401000001000000000000" + "3f616263"), ("169.254.169.254",53))
r=s.recv(4096); print(r[:4].hex(), r[3] & 15)`
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := e.vms[0].Command(ctx, "python3", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	// ID echoed, QR set, rcode 1 (FORMERR).
	if got := strings.TrimSpace(string(out)); !strings.HasPrefix(got, "1234") || !strings.HasSuffix(got, " 1") {
		t.Fatalf("got %q, want ID 1234 and rcode 1", got)
	}
	if got := strings.TrimSpace(e.dig(e.vms[0], "@169.254.169.254", "www.example.test", "+short")); got != "192.0.2.10" {
		t.Fatalf("after FORMERR: got %q", got)
	}
}

// TestInvalidConfig: a bad value exits 2 with one line naming the option and
// the value, before touching any switch.
func TestInvalidConfig(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ body, want string }{
		{"[dns_forwarder]\nupstream_dns_port = seventy\n", "upstream_dns_port"},
		{"[dns_forwarder]\nupstream_query_timeout = 0\n", "upstream_query_timeout"},
		{"[dns_forwarder]\nclient_dns_servers = 169.254.169.254, not-an-ip\n", "not-an-ip"},
		{"[dns_forwarder]\nupstream_dns_servers = 127.0.0.1\nupstream_dns_server_ports = 127.0.0.1:53\n", "upstream_dns_server_ports"},
		{"[dns_forwarder]\ncontroller_id = 0\n", "controller_id"},
		{"[dns_forwarder]\nmtu = 100\n", "mtu"},
	}
	for i, c := range cases {
		f := fmt.Sprintf("%s/bad%d.ini", dir, i)
		if err := os.WriteFile(f, []byte(c.body), 0o600); err != nil {
			t.Fatal(err)
		}
		// openflow_connection points nowhere: a daemon that got past the
		// check would try to dial it and log that.
		cmd := exec.Command(daemonBinary, "--config-file", f)
		out, err := cmd.CombinedOutput()
		code := -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], c.want) {
			t.Errorf("%q: exit %d, output %q; want exit 2 and one line naming %q", c.body, code, out, c.want)
		}
	}
}

// TestReplyChecksums: tcpdump in the VM finds correct IPv4 header and UDP
// checksums on the replies over IPv4 and IPv6, and the reply comes from the
// service address and MAC the VM sent to.
func TestReplyChecksums(t *testing.T) {
	e := newEnv(t, 1)
	e.startDaemon(e.config([]string{e.upstream()}))
	vm := e.vms[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dump := vm.Command(ctx, "tcpdump", "-i", "eth0", "-n", "-e", "-vv", "-l", "-c", "2", "udp and src port 53")
	var out strings.Builder
	dump.Stdout = &out
	stderr, err := dump.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	// tcpdump says "listening on" once its capture is open.
	buf := make([]byte, 4096)
	var head strings.Builder
	for !strings.Contains(head.String(), "listening on") {
		n, err := stderr.Read(buf)
		if err != nil {
			t.Fatalf("tcpdump: %v: %s", err, head.String())
		}
		head.Write(buf[:n])
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	e.dig(vm, "@169.254.169.254", "www.example.test", "A")
	e.dig(vm, "@fd00::254", "www.example.test", "AAAA")
	if err := dump.Wait(); err != nil {
		t.Fatalf("tcpdump: %v\n%s", err, out.String())
	}
	got := out.String()
	if strings.Count(got, "udp sum ok") != 2 || strings.Contains(got, "bad cksum") {
		t.Fatalf("want two replies with good checksums:\n%s", got)
	}
	gw := e.lab.GatewayMAC.String()
	if !strings.Contains(got, "169.254.169.254.53 > "+vm.IPv4.String()) || !strings.Contains(got, "fd00::254.53 > "+vm.IPv6.String()) ||
		strings.Count(got, gw+" > "+vm.MAC.String()) != 2 {
		t.Fatalf("reply addressing:\n%s", got)
	}
}

// TestSpoofedSourceMAC: a query whose source MAC is not its port's
// attached-mac (from OVSDB) is dropped; the port's own MAC is answered.
func TestSpoofedSourceMAC(t *testing.T) {
	e := newEnv(t, 1)
	e.startDaemon(e.config([]string{e.upstream()}))
	vm := e.vms[0]
	if got := strings.TrimSpace(e.dig(vm, "@169.254.169.254", "www.example.test", "+short")); got != "192.0.2.10" {
		t.Fatalf("before: got %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := vm.Command(ctx, "ip", "link", "set", "eth0", "address", "fa:16:3e:aa:bb:cc").CombinedOutput(); err != nil {
		t.Fatalf("ip link: %v\n%s", err, out)
	}
	out, err := vm.Dig(ctx, "@169.254.169.254", "www.example.test", "+short", "+time=1", "+tries=1")
	if err == nil && strings.Contains(out, "192.0.2.10") {
		t.Fatalf("a spoofed source MAC was answered:\n%s", out)
	}
}
