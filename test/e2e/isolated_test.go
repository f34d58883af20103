package e2e

import (
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
)

// responderMAC is the daemon's default responder MAC (pipeline's
// DefaultResponderMAC), as ip neigh prints it.
const responderMAC = "02:44:4e:53:00:01"

// forgetNeighbours deletes the VM's permanent neighbour entries for the
// gateways that AddNeutronVM added (they hide an isolated network's missing
// router) and its cached entries, so that the VM must resolve them again.
func forgetNeighbours(t *testing.T, vm *lab.VM) {
	t.Helper()
	out, err := vm.Command(t.Context(), "ip", "neigh", "flush", "dev", "eth0", "nud", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("%s: ip neigh flush: %v: %s", vm.Name, err, out)
	}
	out, err = vm.Command(t.Context(), "ip", "-6", "neigh", "flush", "dev", "eth0", "nud", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("%s: ip -6 neigh flush: %v: %s", vm.Name, err, out)
	}
}

// neighbourMAC returns the MAC the VM's neighbour table has for addr, ""
// when it has none.
func neighbourMAC(t *testing.T, vm *lab.VM, addr string) string {
	t.Helper()
	out, err := vm.Command(t.Context(), "ip", "neigh", "show", addr, "dev", "eth0").CombinedOutput()
	if err != nil {
		t.Fatalf("%s: ip neigh show %s: %v: %s", vm.Name, addr, err, out)
	}
	f := strings.Fields(string(out))
	for i := range len(f) - 1 {
		if f[i] == "lladdr" {
			return f[i+1]
		}
	}
	return ""
}

// arpReplies runs arping for addr from the VM and returns the MACs that
// replied (upper case, as arping prints them).
func arpReplies(t *testing.T, vm *lab.VM, addr string) []string {
	t.Helper()
	out, _ := vm.Command(t.Context(), "arping", "-c", "2", "-w", "2", "-I", "eth0", addr).CombinedOutput()
	var macs []string
	for _, m := range regexp.MustCompile(`reply from \S+ \[([0-9A-F:]+)\]`).FindAllStringSubmatch(string(out), -1) {
		macs = append(macs, m[1])
	}
	return macs
}

// TestNeutronIsolatedNetwork checks DNS on an isolated overlay network of a
// real Neutron (VXLAN, no router): the VMs route 169.254.169.254 and
// fd00::254 via their subnets' gateways, which no port holds, and get no
// static neighbour entry; the daemon's flows answer ARP and NS for those
// gateways (and ARP for 169.254.169.254 on an on-link route), never for a
// port's own address.
func TestNeutronIsolatedNetwork(t *testing.T) {
	e := newNeutronEnv(t)
	// No resync while the test runs: every change it sees comes from the
	// bridge (a new port triggers a sync at once).
	e.startNamesDaemon("forwarder", "records_resync_interval = 3600")
	alpha, beta, gamma := e.vm["alpha"], e.vm["beta"], e.vm["gamma"]
	var gateway4, gateway6 netip.Addr
	for _, id := range e.ports["alpha"].SubnetIDs {
		s, err := e.neutron.GetSubnet(id)
		must(t, err)
		if s.CIDR.Addr().Is4() {
			gateway4 = s.Gateway
		} else {
			gateway6 = s.Gateway
		}
	}
	for _, vm := range []*lab.VM{alpha, beta, gamma} {
		forgetNeighbours(t, vm)
	}

	t.Run("gateway answered from flows", func(t *testing.T) {
		e.eventually(10*time.Second, alpha, "beta.cloud.test", "A", e.ports["beta"].IPs[0].String())
		// The flows answer. (The lab namespace holds the gateway address
		// on the bridge's LOCAL port for the older tests, and its kernel
		// may answer too, on the VM's veth end: a harness artefact.)
		want := strings.ToUpper(responderMAC)
		if macs := arpReplies(t, alpha, gateway4.String()); !slices.Contains(macs, want) {
			t.Errorf("ARP for the gateway %s from alpha answered by %v, want %s among them", gateway4, macs, want)
		}
		// Network B (same CIDR, same gateway address) too.
		e.eventually(10*time.Second, gamma, "www.example.test", "A", "192.0.2.10")
	})
	t.Run("IPv6 gateway and service address", func(t *testing.T) {
		out := e.dig(alpha, "@fd00::254", "beta.cloud.test", "AAAA", "+short", "+time=2", "+tries=3")
		if !strings.Contains(out, e.ports["beta"].IPs[1].String()) {
			t.Errorf("AAAA over fd00::254 via %s: %q", gateway6, out)
		}
		if got := neighbourMAC(t, alpha, gateway6.String()); got != responderMAC {
			t.Errorf("alpha's neighbour entry for %s: %q, want %s", gateway6, got, responderMAC)
		}
		// An on-link route to fd00::254: its own solicitation is answered.
		out2, err := alpha.Command(t.Context(), "ip", "-6", "route", "replace", "fd00::254/128", "dev", "eth0").CombinedOutput()
		if err != nil {
			t.Fatalf("on-link route: %v: %s", err, out2)
		}
		out = e.dig(alpha, "@fd00::254", "beta.cloud.test", "AAAA", "+short", "+time=2", "+tries=3")
		if !strings.Contains(out, e.ports["beta"].IPs[1].String()) {
			t.Errorf("AAAA over an on-link fd00::254: %q", out)
		}
		if got := neighbourMAC(t, alpha, "fd00::254"); got != responderMAC {
			t.Errorf("alpha's neighbour entry for fd00::254: %q, want %s", got, responderMAC)
		}
	})
	t.Run("on-link 169.254.169.254", func(t *testing.T) {
		out, err := beta.Command(t.Context(), "ip", "route", "replace", "169.254.169.254/32", "dev", "eth0").CombinedOutput()
		if err != nil {
			t.Fatalf("on-link route: %v: %s", err, out)
		}
		e.eventually(10*time.Second, beta, "alpha.cloud.test", "A", e.ports["alpha"].IPs[0].String())
		if got := neighbourMAC(t, beta, "169.254.169.254"); got != responderMAC {
			t.Errorf("beta's neighbour entry for 169.254.169.254: %q, want %s", got, responderMAC)
		}
	})
	t.Run("a port's address answered only by the port", func(t *testing.T) {
		want := strings.ToUpper(e.ports["beta"].MAC.String())
		macs := arpReplies(t, alpha, e.ports["beta"].IPs[0].String())
		if len(macs) == 0 {
			t.Fatalf("no ARP reply for beta's address")
		}
		for _, m := range macs {
			if m != want {
				t.Errorf("ARP for beta's address answered by %s, want only %s", m, want)
			}
		}
	})
}
