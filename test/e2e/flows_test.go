package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
)

// TestFlowSet: the daemon's flows are as documented.
func TestFlowSet(t *testing.T) {
	e := newEnv(t, 1)
	e.startDaemon(e.config([]string{e.upstream()}))
	flows, err := e.lab.DumpFlows(flowCookie)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(flows, "\n")
	for _, want := range []string{
		"table=60", "priority=102", "send_flow_rem",
		"udp,reg13=0/0x1,nw_dst=169.254.169.254,tp_dst=53", "udp6,reg13=0/0x1,ipv6_dst=fd00::254,tp_dst=53",
		"controller(", "id=53",
		// Per-port flows, each with its port's meter, above the generic ones.
		fmt.Sprintf("priority=103,udp,reg13=0/0x1,in_port=%d,nw_dst=169.254.169.254,tp_dst=53 actions=meter:", e.vms[0].OFPort),
		"meter:",
		// The neighbour answers' defaults: ARP for 169.254.169.254 from
		// the flows, and frames to the responder MAC dropped.
		"priority=102,arp,reg13=0/0x1,vlan_tci=0x0000/0x1fff,arp_tpa=169.254.169.254,arp_op=1 actions=",
		"set_field:02:44:4e:53:00:01->eth_src", "priority=101,dl_dst=02:44:4e:53:00:01 actions=drop",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("flows lack %q:\n%s", want, joined)
		}
	}
}

// TestFlowsRestored: the flows come back within a second after someone
// deletes them, the Neutron agent's stale-cookie cleanup (a delete by our
// cookie) and a plain del-flows of the table alike; DNS works again.
func TestFlowsRestored(t *testing.T) {
	e := newEnv(t, 1)
	e.startDaemon(e.config([]string{e.upstream()}))
	deletions := []struct {
		name string
		args []string
	}{
		{"agent cleanup by cookie", []string{"del-flows", e.lab.Bridge, fmt.Sprintf("cookie=%#x/-1", flowCookie)}},
		{"table 60 udp wiped", []string{"del-flows", e.lab.Bridge, "table=60,udp"}},
		{"one flow deleted", []string{"--strict", "del-flows", e.lab.Bridge, "table=60,priority=102,udp6,reg13=0/0x1,ipv6_dst=fd00::254,tp_dst=53"}},
	}
	for _, d := range deletions {
		t.Run(d.name, func(t *testing.T) {
			if out, err := e.lab.Ofctl(d.args...); err != nil {
				t.Fatalf("ovs-ofctl %v: %v\n%s", d.args, err, out)
			}
			took := e.waitFlows(e.wantFlows(), time.Second)
			t.Logf("flows back after %v", took)
			if got := strings.TrimSpace(e.dig(e.vms[0], "@169.254.169.254", "www.example.test", "+short")); got != "192.0.2.10" {
				t.Fatalf("after restore: got %q", got)
			}
		})
	}
}

// TestVswitchdRestart: after ovs-vswitchd restarts (all flows gone, the
// connection dropped) the daemon redials, reinstalls and answers again.
func TestVswitchdRestart(t *testing.T) {
	e := newEnv(t, 1)
	e.startDaemon(e.config([]string{e.upstream()}))
	if err := e.lab.RestartVswitchd(); err != nil {
		t.Fatal(err)
	}
	took := e.waitFlows(e.wantFlows(), 10*time.Second)
	t.Logf("flows back %v after the bridge answered again", took)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := e.vms[0].Dig(t.Context(), "@169.254.169.254", "www.example.test", "+short", "+time=1")
		if err == nil && strings.TrimSpace(out) == "192.0.2.10" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer after restart: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestShutdownRemovesFlows: SIGTERM and SIGINT remove the daemon's flows,
// leave every other flow alone and exit 0.
func TestShutdownRemovesFlows(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			e := newEnv(t, 1)
			before := e.otherFlows()
			p := e.startDaemon(e.config([]string{e.upstream()}))
			if err := p.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code, err := p.Wait(); err != nil || code != 0 {
				t.Fatalf("exit %d, %v; want 0", code, err)
			}
			if flows, err := e.lab.DumpFlows(flowCookie); err != nil || len(flows) != 0 {
				t.Fatalf("flows left after %v: %q (%v)", sig, flows, err)
			}
			if after := e.otherFlows(); after != before {
				t.Fatalf("other flows changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// otherFlows lists the lab's own (Neutron-like) flows.
func (e *env) otherFlows() string {
	e.t.Helper()
	flows, err := e.lab.DumpFlows(lab.AgentCookie)
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.Join(flows, "\n")
}
