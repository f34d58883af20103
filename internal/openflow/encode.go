package openflow

import (
	"encoding/binary"
	"errors"
)

// Nicira extension numbers.
const (
	nxtSetControllerID = 20 // experimenter message subtype
	nxastController    = 20 // experimenter action subtypes
	nxastResubmitTable = 14
	nxastRegLoad2      = 33
)

// nxInPort is OFPP_IN_PORT in the 16-bit port field of Nicira actions.
const nxInPort = 0xfff8

// Lengths of fixed parts.
const (
	packetOutFixedLen = 24
	outputActionLen   = 16
	controllerActLen  = 16
	flowModFixedLen   = 48
	resubmitActLen    = 16
	regLoad2ActLen    = 24 // a register OXM, masked or not, padded to 8
)

// MaxPacketOutData is the largest frame AppendPacketOut can carry.
const MaxPacketOutData = MaxMessageLen - packetOutFixedLen - outputActionLen

// MaxResubmitData is the largest frame AppendPacketOutResubmit can carry.
const MaxResubmitData = MaxMessageLen - packetOutFixedLen - regLoad2ActLen - resubmitActLen

// AppendHello appends a HELLO offering only OpenFlow 1.3 (a version bitmap
// element with bit 4 set).
func AppendHello(dst []byte, xid uint32) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeHello, xid)
	// Element type 1 (version bitmap), length 8, bitmap 1<<4.
	dst = append(dst, 0, 1, 0, 8, 0, 0, 0, 1<<Version)
	return finish(dst, start)
}

// AppendEchoRequest appends an ECHO_REQUEST carrying data.
func AppendEchoRequest(dst []byte, xid uint32, data []byte) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeEchoRequest, xid)
	dst = append(dst, data...)
	return finish(dst, start)
}

// AppendEchoReply appends an ECHO_REPLY carrying data (the request's).
func AppendEchoReply(dst []byte, xid uint32, data []byte) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeEchoReply, xid)
	dst = append(dst, data...)
	return finish(dst, start)
}

// AppendFeaturesRequest appends a FEATURES_REQUEST.
func AppendFeaturesRequest(dst []byte, xid uint32) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeFeaturesRequest, xid)
	return finish(dst, start)
}

// AppendSetConfig appends a SET_CONFIG. A missSendLen of MaxLenNoBuffer asks
// for whole packets; a nonzero one also turns on asynchronous messages on an
// Open vSwitch service connection.
func AppendSetConfig(dst []byte, xid uint32, flags, missSendLen uint16) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeSetConfig, xid)
	dst = binary.BigEndian.AppendUint16(dst, flags)
	dst = binary.BigEndian.AppendUint16(dst, missSendLen)
	return finish(dst, start)
}

// AppendSetControllerID appends the Nicira NXT_SET_CONTROLLER_ID message
// giving this connection the id that controller(id=N) actions address.
func AppendSetControllerID(dst []byte, xid uint32, id uint16) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeExperimenter, xid)
	dst = binary.BigEndian.AppendUint32(dst, ExperimenterNicira)
	dst = binary.BigEndian.AppendUint32(dst, nxtSetControllerID)
	dst = appendZeros(dst, 6)
	dst = binary.BigEndian.AppendUint16(dst, id)
	return finish(dst, start)
}

// AppendBarrierRequest appends a BARRIER_REQUEST.
func AppendBarrierRequest(dst []byte, xid uint32) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeBarrierRequest, xid)
	return finish(dst, start)
}

// FlowMod describes a FLOW_MOD. Its instructions, encoded for the add and
// modify commands (deletes carry none), are a meter instruction when
// MeterID is nonzero, then one apply-actions instruction: the controller
// action when MaxLen is nonzero, then Actions in order, then an output to
// each port of Output. A flow without any of them drops what it matches.
type FlowMod struct {
	Cookie, CookieMask       uint64
	TableID                  uint8
	Command                  uint8
	IdleTimeout, HardTimeout uint16
	Priority                 uint16
	Flags                    uint16
	// OutPort and OutGroup filter deletes: use PortAny and GroupAny for
	// no filter. Adds and modifies are encoded with PortAny and GroupAny.
	OutPort, OutGroup uint32
	Match             Match
	// ControllerID and MaxLen, when MaxLen is nonzero, add a Nicira
	// controller action (NXAST_CONTROLLER, reason action) sending up to
	// MaxLen bytes of each packet (MaxLenNoBuffer: all of it) to the
	// connections whose controller id is ControllerID.
	ControllerID, MaxLen uint16
	// Actions are the actions after the controller action: moves and sets
	// of fields, register loads, resubmits.
	Actions []Action
	// Output lists ports to output the packet to, after Actions
	// (PortInPort: back where it came from).
	Output []uint32
	// MeterID, when nonzero, sends the packet through that meter before
	// the actions (an OpenFlow 1.3 meter instruction); the meter must
	// exist when the flow is added.
	MeterID uint32
}

// errFlowModTooLong reports a flow-mod over the 64 KiB message limit.
var errFlowModTooLong = errors.New("openflow: flow-mod longer than a message")

// AppendFlowMod appends a FLOW_MOD built from fm. It fails (returning dst
// unchanged) when fm's match has an address of the wrong family, an action
// cannot be encoded or the message would exceed MaxMessageLen.
func AppendFlowMod(dst []byte, xid uint32, fm *FlowMod) ([]byte, error) {
	if err := fm.Match.check(); err != nil {
		return dst, err
	}
	for i := range fm.Actions {
		if err := fm.Actions[i].check(); err != nil {
			return dst, err
		}
	}
	start := len(dst)
	dst = appendHeader(dst, TypeFlowMod, xid)
	dst = binary.BigEndian.AppendUint64(dst, fm.Cookie)
	dst = binary.BigEndian.AppendUint64(dst, fm.CookieMask)
	dst = append(dst, fm.TableID, fm.Command)
	dst = binary.BigEndian.AppendUint16(dst, fm.IdleTimeout)
	dst = binary.BigEndian.AppendUint16(dst, fm.HardTimeout)
	dst = binary.BigEndian.AppendUint16(dst, fm.Priority)
	dst = binary.BigEndian.AppendUint32(dst, NoBuffer)
	isDelete := fm.Command == FlowDelete || fm.Command == FlowDeleteStrict
	if isDelete {
		dst = binary.BigEndian.AppendUint32(dst, fm.OutPort)
		dst = binary.BigEndian.AppendUint32(dst, fm.OutGroup)
	} else {
		dst = binary.BigEndian.AppendUint32(dst, PortAny)
		dst = binary.BigEndian.AppendUint32(dst, GroupAny)
	}
	dst = binary.BigEndian.AppendUint16(dst, fm.Flags)
	dst = append(dst, 0, 0)
	dst = appendMatch(dst, &fm.Match)
	if !isDelete {
		if fm.MeterID != 0 {
			// Instruction type 6 (meter), length 8, the meter id.
			dst = append(dst, 0, 6, 0, 8)
			dst = binary.BigEndian.AppendUint32(dst, fm.MeterID)
		}
		dst = appendApplyActions(dst, fm)
	}
	if len(dst)-start > MaxMessageLen {
		return dst[:start], errFlowModTooLong
	}
	return finish(dst, start), nil
}

// appendApplyActions appends an apply-actions instruction holding fm's
// actions, or nothing when fm has none.
func appendApplyActions(dst []byte, fm *FlowMod) []byte {
	if fm.MaxLen == 0 && len(fm.Actions) == 0 && len(fm.Output) == 0 {
		return dst
	}
	start := len(dst)
	// Instruction type 4 (apply actions), length patched below, 4 pad bytes.
	dst = append(dst, 0, 4, 0, 0, 0, 0, 0, 0)
	if fm.MaxLen != 0 {
		dst = append(dst, 0xff, 0xff, 0, controllerActLen)
		dst = binary.BigEndian.AppendUint32(dst, ExperimenterNicira)
		dst = binary.BigEndian.AppendUint16(dst, nxastController)
		dst = binary.BigEndian.AppendUint16(dst, fm.MaxLen)
		dst = binary.BigEndian.AppendUint16(dst, fm.ControllerID)
		dst = append(dst, ReasonAction, 0)
	}
	for i := range fm.Actions {
		dst = fm.Actions[i].append(dst)
	}
	for _, port := range fm.Output {
		dst = appendOutput(dst, port)
	}
	// An oversized length is cut here, and AppendFlowMod rejects the message.
	binary.BigEndian.PutUint16(dst[start+2:], uint16(len(dst)-start))
	return dst
}

// appendOutput appends an output action to port.
func appendOutput(dst []byte, port uint32) []byte {
	dst = append(dst, 0, 0, 0, outputActionLen)
	dst = binary.BigEndian.AppendUint32(dst, port)
	maxLen := uint16(0)
	if port == PortController {
		maxLen = MaxLenNoBuffer
	}
	dst = binary.BigEndian.AppendUint16(dst, maxLen)
	return appendZeros(dst, 6)
}

// AppendPacketOut appends a PACKET_OUT of frame (carried whole, no buffer)
// with the given in_port (usually PortController) and one output action to
// outPort. frame must be at most MaxPacketOutData bytes; a longer one is cut
// there.
func AppendPacketOut(dst []byte, xid uint32, inPort, outPort uint32, frame []byte) []byte {
	if len(frame) > MaxPacketOutData {
		frame = frame[:MaxPacketOutData]
	}
	start := len(dst)
	dst = appendHeader(dst, TypePacketOut, xid)
	dst = binary.BigEndian.AppendUint32(dst, NoBuffer)
	dst = binary.BigEndian.AppendUint32(dst, inPort)
	dst = append(dst, 0, outputActionLen, 0, 0, 0, 0, 0, 0)
	dst = appendOutput(dst, outPort)
	dst = append(dst, frame...)
	return finish(dst, start)
}

// AppendPacketOutResubmit appends a PACKET_OUT of frame (carried whole, no
// buffer) that the bridge processes as if frame had just arrived on inPort:
// its actions set mark (an NXAST_REG_LOAD2 of Value under Mask; none when
// Mask is zero) and resubmit the packet to table (NXAST_RESUBMIT_TABLE,
// in_port unchanged), where the flows that match its in_port and the mark
// take it on. ovs-ofctl shows them as
// "set_field:VALUE/MASK->regN,resubmit(,TABLE)". It fails (returning dst
// unchanged) for a register that does not exist or a value with bits
// outside its mask. frame must be at most MaxResubmitData bytes; a longer
// one is cut there.
func AppendPacketOutResubmit(dst []byte, xid uint32, inPort uint32, mark Reg, table uint8, frame []byte) ([]byte, error) {
	actionsLen := resubmitActLen
	if mark.Mask != 0 {
		if err := mark.check(); err != nil {
			return dst, err
		}
		actionsLen += regLoad2ActLen
	}
	if len(frame) > MaxResubmitData {
		frame = frame[:MaxResubmitData]
	}
	start := len(dst)
	dst = appendHeader(dst, TypePacketOut, xid)
	dst = binary.BigEndian.AppendUint32(dst, NoBuffer)
	dst = binary.BigEndian.AppendUint32(dst, inPort)
	dst = binary.BigEndian.AppendUint16(dst, uint16(actionsLen))
	dst = appendZeros(dst, 6)
	if mark.Mask != 0 {
		load := LoadReg(mark)
		dst = load.append(dst)
	}
	dst = appendResubmit(dst, table)
	dst = append(dst, frame...)
	return finish(dst, start), nil
}

// AppendFlowStatsRequest appends a FLOW multipart request for the flows of
// table tableID (TableAll: every table) whose cookie matches cookie under
// cookieMask.
func AppendFlowStatsRequest(dst []byte, xid uint32, tableID uint8, cookie, cookieMask uint64) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeMultipartRequest, xid)
	dst = binary.BigEndian.AppendUint16(dst, MultipartFlow)
	dst = append(dst, 0, 0, 0, 0, 0, 0) // flags, pad
	dst = append(dst, tableID, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, PortAny)
	dst = binary.BigEndian.AppendUint32(dst, GroupAny)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, cookie)
	dst = binary.BigEndian.AppendUint64(dst, cookieMask)
	dst = appendEmptyMatch(dst)
	return finish(dst, start)
}
