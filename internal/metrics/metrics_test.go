package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
)

// testSources returns sources with one value of each kind.
func testSources() Sources {
	return Sources{
		Responder: func() map[string]uint64 {
			return map[string]uint64{"queries": 10, "answers": 9, "formerr": 2, "refused_inflight": 3,
				"refused_port_inflight": 12, "spoofed_mac": 4, "rate_limited": 5, "truncated": 6}
		},
		Cache: func() map[string]uint64 {
			return map[string]uint64{"hits": 7, "misses": 8, "evictions": 1, "entries": 42, "stale_served": 2}
		},
		Forward:  func() map[string]uint64 { return map[string]uint64{"failovers": 3, "servers_down": 1} },
		Upstream: func() map[string]uint64 { return map[string]uint64{"sent": 9, "sockets": 16} },
		OpenFlow: func() map[string]uint64 {
			return map[string]uint64{"reconnects": 2, "flow_reinstalls": 5, "meter_drops": 11, "flows": 6}
		},
		OVSDB:    func() map[string]uint64 { return map[string]uint64{"connects": 1, "vm_ports": 12} },
		Records:  func() map[string]uint64 { return map[string]uint64{"syncs": 4, "last_sync_unix": 1000, "names": 30} },
		Limiter:  func() map[string]uint64 { return map[string]uint64{"limited": 5, "keys": 3} },
		Inflight: func() int64 { return 17 },
		UpstreamHealth: func() []Server {
			return []Server{{Addr: "192.0.2.1:53", Up: true}, {Addr: "192.0.2.2:53", ConsecutiveFailures: 4}}
		},
		OpenFlowConnected: func() bool { return true },
		OVSDBReady:        func() bool { return false },
	}
}

// scrape returns the body of GET path on h, failing unless the status is want.
func scrape(t *testing.T, h http.Handler, path string, want int) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != want {
		t.Fatalf("GET %s: status %d, want %d; body %q", path, rec.Code, want, rec.Body.String())
	}
	return rec.Body.String()
}

func TestScrape(t *testing.T) {
	c := New(testSources())
	c.Query(1, 0, SourceCache, time.Millisecond)
	c.Query(1, 0, SourceCache, time.Millisecond)
	c.Query(999, 3, SourceUpstream, 20*time.Millisecond)
	c.Query(28, 77, SourceError, 0)
	c.Upstream("192.0.2.1:53", 5*time.Millisecond, nil)
	c.Upstream("192.0.2.1:53", 0, errors.New("timeout"))

	body := scrape(t, c.Handler(nil), "/metrics", http.StatusOK)
	for _, want := range []string{
		`ovs_dns_forwarder_queries_total{qtype="A",rcode="NOERROR",source="cache"} 2`,
		`ovs_dns_forwarder_queries_total{qtype="other",rcode="NXDOMAIN",source="upstream"} 1`,
		`ovs_dns_forwarder_queries_total{qtype="AAAA",rcode="other",source="error"} 1`,
		`ovs_dns_forwarder_query_duration_seconds_count{source="cache"} 2`,
		`ovs_dns_forwarder_upstream_exchange_duration_seconds_count{server="192.0.2.1:53"} 1`,
		`ovs_dns_forwarder_upstream_failures_total{server="192.0.2.1:53"} 1`,
		`ovs_dns_forwarder_upstream_up{server="192.0.2.1:53"} 1`,
		`ovs_dns_forwarder_upstream_up{server="192.0.2.2:53"} 0`,
		`ovs_dns_forwarder_upstream_consecutive_failures{server="192.0.2.2:53"} 4`,
		`ovs_dns_forwarder_drops_total{reason="meter"} 11`,
		`ovs_dns_forwarder_drops_total{reason="spoofed_mac"} 4`,
		`ovs_dns_forwarder_drops_total{reason="rate_limited"} 5`,
		`ovs_dns_forwarder_drops_total{reason="truncated"} 6`,
		`ovs_dns_forwarder_refusals_total{reason="inflight_limit"} 3`,
		`ovs_dns_forwarder_refusals_total{reason="port_inflight_limit"} 12`,
		`ovs_dns_forwarder_refusals_total{reason="malformed"} 2`,
		`ovs_dns_forwarder_responder_queries_total 10`,
		`ovs_dns_forwarder_cache_hits_total 7`,
		`ovs_dns_forwarder_cache_misses_total 8`,
		`ovs_dns_forwarder_cache_evictions_total 1`,
		`ovs_dns_forwarder_cache_stale_served_total 2`,
		`ovs_dns_forwarder_cache_entries 42`,
		`ovs_dns_forwarder_forward_failovers_total 3`,
		`ovs_dns_forwarder_forward_servers_down 1`,
		`ovs_dns_forwarder_upstream_client_sent_total 9`,
		`ovs_dns_forwarder_upstream_client_sockets 16`,
		"# TYPE ovs_dns_forwarder_upstream_client_sockets gauge",
		`ovs_dns_forwarder_inflight 17`,
		`ovs_dns_forwarder_openflow_connected 1`,
		`ovs_dns_forwarder_openflow_reconnects_total 2`,
		`ovs_dns_forwarder_openflow_flow_reinstalls_total 5`,
		`ovs_dns_forwarder_openflow_flows 6`,
		`ovs_dns_forwarder_ovsdb_ready 0`,
		`ovs_dns_forwarder_ovsdb_connects_total 1`,
		`ovs_dns_forwarder_ovsdb_vm_ports 12`,
		`ovs_dns_forwarder_records_syncs_total 4`,
		`ovs_dns_forwarder_records_last_sync_timestamp_seconds 1000`,
		`ovs_dns_forwarder_records_names 30`,
		`ovs_dns_forwarder_ratelimit_limited_total 5`,
		`ovs_dns_forwarder_ratelimit_keys 3`,
		"# TYPE ovs_dns_forwarder_cache_entries gauge",
		"# TYPE ovs_dns_forwarder_cache_hits_total counter",
		"# TYPE ovs_dns_forwarder_query_duration_seconds histogram",
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if !strings.Contains(body, "ovs_dns_forwarder_records_last_sync_age_seconds ") {
		t.Error("scrape lacks records_last_sync_age_seconds")
	}
}

func TestLint(t *testing.T) {
	m := New(testSources())
	m.Query(1, 0, SourceLocal, time.Microsecond)
	m.Upstream("192.0.2.1:53", time.Millisecond, nil)
	mfs, err := m.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

func TestNilSources(t *testing.T) {
	m := New(Sources{})
	body := scrape(t, m.Handler(nil), "/metrics", http.StatusOK)
	if strings.Contains(body, "ovs_dns_forwarder_inflight") || strings.Contains(body, "drops_total") {
		t.Errorf("nil sources exported metrics:\n%s", body)
	}
	if !strings.Contains(body, `ovs_dns_forwarder_queries_total{qtype="A",rcode="NOERROR",source="local"} 0`) {
		t.Error("query series not pre-created")
	}
}

func TestNeverSynced(t *testing.T) {
	m := New(Sources{Records: func() map[string]uint64 { return map[string]uint64{"last_sync_unix": 0} }})
	body := scrape(t, m.Handler(nil), "/metrics", http.StatusOK)
	if !strings.Contains(body, "ovs_dns_forwarder_records_last_sync_timestamp_seconds 0") ||
		strings.Contains(body, "last_sync_age_seconds") {
		t.Errorf("never synced: want timestamp 0 and no age:\n%s", body)
	}
}

func TestRecordsAge(t *testing.T) {
	c := newStatsCollector(Sources{Records: func() map[string]uint64 { return map[string]uint64{"last_sync_unix": 1000} }})
	c.now = func() time.Time { return time.Unix(1090, 0) }
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	if got := gatherText(t, reg); !strings.Contains(got, "ovs_dns_forwarder_records_last_sync_age_seconds 90\n") {
		t.Errorf("want age 90:\n%s", got)
	}
}

// gatherText returns what g gathers in the text format.
func gatherText(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func TestQueryAllocs(t *testing.T) {
	m := New(Sources{})
	allocs := testing.AllocsPerRun(1000, func() {
		m.Query(1, 0, SourceCache, time.Millisecond)
		m.Query(65535, 99, Source(200), time.Second)
	})
	if allocs != 0 {
		t.Errorf("Query allocates %v times per run", allocs)
	}
}

func TestUpstreamAllocs(t *testing.T) {
	m := New(Sources{})
	m.Upstream("192.0.2.1:53", time.Millisecond, nil)
	err := errors.New("timeout")
	allocs := testing.AllocsPerRun(1000, func() {
		m.Upstream("192.0.2.1:53", time.Millisecond, nil)
		m.Upstream("192.0.2.1:53", 0, err)
	})
	if allocs != 0 {
		t.Errorf("Upstream allocates %v times per run for a known server", allocs)
	}
}

func TestUpstreamServersBounded(t *testing.T) {
	m := New(Sources{})
	for i := range maxServers + 10 {
		m.Upstream(net.JoinHostPort("192.0.2.1", string(rune('a'+i%26))+string(rune('a'+i/26))), time.Millisecond, nil)
	}
	got := gatherText(t, m.reg)
	if n := strings.Count(got, "ovs_dns_forwarder_upstream_exchange_duration_seconds_count{"); n != maxServers+1 {
		t.Errorf("%d server series, want %d", n, maxServers+1)
	}
	if !strings.Contains(got, `ovs_dns_forwarder_upstream_exchange_duration_seconds_count{server="other"} 10`) {
		t.Error("servers past the cap not counted as other")
	}
}

func TestHealthAndReady(t *testing.T) {
	m := New(Sources{})
	if body := scrape(t, m.Handler(nil), "/healthz", http.StatusOK); body != "ok\n" {
		t.Errorf("/healthz body %q", body)
	}
	if body := scrape(t, m.Handler(nil), "/readyz", http.StatusOK); body != "ok\n" {
		t.Errorf("/readyz (nil ready) body %q", body)
	}
	notReady := m.Handler(func() (bool, string) { return false, "openflow not connected" })
	if body := scrape(t, notReady, "/readyz", http.StatusServiceUnavailable); body != "openflow not connected\n" {
		t.Errorf("/readyz body %q", body)
	}
	ready := m.Handler(func() (bool, string) { return true, "ok: local names only" })
	if body := scrape(t, ready, "/readyz", http.StatusOK); body != "ok: local names only\n" {
		t.Errorf("/readyz body %q", body)
	}
	scrape(t, ready, "/nothing", http.StatusNotFound)
}

func TestServeShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", New(Sources{}).Handler(nil), nil) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

func TestServeListenError(t *testing.T) {
	if err := Serve(context.Background(), "127.0.0.1:notaport", http.NotFoundHandler(), nil); err == nil {
		t.Fatal("Serve on a bad address: no error")
	}
}

func TestServeServes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, New(Sources{}).Handler(nil), logger) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("GET /healthz: %d %q", resp.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if !strings.Contains(logs.String(), ln.Addr().String()) {
		t.Errorf("log lacks the address: %s", logs.String())
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		t.Error("still serving after shutdown")
	}
}
