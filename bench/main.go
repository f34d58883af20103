// Command bench is the benchmark suite of ovs-dns-forwarder. In one run,
// on one lab (a userspace Open vSwitch with a Neutron-like br-int, VM
// namespaces on its ports) and one upstream (unbound answering a zone from
// memory, optionally behind a relay that delays each answer), it measures
// with dnsperf from the VMs, side by side:
//
//   - direct: the upstream queried through br-int, no detour;
//   - daemon: ovs-dns-forwarder at 169.254.169.254:53 (packet-in, cache,
//     upstream, packet-out), cold (unique names) and warm (hot names);
//   - dnsmasq: dnsmasq with the Neutron DHCP agent's command line;
//   - unbound: a second unbound as a caching forwarder.
//
// Cells vary the query mix (hot, unique, mixed), the outstanding queries
// per VM (1, 10, 100), the number of VMs (1, 4) and the upstream's delay
// (0, 2 ms); a flood case measures a VM's throughput alone and while
// another VM floods the same target. Rounds alternate the targets so that
// noise hits all of them; the median round is reported. It prints a
// markdown table with ratios to the direct path and to dnsmasq, checks the
// issue's targets, and plots throughput and p99 latency per target (PNG,
// gnuplot). It needs root and sends traffic only inside the namespaces it
// creates. Run it with `make bench`; see docs/benchmarks.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// options are the command line.
type options struct {
	daemon      string
	duration    time.Duration
	rounds      int
	targets     []string
	mixes       []string
	concurrency []int
	vms         []int
	delays      []time.Duration
	full        bool
	flood       bool
	floodConc   int
	floodQ      int
	victimRate  int
	plot        string
}

func main() {
	var o options
	var targets, mixes, conc, vms, delays string
	flag.StringVar(&o.daemon, "daemon", "bin/ovs-dns-forwarder", "the ovs-dns-forwarder binary")
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "length of one dnsperf run (whole seconds)")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds per cell; targets alternate within a round; the median is reported")
	flag.StringVar(&targets, "targets", "direct,daemon,dnsmasq,unbound", "targets to measure")
	flag.StringVar(&mixes, "mixes", "hot,unique,mixed", "query mixes (filter of the suite's cells)")
	flag.StringVar(&conc, "concurrency", "1,10,100", "outstanding queries per VM (filter)")
	flag.StringVar(&vms, "vms", "1,4", "numbers of VMs querying at once (filter)")
	flag.StringVar(&delays, "delays", "0,2ms", "upstream delays (filter)")
	flag.BoolVar(&o.full, "full", false, "every combination of --mixes, --concurrency, --vms and --delays instead of the suite's cells")
	flag.BoolVar(&o.flood, "flood", true, "run the flood case")
	flag.IntVar(&o.floodConc, "flood-concurrency", 10, "outstanding queries of the measured VM in the flood case")
	flag.IntVar(&o.floodQ, "flood-outstanding", 1000, "outstanding queries of the flooding VM")
	flag.IntVar(&o.victimRate, "flood-victim-rate", 800, "queries/s of the measured VM in the flood case (within the default per-port limit of 1024)")
	flag.StringVar(&o.plot, "plot", "docs/benchmarks.png", "PNG to write the plot to (empty: no plot)")
	quick := flag.Bool("quick", false, "a small subset: hot and unique, 100 outstanding, one VM, no delay, the flood case; 1 round of 3 s")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		for name, v := range map[string]*string{"mixes": &mixes, "concurrency": &conc, "vms": &vms, "delays": &delays} {
			if !set[name] {
				*v = map[string]string{"mixes": "hot,unique", "concurrency": "100", "vms": "1", "delays": "0"}[name]
			}
		}
		if !set["rounds"] {
			o.rounds = 1
		}
		if !set["duration"] {
			o.duration = 3 * time.Second
		}
	}
	err := errors.Join(
		parseList(targets, &o.targets, func(s string) (string, error) {
			if _, ok := targetNames[s]; !ok {
				return "", fmt.Errorf("unknown target %q (want direct, daemon, dnsmasq, unbound)", s)
			}
			return s, nil
		}),
		parseList(mixes, &o.mixes, func(s string) (string, error) {
			if s != mixHot && s != mixUnique && s != mixMixed {
				return "", fmt.Errorf("unknown mix %q (want hot, unique, mixed)", s)
			}
			return s, nil
		}),
		parseList(conc, &o.concurrency, positive),
		parseList(vms, &o.vms, positive),
		parseList(delays, &o.delays, func(s string) (time.Duration, error) {
			if s == "0" {
				return 0, nil
			}
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 || d > time.Second {
				return 0, fmt.Errorf("bad delay %q", s)
			}
			return d, nil
		}),
	)
	if err == nil && (o.rounds < 1 || o.duration < time.Second || o.floodConc < 1 || o.floodQ < 1) {
		err = errors.New("--rounds, --duration (>= 1s), --flood-concurrency and --flood-outstanding must be positive")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// parseList splits a comma-separated flag value and converts each item.
func parseList[T any](s string, dst *[]T, conv func(string) (T, error)) error {
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		v, err := conv(item)
		if err != nil {
			return err
		}
		*dst = append(*dst, v)
	}
	return nil
}

// positive parses a positive integer.
func positive(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("bad number %q", s)
	}
	return n, nil
}

// Kinds of cells.
const (
	cellPlain      = iota // the VMs query the target
	cellFloodAlone        // VM2 queries the target alone
	cellFlooded           // VM2 queries the target while VM1 floods it
)

// cell is one combination of the benchmark's dimensions.
type cell struct {
	kind  int
	mix   string
	conc  int // outstanding queries per VM
	vms   int
	delay time.Duration
}

// label names the cell in the plot.
func (c cell) label() string {
	switch c.kind {
	case cellFloodAlone:
		return fmt.Sprintf("VM2 alone c%d", c.conc)
	case cellFlooded:
		return fmt.Sprintf("VM2 + flood c%d", c.conc)
	}
	s := fmt.Sprintf("%s c%d", c.mix, c.conc)
	if c.vms > 1 {
		s += fmt.Sprintf(" %dVMs", c.vms)
	}
	if c.delay > 0 {
		s += " " + c.delay.String()
	}
	return s
}

// cells returns the cells to run: the suite's (or, with --full, every
// combination) that pass the filters, grouped by delay, then the flood
// case.
func cells(o options) []cell {
	var cs []cell
	if o.full {
		for _, d := range o.delays {
			for _, v := range o.vms {
				for _, m := range o.mixes {
					for _, c := range o.concurrency {
						cs = append(cs, cell{mix: m, conc: c, vms: v, delay: d})
					}
				}
			}
		}
	} else {
		var suite []cell
		for _, m := range []string{mixHot, mixUnique, mixMixed} {
			for _, c := range []int{1, 10, 100} {
				if m != mixMixed || c != 1 {
					suite = append(suite, cell{mix: m, conc: c, vms: 1})
				}
			}
		}
		for _, m := range []string{mixHot, mixUnique, mixMixed} {
			suite = append(suite, cell{mix: m, conc: 100, vms: 4})
		}
		for _, d := range o.delays {
			if d > 0 {
				suite = append(suite, cell{mix: mixUnique, conc: 10, vms: 1, delay: d},
					cell{mix: mixUnique, conc: 100, vms: 1, delay: d},
					cell{mix: mixMixed, conc: 100, vms: 1, delay: d})
			}
		}
		for _, c := range suite {
			if slices.Contains(o.mixes, c.mix) && slices.Contains(o.concurrency, c.conc) &&
				slices.Contains(o.vms, c.vms) && slices.Contains(o.delays, c.delay) {
				cs = append(cs, c)
			}
		}
	}
	if o.flood {
		cs = append(cs, cell{kind: cellFloodAlone, mix: mixMixed, conc: o.floodConc, vms: 1},
			cell{kind: cellFlooded, mix: mixMixed, conc: o.floodConc, vms: 1})
	}
	return cs
}
