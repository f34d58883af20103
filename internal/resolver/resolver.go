// Package resolver defines the chain that answers a captured DNS query.
//
// The chain works like CoreDNS's plugins: each step is a Handler that either
// answers the query itself or passes it on to the next Handler it was built
// with. The responder calls the first Handler for every query; the last one
// in the chain is always the forwarder (package forward), which asks the
// upstream resolvers. Later steps, such as the network's local instance names
// and a cache, sit in front of it and fall through to it for anything they
// do not answer.
//
// A Request carries everything a step may need explicitly (the message, its
// parse, where it came from); no step keeps per-query state elsewhere. A
// Handler appends the answer, already carrying the client's ID, to the dst
// buffer it was given, so that the caller controls every allocation. When no
// answer can be produced it returns an error and the caller answers SERVFAIL.
package resolver

import (
	"context"
	"errors"
	"net/netip"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
)

// Request is one client query as it travels down the chain.
type Request struct {
	// Msg is the client's DNS query, exactly as received.
	Msg []byte
	// Query is Msg parsed by dnswire.ParseQuery.
	Query dnswire.Query
	// InPort is the OpenFlow port the query came in on.
	InPort uint32
	// Client is the VM's address and source port.
	Client netip.AddrPort
	// Network is the Neutron network of the port the query came from,
	// "" when the port is not a known Neutron VM port; local names are
	// answered only within it.
	Network string
	// PortID is the Neutron port the query came from, "" when unknown.
	PortID string
	// Intercepted is set for a query the VM sent to an address other than
	// the service addresses (intercept_all_dns): only local names are
	// answered; anything else goes on to where the VM sent it.
	Intercepted bool
	// Source is set by the step that answered: local, cache or upstream.
	Source Source
}

// Source is the step of the chain an answer came from, for metrics and
// the query log.
type Source uint8

// The steps that answer; SourceNone is a query answered with an error
// (SERVFAIL, FORMERR, ...) or not at all.
const (
	SourceNone Source = iota
	SourceLocal
	SourceCache
	SourceUpstream
)

// String returns "local", "cache", "upstream" or "error".
func (s Source) String() string {
	switch s {
	case SourceLocal:
		return "local"
	case SourceCache:
		return "cache"
	case SourceUpstream:
		return "upstream"
	}
	return "error"
}

// ErrNotLocal is what the chain returns for an intercepted query (one the
// VM sent to some other resolver) that is not for a local name: the
// responder then lets the packet go on to where the VM sent it.
var ErrNotLocal = errors.New("resolver: not a local name")

// Handler answers a Request. ServeDNS returns the answer, with the client's
// ID, appended to dst, or an error when it has none (the caller then answers
// SERVFAIL). It must be safe for concurrent use and must not keep r or dst
// after it returns.
type Handler interface {
	ServeDNS(ctx context.Context, r *Request, dst []byte) ([]byte, error)
}

// Immediate is implemented by a Handler that can answer some requests at
// once, from memory, without waiting for anything (a cache hit, a local
// name). The responder tries it on the packet-in read loop before handing
// the request to a goroutine; ok false means ServeDNS must take it. A
// Handler in front of another must answer immediately only what its
// ServeDNS would answer the same way.
type Immediate interface {
	ServeImmediate(r *Request, dst []byte) (answer []byte, ok bool)
}

// HandlerFunc adapts an ordinary function to a Handler.
type HandlerFunc func(ctx context.Context, r *Request, dst []byte) ([]byte, error)

// ServeDNS calls f(ctx, r, dst).
func (f HandlerFunc) ServeDNS(ctx context.Context, r *Request, dst []byte) ([]byte, error) {
	return f(ctx, r, dst)
}
