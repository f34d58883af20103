package dnswire

import (
	"encoding/binary"
	"fmt"

	"github.com/miekg/dns"
)

// UpstreamUDPSize is the requester payload size that AppendUpstreamQuery
// advertises to upstream servers (the DNS flag day 2020 value): answers up
// to this size come over UDP without IP fragmentation on any common path,
// larger ones come truncated and are asked again over TCP.
const UpstreamUDPSize = 1232

// minUDPSize is the smallest requester payload size RFC 6891 allows; smaller
// values are treated as this one.
const minUDPSize = 512

// flagAD is the AD bit of the header flags.
const flagAD = 0x0020

// AppendUpstreamQuery appends to dst the query that asks an upstream server
// the question of msg, the client query that q was parsed from: the header
// with ID id, opcode QUERY and the client's RD, CD and AD bits, the question
// copied from msg as sent, and exactly one OPT record (payload size
// UpstreamUDPSize, version 0, the client's DO bit, no options). The client's
// other additional records and options are not passed on. When q does not
// locate the question in msg (q.QuestionEnd out of range), the question is
// built from q.Name, q.Type and q.Class. It does not allocate when dst has
// enough capacity.
func AppendUpstreamQuery(dst, msg []byte, q *Query, id uint16) []byte {
	dst = binary.BigEndian.AppendUint16(dst, id)
	dst = binary.BigEndian.AppendUint16(dst, q.Flags&(flagRD|flagCD|flagAD))
	dst = append(dst, 0, 1, 0, 0, 0, 0, 0, 1) // QDCOUNT=1, ANCOUNT=0, NSCOUNT=0, ARCOUNT=1
	if q.QuestionEnd > headerLen && q.QuestionEnd <= len(msg) {
		dst = append(dst, msg[headerLen:q.QuestionEnd]...)
	} else {
		if len(q.Name) == 0 {
			dst = append(dst, 0)
		} else {
			dst = append(dst, q.Name...)
		}
		dst = binary.BigEndian.AppendUint16(dst, q.Type)
		dst = binary.BigEndian.AppendUint16(dst, q.Class)
	}
	return appendOPT(dst, UpstreamUDPSize, 0, q.DO)
}

// appendOPT appends an OPT record without options: payload size size,
// extended rcode bits ext (the upper eight bits of a 12-bit rcode), version
// 0 and the DO bit.
func appendOPT(dst []byte, size uint16, ext uint8, do bool) []byte {
	ttl := uint32(ext) << 24
	if do {
		ttl |= 0x8000
	}
	dst = append(dst, 0) // root owner
	dst = binary.BigEndian.AppendUint16(dst, typeOPT)
	dst = binary.BigEndian.AppendUint16(dst, size)
	dst = binary.BigEndian.AppendUint32(dst, ttl)
	return append(dst, 0, 0) // RDLENGTH
}

// answerLayout is where AppendClientAnswer found the parts of an answer.
type answerLayout struct {
	flags    uint16
	qd       uint16 // QDCOUNT (always 1)
	an, ns   uint16 // ANCOUNT, NSCOUNT
	ar       uint16 // ARCOUNT without the OPT record
	nameEnd  int    // offset just past the question name
	optStart int    // offset of the OPT record; end when there is none
	optEnd   int    // offset just past the OPT record; end when there is none
	end      int    // offset just past the last counted record
	rcode    int    // 12-bit response code
}

// walkAnswer checks that resp is a response to q's question and finds the
// parts AppendClientAnswer needs.
func walkAnswer(resp []byte, q *Query) (answerLayout, error) {
	var l answerLayout
	if len(resp) < headerLen {
		return l, ErrHeader
	}
	l.flags = binary.BigEndian.Uint16(resp[2:])
	if l.flags&flagQR == 0 {
		return l, ErrNotResponse
	}
	l.qd = binary.BigEndian.Uint16(resp[4:])
	l.an = binary.BigEndian.Uint16(resp[6:])
	l.ns = binary.BigEndian.Uint16(resp[8:])
	ar := binary.BigEndian.Uint16(resp[10:])
	if l.qd != 1 {
		return l, ErrQuestionCount
	}
	nameEnd, err := skipName(resp, headerLen, false)
	if err != nil || len(resp)-nameEnd < 4 {
		return l, ErrMalformed
	}
	if !equalFold(resp[headerLen:nameEnd], q.Name) ||
		binary.BigEndian.Uint16(resp[nameEnd:]) != q.Type ||
		binary.BigEndian.Uint16(resp[nameEnd+2:]) != q.Class {
		return l, ErrWrongQuestion
	}
	l.nameEnd = nameEnd
	off := nameEnd + 4
	for range int(l.an) + int(l.ns) {
		if _, off, err = walkRR(resp, off); err != nil {
			return l, ErrMalformed
		}
	}
	l.optStart, l.optEnd = -1, -1
	l.rcode = int(l.flags & maskRcode)
	l.ar = ar
	for range int(ar) {
		start := off
		var r rr
		if r, off, err = walkRR(resp, off); err != nil {
			return l, ErrMalformed
		}
		if r.typ != typeOPT {
			continue
		}
		if l.optStart >= 0 || resp[start] != 0 {
			// RFC 6891: more than one OPT record, or one not owned
			// by the root, makes the message malformed.
			return l, ErrMalformed
		}
		l.optStart, l.optEnd = start, off
		l.rcode |= int(r.ttl>>24) << 4
		l.ar--
	}
	l.end = off
	if l.optStart < 0 {
		l.optStart, l.optEnd = off, off
	}
	return l, nil
}

// AppendClientAnswer appends to dst the answer resp (from an upstream server
// or the cache) rewritten for the client whose query q was parsed from:
//
//   - the ID is q.ID, the RD and CD bits are the client's, the rest of the
//     header flags are resp's;
//   - the question is resp's (which must match q's question: one question,
//     same name ignoring ASCII case, type and class), written with the
//     client's spelling of the name;
//   - every record is copied as is, except resp's OPT record, which is
//     removed; bytes after the last counted record are dropped;
//   - when the client sent EDNS (q.EDNS), an OPT record is added last:
//     payload size udpSize (at least 512), version 0, the client's DO bit and
//     the upper eight bits of resp's extended rcode; without EDNS, an answer
//     whose rcode needs those bits (above 15) is replaced by a SERVFAIL
//     answer to q's question;
//   - the AD bit is kept only when trustAD is set and the client asked for
//     it with the AD or DO bit (RFC 6840, 5.7 and 5.8).
//
// Compression pointers stay valid because only the end of the message
// changes (an owner name leading into the bytes removed makes resp
// malformed). An OPT record followed by other additional records (allowed,
// though servers put it last) is removed on a slow path that decompresses
// and repacks the message and allocates; otherwise AppendClientAnswer does
// not allocate when dst has enough capacity. dst may be resp[:0] (the answer
// is then rewritten in place) but must not overlap resp otherwise.
//
// Errors, with dst returned unchanged: ErrHeader (shorter than a header),
// ErrNotResponse (QR=0), ErrQuestionCount, ErrWrongQuestion, ErrMalformed (a
// name or record cannot be walked, or more than one OPT record).
func AppendClientAnswer(dst, resp []byte, q *Query, udpSize uint16, trustAD bool) ([]byte, error) {
	if q == nil {
		return dst, ErrWrongQuestion
	}
	l, err := walkAnswer(resp, q)
	if err != nil {
		return dst, err
	}
	if l.rcode > maskRcode && !q.EDNS {
		return appendServFail(dst, q), nil
	}
	if l.optEnd < l.end {
		// Records follow the OPT record: removing it would move them
		// and break compression pointers into them.
		rcode := l.rcode
		if resp, err = withoutOPT(resp[:l.end]); err != nil {
			return dst, err
		}
		if l, err = walkAnswer(resp, q); err != nil {
			return dst, fmt.Errorf("%w: repacked: %w", ErrMalformed, err)
		}
		l.rcode = rcode
	}
	if l.optStart < len(resp) {
		// Bytes are dropped: the names kept must not lead into them.
		off := l.nameEnd + 4
		for range int(l.an) + int(l.ns) + int(l.ar) {
			if _, off, err = walkRR(resp[:l.optStart], off); err != nil {
				return dst, ErrMalformed
			}
		}
	}
	flags := l.flags&^(flagRD|flagCD|flagAD|maskRcode) | q.Flags&(flagRD|flagCD) | uint16(l.rcode&maskRcode)
	if trustAD && l.flags&flagAD != 0 && (q.DO || q.Flags&flagAD != 0) {
		flags |= flagAD
	}
	ar := l.ar
	if q.EDNS {
		ar++
	}
	nameStart := len(dst) + headerLen
	dst = binary.BigEndian.AppendUint16(dst, q.ID)
	dst = binary.BigEndian.AppendUint16(dst, flags)
	dst = binary.BigEndian.AppendUint16(dst, l.qd)
	dst = binary.BigEndian.AppendUint16(dst, l.an)
	dst = binary.BigEndian.AppendUint16(dst, l.ns)
	dst = binary.BigEndian.AppendUint16(dst, ar)
	dst = append(dst, resp[headerLen:l.optStart]...)
	copy(dst[nameStart:nameStart+l.nameEnd-headerLen], q.Name)
	if q.EDNS {
		dst = appendOPT(dst, max(udpSize, minUDPSize), uint8(l.rcode>>4), q.DO)
	}
	return dst, nil
}

// appendServFail appends a SERVFAIL answer to q's question, for a client
// without EDNS.
func appendServFail(dst []byte, q *Query) []byte {
	dst = binary.BigEndian.AppendUint16(dst, q.ID)
	dst = binary.BigEndian.AppendUint16(dst, flagQR|flagRA|q.Flags&(flagRD|flagCD)|rcodeServFail)
	dst = append(dst, 0, 1, 0, 0, 0, 0, 0, 0) // QDCOUNT=1
	dst = append(dst, q.Name...)
	dst = binary.BigEndian.AppendUint16(dst, q.Type)
	return binary.BigEndian.AppendUint16(dst, q.Class)
}

// withoutOPT returns resp repacked without its OPT record and with only the
// lower four bits of its rcode in the header. It allocates.
func withoutOPT(resp []byte) ([]byte, error) {
	m := new(dns.Msg)
	if err := m.Unpack(resp); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	extra := m.Extra[:0]
	for _, r := range m.Extra {
		if r.Header().Rrtype != typeOPT {
			extra = append(extra, r)
		}
	}
	m.Extra = extra
	m.Rcode &= maskRcode
	m.Compress = true
	b, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return b, nil
}
