package openflow

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Match is the subset of OXM fields this codec encodes and decodes. A zero
// field is a wildcard. Encoding includes no prerequisites: set EthType (and
// IPProto for UDPDst) yourself, as OpenFlow requires.
type Match struct {
	InPort  uint32
	EthType uint16
	IPProto uint8
	// IPv4Dst must be an IPv4 address (or IPv4-mapped IPv6) when valid.
	IPv4Dst netip.Addr
	// IPv6Dst must be an IPv6 address when valid.
	IPv6Dst netip.Addr
	UDPDst  uint16
}

// OXM class and field numbers of the OpenFlow basic class.
const (
	oxmClassBasic = 0x8000

	oxmInPort  = 0
	oxmEthType = 5
	oxmIPProto = 10
	oxmIPv4Dst = 12
	oxmUDPDst  = 16
	oxmIPv6Dst = 27
)

// matchTypeOXM is ofp_match.type for OXM matches.
const matchTypeOXM = 1

// oxmHeader returns the 32-bit OXM header of a basic field without mask.
func oxmHeader(field uint8, length uint8) uint32 {
	return oxmClassBasic<<16 | uint32(field)<<9 | uint32(length)
}

// check reports a match this codec cannot encode faithfully.
func (m *Match) check() error {
	if m.IPv4Dst.IsValid() && !m.IPv4Dst.Unmap().Is4() {
		return fmt.Errorf("openflow: match ipv4_dst %s is not an IPv4 address", m.IPv4Dst)
	}
	if m.IPv6Dst.IsValid() && (m.IPv6Dst.Is4() || m.IPv6Dst.Is4In6()) {
		return fmt.Errorf("openflow: match ipv6_dst %s is not an IPv6 address", m.IPv6Dst)
	}
	return nil
}

// appendMatch appends m as an ofp_match padded to 8 bytes. The caller has
// checked m.
func appendMatch(dst []byte, m *Match) []byte {
	start := len(dst)
	dst = append(dst, 0, matchTypeOXM, 0, 0)
	if m.InPort != 0 {
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(oxmInPort, 4))
		dst = binary.BigEndian.AppendUint32(dst, m.InPort)
	}
	if m.EthType != 0 {
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(oxmEthType, 2))
		dst = binary.BigEndian.AppendUint16(dst, m.EthType)
	}
	if m.IPProto != 0 {
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(oxmIPProto, 1))
		dst = append(dst, m.IPProto)
	}
	if m.IPv4Dst.IsValid() {
		a := m.IPv4Dst.Unmap().As4()
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(oxmIPv4Dst, 4))
		dst = append(dst, a[:]...)
	}
	if m.IPv6Dst.IsValid() {
		a := m.IPv6Dst.As16()
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(oxmIPv6Dst, 16))
		dst = append(dst, a[:]...)
	}
	if m.UDPDst != 0 {
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(oxmUDPDst, 2))
		dst = binary.BigEndian.AppendUint16(dst, m.UDPDst)
	}
	binary.BigEndian.PutUint16(dst[start+2:], uint16(len(dst)-start))
	return appendZeros(dst, pad8(len(dst)-start))
}

// appendEmptyMatch appends a match of no fields.
func appendEmptyMatch(dst []byte) []byte {
	return append(dst, 0, matchTypeOXM, 0, 4, 0, 0, 0, 0)
}

// pad8 returns how many bytes pad n up to a multiple of 8.
func pad8(n int) int {
	return (8 - n%8) % 8
}

// parseMatch decodes the ofp_match at the start of b into m, ignoring
// fields it does not know and masked fields, and returns the match's length
// including padding.
func parseMatch(b []byte, m *Match) (int, error) {
	if len(b) < 4 {
		return 0, ErrTruncated
	}
	if binary.BigEndian.Uint16(b) != matchTypeOXM {
		return 0, fmt.Errorf("%w: match type %d", ErrMatch, binary.BigEndian.Uint16(b))
	}
	length := int(binary.BigEndian.Uint16(b[2:]))
	padded := length + pad8(length)
	if length < 4 || padded > len(b) {
		return 0, fmt.Errorf("%w: match length %d", ErrMatch, length)
	}
	*m = Match{}
	fields := b[4:length]
	for len(fields) > 0 {
		if len(fields) < 4 {
			return 0, fmt.Errorf("%w: truncated OXM header", ErrMatch)
		}
		h := binary.BigEndian.Uint32(fields)
		n := int(h & 0xff)
		if len(fields) < 4+n {
			return 0, fmt.Errorf("%w: OXM field longer than the match", ErrMatch)
		}
		v := fields[4 : 4+n]
		fields = fields[4+n:]
		if h>>16 != oxmClassBasic || h&0x100 != 0 {
			continue
		}
		switch field := uint8(h >> 9 & 0x7f); {
		case field == oxmInPort && n == 4:
			m.InPort = binary.BigEndian.Uint32(v)
		case field == oxmEthType && n == 2:
			m.EthType = binary.BigEndian.Uint16(v)
		case field == oxmIPProto && n == 1:
			m.IPProto = v[0]
		case field == oxmIPv4Dst && n == 4:
			m.IPv4Dst = netip.AddrFrom4([4]byte(v))
		case field == oxmIPv6Dst && n == 16:
			m.IPv6Dst = netip.AddrFrom16([16]byte(v))
		case field == oxmUDPDst && n == 2:
			m.UDPDst = binary.BigEndian.Uint16(v)
		}
	}
	return padded, nil
}
