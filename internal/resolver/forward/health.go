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

// The health rules: how many consecutive failed exchanges mark a server
// down. A timeout costs every later query the full timeout, so one is
// enough; the other failures (ICMP port unreachable, network errors, replies
// that fail validation over TCP) cost little and may be passing, so it takes
// a few in a row. Any reply the upstream client accepts, whatever its rcode,
// resets the count and proves the server alive: a SERVFAIL or REFUSED answer
// makes the query try the next server, but it is about the name asked, not
// about the server.
const (
	timeoutsDown = 1
	failuresDown = 3
)

// avgWeight is the weight of the history in the average round-trip time
// (an exponentially weighted moving average over about eight replies).
const avgWeight = 8

// server is the health of one upstream server.
type server struct {
	addr    netip.AddrPort
	down    atomic.Bool   // written under mu
	fails   atomic.Uint32 // consecutive failed exchanges
	lastRTT atomic.Int64  // nanoseconds
	avgRTT  atomic.Int64  // nanoseconds

	mu      sync.Mutex // guards the fields below and the writes of down
	lastErr error
	since   time.Time // when down last changed, or when the Forward was made
	probing bool      // a probe goroutine runs for this server
}

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

// replied records a reply from s that took rtt, marking s up if it was
// down. It does not lock unless s was down.
func (f *Forward) replied(s *server, rtt time.Duration) {
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
	if !s.down.Load() {
		return
	}
	s.mu.Lock()
	if !s.down.Load() {
		s.mu.Unlock()
		return
	}
	now := time.Now()
	downFor := now.Sub(s.since)
	s.down.Store(false)
	s.since = now
	s.mu.Unlock()
	f.stats.markedUp.Add(1)
	f.logger.Info("upstream server up again", "server", s.addr.String(), "down_for", downFor.Round(time.Millisecond), "rtt", rtt)
}

// failed records a failed exchange with s, sent at sent, marking s down
// when it reaches the threshold of the health rules. Exchanges cut short by
// the query's context (canceled, or its deadline came before the server's
// timeout) or by the client's Close say nothing about s and are not counted.
func (f *Forward) failed(ctx context.Context, s *server, err error, sent time.Time) {
	if ctx.Err() != nil || errors.Is(err, upstream.ErrClosed) {
		return
	}
	threshold := uint32(failuresDown)
	if errors.Is(err, upstream.ErrTimeout) {
		if d, ok := ctx.Deadline(); ok && !d.After(sent.Add(f.timeout)) {
			return
		}
		threshold = timeoutsDown
		f.stats.timeouts.Add(1)
	} else {
		f.stats.errors.Add(1)
	}
	n := s.fails.Add(1)
	s.mu.Lock()
	s.lastErr = err
	if n < threshold || s.down.Load() {
		s.mu.Unlock()
		return
	}
	s.down.Store(true)
	s.since = time.Now()
	probe := !s.probing
	s.probing = true
	s.mu.Unlock()
	f.stats.markedDown.Add(1)
	f.logger.Warn("upstream server down, probing it", "server", s.addr.String(), "error", err,
		"consecutive_failures", n, "probe_interval", f.probeInterval)
	if probe {
		f.startProbe(s)
	}
}

// startProbe starts the goroutine that probes s, unless f is closed.
func (f *Forward) startProbe(s *server) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		s.mu.Lock()
		s.probing = false
		s.mu.Unlock()
		return
	}
	f.probes.Add(1)
	go f.probe(s)
}

// probe asks s ". IN NS" every probe interval while it is marked down; any
// reply the upstream client accepts marks it up. It ends when s is up or f
// is closed.
func (f *Forward) probe(s *server) {
	defer f.probes.Done()
	t := time.NewTimer(f.probeInterval)
	defer t.Stop()
	buf := make([]byte, 0, 512)
	for {
		select {
		case <-f.ctx.Done():
			f.stopProbing(s, true)
			return
		case <-t.C:
		}
		if f.stopProbing(s, false) {
			return
		}
		f.stats.probesSent.Add(1)
		sent := time.Now()
		_, err := f.client.Exchange(f.ctx, s.addr, f.timeout, f.probeMsg, &f.probeQ, buf[:0])
		switch {
		case err == nil:
			f.replied(s, time.Since(sent))
			if f.stopProbing(s, false) {
				return
			}
		case f.ctx.Err() != nil || errors.Is(err, upstream.ErrClosed):
			f.stopProbing(s, true)
			return
		default:
			f.stats.probesFailed.Add(1)
			s.fails.Add(1)
			s.mu.Lock()
			s.lastErr = err
			s.mu.Unlock()
		}
		t.Reset(f.probeInterval)
	}
}

// stopProbing reports whether the probe of s ends: always when force is
// set, else when s is up. A server marked down again finds probing still set
// only while its probe keeps going.
func (f *Forward) stopProbing(s *server, force bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !force && s.down.Load() {
		return false
	}
	s.probing = false
	return true
}
