package records

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// maxNameLen is the longest domain name in wire form (RFC 1035).
const maxNameLen = 255

// Network is the immutable snapshot of one Neutron network's names, built by
// one sync. Its methods are safe for concurrent use, do not allocate (PTR
// excepted) and treat a nil *Network as a network without names.
type Network struct {
	id     string
	synced time.Time
	ports  int
	// names maps a lower-cased wire-form name to its addresses (IPv4
	// first, each address once). Empty non-terminals under the domain,
	// and the domain itself when it has names below it, map to nil.
	names map[string][]netip.Addr
	// owners counts the keys of names that own addresses.
	owners int
	// ptr maps an address of the network to the wire-form fqdn of its
	// first dns_assignment entry (ports in id order).
	ptr map[netip.Addr]string
	// details are the subnets and ports beside the names (details.go).
	details
}

// ID returns the Neutron network UUID.
func (n *Network) ID() string {
	if n == nil {
		return ""
	}
	return n.id
}

// Synced returns when the records were fetched from Neutron.
func (n *Network) Synced() time.Time {
	if n == nil {
		return time.Time{}
	}
	return n.synced
}

// Ports returns how many ports of the network the records were built from.
func (n *Network) Ports() int {
	if n == nil {
		return 0
	}
	return n.ports
}

// Names returns how many names own addresses in the network.
func (n *Network) Names() int {
	if n == nil {
		return 0
	}
	return n.owners
}

// Lookup returns the addresses of name, a domain name in wire form
// (uncompressed, ending with the root label) in any case. exists reports
// whether the name exists in the network: it is true with addrs nil for an
// empty non-terminal under the domain (a name with names below it but no
// address of its own, the domain itself included). The returned slice is
// shared: callers must not modify it. IPv4 addresses come first.
func (n *Network) Lookup(name []byte) (addrs []netip.Addr, exists bool) {
	var buf [maxNameLen]byte
	key, ok := lowerKey(buf[:0], name)
	if !ok || n == nil {
		return nil, false
	}
	addrs, exists = n.names[string(key)]
	return addrs, exists
}

// Has reports whether name (wire form, any case) exists in the network, as
// Lookup's exists.
func (n *Network) Has(name []byte) bool {
	_, ok := n.Lookup(name)
	return ok
}

// PTR returns the fqdn (presentation form, with the trailing dot) that addr
// points back to, and whether addr is an address of the network.
func (n *Network) PTR(addr netip.Addr) (string, bool) {
	if n == nil {
		return "", false
	}
	wire, ok := n.ptr[addr.Unmap()]
	if !ok {
		return "", false
	}
	return presentation(wire), true
}

// AppendPTR appends the wire form of addr's fqdn (uncompressed, lower case)
// to dst and reports whether addr is an address of the network; dst is
// returned unchanged when it is not.
func (n *Network) AppendPTR(dst []byte, addr netip.Addr) ([]byte, bool) {
	if n == nil {
		return dst, false
	}
	wire, ok := n.ptr[addr.Unmap()]
	if !ok {
		return dst, false
	}
	return append(dst, wire...), true
}

// lowerKey appends name lower-cased (ASCII) to dst. It checks only what a
// map key needs: a length of at most 255 bytes. Length octets are below 64
// and thus never in 'A'..'Z', so the whole wire form can be folded.
func lowerKey(dst, name []byte) ([]byte, bool) {
	if len(name) == 0 || len(name) > maxNameLen {
		return dst, false
	}
	for _, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst, true
}

// Errors of wireName.
var (
	errEmptyLabel = errors.New("empty label")
	errLongLabel  = errors.New("label longer than 63 bytes")
	errLongName   = errors.New("name longer than 255 bytes")
)

// wireName returns the lower-cased wire form of the absolute presentation
// name s; a trailing dot is optional and "" or "." is the root. Labels are
// taken verbatim (Neutron allows letters, digits and hyphens only), so no
// escapes are interpreted.
func wireName(s string) (string, error) {
	s = strings.TrimSuffix(strings.ToLower(s), ".")
	if s == "" {
		return "\x00", nil
	}
	b := make([]byte, 0, len(s)+2)
	for label := range strings.SplitSeq(s, ".") {
		switch {
		case label == "":
			return "", errEmptyLabel
		case len(label) > 63:
			return "", errLongLabel
		}
		b = append(b, byte(len(label)))
		b = append(b, label...)
	}
	b = append(b, 0)
	if len(b) > maxNameLen {
		return "", errLongName
	}
	return string(b), nil
}

// presentation returns the presentation form, with the trailing dot, of a
// well-formed wire name made by wireName.
func presentation(wire string) string {
	if wire == "\x00" {
		return "."
	}
	var sb strings.Builder
	sb.Grow(len(wire))
	for i := 0; i < len(wire) && wire[i] != 0; {
		l := int(wire[i])
		sb.WriteString(wire[i+1 : i+1+l])
		sb.WriteByte('.')
		i += 1 + l
	}
	return sb.String()
}

// parent returns the wire name one label above wire ("" for the root).
func parent(wire string) string {
	if wire == "" || wire[0] == 0 {
		return ""
	}
	return wire[1+int(wire[0]):]
}

// Entry is one name assignment of a port: an {ip_address, hostname, fqdn}
// entry of its dns_assignment.
type Entry struct {
	// Port is the Neutron port id; it orders PTR conflicts and counts
	// ports.
	Port string
	// Addr is the address; an invalid Addr only counts the port.
	Addr netip.Addr
	// Hostname is the port's hostname ("" gives host-<ip>).
	Hostname string
	// FQDN is its fully qualified name; "" gives Neutron's: hostname
	// when it ends with a dot, else hostname + "." + domain.
	FQDN string
}

// hostReplacer turns an address into Neutron's default hostname part.
var hostReplacer = strings.NewReplacer(".", "-", ":", "-")

// NewNetwork builds the records of network id from entries, under domain
// (presentation form, "" for none), as a sync does (see the package
// documentation for the names an entry gets). Entries may come in any
// order; names that are not valid domain names are skipped. It is meant for
// tests of the packages that use records.
func NewNetwork(id, domain string, synced time.Time, entries []Entry) (*Network, error) {
	w := ""
	if d := strings.TrimSuffix(domain, "."); d != "" {
		var err error
		if w, err = wireName(d); err != nil {
			return nil, errors.New("records: domain " + domain + ": " + err.Error())
		}
	}
	return newNetwork(id, w, synced, slices.Clone(entries), slog.New(slog.DiscardHandler)), nil
}

// newNetwork builds a Network from entries (sorted in place by port) under
// the wire-form domain ("" for none).
func newNetwork(id, domain string, synced time.Time, entries []Entry, log *slog.Logger) *Network {
	slices.SortStableFunc(entries, func(a, b Entry) int { return strings.Compare(a.Port, b.Port) })
	b := &builder{domain: domain, log: log, net: &Network{
		id:     id,
		synced: synced,
		names:  make(map[string][]netip.Addr),
		ptr:    make(map[netip.Addr]string),
	}}
	if domain != "" {
		b.domainName = strings.TrimSuffix(presentation(domain), ".")
	}
	ports := 0
	for i, e := range entries {
		if i == 0 || e.Port != entries[i-1].Port {
			ports++
		}
		if e.Addr.IsValid() {
			b.addEntry(e)
		}
	}
	return b.finish(ports)
}

// builder collects one network's records.
type builder struct {
	domain     string // wire form, "" when no domain is configured
	domainName string // presentation form without the trailing dot
	log        *slog.Logger
	net        *Network
}

// addEntry adds the names of one entry. A tenant chooses its port's
// dns_name, so an entry may only name things the cloud owns:
//
//   - its fqdn, only when strictly below the domain (Neutron derives it
//     from dns_name; a relative multi-label dns_name "www.example.com"
//     gives "www.example.com.<domain>", never "www.example.com.");
//   - for a one-label hostname "vm": "vm.<domain>" and the short name
//     "vm." (resolver/local answers short names for address types only).
//
// Without a domain only short names are made. The PTR of the address is
// the first of fqdn and "vm.<domain>" that is below the domain.
func (b *builder) addEntry(e Entry) {
	addr := e.Addr.Unmap()
	hostname, fqdn := e.Hostname, e.FQDN
	if hostname == "" && fqdn == "" {
		hostname = "host-" + hostReplacer.Replace(addr.String())
	}
	if fqdn == "" && hostname != "" && b.domainName != "" {
		// Neutron's rule: a dns_name ending with a dot is the fqdn.
		fqdn = hostname
		if !strings.HasSuffix(hostname, ".") {
			fqdn = hostname + "." + b.domainName
		}
	}
	hostname = strings.TrimSuffix(hostname, ".")
	oneLabel := hostname != "" && !strings.Contains(hostname, ".")
	var ptr string
	if w, ok := b.wire(e.Port, fqdn); ok {
		if b.domain != "" && underDomain(w, b.domain) {
			b.add(w, addr)
			ptr = w
		} else {
			b.log.Debug("records: fqdn not under dns_domain, not answered", "port", e.Port, "fqdn", fqdn)
		}
	}
	if oneLabel {
		if b.domainName != "" {
			if w, ok := b.wire(e.Port, hostname+"."+b.domainName); ok {
				b.add(w, addr)
				if ptr == "" {
					ptr = w
				}
			}
		}
		// The domain itself, when it has one label, stays the cloud's.
		if w, ok := b.wire(e.Port, hostname); ok && w != b.domain {
			b.add(w, addr)
		}
	} else if hostname != "" {
		b.log.Debug("records: hostname of several labels, not answered as a short name", "port", e.Port, "hostname", hostname)
	}
	if _, ok := b.net.ptr[addr]; !ok && ptr != "" {
		b.net.ptr[addr] = ptr
	}
}

// wire returns the wire form of the presentation name of a port's entry,
// false (logged) when it is empty or not a domain name.
func (b *builder) wire(port, name string) (string, bool) {
	if strings.TrimSuffix(name, ".") == "" {
		return "", false
	}
	w, err := wireName(name)
	if err != nil {
		b.log.Debug("records: bad name", "port", port, "name", name, "err", err)
		return "", false
	}
	return w, true
}

// add records that name (wire form) owns addr.
func (b *builder) add(name string, addr netip.Addr) {
	addrs := b.net.names[name]
	if slices.Contains(addrs, addr) {
		return
	}
	b.net.names[name] = append(addrs, addr)
	// Empty non-terminals between the name and the domain, the domain
	// included, exist; their own entries (if any) keep their addresses.
	if b.domain == "" || !underDomain(name, b.domain) {
		return
	}
	for p := parent(name); len(p) >= len(b.domain); p = parent(p) {
		if _, ok := b.net.names[p]; !ok {
			b.net.names[p] = nil
		}
		if p == b.domain {
			break
		}
	}
}

// underDomain reports whether the wire name is strictly below domain: it
// ends with domain's labels and has more of them.
func underDomain(name, domain string) bool {
	if len(name) <= len(domain) || !strings.HasSuffix(name, domain) {
		return false
	}
	// The suffix must start at a label boundary.
	for i := 0; i < len(name); i += 1 + int(name[i]) {
		if i == len(name)-len(domain) {
			return true
		}
		if name[i] == 0 {
			return false
		}
	}
	return false
}

// finish sorts every address list (IPv4 first, then by value) and returns
// the network.
func (b *builder) finish(ports int) *Network {
	n := b.net
	n.ports = ports
	for name, addrs := range n.names {
		if addrs == nil {
			continue
		}
		n.owners++
		slices.SortFunc(addrs, func(a, c netip.Addr) int {
			if a.Is4() != c.Is4() {
				if a.Is4() {
					return -1
				}
				return 1
			}
			return a.Compare(c)
		})
		n.names[name] = slices.Clip(addrs)
	}
	return n
}
