// Package records keeps the cloud's instance names per Neutron network, as
// the Neutron API lists them, for the resolver step that answers them
// (package resolver/local).
//
// A Store lists the ports of every network that has a port on the bridge
// (GET /v2.0/ports with one network_id parameter per network, 50 networks a
// request, and only the fields id, network_id, mac_address, fixed_ips,
// dns_name, dns_assignment, device_owner, port_security_enabled and
// allowed_address_pairs) and, with one more request per 50 networks, their
// subnets (GET /v2.0/subnets with the same network_id parameters and the
// fields id, network_id, cidr, gateway_ip and ip_version): a sync of up to
// 50 networks costs two requests (more only if Neutron paginates). It
// builds an immutable Network per network and swaps the whole set in
// atomically, so lookups take no lock. Every sync is a full list:
// changed_since is rejected by Neutron's default filter_validation and
// never reports deletions, and the fields filter keeps full lists small.
//
// Beside the names, a Network keeps what the daemon's flows and its
// source-MAC check need (Network.Subnets, Network.Port, Network.Holds):
// the subnets with their gateways; per port its device_owner,
// port_security_enabled (true when Neutron does not report it), fixed IPs
// and the MACs and addresses of its allowed_address_pairs; and the set of
// addresses held by any port of the network, router interfaces and DHCP
// ports included.
//
// Names of a port, per entry {ip_address, hostname, fqdn} of its
// dns_assignment (one per fixed IP). The tenant chooses dns_name, so an
// entry only names what the cloud owns:
//
//   - fqdn, as an absolute name, only when it is strictly below Domain
//     (Neutron writes dns_name + "." + dns_domain, so a relative
//     multi-label dns_name "www.example.com" is named
//     "www.example.com.<domain>." and never "www.example.com."; an fqdn
//     under a port's or network's own dns_domain is not answered);
//   - for a one-label hostname "myvm": hostname + "." + Domain, and the
//     short name "myvm.", as dnsmasq's hosts file did (resolvers that
//     append no search domain ask for exactly that; package
//     resolver/local answers short names for A, AAAA and ANY only). A
//     hostname of several labels has no short name. A short name equal
//     to a one-label Domain is not made.
//
// Without a Domain only short names are made, and no PTR.
//
// A fixed IP without a dns_assignment entry (Neutron without the
// dns-integration extension) gets Neutron's own default: hostname
// "host-<ip>", the address in canonical form (RFC 5952 for IPv6, as Neutron
// stores it) with "." and ":" replaced by "-" (host-10-0-0-3,
// host-fd00--3), and fqdn hostname + "." + Domain.
//
// Every address a name has in the network is returned for it (two ports
// with one dns_name both answer; IPv4 first, each address once). PTR of an
// address gives the first of its entry's fqdn and hostname + "." + Domain
// that is below Domain; should two ports have one address, the port with
// the smaller id wins. Names are compared in lower case. Names strictly
// below Domain that have names below them, and Domain itself, exist without
// addresses (empty non-terminals), so that they get NODATA rather than
// NXDOMAIN; no name outside Domain is ever an empty non-terminal.
//
// While Neutron cannot be reached the last good records stay in use; a
// failed sync is retried after 1 s, doubling up to the resync interval
// (at most 30 s).
package records

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gophercloud/gophercloud/v2"
)

// Defaults and limits.
const (
	// DefaultResyncInterval is the full resync period used when
	// Config.ResyncInterval is not positive.
	DefaultResyncInterval = time.Minute
	// NetworksPerRequest bounds the network_id parameters of one list
	// request (URL length).
	NetworksPerRequest = 50
	// SyncTimeout bounds one sync, authentication included.
	SyncTimeout = 30 * time.Second

	minRetry = time.Second
	maxRetry = 30 * time.Second
)

// ErrRunning is returned by Run when the Store is already running.
var ErrRunning = errors.New("records: store is already running")

// Config configures a Store.
type Config struct {
	// Auth says how to reach Neutron.
	Auth AuthOptions
	// Domain is Neutron's [DEFAULT] dns_domain ("cloud.example." or
	// "cloud.example"); it completes host-<ip> names, and every name but
	// a short one must be below it. Empty: short names only.
	Domain string
	// ResyncInterval is the period of full resyncs; not positive means
	// DefaultResyncInterval.
	ResyncInterval time.Duration
	// Logger receives sync failures and recoveries; nil discards.
	Logger *slog.Logger
	// HTTPClient replaces the client built from Auth's TLS options (tests).
	HTTPClient *http.Client
}

// Store holds the records of the networks on the bridge and keeps them in
// sync with Neutron. Network and Stats are safe for concurrent use.
type Store struct {
	cfg     Config
	domain  string // wire form, "" when none
	hc      *http.Client
	running atomic.Bool

	nets atomic.Pointer[map[string]*Network]

	// Guarded by mu.
	client   *gophercloud.ServiceClient
	outage   bool
	lastGood time.Time

	syncs, syncErrors, lastSync atomic.Uint64
	networks, names, portsCount atomic.Uint64

	synced chan struct{} // capacity 1: coalesced end-of-sync signals

	mu sync.Mutex // serialises syncs (Run and tests)
}

// New returns a Store for cfg. It checks the configuration and reads
// CAFile but does not contact Neutron: Run does.
func New(cfg Config) (*Store, error) {
	if err := cfg.Auth.validate(); err != nil {
		return nil, err
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = DefaultResyncInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{cfg: cfg, hc: cfg.HTTPClient, synced: make(chan struct{}, 1)}
	if d := strings.TrimSuffix(cfg.Domain, "."); d != "" {
		w, err := wireName(d)
		if err != nil {
			return nil, errors.New("records: dns_domain " + cfg.Domain + ": " + err.Error())
		}
		s.domain = w
	}
	if s.hc == nil {
		hc, err := cfg.Auth.httpClient()
		if err != nil {
			return nil, err
		}
		s.hc = hc
	}
	empty := map[string]*Network{}
	s.nets.Store(&empty)
	return s, nil
}

// Network returns the records of the network with Neutron UUID id, nil when
// the network is not (yet) known: not on the bridge, or no sync has
// succeeded since it appeared. It takes no lock and does not allocate.
func (s *Store) Network(id string) *Network {
	m := s.nets.Load()
	if m == nil {
		return nil
	}
	return (*m)[id]
}

// Synced returns a channel that receives a signal (coalesced: it holds at
// most one) at the end of every sync, whether it succeeded or not. Each
// sync follows a change of the bridge's ports (Run's changed), so a
// consumer that derives state from the ports and the records recomputes it
// on this signal alone.
func (s *Store) Synced() <-chan struct{} { return s.synced }

// Stats returns counters: syncs (successful), sync_errors, last_sync_unix
// (time of the last successful sync, 0 before it), networks, names (owning
// addresses, over all networks) and ports.
func (s *Store) Stats() map[string]uint64 {
	return map[string]uint64{
		"syncs":          s.syncs.Load(),
		"sync_errors":    s.syncErrors.Load(),
		"last_sync_unix": s.lastSync.Load(),
		"networks":       s.networks.Load(),
		"names":          s.names.Load(),
		"ports":          s.portsCount.Load(),
	}
}

// Run keeps the records of the networks returned by networks (Neutron
// UUIDs) in sync: a full sync at once, then every ResyncInterval, and at
// once whenever changed receives (a new network or port on the bridge;
// several signals during a sync give one more sync). A failed sync keeps
// the last good records and is retried after 1 s, doubling up to
// min(ResyncInterval, 30 s). Run returns nil when ctx ends, and ErrRunning
// when the Store is already running.
func (s *Store) Run(ctx context.Context, networks func() []string, changed <-chan struct{}) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)
	timer := time.NewTimer(0)
	defer timer.Stop()
	retry := minRetry
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-changed:
		}
		drain(changed)
		err := s.sync(ctx, networks())
		if ctx.Err() != nil {
			return nil
		}
		next := s.cfg.ResyncInterval
		if err != nil {
			next = min(retry, next, maxRetry)
			retry *= 2
		} else {
			retry = minRetry
		}
		timer.Reset(next)
	}
}

// drain empties ch without blocking.
func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// sync lists the ports of ids and replaces the records; on failure the
// records are kept and the outage is logged once.
func (s *Store) sync(ctx context.Context, ids []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, SyncTimeout)
	defer cancel()
	nets, err := s.fetch(sctx, ids)
	if err != nil {
		if ctx.Err() != nil {
			return err // shutting down: not a failure of Neutron
		}
		defer s.signalSynced()
		s.syncErrors.Add(1)
		s.failed(err)
		return err
	}
	now := time.Now()
	if s.outage {
		s.outage = false
		s.cfg.Logger.Info("neutron reachable again", "last_good_sync", s.lastGood.Format(time.RFC3339))
	}
	s.lastGood = now
	s.nets.Store(&nets)
	var names, nports uint64
	for _, n := range nets {
		names += uint64(n.owners)
		nports += uint64(n.ports)
	}
	s.networks.Store(uint64(len(nets)))
	s.names.Store(names)
	s.portsCount.Store(nports)
	s.lastSync.Store(uint64(now.Unix()))
	s.syncs.Add(1)
	s.signalSynced()
	return nil
}

// signalSynced signals Synced without blocking.
func (s *Store) signalSynced() {
	select {
	case s.synced <- struct{}{}:
	default:
	}
}

// failed logs a sync failure: Warn for the first of an outage, Debug after.
func (s *Store) failed(err error) {
	if s.outage {
		s.cfg.Logger.Debug("neutron still unreachable", "err", err)
		return
	}
	s.outage = true
	if s.lastGood.IsZero() {
		s.cfg.Logger.Warn("neutron unreachable, no records yet: local names are forwarded", "err", err)
		return
	}
	s.cfg.Logger.Warn("neutron unreachable, answering from records of "+s.lastGood.Format(time.RFC3339), "err", err)
}

// fetch lists the ports and subnets of ids (deduplicated, in chunks) and
// builds their networks.
func (s *Store) fetch(ctx context.Context, ids []string) (map[string]*Network, error) {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) > 0 && ids[0] == "" {
		ids = ids[1:]
	}
	if len(ids) == 0 {
		return map[string]*Network{}, nil
	}
	if s.client == nil {
		c, err := connect(ctx, &s.cfg.Auth, s.hc)
		if err != nil {
			return nil, err
		}
		s.client = c
	}
	var all []apiPort
	var subnets []apiSubnet
	for chunk := range slices.Chunk(ids, NetworksPerRequest) {
		p, err := listPorts(ctx, s.client, chunk)
		if err != nil {
			return nil, err
		}
		all = append(all, p...)
		sn, err := listSubnets(ctx, s.client, chunk)
		if err != nil {
			return nil, err
		}
		subnets = append(subnets, sn...)
	}
	nets := build(all, ids, s.domain, time.Now(), s.cfg.Logger)
	addDetails(nets, all, subnets, s.cfg.Logger)
	return nets, nil
}

// build makes the Network of every id (sorted, unique) from ports; ports
// of other networks are ignored. A fixed IP without a dns_assignment entry
// becomes an Entry without names (host-<ip>).
func build(ports []apiPort, ids []string, domain string, synced time.Time, log *slog.Logger) map[string]*Network {
	entries := make(map[string][]Entry, len(ids))
	for _, id := range ids {
		entries[id] = nil
	}
	for i := range ports {
		p := &ports[i]
		es, ok := entries[p.NetworkID]
		if !ok {
			continue
		}
		seen := make(map[netip.Addr]bool, len(p.FixedIPs))
		for _, a := range p.DNSAssignment {
			addr, err := netip.ParseAddr(a.IPAddress)
			if err != nil {
				log.Debug("records: bad dns_assignment address", "port", p.ID, "ip_address", a.IPAddress)
				continue
			}
			seen[addr.Unmap()] = true
			es = append(es, Entry{Port: p.ID, Addr: addr, Hostname: a.Hostname, FQDN: a.FQDN})
		}
		for _, f := range p.FixedIPs {
			addr, err := netip.ParseAddr(f.IPAddress)
			if err != nil {
				log.Debug("records: bad fixed_ips address", "port", p.ID, "ip_address", f.IPAddress)
				continue
			}
			if !seen[addr.Unmap()] {
				seen[addr.Unmap()] = true
				es = append(es, Entry{Port: p.ID, Addr: addr})
			}
		}
		if len(es) == len(entries[p.NetworkID]) {
			// A port without addresses still counts.
			es = append(es, Entry{Port: p.ID})
		}
		entries[p.NetworkID] = es
	}
	nets := make(map[string]*Network, len(ids))
	for id, es := range entries {
		nets[id] = newNetwork(id, domain, synced, es, log)
	}
	return nets
}
