// Command bench measures ovs-dns-forwarder with dnsperf from a VM namespace
// on a real userspace Open vSwitch, and in the same run the same upstream
// queried directly through br-int, so that the ratio between the two is
// meaningful on a shared, noisy machine. Rounds alternate the targets; the
// median round is reported.
//
// For each target it prints queries per second, mean and p99 latency, and
// CPU time per answer of every process on the path (the daemon,
// ovs-vswitchd, the upstream). It needs root and sends traffic only inside
// the namespaces it creates. Run it with `make bench`.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/config"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
)

func main() {
	daemon := flag.String("daemon", "bin/ovs-dns-forwarder", "the ovs-dns-forwarder binary")
	duration := flag.Duration("duration", 10*time.Second, "length of one dnsperf run")
	rounds := flag.Int("rounds", 3, "rounds per target and concurrency; the median is reported")
	clients := flag.String("concurrency", "10,100", "comma-separated outstanding-query counts")
	flag.Parse()
	var levels []int
	for _, s := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: bad --concurrency %q\n", *clients)
			os.Exit(2)
		}
		levels = append(levels, n)
	}
	if err := run(*daemon, *duration, *rounds, levels); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// names is how many distinct names the upstream serves and the queries use.
const names = 1000

// result is one dnsperf run.
type result struct {
	qps, meanMs, p99Ms float64
	answers            int
	lost               int
	// cpu is the CPU time per answer of each process on the path, in the
	// order of target.pids, and their sum.
	cpu      []time.Duration
	cpuTotal time.Duration
}

// target is one way of reaching the upstream from the VM.
type target struct {
	name   string
	server string
	port   uint16
	pids   []int // ovs-vswitchd, the upstream, the daemon (when on the path)
}

func run(daemon string, duration time.Duration, rounds int, levels []int) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root")
	}
	if err := lab.EnsurePackages(); err != nil {
		return err
	}
	l, err := lab.Start(lab.Options{})
	if err != nil {
		return err
	}
	defer l.Close()
	vm, err := l.AddVM("vm1")
	if err != nil {
		return err
	}
	zone := lab.Zone{Origin: "bench.test."}
	for i := 0; i < names; i++ {
		zone.Records = append(zone.Records, fmt.Sprintf("n%d.bench.test. 300 IN A 198.51.100.%d", i, i%250+1))
	}
	up, err := l.StartUnbound(zone)
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf("[ovs]\nintegration_bridge = %s\n[dns_forwarder]\nopenflow_connection = %s\nupstream_dns_server_ports = 127.0.0.1:%d\n",
		l.Bridge, l.MgmtTarget(), up.Port)
	p, err := l.StartDaemon(daemon, "ovs-dns-forwarder", cfg)
	if err != nil {
		return err
	}
	defer p.Stop()
	for i := 0; ; i++ {
		if flows, err := l.DumpFlows(config.Defaults().FlowCookie); err == nil && len(flows) == 2 {
			break
		}
		if i == 100 {
			return fmt.Errorf("the daemon's flows did not appear")
		}
		time.Sleep(100 * time.Millisecond)
	}
	queries := filepath.Join(l.Dir, "queries.txt")
	var q bytes.Buffer
	for i := 0; i < names; i++ {
		fmt.Fprintf(&q, "n%d.bench.test A\n", i)
	}
	if err := os.WriteFile(queries, q.Bytes(), 0o644); err != nil {
		return err
	}
	vswitchd, err := l.VswitchdPID()
	if err != nil {
		return err
	}
	targets := []target{
		{"direct (upstream through br-int)", l.Gateway4.String(), up.Port, []int{vswitchd, up.PID}},
		{"ovs-dns-forwarder", "169.254.169.254", 53, []int{vswitchd, up.PID, p.PID}},
	}
	fmt.Printf("dnsperf from a VM namespace, %d names, %v per run, median of %d rounds\n\n", names, duration, rounds)
	fmt.Println("| concurrency | target | QPS | mean ms | p99 ms | CPU µs/answer: total (OVS + upstream + daemon) | lost | QPS ratio |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, c := range levels {
		runs := make([][]result, len(targets))
		for r := 0; r < rounds; r++ {
			for i, t := range targets {
				res, err := perf(vm, t, queries, c, duration)
				if err != nil {
					return err
				}
				runs[i] = append(runs[i], res)
			}
		}
		base := median(runs[0]).qps
		for i, t := range targets {
			m := median(runs[i])
			parts := make([]string, len(m.cpu))
			for i, d := range m.cpu {
				parts[i] = fmt.Sprintf("%.1f", micros(d))
			}
			fmt.Printf("| %d | %s | %.0f | %.3f | %.3f | %.1f (%s) | %d | %.2f |\n",
				c, t.name, m.qps, m.meanMs, m.p99Ms, micros(m.cpuTotal), strings.Join(parts, " + "), m.lost, m.qps/base)
		}
	}
	return nil
}

// perf runs dnsperf once against t with c outstanding queries.
func perf(vm *lab.VM, t target, queries string, c int, duration time.Duration) (result, error) {
	cpu0, err := cpuTime(t.pids)
	if err != nil {
		return result{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), duration+30*time.Second)
	defer cancel()
	clients := min(c, 10)
	out, err := vm.Command(ctx, "dnsperf", "-s", t.server, "-p", strconv.Itoa(int(t.port)), "-d", queries,
		"-c", strconv.Itoa(clients), "-q", strconv.Itoa(c), "-l", strconv.Itoa(int(duration.Seconds())),
		"-t", "2", "-v").Output()
	if err != nil {
		return result{}, fmt.Errorf("dnsperf %s: %v\n%s", t.name, err, out)
	}
	cpu1, err := cpuTime(t.pids)
	if err != nil {
		return result{}, err
	}
	res, err := parse(out)
	if err != nil {
		return res, fmt.Errorf("dnsperf %s: %v", t.name, err)
	}
	if res.answers > 0 {
		for i := range cpu0 {
			d := (cpu1[i] - cpu0[i]) / time.Duration(res.answers)
			res.cpu = append(res.cpu, d)
			res.cpuTotal += d
		}
	}
	return res, nil
}

// parse reads dnsperf -v output: one "> RCODE name type latency" line per
// answer, then the summary.
func parse(out []byte) (result, error) {
	var res result
	var lat []float64
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && f[0] == ">":
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				lat = append(lat, v*1000)
			}
		case strings.HasPrefix(strings.TrimSpace(line), "Queries per second:"):
			res.qps, _ = strconv.ParseFloat(f[len(f)-1], 64)
		case strings.HasPrefix(strings.TrimSpace(line), "Queries completed:"):
			res.answers, _ = strconv.Atoi(f[2])
		case strings.HasPrefix(strings.TrimSpace(line), "Queries lost:"):
			res.lost, _ = strconv.Atoi(f[2])
		case strings.HasPrefix(strings.TrimSpace(line), "Average Latency (s):"):
			if v, err := strconv.ParseFloat(f[3], 64); err == nil {
				res.meanMs = v * 1000
			}
		}
	}
	if res.qps == 0 {
		return res, fmt.Errorf("no summary in output:\n%s", tail(out))
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		res.p99Ms = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return res, nil
}

// cpuTime returns the user plus system CPU time of each of pids, from /proc.
func cpuTime(pids []int) ([]time.Duration, error) {
	times := make([]time.Duration, 0, len(pids))
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil, err
		}
		// Fields after the command name, which is in parentheses.
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+2:]))
		// utime and stime are fields 14 and 15 of stat, 12 and 13 here.
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		times = append(times, time.Duration(ut+st)*time.Second/clockTicks)
	}
	return times, nil
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times on Linux.
const clockTicks = 100

func median(rs []result) result {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int {
		switch {
		case a.qps < b.qps:
			return -1
		case a.qps > b.qps:
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}

func tail(b []byte) string {
	lines := strings.Split(string(b), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}
