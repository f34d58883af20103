package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fetch gets a URL from inside the lab's namespace (where the daemon's
// loopback listener is) and returns the status code and body.
func (e *env) fetch(url string) (int, string) {
	e.t.Helper()
	script := `import sys,urllib.request,urllib.error
try:
    r=urllib.request.urlopen(sys.argv[1],timeout=5); print(r.status); print(r.read().decode())
except urllib.error.HTTPError as err:
    print(err.code); print(err.read().decode())`
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := e.lab.Command(ctx, "python3", "-c", script, url).CombinedOutput()
	if err != nil {
		e.t.Fatalf("fetch %s: %v\n%s", url, err, out)
	}
	code, body, _ := strings.Cut(string(out), "\n")
	var n int
	for _, c := range code {
		n = n*10 + int(c-'0')
	}
	return n, body
}

// cli runs the daemon binary's status or flush-cache with cfg.
func (e *env) cli(cfg string, args ...string) string {
	e.t.Helper()
	path := e.lab.Dir + "/cli.conf"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		e.t.Fatal(err)
	}
	out, err := exec.Command(daemonBinary, append(args, "--config-file", path)...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestOperations: metrics, health, status, flush-cache, the query log and
// a SIGHUP reload on a running daemon.
func TestOperations(t *testing.T) {
	e := newEnv(t, 1)
	dead := e.startFake(nil)
	cfg := e.config([]string{e.upstream()})
	p := e.startDaemon(cfg)
	vm := e.vms[0]
	e.dig(vm, "@169.254.169.254", "www.example.test", "A")
	e.dig(vm, "@169.254.169.254", "www.example.test", "A")

	t.Run("health", func(t *testing.T) {
		if code, body := e.fetch("http://127.0.0.1:9553/healthz"); code != 200 {
			t.Errorf("healthz: %d %s", code, body)
		}
		if code, body := e.fetch("http://127.0.0.1:9553/readyz"); code != 200 {
			t.Errorf("readyz: %d %s", code, body)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		code, body := e.fetch("http://127.0.0.1:9553/metrics")
		if code != 200 {
			t.Fatalf("metrics: %d", code)
		}
		for _, want := range []string{
			`ovs_dns_forwarder_queries_total{qtype="A",rcode="NOERROR",source="upstream"} 1`,
			`ovs_dns_forwarder_queries_total{qtype="A",rcode="NOERROR",source="cache"} 1`,
			`ovs_dns_forwarder_cache_hits_total 1`,
			`ovs_dns_forwarder_openflow_connected 1`,
			`ovs_dns_forwarder_upstream_up{server="` + e.upstream() + `"} 1`,
			`ovs_dns_forwarder_drops_total{reason="spoofed_mac"} 0`,
			`ovs_dns_forwarder_upstream_exchange_duration_seconds_count{server="` + e.upstream() + `"} 1`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %q", want)
			}
		}
	})
	t.Run("status", func(t *testing.T) {
		out := e.cli(cfg, "status", "--json")
		var s struct {
			OpenFlow struct {
				Connected bool `json:"connected"`
				Flows     int  `json:"flows"`
			} `json:"openflow"`
			Cache *struct {
				Entries int `json:"entries"`
			} `json:"cache"`
			Inventory struct {
				VMPorts int `json:"vm_ports"`
			} `json:"inventory"`
		}
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		if !s.OpenFlow.Connected || s.OpenFlow.Flows != e.wantFlows() || s.Cache == nil || s.Cache.Entries != 1 || s.Inventory.VMPorts != 1 {
			t.Errorf("status: %+v\n%s", s, out)
		}
		if text := e.cli(cfg, "status"); !strings.Contains(text, e.upstream()) {
			t.Errorf("status text lacks the upstream:\n%s", text)
		}
		if out := e.cli(cfg, "flush-cache"); !strings.Contains(out, `"flushed": 1`) {
			t.Errorf("flush-cache: %s", out)
		}
	})
	t.Run("reload", func(t *testing.T) {
		// New upstreams (a dead one first) and the query log on: both in
		// place; a new flow_table needs a restart.
		next := e.config([]string{dead.String(), e.upstream()}, "query_log = true", "flow_table = 61")
		if err := os.WriteFile(e.lab.Dir+"/ovs-dns-forwarder.conf", []byte(next), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		var log []byte
		for !strings.Contains(string(log), "configuration reloaded") {
			if time.Now().After(deadline) {
				t.Fatalf("no reload logged:\n%s", log)
			}
			time.Sleep(50 * time.Millisecond)
			log, _ = os.ReadFile(p.LogPath)
		}
		line := string(log[strings.Index(string(log), "configuration reloaded"):])
		line, _, _ = strings.Cut(line, "\n")
		if !strings.Contains(line, "UpstreamServers") || !strings.Contains(line, "QueryLog") || !strings.Contains(line, "needs_restart=[FlowTable]") {
			t.Errorf("reload line: %s", line)
		}
		// The dead upstream is tried first now, then marked down when
		// its check probe fails too; the query log shows the query.
		e.dig(vm, "@169.254.169.254", "nope.example.test", "A", "+time=4")
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			code, body := e.fetch("http://127.0.0.1:9553/metrics")
			if code == 200 && strings.Contains(body, `ovs_dns_forwarder_upstream_up{server="`+dead.String()+`"} 0`) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("the new upstream set is not in force:\n%s", body)
				break
			}
		}
		log, _ = os.ReadFile(p.LogPath)
		if !strings.Contains(string(log), `msg=query`) || !strings.Contains(string(log), `name=nope.example.test.`) {
			t.Errorf("no query log line:\n%s", log)
		}
	})
}
