package config

import (
	"slices"
	"strings"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver/forward"
)

// Options of the resolver: cache, upstream policy, per-port limits.
const (
	optCacheSize        = "cache_size"
	optCacheMinTTL      = "cache_min_ttl"
	optCacheMaxTTL      = "cache_max_ttl"
	optCacheNegativeTTL = "cache_negative_ttl"
	optServeStale       = "serve_stale"
	optServeStaleTTL    = "serve_stale_ttl"
	optPrefetch         = "prefetch"
	optUpstreamPolicy   = "upstream_policy"
	optTrustUpstreamAD  = "trust_upstream_ad"
	optForwardZones     = "forward_zones"
	optPortRateLimit    = "port_rate_limit"
	optPortRateBurst    = "port_rate_burst"
	optMeters           = "meters"
	optMeterRate        = "meter_rate"
	optMeterBurst       = "meter_burst"
	optPortMeterRate    = "port_meter_rate"
	optPortMeterBurst   = "port_meter_burst"
	optInflightPerPort  = "max_inflight_per_port"
)

// Values of upstream_policy.
const (
	PolicySequential = "sequential"
	PolicyRoundRobin = "round_robin"
	PolicyRandom     = "random"
)

// DefaultMaxInflightPerPort is max_inflight_per_port's default: as many
// queries as the dnsmasq of Neutron's DHCP agent forwarded at once for a
// whole network (its --dns-forward-max default), so a VM running its own
// dnsmasq never meets it, while a stub resolver needs a handful (glibc asks
// A and AAAA together); six VMs at their share leave 124 of the default
// max_inflight of 1024 for the others.
const DefaultMaxInflightPerPort = 150

// Limits of the resolver's integer options.
const (
	maxCacheSize = 1 << 24
	maxTTL       = 7 * 24 * 3600 // a week, in seconds
	maxRate      = 1 << 24
	// minMeterBurst: OVS's userspace meters refill by the millisecond
	// and packets arrive in batches of up to 32, so a smaller burst drops
	// packets below the rate.
	minMeterBurst = 32
)

// resolverSteps returns the validation steps of the resolver's options;
// config runs them after the others and their errors name the option.
func (s settings) resolverSteps(c *Config) []func() error {
	seconds := func(option string, lo int64, dst *time.Duration) func() error {
		return func() error {
			n := int64(*dst / time.Second)
			if err := intOption(s, sectionDNS, option, lo, maxTTL, &n); err != nil {
				return err
			}
			*dst = time.Duration(n) * time.Second
			return nil
		}
	}
	return []func() error{
		func() error { return intOption(s, sectionDNS, optCacheSize, 0, maxCacheSize, &c.CacheSize) },
		seconds(optCacheMinTTL, 0, &c.CacheMinTTL),
		seconds(optCacheMaxTTL, 1, &c.CacheMaxTTL),
		func() error {
			if c.CacheMinTTL > c.CacheMaxTTL {
				return s.invalid(sectionDNS, optCacheMinTTL, "larger than "+optCacheMaxTTL)
			}
			return nil
		},
		seconds(optCacheNegativeTTL, 0, &c.CacheNegativeTTL),
		func() error { return s.boolOption(sectionDNS, optServeStale, &c.ServeStale) },
		seconds(optServeStaleTTL, 1, &c.ServeStaleTTL),
		func() error { return s.boolOption(sectionDNS, optPrefetch, &c.Prefetch) },
		func() error { return s.policy(c) },
		func() error { return s.boolOption(sectionDNS, optTrustUpstreamAD, &c.TrustUpstreamAD) },
		func() error { return s.zones(c) },
		func() error { return intOption(s, sectionDNS, optPortRateLimit, 0, maxRate, &c.PortRateLimit) },
		func() error { return intOption(s, sectionDNS, optPortRateBurst, 1, maxRate, &c.PortRateBurst) },
		func() error { return s.boolOption(sectionDNS, optMeters, &c.Meters) },
		func() error { return intOption(s, sectionDNS, optMeterRate, 1, maxRate, &c.MeterRate) },
		func() error { return intOption(s, sectionDNS, optMeterBurst, minMeterBurst, maxRate, &c.MeterBurst) },
		func() error { return intOption(s, sectionDNS, optPortMeterRate, 1, maxRate, &c.PortMeterRate) },
		func() error {
			return intOption(s, sectionDNS, optPortMeterBurst, minMeterBurst, maxRate, &c.PortMeterBurst)
		},
		func() error {
			return intOption(s, sectionDNS, optInflightPerPort, 0, maxInflightLimit, &c.MaxInflightPerPort)
		},
	}
}

// policy sets UpstreamPolicy from upstream_policy, if set.
func (s settings) policy(c *Config) error {
	v, ok := s.get(sectionDNS, optUpstreamPolicy)
	if !ok {
		return nil
	}
	policies := []string{PolicySequential, PolicyRoundRobin, PolicyRandom}
	p := strings.ToLower(strings.TrimSpace(v.value))
	if !slices.Contains(policies, p) {
		return s.invalid(sectionDNS, optUpstreamPolicy, "not one of "+strings.Join(policies, ", "))
	}
	c.UpstreamPolicy = p
	return nil
}

// zones sets ForwardZones from forward_zones, if set.
func (s settings) zones(c *Config) error {
	v, ok := s.get(sectionDNS, optForwardZones)
	if !ok {
		return nil
	}
	zones, err := forward.ParseZones(v.value)
	if err != nil {
		return s.invalid(sectionDNS, optForwardZones, strings.TrimPrefix(err.Error(), "forward: "))
	}
	c.ForwardZones = zones
	return nil
}
