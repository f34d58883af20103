package config

import (
	"reflect"
	"testing"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver/forward"
)

func TestResolverOptions(t *testing.T) {
	runOptionCases(t, "[dns_forwarder]\n", []optionCase{
		{"cache", "cache_size = 0\ncache_min_ttl = 5\ncache_max_ttl = 600\ncache_negative_ttl = 30\n", func(c *Config) {
			c.CacheSize, c.CacheMinTTL, c.CacheMaxTTL, c.CacheNegativeTTL = 0, 5*time.Second, 10*time.Minute, 30*time.Second
		}, ""},
		{"serve stale", "serve_stale = true\nserve_stale_ttl = 3600\nprefetch = yes\n", func(c *Config) {
			c.ServeStale, c.ServeStaleTTL, c.Prefetch = true, time.Hour, true
		}, ""},
		{"policy", "upstream_policy = Round_Robin\ntrust_upstream_ad = true\n", func(c *Config) {
			c.UpstreamPolicy, c.TrustUpstreamAD = PolicyRoundRobin, true
		}, ""},
		{"zones", "forward_zones = corp.example.com=192.0.2.1:5353,192.0.2.2; lab.test=[2001:db8::1]:53\n", func(c *Config) {
			c.ForwardZones = []forward.Zone{
				{Name: "corp.example.com", Servers: aps(t, "192.0.2.1:5353", "192.0.2.2:53")},
				{Name: "lab.test", Servers: aps(t, "[2001:db8::1]:53")},
			}
		}, ""},
		{"bad zone", "forward_zones = corp.example.com\n", nil,
			`config file t.ini:2: invalid value "corp.example.com" for option [dns_forwarder] forward_zones: forward_zones entry "corp.example.com": want zone=server[,server...]`},
		{"rate limit off", "port_rate_limit = 0\nport_rate_burst = 10\n", func(c *Config) {
			c.PortRateLimit, c.PortRateBurst = 0, 10
		}, ""},
		{"meters", "meters = false\nmeter_rate = 50000\nmeter_burst = 500\nport_meter_rate = 20000\nport_meter_burst = 32\n", func(c *Config) {
			c.Meters, c.MeterRate, c.MeterBurst, c.PortMeterRate, c.PortMeterBurst = false, 50000, 500, 20000, 32
		}, ""},
		{"meter burst too small", "port_meter_burst = 8\n", nil,
			`config file t.ini:2: invalid value "8" for option [dns_forwarder] port_meter_burst: out of range (want 32 to 16777216)`},
		{"cache size negative", "cache_size = -1\n", nil,
			`config file t.ini:2: invalid value "-1" for option [dns_forwarder] cache_size: out of range (want 0 to 16777216)`},
		{"min over max", "cache_min_ttl = 700\ncache_max_ttl = 600\n", nil,
			`config file t.ini:2: invalid value "700" for option [dns_forwarder] cache_min_ttl: larger than cache_max_ttl`},
		{"max ttl zero", "cache_max_ttl = 0\n", nil,
			`config file t.ini:2: invalid value "0" for option [dns_forwarder] cache_max_ttl: out of range (want 1 to 604800)`},
		{"bad policy", "upstream_policy = fastest\n", nil,
			`config file t.ini:2: invalid value "fastest" for option [dns_forwarder] upstream_policy: not one of sequential, round_robin, random`},
		{"bad bool", "serve_stale = sometimes\n", nil,
			`config file t.ini:2: invalid value "sometimes" for option [dns_forwarder] serve_stale: not a boolean (want true/false, yes/no, on/off or 1/0)`},
		{"burst zero", "port_rate_burst = 0\n", nil,
			`config file t.ini:2: invalid value "0" for option [dns_forwarder] port_rate_burst: out of range (want 1 to 16777216)`},
		{"inflight per port", "max_inflight_per_port = 32\n", func(c *Config) { c.MaxInflightPerPort = 32 }, ""},
		{"inflight per port off", "max_inflight_per_port = 0\n", func(c *Config) { c.MaxInflightPerPort = 0 }, ""},
		{"inflight per port negative", "max_inflight_per_port = -1\n", nil,
			`config file t.ini:2: invalid value "-1" for option [dns_forwarder] max_inflight_per_port: out of range (want 0 to 1048576)`},
	})
}

// optionCase is one configuration text and what it must give: the
// defaults changed by want, or the error message err.
type optionCase struct {
	name string
	ini  string
	want func(c *Config)
	err  string
}

// runOptionCases checks each case, its ini prefixed with prefix.
func runOptionCases(t *testing.T, prefix string, cases []optionCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(prefix + tc.ini)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error\n got: %v\nwant: %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := Defaults()
			tc.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}
