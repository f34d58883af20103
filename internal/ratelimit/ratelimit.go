// Package ratelimit is a per-key token bucket limiter with bounded memory,
// for the daemon's per-port query rate limit (key = OpenFlow in_port).
//
// Each key has a bucket of burst tokens refilled at rate tokens per second;
// a query takes one token or is turned away. The table has a fixed size
// chosen by New: keys hash to sets of eight slots, and a new key takes the
// free slot of its set or evicts the key used least recently there (an
// evicted key starts again with a full bucket). Allow takes one set's lock,
// never allocates, and runs in a few tens of nanoseconds.
package ratelimit

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// ways is the number of slots of a set.
const ways = 8

// unit is the number of fractions a token is counted in: exact sums of
// refills for any rate a whole number of queries per second.
const unit = 1_000_000_000

// slot is one key's bucket.
type slot struct {
	key    uint32
	used   bool
	tokens int64 // in units of 1/unit token
	last   int64 // unix nanoseconds of the last refill, the key's last use
}

// set is a group of slots under one lock.
type set struct {
	mu    sync.Mutex
	slots [ways]slot
}

// Limiter limits each key to rate per second with bursts of burst. Its
// methods are safe for concurrent use.
type Limiter struct {
	rate  float64 // token units per nanosecond
	burst int64   // in token units
	off   bool
	shift uint
	sets  []set

	allowed, limited, evictions, keys atomic.Uint64
}

// New returns a limiter allowing each key rate queries per second on
// average and burst at once, for up to maxKeys keys at a time (rounded up
// to a power of two and at least eight). A rate of zero or less disables
// limiting: Allow always says yes. A burst below one is one.
func New(rate float64, burst int, maxKeys int) *Limiter {
	n := max(1, (maxKeys+ways-1)/ways)
	n = 1 << bits.Len(uint(n-1))
	l := &Limiter{
		rate:  rate * unit / float64(time.Second),
		burst: int64(min(max(1, burst), 1<<30)) * unit,
		off:   rate <= 0,
		shift: uint(32 - bits.Len(uint(n-1))),
		sets:  make([]set, n),
	}
	return l
}

// setOf returns the set of key.
func (l *Limiter) setOf(key uint32) *set {
	if len(l.sets) == 1 {
		return &l.sets[0]
	}
	return &l.sets[(key*0x9e3779b1)>>l.shift]
}

// Allow reports whether a query of key at time now is within the limit,
// taking a token if so.
func (l *Limiter) Allow(key uint32, now time.Time) bool {
	if l.off {
		l.allowed.Add(1)
		return true
	}
	t := now.UnixNano()
	s := l.setOf(key)
	s.mu.Lock()
	var sl *slot
	victim := 0
	for i := range s.slots {
		c := &s.slots[i]
		if c.used && c.key == key {
			sl = c
			break
		}
		if !c.used {
			if s.slots[victim].used {
				victim = i
			}
		} else if s.slots[victim].used && c.last < s.slots[victim].last {
			victim = i
		}
	}
	if sl == nil {
		sl = &s.slots[victim]
		if sl.used {
			l.evictions.Add(1)
		} else {
			l.keys.Add(1)
		}
		*sl = slot{key: key, used: true, tokens: l.burst, last: t}
	}
	if d := t - sl.last; d > 0 {
		// Rounding to the nearest unit keeps sums of refills exact.
		sl.tokens = min(l.burst, sl.tokens+int64(math.Round(min(float64(d)*l.rate, float64(l.burst)))))
	}
	sl.last = max(sl.last, t)
	ok := sl.tokens >= unit
	if ok {
		sl.tokens -= unit
	}
	s.mu.Unlock()
	if ok {
		l.allowed.Add(1)
	} else {
		l.limited.Add(1)
	}
	return ok
}

// Stats returns the limiter's counters: allowed and limited (queries let
// through and turned away), evictions (keys dropped for a new one) and
// keys (keys tracked now).
func (l *Limiter) Stats() map[string]uint64 {
	return map[string]uint64{
		"allowed":   l.allowed.Load(),
		"limited":   l.limited.Load(),
		"evictions": l.evictions.Load(),
		"keys":      l.keys.Load(),
	}
}
