package main

import (
	"context"
	"net/netip"
	"reflect"

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

// followTopology recomputes the flow set's State (VM ports, neighbour
// answers) after every sync of the Neutron records, which follows every
// change of the bridge's ports in OVSDB, and has ofswitch reconcile the
// flows when it changed. It returns when ctx ends.
func (d *daemon) followTopology(ctx context.Context) {
	var services []netip.Addr
	for _, s := range d.cfg.ClientServers {
		if a := s.Addr().Unmap(); a.Is6() {
			services = append(services, a)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.store.Synced():
		}
		next := topology.Compute(d.inv.Ports(), d.store, services).State
		if reflect.DeepEqual(*d.state.Load(), next) {
			continue
		}
		d.state.Store(&next)
		d.sw.Refresh()
		d.logger.Debug("flow state changed", "vm_ports", len(next.VMPorts), "neighbors", len(next.Neighbors))
	}
}
