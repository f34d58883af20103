package records

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// Auth types of AuthOptions.AuthType (keystoneauth's auth_type).
const (
	AuthPassword = "password"
	AuthNoAuth   = "noauth"
)

// DefaultValidInterfaces is the catalog interfaces tried, in order, when
// AuthOptions.ValidInterfaces is empty (Nova's [neutron] valid_interfaces
// default).
var DefaultValidInterfaces = []string{"internal", "public"}

// portFields are the only port attributes asked of Neutron.
var portFields = []string{"id", "network_id", "mac_address", "fixed_ips", "dns_name", "dns_assignment",
	"device_owner", "port_security_enabled", "allowed_address_pairs"}

// subnetFields are the only subnet attributes asked of Neutron.
var subnetFields = []string{"id", "network_id", "cidr", "gateway_ip", "ip_version"}

// AuthOptions is how to reach Neutron, with the names of keystoneauth's
// options as Nova's [neutron] section has them.
type AuthOptions struct {
	// AuthType is AuthPassword (Keystone v3 password authentication,
	// Neutron's endpoint from the catalog) or AuthNoAuth (no token;
	// EndpointOverride required; Neutron's noauth strategy accepts it).
	AuthType string
	// AuthURL is Keystone's address, with or without "/v3".
	AuthURL string
	// Username and Password are the service user's credentials.
	Username, Password string
	// ProjectName is the project the token is scoped to.
	ProjectName string
	// UserDomainName and ProjectDomainName name the domains of the user
	// and of the project; empty means "Default".
	UserDomainName, ProjectDomainName string
	// RegionName selects the catalog endpoint's region; empty takes any.
	RegionName string
	// ValidInterfaces are the catalog interfaces ("internal", "public",
	// "admin") tried in order; empty is DefaultValidInterfaces.
	ValidInterfaces []string
	// EndpointOverride is Neutron's address as the catalog lists it
	// (http://controller:9696); a trailing "/v2.0" and "/" are tolerated.
	// With AuthPassword it replaces the catalog lookup.
	EndpointOverride string
	// CAFile is a PEM bundle of CAs to trust instead of the system's.
	CAFile string
	// Insecure skips the verification of the servers' certificates.
	Insecure bool
}

// validate checks the options New cannot do without.
func (a *AuthOptions) validate() error {
	switch a.AuthType {
	case AuthPassword:
		if a.AuthURL == "" {
			return errors.New("records: auth_url is required with auth_type password")
		}
		if a.Username == "" {
			return errors.New("records: username is required with auth_type password")
		}
	case AuthNoAuth:
		if a.EndpointOverride == "" {
			return errors.New("records: endpoint_override is required with auth_type noauth")
		}
	default:
		return fmt.Errorf("records: auth_type %q is neither %q nor %q", a.AuthType, AuthPassword, AuthNoAuth)
	}
	if a.EndpointOverride != "" {
		if _, err := networkBase(a.EndpointOverride); err != nil {
			return err
		}
	}
	for _, i := range a.ValidInterfaces {
		if _, err := availability(i); err != nil {
			return err
		}
	}
	return nil
}

// httpClient returns the HTTP client for the TLS options.
func (a *AuthOptions) httpClient() (*http.Client, error) {
	if a.CAFile == "" && !a.Insecure {
		return &http.Client{}, nil
	}
	tr, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return nil, errors.New("records: http.DefaultTransport is not an *http.Transport")
	}
	tr = tr.Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: a.Insecure, MinVersion: tls.VersionTLS12}
	if a.CAFile != "" {
		pem, err := os.ReadFile(a.CAFile)
		if err != nil {
			return nil, fmt.Errorf("records: cafile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("records: cafile %s: no PEM certificate", a.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Transport: tr}, nil
}

// networkBase returns Neutron's unversioned endpoint with one trailing
// slash: "http://controller:9696/v2.0/" and "http://controller:9696" both
// give "http://controller:9696/".
func networkBase(endpoint string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(endpoint))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("records: neutron endpoint %q is not an http(s) URL", endpoint)
	}
	p := strings.TrimRight(u.Path, "/")
	p = strings.TrimSuffix(p, "/v2.0")
	u.Path = strings.TrimRight(p, "/") + "/"
	u.RawPath = ""
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

// availability maps a keystoneauth interface name to gophercloud's.
func availability(iface string) (gophercloud.Availability, error) {
	switch strings.TrimSuffix(strings.ToLower(iface), "url") {
	case "public":
		return gophercloud.AvailabilityPublic, nil
	case "internal":
		return gophercloud.AvailabilityInternal, nil
	case "admin":
		return gophercloud.AvailabilityAdmin, nil
	}
	return "", fmt.Errorf("records: valid_interfaces: unknown interface %q", iface)
}

// connect returns a client for Neutron's v2.0 API, authenticating first
// with AuthPassword.
func connect(ctx context.Context, a *AuthOptions, hc *http.Client) (*gophercloud.ServiceClient, error) {
	if a.AuthType == AuthNoAuth {
		base, err := networkBase(a.EndpointOverride)
		if err != nil {
			return nil, err
		}
		p := &gophercloud.ProviderClient{HTTPClient: *hc}
		p.UseTokenLock()
		return &gophercloud.ServiceClient{ProviderClient: p, Endpoint: base, ResourceBase: base + "v2.0/", Type: "network"}, nil
	}
	p, err := openstack.NewClient(a.AuthURL)
	if err != nil {
		return nil, fmt.Errorf("records: auth_url: %w", err)
	}
	p.HTTPClient = *hc
	userDomain, projectDomain := a.UserDomainName, a.ProjectDomainName
	if userDomain == "" {
		userDomain = "Default"
	}
	if projectDomain == "" {
		projectDomain = "Default"
	}
	opts := gophercloud.AuthOptions{
		IdentityEndpoint: a.AuthURL,
		Username:         a.Username,
		Password:         a.Password,
		DomainName:       userDomain,
		AllowReauth:      true,
	}
	if a.ProjectName != "" {
		opts.Scope = &gophercloud.AuthScope{ProjectName: a.ProjectName, DomainName: projectDomain}
	}
	if err := openstack.AuthenticateV3(ctx, p, &opts, gophercloud.EndpointOpts{}); err != nil {
		return nil, fmt.Errorf("records: keystone: %w", err)
	}
	endpoint := a.EndpointOverride
	if endpoint == "" {
		if endpoint, err = catalogEndpoint(p, a); err != nil {
			return nil, err
		}
	}
	base, err := networkBase(endpoint)
	if err != nil {
		return nil, err
	}
	return &gophercloud.ServiceClient{ProviderClient: p, Endpoint: base, ResourceBase: base + "v2.0/", Type: "network"}, nil
}

// catalogEndpoint finds the "network" endpoint of the token's catalog: the
// first of the valid interfaces, in order, that the region has.
func catalogEndpoint(p *gophercloud.ProviderClient, a *AuthOptions) (string, error) {
	res, ok := p.GetAuthResult().(tokens.CreateResult)
	if !ok {
		return "", errors.New("records: keystone returned no token")
	}
	catalog, err := res.ExtractServiceCatalog()
	if err != nil {
		return "", fmt.Errorf("records: keystone catalog: %w", err)
	}
	ifaces := a.ValidInterfaces
	if len(ifaces) == 0 {
		ifaces = DefaultValidInterfaces
	}
	for _, i := range ifaces {
		want, err := availability(i)
		if err != nil {
			return "", err
		}
		for _, entry := range catalog.Entries {
			if entry.Type != "network" {
				continue
			}
			for _, ep := range entry.Endpoints {
				if gophercloud.Availability(ep.Interface) != want {
					continue
				}
				if a.RegionName != "" && ep.Region != a.RegionName && ep.RegionID != a.RegionName {
					continue
				}
				return ep.URL, nil
			}
		}
	}
	return "", fmt.Errorf("records: no network endpoint in the catalog for region %q and interfaces %v", a.RegionName, ifaces)
}

// apiPort is a port as listed with portFields.
type apiPort struct {
	ID         string `json:"id"`
	NetworkID  string `json:"network_id"`
	MACAddress string `json:"mac_address"`
	FixedIPs   []struct {
		IPAddress string `json:"ip_address"`
	} `json:"fixed_ips"`
	DNSName       string          `json:"dns_name"`
	DNSAssignment []dnsAssignment `json:"dns_assignment"`
	DeviceOwner   string          `json:"device_owner"`
	// PortSecurityEnabled is nil when Neutron does not report it (no
	// port_security extension): the port is then taken as secured.
	PortSecurityEnabled *bool         `json:"port_security_enabled"`
	AllowedAddressPairs []addressPair `json:"allowed_address_pairs"`
}

// addressPair is one entry of a port's allowed_address_pairs: ip_address
// is an address or a prefix, mac_address a MAC (Neutron fills in the
// port's own when the pair has none).
type addressPair struct {
	IPAddress  string `json:"ip_address"`
	MACAddress string `json:"mac_address"`
}

// apiSubnet is a subnet as listed with subnetFields.
type apiSubnet struct {
	ID        string `json:"id"`
	NetworkID string `json:"network_id"`
	CIDR      string `json:"cidr"`
	// GatewayIP is nil (JSON null) for a subnet without a gateway.
	GatewayIP *string `json:"gateway_ip"`
	IPVersion int     `json:"ip_version"`
}

// dnsAssignment is one entry of a port's dns_assignment.
type dnsAssignment struct {
	IPAddress string `json:"ip_address"`
	Hostname  string `json:"hostname"`
	FQDN      string `json:"fqdn"`
}

// queryString is the query string of one port or subnet list request.
type queryString string

// ToPortListQuery implements ports.ListOptsBuilder.
func (q queryString) ToPortListQuery() (string, error) { return string(q), nil }

// ToSubnetListQuery implements subnets.ListOptsBuilder.
func (q queryString) ToSubnetListQuery() (string, error) { return string(q), nil }

// listQuery returns "?network_id=...&fields=..." for networks and fields.
func listQuery(networks, fields []string) queryString {
	v := make(url.Values, 2)
	v["network_id"] = networks
	v["fields"] = fields
	return queryString("?" + v.Encode())
}

// listPorts lists the ports of networks, following Neutron's pagination
// links when the server paginates.
func listPorts(ctx context.Context, c *gophercloud.ServiceClient, networks []string) ([]apiPort, error) {
	var all []apiPort
	err := ports.List(c, listQuery(networks, portFields)).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		var batch []apiPort
		if err := ports.ExtractPortsInto(page, &batch); err != nil {
			return false, err
		}
		all = append(all, batch...)
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("records: listing ports: %w", err)
	}
	return all, nil
}

// listSubnets lists the subnets of networks, following Neutron's
// pagination links when the server paginates.
func listSubnets(ctx context.Context, c *gophercloud.ServiceClient, networks []string) ([]apiSubnet, error) {
	var all []apiSubnet
	err := subnets.List(c, listQuery(networks, subnetFields)).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		var batch []apiSubnet
		sp, ok := page.(subnets.SubnetPage)
		if !ok {
			return false, fmt.Errorf("unexpected page type %T", page)
		}
		if err := sp.ExtractIntoSlicePtr(&batch, "subnets"); err != nil {
			return false, err
		}
		all = append(all, batch...)
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("records: listing subnets: %w", err)
	}
	return all, nil
}
