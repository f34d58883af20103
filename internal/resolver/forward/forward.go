// Package forward is the last step of the resolver chain: it asks the
// upstream servers and passes the first good answer through. It picks the
// servers by zone (conditional forwarding) and orders them by policy and
// health: a server that stopped answering is probed in the background and
// tried only after the healthy ones until it answers again, while a server
// that only fails on some names (one slow domain) stays up. See README.md
// for its behaviour.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/upstream"
)

// ErrAllFailed is returned when no upstream server gave an answer; the
// caller answers SERVFAIL. The error returned wraps it together with the
// last server's error.
var ErrAllFailed = errors.New("forward: all upstream servers failed")

// DefaultProbeInterval is the default of Config.ProbeInterval.
const DefaultProbeInterval = 500 * time.Millisecond

// Response codes that make Forward try the next server.
const (
	rcodeServFail = 2
	rcodeRefused  = 5
)

// Errors for answers that make Forward try the next server.
var (
	errServFail = errors.New("answered SERVFAIL")
	errRefused  = errors.New("answered REFUSED")
	errNoServer = errors.New("no upstream server configured")
)

// Policy orders the healthy servers of a set for each query.
type Policy int

// The policies. Whatever the policy, servers marked down come after the
// healthy ones, in their configured order.
const (
	// Sequential asks the servers in their configured order (the Neutron
	// dns_forwarder's behaviour).
	Sequential Policy = iota
	// RoundRobin starts each query at the next server in turn.
	RoundRobin
	// Random asks the servers in a random order, drawn for each query.
	Random
)

// policyNames are the option values of the policies, by Policy.
var policyNames = [...]string{Sequential: "sequential", RoundRobin: "round_robin", Random: "random"}

// String returns the option value of p ("sequential", "round_robin",
// "random").
func (p Policy) String() string {
	if p < 0 || int(p) >= len(policyNames) {
		return fmt.Sprintf("Policy(%d)", int(p))
	}
	return policyNames[p]
}

// ParsePolicy parses the upstream_policy option: "sequential",
// "round_robin" or "random", ignoring ASCII case.
func ParsePolicy(s string) (Policy, error) {
	for p, name := range policyNames {
		if strings.EqualFold(s, name) {
			return Policy(p), nil
		}
	}
	return 0, fmt.Errorf("upstream policy %q: want sequential, round_robin or random", s)
}

// Config configures a Forward.
type Config struct {
	// Servers are the default upstream servers, for every query that no
	// zone claims.
	Servers []netip.AddrPort
	// Zones send the queries for their domains to servers of their own;
	// the longest zone that matches a name wins.
	Zones []Zone
	// Policy orders the healthy servers of a set (Sequential by default).
	Policy Policy
	// Timeout is how long each server gets for a query or a probe, TCP
	// retry included (the upstream client's Config.Timeout when 0).
	Timeout time.Duration
	// ProbeInterval is the pause between two probes of a server marked
	// down (DefaultProbeInterval when 0).
	ProbeInterval time.Duration
	// Logger receives the servers' state changes; nil discards them.
	Logger *slog.Logger
	// Observe, when set, is called after every exchange of a query with a
	// server (probes excepted), with its round trip or its error (for
	// metrics); it must not block.
	Observe func(server netip.AddrPort, rtt time.Duration, err error)
}

// Forward sends queries to upstream servers. It implements resolver.Handler
// and is safe for concurrent use. Close stops its background probes.
type Forward struct {
	client        *upstream.Client
	policy        Policy
	timeout       time.Duration
	probeInterval time.Duration
	logger        *slog.Logger
	observe       func(netip.AddrPort, time.Duration, error)

	servers []*server     // every distinct server, default ones first
	sets    []*set        // 0: the default servers, i+1: Config.Zones[i]
	zones   []zoneMatch   // longest first
	probeQ  dnswire.Query // parse of probeMsg
	// probeMsg is the probe query: ". IN NS" with RD.
	probeMsg []byte
	// epoch is when f was made: the origin of the servers' lastReply.
	epoch time.Time

	ctx    context.Context // ends at Close: stops the probes
	cancel context.CancelFunc
	mu     sync.Mutex // guards closed and the probes' Add
	closed bool
	probes sync.WaitGroup

	stats counters
}

// set is an ordered list of servers that a query may go to.
type set struct {
	servers []*server
	next    atomic.Uint32 // RoundRobin's turn
}

// counters are Forward's statistics.
type counters struct {
	queries, answered, failed, failovers, zoneQueries atomic.Uint64
	timeouts, errors, badRcodes, malformed            atomic.Uint64
	markedDown, markedUp, probesSent, probesFailed    atomic.Uint64
	checks, checksPassed, failuresWhileUp             atomic.Uint64
}

var _ resolver.Handler = (*Forward)(nil)

// maxStackServers is how many servers of a set ServeDNS orders without
// allocating.
const maxStackServers = 16

// New returns a Forward that asks the servers of cfg through client. It
// checks cfg: a known policy, no negative durations, usable server
// addresses, valid and distinct zone names, each zone with servers. A
// server listed more than once (in one set or in several) shares one health
// state.
func New(client *upstream.Client, cfg Config) (*Forward, error) {
	if client == nil {
		return nil, errors.New("forward: no upstream client")
	}
	if cfg.Policy < Sequential || cfg.Policy > Random {
		return nil, fmt.Errorf("forward: unknown policy %d", int(cfg.Policy))
	}
	if cfg.Timeout < 0 || cfg.ProbeInterval < 0 {
		return nil, fmt.Errorf("forward: negative timeout %v or probe interval %v", cfg.Timeout, cfg.ProbeInterval)
	}
	f := &Forward{
		client:        client,
		policy:        cfg.Policy,
		timeout:       cfg.Timeout,
		probeInterval: cfg.ProbeInterval,
		logger:        cfg.Logger,
		observe:       cfg.Observe,
		epoch:         time.Now(),
	}
	if f.timeout == 0 {
		f.timeout = client.Timeout()
	}
	if f.probeInterval == 0 {
		f.probeInterval = DefaultProbeInterval
	}
	if f.logger == nil {
		f.logger = slog.New(slog.DiscardHandler)
	}
	now := time.Now()
	byAddr := make(map[netip.AddrPort]*server)
	newSet := func(servers []netip.AddrPort) (*set, error) {
		st := new(set)
		for _, sv := range servers {
			sv, err := checkServer(sv)
			if err != nil {
				return nil, err
			}
			s := byAddr[sv]
			if s == nil {
				s = &server{addr: sv, since: now}
				byAddr[sv] = s
				f.servers = append(f.servers, s)
			}
			if !slices.Contains(st.servers, s) {
				st.servers = append(st.servers, s)
			}
		}
		return st, nil
	}
	st, err := newSet(cfg.Servers)
	if err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	f.sets = append(f.sets, st)
	seen := make(map[string]bool)
	for i, z := range cfg.Zones {
		key, wire, err := zoneKey(z.Name)
		if err != nil {
			return nil, fmt.Errorf("forward: %w", err)
		}
		if seen[key] {
			return nil, fmt.Errorf("forward: zone %s given twice", key)
		}
		seen[key] = true
		if len(z.Servers) == 0 {
			return nil, fmt.Errorf("forward: zone %s has no server", key)
		}
		st, err := newSet(z.Servers)
		if err != nil {
			return nil, fmt.Errorf("forward: zone %s: %w", key, err)
		}
		f.sets = append(f.sets, st)
		f.zones = append(f.zones, zoneMatch{wire: wire, set: i + 1})
	}
	slices.SortStableFunc(f.zones, func(a, b zoneMatch) int { return len(b.wire) - len(a.wire) })

	f.probeMsg = []byte{0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1} // RD, ". IN NS"
	if err := dnswire.ParseQuery(f.probeMsg, &f.probeQ); err != nil {
		return nil, fmt.Errorf("forward: probe query: %w", err)
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	return f, nil
}

// Close stops the background probes and waits for them to end. It does not
// close the upstream client; close that after Close. Queries still work
// after Close, but a server marked down is then no longer probed.
func (f *Forward) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	f.probes.Wait()
	return nil
}

// match returns the index in f.sets of the set that answers name, an
// uncompressed wire-form name: the longest zone that name is in, else the
// default set. It does not allocate.
func (f *Forward) match(name []byte) int {
	for _, z := range f.zones {
		if inZone(name, z.wire) {
			return z.set
		}
	}
	return 0
}

// Set returns which set of upstream servers answers r: 0 for the default
// servers, i+1 for Config.Zones[i]. Answers from different sets may differ,
// so a cache keys on it.
func (f *Forward) Set(r *resolver.Request) uint32 {
	return uint32(f.match(r.Query.Name))
}

// order appends the servers of st to dst in the order a query asks them:
// the healthy ones by policy, then those suspect or marked down in their
// configured order.
func (st *set) order(p Policy, dst []*server) []*server {
	base := len(dst)
	for _, s := range st.servers {
		if !s.demoted() {
			dst = append(dst, s)
		}
	}
	healthy := dst[base:]
	if n := len(healthy); n > 1 {
		switch p {
		case RoundRobin:
			k := int((st.next.Add(1) - 1) % uint32(n))
			slices.Reverse(healthy[:k])
			slices.Reverse(healthy[k:])
			slices.Reverse(healthy)
		case Random:
			for i := n - 1; i > 0; i-- {
				j := rand.IntN(i + 1)
				healthy[i], healthy[j] = healthy[j], healthy[i]
			}
		}
	}
	for _, s := range st.servers {
		if s.demoted() {
			dst = append(dst, s)
		}
	}
	return dst
}

// ServeDNS asks the servers of the set that answers r (see Set), in the
// order of the policy with those suspect or marked down last, each within the timeout
// and all within ctx, and appends the first answer whose rcode is neither
// SERVFAIL nor REFUSED to dst, as the server sent it but with the client's
// ID. When every server that answered said SERVFAIL or REFUSED, the last
// such answer is returned. When none answered, it returns an error wrapping
// ErrAllFailed.
func (f *Forward) ServeDNS(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
	f.stats.queries.Add(1)
	si := f.match(r.Query.Name)
	if si != 0 {
		f.stats.zoneQueries.Add(1)
	}
	var stack [maxStackServers]*server
	order := f.sets[si].order(f.policy, stack[:0])
	base := len(dst)
	fallback := false // dst[base:] holds a SERVFAIL or REFUSED answer
	lastErr := errNoServer
	for i, s := range order {
		if i > 0 {
			f.stats.failovers.Add(1)
		}
		start := len(dst)
		sent := time.Now()
		out, err := f.client.Exchange(ctx, s.addr, f.timeout, r.Msg, &r.Query, dst)
		if f.observe != nil {
			f.observe(s.addr, time.Since(sent), err)
		}
		if err == nil {
			f.replied(s, time.Since(sent))
			err = judge(out[start:])
			if err == nil {
				// A good answer: it replaces any fallback before it.
				n := copy(out[base:], out[start:])
				f.stats.answered.Add(1)
				r.Source = resolver.SourceUpstream
				return out[:base+n], nil
			}
			if errors.Is(err, errServFail) || errors.Is(err, errRefused) {
				f.stats.badRcodes.Add(1)
				n := copy(out[base:], out[start:])
				dst = out[:base+n]
				fallback = true
			} else {
				f.stats.malformed.Add(1)
			}
		} else {
			f.failed(ctx, s, err, sent)
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	if fallback {
		f.stats.answered.Add(1)
		r.Source = resolver.SourceUpstream
		return dst, nil
	}
	f.stats.failed.Add(1)
	return dst[:base], fmt.Errorf("%w: %w", ErrAllFailed, lastErr)
}

// judge returns nil for an answer to pass through, errServFail or
// errRefused for one to pass through only when no server does better, and
// another error for a reply that cannot be walked.
func judge(reply []byte) error {
	rcode, err := dnswire.Rcode(reply)
	switch {
	case err != nil:
		return err
	case rcode == rcodeServFail:
		return errServFail
	case rcode == rcodeRefused:
		return errRefused
	}
	return nil
}

// Stats returns Forward's counters:
//
//	queries            queries served
//	zone_queries       of which for a conditional zone
//	answered           queries answered (SERVFAIL and REFUSED answers passed through included)
//	failed             queries no server answered (ErrAllFailed)
//	failovers          servers asked after the first one, for a query
//	timeouts           exchanges that timed out (a server's timeout, not the query's end)
//	errors             other failed exchanges (port unreachable, network errors, bad replies)
//	bad_rcodes         SERVFAIL and REFUSED answers, for which the next server is asked
//	malformed          replies that could not be walked
//	failures_while_up  failed exchanges of a server that replied to something since: about the name, not the server
//	checks             servers made suspect by a failed exchange and probed at once
//	checks_passed      suspect servers that replied: the failure was about the name
//	marked_down        times a server was marked down (a suspect server's probe failed)
//	marked_up          times a server marked down answered again
//	servers_down       servers marked down now
//	probes             probe queries sent (checks of suspect servers and probes of servers marked down)
//	probe_failures     probes without a reply
func (f *Forward) Stats() map[string]uint64 {
	s := &f.stats
	var down uint64
	for _, sv := range f.servers {
		if sv.down.Load() {
			down++
		}
	}
	return map[string]uint64{
		"queries":           s.queries.Load(),
		"zone_queries":      s.zoneQueries.Load(),
		"answered":          s.answered.Load(),
		"failed":            s.failed.Load(),
		"failovers":         s.failovers.Load(),
		"timeouts":          s.timeouts.Load(),
		"errors":            s.errors.Load(),
		"bad_rcodes":        s.badRcodes.Load(),
		"malformed":         s.malformed.Load(),
		"marked_down":       s.markedDown.Load(),
		"marked_up":         s.markedUp.Load(),
		"servers_down":      down,
		"probes":            s.probesSent.Load(),
		"probe_failures":    s.probesFailed.Load(),
		"checks":            s.checks.Load(),
		"checks_passed":     s.checksPassed.Load(),
		"failures_while_up": s.failuresWhileUp.Load(),
	}
}
