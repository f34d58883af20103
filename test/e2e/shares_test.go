package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
)

// slowDomainUpstream answers every query with one A record (192.0.2.77),
// except the names under slow, which it never answers: a resolver that
// times out on one domain only.
func (e *env) slowDomainUpstream(slow string) *fakeUpstream {
	return e.startFake(func(conn net.PacketConn, from net.Addr, req *dns.Msg) {
		q := req.Question[0]
		if dns.IsSubDomain(slow, dns.Fqdn(strings.ToLower(q.Name))) {
			return
		}
		m := new(dns.Msg)
		m.SetReply(req)
		if q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR(q.Name + " 300 IN A 192.0.2.77")
			m.Answer = append(m.Answer, rr)
		}
		b, _ := m.Pack()
		conn.WriteTo(b, from)
	})
}

// setNetwork puts vm's bridge port on Neutron network net, as the OVS
// agent does (Port other_config:net_uuid).
func (e *env) setNetwork(vm *lab.VM, net string) {
	e.t.Helper()
	name, err := e.lab.Vsctl("--bare", "--columns=name", "find", "Interface", "external_ids:iface-id="+vm.PortID)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.lab.Vsctl("set", "Port", strings.TrimSpace(name), "other_config:net_uuid="+net); err != nil {
		e.t.Fatal(err)
	}
}

// metricsSnapshot is the daemon's /metrics text.
type metricsSnapshot string

// metrics returns the daemon's metrics now.
func (e *env) metrics() metricsSnapshot {
	e.t.Helper()
	code, body := e.fetch("http://127.0.0.1:9553/metrics")
	if code != 200 {
		e.t.Fatalf("metrics: %d %s", code, body)
	}
	return metricsSnapshot(body)
}

// value returns the value of the series whose line starts with series
// (name and labels), or -1 when there is none.
func (m metricsSnapshot) value(series string) float64 {
	for _, line := range strings.Split(string(m), "\n") {
		rest, ok := strings.CutPrefix(line, series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			return -1
		}
		return v
	}
	return -1
}

// floodResult is what one flood and the second VM's queries during it
// gave.
type floodResult struct {
	sent, completed, refused, servfail int // dnsperf's counts
	answered                           int // of the second VM's 20 queries
	maxInflight                        float64
}

// rcodeCount returns the count dnsperf reports for rcode ("REFUSED").
func rcodeCount(out, rcode string) int {
	m := regexp.MustCompile(rcode + ` (\d+) `).FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// flood has flooder ask 900 distinct names of zone a second for 5 s
// (dnsperf -Q 900) while victim asks 20 names of example.test, one every
// 200 ms from the flood's second second, and samples the daemon's
// in-flight gauge meanwhile.
func (e *env) flood(flooder, victim *lab.VM, zone, tag string) floodResult {
	e.t.Helper()
	var b strings.Builder
	for i := range 6000 {
		fmt.Fprintf(&b, "%s%d.%s A\n", tag, i, zone)
	}
	path := e.lab.Dir + "/flood-" + tag + ".txt"
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := flooder.Command(ctx, "dnsperf", "-s", "169.254.169.254", "-d", path,
		"-Q", "900", "-l", "5", "-q", "6000", "-t", "8")
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	var r floodResult
	time.Sleep(time.Second)
	for i := range 20 {
		dig, err := victim.Dig(ctx, "@169.254.169.254", fmt.Sprintf("%s-v%d.example.test", tag, i), "A")
		if err == nil && digStatus(dig) == "NOERROR" && digAnswers(dig) == 1 {
			r.answered++
		}
		if i%5 == 0 {
			r.maxInflight = max(r.maxInflight, e.metrics().value("ovs_dns_forwarder_inflight"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := cmd.Wait(); err != nil {
		e.t.Fatalf("dnsperf: %v\n%s", err, out.String())
	}
	r.sent, r.completed = dnsperfCounts(out.String())
	r.refused, r.servfail = rcodeCount(out.String(), "REFUSED"), rcodeCount(out.String(), "SERVFAIL")
	return r
}

// TestFairShares is issue 8's "fair shares" on a real Open vSwitch: a VM
// asking 900 queries/s of names that never get an answer holds at most its
// share of the in-flight slots (max_inflight_per_port, default 150) and is
// REFUSED beyond it, counted; a VM of another network gets all its answers
// meanwhile. The names come from a forward_zones zone whose server never
// answers (a UDP socket on loopback that reads and never replies), then
// from the one domain the default upstream never answers: the dead zone's
// server is marked down, the default upstream never is. Everything runs
// with the defaults (max_inflight 1024, upstream timeout 5 s, per-port
// rate limit and meter 1024/s), where the flood alone would hold 4500
// slots: the last phase shows it, with max_inflight_per_port = 0.
func TestFairShares(t *testing.T) {
	e := newEnv(t, 2)
	flooder, victim := e.vms[0], e.vms[1]
	e.setNetwork(flooder, "net-flood")
	e.setNetwork(victim, "net-victim")
	dead := e.startFake(nil)
	def := e.slowDomainUpstream("slow.test.")
	cfg := func(extra ...string) string {
		return e.config([]string{def.String()}, append([]string{"upstream_dns_query_timeout = 5",
			"forward_zones = dead.test=" + dead.String()}, extra...)...)
	}
	p := e.startDaemon(cfg())
	refusals := func(m metricsSnapshot, reason string) float64 {
		return m.value(`ovs_dns_forwarder_refusals_total{reason="` + reason + `"}`)
	}

	for _, phase := range []struct{ name, zone, tag string }{
		{"dead zone server", "dead.test", "z"},
		{"default upstream slow on one domain", "slow.test", "s"},
	} {
		t.Run(phase.name, func(t *testing.T) {
			before := e.metrics()
			r := e.flood(flooder, victim, phase.zone, phase.tag)
			after := e.metrics()
			shareRefused := refusals(after, "port_inflight_limit") - refusals(before, "port_inflight_limit")
			drops := func(reason string) float64 {
				series := `ovs_dns_forwarder_drops_total{reason="` + reason + `"}`
				return after.value(series) - before.value(series)
			}
			t.Logf("flood: %d sent, %d completed (%d REFUSED, %d SERVFAIL); daemon: %.0f refused over the port's share, %.0f over max_inflight, %.0f dropped by the rate limit, %.0f by the meter, in flight at most %.0f; second VM: %d of 20 answered",
				r.sent, r.completed, r.refused, r.servfail, shareRefused,
				refusals(after, "inflight_limit")-refusals(before, "inflight_limit"), drops("rate_limited"), drops("meter"),
				r.maxInflight, r.answered)
			if r.answered != 20 {
				t.Errorf("the second VM got %d of 20 answers during the flood", r.answered)
			}
			if r.refused == 0 || shareRefused < float64(r.refused) {
				t.Errorf("flood: %d REFUSED seen by dnsperf, %.0f counted over the port's share", r.refused, shareRefused)
			}
			if n := refusals(after, "inflight_limit"); n != 0 {
				t.Errorf("%.0f queries refused over max_inflight: the flood reached the total", n)
			}
			if r.maxInflight > 151 {
				t.Errorf("%.0f queries in flight, more than the flooder's share and the second VM's query", r.maxInflight)
			}
			if up := after.value(`ovs_dns_forwarder_upstream_up{server="` + def.String() + `"}`); up != 1 {
				t.Errorf("default upstream up = %v, want 1", up)
			}
		})
	}
	m := e.metrics()
	if up := m.value(`ovs_dns_forwarder_upstream_up{server="` + dead.String() + `"}`); up != 0 {
		t.Errorf("dead zone server up = %v, want 0", up)
	}
	if down := m.value("ovs_dns_forwarder_forward_marked_down_total"); down != 1 {
		t.Errorf("%v servers marked down, want only the dead zone's", down)
	}
	t.Logf("forward: %.0f timeouts, %.0f checks (%.0f passed), %.0f failures after a reply",
		m.value("ovs_dns_forwarder_forward_timeouts_total"), m.value("ovs_dns_forwarder_forward_checks_total"),
		m.value("ovs_dns_forwarder_forward_checks_passed_total"), m.value("ovs_dns_forwarder_forward_failures_while_up_total"))

	t.Run("without shares", func(t *testing.T) {
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		e.startDaemon(cfg("max_inflight_per_port = 0"))
		r := e.flood(flooder, victim, "dead.test", "n")
		total := refusals(e.metrics(), "inflight_limit")
		t.Logf("flood: %d sent, %d completed (%d REFUSED, %d SERVFAIL); daemon: %.0f refused over max_inflight, in flight at most %.0f; second VM: %d of 20 answered",
			r.sent, r.completed, r.refused, r.servfail, total, r.maxInflight, r.answered)
		if total == 0 {
			t.Errorf("without shares the flood did not reach max_inflight: the phases above prove nothing")
		}
	})
}

// udpSocketsTo counts the daemon's UDP sockets connected to server, with
// ss in the lab's namespace.
func (e *env) udpSocketsTo(server string) int {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := e.lab.Command(ctx, "ss", "-H", "-u", "-n", "state", "established", "dst", server).CombinedOutput()
	if err != nil {
		e.t.Fatalf("ss: %v\n%s", err, out)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(line) != "" {
			n++
		}
	}
	return n
}

// TestReloadClosesRemovedUpstreamSockets: a SIGHUP that removes an
// upstream closes the daemon's sockets to it; the kept upstream's stay.
func TestReloadClosesRemovedUpstreamSockets(t *testing.T) {
	e := newEnv(t, 1)
	removed := e.slowDomainUpstream("slow.test.")
	cfg := e.config([]string{removed.String()}, "cache_size = 0", "forward_zones = example.test="+e.upstream())
	p := e.startDaemon(cfg)
	vm := e.vms[0]
	for i := range 40 {
		e.dig(vm, "@169.254.169.254", fmt.Sprintf("n%d.other.test", i), "A")
		e.dig(vm, "@169.254.169.254", "www.example.test", "A")
	}
	removedBefore, keptBefore := e.udpSocketsTo(removed.String()), e.udpSocketsTo(e.upstream())
	if removedBefore == 0 || keptBefore == 0 {
		t.Fatalf("sockets before the reload: %d to the upstream to remove, %d to the kept one", removedBefore, keptBefore)
	}
	next := e.config([]string{e.upstream()}, "cache_size = 0")
	if err := os.WriteFile(e.lab.Dir+"/ovs-dns-forwarder.conf", []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.udpSocketsTo(removed.String()) != 0 {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(p.LogPath)
			t.Fatalf("%d sockets to the removed upstream 10 s after the reload\n%s", e.udpSocketsTo(removed.String()), log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	keptAfter := e.udpSocketsTo(e.upstream())
	t.Logf("sockets to the removed upstream: %d before the reload, 0 after; to the kept one: %d, then %d", removedBefore, keptBefore, keptAfter)
	if keptAfter != keptBefore {
		t.Errorf("sockets to the kept upstream: %d before, %d after", keptBefore, keptAfter)
	}
	if out := e.dig(vm, "@169.254.169.254", "www.example.test", "A", "+short"); strings.TrimSpace(out) != "192.0.2.10" {
		t.Errorf("after the reload: %q", out)
	}
	log, _ := os.ReadFile(p.LogPath)
	if !strings.Contains(string(log), "closing the sockets of removed upstreams") {
		t.Errorf("no log line for the removed upstream:\n%s", log)
	}
}
