// Package metrics exports the daemon's state to Prometheus and serves the
// health endpoints: /metrics, /healthz and /readyz on one listener.
//
// Two kinds of metrics are exported. Per-query and per-exchange metrics
// are recorded by Query and Upstream, on the hot path, into series
// resolved once at New (Query allocates nothing). Everything else is read
// at scrape time from the components' Stats maps and health functions
// (Sources) by a collector that maps their keys to named metrics.
//
// Every label takes its values from a small fixed set or from the
// configured upstream servers (capped at maxServers), never from ports,
// names or clients, so the number of series is bounded.
package metrics

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// namespace prefixes every metric name.
const namespace = "ovs_dns_forwarder"

// maxServers caps the distinct server label values Upstream creates; later
// servers share the series labelled otherServer.
const (
	maxServers  = 32
	otherServer = "other"
)

// Source is where an answer came from, for the source label.
type Source uint8

// The sources of an answer. SourceError is a query answered with an
// error the daemon made itself (SERVFAIL, FORMERR, NOTIMP, REFUSED).
const (
	SourceLocal Source = iota
	SourceCache
	SourceUpstream
	SourceError
	numSources
)

// sourceNames are the source label values, by Source.
var sourceNames = [numSources]string{"local", "cache", "upstream", "error"}

// qtypeNames are the qtype label values; the last one, "other", stands
// for every type not listed.
var qtypeNames = [...]string{"A", "AAAA", "PTR", "CNAME", "MX", "TXT", "SRV", "NS", "SOA", "ANY", "HTTPS", "SVCB", "other"}

// rcodeNames are the rcode label values; "other" stands for every rcode
// not listed.
var rcodeNames = [...]string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other"}

// qtypeIndex returns the index in qtypeNames of DNS type t.
func qtypeIndex(t uint16) int {
	switch t {
	case 1:
		return 0
	case 28:
		return 1
	case 12:
		return 2
	case 5:
		return 3
	case 15:
		return 4
	case 16:
		return 5
	case 33:
		return 6
	case 2:
		return 7
	case 6:
		return 8
	case 255:
		return 9
	case 65:
		return 10
	case 64:
		return 11
	}
	return len(qtypeNames) - 1
}

// rcodeIndex returns the index in rcodeNames of rcode; rcodes 0 to 5 are
// listed in order.
func rcodeIndex(rcode int) int {
	if rcode >= 0 && rcode < len(rcodeNames)-1 {
		return rcode
	}
	return len(rcodeNames) - 1
}

// latencyBuckets span local answers (tens of microseconds) to upstream
// timeouts (seconds).
var latencyBuckets = []float64{
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
	0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
}

// Server is the health of one upstream server, for the upstream_up and
// upstream_consecutive_failures gauges.
type Server struct {
	Addr                string // host:port as configured
	Up                  bool   // false while the server is marked down
	ConsecutiveFailures uint32 // failed exchanges since the last reply
}

// Sources are the functions the collector calls at scrape time. Any may
// be nil; its metrics are then not exported. They are called
// concurrently with the daemon's work and must be safe for that.
type Sources struct {
	// Stats maps, by component (see README.md for the keys they map).
	Responder, Local, Cache, Forward, Upstream, OpenFlow, OVSDB, Records, Limiter func() map[string]uint64
	// Inflight returns the number of queries being resolved now.
	Inflight func() int64
	// UpstreamHealth returns the health of every upstream server.
	UpstreamHealth func() []Server
	// OpenFlowConnected reports whether the OpenFlow session is up.
	OpenFlowConnected func() bool
	// OVSDBReady reports whether the OVSDB monitor is connected and synced.
	OVSDBReady func() bool
}

// upstreamSeries are one server's per-exchange series.
type upstreamSeries struct {
	latency  prometheus.Observer
	failures prometheus.Counter
}

// Metrics holds the daemon's metrics and their registry. It is safe for
// concurrent use.
type Metrics struct {
	reg    *prometheus.Registry
	regErr error // registration failures, reported by every scrape

	// queries[qtype][rcode][source] and latency[source], resolved at New.
	queries [len(qtypeNames)][len(rcodeNames)][numSources]prometheus.Counter
	latency [numSources]prometheus.Observer

	upLatency  *prometheus.HistogramVec
	upFailures *prometheus.CounterVec
	// servers is replaced, never changed, under serversMu.
	servers   atomic.Pointer[map[string]upstreamSeries]
	serversMu sync.Mutex
	other     *upstreamSeries // shared past maxServers; under serversMu
}

// New returns the metrics of a daemon whose state is read from src. They
// live in a registry of their own, with the Go runtime and process
// collectors.
func New(src Sources) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	queries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "queries_total",
		Help:      "Queries answered, by question type, response code and where the answer came from.",
	}, []string{"qtype", "rcode", "source"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "query_duration_seconds",
		Help:      "Time from packet-in to answer sent, by where the answer came from.",
		Buckets:   latencyBuckets,
	}, []string{"source"})
	m.upLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "upstream_exchange_duration_seconds",
		Help:      "Round-trip time of successful exchanges with an upstream server.",
		Buckets:   latencyBuckets,
	}, []string{"server"})
	m.upFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "upstream_failures_total",
		Help:      "Failed exchanges (timeouts, errors, bad replies) with an upstream server.",
	}, []string{"server"})
	for s, sn := range sourceNames {
		m.latency[s] = latency.WithLabelValues(sn)
		for q, qn := range qtypeNames {
			for r, rn := range rcodeNames {
				m.queries[q][r][s] = queries.WithLabelValues(qn, rn, sn)
			}
		}
	}
	empty := map[string]upstreamSeries{}
	m.servers.Store(&empty)

	var errs []error
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		queries, latency, m.upLatency, m.upFailures,
		newStatsCollector(src),
	} {
		if err := m.reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	m.regErr = errors.Join(errs...)
	return m
}

// Query records one answered query: its type, the answer's rcode, where
// the answer came from and the time it took. It does not allocate.
func (m *Metrics) Query(qtype uint16, rcode int, source Source, d time.Duration) {
	if source >= numSources {
		source = SourceError
	}
	m.queries[qtypeIndex(qtype)][rcodeIndex(rcode)][source].Inc()
	m.latency[source].Observe(d.Seconds())
}

// Upstream records one exchange with upstream server (host:port): its
// round-trip time when err is nil, a failure otherwise. The first
// exchange with a server allocates its series; later ones do not.
func (m *Metrics) Upstream(server string, d time.Duration, err error) {
	s := m.series(server)
	if err != nil {
		s.failures.Inc()
		return
	}
	s.latency.Observe(d.Seconds())
}

// series returns the series of server, making them on first use; past
// maxServers servers, the shared "other" series.
func (m *Metrics) series(server string) upstreamSeries {
	if s, ok := (*m.servers.Load())[server]; ok {
		return s
	}
	m.serversMu.Lock()
	defer m.serversMu.Unlock()
	cur := *m.servers.Load()
	if s, ok := cur[server]; ok {
		return s
	}
	if len(cur) >= maxServers {
		if m.other == nil {
			m.other = &upstreamSeries{latency: m.upLatency.WithLabelValues(otherServer), failures: m.upFailures.WithLabelValues(otherServer)}
		}
		return *m.other
	}
	s := upstreamSeries{latency: m.upLatency.WithLabelValues(server), failures: m.upFailures.WithLabelValues(server)}
	next := make(map[string]upstreamSeries, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[server] = s
	m.servers.Store(&next)
	return s
}

// Gather returns the current metrics, as a scrape of /metrics would.
func (m *Metrics) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := m.reg.Gather()
	return mfs, errors.Join(m.regErr, err)
}
