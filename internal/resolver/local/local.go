// Package local is the resolver step that answers the cloud's instance
// names: the names and addresses of the asking VM's own Neutron network,
// from package records. See README.md for its behaviour.
//
// Design: the answer is written straight into the caller's buffer (header,
// the question copied as asked, then records whose owner is a compression
// pointer to the question), so an answer neither parses nor allocates. The
// question name is lower-cased into a stack buffer and looked up in the
// network's immutable records, which take no lock.
package local

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/records"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/resolver"
)

// ErrNotLocal is returned instead of asking the next Handler for an
// intercepted request (resolver.Request.Intercepted) that this step does not
// answer: the caller lets the query go on to where the VM sent it.
var ErrNotLocal = resolver.ErrNotLocal

// Source gives the records of a network; *records.Store implements it.
type Source interface {
	// Network returns the records of the Neutron network id, nil when
	// there are none.
	Network(id string) *records.Network
}

// SOA timers of the synthesised SOA record (seconds); its MINIMUM is the TTL.
const (
	soaRefresh = 3600
	soaRetry   = 600
	soaExpire  = 86400
)

// Wire constants (RFC 1035, RFC 3596).
const (
	headerLen  = 12
	maxMsgLen  = 65535
	maxNameLen = 255

	typeA    = 1
	typeSOA  = 6
	typePTR  = 12
	typeAAAA = 28
	typeANY  = 255
	classIN  = 1

	flagQR = 0x8000
	flagAA = 0x0400
	flagRD = 0x0100
	flagRA = 0x0080
	flagCD = 0x0010

	rcodeNXDomain = 3

	ptrQuestion = 0xc000 | headerLen // compression pointer to the question name
)

// Reverse zone suffixes in wire form.
const (
	inAddrArpa = "\x07in-addr\x04arpa\x00"
	ip6Arpa    = "\x03ip6\x04arpa\x00"
)

// Config configures a Local.
type Config struct {
	// Records gives each network's records; nil answers nothing.
	Records Source
	// Domain is the cloud's domain ([DEFAULT] dns_domain); names under it
	// that do not exist are NXDOMAIN when Authoritative. Outside it only
	// short names are answered (A, AAAA, ANY). Empty: short names only.
	Domain string
	// TTL is the TTL of every record answered (local_ttl).
	TTL uint32
	// Authoritative answers NXDOMAIN and NODATA itself
	// (local_domain_authoritative); false passes those queries on.
	Authoritative bool
	// Logger is kept for diagnostics; nil discards.
	Logger *slog.Logger
}

// Local answers the names of the asking VM's network and passes every
// other query to the next Handler. It implements resolver.Handler and is
// safe for concurrent use.
type Local struct {
	cfg    Config
	next   resolver.Handler
	domain []byte // lower-cased wire form, nil when none

	answered, nxdomain, nodata, passed atomic.Uint64
}

var _ resolver.Handler = (*Local)(nil)

// New returns a Local in front of next. A Domain that is not a valid domain
// name is logged and ignored (no NXDOMAIN answers).
func New(cfg Config, next resolver.Handler) *Local {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Local{cfg: cfg, next: next}
	if d := strings.TrimSuffix(cfg.Domain, "."); d != "" {
		w, ok := wireName(strings.ToLower(d))
		if !ok {
			cfg.Logger.Warn("local: dns_domain is not a domain name; no NXDOMAIN answers", "domain", cfg.Domain)
		} else {
			l.domain = w
		}
	}
	return l
}

// wireName returns the wire form of a presentation name without the
// trailing dot (no escapes).
func wireName(s string) ([]byte, bool) {
	b := make([]byte, 0, len(s)+2)
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return nil, false
		}
		b = append(b, byte(len(label)))
		b = append(b, label...)
	}
	b = append(b, 0)
	return b, len(b) <= maxNameLen
}

// Stats returns counters: answered (answers with records), nxdomain, nodata
// and passed (to the next Handler, or ErrNotLocal for intercepted queries).
func (l *Local) Stats() map[string]uint64 {
	return map[string]uint64{
		"answered": l.answered.Load(),
		"nxdomain": l.nxdomain.Load(),
		"nodata":   l.nodata.Load(),
		"passed":   l.passed.Load(),
	}
}

// ServeDNS answers r from the records of r.Network, or passes it on.
func (l *Local) ServeDNS(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
	if out, ok := l.answer(r, dst); ok {
		r.Source = resolver.SourceLocal
		return out, nil
	}
	return l.pass(ctx, r, dst)
}

// ServeImmediate answers r at once when it is for a local name, and
// otherwise asks the next Handler's ServeImmediate, if it has one
// (resolver.Immediate).
func (l *Local) ServeImmediate(r *resolver.Request, dst []byte) ([]byte, bool) {
	if out, ok := l.answer(r, dst); ok {
		r.Source = resolver.SourceLocal
		return out, true
	}
	if im, ok := l.next.(resolver.Immediate); ok && !r.Intercepted {
		l.passed.Add(1)
		return im.ServeImmediate(r, dst)
	}
	return dst, false
}

// answer appends the local answer to r to dst; false (with dst as it
// was) when r is not for this step.
func (l *Local) answer(r *resolver.Request, dst []byte) ([]byte, bool) {
	q := &r.Query
	if r.Network == "" || l.cfg.Records == nil || q.Class != classIN ||
		q.QuestionEnd != headerLen+len(q.Name)+4 || q.QuestionEnd > len(r.Msg) {
		return dst, false
	}
	n := l.cfg.Records.Network(r.Network)
	if n == nil {
		return dst, false
	}
	var buf [maxNameLen]byte
	key := buf[:0]
	for _, c := range q.Name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		key = append(key, c)
	}
	if addr, ok := reverseAddr(key); ok {
		if q.Type != typePTR && q.Type != typeANY {
			return dst, false
		}
		start := len(dst)
		dst = l.appendHeader(dst, r, 0)
		dst = appendRRHeader(dst, typePTR, l.cfg.TTL)
		rdata := len(dst)
		dst, ok = n.AppendPTR(dst, addr)
		if !ok {
			return dst[:start], false
		}
		binary.BigEndian.PutUint16(dst[rdata-2:], uint16(len(dst)-rdata))
		binary.BigEndian.PutUint16(dst[start+6:], 1)
		l.answered.Add(1)
		return dst, true
	}
	inZone, apex := l.zone(key)
	if !inZone && !shortName(key, q.Type) {
		// Outside the cloud's domain only short names are the
		// cloud's, and only their addresses: "com. DS" or
		// "www.example.com." are never ours to answer.
		return dst, false
	}
	addrs, exists := n.Lookup(key)
	if !exists && !apex {
		if !inZone || !l.cfg.Authoritative {
			return dst, false
		}
		l.nxdomain.Add(1)
		return l.appendNegative(l.appendHeader(dst, r, rcodeNXDomain), n, len(dst), len(key)), true
	}
	start := len(dst)
	dst = l.appendHeader(dst, r, 0)
	an := 0 // the size check keeps it far below 0xffff
	for _, a := range addrs {
		if len(dst)-start > maxMsgLen-28-headerLen-maxNameLen {
			break
		}
		switch {
		case a.Is4() && (q.Type == typeA || q.Type == typeANY):
			dst = appendRRHeader(dst, typeA, l.cfg.TTL)
			binary.BigEndian.PutUint16(dst[len(dst)-2:], 4)
			b := a.As4()
			dst = append(dst, b[:]...)
		case a.Is6() && (q.Type == typeAAAA || q.Type == typeANY):
			dst = appendRRHeader(dst, typeAAAA, l.cfg.TTL)
			binary.BigEndian.PutUint16(dst[len(dst)-2:], 16)
			b := a.As16()
			dst = append(dst, b[:]...)
		default:
			continue
		}
		an++
	}
	if apex && l.cfg.Authoritative && (q.Type == typeSOA || q.Type == typeANY) {
		dst = l.appendSOA(dst, n, len(key))
		an++
	}
	if an > 0 {
		binary.BigEndian.PutUint16(dst[start+6:], uint16(an))
		l.answered.Add(1)
		return dst, true
	}
	if !l.cfg.Authoritative {
		return dst[:start], false
	}
	l.nodata.Add(1)
	if !inZone && !apex {
		return dst, true // no zone of ours to name in an SOA
	}
	return l.appendNegative(dst, n, start, len(key)), true
}

// shortName reports whether the lower-cased wire name key has a single
// label and qtype is one a short name answers: A, AAAA or ANY.
func shortName(key []byte, qtype uint16) bool {
	if len(key) < 2 || key[0] == 0 || int(key[0])+2 != len(key) {
		return false
	}
	return qtype == typeA || qtype == typeAAAA || qtype == typeANY
}

// pass hands r to the next Handler, or returns ErrNotLocal for an
// intercepted request (or when there is no next Handler).
func (l *Local) pass(ctx context.Context, r *resolver.Request, dst []byte) ([]byte, error) {
	l.passed.Add(1)
	if r.Intercepted || l.next == nil {
		return dst, ErrNotLocal
	}
	return l.next.ServeDNS(ctx, r, dst)
}

// zone reports whether the lower-cased wire name key is under the domain
// (or is it), and whether it is the domain itself.
func (l *Local) zone(key []byte) (inZone, apex bool) {
	d := l.domain
	if d == nil || len(key) < len(d) || string(key[len(key)-len(d):]) != string(d) {
		return false, false
	}
	if len(key) == len(d) {
		return true, true
	}
	// The domain must start at a label boundary of key.
	for i := 0; i < len(key) && key[i] != 0; i += 1 + int(key[i]) {
		if i+1+int(key[i]) == len(key)-len(d) {
			return true, false
		}
	}
	return false, false
}

// appendHeader appends the answer's header (counts 0 but QDCOUNT) and the
// question as asked.
func (l *Local) appendHeader(dst []byte, r *resolver.Request, rcode uint16) []byte {
	q := &r.Query
	flags := flagQR | flagAA | flagRA | q.Flags&(flagRD|flagCD) | rcode
	dst = binary.BigEndian.AppendUint16(dst, q.ID)
	dst = binary.BigEndian.AppendUint16(dst, flags)
	dst = append(dst, 0, 1, 0, 0, 0, 0, 0, 0)
	return append(dst, r.Msg[headerLen:q.QuestionEnd]...)
}

// appendRRHeader appends an answer record's owner (a pointer to the
// question), type, class IN, TTL and a zero RDLENGTH to be filled in.
func appendRRHeader(dst []byte, typ uint16, ttl uint32) []byte {
	dst = binary.BigEndian.AppendUint16(dst, ptrQuestion)
	dst = binary.BigEndian.AppendUint16(dst, typ)
	dst = binary.BigEndian.AppendUint16(dst, classIN)
	dst = binary.BigEndian.AppendUint32(dst, ttl)
	return append(dst, 0, 0)
}

// appendNegative appends the SOA record to the authority section of the
// answer that starts at start and sets NSCOUNT.
func (l *Local) appendNegative(dst []byte, n *records.Network, start, nameLen int) []byte {
	dst = l.appendSOA(dst, n, nameLen)
	binary.BigEndian.PutUint16(dst[start+8:], 1)
	return dst
}

// appendSOA appends the domain's SOA record. The question name (nameLen
// bytes) ends with the domain, so the owner is a pointer into it and MNAME
// ("ns") and RNAME ("hostmaster") are one label plus that pointer.
func (l *Local) appendSOA(dst []byte, n *records.Network, nameLen int) []byte {
	owner := uint16(0xc000 | (headerLen + nameLen - len(l.domain)))
	dst = binary.BigEndian.AppendUint16(dst, owner)
	dst = binary.BigEndian.AppendUint16(dst, typeSOA)
	dst = binary.BigEndian.AppendUint16(dst, classIN)
	dst = binary.BigEndian.AppendUint32(dst, l.cfg.TTL)
	dst = binary.BigEndian.AppendUint16(dst, 3+2+11+2+20)
	dst = append(dst, 2, 'n', 's')
	dst = binary.BigEndian.AppendUint16(dst, owner)
	dst = append(dst, 10, 'h', 'o', 's', 't', 'm', 'a', 's', 't', 'e', 'r')
	dst = binary.BigEndian.AppendUint16(dst, owner)
	dst = binary.BigEndian.AppendUint32(dst, uint32(n.Synced().Unix()))
	dst = binary.BigEndian.AppendUint32(dst, soaRefresh)
	dst = binary.BigEndian.AppendUint32(dst, soaRetry)
	dst = binary.BigEndian.AppendUint32(dst, soaExpire)
	return binary.BigEndian.AppendUint32(dst, l.cfg.TTL)
}

// reverseAddr returns the address of a lower-cased wire name in
// in-addr.arpa (exactly four decimal labels) or ip6.arpa (exactly 32
// nibble labels).
func reverseAddr(key []byte) (netip.Addr, bool) {
	switch {
	case len(key) > len(inAddrArpa) && string(key[len(key)-len(inAddrArpa):]) == inAddrArpa:
		var b [4]byte
		off := 0
		for i := 3; i >= 0; i-- {
			if off >= len(key) {
				return netip.Addr{}, false
			}
			l := int(key[off])
			if l < 1 || l > 3 || off+1+l > len(key) {
				return netip.Addr{}, false
			}
			v := 0
			for _, c := range key[off+1 : off+1+l] {
				if c < '0' || c > '9' {
					return netip.Addr{}, false
				}
				v = v*10 + int(c-'0')
			}
			if v > 255 || (l > 1 && key[off+1] == '0') {
				return netip.Addr{}, false
			}
			b[i] = byte(v)
			off += 1 + l
		}
		if off != len(key)-len(inAddrArpa) {
			return netip.Addr{}, false
		}
		return netip.AddrFrom4(b), true
	case len(key) == 64+len(ip6Arpa) && string(key[64:]) == ip6Arpa:
		var b [16]byte
		for i := range 32 {
			if key[2*i] != 1 {
				return netip.Addr{}, false
			}
			v, ok := nibble(key[2*i+1])
			if !ok {
				return netip.Addr{}, false
			}
			// Label i is nibble 31-i: the low nibble of byte 15-i/2 when i is even.
			if i%2 == 0 {
				b[15-i/2] |= v
			} else {
				b[15-i/2] |= v << 4
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// nibble returns the value of a lower-case hex digit.
func nibble(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
