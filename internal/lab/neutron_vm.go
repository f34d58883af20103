package lab

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// neutronBindTimeout bounds the wait for the agent to wire a port.
const neutronBindTimeout = 90 * time.Second

// AddNeutronVM plugs a VM for a Neutron port of n: it binds the port to
// the agent's host (binding:host_id = n.Host, device_owner = compute:nova,
// a random device_id), creates namespace "<NetNS>-<name>" with eth0 (the
// port's MAC, its fixed IPs with their subnets' prefix lengths, nodad,
// TX checksum offload off on both ends), for each subnet with a gateway a
// permanent neighbour entry gateway -> the lab's GatewayMAC and a route to
// 169.254.169.254/32 (IPv4) or fd00::254/128 (IPv6) via that gateway, and
// adds the bridge end to the bridge with external_ids iface-id,
// attached-mac, iface-status=active and vm-uuid. It returns once the agent
// has wired the port (Port other_config:net_uuid is the port's network,
// its tag is a live local VLAN) and the API shows it ACTIVE. The VM's
// IPv4 and IPv6 are the port's first address of each family (invalid
// when it has none), OFPort its ofport, PortID the port's ID.
//
// The agent, not the lab, owns the VM's flows: the lab adds none, and
// RestartVswitchd does not re-add any for it.
func (l *Lab) AddNeutronVM(name string, n *Neutron, port Port) (*VM, error) {
	if name == "" || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		return nil, fmt.Errorf("lab: bad VM name %q (want [a-z0-9_-]+)", name)
	}
	if n == nil || n.lab != l {
		return nil, fmt.Errorf("lab: VM %s: the Neutron is not this lab's", name)
	}
	if len(port.IPs) == 0 || len(port.MAC) != 6 {
		return nil, fmt.Errorf("lab: VM %s: port %s has no fixed IP or MAC", name, port.ID)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: AddNeutronVM on a closed lab")
	}
	idx := l.vmCount + 1
	for _, vm := range l.vms {
		if vm.Name == name {
			l.mu.Unlock()
			return nil, fmt.Errorf("lab: VM %q exists", name)
		}
	}
	n.mu.Lock()
	for _, vm := range n.vms {
		if vm.Name == name {
			n.mu.Unlock()
			l.mu.Unlock()
			return nil, fmt.Errorf("lab: VM %q exists", name)
		}
	}
	n.mu.Unlock()
	if idx > 240 {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: too many VMs")
	}
	l.vmCount = idx
	l.mu.Unlock()
	vm := &VM{
		Name:   name,
		NetNS:  l.NetNS + "-" + name,
		MAC:    port.MAC,
		PortID: port.ID,
		veth:   "odf" + l.id + "v" + strconv.Itoa(idx),
	}
	for _, a := range port.IPs {
		if a.Is4() && !vm.IPv4.IsValid() {
			vm.IPv4 = a
		}
		if a.Is6() && !vm.IPv6.IsValid() {
			vm.IPv6 = a
		}
	}
	if err := n.plugVM(vm, port); err != nil {
		return nil, fmt.Errorf("lab: VM %s: %w", name, err)
	}
	n.mu.Lock()
	n.vms = append(n.vms, vm)
	n.mu.Unlock()
	return vm, nil
}

// plugVM does AddNeutronVM's work.
func (n *Neutron) plugVM(vm *VM, port Port) error {
	l := n.lab
	deviceID, err := randomUUID()
	if err != nil {
		return err
	}
	cmds := []string{"link set eth0 up"}
	gws := map[netip.Addr]bool{}
	for i, a := range port.IPs {
		s, err := n.GetSubnet(port.SubnetIDs[i])
		if err != nil {
			return err
		}
		nodad := ""
		if a.Is6() {
			nodad = " nodad"
		}
		cmds = append(cmds, fmt.Sprintf("addr add %s/%d dev eth0%s", a, s.CIDR.Bits(), nodad))
		if !s.Gateway.IsValid() || gws[s.Gateway] {
			continue
		}
		gws[s.Gateway] = true
		cmds = append(cmds, fmt.Sprintf("neigh replace %s lladdr %s dev eth0 nud permanent", s.Gateway, l.GatewayMAC))
		if s.Gateway.Is4() {
			cmds = append(cmds, fmt.Sprintf("route replace 169.254.169.254/32 via %s dev eth0", s.Gateway))
		} else {
			cmds = append(cmds, fmt.Sprintf("route replace fd00::254/128 via %s dev eth0", s.Gateway))
		}
	}
	err = n.updatePort(port.ID, map[string]any{
		"binding:host_id": n.Host, "device_owner": "compute:nova", "device_id": deviceID,
	})
	if err != nil {
		return err
	}
	if err := l.wireVM(vm); err != nil {
		return err
	}
	if _, err := run(cmdTimeout, nil, strings.Join(cmds, "\n")+"\n", "ip", "-n", vm.NetNS, "-batch", "-"); err != nil {
		return err
	}
	_, err = l.Vsctl("add-port", l.Bridge, vm.veth, "--", "set", "Interface", vm.veth,
		"external_ids:iface-id="+port.ID,
		"external_ids:attached-mac="+vm.MAC.String(),
		"external_ids:iface-status=active",
		"external_ids:vm-uuid="+deviceID)
	if err != nil {
		return err
	}
	if vm.OFPort, err = l.waitOFPort(vm.veth); err != nil {
		return err
	}
	return n.waitWired(vm, port.NetworkID)
}

// waitWired waits until the agent has bound the VM's port and the API
// shows it ACTIVE.
func (n *Neutron) waitWired(vm *VM, netID string) error {
	return poll(neutronBindTimeout, "the agent to wire port "+vm.PortID, func() (bool, error) {
		tag, net, err := n.lab.portVLAN(vm.veth)
		if err != nil {
			return false, err
		}
		if net != netID || tag <= 0 || tag >= 4095 {
			time.Sleep(100 * time.Millisecond)
			return false, fmt.Errorf("port %s: tag %d, net_uuid %q", vm.veth, tag, net)
		}
		p, err := n.GetPort(vm.PortID)
		if err != nil {
			return false, err
		}
		if p.Status != "ACTIVE" {
			time.Sleep(100 * time.Millisecond)
			return false, fmt.Errorf("port %s: status %s", vm.PortID, p.Status)
		}
		return true, nil
	})
}

// portVLAN returns a bridge port's tag (0 for none) and
// other_config:net_uuid ("" for none).
func (l *Lab) portVLAN(port string) (int, string, error) {
	out, err := l.vsctl(true, "get", "Port", port, "tag", "other_config")
	if err != nil {
		return 0, "", err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		return 0, "", fmt.Errorf("ovs-vsctl get Port %s tag other_config: unexpected %q", port, out)
	}
	tag, _ := strconv.Atoi(strings.TrimSpace(lines[0]))
	net := ""
	if _, rest, ok := strings.Cut(lines[1], "net_uuid="); ok {
		net = strings.Trim(strings.SplitN(rest, ",", 2)[0], `"} `)
	}
	return tag, net, nil
}

// VMPortVLAN returns the local VLAN tag and other_config:net_uuid of a
// VM's bridge port (for VMs from AddNeutronVM: what the agent wrote).
func (l *Lab) VMPortVLAN(vm *VM) (tag int, netUUID string, err error) {
	return l.portVLAN(vm.veth)
}

// ConnectGateway puts the bridge's LOCAL port (the lab's gateway
// 10.0.0.1 / fd00:10::1 in the lab namespace) into the local VLAN of
// vm's network, so that the VMs of that network, and only those, reach
// the lab namespace through the agent's NORMAL switching. Without it the
// LOCAL port is a trunk and gets their frames VLAN-tagged, which the lab
// namespace drops. One network at a time: a later call moves it.
func (n *Neutron) ConnectGateway(vm *VM) error {
	tag, _, err := n.lab.portVLAN(vm.veth)
	if err != nil {
		return fmt.Errorf("lab: neutron: %w", err)
	}
	if tag <= 0 || tag >= 4095 {
		return fmt.Errorf("lab: neutron: VM %s's port has no live VLAN (tag %d)", vm.Name, tag)
	}
	if _, err := n.lab.Vsctl("set", "Port", n.lab.Bridge, "tag="+strconv.Itoa(tag)); err != nil {
		return fmt.Errorf("lab: neutron: %w", err)
	}
	return nil
}

// SetSourceMAC gives the VM's eth0 another MAC, so that it sends (and
// receives) frames with it; its bridge port, external_ids and Neutron port
// are left as they are (vm.MAC stays the port's).
func (vm *VM) SetSourceMAC(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("lab: VM %s: bad MAC %v", vm.Name, mac)
	}
	if _, err := run(cmdTimeout, nil, "", "ip", "-n", vm.NetNS, "link", "set", "eth0", "address", mac.String()); err != nil {
		return fmt.Errorf("lab: VM %s: %w", vm.Name, err)
	}
	return nil
}
