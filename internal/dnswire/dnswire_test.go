package dnswire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// pack packs m with miekg/dns, the oracle of these tests.
func pack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	return b
}

func newQuery(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0x4242
	return m
}

// wireName returns name in uncompressed wire form.
func wireName(t testing.TB, name string) []byte {
	t.Helper()
	b := make([]byte, 256)
	n, err := dns.PackDomainName(name, b, 0, nil, false)
	if err != nil {
		t.Fatalf("PackDomainName(%q): %v", name, err)
	}
	return b[:n]
}

func TestParseQueryValid(t *testing.T) {
	plain := newQuery("Example.COM.", dns.TypeAAAA)
	edns := newQuery("example.com.", dns.TypeA)
	edns.SetEdns0(4096, true)
	edns.CheckingDisabled = true
	cookie := newQuery("www.example.org.", dns.TypeHTTPS)
	cookie.SetEdns0(1232, false)
	opt := cookie.IsEdns0()
	opt.Option = append(opt.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"},
		&dns.EDNS0_PADDING{Padding: make([]byte, 12)})
	tsig := newQuery("example.net.", dns.TypeSOA)
	tsig.SetEdns0(1400, false)
	tsig.Extra = append(tsig.Extra, &dns.TSIG{
		Hdr:       dns.RR_Header{Name: "key.example.net.", Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm: dns.HmacSHA256, MACSize: 4, MAC: "01020304", OrigId: 0x4242, TimeSigned: 1, Fudge: 300,
	})
	root := newQuery(".", dns.TypeNS)
	chaos := newQuery("version.bind.", dns.TypeTXT)
	chaos.Question[0].Qclass = dns.ClassCHAOS

	tests := []struct {
		name string
		m    *dns.Msg
	}{
		{"plain", plain}, {"edns do cd", edns}, {"edns options", cookie}, {"tsig after opt", tsig},
		{"root", root}, {"chaos", chaos},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := pack(t, tt.m)
			trailing := append(bytes.Clone(msg), 0xde, 0xad)
			for _, in := range [][]byte{msg, trailing} {
				var q Query
				if err := ParseQuery(in, &q); err != nil {
					t.Fatalf("ParseQuery: %v", err)
				}
				want := tt.m.Question[0]
				if q.ID != tt.m.Id || q.Flags != binary.BigEndian.Uint16(msg[2:]) {
					t.Errorf("header %#x %#x", q.ID, q.Flags)
				}
				if !bytes.Equal(q.Name, wireName(t, want.Name)) || q.Type != want.Qtype || q.Class != want.Qclass {
					t.Errorf("question %q %d %d", q.Name, q.Type, q.Class)
				}
				if q.QuestionEnd != 12+len(q.Name)+4 || q.End != len(msg) {
					t.Errorf("QuestionEnd %d End %d, message %d", q.QuestionEnd, q.End, len(msg))
				}
				o := tt.m.IsEdns0()
				if q.EDNS != (o != nil) {
					t.Fatalf("EDNS %v", q.EDNS)
				}
				if o != nil && (q.UDPSize != o.UDPSize() || q.DO != o.Do()) {
					t.Errorf("UDPSize %d DO %v, want %d %v", q.UDPSize, q.DO, o.UDPSize(), o.Do())
				}
				if o == nil && (q.UDPSize != 0 || q.DO) {
					t.Errorf("UDPSize %d DO %v without EDNS", q.UDPSize, q.DO)
				}
			}
		})
	}
}

// hdr returns a 12-byte header.
func hdr(id, flags, qd, an, ns, ar uint16) []byte {
	var b []byte
	for _, v := range []uint16{id, flags, qd, an, ns, ar} {
		b = binary.BigEndian.AppendUint16(b, v)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var (
	qExample = []byte("\x07example\x03com\x00\x00\x01\x00\x01")
	optRR    = []byte("\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00")
)

func TestParseQueryErrors(t *testing.T) {
	long := bytes.Repeat([]byte("\x3faaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), 4)
	a := []byte("\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x0a\x00\x00\x01") // A RR owned by the question name
	tests := []struct {
		name     string
		msg      []byte
		err      error
		question bool // QuestionEnd > 0 expected
		edns     bool
	}{
		{"empty", nil, ErrHeader, false, false},
		{"11 bytes", hdr(1, 0, 1, 0, 0, 0)[:11], ErrHeader, false, false},
		{"response", cat(hdr(1, 0x8180, 1, 0, 0, 0), qExample), ErrNotQuery, false, false},
		{"notify", cat(hdr(1, 4<<11, 1, 0, 0, 0), qExample), ErrNotImplemented, false, false},
		{"update", cat(hdr(1, 5<<11, 1, 0, 0, 0), qExample), ErrNotImplemented, false, false},
		{"no question", hdr(1, 0x0100, 0, 0, 0, 0), errQDCount, false, false},
		{"two questions", cat(hdr(1, 0x0100, 2, 0, 0, 0), qExample, qExample), errQDCount, false, false},
		{"count beyond message", hdr(1, 0x0100, 1, 0, 0, 0), errTruncated, false, false},
		{"truncated name", cat(hdr(1, 0, 1, 0, 0, 0), qExample[:6]), errTruncated, false, false},
		{"truncated label length", cat(hdr(1, 0, 1, 0, 0, 0), qExample[:8]), errTruncated, false, false},
		{"no type", cat(hdr(1, 0, 1, 0, 0, 0), qExample[:len(qExample)-1]), errTruncated, false, false},
		{"compressed question", cat(hdr(1, 0, 1, 0, 0, 0), []byte("\xc0\x0c\x00\x01\x00\x01")), errCompressed, false, false},
		{"question pointer after label", cat(hdr(1, 0, 1, 0, 0, 0), []byte("\x01a\xc0\x0c\x00\x01\x00\x01")), errCompressed, false, false},
		{"extended label type", cat(hdr(1, 0, 1, 0, 0, 0), []byte("\x41\x00\x00\x01\x00\x01")), errBadName, false, false},
		{"label type 10", cat(hdr(1, 0, 1, 0, 0, 0), []byte("\x80\x00\x00\x01\x00\x01")), errBadName, false, false},
		{"name of 256 bytes", cat(hdr(1, 0, 1, 0, 0, 0), long, []byte("\x00\x00\x01\x00\x01")), errBadName, false, false},
		{"answer present", cat(hdr(1, 0, 1, 1, 0, 0), qExample, a), errSections, true, false},
		{"authority present", cat(hdr(1, 0, 1, 0, 1, 0), qExample, a), errSections, true, false},
		{"additional beyond message", cat(hdr(1, 0, 1, 0, 0, 2), qExample, optRR), errTruncated, true, true},
		{"additional rdata beyond message", cat(hdr(1, 0, 1, 0, 0, 1), qExample, a[:len(a)-1]), errTruncated, true, false},
		{"additional fixed part cut", cat(hdr(1, 0, 1, 0, 0, 1), qExample, a[:8]), errTruncated, true, false},
		{"two OPT", cat(hdr(1, 0, 1, 0, 0, 2), qExample, optRR, optRR), errMultiOPT, true, false},
		{"OPT owner not root", cat(hdr(1, 0, 1, 0, 0, 1), qExample, []byte("\x01a\x00"), optRR[1:]), errOPTOwner, true, false},
		{"OPT owner pointer", cat(hdr(1, 0, 1, 0, 0, 1), qExample, []byte("\xc0\x18"), optRR[1:]), errOPTOwner, true, false},
		{"OPT option cut", cat(hdr(1, 0, 1, 0, 0, 1), qExample, optRR[:9], []byte("\x00\x05\x00\x0a\x00\x04\x01")), errBadOPT, true, false},
		{"OPT rdata shorter than an option header", cat(hdr(1, 0, 1, 0, 0, 1), qExample, optRR[:9], []byte("\x00\x02\x00\x0a")), errBadOPT, true, false},
		{"OPT option length beyond rdata", cat(hdr(1, 0, 1, 0, 0, 1), qExample, optRR[:9], []byte("\x00\x04\x00\x0a\x00\x04")), errBadOPT, true, false},
		{"pointer loop", cat(hdr(1, 0, 1, 0, 0, 1), qExample, []byte("\x01a\xc0\x1d"), a[2:]), errBadName, true, false},
		{"pointer to itself", cat(hdr(1, 0, 1, 0, 0, 1), qExample, []byte("\xc0\x1d"), a[2:]), errBadName, true, false},
		{"pointer forward", cat(hdr(1, 0, 1, 0, 0, 1), qExample, []byte("\xc0\x40"), a[2:], bytes.Repeat([]byte{0}, 40)), errBadName, true, false},
		{"pointer into header", cat(hdr(1, 0, 1, 0, 0, 1), qExample, []byte("\xc0\x05"), a[2:]), errBadName, true, false},
		{"pointer cut", cat(hdr(1, 0, 1, 0, 0, 1), qExample, []byte("\xc0")), errTruncated, true, false},
		{"pointer chain exceeding 255", cat(hdr(1, 0, 1, 0, 0, 2), qExample, long[:128], []byte("\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00"), long[:128], []byte("\xc0\x1d"), a[2:]), errBadName, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := Query{QuestionEnd: 99, EDNS: true}
			err := ParseQuery(tt.msg, &q)
			if err != tt.err {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			var fe *FormatError
			if errors.As(err, &fe) && (fe.Reason == "" || !strings.HasSuffix(fe.Error(), ": "+fe.Reason)) {
				t.Errorf("FormatError %q, reason %q", fe.Error(), fe.Reason)
			}
			if (q.QuestionEnd > 0) != tt.question || q.EDNS != tt.edns {
				t.Errorf("QuestionEnd %d EDNS %v", q.QuestionEnd, q.EDNS)
			}
			if len(tt.msg) >= 12 && q.ID != 1 {
				t.Errorf("ID %d", q.ID)
			}
		})
	}
}

// TestParseQueryCompressedAdditional accepts a TSIG-like record whose owner
// name points back into the question, and a pointer chain.
func TestParseQueryCompressedAdditional(t *testing.T) {
	rr := []byte("\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x00")
	msg := cat(hdr(7, 0, 1, 0, 0, 2), qExample, []byte("\x03key\xc0\x0c"), rr, []byte("\x01x\xc0\x1d"), rr)
	var q Query
	if err := ParseQuery(msg, &q); err != nil {
		t.Fatalf("ParseQuery: %v", err)
	}
	if q.End != len(msg) || q.EDNS {
		t.Errorf("End %d EDNS %v", q.End, q.EDNS)
	}
	var m dns.Msg
	if err := m.Unpack(msg); err != nil || m.Extra[1].Header().Name != "x.key.example.com." {
		t.Errorf("oracle: %v %v", err, m.Extra)
	}
}

func TestAppendError(t *testing.T) {
	edns := newQuery("example.com.", dns.TypeA)
	edns.SetEdns0(4096, true)
	edns.CheckingDisabled = true
	edns.AuthenticatedData = true
	plain := newQuery("Example.com.", dns.TypeMX)
	plain.RecursionDesired = false
	tests := []struct {
		name     string
		msg      []byte
		rcode    int
		wantCode int
		question bool
		opt      bool
	}{
		{"servfail edns", pack(t, edns), dns.RcodeServerFailure, dns.RcodeServerFailure, true, true},
		{"refused plain", pack(t, plain), dns.RcodeRefused, dns.RcodeRefused, true, false},
		{"badvers edns", pack(t, edns), dns.RcodeBadVers, dns.RcodeBadVers, true, true},
		{"badvers plain", pack(t, plain), dns.RcodeBadVers, dns.RcodeServerFailure, true, false},
		{"negative", pack(t, plain), -1, dns.RcodeServerFailure, true, false},
		{"notimp", cat(hdr(9, 2<<11|0x0110, 1, 0, 0, 0), qExample), dns.RcodeNotImplemented, dns.RcodeNotImplemented, false, false},
		{"formerr two OPT", cat(hdr(9, 0x0100, 1, 0, 0, 2), qExample, optRR, optRR), dns.RcodeFormatError, dns.RcodeFormatError, true, false},
		{"formerr after OPT", cat(hdr(9, 0x0100, 1, 0, 0, 2), qExample, optRR, []byte{1}), dns.RcodeFormatError, dns.RcodeFormatError, true, true},
		{"formerr no question", cat(hdr(9, 0x0100, 1, 0, 0, 0), []byte("\x05ab")), dns.RcodeFormatError, dns.RcodeFormatError, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q Query
			err := ParseQuery(tt.msg, &q)
			if err != nil && err != ErrNotImplemented && !errors.As(err, new(*FormatError)) {
				t.Fatalf("ParseQuery: %v", err)
			}
			out := AppendError([]byte("xy"), tt.msg, &q, tt.rcode)
			if string(out[:2]) != "xy" {
				t.Fatal("prefix lost")
			}
			var r dns.Msg
			if err := r.Unpack(out[2:]); err != nil {
				t.Fatalf("reply does not unpack: %v", err)
			}
			reqFlags := binary.BigEndian.Uint16(tt.msg[2:])
			if r.Id != q.ID || !r.Response || r.Opcode != int(reqFlags>>11&0xf) || r.Rcode != tt.wantCode ||
				!r.RecursionAvailable || r.RecursionDesired != (reqFlags&0x0100 != 0) ||
				r.CheckingDisabled != (reqFlags&0x0010 != 0) || r.AuthenticatedData || r.Authoritative || r.Truncated {
				t.Errorf("header %+v", r.MsgHdr)
			}
			if tt.question {
				var req dns.Msg
				_ = req.Unpack(tt.msg)
				if len(r.Question) != 1 || len(req.Question) == 0 || r.Question[0] != req.Question[0] {
					t.Errorf("question %v, want %v", r.Question, req.Question)
				}
			} else if len(r.Question) != 0 {
				t.Errorf("question %v echoed", r.Question)
			}
			o := r.IsEdns0()
			if (o != nil) != tt.opt || len(r.Answer)+len(r.Ns) != 0 {
				t.Fatalf("OPT %v, answer %v, authority %v", o, r.Answer, r.Ns)
			}
			if o != nil && (o.UDPSize() != 1232 || o.Do() != q.DO || o.Version() != 0 || len(o.Option) != 0) {
				t.Errorf("OPT %v", o)
			}
		})
	}
}

// TestParseQueryBadVersion: an EDNS version above 0 is BADVERS (RFC 6891,
// 6.1.3), answered with an OPT record of version 0 and nothing the client
// sent echoed: not its options (a DNS cookie), not its unknown flags.
func TestParseQueryBadVersion(t *testing.T) {
	for _, version := range []uint8{1, 2, 255} {
		m := newQuery("Example.com.", dns.TypeA)
		m.SetEdns0(4096, true)
		opt := m.IsEdns0()
		opt.SetVersion(version)
		opt.SetZ(0x1234)
		opt.Option = append(opt.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
		msg := pack(t, m)
		var q Query
		if err := ParseQuery(msg, &q); err != ErrBadVersion {
			t.Fatalf("version %d: ParseQuery = %v, want ErrBadVersion", version, err)
		}
		if !q.EDNS || !q.DO || q.UDPSize != 4096 || q.End != len(msg) || q.Type != dns.TypeA {
			t.Errorf("version %d: query %+v", version, q)
		}
		var r dns.Msg
		if err := r.Unpack(AppendError(nil, msg, &q, RcodeBadVersion)); err != nil {
			t.Fatal(err)
		}
		o := r.IsEdns0()
		if r.Rcode != dns.RcodeBadVers || o == nil || o.Version() != 0 || o.Z() != 0 || !o.Do() || len(o.Option) != 0 ||
			len(r.Question) != 1 || r.Question[0].Name != "Example.com." || len(r.Answer)+len(r.Ns) != 0 || len(r.Extra) != 1 {
			t.Errorf("version %d: answer %v", version, &r)
		}
	}
	// A malformed message is FORMERR whatever its version.
	v1 := []byte("\x00\x00\x29\x04\xd0\x00\x01\x00\x00\x00\x00")
	var q Query
	if err := ParseQuery(cat(hdr(1, 0, 1, 0, 0, 2), qExample, v1, optRR), &q); err != errMultiOPT {
		t.Errorf("two OPT, one of version 1: %v", err)
	}
	if err := ParseQuery(cat(hdr(1, 0, 1, 0, 0, 1), qExample, v1), &q); err != ErrBadVersion {
		t.Errorf("version 1: %v", err)
	}
	// Version 0 with unknown flags and options is a valid query.
	m := newQuery("example.com.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetZ(0x7fff)
	if err := ParseQuery(pack(t, m), &q); err != nil {
		t.Errorf("version 0, unknown flags: %v", err)
	}
}

func TestClientLimit(t *testing.T) {
	tests := []struct {
		edns   bool
		size   uint16
		maxUDP int
		want   int
	}{
		{false, 0, 1232, 512},
		{false, 4096, 1232, 512},
		{true, 4096, 1232, 1232},
		{true, 1000, 1232, 1000},
		{true, 100, 1232, 512},
		{true, 0, 1232, 512},
		{true, 65535, 65535, 65535},
		{true, 4096, 100, 512},
	}
	for _, tt := range tests {
		q := Query{EDNS: tt.edns, UDPSize: tt.size}
		if got := ClientLimit(&q, tt.maxUDP); got != tt.want {
			t.Errorf("ClientLimit(edns=%v size=%d, %d) = %d, want %d", tt.edns, tt.size, tt.maxUDP, got, tt.want)
		}
	}
}

func TestID(t *testing.T) {
	msg := []byte{0x12, 0x34, 0}
	if ID(msg) != 0x1234 {
		t.Errorf("ID %#x", ID(msg))
	}
	SetID(msg, 0xabcd)
	if ID(msg) != 0xabcd || msg[2] != 0 {
		t.Errorf("SetID gave %x", msg)
	}
	SetID(msg[:1], 1)
	if ID(msg[:1]) != 0 || msg[0] != 0xab {
		t.Errorf("short message changed: %x", msg)
	}
}

// reply builds a response to "example.com. A" with id and modifications.
func reply(t testing.TB, mod func(*dns.Msg)) []byte {
	t.Helper()
	req := newQuery("example.com.", dns.TypeA)
	m := new(dns.Msg)
	m.SetReply(req)
	m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "example.com.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)})
	m.Compress = true
	if mod != nil {
		mod(m)
	}
	return pack(t, m)
}

func TestCheckReply(t *testing.T) {
	name := wireName(t, "example.com.")
	good := reply(t, nil)
	tests := []struct {
		name string
		resp []byte
		err  error
	}{
		{"good", good, nil},
		{"upper case", reply(t, func(m *dns.Msg) { m.Question[0].Name = "EXAMPLE.Com." }), nil},
		{"servfail no answer", reply(t, func(m *dns.Msg) { m.Rcode = dns.RcodeServerFailure; m.Answer = nil }), nil},
		{"short", good[:11], ErrHeader},
		{"query", reply(t, func(m *dns.Msg) { m.Response = false }), ErrNotResponse},
		{"wrong id", reply(t, func(m *dns.Msg) { m.Id++ }), ErrWrongID},
		{"no question", reply(t, func(m *dns.Msg) { m.Question = nil }), ErrQuestionCount},
		{"two questions", reply(t, func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }), ErrQuestionCount},
		{"other name", reply(t, func(m *dns.Msg) { m.Question[0].Name = "example.net." }), ErrWrongQuestion},
		{"longer name", reply(t, func(m *dns.Msg) { m.Question[0].Name = "www.example.com." }), ErrWrongQuestion},
		{"label boundary", reply(t, func(m *dns.Msg) { m.Question[0].Name = "exampl.ecom." }), ErrWrongQuestion},
		{"other type", reply(t, func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA }), ErrWrongQuestion},
		{"other class", reply(t, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }), ErrWrongQuestion},
		{"question cut", good[:20], ErrMalformed},
		{"type cut", good[:12+len(name)+3], ErrMalformed},
		{"compressed question", cat(good[:12], []byte("\xc0\x0c\x00\x01\x00\x01")), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := CheckReply(tt.resp, 0x4242, name, dns.TypeA, dns.ClassINET); err != tt.err {
				t.Errorf("CheckReply = %v, want %v", err, tt.err)
			}
		})
	}
	// Bytes differing by 0x20 match only when they are letters.
	if equalFold([]byte("\x01@"), []byte("\x01`")) || equalFold([]byte("\x01["), []byte("\x01{")) {
		t.Error("equalFold folds non-letters")
	}
	if !equalFold([]byte("\x03aBz"), []byte("\x03AbZ")) {
		t.Error("equalFold does not fold letters")
	}
}

func TestRcode(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*dns.Msg)
		want int
	}{
		{"noerror", nil, dns.RcodeSuccess},
		{"nxdomain", func(m *dns.Msg) { m.Rcode = dns.RcodeNameError }, dns.RcodeNameError},
		{"badvers", func(m *dns.Msg) { m.SetEdns0(1232, false); m.Rcode = dns.RcodeBadVers }, dns.RcodeBadVers},
		{"badcookie", func(m *dns.Msg) { m.SetEdns0(1232, false); m.Rcode = dns.RcodeBadCookie }, dns.RcodeBadCookie},
		{"opt in answer ignored", func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			o := m.IsEdns0()
			bogus := *o
			bogus.SetExtendedRcode(dns.RcodeBadVers)
			m.Answer = append(m.Answer, &bogus)
			m.Rcode = dns.RcodeRefused
		}, dns.RcodeRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Rcode(reply(t, tt.mod))
			if err != nil || got != tt.want {
				t.Errorf("Rcode = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
	if _, err := Rcode([]byte{1}); err != ErrHeader {
		t.Errorf("short: %v", err)
	}
	good := reply(t, nil)
	if _, err := Rcode(good[:20]); err != ErrMalformed {
		t.Errorf("question cut: %v", err)
	}
	if _, err := Rcode(good[:len(good)-1]); err != ErrMalformed {
		t.Errorf("cut: %v", err)
	}
}

// bigReply returns a response with n answers, authority and additional
// records, and an OPT record when edns (with an extended rcode bit set
// when ext).
func bigReply(t testing.TB, n int, edns, ext bool) []byte {
	return reply(t, func(m *dns.Msg) {
		m.Answer = nil
		for i := range n {
			m.Answer = append(m.Answer, &dns.TXT{
				Hdr: dns.RR_Header{Name: "example.com.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: []string{fmt.Sprintf("record %03d %s", i, strings.Repeat("x", i%40))},
			})
		}
		m.Ns = append(m.Ns, &dns.NS{Hdr: dns.RR_Header{Name: "example.com.", Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: 60}, Ns: "ns1.example.com."})
		m.Extra = append(m.Extra, &dns.A{Hdr: dns.RR_Header{Name: "ns1.example.com.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 53)})
		if edns {
			m.SetEdns0(1232, true)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: "6e73"})
			if ext {
				m.Rcode = dns.RcodeBadCookie
			}
		}
		m.AuthenticatedData = true
	})
}

// checkFit verifies out = Fit(resp, limit) with miekg/dns.
func checkFit(t *testing.T, resp, out []byte, limit int) {
	t.Helper()
	if len(out) > limit {
		t.Fatalf("Fit returned %d bytes, limit %d", len(out), limit)
	}
	var orig, m dns.Msg
	if err := orig.Unpack(resp); err != nil {
		t.Fatalf("original: %v", err)
	}
	if err := m.Unpack(out); err != nil {
		t.Fatalf("result does not unpack: %v", err)
	}
	if !m.Truncated || m.Id != orig.Id || m.Rcode != orig.Rcode || m.Response != orig.Response ||
		m.AuthenticatedData != orig.AuthenticatedData || m.Opcode != orig.Opcode {
		t.Errorf("header %+v, original %+v", m.MsgHdr, orig.MsgHdr)
	}
	if len(m.Question) != len(orig.Question) || (len(m.Question) > 0 && m.Question[0] != orig.Question[0]) {
		t.Errorf("question %v", m.Question)
	}
	if len(m.Ns) != 0 {
		t.Errorf("authority kept: %v", m.Ns)
	}
	if o := orig.IsEdns0(); o != nil {
		if len(m.Extra) != 1 || m.Extra[0].String() != o.String() {
			t.Errorf("additional %v, want %v", m.Extra, o)
		}
	} else if len(m.Extra) != 0 {
		t.Errorf("additional %v", m.Extra)
	}
	if len(m.Answer) > len(orig.Answer) {
		t.Fatalf("%d answers from %d", len(m.Answer), len(orig.Answer))
	}
	for i, rr := range m.Answer {
		if !dns.IsDuplicate(rr, orig.Answer[i]) {
			t.Errorf("answer %d: %v, want %v", i, rr, orig.Answer[i])
		}
	}
	if k := len(m.Answer); k < len(orig.Answer) {
		m.Answer = orig.Answer[:k+1]
		m.Compress = true
		if more := pack(t, &m); len(more) <= limit {
			t.Errorf("%d answers kept but %d fit (%d <= %d)", k, k+1, len(more), limit)
		}
	}
}

func TestFit(t *testing.T) {
	edns := bigReply(t, 60, true, false)
	ext := bigReply(t, 60, true, true)
	plain := bigReply(t, 60, false, false)
	for _, resp := range [][]byte{edns, ext, plain} {
		for _, limit := range []int{len(resp) - 1, 1232, 512, 200, 100, 60} {
			t.Run(fmt.Sprintf("%d/%d", len(resp), limit), func(t *testing.T) {
				out, err := Fit([]byte("pre"), resp, limit)
				if err != nil {
					t.Fatalf("Fit: %v", err)
				}
				if string(out[:3]) != "pre" {
					t.Fatal("prefix lost")
				}
				checkFit(t, resp, out[3:], limit)
			})
		}
	}
	// Unchanged, not copied, when it fits.
	out, err := Fit(make([]byte, 0, 4), plain, len(plain))
	if err != nil || &out[0] != &plain[0] || len(out) != len(plain) {
		t.Errorf("fitting message copied or changed (%v)", err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = Fit(nil, plain, 65535) }); n != 0 {
		t.Errorf("Fit fast path allocates %v times", n)
	}
	// Header + question + OPT (with a 2-byte NSID) is 12+17+17 = 46 bytes.
	if _, err := Fit(nil, edns, 45); err != ErrLimit {
		t.Errorf("limit 45: %v", err)
	}
	if out, err := Fit(nil, edns, 46); err != nil || len(out) != 46 {
		t.Errorf("limit 46: %d bytes, %v", len(out), err)
	}
	if _, err := Fit(nil, edns, 5); err != ErrLimit {
		t.Errorf("limit 5: %v", err)
	}
	if _, err := Fit(nil, edns[:len(edns)-3], 512); !errors.Is(err, ErrMalformed) {
		t.Errorf("malformed: %v", err)
	}
}

func TestAllocs(t *testing.T) {
	m := newQuery("www.example.com.", dns.TypeAAAA)
	m.SetEdns0(1232, true)
	msg := pack(t, m)
	resp := reply(t, nil)
	name := wireName(t, "example.com.")
	var q Query
	buf := make([]byte, 0, 512)
	bad := cat(hdr(1, 0, 1, 0, 0, 2), qExample, optRR, optRR)
	checks := map[string]func(){
		"ParseQuery":         func() { _ = ParseQuery(msg, &q) },
		"ParseQuery FORMERR": func() { _ = ParseQuery(bad, &q) },
		"AppendError":        func() { buf = AppendError(buf[:0], msg, &q, dns.RcodeServerFailure) },
		"CheckReply":         func() { _ = CheckReply(resp, 0x4242, name, dns.TypeA, dns.ClassINET) },
		"CheckReply wrong":   func() { _ = CheckReply(resp, 1, name, dns.TypeA, dns.ClassINET) },
		"Rcode":              func() { _, _ = Rcode(resp) },
	}
	for name, f := range checks {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s allocates %v times", name, n)
		}
	}
}

func FuzzParseQuery(f *testing.F) {
	m := newQuery("example.com.", dns.TypeA)
	f.Add(pack(f, m))
	m.SetEdns0(1232, true)
	f.Add(pack(f, m))
	f.Add(cat(hdr(1, 0, 1, 0, 0, 2), qExample, optRR, optRR))
	f.Add(cat(hdr(7, 0, 1, 0, 0, 2), qExample, []byte("\x03key\xc0\x0c\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x00\x01x\xc0\x1d\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00")))
	f.Add(cat(hdr(1, 0, 1, 0, 0, 1), qExample, []byte("\x01a\xc0\x1d")))
	f.Add(cat(hdr(1, 0, 1, 0, 0, 1), qExample, []byte("\x00\x00\x29\x04\xd0\x00\x01\x80\x00\x00\x00")))
	f.Fuzz(func(t *testing.T, msg []byte) {
		var q Query
		err := ParseQuery(msg, &q)
		var fe *FormatError
		if err == ErrBadVersion {
			var r dns.Msg
			if !q.EDNS || r.Unpack(AppendError(nil, msg, &q, RcodeBadVersion)) != nil ||
				r.Rcode != dns.RcodeBadVers || r.IsEdns0() == nil || r.IsEdns0().Version() != 0 {
				t.Fatalf("BADVERS answer %v for %+v", &r, q)
			}
			err = nil
		}
		switch {
		case err == nil:
			if q.QuestionEnd == 0 || q.End < q.QuestionEnd || q.End > len(msg) {
				t.Fatalf("offsets %d %d of %d", q.QuestionEnd, q.End, len(msg))
			}
			var o dns.Msg
			if o.Unpack(msg[:q.QuestionEnd]) == nil && len(o.Question) == 1 {
				if !bytes.Equal(wireName(t, o.Question[0].Name), q.Name) || o.Question[0].Qtype != q.Type {
					t.Fatalf("question %q, oracle %v", q.Name, o.Question[0])
				}
			}
		case err == ErrHeader || err == ErrNotQuery:
			return
		case err == ErrNotImplemented || errors.As(err, &fe):
		default:
			t.Fatalf("unexpected error %v", err)
		}
		out := AppendError(nil, msg, &q, dns.RcodeFormatError)
		var r dns.Msg
		if err := r.Unpack(out); err != nil {
			t.Fatalf("error reply %x does not unpack: %v", out, err)
		}
		if r.Id != q.ID || !r.Response || r.Rcode != dns.RcodeFormatError || len(r.Question) != min(q.QuestionEnd, 1) ||
			(r.IsEdns0() != nil) != q.EDNS {
			t.Fatalf("error reply %v for %+v", &r, q)
		}
	})
}

func FuzzCheckReply(f *testing.F) {
	f.Add(reply(f, nil), uint16(0x4242))
	f.Add(reply(f, func(m *dns.Msg) { m.Question[0].Name = "EXAMPLE.com." }), uint16(0x4242))
	f.Add(bigReply(f, 3, true, true), uint16(0x4242))
	name := wireName(f, "example.com.")
	f.Fuzz(func(t *testing.T, resp []byte, id uint16) {
		err := CheckReply(resp, id, name, dns.TypeA, dns.ClassINET)
		if _, rerr := Rcode(resp); rerr != nil && rerr != ErrHeader && rerr != ErrMalformed {
			t.Fatalf("Rcode error %v", rerr)
		}
		if err != nil {
			return
		}
		if ID(resp) != id || resp[2]&0x80 == 0 {
			t.Fatalf("accepted header %x", resp[:4])
		}
		var m dns.Msg
		if m.Unpack(resp) == nil {
			if len(m.Question) != 1 || !strings.EqualFold(m.Question[0].Name, "example.com.") ||
				m.Question[0].Qtype != dns.TypeA || m.Question[0].Qclass != dns.ClassINET {
				t.Fatalf("accepted question %v", m.Question)
			}
		}
	})
}

func FuzzFit(f *testing.F) {
	f.Add(bigReply(f, 40, true, false), uint16(512))
	f.Add(bigReply(f, 10, true, true), uint16(100))
	f.Add(bigReply(f, 20, false, false), uint16(300))
	f.Add(reply(f, nil), uint16(20))
	f.Fuzz(func(t *testing.T, resp []byte, limit uint16) {
		out, err := Fit(nil, resp, int(limit))
		if err != nil {
			if err != ErrLimit && !errors.Is(err, ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(out) > int(limit) && !bytes.Equal(out, resp) {
			t.Fatalf("%d bytes, limit %d", len(out), limit)
		}
		if len(resp) <= int(limit) {
			if len(resp) > 0 && &out[0] != &resp[0] {
				t.Fatal("fitting message copied")
			}
			return
		}
		var m dns.Msg
		if err := m.Unpack(out); err != nil {
			t.Fatalf("result %x does not unpack: %v", out, err)
		}
		if !m.Truncated || len(m.Ns) != 0 || len(m.Extra) > 1 {
			t.Fatalf("result %v", &m)
		}
	})
}

func BenchmarkParseQuery(b *testing.B) {
	m := newQuery("www.example.com.", dns.TypeAAAA)
	m.SetEdns0(1232, true)
	msg := pack(b, m)
	var q Query
	b.ReportAllocs()
	for b.Loop() {
		if err := ParseQuery(msg, &q); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckReply(b *testing.B) {
	resp := reply(b, func(m *dns.Msg) { m.SetEdns0(1232, false) })
	name := wireName(b, "example.com.")
	b.ReportAllocs()
	for b.Loop() {
		if err := CheckReply(resp, 0x4242, name, dns.TypeA, dns.ClassINET); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendError(b *testing.B) {
	m := newQuery("www.example.com.", dns.TypeAAAA)
	m.SetEdns0(1232, true)
	msg := pack(b, m)
	var q Query
	if err := ParseQuery(msg, &q); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendError(buf[:0], msg, &q, dns.RcodeServerFailure)
	}
}
