package openflow

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// PortMax is the largest number of a physical (non-reserved) port.
const PortMax uint32 = 0xffffff00

// Port-status reasons.
const (
	PortAdded    uint8 = 0
	PortDeleted  uint8 = 1
	PortModified uint8 = 2
)

// portLen is the size of an OpenFlow 1.3 ofp_port.
const portLen = 64

// Port is a decoded ofp_port (the fields a controller needs).
type Port struct {
	No     uint32
	HWAddr [6]byte
	Name   string
	Config uint32
	State  uint32
}

// parsePort decodes the ofp_port at the start of b (at least portLen bytes).
func parsePort(b []byte) Port {
	name := b[16:32]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return Port{
		No:     binary.BigEndian.Uint32(b),
		HWAddr: [6]byte(b[8:14]),
		Name:   string(name),
		Config: binary.BigEndian.Uint32(b[32:]),
		State:  binary.BigEndian.Uint32(b[36:]),
	}
}

// AppendPortDescRequest appends a PORT_DESC multipart request (every port
// of the switch).
func AppendPortDescRequest(dst []byte, xid uint32) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeMultipartRequest, xid)
	dst = binary.BigEndian.AppendUint16(dst, MultipartPortDesc)
	dst = appendZeros(dst, 6) // flags, pad
	return finish(dst, start)
}

// ParsePortDescReply appends the ports of a PORT_DESC multipart reply to
// dst and reports whether more replies follow.
func ParsePortDescReply(msg []byte, dst []Port) ([]Port, bool, error) {
	rest, more, err := multipartReply(msg, MultipartPortDesc)
	if err != nil {
		return dst, false, err
	}
	if len(rest)%portLen != 0 {
		return dst, false, fmt.Errorf("%w: port description of %d bytes", ErrBadLength, len(rest))
	}
	for ; len(rest) > 0; rest = rest[portLen:] {
		dst = append(dst, parsePort(rest))
	}
	return dst, more, nil
}

// PortStatus is a decoded PORT_STATUS.
type PortStatus struct {
	Reason uint8
	Port   Port
}

// ParsePortStatus decodes an OpenFlow 1.3 PORT_STATUS.
func ParsePortStatus(msg []byte) (PortStatus, error) {
	msg, err := body(msg, TypePortStatus, 16+portLen)
	if err != nil {
		return PortStatus{}, err
	}
	return PortStatus{Reason: msg[8], Port: parsePort(msg[16:])}, nil
}
