package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
)

// neutronEnv is a lab with a real Neutron (neutron-server, the OVS agent,
// MariaDB, RabbitMQ), two networks with the same CIDR and VMs on them.
type neutronEnv struct {
	*env
	neutron *lab.Neutron
	ports   map[string]lab.Port // by dns_name
	vm      map[string]*lab.VM  // by the dns_name of its port
}

// reverse returns the PTR name of addr.
func reverse(t *testing.T, addr netip.Addr) string {
	t.Helper()
	name, err := dns.ReverseAddr(addr.String())
	if err != nil {
		t.Fatal(err)
	}
	return name
}

func newNeutronEnv(t *testing.T) *neutronEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real Neutron (about a minute)")
	}
	if err := lab.EnsureNeutronPackages(); err != nil {
		t.Fatal(err)
	}
	l, err := lab.Start(lab.Options{})
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	e := &neutronEnv{env: &env{t: t, lab: l}, ports: map[string]lab.Port{}, vm: map[string]*lab.VM{}}
	if e.unbound, err = l.StartUnbound(testZone); err != nil {
		t.Fatalf("unbound: %v", err)
	}
	if e.neutron, err = l.StartNeutron(lab.NeutronOptions{DNSDomain: "cloud.test."}); err != nil {
		t.Fatalf("neutron: %v", err)
	}
	netA, err := e.neutron.CreateNetwork("net-a")
	must(t, err)
	_, err = e.neutron.CreateSubnet(netA, "10.0.0.0/24", 4)
	must(t, err)
	_, err = e.neutron.CreateSubnet(netA, "fd00:10::/64", 6)
	must(t, err)
	netB, err := e.neutron.CreateNetwork("net-b")
	must(t, err)
	_, err = e.neutron.CreateSubnet(netB, "10.0.0.0/24", 4)
	must(t, err)
	// Network A: alpha and beta (dual-stack). Network B: gamma, with
	// alpha's IPv4 address, and delta, a port with no VM.
	for _, p := range []struct{ net, name, ip string }{
		{netA, "alpha", ""}, {netA, "beta", ""},
	} {
		port, err := e.neutron.CreatePort(p.net, p.name, p.ip)
		must(t, err)
		e.ports[p.name] = port
	}
	for _, p := range []struct{ name, ip string }{
		{"gamma", e.ports["alpha"].IPs[0].String()}, {"delta", ""},
	} {
		port, err := e.neutron.CreatePort(netB, p.name, p.ip)
		must(t, err)
		e.ports[p.name] = port
	}
	for _, name := range []string{"alpha", "beta", "gamma"} {
		vm, err := l.AddNeutronVM("vm-"+name, e.neutron, e.ports[name])
		must(t, err)
		e.vm[name] = vm
		e.vms = append(e.vms, vm)
	}
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// startNamesDaemon starts the daemon with the agent's own files (for
// [ovs], [DEFAULT] dns_domain and [neutron]) after ours.
func (e *neutronEnv) startNamesDaemon(name string, extra ...string) *lab.Process {
	e.t.Helper()
	cfg := fmt.Sprintf("[dns_forwarder]\nopenflow_connection = %s\ncontrol_socket = %s/%s.sock\nupstream_dns_server_ports = %s\nupstream_dns_query_timeout = 1\nrecords_resync_interval = 2\n%s\n",
		e.lab.MgmtTarget(), e.lab.Dir, name, e.upstream(), strings.Join(extra, "\n"))
	var args []string
	for _, f := range e.neutron.AgentConfigFiles {
		args = append(args, "--config-file", f)
	}
	p := e.launch(name, cfg, args...)
	// The names are served within seconds of start.
	e.eventually(10*time.Second, e.vm["beta"], "alpha.cloud.test", "A", e.ports["alpha"].IPs[0].String())
	return p
}

// eventually digs from vm until the short answer contains want.
func (e *neutronEnv) eventually(limit time.Duration, vm *lab.VM, args ...string) {
	e.t.Helper()
	want := args[len(args)-1]
	q := append([]string{"@169.254.169.254", "+short", "+time=1", "+tries=1"}, args[:len(args)-1]...)
	deadline := time.Now().Add(limit)
	for {
		out, err := vm.Dig(e.t.Context(), q...)
		if err == nil && strings.Contains(out, want) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("dig %v from %s: %q (%v), want %q within %v", q, vm.Name, out, err, want, limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// status digs name from vm and returns the answer's status and records.
func (e *neutronEnv) status(vm *lab.VM, name, qtype string) (string, string) {
	e.t.Helper()
	out := e.dig(vm, "@169.254.169.254", name, qtype, "+time=2")
	_, answer, _ := strings.Cut(out, ";; ANSWER SECTION:\n")
	answer, _, _ = strings.Cut(answer, "\n\n")
	return digStatus(out), answer
}

// TestNeutronNames runs the local-names scenarios on one real Neutron.
func TestNeutronNames(t *testing.T) {
	e := newNeutronEnv(t)
	p := e.startNamesDaemon("forwarder")
	alpha, beta, gamma := e.vm["alpha"], e.vm["beta"], e.vm["gamma"]
	ip := func(name string, i int) string { return e.ports[name].IPs[i].String() }

	t.Run("neighbours", func(t *testing.T) {
		for _, c := range []struct {
			vm        *lab.VM
			name, typ string
			want      string
		}{
			{alpha, "beta.cloud.test", "A", ip("beta", 0)},
			{alpha, "BETA.Cloud.Test", "AAAA", ip("beta", 1)},
			{alpha, "beta", "A", ip("beta", 0)},
			{beta, "alpha.cloud.test", "A", ip("alpha", 0)},
			{alpha, reverse(t, e.ports["beta"].IPs[0]), "PTR", "beta.cloud.test."},
			{alpha, reverse(t, e.ports["beta"].IPs[1]), "PTR", "beta.cloud.test."},
			{gamma, "delta.cloud.test", "A", ip("delta", 0)},
			// The same address on two networks: each sees its own name.
			{alpha, reverse(t, e.ports["alpha"].IPs[0]), "PTR", "alpha.cloud.test."},
			{gamma, reverse(t, e.ports["gamma"].IPs[0]), "PTR", "gamma.cloud.test."},
		} {
			status, answer := e.status(c.vm, c.name, c.typ)
			// owner, TTL (local_ttl), class, type, data
			if f := strings.Fields(answer); status != "NOERROR" || len(f) < 5 || f[1] != "30" || f[4] != c.want {
				t.Errorf("%s: %s %s: %s %q, want %s", c.vm.Name, c.name, c.typ, status, answer, c.want)
			}
		}
	})
	t.Run("other network invisible", func(t *testing.T) {
		for _, c := range []struct {
			vm   *lab.VM
			name string
		}{{alpha, "gamma.cloud.test"}, {alpha, "delta.cloud.test"}, {gamma, "beta.cloud.test"}, {gamma, "alpha.cloud.test"}} {
			if status, answer := e.status(c.vm, c.name, "A"); status != "NXDOMAIN" || answer != "" {
				t.Errorf("%s: %s: %s %q, want NXDOMAIN", c.vm.Name, c.name, status, answer)
			}
		}
		// beta's address is network A's: from B its PTR is not answered
		// locally (unbound, the upstream, knows nothing of it).
		if status, answer := e.status(gamma, reverse(t, e.ports["beta"].IPs[0]), "PTR"); strings.Contains(answer, "beta") {
			t.Errorf("gamma sees beta's PTR: %s %q", status, answer)
		}
	})
	t.Run("external names forwarded", func(t *testing.T) {
		e.eventually(5*time.Second, gamma, "www.example.test", "A", "192.0.2.10")
	})
	t.Run("renamed port", func(t *testing.T) {
		must(t, e.neutron.UpdatePortDNSName(e.ports["beta"].ID, "bravo"))
		e.eventually(10*time.Second, alpha, "bravo.cloud.test", "A", ip("beta", 0))
		if status, _ := e.status(alpha, "beta.cloud.test", "A"); status != "NXDOMAIN" {
			t.Errorf("old name: %s", status)
		}
	})
	t.Run("deleted port", func(t *testing.T) {
		must(t, e.neutron.DeletePort(e.ports["delta"].ID))
		deadline := time.Now().Add(10 * time.Second)
		for {
			if status, _ := e.status(gamma, "delta.cloud.test", "A"); status == "NXDOMAIN" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a deleted port's name still answered")
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	t.Run("neutron API stopped", func(t *testing.T) {
		must(t, e.neutron.StopServer())
		time.Sleep(3 * time.Second) // more than one resync interval
		e.eventually(5*time.Second, beta, "alpha.cloud.test", "A", ip("alpha", 0))
		must(t, e.neutron.StartServer())
	})
	t.Run("agent restarted", func(t *testing.T) {
		must(t, e.neutron.RestartAgent())
		cleaned, err := e.neutron.WaitStaleFlowCleanup(2 * time.Minute)
		must(t, err)
		// The agent deleted our flows with every other foreign cookie;
		// they are back within a second of its cleanup.
		for {
			flows, err := e.lab.DumpFlows(flowCookie)
			if err == nil && len(flows) >= 2+2*len(e.vms) {
				break
			}
			if time.Since(cleaned) > time.Second {
				t.Fatalf("%d daemon flows %v after the agent's cleanup (%v)", len(flows), time.Since(cleaned), err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("flows back %v after the agent's cleanup", time.Since(cleaned))
		e.eventually(5*time.Second, alpha, "alpha.cloud.test", "A", ip("alpha", 0))
	})
	_ = p.Stop()

	t.Run("interception", func(t *testing.T) {
		// An outside resolver on the gateway 10.0.0.1:53, reachable from
		// network A through the agent's pipeline.
		must(t, e.neutron.ConnectGateway(alpha))
		var outside atomic.Int32
		var conn net.PacketConn
		must(t, e.lab.InNetNS(func() error {
			var err error
			conn, err = net.ListenPacket("udp4", "10.0.0.1:53")
			return err
		}))
		defer conn.Close()
		go func() {
			buf := make([]byte, 4096)
			for {
				n, from, err := conn.ReadFrom(buf)
				if err != nil {
					return
				}
				req := new(dns.Msg)
				if req.Unpack(buf[:n]) != nil || len(req.Question) != 1 {
					continue
				}
				outside.Add(1)
				conn.WriteTo(answerA(req, "192.0.2.53"), from)
			}
		}()
		e.startNamesDaemon("forwarder-intercept", "intercept_all_dns = true")
		q := func(name string) string {
			return strings.TrimSpace(e.dig(alpha, "@10.0.0.1", name, "A", "+short", "+time=2", "+tries=2"))
		}
		if got := q("bravo.cloud.test"); got != ip("beta", 0) || outside.Load() != 0 {
			t.Errorf("local name via an outside resolver: %q, the outside resolver saw %d queries", got, outside.Load())
		}
		if got := q("www.external.example"); got != "192.0.2.53" || outside.Load() != 1 {
			t.Errorf("external name: %q, the outside resolver saw %d queries, want 1", got, outside.Load())
		}
	})
}
