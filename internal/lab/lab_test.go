package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var smokeZone = Zone{Origin: "example.test.", Records: []string{
	"www.example.test. 300 IN A 192.0.2.10",
	"www.example.test. 300 IN AAAA 2001:db8::10",
	"alias.example.test. 300 IN CNAME www.example.test.",
	`txt.example.test. 300 IN TXT "hello world"`,
}}

// fakeDaemon stands in for the daemon: it prints its arguments and exits
// with status 0 on SIGTERM, which shows that signals reach it.
const fakeDaemon = `#!/bin/sh
trap 'echo terminated; exit 0' TERM
echo "args: $*"
while :; do sleep 0.05; done
`

func TestSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts Open vSwitch in network namespaces")
	}
	if err := EnsurePackages(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	l, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start: %v", time.Since(begin))
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = l.Close()
		}
	})
	if l.GatewayMAC.String() != gatewayHWAddr {
		t.Errorf("GatewayMAC %s, want %s", l.GatewayMAC, gatewayHWAddr)
	}

	var vms []*VM
	for i := 1; i <= 2; i++ {
		begin = time.Now()
		vm, err := l.AddVM(fmt.Sprintf("vm%d", i))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("AddVM: %v (ofport %d)", time.Since(begin), vm.OFPort)
		vms = append(vms, vm)
	}
	if mac, err := l.linkMAC(l.Bridge); err != nil || mac.String() != gatewayHWAddr {
		t.Errorf("LOCAL port MAC after plugging VMs: %v %v, want %s", mac, err, gatewayHWAddr)
	}
	if flows, err := l.DumpFlows(AgentCookie); err != nil || len(flows) != 6 {
		t.Errorf("agent flows: %v %q, want 6", err, flows)
	}

	begin = time.Now()
	srv, err := l.StartUnbound(smokeZone)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("StartUnbound: %v (port %d)", time.Since(begin), srv.Port)

	before := vmFlowPackets(t, l, vms[0])
	checkDig(t, l, vms[0], srv)
	if after := vmFlowPackets(t, l, vms[0]); after <= before {
		t.Errorf("VM1's table-60 flow matched no packet (%d -> %d): the queries bypassed the pipeline", before, after)
	}
	ping(t, vms[0], vms[1])

	checkInNetNS(t, l)
	daemon := checkDaemon(t, l)

	oldVswitchd, err := l.VswitchdPID()
	if err != nil {
		t.Fatal(err)
	}
	begin = time.Now()
	if err := l.RestartVswitchd(); err != nil {
		t.Fatal(err)
	}
	t.Logf("RestartVswitchd: %v", time.Since(begin))
	if flows, err := l.DumpFlows(AgentCookie); err != nil || len(flows) != 6 {
		t.Errorf("agent flows after restart: %v %q, want 6", err, flows)
	}
	if pid, err := l.VswitchdPID(); err != nil || pid == oldVswitchd {
		t.Errorf("VswitchdPID after restart: %d, %v; before: %d", pid, err, oldVswitchd)
	}
	checkDig(t, l, vms[1], srv)
	ping(t, vms[1], vms[0])

	pids := []int{srv.PID, daemon.PID, l.ovsdb.pid, l.vswitchd.pid}
	namespaces := []string{l.NetNS, vms[0].NetNS, vms[1].NetNS}
	dir := l.Dir
	begin = time.Now()
	closed = true
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close: %v", time.Since(begin))
	for _, pid := range pids {
		// A detached OVS daemon may linger a moment as a zombie of init.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(b), ") Z ") {
			t.Errorf("pid %d survived Close: %s", pid, b)
		}
	}
	out, err := run(cmdTimeout, nil, "", "ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range namespaces {
		if strings.Contains(out, ns) {
			t.Errorf("namespace %s survived Close:\n%s", ns, out)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s survived Close: %v", dir, err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// checkDig asks the unbound behind the gateway from vm over IPv4 and IPv6.
func checkDig(t *testing.T, l *Lab, vm *VM, srv *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	port := "-p" + strconv.Itoa(int(srv.Port))
	for _, c := range []struct{ server, name, qtype, want string }{
		{l.Gateway4.String(), "www.example.test", "A", "192.0.2.10"},
		{l.Gateway6.String(), "www.example.test", "A", "192.0.2.10"},
		{l.Gateway4.String(), "www.example.test", "AAAA", "2001:db8::10"},
		{l.Gateway6.String(), "alias.example.test", "CNAME", "www.example.test."},
		{l.Gateway4.String(), "txt.example.test", "TXT", `"hello world"`},
	} {
		out, err := vm.Dig(ctx, "@"+c.server, port, "+short", c.name, c.qtype)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(out); got != c.want {
			t.Errorf("%s: dig @%s %s %s = %q, want %q", vm.Name, c.server, c.name, c.qtype, got, c.want)
		}
	}
	out, err := vm.Dig(ctx, "@"+l.Gateway4.String(), port, "nothing.invalid", "A")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "status: NXDOMAIN") {
		t.Errorf("%s: a name outside the zones did not give NXDOMAIN:\n%s", vm.Name, out)
	}
}

// ping checks IPv4 and IPv6 between two VMs.
func ping(t *testing.T, from, to *VM) {
	t.Helper()
	for _, addr := range []string{to.IPv4.String(), to.IPv6.String()} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := from.Command(ctx, "ping", "-c", "1", "-W", "5", addr).CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("%s: ping %s: %v\n%s", from.Name, addr, err, out)
		}
	}
}

// vmFlowPackets returns n_packets of vm's table-60 flow.
func vmFlowPackets(t *testing.T, l *Lab, vm *VM) int {
	t.Helper()
	out, err := l.Ofctl("dump-flows", l.Bridge, fmt.Sprintf("table=60,in_port=%d", vm.OFPort))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(out, "n_packets=")
	if !ok {
		t.Fatalf("no flow for in_port=%d in table 60:\n%s", vm.OFPort, out)
	}
	n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
	return n
}

// checkInNetNS checks that InNetNS runs fn in the lab namespace and
// returns the thread to its own.
func checkInNetNS(t *testing.T, l *Lab) {
	t.Helper()
	var own, inside, lab unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &own); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(filepath.Join("/var/run/netns", l.NetNS), &lab); err != nil {
		t.Fatal(err)
	}
	err := l.InNetNS(func() error {
		return unix.Stat("/proc/thread-self/ns/net", &inside)
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside.Ino != lab.Ino {
		t.Errorf("fn ran in namespace %d, want the lab's %d", inside.Ino, lab.Ino)
	}
	var after unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &after); err != nil {
		t.Fatal(err)
	}
	if after.Ino != own.Ino {
		t.Errorf("after InNetNS the goroutine runs in namespace %d, want %d", after.Ino, own.Ino)
	}
}

// checkDaemon starts a fake daemon and checks its arguments, its
// namespace, its log and that SIGTERM reaches it; it returns a second
// instance left running for Close.
func checkDaemon(t *testing.T, l *Lab) *Process {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fake-daemon")
	if err := os.WriteFile(bin, []byte(fakeDaemon), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := l.StartDaemon(bin, "fake", "[DEFAULT]\n", "--extra")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(l.Dir, "fake.conf")
	want := "args: --config-file " + conf + " --extra\n"
	err = poll(5*time.Second, "fake daemon's log", func() (bool, error) {
		b, err := os.ReadFile(p.LogPath)
		return string(b) == want, err
	})
	if err != nil {
		t.Fatal(err)
	}
	var lab, ns unix.Stat_t
	if err := unix.Stat(filepath.Join("/var/run/netns", l.NetNS), &lab); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", p.PID), &ns); err != nil {
		t.Fatal(err)
	}
	if ns.Ino != lab.Ino {
		t.Errorf("daemon runs in namespace %d, want the lab's %d", ns.Ino, lab.Ino)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("Stop: %v (SIGTERM did not reach the daemon?)", err)
	}
	if b, _ := os.ReadFile(p.LogPath); !strings.HasSuffix(string(b), "terminated\n") {
		t.Errorf("daemon log %q: SIGTERM not seen", b)
	}
	if err := p.Signal(syscall.SIGTERM); err != os.ErrProcessDone {
		t.Errorf("Signal after exit: %v, want os.ErrProcessDone", err)
	}
	p, err = l.StartDaemon(bin, "fake2", "")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStartFailureCleansUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	if err := EnsurePackages(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// A directory where the database should go makes ovsdb-tool fail after
	// the namespace exists.
	if err := os.MkdirAll(filepath.Join(dir, "run", "conf.db"), 0o755); err != nil {
		t.Fatal(err)
	}
	before, err := run(cmdTimeout, nil, "", "ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	l, err := Start(Options{Dir: dir})
	if err == nil {
		l.Close()
		t.Fatal("Start succeeded")
	}
	if !strings.Contains(err.Error(), "ovsdb-tool create") {
		t.Errorf("error does not name the failing command: %v", err)
	}
	after, err := run(cmdTimeout, nil, "", "ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(after, "\n") {
		if strings.HasPrefix(line, "odf-") && !strings.Contains(before, line) {
			t.Errorf("namespace %q left behind", line)
		}
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("a given Dir must be kept: %v", err)
	}
}

func TestMissingPackages(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	got := missingPackages()
	want := []string{"openvswitch-switch", "bind9-dnsutils", "dnsperf", "tcpdump", "ethtool",
		"iproute2", "iputils-ping", "iputils-arping", "procps", "unbound"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("missingPackages() = %q, want %q", got, want)
	}
}

// fakeAptGet records its arguments and whether services were blocked.
const fakeAptGet = `#!/bin/sh
blocked=no
if [ -x /usr/sbin/policy-rc.d ] && ! /usr/sbin/policy-rc.d; then blocked=yes; fi
echo "$DEBIAN_FRONTEND $blocked $*" >> "$APT_LOG"
`

func TestInstallPackages(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: writes /usr/sbin/policy-rc.d")
	}
	_, statErr := os.Stat(policyRCD)
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "apt-get"), []byte(fakeAptGet), 0o755); err != nil {
		t.Fatal(err)
	}
	aptLog := filepath.Join(bin, "log")
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	t.Setenv("APT_LOG", aptLog)
	pkgMu.Lock()
	defer pkgMu.Unlock()
	updated := pkgUpdated
	pkgUpdated = false
	defer func() { pkgUpdated = updated }()
	for range 2 {
		if err := installPackages([]string{"dnsperf", "unbound"}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(aptLog)
	if err != nil {
		t.Fatal(err)
	}
	want := "noninteractive yes update\n" +
		"noninteractive yes install -y --no-install-recommends dnsperf unbound\n" +
		"noninteractive yes install -y --no-install-recommends dnsperf unbound\n"
	if string(b) != want {
		t.Errorf("apt-get calls:\n%s\nwant:\n%s", b, want)
	}
	if _, err := os.Stat(policyRCD); os.IsNotExist(err) != os.IsNotExist(statErr) {
		t.Errorf("%s: existed before: %v, after: %v", policyRCD, statErr == nil, err == nil)
	}
}
