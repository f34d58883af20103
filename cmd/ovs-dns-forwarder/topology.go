package main

import (
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/inventory"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/records"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/responder"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/topology"
)

// ports adapts the OVSDB inventory and the Neutron records (store nil:
// none) to what the responder asks of a port: its network from OVSDB, and
// the source MACs it may send from (topology.SourcesOf: the attached-mac,
// its allowed address pairs' MACs, any MAC without port security). Both
// lookups are lock-free map reads, without allocation.
func ports(inv *inventory.Inventory, store *records.Store) responder.Ports {
	return responder.PortsFunc(func(ofport uint32) (responder.PortInfo, bool) {
		p, ok := inv.Lookup(ofport)
		if !ok {
			return responder.PortInfo{}, false
		}
		var n *records.Network
		if store != nil && p.Network != "" {
			n = store.Network(p.Network)
		}
		src := topology.SourcesOf(p, n)
		return responder.PortInfo{MAC: p.MAC, AllowedMACs: src.AllowedMACs, AnyMAC: src.Any,
			Network: p.Network, PortID: p.PortID}, true
	})
}
