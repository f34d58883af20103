package control

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestFormatStatus(t *testing.T) {
	s := sampleStatus()
	now := s.Started.Add(3*time.Hour + 25*time.Second)
	var buf bytes.Buffer
	formatStatus(&buf, s, now)
	got := buf.String()
	want := `ovs-dns-forwarder 1.2.3 on bridge br-int, up 3h0m25s (since 2025-03-01T10:00:00Z)

OpenFlow
  connected        yes  unix:/var/run/openvswitch/br-int.mgmt
  flows            12
  meters           9
  ports            10
  reconnects       2
  flow reinstalls  1

Upstreams
  SERVER             STATE  FAILURES  AVG RTT  LAST ERROR
  192.0.2.1:53       up     0         1.5 ms   -
  [2001:db8::53]:53  down   7         -        read udp: i/o timeout

Cache
  entries    420
  hits       300  75.0% of lookups
  misses     100
  evictions  5

Inventory (OVSDB)
  connected  yes
  VM ports   8
  networks   2

Records (Neutron)
  last sync    2025-03-01T12:00:00Z (1h0m25s ago)
  sync errors  1
  NETWORK  PORTS  NAMES
  net-a    5      10
  net-b    3      6

Counters
  answered      1000
  rate_limited  4
  spoofed_mac   1

Recent errors
  2025-03-01T11:00:00Z  WARN  (x3)  upstream server down, probing it server=[2001:db8::53]:53
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestFormatStatusEmpty(t *testing.T) {
	var buf bytes.Buffer
	formatStatus(&buf, Status{}, time.Now())
	got := buf.String()
	for _, line := range []string{
		"ovs-dns-forwarder - on bridge -, up - (since -)",
		"  connected        no",
		"Upstreams\n  none",
		"Cache\n  off",
		"Records (Neutron)\n  off (no Neutron API configured)",
		"Counters\n  none",
		"Recent errors\n  none",
	} {
		if !strings.Contains(got, line) {
			t.Errorf("output lacks %q:\n%s", line, got)
		}
	}
}

func TestFormatStatusNeverSynced(t *testing.T) {
	var buf bytes.Buffer
	formatStatus(&buf, Status{Records: &RecordsStatus{}, Cache: &CacheStatus{}}, time.Now())
	got := buf.String()
	if !strings.Contains(got, "last sync    never") || strings.Contains(got, "NETWORK") || strings.Contains(got, "% of lookups") {
		t.Errorf("output:\n%s", got)
	}
}

func TestFormatStatusKeepsColumns(t *testing.T) {
	s := Status{
		Upstreams:    []UpstreamStatus{{Server: "192.0.2.1:53", LastError: "line one\nline\ttwo"}},
		RecentErrors: []ErrorEntry{{Level: "ERROR", Message: "a\nb", Count: 1}},
	}
	var buf bytes.Buffer
	formatStatus(&buf, s, time.Now())
	got := buf.String()
	if !strings.Contains(got, "line one line two") || !strings.Contains(got, "ERROR") || strings.Contains(got, "a\nb") {
		t.Errorf("output:\n%s", got)
	}
}

func TestFormatStatusPublic(t *testing.T) {
	var buf bytes.Buffer
	FormatStatus(&buf, Status{Version: "dev", Started: time.Now().Add(-time.Minute)})
	if !strings.Contains(buf.String(), "up 1m0s") {
		t.Errorf("output:\n%s", buf.String())
	}
}
