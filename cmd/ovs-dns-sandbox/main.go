// Command ovs-dns-sandbox runs ovs-dns-forwarder in a sandbox: a userspace
// Open vSwitch with a Neutron-like br-int in a network namespace of its
// own, two VMs (namespaces on veth ports) and a local upstream (unbound
// serving a small zone). It shows dig answers from both VMs over the IPv4
// and the IPv6 service address, then tears everything down, or keeps it
// running with --keep until Ctrl-C.
//
// It needs root; it sends traffic only inside the namespaces it creates.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/config"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
)

func main() {
	daemon := flag.String("daemon", "bin/ovs-dns-forwarder", "the ovs-dns-forwarder binary to run")
	keep := flag.Bool("keep", false, "keep the sandbox running until interrupted")
	flag.Parse()
	if err := run(*daemon, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "ovs-dns-sandbox:", err)
		os.Exit(1)
	}
}

// demoZone is what the sandbox's upstream serves.
var demoZone = lab.Zone{Origin: "demo.test.", Records: []string{
	"www.demo.test. 300 IN A 192.0.2.80",
	"www.demo.test. 300 IN AAAA 2001:db8::80",
	"mail.demo.test. 300 IN CNAME www.demo.test.",
}}

func run(daemon string, keep bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root: it starts Open vSwitch in network namespaces")
	}
	if _, err := os.Stat(daemon); err != nil {
		return fmt.Errorf("daemon binary: %w (run make build)", err)
	}
	if err := lab.EnsurePackages(); err != nil {
		return err
	}
	step("starting a userspace Open vSwitch with a Neutron-like br-int")
	l, err := lab.Start(lab.Options{})
	if err != nil {
		return err
	}
	defer func() {
		step("tearing down the sandbox")
		if err := l.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "ovs-dns-sandbox: close:", err)
		}
	}()
	var vms []*lab.VM
	for _, name := range []string{"vm1", "vm2"} {
		vm, err := l.AddVM(name)
		if err != nil {
			return err
		}
		vms = append(vms, vm)
		fmt.Printf("    %s: ofport %d, %s, %s, %s\n", vm.Name, vm.OFPort, vm.MAC, vm.IPv4, vm.IPv6)
	}
	up, err := l.StartUnbound(demoZone)
	if err != nil {
		return err
	}
	fmt.Printf("    upstream: unbound on 127.0.0.1:%d serving demo.test.\n", up.Port)

	cfg := fmt.Sprintf(`[ovs]
integration_bridge = %s

[dns_forwarder]
openflow_connection = %s
control_socket = %s/control.sock
upstream_dns_servers = 127.0.0.1
upstream_dns_port = %d
upstream_query_timeout = 2
`, l.Bridge, l.MgmtTarget(), l.Dir, up.Port)
	step("starting ovs-dns-forwarder")
	p, err := l.StartDaemon(daemon, "ovs-dns-forwarder", cfg)
	if err != nil {
		return err
	}
	defer p.Stop()
	if err := waitFlows(l, 2*(1+len(vms))); err != nil {
		return err
	}
	flows, _ := l.DumpFlows(config.Defaults().FlowCookie)
	for _, f := range flows {
		fmt.Println("    " + f)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, vm := range vms {
		for _, q := range [][]string{
			{"@169.254.169.254", "www.demo.test", "A"},
			{"@fd00::254", "www.demo.test", "AAAA"},
			{"@169.254.169.254", "mail.demo.test", "A"},
			{"@fd00::254", "nothing.demo.test", "A"},
		} {
			out, err := vm.Dig(ctx, append(q, "+noall", "+answer", "+comments")...)
			if err != nil {
				return fmt.Errorf("dig in %s: %v\n%s", vm.Name, err, out)
			}
			step(fmt.Sprintf("%s$ dig %s", vm.Name, strings.Join(q, " ")))
			fmt.Print(indent(out))
		}
	}
	if keep {
		step(fmt.Sprintf("sandbox running; try: ip netns exec %s dig @169.254.169.254 www.demo.test — Ctrl-C ends it", vms[0].NetNS))
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
	}
	return nil
}

// waitFlows waits until the daemon's n flows are on the bridge.
func waitFlows(l *lab.Lab, n int) error {
	for i := 0; i < 100; i++ {
		if flows, err := l.DumpFlows(config.Defaults().FlowCookie); err == nil && len(flows) == n {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the daemon's flows did not appear within 10 s")
}

func step(s string) { fmt.Println("==> " + s) }

func indent(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, ";; Got answer") {
			continue
		}
		b.WriteString("    " + line + "\n")
	}
	return b.String()
}
