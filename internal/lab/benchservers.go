package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// benchPackages are the programs the benchmark needs beyond the harness's
// own, with the Debian packages that provide them.
var benchPackages = []struct{ file, pkg string }{
	{"dnsmasq", "dnsmasq-base"},
	{"gnuplot", "gnuplot-nox"},
}

// EnsureBenchPackages installs, like EnsurePackages, the packages the
// benchmark needs on top of the harness's: dnsmasq-base (the dnsmasq
// program without its service) and gnuplot-nox (the plot). Nothing is
// installed when the programs exist; no service is started.
func EnsureBenchPackages() error {
	if err := EnsurePackages(); err != nil {
		return err
	}
	pkgMu.Lock()
	defer pkgMu.Unlock()
	var missing []string
	for _, n := range benchPackages {
		if _, err := exec.LookPath(n.file); err != nil && !slices.Contains(missing, n.pkg) {
			missing = append(missing, n.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := installPackages(missing); err != nil {
		return err
	}
	for _, n := range benchPackages {
		if _, err := exec.LookPath(n.file); err != nil {
			return fmt.Errorf("lab: %s installed, but %s is still missing", n.pkg, n.file)
		}
	}
	return nil
}

// StartUnboundRedirect is StartUnbound with every zone of type redirect
// instead of static: any name under a zone's origin is answered with the
// origin's own records, under the queried name. A zone with an A record
// at its origin thus answers every name below it, which gives a benchmark
// an unlimited supply of distinct names that all resolve.
func (l *Lab) StartUnboundRedirect(zones ...Zone) (*Server, error) {
	port, err := l.freePort()
	if err != nil {
		return nil, fmt.Errorf("lab: unbound: %w", err)
	}
	base := filepath.Join(l.Dir, fmt.Sprintf("unbound-%d", port))
	conf, err := l.unboundConfig(base, port, zones)
	if err != nil {
		return nil, fmt.Errorf("lab: unbound: %w", err)
	}
	for _, z := range zones {
		q, err := unboundQuote(z.Origin)
		if err != nil {
			return nil, fmt.Errorf("lab: unbound: %w", err)
		}
		static := "\tlocal-zone: " + q + " static\n"
		if !strings.Contains(conf, static) {
			return nil, fmt.Errorf("lab: unbound: zone %s not found in the configuration", z.Origin)
		}
		conf = strings.Replace(conf, static, "\tlocal-zone: "+q+" redirect\n", 1)
	}
	return l.startUnboundConfig(base, port, conf)
}

// StartUnboundForwarder runs a second unbound in the lab namespace as a
// caching forwarder: forward-zone "." to upstream only, cache on with
// unbound's default sizes, no validation, one thread per CPU, and the
// "test." zone forwarded like any other (unbound blocks it by default, as
// RFC 6761 suggests; the lab's zones live under it). It listens
// on 127.0.0.1 and Gateway4 on one free port (UDP and TCP), answers
// anyone in the lab, and returns once it answers. Close stops it.
func (l *Lab) StartUnboundForwarder(upstream netip.AddrPort) (*Server, error) {
	port, err := l.freePort()
	if err != nil {
		return nil, fmt.Errorf("lab: unbound forwarder: %w", err)
	}
	base := filepath.Join(l.Dir, fmt.Sprintf("unbound-fwd-%d", port))
	var b strings.Builder
	b.WriteString("server:\n")
	for _, a := range []string{"127.0.0.1", l.Gateway4.String()} {
		fmt.Fprintf(&b, "\tinterface: %s\n", a)
	}
	fmt.Fprintf(&b, "\tport: %d\n", port)
	b.WriteString("\tdo-daemonize: no\n\tchroot: \"\"\n\tusername: \"\"\n")
	for _, kv := range [][2]string{{"directory", l.Dir}, {"pidfile", base + ".pid"}, {"logfile", base + ".log"}} {
		q, err := unboundQuote(kv[1])
		if err != nil {
			return nil, fmt.Errorf("lab: unbound forwarder: %w", err)
		}
		fmt.Fprintf(&b, "\t%s: %s\n", kv[0], q)
	}
	threads := runtime.NumCPU()
	fmt.Fprintf(&b, "\tnum-threads: %d\n", threads)
	if threads > 1 {
		b.WriteString("\tso-reuseport: yes\n")
	}
	b.WriteString(`	use-syslog: no
	access-control: 0.0.0.0/0 allow
	access-control: ::/0 allow
	module-config: "iterator"
	do-not-query-localhost: no
	msg-buffer-size: 65552
	local-zone: "test." nodefault
forward-zone:
	name: "."
`)
	fmt.Fprintf(&b, "\tforward-addr: %s@%d\n", upstream.Addr(), upstream.Port())
	b.WriteString("remote-control:\n\tcontrol-enable: no\n")
	s, err := l.startUnboundConfig(base, port, b.String())
	if err != nil {
		return nil, fmt.Errorf("lab: unbound forwarder: %w", err)
	}
	return s, nil
}

// startUnboundConfig writes conf to base.conf, checks it, runs unbound on
// it in the lab namespace and waits until it answers on 127.0.0.1:port.
func (l *Lab) startUnboundConfig(base string, port uint16, conf string) (*Server, error) {
	if err := os.WriteFile(base+".conf", []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("lab: unbound: %w", err)
	}
	if _, err := run(cmdTimeout, nil, "", "unbound-checkconf", base+".conf"); err != nil {
		return nil, fmt.Errorf("lab: unbound: %w", err)
	}
	p, err := l.startProcess("unbound", base+".out", "unbound", "-d", "-c", base+".conf")
	if err != nil {
		return nil, fmt.Errorf("lab: unbound: %w", err)
	}
	s := &Server{Port: port, PID: p.PID, LogPath: base + ".log", proc: p}
	if err := l.waitAnswers(p, port, "."); err != nil {
		stopErr := p.terminate()
		out, _ := os.ReadFile(base + ".out")
		log, _ := os.ReadFile(s.LogPath)
		return nil, errors.Join(fmt.Errorf("lab: unbound: %w\n%s%s", err, out, log), stopErr)
	}
	return s, nil
}

// waitAnswers waits up to 10 s until a DNS server on 127.0.0.1:port in the
// lab namespace answers a query for name (any response code), or until p
// exits.
func (l *Lab) waitAnswers(p *Process, port uint16, name string) error {
	return poll(10*time.Second, fmt.Sprintf("a DNS server on port %d", port), func() (bool, error) {
		select {
		case <-p.done:
			return false, errors.New("the server exited")
		default:
		}
		_, err := inNS(l.NetNS, nil, "dig", "@127.0.0.1", "-p", strconv.Itoa(int(port)),
			"+time=1", "+tries=1", name, "SOA")
		return err == nil, err
	})
}

// DnsmasqOptions configures StartDnsmasq.
type DnsmasqOptions struct {
	// Upstream is the server dnsmasq forwards to (--server).
	Upstream netip.AddrPort
	// Domain is --domain, the cloud's DNS domain; empty means
	// "openstacklocal", Neutron's default.
	Domain string
	// Hosts are lines of the --addn-hosts file ("ip fqdn hostname").
	Hosts []string
	// Port is the DNS port; 0 means 53, as the DHCP agent runs it.
	Port uint16
}

// StartDnsmasq runs dnsmasq in the lab namespace with the DNS part of the
// Neutron DHCP agent's command line (neutron/agent/linux/dhcp.py):
//
//	dnsmasq --no-hosts --no-resolv --pid-file=F --addn-hosts=F
//	  --local-service --bind-dynamic --conf-file=/dev/null
//	  --server=UPSTREAM --domain=DOMAIN
//
// plus --keep-in-foreground (so that the lab owns the process),
// --log-facility=<file> and --port when Port is set. Everything else keeps
// dnsmasq's defaults as the agent does (cache 150 names, 150 concurrent
// forwarded queries, EDNS packet max 1232). The DHCP options are left out:
// no DHCP is served. It listens on every address of the lab namespace
// (the gateway tap's included) and returns once it answers.
func (l *Lab) StartDnsmasq(opts DnsmasqOptions) (*Server, []string, error) {
	port := opts.Port
	if port == 0 {
		port = 53
	}
	domain := opts.Domain
	if domain == "" {
		domain = "openstacklocal"
	}
	base := filepath.Join(l.Dir, fmt.Sprintf("dnsmasq-%d", port))
	hosts := strings.Join(opts.Hosts, "\n")
	if hosts != "" {
		hosts += "\n"
	}
	if err := os.WriteFile(base+".addn_hosts", []byte(hosts), 0o644); err != nil {
		return nil, nil, fmt.Errorf("lab: dnsmasq: %w", err)
	}
	args := []string{
		"--no-hosts", "--no-resolv",
		"--pid-file=" + base + ".pid",
		"--addn-hosts=" + base + ".addn_hosts",
		"--local-service", "--bind-dynamic",
		"--conf-file=/dev/null",
		fmt.Sprintf("--server=%s#%d", opts.Upstream.Addr(), opts.Upstream.Port()),
		"--domain=" + domain,
		"--keep-in-foreground",
		"--log-facility=" + base + ".log",
	}
	if port != 53 {
		args = append(args, "--port="+strconv.Itoa(int(port)))
	}
	p, err := l.startProcess("dnsmasq", base+".out", "dnsmasq", args...)
	if err != nil {
		return nil, nil, fmt.Errorf("lab: dnsmasq: %w", err)
	}
	s := &Server{Port: port, PID: p.PID, LogPath: base + ".log", proc: p}
	if err := l.waitAnswers(p, port, domain); err != nil {
		stopErr := p.terminate()
		out, _ := os.ReadFile(base + ".out")
		return nil, nil, errors.Join(fmt.Errorf("lab: dnsmasq: %w\n%s", err, out), stopErr)
	}
	return s, append([]string{"dnsmasq"}, args...), nil
}
