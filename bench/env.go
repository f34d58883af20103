package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/config"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
)

// zoneOrigin is the zone the upstream serves; every name under it
// resolves (an unbound redirect zone), so unique names never run out.
const zoneOrigin = "bench.test."

// hotNames is the size of the hot set: small enough for dnsmasq's
// 150-entry cache.
const hotNames = 100

// Target kinds.
const (
	kindDirect  = "direct"
	kindDaemon  = "daemon"
	kindDnsmasq = "dnsmasq"
	kindUnbound = "unbound"
)

// targetNames are the targets' labels in tables and the plot.
var targetNames = map[string]string{
	kindDirect:  "upstream direct",
	kindDaemon:  "ovs-dns-forwarder",
	kindDnsmasq: "dnsmasq (DHCP agent)",
	kindUnbound: "unbound forwarder",
}

// env is the lab and every server of the benchmark. Servers between the
// VMs and the upstream are (re)started on demand, so that each points at
// the upstream (plain or delayed) that the current cell needs.
type env struct {
	lab      *lab.Lab
	vms      []*lab.VM
	up       *lab.Server
	delays   map[time.Duration]*lab.Delay
	vswitchd int
	daemon   string // the daemon's binary

	daemonProc *lab.Process
	daemonConf string
	dnsmasq    *lab.Server
	dnsmasqUp  netip.AddrPort
	dnsmasqCmd []string
	unbound    *lab.Server
	unboundUp  netip.AddrPort
}

// daemonProfile is a daemon configuration of the benchmark.
type daemonProfile int

const (
	// profileBench is the daemon with its cache and without the per-port
	// rate limit, so that the throughput measured is the daemon's own.
	profileBench daemonProfile = iota
	// profileDefaults is the daemon with its default limits (the flood case).
	profileDefaults
)

// setup starts the lab with n VMs, the upstream and a delay relay for each
// nonzero delay.
func setup(daemon string, n int, delays []time.Duration) (*env, error) {
	if err := lab.EnsureBenchPackages(); err != nil {
		return nil, err
	}
	l, err := lab.Start(lab.Options{})
	if err != nil {
		return nil, err
	}
	e := &env{lab: l, daemon: daemon, delays: map[time.Duration]*lab.Delay{}}
	if err := e.start(n, delays); err != nil {
		return nil, errors.Join(err, e.close())
	}
	return e, nil
}

// start does setup's work after the lab runs.
func (e *env) start(n int, delays []time.Duration) error {
	for i := 1; i <= n; i++ {
		vm, err := e.lab.AddVM(fmt.Sprintf("vm%d", i))
		if err != nil {
			return err
		}
		e.vms = append(e.vms, vm)
	}
	up, err := e.lab.StartUnboundRedirect(lab.Zone{Origin: zoneOrigin, Records: []string{
		zoneOrigin + " 3600 IN A 198.51.100.1",
	}})
	if err != nil {
		return err
	}
	e.up = up
	for _, d := range delays {
		if d == 0 || e.delays[d] != nil {
			continue
		}
		r, err := e.lab.StartDelay(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), up.Port), d)
		if err != nil {
			return err
		}
		e.delays[d] = r
	}
	e.vswitchd, err = e.lab.VswitchdPID()
	return err
}

// close stops everything.
func (e *env) close() error {
	var errs []error
	for _, d := range e.delays {
		errs = append(errs, d.Close())
	}
	errs = append(errs, e.lab.Close())
	return errors.Join(errs...)
}

// upstreamPort is the port on 127.0.0.1 and the gateway of the upstream
// with the given delay.
func (e *env) upstreamPort(delay time.Duration) uint16 {
	if delay == 0 {
		return e.up.Port
	}
	return e.delays[delay].Port
}

// endpoint is where a VM sends its queries for one target.
type endpoint struct {
	server string
	port   uint16
	pids   []int // ovs-vswitchd, the upstream (and this process: the delay relay), the target
}

// prepare makes sure target kind runs against the upstream with delay and
// returns where to query it.
func (e *env) prepare(kind string, delay time.Duration, profile daemonProfile) (endpoint, error) {
	port := e.upstreamPort(delay)
	up := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	pids := []int{e.vswitchd, e.up.PID}
	if delay != 0 {
		pids = append(pids, os.Getpid())
	}
	gw := e.lab.Gateway4.String()
	switch kind {
	case kindDirect:
		return endpoint{gw, port, pids}, nil
	case kindDaemon:
		if err := e.ensureDaemon(up, profile); err != nil {
			return endpoint{}, err
		}
		return endpoint{"169.254.169.254", 53, append(pids, e.daemonProc.PID)}, nil
	case kindDnsmasq:
		if e.dnsmasq == nil || e.dnsmasqUp != up {
			if e.dnsmasq != nil {
				if err := e.dnsmasq.Stop(); err != nil {
					return endpoint{}, err
				}
			}
			var hosts []string
			for _, vm := range e.vms {
				h := "host-" + strings.ReplaceAll(vm.IPv4.String(), ".", "-")
				hosts = append(hosts, fmt.Sprintf("%s %s.openstacklocal %s", vm.IPv4, h, h))
			}
			s, cmd, err := e.lab.StartDnsmasq(lab.DnsmasqOptions{Upstream: up, Hosts: hosts})
			if err != nil {
				return endpoint{}, err
			}
			e.dnsmasq, e.dnsmasqUp, e.dnsmasqCmd = s, up, cmd
		}
		return endpoint{gw, e.dnsmasq.Port, append(pids, e.dnsmasq.PID)}, nil
	case kindUnbound:
		if e.unbound == nil || e.unboundUp != up {
			if e.unbound != nil {
				if err := e.unbound.Stop(); err != nil {
					return endpoint{}, err
				}
			}
			s, err := e.lab.StartUnboundForwarder(up)
			if err != nil {
				return endpoint{}, err
			}
			e.unbound, e.unboundUp = s, up
		}
		return endpoint{gw, e.unbound.Port, append(pids, e.unbound.PID)}, nil
	}
	return endpoint{}, fmt.Errorf("unknown target %q", kind)
}

// daemonConfig is the daemon's configuration file for an upstream and a
// profile.
func (e *env) daemonConfig(up netip.AddrPort, profile daemonProfile) string {
	conf := fmt.Sprintf("[ovs]\nintegration_bridge = %s\n[dns_forwarder]\nopenflow_connection = %s\ncontrol_socket = %s/control.sock\nupstream_dns_server_ports = %s\ncache_size = 10000\n",
		e.lab.Bridge, e.lab.MgmtTarget(), e.lab.Dir, up)
	if profile == profileBench {
		// Throughput runs lift the per-port limits (meters included) that
		// would otherwise cap one VM at about 1000 queries/s.
		conf += "port_rate_limit = 0\nport_meter_rate = 10000000\nport_meter_burst = 10000\nmeter_rate = 10000000\nmeter_burst = 10000\n"
	}
	return conf
}

// ensureDaemon (re)starts the daemon when its configuration differs, and
// waits until it answers.
func (e *env) ensureDaemon(up netip.AddrPort, profile daemonProfile) error {
	conf := e.daemonConfig(up, profile)
	if e.daemonProc != nil && e.daemonConf == conf {
		return nil
	}
	if e.daemonProc != nil {
		if err := e.daemonProc.Stop(); err != nil {
			return err
		}
		e.daemonProc = nil
	}
	p, err := e.lab.StartDaemon(e.daemon, "ovs-dns-forwarder", conf)
	if err != nil {
		return err
	}
	e.daemonProc, e.daemonConf = p, conf
	for i := 0; ; i++ {
		flows, err := e.lab.DumpFlows(config.Defaults().FlowCookie)
		if err == nil && len(flows) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err = e.vms[0].Dig(ctx, "@169.254.169.254", "h0."+zoneOrigin, "A")
			cancel()
			if err == nil {
				return nil
			}
		}
		if i == 100 {
			log, _ := os.ReadFile(p.LogPath)
			return fmt.Errorf("the daemon does not answer: %v\n%s", err, tail(log))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
