package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// countingUpstream answers A queries with one record of the given TTL and
// NXDOMAIN (SOA minimum negTTL) for names starting with "nx", counting the
// queries per name; it can be switched silent.
type countingUpstream struct {
	*fakeUpstream
	silent atomic.Bool
	mu     sync.Mutex
	seen   map[string]int
}

func (e *env) startCounting(ttl, negTTL uint32) *countingUpstream {
	c := &countingUpstream{seen: map[string]int{}}
	c.fakeUpstream = e.startFake(func(conn net.PacketConn, from net.Addr, req *dns.Msg) {
		name := strings.ToLower(req.Question[0].Name)
		c.mu.Lock()
		c.seen[name]++
		c.mu.Unlock()
		if c.silent.Load() {
			return
		}
		m := new(dns.Msg)
		m.SetReply(req)
		if strings.HasPrefix(name, "nx") {
			m.Rcode = dns.RcodeNameError
			soa, _ := dns.NewRR(fmt.Sprintf("example.test. %d IN SOA ns.example.test. host.example.test. 1 3600 600 86400 %d", negTTL, negTTL))
			m.Ns = append(m.Ns, soa)
		} else if req.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR(fmt.Sprintf("%s %d IN A 192.0.2.77", req.Question[0].Name, ttl))
			m.Answer = append(m.Answer, rr)
		}
		if opt := req.IsEdns0(); opt != nil {
			m.SetEdns0(opt.UDPSize(), opt.Do())
		}
		b, _ := m.Pack()
		conn.WriteTo(b, from)
	})
	return c
}

// count returns how many queries for name reached the upstream.
func (c *countingUpstream) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[name]
}

// answerTTL returns the TTL of the first answer record in dig's output.
func answerTTL(t *testing.T, out string) int {
	t.Helper()
	_, section, ok := strings.Cut(out, ";; ANSWER SECTION:\n")
	if !ok {
		t.Fatalf("no answer section:\n%s", out)
	}
	f := strings.Fields(section)
	var ttl int
	if len(f) < 2 {
		t.Fatalf("short answer section:\n%s", out)
	}
	fmt.Sscanf(f[1], "%d", &ttl)
	return ttl
}

// TestCacheTTLCountdown: a repeated query is answered from the cache, with
// the TTL counted down; the upstream sees it once.
func TestCacheTTLCountdown(t *testing.T) {
	e := newEnv(t, 1)
	up := e.startCounting(300, 60)
	e.startDaemon(e.config([]string{up.String()}))
	vm := e.vms[0]
	first := answerTTL(t, e.dig(vm, "@169.254.169.254", "cached.example.test", "A"))
	time.Sleep(2100 * time.Millisecond)
	second := answerTTL(t, e.dig(vm, "@169.254.169.254", "CACHED.example.test", "A"))
	if first != 300 || second > 298 || second < 290 {
		t.Fatalf("TTLs %d then %d, want 300 then at most 298", first, second)
	}
	if n := up.count("cached.example.test."); n != 1 {
		t.Fatalf("upstream saw %d queries, want 1", n)
	}
}

// TestNegativeCache: NXDOMAIN is cached for the SOA's negative TTL, then
// asked again.
func TestNegativeCache(t *testing.T) {
	e := newEnv(t, 1)
	up := e.startCounting(300, 2)
	e.startDaemon(e.config([]string{up.String()}))
	vm := e.vms[0]
	for i := 0; i < 3; i++ {
		if s := digStatus(e.dig(vm, "@169.254.169.254", "nxname.example.test", "A")); s != "NXDOMAIN" {
			t.Fatalf("status %s", s)
		}
	}
	if n := up.count("nxname.example.test."); n != 1 {
		t.Fatalf("upstream saw %d queries within the negative TTL, want 1", n)
	}
	time.Sleep(2500 * time.Millisecond)
	e.dig(vm, "@169.254.169.254", "nxname.example.test", "A")
	if n := up.count("nxname.example.test."); n != 2 {
		t.Fatalf("upstream saw %d queries after the negative TTL, want 2", n)
	}
}

// TestDeadUpstreamCostsOneTimeout: after the first upstream times out once,
// queries go to the healthy one without waiting for the dead one; the dead
// one only gets health probes.
func TestDeadUpstreamCostsOneTimeout(t *testing.T) {
	e := newEnv(t, 1)
	dead := e.startCounting(300, 60)
	dead.silent.Store(true)
	e.startDaemon(e.config([]string{dead.String(), e.upstream()}, "cache_size = 0"))
	vm := e.vms[0]
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("q%d.example.test", i)
		out := e.dig(vm, "@169.254.169.254", name, "A", "+time=4")
		if s := digStatus(out); s != "NXDOMAIN" { // unbound's static zone has no such name
			t.Fatalf("%s: status %q", name, s)
		}
	}
	asked := 0
	for i := 0; i < 10; i++ {
		asked += dead.count(fmt.Sprintf("q%d.example.test.", i))
	}
	if asked != 1 {
		t.Fatalf("the dead upstream got %d client queries, want 1 (then only probes)", asked)
	}
}

// TestServeStale: with serve_stale, an expired answer is served when every
// upstream is down.
func TestServeStale(t *testing.T) {
	e := newEnv(t, 1)
	up := e.startCounting(1, 60)
	e.startDaemon(e.config([]string{up.String()}, "serve_stale = true"))
	vm := e.vms[0]
	e.dig(vm, "@169.254.169.254", "stale.example.test", "A")
	up.silent.Store(true)
	time.Sleep(1500 * time.Millisecond)
	out := e.dig(vm, "@169.254.169.254", "stale.example.test", "A", "+time=5")
	if s := digStatus(out); s != "NOERROR" || !strings.Contains(out, "192.0.2.77") {
		t.Fatalf("no stale answer:\n%s", out)
	}
	if ttl := answerTTL(t, out); ttl != 30 {
		t.Fatalf("stale TTL %d, want 30", ttl)
	}
}

// TestForwardZone: a conditional zone reaches its own server, the rest the
// default upstream.
func TestForwardZone(t *testing.T) {
	e := newEnv(t, 1)
	corp := e.startCounting(300, 60)
	e.startDaemon(e.config([]string{e.upstream()}, "forward_zones = corp.test="+corp.String()))
	vm := e.vms[0]
	if got := strings.TrimSpace(e.dig(vm, "@169.254.169.254", "intranet.Corp.Test", "A", "+short")); got != "192.0.2.77" {
		t.Fatalf("conditional zone: got %q", got)
	}
	if corp.count("intranet.corp.test.") != 1 {
		t.Fatalf("the zone's server was not asked")
	}
	if got := strings.TrimSpace(e.dig(vm, "@169.254.169.254", "www.example.test", "A", "+short")); got != "192.0.2.10" {
		t.Fatalf("default upstream: got %q", got)
	}
	if corp.count("www.example.test.") != 0 {
		t.Fatalf("the zone's server got a query outside its zone")
	}
}

// TestFloodingVM: one VM floods as fast as it can; the per-port limit and
// the meter cap it and a second VM keeps getting answers.
func TestFloodingVM(t *testing.T) {
	e := newEnv(t, 2)
	e.startDaemon(e.config([]string{e.upstream()}, "port_rate_limit = 500", "port_rate_burst = 500"))
	flooder, victim := e.vms[0], e.vms[1]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	flood := flooder.Command(ctx, "dnsperf", "-s", "169.254.169.254", "-d", e.queryFile(1000),
		"-c", "10", "-q", "10000", "-l", "8", "-t", "1")
	var floodOut strings.Builder
	flood.Stdout = &floodOut
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	answered := 0
	for i := 0; i < 20; i++ {
		out, err := victim.Dig(ctx, "@169.254.169.254", fmt.Sprintf("v%d.example.test", i), "A", "+time=2", "+tries=1")
		if err == nil && digStatus(out) == "NXDOMAIN" {
			answered++
		}
	}
	if err := flood.Wait(); err != nil {
		t.Fatalf("dnsperf: %v\n%s", err, floodOut.String())
	}
	if answered < 19 {
		t.Errorf("the second VM got %d of 20 answers during the flood", answered)
	}
	// The flood was capped: far fewer answers than queries sent.
	sent, completed := dnsperfCounts(floodOut.String())
	t.Logf("flood: %d sent, %d answered; second VM: %d of 20 answered", sent, completed, answered)
	if completed*2 > sent {
		t.Errorf("flood: %d of %d queries answered, want it capped\n%s", completed, sent, floodOut.String())
	}
}

// queryFile writes n distinct names of example.test into a dnsperf query
// file and returns its path.
func (e *env) queryFile(n int) string {
	e.t.Helper()
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "f%d.example.test A\n", i)
	}
	path := e.lab.Dir + "/queries.txt"
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// dnsperfCounts returns dnsperf's "Queries sent" and "Queries completed".
func dnsperfCounts(out string) (sent, completed int) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "Queries" && f[1] == "sent:":
			fmt.Sscanf(f[2], "%d", &sent)
		case len(f) >= 3 && f[0] == "Queries" && f[1] == "completed:":
			fmt.Sscanf(f[2], "%d", &completed)
		}
	}
	return sent, completed
}
