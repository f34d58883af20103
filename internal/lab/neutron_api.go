package lab

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// Port is a Neutron port as the API shows it.
type Port struct {
	// ID is the port's UUID.
	ID string
	// NetworkID is its network's UUID.
	NetworkID string
	// MAC is its mac_address.
	MAC net.HardwareAddr
	// IPs are the addresses of its fixed_ips, in the API's order.
	IPs []netip.Addr
	// SubnetIDs are the subnets of IPs, index by index.
	SubnetIDs []string
	// DNSName is its dns_name ("" for none).
	DNSName string
	// DNSAssignment is its dns_assignment: one entry per fixed IP.
	DNSAssignment []DNSAssignment
	// Status is ACTIVE, DOWN or BUILD.
	Status string
	// HostID is its binding:host_id.
	HostID string
}

// DNSAssignment is one entry of a port's dns_assignment.
type DNSAssignment struct {
	// IP is the entry's ip_address.
	IP netip.Addr
	// Hostname is the dns_name, or host-<ip with dashes> without one.
	Hostname string
	// FQDN is Hostname under [DEFAULT] dns_domain, with a trailing dot.
	FQDN string
}

// Subnet is a Neutron subnet as the API shows it.
type Subnet struct {
	// ID is the subnet's UUID.
	ID string
	// NetworkID is its network's UUID.
	NetworkID string
	// CIDR is its prefix.
	CIDR netip.Prefix
	// Gateway is its gateway_ip (invalid when it has none).
	Gateway netip.Addr
}

// APIError is an HTTP error status from the Neutron API.
type APIError struct {
	// Method and Path are the request's.
	Method, Path string
	// Status is the HTTP status code.
	Status int
	// Body is the response's body (Neutron's NeutronError JSON).
	Body string
}

// Error implements error.
func (e *APIError) Error() string {
	return fmt.Sprintf("neutron API: %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, strings.TrimSpace(e.Body))
}

// HTTPClient returns a client whose connections are made in the lab
// namespace, so that URL is reachable from the test process.
func (n *Neutron) HTTPClient() *http.Client { return n.client }

// do sends a JSON request to the API and decodes the JSON answer into out
// (when not nil).
func (n *Neutron) do(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, n.URL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, Body: string(data)}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("neutron API: %s %s: %w", method, path, err)
	}
	return nil
}

// CreateNetwork creates a network (a VXLAN tenant network of the noauth
// project "fake_project_id", port security on) and returns its ID.
func (n *Neutron) CreateNetwork(name string) (string, error) {
	var resp struct {
		Network struct {
			ID string `json:"id"`
		} `json:"network"`
	}
	err := n.do(http.MethodPost, "/v2.0/networks",
		map[string]any{"network": map[string]any{"name": name, "admin_state_up": true}}, &resp)
	if err != nil {
		return "", fmt.Errorf("lab: neutron: %w", err)
	}
	return resp.Network.ID, nil
}

// CreateSubnet creates a subnet of cidr on the network, with DHCP off,
// the gateway at the first address of cidr and, for IPv6, static
// addressing; it returns the subnet's ID.
func (n *Neutron) CreateSubnet(netID, cidr string, ipVersion int) (string, error) {
	if ipVersion != 4 && ipVersion != 6 {
		return "", fmt.Errorf("lab: neutron: bad IP version %d", ipVersion)
	}
	var resp struct {
		Subnet struct {
			ID string `json:"id"`
		} `json:"subnet"`
	}
	err := n.do(http.MethodPost, "/v2.0/subnets", map[string]any{"subnet": map[string]any{
		"network_id": netID, "cidr": cidr, "ip_version": ipVersion, "enable_dhcp": false,
	}}, &resp)
	if err != nil {
		return "", fmt.Errorf("lab: neutron: %w", err)
	}
	return resp.Subnet.ID, nil
}

// GetSubnet returns a subnet.
func (n *Neutron) GetSubnet(id string) (Subnet, error) {
	var resp struct {
		Subnet struct {
			ID        string  `json:"id"`
			NetworkID string  `json:"network_id"`
			CIDR      string  `json:"cidr"`
			GatewayIP *string `json:"gateway_ip"`
		} `json:"subnet"`
	}
	if err := n.do(http.MethodGet, "/v2.0/subnets/"+url.PathEscape(id), nil, &resp); err != nil {
		return Subnet{}, fmt.Errorf("lab: neutron: %w", err)
	}
	s := Subnet{ID: resp.Subnet.ID, NetworkID: resp.Subnet.NetworkID}
	var err error
	if s.CIDR, err = netip.ParsePrefix(resp.Subnet.CIDR); err != nil {
		return Subnet{}, fmt.Errorf("lab: neutron: subnet %s: %w", id, err)
	}
	if resp.Subnet.GatewayIP != nil {
		if s.Gateway, err = netip.ParseAddr(*resp.Subnet.GatewayIP); err != nil {
			return Subnet{}, fmt.Errorf("lab: neutron: subnet %s: %w", id, err)
		}
	}
	return s, nil
}

// apiPort is a port in the API's JSON.
type apiPort struct {
	ID         string `json:"id"`
	NetworkID  string `json:"network_id"`
	MACAddress string `json:"mac_address"`
	FixedIPs   []struct {
		SubnetID  string `json:"subnet_id"`
		IPAddress string `json:"ip_address"`
	} `json:"fixed_ips"`
	DNSName       string `json:"dns_name"`
	DNSAssignment []struct {
		IPAddress string `json:"ip_address"`
		Hostname  string `json:"hostname"`
		FQDN      string `json:"fqdn"`
	} `json:"dns_assignment"`
	Status string `json:"status"`
	HostID string `json:"binding:host_id"`
}

// port converts the API's form.
func (a *apiPort) port() (Port, error) {
	p := Port{ID: a.ID, NetworkID: a.NetworkID, DNSName: a.DNSName, Status: a.Status, HostID: a.HostID}
	var err error
	if p.MAC, err = net.ParseMAC(a.MACAddress); err != nil {
		return Port{}, fmt.Errorf("port %s: %w", a.ID, err)
	}
	for _, f := range a.FixedIPs {
		ip, err := netip.ParseAddr(f.IPAddress)
		if err != nil {
			return Port{}, fmt.Errorf("port %s: %w", a.ID, err)
		}
		p.IPs = append(p.IPs, ip)
		p.SubnetIDs = append(p.SubnetIDs, f.SubnetID)
	}
	for _, d := range a.DNSAssignment {
		ip, err := netip.ParseAddr(d.IPAddress)
		if err != nil {
			return Port{}, fmt.Errorf("port %s: %w", a.ID, err)
		}
		p.DNSAssignment = append(p.DNSAssignment, DNSAssignment{IP: ip, Hostname: d.Hostname, FQDN: d.FQDN})
	}
	return p, nil
}

// CreatePort creates a port on the network with the given dns_name
// ("" for none) and, when fixedIP is not empty, that address (else one
// from each subnet of the network). The port is not bound to a host yet:
// AddNeutronVM does that.
func (n *Neutron) CreatePort(netID, dnsName, fixedIP string) (Port, error) {
	body := map[string]any{"network_id": netID, "admin_state_up": true}
	if dnsName != "" {
		body["dns_name"] = dnsName
	}
	if fixedIP != "" {
		body["fixed_ips"] = []map[string]string{{"ip_address": fixedIP}}
	}
	var resp struct {
		Port apiPort `json:"port"`
	}
	if err := n.do(http.MethodPost, "/v2.0/ports", map[string]any{"port": body}, &resp); err != nil {
		return Port{}, fmt.Errorf("lab: neutron: %w", err)
	}
	p, err := resp.Port.port()
	if err != nil {
		return Port{}, fmt.Errorf("lab: neutron: %w", err)
	}
	return p, nil
}

// GetPort returns a port.
func (n *Neutron) GetPort(id string) (Port, error) {
	var resp struct {
		Port apiPort `json:"port"`
	}
	if err := n.do(http.MethodGet, "/v2.0/ports/"+url.PathEscape(id), nil, &resp); err != nil {
		return Port{}, fmt.Errorf("lab: neutron: %w", err)
	}
	p, err := resp.Port.port()
	if err != nil {
		return Port{}, fmt.Errorf("lab: neutron: %w", err)
	}
	return p, nil
}

// updatePort sends a port update.
func (n *Neutron) updatePort(id string, fields map[string]any) error {
	if err := n.do(http.MethodPut, "/v2.0/ports/"+url.PathEscape(id), map[string]any{"port": fields}, nil); err != nil {
		return fmt.Errorf("lab: neutron: %w", err)
	}
	return nil
}

// UpdatePortDNSName sets a port's dns_name ("" removes it).
func (n *Neutron) UpdatePortDNSName(id, dnsName string) error {
	return n.updatePort(id, map[string]any{"dns_name": dnsName})
}

// AddressPair is one allowed address pair of a port.
type AddressPair struct {
	// IP is the pair's ip_address: an address or a prefix.
	IP string
	// MAC is its mac_address; nil means the port's own (Neutron fills
	// it in).
	MAC net.HardwareAddr
}

// SetAllowedAddressPairs replaces a port's allowed_address_pairs (nil
// removes them). Neutron refuses pairs on a port without port security.
func (n *Neutron) SetAllowedAddressPairs(id string, pairs []AddressPair) error {
	list := make([]map[string]string, 0, len(pairs))
	for _, p := range pairs {
		e := map[string]string{"ip_address": p.IP}
		if p.MAC != nil {
			e["mac_address"] = p.MAC.String()
		}
		list = append(list, e)
	}
	return n.updatePort(id, map[string]any{"allowed_address_pairs": list})
}

// SetPortSecurity sets a port's port_security_enabled. Disabling it also
// removes the port's security groups, as Neutron requires; enabling it
// does not give them back.
func (n *Neutron) SetPortSecurity(id string, enabled bool) error {
	fields := map[string]any{"port_security_enabled": enabled}
	if !enabled {
		fields["security_groups"] = []string{}
	}
	return n.updatePort(id, fields)
}

// CreateRouter creates a router (no external gateway; the lab runs no L3
// agent, so it routes nothing) and returns its ID.
func (n *Neutron) CreateRouter(name string) (string, error) {
	var resp struct {
		Router struct {
			ID string `json:"id"`
		} `json:"router"`
	}
	err := n.do(http.MethodPost, "/v2.0/routers", map[string]any{"router": map[string]any{"name": name}}, &resp)
	if err != nil {
		return "", fmt.Errorf("lab: neutron: %w", err)
	}
	return resp.Router.ID, nil
}

// AddRouterInterface attaches a router to a subnet: Neutron creates a
// port of device_owner network:router_interface holding the subnet's
// gateway_ip, and returns its ID.
func (n *Neutron) AddRouterInterface(routerID, subnetID string) (string, error) {
	var resp struct {
		PortID string `json:"port_id"`
	}
	err := n.do(http.MethodPut, "/v2.0/routers/"+url.PathEscape(routerID)+"/add_router_interface",
		map[string]any{"subnet_id": subnetID}, &resp)
	if err != nil {
		return "", fmt.Errorf("lab: neutron: %w", err)
	}
	return resp.PortID, nil
}

// DeletePort deletes a port; a port that does not exist is an error.
func (n *Neutron) DeletePort(id string) error {
	if err := n.do(http.MethodDelete, "/v2.0/ports/"+url.PathEscape(id), nil, nil); err != nil {
		return fmt.Errorf("lab: neutron: %w", err)
	}
	return nil
}

// IsNotFound reports whether err is the API's 404.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}
