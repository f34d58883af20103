package inventory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
)

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// changed waits (briefly: the snapshot is stored before the signal) for a
// Changes signal.
func changed(t *testing.T, inv *Inventory, what string) {
	t.Helper()
	select {
	case <-inv.Changes():
	case <-time.After(2 * time.Second):
		t.Errorf("no Changes signal for %s", what)
	}
}

// drain consumes a pending Changes signal.
func drain(inv *Inventory) { signaled(inv) }

// vsctl runs ovs-vsctl in the lab and returns its trimmed output.
func vsctl(t *testing.T, l *lab.Lab, args ...string) string {
	t.Helper()
	out, err := l.Vsctl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// ifaceName returns the name of the interface with the given ofport.
func ifaceName(t *testing.T, l *lab.Lab, ofport uint32) string {
	t.Helper()
	name := vsctl(t, l, "--bare", "--columns=name", "find", "Interface", fmt.Sprintf("ofport=%d", ofport))
	if name == "" || strings.ContainsAny(name, " \n") {
		t.Fatalf("interface with ofport %d: %q", ofport, name)
	}
	return name
}

// checkVM checks the inventory's entry of a lab VM.
func checkVM(t *testing.T, inv *Inventory, vm *lab.VM, name, network, networkType string, tag int) {
	t.Helper()
	p, ok := inv.Lookup(vm.OFPort)
	want := Port{OFPort: vm.OFPort, Name: name, PortID: vm.PortID, Network: network, NetworkType: networkType, Tag: tag}
	copy(want.MAC[:], vm.MAC)
	if !ok || p != want {
		t.Errorf("Lookup(%d) = %+v, %v; want %+v", vm.OFPort, p, ok, want)
	}
}

// labDaemon is a daemon of the lab identified by its pidfile.
type labDaemon struct {
	pid int
}

// readDaemon reads the PID of ovsdb-server from the lab's pidfile and
// checks that the process is one.
func readDaemon(t *testing.T, l *lab.Lab) labDaemon {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.RunDir, "ovsdb-server.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		t.Fatalf("ovsdb-server pidfile: %q", b)
	}
	d := labDaemon{pid: pid}
	if !d.alive() {
		t.Fatalf("pid %d from the lab's pidfile is not a running ovsdb-server", pid)
	}
	return d
}

// alive reports whether the PID is a live ovsdb-server.
func (d labDaemon) alive() bool {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", d.pid))
	if err != nil || strings.TrimSpace(string(comm)) != "ovsdb-server" {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.pid))
	if err != nil {
		return false
	}
	end := strings.LastIndexByte(string(stat), ')')
	return end > 0 && end+2 < len(stat) && stat[end+2] != 'Z'
}

// stop sends SIGTERM and waits for the daemon to exit.
func (d labDaemon) stop() error {
	if !d.alive() {
		return nil
	}
	if err := syscall.Kill(d.pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for d.alive() {
		if time.Now().After(deadline) {
			return fmt.Errorf("ovsdb-server (pid %d) still runs 10 s after SIGTERM", d.pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// ovsdbTransact runs one OVSDB transaction directly on the lab's
// database file (only while its ovsdb-server is down).
func ovsdbTransact(t *testing.T, l *lab.Lab, ops ...string) {
	t.Helper()
	trns := `["Open_vSwitch",` + strings.Join(ops, ",") + `]`
	out, err := l.Command(context.Background(), "ovsdb-tool", "transact", filepath.Join(l.RunDir, "conf.db"), trns).CombinedOutput()
	if err != nil || strings.Contains(string(out), `"error"`) {
		t.Fatalf("ovsdb-tool transact %s: %v: %s", trns, err, out)
	}
}

func TestLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts Open vSwitch in network namespaces")
	}
	if err := lab.EnsurePackages(); err != nil {
		t.Fatal(err)
	}
	l, err := lab.Start(lab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	vm1, err := l.AddVM("vm1")
	if err != nil {
		t.Fatal(err)
	}
	vm2, err := l.AddVM("vm2")
	if err != nil {
		t.Fatal(err)
	}
	name1, name2 := ifaceName(t, l, vm1.OFPort), ifaceName(t, l, vm2.OFPort)

	inv, logs := newTestInventory(t, "unix:"+filepath.Join(l.RunDir, "db.sock"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})

	t.Run("initial sync", func(t *testing.T) {
		begin := time.Now()
		eventually(t, "ready", inv.Ready)
		t.Logf("first sync after %v", time.Since(begin))
		changed(t, inv, "the first sync")
		checkVM(t, inv, vm1, name1, "", "", -1)
		checkVM(t, inv, vm2, name2, "", "", -1)
		if _, ok := inv.Lookup(0xfffe); ok {
			t.Error("the bridge's LOCAL port counts as a VM port")
		}
		if st := inv.Stats(); st["vm_ports"] != 2 || st["connects"] != 1 || len(inv.Networks()) != 0 {
			t.Errorf("stats %v networks %v", st, inv.Networks())
		}
		if logs.count("level=INFO", "connected to OVSDB", "vm_ports=2") != 1 {
			t.Errorf("no connected line with the counts\n%s", logs)
		}
	})

	t.Run("binding", func(t *testing.T) {
		drain(inv)
		vsctl(t, l, "set", "Port", name1, "other_config:net_uuid=net-b", "other_config:network_type=vxlan", "tag=1")
		eventually(t, "vm1's network", func() bool { p, _ := inv.Lookup(vm1.OFPort); return p.Network == "net-b" })
		changed(t, inv, "vm1's binding")
		checkVM(t, inv, vm1, name1, "net-b", "vxlan", 1)
		vsctl(t, l, "set", "Port", name2, "other_config:net_uuid=net-a", "tag=2")
		eventually(t, "two networks", func() bool { return len(inv.Networks()) == 2 })
		changed(t, inv, "vm2's binding")
		checkVM(t, inv, vm2, name2, "net-a", "", 2)
		if nets := inv.Networks(); !slices.Equal(nets, []string{"net-a", "net-b"}) {
			t.Errorf("Networks = %v", nets)
		}
		vsctl(t, l, "set", "Port", name2, "tag=4095")
		eventually(t, "vm2 dead", func() bool { p, _ := inv.Lookup(vm2.OFPort); return p.Tag == 4095 })
		changed(t, inv, "vm2's dead tag")
	})

	var vm3 *lab.VM
	t.Run("new VM", func(t *testing.T) {
		drain(inv)
		if vm3, err = l.AddVM("vm3"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "vm3", func() bool { _, ok := inv.Lookup(vm3.OFPort); return ok })
		changed(t, inv, "vm3")
		checkVM(t, inv, vm3, ifaceName(t, l, vm3.OFPort), "", "", -1)
		if got := inv.Stats()["vm_ports"]; got != 3 {
			t.Errorf("vm_ports %d, want 3", got)
		}
	})

	t.Run("not VM ports", func(t *testing.T) {
		// An internal port with only an iface-id, one whose attached-mac is
		// invalid, and a VM port whose device does not exist (ofport -1).
		vsctl(t, l, "add-port", l.Bridge, "odfnomac", "--", "set", "Interface", "odfnomac", "type=internal",
			"external_ids:iface-id=11111111-2222-4333-8444-555555555555")
		vsctl(t, l, "add-port", l.Bridge, "odfbadmac", "--", "set", "Interface", "odfbadmac", "type=internal",
			"external_ids:iface-id=11111111-2222-4333-8444-666666666666", "external_ids:attached-mac=fa:16:3e:xx")
		vsctl(t, l, "add-port", l.Bridge, "odfghost", "--", "set", "Interface", "odfghost",
			"external_ids:iface-id=11111111-2222-4333-8444-777777777777", "external_ids:attached-mac=fa:16:3e:00:00:77")
		eventually(t, "the bad MAC warning", func() bool { return logs.count("invalid attached-mac", "odfbadmac") == 1 })
		for _, name := range []string{"odfnomac", "odfbadmac"} {
			n, err := strconv.Atoi(vsctl(t, l, "get", "Interface", name, "ofport"))
			if err != nil || n <= 0 {
				t.Fatalf("%s: ofport %d, %v", name, n, err)
			}
			if p, ok := inv.Lookup(uint32(n)); ok {
				t.Errorf("%s is a VM port: %+v", name, p)
			}
		}
		if got := vsctl(t, l, "get", "Interface", "odfghost", "ofport"); got != "-1" {
			t.Errorf("odfghost ofport %s, want -1", got)
		}
		if got := inv.Stats()["vm_ports"]; got != 3 {
			t.Errorf("vm_ports %d, want 3", got)
		}
	})

	t.Run("del-port", func(t *testing.T) {
		drain(inv)
		vsctl(t, l, "del-port", l.Bridge, name2)
		eventually(t, "vm2 forgotten", func() bool { _, ok := inv.Lookup(vm2.OFPort); return !ok })
		changed(t, inv, "vm2's removal")
		if nets := inv.Networks(); !slices.Equal(nets, []string{"net-b"}) {
			t.Errorf("Networks = %v", nets)
		}
	})

	t.Run("ovsdb-server restart", func(t *testing.T) {
		name3 := ifaceName(t, l, vm3.OFPort)
		port3 := vsctl(t, l, "get", "Port", name3, "_uuid")
		old := readDaemon(t, l)
		if err := old.stop(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "not ready", func() bool { return !inv.Ready() })
		// The last known state keeps answering during the outage.
		checkVM(t, inv, vm1, name1, "net-b", "vxlan", 1)

		// While the server is down, change the database behind its back:
		// vm1 moves to another network, vm3's port is deleted.
		ovsdbTransact(t, l,
			`{"op":"update","table":"Port","where":[["name","==","`+name1+`"]],"row":{"other_config":["map",[["net_uuid","net-c"]]]}}`,
			`{"op":"mutate","table":"Bridge","where":[["name","==","`+l.Bridge+`"]],"mutations":[["ports","delete",["uuid","`+port3+`"]]]}`)
		time.Sleep(300 * time.Millisecond) // a few failed reconnects

		drain(inv)
		cmd := l.Command(context.Background(), "ovsdb-server", filepath.Join(l.RunDir, "conf.db"),
			"--remote=punix:"+filepath.Join(l.RunDir, "db.sock"), "--pidfile", "--detach", "--log-file")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("restart ovsdb-server: %v: %s", err, out)
		}
		restarted := time.Now()
		d := readDaemon(t, l)
		t.Cleanup(func() {
			if err := d.stop(); err != nil {
				t.Error(err)
			}
		})
		eventually(t, "ready again", inv.Ready)
		t.Logf("synced again %v after the restart", time.Since(restarted))
		changed(t, inv, "the resync")
		checkVM(t, inv, vm1, name1, "net-c", "", 1)
		if p, ok := inv.Lookup(vm3.OFPort); ok {
			t.Errorf("vm3's port, deleted during the outage, is still there: %+v", p)
		}
		if nets := inv.Networks(); !slices.Equal(nets, []string{"net-c"}) {
			t.Errorf("Networks = %v", nets)
		}
		st := inv.Stats()
		if st["connects"] != 2 || st["disconnects"] != 1 || st["connect_errors"] == 0 || st["vm_ports"] != 1 {
			t.Errorf("stats %v", st)
		}
		if n := logs.count("level=WARN", "OVSDB"); n != 1 {
			t.Errorf("%d OVSDB warnings for one outage, want 1\n%s", n, logs)
		}

		// The new connection follows changes like the first.
		drain(inv)
		vsctl(t, l, "set", "Port", name1, "tag=7")
		eventually(t, "vm1's new tag", func() bool { p, _ := inv.Lookup(vm1.OFPort); return p.Tag == 7 })
		changed(t, inv, "vm1's new tag")
	})
}
