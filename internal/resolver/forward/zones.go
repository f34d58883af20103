package forward

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// defaultPort is the port of a server given without one.
const defaultPort = 53

// Zone sends the queries for a domain to servers of its own (conditional
// forwarding): a query whose name is Name or ends in it, label by label and
// ignoring ASCII case, goes to Servers instead of the default servers. When
// several zones match, the longest one wins.
type Zone struct {
	Name    string           // the domain, e.g. "corp.example.com" (a trailing dot is optional)
	Servers []netip.AddrPort // asked for the zone, like Config.Servers for the rest
}

// ParseZones parses the text of the forward_zones option: entries separated
// by ';' or newlines (continuation lines of an ini file join with newlines),
// each "zone=server[,server...]", where a server is an IPv4 or IPv6 address
// with an optional port ("10.1.1.1", "10.1.1.1:5353", "2001:db8::1",
// "[2001:db8::1]:5353"; default port 53). Blanks around the parts are
// ignored, and so are empty entries. For example:
//
//	corp.example.com=10.1.1.1:53,10.1.1.2; lab.test=[2001:db8::1]:5353
//
// Errors name the entry at fault: no '=', an invalid domain name, no server,
// an invalid server address, or a zone given twice (case-insensitively).
// An empty text gives no zones.
func ParseZones(s string) ([]Zone, error) {
	var zones []Zone
	seen := make(map[string]bool)
	for entry := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == ';' || r == '\n' }) {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		name, list, ok := strings.Cut(entry, "=")
		if !ok {
			return nil, fmt.Errorf("forward_zones entry %q: want zone=server[,server...]", entry)
		}
		name = strings.TrimSpace(name)
		key, _, err := zoneKey(name)
		if err != nil {
			return nil, fmt.Errorf("forward_zones entry %q: %w", entry, err)
		}
		if seen[key] {
			return nil, fmt.Errorf("forward_zones entry %q: zone %s given twice", entry, key)
		}
		seen[key] = true
		z := Zone{Name: name}
		for _, field := range strings.Split(list, ",") {
			field = strings.TrimSpace(field)
			if field == "" {
				continue
			}
			server, err := ParseServer(field)
			if err != nil {
				return nil, fmt.Errorf("forward_zones entry %q: %w", entry, err)
			}
			z.Servers = append(z.Servers, server)
		}
		if len(z.Servers) == 0 {
			return nil, fmt.Errorf("forward_zones entry %q: no server", entry)
		}
		zones = append(zones, z)
	}
	return zones, nil
}

// ParseServer parses a server address: an IPv4 or IPv6 address with an
// optional port ("10.1.1.1", "10.1.1.1:5353", "2001:db8::1",
// "[2001:db8::1]:5353"); the default port is 53. The address must be
// usable as an upstream: not unspecified, port not 0. IPv4-mapped IPv6
// addresses are returned as IPv4.
func ParseServer(s string) (netip.AddrPort, error) {
	var ap netip.AddrPort
	if addr, err := netip.ParseAddr(s); err == nil {
		ap = netip.AddrPortFrom(addr, defaultPort)
	} else if ap, err = netip.ParseAddrPort(s); err != nil {
		return netip.AddrPort{}, fmt.Errorf("server %q: want ip, ip:port or [ipv6]:port", s)
	}
	return checkServer(ap)
}

// checkServer returns server with its address unmapped, or an error when it
// cannot be asked.
func checkServer(server netip.AddrPort) (netip.AddrPort, error) {
	addr := server.Addr().Unmap()
	if !addr.IsValid() || addr.IsUnspecified() || server.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("server %q: not a usable address and port", server.String())
	}
	return netip.AddrPortFrom(addr, server.Port()), nil
}

// zoneKey returns the canonical name of a zone (lower case, fully
// qualified) and its uncompressed wire form.
func zoneKey(name string) (string, []byte, error) {
	if name == "" {
		return "", nil, fmt.Errorf("empty zone name")
	}
	if strings.ContainsAny(name, "\\ \t") {
		return "", nil, fmt.Errorf("zone %q: escapes and blanks are not allowed", name)
	}
	key := dns.Fqdn(strings.ToLower(name))
	if _, ok := dns.IsDomainName(key); !ok {
		return "", nil, fmt.Errorf("zone %q: not a domain name", name)
	}
	wire := make([]byte, 256)
	n, err := dns.PackDomainName(key, wire, 0, nil, false)
	if err != nil {
		return "", nil, fmt.Errorf("zone %q: %w", name, err)
	}
	return key, wire[:n], nil
}

// zoneMatch is a zone ready to match against question names.
type zoneMatch struct {
	wire []byte // lower-case uncompressed wire form
	set  int    // index in Forward.sets
}

// inZone reports whether name, an uncompressed wire-form name, is zone (a
// lower-case wire-form name) or below it: zone's bytes end name at a label
// boundary, ASCII case folded. Length bytes are below 'A', so folding every
// byte leaves them alone.
func inZone(name, zone []byte) bool {
	start := len(name) - len(zone)
	if start < 0 {
		return false
	}
	off := 0
	for off < start {
		l := int(name[off])
		if l == 0 || l > 63 {
			return false
		}
		off += l + 1
	}
	if off != start {
		return false
	}
	for i, z := range zone {
		c := name[start+i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != z {
			return false
		}
	}
	return true
}
