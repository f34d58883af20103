package records

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeNeutron serves GET /v2.0/ports and GET /v2.0/subnets from a port
// and a subnet list, records every request, and optionally paginates or
// fails; with keystone set it also serves POST /v3/auth/tokens.
type fakeNeutron struct {
	t        *testing.T
	srv      *httptest.Server
	prefix   string // path before /v2.0 ("" or e.g. "/networking")
	pageSize int    // >0: paginate with ports_links
	keystone bool
	token    string

	mu            sync.Mutex
	ports         []map[string]any
	subnets       []map[string]any
	fail          bool
	failSubnets   bool
	queries       []url.Values // of the ports requests
	subnetQueries []url.Values
	tokens        []string // X-Auth-Token of each ports request
	authBody      []map[string]any
	listed        chan struct{} // receives after each ports request
}

func newFakeNeutron(t *testing.T) *fakeNeutron {
	f := &fakeNeutron{t: t, token: "tok-123", listed: make(chan struct{}, 100)}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeNeutron) setPorts(p ...map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ports = p
}

func (f *fakeNeutron) setFail(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = v
}

func (f *fakeNeutron) requests() []url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.queries)
}

func (f *fakeNeutron) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case f.keystone && r.Method == http.MethodPost && r.URL.Path == "/v3/auth/tokens":
		f.serveToken(w, r)
	case r.Method == http.MethodGet && r.URL.Path == f.prefix+"/v2.0/ports":
		f.serveList(w, r, "ports")
	case r.Method == http.MethodGet && r.URL.Path == f.prefix+"/v2.0/subnets":
		f.serveList(w, r, "subnets")
	default:
		http.Error(w, "not found: "+r.Method+" "+r.URL.Path, http.StatusNotFound)
	}
}

func (f *fakeNeutron) serveToken(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.authBody = append(f.authBody, body)
	f.mu.Unlock()
	ep := func(iface, region, u string) map[string]any {
		return map[string]any{"id": iface + region, "interface": iface, "region": region, "region_id": region, "url": u}
	}
	good := f.srv.URL + f.prefix + "/v2.0/"
	resp := map[string]any{"token": map[string]any{
		"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		"catalog": []any{
			map[string]any{"type": "identity", "name": "keystone", "endpoints": []any{ep("internal", "RegionOne", f.srv.URL+"/v3")}},
			map[string]any{"type": "network", "name": "neutron", "endpoints": []any{
				ep("public", "RegionOne", "http://192.0.2.1:9696"),
				ep("internal", "RegionTwo", "http://192.0.2.2:9696"),
				ep("internal", "RegionOne", good),
			}},
		},
	}}
	w.Header().Set("X-Subject-Token", f.token)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(resp)
}

// serveList serves the ports or the subnets (key) of the network_id
// parameters.
func (f *fakeNeutron) serveList(w http.ResponseWriter, r *http.Request, key string) {
	q := r.URL.Query()
	f.mu.Lock()
	fail := f.fail
	all := f.ports
	if key == "subnets" {
		f.subnetQueries = append(f.subnetQueries, q)
		fail = fail || f.failSubnets
		all = f.subnets
	} else {
		f.queries = append(f.queries, q)
		f.tokens = append(f.tokens, r.Header.Get("X-Auth-Token"))
		defer func() {
			select {
			case f.listed <- struct{}{}:
			default:
			}
		}()
	}
	f.mu.Unlock()
	if fail {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	var out []map[string]any
	for _, p := range all {
		if slices.Contains(q["network_id"], p["network_id"].(string)) {
			out = append(out, p)
		}
	}
	resp := map[string]any{}
	if f.pageSize > 0 {
		start := 0
		if m := q.Get("marker"); m != "" {
			for i, p := range out {
				if p["id"] == m {
					start = i + 1
				}
			}
		}
		end := min(start+f.pageSize, len(out))
		if end < len(out) {
			next := url.Values{}
			for k, v := range q {
				next[k] = v
			}
			next.Set("marker", out[end-1]["id"].(string))
			next.Set("limit", strconv.Itoa(f.pageSize))
			resp[key+"_links"] = []any{map[string]any{"rel": "next", "href": f.srv.URL + r.URL.Path + "?" + next.Encode()}}
		}
		out = out[start:end]
	}
	if out == nil {
		out = []map[string]any{}
	}
	resp[key] = out
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// port returns a port as Neutron lists it; with assign it has a
// dns_assignment computed as Neutron does for dns_name and domain.
func port(id, network, dnsName, domain string, assign bool, ips ...string) map[string]any {
	p := map[string]any{"id": id, "network_id": network, "mac_address": "fa:16:3e:00:00:01", "dns_name": dnsName}
	fixed := []any{}
	var as []any
	for _, ip := range ips {
		fixed = append(fixed, map[string]any{"subnet_id": "s", "ip_address": ip})
		host := dnsName
		if host == "" {
			host = "host-" + strings.NewReplacer(".", "-", ":", "-").Replace(ip)
		}
		as = append(as, map[string]any{"ip_address": ip, "hostname": host, "fqdn": host + "." + domain})
	}
	p["fixed_ips"] = fixed
	if assign {
		if as == nil {
			as = []any{}
		}
		p["dns_assignment"] = as
	}
	return p
}

func wire(t testing.TB, s string) []byte {
	t.Helper()
	w, err := wireName(s)
	if err != nil {
		t.Fatalf("wireName(%q): %v", s, err)
	}
	return []byte(w)
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func newStore(t *testing.T, f *fakeNeutron, mod func(*Config)) *Store {
	t.Helper()
	cfg := Config{
		Auth:       AuthOptions{AuthType: AuthNoAuth, EndpointOverride: f.srv.URL + f.prefix},
		Domain:     "cloud.example.",
		HTTPClient: f.srv.Client(),
		Logger:     slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const (
	netA = "aaaaaaaa-0000-0000-0000-000000000001"
	netB = "bbbbbbbb-0000-0000-0000-000000000002"
)

func TestBuildRecords(t *testing.T) {
	const dom = "cloud.example."
	f := newFakeNeutron(t)
	f.setPorts(
		port("p1", netA, "web", dom, true, "10.0.0.5"),
		port("p2", netA, "", dom, true, "10.0.0.6"),
		port("p3", netA, "multi", dom, true, "10.0.0.7", "10.0.1.7"),
		port("p4", netA, "six", dom, true, "fd00::5"),
		port("p5", netA, "dual", dom, true, "10.0.0.8", "fd00::8"),
		port("p6", netA, "dup", dom, true, "10.0.0.9"),
		port("p7", netA, "Dup", dom, true, "10.0.0.10", "fd00::10"),
		port("p8", netA, "", "", false, "10.0.0.11", "fd00:0:0:0::11"), // older Neutron: no dns_assignment
		port("p9", netA, "MixedCase", dom, true, "10.0.0.12"),
		port("pa", netA, "noip", dom, true),
		port("q1", netB, "web", dom, true, "10.0.0.6"),
	)
	s := newStore(t, f, nil)
	if err := s.sync(t.Context(), []string{netA, netB}); err != nil {
		t.Fatal(err)
	}
	a := s.Network(netA)
	if a == nil || s.Network(netB) == nil || s.Network("other") != nil {
		t.Fatalf("networks: %v %v %v", a, s.Network(netB), s.Network("other"))
	}
	for _, tc := range []struct {
		name string
		want []netip.Addr
		ok   bool
	}{
		{"web.cloud.example.", addrs("10.0.0.5"), true},
		{"WEB.Cloud.Example", addrs("10.0.0.5"), true},
		{"web.", addrs("10.0.0.5"), true},
		{"host-10-0-0-6.cloud.example.", addrs("10.0.0.6"), true},
		{"host-10-0-0-6.", addrs("10.0.0.6"), true},
		{"multi.cloud.example.", addrs("10.0.0.7", "10.0.1.7"), true},
		{"six.cloud.example.", addrs("fd00::5"), true},
		{"six.", addrs("fd00::5"), true},
		{"dual.cloud.example.", addrs("10.0.0.8", "fd00::8"), true},
		{"dup.cloud.example.", addrs("10.0.0.9", "10.0.0.10", "fd00::10"), true},
		{"dup.", addrs("10.0.0.9", "10.0.0.10", "fd00::10"), true},
		{"host-10-0-0-11.cloud.example.", addrs("10.0.0.11"), true},
		{"host-fd00--11.cloud.example.", addrs("fd00::11"), true},
		{"host-fd00--11.", addrs("fd00::11"), true},
		{"mixedcase.cloud.example.", addrs("10.0.0.12"), true},
		{"noip.cloud.example.", nil, false},
		{"cloud.example.", nil, true}, // the domain: an empty non-terminal
		{"example.", nil, false},
		{"nope.cloud.example.", nil, false},
		{"web.cloud.example.org.", nil, false},
	} {
		got, ok := a.Lookup(wire(t, tc.name))
		if ok != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("Lookup(%s) = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
		if a.Has(wire(t, tc.name)) != tc.ok {
			t.Errorf("Has(%s) != %v", tc.name, tc.ok)
		}
	}
	for _, tc := range []struct{ addr, want string }{
		{"10.0.0.5", "web.cloud.example."},
		{"10.0.0.6", "host-10-0-0-6.cloud.example."},
		{"10.0.1.7", "multi.cloud.example."},
		{"fd00::5", "six.cloud.example."},
		{"fd00::11", "host-fd00--11.cloud.example."},
		{"10.0.0.10", "dup.cloud.example."},
		{"10.0.0.12", "mixedcase.cloud.example."},
		{"::ffff:10.0.0.5", "web.cloud.example."},
	} {
		got, ok := a.PTR(netip.MustParseAddr(tc.addr))
		if !ok || got != tc.want {
			t.Errorf("PTR(%s) = %q, %v; want %q", tc.addr, got, ok, tc.want)
		}
		w, ok := a.AppendPTR([]byte{1}, netip.MustParseAddr(tc.addr))
		if !ok || !bytes.Equal(w, append([]byte{1}, wire(t, tc.want)...)) {
			t.Errorf("AppendPTR(%s) = %q, %v", tc.addr, w, ok)
		}
	}
	if _, ok := a.PTR(netip.MustParseAddr("10.0.0.99")); ok {
		t.Error("PTR of an unknown address")
	}
	// The other network: same address, other name; no names leak.
	b := s.Network(netB)
	if got, ok := b.PTR(netip.MustParseAddr("10.0.0.6")); !ok || got != "web.cloud.example." {
		t.Errorf("netB PTR = %q, %v", got, ok)
	}
	if b.Has(wire(t, "multi.cloud.example.")) || b.Has(wire(t, "host-10-0-0-6.")) {
		t.Error("netB sees netA's names")
	}
	if a.Ports() != 10 || b.Ports() != 1 || a.ID() != netA || a.Synced().IsZero() {
		t.Errorf("ports %d %d id %s", a.Ports(), b.Ports(), a.ID())
	}
	st := s.Stats()
	if st["syncs"] != 1 || st["networks"] != 2 || st["ports"] != 11 || st["last_sync_unix"] == 0 || st["names"] != uint64(a.Names()+b.Names()) {
		t.Errorf("stats %v", st)
	}
}

func TestBuildSubdomainsAndForeignFQDN(t *testing.T) {
	ports := []apiPort{
		{ID: "1", NetworkID: netA, DNSAssignment: []dnsAssignment{{IPAddress: "10.0.0.1", Hostname: "a", FQDN: "a.sub.cloud.example."}}},
		{ID: "2", NetworkID: netA, DNSAssignment: []dnsAssignment{{IPAddress: "10.0.0.2", Hostname: "b", FQDN: "b.tenant.example."}}},
		{ID: "3", NetworkID: netA, DNSAssignment: []dnsAssignment{{IPAddress: "10.0.0.3", Hostname: "bad..name", FQDN: "bad..name"}}},
		{ID: "4", NetworkID: netA, DNSAssignment: []dnsAssignment{{IPAddress: "not-an-ip", Hostname: "c", FQDN: "c.cloud.example."}}},
	}
	dom, _ := wireName("cloud.example")
	n := build(ports, []string{netA}, dom, time.Now(), slog.New(slog.DiscardHandler))[netA]
	for _, tc := range []struct {
		name string
		want []netip.Addr
		ok   bool
	}{
		{"a.sub.cloud.example.", addrs("10.0.0.1"), true},
		{"sub.cloud.example.", nil, true},
		{"cloud.example.", nil, true},
		{"a.cloud.example.", addrs("10.0.0.1"), true},
		{"a.", addrs("10.0.0.1"), true},
		{"b.tenant.example.", nil, false}, // not under the domain
		{"tenant.example.", nil, false},
		{"b.cloud.example.", addrs("10.0.0.2"), true},
		{"c.cloud.example.", nil, false},
	} {
		got, ok := n.Lookup(wire(t, tc.name))
		if ok != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("Lookup(%s) = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
	if got, _ := n.PTR(netip.MustParseAddr("10.0.0.2")); got != "b.cloud.example." {
		t.Errorf("PTR = %q", got)
	}
	if _, ok := n.PTR(netip.MustParseAddr("10.0.0.3")); ok {
		t.Error("PTR for a bad name")
	}
	if n.Has([]byte{}) || n.Has(make([]byte, 300)) {
		t.Error("Has accepts malformed names")
	}
}

func TestNoDomain(t *testing.T) {
	f := newFakeNeutron(t)
	f.setPorts(port("p1", netA, "", "", false, "10.0.0.5"))
	s := newStore(t, f, func(c *Config) { c.Domain = "" })
	if err := s.sync(t.Context(), []string{netA}); err != nil {
		t.Fatal(err)
	}
	n := s.Network(netA)
	if got, ok := n.Lookup(wire(t, "host-10-0-0-5.")); !ok || !slices.Equal(got, addrs("10.0.0.5")) {
		t.Errorf("Lookup = %v %v", got, ok)
	}
	// No domain: no name to point back to.
	if got, ok := n.PTR(netip.MustParseAddr("10.0.0.5")); ok {
		t.Errorf("PTR = %q", got)
	}
}

func TestQueryParameters(t *testing.T) {
	f := newFakeNeutron(t)
	s := newStore(t, f, nil)
	ids := make([]string, 0, 120)
	for i := range 120 {
		ids = append(ids, "net-"+strconv.Itoa(1000+i))
	}
	// Duplicates and "" are dropped.
	if err := s.sync(t.Context(), append(slices.Clone(ids), ids[3], "")); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	var seen []string
	for i, q := range reqs {
		n := len(q["network_id"])
		if want := []int{50, 50, 20}[i]; n != want {
			t.Errorf("request %d: %d network_id, want %d", i, n, want)
		}
		seen = append(seen, q["network_id"]...)
		if got := q["fields"]; !slices.Equal(got, []string{"id", "network_id", "mac_address", "fixed_ips", "dns_name", "dns_assignment",
			"device_owner", "port_security_enabled", "allowed_address_pairs"}) {
			t.Errorf("fields = %v", got)
		}
		if q.Has("changed_since") {
			t.Error("changed_since sent")
		}
	}
	slices.Sort(seen)
	if !slices.Equal(seen, ids) {
		t.Errorf("network ids asked: %v", seen)
	}
	if s.Stats()["networks"] != 120 {
		t.Errorf("stats %v", s.Stats())
	}
	// No network: no request, no records.
	if err := s.sync(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if len(f.requests()) != 3 || s.Network(ids[0]) != nil {
		t.Error("sync without networks asked Neutron or kept records")
	}
}

func TestPagination(t *testing.T) {
	f := newFakeNeutron(t)
	f.pageSize = 2
	var ps []map[string]any
	for i := range 5 {
		ps = append(ps, port("p"+strconv.Itoa(i), netA, "vm"+strconv.Itoa(i), "cloud.example.", true, "10.0.0."+strconv.Itoa(10+i)))
	}
	f.setPorts(ps...)
	s := newStore(t, f, nil)
	if err := s.sync(t.Context(), []string{netA}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.requests()); n != 3 {
		t.Errorf("%d requests, want 3 pages", n)
	}
	n := s.Network(netA)
	for i := range 5 {
		if !n.Has(wire(t, "vm"+strconv.Itoa(i)+".cloud.example.")) {
			t.Errorf("vm%d missing", i)
		}
	}
}

func TestEndpointOverride(t *testing.T) {
	for _, tc := range []struct{ prefix, suffix string }{
		{"", ""}, {"", "/"}, {"", "/v2.0"}, {"", "/v2.0/"}, {"/networking", ""}, {"/networking", "/v2.0/"},
	} {
		f := newFakeNeutron(t)
		f.prefix = tc.prefix
		f.setPorts(port("p1", netA, "web", "cloud.example.", true, "10.0.0.5"))
		s := newStore(t, f, func(c *Config) { c.Auth.EndpointOverride = f.srv.URL + tc.prefix + tc.suffix })
		if err := s.sync(t.Context(), []string{netA}); err != nil {
			t.Errorf("%q%q: %v", tc.prefix, tc.suffix, err)
			continue
		}
		if !s.Network(netA).Has(wire(t, "web.cloud.example.")) {
			t.Errorf("%q%q: no records", tc.prefix, tc.suffix)
		}
		f.mu.Lock()
		if f.tokens[0] != "" {
			t.Errorf("noauth sent a token %q", f.tokens[0])
		}
		f.mu.Unlock()
	}
}

func TestPasswordAuth(t *testing.T) {
	f := newFakeNeutron(t)
	f.keystone = true
	f.setPorts(port("p1", netA, "web", "cloud.example.", true, "10.0.0.5"))
	for _, authURL := range []string{f.srv.URL + "/v3", f.srv.URL, f.srv.URL + "/v3/"} {
		s := newStore(t, f, func(c *Config) {
			c.Auth = AuthOptions{
				AuthType: AuthPassword, AuthURL: authURL, Username: "neutron", Password: "secret",
				ProjectName: "service", UserDomainName: "UD", ProjectDomainName: "PD", RegionName: "RegionOne",
				ValidInterfaces: []string{"internal", "public"},
			}
		})
		if err := s.sync(t.Context(), []string{netA}); err != nil {
			t.Fatalf("%s: %v", authURL, err)
		}
		if !s.Network(netA).Has(wire(t, "web.")) {
			t.Error("no records")
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, tok := range f.tokens {
		if tok != f.token {
			t.Errorf("X-Auth-Token = %q", tok)
		}
	}
	b, _ := json.Marshal(f.authBody[0])
	for _, want := range []string{`"name":"neutron"`, `"password":"secret"`, `"name":"UD"`, `"name":"service"`, `"name":"PD"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("auth body %s lacks %s", b, want)
		}
	}
}

func TestPasswordAuthNoEndpoint(t *testing.T) {
	f := newFakeNeutron(t)
	f.keystone = true
	s := newStore(t, f, func(c *Config) {
		c.Auth = AuthOptions{AuthType: AuthPassword, AuthURL: f.srv.URL, Username: "u", Password: "p", RegionName: "Nowhere"}
	})
	err := s.sync(t.Context(), []string{netA})
	if err == nil || !strings.Contains(err.Error(), "no network endpoint") {
		t.Errorf("err = %v", err)
	}
	// A password client with endpoint_override skips the catalog.
	s = newStore(t, f, func(c *Config) {
		c.Auth = AuthOptions{AuthType: AuthPassword, AuthURL: f.srv.URL, Username: "u", Password: "p", RegionName: "Nowhere", EndpointOverride: f.srv.URL + "/v2.0"}
	})
	if err := s.sync(t.Context(), []string{netA}); err != nil {
		t.Error(err)
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no auth type", Config{}},
		{"unknown auth type", Config{Auth: AuthOptions{AuthType: "token"}}},
		{"password without url", Config{Auth: AuthOptions{AuthType: AuthPassword, Username: "u"}}},
		{"password without user", Config{Auth: AuthOptions{AuthType: AuthPassword, AuthURL: "http://127.0.0.1:5000"}}},
		{"noauth without endpoint", Config{Auth: AuthOptions{AuthType: AuthNoAuth}}},
		{"bad endpoint", Config{Auth: AuthOptions{AuthType: AuthNoAuth, EndpointOverride: "controller:9696"}}},
		{"bad interface", Config{Auth: AuthOptions{AuthType: AuthNoAuth, EndpointOverride: "http://127.0.0.1:9696", ValidInterfaces: []string{"private"}}}},
		{"bad domain", Config{Auth: AuthOptions{AuthType: AuthNoAuth, EndpointOverride: "http://127.0.0.1:9696"}, Domain: "a..b"}},
		{"missing cafile", Config{Auth: AuthOptions{AuthType: AuthNoAuth, EndpointOverride: "https://127.0.0.1:9696", CAFile: "/nonexistent/ca.pem"}}},
	} {
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if _, err := New(Config{Auth: AuthOptions{AuthType: AuthNoAuth, EndpointOverride: "https://127.0.0.1:9696", Insecure: true, ValidInterfaces: []string{"internalURL", "Public"}}}); err != nil {
		t.Error(err)
	}
}

func TestTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ports":[{"id":"p","network_id":"`+netA+`","fixed_ips":[{"ip_address":"10.0.0.1"}]}]}`)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	// The server's certificate is not trusted by default.
	s, err := New(Config{Auth: AuthOptions{AuthType: AuthNoAuth, EndpointOverride: srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.sync(t.Context(), []string{netA}); err == nil {
		t.Error("untrusted certificate accepted")
	}
	s, err = New(Config{Auth: AuthOptions{AuthType: AuthNoAuth, EndpointOverride: srv.URL, Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.sync(t.Context(), []string{netA}); err != nil {
		t.Error(err)
	}
}

// logRecorder keeps the messages logged at Info and above.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelInfo {
		l.mu.Lock()
		l.msgs = append(l.msgs, r.Level.String()+" "+r.Message)
		l.mu.Unlock()
	}
	return nil
}

func (l *logRecorder) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.msgs)
}

func TestLastGoodRecords(t *testing.T) {
	f := newFakeNeutron(t)
	f.setPorts(port("p1", netA, "web", "cloud.example.", true, "10.0.0.5"))
	rec := &logRecorder{}
	s := newStore(t, f, func(c *Config) { c.Logger = slog.New(rec) })
	if err := s.sync(t.Context(), []string{netA}); err != nil {
		t.Fatal(err)
	}
	f.setFail(true)
	for range 3 {
		if err := s.sync(t.Context(), []string{netA, netB}); err == nil {
			t.Fatal("no error from a failing Neutron")
		}
	}
	if !s.Network(netA).Has(wire(t, "web.")) || s.Network(netB) != nil {
		t.Error("last good records not kept")
	}
	f.setFail(false)
	f.setPorts(port("p1", netA, "renamed", "cloud.example.", true, "10.0.0.5"))
	if err := s.sync(t.Context(), []string{netA}); err != nil {
		t.Fatal(err)
	}
	if s.Network(netA).Has(wire(t, "web.")) || !s.Network(netA).Has(wire(t, "renamed.")) {
		t.Error("records not replaced after recovery")
	}
	logs := rec.get()
	if len(logs) != 2 || !strings.HasPrefix(logs[0], "WARN neutron unreachable, answering from records of ") || logs[1] != "INFO neutron reachable again" {
		t.Errorf("logs %q", logs)
	}
	st := s.Stats()
	if st["syncs"] != 2 || st["sync_errors"] != 3 {
		t.Errorf("stats %v", st)
	}
}

func TestRun(t *testing.T) {
	f := newFakeNeutron(t)
	f.setPorts(port("p1", netA, "web", "cloud.example.", true, "10.0.0.5"), port("p2", netB, "db", "cloud.example.", true, "10.0.0.6"))
	s := newStore(t, f, func(c *Config) { c.ResyncInterval = time.Hour })
	var mu sync.Mutex
	nets := []string{netA}
	networks := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(nets)
	}
	changed := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, networks, changed) }()
	waitFor(t, func() bool { return s.Network(netA) != nil }, "first sync")
	if s.Network(netB) != nil {
		t.Error("netB before it appeared")
	}
	if err := s.Run(ctx, networks, changed); err != ErrRunning {
		t.Errorf("second Run: %v", err)
	}
	mu.Lock()
	nets = append(nets, netB)
	mu.Unlock()
	changed <- struct{}{}
	waitFor(t, func() bool { return s.Network(netB) != nil }, "sync on changed")
	if !s.Network(netB).Has(wire(t, "db.")) {
		t.Error("netB has no names")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestRunRetries(t *testing.T) {
	f := newFakeNeutron(t)
	f.setFail(true)
	f.setPorts(port("p1", netA, "web", "cloud.example.", true, "10.0.0.5"))
	s := newStore(t, f, func(c *Config) { c.ResyncInterval = time.Hour })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, func() []string { return []string{netA} }, nil) }()
	<-f.listed
	f.setFail(false)
	waitFor(t, func() bool { return s.Network(netA) != nil }, "retry after failure")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestResyncInterval(t *testing.T) {
	f := newFakeNeutron(t)
	s := newStore(t, f, func(c *Config) { c.ResyncInterval = 20 * time.Millisecond })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, func() []string { return []string{netA} }, nil) }()
	waitFor(t, func() bool { return s.Stats()["syncs"] >= 3 }, "periodic resync")
	cancel()
	<-done
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLookupAllocs(t *testing.T) {
	f := newFakeNeutron(t)
	f.setPorts(port("p1", netA, "web", "cloud.example.", true, "10.0.0.5"))
	s := newStore(t, f, nil)
	if err := s.sync(t.Context(), []string{netA}); err != nil {
		t.Fatal(err)
	}
	name := wire(t, "WEB.cloud.example.")
	addr := netip.MustParseAddr("10.0.0.5")
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(100, func() {
		n := s.Network(netA)
		if _, ok := n.Lookup(name); !ok {
			t.Fatal("miss")
		}
		if _, ok := n.AppendPTR(buf[:0], addr); !ok {
			t.Fatal("miss")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations", allocs)
	}
}

func TestWireName(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"", "\x00", true},
		{".", "\x00", true},
		{"A.b", "\x01a\x01b\x00", true},
		{"a.b.", "\x01a\x01b\x00", true},
		{"a..b", "", false},
		{strings.Repeat("x", 64), "", false},
		{strings.Repeat(strings.Repeat("x", 63)+".", 4), "", false},
	} {
		got, err := wireName(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("wireName(%q) = %q, %v", tc.in, got, err)
		}
		if tc.ok && presentation(got) != strings.TrimSuffix(strings.ToLower(tc.in), ".")+"." && tc.in != "" && tc.in != "." {
			t.Errorf("presentation(%q) = %q", got, presentation(got))
		}
	}
	if presentation("\x00") != "." {
		t.Error("root")
	}
}

func TestNewNetwork(t *testing.T) {
	if _, err := NewNetwork("n", "a..b", time.Now(), nil); err == nil {
		t.Error("bad domain accepted")
	}
	es := []Entry{
		{Port: "p2", Addr: netip.MustParseAddr("10.0.0.2"), Hostname: "b", FQDN: "b.cloud.example."},
		{Port: "p1"}, // a port without an address
		{Port: "p1", Addr: netip.MustParseAddr("10.0.0.2"), Hostname: "a"},
	}
	n, err := NewNetwork("n", "Cloud.Example", time.Unix(5, 0), es)
	if err != nil {
		t.Fatal(err)
	}
	if n.Ports() != 2 || n.Names() != 4 || n.ID() != "n" || n.Synced().Unix() != 5 {
		t.Errorf("ports %d names %d", n.Ports(), n.Names())
	}
	// p1 sorts first and owns the PTR; its fqdn defaults to a.<domain>.
	if got, _ := n.PTR(netip.MustParseAddr("10.0.0.2")); got != "a.cloud.example." {
		t.Errorf("PTR = %q", got)
	}
	if es[0].Port != "p2" {
		t.Error("NewNetwork reordered the caller's entries")
	}
	var none *Network
	if _, ok := none.Lookup(wire(t, "a.")); ok || none.Has(wire(t, "a.")) || none.ID() != "" || none.Ports() != 0 || none.Names() != 0 || !none.Synced().IsZero() {
		t.Error("nil network has records")
	}
	if _, ok := none.PTR(netip.MustParseAddr("10.0.0.2")); ok {
		t.Error("nil network has a PTR")
	}
	if b, ok := none.AppendPTR(nil, netip.MustParseAddr("10.0.0.2")); ok || b != nil {
		t.Error("nil network appends a PTR")
	}
}
