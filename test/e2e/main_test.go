// Package e2e runs the daemon against a real userspace Open vSwitch: VMs are
// network namespaces on veth ports of a Neutron-like br-int, the upstream is
// a real DNS server (unbound from Debian) or a miekg/dns server started by
// the test inside the lab's namespace, and the client is dig inside the VMs.
// The tests need root; they install the Debian packages they miss.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
)

// daemonBinary is the ovs-dns-forwarder built once for all tests.
var daemonBinary string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipped, needs root (it starts Open vSwitch in network namespaces)")
		return 0
	}
	if err := lab.EnsurePackages(); err != nil {
		fmt.Println("e2e:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "odf-e2e-bin-")
	if err != nil {
		fmt.Println("e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	daemonBinary = filepath.Join(dir, "ovs-dns-forwarder")
	build := exec.Command("go", "build", "-o", daemonBinary, "../../cmd/ovs-dns-forwarder")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Println("e2e: build:", err)
		return 1
	}
	return m.Run()
}
