// Command ovs-dns-forwarder answers the DNS queries of the virtual machines
// of one compute node straight from the Open vSwitch integration bridge.
//
// Usage:
//
//	ovs-dns-forwarder [run|check-config|status [--json]|flush-cache] --config-file FILE [--config-file FILE ...] [--config-dir DIR ...]
//
// It reads the Neutron OVS agent's own configuration files ([ovs],
// [dns_forwarder], [neutron], [DEFAULT] dns_domain); later files override
// earlier ones. An invalid value exits with status 2 before anything
// touches the switch. status and flush-cache talk to a running daemon
// through its control socket (control_socket). SIGHUP reloads what can
// change without a restart; SIGTERM and SIGINT remove the daemon's flows
// and exit 0.
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/config"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/records"
)

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// run is main without the process exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	command := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		command, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("ovs-dns-forwarder", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files, dirs listFlag
	fs.Var(&files, "config-file", "configuration file (repeatable; later files override earlier ones)")
	fs.Var(&dirs, "config-dir", "directory whose *.conf files are read after the files (repeatable)")
	asJSON := fs.Bool("json", false, "status: print JSON")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ovs-dns-forwarder: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := config.Load(files, dirs)
	if err != nil {
		fmt.Fprintf(stderr, "ovs-dns-forwarder: %v\n", err)
		return exitUsage
	}
	switch command {
	case "check-config":
		fmt.Fprintln(stdout, "configuration OK")
		return exitOK
	case "status", "flush-cache":
		return talk(command, *asJSON, cfg.ControlSocket, stdout, stderr)
	case "run":
		if err := serve(files, dirs, cfg, stderr); err != nil {
			fmt.Fprintf(stderr, "ovs-dns-forwarder: %v\n", err)
			return exitFailed
		}
		return exitOK
	default:
		fmt.Fprintf(stderr, "ovs-dns-forwarder: unknown command %q (want run, check-config, status or flush-cache)\n", command)
		return exitUsage
	}
}

// maxLimitedPorts bounds the ports the per-port rate limiter tracks at
// once; a compute node has far fewer VM ports.
const maxLimitedPorts = 4096

// recordStore returns the store of the cloud's names, or nil when no
// Neutron API is configured ([neutron] auth_type unset).
func recordStore(cfg *config.Config, logger *slog.Logger) (*records.Store, error) {
	n := cfg.Neutron
	if n.AuthType == "" {
		return nil, nil
	}
	return records.New(records.Config{
		Auth: records.AuthOptions{
			AuthType: n.AuthType, AuthURL: n.AuthURL, Username: n.Username, Password: n.Password,
			ProjectName: n.ProjectName, UserDomainName: n.UserDomainName, ProjectDomainName: n.ProjectDomainName,
			RegionName: n.RegionName, ValidInterfaces: n.ValidInterfaces, EndpointOverride: n.EndpointOverride,
			CAFile: n.CAFile, Insecure: n.Insecure,
		},
		Domain:         cfg.DNSDomain,
		ResyncInterval: cfg.RecordsResyncInterval,
		Logger:         logger,
	})
}

// queryDeadline bounds one query: every server of the largest upstream set
// gets the full timeout in turn, and a second on top covers a TCP retry's
// connect.
func queryDeadline(cfg *config.Config) time.Duration {
	most := len(cfg.UpstreamServers)
	for _, z := range cfg.ForwardZones {
		most = max(most, len(z.Servers))
	}
	return time.Duration(most)*cfg.UpstreamTimeout + time.Second
}
