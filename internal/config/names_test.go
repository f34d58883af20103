package config

import (
	"testing"
	"time"
)

func TestNamesOptions(t *testing.T) {
	runOptionCases(t, "", []optionCase{
		{"domain and ovsdb", "[DEFAULT]\ndns_domain = Cloud.Example.\n[ovs]\novsdb_connection = unix:/run/openvswitch/db.sock\n", func(c *Config) {
			c.DNSDomain, c.OVSDBConnection = "cloud.example.", "unix:/run/openvswitch/db.sock"
		}, ""},
		{"local options", "[dns_forwarder]\nrecords_resync_interval = 300\nlocal_ttl = 0\nlocal_domain_authoritative = false\nintercept_all_dns = true\n[neutron]\nauth_type = noauth\nendpoint_override = http://127.0.0.1:9696\n", func(c *Config) {
			c.RecordsResyncInterval, c.LocalTTL, c.LocalDomainAuthoritative, c.InterceptAllDNS = 5*time.Minute, 0, false, true
			c.Neutron = Neutron{AuthType: AuthNoAuth, EndpointOverride: "http://127.0.0.1:9696"}
		}, ""},
		{"intercept without neutron", "[dns_forwarder]\nintercept_all_dns = true\n", nil,
			`config file t.ini:2: invalid value "true" for option [dns_forwarder] intercept_all_dns: needs [neutron] auth_type: only local names are answered from intercepted queries`},
		{"intercept under neutron's flows", "[dns_forwarder]\nflow_priority = 101\nintercept_all_dns = true\n[neutron]\nauth_type = noauth\nendpoint_override = http://127.0.0.1:9696\n", nil,
			`config file t.ini:3: invalid value "true" for option [dns_forwarder] intercept_all_dns: needs flow_priority 102 or more (it is 101)`},
		{"noauth", "[neutron]\nauth_type = noauth\nendpoint_override = http://controller:9696/v2.0\n", func(c *Config) {
			c.Neutron = Neutron{AuthType: AuthNoAuth, EndpointOverride: "http://controller:9696/v2.0"}
		}, ""},
		{"password", "[neutron]\nauth_type = password\nauth_url = https://keystone:5000/v3\nusername = neutron\npassword = s3cret\nproject_name = service\nuser_domain_name = Default\nproject_domain_name = Default\nregion_name = RegionOne\nvalid_interfaces = internal, public\ninsecure = true\n", func(c *Config) {
			c.Neutron = Neutron{AuthType: AuthPassword, AuthURL: "https://keystone:5000/v3", Username: "neutron", Password: "s3cret",
				ProjectName: "service", UserDomainName: "Default", ProjectDomainName: "Default", RegionName: "RegionOne",
				ValidInterfaces: []string{"internal", "public"}, Insecure: true}
		}, ""},
		{"noauth without endpoint", "[neutron]\nauth_type = noauth\n", nil,
			`config file t.ini:2: invalid value "noauth" for option [neutron] auth_type: noauth needs endpoint_override (the Neutron endpoint)`},
		{"bad auth type", "[neutron]\nauth_type = token\n", nil,
			`config file t.ini:2: invalid value "token" for option [neutron] auth_type: not password or noauth`},
		{"bad url", "[neutron]\nauth_type = noauth\nendpoint_override = controller:9696\n", nil,
			`config file t.ini:3: invalid value "controller:9696" for option [neutron] endpoint_override: not an http:// or https:// URL`},
		{"bad interface", "[neutron]\nvalid_interfaces = private\n", nil,
			`config file t.ini:2: invalid value "private" for option [neutron] valid_interfaces: not a list of public, internal and admin`},
		{"bad domain", "[DEFAULT]\ndns_domain = exa mple.com\n", nil,
			`config file t.ini:2: invalid value "exa mple.com" for option [DEFAULT] dns_domain: not a host name (letters, digits, - and _ only)`},
		{"bad ovsdb", "[ovs]\novsdb_connection = ptcp:6640\n", nil,
			`config file t.ini:2: invalid value "ptcp:6640" for option [ovs] ovsdb_connection: want unix:PATH or tcp:HOST:PORT`},
		{"resync zero", "[dns_forwarder]\nrecords_resync_interval = 0\n", nil,
			`config file t.ini:2: invalid value "0" for option [dns_forwarder] records_resync_interval: out of range (want 1 to 604800)`},
	})
}
