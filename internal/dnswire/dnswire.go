// Package dnswire reads and writes the few parts of DNS messages (RFC 1035,
// EDNS per RFC 6891) that a forwarder needs on its hot path, without
// allocating: validating a client's query, answering a query that cannot be
// forwarded with an error, checking that an upstream reply matches the
// question asked, and fitting a reply into the client's size limit.
//
// Decisions beyond the RFCs:
//
//   - A message with QR=1 sent to the forwarder is not answered (ErrNotQuery):
//     answering responses invites reflection loops.
//   - The question name of a query or reply must not use compression: at
//     offset 12 only the header precedes it, so a pointer could only lead into
//     the header, forward, or back into the name itself (a loop). Such a
//     message is malformed. Owner names of additional records may be
//     compressed; a pointer must lead strictly before the start of the label
//     sequence that contains it, so every walk ends.
//   - The OPT record must have the root owner name written as a single zero
//     byte; a compression pointer to a root label is rejected.
//   - Bytes after the last record the header counts are ignored, as BIND and
//     miekg/dns do; Query.End marks where the counted records end.
//   - DNS cookies (RFC 7873, RFC 9018) are not implemented, as RFC 7873
//     allows: a client's COOKIE option is ignored like any option, never
//     sent upstream (AppendUpstreamQuery sends an OPT without options) and
//     never answered (AppendClientAnswer and AppendError write an OPT
//     without options). Answers go back only to the switch port the query
//     came in on, so the off-path spoofing cookies defend against cannot
//     reach a VM; the upstream exchanges are defended by RFC 5452 instead.
package dnswire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/miekg/dns"
)

// Wire constants of RFC 1035 and RFC 6891.
const (
	headerLen  = 12
	rrFixedLen = 10 // type, class, TTL, RDLENGTH
	maxNameLen = 255
	typeOPT    = 41

	flagQR     = 0x8000
	maskOpcode = 0x7800
	flagRD     = 0x0100
	flagRA     = 0x0080
	flagCD     = 0x0010
	flagTC     = 0x0200
	maskRcode  = 0x000f

	rcodeServFail = 2

	// RcodeBadVersion is BADVERS (RFC 6891), the 12-bit rcode of the
	// answer to a query that ParseQuery rejects with ErrBadVersion.
	RcodeBadVersion = 16

	// ErrorUDPSize is the requester payload size AppendError advertises in
	// its OPT record (the DNS flag day 2020 value).
	ErrorUDPSize = 1232
)

// Query is a client's DNS query as ParseQuery found it.
type Query struct {
	ID, Flags   uint16 // header
	Name        []byte // question name in wire form (uncompressed as sent), aliases msg
	Type, Class uint16 // question type and class
	QuestionEnd int    // offset just past the question; 0 when the question did not parse
	EDNS        bool   // an OPT RR was present (and well-formed)
	UDPSize     uint16 // OPT's requester payload size (0 when !EDNS)
	DO          bool   // OPT's DNSSEC OK bit
	End         int    // offset just past the last counted record; later bytes are ignored
}

// FormatError reports a query whose header parsed but which is not a
// well-formed single-question query: it is answered with FORMERR. When
// ParseQuery returns a FormatError, its Query holds the header (ID, Flags),
// QuestionEnd > 0 exactly when the question parsed (AppendError then echoes
// it), and EDNS is true only when a well-formed single OPT record was seen
// (a FORMERR caused by the OPT record itself thus carries no OPT).
// The values returned are shared: compare Reason, do not modify them.
type FormatError struct {
	Reason string // stable snake_case label for counters
}

// Error implements error.
func (e *FormatError) Error() string { return "dnswire: malformed query: " + e.Reason }

// The FormatError values ParseQuery returns.
var (
	errQDCount    = &FormatError{"qdcount"}             // QDCOUNT is not 1
	errTruncated  = &FormatError{"truncated"}           // a name or record runs past the end
	errBadName    = &FormatError{"bad_name"}            // bad label type, name too long, bad pointer
	errCompressed = &FormatError{"compressed_question"} // compression pointer in the question
	errSections   = &FormatError{"answer_or_authority"} // ANCOUNT or NSCOUNT is not 0
	errMultiOPT   = &FormatError{"multiple_opt"}        // more than one OPT record
	errOPTOwner   = &FormatError{"opt_owner"}           // OPT owner name is not the root
	errBadOPT     = &FormatError{"bad_opt"}             // OPT options do not fill RDATA exactly
)

// Errors of this package other than FormatError.
var (
	// ErrHeader: the message is shorter than a DNS header; it is dropped.
	ErrHeader = errors.New("dnswire: message shorter than a header")
	// ErrNotQuery: the message is a response (QR=1); it is dropped, never answered.
	ErrNotQuery = errors.New("dnswire: message is a response, not a query")
	// ErrNotImplemented: the opcode is not QUERY; it is answered with NOTIMP.
	ErrNotImplemented = errors.New("dnswire: opcode not implemented")
	// ErrBadVersion: the query is well-formed but its OPT record asks for
	// an EDNS version above 0; it is answered with RcodeBadVersion
	// (RFC 6891, 6.1.3) and never resolved. q is filled as for a valid
	// query (EDNS set), so AppendError echoes the question and adds an
	// OPT record of version 0.
	ErrBadVersion = errors.New("dnswire: EDNS version not implemented")
	// ErrNotResponse: CheckReply got a message with QR=0.
	ErrNotResponse = errors.New("dnswire: reply is not a response")
	// ErrWrongID: CheckReply got a reply with another ID.
	ErrWrongID = errors.New("dnswire: reply has the wrong ID")
	// ErrQuestionCount: CheckReply got a reply whose QDCOUNT is not 1.
	ErrQuestionCount = errors.New("dnswire: reply does not have exactly one question")
	// ErrWrongQuestion: CheckReply got a reply for another name, type or class.
	ErrWrongQuestion = errors.New("dnswire: reply is for another question")
	// ErrMalformed: a reply's question or records could not be walked.
	ErrMalformed = errors.New("dnswire: malformed message")
	// ErrLimit: Fit cannot fit header, question and OPT record into the limit.
	ErrLimit = errors.New("dnswire: limit too small for a truncated reply")
)

// ID returns the message ID, 0 when msg is shorter than 2 bytes.
func ID(msg []byte) uint16 {
	if len(msg) < 2 {
		return 0
	}
	return binary.BigEndian.Uint16(msg)
}

// SetID overwrites the message ID; it does nothing when msg is shorter than 2 bytes.
func SetID(msg []byte, id uint16) {
	if len(msg) >= 2 {
		binary.BigEndian.PutUint16(msg, id)
	}
}

// skipName walks the domain name starting at off and returns the offset
// just past it in msg (after the first compression pointer, if any).
// Pointers are followed only when allowPtr is set, and only to offsets after
// the header and before the label sequence that holds them. The name,
// uncompressed, must fit in 255 bytes.
func skipName(msg []byte, off int, allowPtr bool) (int, error) {
	end := -1
	segStart := off
	nameLen := 0
	for {
		if off >= len(msg) {
			return 0, errTruncated
		}
		c := int(msg[off])
		switch c & 0xc0 {
		case 0x00:
			nameLen += c + 1
			if nameLen > maxNameLen {
				return 0, errBadName
			}
			if c == 0 {
				if end < 0 {
					end = off + 1
				}
				return end, nil
			}
			off += c + 1
		case 0xc0:
			if !allowPtr {
				return 0, errCompressed
			}
			if off+1 >= len(msg) {
				return 0, errTruncated
			}
			ptr := (c&0x3f)<<8 | int(msg[off+1])
			if ptr < headerLen || ptr >= segStart {
				return 0, errBadName
			}
			if end < 0 {
				end = off + 2
			}
			off, segStart = ptr, ptr
		default:
			return 0, errBadName
		}
	}
}

// rr is the fixed part of a resource record found by walkRR.
type rr struct {
	typ, class uint16
	ttl        uint32
	rdata      []byte
}

// walkRR walks the record at off and returns it and the offset past it.
func walkRR(msg []byte, off int) (rr, int, error) {
	var r rr
	off, err := skipName(msg, off, true)
	if err != nil {
		return r, 0, err
	}
	if len(msg)-off < rrFixedLen {
		return r, 0, errTruncated
	}
	r.typ = binary.BigEndian.Uint16(msg[off:])
	r.class = binary.BigEndian.Uint16(msg[off+2:])
	r.ttl = binary.BigEndian.Uint32(msg[off+4:])
	rdlen := int(binary.BigEndian.Uint16(msg[off+8:]))
	off += rrFixedLen
	if len(msg)-off < rdlen {
		return r, 0, errTruncated
	}
	r.rdata = msg[off : off+rdlen]
	return r, off + rdlen, nil
}

// validOptions reports whether rdata is a sequence of whole EDNS options.
func validOptions(rdata []byte) bool {
	for len(rdata) > 0 {
		if len(rdata) < 4 {
			return false
		}
		n := 4 + int(binary.BigEndian.Uint16(rdata[2:]))
		if n > len(rdata) {
			return false
		}
		rdata = rdata[n:]
	}
	return true
}

// ParseQuery validates a client query and fills q. The query must have QR=0,
// opcode QUERY, QDCOUNT=1 with an uncompressed question, ANCOUNT=0 and
// NSCOUNT=0; every additional record is walked (bounds-checked), at most one
// of them may be an OPT record and it must have the root owner name,
// well-formed options and EDNS version 0. Errors: ErrHeader (shorter than a
// header: drop), ErrNotQuery (QR=1: drop), ErrNotImplemented (opcode not
// QUERY: answer NOTIMP; q holds ID and Flags), *FormatError (answer
// FORMERR; see FormatError for what q then holds) and, for an otherwise
// valid query, ErrBadVersion (answer BADVERS). Options (a client's DNS
// COOKIE included) and unknown OPT flags are accepted and ignored. q.Name
// aliases msg. It does not allocate.
func ParseQuery(msg []byte, q *Query) error {
	*q = Query{}
	if len(msg) < headerLen {
		return ErrHeader
	}
	q.ID = binary.BigEndian.Uint16(msg)
	q.Flags = binary.BigEndian.Uint16(msg[2:])
	if q.Flags&flagQR != 0 {
		return ErrNotQuery
	}
	if q.Flags&maskOpcode != 0 {
		return ErrNotImplemented
	}
	if binary.BigEndian.Uint16(msg[4:]) != 1 {
		return errQDCount
	}
	nameEnd, err := skipName(msg, headerLen, false)
	if err != nil {
		return err
	}
	if len(msg)-nameEnd < 4 {
		return errTruncated
	}
	q.Name = msg[headerLen:nameEnd]
	q.Type = binary.BigEndian.Uint16(msg[nameEnd:])
	q.Class = binary.BigEndian.Uint16(msg[nameEnd+2:])
	q.QuestionEnd = nameEnd + 4
	if binary.BigEndian.Uint16(msg[6:]) != 0 || binary.BigEndian.Uint16(msg[8:]) != 0 {
		return errSections
	}
	off := q.QuestionEnd
	var version uint32
	for range int(binary.BigEndian.Uint16(msg[10:])) {
		start := off
		var r rr
		r, off, err = walkRR(msg, off)
		if err != nil {
			return err
		}
		if r.typ != typeOPT {
			continue
		}
		if q.EDNS {
			q.EDNS, q.UDPSize, q.DO = false, 0, false
			return errMultiOPT
		}
		if msg[start] != 0 {
			return errOPTOwner
		}
		if !validOptions(r.rdata) {
			return errBadOPT
		}
		q.EDNS = true
		q.UDPSize = r.class
		q.DO = r.ttl&0x8000 != 0
		version = r.ttl >> 16 & 0xff
	}
	q.End = off
	if version != 0 {
		return ErrBadVersion
	}
	return nil
}

// AppendError appends to dst a reply to the query msg that q was parsed
// from, carrying rcode (FORMERR, SERVFAIL, NOTIMP, REFUSED, ...): q's ID and
// opcode, QR=1, RA=1, RD and CD copied; the question echoed when it parsed
// (q.QuestionEnd > 0); an OPT record (payload size 1232, DO copied, the
// upper bits of rcode) when q.EDNS. An rcode outside 0..4095, or above 15
// without EDNS, is replaced by SERVFAIL. It does not allocate when dst has
// enough capacity.
func AppendError(dst, msg []byte, q *Query, rcode int) []byte {
	if rcode < 0 || rcode > 0xfff || (rcode > maskRcode && !q.EDNS) {
		rcode = rcodeServFail
	}
	flags := flagQR | flagRA | q.Flags&(maskOpcode|flagRD|flagCD) | uint16(rcode&maskRcode)
	var qd, ar uint16
	if q.QuestionEnd > headerLen && q.QuestionEnd <= len(msg) {
		qd = 1
	}
	if q.EDNS {
		ar = 1
	}
	dst = binary.BigEndian.AppendUint16(dst, q.ID)
	dst = binary.BigEndian.AppendUint16(dst, flags)
	dst = binary.BigEndian.AppendUint16(dst, qd)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, ar)
	if qd == 1 {
		dst = append(dst, msg[headerLen:q.QuestionEnd]...)
	}
	if q.EDNS {
		ttl := uint32(rcode>>4) << 24
		if q.DO {
			ttl |= 0x8000
		}
		dst = append(dst, 0) // root owner
		dst = binary.BigEndian.AppendUint16(dst, typeOPT)
		dst = binary.BigEndian.AppendUint16(dst, ErrorUDPSize)
		dst = binary.BigEndian.AppendUint32(dst, ttl)
		dst = append(dst, 0, 0) // RDLENGTH
	}
	return dst
}

// ClientLimit returns the largest UDP reply the client of q accepts: 512
// without EDNS, else its advertised size clamped to [512, maxUDP] (maxUDP
// values below 512 count as 512).
func ClientLimit(q *Query, maxUDP int) int {
	const minUDP = 512
	if !q.EDNS {
		return minUDP
	}
	return min(max(int(q.UDPSize), minUDP), max(maxUDP, minUDP))
}

// CheckReply checks that resp answers the question (name in wire form,
// qtype, qclass) asked with ID id: QR=1 (else ErrNotResponse), the same ID
// (ErrWrongID), QDCOUNT=1 (ErrQuestionCount), a parsable uncompressed
// question (ErrMalformed) equal to the one asked, the name compared
// case-insensitively in ASCII (ErrWrongQuestion). A resp shorter than a
// header gives ErrHeader. The rest of resp is not examined. It does not
// allocate.
func CheckReply(resp []byte, id uint16, name []byte, qtype, qclass uint16) error {
	if len(resp) < headerLen {
		return ErrHeader
	}
	if binary.BigEndian.Uint16(resp[2:])&flagQR == 0 {
		return ErrNotResponse
	}
	if binary.BigEndian.Uint16(resp) != id {
		return ErrWrongID
	}
	if binary.BigEndian.Uint16(resp[4:]) != 1 {
		return ErrQuestionCount
	}
	end, err := skipName(resp, headerLen, false)
	if err != nil || len(resp)-end < 4 {
		return ErrMalformed
	}
	if !equalFold(resp[headerLen:end], name) ||
		binary.BigEndian.Uint16(resp[end:]) != qtype ||
		binary.BigEndian.Uint16(resp[end+2:]) != qclass {
		return ErrWrongQuestion
	}
	return nil
}

// equalFold compares two names in uncompressed wire form, folding ASCII
// letters. Length bytes are at most 63, below 'A', so they never fold and a
// byte-wise comparison is a label-by-label comparison.
func equalFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i, c := range a {
		d := b[i]
		if c == d {
			continue
		}
		if c|0x20 != d|0x20 || c|0x20 < 'a' || c|0x20 > 'z' {
			return false
		}
	}
	return true
}

// Rcode returns the response code of msg including the upper eight bits
// carried by its OPT record (RFC 6891), walking the whole message. Errors:
// ErrHeader when msg is shorter than a header, ErrMalformed when a question
// or record cannot be walked. It does not allocate.
func Rcode(msg []byte) (int, error) {
	if len(msg) < headerLen {
		return 0, ErrHeader
	}
	rcode := int(binary.BigEndian.Uint16(msg[2:]) & maskRcode)
	off := headerLen
	var err error
	for range int(binary.BigEndian.Uint16(msg[4:])) {
		off, err = skipName(msg, off, true)
		if err != nil || len(msg)-off < 4 {
			return 0, ErrMalformed
		}
		off += 4
	}
	records := int(binary.BigEndian.Uint16(msg[6:])) + int(binary.BigEndian.Uint16(msg[8:]))
	additional := int(binary.BigEndian.Uint16(msg[10:]))
	for i := range records + additional {
		var r rr
		r, off, err = walkRR(msg, off)
		if err != nil {
			return 0, ErrMalformed
		}
		if i >= records && r.typ == typeOPT {
			rcode |= int(r.ttl>>24) << 4
		}
	}
	return rcode, nil
}

// Fit returns resp itself when len(resp) <= limit. Otherwise it appends to
// dst a truncated version of resp no longer than limit and returns it: the
// header with TC=1, the question, as many whole answer records as fit (in
// order), no authority records and no additional records except the OPT
// record when resp had one, counts fixed and names compressed. This slow
// path allocates. Errors: ErrMalformed (wrapped with the cause) when resp
// cannot be unpacked or repacked, ErrLimit when even the header, question
// and OPT record exceed limit.
func Fit(dst, resp []byte, limit int) ([]byte, error) {
	if len(resp) <= limit {
		return resp, nil
	}
	if limit < headerLen {
		return nil, ErrLimit
	}
	m := new(dns.Msg)
	if err := m.Unpack(resp); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	answers := m.Answer
	opt := m.IsEdns0()
	m.Ns, m.Extra = nil, nil
	if opt != nil {
		m.Extra = []dns.RR{opt}
	}
	m.Truncated = true
	m.Compress = true
	pack := func(k int) ([]byte, error) {
		m.Answer = answers[:k]
		b, err := m.Pack()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		return b, nil
	}
	best, err := pack(0)
	if err != nil {
		return nil, err
	}
	if len(best) > limit {
		return nil, ErrLimit
	}
	// The packed size grows with the number of answers: binary search for
	// the largest count that fits; lo always fits.
	lo, hi := 0, len(answers)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		b, err := pack(mid)
		if err != nil {
			return nil, err
		}
		if len(b) <= limit {
			lo, best = mid, b
		} else {
			hi = mid - 1
		}
	}
	return append(dst, best...), nil
}
