// Package lab is a real Open vSwitch test harness for the end-to-end tests,
// the benchmark and the demo. It needs root.
//
// A Lab is a network namespace of its own in which a private ovsdb-server
// and ovs-vswitchd (userspace datapath) run, with sockets, database and
// logs under the lab's directory. Its bridge carries a Neutron-like br-int
// pipeline; the bridge's LOCAL port (a tap in the lab namespace) is the
// gateway 10.0.0.1 / fd00:10::1 on which the lab's DNS servers listen. VMs
// are further namespaces, each on a veth port of the bridge with the
// identity the Neutron OVS agent would give it.
//
// The harness touches only what it created: it never starts the
// distribution's openvswitch service, signals only the processes it
// started (by PID), deletes only its own namespaces, and sends traffic only
// inside them. Close undoes everything, also after a partial Start.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// AgentCookie is the cookie of the flows the lab installs in place of the
// Neutron OVS agent ("neutron" in ASCII); it differs from the daemon's.
const AgentCookie uint64 = 0x6e657574726f6e

// gatewayHWAddr is the fixed MAC of the bridge's LOCAL port. Without it
// Open vSwitch would give the bridge the lowest MAC among its ports, which
// changes as VMs are plugged in.
const gatewayHWAddr = "fa:16:3e:ff:00:01"

// maxUnixPath is the longest socket path a sockaddr_un holds.
const maxUnixPath = 107

// Options configures Start.
type Options struct {
	// Dir holds the lab's files (run/ for OVS, configs, logs). Empty means
	// a new temporary directory, which Close removes; a given directory is
	// created when missing and kept, and must not hold a lab's files
	// already (Start fails rather than reuse a database).
	Dir string
	// Bridge is the integration bridge's name; empty means "br-int".
	Bridge string
}

// Lab is a running Open vSwitch in a network namespace of its own. Its
// methods may be called from several goroutines.
type Lab struct {
	// Dir is the lab's directory.
	Dir string
	// RunDir is Dir/run: OVS_RUNDIR, OVS_DBDIR and OVS_LOGDIR of the daemons.
	RunDir string
	// NetNS is the lab's network namespace ("odf-<random hex>").
	NetNS string
	// Bridge is the integration bridge.
	Bridge string
	// GatewayMAC is the MAC of the bridge's LOCAL port.
	GatewayMAC net.HardwareAddr
	// Gateway4 is the LOCAL port's IPv4 address, 10.0.0.1.
	Gateway4 netip.Addr
	// Gateway6 is the LOCAL port's IPv6 address, fd00:10::1.
	Gateway6 netip.Addr

	id      string // random hex shared by every name the lab creates
	ownsDir bool

	mu     sync.Mutex
	closed bool
	// cleanups run first when the lab closes, last registered first.
	cleanups   []func() error
	namespaces []string // created, in creation order
	ovsdb      daemon
	vswitchd   daemon
	vmCount    int   // VMs begun, failed ones included: names and addresses are never reused
	vms        []*VM // VMs plugged in
	procs      []*Process
}

// Start creates a lab: a unique network namespace, ovsdb-server and
// ovs-vswitchd (datapath_type=netdev) inside it with their files under
// Dir/run, the bridge (fail_mode=secure, OpenFlow 1.0/1.3/1.4) with the
// pipeline flows of cookie AgentCookie, and the LOCAL port configured as
// the gateway. On failure it cleans up what it made.
func Start(opts Options) (l *Lab, err error) {
	id, err := randomHex(3)
	if err != nil {
		return nil, err
	}
	l = &Lab{
		Dir:      opts.Dir,
		NetNS:    "odf-" + id,
		Bridge:   opts.Bridge,
		Gateway4: netip.MustParseAddr("10.0.0.1"),
		Gateway6: netip.MustParseAddr("fd00:10::1"),
		id:       id,
	}
	if l.Bridge == "" {
		l.Bridge = "br-int"
	}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("lab: start: %w", err), l.Close())
			l = nil
		}
	}()
	if len(l.Bridge) > 15 || strings.ContainsAny(l.Bridge, "/ \t\n") {
		return l, fmt.Errorf("bad bridge name %q (at most 15 characters, no slash or space)", l.Bridge)
	}
	if l.Dir == "" {
		if l.Dir, err = os.MkdirTemp("", "odf-lab-"); err != nil {
			return l, err
		}
		l.ownsDir = true
	}
	if l.Dir, err = filepath.Abs(l.Dir); err != nil {
		return l, err
	}
	l.RunDir = filepath.Join(l.Dir, "run")
	if len(l.RunDir)+len("/.mgmt")+len(l.Bridge) > maxUnixPath {
		return l, fmt.Errorf("directory %s too long for the bridge's unix socket", l.Dir)
	}
	if err := os.MkdirAll(l.RunDir, 0o755); err != nil {
		return l, err
	}
	if err := l.addNamespace(l.NetNS); err != nil {
		return l, err
	}
	if err := l.startOVS(); err != nil {
		return l, err
	}
	_, err = l.Vsctl("add-br", l.Bridge, "--", "set", "Bridge", l.Bridge,
		"datapath_type=netdev", "fail_mode=secure",
		"protocols=OpenFlow10,OpenFlow13,OpenFlow14",
		"other_config:hwaddr="+gatewayHWAddr)
	if err != nil {
		return l, err
	}
	if err := l.setupGateway(); err != nil {
		return l, err
	}
	return l, l.addFlows(l.pipelineFlows(nil))
}

// randomHex returns n random bytes in hex.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("lab: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// addNamespace creates a network namespace, records it for Close and
// quiets IPv6 in it: no router solicitations, no autoconfiguration, no
// duplicate address detection on the interfaces created later.
func (l *Lab) addNamespace(ns string) error {
	if err := ip("netns", "add", ns); err != nil {
		return err
	}
	l.mu.Lock()
	l.namespaces = append(l.namespaces, ns)
	l.mu.Unlock()
	_, err := inNS(ns, nil, "sysctl", "-q", "-w",
		"net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0",
		"net.ipv6.conf.default.router_solicitations=0",
		"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	if err != nil {
		return err
	}
	return ip("-n", ns, "link", "set", "lo", "up")
}

// startOVS creates the database and starts ovsdb-server and ovs-vswitchd
// in the lab namespace.
func (l *Lab) startOVS() error {
	db := filepath.Join(l.RunDir, "conf.db")
	if _, err := run(cmdTimeout, l.Env(), "", "ovsdb-tool", "create", db, ovsSchema); err != nil {
		return err
	}
	_, err := inNS(l.NetNS, l.Env(), "ovsdb-server", db,
		"--remote=punix:"+l.dbSocket(), "--pidfile", "--detach", "--log-file")
	if err != nil {
		return err
	}
	d, err := readPidfile(filepath.Join(l.RunDir, "ovsdb-server.pid"), "ovsdb-server")
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.ovsdb = d
	l.mu.Unlock()
	if _, err := l.vsctl(true, "init"); err != nil {
		return err
	}
	return l.startVswitchd()
}

// startVswitchd starts ovs-vswitchd in the lab namespace and records its PID.
func (l *Lab) startVswitchd() error {
	_, err := inNS(l.NetNS, l.Env(), "ovs-vswitchd", "unix:"+l.dbSocket(),
		"--pidfile", "--detach", "--log-file")
	if err != nil {
		return err
	}
	d, err := readPidfile(filepath.Join(l.RunDir, "ovs-vswitchd.pid"), "ovs-vswitchd")
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.vswitchd = d
	l.mu.Unlock()
	return nil
}

// dbSocket is ovsdb-server's unix socket.
func (l *Lab) dbSocket() string { return filepath.Join(l.RunDir, "db.sock") }

// setupGateway waits for the LOCAL port's tap, gives it the gateway
// addresses, brings it up and records its MAC.
func (l *Lab) setupGateway() error {
	var mac net.HardwareAddr
	err := poll(10*time.Second, "tap "+l.Bridge+" in "+l.NetNS, func() (bool, error) {
		var err error
		mac, err = l.linkMAC(l.Bridge)
		return err == nil, err
	})
	if err != nil {
		return err
	}
	batch := fmt.Sprintf("addr replace %s/24 dev %s\naddr replace %s/64 dev %s nodad\nlink set %s up\n",
		l.Gateway4, l.Bridge, l.Gateway6, l.Bridge, l.Bridge)
	if _, err := run(cmdTimeout, nil, batch, "ip", "-n", l.NetNS, "-batch", "-"); err != nil {
		return err
	}
	if l.GatewayMAC == nil {
		l.GatewayMAC = mac
	} else if mac.String() != l.GatewayMAC.String() {
		return fmt.Errorf("gateway MAC changed from %s to %s", l.GatewayMAC, mac)
	}
	return nil
}

// linkMAC returns the MAC of a link in the lab namespace.
func (l *Lab) linkMAC(dev string) (net.HardwareAddr, error) {
	out, err := run(cmdTimeout, nil, "", "ip", "-n", l.NetNS, "-j", "link", "show", "dev", dev)
	if err != nil {
		return nil, err
	}
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return nil, fmt.Errorf("ip -j link show %s: unexpected output %q", dev, out)
	}
	return net.ParseMAC(links[0].Address)
}

// pipelineFlows returns the Neutron-like pipeline: the base flows and one
// table-60 flow per VM (when vms is nil: the base flows only).
func (l *Lab) pipelineFlows(vms []*VM) string {
	var b strings.Builder
	fmt.Fprintf(&b, "cookie=%#x,table=0,priority=0,actions=resubmit(,59)\n", AgentCookie)
	fmt.Fprintf(&b, "cookie=%#x,table=59,priority=0,actions=resubmit(,60)\n", AgentCookie)
	fmt.Fprintf(&b, "cookie=%#x,table=60,priority=3,actions=NORMAL\n", AgentCookie)
	fmt.Fprintf(&b, "cookie=%#x,table=94,priority=1,actions=NORMAL\n", AgentCookie)
	for _, vm := range vms {
		b.WriteString(vmFlow(vm.OFPort))
	}
	return b.String()
}

// vmFlow is the agent's egress flow of one VM port in table 60.
func vmFlow(ofport uint32) string {
	return fmt.Sprintf("cookie=%#x,table=60,priority=100,in_port=%d,actions=set_field:%d->reg5,set_field:1->reg6,resubmit(,94)\n",
		AgentCookie, ofport, ofport)
}

// addFlows adds flows (one per line, ovs-ofctl syntax) to the bridge.
func (l *Lab) addFlows(flows string) error {
	_, err := run(cmdTimeout, l.Env(), flows, "ovs-ofctl", "-O", "OpenFlow13", "add-flows", l.Bridge, "-")
	return err
}

// onClose registers f to run when the lab closes, before its processes
// are ended (a service that stops its own children, say).
func (l *Lab) onClose(f func() error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cleanups = append(l.cleanups, f)
}

// Close stops every process the lab started (daemons, unbound, then
// ovs-vswitchd and ovsdb-server; SIGTERM, SIGKILL after a timeout),
// deletes the namespaces it created (with their veths) and removes Dir
// when Start created it. It is safe after a partial Start and when called
// again.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs, namespaces := l.procs, l.namespaces
	vswitchd, ovsdb := l.vswitchd, l.ovsdb
	cleanups := l.cleanups
	l.mu.Unlock()

	var errs []error
	for i := len(cleanups) - 1; i >= 0; i-- {
		if err := cleanups[i](); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].terminate(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range []daemon{vswitchd, ovsdb} {
		if d.pid != 0 {
			if err := d.stop(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for i := len(namespaces) - 1; i >= 0; i-- {
		if err := ip("netns", "del", namespaces[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if l.ownsDir {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab: close: %w", err)
	}
	return nil
}

// Env returns os.Environ() with OVS_RUNDIR, OVS_DBDIR and OVS_LOGDIR set to
// RunDir, so that OVS tools reach the lab's daemons.
func (l *Lab) Env() []string {
	return append(os.Environ(), "OVS_RUNDIR="+l.RunDir, "OVS_DBDIR="+l.RunDir, "OVS_LOGDIR="+l.RunDir)
}

// Ofctl runs ovs-ofctl -O OpenFlow13 with args against the lab's daemons
// and returns its standard output.
func (l *Lab) Ofctl(args ...string) (string, error) {
	return run(cmdTimeout, l.Env(), "", "ovs-ofctl", append([]string{"-O", "OpenFlow13"}, args...)...)
}

// Vsctl runs ovs-vsctl with args against the lab's database and returns
// its standard output; it waits (at most 10 s) for ovs-vswitchd to apply a
// change.
func (l *Lab) Vsctl(args ...string) (string, error) {
	return l.vsctl(false, args...)
}

// vsctl runs ovs-vsctl, with --no-wait when noWait is set.
func (l *Lab) vsctl(noWait bool, args ...string) (string, error) {
	opts := []string{"--db=unix:" + l.dbSocket(), "--timeout=10"}
	if noWait {
		opts = append(opts, "--no-wait")
	}
	return run(cmdTimeout, l.Env(), "", "ovs-vsctl", append(opts, args...)...)
}

// DumpFlows returns the bridge's flows whose cookie equals cookie, one
// line each, without statistics (ovs-ofctl --no-stats dump-flows).
func (l *Lab) DumpFlows(cookie uint64) ([]string, error) {
	out, err := l.Ofctl("--no-stats", "dump-flows", l.Bridge, fmt.Sprintf("cookie=%#x/-1", cookie))
	if err != nil {
		return nil, err
	}
	var flows []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "OFPST_FLOW") {
			flows = append(flows, line)
		}
	}
	return flows, nil
}

// MgmtTarget is the OpenFlow target of the bridge's management socket,
// "unix:<RunDir>/<Bridge>.mgmt".
func (l *Lab) MgmtTarget() string {
	return "unix:" + filepath.Join(l.RunDir, l.Bridge+".mgmt")
}

// Command returns a command that runs name with args in the lab namespace
// (through ip netns exec, which execs name under the same PID) with Env.
func (l *Lab) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.NetNS, name}, args...)...)
	cmd.Env = l.Env()
	return cmd
}

// InNetNS runs fn on a locked OS thread switched into the lab namespace,
// then switches the thread back. Sockets fn creates stay in the lab
// namespace for their whole life, so listeners and clients for the lab
// are made here; goroutines fn starts do not run in the namespace. If the
// thread cannot be switched back, it stays locked, and Go discards it when
// the goroutine ends instead of reusing it in the wrong namespace.
func (l *Lab) InNetNS(fn func() error) error {
	return inNetNS(l.NetNS, fn)
}

// inNetNS runs fn on the current goroutine's thread switched into the
// named network namespace.
func inNetNS(ns string, fn func() error) (err error) {
	target, err := os.Open(filepath.Join("/var/run/netns", ns))
	if err != nil {
		return fmt.Errorf("lab: namespace %s: %w", ns, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("lab: own namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("lab: setns %s: %w", ns, err)
	}
	defer func() {
		if backErr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); backErr != nil {
			err = errors.Join(err, fmt.Errorf("lab: setns back from %s (thread left locked): %w", ns, backErr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// RestartVswitchd stops ovs-vswitchd (by its PID; SIGKILL after a timeout)
// and starts it again in the lab namespace, waits until the bridge answers
// OpenFlow, and then does what the Neutron agent and the gateway's owner
// would: it gives the recreated LOCAL tap its addresses again and re-adds
// the lab's pipeline flows (cookie AgentCookie), following VM ports to new
// ofports if they moved. Flows of others are gone: a restart wipes them.
// VM ports persist in OVSDB.
func (l *Lab) RestartVswitchd() error {
	l.mu.Lock()
	old := l.vswitchd
	l.mu.Unlock()
	if err := old.stop(); err != nil {
		return fmt.Errorf("lab: restart: %w", err)
	}
	if err := l.startVswitchd(); err != nil {
		return fmt.Errorf("lab: restart: %w", err)
	}
	err := poll(10*time.Second, "ovs-vswitchd to serve "+l.Bridge, func() (bool, error) {
		_, err := l.Ofctl("show", l.Bridge)
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("lab: restart: %w", err)
	}
	if err := l.setupGateway(); err != nil {
		return fmt.Errorf("lab: restart: %w", err)
	}
	l.mu.Lock()
	vms := slices.Clone(l.vms)
	l.mu.Unlock()
	for _, vm := range vms {
		ofport, err := l.waitOFPort(vm.veth)
		if err != nil {
			return fmt.Errorf("lab: restart: %w", err)
		}
		vm.OFPort = ofport
	}
	if err := l.addFlows(l.pipelineFlows(vms)); err != nil {
		return fmt.Errorf("lab: restart: %w", err)
	}
	return nil
}

// VswitchdPID returns the PID of the lab's ovs-vswitchd (a new one after
// RestartVswitchd), for measuring its CPU time; an error when it does not
// run.
func (l *Lab) VswitchdPID() (int, error) {
	l.mu.Lock()
	d := l.vswitchd
	l.mu.Unlock()
	if d.pid == 0 || !d.alive() {
		return 0, errors.New("lab: ovs-vswitchd does not run")
	}
	return d.pid, nil
}
