package lab

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// outsideDirs are the distribution's own places of the stack's programs;
// a lab Neutron must leave them as they were.
var outsideDirs = []string{
	"/var/lib/rabbitmq", "/var/log/rabbitmq", "/var/lib/neutron", "/var/log/neutron",
	"/var/lib/mysql", "/run/mysqld", "/var/log/mysql", "/root", "/etc/neutron", "/etc/rabbitmq",
}

// listDirs lists the names in dirs (one level), for before/after checks.
func listDirs() map[string][]string {
	m := map[string][]string{}
	for _, d := range outsideDirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			m[d] = append(m[d], e.Name())
		}
	}
	return m
}

// stackRSS sums the resident memory (kB) of pids and their descendants.
func stackRSS(pids []int) int {
	seen := map[int]bool{}
	var all []int
	for _, p := range pids {
		all = append(all, p)
		for _, d := range descendants(p) {
			all = append(all, d.pid)
		}
	}
	total := 0
	for _, p := range all {
		if seen[p] {
			continue
		}
		seen[p] = true
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.Atoi(f[1])
				total += kb
			}
		}
	}
	return total
}

// pingOnce runs one ping from vm and reports whether it was answered.
func pingOnce(vm *VM, addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return vm.Command(ctx, "ping", "-c", "1", "-W", "1", addr).Run() == nil
}

// pingEventually pings up to tries times.
func pingEventually(vm *VM, addr string, tries int) bool {
	for range tries {
		if pingOnce(vm, addr) {
			return true
		}
	}
	return false
}

func TestNeutron(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs Open vSwitch and Neutron in network namespaces")
	}
	if testing.Short() {
		t.Skip("starts a real Neutron (about a minute)")
	}
	if err := EnsureNeutronPackages(); err != nil {
		t.Fatal(err)
	}
	before := listDirs()
	l, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })

	begin := time.Now()
	n, err := l.StartNeutron(NeutronOptions{DNSDomain: "cloud.test."})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("StartNeutron: %v (URL %s, host %s; %s)", time.Since(begin), n.URL, n.Host, strings.Join(n.phases, ", "))
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = n.Stop()
		}
	})
	if _, err := n.WaitStaleFlowCleanup(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("stale-flow cleanup done %v after StartNeutron began", time.Since(begin))
	if flows, err := l.DumpFlows(AgentCookie); err != nil || len(flows) != 0 {
		t.Errorf("lab flows after the agent's cleanup: %v %q, want none", err, flows)
	}

	netA, err := n.CreateNetwork("net-a")
	if err != nil {
		t.Fatal(err)
	}
	netB, err := n.CreateNetwork("net-b")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{netA, netB} {
		if _, err := n.CreateSubnet(id, "10.0.0.0/24", 4); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.CreateSubnet(netA, "fd00:10::/64", 6); err != nil {
		t.Fatal(err)
	}
	pa1, err := n.CreatePort(netA, "alpha", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(pa1.IPs) != 2 || !pa1.IPs[0].Is4() {
		t.Fatalf("port a1: IPs %v, want one IPv4 and one IPv6", pa1.IPs)
	}
	pa2, err := n.CreatePort(netA, "beta", "")
	if err != nil {
		t.Fatal(err)
	}
	// The same name and address on the other network.
	pb1, err := n.CreatePort(netB, "alpha", pa1.IPs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []Port{pa1, pa2, pb1} {
		if len(p.DNSAssignment) != len(p.IPs) || len(p.IPs) == 0 {
			t.Fatalf("port %s: dns_assignment %+v for IPs %v", p.ID, p.DNSAssignment, p.IPs)
		}
		for _, d := range p.DNSAssignment {
			if want := p.DNSName + ".cloud.test."; d.FQDN != want || d.Hostname != p.DNSName {
				t.Errorf("port %s: dns_assignment %+v, want fqdn %s", p.ID, d, want)
			}
		}
	}

	var vms []*VM
	for i, p := range []Port{pa1, pa2, pb1} {
		begin := time.Now()
		vm, err := l.AddNeutronVM([]string{"va1", "va2", "vb1"}[i], n, p)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("AddNeutronVM %s: %v (ofport %d, %v %v)", vm.Name, time.Since(begin), vm.OFPort, vm.IPv4, vm.IPv6)
		vms = append(vms, vm)
	}
	va1, va2, vb1 := vms[0], vms[1], vms[2]
	tagA, uuidA, errA := l.VMPortVLAN(va1)
	tagB, uuidB, errB := l.VMPortVLAN(vb1)
	if errA != nil || errB != nil || uuidA != netA || uuidB != netB || tagA == tagB {
		t.Errorf("OVSDB: va1 tag %d net %s (%v), vb1 tag %d net %s (%v); want nets %s and %s, tags differing",
			tagA, uuidA, errA, tagB, uuidB, errB, netA, netB)
	}
	if p, err := n.GetPort(pa1.ID); err != nil || p.Status != "ACTIVE" || p.HostID != n.Host {
		t.Errorf("port a1 after plugging: %+v %v", p, err)
	}
	t.Logf("stack RSS with 3 VMs: %d MB", stackRSS(n.pids())/1024)

	checkNet := func(stage string) {
		t.Helper()
		if !pingEventually(va1, va2.IPv4.String(), 5) {
			t.Errorf("%s: va1 cannot ping va2 (%s) on the same network", stage, va2.IPv4)
		}
		if !pingEventually(va2, va1.IPv6.String(), 5) {
			t.Errorf("%s: va2 cannot ping va1 (%s) on the same network", stage, va1.IPv6)
		}
		if pingOnce(vb1, va2.IPv4.String()) {
			t.Errorf("%s: vb1 pings va2 (%s) on the other network", stage, va2.IPv4)
		}
		if !pingEventually(va1, l.Gateway4.String(), 5) {
			t.Errorf("%s: va1 cannot ping the gateway %s", stage, l.Gateway4)
		}
		if pingOnce(vb1, l.Gateway4.String()) {
			t.Errorf("%s: vb1 pings the gateway %s of the other network", stage, l.Gateway4)
		}
	}
	if err := n.ConnectGateway(va1); err != nil {
		t.Fatal(err)
	}
	checkNet("after plugging")

	if err := n.UpdatePortDNSName(pa2.ID, "gamma"); err != nil {
		t.Fatal(err)
	}
	if p, err := n.GetPort(pa2.ID); err != nil || len(p.DNSAssignment) == 0 || p.DNSAssignment[0].FQDN != "gamma.cloud.test." {
		t.Errorf("renamed port: %+v %v", p, err)
	}

	oldAgent := n.AgentPID()
	begin = time.Now()
	if err := n.RestartAgent(); err != nil {
		t.Fatal(err)
	}
	t.Logf("RestartAgent: %v", time.Since(begin))
	if n.AgentPID() == oldAgent || n.AgentPID() == 0 {
		t.Errorf("agent PID %d after restart, was %d", n.AgentPID(), oldAgent)
	}
	if _, err := n.WaitStaleFlowCleanup(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("stale-flow cleanup of the restarted agent: %v after RestartAgent began", time.Since(begin))
	checkNet("after RestartAgent")

	if err := n.StopServer(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.GetPort(pa1.ID); err == nil {
		t.Error("API answers after StopServer")
	}
	if !pingEventually(va1, va2.IPv4.String(), 3) {
		t.Error("va1 cannot ping va2 while the API is down")
	}
	begin = time.Now()
	if err := n.StartServer(); err != nil {
		t.Fatal(err)
	}
	t.Logf("StartServer: %v", time.Since(begin))
	if p, err := n.GetPort(pa2.ID); err != nil || p.DNSName != "gamma" {
		t.Errorf("port after StartServer: %+v %v", p, err)
	}
	extra, err := n.CreatePort(netB, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(extra.DNSAssignment) != 1 || !strings.HasPrefix(extra.DNSAssignment[0].FQDN, "host-10-0-0-") {
		t.Errorf("port without dns_name: %+v", extra.DNSAssignment)
	}
	if err := n.DeletePort(extra.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := n.GetPort(extra.ID); !IsNotFound(err) {
		t.Errorf("deleted port: %v, want 404", err)
	}

	pids := n.pids()
	begin = time.Now()
	if err := n.Stop(); err != nil {
		t.Error(err)
	}
	stopped = true
	t.Logf("Stop: %v", time.Since(begin))
	for _, pid := range pids {
		if _, _, ok := procStat(pid); ok {
			t.Errorf("pid %d still runs after Stop", pid)
		}
	}
	if s := n.strays(); len(s) > 0 {
		t.Errorf("processes left after Stop: %v", s)
	}
	dir := l.Dir
	if err := l.Close(); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("lab dir %s left", dir)
	}
	after := listDirs()
	for d, names := range after {
		for _, name := range names {
			if !slices.Contains(before[d], name) {
				t.Errorf("new file %s after the test", filepath.Join(d, name))
			}
		}
	}
}
