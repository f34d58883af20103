package dnswire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/dns"
)

// ttlAnswer returns an answer to name/qtype with rcode and the records
// given in presentation format, in the answer, authority and additional
// sections.
func ttlAnswer(t testing.TB, qtype uint16, rcode int, an, ns, ar []string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("www.example.com.", qtype)
	m.Response = true
	m.Rcode = rcode
	parse := func(rrs []string) []dns.RR {
		var out []dns.RR
		for _, s := range rrs {
			rr, err := dns.NewRR(s)
			if err != nil {
				t.Fatalf("NewRR(%q): %v", s, err)
			}
			out = append(out, rr)
		}
		return out
	}
	m.Answer, m.Ns, m.Extra = parse(an), parse(ns), parse(ar)
	return m
}

func ttlSOARR(ttl, minimum int) string {
	return fmt.Sprintf("example.com. %d IN SOA ns1.example.com. hostmaster.example.com. 1 7200 3600 1209600 %d", ttl, minimum)
}

func TestMinTTL(t *testing.T) {
	a := func(ttl string) string { return "www.example.com. " + ttl + " IN A 192.0.2.1" }
	withOPT := ttlAnswer(t, dns.TypeA, dns.RcodeSuccess, []string{a("300"), a("100")}, nil, nil)
	withOPT.SetEdns0(1232, true)
	compressed := ttlAnswer(t, dns.TypeA, dns.RcodeNameError, nil, []string{ttlSOARR(3600, 120)}, nil)
	compressed.Compress = true
	badvers := ttlAnswer(t, dns.TypeA, dns.RcodeBadVers, []string{a("300")}, nil, nil)
	badvers.SetEdns0(1232, false)
	badvers.Rcode = dns.RcodeBadVers
	truncated := ttlAnswer(t, dns.TypeA, dns.RcodeSuccess, []string{a("300")}, nil, nil)
	truncated.Truncated = true

	tests := []struct {
		name     string
		m        *dns.Msg
		ttl      uint32
		negative bool
		err      error
	}{
		{"positive least ttl", ttlAnswer(t, dns.TypeA, 0, []string{a("300"), a("100")}, nil, nil), 100, false, nil},
		{"opt ignored", withOPT, 100, false, nil},
		{"additional counts", ttlAnswer(t, dns.TypeA, 0, []string{a("300")}, nil,
			[]string{"ns1.example.com. 50 IN A 192.0.2.53"}), 50, false, nil},
		{"msb set is zero", ttlAnswer(t, dns.TypeA, 0, []string{a("2147483648"), a("100")}, nil, nil), 0, false, nil},
		{"nxdomain minimum", ttlAnswer(t, dns.TypeA, dns.RcodeNameError, nil, []string{ttlSOARR(3600, 300)}, nil), 300, true, nil},
		{"nxdomain soa ttl", ttlAnswer(t, dns.TypeA, dns.RcodeNameError, nil, []string{ttlSOARR(60, 300)}, nil), 60, true, nil},
		{"nxdomain compressed soa", compressed, 120, true, nil},
		{"nodata", ttlAnswer(t, dns.TypeAAAA, 0, nil, []string{ttlSOARR(900, 600)}, nil), 600, true, nil},
		{"nodata after cname", ttlAnswer(t, dns.TypeAAAA, 0, []string{"www.example.com. 30 IN CNAME web.example.com."},
			[]string{ttlSOARR(900, 600)}, nil), 30, true, nil},
		{"cname chain positive", ttlAnswer(t, dns.TypeA, 0, []string{"www.example.com. 30 IN CNAME web.example.com.",
			"web.example.com. 20 IN A 192.0.2.2"}, nil, nil), 20, false, nil},
		{"any", ttlAnswer(t, dns.TypeANY, 0, []string{"www.example.com. 70 IN TXT \"x\""}, nil, nil), 70, false, nil},
		{"nxdomain without soa", ttlAnswer(t, dns.TypeA, dns.RcodeNameError, nil, nil, nil), 0, true, ErrNoSOA},
		{"referral without soa", ttlAnswer(t, dns.TypeA, 0, nil, []string{"example.com. 300 IN NS ns1.example.com."}, nil),
			0, true, ErrNoSOA},
		{"servfail", ttlAnswer(t, dns.TypeA, dns.RcodeServerFailure, nil, nil, nil), 0, false, ErrUncacheable},
		{"refused", ttlAnswer(t, dns.TypeA, dns.RcodeRefused, nil, nil, nil), 0, false, ErrUncacheable},
		{"extended rcode", badvers, 0, false, ErrUncacheable},
		{"truncated", truncated, 0, false, ErrUncacheable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := pack(t, tt.m)
			ttl, negative, err := MinTTL(msg)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err == nil && (ttl != tt.ttl || negative != tt.negative) {
				t.Errorf("MinTTL = %d, %v; want %d, %v", ttl, negative, tt.ttl, tt.negative)
			}
		})
	}
}

func TestMinTTLMalformed(t *testing.T) {
	m := ttlAnswer(t, dns.TypeA, dns.RcodeNameError, nil, []string{ttlSOARR(3600, 300)}, nil)
	msg := pack(t, m)
	if _, _, err := MinTTL(msg[:5]); !errors.Is(err, ErrHeader) {
		t.Errorf("short: err = %v, want ErrHeader", err)
	}
	for n := headerLen; n < len(msg); n++ {
		if _, _, err := MinTTL(msg[:n]); !errors.Is(err, ErrMalformed) {
			t.Errorf("cut at %d: err = %v, want ErrMalformed", n, err)
		}
	}
	query := pack(t, newQuery("example.com.", dns.TypeA))
	if _, _, err := MinTTL(query); !errors.Is(err, ErrUncacheable) {
		t.Errorf("query: err = %v, want ErrUncacheable", err)
	}
	// An SOA whose RDATA is one byte short of its fixed fields.
	bad := pack(t, m)
	off, err := AppendTTLOffsets(nil, bad)
	if err != nil || len(off) != 1 {
		t.Fatalf("AppendTTLOffsets = %v, %v", off, err)
	}
	rdlen := int(off[0]) + 4
	binary.BigEndian.PutUint16(bad[rdlen:], binary.BigEndian.Uint16(bad[rdlen:])-1)
	if _, _, err := MinTTL(bad[:len(bad)-1]); !errors.Is(err, ErrMalformed) {
		t.Errorf("short SOA: err = %v, want ErrMalformed", err)
	}
}

// ttlsOf returns the TTLs of m's records except OPT and TSIG, in order.
func ttlsOf(m *dns.Msg) []uint32 {
	var out []uint32
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if t := rr.Header().Rrtype; t != dns.TypeOPT && t != dns.TypeTSIG {
				out = append(out, rr.Header().Ttl)
			}
		}
	}
	return out
}

func TestAppendTTLOffsets(t *testing.T) {
	m := ttlAnswer(t, dns.TypeA, 0,
		[]string{"www.example.com. 11 IN CNAME web.example.com.", "web.example.com. 12 IN A 192.0.2.2"},
		[]string{"example.com. 13 IN NS ns1.example.com."},
		[]string{"ns1.example.com. 14 IN A 192.0.2.53", "ns1.example.com. 15 IN AAAA 2001:db8::53"})
	m.SetEdns0(1232, true)
	m.Extra = append(m.Extra, &dns.TSIG{
		Hdr:       dns.RR_Header{Name: "key.example.com.", Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm: dns.HmacSHA256, MACSize: 4, MAC: "01020304", OrigId: 1, TimeSigned: 1, Fudge: 300,
	})
	m.Compress = true
	msg := pack(t, m)
	offs, err := AppendTTLOffsets(make([]uint16, 1, 8), msg)
	if err != nil {
		t.Fatal(err)
	}
	if offs[0] != 0 {
		t.Fatalf("dst prefix overwritten: %v", offs)
	}
	offs = offs[1:]
	want := []uint32{11, 12, 13, 14, 15}
	if len(offs) != len(want) {
		t.Fatalf("got %d offsets, want %d", len(offs), len(want))
	}
	for i, o := range offs {
		if got := binary.BigEndian.Uint32(msg[o:]); got != want[i] {
			t.Errorf("offset %d: TTL %d, want %d", i, got, want[i])
		}
		binary.BigEndian.PutUint32(msg[o:], 42)
	}
	var back dns.Msg
	if err := back.Unpack(msg); err != nil {
		t.Fatalf("Unpack after rewrite: %v", err)
	}
	for _, ttl := range ttlsOf(&back) {
		if ttl != 42 {
			t.Errorf("TTL %d after rewrite, want 42", ttl)
		}
	}
	if opt := back.IsEdns0(); opt == nil || !opt.Do() || opt.UDPSize() != 1232 {
		t.Errorf("OPT changed: %v", opt)
	}
	if back.IsTsig() == nil {
		t.Error("TSIG lost")
	}
	if _, err := AppendTTLOffsets(nil, msg[:len(msg)-1]); !errors.Is(err, ErrMalformed) {
		t.Errorf("cut: err = %v, want ErrMalformed", err)
	}
	if _, err := AppendTTLOffsets(nil, msg[:3]); !errors.Is(err, ErrHeader) {
		t.Errorf("short: err = %v, want ErrHeader", err)
	}
}

func TestTTLZeroAlloc(t *testing.T) {
	m := ttlAnswer(t, dns.TypeA, dns.RcodeNameError, nil, []string{ttlSOARR(3600, 300)}, nil)
	m.SetEdns0(1232, true)
	msg := pack(t, m)
	offs := make([]uint16, 0, 8)
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := MinTTL(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := AppendTTLOffsets(offs[:0], msg); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run, want 0", allocs)
	}
}

func FuzzTTL(f *testing.F) {
	seeds := []*dns.Msg{
		ttlAnswer(f, dns.TypeA, 0, []string{"www.example.com. 300 IN A 192.0.2.1"}, nil,
			[]string{"ns1.example.com. 14 IN A 192.0.2.53"}),
		ttlAnswer(f, dns.TypeA, dns.RcodeNameError, nil, []string{ttlSOARR(3600, 300)}, nil),
		ttlAnswer(f, dns.TypeAAAA, 0, []string{"www.example.com. 30 IN CNAME web.example.com."},
			[]string{ttlSOARR(900, 600)}, nil),
	}
	for i, m := range seeds {
		if i%2 == 0 {
			m.SetEdns0(1232, true)
		}
		m.Compress = i == 1
		f.Add(pack(f, m))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		ttl, negative, err := MinTTL(msg)
		if err == nil && ttl > maxTTL {
			t.Fatalf("MinTTL = %d (negative %v) beyond the largest TTL", ttl, negative)
		}
		offs, err := AppendTTLOffsets(nil, msg)
		if err != nil {
			if len(offs) != 0 {
				t.Fatalf("offsets %v returned with error %v", offs, err)
			}
			return
		}
		for _, o := range offs {
			if int(o)+4 > len(msg) || int(o) < headerLen {
				t.Fatalf("offset %d outside a %d-byte message", o, len(msg))
			}
		}
		var m dns.Msg
		if m.Unpack(msg) != nil {
			return
		}
		want := ttlsOf(&m)
		if len(want) != len(offs) {
			t.Fatalf("%d offsets, miekg/dns finds %d records", len(offs), len(want))
		}
		for i, o := range offs {
			if got := binary.BigEndian.Uint32(msg[o:]); got != want[i] {
				t.Fatalf("record %d: TTL %d at offset %d, miekg/dns says %d", i, got, o, want[i])
			}
		}
	})
}
