package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/config"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/control"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/inventory"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/metrics"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/ofswitch"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/openflow"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/pipeline"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/ratelimit"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/records"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver/cache"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver/forward"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver/local"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/responder"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/systemd"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/upstream"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// recentErrors is how many warnings and errors `status` shows.
const recentErrors = 20

// daemon is the running daemon: its parts, and what a reload may change.
type daemon struct {
	files, dirs []string
	started     time.Time
	level       slog.LevelVar
	logger      *slog.Logger
	recorder    *control.Recorder

	mu  sync.Mutex     // guards cfg during a reload
	cfg *config.Config // the configuration in force

	client  *upstream.Client
	sw      *ofswitch.Switch
	inv     *inventory.Inventory
	store   *records.Store // nil without a Neutron API
	local   *local.Local   // nil without a Neutron API
	cache   *cache.Cache   // nil when cache_size is 0
	fwd     forwarder
	resp    *responder.Responder
	metrics *metrics.Metrics
	qlog    atomic.Pointer[queryLog]
	// state is what the flow set needs beyond port numbers (VM ports,
	// neighbour answers), recomputed by followTopology.
	state atomic.Pointer[pipeline.State]
}

// queryLog is the query log's setting; nil inside the pointer: off.
type queryLog struct{ rate float64 }

// forwarder holds the forwarder in force; a reload swaps in a new one
// when the upstreams change. It is the chain's last step.
type forwarder struct {
	cur atomic.Pointer[forward.Forward]
}

// ServeDNS asks the forwarder in force.
func (f *forwarder) ServeDNS(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
	return f.cur.Load().ServeDNS(ctx, r, dst)
}

// set tells the cache which upstream set answers r.
func (f *forwarder) set(r *resolver.Request) uint32 { return f.cur.Load().Set(r) }

// serve runs the daemon until SIGTERM or SIGINT.
func serve(files, dirs []string, cfg *config.Config, logOut io.Writer) error {
	d := &daemon{files: files, dirs: dirs, cfg: cfg, started: time.Now()}
	d.recorder = control.NewRecorder(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: &d.level}), recentErrors)
	d.logger = slog.New(d.recorder)
	d.applyLogSettings(cfg)
	if err := d.build(); err != nil {
		return err
	}
	defer d.client.Close()
	defer func() { d.fwd.cur.Load().Close() }()
	return d.run()
}

// applyLogSettings sets the log level and the query log from cfg.
func (d *daemon) applyLogSettings(cfg *config.Config) {
	d.level.Set(slog.LevelInfo)
	if cfg.Debug {
		d.level.Set(slog.LevelDebug)
	}
	if cfg.QueryLog {
		d.qlog.Store(&queryLog{rate: cfg.QueryLogSampleRate})
	} else {
		d.qlog.Store(nil)
	}
}

// build creates every part from d.cfg.
func (d *daemon) build() error {
	cfg, logger := d.cfg, d.logger
	var err error
	if d.client, err = upstream.New(upstream.Config{Timeout: cfg.UpstreamTimeout, Logger: logger}); err != nil {
		return fmt.Errorf("upstream sockets: %w", err)
	}
	spec := pipeline.Spec{
		Table:           cfg.FlowTable,
		Priority:        cfg.FlowPriority,
		Cookie:          cfg.FlowCookie,
		ControllerID:    cfg.ControllerID,
		Services:        cfg.ClientServers,
		NoMeters:        !cfg.Meters,
		MeterRate:       cfg.MeterRate,
		MeterBurst:      cfg.MeterBurst,
		PortMeterRate:   cfg.PortMeterRate,
		PortMeterBurst:  cfg.PortMeterBurst,
		InterceptAll:    cfg.InterceptAllDNS,
		NeighborAnswers: cfg.AnswerNeighbors,
		ResponderMAC:    cfg.ResponderMAC,
	}
	// No VM port and no neighbour until OVSDB and Neutron say which:
	// nothing is intercepted or answered for a port the daemon does not
	// know to be an instance's.
	d.state.Store(&pipeline.State{})
	d.sw = ofswitch.New(ofswitch.Config{
		Target:       cfg.OpenFlowConnection,
		ControllerID: cfg.ControllerID,
		Cookie:       cfg.FlowCookie,
		TableID:      cfg.FlowTable,
		Declare: func(ports []uint32) ([]openflow.MeterMod, []openflow.FlowMod) {
			return spec.Declare(ports, *d.state.Load())
		},
		OwnsMeter: spec.OwnsMeter,
		Mark:      pipeline.ReinjectMark(),
		Logger:    logger,
	})
	if d.inv, err = inventory.New(inventory.Config{Endpoint: cfg.OVSDBConnection, Bridge: cfg.IntegrationBridge, Logger: logger}); err != nil {
		return err
	}
	if d.store, err = recordStore(cfg, logger); err != nil {
		return err
	}
	fwd, err := d.newForward(cfg)
	if err != nil {
		return err
	}
	d.fwd.cur.Store(fwd)

	// The chain: local names (with a Neutron API), the cache, the
	// forwarder. Local names come first: the cache is not keyed by
	// network.
	var chain resolver.Handler = &d.fwd
	if cfg.CacheSize > 0 {
		d.cache = cache.New(cache.Config{
			Size:        cfg.CacheSize,
			MinTTL:      cfg.CacheMinTTL,
			MaxTTL:      cfg.CacheMaxTTL,
			NegativeTTL: cfg.CacheNegativeTTL,
			ServeStale:  cfg.ServeStale,
			StaleTTL:    cfg.ServeStaleTTL,
			Prefetch:    cfg.Prefetch,
			Set:         d.fwd.set,
			Logger:      logger,
		}, chain)
		chain = d.cache
	}
	if d.store != nil {
		d.local = local.New(local.Config{
			Records:       d.store,
			Domain:        cfg.DNSDomain,
			TTL:           cfg.LocalTTL,
			Authoritative: cfg.LocalDomainAuthoritative,
			Logger:        logger,
		}, chain)
		chain = d.local
	}
	d.resp = responder.New(responder.Config{
		Services:           cfg.ClientServers,
		Handler:            chain,
		Out:                d.sw,
		MaxInflight:        cfg.MaxInflight,
		MaxInflightPerPort: cfg.MaxInflightPerPort,
		MaxUDPSize:         cfg.MaxUDPSize,
		MTU:                cfg.MTU,
		Deadline:           queryDeadline(cfg),
		Limiter:            portLimiter(cfg),
		TrustAD:            cfg.TrustUpstreamAD,
		InterceptAll:       cfg.InterceptAllDNS,
		Reinject:           d.sw,
		Ports:              ports(d.inv, d.store),
		Observe:            d.observe,
		Logger:             logger,
	})
	if cfg.MetricsListen != "" {
		d.metrics = metrics.New(d.metricSources())
	}
	return nil
}

// newForward builds a forwarder for cfg's upstreams.
func (d *daemon) newForward(cfg *config.Config) (*forward.Forward, error) {
	policy, err := forward.ParsePolicy(cfg.UpstreamPolicy)
	if err != nil {
		return nil, err
	}
	// The servers' label values, made once: no allocation per exchange.
	names := map[netip.AddrPort]string{}
	for _, s := range cfg.UpstreamServers {
		names[s] = s.String()
	}
	for _, z := range cfg.ForwardZones {
		for _, s := range z.Servers {
			names[s] = s.String()
		}
	}
	return forward.New(d.client, forward.Config{
		Servers: cfg.UpstreamServers,
		Zones:   cfg.ForwardZones,
		Policy:  policy,
		Timeout: cfg.UpstreamTimeout,
		Logger:  d.logger,
		// d.metrics is set before the first query arrives.
		Observe: func(s netip.AddrPort, rtt time.Duration, err error) {
			if d.metrics != nil {
				d.metrics.Upstream(names[s], rtt, err)
			}
		},
	})
}

// portLimiter returns the per-port limiter of cfg, or nil for none.
func portLimiter(cfg *config.Config) responder.Limiter {
	if cfg.PortRateLimit == 0 {
		return nil
	}
	return ratelimit.New(float64(cfg.PortRateLimit), cfg.PortRateBurst, maxLimitedPorts)
}

// observe feeds metrics and the query log with every answer sent.
func (d *daemon) observe(r *resolver.Request, rcode int, took time.Duration) {
	if d.metrics != nil {
		d.metrics.Query(r.Query.Type, rcode, metricSource(r.Source), took)
	}
	ql := d.qlog.Load()
	if ql == nil || (ql.rate < 1 && rand.Float64() >= ql.rate) {
		return
	}
	d.logger.Info("query", "port", r.InPort, "port_id", r.PortID, "network", r.Network, "client", r.Client,
		"name", string(dnswire.AppendNameText(nil, r.Query.Name)), "type", dns.Type(r.Query.Type).String(),
		"rcode", dns.RcodeToString[rcode], "source", r.Source.String(), "latency", took)
}

// metricSource maps the chain's answer source to the metrics' one.
func metricSource(s resolver.Source) metrics.Source {
	switch s {
	case resolver.SourceLocal:
		return metrics.SourceLocal
	case resolver.SourceCache:
		return metrics.SourceCache
	case resolver.SourceUpstream:
		return metrics.SourceUpstream
	}
	return metrics.SourceError
}

// run starts the background parts and the OpenFlow session, and handles
// signals until SIGTERM or SIGINT.
func (d *daemon) run() error {
	cfg, logger := d.cfg, d.logger
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger.Info("starting", "version", version,
		"bridge", cfg.IntegrationBridge, "openflow", cfg.OpenFlowConnection, "ovsdb", cfg.OVSDBConnection,
		"services", cfg.ClientServers, "upstreams", cfg.UpstreamServers,
		"table", cfg.FlowTable, "priority", cfg.FlowPriority,
		"cookie", fmt.Sprintf("%#x", cfg.FlowCookie), "controller_id", cfg.ControllerID,
		"local_names", d.store != nil, "cache_size", cfg.CacheSize, "metrics", cfg.MetricsListen)

	var bg sync.WaitGroup
	bg.Go(func() {
		if err := d.inv.Run(ctx); err != nil {
			logger.Error("OVSDB inventory stopped", "error", err)
		}
	})
	if d.store != nil {
		bg.Go(func() {
			if err := d.store.Run(ctx, d.inv.Networks, d.inv.Changes()); err != nil {
				logger.Error("Neutron records stopped", "error", err)
			}
		})
		bg.Go(func() { d.followTopology(ctx) })
	}
	if d.metrics != nil {
		bg.Go(func() {
			if err := metrics.Serve(ctx, cfg.MetricsListen, d.metrics.Handler(d.ready), logger); err != nil {
				logger.Error("metrics listener stopped", "listen", cfg.MetricsListen, "error", err)
			}
		})
	}
	if cfg.ControlSocket != "" {
		l, err := control.Listen(cfg.ControlSocket)
		if err != nil {
			return fmt.Errorf("control socket: %w", err)
		}
		bg.Go(func() {
			if err := control.Serve(ctx, l, d, logger); err != nil {
				logger.Error("control socket stopped", "error", err)
			}
		})
	}
	bg.Go(func() { d.notifyReady(ctx) })
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	bg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				d.reload()
			}
		}
	})

	err := d.sw.Run(ctx, d.resp.HandlePacketIn)
	stop()
	_ = systemd.Notify("STOPPING=1")
	bg.Wait()
	logger.Info("stopped", "responder", d.resp.Stats(), "openflow", d.sw.Stats(), "ovsdb", d.inv.Stats())
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// ready reports whether the daemon answers: OpenFlow connected, flows
// installed, and an upstream up. The reason says what is missing.
func (d *daemon) ready() (bool, string) {
	if !d.sw.Connected() {
		return false, "openflow not connected"
	}
	if d.sw.Stats()["flows"] == 0 {
		return false, "flows not installed"
	}
	for _, h := range d.fwd.cur.Load().Health() {
		if h.Up {
			return true, "ok"
		}
	}
	if d.store != nil {
		return true, "ok: local names only, no upstream up"
	}
	return false, "no upstream up"
}

// notifyReady tells systemd the daemon is ready once its flows are
// installed.
func (d *daemon) notifyReady(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if d.sw.Connected() && d.sw.Stats()["flows"] > 0 {
			if err := systemd.Notify("READY=1\nSTATUS=answering"); err != nil {
				d.logger.Warn("sd_notify failed", "error", err)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reloadable lists the settings a SIGHUP changes in place; every other
// change needs a restart.
var reloadable = map[string]bool{
	"Debug": true, "QueryLog": true, "QueryLogSampleRate": true,
	"PortRateLimit": true, "PortRateBurst": true,
	"UpstreamServers": true, "UpstreamTimeout": true, "UpstreamPolicy": true, "ForwardZones": true,
}

// reload reads the configuration files again and applies what can change
// without a restart: log level, query log, per-port limit, upstreams
// (policy, zones, timeout; the cache is flushed and the sockets of removed
// upstreams are closed). It logs what changed and what needs a restart.
func (d *daemon) reload() {
	_ = systemd.Notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicMicros()))
	defer func() { _ = systemd.Notify("READY=1") }()
	next, err := config.Load(d.files, d.dirs)
	if err != nil {
		d.logger.Error("reload: configuration invalid, keeping the one in force", "error", err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cur := d.cfg
	var applied, restart []string
	cv, nv := reflect.ValueOf(cur).Elem(), reflect.ValueOf(next).Elem()
	for i := range cv.NumField() {
		name := cv.Type().Field(i).Name
		if reflect.DeepEqual(cv.Field(i).Interface(), nv.Field(i).Interface()) {
			continue
		}
		if reloadable[name] {
			applied = append(applied, name)
		} else {
			restart = append(restart, name)
		}
	}
	running := *cur
	d.applyLogSettings(next)
	running.Debug, running.QueryLog, running.QueryLogSampleRate = next.Debug, next.QueryLog, next.QueryLogSampleRate
	if next.PortRateLimit != cur.PortRateLimit || next.PortRateBurst != cur.PortRateBurst {
		d.resp.SetLimiter(portLimiter(next))
		running.PortRateLimit, running.PortRateBurst = next.PortRateLimit, next.PortRateBurst
	}
	if !reflect.DeepEqual(next.UpstreamServers, cur.UpstreamServers) || next.UpstreamTimeout != cur.UpstreamTimeout ||
		next.UpstreamPolicy != cur.UpstreamPolicy || !reflect.DeepEqual(next.ForwardZones, cur.ForwardZones) {
		fwd, err := d.newForward(next)
		if err != nil {
			d.logger.Error("reload: upstreams not changed", "error", err)
		} else {
			old := d.fwd.cur.Swap(fwd)
			old.Close()
			if d.cache != nil {
				d.cache.Flush()
			}
			if gone := d.client.Retain(upstreams(next)); len(gone) > 0 {
				d.logger.Info("reload: closing the sockets of removed upstreams", "servers", gone)
			}
			running.UpstreamServers, running.UpstreamTimeout = next.UpstreamServers, next.UpstreamTimeout
			running.UpstreamPolicy, running.ForwardZones = next.UpstreamPolicy, next.ForwardZones
			d.resp.SetDeadline(queryDeadline(next))
		}
	}
	d.cfg = &running
	d.logger.Info("configuration reloaded", "applied", applied, "needs_restart", restart)
}

// upstreams returns every server of cfg: the default upstreams and the
// zones' servers.
func upstreams(cfg *config.Config) []netip.AddrPort {
	all := slices.Clone(cfg.UpstreamServers)
	for _, z := range cfg.ForwardZones {
		all = append(all, z.Servers...)
	}
	return all
}

// monotonicMicros is CLOCK_MONOTONIC in microseconds, as sd_notify's
// MONOTONIC_USEC wants it.
func monotonicMicros() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Sec*1e6 + ts.Nsec/1e3
}
