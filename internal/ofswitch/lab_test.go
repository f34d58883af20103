package ofswitch

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/frame"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/pipeline"
)

// echoResponder answers every captured query with an empty NOERROR answer,
// from memory, on the read loop.
type echoResponder struct {
	sw  *Switch
	mu  sync.Mutex
	buf []byte
	msg []byte
	n   map[uint32]int
}

func (e *echoResponder) packetIn(inPort uint32, data []byte) {
	var q frame.Query
	if frame.ParseQuery(data, &q) != nil {
		return
	}
	var dq dnswire.Query
	if dnswire.ParseQuery(q.Payload, &dq) != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n[inPort]++
	e.msg = dnswire.AppendError(e.msg[:0], q.Payload, &dq, 0)
	e.buf = frame.AppendReply(e.buf[:0], &q, e.msg)
	_ = e.sw.PacketOut(inPort, e.buf)
}

var dnsperfQPS = regexp.MustCompile(`Queries completed:\s+(\d+)`)

// dnsperf runs dnsperf in vm for d at rate qps and returns the queries
// answered.
func dnsperf(t *testing.T, vm *lab.VM, qfile string, qps int, d time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Second)
	defer cancel()
	out, err := vm.Command(ctx, "dnsperf", "-s", "169.254.169.254", "-d", qfile, "-Q", strconv.Itoa(qps),
		"-q", strconv.Itoa(max(100, qps)), "-t", "1", "-l", strconv.Itoa(int(d.Seconds()))).CombinedOutput()
	m := dnsperfQPS.FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("dnsperf: %v\n%s", err, out)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// meterLine returns dump-meters' line for id (empty when absent).
func meterLine(t *testing.T, l *lab.Lab, id uint32) string {
	t.Helper()
	out, err := l.Ofctl("dump-meters", l.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	out = strings.ReplaceAll(out, "\n", " ")
	i := strings.Index(out, fmt.Sprintf("meter=%d ", id))
	if i < 0 {
		return ""
	}
	line := out[i:]
	if j := strings.Index(line[1:], "meter="); j >= 0 {
		line = line[:j+1]
	}
	return strings.TrimSpace(line)
}

// TestRealOVSPortMeters runs the session against Open vSwitch's userspace
// datapath: per-port meters and flows follow the bridge's ports, a flood
// from one VM is capped at its port's rate while another VM keeps its
// answers, and shutdown leaves no flow or meter behind.
func TestRealOVSPortMeters(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts Open vSwitch in network namespaces")
	}
	if testing.Short() {
		t.Skip("slow: a flood on real Open vSwitch")
	}
	l, vm1, vm2 := twoVMLab(t)
	const cookie = 0x444e53
	spec := pipeline.Spec{Table: 60, Priority: 102, Cookie: cookie, ControllerID: 53,
		Services: []netip.AddrPort{netip.MustParseAddrPort("169.254.169.254:53")}}
	sw := New(Config{Target: l.MgmtTarget(), ControllerID: 53, Cookie: cookie, TableID: 60,
		Declare: declareFor(spec, nil), OwnsMeter: spec.OwnsMeter})
	resp := &echoResponder{sw: sw, n: make(map[uint32]int)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sw.Run(ctx, resp.packetIn) }()
	t.Cleanup(func() { cancel(); <-done })

	waitFor(t, "per-port meters", func() bool {
		return meterLine(t, l, pipeline.PortMeterID(vm1.OFPort)) != "" && meterLine(t, l, pipeline.PortMeterID(vm2.OFPort)) != ""
	})
	t.Logf("global meter: %s", meterLine(t, l, pipeline.GlobalMeterID))
	t.Logf("vm1 meter: %s", meterLine(t, l, pipeline.PortMeterID(vm1.OFPort)))
	flows, err := l.DumpFlows(cookie)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flows:\n%s", strings.Join(flows, "\n"))
	if len(flows) != 3 {
		t.Errorf("%d flows, want 2 per-port + 1 generic", len(flows))
	}

	qfile := l.Dir + "/queries"
	if err := os.WriteFile(qfile, []byte("www.example.test A\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const d = 5 * time.Second
	const rate2 = 500 // below vm2's meter
	alone := dnsperf(t, vm2, qfile, rate2, d)
	before := sw.Stats()["meter_drops"]
	var flooded int
	var wg sync.WaitGroup
	wg.Go(func() { flooded = dnsperf(t, vm1, qfile, 30000, d) })
	time.Sleep(200 * time.Millisecond)
	during := dnsperf(t, vm2, qfile, rate2, d)
	wg.Wait()
	time.Sleep(1500 * time.Millisecond) // a meter dump
	drops := sw.Stats()["meter_drops"] - before
	t.Logf("vm2 alone: %d answers in %v; during vm1's flood: %d (%.0f%%); vm1 answered %d (%.0f/s); meter_drops %d",
		alone, d, during, 100*float64(during)/float64(alone), flooded, float64(flooded)/d.Seconds(), drops)
	t.Logf("vm1 meter stats: %s", meterLine(t, l, pipeline.PortMeterID(vm1.OFPort)))
	if float64(during) < 0.9*float64(alone) {
		t.Errorf("vm2 kept %d of %d answers under the flood", during, alone)
	}
	if limit := float64(pipeline.DefaultPortMeterRate)*(d.Seconds()+0.5) + float64(pipeline.DefaultPortMeterBurst); float64(flooded) > limit {
		t.Errorf("vm1 got %d answers, more than its meter allows (%.0f)", flooded, limit)
	}
	if drops == 0 {
		t.Error("no meter drops counted")
	}

	// A new port gets its meter and flows; a port that goes loses them.
	vm3, err := l.AddVM("vm3")
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	waitFor(t, "vm3's meter", func() bool { return meterLine(t, l, pipeline.PortMeterID(vm3.OFPort)) != "" })
	waitFor(t, "vm3's flow", func() bool {
		flows, _ := l.DumpFlows(cookie)
		return len(flows) == 4
	})
	t.Logf("new port's meter and flow after %v", time.Since(begin))
	name, err := l.Vsctl("--bare", "--columns=name", "find", "Interface", fmt.Sprintf("ofport=%d", vm3.OFPort))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Vsctl("del-port", l.Bridge, strings.TrimSpace(name)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "vm3's meter gone", func() bool { return meterLine(t, l, pipeline.PortMeterID(vm3.OFPort)) == "" })
	waitFor(t, "vm3's flow gone", func() bool {
		flows, _ := l.DumpFlows(cookie)
		return len(flows) == 3
	})

	// Someone deletes our flows and the global meter: back within a second.
	if _, err := l.Ofctl("del-meter", l.Bridge, fmt.Sprintf("meter=%d", pipeline.GlobalMeterID)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Ofctl("del-flows", l.Bridge, fmt.Sprintf("cookie=%#x/-1", uint64(cookie))); err != nil {
		t.Fatal(err)
	}
	begin = time.Now()
	waitFor(t, "set back", func() bool {
		flows, _ := l.DumpFlows(cookie)
		return len(flows) == 3 && meterLine(t, l, pipeline.GlobalMeterID) != ""
	})
	t.Logf("set reinstalled after %v", time.Since(begin))
	if d := time.Since(begin); d > 1500*time.Millisecond {
		t.Errorf("reinstall took %v", d)
	}
	if n := sw.Stats()["openflow_errors"]; n != 0 {
		t.Errorf("%d openflow errors", n)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	flows, _ = l.DumpFlows(cookie)
	out, _ := l.Ofctl("dump-meters", l.Bridge)
	if len(flows) != 0 || strings.Contains(out, "meter=") {
		t.Errorf("left behind: flows %v, meters %s", flows, out)
	}
	t.Logf("stats %v", sw.Stats())
}

// twoVMLab starts a lab with two VMs, closed when the test ends.
func twoVMLab(t *testing.T) (*lab.Lab, *lab.VM, *lab.VM) {
	t.Helper()
	if err := lab.EnsurePackages(); err != nil {
		t.Fatal(err)
	}
	l, err := lab.Start(lab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	vm1, err := l.AddVM("vm1")
	if err != nil {
		t.Fatal(err)
	}
	vm2, err := l.AddVM("vm2")
	if err != nil {
		t.Fatal(err)
	}
	return l, vm1, vm2
}
