package openflow

import (
	"encoding/binary"
	"fmt"
)

// Field is a packet field that Move and SetField act on: its OXM header
// without the mask bit (class, field number, length), whose low byte is
// the field's width in bytes.
type Field uint32

// The fields this codec moves and sets.
const (
	FieldEthDst     Field = 0x80000606 // OXM_OF_ETH_DST (eth_dst)
	FieldEthSrc     Field = 0x80000806 // OXM_OF_ETH_SRC (eth_src)
	FieldARPOp      Field = 0x80002a02 // OXM_OF_ARP_OP (arp_op)
	FieldARPSPA     Field = 0x80002c04 // OXM_OF_ARP_SPA (arp_spa)
	FieldARPTPA     Field = 0x80002e04 // OXM_OF_ARP_TPA (arp_tpa)
	FieldARPSHA     Field = 0x80003006 // OXM_OF_ARP_SHA (arp_sha)
	FieldARPTHA     Field = 0x80003206 // OXM_OF_ARP_THA (arp_tha)
	FieldIPv6Src    Field = 0x80003410 // OXM_OF_IPV6_SRC (ipv6_src)
	FieldIPv6Dst    Field = 0x80003610 // OXM_OF_IPV6_DST (ipv6_dst)
	FieldICMPv6Type Field = 0x80003a01 // OXM_OF_ICMPV6_TYPE (icmpv6_type)
	FieldNDTLL      Field = 0x80004206 // OXM_OF_IPV6_ND_TLL (nd_tll)
	// FieldIPTTL is the IPv4 TTL or IPv6 hop limit, Nicira's NXM_NX_IP_TTL
	// (nw_ttl): OpenFlow has no OXM for it.
	FieldIPTTL Field = 0x00013a01
	// FieldNDReserved is the 32 bits after an ND message's checksum (the
	// R, S and O flags of an advertisement), Open vSwitch's
	// ERICOXM_OF_ICMPV6_ND_RESERVED (nd_reserved, Open vSwitch 2.11+).
	FieldNDReserved Field = 0x10000204
	// FieldNDOptionsType is the type of an ND message's first option (1
	// source, 2 target link-layer address), ERICOXM_OF_ICMPV6_ND_OPTIONS_TYPE
	// (nd_options_type, Open vSwitch 2.11+).
	FieldNDOptionsType Field = 0x10000401
)

// width returns the field's width in bytes.
func (f Field) width() int {
	return int(f & 0xff)
}

// Kinds of Action.
const (
	actMove = iota + 1
	actSetField
	actLoadReg
	actResubmit
)

// Nicira action subtypes and lengths of the actions below.
const (
	nxastRegMove   = 6
	regMoveActLen  = 24 // NXAST_REG_MOVE with two 4-byte OXM headers
	ofpatSetField  = 25
	setFieldHdrLen = 4
)

// Action is one action of a flow's apply-actions instruction, made by Move,
// SetField, LoadReg or Resubmit. Actions compare equal when they do the
// same.
type Action struct {
	kind     uint8
	dst, src Field
	value    [16]byte
	n        uint8 // bytes of value in use
	reg      Reg
	table    uint8
}

// Move copies the whole of field src into field dst, which must have the
// same width (NXAST_REG_MOVE; ovs-ofctl shows
// "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]").
func Move(src, dst Field) Action {
	return Action{kind: actMove, src: src, dst: dst}
}

// SetField sets field f to value, big-endian, exactly f's width
// (OFPAT_SET_FIELD; ovs-ofctl shows "set_field:VALUE->FIELD"). A value of
// another length makes the flow-mod fail to encode.
func SetField(f Field, value []byte) Action {
	a := Action{kind: actSetField, dst: f}
	if len(value) == f.width() && len(value) <= len(a.value) {
		a.n = uint8(copy(a.value[:], value))
	}
	return a
}

// LoadReg sets the bits of r.Mask in register r.Index to r.Value
// (NXAST_REG_LOAD2; ovs-ofctl shows "set_field:VALUE/MASK->regN"). A
// register that does not exist or a value outside the mask makes the
// flow-mod fail to encode.
func LoadReg(r Reg) Action {
	return Action{kind: actLoadReg, reg: r}
}

// Resubmit looks the packet up in table, in_port unchanged, and runs the
// actions of the flow it matches there before going on with the rest
// (NXAST_RESUBMIT_TABLE; ovs-ofctl shows "resubmit(,TABLE)"). The packet
// carries what the actions before it changed.
func Resubmit(table uint8) Action {
	return Action{kind: actResubmit, table: table}
}

// check reports an action this codec cannot encode.
func (a *Action) check() error {
	switch a.kind {
	case actMove:
		if a.src.width() != a.dst.width() || a.src.width() == 0 {
			return fmt.Errorf("openflow: move between fields %#x and %#x of different widths", a.src, a.dst)
		}
	case actSetField:
		if a.n == 0 {
			return fmt.Errorf("openflow: set_field of field %#x: value is not %d bytes", a.dst, a.dst.width())
		}
	case actLoadReg:
		if a.reg.Mask == 0 {
			return fmt.Errorf("openflow: load of reg%d with an empty mask", a.reg.Index)
		}
		return a.reg.check()
	case actResubmit:
	default:
		return fmt.Errorf("openflow: zero action")
	}
	return nil
}

// append appends the checked action.
func (a *Action) append(dst []byte) []byte {
	start := len(dst)
	switch a.kind {
	case actMove:
		dst = append(dst, 0xff, 0xff, 0, regMoveActLen)
		dst = binary.BigEndian.AppendUint32(dst, ExperimenterNicira)
		dst = binary.BigEndian.AppendUint16(dst, nxastRegMove)
		dst = binary.BigEndian.AppendUint16(dst, uint16(8*a.src.width())) // n_bits
		dst = append(dst, 0, 0, 0, 0)                                     // src_ofs, dst_ofs
		dst = binary.BigEndian.AppendUint32(dst, uint32(a.src))
		dst = binary.BigEndian.AppendUint32(dst, uint32(a.dst))
	case actSetField:
		n := setFieldHdrLen + 4 + int(a.n)
		n += pad8(n)
		dst = binary.BigEndian.AppendUint16(dst, ofpatSetField)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
		dst = binary.BigEndian.AppendUint32(dst, uint32(a.dst))
		dst = append(dst, a.value[:a.n]...)
		dst = appendZeros(dst, n-(len(dst)-start))
	case actLoadReg:
		dst = append(dst, 0xff, 0xff, 0, regLoad2ActLen)
		dst = binary.BigEndian.AppendUint32(dst, ExperimenterNicira)
		dst = binary.BigEndian.AppendUint16(dst, nxastRegLoad2)
		dst = a.reg.appendOXM(dst)
		dst = appendZeros(dst, regLoad2ActLen-(len(dst)-start))
	case actResubmit:
		dst = appendResubmit(dst, a.table)
	}
	return dst
}

// appendResubmit appends an NXAST_RESUBMIT_TABLE to table, in_port
// unchanged.
func appendResubmit(dst []byte, table uint8) []byte {
	dst = append(dst, 0xff, 0xff, 0, resubmitActLen)
	dst = binary.BigEndian.AppendUint32(dst, ExperimenterNicira)
	dst = binary.BigEndian.AppendUint16(dst, nxastResubmitTable)
	dst = binary.BigEndian.AppendUint16(dst, nxInPort)
	return append(dst, table, 0, 0, 0)
}
