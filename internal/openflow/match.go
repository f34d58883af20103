package openflow

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Match is the subset of OXM fields this codec encodes and decodes. A zero
// field is a wildcard. Encoding includes no prerequisites: set EthType (and
// IPProto for UDPDst and ICMPv6Type, ICMPv6Type for NDTarget) yourself, as
// OpenFlow requires.
type Match struct {
	InPort uint32
	// EthDst matches the Ethernet destination when it is not all zeros.
	EthDst [6]byte
	// Untagged matches only frames without an 802.1Q tag (OXM VLAN_VID
	// OFPVID_NONE; ovs-ofctl shows vlan_tci=0x0000/0x1fff).
	Untagged bool
	EthType  uint16
	IPProto  uint8
	// IPv4Dst must be an IPv4 address (or IPv4-mapped IPv6) when valid.
	IPv4Dst netip.Addr
	// ARPOp is the ARP opcode (1 request, 2 reply).
	ARPOp uint16
	// ARPTPA is the ARP target protocol address; it must be an IPv4
	// address (or IPv4-mapped IPv6) when valid.
	ARPTPA netip.Addr
	// IPv6Src must be an IPv6 address when valid; the unspecified address
	// :: is a valid value (it matches packets sent from no address).
	IPv6Src netip.Addr
	// IPv6Dst must be an IPv6 address when valid.
	IPv6Dst netip.Addr
	UDPDst  uint16
	// ICMPv6Type is the ICMPv6 type (135 Neighbor Solicitation, 136
	// Neighbor Advertisement); type 0 cannot be matched.
	ICMPv6Type uint8
	// NDTarget is the target address of a Neighbor Solicitation or
	// Advertisement; it must be an IPv6 address when valid.
	NDTarget netip.Addr
	// Reg matches the bits of one Open vSwitch register; a zero Mask is a
	// wildcard.
	Reg Reg
}

// Reg is a value of some bits of one of Open vSwitch's 32-bit registers
// reg0..reg15, the Nicira fields NXM_NX_REG0..15 (OXM class 0x0001), which
// start at zero for every packet and live only while the bridge processes
// it. The bits set in Mask are Value's; Value has no bit outside Mask. In a
// Match, a zero Mask matches any value; an all-ones Mask is encoded
// without a mask, as Open vSwitch does.
type Reg struct {
	Index       uint8
	Value, Mask uint32
}

// NumRegs is the number of registers Open vSwitch has (reg0..reg15).
const NumRegs = 16

// check reports a register field that cannot be encoded.
func (r Reg) check() error {
	if r.Index >= NumRegs {
		return fmt.Errorf("openflow: register reg%d does not exist (reg0..reg%d)", r.Index, NumRegs-1)
	}
	if r.Value&^r.Mask != 0 {
		return fmt.Errorf("openflow: reg%d value %#x has bits outside its mask %#x", r.Index, r.Value, r.Mask)
	}
	return nil
}

// appendOXM appends r as an NXM_NX_REGn OXM field, masked unless Mask is
// all ones.
func (r Reg) appendOXM(dst []byte) []byte {
	if r.Mask == ^uint32(0) {
		dst = binary.BigEndian.AppendUint32(dst, oxmClassNXM1<<16|uint32(r.Index)<<9|4)
		return binary.BigEndian.AppendUint32(dst, r.Value)
	}
	dst = binary.BigEndian.AppendUint32(dst, oxmClassNXM1<<16|uint32(r.Index)<<9|oxmHasMask|8)
	dst = binary.BigEndian.AppendUint32(dst, r.Value)
	return binary.BigEndian.AppendUint32(dst, r.Mask)
}

// OXM classes, the has-mask bit and field numbers of the OpenFlow basic
// class.
const (
	oxmClassNXM1  = 0x0001
	oxmClassBasic = 0x8000
	oxmHasMask    = 0x100

	oxmInPort     = 0
	oxmEthDst     = 3
	oxmEthType    = 5
	oxmVLANVID    = 6
	oxmIPProto    = 10
	oxmIPv4Dst    = 12
	oxmUDPDst     = 16
	oxmARPOp      = 21
	oxmARPTPA     = 23
	oxmIPv6Src    = 26
	oxmIPv6Dst    = 27
	oxmICMPv6Type = 29
	oxmNDTarget   = 31
)

// matchTypeOXM is ofp_match.type for OXM matches.
const matchTypeOXM = 1

// oxmHeader returns the 32-bit OXM header of a basic field without mask.
func oxmHeader(field uint8, length uint8) uint32 {
	return oxmClassBasic<<16 | uint32(field)<<9 | uint32(length)
}

// check reports a match this codec cannot encode faithfully.
func (m *Match) check() error {
	for _, f := range []struct {
		name string
		addr netip.Addr
		v4   bool
	}{
		{"ipv4_dst", m.IPv4Dst, true},
		{"arp_tpa", m.ARPTPA, true},
		{"ipv6_src", m.IPv6Src, false},
		{"ipv6_dst", m.IPv6Dst, false},
		{"nd_target", m.NDTarget, false},
	} {
		switch {
		case !f.addr.IsValid():
		case f.v4 && !f.addr.Unmap().Is4():
			return fmt.Errorf("openflow: match %s %s is not an IPv4 address", f.name, f.addr)
		case !f.v4 && (f.addr.Is4() || f.addr.Is4In6()):
			return fmt.Errorf("openflow: match %s %s is not an IPv6 address", f.name, f.addr)
		}
	}
	if m.Reg.Mask != 0 {
		return m.Reg.check()
	}
	return nil
}

// appendMatch appends m as an ofp_match padded to 8 bytes, each field after
// its prerequisites. The caller has checked m.
func appendMatch(dst []byte, m *Match) []byte {
	start := len(dst)
	dst = append(dst, 0, matchTypeOXM, 0, 0)
	if m.InPort != 0 {
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(oxmInPort, 4))
		dst = binary.BigEndian.AppendUint32(dst, m.InPort)
	}
	if m.EthDst != [6]byte{} {
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(oxmEthDst, 6))
		dst = append(dst, m.EthDst[:]...)
	}
	if m.Untagged {
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(oxmVLANVID, 2))
		dst = append(dst, 0, 0)
	}
	if m.EthType != 0 {
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(oxmEthType, 2))
		dst = binary.BigEndian.AppendUint16(dst, m.EthType)
	}
	if m.IPProto != 0 {
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(oxmIPProto, 1))
		dst = append(dst, m.IPProto)
	}
	dst = appendAddr(dst, oxmIPv4Dst, m.IPv4Dst)
	if m.ARPOp != 0 {
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(oxmARPOp, 2))
		dst = binary.BigEndian.AppendUint16(dst, m.ARPOp)
	}
	dst = appendAddr(dst, oxmARPTPA, m.ARPTPA)
	dst = appendAddr(dst, oxmIPv6Src, m.IPv6Src)
	dst = appendAddr(dst, oxmIPv6Dst, m.IPv6Dst)
	if m.UDPDst != 0 {
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(oxmUDPDst, 2))
		dst = binary.BigEndian.AppendUint16(dst, m.UDPDst)
	}
	if m.ICMPv6Type != 0 {
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(oxmICMPv6Type, 1))
		dst = append(dst, m.ICMPv6Type)
	}
	dst = appendAddr(dst, oxmNDTarget, m.NDTarget)
	if m.Reg.Mask != 0 {
		dst = m.Reg.appendOXM(dst)
	}
	binary.BigEndian.PutUint16(dst[start+2:], uint16(len(dst)-start))
	return appendZeros(dst, pad8(len(dst)-start))
}

// appendAddr appends addr as the basic field of that number, 4 bytes for
// an IPv4 (or IPv4-mapped) address, 16 for IPv6; nothing when addr is not
// valid.
func appendAddr(dst []byte, field uint8, addr netip.Addr) []byte {
	switch {
	case !addr.IsValid():
		return dst
	case addr.Unmap().Is4():
		a := addr.Unmap().As4()
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(field, 4))
		return append(dst, a[:]...)
	default:
		a := addr.As16()
		dst = binary.BigEndian.AppendUint32(dst, oxmHeader(field, 16))
		return append(dst, a[:]...)
	}
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
// fields it does not know, masked fields but registers, and VLAN matches
// other than untagged, and returns the match's length including padding.
// Of several registers, the last one counts.
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
		field := uint8(h >> 9 & 0x7f)
		if h>>16 == oxmClassNXM1 {
			parseReg(field, h&oxmHasMask != 0, v, m)
			continue
		}
		if h>>16 != oxmClassBasic || h&oxmHasMask != 0 {
			continue
		}
		switch {
		case field == oxmInPort && n == 4:
			m.InPort = binary.BigEndian.Uint32(v)
		case field == oxmVLANVID && n == 2:
			m.Untagged = binary.BigEndian.Uint16(v) == 0
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
		case field == oxmEthDst && n == 6:
			m.EthDst = [6]byte(v)
		case field == oxmARPOp && n == 2:
			m.ARPOp = binary.BigEndian.Uint16(v)
		case field == oxmARPTPA && n == 4:
			m.ARPTPA = netip.AddrFrom4([4]byte(v))
		case field == oxmIPv6Src && n == 16:
			m.IPv6Src = netip.AddrFrom16([16]byte(v))
		case field == oxmICMPv6Type && n == 1:
			m.ICMPv6Type = v[0]
		case field == oxmNDTarget && n == 16:
			m.NDTarget = netip.AddrFrom16([16]byte(v))
		}
	}
	return padded, nil
}

// parseReg sets m.Reg from an NXM_NX_REGn field (field n, value v with a
// mask when masked); other fields of the class are ignored.
func parseReg(field uint8, masked bool, v []byte, m *Match) {
	switch {
	case field >= NumRegs:
	case !masked && len(v) == 4:
		m.Reg = Reg{Index: field, Value: binary.BigEndian.Uint32(v), Mask: ^uint32(0)}
	case masked && len(v) == 8:
		mask := binary.BigEndian.Uint32(v[4:])
		m.Reg = Reg{Index: field, Value: binary.BigEndian.Uint32(v) & mask, Mask: mask}
	}
}
