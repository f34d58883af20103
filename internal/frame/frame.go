// Package frame parses the Ethernet frames of captured DNS queries and builds
// the Ethernet frames of their replies.
//
// The supported encapsulation is Ethernet II, at most one IEEE 802.1Q tag
// (TPID 0x8100), then IPv4 or IPv6, then UDP. Everything else is rejected with
// a sentinel error whose Reason label names the cause for drop counters:
//
//   - An IEEE 802.1ad service tag (TPID 0x88a8, Q-in-Q) or a second 802.1Q
//     tag is rejected as "vlan_stacked": a reply could not reproduce both
//     tags from a Query, which records one TCI only.
//   - IPv6 extension headers (hop-by-hop, routing, destination options,
//     fragment, AH, ESP, mobility, HIP, shim6 and the experimental numbers)
//     are rejected as "ipv6_ext_header" rather than walked; a fragment
//     header is reported as "fragment". DNS queries from VMs carry none.
//   - IPv4 fragments (MF set or a nonzero fragment offset) are "fragment".
//
// Neither the IPv4 header checksum nor the UDP checksum of a captured frame is
// checked: with transmit checksum offload Open vSwitch's userspace datapath
// hands over frames whose checksums are only partial. Replies always carry
// correct checksums. Bytes after the IP packet (Ethernet padding) are ignored.
//
// ParseQuery and AppendReply do not allocate (AppendReply only when dst lacks
// capacity).
package frame

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Query is a parsed UDP query frame, the addressing needed to answer it and
// its payload.
type Query struct {
	InPort           uint32     // filled by caller, not by ParseQuery
	SrcMAC, DstMAC   [6]byte    // Ethernet source and destination
	Tagged           bool       // had an 802.1Q tag
	TCI              uint16     // the tag's TCI (PCP/DEI/VID) when Tagged
	Src, Dst         netip.Addr // IPv4 or IPv6 (an IPv4 packet gives unmapped IPv4 addresses)
	SrcPort, DstPort uint16     // UDP ports
	Payload          []byte     // UDP payload (the DNS message); aliases the frame
}

// parseError is the type of every error returned by ParseQuery.
type parseError struct{ reason string }

func (e *parseError) Error() string { return "frame: " + e.reason }

// The errors returned by ParseQuery. Each one is a distinct value, comparable
// with ==, and Reason maps it to its label (the text in parentheses).
var (
	// ErrTruncated: the frame ends inside a header ("truncated").
	ErrTruncated error = &parseError{"truncated"}
	// ErrVLANStacked: an 802.1ad tag or a second 802.1Q tag ("vlan_stacked").
	ErrVLANStacked error = &parseError{"vlan_stacked"}
	// ErrNotIP: the EtherType is neither IPv4 nor IPv6 ("not_ip").
	ErrNotIP error = &parseError{"not_ip"}
	// ErrIPVersion: the IP version field disagrees with the EtherType ("bad_ip_version").
	ErrIPVersion error = &parseError{"bad_ip_version"}
	// ErrIPHeader: the IPv4 header length is below 20 bytes or exceeds the frame ("bad_ip_header").
	ErrIPHeader error = &parseError{"bad_ip_header"}
	// ErrIPLength: the IP total or payload length is inconsistent with the frame ("bad_ip_length").
	ErrIPLength error = &parseError{"bad_ip_length"}
	// ErrFragment: an IPv4 fragment or an IPv6 fragment header ("fragment").
	ErrFragment error = &parseError{"fragment"}
	// ErrIPv6ExtHeader: an IPv6 extension header other than fragment ("ipv6_ext_header").
	ErrIPv6ExtHeader error = &parseError{"ipv6_ext_header"}
	// ErrNotUDP: the IP payload is not UDP ("not_udp").
	ErrNotUDP error = &parseError{"not_udp"}
	// ErrUDPLength: the UDP length is below 8 or exceeds the IP payload ("bad_udp_length").
	ErrUDPLength error = &parseError{"bad_udp_length"}
)

// Reason returns the stable snake_case label of a ParseQuery error for drop
// counters: "" for nil and "other" for an error ParseQuery does not return.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	var pe *parseError
	if errors.As(err, &pe) {
		return pe.reason
	}
	return "other"
}

// Reasons lists every label Reason can return for a ParseQuery error, so
// that counters can be created before the first drop.
func Reasons() []string {
	errs := []error{ErrTruncated, ErrVLANStacked, ErrNotIP, ErrIPVersion, ErrIPHeader,
		ErrIPLength, ErrFragment, ErrIPv6ExtHeader, ErrNotUDP, ErrUDPLength}
	labels := make([]string, 0, len(errs)+1)
	for _, err := range errs {
		labels = append(labels, Reason(err))
	}
	return append(labels, "other")
}

// Header sizes and protocol numbers.
const (
	ethHeaderLen  = 14
	vlanTagLen    = 4
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	udpHeaderLen  = 8

	etherTypeIPv4  = 0x0800
	etherTypeIPv6  = 0x86dd
	etherTypeVLAN  = 0x8100
	etherTypeQinQ  = 0x88a8
	protoUDP       = 17
	defaultHopTTL  = 64
	maxIPv4Total   = 0xffff
	maxIPv6Payload = 0xffff
)

// ParseQuery parses an Ethernet frame carrying a UDP datagram over IPv4 or
// IPv6 into q, setting every field except InPort. q.Payload aliases frame.
// On error q is partly filled and must not be used; the error is one of the
// Err* values of this package. The UDP checksum is never checked.
func ParseQuery(frame []byte, q *Query) error {
	if len(frame) < ethHeaderLen {
		return ErrTruncated
	}
	copy(q.DstMAC[:], frame[0:6])
	copy(q.SrcMAC[:], frame[6:12])
	etherType := binary.BigEndian.Uint16(frame[12:14])
	off := ethHeaderLen
	q.Tagged, q.TCI = false, 0
	switch etherType {
	case etherTypeVLAN:
		if len(frame) < ethHeaderLen+vlanTagLen {
			return ErrTruncated
		}
		q.Tagged = true
		q.TCI = binary.BigEndian.Uint16(frame[14:16])
		etherType = binary.BigEndian.Uint16(frame[16:18])
		off += vlanTagLen
		if etherType == etherTypeVLAN || etherType == etherTypeQinQ {
			return ErrVLANStacked
		}
	case etherTypeQinQ:
		return ErrVLANStacked
	}
	var udp []byte
	var err error
	switch etherType {
	case etherTypeIPv4:
		udp, err = parseIPv4(frame[off:], q)
	case etherTypeIPv6:
		udp, err = parseIPv6(frame[off:], q)
	default:
		return ErrNotIP
	}
	if err != nil {
		return err
	}
	if len(udp) < udpHeaderLen {
		return ErrTruncated
	}
	udpLen := int(binary.BigEndian.Uint16(udp[4:6]))
	if udpLen < udpHeaderLen || udpLen > len(udp) {
		return ErrUDPLength
	}
	q.SrcPort = binary.BigEndian.Uint16(udp[0:2])
	q.DstPort = binary.BigEndian.Uint16(udp[2:4])
	q.Payload = udp[udpHeaderLen:udpLen]
	return nil
}

// parseIPv4 parses the IPv4 header at the start of pkt into q and returns the
// IP payload, bounded by the total length.
func parseIPv4(pkt []byte, q *Query) ([]byte, error) {
	if len(pkt) < ipv4HeaderLen {
		return nil, ErrTruncated
	}
	if pkt[0]>>4 != 4 {
		return nil, ErrIPVersion
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < ipv4HeaderLen || ihl > len(pkt) {
		return nil, ErrIPHeader
	}
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	if total < ihl || total > len(pkt) {
		return nil, ErrIPLength
	}
	// Flags and fragment offset: reserved bit, DF, MF, then 13 offset bits.
	if binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 {
		return nil, ErrFragment
	}
	if pkt[9] != protoUDP {
		return nil, ErrNotUDP
	}
	q.Src = netip.AddrFrom4([4]byte(pkt[12:16]))
	q.Dst = netip.AddrFrom4([4]byte(pkt[16:20]))
	return pkt[ihl:total], nil
}

// parseIPv6 parses the IPv6 header at the start of pkt into q and returns the
// IP payload, bounded by the payload length.
func parseIPv6(pkt []byte, q *Query) ([]byte, error) {
	if len(pkt) < ipv6HeaderLen {
		return nil, ErrTruncated
	}
	if pkt[0]>>4 != 6 {
		return nil, ErrIPVersion
	}
	plen := int(binary.BigEndian.Uint16(pkt[4:6]))
	if plen > len(pkt)-ipv6HeaderLen {
		return nil, ErrIPLength
	}
	switch next := pkt[6]; next {
	case protoUDP:
	case 44: // Fragment
		return nil, ErrFragment
	case 0, 43, 50, 51, 60, 135, 139, 140, 253, 254:
		// Hop-by-hop, Routing, ESP, AH, Destination Options, Mobility,
		// HIP, Shim6 and the two experimental numbers (RFC 7045).
		return nil, ErrIPv6ExtHeader
	default:
		return nil, ErrNotUDP
	}
	q.Src = netip.AddrFrom16([16]byte(pkt[8:24]))
	q.Dst = netip.AddrFrom16([16]byte(pkt[24:40]))
	return pkt[ipv6HeaderLen : ipv6HeaderLen+plen], nil
}

// isIPv4 reports whether a reply to q is sent over IPv4: when both of its
// addresses are IPv4. Any other pair is sent over IPv6 (IPv4 addresses
// mapped), so a Query that ParseQuery did not fill cannot cause a panic.
func isIPv4(q *Query) bool {
	return q.Src.Is4() && q.Dst.Is4()
}

// MaxPayload returns the largest UDP payload a reply to q may carry so that
// its IP packet fits in mtu (an L3 MTU: Ethernet header and VLAN tag are not
// counted): mtu-28 for IPv4, mtu-48 for IPv6, and never below 0.
func MaxPayload(q *Query, mtu int) int {
	n := mtu - ipv6HeaderLen - udpHeaderLen
	if isIPv4(q) {
		n = mtu - ipv4HeaderLen - udpHeaderLen
	}
	return max(n, 0)
}

// AppendReply appends to dst the Ethernet frame answering q with UDP payload
// msg and returns the extended slice. Ethernet: source q.DstMAC, destination
// q.SrcMAC, the same 802.1Q TCI when q was tagged. IPv4 (when q.Src and q.Dst
// are both IPv4): IHL 5, TOS 0, ID 0, DF, TTL 64, correct header checksum.
// IPv6: traffic class and flow label 0, hop limit 64. IP source q.Dst,
// destination q.Src; UDP source port q.DstPort, destination port q.SrcPort,
// correct UDP checksum (a computed 0 is sent as 0xffff). The frame is not
// padded to the Ethernet minimum. When msg does not fit in one UDP datagram
// (more than 65507 bytes over IPv4, 65527 over IPv6), dst is returned
// unchanged. It does not allocate when dst has enough capacity.
func AppendReply(dst []byte, q *Query, msg []byte) []byte {
	v4 := isIPv4(q)
	if (v4 && len(msg) > maxIPv4Total-ipv4HeaderLen-udpHeaderLen) ||
		len(msg) > maxIPv6Payload-udpHeaderLen {
		return dst
	}
	n := ethHeaderLen + udpHeaderLen + len(msg)
	if q.Tagged {
		n += vlanTagLen
	}
	if v4 {
		n += ipv4HeaderLen
	} else {
		n += ipv6HeaderLen
	}
	start := len(dst)
	dst = grow(dst, n)
	b := dst[start:]

	copy(b[0:6], q.SrcMAC[:])
	copy(b[6:12], q.DstMAC[:])
	off := 12
	if q.Tagged {
		binary.BigEndian.PutUint16(b[12:14], etherTypeVLAN)
		binary.BigEndian.PutUint16(b[14:16], q.TCI)
		off += vlanTagLen
	}
	udpLen := udpHeaderLen + len(msg)
	var sum uint64
	if v4 {
		binary.BigEndian.PutUint16(b[off:], etherTypeIPv4)
		ip := b[off+2 : off+2+ipv4HeaderLen]
		src, dstAddr := q.Dst.As4(), q.Src.As4()
		ip[0] = 0x45
		ip[1] = 0
		binary.BigEndian.PutUint16(ip[2:4], uint16(ipv4HeaderLen+udpLen))
		binary.BigEndian.PutUint16(ip[4:6], 0)
		binary.BigEndian.PutUint16(ip[6:8], 0x4000) // DF
		ip[8] = defaultHopTTL
		ip[9] = protoUDP
		binary.BigEndian.PutUint16(ip[10:12], 0)
		copy(ip[12:16], src[:])
		copy(ip[16:20], dstAddr[:])
		binary.BigEndian.PutUint16(ip[10:12], checksum(0, ip))
		sum = partialSum(0, ip[12:20])
		off += 2 + ipv4HeaderLen
	} else {
		binary.BigEndian.PutUint16(b[off:], etherTypeIPv6)
		ip := b[off+2 : off+2+ipv6HeaderLen]
		src, dstAddr := q.Dst.As16(), q.Src.As16()
		binary.BigEndian.PutUint32(ip[0:4], 6<<28)
		binary.BigEndian.PutUint16(ip[4:6], uint16(udpLen))
		ip[6] = protoUDP
		ip[7] = defaultHopTTL
		copy(ip[8:24], src[:])
		copy(ip[24:40], dstAddr[:])
		sum = partialSum(0, ip[8:40])
		off += 2 + ipv6HeaderLen
	}
	udp := b[off:]
	binary.BigEndian.PutUint16(udp[0:2], q.DstPort)
	binary.BigEndian.PutUint16(udp[2:4], q.SrcPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(udpLen))
	binary.BigEndian.PutUint16(udp[6:8], 0)
	copy(udp[udpHeaderLen:], msg)
	// Pseudo-header: addresses (summed above), protocol and UDP length.
	sum += protoUDP + uint64(udpLen)
	csum := checksum(sum, udp[:udpLen])
	if csum == 0 {
		csum = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:8], csum)
	return dst
}

// grow extends b by n bytes, reallocating only when its capacity is short.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, 2*len(b)+n)
	copy(nb, b)
	return nb
}

// partialSum adds the big-endian 16-bit words of b (a final odd byte padded
// with zero) to sum without folding. Since 2^16 ≡ 1 modulo 0xffff, adding
// 32-bit words is equivalent in ones' complement arithmetic.
func partialSum(sum uint64, b []byte) uint64 {
	for len(b) >= 8 {
		sum += uint64(binary.BigEndian.Uint32(b[0:4])) + uint64(binary.BigEndian.Uint32(b[4:8]))
		b = b[8:]
	}
	if len(b) >= 4 {
		sum += uint64(binary.BigEndian.Uint32(b[0:4]))
		b = b[4:]
	}
	if len(b) >= 2 {
		sum += uint64(binary.BigEndian.Uint16(b[0:2]))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	return sum
}

// Checksum returns the Internet checksum (RFC 1071) of b, starting from the
// unfolded partial sum initial (0, or a pseudo-header's words added up): the
// ones' complement of the ones' complement sum. Over data that includes a
// correct checksum field it returns 0.
func checksum(initial uint64, b []byte) uint16 {
	sum := partialSum(initial, b)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// FixUDPChecksum rewrites the UDP checksum of frame, a frame ParseQuery
// accepted into q, so that a captured packet can be sent on with a correct
// checksum even when the VM left it partial for offload. q.Payload must
// alias frame, as ParseQuery leaves it.
func FixUDPChecksum(frame []byte, q *Query) {
	// Slicing keeps the end of the capacity: the payload starts where
	// the capacities differ.
	start := cap(frame) - cap(q.Payload)
	if start < udpHeaderLen || start+len(q.Payload) > len(frame) {
		return
	}
	udp := frame[start-udpHeaderLen : start+len(q.Payload)]
	binary.BigEndian.PutUint16(udp[6:8], 0)
	var sum uint64
	if isIPv4(q) {
		src, dst := q.Src.As4(), q.Dst.As4()
		sum = partialSum(partialSum(0, src[:]), dst[:])
	} else {
		src, dst := q.Src.As16(), q.Dst.As16()
		sum = partialSum(partialSum(0, src[:]), dst[:])
	}
	sum += protoUDP + uint64(len(udp))
	csum := checksum(sum, udp)
	if csum == 0 {
		csum = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:8], csum)
}
