package forward

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/upstream"
)

// The health rules. A failed exchange (a timeout, ICMP port unreachable, a
// network error, a reply rejected over TCP) may be about the server or only
// about the name asked: a resolver can time out on the names of one slow or
// dead domain while it answers everything else. So a failure decides
// nothing by itself:
//
//   - When the server replied to anything (a query or a probe) after the
//     failed exchange was sent, it is alive: the failure is about the name
//     and changes nothing.
//   - Otherwise the server becomes suspect: it is asked after the healthy
//     servers of its set, and a probe (". IN NS", a name every resolver and
//     no client's domain owns) is sent to it at once. A reply clears the
//     suspicion; a failed probe marks the server down.
//   - A server marked down is probed every probe interval; any reply the
//     upstream client accepts, to a probe or a query, marks it up.
//
// Any reply, whatever its rcode, proves the server alive: a SERVFAIL or
// REFUSED answer makes the query try the next server, but it is about the
// name asked, not about the server.

// avgWeight is the weight of the history in the average round-trip time
// (an exponentially weighted moving average over about eight replies).
const avgWeight = 8

// server is the health of one upstream server.
type server struct {
	addr    netip.AddrPort
	down    atomic.Bool   // written under mu
	suspect atomic.Bool   // being checked after a failure; written under mu
	fails   atomic.Uint32 // consecutive failed exchanges
	lastRTT atomic.Int64  // nanoseconds
	avgRTT  atomic.Int64  // nanoseconds
	// lastReply is when the server last replied, in nanoseconds on
	// Forward's monotonic clock (see Forward.clock); 0 before any reply.
	lastReply atomic.Int64

	mu      sync.Mutex // guards the fields below and the writes of down and suspect
	lastErr error
	since   time.Time // when down last changed, or when the Forward was made
	probing bool      // a probe goroutine runs for this server
}

// demoted reports whether s is asked only after the healthy servers of its
// set: marked down, or suspect.
func (s *server) demoted() bool { return s.down.Load() || s.suspect.Load() }

// ServerHealth is what Health reports about one upstream server.
type ServerHealth struct {
	Server              netip.AddrPort
	Up                  bool          // false while the server is marked down
	ConsecutiveFailures uint32        // failed exchanges (queries and probes) since the last reply
	LastRTT             time.Duration // round-trip time of the last reply; 0 before any
	AvgRTT              time.Duration // moving average over about the last eight replies
	LastError           error         // the last failed exchange's error; nil if none yet
	Since               time.Time     // when Up last changed, or when the Forward was made
}

// Health returns the health of every distinct server, the default servers
// first, then the zones' servers not already listed, in configuration order.
func (f *Forward) Health() []ServerHealth {
	out := make([]ServerHealth, 0, len(f.servers))
	for _, s := range f.servers {
		s.mu.Lock()
		h := ServerHealth{
			Server:              s.addr,
			Up:                  !s.down.Load(),
			ConsecutiveFailures: s.fails.Load(),
			LastRTT:             time.Duration(s.lastRTT.Load()),
			AvgRTT:              time.Duration(s.avgRTT.Load()),
			LastError:           s.lastErr,
			Since:               s.since,
		}
		s.mu.Unlock()
		out = append(out, h)
	}
	return out
}

// clock returns the time since f was made, in nanoseconds (monotonic, and
// above 0 once any time has passed).
func (f *Forward) clock(t time.Time) int64 { return int64(t.Sub(f.epoch)) }

// replied records a reply from s that took rtt, clearing a suspicion and
// marking s up if it was down. It does not lock unless s was demoted.
func (f *Forward) replied(s *server, rtt time.Duration) {
	s.lastReply.Store(max(f.clock(time.Now()), 1))
	s.lastRTT.Store(int64(rtt))
	for {
		old := s.avgRTT.Load()
		avg := int64(rtt)
		if old != 0 {
			avg = old + (int64(rtt)-old)/avgWeight
		}
		if s.avgRTT.CompareAndSwap(old, avg) {
			break
		}
	}
	if s.fails.Load() != 0 {
		s.fails.Store(0)
	}
	if !s.demoted() {
		return
	}
	s.mu.Lock()
	cleared := s.suspect.Load()
	s.suspect.Store(false)
	wasDown := s.down.Load()
	now := time.Now()
	downFor := now.Sub(s.since)
	if wasDown {
		s.down.Store(false)
		s.since = now
	}
	s.mu.Unlock()
	if cleared {
		f.stats.checksPassed.Add(1)
	}
	if wasDown {
		f.stats.markedUp.Add(1)
		f.logger.Info("upstream server up again", "server", s.addr.String(), "down_for", downFor.Round(time.Millisecond), "rtt", rtt)
	}
}

// failed records a failed exchange of a query with s, sent at sent, and
// applies the health rules: unless s replied since sent, s becomes suspect
// and is checked at once with a probe. Exchanges cut short by the query's
// context (canceled, or its deadline came before the server's timeout) or
// by the client's Close say nothing about s and are not counted.
func (f *Forward) failed(ctx context.Context, s *server, err error, sent time.Time) {
	if ctx.Err() != nil || errors.Is(err, upstream.ErrClosed) {
		return
	}
	if errors.Is(err, upstream.ErrTimeout) {
		if d, ok := ctx.Deadline(); ok && !d.After(sent.Add(f.timeout)) {
			return
		}
		f.stats.timeouts.Add(1)
	} else {
		f.stats.errors.Add(1)
	}
	s.fails.Add(1)
	s.mu.Lock()
	s.lastErr = err
	if last := s.lastReply.Load(); last != 0 && last >= f.clock(sent) {
		s.mu.Unlock()
		f.stats.failuresWhileUp.Add(1)
		return
	}
	if s.demoted() {
		s.mu.Unlock()
		return
	}
	s.suspect.Store(true)
	start := !s.probing
	s.probing = true
	s.mu.Unlock()
	f.stats.checks.Add(1)
	if start {
		f.startProbe(s)
	}
}

// probeFailed records a probe of s that got no reply: a suspect s is
// marked down.
func (f *Forward) probeFailed(s *server, err error) {
	f.stats.probesFailed.Add(1)
	n := s.fails.Add(1)
	s.mu.Lock()
	s.lastErr = err
	if !s.suspect.Load() {
		s.mu.Unlock()
		return
	}
	s.suspect.Store(false)
	s.down.Store(true)
	s.since = time.Now()
	s.mu.Unlock()
	f.stats.markedDown.Add(1)
	f.logger.Warn("upstream server down, probing it", "server", s.addr.String(), "error", err,
		"consecutive_failures", n, "probe_interval", f.probeInterval)
}

// startProbe starts the goroutine that probes s, unless f is closed.
func (f *Forward) startProbe(s *server) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		s.mu.Lock()
		s.probing = false
		s.suspect.Store(false)
		s.mu.Unlock()
		return
	}
	f.probes.Add(1)
	go f.probe(s)
}

// probe asks s ". IN NS": at once while s is suspect, every probe interval
// while it is marked down. Any reply the upstream client accepts clears
// the suspicion or marks s up; a suspect s whose probe fails is marked
// down. It ends when s is neither suspect nor down, or f is closed.
func (f *Forward) probe(s *server) {
	defer f.probes.Done()
	t := time.NewTimer(f.probeInterval)
	t.Stop()
	defer t.Stop()
	buf := make([]byte, 0, 512)
	for {
		if f.stopProbing(s, false) {
			return
		}
		if s.down.Load() {
			t.Reset(f.probeInterval)
			select {
			case <-f.ctx.Done():
				f.stopProbing(s, true)
				return
			case <-t.C:
			}
			if f.stopProbing(s, false) {
				return
			}
		}
		f.stats.probesSent.Add(1)
		sent := time.Now()
		_, err := f.client.Exchange(f.ctx, s.addr, f.timeout, f.probeMsg, &f.probeQ, buf[:0])
		switch {
		case err == nil:
			f.replied(s, time.Since(sent))
		case f.ctx.Err() != nil || errors.Is(err, upstream.ErrClosed):
			f.stopProbing(s, true)
			return
		default:
			f.probeFailed(s, err)
		}
	}
}

// stopProbing reports whether the probe of s ends: always when force is
// set (a suspicion is then dropped), else when s is neither suspect nor
// down. A server that fails again finds probing still set only while its
// probe keeps going.
func (f *Forward) stopProbing(s *server, force bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !force && s.demoted() {
		return false
	}
	s.suspect.Store(false)
	s.probing = false
	return true
}
