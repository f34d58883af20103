// Command ovs-dns-forwarder answers the DNS queries of the virtual machines
// of one compute node straight from the Open vSwitch integration bridge.
//
// Usage:
//
//	ovs-dns-forwarder [run|check-config] --config-file FILE [--config-file FILE ...] [--config-dir DIR ...]
//
// It reads the Neutron OVS agent's own configuration files ([ovs] and
// [dns_forwarder]); later files override earlier ones. An invalid value
// exits with status 2 before anything touches the switch.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/config"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/inventory"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/ofswitch"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/pipeline"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/ratelimit"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/records"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver/cache"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver/forward"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver/local"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/responder"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/upstream"
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
	case "run":
		if err := serve(cfg, stderr); err != nil {
			fmt.Fprintf(stderr, "ovs-dns-forwarder: %v\n", err)
			return exitFailed
		}
		return exitOK
	default:
		fmt.Fprintf(stderr, "ovs-dns-forwarder: unknown command %q (want run or check-config)\n", command)
		return exitUsage
	}
}

// serve runs the daemon until SIGTERM or SIGINT.
func serve(cfg *config.Config, logOut io.Writer) error {
	level := slog.LevelInfo
	if cfg.Debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))

	client, err := upstream.New(upstream.Config{Timeout: cfg.UpstreamTimeout, Logger: logger})
	if err != nil {
		return fmt.Errorf("upstream sockets: %w", err)
	}
	defer client.Close()

	spec := pipeline.Spec{
		Table:          cfg.FlowTable,
		Priority:       cfg.FlowPriority,
		Cookie:         cfg.FlowCookie,
		ControllerID:   cfg.ControllerID,
		Services:       cfg.ClientServers,
		NoMeters:       !cfg.Meters,
		MeterRate:      cfg.MeterRate,
		MeterBurst:     cfg.MeterBurst,
		PortMeterRate:  cfg.PortMeterRate,
		PortMeterBurst: cfg.PortMeterBurst,
		InterceptAll:   cfg.InterceptAllDNS,
	}
	sw := ofswitch.New(ofswitch.Config{
		Target:       cfg.OpenFlowConnection,
		ControllerID: cfg.ControllerID,
		Cookie:       cfg.FlowCookie,
		TableID:      cfg.FlowTable,
		Declare:      spec.Declare,
		OwnsMeter:    spec.OwnsMeter,
		Mark:         pipeline.ReinjectMark(),
		Logger:       logger,
	})
	inv, err := inventory.New(inventory.Config{Endpoint: cfg.OVSDBConnection, Bridge: cfg.IntegrationBridge, Logger: logger})
	if err != nil {
		return err
	}
	store, err := recordStore(cfg, logger)
	if err != nil {
		return err
	}
	chain, closeChain, err := resolverChain(cfg, client, store, logger)
	if err != nil {
		return err
	}
	defer closeChain()
	var limiter responder.Limiter
	if cfg.PortRateLimit > 0 {
		limiter = ratelimit.New(float64(cfg.PortRateLimit), cfg.PortRateBurst, maxLimitedPorts)
	}
	resp := responder.New(responder.Config{
		Services:     cfg.ClientServers,
		Handler:      chain.handler,
		Out:          sw,
		MaxInflight:  cfg.MaxInflight,
		MaxUDPSize:   cfg.MaxUDPSize,
		MTU:          cfg.MTU,
		Deadline:     queryDeadline(cfg),
		Limiter:      limiter,
		TrustAD:      cfg.TrustUpstreamAD,
		InterceptAll: cfg.InterceptAllDNS,
		Reinject:     sw,
		Ports:        ports(inv),
		Logger:       logger,
	})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger.Info("starting",
		"bridge", cfg.IntegrationBridge, "openflow", cfg.OpenFlowConnection,
		"services", cfg.ClientServers, "upstreams", cfg.UpstreamServers,
		"table", cfg.FlowTable, "priority", cfg.FlowPriority,
		"cookie", fmt.Sprintf("%#x", cfg.FlowCookie), "controller_id", cfg.ControllerID)
	var background sync.WaitGroup
	background.Go(func() {
		if err := inv.Run(ctx); err != nil {
			logger.Error("OVSDB inventory stopped", "error", err)
		}
	})
	if store != nil {
		background.Go(func() {
			if err := store.Run(ctx, inv.Networks, inv.Changes()); err != nil {
				logger.Error("Neutron records stopped", "error", err)
			}
		})
	}
	err = sw.Run(ctx, resp.HandlePacketIn)
	stop()
	background.Wait()
	logger.Info("stopped", "responder", resp.Stats(), "local", chain.localStats(), "cache", chain.cacheStats(), "forward", chain.forward.Stats(),
		"upstream", client.Stats(), "openflow", sw.Stats(), "ovsdb", inv.Stats())
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// maxLimitedPorts bounds the ports the per-port rate limiter tracks at
// once; a compute node has far fewer VM ports.
const maxLimitedPorts = 4096

// chain is the resolver chain and the parts of it the daemon reports on.
type chain struct {
	handler resolver.Handler
	local   *local.Local // nil without a Neutron API
	cache   *cache.Cache // nil when cache_size is 0
	forward *forward.Forward
}

func (c chain) localStats() map[string]uint64 {
	if c.local == nil {
		return nil
	}
	return c.local.Stats()
}

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

func (c chain) cacheStats() map[string]uint64 {
	if c.cache == nil {
		return nil
	}
	return c.cache.Stats()
}

// resolverChain builds the handler chain: the local names (with a store),
// then the cache (unless cache_size is 0), then the forwarder. Local names
// come first: the cache is not keyed by network. The returned function
// stops the forwarder's background probes.
func resolverChain(cfg *config.Config, client *upstream.Client, store *records.Store, logger *slog.Logger) (chain, func(), error) {
	policy, err := forward.ParsePolicy(cfg.UpstreamPolicy)
	if err != nil {
		return chain{}, nil, err
	}
	fwd, err := forward.New(client, forward.Config{
		Servers: cfg.UpstreamServers,
		Zones:   cfg.ForwardZones,
		Policy:  policy,
		Timeout: cfg.UpstreamTimeout,
		Logger:  logger,
	})
	if err != nil {
		return chain{}, nil, err
	}
	c := chain{handler: fwd, forward: fwd}
	if cfg.CacheSize > 0 {
		c.cache = cache.New(cache.Config{
			Size:        cfg.CacheSize,
			MinTTL:      cfg.CacheMinTTL,
			MaxTTL:      cfg.CacheMaxTTL,
			NegativeTTL: cfg.CacheNegativeTTL,
			ServeStale:  cfg.ServeStale,
			StaleTTL:    cfg.ServeStaleTTL,
			Prefetch:    cfg.Prefetch,
			Set:         fwd.Set,
			Logger:      logger,
		}, fwd)
		c.handler = c.cache
	}
	if store != nil {
		c.local = local.New(local.Config{
			Records:       store,
			Domain:        cfg.DNSDomain,
			TTL:           cfg.LocalTTL,
			Authoritative: cfg.LocalDomainAuthoritative,
			Logger:        logger,
		}, c.handler)
		c.handler = c.local
	}
	return c, func() { fwd.Close() }, nil
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

// ports adapts the OVSDB inventory to what the responder asks of a port.
func ports(inv *inventory.Inventory) responder.Ports {
	return responder.PortsFunc(func(ofport uint32) (responder.PortInfo, bool) {
		p, ok := inv.Lookup(ofport)
		return responder.PortInfo{MAC: p.MAC, Network: p.Network, PortID: p.PortID}, ok
	})
}
