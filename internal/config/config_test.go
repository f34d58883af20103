package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// parse builds a Config from one in-memory file named t.ini.
func parse(text string) (*Config, error) {
	return build([]source{{name: "t.ini", data: []byte(text)}})
}

// aps parses "ip:port" strings.
func aps(t *testing.T, s ...string) []netip.AddrPort {
	t.Helper()
	out := make([]netip.AddrPort, len(s))
	for i, v := range s {
		out[i] = netip.MustParseAddrPort(v)
	}
	return out
}

// withPort returns list with every port replaced by port.
func withPort(list []netip.AddrPort, port uint16) []netip.AddrPort {
	out := make([]netip.AddrPort, len(list))
	for i, ap := range list {
		out[i] = netip.AddrPortFrom(ap.Addr(), port)
	}
	return out
}

func TestDefaults(t *testing.T) {
	want := &Config{
		IntegrationBridge:        "br-int",
		UpstreamServers:          DefaultUpstreams,
		UpstreamTimeout:          5 * time.Second,
		ClientServers:            aps(t, "169.254.169.254:53", "[fd00::254]:53"),
		OpenFlowConnection:       "unix:/var/run/openvswitch/br-int.mgmt",
		FlowTable:                60,
		FlowPriority:             102,
		FlowCookie:               0x444e53,
		ControllerID:             53,
		MaxInflight:              1024,
		MaxInflightPerPort:       150,
		AnswerNeighbors:          true,
		ResponderMAC:             [6]byte{0x02, 0x44, 0x4e, 0x53, 0x00, 0x01},
		MaxUDPSize:               1232,
		MTU:                      1500,
		CacheSize:                10000,
		CacheMaxTTL:              24 * time.Hour,
		CacheNegativeTTL:         time.Hour,
		ServeStaleTTL:            24 * time.Hour,
		UpstreamPolicy:           "sequential",
		PortRateLimit:            1024,
		PortRateBurst:            200,
		Meters:                   true,
		MeterRate:                10000,
		MeterBurst:               100,
		PortMeterRate:            1024,
		PortMeterBurst:           100,
		OVSDBConnection:          "tcp:127.0.0.1:6640",
		DNSDomain:                "openstacklocal.",
		RecordsResyncInterval:    time.Minute,
		LocalTTL:                 30,
		LocalDomainAuthoritative: true,
		MetricsListen:            "127.0.0.1:9553",
		ControlSocket:            "/run/ovs-dns-forwarder/control.sock",
		QueryLogSampleRate:       1,
	}
	if got := Defaults(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Defaults() = %+v, want %+v", got, want)
	}
	got, err := Load(nil, nil)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Load(nil, nil) = %+v, %v; want the defaults", got, err)
	}
	for _, ap := range DefaultUpstreams {
		if ap.Port() != 53 || !ap.Addr().IsValid() || ap.Addr().Is4In6() {
			t.Errorf("DefaultUpstreams holds %v", ap)
		}
	}
	// Each call returns its own slices.
	a := Defaults()
	a.UpstreamServers[0] = netip.MustParseAddrPort("192.0.2.1:53")
	a.ClientServers[0] = netip.MustParseAddrPort("192.0.2.1:53")
	if b := Defaults(); !reflect.DeepEqual(b, want) {
		t.Fatalf("Defaults shares its slices: %+v", b)
	}
}

func TestOptions(t *testing.T) {
	cases := []struct {
		name string
		ini  string
		want func(c *Config) // applied to Defaults(); nil when err is set
		err  string          // the whole message, or "" for success
	}{
		// [DEFAULT] debug
		{"debug true", "[DEFAULT]\ndebug = true\n", func(c *Config) { c.Debug = true }, ""},
		{"debug Yes", "[DEFAULT]\ndebug = Yes\n", func(c *Config) { c.Debug = true }, ""},
		{"debug ON", "[DEFAULT]\ndebug = ON\n", func(c *Config) { c.Debug = true }, ""},
		{"debug 1", "[DEFAULT]\ndebug = 1\n", func(c *Config) { c.Debug = true }, ""},
		{"debug False", "[DEFAULT]\ndebug = False\n", func(c *Config) {}, ""},
		{"debug no", "[DEFAULT]\ndebug = no\n", func(c *Config) {}, ""},
		{"debug off", "[DEFAULT]\ndebug = off\n", func(c *Config) {}, ""},
		{"debug 0", "[DEFAULT]\ndebug = 0\n", func(c *Config) {}, ""},
		{"debug invalid", "[DEFAULT]\ndebug = maybe\n", nil,
			`config file t.ini:2: invalid value "maybe" for option [DEFAULT] debug: not a boolean (want true/false, yes/no, on/off or 1/0)`},
		{"debug empty", "[DEFAULT]\ndebug =\n", nil,
			`config file t.ini:2: invalid value "" for option [DEFAULT] debug: not a boolean (want true/false, yes/no, on/off or 1/0)`},
		{"debug in another section", "[ovs]\ndebug = true\n", func(c *Config) {}, ""},

		// [ovs] integration_bridge, and openflow_connection's default following it
		{"bridge", "[ovs]\nintegration_bridge = br-test\n", func(c *Config) {
			c.IntegrationBridge = "br-test"
			c.OpenFlowConnection = "unix:/var/run/openvswitch/br-test.mgmt"
		}, ""},
		{"bridge long", "[ovs]\nintegration_bridge = br-a-very-long-netdev-name\n", func(c *Config) {
			c.IntegrationBridge = "br-a-very-long-netdev-name"
			c.OpenFlowConnection = "unix:/var/run/openvswitch/br-a-very-long-netdev-name.mgmt"
		}, ""},
		{"bridge empty", "[ovs]\nintegration_bridge =\n", nil,
			`config file t.ini:2: invalid value "" for option [ovs] integration_bridge: empty bridge name`},
		{"bridge slash", "[ovs]\nintegration_bridge = ../br\n", nil,
			`config file t.ini:2: invalid value "../br" for option [ovs] integration_bridge: a bridge name cannot contain /`},
		{"bridge space", "[ovs]\nintegration_bridge = br int\n", nil,
			`config file t.ini:2: invalid value "br int" for option [ovs] integration_bridge: a bridge name cannot contain whitespace or control characters`},
		{"bridge with explicit openflow", "[ovs]\nintegration_bridge = br-x\n[dns_forwarder]\nopenflow_connection = tcp:127.0.0.1:6653\n", func(c *Config) {
			c.IntegrationBridge = "br-x"
			c.OpenFlowConnection = "tcp:127.0.0.1:6653"
		}, ""},

		// upstream_dns_servers / upstream_dns_port (the spec's spelling)
		{"upstream servers", "[dns_forwarder]\nupstream_dns_servers = 192.0.2.53, 2001:db8::53\n", func(c *Config) {
			c.UpstreamServers = aps(t, "192.0.2.53:53", "[2001:db8::53]:53")
		}, ""},
		{"upstream servers and port", "[dns_forwarder]\nupstream_dns_servers = 192.0.2.53,2001:db8::53,\nupstream_dns_port = 5353\n", func(c *Config) {
			c.UpstreamServers = aps(t, "192.0.2.53:5353", "[2001:db8::53]:5353")
		}, ""},
		{"upstream port alone keeps the default servers", "[dns_forwarder]\nupstream_dns_port = 5353\n", func(c *Config) {
			c.UpstreamServers = withPort(DefaultUpstreams, 5353)
		}, ""},
		{"upstream loopback and mapped", "[dns_forwarder]\nupstream_dns_servers = 127.0.0.1, ::ffff:192.0.2.9\n", func(c *Config) {
			c.UpstreamServers = aps(t, "127.0.0.1:53", "192.0.2.9:53")
		}, ""},
		{"upstream link-local with zone", "[dns_forwarder]\nupstream_dns_servers = fe80::1%eth0\n", func(c *Config) {
			c.UpstreamServers = aps(t, "[fe80::1%eth0]:53")
		}, ""},
		{"upstream servers empty", "[dns_forwarder]\nupstream_dns_servers =\n", nil,
			`config file t.ini:2: invalid value "" for option [dns_forwarder] upstream_dns_servers: empty list: the forwarder would have nowhere to send queries`},
		{"upstream servers only commas", "[dns_forwarder]\nupstream_dns_servers = ,\n", nil,
			`config file t.ini:2: invalid value "," for option [dns_forwarder] upstream_dns_servers: empty list: the forwarder would have nowhere to send queries`},
		{"upstream servers not an IP", "[dns_forwarder]\nupstream_dns_servers = 192.0.2.53, resolver.example\n", nil,
			`config file t.ini:2: invalid value "192.0.2.53, resolver.example" for option [dns_forwarder] upstream_dns_servers: item "resolver.example": not an IP address`},
		{"upstream servers with a port", "[dns_forwarder]\nupstream_dns_servers = 192.0.2.53:53\n", nil,
			`config file t.ini:2: invalid value "192.0.2.53:53" for option [dns_forwarder] upstream_dns_servers: item "192.0.2.53:53": not an IP address (this option takes addresses; the port has an option of its own)`},
		{"upstream servers empty item", "[dns_forwarder]\nupstream_dns_servers = 192.0.2.53,,192.0.2.54\n", nil,
			`config file t.ini:2: invalid value "192.0.2.53,,192.0.2.54" for option [dns_forwarder] upstream_dns_servers: empty item`},
		{"upstream servers duplicate", "[dns_forwarder]\nupstream_dns_servers = 192.0.2.53, ::ffff:192.0.2.53\n", nil,
			`config file t.ini:2: invalid value "192.0.2.53, ::ffff:192.0.2.53" for option [dns_forwarder] upstream_dns_servers: item "::ffff:192.0.2.53": listed twice`},
		{"upstream servers unspecified", "[dns_forwarder]\nupstream_dns_servers = 0.0.0.0\n", nil,
			`config file t.ini:2: invalid value "0.0.0.0" for option [dns_forwarder] upstream_dns_servers: item "0.0.0.0": unspecified address`},
		{"upstream servers multicast", "[dns_forwarder]\nupstream_dns_servers = ff02::fb\n", nil,
			`config file t.ini:2: invalid value "ff02::fb" for option [dns_forwarder] upstream_dns_servers: item "ff02::fb": multicast address`},
		{"upstream port not an integer", "[dns_forwarder]\nupstream_dns_port = abc\n", nil,
			`config file t.ini:2: invalid value "abc" for option [dns_forwarder] upstream_dns_port: not an integer`},
		{"upstream port 0", "[dns_forwarder]\nupstream_dns_port = 0\n", nil,
			`config file t.ini:2: invalid value "0" for option [dns_forwarder] upstream_dns_port: out of range (want 1 to 65535)`},
		{"upstream port too big", "[dns_forwarder]\nupstream_dns_port = 65536\n", nil,
			`config file t.ini:2: invalid value "65536" for option [dns_forwarder] upstream_dns_port: out of range (want 1 to 65535)`},
		{"upstream port huge", "[dns_forwarder]\nupstream_dns_port = 99999999999999999999999\n", nil,
			`config file t.ini:2: invalid value "99999999999999999999999" for option [dns_forwarder] upstream_dns_port: out of range (want 1 to 65535)`},
		{"upstream port empty", "[dns_forwarder]\nupstream_dns_port =\n", nil,
			`config file t.ini:2: invalid value "" for option [dns_forwarder] upstream_dns_port: empty, not an integer (delete the line to get the default)`},

		// upstream_dns_server_ports (Neutron master's spelling)
		{"upstream pairs", "[dns_forwarder]\nupstream_dns_server_ports = 192.0.2.53:53, [2001:db8::53]:5353\n", func(c *Config) {
			c.UpstreamServers = aps(t, "192.0.2.53:53", "[2001:db8::53]:5353")
		}, ""},
		{"upstream pairs same address two ports", "[dns_forwarder]\nupstream_dns_server_ports = 127.0.0.1:53,127.0.0.1:5353\n", func(c *Config) {
			c.UpstreamServers = aps(t, "127.0.0.1:53", "127.0.0.1:5353")
		}, ""},
		{"upstream pairs mapped", "[dns_forwarder]\nupstream_dns_server_ports = [::ffff:192.0.2.53]:53\n", func(c *Config) {
			c.UpstreamServers = aps(t, "192.0.2.53:53")
		}, ""},
		{"upstream pairs empty", "[dns_forwarder]\nupstream_dns_server_ports =\n", nil,
			`config file t.ini:2: invalid value "" for option [dns_forwarder] upstream_dns_server_ports: empty list: the forwarder would have nowhere to send queries`},
		{"upstream pairs bare IPv4", "[dns_forwarder]\nupstream_dns_server_ports = 192.0.2.53\n", nil,
			`config file t.ini:2: invalid value "192.0.2.53" for option [dns_forwarder] upstream_dns_server_ports: item "192.0.2.53": missing port (write 192.0.2.53:53 for port 53)`},
		{"upstream pairs bare IPv6", "[dns_forwarder]\nupstream_dns_server_ports = 2001:db8::1:53\n", nil,
			`config file t.ini:2: invalid value "2001:db8::1:53" for option [dns_forwarder] upstream_dns_server_ports: item "2001:db8::1:53": missing port (write [2001:db8::1:53]:53 for port 53)`},
		{"upstream pairs bracketed without port", "[dns_forwarder]\nupstream_dns_server_ports = [2001:db8::53]\n", nil,
			`config file t.ini:2: invalid value "[2001:db8::53]" for option [dns_forwarder] upstream_dns_server_ports: item "[2001:db8::53]": missing port (write [2001:db8::53]:53 for port 53)`},
		{"upstream pairs host name", "[dns_forwarder]\nupstream_dns_server_ports = resolver.example:53\n", nil,
			`config file t.ini:2: invalid value "resolver.example:53" for option [dns_forwarder] upstream_dns_server_ports: item "resolver.example:53": not an IP address: "resolver.example"`},
		{"upstream pairs garbage", "[dns_forwarder]\nupstream_dns_server_ports = x\n", nil,
			`config file t.ini:2: invalid value "x" for option [dns_forwarder] upstream_dns_server_ports: item "x": not ip:port or [ipv6]:port`},
		{"upstream pairs port 0", "[dns_forwarder]\nupstream_dns_server_ports = 192.0.2.53:0\n", nil,
			`config file t.ini:2: invalid value "192.0.2.53:0" for option [dns_forwarder] upstream_dns_server_ports: item "192.0.2.53:0": port "0": out of range (want 1 to 65535)`},
		{"upstream pairs port text", "[dns_forwarder]\nupstream_dns_server_ports = 192.0.2.53:dns\n", nil,
			`config file t.ini:2: invalid value "192.0.2.53:dns" for option [dns_forwarder] upstream_dns_server_ports: item "192.0.2.53:dns": port "dns": not an integer`},
		{"upstream pairs duplicate", "[dns_forwarder]\nupstream_dns_server_ports = 192.0.2.53:53, 192.0.2.53:53\n", nil,
			`config file t.ini:2: invalid value "192.0.2.53:53, 192.0.2.53:53" for option [dns_forwarder] upstream_dns_server_ports: item "192.0.2.53:53": listed twice`},
		{"upstream pairs broadcast", "[dns_forwarder]\nupstream_dns_server_ports = 255.255.255.255:53\n", nil,
			`config file t.ini:2: invalid value "255.255.255.255:53" for option [dns_forwarder] upstream_dns_server_ports: item "255.255.255.255:53": broadcast address`},

		// upstream_query_timeout / upstream_dns_query_timeout
		{"timeout spec", "[dns_forwarder]\nupstream_query_timeout = 2\n", func(c *Config) { c.UpstreamTimeout = 2 * time.Second }, ""},
		{"timeout master", "[dns_forwarder]\nupstream_dns_query_timeout = 1\n", func(c *Config) { c.UpstreamTimeout = time.Second }, ""},
		{"timeout max", "[dns_forwarder]\nupstream_dns_query_timeout = 3600\n", func(c *Config) { c.UpstreamTimeout = time.Hour }, ""},
		{"timeout 0", "[dns_forwarder]\nupstream_query_timeout = 0\n", nil,
			`config file t.ini:2: invalid value "0" for option [dns_forwarder] upstream_query_timeout: out of range (want 1 to 3600)`},
		{"timeout master negative", "[dns_forwarder]\nupstream_dns_query_timeout = -5\n", nil,
			`config file t.ini:2: invalid value "-5" for option [dns_forwarder] upstream_dns_query_timeout: out of range (want 1 to 3600)`},
		{"timeout fraction", "[dns_forwarder]\nupstream_query_timeout = 1.5\n", nil,
			`config file t.ini:2: invalid value "1.5" for option [dns_forwarder] upstream_query_timeout: not an integer`},

		// client_dns_servers / client_dns_port (the spec's spelling)
		{"clients", "[dns_forwarder]\nclient_dns_servers = 169.254.169.254\n", func(c *Config) {
			c.ClientServers = aps(t, "169.254.169.254:53")
		}, ""},
		{"clients and port", "[dns_forwarder]\nclient_dns_servers = 169.254.169.254, fd00::254\nclient_dns_port = 5353\n", func(c *Config) {
			c.ClientServers = aps(t, "169.254.169.254:5353", "[fd00::254]:5353")
		}, ""},
		{"client port alone", "[dns_forwarder]\nclient_dns_port = 5353\n", func(c *Config) {
			c.ClientServers = aps(t, "169.254.169.254:5353", "[fd00::254]:5353")
		}, ""},
		{"clients empty", "[dns_forwarder]\nclient_dns_servers =\n", nil,
			`config file t.ini:2: invalid value "" for option [dns_forwarder] client_dns_servers: empty list: no service address to answer on`},
		{"clients not an IP", "[dns_forwarder]\nclient_dns_servers = 169.254.169.254, not-an-ip\n", nil,
			`config file t.ini:2: invalid value "169.254.169.254, not-an-ip" for option [dns_forwarder] client_dns_servers: item "not-an-ip": not an IP address`},
		{"clients loopback", "[dns_forwarder]\nclient_dns_servers = ::1\n", nil,
			`config file t.ini:2: invalid value "::1" for option [dns_forwarder] client_dns_servers: item "::1": loopback address (no VM sends to it through the bridge)`},
		{"clients multicast", "[dns_forwarder]\nclient_dns_servers = 224.0.0.251\n", nil,
			`config file t.ini:2: invalid value "224.0.0.251" for option [dns_forwarder] client_dns_servers: item "224.0.0.251": multicast address`},
		{"clients zone", "[dns_forwarder]\nclient_dns_servers = fe80::53%eth0\n", nil,
			`config file t.ini:2: invalid value "fe80::53%eth0" for option [dns_forwarder] client_dns_servers: item "fe80::53%eth0": a service address cannot have a zone`},
		{"clients duplicate", "[dns_forwarder]\nclient_dns_servers = 169.254.169.254,169.254.169.254\n", nil,
			`config file t.ini:2: invalid value "169.254.169.254,169.254.169.254" for option [dns_forwarder] client_dns_servers: item "169.254.169.254": listed twice`},
		{"client port invalid", "[dns_forwarder]\nclient_dns_port = 70000\n", nil,
			`config file t.ini:2: invalid value "70000" for option [dns_forwarder] client_dns_port: out of range (want 1 to 65535)`},

		// client_dns_server_ports (Neutron master's spelling)
		{"client pairs", "[dns_forwarder]\nclient_dns_server_ports = 169.254.169.254:53, [fd00::254]:53, 169.254.169.254:5353\n", func(c *Config) {
			c.ClientServers = aps(t, "169.254.169.254:53", "[fd00::254]:53", "169.254.169.254:5353")
		}, ""},
		{"client pairs empty", "[dns_forwarder]\nclient_dns_server_ports =\n", nil,
			`config file t.ini:2: invalid value "" for option [dns_forwarder] client_dns_server_ports: empty list: no service address to answer on`},
		{"client pairs unspecified", "[dns_forwarder]\nclient_dns_server_ports = [::]:53\n", nil,
			`config file t.ini:2: invalid value "[::]:53" for option [dns_forwarder] client_dns_server_ports: item "[::]:53": unspecified address`},

		// openflow_connection
		{"openflow unix", "[dns_forwarder]\nopenflow_connection = unix:/run/ovs/br-int.mgmt\n", func(c *Config) {
			c.OpenFlowConnection = "unix:/run/ovs/br-int.mgmt"
		}, ""},
		{"openflow tcp", "[dns_forwarder]\nopenflow_connection = tcp:127.0.0.1:6653\n", func(c *Config) {
			c.OpenFlowConnection = "tcp:127.0.0.1:6653"
		}, ""},
		{"openflow tcp IPv6", "[dns_forwarder]\nopenflow_connection = tcp:[::1]:6653\n", func(c *Config) {
			c.OpenFlowConnection = "tcp:[::1]:6653"
		}, ""},
		{"openflow empty", "[dns_forwarder]\nopenflow_connection =\n", nil,
			`config file t.ini:2: invalid value "" for option [dns_forwarder] openflow_connection: want unix:PATH or tcp:HOST:PORT`},
		{"openflow ssl", "[dns_forwarder]\nopenflow_connection = ssl:192.0.2.1:6653\n", nil,
			`config file t.ini:2: invalid value "ssl:192.0.2.1:6653" for option [dns_forwarder] openflow_connection: want unix:PATH or tcp:HOST:PORT`},
		{"openflow unix empty", "[dns_forwarder]\nopenflow_connection = unix:\n", nil,
			`config file t.ini:2: invalid value "unix:" for option [dns_forwarder] openflow_connection: empty socket path (want unix:PATH or tcp:HOST:PORT)`},
		{"openflow tcp no port", "[dns_forwarder]\nopenflow_connection = tcp:127.0.0.1\n", nil,
			`config file t.ini:2: invalid value "tcp:127.0.0.1" for option [dns_forwarder] openflow_connection: want unix:PATH or tcp:HOST:PORT ([ADDR]:PORT for IPv6)`},
		{"openflow tcp no host", "[dns_forwarder]\nopenflow_connection = tcp::6653\n", nil,
			`config file t.ini:2: invalid value "tcp::6653" for option [dns_forwarder] openflow_connection: empty host (want unix:PATH or tcp:HOST:PORT)`},
		{"openflow tcp bad port", "[dns_forwarder]\nopenflow_connection = tcp:127.0.0.1:0\n", nil,
			`config file t.ini:2: invalid value "tcp:127.0.0.1:0" for option [dns_forwarder] openflow_connection: port "0": out of range (want 1 to 65535)`},

		// flow_table
		{"table 0", "[dns_forwarder]\nflow_table = 0\n", func(c *Config) { c.FlowTable = 0 }, ""},
		{"table 253", "[dns_forwarder]\nflow_table = 253\n", func(c *Config) { c.FlowTable = 253 }, ""},
		{"table 254", "[dns_forwarder]\nflow_table = 254\n", nil,
			`config file t.ini:2: invalid value "254" for option [dns_forwarder] flow_table: out of range (want 0 to 253)`},
		{"table text", "[dns_forwarder]\nflow_table = sixty\n", nil,
			`config file t.ini:2: invalid value "sixty" for option [dns_forwarder] flow_table: not an integer`},

		// flow_priority
		{"priority 0", "[dns_forwarder]\nflow_priority = 0\n", func(c *Config) { c.FlowPriority, c.AnswerNeighbors = 0, false }, ""},
		{"neighbors under neutron's flows", "[dns_forwarder]\nflow_priority = 101\nanswer_neighbors = true\n", nil,
			"config file t.ini:3: invalid value \"true\" for option [dns_forwarder] answer_neighbors: needs flow_priority 102 or more (it is 101)"},
		{"neighbors off", "[dns_forwarder]\nanswer_neighbors = false\n", func(c *Config) { c.AnswerNeighbors = false }, ""},
		{"responder mac", "[dns_forwarder]\nresponder_mac = 02:00:00:00:00:35\n", func(c *Config) { c.ResponderMAC = [6]byte{2, 0, 0, 0, 0, 0x35} }, ""},
		{"responder mac multicast", "[dns_forwarder]\nresponder_mac = 01:00:5e:00:00:01\n", nil,
			"config file t.ini:2: invalid value \"01:00:5e:00:00:01\" for option [dns_forwarder] responder_mac: a multicast MAC; want a unicast one"},
		{"responder mac bad", "[dns_forwarder]\nresponder_mac = gateway\n", nil,
			"config file t.ini:2: invalid value \"gateway\" for option [dns_forwarder] responder_mac: not a MAC address (want xx:xx:xx:xx:xx:xx)"},
		{"priority 65535", "[dns_forwarder]\nflow_priority = 65535\n", func(c *Config) { c.FlowPriority = 65535 }, ""},
		{"priority too big", "[dns_forwarder]\nflow_priority = 65536\n", nil,
			`config file t.ini:2: invalid value "65536" for option [dns_forwarder] flow_priority: out of range (want 0 to 65535)`},
		{"priority negative", "[dns_forwarder]\nflow_priority = -1\n", nil,
			`config file t.ini:2: invalid value "-1" for option [dns_forwarder] flow_priority: out of range (want 0 to 65535)`},

		// flow_cookie
		{"cookie hex", "[dns_forwarder]\nflow_cookie = 0xABCDEF\n", func(c *Config) { c.FlowCookie = 0xabcdef }, ""},
		{"cookie HEX prefix", "[dns_forwarder]\nflow_cookie = 0X10\n", func(c *Config) { c.FlowCookie = 16 }, ""},
		{"cookie decimal", "[dns_forwarder]\nflow_cookie = 1234\n", func(c *Config) { c.FlowCookie = 1234 }, ""},
		{"cookie largest", "[dns_forwarder]\nflow_cookie = 0xfffffffffffffffe\n", func(c *Config) { c.FlowCookie = 0xfffffffffffffffe }, ""},
		{"cookie 0", "[dns_forwarder]\nflow_cookie = 0x0\n", nil,
			`config file t.ini:2: invalid value "0x0" for option [dns_forwarder] flow_cookie: must not be 0: the daemon finds and removes its flows by their cookie`},
		{"cookie all ones", "[dns_forwarder]\nflow_cookie = 18446744073709551615\n", nil,
			`config file t.ini:2: invalid value "18446744073709551615" for option [dns_forwarder] flow_cookie: 0xffffffffffffffff is reserved by OpenFlow`},
		{"cookie too big", "[dns_forwarder]\nflow_cookie = 0x10000000000000000\n", nil,
			`config file t.ini:2: invalid value "0x10000000000000000" for option [dns_forwarder] flow_cookie: out of range (want at most 64 bits)`},
		{"cookie text", "[dns_forwarder]\nflow_cookie = 0xdns\n", nil,
			`config file t.ini:2: invalid value "0xdns" for option [dns_forwarder] flow_cookie: not a number (want decimal or 0x-prefixed hex)`},
		{"cookie negative", "[dns_forwarder]\nflow_cookie = -1\n", nil,
			`config file t.ini:2: invalid value "-1" for option [dns_forwarder] flow_cookie: not a number (want decimal or 0x-prefixed hex)`},

		// controller_id
		{"controller id", "[dns_forwarder]\ncontroller_id = 65535\n", func(c *Config) { c.ControllerID = 65535 }, ""},
		{"controller id 0", "[dns_forwarder]\ncontroller_id = 0\n", nil,
			`config file t.ini:2: invalid value "0" for option [dns_forwarder] controller_id: out of range (want 1 to 65535)`},

		// max_inflight
		{"inflight 1", "[dns_forwarder]\nmax_inflight = 1\n", func(c *Config) { c.MaxInflight = 1 }, ""},
		{"inflight max", "[dns_forwarder]\nmax_inflight = 1048576\n", func(c *Config) { c.MaxInflight = 1 << 20 }, ""},
		{"inflight 0", "[dns_forwarder]\nmax_inflight = 0\n", nil,
			`config file t.ini:2: invalid value "0" for option [dns_forwarder] max_inflight: out of range (want 1 to 1048576)`},

		// max_udp_size
		{"udp size 512", "[dns_forwarder]\nmax_udp_size = 512\n", func(c *Config) { c.MaxUDPSize = 512 }, ""},
		{"udp size 4096", "[dns_forwarder]\nmax_udp_size = 4096\n", func(c *Config) { c.MaxUDPSize = 4096 }, ""},
		{"udp size 511", "[dns_forwarder]\nmax_udp_size = 511\n", nil,
			`config file t.ini:2: invalid value "511" for option [dns_forwarder] max_udp_size: out of range (want 512 to 65535)`},

		// mtu
		{"mtu 1280", "[dns_forwarder]\nmtu = 1280\n", func(c *Config) { c.MTU = 1280 }, ""},
		{"mtu 9000", "[dns_forwarder]\nmtu = 9000\n", func(c *Config) { c.MTU = 9000 }, ""},
		{"mtu 100", "[dns_forwarder]\nmtu = 100\n", nil,
			`config file t.ini:2: invalid value "100" for option [dns_forwarder] mtu: out of range (want 1280 to 65535)`},
		{"mtu too big", "[dns_forwarder]\nmtu = 65536\n", nil,
			`config file t.ini:2: invalid value "65536" for option [dns_forwarder] mtu: out of range (want 1280 to 65535)`},

		// unknown options and sections, wrong sections
		{"unknown option", "[dns_forwarder]\nupstream_dns_serverz = x\n", func(c *Config) {}, ""},
		{"option in the wrong section", "[ovs]\nmtu = 1\n[DEFAULT]\nflow_table = 999\n", func(c *Config) {}, ""},
		{"option names are case-sensitive", "[dns_forwarder]\nMTU = 1\n", func(c *Config) {}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(tc.ini)
			if tc.err != "" {
				if err == nil {
					t.Fatalf("got %+v, want error %s", got, tc.err)
				}
				if err.Error() != tc.err {
					t.Fatalf("error\n got: %s\nwant: %s", err, tc.err)
				}
				var ce *Error
				if !errors.As(err, &ce) {
					t.Fatalf("error %T is not *Error", err)
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

func TestErrorFields(t *testing.T) {
	_, err := parse("[DNS_Forwarder]\n\nupstream_dns_port = abc\n")
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want *Error", err)
	}
	want := Error{File: "t.ini", Line: 3, Section: "dns_forwarder", Option: "upstream_dns_port", Value: "abc", Reason: "not an integer"}
	if *ce != want {
		t.Fatalf("got %+v, want %+v", *ce, want)
	}
}

func TestBothSpellings(t *testing.T) {
	spec, err := parse(`[dns_forwarder]
upstream_dns_servers = 192.0.2.53, 2001:db8::53
upstream_dns_port = 5353
upstream_query_timeout = 3
client_dns_servers = 169.254.169.254, fd00::254
client_dns_port = 53
`)
	if err != nil {
		t.Fatal(err)
	}
	master, err := parse(`[dns_forwarder]
upstream_dns_server_ports = 192.0.2.53:5353, [2001:db8::53]:5353
upstream_dns_query_timeout = 3
client_dns_server_ports = 169.254.169.254:53, [fd00::254]:53
`)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(spec, master) {
		t.Fatalf("spec spelling %+v\n!= master spelling %+v", spec, master)
	}
	if spec.UpstreamTimeout != 3*time.Second || len(spec.UpstreamServers) != 2 || spec.UpstreamServers[1].Port() != 5353 {
		t.Fatalf("unexpected %+v", spec)
	}
}

func TestConflicts(t *testing.T) {
	cases := []struct {
		name  string
		files []string
		err   string
	}{
		{"upstream servers", []string{"[dns_forwarder]\nupstream_dns_servers = 192.0.2.53\nupstream_dns_server_ports = 192.0.2.53:53\n"},
			`config file f0.ini:3: options [dns_forwarder] upstream_dns_server_ports and [dns_forwarder] upstream_dns_servers conflict: ` +
				`the Neutron spec's and Neutron master's spellings of one setting (upstream_dns_servers is set at config file f0.ini:2); set only one`},
		{"upstream port", []string{"[dns_forwarder]\nupstream_dns_server_ports = 192.0.2.53:53\nupstream_dns_port = 53\n"},
			`config file f0.ini:3: options [dns_forwarder] upstream_dns_port and [dns_forwarder] upstream_dns_server_ports conflict: ` +
				`the Neutron spec's and Neutron master's spellings of one setting (upstream_dns_server_ports is set at config file f0.ini:2); set only one`},
		{"timeout across files", []string{"[dns_forwarder]\nupstream_query_timeout = 2\n", "[Dns_Forwarder]\nupstream_dns_query_timeout = 2\n"},
			`config file f1.ini:2: options [dns_forwarder] upstream_dns_query_timeout and [dns_forwarder] upstream_query_timeout conflict: ` +
				`the Neutron spec's and Neutron master's spellings of one setting (upstream_query_timeout is set at config file f0.ini:2); set only one`},
		{"client port", []string{"[dns_forwarder]\nclient_dns_port = 53\n", "[dns_forwarder]\nclient_dns_server_ports = 169.254.169.254:53\n"},
			`config file f1.ini:2: options [dns_forwarder] client_dns_server_ports and [dns_forwarder] client_dns_port conflict: ` +
				`the Neutron spec's and Neutron master's spellings of one setting (client_dns_port is set at config file f0.ini:2); set only one`},
		{"client servers, even with a bad value", []string{"[dns_forwarder]\nclient_dns_server_ports = x\nclient_dns_servers = y\n"},
			`config file f0.ini:3: options [dns_forwarder] client_dns_servers and [dns_forwarder] client_dns_server_ports conflict: ` +
				`the Neutron spec's and Neutron master's spellings of one setting (client_dns_server_ports is set at config file f0.ini:2); set only one`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var srcs []source
			for i, f := range tc.files {
				srcs = append(srcs, source{name: "f" + string(rune('0'+i)) + ".ini", data: []byte(f)})
			}
			_, err := build(srcs)
			if err == nil || err.Error() != tc.err {
				t.Fatalf("error\n got: %v\nwant: %s", err, tc.err)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Conflict == "" || ce.Option == "" {
				t.Fatalf("error %+v lacks the two options", err)
			}
		})
	}
	// Different settings in different spellings do not conflict.
	c, err := parse("[dns_forwarder]\nupstream_dns_server_ports = 192.0.2.53:53\nupstream_query_timeout = 2\nclient_dns_servers = 169.254.169.254\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.UpstreamTimeout != 2*time.Second || len(c.ClientServers) != 1 || len(c.UpstreamServers) != 1 {
		t.Fatalf("mixed spellings: %+v", c)
	}
}

// write creates dir/name with text and returns its path.
func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadOrder(t *testing.T) {
	dir := t.TempDir()
	confDir := filepath.Join(dir, "conf.d")
	if err := os.Mkdir(confDir, 0o700); err != nil {
		t.Fatal(err)
	}
	first := write(t, dir, "first.ini", "[dns_forwarder]\nmtu = 1400\nflow_table = 61\nflow_priority = 1\nmax_inflight = 7\n")
	second := write(t, dir, "second.ini", "[DNS_FORWARDER]\nmtu = 1450\nflow_table = 62\nflow_priority = 2\n")
	// Lexical order within the directory: 10 before 20 before b; files
	// not ending in .conf and hidden ones are skipped.
	write(t, confDir, "20-late.conf", "[dns_forwarder]\nflow_table = 64\n")
	write(t, confDir, "10-early.conf", "[dns_forwarder]\nflow_table = 63\nflow_priority = 3\n")
	write(t, confDir, "b.conf", "[dns_forwarder]\nflow_priority = 4\n")
	write(t, confDir, "zz.ini", "[dns_forwarder]\nflow_priority = 99\n")
	write(t, confDir, ".hidden.conf", "[dns_forwarder]\nflow_priority = 98\n")
	write(t, confDir, "zz.conf.bak", "[dns_forwarder]\nflow_priority = 97\n")

	c, err := Load([]string{first, second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.MTU != 1450 || c.FlowTable != 62 || c.FlowPriority != 2 || c.MaxInflight != 7 {
		t.Fatalf("files: %+v", c)
	}
	c, err = Load([]string{second, first}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.MTU != 1400 || c.FlowTable != 61 || c.FlowPriority != 1 {
		t.Fatalf("files reversed: %+v", c)
	}
	c, err = Load([]string{first, second}, []string{confDir})
	if err != nil {
		t.Fatal(err)
	}
	if c.MTU != 1450 || c.FlowTable != 64 || c.FlowPriority != 4 || c.MaxInflight != 7 {
		t.Fatalf("files and dir: %+v", c)
	}
	// Only a dir.
	c, err = Load(nil, []string{confDir})
	if err != nil {
		t.Fatal(err)
	}
	if c.MTU != 1500 || c.FlowTable != 64 || c.FlowPriority != 4 {
		t.Fatalf("dir only: %+v", c)
	}
	// Within one file the last assignment wins.
	c, err = parse("[dns_forwarder]\nmtu = 1300\n[ovs]\n[dns_forwarder]\nmtu = 1301\n")
	if err != nil || c.MTU != 1301 {
		t.Fatalf("last assignment: %+v, %v", c, err)
	}
	// A later valid value replaces an earlier invalid one.
	bad := write(t, dir, "bad.ini", "[dns_forwarder]\nmtu = tiny\n")
	good := write(t, dir, "good.ini", "[dns_forwarder]\nmtu = 1500\n")
	if _, err := Load([]string{bad, good}, nil); err != nil {
		t.Fatalf("overridden invalid value: %v", err)
	}
	if _, err := Load([]string{good, bad}, nil); err == nil || err.Error() != "config file "+bad+`:2: invalid value "tiny" for option [dns_forwarder] mtu: not an integer` {
		t.Fatalf("invalid value last: %v", err)
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	good := write(t, dir, "good.ini", "[ovs]\n")
	missing := filepath.Join(dir, "missing.ini")
	cases := []struct {
		name        string
		files, dirs []string
		err         string
	}{
		{"missing file", []string{good, missing}, nil, "config file " + missing + ": no such file"},
		{"missing dir", []string{good}, []string{missing}, "config dir " + missing + ": no such directory"},
		{"dir given as file", []string{dir}, nil, "config file " + dir + ": is a directory"},
		{"file given as dir", nil, []string{good}, "config dir " + good + ": not a directory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.files, tc.dirs)
			if err == nil || err.Error() != tc.err {
				t.Fatalf("got %v, want %s", err, tc.err)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not *Error", err)
			}
		})
	}
	ce := &Error{File: "/tmp/a\nb.ini", Reason: "no such file"}
	if got := ce.Error(); strings.Contains(got, "\n") {
		t.Fatalf("file name with a newline: %q", got)
	}
}

// agentIni resembles a real openvswitch_agent.ini: generated comments,
// options and sections the daemon does not know, and a [dns_forwarder]
// section appended by the operator.
const agentIni = `[DEFAULT]

#
# From oslo.log
#

# If set to true, the logging level will be set to DEBUG instead of the
# default INFO level. (boolean value)
# Note: This option can be changed without restarting.
#debug = false
debug = True

# The name of a logging configuration file. (string value)
# Deprecated group/name - [DEFAULT]/log_config
#log_config_append = <None>
log_dir = /var/log/neutron
transport_url = rabbit://guest:guest@controller:5672/

[agent]
tunnel_types = vxlan
l2_population = true
extensions = qos,log
root_helper = sudo neutron-rootwrap /etc/neutron/rootwrap.conf

[network_log]

[ovs]
#
# From neutron.ml2.ovs.agent
#

# Integration bridge to use. Do not change this parameter unless you have a
# good reason to. This is the name of the OVS integration bridge. (string
# value)
#integration_bridge = br-int
integration_bridge = br-int0
local_ip = 192.0.2.10
bridge_mappings = physnet1:br-ex,physnet2:br-vlan
datapath_type = system
of_interface = native
ovsdb_connection = tcp:127.0.0.1:6640
of_listen_address = 127.0.0.1
of_listen_port = 6633

[securitygroup]
firewall_driver = openvswitch
enable_security_group = true

[vxlan]
local_ip = 192.0.2.10

; operator's addition
[dns_forwarder]
upstream_dns_server_ports = 192.0.2.53:53,
    [2001:db8::53]:53
upstream_dns_query_timeout: 2
flow_cookie = 0x444e5301
`

func TestAgentIni(t *testing.T) {
	c, err := parse(agentIni)
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Debug = true
	want.IntegrationBridge = "br-int0"
	want.OpenFlowConnection = "unix:/var/run/openvswitch/br-int0.mgmt"
	want.UpstreamServers = aps(t, "192.0.2.53:53", "[2001:db8::53]:53")
	want.UpstreamTimeout = 2 * time.Second
	want.FlowCookie = 0x444e5301
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
}
