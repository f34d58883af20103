// Package forward is the last step of the resolver chain: it asks the
// upstream servers, in their configured order, and passes the first good
// answer through. See README.md for its behaviour.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/upstream"
)

// ErrAllFailed is returned when no upstream server gave an answer; the
// caller answers SERVFAIL. The error returned wraps it together with the
// last server's error.
var ErrAllFailed = errors.New("forward: all upstream servers failed")

// logInterval is the least time between two warnings about one server.
const logInterval = 10 * time.Second

// Response codes that make Forward try the next server.
const (
	rcodeServFail = 2
	rcodeRefused  = 5
)

// Errors logged for answers that make Forward try the next server.
var (
	errServFail = errors.New("answered SERVFAIL")
	errRefused  = errors.New("answered REFUSED")
	errNoServer = errors.New("no upstream server configured")
)

// Forward sends queries to upstream servers. It implements resolver.Handler
// and is safe for concurrent use.
type Forward struct {
	client  *upstream.Client
	servers []netip.AddrPort
	timeout time.Duration
	logger  *slog.Logger
	health  []failureLog // one per server
}

// failureLog rate-limits the warnings about one server.
type failureLog struct {
	mu       sync.Mutex
	last     time.Time // when the last warning was logged
	failures uint64    // failures since then, not yet logged
}

var _ resolver.Handler = (*Forward)(nil)

// New returns a Forward that asks servers in order through client, giving
// each up to timeout (the client's Config.Timeout when it is not positive).
// A nil logger discards the warnings.
func New(client *upstream.Client, servers []netip.AddrPort, timeout time.Duration, logger *slog.Logger) *Forward {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Forward{
		client:  client,
		servers: append([]netip.AddrPort(nil), servers...),
		timeout: timeout,
		logger:  logger,
		health:  make([]failureLog, len(servers)),
	}
}

// ServeDNS asks the servers in order, each within the timeout and all
// within ctx, and appends the first answer whose rcode is neither SERVFAIL
// nor REFUSED to dst. When every server that answered said SERVFAIL or
// REFUSED, the last such answer is returned. When none answered, it returns
// an error wrapping ErrAllFailed.
func (f *Forward) ServeDNS(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
	base := len(dst)
	fallback := false // dst[base:] holds a SERVFAIL or REFUSED answer
	lastErr := errNoServer
	for i, server := range f.servers {
		start := len(dst)
		out, err := f.client.Exchange(ctx, server, f.timeout, r.Msg, &r.Query, dst)
		if err == nil {
			err = judge(out[start:])
			if err == nil {
				// A good answer: it replaces any fallback before it.
				n := copy(out[base:], out[start:])
				return out[:base+n], nil
			}
			if errors.Is(err, errServFail) || errors.Is(err, errRefused) {
				n := copy(out[base:], out[start:])
				dst = out[:base+n]
				fallback = true
			}
		}
		f.failed(i, err)
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	if fallback {
		return dst, nil
	}
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

// failed logs a failure of server i at Warn, at most once per logInterval
// per server, with the number of failures since the previous line.
func (f *Forward) failed(i int, err error) {
	h := &f.health[i]
	now := time.Now()
	h.mu.Lock()
	h.failures++
	if !h.last.IsZero() && now.Sub(h.last) < logInterval {
		h.mu.Unlock()
		return
	}
	n := h.failures
	h.failures = 0
	h.last = now
	h.mu.Unlock()
	f.logger.Warn("upstream server failed", "server", f.servers[i].String(), "error", err, "failures", n)
}
