package cache

import (
	"context"
	"testing"

	"github.com/miekg/dns"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
)

// heldNext is a next handler that hands every question to the test, which
// answers it with an A record of its choice when it likes.
type heldNext struct{ calls chan heldCall }

// heldCall is one question held by heldNext: the test sends the address to
// answer with on addr.
type heldCall struct{ addr chan string }

func newHeldNext() *heldNext { return &heldNext{calls: make(chan heldCall, 10)} }

func (h *heldNext) ServeDNS(_ context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
	call := heldCall{addr: make(chan string)}
	h.calls <- call
	addr := <-call.addr
	q := new(dns.Msg)
	if err := q.Unpack(r.Msg); err != nil {
		return dst, err
	}
	m := new(dns.Msg)
	m.SetReply(q)
	m.Answer = []dns.RR{mustRR(q.Question[0].Name + " 300 IN A " + addr)}
	b, err := m.Pack()
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

// answerOf returns the A record of an answer to ServeDNS.
func answerOf(t *testing.T, out []byte, err error) string {
	t.Helper()
	if err != nil {
		t.Fatalf("ServeDNS: %v", err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil || len(m.Answer) != 1 {
		t.Fatalf("answer %v (%v)", m, err)
	}
	return m.Answer[0].(*dns.A).A.String()
}

// result is what one ServeDNS in a goroutine returned.
type result struct {
	out []byte
	err error
}

// serveAsync runs ServeDNS for name in a goroutine.
func serveAsync(t *testing.T, c *Cache, name string, id uint16) <-chan result {
	done := make(chan result, 1)
	r := request(t, name, dns.TypeA, id)
	go func() {
		out, err := c.ServeDNS(context.Background(), r, nil)
		done <- result{out, err}
	}()
	return done
}

// TestFlushDuringQuestion: the answer to a question asked before a flush
// (or a reload, which flushes) reaches its asker but is not stored.
func TestFlushDuringQuestion(t *testing.T) {
	next := newHeldNext()
	c, _ := newCache(Config{}, next)
	asked := serveAsync(t, c, "www.example.com.", 1)
	call := <-next.calls
	c.Flush()
	call.addr <- "192.0.2.1"
	res := <-asked
	if got := answerOf(t, res.out, res.err); got != "192.0.2.1" {
		t.Errorf("answer %s", got)
	}
	if n := c.Len(); n != 0 {
		t.Errorf("%d entries: the answer from before the flush was stored", n)
	}
	if st := c.Stats(); st["flushed_in_flight"] != 1 || st["not_cacheable"] != 0 {
		t.Errorf("stats %v", st)
	}
	// Asked again, the question goes to next, and this answer is stored.
	again := serveAsync(t, c, "www.example.com.", 2)
	(<-next.calls).addr <- "192.0.2.2"
	res = <-again
	if got := answerOf(t, res.out, res.err); got != "192.0.2.2" {
		t.Errorf("answer %s", got)
	}
	if n := c.Len(); n != 1 {
		t.Errorf("%d entries, want the answer from after the flush", n)
	}
}

// TestFlushSplitsFlights: a question asked after a flush does not wait for
// the same question asked before it, and the older answer, arriving last,
// neither overwrites the newer entry nor ends the newer flight.
func TestFlushSplitsFlights(t *testing.T) {
	next := newHeldNext()
	c, _ := newCache(Config{}, next)
	before := serveAsync(t, c, "www.example.com.", 1)
	oldCall := <-next.calls
	c.Flush()
	after := serveAsync(t, c, "www.example.com.", 2)
	newCall := <-next.calls // asked again: not merged with the old flight
	// A third asker joins the new flight.
	joined := serveAsync(t, c, "www.example.com.", 3)
	waitFor(t, "the third question to join", func() bool { return c.Stats()["merged"] == 1 })
	newCall.addr <- "192.0.2.2"
	for _, ch := range []<-chan result{after, joined} {
		res := <-ch
		if got := answerOf(t, res.out, res.err); got != "192.0.2.2" {
			t.Errorf("answer after the flush: %s", got)
		}
	}
	oldCall.addr <- "192.0.2.1"
	res := <-before
	if got := answerOf(t, res.out, res.err); got != "192.0.2.1" {
		t.Errorf("answer before the flush: %s", got)
	}
	out, err := c.ServeDNS(context.Background(), request(t, "www.example.com.", dns.TypeA, 4), nil)
	if got := answerOf(t, out, err); got != "192.0.2.2" {
		t.Errorf("cached answer %s, want the one asked after the flush", got)
	}
	select {
	case <-next.calls:
		t.Error("the cached question was asked of next")
	default:
	}
	if st := c.Stats(); st["flushed_in_flight"] != 1 || st["misses"] != 2 || st["hits"] != 1 {
		t.Errorf("stats %v", st)
	}
}
