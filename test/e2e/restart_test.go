package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// prober sends a query every 10 ms (50 ms timeout) for the given seconds
// and prints the monotonic time of every answer.
const prober = `import socket,struct,sys,time
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(0.05)
q=b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x04test\x00\x00\x01\x00\x01"
end=time.monotonic()+float(sys.argv[1]); i=0
while time.monotonic()<end:
    i=(i+1)&0xffff; s.sendto(struct.pack("!H",i)+q[2:],("169.254.169.254",53)); t=time.monotonic()
    try:
        while True:
            r=s.recv(512)
            if r[:2]==struct.pack("!H",i): print("ok %.4f"%time.monotonic()); break
    except socket.timeout: print("lost %.4f"%t)
    time.sleep(max(0,0.01-(time.monotonic()-t)))
sys.stdout.flush()`

// TestRestartGap measures how long VMs go without DNS when the daemon is
// restarted as systemd does it (stop, then start): the longest time
// between two answers while a VM asks every 10 ms. The bound is
// one second.
func TestRestartGap(t *testing.T) {
	e := newEnv(t, 1)
	cfg := e.config([]string{e.upstream()})
	old := e.startDaemon(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	probe := e.vms[0].Command(ctx, "python3", "-c", prober, "4")
	var out strings.Builder
	probe.Stdout = &out
	if err := probe.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := old.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	e.startDaemon(cfg)
	if err := probe.Wait(); err != nil {
		t.Fatalf("prober: %v\n%s", err, out.String())
	}
	var last, gap float64
	lost, answered := 0, 0
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		at, _ := strconv.ParseFloat(f[1], 64)
		if f[0] == "lost" {
			lost++
			continue
		}
		answered++
		if last > 0 && at-last > gap {
			gap = at - last
		}
		last = at
	}
	t.Logf("restart gap: %.0f ms without an answer (%d queries lost, %d answered)", gap*1000, lost, answered)
	if answered < 100 || gap >= 1 {
		t.Fatalf("restart gap %.3f s, %d answered: want under 1 s", gap, answered)
	}
	fmt.Printf("RESULT restart_gap_ms=%.0f lost=%d\n", gap*1000, lost)
}
