package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// VM is a network namespace plugged into the bridge like a Neutron port.
type VM struct {
	// Name is the name given to AddVM.
	Name string
	// NetNS is the VM's network namespace, "<lab NetNS>-<Name>".
	NetNS string
	// MAC is eth0's MAC, fa:16:3e:00:00:<n> for the n-th VM.
	MAC net.HardwareAddr
	// IPv4 is eth0's IPv4 address, 10.0.0.<10+n>/24.
	IPv4 netip.Addr
	// IPv6 is eth0's IPv6 address, fd00:10::<10+n>/64.
	IPv6 netip.Addr
	// OFPort is the OpenFlow port of the VM's bridge end; RestartVswitchd
	// updates it should the port move.
	OFPort uint32
	// PortID is the port's external_ids:iface-id (a random UUID, like a
	// Neutron port ID).
	PortID string

	veth string // the bridge end, in the lab namespace
}

// AddVM creates the n-th VM (n = 1, 2, ... in call order): namespace
// "<NetNS>-<name>" with lo up and eth0, one end of a veth pair whose other
// end is a bridge port in the lab namespace. eth0 gets MAC
// fa:16:3e:00:00:<n>, 10.0.0.<10+n>/24 and fd00:10::<10+n>/64 (nodad),
// routes to 169.254.169.254/32 via 10.0.0.1 and fd00::254/128 via
// fd00:10::1, and permanent neighbour entries for both gateways. TX
// checksum offload is off on both ends. The bridge port carries
// external_ids iface-id, attached-mac and iface-status=active; AddVM waits
// for its ofport and adds its table-60 priority-100 flow.
func (l *Lab) AddVM(name string) (*VM, error) {
	if name == "" || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		return nil, fmt.Errorf("lab: bad VM name %q (want [a-z0-9_-]+)", name)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: AddVM on a closed lab")
	}
	n := l.vmCount + 1
	for _, vm := range l.vms {
		if vm.Name == name {
			l.mu.Unlock()
			return nil, fmt.Errorf("lab: VM %q exists", name)
		}
	}
	if n > 240 {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: too many VMs")
	}
	portID, err := randomUUID()
	if err != nil {
		l.mu.Unlock()
		return nil, err
	}
	vm := &VM{
		Name:   name,
		NetNS:  l.NetNS + "-" + name,
		MAC:    net.HardwareAddr{0xfa, 0x16, 0x3e, 0, 0, byte(n)},
		IPv4:   netip.AddrFrom4([4]byte{10, 0, 0, byte(10 + n)}),
		IPv6:   netip.MustParseAddr(fmt.Sprintf("fd00:10::%d", 10+n)),
		PortID: portID,
		veth:   "odf" + l.id + "v" + strconv.Itoa(n),
	}
	l.vmCount = n
	l.mu.Unlock()
	if err := l.plugVM(vm); err != nil {
		return nil, fmt.Errorf("lab: VM %s: %w", name, err)
	}
	l.mu.Lock()
	l.vms = append(l.vms, vm)
	l.mu.Unlock()
	return vm, nil
}

// wireVM creates vm's namespace and its veth pair: eth0 (with vm's MAC)
// inside, vm.veth in the lab's namespace, up, both with TX checksum
// offload off (else captured UDP checksums are partial).
func (l *Lab) wireVM(vm *VM) error {
	if err := l.addNamespace(vm.NetNS); err != nil {
		return err
	}
	err := ip("-n", l.NetNS, "link", "add", vm.veth, "type", "veth",
		"peer", "name", "eth0", "address", vm.MAC.String(), "netns", vm.NetNS)
	if err != nil {
		return err
	}
	if _, err := inNS(l.NetNS, nil, "ethtool", "-K", vm.veth, "tx", "off"); err != nil {
		return err
	}
	if err := ip("-n", l.NetNS, "link", "set", vm.veth, "up"); err != nil {
		return err
	}
	_, err = inNS(vm.NetNS, nil, "ethtool", "-K", "eth0", "tx", "off")
	return err
}

// plugVM does AddVM's work for vm.
func (l *Lab) plugVM(vm *VM) error {
	if err := l.wireVM(vm); err != nil {
		return err
	}
	gw := l.GatewayMAC.String()
	batch := strings.Join([]string{
		"link set eth0 up",
		fmt.Sprintf("addr add %s/24 dev eth0", vm.IPv4),
		fmt.Sprintf("addr add %s/64 dev eth0 nodad", vm.IPv6),
		fmt.Sprintf("neigh replace %s lladdr %s dev eth0 nud permanent", l.Gateway4, gw),
		fmt.Sprintf("neigh replace %s lladdr %s dev eth0 nud permanent", l.Gateway6, gw),
		fmt.Sprintf("route add 169.254.169.254/32 via %s dev eth0", l.Gateway4),
		fmt.Sprintf("route add fd00::254/128 via %s dev eth0", l.Gateway6),
	}, "\n") + "\n"
	if _, err := run(cmdTimeout, nil, batch, "ip", "-n", vm.NetNS, "-batch", "-"); err != nil {
		return err
	}
	_, err := l.Vsctl("add-port", l.Bridge, vm.veth, "--", "set", "Interface", vm.veth,
		"external_ids:iface-id="+vm.PortID,
		"external_ids:attached-mac="+vm.MAC.String(),
		"external_ids:iface-status=active")
	if err != nil {
		return err
	}
	ofport, err := l.waitOFPort(vm.veth)
	if err != nil {
		return err
	}
	vm.OFPort = ofport
	return l.addFlows(vmFlow(ofport))
}

// waitOFPort waits until the bridge port iface has an ofport and returns it.
func (l *Lab) waitOFPort(iface string) (uint32, error) {
	var ofport uint64
	err := poll(10*time.Second, "ofport of "+iface, func() (bool, error) {
		out, err := l.vsctl(true, "get", "Interface", iface, "ofport")
		if err != nil {
			return false, err
		}
		v, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		if err != nil || v <= 0 || v >= 0xff00 {
			return false, nil
		}
		ofport = uint64(v)
		return true, nil
	})
	return uint32(ofport), err
}

// randomUUID returns a random version-4 UUID in its text form.
func randomUUID() (string, error) {
	h, err := randomHex(16)
	if err != nil {
		return "", err
	}
	b := []byte(h)
	b[12] = '4'
	b[16] = "89ab"[b[16]%4]
	return fmt.Sprintf("%s-%s-%s-%s-%s", b[0:8], b[8:12], b[12:16], b[16:20], b[20:32]), nil
}

// Command returns a command that runs name with args in the VM's
// namespace (ip netns exec execs name under the same PID).
func (vm *VM) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", vm.NetNS, name}, args...)...)
}

// Dig runs "dig +time=2 +tries=1 args..." in the VM and returns its
// standard output; an error (dig failed or ctx ended) carries dig's output
// too.
func (vm *VM) Dig(ctx context.Context, args ...string) (string, error) {
	cmd := vm.Command(ctx, "dig", append([]string{"+time=2", "+tries=1"}, args...)...)
	cmd.WaitDelay = time.Second
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s in %s: %w: %s", cmdLine("dig", args), vm.Name, err,
			strings.TrimSpace(stderr.String()+"\n"+stdout.String()))
	}
	return stdout.String(), nil
}
