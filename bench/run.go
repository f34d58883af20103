package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// measured is the outcome of one cell for one target: every round's result.
type measured struct {
	cell   cell
	target string
	rounds []result
}

// run runs the benchmark.
func run(o options) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root")
	}
	cs := cells(o)
	if len(cs) == 0 {
		return errors.New("no cell passes the filters")
	}
	nVMs, delays := 1, []time.Duration{}
	for _, c := range cs {
		nVMs = max(nVMs, c.vms)
		if c.kind != cellPlain {
			nVMs = max(nVMs, 2)
		}
		if !slices.Contains(delays, c.delay) {
			delays = append(delays, c.delay)
		}
	}
	start := time.Now()
	e, err := setup(o.daemon, nVMs, delays)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, e.close()) }()
	hot, _, err := queryFiles(e.lab.Dir, mixHot, "prime", 1, o.duration)
	if err != nil {
		return err
	}
	fmt.Printf("dnsperf from VM namespaces through a userspace Open vSwitch (%d CPUs), %v per run, median of %d rounds, %s\n\n",
		runtime.NumCPU(), o.duration, o.rounds, time.Now().Format("2006-01-02"))
	printHeader()
	var all []measured
	for i := 0; i < len(cs); i++ {
		unit := cs[i : i+1]
		if cs[i].kind == cellFloodAlone && i+1 < len(cs) && cs[i+1].kind == cellFlooded {
			unit = cs[i : i+2]
			i++
		}
		ms, err := runUnit(e, o, unit, len(all), hot[0])
		if err != nil {
			return err
		}
		for _, m := range groupCells(ms) {
			printRows(m)
		}
		all = append(all, ms...)
	}
	fmt.Println()
	printTargets(all)
	if e.dnsmasqCmd != nil {
		fmt.Printf("\ndnsmasq command line: %s\n", strings.Join(e.dnsmasqCmd, " "))
	}
	fmt.Printf("total time %v\n", time.Since(start).Round(time.Second))
	if o.plot != "" {
		if err := plot(all, o.targets, o.plot); err != nil {
			return err
		}
		fmt.Printf("plot: %s\n", o.plot)
	}
	return nil
}

// runUnit measures cells that belong together (one cell, or the flood
// case's two) for every target, round after round.
func runUnit(e *env, o options, unit []cell, seq int, hotFile string) ([]measured, error) {
	ms := make([]measured, 0, len(unit)*len(o.targets))
	for _, c := range unit {
		for _, t := range o.targets {
			ms = append(ms, measured{cell: c, target: t})
		}
	}
	for r := range o.rounds {
		for ci, c := range unit {
			tag := fmt.Sprintf("%d-%d-%d", seq, ci, r)
			vms := e.vms[:c.vms]
			profile := profileBench
			var flood *floodSpec
			rate := 0
			if c.kind != cellPlain {
				// The measured VM asks at a steady rate within its
				// port's share, alone and then beside the flood.
				vms = e.vms[1:2]
				profile = profileDefaults
				rate = o.victimRate
			}
			files, capacity, err := queryFiles(e.lab.Dir, c.mix, tag, len(vms), o.duration)
			if err != nil {
				return nil, err
			}
			if c.kind == cellFlooded {
				ff, _, err := queryFiles(e.lab.Dir, mixUnique, tag+"f", 1, o.duration+4*time.Second)
				if err != nil {
					return nil, err
				}
				files = append(files, ff...)
				flood = &floodSpec{vm: e.vms[0], file: ff[0], outstanding: o.floodQ}
			}
			for ti, t := range o.targets {
				ep, err := e.prepare(t, c.delay, profile)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", targetNames[t], err)
				}
				if c.mix != mixUnique && t != kindDirect {
					if err := prime(e.vms[0], ep, hotFile); err != nil {
						return nil, fmt.Errorf("%s: %w", targetNames[t], err)
					}
				}
				res, err := measure(vms, ep, files[:len(vms)], capacity, c.conc, rate, o.duration, flood)
				if err != nil {
					return nil, fmt.Errorf("%s, %s: %w", c.label(), targetNames[t], err)
				}
				fmt.Fprintf(os.Stderr, "bench: %-22s round %d  %-22s %8.0f QPS  p99 %7.3f ms\n",
					c.label(), r+1, targetNames[t], res.qps, res.p99Ms)
				m := &ms[ci*len(o.targets)+ti]
				m.rounds = append(m.rounds, res)
			}
			for _, f := range files {
				if err := os.Remove(f); err != nil {
					return nil, err
				}
			}
		}
	}
	return ms, nil
}

// groupCells splits measurements into one slice per cell, in order.
func groupCells(ms []measured) [][]measured {
	var groups [][]measured
	for i, m := range ms {
		if i == 0 || m.cell != ms[i-1].cell {
			groups = append(groups, nil)
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], m)
	}
	return groups
}
