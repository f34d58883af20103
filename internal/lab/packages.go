package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"
)

// ovsSchema is the OVSDB schema of Open vSwitch as Debian installs it.
const ovsSchema = "/usr/share/openvswitch/vswitch.ovsschema"

// needed maps every program (or, when absolute, file) the harness uses to
// the Debian package that provides it.
var needed = []struct{ file, pkg string }{
	{"ovsdb-tool", "openvswitch-switch"},
	{"ovsdb-server", "openvswitch-switch"},
	{"ovs-vswitchd", "openvswitch-switch"},
	{"ovs-vsctl", "openvswitch-switch"},
	{"ovs-ofctl", "openvswitch-switch"},
	{ovsSchema, "openvswitch-switch"},
	{"dig", "bind9-dnsutils"},
	{"dnsperf", "dnsperf"},
	{"tcpdump", "tcpdump"},
	{"ethtool", "ethtool"},
	{"ip", "iproute2"},
	{"ping", "iputils-ping"},
	{"arping", "iputils-arping"},
	{"sysctl", "procps"},
	{"unbound", "unbound"},
	{"unbound-checkconf", "unbound"},
}

// policyRCD is Debian's hook that maintainer scripts ask before starting a
// service; exit code 101 means "not allowed".
const policyRCD = "/usr/sbin/policy-rc.d"

var (
	pkgMu      sync.Mutex
	pkgDone    bool
	pkgUpdated bool
)

// EnsurePackages installs the Debian packages the harness needs
// (openvswitch-switch, bind9-dnsutils, dnsperf, tcpdump, ethtool,
// iproute2, iputils-ping, iputils-arping, procps, unbound) when one of their programs is
// missing: apt-get update once per process, then apt-get install -y for
// the missing packages only. While it installs, a temporary
// /usr/sbin/policy-rc.d (only when none exists) stops the packages'
// maintainer scripts from starting the distribution's openvswitch or
// unbound service. After one success it returns nil at once.
func EnsurePackages() error {
	pkgMu.Lock()
	defer pkgMu.Unlock()
	if pkgDone {
		return nil
	}
	missing := missingPackages()
	if len(missing) == 0 {
		pkgDone = true
		return nil
	}
	if err := installPackages(missing); err != nil {
		return err
	}
	if still := missingPackages(); len(still) > 0 {
		return fmt.Errorf("lab: packages %v installed, but their programs are still missing", still)
	}
	pkgDone = true
	return nil
}

// missingPackages lists, once each, the packages whose files are missing.
func missingPackages() []string {
	var pkgs []string
	for _, n := range needed {
		var err error
		if n.file[0] == '/' {
			_, err = os.Stat(n.file)
		} else {
			_, err = exec.LookPath(n.file)
		}
		if err != nil && !slices.Contains(pkgs, n.pkg) {
			pkgs = append(pkgs, n.pkg)
		}
	}
	return pkgs
}

// aptLock is the file whose lock serialises the harness's package installs
// across processes: go test runs the packages' test binaries in parallel,
// and two apt-get runs at once fail on dpkg's own lock.
const aptLock = "/run/lock/ovs-dns-forwarder-lab-apt.lock"

// installPackages runs apt-get with services blocked from starting, holding
// aptLock (waiting for another process's install to end). Installing a
// package another process has just installed is a quick no-op.
func installPackages(pkgs []string) (err error) {
	lock, err := os.OpenFile(aptLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("lab: package lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lab: package lock: %w", err)
	}
	if _, statErr := os.Stat(policyRCD); errors.Is(statErr, os.ErrNotExist) {
		if err := os.WriteFile(policyRCD, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
			return fmt.Errorf("lab: blocking service starts: %w", err)
		}
		defer func() {
			if rmErr := os.Remove(policyRCD); rmErr != nil {
				err = errors.Join(err, fmt.Errorf("lab: removing %s: %w", policyRCD, rmErr))
			}
		}()
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if !pkgUpdated {
		if _, err := run(10*time.Minute, env, "", "apt-get", "update"); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		pkgUpdated = true
	}
	args := append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)
	if _, err := run(20*time.Minute, env, "", "apt-get", args...); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}
