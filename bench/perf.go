package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/lab"
)

// Query mixes.
const (
	mixHot    = "hot"    // hotNames names, repeated: answered from a warm cache
	mixUnique = "unique" // never repeated: every query misses every cache
	mixMixed  = "mixed"  // 70 % from the hot set, 30 % unique
)

// hotShare is the share of repeated names in the mixed mix.
const hotShare = 0.7

// uniquePerSecond bounds the queries per second one VM can send, to size
// the files of unique names so that dnsperf never wraps around.
const uniquePerSecond = 150000

// queryFiles writes the query files for one run: one per VM (unique names
// differ between VMs, runs and rounds; every target of a round gets the
// same files, since each has a cache of its own). tag makes the names
// unique to the run.
// It returns the files and, for the mixes with unique names, how many
// lines each has.
func queryFiles(dir, mix, tag string, vms int, duration time.Duration) ([]string, int, error) {
	var files []string
	lines := int(duration.Seconds()+1) * uniquePerSecond
	for v := range vms {
		path := filepath.Join(dir, fmt.Sprintf("q-%s-%s-vm%d.txt", mix, tag, v+1))
		var b bytes.Buffer
		switch mix {
		case mixHot:
			for i := range hotNames {
				fmt.Fprintf(&b, "h%d.%s A\n", i, zoneOrigin)
			}
		case mixUnique, mixMixed:
			h := fnv.New64a()
			h.Write([]byte(tag))
			rng := rand.New(rand.NewPCG(uint64(v), h.Sum64()))
			b.Grow(lines * 32)
			for i := range lines {
				if mix == mixMixed && rng.Float64() < hotShare {
					fmt.Fprintf(&b, "h%d.%s A\n", rng.IntN(hotNames), zoneOrigin)
					continue
				}
				fmt.Fprintf(&b, "u%s-%d-%d.%s A\n", tag, v, i, zoneOrigin)
			}
		default:
			return nil, 0, fmt.Errorf("unknown mix %q", mix)
		}
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			return nil, 0, err
		}
		files = append(files, path)
	}
	if mix == mixHot {
		lines = 0
	}
	return files, lines, nil
}

// result is one measurement (one dnsperf per VM, run at once, merged).
type result struct {
	qps           float64 // NOERROR answers per second
	meanMs, p99Ms float64
	answers       int // NOERROR answers
	failed        int // lost, or answered with another code
	cpu           []time.Duration
	cpuTotal      time.Duration
	floodQPS      float64 // the flooding VM's answers per second (flood case)
	wrapped       bool    // a unique file ran out and dnsperf repeated names
	sent          int     // queries sent: answered or lost
	latencies     []float64
}

// dnsperfArgs are the arguments of one dnsperf run.
func dnsperfArgs(ep endpoint, file string, c, rate int, duration time.Duration, verbose bool) []string {
	args := []string{"-s", ep.server, "-p", strconv.Itoa(int(ep.port)), "-d", file,
		"-c", strconv.Itoa(min(c, 10)), "-q", strconv.Itoa(c),
		"-l", strconv.Itoa(max(1, int(duration.Seconds()))), "-t", "2"}
	if rate > 0 {
		args = append(args, "-Q", strconv.Itoa(rate))
	}
	if verbose {
		args = append(args, "-v")
	}
	return args
}

// measure runs dnsperf in each of vms at once against ep, with c
// outstanding queries each, and merges the results; flood, when not nil,
// runs a flood from its VM around the measurement; rate, when positive,
// caps each VM's queries per second (dnsperf -Q).
// capacity is the number of lines of a file of unique names (0: no such
// file); a VM that sent more has repeated names.
func measure(vms []*lab.VM, ep endpoint, files []string, capacity, c, rate int, duration time.Duration, flood *floodSpec) (result, error) {
	cpu0, err := cpuTime(ep.pids)
	if err != nil {
		return result{}, err
	}
	var floodOut []byte
	var floodErr error
	var floodWG sync.WaitGroup
	if flood != nil {
		floodWG.Add(1)
		go func() {
			defer floodWG.Done()
			ctx, cancel := context.WithTimeout(context.Background(), duration+30*time.Second)
			defer cancel()
			args := dnsperfArgs(ep, flood.file, flood.outstanding, 0, duration+2*time.Second, false)
			floodOut, floodErr = flood.vm.Command(ctx, "dnsperf", args...).CombinedOutput()
		}()
		time.Sleep(time.Second)
	}
	outs := make([][]byte, len(vms))
	errs := make([]error, len(vms))
	var wg sync.WaitGroup
	for i, vm := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), duration+30*time.Second)
			defer cancel()
			outs[i], errs[i] = vm.Command(ctx, "dnsperf", dnsperfArgs(ep, files[i], c, rate, duration, true)...).Output()
		}()
	}
	wg.Wait()
	cpu1, err := cpuTime(ep.pids)
	if err != nil {
		return result{}, err
	}
	floodWG.Wait()
	var res result
	var meanSum float64
	for i := range vms {
		if errs[i] != nil {
			return result{}, fmt.Errorf("dnsperf in %s: %v\n%s", vms[i].Name, errs[i], tail(outs[i]))
		}
		r, err := parse(outs[i])
		if err != nil {
			return result{}, fmt.Errorf("dnsperf in %s: %v", vms[i].Name, err)
		}
		res.qps += r.qps
		res.answers += r.answers
		res.failed += r.failed
		res.wrapped = res.wrapped || (capacity > 0 && r.sent > capacity)
		meanSum += r.meanMs * float64(r.answers)
		res.latencies = append(res.latencies, r.latencies...)
	}
	if res.answers > 0 {
		res.meanMs = meanSum / float64(res.answers)
		for i := range cpu0 {
			d := (cpu1[i] - cpu0[i]) / time.Duration(res.answers)
			res.cpu = append(res.cpu, d)
			res.cpuTotal += d
		}
	}
	if len(res.latencies) > 0 {
		slices.Sort(res.latencies)
		res.p99Ms = res.latencies[min(len(res.latencies)-1, len(res.latencies)*99/100)]
	}
	res.latencies = nil
	if flood != nil {
		if floodErr != nil {
			return result{}, fmt.Errorf("flood from %s: %v\n%s", flood.vm.Name, floodErr, tail(floodOut))
		}
		fr, err := parse(floodOut)
		if err != nil {
			return result{}, fmt.Errorf("flood from %s: %v", flood.vm.Name, err)
		}
		res.floodQPS = fr.qps
	}
	return res, nil
}

// floodSpec is a VM flooding the target during a measurement.
type floodSpec struct {
	vm          *lab.VM
	file        string
	outstanding int
}

// parse reads dnsperf output: with -v one "> RCODE name type latency" line
// per answer, then the summary.
func parse(out []byte) (result, error) {
	var res result
	var completed, lost, noerror int
	var qps float64
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		t := strings.TrimSpace(line)
		f := strings.Fields(t)
		switch {
		case len(f) >= 5 && f[0] == ">":
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				res.latencies = append(res.latencies, v*1000)
			}
		case strings.HasPrefix(t, "Queries per second:"):
			qps, _ = strconv.ParseFloat(f[len(f)-1], 64)
		case strings.HasPrefix(t, "Queries completed:"):
			completed, _ = strconv.Atoi(f[2])
		case strings.HasPrefix(t, "Queries lost:"):
			lost, _ = strconv.Atoi(f[2])
		case strings.HasPrefix(t, "Response codes:"):
			for i := 2; i+1 < len(f); i++ {
				if f[i] == "NOERROR" {
					noerror, _ = strconv.Atoi(f[i+1])
				}
			}
		case strings.HasPrefix(t, "Average Latency (s):"):
			if v, err := strconv.ParseFloat(f[3], 64); err == nil {
				res.meanMs = v * 1000
			}
		}
	}
	if qps == 0 && completed == 0 {
		return res, fmt.Errorf("no summary in output:\n%s", tail(out))
	}
	res.answers = noerror
	res.sent = completed + lost
	res.failed = lost + completed - noerror
	if completed > 0 {
		res.qps = qps * float64(noerror) / float64(completed)
	}
	return res, nil
}

// prime queries the hot set once from vm against ep, so that a caching
// target answers the hot mix from a warm cache.
func prime(vm *lab.VM, ep endpoint, file string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := vm.Command(ctx, "dnsperf", "-s", ep.server, "-p", strconv.Itoa(int(ep.port)), "-d", file,
		"-n", "1", "-c", "1", "-q", "10", "-t", "2").CombinedOutput()
	if err != nil {
		return fmt.Errorf("priming: %v\n%s", err, tail(out))
	}
	return nil
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

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times on Linux.
const clockTicks = 100

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// median returns the round with the median throughput.
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
