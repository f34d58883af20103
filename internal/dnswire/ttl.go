package dnswire

import (
	"encoding/binary"
	"errors"
)

// Types and codes MinTTL and AppendTTLOffsets look at.
const (
	typeSOA       = 6
	typeTSIG      = 250
	typeANY       = 255
	rcodeNXDomain = 3
	soaFixedLen   = 20 // SERIAL, REFRESH, RETRY, EXPIRE, MINIMUM
	maxTTL        = 1<<31 - 1
)

// Errors of MinTTL.
var (
	// ErrUncacheable: the answer has no cache lifetime: its rcode (the
	// extended rcode included) is neither NOERROR nor NXDOMAIN, it is
	// truncated (TC=1), it is not a response, or it does not have exactly
	// one question.
	ErrUncacheable = errors.New("dnswire: answer is not cacheable")
	// ErrNoSOA: a negative answer (NXDOMAIN or NODATA) has no SOA record in
	// its authority section, so RFC 2308 gives it no negative TTL.
	ErrNoSOA = errors.New("dnswire: negative answer without SOA record")
)

// ttlValue returns a record's TTL as RFC 2181 section 8 reads it: a value
// with the most significant bit set counts as zero.
func ttlValue(ttl uint32) uint32 {
	if ttl > maxTTL {
		return 0
	}
	return ttl
}

// soaMinimum returns the MINIMUM field of the SOA record whose RDATA
// starts at off in msg and ends at end. MNAME and RNAME may be compressed.
func soaMinimum(msg []byte, off, end int) (uint32, bool) {
	off, err := skipName(msg[:end], off, true)
	if err != nil {
		return 0, false
	}
	off, err = skipName(msg[:end], off, true)
	if err != nil || end-off != soaFixedLen {
		return 0, false
	}
	return binary.BigEndian.Uint32(msg[end-4:]), true
}

// MinTTL returns how long the answer msg may be cached, in seconds, and
// whether it is negative (RFC 2308). An answer is negative when its rcode
// is NXDOMAIN, or NOERROR without a record of the question's type in the
// answer section (NODATA; for QTYPE ANY any answer record counts). A
// positive answer's TTL is the least TTL of its records; a negative one's
// is also at most the MINIMUM field of the first SOA record in the
// authority section (so it is at most min(SOA TTL, SOA MINIMUM)). OPT and
// TSIG records do not count; a TTL with the most significant bit set counts
// as 0 (RFC 2181). Errors: ErrHeader, ErrMalformed (a question or record
// cannot be walked), ErrUncacheable and ErrNoSOA. It does not allocate.
func MinTTL(msg []byte) (ttl uint32, negative bool, err error) {
	if len(msg) < headerLen {
		return 0, false, ErrHeader
	}
	flags := binary.BigEndian.Uint16(msg[2:])
	if flags&flagQR == 0 || flags&flagTC != 0 || binary.BigEndian.Uint16(msg[4:]) != 1 {
		return 0, false, ErrUncacheable
	}
	off, err := skipName(msg, headerLen, false)
	if err != nil || len(msg)-off < 4 {
		return 0, false, ErrMalformed
	}
	qtype := binary.BigEndian.Uint16(msg[off:])
	off += 4
	an := int(binary.BigEndian.Uint16(msg[6:]))
	ns := int(binary.BigEndian.Uint16(msg[8:]))
	ar := int(binary.BigEndian.Uint16(msg[10:]))
	rcode := int(flags & maskRcode)
	ttl = maxTTL
	found, soa := false, false
	var minimum uint32
	for i := range an + ns + ar {
		var r rr
		r, off, err = walkRR(msg, off)
		if err != nil {
			return 0, false, ErrMalformed
		}
		switch {
		case r.typ == typeOPT:
			if i >= an+ns {
				rcode |= int(r.ttl>>24) << 4
			}
			continue
		case r.typ == typeTSIG:
			continue
		case i < an && (r.typ == qtype || qtype == typeANY):
			found = true
		case i >= an && i < an+ns && r.typ == typeSOA && !soa:
			rdStart := off - len(r.rdata)
			minimum, soa = soaMinimum(msg, rdStart, off)
			if !soa {
				return 0, false, ErrMalformed
			}
		}
		ttl = min(ttl, ttlValue(r.ttl))
	}
	switch rcode {
	case 0:
		negative = !found
	case rcodeNXDomain:
		negative = true
	default:
		return 0, false, ErrUncacheable
	}
	if negative {
		if !soa {
			return 0, true, ErrNoSOA
		}
		ttl = min(ttl, ttlValue(minimum))
	}
	return ttl, negative, nil
}

// AppendTTLOffsets appends to dst the offset in msg of the TTL field of
// every record in the answer, authority and additional sections except OPT
// (whose TTL field holds flags) and TSIG (whose TTL must stay 0), in order,
// and returns it. Writing a TTL at each offset rewrites the message's TTLs
// without walking it again. Errors: ErrHeader, ErrMalformed (a question or
// record cannot be walked, or msg is longer than 65535 bytes). It does not
// allocate when dst has enough capacity.
func AppendTTLOffsets(dst []uint16, msg []byte) ([]uint16, error) {
	if len(msg) < headerLen {
		return dst, ErrHeader
	}
	if len(msg) > 0xffff {
		return dst, ErrMalformed
	}
	base := len(dst)
	off := headerLen
	var err error
	for range int(binary.BigEndian.Uint16(msg[4:])) {
		off, err = skipName(msg, off, true)
		if err != nil || len(msg)-off < 4 {
			return dst[:base], ErrMalformed
		}
		off += 4
	}
	records := int(binary.BigEndian.Uint16(msg[6:])) + int(binary.BigEndian.Uint16(msg[8:])) +
		int(binary.BigEndian.Uint16(msg[10:]))
	for range records {
		var r rr
		r, off, err = walkRR(msg, off)
		if err != nil {
			return dst[:base], ErrMalformed
		}
		if r.typ != typeOPT && r.typ != typeTSIG {
			// The TTL is followed by RDLENGTH and RDATA.
			dst = append(dst, uint16(off-len(r.rdata)-6))
		}
	}
	return dst, nil
}
