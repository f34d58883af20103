package dnswire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"testing"

	"github.com/miekg/dns"
)

// ednsClient packs a client query for name and parses it.
func ednsClient(t testing.TB, name string, mod func(*dns.Msg)) ([]byte, *Query) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Id = 0x4242
	if mod != nil {
		mod(m)
	}
	msg := pack(t, m)
	q := new(Query)
	if err := ParseQuery(msg, q); err != nil {
		t.Fatalf("ParseQuery: %v", err)
	}
	return msg, q
}

// ednsUpstream packs an upstream answer for name with two A records, the
// given rcode (extended ones need edns) and, when edns, an OPT record of
// 4096 bytes with DO and an NSID option.
func ednsUpstream(t testing.TB, name string, rcode int, edns bool, mod func(*dns.Msg)) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Id = 0x9999
	m.Response = true
	m.RecursionAvailable = true
	m.RecursionDesired = true
	m.Rcode = rcode
	for _, a := range []string{"192.0.2.1", "192.0.2.2"} {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
			A:   net.ParseIP(a),
		})
	}
	if edns {
		m.SetEdns0(4096, true)
		opt := m.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: "6e73"})
	}
	if mod != nil {
		mod(m)
	}
	m.Compress = true
	return pack(t, m)
}

func ednsUnpack(t testing.TB, b []byte) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatalf("Unpack: %v\n% x", err, b)
	}
	return m
}

// optCount counts the OPT records in m's additional section.
func optCount(m *dns.Msg) int {
	n := 0
	for _, r := range m.Extra {
		if r.Header().Rrtype == dns.TypeOPT {
			n++
		}
	}
	return n
}

func TestAppendUpstreamQuery(t *testing.T) {
	for _, tc := range []struct {
		name           string
		mod            func(*dns.Msg)
		rd, cd, ad, do bool
	}{
		{"plain rd", nil, true, false, false, false},
		{"no rd", func(m *dns.Msg) { m.RecursionDesired = false }, false, false, false, false},
		{"cd ad", func(m *dns.Msg) { m.CheckingDisabled = true; m.AuthenticatedData = true }, true, true, true, false},
		{"edns do with options and tsig", func(m *dns.Msg) {
			m.SetEdns0(4096, true)
			opt := m.IsEdns0()
			opt.Option = append(opt.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
			m.Extra = append(m.Extra, &dns.TSIG{
				Hdr:       dns.RR_Header{Name: "key.example.", Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
				Algorithm: dns.HmacSHA256, MACSize: 4, MAC: "01020304", OrigId: 0x4242, TimeSigned: 1, Fudge: 300,
			})
		}, true, false, false, true},
		{"edns small, no do, other flags ignored", func(m *dns.Msg) {
			m.SetEdns0(512, false)
			m.Zero = true
			m.Authoritative = true
		}, true, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, q := ednsClient(t, "WwW.Example.ORG.", tc.mod)
			orig := bytes.Clone(msg)
			out := AppendUpstreamQuery([]byte("pre"), msg, q, 0xbeef)
			if !bytes.Equal(msg, orig) {
				t.Fatal("client query modified")
			}
			if string(out[:3]) != "pre" {
				t.Fatal("dst prefix lost")
			}
			m := ednsUnpack(t, out[3:])
			if m.Id != 0xbeef || m.Response || m.Opcode != dns.OpcodeQuery {
				t.Errorf("header %v", m.MsgHdr)
			}
			if m.RecursionDesired != tc.rd || m.CheckingDisabled != tc.cd || m.AuthenticatedData != tc.ad ||
				m.Zero || m.Authoritative {
				t.Errorf("flags %v", m.MsgHdr)
			}
			if len(m.Question) != 1 || m.Question[0].Name != "WwW.Example.ORG." || m.Question[0].Qtype != dns.TypeA {
				t.Errorf("question %v", m.Question)
			}
			if len(m.Answer) != 0 || len(m.Ns) != 0 || len(m.Extra) != 1 {
				t.Fatalf("sections %v", m)
			}
			opt := m.IsEdns0()
			if opt == nil || opt.UDPSize() != UpstreamUDPSize || opt.Version() != 0 || opt.Do() != tc.do ||
				len(opt.Option) != 0 || opt.ExtendedRcode() != 0 {
				t.Errorf("OPT %v", opt)
			}
			var back Query
			if err := ParseQuery(out[3:], &back); err != nil || !back.EDNS || back.UDPSize != UpstreamUDPSize {
				t.Errorf("ParseQuery of the upstream query: %v %+v", err, back)
			}
		})
	}
}

func TestAppendUpstreamQueryFromParse(t *testing.T) {
	msg, q := ednsClient(t, "example.org.", nil)
	want := AppendUpstreamQuery(nil, msg, q, 7)
	// Without a usable QuestionEnd the question comes from q's fields.
	q2 := *q
	q2.QuestionEnd = 0
	if got := AppendUpstreamQuery(nil, nil, &q2, 7); !bytes.Equal(got, want) {
		t.Errorf("rebuilt question:\n% x\nwant\n% x", got, want)
	}
	q2.QuestionEnd = len(msg) + 1
	if got := AppendUpstreamQuery(nil, msg, &q2, 7); !bytes.Equal(got, want) {
		t.Errorf("QuestionEnd past msg:\n% x\nwant\n% x", got, want)
	}
	// A zero Query gives a well-formed query for the root.
	m := ednsUnpack(t, AppendUpstreamQuery(nil, nil, &Query{}, 9))
	if len(m.Question) != 1 || m.Question[0].Name != "." {
		t.Errorf("zero query: %v", m)
	}
}

func TestAppendClientAnswer(t *testing.T) {
	const name = "www.example.org."
	noEDNS := func(*dns.Msg) {}
	ednsDO := func(m *dns.Msg) { m.SetEdns0(1400, true) }
	ednsNoDO := func(m *dns.Msg) { m.SetEdns0(1400, false) }
	setAD := func(m *dns.Msg) { m.AuthenticatedData = true }
	for _, tc := range []struct {
		name    string
		client  func(*dns.Msg)
		resp    []byte
		size    uint16
		trustAD bool
		// expectations
		rcode   int
		opt     bool
		do      bool
		ad      bool
		answers int
	}{
		{"no edns client, upstream opt removed", noEDNS, ednsUpstream(t, name, 0, true, nil), 1232, false, 0, false, false, false, 2},
		{"no edns anywhere", noEDNS, ednsUpstream(t, name, 0, false, nil), 1232, false, 0, false, false, false, 2},
		{"edns client do", ednsDO, ednsUpstream(t, name, 0, true, nil), 1232, false, 0, true, true, false, 2},
		{"edns client no do", ednsNoDO, ednsUpstream(t, name, 0, true, nil), 1232, false, 0, true, false, false, 2},
		{"edns client, upstream without opt", ednsDO, ednsUpstream(t, name, 0, false, nil), 1232, false, 0, true, true, false, 2},
		{"nxdomain", ednsNoDO, ednsUpstream(t, name, dns.RcodeNameError, true, nil), 1232, false, dns.RcodeNameError, true, false, false, 2},
		{"extended rcode to edns client", ednsDO, ednsUpstream(t, name, dns.RcodeBadCookie, true, nil), 1232, false, dns.RcodeBadCookie, true, true, false, 2},
		{"extended rcode to plain client: servfail", noEDNS, ednsUpstream(t, name, dns.RcodeBadCookie, true, nil), 1232, false, dns.RcodeServerFailure, false, false, false, 0},
		{"ad cleared", ednsDO, ednsUpstream(t, name, 0, true, setAD), 1232, false, 0, true, true, false, 2},
		{"ad kept for do", ednsDO, ednsUpstream(t, name, 0, true, setAD), 1232, true, 0, true, true, true, 2},
		{"ad kept for ad", func(m *dns.Msg) { m.AuthenticatedData = true }, ednsUpstream(t, name, 0, true, setAD), 1232, true, 0, false, false, true, 2},
		{"ad cleared without ad or do", ednsNoDO, ednsUpstream(t, name, 0, true, setAD), 1232, true, 0, true, false, false, 2},
		{"small size raised to 512", ednsNoDO, ednsUpstream(t, name, 0, true, nil), 100, false, 0, true, false, false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, q := ednsClient(t, name, tc.client)
			orig := bytes.Clone(tc.resp)
			out, err := AppendClientAnswer([]byte("pre"), tc.resp, q, tc.size, tc.trustAD)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(tc.resp, orig) {
				t.Fatal("resp modified")
			}
			if string(out[:3]) != "pre" {
				t.Fatal("dst prefix lost")
			}
			m := ednsUnpack(t, out[3:])
			if m.Id != q.ID || !m.Response {
				t.Errorf("header %v", m.MsgHdr)
			}
			if m.Rcode != tc.rcode {
				t.Errorf("rcode %d, want %d", m.Rcode, tc.rcode)
			}
			if m.AuthenticatedData != tc.ad {
				t.Errorf("AD %v, want %v", m.AuthenticatedData, tc.ad)
			}
			if len(m.Answer) != tc.answers {
				t.Errorf("%d answers, want %d", len(m.Answer), tc.answers)
			}
			if len(m.Question) != 1 || m.Question[0].Name != name {
				t.Errorf("question %v", m.Question)
			}
			if n := optCount(m); n != btoi(tc.opt) {
				t.Fatalf("%d OPT records, want %v", n, tc.opt)
			}
			if tc.opt {
				opt := m.IsEdns0()
				want := max(tc.size, 512)
				if opt.UDPSize() != want || opt.Do() != tc.do || len(opt.Option) != 0 || opt.Version() != 0 {
					t.Errorf("OPT %v, want size %d DO %v", opt, want, tc.do)
				}
				if m.Extra[len(m.Extra)-1] != opt {
					t.Error("OPT not last")
				}
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestAppendClientAnswerFlagsAndCase(t *testing.T) {
	_, q := ednsClient(t, "WwW.eXample.ORG.", func(m *dns.Msg) {
		m.RecursionDesired = false
		m.CheckingDisabled = true
	})
	resp := ednsUpstream(t, "www.example.org.", 0, false, func(m *dns.Msg) {
		m.Truncated = true
		m.Authoritative = true
	})
	out, err := AppendClientAnswer(nil, resp, q, 1232, false)
	if err != nil {
		t.Fatal(err)
	}
	m := ednsUnpack(t, out)
	if m.RecursionDesired || !m.CheckingDisabled || !m.Truncated || !m.Authoritative || !m.RecursionAvailable {
		t.Errorf("flags %v", m.MsgHdr)
	}
	if m.Question[0].Name != "WwW.eXample.ORG." {
		t.Errorf("question %q, want the client's spelling", m.Question[0].Name)
	}
	// The answers point at the question: they follow its spelling.
	if m.Answer[0].Header().Name != "WwW.eXample.ORG." {
		t.Errorf("answer owner %q", m.Answer[0].Header().Name)
	}
}

// TestAppendClientAnswerOPTInMiddle checks the slow path: records after the
// OPT record, one of them compressed against the other.
func TestAppendClientAnswerOPTInMiddle(t *testing.T) {
	const name = "example.org."
	glue := func(m *dns.Msg) {
		m.Ns = append(m.Ns, &dns.NS{
			Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: 60},
			Ns:  "ns1.example.org.",
		})
		m.Extra = append(m.Extra,
			&dns.A{Hdr: dns.RR_Header{Name: "glue.example.net.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.53")},
			&dns.AAAA{Hdr: dns.RR_Header{Name: "glue.example.net.", Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60}, AAAA: net.ParseIP("2001:db8::53")})
	}
	resp := ednsUpstream(t, name, dns.RcodeBadCookie, true, glue)
	if optIdx := func() int {
		m := ednsUnpack(t, resp)
		for i, r := range m.Extra {
			if r.Header().Rrtype == dns.TypeOPT {
				return i
			}
		}
		return -1
	}(); optIdx != 0 {
		t.Fatalf("test answer has its OPT at %d, want first", optIdx)
	}
	for _, tc := range []struct {
		name   string
		client func(*dns.Msg)
		rcode  int
		opt    bool
	}{
		{"edns client", func(m *dns.Msg) { m.SetEdns0(1232, false) }, dns.RcodeBadCookie, true},
		{"plain client", nil, dns.RcodeServerFailure, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, q := ednsClient(t, name, tc.client)
			out, err := AppendClientAnswer([]byte("pre"), resp, q, 1232, false)
			if err != nil {
				t.Fatal(err)
			}
			m := ednsUnpack(t, out[3:])
			if m.Rcode != tc.rcode || m.Id != q.ID || optCount(m) != btoi(tc.opt) {
				t.Fatalf("answer %v", m)
			}
			if !tc.opt {
				return
			}
			if len(m.Extra) != 3 || m.Extra[2].Header().Rrtype != dns.TypeOPT {
				t.Fatalf("additional %v", m.Extra)
			}
			for _, r := range m.Extra[:2] {
				if r.Header().Name != "glue.example.net." {
					t.Errorf("glue %v", r)
				}
			}
			if ns := m.Ns[0].(*dns.NS).Ns; ns != "ns1.example.org." {
				t.Errorf("NS %q", ns)
			}
		})
	}
	// With rcode NOERROR the plain client gets the glue too.
	resp = ednsUpstream(t, name, 0, true, glue)
	_, q := ednsClient(t, name, nil)
	out, err := AppendClientAnswer(nil, resp, q, 1232, false)
	if err != nil {
		t.Fatal(err)
	}
	if m := ednsUnpack(t, out); len(m.Extra) != 2 || optCount(m) != 0 || m.Extra[1].Header().Name != "glue.example.net." {
		t.Errorf("additional %v", m.Extra)
	}
}

func TestAppendClientAnswerInPlace(t *testing.T) {
	const name = "www.example.org."
	for _, client := range []func(*dns.Msg){nil, func(m *dns.Msg) { m.SetEdns0(1232, true) }} {
		_, q := ednsClient(t, name, client)
		resp := ednsUpstream(t, name, 0, true, nil)
		want, err := AppendClientAnswer(nil, resp, q, 1232, false)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(resp), len(resp)+64)
		copy(buf, resp)
		got, err := AppendClientAnswer(buf[:0], buf, q, 1232, false)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("in place: %v\n% x\nwant\n% x", err, got, want)
		}
	}
}

func TestAppendClientAnswerErrors(t *testing.T) {
	const name = "www.example.org."
	_, q := ednsClient(t, name, func(m *dns.Msg) { m.SetEdns0(1232, false) })
	good := ednsUpstream(t, name, 0, true, nil)
	notResp := bytes.Clone(good)
	notResp[2] &^= 0x80
	twoOPT := ednsUpstream(t, name, 0, true, func(m *dns.Msg) {
		m.Extra = append(m.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: 512}})
	})
	optOwner := ednsUpstream(t, name, 0, false, func(m *dns.Msg) {
		m.Extra = append(m.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeOPT, Class: 512}})
	})
	other := ednsUpstream(t, "other.example.", 0, true, nil)
	otherType := ednsUpstream(t, name, 0, true, func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA })
	noQuestion := ednsUpstream(t, name, 0, false, func(m *dns.Msg) { m.Question = nil; m.Answer = nil })
	extraCount := bytes.Clone(good)
	binary.BigEndian.PutUint16(extraCount[10:], 2)
	for _, tc := range []struct {
		name string
		resp []byte
		q    *Query
		want error
	}{
		{"empty", nil, q, ErrHeader},
		{"short", good[:11], q, ErrHeader},
		{"not a response", notResp, q, ErrNotResponse},
		{"no question", noQuestion, q, ErrQuestionCount},
		{"truncated question", good[:14], q, ErrMalformed},
		{"truncated record", good[:len(good)-20], q, ErrMalformed},
		{"truncated opt", good[:len(good)-3], q, ErrMalformed},
		{"count past end", extraCount, q, ErrMalformed},
		{"two opt", twoOPT, q, ErrMalformed},
		{"opt owner not root", optOwner, q, ErrMalformed},
		{"other name", other, q, ErrWrongQuestion},
		{"other type", otherType, q, ErrWrongQuestion},
		{"nil query", good, nil, ErrWrongQuestion},
		{"zero query", good, &Query{}, ErrWrongQuestion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := AppendClientAnswer([]byte("keep"), tc.resp, tc.q, 1232, true)
			if !errors.Is(err, tc.want) {
				t.Errorf("err %v, want %v", err, tc.want)
			}
			if string(out) != "keep" {
				t.Errorf("dst changed to %q", out)
			}
		})
	}
}

func TestAppendClientAnswerTrailingBytes(t *testing.T) {
	const name = "www.example.org."
	_, q := ednsClient(t, name, nil)
	resp := append(ednsUpstream(t, name, 0, false, nil), 0xde, 0xad)
	out, err := AppendClientAnswer(nil, resp, q, 1232, false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out[2:], resp[2:len(resp)-2]) {
		t.Errorf("trailing bytes kept or answer changed:\n% x\n% x", out, resp)
	}
}

func TestEDNSAllocs(t *testing.T) {
	const name = "www.example.org."
	msg, q := ednsClient(t, name, func(m *dns.Msg) { m.SetEdns0(1232, true) })
	resp := ednsUpstream(t, name, 0, true, nil)
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { AppendUpstreamQuery(buf[:0], msg, q, 1) }); n != 0 {
		t.Errorf("AppendUpstreamQuery: %v allocs", n)
	}
	if n := testing.AllocsPerRun(100, func() { AppendClientAnswer(buf[:0], resp, q, 1232, false) }); n != 0 {
		t.Errorf("AppendClientAnswer: %v allocs", n)
	}
}

// FuzzAppendClientAnswer feeds arbitrary answers to clients with and
// without EDNS: no panic, and whatever is produced is an answer to the
// client's question with the client's ID, the right OPT record and the
// upstream's rcode (or SERVFAIL for a plain client when it needs EDNS).
func FuzzAppendClientAnswer(f *testing.F) {
	const name = "www.example.org."
	f.Add(ednsUpstream(f, name, 0, true, nil), false, true)
	f.Add(ednsUpstream(f, name, dns.RcodeBadCookie, true, nil), false, false)
	f.Add(ednsUpstream(f, name, dns.RcodeNameError, false, nil), true, true)
	f.Add(ednsUpstream(f, name, 0, true, func(m *dns.Msg) {
		m.Extra = append(m.Extra, &dns.A{Hdr: dns.RR_Header{Name: "glue.example.net.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.53")})
	}), true, false)
	_, plain := ednsClient(f, name, nil)
	_, edns := ednsClient(f, name, func(m *dns.Msg) { m.SetEdns0(1232, true) })
	f.Fuzz(func(t *testing.T, resp []byte, clientEDNS, trustAD bool) {
		q := plain
		if clientEDNS {
			q = edns
		}
		out, err := AppendClientAnswer(nil, resp, q, 1400, trustAD)
		if err != nil {
			if len(out) != 0 {
				t.Fatalf("error %v with output", err)
			}
			return
		}
		var back Query
		back.Name, back.Type, back.Class = q.Name, q.Type, q.Class
		l, err := walkAnswer(out, &back)
		if err != nil {
			t.Fatalf("output does not walk: %v\n% x", err, out)
		}
		if ID(out) != q.ID {
			t.Fatalf("ID %#x", ID(out))
		}
		hasOPT := l.optEnd > l.optStart
		if hasOPT != clientEDNS || l.optEnd != len(out) {
			t.Fatalf("OPT [%d:%d] of %d for client EDNS %v", l.optStart, l.optEnd, len(out), clientEDNS)
		}
		want, _ := Rcode(resp)
		if !clientEDNS && want > 15 {
			want = dns.RcodeServerFailure
		}
		if got, err := Rcode(out); err != nil || got != want {
			t.Fatalf("rcode %d (%v), want %d", got, err, want)
		}
	})
}

func BenchmarkAppendClientAnswer(b *testing.B) {
	const name = "www.example.org."
	_, q := ednsClient(b, name, func(m *dns.Msg) { m.SetEdns0(1232, true) })
	resp := ednsUpstream(b, name, 0, true, nil)
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendClientAnswer(buf[:0], resp, q, 1232, false)
	}
}

// TestCookiesNotPassed: the daemon implements no DNS cookies (RFC 7873):
// a client's COOKIE option (client and server cookie) never goes upstream,
// and no COOKIE goes back to the client, not even the upstream's own.
func TestCookiesNotPassed(t *testing.T) {
	const name = "www.example.org."
	withCookie := func(m *dns.Msg) {
		m.SetEdns0(1232, false)
		opt := m.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708" + "1112131415161718191a1b1c1d1e1f20"})
	}
	msg, q := ednsClient(t, name, withCookie)
	up := ednsUnpack(t, AppendUpstreamQuery(nil, msg, q, 1))
	if opt := up.IsEdns0(); opt == nil || len(opt.Option) != 0 {
		t.Errorf("upstream query OPT %v", opt)
	}
	resp := ednsUpstream(t, name, 0, true, func(m *dns.Msg) {
		opt := m.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708" + "2122232425262728"})
	})
	out, err := AppendClientAnswer(nil, resp, q, 1232, false)
	if err != nil {
		t.Fatal(err)
	}
	for what, b := range map[string][]byte{"answer": out, "error": AppendError(nil, msg, q, dns.RcodeServerFailure)} {
		if opt := ednsUnpack(t, b).IsEdns0(); opt == nil || len(opt.Option) != 0 {
			t.Errorf("%s to the client: OPT %v", what, opt)
		}
	}
}
