package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
)

// clock is a settable time source for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var errUpstream = errors.New("upstream down")

// fake is the next handler: it answers with whatever answer builds for the
// query, after gate is closed when gate is set.
type fake struct {
	calls  atomic.Int32
	gate   chan struct{}
	mu     sync.Mutex
	answer func(q *dns.Msg) (*dns.Msg, error)
}

func (f *fake) set(answer func(q *dns.Msg) (*dns.Msg, error)) {
	f.mu.Lock()
	f.answer = answer
	f.mu.Unlock()
}

func (f *fake) ServeDNS(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
	f.calls.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return dst, ctx.Err()
		}
	}
	q := new(dns.Msg)
	if err := q.Unpack(r.Msg); err != nil {
		return dst, err
	}
	f.mu.Lock()
	answer := f.answer
	f.mu.Unlock()
	m, err := answer(q)
	if err != nil {
		return dst, err
	}
	m.Id = q.Id
	b, err := m.Pack()
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

func mustRR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return rr
}

func soa(ttl, minimum int) dns.RR {
	return mustRR(fmt.Sprintf("example.com. %d IN SOA ns1.example.com. hostmaster.example.com. 1 7200 3600 1209600 %d", ttl, minimum))
}

// positive answers every query with an A (or for AAAA queries an AAAA)
// record (ttl) in the answer, an NS
// in authority and an A in additional, all with the same TTL, and an OPT
// record when the query had one.
func positive(ttl int) func(q *dns.Msg) (*dns.Msg, error) {
	return func(q *dns.Msg) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetReply(q)
		name := q.Question[0].Name
		rdata := "A 192.0.2.1"
		if q.Question[0].Qtype == dns.TypeAAAA {
			rdata = "AAAA 2001:db8::1"
		}
		m.Answer = []dns.RR{mustRR(fmt.Sprintf("%s %d IN %s", name, ttl, rdata))}
		m.Ns = []dns.RR{mustRR(fmt.Sprintf("example.com. %d IN NS ns1.example.com.", ttl))}
		m.Extra = []dns.RR{mustRR(fmt.Sprintf("ns1.example.com. %d IN A 192.0.2.53", ttl))}
		if opt := q.IsEdns0(); opt != nil {
			m.SetEdns0(1232, opt.Do())
		}
		return m, nil
	}
}

// withRcode answers with rcode and the given authority records.
func withRcode(rcode int, ns ...dns.RR) func(q *dns.Msg) (*dns.Msg, error) {
	return func(q *dns.Msg) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetRcode(q, rcode)
		m.Ns = ns
		return m, nil
	}
}

func failing(*dns.Msg) (*dns.Msg, error) { return nil, errUpstream }

type reqOpt func(m *dns.Msg)

func withDO(m *dns.Msg) { m.SetEdns0(1232, true) }
func withCD(m *dns.Msg) { m.CheckingDisabled = true }

// request returns a parsed request for name/qtype with ID id.
func request(t testing.TB, name string, qtype uint16, id uint16, opts ...reqOpt) *resolver.Request {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = id
	for _, o := range opts {
		o(m)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	r := &resolver.Request{Msg: b}
	if err := dnswire.ParseQuery(b, &r.Query); err != nil {
		t.Fatal(err)
	}
	return r
}

func newCache(cfg Config, next resolver.Handler) (*Cache, *clock) {
	clk := newClock()
	cfg.Now = clk.Now
	return New(cfg, next), clk
}

// ask sends r through c and unpacks the answer, checking its ID.
func ask(t testing.TB, c *Cache, r *resolver.Request) *dns.Msg {
	t.Helper()
	out, err := c.ServeDNS(context.Background(), r, nil)
	if err != nil {
		t.Fatalf("ServeDNS: %v", err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	if m.Id != r.Query.ID {
		t.Fatalf("answer ID %#x, want %#x", m.Id, r.Query.ID)
	}
	return m
}

// ttls returns the TTL of every record of m except OPT.
func ttls(m *dns.Msg) []uint32 {
	var out []uint32
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype != dns.TypeOPT {
				out = append(out, rr.Header().Ttl)
			}
		}
	}
	return out
}

// wantTTLs fails unless every TTL of m (except OPT) is want.
func wantTTLs(t testing.TB, m *dns.Msg, want uint32) {
	t.Helper()
	got := ttls(m)
	if len(got) == 0 {
		t.Fatal("answer has no records")
	}
	for _, ttl := range got {
		if ttl != want {
			t.Fatalf("TTLs %v, want all %d", got, want)
		}
	}
}

func wantCalls(t testing.TB, f *fake, want int32) {
	t.Helper()
	if got := f.calls.Load(); got != want {
		t.Fatalf("next called %d times, want %d", got, want)
	}
}

func TestHitAndCountdown(t *testing.T) {
	f := &fake{answer: positive(300)}
	c, clk := newCache(Config{}, f)
	m := ask(t, c, request(t, "www.example.com.", dns.TypeA, 1, withDO))
	wantTTLs(t, m, 300)
	wantCalls(t, f, 1)

	clk.Advance(100*time.Second + 500*time.Millisecond)
	m = ask(t, c, request(t, "www.example.com.", dns.TypeA, 2, withDO))
	wantCalls(t, f, 1)
	wantTTLs(t, m, 199) // 199.5 s left: never more than what is left
	if opt := m.IsEdns0(); opt == nil || !opt.Do() || opt.UDPSize() != 1232 {
		t.Errorf("OPT record changed: %v", opt)
	}
	if len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
		t.Errorf("answer changed: %v", m.Answer)
	}

	clk.Advance(199 * time.Second)
	wantTTLs(t, ask(t, c, request(t, "www.example.com.", dns.TypeA, 3, withDO)), 0)
	wantCalls(t, f, 1)
	clk.Advance(time.Second)
	wantTTLs(t, ask(t, c, request(t, "www.example.com.", dns.TypeA, 4, withDO)), 300)
	wantCalls(t, f, 2)

	s := c.Stats()
	if s["hits"] != 2 || s["misses"] != 2 || s["entries"] != 1 {
		t.Errorf("Stats = %v", s)
	}
}

func TestStoredCopyUntouched(t *testing.T) {
	f := &fake{answer: positive(300)}
	c, _ := newCache(Config{}, f)
	r := request(t, "www.example.com.", dns.TypeA, 7)
	first, err := c.ServeDNS(context.Background(), r, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(first)
	for i := range first {
		first[i] = 0xff
	}
	out, err := c.ServeDNS(context.Background(), r, make([]byte, 3, 600))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out[3:], want) {
		t.Error("the answer from the cache changed after the caller modified a returned answer")
	}
}

func TestTTLCaps(t *testing.T) {
	f := &fake{answer: positive(5)}
	c, clk := newCache(Config{MinTTL: 60 * time.Second, MaxTTL: 100 * time.Second}, f)
	wantTTLs(t, ask(t, c, request(t, "short.example.com.", dns.TypeA, 1)), 60)
	clk.Advance(10 * time.Second)
	wantTTLs(t, ask(t, c, request(t, "short.example.com.", dns.TypeA, 2)), 50)
	wantCalls(t, f, 1)

	f.set(positive(100000))
	wantTTLs(t, ask(t, c, request(t, "long.example.com.", dns.TypeA, 3)), 100)
	clk.Advance(99 * time.Second)
	wantTTLs(t, ask(t, c, request(t, "long.example.com.", dns.TypeA, 4)), 1)
	wantCalls(t, f, 2)
	clk.Advance(time.Second)
	ask(t, c, request(t, "long.example.com.", dns.TypeA, 5))
	wantCalls(t, f, 3)
}

func TestZeroTTLNotStored(t *testing.T) {
	f := &fake{answer: positive(0)}
	c, _ := newCache(Config{}, f)
	for id := range uint16(3) {
		wantTTLs(t, ask(t, c, request(t, "zero.example.com.", dns.TypeA, id)), 0)
	}
	wantCalls(t, f, 3)
	if s := c.Stats(); s["not_cacheable"] != 3 || s["entries"] != 0 {
		t.Errorf("Stats = %v", s)
	}
}

func TestNegative(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		answer func(q *dns.Msg) (*dns.Msg, error)
		ttl    uint32
	}{
		{"nxdomain minimum", Config{}, withRcode(dns.RcodeNameError, soa(3600, 300)), 300},
		{"nxdomain soa ttl", Config{}, withRcode(dns.RcodeNameError, soa(120, 300)), 120},
		{"nodata", Config{}, withRcode(dns.RcodeSuccess, soa(3600, 300)), 300},
		{"negative cap", Config{NegativeTTL: time.Minute}, withRcode(dns.RcodeNameError, soa(3600, 300)), 60},
		{"negative cap wins over min", Config{MinTTL: time.Hour, NegativeTTL: time.Minute},
			withRcode(dns.RcodeSuccess, soa(3600, 30)), 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fake{answer: tt.answer}
			c, clk := newCache(tt.cfg, f)
			m := ask(t, c, request(t, "nx.example.com.", dns.TypeA, 1))
			wantTTLs(t, m, tt.ttl)
			clk.Advance(time.Duration(tt.ttl-1) * time.Second)
			m = ask(t, c, request(t, "nx.example.com.", dns.TypeA, 2))
			wantTTLs(t, m, 1)
			wantCalls(t, f, 1)
			clk.Advance(time.Second)
			ask(t, c, request(t, "nx.example.com.", dns.TypeA, 3))
			wantCalls(t, f, 2)
		})
	}
}

func TestNotCacheable(t *testing.T) {
	otherQuestion := func(q *dns.Msg) (*dns.Msg, error) {
		m, _ := positive(300)(q)
		m.Question[0].Name = "other.example.com."
		return m, nil
	}
	truncated := func(q *dns.Msg) (*dns.Msg, error) {
		m, _ := positive(300)(q)
		m.Truncated = true
		return m, nil
	}
	tests := []struct {
		name   string
		answer func(q *dns.Msg) (*dns.Msg, error)
	}{
		{"servfail", withRcode(dns.RcodeServerFailure)},
		{"refused", withRcode(dns.RcodeRefused)},
		{"formerr", withRcode(dns.RcodeFormatError)},
		{"notimp", withRcode(dns.RcodeNotImplemented)},
		{"nxdomain without soa", withRcode(dns.RcodeNameError)},
		{"nodata without soa", withRcode(dns.RcodeSuccess)},
		{"truncated", truncated},
		{"other question", otherQuestion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fake{answer: tt.answer}
			c, _ := newCache(Config{ServeStale: true}, f)
			r := request(t, "www.example.com.", dns.TypeA, 9)
			want, err := f.ServeDNS(context.Background(), r, nil)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				got, err := c.ServeDNS(context.Background(), r, nil)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Error("an answer that is not cached was not passed through unchanged")
				}
			}
			wantCalls(t, f, 3)
			if s := c.Stats(); s["not_cacheable"] != 2 || s["entries"] != 0 || s["hits"] != 0 {
				t.Errorf("Stats = %v", s)
			}
		})
	}
}

func TestKey(t *testing.T) {
	f := &fake{answer: positive(300)}
	c, _ := newCache(Config{Set: func(r *resolver.Request) uint32 { return r.InPort }}, f)
	ask(t, c, request(t, "www.example.com.", dns.TypeA, 1))
	ask(t, c, request(t, "WWW.Example.COM.", dns.TypeA, 2))
	wantCalls(t, f, 1)

	misses := []*resolver.Request{
		request(t, "www.example.com.", dns.TypeAAAA, 3),
		request(t, "www.example.com.", dns.TypeA, 4, withDO),
		request(t, "www.example.com.", dns.TypeA, 5, withCD),
		request(t, "www.example.org.", dns.TypeA, 6),
	}
	chaos := request(t, "www.example.com.", dns.TypeA, 7)
	chaos.Msg[len(chaos.Msg)-1] = dns.ClassCHAOS
	chaos.Query.Class = dns.ClassCHAOS
	otherSet := request(t, "www.example.com.", dns.TypeA, 8)
	otherSet.InPort = 1
	misses = append(misses, chaos, otherSet)
	for i, r := range misses {
		if _, err := c.ServeDNS(context.Background(), r, nil); err != nil {
			t.Fatal(err)
		}
		wantCalls(t, f, int32(i+2))
	}
	for i, r := range misses {
		if _, err := c.ServeDNS(context.Background(), r, nil); err != nil {
			t.Fatal(err)
		}
		if s := c.Stats(); s["hits"] != uint64(i+2) {
			t.Errorf("request %d missed again: %v", i, s)
		}
	}
	wantCalls(t, f, int32(len(misses)+1))
}

func TestEviction(t *testing.T) {
	f := &fake{answer: positive(300)}
	c, _ := newCache(Config{Size: 8}, f)
	name := func(i int) string { return fmt.Sprintf("n%d.example.com.", i) }
	for i := range 8 {
		ask(t, c, request(t, name(i), dns.TypeA, 1))
	}
	for i := range 4 {
		ask(t, c, request(t, name(i), dns.TypeA, 2)) // referenced: second chance
	}
	wantCalls(t, f, 8)
	ask(t, c, request(t, name(8), dns.TypeA, 3))
	if c.Len() != 8 {
		t.Fatalf("Len = %d, want 8", c.Len())
	}
	for _, i := range []int{0, 1, 2, 3, 5, 6, 7, 8} {
		ask(t, c, request(t, name(i), dns.TypeA, 4))
	}
	wantCalls(t, f, 9)
	ask(t, c, request(t, name(4), dns.TypeA, 5)) // the first unreferenced entry went
	wantCalls(t, f, 10)

	for i := range 100 {
		ask(t, c, request(t, name(100+i), dns.TypeA, 6))
		if c.Len() > 8 {
			t.Fatalf("Len = %d beyond Size 8", c.Len())
		}
	}
	if s := c.Stats(); s["evictions"] != 102 || s["entries"] != 8 {
		t.Errorf("Stats = %v", s)
	}
}

func TestEvictionSharded(t *testing.T) {
	f := &fake{answer: positive(300)}
	c, _ := newCache(Config{Size: 1000}, f)
	if len(c.shards) < 2 {
		t.Fatalf("%d shards for Size 1000", len(c.shards))
	}
	for i := range 3000 {
		ask(t, c, request(t, fmt.Sprintf("n%d.example.com.", i), dns.TypeA, 1))
	}
	if c.Len() != 1000 {
		t.Errorf("Len = %d, want 1000", c.Len())
	}
	if s := c.Stats(); s["evictions"] != 2000 {
		t.Errorf("evictions = %d, want 2000", s["evictions"])
	}
}

func TestExpiredEvictedFirst(t *testing.T) {
	f := &fake{answer: positive(300)}
	c, clk := newCache(Config{Size: 4}, f)
	for i := range 4 {
		ask(t, c, request(t, fmt.Sprintf("n%d.example.com.", i), dns.TypeA, 1))
		ask(t, c, request(t, fmt.Sprintf("n%d.example.com.", i), dns.TypeA, 1))
	}
	f.set(positive(30))
	ask(t, c, request(t, "short.example.com.", dns.TypeA, 1)) // evicts n0 (all referenced)
	ask(t, c, request(t, "short.example.com.", dns.TypeA, 1))
	for i := 1; i < 4; i++ {
		ask(t, c, request(t, fmt.Sprintf("n%d.example.com.", i), dns.TypeA, 1))
	}
	clk.Advance(time.Minute)
	// Every entry is referenced; the expired one gets no second chance.
	ask(t, c, request(t, "new.example.com.", dns.TypeA, 1))
	wantCalls(t, f, 6)
	for i := 1; i < 4; i++ {
		ask(t, c, request(t, fmt.Sprintf("n%d.example.com.", i), dns.TypeA, 1))
	}
	wantCalls(t, f, 6)
}

func TestFlush(t *testing.T) {
	f := &fake{answer: positive(300)}
	c, _ := newCache(Config{}, f)
	ask(t, c, request(t, "www.example.com.", dns.TypeA, 1))
	c.Flush()
	if c.Len() != 0 {
		t.Fatalf("Len = %d after Flush", c.Len())
	}
	ask(t, c, request(t, "www.example.com.", dns.TypeA, 1))
	wantCalls(t, f, 2)
}

// waitFor polls cond until it holds or a few seconds have passed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSingleFlight(t *testing.T) {
	for _, tt := range []struct {
		name   string
		answer func(q *dns.Msg) (*dns.Msg, error)
	}{
		{"cacheable", positive(300)},
		{"not cacheable", withRcode(dns.RcodeServerFailure)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &fake{answer: tt.answer, gate: make(chan struct{})}
			c, _ := newCache(Config{}, f)
			const n = 50
			answers := make([][]byte, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					r := request(t, "www.example.com.", dns.TypeA, uint16(1000+i))
					answers[i], errs[i] = c.ServeDNS(context.Background(), r, nil)
				})
			}
			waitFor(t, "all queries to join", func() bool {
				s := c.Stats()
				return s["misses"] == 1 && s["merged"] == n-1
			})
			close(f.gate)
			wg.Wait()
			wantCalls(t, f, 1)
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("query %d: %v", i, errs[i])
				}
				if id := dnswire.ID(answers[i]); id != uint16(1000+i) {
					t.Errorf("query %d got ID %d", i, id)
				}
				if !bytes.Equal(answers[i][2:], answers[0][2:]) {
					t.Errorf("query %d got another answer", i)
				}
			}
		})
	}
}

func TestSingleFlightError(t *testing.T) {
	f := &fake{answer: failing, gate: make(chan struct{})}
	c, _ := newCache(Config{}, f)
	errc := make(chan error, 2)
	for id := range uint16(2) {
		go func() {
			_, err := c.ServeDNS(context.Background(), request(t, "www.example.com.", dns.TypeA, id), nil)
			errc <- err
		}()
	}
	waitFor(t, "both queries to join", func() bool { return c.Stats()["merged"] == 1 })
	close(f.gate)
	for range 2 {
		if err := <-errc; !errors.Is(err, errUpstream) {
			t.Errorf("err = %v, want the upstream's error", err)
		}
	}
}

func TestWaiterContext(t *testing.T) {
	f := &fake{answer: positive(300), gate: make(chan struct{})}
	c, _ := newCache(Config{}, f)
	leader := make(chan error, 1)
	go func() {
		_, err := c.ServeDNS(context.Background(), request(t, "www.example.com.", dns.TypeA, 1), nil)
		leader <- err
	}()
	waitFor(t, "the leader to ask", func() bool { return f.calls.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := c.ServeDNS(ctx, request(t, "www.example.com.", dns.TypeA, 2), nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiter: err = %v, want DeadlineExceeded", err)
	}
	close(f.gate)
	if err := <-leader; err != nil {
		t.Errorf("leader: %v", err)
	}
	wantCalls(t, f, 1)
}

func TestServeStale(t *testing.T) {
	for _, tt := range []struct {
		name    string
		failure func(q *dns.Msg) (*dns.Msg, error)
		rcode   byte // of the failure passed through past StaleTTL; 0 for an error
	}{
		{"error", failing, 0},
		{"servfail", withRcode(dns.RcodeServerFailure), dns.RcodeServerFailure},
		{"refused", withRcode(dns.RcodeRefused), dns.RcodeRefused},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &fake{answer: positive(60)}
			c, clk := newCache(Config{ServeStale: true, StaleTTL: time.Hour}, f)
			ask(t, c, request(t, "www.example.com.", dns.TypeA, 1))
			f.set(tt.failure)
			clk.Advance(61 * time.Second)
			m := ask(t, c, request(t, "www.example.com.", dns.TypeA, 2))
			wantTTLs(t, m, 30)
			if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
				t.Errorf("stale answer: %v", m)
			}
			if s := c.Stats(); s["stale_served"] != 1 || s["misses"] != 2 {
				t.Errorf("Stats = %v", s)
			}
			clk.Advance(time.Hour)
			out, err := c.ServeDNS(context.Background(), request(t, "www.example.com.", dns.TypeA, 3), nil)
			switch {
			case tt.rcode == 0 && !errors.Is(err, errUpstream):
				t.Errorf("past StaleTTL: err = %v, want the upstream's error", err)
			case tt.rcode != 0 && (err != nil || len(out) < 4 || out[3]&0xf != tt.rcode):
				t.Errorf("past StaleTTL: %x, %v; want rcode %d passed through", out, err, tt.rcode)
			}
			if s := c.Stats(); s["stale_served"] != 1 {
				t.Errorf("Stats = %v", s)
			}
		})
	}
}

func TestServeStaleWaiters(t *testing.T) {
	f := &fake{answer: positive(60)}
	c, clk := newCache(Config{ServeStale: true, StaleAnswerTTL: 7 * time.Second}, f)
	ask(t, c, request(t, "www.example.com.", dns.TypeA, 1))
	f.gate = make(chan struct{})
	f.set(failing)
	clk.Advance(2 * time.Minute)
	var wg sync.WaitGroup
	for id := range uint16(5) {
		wg.Go(func() {
			m := ask(t, c, request(t, "www.example.com.", dns.TypeA, 100+id))
			wantTTLs(t, m, 7)
		})
	}
	waitFor(t, "all queries to join", func() bool { return c.Stats()["merged"] == 4 })
	close(f.gate)
	wg.Wait()
	if s := c.Stats(); s["stale_served"] != 5 {
		t.Errorf("Stats = %v", s)
	}
}

func TestServeStaleOff(t *testing.T) {
	f := &fake{answer: positive(60)}
	c, clk := newCache(Config{}, f)
	ask(t, c, request(t, "www.example.com.", dns.TypeA, 1))
	f.set(failing)
	clk.Advance(61 * time.Second)
	if _, err := c.ServeDNS(context.Background(), request(t, "www.example.com.", dns.TypeA, 2), nil); !errors.Is(err, errUpstream) {
		t.Errorf("err = %v, want the upstream's error", err)
	}
}

func TestPrefetch(t *testing.T) {
	f := &fake{answer: positive(100)}
	c, clk := newCache(Config{Prefetch: true}, f)
	q := func(id uint16) *dns.Msg { return ask(t, c, request(t, "www.example.com.", dns.TypeA, id)) }
	q(1)
	q(2)
	q(3)
	clk.Advance(91 * time.Second)
	wantTTLs(t, q(4), 9) // third hit, under 10 % left: prefetch
	waitFor(t, "the prefetch", func() bool { return f.calls.Load() == 2 })
	waitFor(t, "the refreshed entry", func() bool { return ttls(q(5))[0] == 100 })
	for id := range uint16(10) {
		q(10 + id)
	}
	wantCalls(t, f, 2)
	if s := c.Stats(); s["prefetches"] != 1 || s["misses"] != 1 {
		t.Errorf("Stats = %v", s)
	}
}

func TestPrefetchOnce(t *testing.T) {
	f := &fake{answer: positive(100)}
	c, clk := newCache(Config{Prefetch: true}, f)
	q := func(id uint16) { ask(t, c, request(t, "www.example.com.", dns.TypeA, id)) }
	q(1)
	q(2)
	clk.Advance(95 * time.Second)
	q(3) // second hit only: no prefetch yet
	wantCalls(t, f, 1)
	f.gate = make(chan struct{})
	f.set(failing)
	q(4) // triggers
	waitFor(t, "the prefetch", func() bool { return f.calls.Load() == 2 })
	q(5) // prefetch in flight: served from the cache, no second one
	close(f.gate)
	waitFor(t, "the prefetch to end", func() bool { return c.inflight.Load() == 0 })
	q(6) // failed prefetch: not retried for this entry
	wantCalls(t, f, 2)
	if s := c.Stats(); s["prefetches"] != 1 {
		t.Errorf("Stats = %v", s)
	}
}

func TestPrefetchShortTTL(t *testing.T) {
	f := &fake{answer: positive(9)}
	c, clk := newCache(Config{Prefetch: true}, f)
	for id := range uint16(5) {
		ask(t, c, request(t, "www.example.com.", dns.TypeA, id))
	}
	clk.Advance(8500 * time.Millisecond)
	ask(t, c, request(t, "www.example.com.", dns.TypeA, 9))
	time.Sleep(10 * time.Millisecond)
	wantCalls(t, f, 1)
}

func TestConcurrent(t *testing.T) {
	f := &fake{answer: positive(2)}
	c, clk := newCache(Config{Size: 64, ServeStale: true, Prefetch: true}, f)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				id := uint16(g*1000 + i)
				r := request(t, fmt.Sprintf("n%d.example.com.", i%100), dns.TypeA, id)
				out, err := c.ServeDNS(context.Background(), r, make([]byte, 0, 512))
				if err != nil {
					t.Error(err)
					return
				}
				if dnswire.ID(out) != id {
					t.Errorf("ID %d, want %d", dnswire.ID(out), id)
					return
				}
				if i%50 == 0 {
					clk.Advance(time.Second)
				}
				if g == 0 && i%100 == 0 {
					c.Flush()
				}
			}
		})
	}
	wg.Wait()
	waitFor(t, "prefetches to end", func() bool { return c.inflight.Load() == 0 })
	if c.Len() > 64 {
		t.Errorf("Len = %d beyond Size", c.Len())
	}
}

func TestHitZeroAlloc(t *testing.T) {
	f := &fake{answer: positive(300)}
	c, _ := newCache(Config{Set: func(*resolver.Request) uint32 { return 1 }}, f)
	r := request(t, "www.Example.com.", dns.TypeA, 1, withDO)
	ask(t, c, r)
	dst := make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := c.ServeDNS(context.Background(), r, dst); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per hit, want 0", allocs)
	}
}

// benchCache returns a cache holding an answer for each of names
// questions. With a fixed clock, the cost of time.Now (slow in some
// virtual machines) is left out.
func benchCache(b *testing.B, names int, fixedClock bool) (*Cache, []*resolver.Request) {
	f := &fake{answer: positive(3600)}
	cfg := Config{}
	if fixedClock {
		now := time.Now()
		cfg.Now = func() time.Time { return now }
	}
	c := New(cfg, f)
	reqs := make([]*resolver.Request, names)
	for i := range reqs {
		reqs[i] = request(b, fmt.Sprintf("host-%d.example.com.", i), dns.TypeA, uint16(i), withDO)
		if _, err := c.ServeDNS(context.Background(), reqs[i], nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	return c, reqs
}

func BenchmarkHit(b *testing.B) {
	for _, fixed := range []bool{false, true} {
		b.Run(fmt.Sprintf("fixedclock=%v", fixed), func(b *testing.B) {
			c, reqs := benchCache(b, 1, fixed)
			dst := make([]byte, 0, 512)
			ctx := context.Background()
			for b.Loop() {
				if _, err := c.ServeDNS(ctx, reqs[0], dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkHitParallel(b *testing.B) {
	for _, fixed := range []bool{false, true} {
		for _, names := range []int{1, 1000} {
			b.Run(fmt.Sprintf("fixedclock=%v/names=%d", fixed, names), func(b *testing.B) {
				c, reqs := benchCache(b, names, fixed)
				var next atomic.Int64
				b.RunParallel(func(pb *testing.PB) {
					dst := make([]byte, 0, 512)
					ctx := context.Background()
					i := int(next.Add(7919))
					for pb.Next() {
						i++
						if _, err := c.ServeDNS(ctx, reqs[i%len(reqs)], dst); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

func TestServeImmediate(t *testing.T) {
	f := &fake{answer: positive(300)}
	c, clk := newCache(Config{}, f)
	r := request(t, "www.example.com.", dns.TypeA, 1, withDO)
	if _, ok := c.ServeImmediate(r, nil); ok {
		t.Fatal("immediate answer from an empty cache")
	}
	wantCalls(t, f, 0)
	ask(t, c, r)
	clk.Advance(10 * time.Second)
	out, ok := c.ServeImmediate(request(t, "WWW.example.com.", dns.TypeA, 7, withDO), nil)
	if !ok {
		t.Fatal("no immediate answer for a fresh entry")
	}
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil || m.Id != 7 {
		t.Fatalf("answer %v, %v", m, err)
	}
	wantTTLs(t, m, 290)
	clk.Advance(300 * time.Second)
	if _, ok := c.ServeImmediate(r, nil); ok {
		t.Error("immediate answer from an expired entry")
	}
	wantCalls(t, f, 1)
	if s := c.Stats(); s["hits"] != 1 || s["misses"] != 1 {
		t.Errorf("Stats = %v", s)
	}
}
