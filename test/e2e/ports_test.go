package e2e

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/inventory"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/pipeline"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/records"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/topology"
)

// spoofedDrops returns the daemon's spoofed_mac drop counter, from its
// metrics (default metrics_listen, in the lab's namespace).
func (e *neutronEnv) spoofedDrops() int {
	e.t.Helper()
	code, body := e.fetch("http://127.0.0.1:9553/metrics")
	if code != 200 {
		e.t.Fatalf("metrics: HTTP %d", code)
	}
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, `ovs_dns_forwarder_drops_total{reason="spoofed_mac"} `); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				e.t.Fatalf("metrics line %q: %v", line, err)
			}
			return n
		}
	}
	e.t.Fatalf("no spoofed_mac counter in the metrics")
	return 0
}

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestNeutronPorts checks, on a real Neutron and OVS agent, what the
// daemon reads of ports and networks: the topology derived from OVSDB
// (network_type) and the API (device owners, subnets, router interfaces),
// and the source MACs a VM may send queries from (allowed address pairs,
// port security).
func TestNeutronPorts(t *testing.T) {
	e := newNeutronEnv(t)
	alpha, beta, gamma := e.vm["alpha"], e.vm["beta"], e.vm["gamma"]
	netA, netB := e.ports["alpha"].NetworkID, e.ports["gamma"].NetworkID
	ip := func(name string, i int) string { return e.ports[name].IPs[i].String() }

	t.Run("topology", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		inv, err := inventory.New(inventory.Config{Endpoint: "unix:" + e.lab.RunDir + "/db.sock", Bridge: e.lab.Bridge})
		must(t, err)
		store, err := records.New(records.Config{
			Auth:           records.AuthOptions{AuthType: records.AuthNoAuth, EndpointOverride: e.neutron.URL},
			Domain:         e.neutron.DNSDomain,
			ResyncInterval: time.Second,
			HTTPClient:     e.neutron.HTTPClient(),
			Logger:         slog.New(slog.DiscardHandler),
		})
		must(t, err)
		go func() { _ = inv.Run(ctx) }()
		go func() { _ = store.Run(ctx, inv.Networks, inv.Changes()) }()
		// Network A's subnets (the IPv4 one has B's CIDR and gateway).
		var subnetA4 string
		var gateway6 netip.Addr
		for _, id := range e.ports["alpha"].SubnetIDs {
			s, err := e.neutron.GetSubnet(id)
			must(t, err)
			if s.CIDR.Addr().Is4() {
				subnetA4 = id
			} else {
				gateway6 = s.Gateway
			}
		}
		services := []netip.Addr{netip.MustParseAddr("fd00::254")}
		vms := []uint32{alpha.OFPort, beta.OFPort}
		want := pipeline.State{
			VMPorts: []uint32{alpha.OFPort, beta.OFPort, gamma.OFPort},
			Neighbors: []pipeline.Neighbor{
				// Both networks' unheld IPv4 gateway; A's IPv6 one
				// (Neutron's default: the subnet's first address,
				// fd00:10::) and fd00::254 (only A has IPv6).
				{Addr: netip.MustParseAddr("10.0.0.1"), Ports: []uint32{alpha.OFPort, beta.OFPort, gamma.OFPort}},
				{Addr: netip.MustParseAddr("fd00::254"), Ports: vms},
				{Addr: gateway6, Ports: vms},
			},
		}
		waitTopology := func(what string, want pipeline.State) topology.Topology {
			t.Helper()
			deadline := time.Now().Add(30 * time.Second)
			for {
				topo := topology.Compute(inv.Ports(), store, services)
				if reflect.DeepEqual(topo.State, want) {
					return topo
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: state %+v, want %+v\nports %+v", what, topo.State, want, inv.Ports())
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		topo := waitTopology("initial", want)
		for _, p := range inv.Ports() {
			if p.NetworkType != inventory.NetworkTypeVXLAN {
				t.Errorf("port %d: network_type %q, want vxlan (the agent's)", p.OFPort, p.NetworkType)
			}
		}
		for _, p := range topo.Ports {
			if !p.VM || p.Sources.Any || len(p.Sources.AllowedMACs) != 0 {
				t.Errorf("port %+v", p)
			}
		}
		if p, ok := store.Network(netB).Port(e.ports["delta"].ID); !ok || p.DeviceOwner != "" || !p.PortSecurity {
			t.Errorf("delta (no VM) %+v %v", p, ok)
		}
		if got := len(store.Network(netA).Subnets()); got != 2 {
			t.Errorf("network A has %d subnets, want 2", got)
		}

		// A router interface on A's IPv4 subnet holds its gateway: no
		// longer answered there, still on B (same CIDR).
		router, err := e.neutron.CreateRouter("r1")
		must(t, err)
		rport, err := e.neutron.AddRouterInterface(router, subnetA4)
		must(t, err)
		want.Neighbors[0].Ports = []uint32{gamma.OFPort}
		waitTopology("router interface", want)
		if p, ok := store.Network(netA).Port(rport); !ok || p.DeviceOwner != "network:router_interface" {
			t.Errorf("router port %+v %v", p, ok)
		}
	})

	e.startNamesDaemon("forwarder")

	t.Run("allowed address pair MAC", func(t *testing.T) {
		pairMAC := mustMAC(t, "fa:16:3e:aa:bb:01")
		must(t, e.neutron.SetAllowedAddressPairs(alpha.PortID, []lab.AddressPair{{IP: ip("alpha", 0), MAC: pairMAC}}))
		must(t, alpha.SetSourceMAC(pairMAC))
		// Answered once the records show the pair (records_resync_interval
		// is 2 s).
		e.eventually(15*time.Second, alpha, "beta.cloud.test", "A", ip("beta", 0))
		// Another MAC is still spoofed.
		before := e.spoofedDrops()
		must(t, alpha.SetSourceMAC(mustMAC(t, "fa:16:3e:aa:bb:02")))
		if out, err := alpha.Dig(t.Context(), "@169.254.169.254", "beta.cloud.test", "A"); err == nil {
			t.Errorf("a MAC outside the pairs was answered:\n%s", out)
		}
		if after := e.spoofedDrops(); after <= before {
			t.Errorf("spoofed_mac drops %d -> %d", before, after)
		}
		must(t, alpha.SetSourceMAC(alpha.MAC))
	})

	t.Run("port security disabled", func(t *testing.T) {
		must(t, e.neutron.SetPortSecurity(gamma.PortID, false))
		must(t, gamma.SetSourceMAC(mustMAC(t, "0e:00:00:00:00:42")))
		// Its own network's names...
		e.eventually(15*time.Second, gamma, "delta.cloud.test", "A", ip("delta", 0))
		if status, answer := e.status(gamma, reverse(t, e.ports["gamma"].IPs[0]), "PTR"); status != "NOERROR" || !strings.Contains(answer, "gamma.cloud.test.") {
			t.Errorf("gamma's own PTR: %s %q", status, answer)
		}
		// ...and none of the other network's (same CIDR).
		for _, name := range []string{"alpha.cloud.test", "beta.cloud.test"} {
			if status, answer := e.status(gamma, name, "A"); status != "NXDOMAIN" || answer != "" {
				t.Errorf("gamma: %s: %s %q, want NXDOMAIN", name, status, answer)
			}
		}
		if _, answer := e.status(gamma, reverse(t, e.ports["beta"].IPs[0]), "PTR"); strings.Contains(answer, "beta") {
			t.Errorf("gamma sees beta's PTR: %q", answer)
		}
	})

	t.Run("spoofed MAC with port security", func(t *testing.T) {
		before := e.spoofedDrops()
		must(t, beta.SetSourceMAC(mustMAC(t, "0e:00:00:00:00:43")))
		if out, err := beta.Dig(t.Context(), "@169.254.169.254", "alpha.cloud.test", "A"); err == nil {
			t.Errorf("a spoofed MAC was answered:\n%s", out)
		}
		if after := e.spoofedDrops(); after <= before {
			t.Errorf("spoofed_mac drops %d -> %d", before, after)
		}
		must(t, beta.SetSourceMAC(beta.MAC))
		e.eventually(5*time.Second, beta, "alpha.cloud.test", "A", ip("alpha", 0))
	})
}
