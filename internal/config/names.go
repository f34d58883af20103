package config

import (
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Sections and options of the cloud's own names: where ports come from
// (OVSDB), where names come from (the Neutron API, with Nova's [neutron]
// keystoneauth options), and how they are answered.
const (
	sectionNeutron = "neutron"

	optOVSDB              = "ovsdb_connection"
	optDNSDomain          = "dns_domain"
	optResyncInterval     = "records_resync_interval"
	optLocalTTL           = "local_ttl"
	optLocalAuthoritative = "local_domain_authoritative"
	optInterceptAll       = "intercept_all_dns"
	optAnswerNeighbors    = "answer_neighbors"
	optResponderMAC       = "responder_mac"

	optAuthType          = "auth_type"
	optAuthURL           = "auth_url"
	optUsername          = "username"
	optPassword          = "password"
	optProjectName       = "project_name"
	optUserDomainName    = "user_domain_name"
	optProjectDomainName = "project_domain_name"
	optRegionName        = "region_name"
	optValidInterfaces   = "valid_interfaces"
	optEndpointOverride  = "endpoint_override"
	optCAFile            = "cafile"
	optInsecure          = "insecure"
)

// DefaultDNSDomain is [DEFAULT] dns_domain's default, Neutron's own
// (neutron_lib's DNS_DOMAIN_DEFAULT), lower case with a final dot.
const DefaultDNSDomain = "openstacklocal."

// minInterceptPriority is the lowest flow_priority that keeps the intercept
// flows (one below it) above Neutron's priority-100 in_port flows.
const minInterceptPriority = 102

// Values of [neutron] auth_type.
const (
	AuthPassword = "password"
	AuthNoAuth   = "noauth"
)

// Neutron is how the daemon reaches the Neutron API: the [neutron] section
// as Nova has it (keystoneauth option names).
type Neutron struct {
	// AuthType is "password" (Keystone v3) or "noauth"; "" when the
	// section does not set it: no Neutron API, no local names.
	AuthType                                 string
	AuthURL, Username, Password, ProjectName string
	UserDomainName, ProjectDomainName        string
	RegionName                               string
	ValidInterfaces                          []string
	EndpointOverride                         string
	CAFile                                   string
	Insecure                                 bool
}

// namesSteps returns the validation steps of the local names' options.
func (s settings) namesSteps(c *Config) []func() error {
	return []func() error{
		func() error { return s.ovsdb(c) },
		func() error { return s.dnsDomain(c) },
		func() error {
			n := int64(c.RecordsResyncInterval / time.Second)
			if err := intOption(s, sectionDNS, optResyncInterval, 1, maxTTL, &n); err != nil {
				return err
			}
			c.RecordsResyncInterval = time.Duration(n) * time.Second
			return nil
		},
		func() error { return intOption(s, sectionDNS, optLocalTTL, 0, maxTTL, &c.LocalTTL) },
		func() error { return s.boolOption(sectionDNS, optLocalAuthoritative, &c.LocalDomainAuthoritative) },
		func() error { return s.neutron(c) },
		func() error { return s.neighbors(c) },
		func() error {
			if err := s.boolOption(sectionDNS, optInterceptAll, &c.InterceptAllDNS); err != nil {
				return err
			}
			// The intercept flows sit just below flow_priority and must
			// stay above Neutron's in_port flows (100).
			if c.InterceptAllDNS && c.FlowPriority < minInterceptPriority {
				return s.invalid(sectionDNS, optInterceptAll, "needs flow_priority 102 or more (it is "+strconv.Itoa(int(c.FlowPriority))+")")
			}
			if c.InterceptAllDNS && c.Neutron.AuthType == "" {
				return s.invalid(sectionDNS, optInterceptAll, "needs [neutron] auth_type: only local names are answered from intercepted queries")
			}
			return nil
		},
	}
}

// neighbors sets AnswerNeighbors and ResponderMAC. The answers' drop
// flow sits one priority below flow_priority and must stay above
// Neutron's in_port flows (100), like the intercept flows: with a
// flow_priority under 102 the answers are off unless answer_neighbors is
// set to true, which is then an error.
func (s settings) neighbors(c *Config) error {
	if err := s.boolOption(sectionDNS, optAnswerNeighbors, &c.AnswerNeighbors); err != nil {
		return err
	}
	if c.FlowPriority < minInterceptPriority {
		if _, set := s.get(sectionDNS, optAnswerNeighbors); set && c.AnswerNeighbors {
			return s.invalid(sectionDNS, optAnswerNeighbors, "needs flow_priority 102 or more (it is "+strconv.Itoa(int(c.FlowPriority))+")")
		}
		// The default gives way to a lower flow_priority.
		c.AnswerNeighbors = false
	}
	v, ok := s.get(sectionDNS, optResponderMAC)
	if !ok {
		return nil
	}
	mac, err := net.ParseMAC(v.value)
	switch {
	case err != nil || len(mac) != 6:
		return s.invalid(sectionDNS, optResponderMAC, "not a MAC address (want xx:xx:xx:xx:xx:xx)")
	case mac[0]&1 != 0:
		return s.invalid(sectionDNS, optResponderMAC, "a multicast MAC; want a unicast one")
	case [6]byte(mac) == [6]byte{}:
		return s.invalid(sectionDNS, optResponderMAC, "the zero MAC")
	}
	c.ResponderMAC = [6]byte(mac)
	return nil
}

// ovsdb sets OVSDBConnection from [ovs] ovsdb_connection, if set.
func (s settings) ovsdb(c *Config) error {
	v, ok := s.get(sectionOVS, optOVSDB)
	if !ok {
		return nil
	}
	if reason := checkTarget(v.value); reason != "" {
		return s.invalid(sectionOVS, optOVSDB, reason)
	}
	c.OVSDBConnection = v.value
	return nil
}

// dnsDomain sets DNSDomain from [DEFAULT] dns_domain, if set: lower case,
// with a final dot.
func (s settings) dnsDomain(c *Config) error {
	v, ok := s.get(sectionDefault, optDNSDomain)
	if !ok {
		return nil
	}
	d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(v.value), "."))
	if reason := checkDomain(d); reason != "" {
		return s.invalid(sectionDefault, optDNSDomain, reason)
	}
	c.DNSDomain = d + "."
	return nil
}

// checkDomain returns why d (lower case, no final dot) is not a domain
// name, or "".
func checkDomain(d string) string {
	if d == "" {
		return "empty domain"
	}
	if len(d) > 253 {
		return "longer than 253 characters"
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return "empty label or label longer than 63 characters"
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return "not a host name (letters, digits, - and _ only)"
			}
		}
	}
	return ""
}

// neutron reads the [neutron] section.
func (s settings) neutron(c *Config) error {
	n := &c.Neutron
	for opt, dst := range map[string]*string{
		optAuthURL: &n.AuthURL, optUsername: &n.Username, optPassword: &n.Password,
		optProjectName: &n.ProjectName, optUserDomainName: &n.UserDomainName,
		optProjectDomainName: &n.ProjectDomainName, optRegionName: &n.RegionName,
		optEndpointOverride: &n.EndpointOverride, optCAFile: &n.CAFile,
	} {
		if v, ok := s.get(sectionNeutron, opt); ok {
			*dst = strings.TrimSpace(v.value)
		}
	}
	if v, ok := s.get(sectionNeutron, optValidInterfaces); ok {
		n.ValidInterfaces = splitList(v.value)
		for _, i := range n.ValidInterfaces {
			if i != "public" && i != "internal" && i != "admin" {
				return s.invalid(sectionNeutron, optValidInterfaces, "not a list of public, internal and admin")
			}
		}
	}
	if err := s.boolOption(sectionNeutron, optInsecure, &n.Insecure); err != nil {
		return err
	}
	for _, opt := range []string{optAuthURL, optEndpointOverride} {
		if v, ok := s.get(sectionNeutron, opt); ok && v.value != "" {
			if u, err := url.Parse(v.value); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return s.invalid(sectionNeutron, opt, "not an http:// or https:// URL")
			}
		}
	}
	if n.CAFile != "" {
		if _, err := os.Stat(n.CAFile); err != nil {
			return s.invalid(sectionNeutron, optCAFile, ioReason(err, "no such file"))
		}
	}
	v, ok := s.get(sectionNeutron, optAuthType)
	if !ok {
		return nil
	}
	switch t := strings.ToLower(strings.TrimSpace(v.value)); t {
	case AuthNoAuth:
		if n.EndpointOverride == "" {
			return s.invalid(sectionNeutron, optAuthType, "noauth needs endpoint_override (the Neutron endpoint)")
		}
		n.AuthType = t
	case AuthPassword, "v3password":
		if n.AuthURL == "" || n.Username == "" {
			return s.invalid(sectionNeutron, optAuthType, "password needs auth_url and username")
		}
		n.AuthType = AuthPassword
	default:
		return s.invalid(sectionNeutron, optAuthType, "not password or noauth")
	}
	return nil
}
