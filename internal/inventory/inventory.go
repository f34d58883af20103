// Package inventory knows, from OVSDB alone, which Neutron VM port sits
// behind each OpenFlow port of the integration bridge, and on which
// network.
//
// It monitors the Bridge, Port and Interface tables (only the columns it
// needs) through libovsdb with hand-written partial models. An interface
// is a VM port when it belongs to a port of the configured bridge and its
// external_ids carry both iface-id (the Neutron port UUID) and
// attached-mac; it counts once ovs-vswitchd has given it an ofport. The
// network is the Port's other_config:net_uuid, its type
// other_config:network_type and the local VLAN its tag, all written by the
// Neutron OVS agent when it binds the port.
//
// Every change rebuilds an immutable snapshot from libovsdb's cache, so
// Lookup, on the per-query path, is one atomic load and one map read.
// When the connection breaks (ovsdb-server restarted), the last snapshot
// keeps serving while Run reconnects with a new client and a new cache,
// and the first full sync afterwards replaces it: rows that did not come
// back are dropped.
package inventory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/ovn-kubernetes/libovsdb/cache"
	"github.com/ovn-kubernetes/libovsdb/client"
	"github.com/ovn-kubernetes/libovsdb/model"
)

// Port is a Neutron VM port on the bridge.
type Port struct {
	// OFPort is the OpenFlow port number (Interface.ofport).
	OFPort uint32
	// Name is the interface name.
	Name string
	// PortID is Interface external_ids:iface-id, the Neutron port UUID.
	PortID string
	// MAC is Interface external_ids:attached-mac, the port's MAC.
	MAC [6]byte
	// Network is Port other_config:net_uuid, the Neutron network UUID;
	// empty until the agent has bound the port.
	Network string
	// NetworkType is Port other_config:network_type, the type of the
	// network's segment: one of the NetworkType constants, or empty
	// until the agent has bound the port or when it wrote another value.
	NetworkType string
	// Tag is Port.tag, the local VLAN (4095 marks a dead port); -1 when
	// unset.
	Tag int
}

// Network types the Neutron OVS agent writes to Port
// other_config:network_type (neutron_lib's TYPE_* constants).
const (
	NetworkTypeVXLAN  = "vxlan"
	NetworkTypeGeneve = "geneve"
	NetworkTypeGRE    = "gre"
	NetworkTypeFlat   = "flat"
	NetworkTypeVLAN   = "vlan"
	NetworkTypeLocal  = "local"
)

// Config configures an Inventory.
type Config struct {
	// Endpoint is the OVSDB server, in the form of Neutron's [ovs]
	// ovsdb_connection: "tcp:HOST:PORT" or "unix:PATH".
	Endpoint string
	// Bridge is the integration bridge, usually "br-int".
	Bridge string
	// Logger receives the inventory's log lines; nil discards them.
	Logger *slog.Logger
}

// Timing of Run.
const (
	minBackoff     = 100 * time.Millisecond // first wait before reconnecting
	maxBackoff     = 5 * time.Second        // longest wait before reconnecting
	connectTimeout = 10 * time.Second       // connect, schema and initial monitor reply
	checkInterval  = time.Second            // how often a session checks its connection
	echoEvery      = 5                      // an echo request every echoEvery checks
	stableSession  = maxBackoff             // a session this long resets the backoff
)

// errClosed reports a connection that libovsdb found closed.
var errClosed = errors.New("connection closed")

// Inventory is the live view of the bridge's VM ports. Its methods may
// be called from any goroutine.
type Inventory struct {
	endpoint string
	bridge   string
	log      *slog.Logger
	dbModel  model.ClientDBModel
	ovsLog   logr.Logger

	snap    atomic.Pointer[snapshot]
	ready   atomic.Bool
	running atomic.Bool
	changes chan struct{} // capacity 1: coalesced change signals for consumers
	dirty   chan struct{} // capacity 1: the cache changed, rebuild

	connects      atomic.Uint64
	connectErrors atomic.Uint64
	disconnects   atomic.Uint64
	updates       atomic.Uint64

	// Owned by Run's goroutine.
	badLogged     map[string]badInterface // invalid attached-macs already logged, by Interface UUID
	bridgeMissing bool                    // the missing bridge has been logged
}

// snapshot is an immutable view; a change replaces it whole.
type snapshot struct {
	ports    map[uint32]Port
	networks []string
}

// New checks cfg and returns an Inventory with no ports; Run fills it.
func New(cfg Config) (*Inventory, error) {
	endpoint, err := normalizeEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	if cfg.Bridge == "" {
		return nil, errors.New("inventory: no bridge")
	}
	dbModel, err := model.NewClientDBModel("Open_vSwitch", map[string]model.Model{
		"Bridge":    &ovsBridge{},
		"Port":      &ovsPort{},
		"Interface": &ovsInterface{},
	})
	if err != nil {
		return nil, fmt.Errorf("inventory: model: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	i := &Inventory{
		endpoint:  endpoint,
		bridge:    cfg.Bridge,
		log:       log,
		dbModel:   dbModel,
		ovsLog:    logr.New(debugSink{log: log.With("component", "libovsdb")}),
		changes:   make(chan struct{}, 1),
		dirty:     make(chan struct{}, 1),
		badLogged: make(map[string]badInterface),
	}
	i.snap.Store(&snapshot{ports: map[uint32]Port{}})
	return i, nil
}

// normalizeEndpoint checks an OVSDB address and makes a unix socket path
// absolute (libovsdb dials only absolute ones).
func normalizeEndpoint(s string) (string, error) {
	scheme, rest, _ := strings.Cut(s, ":")
	switch scheme {
	case "tcp":
		if _, _, err := net.SplitHostPort(rest); err != nil {
			return "", fmt.Errorf("inventory: endpoint %q: %w", s, err)
		}
		return s, nil
	case "unix":
		if rest == "" {
			return "", fmt.Errorf("inventory: endpoint %q: no socket path", s)
		}
		abs, err := filepath.Abs(rest)
		if err != nil {
			return "", fmt.Errorf("inventory: endpoint %q: %w", s, err)
		}
		return "unix:" + abs, nil
	}
	return "", fmt.Errorf("inventory: endpoint %q: want tcp:HOST:PORT or unix:PATH", s)
}

// Lookup returns the VM port with OpenFlow port number ofport. It does
// not lock or allocate.
func (i *Inventory) Lookup(ofport uint32) (Port, bool) {
	p, ok := i.snap.Load().ports[ofport]
	return p, ok
}

// Ports returns the VM ports, sorted by OpenFlow port number. The caller
// owns the slice.
func (i *Inventory) Ports() []Port {
	m := i.snap.Load().ports
	ports := make([]Port, 0, len(m))
	for _, p := range m {
		ports = append(ports, p)
	}
	slices.SortFunc(ports, func(a, b Port) int { return cmp.Compare(a.OFPort, b.OFPort) })
	return ports
}

// Networks returns the distinct non-empty networks of the bridge's VM
// ports, sorted. The caller owns the slice.
func (i *Inventory) Networks() []string {
	return slices.Clone(i.snap.Load().networks)
}

// Changes returns a channel that receives a signal (coalesced: it holds
// at most one) whenever the VM ports change (one added, removed or
// changed in any field, networks included), and after each connection's
// first full sync.
func (i *Inventory) Changes() <-chan struct{} { return i.changes }

// Ready reports whether Run is connected and has completed the
// connection's first full sync. While it is false after a connection
// loss, Lookup and Networks answer from the last known state.
func (i *Inventory) Ready() bool { return i.ready.Load() }

// Stats returns the counters: connects (connections that completed their
// first sync), connect_errors (failed attempts), disconnects (synced
// connections lost), updates (row events from the monitor, each
// connection's initial rows included) and the gauge vm_ports.
func (i *Inventory) Stats() map[string]uint64 {
	return map[string]uint64{
		"connects":       i.connects.Load(),
		"connect_errors": i.connectErrors.Load(),
		"disconnects":    i.disconnects.Load(),
		"updates":        i.updates.Load(),
		"vm_ports":       uint64(len(i.snap.Load().ports)),
	}
}

// Run connects to OVSDB, keeps the inventory current and reconnects
// (waiting 100 ms, doubling up to 5 s) whenever the connection fails or
// breaks. It returns nil when ctx ends, and an error only when Run is
// already running.
func (i *Inventory) Run(ctx context.Context) error {
	if !i.running.CompareAndSwap(false, true) {
		return errors.New("inventory: Run is already running")
	}
	defer i.running.Store(false)
	backoff := minBackoff
	warned := false      // the current outage has been logged
	var lostAt time.Time // when the last synced connection broke
	for {
		syncedAt, err := i.session(ctx, lostAt)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case !syncedAt.IsZero():
			i.disconnects.Add(1)
			lostAt = time.Now()
			warned = true
			i.log.Warn("OVSDB connection lost; keeping the last known ports while reconnecting",
				"endpoint", i.endpoint, "error", err)
			if time.Since(syncedAt) >= stableSession {
				backoff = minBackoff
			}
		case !warned:
			i.connectErrors.Add(1)
			warned = true
			i.log.Warn("cannot connect to OVSDB; retrying", "endpoint", i.endpoint, "error", err)
		default:
			i.connectErrors.Add(1)
			i.log.Debug("OVSDB connect failed", "endpoint", i.endpoint, "error", err, "retry_in", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// session runs one connection: connect, monitor, first sync, then
// rebuild on every change until the connection breaks or ctx ends. It
// returns when the first sync completed (zero when it did not) and why
// the session ended.
func (i *Inventory) session(ctx context.Context, lostAt time.Time) (time.Time, error) {
	c, err := client.NewOVSDBClient(i.dbModel, client.WithEndpoint(i.endpoint), client.WithLogger(&i.ovsLog))
	if err != nil {
		return time.Time{}, err
	}
	defer c.Close()
	setupCtx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := c.Connect(setupCtx); err != nil {
		return time.Time{}, err
	}
	tc := c.Cache()
	if tc == nil {
		return time.Time{}, errClosed
	}
	select {
	case <-i.dirty:
	default:
	}
	changed := func() {
		i.updates.Add(1)
		select {
		case i.dirty <- struct{}{}:
		default:
		}
	}
	tc.AddEventHandler(&cache.EventHandlerFuncs{
		AddFunc:    func(string, model.Model) { changed() },
		UpdateFunc: func(string, model.Model, model.Model) { changed() },
		DeleteFunc: func(string, model.Model) { changed() },
	})
	var b ovsBridge
	var p ovsPort
	var f ovsInterface
	mon := c.NewMonitor(
		client.WithTable(&b, &b.Name, &b.Ports),
		client.WithTable(&p, &p.Name, &p.Tag, &p.OtherConfig, &p.Interfaces),
		client.WithTable(&f, &f.Name, &f.OFPort, &f.ExternalIDs),
	)
	if _, err := c.Monitor(setupCtx, mon); err != nil {
		return time.Time{}, fmt.Errorf("monitor: %w", err)
	}
	v, err := i.read(setupCtx, c)
	if err != nil {
		return time.Time{}, err
	}
	cancel()
	i.apply(v, true)
	syncedAt := time.Now()
	i.connects.Add(1)
	i.ready.Store(true)
	defer i.ready.Store(false)
	attrs := []any{"endpoint", i.endpoint, "bridge", i.bridge, "bridge_ports", v.bridgePorts,
		"vm_ports", len(v.ports), "without_ofport", v.pending, "networks", len(v.networks)}
	if !lostAt.IsZero() {
		attrs = append(attrs, "outage", syncedAt.Sub(lostAt).Round(time.Millisecond))
	}
	i.log.Info("connected to OVSDB", attrs...)

	lost := c.DisconnectNotify()
	tick := time.NewTicker(checkInterval)
	defer tick.Stop()
	checks := 0
	for {
		select {
		case <-ctx.Done():
			return syncedAt, nil
		case <-lost:
			return syncedAt, errClosed
		case <-i.dirty:
			v, err := i.read(ctx, c)
			if err != nil {
				return syncedAt, err
			}
			i.apply(v, false)
		case <-tick.C:
			if c.CurrentEndpoint() == "" {
				return syncedAt, errClosed
			}
			if checks++; checks%echoEvery == 0 {
				if err := i.echo(ctx, c); err != nil {
					return syncedAt, err
				}
			}
		}
	}
}

// echo sends an echo request and waits (at most checkInterval times
// echoEvery) for the reply, to detect a connection that died silently.
func (i *Inventory) echo(ctx context.Context, c client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, checkInterval*echoEvery)
	defer cancel()
	if err := c.Echo(ctx); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	return nil
}

// read builds the view from libovsdb's cache.
func (i *Inventory) read(ctx context.Context, c client.Client) (view, error) {
	var bridges []ovsBridge
	var ports []ovsPort
	var ifaces []ovsInterface
	if err := c.List(ctx, &bridges); err != nil {
		return view{}, fmt.Errorf("list bridges: %w", err)
	}
	if err := c.List(ctx, &ports); err != nil {
		return view{}, fmt.Errorf("list ports: %w", err)
	}
	if err := c.List(ctx, &ifaces); err != nil {
		return view{}, fmt.Errorf("list interfaces: %w", err)
	}
	return build(i.bridge, bridges, ports, ifaces), nil
}

// apply publishes v when its ports differ from the current snapshot's
// (always after a first sync), logs each port change and signals
// Changes.
func (i *Inventory) apply(v view, first bool) {
	i.logProblems(v)
	old := i.snap.Load()
	if maps.Equal(old.ports, v.ports) {
		if first {
			i.notify()
		}
		return
	}
	i.logDiff(old.ports, v.ports)
	i.snap.Store(&snapshot{ports: v.ports, networks: v.networks})
	i.notify()
}

// notify signals Changes without blocking.
func (i *Inventory) notify() {
	select {
	case i.changes <- struct{}{}:
	default:
	}
}

// logProblems logs a missing bridge once until it appears, and each
// invalid attached-mac once per interface and value.
func (i *Inventory) logProblems(v view) {
	if !v.bridgeFound && !i.bridgeMissing {
		i.log.Warn("bridge not in OVSDB; no VM ports until it appears", "bridge", i.bridge)
	}
	i.bridgeMissing = !v.bridgeFound
	for uuid, bad := range v.bad {
		if i.badLogged[uuid] != bad {
			i.log.Warn("interface with an invalid attached-mac is not taken as a VM port",
				"interface", bad.Name, "attached_mac", bad.MAC)
			i.badLogged[uuid] = bad
		}
	}
	for uuid := range i.badLogged {
		if _, ok := v.bad[uuid]; !ok {
			delete(i.badLogged, uuid)
		}
	}
}

// logDiff logs, at debug level, every port added, changed or removed.
func (i *Inventory) logDiff(old, cur map[uint32]Port) {
	if !i.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	for n, p := range cur {
		was, ok := old[n]
		switch {
		case !ok:
			i.log.Debug("VM port added", portAttrs(p)...)
		case was != p:
			i.log.Debug("VM port changed", portAttrs(p)...)
		}
	}
	for n, p := range old {
		if _, ok := cur[n]; !ok {
			i.log.Debug("VM port removed", portAttrs(p)...)
		}
	}
}

// portAttrs returns a port's log attributes.
func portAttrs(p Port) []any {
	return []any{"ofport", p.OFPort, "interface", p.Name, "port_id", p.PortID,
		"mac", net.HardwareAddr(p.MAC[:]).String(), "network", p.Network, "network_type", p.NetworkType, "tag", p.Tag}
}

// debugSink passes libovsdb's log lines (levels up to 3: connection
// events, not per-row tracing) to slog at debug level, errors included:
// the inventory logs what matters itself.
type debugSink struct {
	log *slog.Logger
}

// maxLibLevel is the most verbose libovsdb level passed on.
const maxLibLevel = 3

// Init implements logr.LogSink.
func (debugSink) Init(logr.RuntimeInfo) {}

// Enabled implements logr.LogSink.
func (s debugSink) Enabled(level int) bool {
	return level <= maxLibLevel && s.log.Enabled(context.Background(), slog.LevelDebug)
}

// Info implements logr.LogSink.
func (s debugSink) Info(_ int, msg string, keysAndValues ...any) {
	s.log.Debug(msg, keysAndValues...)
}

// Error implements logr.LogSink.
func (s debugSink) Error(err error, msg string, keysAndValues ...any) {
	s.log.Debug(msg, append([]any{"error", err}, keysAndValues...)...)
}

// WithValues implements logr.LogSink.
func (s debugSink) WithValues(keysAndValues ...any) logr.LogSink {
	return debugSink{log: s.log.With(keysAndValues...)}
}

// WithName implements logr.LogSink.
func (s debugSink) WithName(name string) logr.LogSink {
	return debugSink{log: s.log.With("logger", name)}
}
