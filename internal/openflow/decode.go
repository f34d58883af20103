package openflow

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// body checks that msg is a whole OpenFlow 1.3 message of type typ at least
// minLen bytes long and returns it cut to its header's length.
func body(msg []byte, typ uint8, minLen int) ([]byte, error) {
	h, err := ParseHeader(msg)
	if err != nil {
		return nil, err
	}
	if h.Type != typ {
		return nil, fmt.Errorf("%w: %d, want %d", ErrType, h.Type, typ)
	}
	if h.Version != Version {
		return nil, fmt.Errorf("%w: version %#x, want %#x", ErrType, h.Version, Version)
	}
	if int(h.Length) > len(msg) || int(h.Length) < HeaderLen {
		return nil, fmt.Errorf("%w: header says %d bytes, have %d", ErrBadLength, h.Length, len(msg))
	}
	msg = msg[:h.Length]
	if len(msg) < minLen {
		return nil, ErrTruncated
	}
	return msg, nil
}

// ParseHello returns the versions a HELLO offers as a bitmap (bit n set:
// wire version n is supported). Without a version bitmap element, OpenFlow
// negotiation means every version up to the header's, which is what it
// returns then.
func ParseHello(msg []byte) (uint32, error) {
	h, err := ParseHeader(msg)
	if err != nil {
		return 0, err
	}
	if h.Type != TypeHello {
		return 0, fmt.Errorf("%w: %d, want HELLO", ErrType, h.Type)
	}
	if int(h.Length) > len(msg) || h.Length < HeaderLen {
		return 0, fmt.Errorf("%w: header says %d bytes, have %d", ErrBadLength, h.Length, len(msg))
	}
	elems := msg[HeaderLen:h.Length]
	for len(elems) >= 4 {
		typ := binary.BigEndian.Uint16(elems)
		n := int(binary.BigEndian.Uint16(elems[2:]))
		if n < 4 || n > len(elems) {
			return 0, fmt.Errorf("%w: hello element length %d", ErrBadLength, n)
		}
		if typ == 1 && n >= 8 {
			return binary.BigEndian.Uint32(elems[4:]), nil
		}
		// Elements are padded to 8 bytes; the padding may be missing at the end.
		n += pad8(n)
		if n > len(elems) {
			break
		}
		elems = elems[n:]
	}
	if h.Version >= 32 {
		return 0xffffffff, nil
	}
	return uint32(1)<<(h.Version+1) - 1, nil
}

// EchoData returns the data of an ECHO_REQUEST or ECHO_REPLY.
func EchoData(msg []byte) ([]byte, error) {
	h, err := ParseHeader(msg)
	if err != nil {
		return nil, err
	}
	if h.Type != TypeEchoRequest && h.Type != TypeEchoReply {
		return nil, fmt.Errorf("%w: %d, want ECHO", ErrType, h.Type)
	}
	msg, err = body(msg, h.Type, HeaderLen)
	if err != nil {
		return nil, err
	}
	return msg[HeaderLen:], nil
}

// PacketIn is a decoded PACKET_IN. Data aliases the message.
type PacketIn struct {
	BufferID uint32
	TotalLen uint16
	Reason   uint8
	TableID  uint8
	Cookie   uint64
	// InPort is the in_port field of the match (0 when absent).
	InPort uint32
	Data   []byte
}

// ParsePacketIn decodes an OpenFlow 1.3 PACKET_IN without allocating.
func ParsePacketIn(msg []byte, pi *PacketIn) error {
	msg, err := body(msg, TypePacketIn, 24)
	if err != nil {
		return err
	}
	var m Match
	n, err := parseMatch(msg[24:], &m)
	if err != nil {
		return err
	}
	data := msg[24+n:]
	if len(data) < 2 {
		return ErrTruncated
	}
	*pi = PacketIn{
		BufferID: binary.BigEndian.Uint32(msg[8:]),
		TotalLen: binary.BigEndian.Uint16(msg[12:]),
		Reason:   msg[14],
		TableID:  msg[15],
		Cookie:   binary.BigEndian.Uint64(msg[16:]),
		InPort:   m.InPort,
		Data:     data[2:],
	}
	return nil
}

// FlowRemoved is a decoded FLOW_REMOVED.
type FlowRemoved struct {
	Cookie                   uint64
	Priority                 uint16
	Reason                   uint8
	TableID                  uint8
	DurationSec              uint32
	DurationNsec             uint32
	IdleTimeout, HardTimeout uint16
	PacketCount, ByteCount   uint64
	Match                    Match
}

// ParseFlowRemoved decodes an OpenFlow 1.3 FLOW_REMOVED.
func ParseFlowRemoved(msg []byte) (FlowRemoved, error) {
	msg, err := body(msg, TypeFlowRemoved, 48)
	if err != nil {
		return FlowRemoved{}, err
	}
	fr := FlowRemoved{
		Cookie:       binary.BigEndian.Uint64(msg[8:]),
		Priority:     binary.BigEndian.Uint16(msg[16:]),
		Reason:       msg[18],
		TableID:      msg[19],
		DurationSec:  binary.BigEndian.Uint32(msg[20:]),
		DurationNsec: binary.BigEndian.Uint32(msg[24:]),
		IdleTimeout:  binary.BigEndian.Uint16(msg[28:]),
		HardTimeout:  binary.BigEndian.Uint16(msg[30:]),
		PacketCount:  binary.BigEndian.Uint64(msg[32:]),
		ByteCount:    binary.BigEndian.Uint64(msg[40:]),
	}
	if _, err := parseMatch(msg[48:], &fr.Match); err != nil {
		return FlowRemoved{}, err
	}
	return fr, nil
}

// ErrorTypeExperimenter is the error type of experimenter errors.
const ErrorTypeExperimenter uint16 = 0xffff

// errorTypeNames are the names of OpenFlow 1.3 error types, by number.
var errorTypeNames = [...]string{
	"HELLO_FAILED", "BAD_REQUEST", "BAD_ACTION", "BAD_INSTRUCTION",
	"BAD_MATCH", "FLOW_MOD_FAILED", "GROUP_MOD_FAILED", "PORT_MOD_FAILED",
	"TABLE_MOD_FAILED", "QUEUE_OP_FAILED", "SWITCH_CONFIG_FAILED",
	"ROLE_REQUEST_FAILED", "METER_MOD_FAILED", "TABLE_FEATURES_FAILED",
}

// ErrorMsg is a decoded OFPT_ERROR. For experimenter errors Code holds the
// experimenter's error type. Data (aliasing the message) usually starts with
// the offending request.
type ErrorMsg struct {
	Type         uint16
	Code         uint16
	Experimenter uint32
	Data         []byte
}

// TypeName returns the error type's name (or its number).
func (e *ErrorMsg) TypeName() string {
	if int(e.Type) < len(errorTypeNames) {
		return errorTypeNames[e.Type]
	}
	if e.Type == ErrorTypeExperimenter {
		return "EXPERIMENTER"
	}
	return strconv.Itoa(int(e.Type))
}

// Error describes the error in one line.
func (e *ErrorMsg) Error() string {
	s := "openflow error " + e.TypeName() + " code " + strconv.Itoa(int(e.Code))
	if e.Type == ErrorTypeExperimenter {
		s += fmt.Sprintf(" experimenter %#x", e.Experimenter)
	}
	return s
}

// ParseError decodes an OpenFlow 1.3 ERROR message.
func ParseError(msg []byte) (ErrorMsg, error) {
	msg, err := body(msg, TypeError, 12)
	if err != nil {
		return ErrorMsg{}, err
	}
	e := ErrorMsg{
		Type: binary.BigEndian.Uint16(msg[8:]),
		Code: binary.BigEndian.Uint16(msg[10:]),
		Data: msg[12:],
	}
	if e.Type == ErrorTypeExperimenter {
		if len(msg) < 16 {
			return ErrorMsg{}, ErrTruncated
		}
		e.Experimenter = binary.BigEndian.Uint32(msg[12:])
		e.Data = msg[16:]
	}
	return e, nil
}

// FlowStats is one flow of a flow-stats reply.
type FlowStats struct {
	TableID                  uint8
	DurationSec              uint32
	DurationNsec             uint32
	Priority                 uint16
	IdleTimeout, HardTimeout uint16
	Flags                    uint16
	Cookie                   uint64
	PacketCount, ByteCount   uint64
	Match                    Match
}

// MultipartType returns the multipart type of a MULTIPART_REPLY.
func MultipartType(msg []byte) (uint16, error) {
	msg, err := body(msg, TypeMultipartReply, 16)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint16(msg[8:]), nil
}

// ParseFlowStatsReply appends the flows of a FLOW multipart reply to dst and
// reports whether more replies follow (MultipartReplyMore).
func ParseFlowStatsReply(msg []byte, dst []FlowStats) ([]FlowStats, bool, error) {
	msg, err := body(msg, TypeMultipartReply, 16)
	if err != nil {
		return dst, false, err
	}
	if typ := binary.BigEndian.Uint16(msg[8:]); typ != MultipartFlow {
		return dst, false, fmt.Errorf("%w: multipart type %d, want FLOW", ErrType, typ)
	}
	more := binary.BigEndian.Uint16(msg[10:])&MultipartReplyMore != 0
	rest := msg[16:]
	for len(rest) > 0 {
		if len(rest) < 56 {
			return dst, false, ErrTruncated
		}
		n := int(binary.BigEndian.Uint16(rest))
		if n < 56 || n > len(rest) {
			return dst, false, fmt.Errorf("%w: flow stats length %d", ErrBadLength, n)
		}
		e := rest[:n]
		fs := FlowStats{
			TableID:      e[2],
			DurationSec:  binary.BigEndian.Uint32(e[4:]),
			DurationNsec: binary.BigEndian.Uint32(e[8:]),
			Priority:     binary.BigEndian.Uint16(e[12:]),
			IdleTimeout:  binary.BigEndian.Uint16(e[14:]),
			HardTimeout:  binary.BigEndian.Uint16(e[16:]),
			Flags:        binary.BigEndian.Uint16(e[18:]),
			Cookie:       binary.BigEndian.Uint64(e[24:]),
			PacketCount:  binary.BigEndian.Uint64(e[32:]),
			ByteCount:    binary.BigEndian.Uint64(e[40:]),
		}
		if _, err := parseMatch(e[48:], &fs.Match); err != nil {
			return dst, false, err
		}
		dst = append(dst, fs)
		rest = rest[n:]
	}
	return dst, more, nil
}
