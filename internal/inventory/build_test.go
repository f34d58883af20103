package inventory

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func intp(v int) *int { return &v }

// vmIface returns an Interface row of a VM port.
func vmIface(uuid, name string, ofport *int, portID, mac string) ovsInterface {
	ids := map[string]string{"iface-status": "active"}
	if portID != "" {
		ids[keyIfaceID] = portID
	}
	if mac != "" {
		ids[keyAttachedMAC] = mac
	}
	return ovsInterface{UUID: uuid, Name: name, OFPort: ofport, ExternalIDs: ids}
}

func TestToPort(t *testing.T) {
	bound := &ovsPort{Name: "tap1", Tag: intp(3), OtherConfig: map[string]string{
		keyNetUUID: "net-a", "network_type": "vxlan", "segmentation_id": "77"}}
	unbound := &ovsPort{Name: "tap1"}
	tests := []struct {
		name  string
		iface ovsInterface
		port  *ovsPort
		want  Port
		st    status
	}{
		{"bound", vmIface("i1", "tap1", intp(7), "p-1", "fa:16:3e:00:00:01"), bound,
			Port{OFPort: 7, Name: "tap1", PortID: "p-1", MAC: [6]byte{0xfa, 0x16, 0x3e, 0, 0, 1}, Network: "net-a", NetworkType: "vxlan", Tag: 3}, vmPort},
		{"unknown network type", vmIface("i1", "tap1", intp(7), "p-1", "fa:16:3e:00:00:01"),
			&ovsPort{Tag: intp(3), OtherConfig: map[string]string{keyNetUUID: "net-a", keyNetworkType: "VXLAN"}},
			Port{OFPort: 7, Name: "tap1", PortID: "p-1", MAC: [6]byte{0xfa, 0x16, 0x3e, 0, 0, 1}, Network: "net-a", Tag: 3}, vmPort},
		{"unbound", vmIface("i1", "tap1", intp(7), "p-1", "FA:16:3E:00:00:0A"), unbound,
			Port{OFPort: 7, Name: "tap1", PortID: "p-1", MAC: [6]byte{0xfa, 0x16, 0x3e, 0, 0, 0x0a}, Tag: -1}, vmPort},
		{"dead tag", vmIface("i1", "tap1", intp(9), "p-1", "fa:16:3e:00:00:01"), &ovsPort{Tag: intp(4095)},
			Port{OFPort: 9, Name: "tap1", PortID: "p-1", MAC: [6]byte{0xfa, 0x16, 0x3e, 0, 0, 1}, Tag: 4095}, vmPort},
		{"no iface-id", vmIface("i1", "tap1", intp(7), "", "fa:16:3e:00:00:01"), bound, Port{}, notVM},
		{"no attached-mac", vmIface("i1", "tap1", intp(7), "p-1", ""), bound, Port{}, notVM},
		{"no external_ids", ovsInterface{UUID: "i1", Name: "patch-tun", OFPort: intp(1)}, bound, Port{}, notVM},
		{"ofport not yet", vmIface("i1", "tap1", nil, "p-1", "fa:16:3e:00:00:01"), bound, Port{}, noOFPort},
		{"ofport failed", vmIface("i1", "tap1", intp(-1), "p-1", "fa:16:3e:00:00:01"), bound, Port{}, noOFPort},
		{"ofport zero", vmIface("i1", "tap1", intp(0), "p-1", "fa:16:3e:00:00:01"), bound, Port{}, noOFPort},
		{"ofport local", vmIface("i1", "tap1", intp(0xfffe), "p-1", "fa:16:3e:00:00:01"), bound, Port{}, noOFPort},
		{"bad mac", vmIface("i1", "tap1", intp(7), "p-1", "fa:16:3e:00:00"), bound, Port{}, badMAC},
		{"eui64 mac", vmIface("i1", "tap1", intp(7), "p-1", "02:00:5e:10:00:00:00:01"), bound, Port{}, badMAC},
		{"bad mac beats missing ofport", vmIface("i1", "tap1", nil, "p-1", "zz"), bound, Port{}, badMAC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, st := toPort(&tt.iface, tt.port)
			if st != tt.st || got != tt.want {
				t.Errorf("toPort = %+v, %d; want %+v, %d", got, st, tt.want, tt.st)
			}
		})
	}
}

func TestBuild(t *testing.T) {
	bridges := []ovsBridge{
		{UUID: "b-int", Name: "br-int", Ports: []string{"p-local", "p-vm1", "p-vm2", "p-vm3", "p-tun", "p-new", "p-bad", "p-gone", "p-dup"}},
		{UUID: "b-ex", Name: "br-ex", Ports: []string{"p-ex"}},
	}
	ports := []ovsPort{
		{UUID: "p-local", Name: "br-int", Interfaces: []string{"i-local"}},
		{UUID: "p-vm1", Name: "tap1", Tag: intp(1), OtherConfig: map[string]string{keyNetUUID: "net-b"}, Interfaces: []string{"i-vm1"}},
		{UUID: "p-vm2", Name: "tap2", Tag: intp(2), OtherConfig: map[string]string{keyNetUUID: "net-a"}, Interfaces: []string{"i-vm2"}},
		{UUID: "p-vm3", Name: "tap3", Tag: intp(3), OtherConfig: map[string]string{keyNetUUID: "net-c"}, Interfaces: []string{"i-vm3"}},
		{UUID: "p-tun", Name: "patch-tun", Interfaces: []string{"i-tun"}},
		{UUID: "p-new", Name: "tap4", Interfaces: []string{"i-new"}},
		{UUID: "p-bad", Name: "tap5", Interfaces: []string{"i-bad"}},
		{UUID: "p-dup", Name: "tap0", Interfaces: []string{"i-dup"}},
		{UUID: "p-ex", Name: "tapx", Interfaces: []string{"i-ex"}},
		// p-gone is listed by the bridge but not (yet) in the Port table.
	}
	ifaces := []ovsInterface{
		{UUID: "i-local", Name: "br-int", OFPort: intp(0xfffe)},
		vmIface("i-vm1", "tap1", intp(5), "port-1", "fa:16:3e:00:00:01"),
		vmIface("i-vm2", "tap2", intp(6), "port-2", "fa:16:3e:00:00:02"),
		vmIface("i-vm3", "tap3", intp(7), "port-3", "fa:16:3e:00:00:03"),
		{UUID: "i-tun", Name: "patch-tun", OFPort: intp(1)},
		vmIface("i-new", "tap4", nil, "port-4", "fa:16:3e:00:00:04"),
		vmIface("i-bad", "tap5", intp(9), "port-5", "not-a-mac"),
		vmIface("i-dup", "tap0", intp(7), "port-0", "fa:16:3e:00:00:00"),
		vmIface("i-ex", "tapx", intp(8), "port-x", "fa:16:3e:00:00:99"),
	}
	v := build("br-int", bridges, ports, ifaces)
	if !v.bridgeFound || v.bridgePorts != 9 || v.pending != 1 {
		t.Errorf("bridgeFound %v bridgePorts %d pending %d, want true 9 1", v.bridgeFound, v.bridgePorts, v.pending)
	}
	want := map[uint32]string{5: "port-1", 6: "port-2", 7: "port-0"}
	if len(v.ports) != len(want) {
		t.Errorf("ports %v, want ofports %v", v.ports, want)
	}
	for n, id := range want {
		if p, ok := v.ports[n]; !ok || p.PortID != id || p.OFPort != n {
			t.Errorf("ofport %d: %+v %v, want port %s", n, p, ok, id)
		}
	}
	if got := v.ports[5]; got.Network != "net-b" || got.Tag != 1 || got.Name != "tap1" {
		t.Errorf("ofport 5: %+v", got)
	}
	if !slices.Equal(v.networks, []string{"net-a", "net-b"}) {
		// tap0 (no network) won ofport 7 from tap3, so net-c is not there.
		t.Errorf("networks %v", v.networks)
	}
	if bad, ok := v.bad["i-bad"]; !ok || len(v.bad) != 1 || bad != (badInterface{Name: "tap5", MAC: "not-a-mac"}) {
		t.Errorf("bad %v", v.bad)
	}

	// Row order must not matter, duplicates included.
	slices.Reverse(ports)
	slices.Reverse(ifaces)
	if v2 := build("br-int", bridges, ports, ifaces); fmt.Sprint(v2.ports) != fmt.Sprint(v.ports) {
		t.Errorf("reversed rows: %v, want %v", v2.ports, v.ports)
	}

	if v := build("br-missing", bridges, ports, ifaces); v.bridgeFound || len(v.ports) != 0 || v.networks != nil {
		t.Errorf("missing bridge: %+v", v)
	}
	if v := build("br-ex", bridges, ports, ifaces); len(v.ports) != 1 || v.ports[8].PortID != "port-x" {
		t.Errorf("br-ex: %+v", v.ports)
	}
}

func TestNetworkType(t *testing.T) {
	for _, s := range []string{"vxlan", "geneve", "gre", "flat", "vlan", "local"} {
		if got := networkType(s); got != s {
			t.Errorf("networkType(%q) = %q", s, got)
		}
	}
	for _, s := range []string{"", "VXLAN", "vxlan ", "stt", "None"} {
		if got := networkType(s); got != "" {
			t.Errorf("networkType(%q) = %q, want \"\"", s, got)
		}
	}
}

func TestPorts(t *testing.T) {
	inv, _ := newTestInventory(t, "unix:/nonexistent/db.sock")
	if ports := inv.Ports(); len(ports) != 0 {
		t.Errorf("a new inventory has ports %v", ports)
	}
	inv.apply(manyPorts(30), true)
	ports := inv.Ports()
	if len(ports) != 30 {
		t.Fatalf("%d ports, want 30", len(ports))
	}
	for k, p := range ports {
		if p.OFPort != uint32(k+1) || p.PortID != fmt.Sprintf("port-%d", k+1) {
			t.Errorf("ports[%d] = %+v", k, p)
		}
	}
	ports[0].PortID = "mutated"
	if p := inv.Ports()[0]; p.PortID != "port-1" {
		t.Errorf("the caller's slice is the inventory's: %+v", p)
	}
}

func TestNetworksOf(t *testing.T) {
	ports := map[uint32]Port{
		1: {Network: "c"}, 2: {Network: "a"}, 3: {}, 4: {Network: "c"}, 5: {Network: "b"},
	}
	if got := networksOf(ports); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("networksOf = %v", got)
	}
	if got := networksOf(map[uint32]Port{1: {}}); len(got) != 0 {
		t.Errorf("networksOf(no networks) = %v", got)
	}
}

func TestNormalizeEndpoint(t *testing.T) {
	good := map[string]string{
		"tcp:127.0.0.1:6640":       "tcp:127.0.0.1:6640",
		"tcp:[::1]:6640":           "tcp:[::1]:6640",
		"unix:/run/openvswitch/db": "unix:/run/openvswitch/db",
	}
	for in, want := range good {
		if got, err := normalizeEndpoint(in); err != nil || got != want {
			t.Errorf("normalizeEndpoint(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if got, err := normalizeEndpoint("unix:db.sock"); err != nil || !strings.HasPrefix(got, "unix:/") || !strings.HasSuffix(got, "/db.sock") {
		t.Errorf("relative unix path: %q, %v", got, err)
	}
	for _, in := range []string{"", "tcp:127.0.0.1", "unix:", "ssl:127.0.0.1:6640", "ptcp:6640", "/run/openvswitch/db.sock"} {
		if got, err := normalizeEndpoint(in); err == nil {
			t.Errorf("normalizeEndpoint(%q) = %q, want an error", in, got)
		}
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Config{Endpoint: "tcp:127.0.0.1:6640"}); err == nil {
		t.Error("New without a bridge succeeded")
	}
	if _, err := New(Config{Endpoint: "6640", Bridge: "br-int"}); err == nil {
		t.Error("New with a bad endpoint succeeded")
	}
}

// logBuffer collects log output safely from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count returns how many log lines contain every one of parts.
func (l *logBuffer) count(parts ...string) int {
	n := 0
	for line := range strings.Lines(l.String()) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

func newTestInventory(t *testing.T, endpoint string) (*Inventory, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	inv, err := New(Config{
		Endpoint: endpoint,
		Bridge:   "br-int",
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("inventory log:\n%s", logs)
		}
	})
	return inv, logs
}

// signaled reports whether Changes holds a signal, consuming it.
func signaled(inv *Inventory) bool {
	select {
	case <-inv.Changes():
		return true
	default:
		return false
	}
}

func TestApply(t *testing.T) {
	inv, logs := newTestInventory(t, "unix:/nonexistent/db.sock")
	if _, ok := inv.Lookup(5); ok || len(inv.Networks()) != 0 || inv.Ready() || inv.Stats()["vm_ports"] != 0 {
		t.Fatal("a new inventory is not empty")
	}
	bridges := []ovsBridge{{UUID: "b", Name: "br-int", Ports: []string{"p1", "p2"}}}
	ports := []ovsPort{
		{UUID: "p1", Name: "tap1", Interfaces: []string{"i1"}},
		{UUID: "p2", Name: "tap2", Interfaces: []string{"i2"}},
	}
	ifaces := []ovsInterface{
		vmIface("i1", "tap1", intp(5), "port-1", "fa:16:3e:00:00:01"),
		vmIface("i2", "tap2", intp(6), "port-2", "bogus"),
	}

	// The first sync signals even without ports; an identical rebuild does not.
	inv.apply(build("br-int", nil, nil, nil), true)
	if !signaled(inv) || logs.count("bridge not in OVSDB") != 1 {
		t.Errorf("first sync with no bridge: signaled or logged wrongly\n%s", logs)
	}
	inv.apply(build("br-int", nil, nil, nil), false)
	if signaled(inv) || logs.count("bridge not in OVSDB") != 1 {
		t.Error("unchanged rebuild signaled or logged the missing bridge again")
	}

	inv.apply(build("br-int", bridges, ports, ifaces), false)
	if !signaled(inv) {
		t.Error("a new port did not signal")
	}
	if p, ok := inv.Lookup(5); !ok || p.PortID != "port-1" || p.Tag != -1 {
		t.Errorf("Lookup(5) = %+v, %v", p, ok)
	}
	if _, ok := inv.Lookup(6); ok {
		t.Error("the port with a bad attached-mac was taken")
	}
	inv.apply(build("br-int", bridges, ports, ifaces), false)
	if signaled(inv) {
		t.Error("an unchanged rebuild signaled")
	}
	if n := logs.count("invalid attached-mac", "tap2"); n != 1 {
		t.Errorf("bad MAC logged %d times, want once", n)
	}

	// A change of network is a change; Networks follows and is the caller's.
	ports[0].OtherConfig = map[string]string{keyNetUUID: "net-1"}
	ports[0].Tag = intp(4)
	inv.apply(build("br-int", bridges, ports, ifaces), false)
	if !signaled(inv) {
		t.Error("a network change did not signal")
	}
	nets := inv.Networks()
	if !slices.Equal(nets, []string{"net-1"}) {
		t.Errorf("Networks = %v", nets)
	}
	nets[0] = "mutated"
	if p, _ := inv.Lookup(5); p.Network != "net-1" || p.Tag != 4 || inv.Networks()[0] != "net-1" {
		t.Errorf("after the change: %+v, %v", p, inv.Networks())
	}
	if logs.count("VM port changed", "network=net-1") != 1 {
		t.Errorf("the change was not logged\n%s", logs)
	}

	// A fixed MAC that breaks again is logged again.
	ifaces[1].ExternalIDs[keyAttachedMAC] = "fa:16:3e:00:00:02"
	inv.apply(build("br-int", bridges, ports, ifaces), false)
	ifaces[1].ExternalIDs[keyAttachedMAC] = "bogus"
	inv.apply(build("br-int", bridges, ports, ifaces), false)
	if n := logs.count("invalid attached-mac", "tap2"); n != 2 {
		t.Errorf("bad MAC logged %d times, want twice", n)
	}

	// Removal: the row is gone.
	inv.apply(build("br-int", bridges, ports[1:], ifaces[1:]), false)
	if _, ok := inv.Lookup(5); ok || len(inv.Networks()) != 0 || !signaled(inv) || inv.Stats()["vm_ports"] != 0 {
		t.Error("the removed port is still there or did not signal")
	}
	if logs.count("VM port removed", "ofport=5") != 1 {
		t.Errorf("the removal was not logged\n%s", logs)
	}
}

func TestLookupAllocs(t *testing.T) {
	inv, _ := newTestInventory(t, "unix:/nonexistent/db.sock")
	inv.apply(manyPorts(200), true)
	var sink Port
	allocs := testing.AllocsPerRun(1000, func() {
		p, _ := inv.Lookup(57)
		sink = p
	})
	if allocs != 0 || sink.OFPort != 57 {
		t.Errorf("Lookup: %v allocations, port %+v", allocs, sink)
	}
}

// manyPorts returns a view of n bound VM ports on ofports 1..n.
func manyPorts(n int) view {
	bridge := ovsBridge{UUID: "b", Name: "br-int"}
	var ports []ovsPort
	var ifaces []ovsInterface
	for k := 1; k <= n; k++ {
		pu, iu := fmt.Sprintf("p%d", k), fmt.Sprintf("i%d", k)
		bridge.Ports = append(bridge.Ports, pu)
		ports = append(ports, ovsPort{UUID: pu, Name: iu, Tag: intp(k % 50),
			OtherConfig: map[string]string{keyNetUUID: fmt.Sprintf("net-%d", k%50)}, Interfaces: []string{iu}})
		ifaces = append(ifaces, vmIface(iu, fmt.Sprintf("tap%d", k), intp(k), fmt.Sprintf("port-%d", k),
			fmt.Sprintf("fa:16:3e:00:%02x:%02x", k>>8, k&0xff)))
	}
	return build("br-int", []ovsBridge{bridge}, ports, ifaces)
}

func BenchmarkLookup(b *testing.B) {
	inv, err := New(Config{Endpoint: "unix:/nonexistent/db.sock", Bridge: "br-int"})
	if err != nil {
		b.Fatal(err)
	}
	inv.apply(manyPorts(200), true)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		n := uint32(0)
		for pb.Next() {
			n = n%256 + 1
			if p, ok := inv.Lookup(n); ok != (n <= 200) || (ok && p.OFPort != n) {
				b.Errorf("Lookup(%d) = %+v, %v", n, p, ok)
				return
			}
		}
	})
}

func TestRunNoServer(t *testing.T) {
	inv, logs := newTestInventory(t, "unix:"+t.TempDir()+"/db.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inv.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for inv.Stats()["connect_errors"] < 4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := inv.Run(ctx); err == nil {
		t.Error("a second Run did not fail")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	st := inv.Stats()
	if st["connect_errors"] < 4 || st["connects"] != 0 || inv.Ready() {
		t.Errorf("stats %v ready %v", st, inv.Ready())
	}
	if n := logs.count("level=WARN"); n != 1 {
		t.Errorf("%d warnings for one outage, want 1\n%s", n, logs)
	}
}
