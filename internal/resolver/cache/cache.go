// Package cache is the resolver step that keeps answers for their TTL and
// serves them again with the TTLs counted down. See README.md for its
// behaviour.
//
// Design: entries live in a power-of-two number of shards, each with its
// own mutex, its own map from a 64-bit hash of the key to the entry, and its
// own CLOCK ring (second-chance eviction: a hit only sets a reference bit,
// so hits never reorder a list). A stored entry is immutable apart from
// fields guarded by its shard's mutex, which is held only for the map
// lookup; the answer is copied into the caller's buffer after the mutex is
// released, and its ID and TTL fields are then written at offsets found
// when the entry was stored, so a hit neither parses nor allocates.
package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
)

// Defaults used for Config fields left at zero.
const (
	DefaultSize           = 10000
	DefaultMaxTTL         = 24 * time.Hour
	DefaultNegativeTTL    = time.Hour
	DefaultStaleTTL       = 24 * time.Hour
	DefaultStaleAnswerTTL = 30 * time.Second
)

// Prefetch policy: an entry hit at least PrefetchHits times whose original
// TTL is at least PrefetchMinTTL is refreshed once in the background when a
// hit finds less than a tenth of that TTL left; at most MaxPrefetches
// refreshes run at once (a hit finding them all busy does not prefetch).
const (
	PrefetchHits   = 3
	PrefetchMinTTL = 10 * time.Second
	MaxPrefetches  = 16
)

// Internal limits.
const (
	prefetchTimeout = 10 * time.Second // bound of one background refresh
	maxShards       = 64
	minShardEntries = 16  // shards are halved until each holds at least this many
	maxKeyLen       = 264 // name (255) + type, class, flags, set
	keyDO           = 1
	keyCD           = 2
	flagCD          = 0x0010
	flagRD          = 0x0100
	rcodeMask       = 0x000f
	rcodeServFail   = 2
	rcodeRefused    = 5
	maxTTLSeconds   = 1<<31 - 1
)

// Config configures a Cache. Zero values select the defaults.
type Config struct {
	// Size bounds the number of entries (fresh or expired); below 1 it
	// is DefaultSize.
	Size int
	// MinTTL raises shorter TTLs (positive and negative) to it; 0 keeps
	// them. An answer whose TTL stays 0 is not stored.
	MinTTL time.Duration
	// MaxTTL caps the TTL of positive answers; 0 is DefaultMaxTTL.
	MaxTTL time.Duration
	// NegativeTTL caps the TTL of negative answers (NXDOMAIN, NODATA); 0
	// is DefaultNegativeTTL. It wins over MinTTL.
	NegativeTTL time.Duration
	// ServeStale answers from an expired entry when next fails (RFC 8767).
	ServeStale bool
	// StaleTTL is how long past its expiry an entry may still be served
	// stale; 0 is DefaultStaleTTL.
	StaleTTL time.Duration
	// StaleAnswerTTL is the TTL of every record of a stale answer; 0 is
	// DefaultStaleAnswerTTL.
	StaleAnswerTTL time.Duration
	// Prefetch refreshes popular entries before they expire.
	Prefetch bool
	// Set returns the id of the upstream set that answers r; it is part of
	// the key. Nil means every request has set 0.
	Set func(r *resolver.Request) uint32
	// Now returns the current time; nil is time.Now.
	Now func() time.Time
	// Logger receives background prefetch failures at Debug; nil discards.
	Logger *slog.Logger
}

// Cache answers repeated questions from memory and passes the others to the
// next Handler. It implements resolver.Handler and is safe for concurrent
// use.
type Cache struct {
	cfg      Config
	next     resolver.Handler
	seed     maphash.Seed
	shards   []shard
	mask     uint64
	minTTL   uint32 // seconds
	maxTTL   uint32
	negTTL   uint32
	staleTTL uint32
	inflight atomic.Int32 // running prefetches
	norec    atomic.Uint64
	// gen counts the flushes: an answer to a question asked before the
	// last one is not stored, and later questions do not wait for it.
	gen atomic.Uint64
}

var _ resolver.Handler = (*Cache)(nil)

// shard is one lock stripe: a map, a CLOCK ring and counters.
type shard struct {
	mu       sync.Mutex
	entries  map[uint64]*entry // by key hash; the key is checked on lookup
	flights  map[uint64]*flight
	ring     []*entry // CLOCK ring; len <= capacity
	hand     int
	capacity int

	hits, misses, merged, evictions atomic.Uint64
	stale, prefetches, notCacheable atomic.Uint64
	flushedInFlight                 atomic.Uint64

	_ [64]byte // keep neighbouring shards off this cache line
}

// entry is one cached answer. key, hash, msg, offs, ttl, negative and
// expire never change after the entry is stored; the rest is guarded by the
// shard's mutex.
type entry struct {
	key    string
	hash   uint64
	msg    []byte   // the answer with every TTL set to ttl
	offs   []uint16 // offsets of the TTL fields in msg
	ttl    uint32   // seconds, after the caps
	expire time.Time

	slot       int    // index in the shard's ring
	hits       uint32 // fresh hits
	ref        bool   // CLOCK reference bit
	prefetched bool   // a prefetch was started for it
}

// flight is a question being asked of next; identical questions wait for
// its outcome instead of asking again.
type flight struct {
	key        string
	done       chan struct{} // closed when resp and err are set
	resp       []byte        // the answer (immutable; any ID)
	err        error
	waiters    int    // guarded by the shard's mutex
	registered bool   // it was put in the shard's flights map
	gen        uint64 // the cache's generation when it was asked
}

// New returns a Cache in front of next.
func New(cfg Config, next resolver.Handler) *Cache {
	if cfg.Size < 1 {
		cfg.Size = DefaultSize
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = DefaultNegativeTTL
	}
	if cfg.StaleTTL <= 0 {
		cfg.StaleTTL = DefaultStaleTTL
	}
	if cfg.StaleAnswerTTL <= 0 {
		cfg.StaleAnswerTTL = DefaultStaleAnswerTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := 1
	for n < maxShards && cfg.Size/(2*n) >= minShardEntries {
		n *= 2
	}
	c := &Cache{
		cfg:      cfg,
		next:     next,
		seed:     maphash.MakeSeed(),
		shards:   make([]shard, n),
		mask:     uint64(n - 1),
		minTTL:   seconds(max(cfg.MinTTL, 0)),
		maxTTL:   seconds(cfg.MaxTTL),
		negTTL:   seconds(cfg.NegativeTTL),
		staleTTL: seconds(cfg.StaleAnswerTTL),
	}
	for i := range c.shards {
		sh := &c.shards[i]
		sh.entries = make(map[uint64]*entry)
		sh.flights = make(map[uint64]*flight)
		sh.capacity = cfg.Size / n
		if i < cfg.Size%n {
			sh.capacity++
		}
	}
	return c
}

// seconds converts d to whole seconds, capped at the largest valid TTL.
func seconds(d time.Duration) uint32 {
	return uint32(min(d/time.Second, maxTTLSeconds))
}

// appendKey appends the cache key of r to b: the question name lower-cased,
// type, class, the DO and CD bits and the upstream set.
func (c *Cache) appendKey(b []byte, r *resolver.Request) []byte {
	for _, ch := range r.Query.Name {
		if ch >= 'A' && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		b = append(b, ch)
	}
	var flags byte
	if r.Query.DO {
		flags |= keyDO
	}
	if r.Query.Flags&flagCD != 0 {
		flags |= keyCD
	}
	var set uint32
	if c.cfg.Set != nil {
		set = c.cfg.Set(r)
	}
	b = binary.BigEndian.AppendUint16(b, r.Query.Type)
	b = binary.BigEndian.AppendUint16(b, r.Query.Class)
	b = append(b, flags)
	return binary.BigEndian.AppendUint32(b, set)
}

// ServeDNS answers r from the cache when a fresh entry exists; otherwise it
// asks next (or waits for an identical question already asked), stores a
// cacheable answer and returns it. The answer is appended to dst with the
// client's ID and the TTLs left. A query without RD is refused (see
// refuseNoRecursion).
func (c *Cache) ServeDNS(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
	if r.Query.Flags&flagRD == 0 {
		return c.refuseNoRecursion(r, dst), nil
	}
	var buf [maxKeyLen]byte
	key := c.appendKey(buf[:0], r)
	h := maphash.Bytes(c.seed, key)
	sh := &c.shards[h&c.mask]
	now := c.cfg.Now()

	sh.mu.Lock()
	if e, left, pf := c.fresh(sh, h, key, now); e != nil {
		sh.mu.Unlock()
		return c.answerHit(r, dst, sh, h, e, left, pf), nil
	}
	gen := c.gen.Load()
	f := sh.flights[h]
	if f != nil && f.key == string(key) && f.gen == gen {
		f.waiters++
		sh.mu.Unlock()
		sh.merged.Add(1)
		return c.wait(ctx, r, dst, sh, key, h, f)
	}
	nf := &flight{key: string(key), done: make(chan struct{}), gen: gen}
	if f == nil || f.key == string(key) {
		// The same question asked before a flush is not waited for:
		// this one takes its place.
		nf.registered = true
		sh.flights[h] = nf
	}
	sh.mu.Unlock()
	sh.misses.Add(1)

	start := len(dst)
	out, err := c.resolve(ctx, r, dst, sh, h, nf)
	if !failed(out[start:], err) {
		return out, nil
	}
	return c.orStale(r, dst[:start], sh, key, h, out, err)
}

// ServeImmediate answers r from a fresh entry without waiting for
// anything; false when there is none, and ServeDNS must take r. The
// responder calls it on the packet-in read loop, so that a hit costs no
// goroutine.
func (c *Cache) ServeImmediate(r *resolver.Request, dst []byte) ([]byte, bool) {
	if r.Query.Flags&flagRD == 0 {
		return c.refuseNoRecursion(r, dst), true
	}
	var buf [maxKeyLen]byte
	key := c.appendKey(buf[:0], r)
	h := maphash.Bytes(c.seed, key)
	sh := &c.shards[h&c.mask]
	sh.mu.Lock()
	e, left, pf := c.fresh(sh, h, key, c.cfg.Now())
	sh.mu.Unlock()
	if e == nil {
		return dst, false
	}
	return c.answerHit(r, dst, sh, h, e, left, pf), true
}

// refuseNoRecursion appends a REFUSED answer to r, a query without RD.
// The cache is shared by every tenant: answering non-recursive queries from
// it would let a VM see what other VMs asked (cache snooping), and asking
// next without RD would only move the snooping to the upstream's cache.
// Unbound's "access-control: allow" refuses them the same way.
func (c *Cache) refuseNoRecursion(r *resolver.Request, dst []byte) []byte {
	c.norec.Add(1)
	return dnswire.AppendError(dst, r.Msg, &r.Query, rcodeRefused)
}

// fresh returns, with sh.mu held, the entry for key if it has not
// expired, the time it has left, and the prefetch the hit starts; it
// counts the hit on the entry. A nil entry means a miss.
func (c *Cache) fresh(sh *shard, h uint64, key []byte, now time.Time) (*entry, time.Duration, *flight) {
	e := sh.entries[h]
	if e == nil || e.key != string(key) {
		return nil, 0, nil
	}
	left := e.expire.Sub(now)
	if left <= 0 {
		return nil, 0, nil
	}
	e.ref = true
	e.hits++
	return e, left, c.startPrefetch(sh, e, left)
}

// answerHit appends the answer of a fresh entry to dst, after sh.mu is
// released, and starts the prefetch pf if there is one.
func (c *Cache) answerHit(r *resolver.Request, dst []byte, sh *shard, h uint64, e *entry, left time.Duration, pf *flight) []byte {
	sh.hits.Add(1)
	r.Source = resolver.SourceCache
	dst = appendEntry(dst, e, seconds(left), r.Query.ID)
	if pf != nil {
		c.prefetch(r, sh, h, pf)
	}
	return dst
}

// wait waits for f, or for ctx to end, and answers r with its outcome.
func (c *Cache) wait(ctx context.Context, r *resolver.Request, dst []byte, sh *shard, key []byte, h uint64, f *flight) ([]byte, error) {
	select {
	case <-f.done:
	case <-ctx.Done():
		return c.orStale(r, dst, sh, key, h, dst, ctx.Err())
	}
	if failed(f.resp, f.err) {
		out := dst
		if f.err == nil {
			out = appendAnswer(dst, f.resp, r.Query.ID)
		}
		return c.orStale(r, dst, sh, key, h, out, f.err)
	}
	return appendAnswer(dst, f.resp, r.Query.ID), nil
}

// failed reports whether next's outcome counts as a failure for
// serve-stale: an error, or a SERVFAIL or REFUSED answer.
func failed(resp []byte, err error) bool {
	if err != nil {
		return true
	}
	if len(resp) < 4 {
		return false
	}
	rcode := resp[3] & rcodeMask
	return rcode == rcodeServFail || rcode == rcodeRefused
}

// orStale answers r from an entry expired no longer than StaleTTL ago (or
// from a fresh one stored meanwhile) appended to dst when serve-stale is
// on; otherwise it returns out and err, next's own outcome.
func (c *Cache) orStale(r *resolver.Request, dst []byte, sh *shard, key []byte, h uint64, out []byte, err error) ([]byte, error) {
	if !c.cfg.ServeStale {
		return out, err
	}
	now := c.cfg.Now()
	sh.mu.Lock()
	e := sh.entries[h]
	if e == nil || e.key != string(key) {
		sh.mu.Unlock()
		return out, err
	}
	left := e.expire.Sub(now)
	sh.mu.Unlock()
	switch {
	case left > 0:
		r.Source = resolver.SourceCache
		return appendEntry(dst, e, seconds(left), r.Query.ID), nil
	case -left <= c.cfg.StaleTTL:
		sh.stale.Add(1)
		r.Source = resolver.SourceCache
		return appendEntry(dst, e, c.staleTTL, r.Query.ID), nil
	}
	return out, err
}

// resolve asks next for r within ctx, appending its answer to dst, stores
// the answer when it is cacheable (with the TTLs the cache gives it, also in
// the returned answer), and hands the outcome to f's waiters.
func (c *Cache) resolve(ctx context.Context, r *resolver.Request, dst []byte, sh *shard, h uint64, f *flight) ([]byte, error) {
	start := len(dst)
	out, err := c.next.ServeDNS(ctx, r, dst)
	var e *entry
	if err != nil {
		out = dst[:start]
	} else {
		e = c.newEntry(f.key, h, out[start:], r)
		if e == nil {
			sh.notCacheable.Add(1)
		} else {
			out = appendEntry(out[:start], e, e.ttl, r.Query.ID)
		}
	}
	now := c.cfg.Now()
	sh.mu.Lock()
	// Flush raises gen before it empties the shards: an answer stored
	// under the old gen is removed by it, one seeing the new gen is not
	// stored.
	switch {
	case e == nil:
	case c.gen.Load() != f.gen:
		sh.flushedInFlight.Add(1)
	default:
		e.expire = now.Add(time.Duration(e.ttl) * time.Second)
		sh.insert(e, now, c)
	}
	if f.registered && sh.flights[h] == f {
		delete(sh.flights, h)
	}
	waiters := f.waiters
	sh.mu.Unlock()
	switch {
	case err != nil:
		f.err = err
	case e != nil:
		f.resp = e.msg
	case waiters > 0:
		f.resp = bytes.Clone(out[start:])
	}
	close(f.done)
	return out, err
}

// newEntry returns the entry to store for resp, next's answer to r, or nil
// when resp is not cacheable: it does not answer r's question, its rcode is
// not NOERROR or NXDOMAIN, it is truncated, negative without an SOA record,
// or its TTL after the caps is 0.
func (c *Cache) newEntry(key string, h uint64, resp []byte, r *resolver.Request) *entry {
	q := &r.Query
	if dnswire.CheckReply(resp, q.ID, q.Name, q.Type, q.Class) != nil {
		return nil
	}
	ttl, negative, err := dnswire.MinTTL(resp)
	if err != nil {
		return nil
	}
	ttl = max(ttl, c.minTTL)
	if negative {
		ttl = min(ttl, c.negTTL)
	} else {
		ttl = min(ttl, c.maxTTL)
	}
	if ttl == 0 {
		return nil
	}
	offs, err := dnswire.AppendTTLOffsets(nil, resp)
	if err != nil {
		return nil
	}
	msg := bytes.Clone(resp)
	for _, o := range offs {
		binary.BigEndian.PutUint32(msg[o:], ttl)
	}
	return &entry{key: key, hash: h, msg: msg, offs: offs, ttl: ttl}
}

// appendEntry appends e's answer to dst with ID id and every TTL set to ttl.
func appendEntry(dst []byte, e *entry, ttl uint32, id uint16) []byte {
	start := len(dst)
	dst = appendAnswer(dst, e.msg, id)
	m := dst[start:]
	for _, o := range e.offs {
		binary.BigEndian.PutUint32(m[o:], ttl)
	}
	return dst
}

// appendAnswer appends msg to dst with ID id.
func appendAnswer(dst, msg []byte, id uint16) []byte {
	start := len(dst)
	dst = append(dst, msg...)
	dnswire.SetID(dst[start:], id)
	return dst
}

// insert stores e in the shard, replacing the entry with the same hash or,
// when the shard is full, the first entry the CLOCK hand finds dead (too
// old even for serve-stale) or not referenced since the hand last passed.
// The caller holds sh.mu.
func (sh *shard) insert(e *entry, now time.Time, c *Cache) {
	if old := sh.entries[e.hash]; old != nil {
		e.slot = old.slot
		sh.ring[e.slot] = e
		sh.entries[e.hash] = e
		return
	}
	if len(sh.ring) < sh.capacity {
		e.slot = len(sh.ring)
		sh.ring = append(sh.ring, e)
		sh.entries[e.hash] = e
		return
	}
	for {
		v := sh.ring[sh.hand]
		if v.ref && !c.dead(v, now) {
			v.ref = false
			sh.hand = (sh.hand + 1) % len(sh.ring)
			continue
		}
		delete(sh.entries, v.hash)
		sh.evictions.Add(1)
		e.slot = sh.hand
		sh.ring[sh.hand] = e
		sh.entries[e.hash] = e
		sh.hand = (sh.hand + 1) % len(sh.ring)
		return
	}
}

// dead reports whether e can no longer be served at now, not even stale.
func (c *Cache) dead(e *entry, now time.Time) bool {
	left := e.expire.Sub(now)
	if left > 0 {
		return false
	}
	return !c.cfg.ServeStale || -left > c.cfg.StaleTTL
}

// startPrefetch decides, under sh.mu and for a fresh hit on e with left
// remaining, whether to refresh e now; if so it registers and returns the
// flight the refresh will lead, else nil.
func (c *Cache) startPrefetch(sh *shard, e *entry, left time.Duration) *flight {
	if !c.cfg.Prefetch || e.prefetched || e.hits < PrefetchHits {
		return nil
	}
	orig := time.Duration(e.ttl) * time.Second
	if orig < PrefetchMinTTL || left*10 >= orig {
		return nil
	}
	if _, busy := sh.flights[e.hash]; busy {
		return nil
	}
	if c.inflight.Add(1) > MaxPrefetches {
		c.inflight.Add(-1)
		return nil
	}
	e.prefetched = true
	f := &flight{key: e.key, done: make(chan struct{}), registered: true, gen: c.gen.Load()}
	sh.flights[e.hash] = f
	return f
}

// prefetch refreshes the entry of f, whose key hashes to h, in the
// background with a copy of r.
func (c *Cache) prefetch(r *resolver.Request, sh *shard, h uint64, f *flight) {
	sh.prefetches.Add(1)
	req := &resolver.Request{Msg: bytes.Clone(r.Msg), Query: r.Query, InPort: r.InPort, Client: r.Client}
	req.Query.Name = bytes.Clone(r.Query.Name)
	go func() {
		defer c.inflight.Add(-1)
		ctx, cancel := context.WithTimeout(context.Background(), prefetchTimeout)
		defer cancel()
		if _, err := c.resolve(ctx, req, nil, sh, h, f); err != nil {
			c.cfg.Logger.Debug("cache prefetch failed", "error", err)
		}
	}()
}

// Flush removes every entry. Questions being asked keep going, but their
// answers are not stored (they may come from upstreams a reload just
// replaced, or be what the flush meant to remove), and questions asked
// after Flush do not wait for them.
func (c *Cache) Flush() {
	c.gen.Add(1)
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		clear(sh.entries)
		clear(sh.ring)
		sh.ring = sh.ring[:0]
		sh.hand = 0
		sh.mu.Unlock()
	}
}

// Len returns the number of entries held, fresh or expired.
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += len(sh.ring)
		sh.mu.Unlock()
	}
	return n
}

// Stats returns the counters: hits (fresh answers from the cache), misses
// (questions asked of next), merged (questions that waited for an identical
// one), evictions, entries (held now), stale_served, prefetches,
// not_cacheable (answers from next that were not stored), refused_norec
// (queries without RD, refused) and flushed_in_flight (cacheable answers to
// questions asked before a flush, not stored).
func (c *Cache) Stats() map[string]uint64 {
	s := map[string]uint64{
		"hits": 0, "misses": 0, "merged": 0, "evictions": 0,
		"stale_served": 0, "prefetches": 0, "not_cacheable": 0, "flushed_in_flight": 0,
	}
	for i := range c.shards {
		sh := &c.shards[i]
		s["hits"] += sh.hits.Load()
		s["misses"] += sh.misses.Load()
		s["merged"] += sh.merged.Load()
		s["evictions"] += sh.evictions.Load()
		s["stale_served"] += sh.stale.Load()
		s["prefetches"] += sh.prefetches.Load()
		s["not_cacheable"] += sh.notCacheable.Load()
		s["flushed_in_flight"] += sh.flushedInFlight.Load()
	}
	s["entries"] = uint64(c.Len())
	s["refused_norec"] = c.norec.Load()
	return s
}
