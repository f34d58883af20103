package ratelimit

import (
	"sync"
	"testing"
	"time"
)

var t0 = time.Unix(1_700_000_000, 0)

// take counts how many of n queries of key at now are allowed.
func take(l *Limiter, key uint32, now time.Time, n int) int {
	ok := 0
	for range n {
		if l.Allow(key, now) {
			ok++
		}
	}
	return ok
}

func TestBurstAndRefill(t *testing.T) {
	l := New(100, 10, 64)
	if got := take(l, 1, t0, 50); got != 10 {
		t.Fatalf("burst: %d allowed, want 10", got)
	}
	// 50 ms at 100/s: 5 tokens.
	if got := take(l, 1, t0.Add(50*time.Millisecond), 50); got != 5 {
		t.Errorf("after 50ms: %d allowed, want 5", got)
	}
	// A long idle time refills up to the burst only.
	if got := take(l, 1, t0.Add(time.Hour), 50); got != 10 {
		t.Errorf("after an hour: %d allowed, want 10", got)
	}
	// Over a second of steady queries: rate per second.
	now := t0.Add(2 * time.Hour)
	take(l, 1, now, 100)
	ok := 0
	for i := range 1000 {
		ok += take(l, 1, now.Add(time.Duration(i+1)*time.Millisecond), 5)
	}
	if ok != 100 {
		t.Errorf("one second of flood: %d allowed, want 100", ok)
	}
	st := l.Stats()
	if st["allowed"] != 10+5+10+10+100 || st["keys"] != 1 || st["evictions"] != 0 {
		t.Errorf("stats %v", st)
	}
}

func TestKeysIndependent(t *testing.T) {
	l := New(10, 5, 64)
	if got := take(l, 7, t0, 1000); got != 5 {
		t.Fatalf("flooding key: %d", got)
	}
	if got := take(l, 8, t0, 5); got != 5 {
		t.Errorf("second key: %d allowed, want 5 despite the flood", got)
	}
}

func TestClockBackwards(t *testing.T) {
	l := New(1000, 1, 8)
	if !l.Allow(1, t0) {
		t.Fatal("first query refused")
	}
	if l.Allow(1, t0.Add(-time.Second)) {
		t.Error("a step back in time refilled the bucket")
	}
	if !l.Allow(1, t0.Add(time.Millisecond)) {
		t.Error("refill after the step back")
	}
}

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	l := New(1, 1, 8) // one set of eight slots
	for k := range uint32(8) {
		if !l.Allow(k, t0.Add(time.Duration(k)*time.Millisecond)) {
			t.Fatalf("key %d refused", k)
		}
	}
	// Key 0 is used again: key 1 is now the least recently used.
	l.Allow(0, t0.Add(10*time.Millisecond))
	if !l.Allow(100, t0.Add(11*time.Millisecond)) {
		t.Fatal("new key refused")
	}
	if st := l.Stats(); st["evictions"] != 1 || st["keys"] != 8 {
		t.Errorf("stats %v", st)
	}
	// Key 0 kept its empty bucket; key 1 starts again with a full one.
	if l.Allow(0, t0.Add(12*time.Millisecond)) {
		t.Error("key 0 was evicted")
	}
	if !l.Allow(1, t0.Add(12*time.Millisecond)) {
		t.Error("key 1 was not evicted")
	}
}

func TestBoundedMemory(t *testing.T) {
	l := New(1, 1, 100)
	if len(l.sets) != 16 {
		t.Errorf("%d sets for 100 keys, want 16", len(l.sets))
	}
	for k := range uint32(100000) {
		l.Allow(k, t0)
	}
	if st := l.Stats(); st["keys"] != 128 || st["evictions"] != 100000-128 {
		t.Errorf("stats %v", st)
	}
	if n := len(New(1, 1, 0).sets); n != 1 {
		t.Errorf("%d sets for no keys", n)
	}
}

func TestDisabled(t *testing.T) {
	l := New(0, 0, 8)
	if got := take(l, 1, t0, 1000); got != 1000 {
		t.Errorf("disabled limiter allowed %d of 1000", got)
	}
	l = New(1, 0, 8)
	if got := take(l, 1, t0, 10); got != 1 {
		t.Errorf("burst 0: %d allowed, want 1", got)
	}
}

func TestConcurrent(t *testing.T) {
	l := New(1000, 100, 64)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10000 {
				l.Allow(uint32(g*100+i%20), t0.Add(time.Duration(i)*time.Microsecond))
			}
		})
	}
	wg.Wait()
	st := l.Stats()
	if st["allowed"]+st["limited"] != 80000 {
		t.Errorf("stats %v", st)
	}
}

func TestAllowNoAlloc(t *testing.T) {
	l := New(1000, 100, 1024)
	now := t0
	allocs := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Microsecond)
		l.Allow(uint32(now.Nanosecond()%3000), now)
	})
	if allocs != 0 {
		t.Errorf("Allow allocates %v times", allocs)
	}
}

func BenchmarkAllow(b *testing.B) {
	l := New(1000, 100, 4096)
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		k := uint32(0)
		for pb.Next() {
			k++
			l.Allow(k%512, now)
		}
	})
}
