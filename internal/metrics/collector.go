package metrics

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/frame"
)

// kind is how a Stats key is exported.
type kind uint8

const (
	kindCounter   kind = iota // name_total (default for keys not listed)
	kindGauge                 // name, a value that goes up and down
	kindDrop                  // drops_total{reason=name}
	kindRefusal               // refusals_total{reason=name}
	kindTimestamp             // name_timestamp_seconds, plus name_age_seconds when not 0
)

// export says how one Stats key is exported: its kind and its name (the
// metric's name after the component prefix, or the reason label).
type export struct {
	kind kind
	name string
}

// component is one Stats source: the prefix of its generic metric names
// and the keys exported otherwise than as <prefix>_<key>_total.
type component struct {
	prefix string
	stats  func() map[string]uint64
	keys   map[string]export
}

// Reasons the responder counts that are not frame parse errors; each is a
// query dropped without an answer.
var responderDrops = []string{
	"not_service_address", "dns_header", "dns_not_query", "reply_too_large",
	"packet_out_failed", "rate_limited", "spoofed_mac", "reinject_failed", "other",
}

// components returns the table of Stats keys by component: which are
// gauges, which are drop or refusal reasons, which are renamed. Keys not
// listed are counters named <prefix>_<key>_total.
func components(src Sources) []component {
	responder := map[string]export{
		"formerr":               {kindRefusal, "malformed"},
		"notimp":                {kindRefusal, "not_implemented"},
		"badvers":               {kindRefusal, "bad_edns_version"},
		"refused_inflight":      {kindRefusal, "inflight_limit"},
		"refused_port_inflight": {kindRefusal, "port_inflight_limit"},
	}
	for _, r := range responderDrops {
		responder[r] = export{kindDrop, r}
	}
	for _, r := range frame.Reasons() {
		responder[r] = export{kindDrop, r}
	}
	return []component{
		{"responder", src.Responder, responder},
		{"local", src.Local, nil},
		{"cache", src.Cache, map[string]export{
			"entries":       {kindGauge, "entries"},
			"refused_norec": {kindRefusal, "not_recursive"},
		}},
		{"forward", src.Forward, map[string]export{
			"servers_down": {kindGauge, "servers_down"},
		}},
		{"upstream_client", src.Upstream, map[string]export{
			"sockets": {kindGauge, "sockets"},
		}},
		{"openflow", src.OpenFlow, map[string]export{
			"meter_drops": {kindDrop, "meter"},
			"ports":       {kindGauge, "ports"},
			"meters":      {kindGauge, "meters"},
			"flows":       {kindGauge, "flows"},
		}},
		{"ovsdb", src.OVSDB, map[string]export{
			"vm_ports": {kindGauge, "vm_ports"},
		}},
		{"records", src.Records, map[string]export{
			"last_sync_unix": {kindTimestamp, "last_sync"},
			"networks":       {kindGauge, "networks"},
			"names":          {kindGauge, "names"},
			"ports":          {kindGauge, "ports"},
		}},
		{"ratelimit", src.Limiter, map[string]export{
			"keys": {kindGauge, "keys"},
		}},
	}
}

// statsCollector exports the Sources at scrape time. It is an unchecked
// collector (Describe sends nothing): the keys of the Stats maps are
// known only when they are read. Label values come from the fixed table
// in components and from the configured servers.
type statsCollector struct {
	src        Sources
	components []component
	now        func() time.Time

	drops, refusals, inflight     *prometheus.Desc
	up, consecutiveFailures       *prometheus.Desc
	openflowConnected, ovsdbReady *prometheus.Desc

	mu    sync.Mutex
	descs map[string]*prometheus.Desc // generic descs by full name
}

// newStatsCollector returns the collector of src.
func newStatsCollector(src Sources) *statsCollector {
	name := func(n string) string { return prometheus.BuildFQName(namespace, "", n) }
	return &statsCollector{
		src:        src,
		components: components(src),
		now:        time.Now,
		drops: prometheus.NewDesc(name("drops_total"),
			"Queries and frames dropped without an answer, by reason.", []string{"reason"}, nil),
		refusals: prometheus.NewDesc(name("refusals_total"),
			"Queries answered with an error instead of being resolved, by reason.", []string{"reason"}, nil),
		inflight: prometheus.NewDesc(name("inflight"),
			"Queries being resolved now.", nil, nil),
		up: prometheus.NewDesc(name("upstream_up"),
			"Whether an upstream server is considered up (1) or marked down (0).", []string{"server"}, nil),
		consecutiveFailures: prometheus.NewDesc(name("upstream_consecutive_failures"),
			"Failed exchanges with an upstream server since its last reply.", []string{"server"}, nil),
		openflowConnected: prometheus.NewDesc(name("openflow_connected"),
			"Whether the OpenFlow session with the bridge is up (1) or not (0).", nil, nil),
		ovsdbReady: prometheus.NewDesc(name("ovsdb_ready"),
			"Whether the OVSDB monitor is connected and synced (1) or not (0).", nil, nil),
		descs: make(map[string]*prometheus.Desc),
	}
}

// Describe sends nothing: the collector is unchecked.
func (c *statsCollector) Describe(chan<- *prometheus.Desc) {}

// Collect reads every source and sends its metrics.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	if c.src.Inflight != nil {
		send(ch, c.inflight, prometheus.GaugeValue, float64(c.src.Inflight()))
	}
	if c.src.OpenFlowConnected != nil {
		send(ch, c.openflowConnected, prometheus.GaugeValue, boolValue(c.src.OpenFlowConnected()))
	}
	if c.src.OVSDBReady != nil {
		send(ch, c.ovsdbReady, prometheus.GaugeValue, boolValue(c.src.OVSDBReady()))
	}
	if c.src.UpstreamHealth != nil {
		seen := make(map[string]bool)
		for _, s := range c.src.UpstreamHealth() {
			if seen[s.Addr] || len(seen) >= maxServers {
				continue
			}
			seen[s.Addr] = true
			send(ch, c.up, prometheus.GaugeValue, boolValue(s.Up), s.Addr)
			send(ch, c.consecutiveFailures, prometheus.GaugeValue, float64(s.ConsecutiveFailures), s.Addr)
		}
	}
	for i := range c.components {
		c.collect(ch, &c.components[i])
	}
}

// collect sends the metrics of one component.
func (c *statsCollector) collect(ch chan<- prometheus.Metric, comp *component) {
	if comp.stats == nil {
		return
	}
	for key, v := range comp.stats() {
		e, ok := comp.keys[key]
		if !ok {
			e = export{kindCounter, key}
		}
		val := float64(v)
		switch e.kind {
		case kindDrop:
			send(ch, c.drops, prometheus.CounterValue, val, e.name)
		case kindRefusal:
			send(ch, c.refusals, prometheus.CounterValue, val, e.name)
		case kindGauge:
			send(ch, c.desc(comp.prefix, e.name, "", "gauge"), prometheus.GaugeValue, val)
		case kindTimestamp:
			send(ch, c.desc(comp.prefix, e.name, "_timestamp_seconds", "timestamp"), prometheus.GaugeValue, val)
			if v > 0 {
				age := c.now().Sub(time.Unix(int64(v), 0)).Seconds()
				send(ch, c.desc(comp.prefix, e.name, "_age_seconds", "age"), prometheus.GaugeValue, max(age, 0))
			}
		default:
			send(ch, c.desc(comp.prefix, e.name, "_total", "counter"), prometheus.CounterValue, val)
		}
	}
}

// desc returns the desc of the metric <prefix>_<name><suffix>, made on
// first use. what says in the help text what the key is.
func (c *statsCollector) desc(prefix, name, suffix, what string) *prometheus.Desc {
	full := prometheus.BuildFQName(namespace, prefix, sanitize(name)+suffix)
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.descs[full]
	if !ok {
		d = prometheus.NewDesc(full, "The "+prefix+" "+what+" "+name+" (see internal/metrics/README.md).", nil, nil)
		c.descs[full] = d
	}
	return d
}

// sanitize maps a Stats key to a valid metric name part: every byte
// outside [a-zA-Z0-9_] becomes '_'.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, s)
}

// send sends one const metric, or an invalid metric carrying the error
// (the scrape then reports it) when the metric cannot be made.
func send(ch chan<- prometheus.Metric, d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	ch <- m
}

// boolValue is 1 for true and 0 for false.
func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
