package forward

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// waitChecks waits until every check of f has ended: no server is suspect.
func waitChecks(t *testing.T, f *Forward) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		suspect := false
		for _, s := range f.servers {
			suspect = suspect || s.suspect.Load()
		}
		if !suspect {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a server is still suspect after 5s: %v", f.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSlowDomainKeepsServerUp: a server that times out on the names of one
// domain but answers the probe and every other name is checked and stays
// up: never marked down, still asked first for the other names.
func TestSlowDomainKeepsServerUp(t *testing.T) {
	first := startServer(t, dns.RcodeSuccess, "192.0.2.1", false)
	slow := "slow.test."
	first.slowZone.Store(&slow)
	second := startServer(t, dns.RcodeSuccess, "192.0.2.2", false)
	logs := &records{}
	f := newForward(t, Config{Servers: addrs(first, second), Timeout: 200 * time.Millisecond,
		ProbeInterval: time.Hour, Logger: slog.New(logs)})
	for i := range 5 {
		// The second server answers what the first does not.
		m, err := serveName(t, context.Background(), f, fmt.Sprintf("n%d.slow.test.", i))
		if err != nil {
			t.Fatal(err)
		}
		if got := answerA(t, m); got != "192.0.2.2" {
			t.Errorf("slow name answered by %s", got)
		}
		waitChecks(t, f)
		if got := mustAnswer(t, f); got != "192.0.2.1" {
			t.Errorf("after a slow name, another name answered by %s, want the first server", got)
		}
	}
	st := f.Stats()
	if st["timeouts"] != 5 || st["checks"] != 5 || st["checks_passed"] != 5 || st["marked_down"] != 0 || st["servers_down"] != 0 {
		t.Errorf("stats %v", st)
	}
	if h := f.Health()[0]; !h.Up || h.ConsecutiveFailures != 0 {
		t.Errorf("health %+v", h)
	}
	if got := logs.messages(slog.LevelWarn); len(got) != 0 {
		t.Errorf("warnings %v, want none", got)
	}
}

// TestSlowDomainFloodAlone: the only server of a set, flooded with names of
// its one slow domain, is never marked down: a timeout that follows no
// reply is checked and the probe answers.
func TestSlowDomainFloodAlone(t *testing.T) {
	only := startServer(t, dns.RcodeSuccess, "192.0.2.1", false)
	slow := "slow.test."
	only.slowZone.Store(&slow)
	f := newForward(t, Config{Servers: addrs(only), Timeout: 200 * time.Millisecond, ProbeInterval: time.Hour})
	var wg sync.WaitGroup
	for w := range 20 {
		wg.Go(func() {
			for i := range 5 {
				serveName(t, context.Background(), f, fmt.Sprintf("w%d-%d.slow.test.", w, i))
			}
		})
	}
	wg.Wait()
	waitChecks(t, f)
	st := f.Stats()
	if st["timeouts"] != 100 || st["marked_down"] != 0 || st["checks"] != st["checks_passed"] || st["checks"] == 0 {
		t.Errorf("stats %v", st)
	}
	if st["checks"]+st["failures_while_up"] > 100 {
		t.Errorf("stats %v: a timeout is checked, follows a reply or comes during a check", st)
	}
	if got := mustAnswer(t, f); got != "192.0.2.1" {
		t.Errorf("answer %s", got)
	}
}

// TestFailureAfterReplyChangesNothing: a query that times out after its
// server answered another one sent later is about the name: no check.
func TestFailureAfterReplyChangesNothing(t *testing.T) {
	first := startServer(t, dns.RcodeSuccess, "192.0.2.1", false)
	slow := "slow.test."
	first.slowZone.Store(&slow)
	f := newForward(t, Config{Servers: addrs(first), Timeout: 500 * time.Millisecond, ProbeInterval: time.Hour})
	done := make(chan error, 1)
	go func() {
		_, err := serveName(t, context.Background(), f, "a.slow.test.")
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if got := mustAnswer(t, f); got != "192.0.2.1" {
		t.Fatalf("answer %s", got)
	}
	if err := <-done; err == nil {
		t.Fatal("the slow name was answered")
	}
	st := f.Stats()
	if st["timeouts"] != 1 || st["failures_while_up"] != 1 || st["checks"] != 0 || st["probes"] != 0 {
		t.Errorf("stats %v", st)
	}
	if h := f.Health()[0]; !h.Up || h.ConsecutiveFailures != 1 {
		t.Errorf("health %+v", h)
	}
}

// TestDeadZoneServerLeavesDefaultUp: a conditional zone whose only server
// never answers gets that server marked down, and nothing else: the default
// server stays up and keeps answering, during a flood of the zone's names.
func TestDeadZoneServerLeavesDefaultUp(t *testing.T) {
	def := startServer(t, dns.RcodeSuccess, "192.0.2.1", false)
	dead := startServer(t, 0, "", true)
	f := newForward(t, Config{Servers: addrs(def), Zones: []Zone{{Name: "dead.test", Servers: addrs(dead)}},
		Timeout: 200 * time.Millisecond, ProbeInterval: 50 * time.Millisecond})
	var wg sync.WaitGroup
	for w := range 20 {
		wg.Go(func() {
			for i := range 5 {
				if _, err := serveName(t, context.Background(), f, fmt.Sprintf("w%d-%d.dead.test.", w, i)); err == nil {
					t.Error("a name of the dead zone was answered")
				}
			}
		})
	}
	for range 50 {
		if got := mustAnswer(t, f); got != "192.0.2.1" {
			t.Errorf("default name answered by %s", got)
		}
	}
	wg.Wait()
	waitUp(t, f, 1, false)
	h := f.Health()
	if !h[0].Up || h[0].ConsecutiveFailures != 0 || h[0].LastError != nil {
		t.Errorf("default server %+v", h[0])
	}
	if st := f.Stats(); st["marked_down"] != 1 || st["servers_down"] != 1 || st["timeouts"] != 100 {
		t.Errorf("stats %v", st)
	}
}
