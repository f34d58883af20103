// Package openflow is a small OpenFlow 1.3 codec: exactly the messages a
// controller needs to punt packets to itself with Nicira controller actions,
// answer them with packet-outs, hand packets back to the bridge's pipeline
// (a packet-out that marks a register and resubmits), answer ARP and
// Neighbor Solicitations from flows (field moves and sets, output to
// IN_PORT) and keep its flows installed.
//
// Encoders append to a caller's buffer (no allocation when it has room);
// decoders alias the message they parse and never panic on malformed input.
package openflow

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the OpenFlow 1.3 wire version.
const Version = 0x04

// HeaderLen is the length of the OpenFlow header.
const HeaderLen = 8

// MaxMessageLen is the largest message the 16-bit length field allows.
const MaxMessageLen = 0xffff

// Message types of OpenFlow 1.3.
const (
	TypeHello            = 0
	TypeError            = 1
	TypeEchoRequest      = 2
	TypeEchoReply        = 3
	TypeExperimenter     = 4
	TypeFeaturesRequest  = 5
	TypeFeaturesReply    = 6
	TypeSetConfig        = 9
	TypePacketIn         = 10
	TypeFlowRemoved      = 11
	TypePortStatus       = 12
	TypePacketOut        = 13
	TypeFlowMod          = 14
	TypeMultipartRequest = 18
	TypeMultipartReply   = 19
	TypeBarrierRequest   = 20
	TypeBarrierReply     = 21
	TypeMeterMod         = 29
)

// Reserved port numbers.
const (
	PortInPort     uint32 = 0xfffffff8
	PortNormal     uint32 = 0xfffffffa
	PortFlood      uint32 = 0xfffffffb
	PortAll        uint32 = 0xfffffffc
	PortController uint32 = 0xfffffffd
	PortLocal      uint32 = 0xfffffffe
	PortAny        uint32 = 0xffffffff
)

// GroupAny is the wildcard group of delete and stats filters.
const GroupAny uint32 = 0xffffffff

// TableAll selects every table in deletes and stats requests.
const TableAll uint8 = 0xff

// NoBuffer is the buffer id of a message that carries the whole packet.
const NoBuffer uint32 = 0xffffffff

// Flow-mod commands.
const (
	FlowAdd          uint8 = 0
	FlowModify       uint8 = 1
	FlowModifyStrict uint8 = 2
	FlowDelete       uint8 = 3
	FlowDeleteStrict uint8 = 4
)

// Flow-mod flags.
const (
	FlagSendFlowRem  uint16 = 1 << 0
	FlagCheckOverlap uint16 = 1 << 1
	FlagResetCounts  uint16 = 1 << 2
	FlagNoPktCounts  uint16 = 1 << 3
	FlagNoBytCounts  uint16 = 1 << 4
)

// Packet-in reasons (also the reason of a controller action).
const (
	ReasonNoMatch    uint8 = 0
	ReasonAction     uint8 = 1
	ReasonInvalidTTL uint8 = 2
)

// Flow-removed reasons.
const (
	RemovedIdleTimeout uint8 = 0
	RemovedHardTimeout uint8 = 1
	RemovedDelete      uint8 = 2
	RemovedGroupDelete uint8 = 3
	RemovedMeterDelete uint8 = 4
	RemovedEviction    uint8 = 5
)

// MaxLenNoBuffer asks for whole packets in controller actions and
// SET_CONFIG's miss_send_len.
const MaxLenNoBuffer uint16 = 0xffff

// Experimenter ids.
const (
	ExperimenterNicira uint32 = 0x00002320
	ExperimenterONF    uint32 = 0x4f4e4600
)

// Multipart types.
const (
	MultipartFlow     uint16 = 1
	MultipartMeter    uint16 = 9
	MultipartPortDesc uint16 = 13
)

// MultipartReplyMore is the multipart flag announcing further replies.
const MultipartReplyMore uint16 = 1

// Errors of the decoders.
var (
	// ErrTruncated reports a message or structure shorter than its fields.
	ErrTruncated = errors.New("openflow: truncated message")
	// ErrBadLength reports a length field that contradicts the data.
	ErrBadLength = errors.New("openflow: bad length")
	// ErrType reports a message decoded as the wrong type.
	ErrType = errors.New("openflow: unexpected message type")
	// ErrMatch reports a malformed match or OXM field.
	ErrMatch = errors.New("openflow: malformed match")
)

// Header is the common header of every OpenFlow message.
type Header struct {
	Version uint8
	Type    uint8
	Length  uint16
	XID     uint32
}

// ParseHeader decodes the first HeaderLen bytes of msg.
func ParseHeader(msg []byte) (Header, error) {
	if len(msg) < HeaderLen {
		return Header{}, ErrTruncated
	}
	return Header{
		Version: msg[0],
		Type:    msg[1],
		Length:  binary.BigEndian.Uint16(msg[2:4]),
		XID:     binary.BigEndian.Uint32(msg[4:8]),
	}, nil
}

// ReadMessage reads one whole message from r into buf (which it reuses when
// the message fits its capacity; give it MaxMessageLen to never allocate) and
// returns its header and the message, header included. The message is valid
// until the next call with the same buf. A length below HeaderLen returns
// ErrBadLength: the stream cannot be resynchronized.
func ReadMessage(r *bufio.Reader, buf []byte) (Header, []byte, error) {
	buf = buf[:cap(buf)]
	if len(buf) < HeaderLen {
		buf = make([]byte, HeaderLen)
	}
	if _, err := io.ReadFull(r, buf[:HeaderLen]); err != nil {
		return Header{}, nil, err
	}
	h, _ := ParseHeader(buf)
	if h.Length < HeaderLen {
		return h, nil, fmt.Errorf("%w: message length %d", ErrBadLength, h.Length)
	}
	n := int(h.Length)
	if n > len(buf) {
		grown := make([]byte, n)
		copy(grown, buf[:HeaderLen])
		buf = grown
	}
	if _, err := io.ReadFull(r, buf[HeaderLen:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return h, nil, err
	}
	return h, buf[:n], nil
}

// appendHeader appends a header whose length is patched by finish.
func appendHeader(dst []byte, typ uint8, xid uint32) []byte {
	return append(dst, Version, typ, 0, 0,
		byte(xid>>24), byte(xid>>16), byte(xid>>8), byte(xid))
}

// finish writes the length of the message that starts at dst[start:].
func finish(dst []byte, start int) []byte {
	binary.BigEndian.PutUint16(dst[start+2:], uint16(len(dst)-start))
	return dst
}

// appendZeros appends n zero bytes.
func appendZeros(dst []byte, n int) []byte {
	for range n {
		dst = append(dst, 0)
	}
	return dst
}
