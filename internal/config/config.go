// Package config loads the daemon's settings from the Neutron Open vSwitch
// agent's own configuration files, following oslo.config's conventions:
// files apply in order and later ones override earlier ones, each
// --config-dir adds its *.conf files in lexical order after the files,
// section names are case-insensitive, option names are not, and options
// and sections the daemon does not know are ignored.
//
// The daemon reads [DEFAULT] debug, [ovs] integration_bridge and the
// [dns_forwarder] section. Its DNS options exist in two spellings, the
// Neutron spec's (upstream_dns_servers, upstream_dns_port,
// upstream_query_timeout, client_dns_servers, client_dns_port) and Neutron
// master's (upstream_dns_server_ports, upstream_dns_query_timeout,
// client_dns_server_ports); either works, both spellings of one setting
// are an error. Every error is an *Error whose message is one line.
package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/pipeline"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver/forward"
)

// Section names as the daemon looks them up (after normalizeSection).
const (
	sectionDefault = "DEFAULT"
	sectionOVS     = "ovs"
	sectionDNS     = "dns_forwarder"
)

// Option names.
const (
	optDebug              = "debug"
	optBridge             = "integration_bridge"
	optUpstreamServers    = "upstream_dns_servers"
	optUpstreamPort       = "upstream_dns_port"
	optUpstreamTimeout    = "upstream_query_timeout"
	optClientServers      = "client_dns_servers"
	optClientPort         = "client_dns_port"
	optUpstreamPorts      = "upstream_dns_server_ports"
	optUpstreamDNSTimeout = "upstream_dns_query_timeout"
	optClientPorts        = "client_dns_server_ports"
	optOpenFlow           = "openflow_connection"
	optFlowTable          = "flow_table"
	optFlowPriority       = "flow_priority"
	optFlowCookie         = "flow_cookie"
	optControllerID       = "controller_id"
	optMaxInflight        = "max_inflight"
	optMaxUDPSize         = "max_udp_size"
	optMTU                = "mtu"
)

// Limits of the integer options.
const (
	maxTimeoutSeconds = 3600
	maxInflightLimit  = 1 << 20
	maxFlowTable      = 253 // OVS keeps table 254 for itself; 255 means "all tables"
)

// DefaultUpstreams are the upstream resolvers used when no upstream option
// is set: the Neutron spec's default of upstream_dns_servers on port 53.
// Tests refer to them through this variable, never by address.
var DefaultUpstreams = []netip.AddrPort{
	netip.MustParseAddrPort("1.1.1.1:53"),
	netip.MustParseAddrPort("[2606:4700:4700::1111]:53"),
}

// defaultClients are the service addresses VMs send their queries to when
// no client option is set (the Neutron spec's default).
var defaultClients = []netip.AddrPort{
	netip.MustParseAddrPort("169.254.169.254:53"),
	netip.MustParseAddrPort("[fd00::254]:53"),
}

// Config is the daemon's configuration.
type Config struct {
	// IntegrationBridge is the OVS bridge the VMs are on ([ovs]
	// integration_bridge).
	IntegrationBridge string
	// UpstreamServers are the resolvers queries are forwarded to, tried in
	// order; IPv4-mapped IPv6 addresses are unmapped; never empty.
	UpstreamServers []netip.AddrPort
	// UpstreamTimeout is the time one upstream gets to answer a query.
	UpstreamTimeout time.Duration
	// ClientServers are the service addresses (unicast, unmapped) whose
	// UDP DNS traffic the flows capture; never empty.
	ClientServers []netip.AddrPort
	// OpenFlowConnection is the switch's OpenFlow endpoint: "unix:PATH"
	// or "tcp:HOST:PORT".
	OpenFlowConnection string
	// FlowTable is the table the capture flows go into.
	FlowTable uint8
	// FlowPriority is the capture flows' priority.
	FlowPriority uint16
	// FlowCookie marks the daemon's flows; never 0 nor all ones.
	FlowCookie uint64
	// ControllerID is the controller id of the daemon's OpenFlow
	// connection, which the flows' controller action addresses; never 0.
	ControllerID uint16
	// MaxInflight bounds the queries being answered at once.
	MaxInflight int
	// MaxInflightPerPort bounds the queries of one VM port being answered
	// at once (within MaxInflight); 0 turns the per-port bound off.
	MaxInflightPerPort int
	// MaxUDPSize is the largest DNS answer sent over UDP to a client
	// that advertises a larger EDNS buffer.
	MaxUDPSize int
	// MTU is the L3 MTU of the VMs' networks: no reply packet is larger.
	MTU int
	// Debug turns on debug logging ([DEFAULT] debug).
	Debug bool

	// CacheSize bounds the answers cached; 0 turns the cache off.
	CacheSize int
	// CacheMinTTL and CacheMaxTTL clamp the TTL an answer is cached for.
	CacheMinTTL, CacheMaxTTL time.Duration
	// CacheNegativeTTL caps how long NXDOMAIN and NODATA answers are
	// cached (their own TTL comes from the SOA, RFC 2308).
	CacheNegativeTTL time.Duration
	// ServeStale answers from expired entries, expired no longer ago than
	// ServeStaleTTL, when every upstream fails (RFC 8767).
	ServeStale    bool
	ServeStaleTTL time.Duration
	// Prefetch refreshes popular entries shortly before they expire.
	Prefetch bool

	// UpstreamPolicy orders the upstreams: "sequential" (the configured
	// order), "round_robin" or "random".
	UpstreamPolicy string
	// TrustUpstreamAD keeps the AD bit of upstream answers; otherwise it
	// is cleared.
	TrustUpstreamAD bool
	// ForwardZones send the names under each zone to the zone's own
	// servers (forward_zones); the longest matching zone wins.
	ForwardZones []forward.Zone

	// PortRateLimit is the queries per second one VM port may send, with
	// bursts of PortRateBurst; 0 turns the limit off.
	PortRateLimit, PortRateBurst int
	// Meters puts OpenFlow meters on the capture flows: one per VM port
	// (PortMeterRate packets/s, burst PortMeterBurst) and one for ports not
	// yet learnt (MeterRate, MeterBurst). Off for bridges without meter
	// support.
	Meters                        bool
	MeterRate, MeterBurst         uint32
	PortMeterRate, PortMeterBurst uint32

	// OVSDBConnection is where the OVSDB server is ([ovs]
	// ovsdb_connection, Neutron's option): "tcp:HOST:PORT" or "unix:PATH".
	OVSDBConnection string
	// DNSDomain is the cloud's domain ([DEFAULT] dns_domain, Neutron's
	// default openstacklocal), lower case with a final dot.
	DNSDomain string
	// Neutron is how to reach the Neutron API ([neutron]); local names
	// are served only when its AuthType is set.
	Neutron Neutron
	// RecordsResyncInterval is the time between full syncs of the names.
	RecordsResyncInterval time.Duration
	// LocalTTL is the TTL of local answers, in seconds.
	LocalTTL uint32
	// LocalDomainAuthoritative answers NXDOMAIN and NODATA (with an SOA)
	// for names under DNSDomain the cloud does not have; false forwards
	// them.
	LocalDomainAuthoritative bool
	// InterceptAllDNS captures DNS from VM ports to any destination too:
	// local names are answered, the rest goes on unchanged.
	InterceptAllDNS bool
	// AnswerNeighbors answers, from flows, ARP and Neighbor Solicitations
	// for the gateways of isolated overlay networks, fd00::254-style IPv6
	// service addresses and (ARP) the IPv4 service addresses, with
	// ResponderMAC (see docs/neighbours.md).
	AnswerNeighbors bool
	// ResponderMAC is the MAC those answers give; queries sent to it are
	// captured like any other.
	ResponderMAC [6]byte

	// MetricsListen is where /metrics, /healthz and /readyz are served
	// (HOST:PORT); "" disables them.
	MetricsListen string
	// ControlSocket is the unix socket of `status` and `flush-cache`; ""
	// disables it.
	ControlSocket string
	// QueryLog logs one line per query, for a QueryLogSampleRate share of
	// them.
	QueryLog           bool
	QueryLogSampleRate float64
}

// Defaults returns the configuration used when no file sets anything.
// Each call returns a new Config the caller may change.
func Defaults() *Config {
	return &Config{
		IntegrationBridge:        "br-int",
		UpstreamServers:          slices.Clone(DefaultUpstreams),
		UpstreamTimeout:          5 * time.Second,
		ClientServers:            slices.Clone(defaultClients),
		OpenFlowConnection:       defaultOpenFlow("br-int"),
		FlowTable:                60,
		FlowPriority:             102,
		FlowCookie:               0x444e53,
		ControllerID:             53,
		MaxInflight:              1024,
		MaxInflightPerPort:       DefaultMaxInflightPerPort,
		MaxUDPSize:               1232,
		MTU:                      1500,
		CacheSize:                10000,
		CacheMaxTTL:              24 * time.Hour,
		CacheNegativeTTL:         time.Hour,
		ServeStaleTTL:            24 * time.Hour,
		UpstreamPolicy:           PolicySequential,
		PortRateLimit:            1024,
		PortRateBurst:            200,
		Meters:                   true,
		AnswerNeighbors:          true,
		ResponderMAC:             pipeline.DefaultResponderMAC,
		MeterRate:                pipeline.DefaultMeterRate,
		MeterBurst:               pipeline.DefaultMeterBurst,
		PortMeterRate:            pipeline.DefaultPortMeterRate,
		PortMeterBurst:           pipeline.DefaultPortMeterBurst,
		OVSDBConnection:          "tcp:127.0.0.1:6640",
		DNSDomain:                DefaultDNSDomain,
		RecordsResyncInterval:    60 * time.Second,
		LocalTTL:                 30,
		LocalDomainAuthoritative: true,
		MetricsListen:            DefaultMetricsListen,
		ControlSocket:            DefaultControlSocket,
		QueryLogSampleRate:       1,
	}
}

// defaultOpenFlow is openflow_connection's default: the bridge's
// management socket.
func defaultOpenFlow(bridge string) string {
	return "unix:/var/run/openvswitch/" + bridge + ".mgmt"
}

// Load reads the configuration files in order, then the *.conf files of
// each directory in dirs (each directory's in lexical order, names
// starting with "." skipped), and returns the validated configuration.
// A later file overrides an option an earlier one set. A missing file or
// directory, a line that is not valid INI, an invalid value and both
// spellings of one setting are errors; each is an *Error.
func Load(files, dirs []string) (*Config, error) {
	paths := slices.Clone(files)
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, &Error{Dir: dir, Reason: ioReason(err, "no such directory")}
		}
		for _, e := range entries {
			if name := e.Name(); strings.HasSuffix(name, ".conf") && !strings.HasPrefix(name, ".") {
				paths = append(paths, filepath.Join(dir, name))
			}
		}
	}
	srcs := make([]source, 0, len(paths))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, &Error{File: p, Reason: ioReason(err, "no such file")}
		}
		srcs = append(srcs, source{name: p, data: data})
	}
	return build(srcs)
}

// ioReason turns a file system error into a short reason; notExist is the
// reason for a missing path.
func ioReason(err error, notExist string) string {
	var errno syscall.Errno
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return notExist
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	case errors.As(err, &errno):
		return errno.Error()
	}
	return err.Error()
}

// source is one configuration file's name and contents.
type source struct {
	name string
	data []byte
}

// setting is an option's final value and where it was set.
type setting struct {
	value string
	file  string
	line  int
	seq   int // order of assignment across all files
}

// optionKey names an option within its normalized section.
type optionKey struct{ section, option string }

// settings holds the options of all files merged, later assignments
// overriding earlier ones.
type settings map[optionKey]setting

// build parses srcs in order, merges them and validates the result.
func build(srcs []source) (*Config, error) {
	set := settings{}
	seq := 0
	for _, src := range srcs {
		as, err := parseINI(src.name, src.data)
		if err != nil {
			return nil, err
		}
		for _, a := range as {
			seq++
			set[optionKey{a.section, a.key}] = setting{value: a.value, file: src.name, line: a.line, seq: seq}
		}
	}
	return set.config()
}

// get returns option's setting in section, if any file set it.
func (s settings) get(section, option string) (setting, bool) {
	v, ok := s[optionKey{section, option}]
	return v, ok
}

// invalid returns the error for an invalid value of option.
func (s settings) invalid(section, option, reason string) *Error {
	v := s[optionKey{section, option}]
	return &Error{File: v.file, Line: v.line, Section: section, Option: option, Value: v.value, Reason: reason}
}

// config validates the merged settings into a Config.
func (s settings) config() (*Config, error) {
	c := Defaults()
	for _, pair := range [][2][]string{
		{{optUpstreamServers, optUpstreamPort}, {optUpstreamPorts}},
		{{optUpstreamTimeout}, {optUpstreamDNSTimeout}},
		{{optClientServers, optClientPort}, {optClientPorts}},
	} {
		if err := s.conflict(pair[0], pair[1]); err != nil {
			return nil, err
		}
	}
	var (
		timeout = int64(c.UpstreamTimeout / time.Second)
		steps   = []func() error{
			func() error { return s.boolOption(sectionDefault, optDebug, &c.Debug) },
			func() error { return s.bridge(c) },
			func() error { return s.upstreams(c) },
			func() error { return intOption(s, sectionDNS, optUpstreamTimeout, 1, maxTimeoutSeconds, &timeout) },
			func() error { return intOption(s, sectionDNS, optUpstreamDNSTimeout, 1, maxTimeoutSeconds, &timeout) },
			func() error { return s.clients(c) },
			func() error { return s.openFlow(c) },
			func() error { return intOption(s, sectionDNS, optFlowTable, 0, maxFlowTable, &c.FlowTable) },
			func() error { return intOption(s, sectionDNS, optFlowPriority, 0, 65535, &c.FlowPriority) },
			func() error { return s.cookie(c) },
			func() error { return intOption(s, sectionDNS, optControllerID, 1, 65535, &c.ControllerID) },
			func() error { return intOption(s, sectionDNS, optMaxInflight, 1, maxInflightLimit, &c.MaxInflight) },
			func() error { return intOption(s, sectionDNS, optMaxUDPSize, 512, 65535, &c.MaxUDPSize) },
			func() error { return intOption(s, sectionDNS, optMTU, 1280, 65535, &c.MTU) },
		}
	)
	steps = append(steps, s.resolverSteps(c)...)
	steps = append(steps, s.namesSteps(c)...)
	steps = append(steps, s.opsSteps(c)...)
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	c.UpstreamTimeout = time.Duration(timeout) * time.Second
	return c, nil
}

// conflict reports an error when any option of spec and any of master are
// both set: they are two spellings of one setting.
func (s settings) conflict(spec, master []string) error {
	first := func(names []string) (string, setting, bool) {
		for _, n := range names {
			if v, ok := s.get(sectionDNS, n); ok {
				return n, v, true
			}
		}
		return "", setting{}, false
	}
	a, av, ok := first(spec)
	if !ok {
		return nil
	}
	b, bv, ok := first(master)
	if !ok {
		return nil
	}
	if av.seq < bv.seq {
		a, av, b, bv = b, bv, a, av
	}
	where := "config file " + printable(bv.file) + ":" + strconv.Itoa(bv.line)
	return &Error{
		File: av.file, Line: av.line, Section: sectionDNS, Option: a, Value: av.value, Conflict: b,
		Reason: "the Neutron spec's and Neutron master's spellings of one setting (" + b + " is set at " + where + "); set only one",
	}
}

// boolOption sets *dst from a boolean option, if set.
func (s settings) boolOption(section, option string, dst *bool) error {
	v, ok := s.get(section, option)
	if !ok {
		return nil
	}
	b, reason := parseBool(v.value)
	if reason != "" {
		return s.invalid(section, option, reason)
	}
	*dst = b
	return nil
}

// intOption sets *dst from an integer option in [lo, hi], if set.
func intOption[T ~int | ~int64 | ~uint8 | ~uint16 | ~uint32](s settings, section, option string, lo, hi int64, dst *T) error {
	v, ok := s.get(section, option)
	if !ok {
		return nil
	}
	n, reason := parseInt(v.value, lo, hi)
	if reason != "" {
		return s.invalid(section, option, reason)
	}
	*dst = T(n)
	return nil
}

// bridge sets IntegrationBridge from [ovs] integration_bridge, if set.
func (s settings) bridge(c *Config) error {
	v, ok := s.get(sectionOVS, optBridge)
	if !ok {
		return nil
	}
	if reason := checkBridge(v.value); reason != "" {
		return s.invalid(sectionOVS, optBridge, reason)
	}
	c.IntegrationBridge = v.value
	return nil
}

// upstreams sets UpstreamServers from whichever spelling is set.
func (s settings) upstreams(c *Config) error {
	list, err := s.servers(optUpstreamServers, optUpstreamPort, optUpstreamPorts, false)
	if err != nil || list == nil {
		return err
	}
	c.UpstreamServers = list
	return nil
}

// clients sets ClientServers from whichever spelling is set.
func (s settings) clients(c *Config) error {
	list, err := s.servers(optClientServers, optClientPort, optClientPorts, true)
	if err != nil || list == nil {
		return err
	}
	c.ClientServers = list
	return nil
}

// servers reads one address list setting: the spec's spelling (addrsOpt
// holding IPs, portOpt their common port) or Neutron master's (pairsOpt
// holding ip:port items). It returns nil, nil when none of them is set.
// client selects the checks of service addresses over those of upstreams.
func (s settings) servers(addrsOpt, portOpt, pairsOpt string, client bool) ([]netip.AddrPort, error) {
	if v, ok := s.get(sectionDNS, pairsOpt); ok {
		list, reason := parseAddrPorts(v.value, client)
		if reason != "" {
			return nil, s.invalid(sectionDNS, pairsOpt, reason)
		}
		return list, nil
	}
	addrs, addrsSet := s.get(sectionDNS, addrsOpt)
	if _, ok := s.get(sectionDNS, portOpt); !ok && !addrsSet {
		return nil, nil
	}
	var port int64 = 53
	if err := intOption(s, sectionDNS, portOpt, 1, 65535, &port); err != nil {
		return nil, err
	}
	if !addrsSet {
		defaults := DefaultUpstreams
		if client {
			defaults = defaultClients
		}
		list := make([]netip.AddrPort, len(defaults))
		for i, d := range defaults {
			list[i] = netip.AddrPortFrom(d.Addr(), uint16(port))
		}
		return list, nil
	}
	list, reason := parseAddrs(addrs.value, uint16(port), client)
	if reason != "" {
		return nil, s.invalid(sectionDNS, addrsOpt, reason)
	}
	return list, nil
}

// openFlow sets OpenFlowConnection, defaulting to the bridge's
// management socket.
func (s settings) openFlow(c *Config) error {
	c.OpenFlowConnection = defaultOpenFlow(c.IntegrationBridge)
	v, ok := s.get(sectionDNS, optOpenFlow)
	if !ok {
		return nil
	}
	if reason := checkTarget(v.value); reason != "" {
		return s.invalid(sectionDNS, optOpenFlow, reason)
	}
	c.OpenFlowConnection = v.value
	return nil
}

// cookie sets FlowCookie, if set.
func (s settings) cookie(c *Config) error {
	v, ok := s.get(sectionDNS, optFlowCookie)
	if !ok {
		return nil
	}
	n, reason := parseCookie(v.value)
	if reason != "" {
		return s.invalid(sectionDNS, optFlowCookie, reason)
	}
	c.FlowCookie = n
	return nil
}
