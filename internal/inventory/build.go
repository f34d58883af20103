package inventory

import (
	"net"
	"slices"
	"strings"
)

// The partial OVSDB models: only the tables and columns the inventory
// reads. libovsdb validates them against the server's schema at connect.

// ovsBridge is a row of the Bridge table.
type ovsBridge struct {
	UUID  string   `ovsdb:"_uuid"`
	Name  string   `ovsdb:"name"`
	Ports []string `ovsdb:"ports"`
}

// ovsPort is a row of the Port table.
type ovsPort struct {
	UUID        string            `ovsdb:"_uuid"`
	Name        string            `ovsdb:"name"`
	Tag         *int              `ovsdb:"tag"`
	OtherConfig map[string]string `ovsdb:"other_config"`
	Interfaces  []string          `ovsdb:"interfaces"`
}

// ovsInterface is a row of the Interface table.
type ovsInterface struct {
	UUID        string            `ovsdb:"_uuid"`
	Name        string            `ovsdb:"name"`
	OFPort      *int              `ovsdb:"ofport"`
	ExternalIDs map[string]string `ovsdb:"external_ids"`
}

// Keys of the columns the Neutron OVS agent and Nova fill in.
const (
	keyIfaceID     = "iface-id"     // Interface.external_ids: the Neutron port UUID
	keyAttachedMAC = "attached-mac" // Interface.external_ids: the port's MAC
	keyNetUUID     = "net_uuid"     // Port.other_config: the Neutron network UUID
	keyNetworkType = "network_type" // Port.other_config: the network's segment type
)

// maxOFPort is one past the highest ofport Open vSwitch gives a port
// (OFPP_MAX of OpenFlow 1.0, which OVS keeps for all versions).
const maxOFPort = 0xff00

// status says why an interface is or is not a VM port.
type status int

const (
	vmPort   status = iota // a VM port with an ofport: counts
	notVM                  // no iface-id or no attached-mac
	noOFPort               // a VM port whose ofport is not (or not validly) set yet
	badMAC                 // attached-mac does not parse as a 6-byte MAC
)

// toPort converts an Interface row and the Port row that holds it into
// a Port. Only a VM port (status vmPort) gives a meaningful Port.
func toPort(iface *ovsInterface, port *ovsPort) (Port, status) {
	id := iface.ExternalIDs[keyIfaceID]
	macText := iface.ExternalIDs[keyAttachedMAC]
	if id == "" || macText == "" {
		return Port{}, notVM
	}
	mac, ok := parseMAC(macText)
	if !ok {
		return Port{}, badMAC
	}
	if iface.OFPort == nil || *iface.OFPort <= 0 || *iface.OFPort >= maxOFPort {
		return Port{}, noOFPort
	}
	p := Port{
		OFPort:      uint32(*iface.OFPort),
		Name:        iface.Name,
		PortID:      id,
		MAC:         mac,
		Network:     port.OtherConfig[keyNetUUID],
		NetworkType: networkType(port.OtherConfig[keyNetworkType]),
		Tag:         -1,
	}
	if port.Tag != nil {
		p.Tag = *port.Tag
	}
	return p, vmPort
}

// networkType returns s when it is a network type the agent writes, else
// "".
func networkType(s string) string {
	switch s {
	case NetworkTypeVXLAN, NetworkTypeGeneve, NetworkTypeGRE, NetworkTypeFlat, NetworkTypeVLAN, NetworkTypeLocal:
		return s
	}
	return ""
}

// parseMAC parses a 48-bit MAC in the colon form Nova writes (any form
// net.ParseMAC accepts).
func parseMAC(s string) ([6]byte, bool) {
	var mac [6]byte
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != len(mac) {
		return mac, false
	}
	copy(mac[:], hw)
	return mac, true
}

// badInterface is an interface whose attached-mac does not parse.
type badInterface struct {
	Name string
	MAC  string
}

// view is what build derives from the three tables.
type view struct {
	ports       map[uint32]Port         // VM ports with an ofport, by ofport
	networks    []string                // distinct non-empty networks of ports, sorted
	bridgeFound bool                    // the bridge exists
	bridgePorts int                     // Port rows the bridge lists
	pending     int                     // VM interfaces without a valid ofport (not yet set, or failed)
	bad         map[string]badInterface // by Interface UUID
}

// build derives the VM ports of the named bridge from the Bridge, Port
// and Interface rows. Rows that reference missing rows are skipped (a
// later update completes them). Should two interfaces share an ofport,
// the one with the smaller name wins, so that the result does not depend
// on row order.
func build(bridge string, bridges []ovsBridge, ports []ovsPort, ifaces []ovsInterface) view {
	v := view{ports: make(map[uint32]Port)}
	var onBridge []string
	for i := range bridges {
		if bridges[i].Name == bridge {
			v.bridgeFound = true
			onBridge = bridges[i].Ports
			break
		}
	}
	if !v.bridgeFound {
		return v
	}
	v.bridgePorts = len(onBridge)
	portByUUID := make(map[string]*ovsPort, len(ports))
	for i := range ports {
		portByUUID[ports[i].UUID] = &ports[i]
	}
	ifaceByUUID := make(map[string]*ovsInterface, len(ifaces))
	for i := range ifaces {
		ifaceByUUID[ifaces[i].UUID] = &ifaces[i]
	}
	for _, pu := range onBridge {
		port := portByUUID[pu]
		if port == nil {
			continue
		}
		for _, iu := range port.Interfaces {
			iface := ifaceByUUID[iu]
			if iface == nil {
				continue
			}
			p, st := toPort(iface, port)
			switch st {
			case vmPort:
				if old, dup := v.ports[p.OFPort]; dup && old.Name < p.Name {
					continue
				}
				v.ports[p.OFPort] = p
			case noOFPort:
				v.pending++
			case badMAC:
				if v.bad == nil {
					v.bad = make(map[string]badInterface)
				}
				v.bad[iface.UUID] = badInterface{Name: iface.Name, MAC: iface.ExternalIDs[keyAttachedMAC]}
			}
		}
	}
	v.networks = networksOf(v.ports)
	return v
}

// networksOf returns the distinct non-empty networks of ports, sorted.
func networksOf(ports map[uint32]Port) []string {
	var nets []string
	for _, p := range ports {
		if p.Network != "" {
			nets = append(nets, p.Network)
		}
	}
	slices.Sort(nets)
	return slices.Compact(nets)
}
