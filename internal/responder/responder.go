// Package responder turns captured DNS packet-ins into answers sent back as
// packet-outs.
//
// HandlePacketIn runs on the OpenFlow read loop and never waits on an
// upstream: it parses the frame and the DNS header, answers malformed
// queries at once (FORMERR, NOTIMP, BADVERS), refuses when too many queries are in
// flight, and hands every other query to its own goroutine, which asks the
// resolver chain, fits the answer to the client and writes the reply frame.
// Every captured packet ends in exactly one of: a reply, or a drop counted
// with its reason.
package responder

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/frame"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
)

// Sender writes a frame out of a switch port. ofswitch.Switch implements it.
type Sender interface {
	PacketOut(inPort uint32, frame []byte) error
}

// Limiter decides whether a query from a port may go on.
// ratelimit.Limiter implements it.
type Limiter interface {
	Allow(key uint32, now time.Time) bool
}

// PortInfo is what the responder knows of the Neutron VM port behind an
// OpenFlow port.
type PortInfo struct {
	// MAC is the port's attached-mac. A query from a source MAC that is
	// neither MAC nor one of AllowedMACs, unless AnyMAC, is spoofed and
	// dropped.
	MAC [6]byte
	// AllowedMACs are further source MACs the port may send from (its
	// allowed address pairs'); the slice is only read.
	AllowedMACs [][6]byte
	// AnyMAC accepts every source MAC (the port's port security is
	// disabled).
	AnyMAC bool
	// Network and PortID are the Neutron network and port ids; Network
	// is "" until the agent has bound the port.
	Network, PortID string
}

// accepts reports whether a query from source MAC mac is the port's. It
// does not allocate: a scan of a few MACs.
func (p *PortInfo) accepts(mac [6]byte) bool {
	if p.AnyMAC || p.MAC == mac {
		return true
	}
	for _, m := range p.AllowedMACs {
		if m == mac {
			return true
		}
	}
	return false
}

// Ports finds the Neutron VM port behind an OpenFlow port; false means the
// port is not a known VM port (its queries are only forwarded).
type Ports interface {
	Port(ofport uint32) (PortInfo, bool)
}

// PortsFunc adapts a function to Ports.
type PortsFunc func(ofport uint32) (PortInfo, bool)

// Port calls f(ofport).
func (f PortsFunc) Port(ofport uint32) (PortInfo, bool) { return f(ofport) }

// Reinjector sends a captured frame on through the switch's pipeline as if
// it had just come in on inPort. ofswitch.Switch implements it.
type Reinjector interface {
	Reinject(inPort uint32, frame []byte) error
}

// Config holds what a Responder needs.
type Config struct {
	// Services are the addresses and ports VMs send queries to; packets
	// captured for anything else are dropped.
	Services []netip.AddrPort
	// Handler answers queries (the resolver chain).
	Handler resolver.Handler
	// Out sends reply frames.
	Out Sender
	// MaxInflight bounds the queries being resolved at once; a query beyond
	// it is answered REFUSED at once.
	MaxInflight int
	// MaxInflightPerPort bounds the queries of one VM port (keyed by
	// OpenFlow port) being resolved at once, so that one VM cannot take
	// the slots of the others; a query beyond it is answered REFUSED at
	// once. 0 leaves only MaxInflight.
	MaxInflightPerPort int
	// MaxUDPSize caps the size of a UDP answer for clients that advertise a
	// larger EDNS buffer.
	MaxUDPSize int
	// MTU is the largest IP packet the VM's port takes.
	MTU int
	// Deadline bounds the time the handler may take for one query.
	Deadline time.Duration
	// Limiter, when set, caps the queries each VM port (keyed by OpenFlow
	// port) may send; what it turns away is dropped and counted.
	Limiter Limiter
	// TrustAD keeps the AD bit of upstream answers.
	TrustAD bool
	// Ports, when set, tells which Neutron port and network a query came
	// from; nil treats every port as unknown.
	Ports Ports
	// InterceptAll accepts queries to any destination (intercept_all_dns):
	// those the chain answers with resolver.ErrNotLocal, or cannot take,
	// are sent on through Reinject unchanged (but for a fixed UDP
	// checksum).
	InterceptAll bool
	Reinject     Reinjector
	// Observe, when set, is called for every answer sent, with the
	// request (its Source tells where the answer came from), the answer's
	// rcode and the time since the packet-in: for metrics and the query
	// log. It runs on the answering goroutine and must not block.
	Observe func(r *resolver.Request, rcode int, d time.Duration)
	// Logger receives events; never one line per query above Debug.
	Logger *slog.Logger
}

// Drop reasons that are not frame.Reason labels.
const (
	reasonNotService  = "not_service_address"
	reasonDNSHeader   = "dns_header"
	reasonNotQuery    = "dns_not_query"
	reasonReplyTooBig = "reply_too_large"
	reasonPacketOut   = "packet_out_failed"
	reasonRateLimited = "rate_limited"
	reasonSpoofedMAC  = "spoofed_mac"
	reasonReinject    = "reinject_failed"
	reasonOther       = "other"
)

// counterNames lists every counter the Responder keeps; Stats reports them
// all, zero or not.
var counterNames = []string{
	"queries", "answers", "servfail", "servfail_bad_answer", "formerr", "notimp", "badvers", "refused_inflight", "refused_port_inflight", "answers_truncated",
	reasonNotService, reasonRateLimited, reasonSpoofedMAC, reasonReinject, "reinjected", reasonDNSHeader, reasonNotQuery, reasonReplyTooBig, reasonPacketOut, reasonOther,
}

// Responder answers captured queries. It is safe for concurrent use.
type Responder struct {
	cfg      Config
	inflight atomic.Int64
	jobs     sync.Pool
	counters map[string]*atomic.Uint64
	// limiter holds the current per-port limiter (nil inside: none);
	// SetLimiter swaps it on a configuration reload.
	limiter atomic.Pointer[limiterBox]
	// deadline is Config.Deadline, as SetDeadline last changed it.
	deadline atomic.Int64
	// portInflight counts the queries being resolved by OpenFlow port,
	// indexed by the port number; ports outside 1 to maxPortSlot-1 share
	// slot 0 (see portSlot). Nil without MaxInflightPerPort.
	portInflight []atomic.Int32
}

// limiterBox lets an interface value live in an atomic.Pointer.
type limiterBox struct{ l Limiter }

// New returns a Responder for cfg.
func New(cfg Config) *Responder {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Responder{cfg: cfg, counters: make(map[string]*atomic.Uint64)}
	for _, name := range append(counterNames, frame.Reasons()...) {
		r.counters[name] = new(atomic.Uint64)
	}
	r.jobs.New = func() any { return new(job) }
	if cfg.MaxInflightPerPort > 0 {
		r.portInflight = make([]atomic.Int32, maxPortSlot)
	}
	r.SetLimiter(cfg.Limiter)
	r.SetDeadline(cfg.Deadline)
	return r
}

// job is one query on its way through the chain; pooled, with its buffers.
type job struct {
	q   frame.Query
	req resolver.Request
	msg []byte // the client's DNS message (copied out of the packet-in)
	// frame is a copy of an intercepted query's frame, which goes on
	// unchanged when the chain does not answer it; q.Payload aliases it.
	frame       []byte
	intercepted bool
	start       time.Time // the packet-in's arrival
	resp        []byte    // the answer
	fit         []byte    // the answer fitted to the client
	out         []byte    // the reply frame
}

// HandlePacketIn handles one captured frame from OpenFlow port inPort. It
// does not keep data after it returns and never blocks on an upstream.
func (r *Responder) HandlePacketIn(inPort uint32, data []byte) {
	j := r.jobs.Get().(*job)
	if err := frame.ParseQuery(data, &j.q); err != nil {
		r.count(frame.Reason(err))
		if r.cfg.InterceptAll {
			// Captured by an intercept flow, perhaps: not ours to
			// judge, so it goes on as it came.
			j.frame = append(j.frame[:0], data...)
			r.sendOn(j, inPort)
			return
		}
		r.jobs.Put(j)
		return
	}
	j.q.InPort = inPort
	j.intercepted = !r.isService(j.q.Dst, j.q.DstPort)
	if j.intercepted && !r.cfg.InterceptAll {
		r.drop(j, reasonNotService)
		return
	}
	// One clock read serves the limiter and the answer's latency.
	j.start = time.Now()
	if l := r.limiter.Load().l; l != nil && !l.Allow(inPort, j.start) {
		r.drop(j, reasonRateLimited)
		return
	}
	var port PortInfo
	known := false
	if r.cfg.Ports != nil {
		port, known = r.cfg.Ports.Port(inPort)
	}
	if known && !port.accepts(j.q.SrcMAC) {
		r.drop(j, reasonSpoofedMAC)
		return
	}
	if j.intercepted {
		// Keep the frame: unless a local name answers it, it goes on.
		j.frame = append(j.frame[:0], data...)
		if frame.ParseQuery(j.frame, &j.q) != nil || port.Network == "" {
			r.reinject(j)
			return
		}
		j.q.InPort = inPort
	}
	r.count("queries")
	// The packet-in buffer is reused by the read loop: take the DNS
	// message out before parsing, so every slice of the parse aliases the
	// copy.
	j.msg = append(j.msg[:0], j.q.Payload...)
	if !j.intercepted {
		j.q.Payload = nil
	}
	req := &j.req
	*req = resolver.Request{Msg: j.msg, InPort: inPort, Client: netip.AddrPortFrom(j.q.Src, j.q.SrcPort),
		Network: port.Network, PortID: port.PortID, Intercepted: j.intercepted}
	err := dnswire.ParseQuery(j.msg, &req.Query)
	switch {
	case err == nil:
	case j.intercepted:
		// Not a query we can parse: not ours to judge.
		r.reinject(j)
		return
	case errors.Is(err, dnswire.ErrNotImplemented):
		r.replyError(j, dns.RcodeNotImplemented, "notimp")
		return
	case errors.Is(err, dnswire.ErrBadVersion):
		// RFC 6891: an EDNS version we do not speak is answered
		// BADVERS, never resolved nor forwarded.
		r.replyError(j, dnswire.RcodeBadVersion, "badvers")
		return
	case errors.Is(err, dnswire.ErrHeader):
		r.drop(j, reasonDNSHeader)
		return
	case errors.Is(err, dnswire.ErrNotQuery):
		r.drop(j, reasonNotQuery)
		return
	default:
		r.replyError(j, dns.RcodeFormatError, "formerr")
		return
	}
	if im, ok := r.cfg.Handler.(resolver.Immediate); ok && !j.intercepted {
		if resp, ok := im.ServeImmediate(req, j.resp[:0]); ok {
			r.answer(j, resp)
			return
		}
	}
	share, refusal := r.takeSlot(inPort)
	if refusal != "" {
		if j.intercepted {
			r.reinject(j)
			return
		}
		r.replyError(j, dns.RcodeRefused, refusal)
		return
	}
	go r.serve(j, share)
}

// maxPortSlot is the number of per-port in-flight counters: OpenFlow port
// numbers of Open vSwitch's ports run from 1 to 0xfeff (OFPP_MAX is
// 0xff00), so the counters are an array indexed by the port, 255 KiB
// allocated once, looked up without a lock, a hash or an allocation.
const maxPortSlot = 0xff00

// portSlot returns the index of port's in-flight counter: the port itself,
// or 0 (not a port number) for the reserved ports (LOCAL and the like),
// which share it.
func portSlot(port uint32) int {
	if port >= maxPortSlot {
		return 0
	}
	return int(port)
}

// takeSlot counts a query of port inPort as in flight, for its port and in
// all. It returns the port's counter (nil without per-port bound), which
// the query gives back when it ends, or, when a bound would be passed, the
// counter name of the refusal, having counted nothing. It does not
// allocate.
func (r *Responder) takeSlot(inPort uint32) (share *atomic.Int32, refusal string) {
	if r.portInflight != nil {
		share = &r.portInflight[portSlot(inPort)]
		if share.Add(1) > int32(r.cfg.MaxInflightPerPort) {
			share.Add(-1)
			return nil, "refused_port_inflight"
		}
	}
	if r.inflight.Add(1) > int64(r.cfg.MaxInflight) {
		r.inflight.Add(-1)
		if share != nil {
			share.Add(-1)
		}
		return nil, "refused_inflight"
	}
	return share, ""
}

// serve resolves one query and sends the answer; share is the port's
// in-flight counter takeSlot returned, given back at the end (j is
// recycled by then and must not be read).
func (r *Responder) serve(j *job, share *atomic.Int32) {
	defer r.inflight.Add(-1)
	if share != nil {
		defer share.Add(-1)
	}
	ctx := context.Background()
	if d := time.Duration(r.deadline.Load()); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	resp, err := r.cfg.Handler.ServeDNS(ctx, &j.req, j.resp[:0])
	if j.intercepted && err != nil {
		r.reinject(j)
		return
	}
	if err != nil {
		r.replyError(j, dns.RcodeServerFailure, "servfail")
		return
	}
	r.answer(j, resp)
}

// answer sends the chain's answer resp, rewritten for the client, and
// recycles j.
func (r *Responder) answer(j *job, resp []byte) {
	// The answer comes in the upstream's form: give it the client's ID,
	// question spelling and EDNS, in place.
	resp, err := dnswire.AppendClientAnswer(resp[:0], resp, &j.req.Query, uint16(r.cfg.MaxUDPSize), r.cfg.TrustAD)
	if err != nil {
		r.replyError(j, dns.RcodeServerFailure, "servfail_bad_answer")
		return
	}
	if j.req.Source != resolver.SourceLocal && len(resp) > 2 {
		// We are not the authority for what we forward or cache.
		resp[2] &^= flagAA
	}
	j.resp = resp
	r.send(j, resp)
}

// flagAA is the AA bit in the third byte of a DNS header.
const flagAA = 0x04

// replyError answers the job's query with rcode, counting it under name.
func (r *Responder) replyError(j *job, rcode int, name string) {
	r.count(name)
	j.req.Source = resolver.SourceNone
	j.resp = dnswire.AppendError(j.resp[:0], j.msg, &j.req.Query, rcode)
	r.send(j, j.resp)
}

// send fits resp to the client, frames it and writes it out; it recycles j.
func (r *Responder) send(j *job, resp []byte) {
	limit := min(dnswire.ClientLimit(&j.req.Query, r.cfg.MaxUDPSize), frame.MaxPayload(&j.q, r.cfg.MTU))
	fitted, err := dnswire.Fit(j.fit[:0], resp, limit)
	if err != nil {
		r.drop(j, reasonReplyTooBig)
		return
	}
	if len(fitted) < len(resp) {
		j.fit = fitted
		r.count("answers_truncated")
	}
	j.out = frame.AppendReply(j.out[:0], &j.q, fitted)
	if err := r.cfg.Out.PacketOut(j.q.InPort, j.out); err != nil {
		r.drop(j, reasonPacketOut)
		return
	}
	r.count("answers")
	if r.cfg.Observe != nil {
		rcode, _ := dnswire.Rcode(fitted)
		r.cfg.Observe(&j.req, rcode, time.Since(j.start))
	}
	r.jobs.Put(j)
}

// reinject sends an intercepted query on to where the VM sent it, with a
// correct UDP checksum, and recycles j.
func (r *Responder) reinject(j *job) {
	frame.FixUDPChecksum(j.frame, &j.q)
	r.sendOn(j, j.q.InPort)
}

// sendOn re-injects j.frame as it came in on inPort and recycles j.
func (r *Responder) sendOn(j *job, inPort uint32) {
	if r.cfg.Reinject == nil || r.cfg.Reinject.Reinject(inPort, j.frame) != nil {
		r.drop(j, reasonReinject)
		return
	}
	r.count("reinjected")
	r.jobs.Put(j)
}

// drop counts a query that gets no answer and recycles its job.
func (r *Responder) drop(j *job, reason string) {
	r.count(reason)
	r.jobs.Put(j)
}

func (r *Responder) isService(addr netip.Addr, port uint16) bool {
	for _, s := range r.cfg.Services {
		if s.Port() == port && s.Addr() == addr {
			return true
		}
	}
	return false
}

func (r *Responder) count(name string) {
	c, ok := r.counters[name]
	if !ok {
		c = r.counters[reasonOther]
	}
	c.Add(1)
}

// SetDeadline replaces the time the handler may take for one query (0:
// no bound), for the queries that start after it.
func (r *Responder) SetDeadline(d time.Duration) { r.deadline.Store(int64(d)) }

// SetLimiter replaces the per-port limiter (nil: no limit); queries
// already past it are not affected.
func (r *Responder) SetLimiter(l Limiter) { r.limiter.Store(&limiterBox{l}) }

// Inflight returns the number of queries being resolved now.
func (r *Responder) Inflight() int64 { return r.inflight.Load() }

// PortInflight returns the number of queries of OpenFlow port port being
// resolved now (0 without MaxInflightPerPort); the reserved ports (above
// 0xfeff) are counted together.
func (r *Responder) PortInflight(port uint32) int {
	if r.portInflight == nil {
		return 0
	}
	return int(r.portInflight[portSlot(port)].Load())
}

// Stats returns a snapshot of the counters: queries received, answers sent
// by kind, and drops by reason.
func (r *Responder) Stats() map[string]uint64 {
	s := make(map[string]uint64, len(r.counters))
	for name, c := range r.counters {
		s[name] = c.Load()
	}
	return s
}
