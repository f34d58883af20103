package openflow

import (
	"encoding/binary"
	"fmt"
)

// Meter-mod commands.
const (
	MeterAdd    uint16 = 0
	MeterModify uint16 = 1
	MeterDelete uint16 = 2
)

// Meter flags.
const (
	MeterFlagKbps  uint16 = 1 << 0
	MeterFlagPktps uint16 = 1 << 1
	MeterFlagBurst uint16 = 1 << 2
	MeterFlagStats uint16 = 1 << 3
)

// Meter ids: MeterMax is the largest id of a switch meter; MeterAll
// selects every meter in deletes and stats requests.
const (
	MeterMax uint32 = 0xffff0000
	MeterAll uint32 = 0xffffffff
)

// Meter-mod error codes (error type ErrorTypeMeterModFailed).
const (
	MeterErrExists  uint16 = 1
	MeterErrInvalid uint16 = 2
	MeterErrUnknown uint16 = 3
)

// ErrorTypeMeterModFailed is the error type of a failed METER_MOD (and of a
// flow-mod naming a meter that does not exist).
const ErrorTypeMeterModFailed uint16 = 12

// meterBandDrop is the band type that drops packets over its rate.
const meterBandDrop = 1

// MeterMod describes a METER_MOD with at most one drop band. Adds and
// modifies carry one drop band of Rate (in packets per second with
// MeterFlagPktps, else kb/s) and Burst (packets or kb; used with
// MeterFlagBurst); a Rate of zero encodes no band. Deletes carry no band.
type MeterMod struct {
	Command uint16
	Flags   uint16
	MeterID uint32
	Rate    uint32
	Burst   uint32
}

// AppendMeterMod appends a METER_MOD built from mm.
func AppendMeterMod(dst []byte, xid uint32, mm *MeterMod) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeMeterMod, xid)
	dst = binary.BigEndian.AppendUint16(dst, mm.Command)
	dst = binary.BigEndian.AppendUint16(dst, mm.Flags)
	dst = binary.BigEndian.AppendUint32(dst, mm.MeterID)
	if mm.Command != MeterDelete && mm.Rate != 0 {
		// ofp_meter_band_drop: type, len 16, rate, burst_size, 4 pad bytes.
		dst = append(dst, 0, meterBandDrop, 0, 16)
		dst = binary.BigEndian.AppendUint32(dst, mm.Rate)
		dst = binary.BigEndian.AppendUint32(dst, mm.Burst)
		dst = appendZeros(dst, 4)
	}
	return finish(dst, start)
}

// AppendMeterStatsRequest appends a METER multipart request for meterID
// (MeterAll: every meter).
func AppendMeterStatsRequest(dst []byte, xid uint32, meterID uint32) []byte {
	start := len(dst)
	dst = appendHeader(dst, TypeMultipartRequest, xid)
	dst = binary.BigEndian.AppendUint16(dst, MultipartMeter)
	dst = appendZeros(dst, 6) // flags, pad
	dst = binary.BigEndian.AppendUint32(dst, meterID)
	dst = appendZeros(dst, 4)
	return finish(dst, start)
}

// MeterStats is one meter of a meter-stats reply. BandPackets and
// BandBytes are summed over the meter's bands: for drop bands, what the
// meter dropped.
type MeterStats struct {
	MeterID                    uint32
	FlowCount                  uint32
	PacketInCount, ByteInCount uint64
	DurationSec, DurationNsec  uint32
	BandPackets, BandBytes     uint64
}

// meterStatsLen and bandStatsLen are the sizes of ofp_meter_stats without
// its bands and of one ofp_meter_band_stats.
const (
	meterStatsLen = 40
	bandStatsLen  = 16
)

// multipartReply checks that msg is a MULTIPART_REPLY of type typ and
// returns its body and whether more replies follow.
func multipartReply(msg []byte, typ uint16) ([]byte, bool, error) {
	msg, err := body(msg, TypeMultipartReply, 16)
	if err != nil {
		return nil, false, err
	}
	if got := binary.BigEndian.Uint16(msg[8:]); got != typ {
		return nil, false, fmt.Errorf("%w: multipart type %d, want %d", ErrType, got, typ)
	}
	return msg[16:], binary.BigEndian.Uint16(msg[10:])&MultipartReplyMore != 0, nil
}

// ParseMeterStatsReply appends the meters of a METER multipart reply to
// dst and reports whether more replies follow.
func ParseMeterStatsReply(msg []byte, dst []MeterStats) ([]MeterStats, bool, error) {
	rest, more, err := multipartReply(msg, MultipartMeter)
	if err != nil {
		return dst, false, err
	}
	for len(rest) > 0 {
		if len(rest) < meterStatsLen {
			return dst, false, ErrTruncated
		}
		n := int(binary.BigEndian.Uint16(rest[4:]))
		if n < meterStatsLen || n > len(rest) || (n-meterStatsLen)%bandStatsLen != 0 {
			return dst, false, fmt.Errorf("%w: meter stats length %d", ErrBadLength, n)
		}
		e := rest[:n]
		ms := MeterStats{
			MeterID:       binary.BigEndian.Uint32(e),
			FlowCount:     binary.BigEndian.Uint32(e[12:]),
			PacketInCount: binary.BigEndian.Uint64(e[16:]),
			ByteInCount:   binary.BigEndian.Uint64(e[24:]),
			DurationSec:   binary.BigEndian.Uint32(e[32:]),
			DurationNsec:  binary.BigEndian.Uint32(e[36:]),
		}
		for b := e[meterStatsLen:]; len(b) > 0; b = b[bandStatsLen:] {
			ms.BandPackets += binary.BigEndian.Uint64(b)
			ms.BandBytes += binary.BigEndian.Uint64(b[8:])
		}
		dst = append(dst, ms)
		rest = rest[n:]
	}
	return dst, more, nil
}
