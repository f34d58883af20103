package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// printHeader prints the results table's header.
func printHeader() {
	fmt.Println("| cell | target | QPS | mean ms | p99 ms | failed | CPU µs/answer: total (OVS + upstream + target) | × direct | × dnsmasq |")
	fmt.Println("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
}

// cellText describes a cell in the table.
func cellText(c cell) string {
	delay := "0"
	if c.delay > 0 {
		delay = c.delay.String()
	}
	switch c.kind {
	case cellFloodAlone:
		return fmt.Sprintf("flood case: VM2 alone (%s, c=%d)", c.mix, c.conc)
	case cellFlooded:
		return fmt.Sprintf("flood case: VM2 while VM1 floods (%s, c=%d)", c.mix, c.conc)
	}
	vms := "1 VM"
	if c.vms > 1 {
		vms = fmt.Sprintf("%d VMs", c.vms)
	}
	return fmt.Sprintf("%s, c=%d, %s, delay %s", c.mix, c.conc, vms, delay)
}

// printRows prints one cell's rows, with ratios to the direct path and to
// dnsmasq in the same cell.
func printRows(ms []measured) {
	var direct, dnsmasq float64
	for _, m := range ms {
		switch m.target {
		case kindDirect:
			direct = median(m.rounds).qps
		case kindDnsmasq:
			dnsmasq = median(m.rounds).qps
		}
	}
	for _, m := range ms {
		r := median(m.rounds)
		name := targetNames[m.target]
		if m.cell.kind == cellFlooded {
			name += fmt.Sprintf(" (flood answered %.0f/s)", r.floodQPS)
		}
		if m.target == kindDaemon && m.cell.kind == cellPlain {
			switch m.cell.mix {
			case mixHot:
				name += ", warm"
			case mixUnique:
				name += ", cold"
			}
		}
		qps := fmt.Sprintf("%.0f", r.qps)
		if r.wrapped {
			qps += " (names repeated)"
		}
		fmt.Printf("| %s | %s | %s | %.3f | %.3f | %d | %s | %s | %s |\n",
			cellText(m.cell), name, qps, r.meanMs, r.p99Ms, r.failed, cpuText(m, r), ratio(r.qps, direct), ratio(r.qps, dnsmasq))
	}
}

// cpuText renders CPU time per answer: the total, then OVS, the upstream
// (with the delay relay) and the target.
func cpuText(m measured, r result) string {
	if len(r.cpu) < 2 {
		return "-"
	}
	parts := []time.Duration{r.cpu[0], r.cpu[1]}
	rest := r.cpu[2:]
	if m.cell.delay > 0 && len(rest) > 0 {
		parts[1] += rest[0]
		rest = rest[1:]
	}
	parts = append(parts, rest...)
	s := make([]string, len(parts))
	for i, d := range parts {
		s[i] = fmt.Sprintf("%.1f", micros(d))
	}
	return fmt.Sprintf("%.1f (%s)", micros(r.cpuTotal), strings.Join(s, " + "))
}

// ratio formats a/b, or "-" without b.
func ratio(a, b float64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// printTargets checks the targets against the medians: warm-cache
// throughput at least 1.5x dnsmasq's and at least unbound's (c > 1: at
// c=1 dnsperf sets the pace), and a VM
// keeping 90 % of its throughput while another floods.
func printTargets(all []measured) {
	qps := map[cell]map[string]float64{}
	for _, m := range all {
		if qps[m.cell] == nil {
			qps[m.cell] = map[string]float64{}
		}
		qps[m.cell][m.target] = median(m.rounds).qps
	}
	fmt.Println("Targets (benchmarks, medians of this run):")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	seen := map[cell]bool{}
	for _, m := range all {
		c := m.cell
		if seen[c] {
			continue
		}
		seen[c] = true
		q := qps[c]
		d, okD := q[kindDaemon]
		if c.kind == cellPlain && c.mix == mixHot && c.conc > 1 && okD {
			if x, ok := q[kindDnsmasq]; ok && x > 0 {
				fmt.Printf("- warm cache, %s: daemon/dnsmasq = %.2f (want >= 1.5): %s\n", cellText(c), d/x, verdict(d >= 1.5*x))
			}
			if x, ok := q[kindUnbound]; ok && x > 0 {
				fmt.Printf("- warm cache, %s: daemon/unbound = %.2f (want >= 1.0): %s\n", cellText(c), d/x, verdict(d >= x))
			}
		}
		if c.kind == cellFlooded {
			alone := c
			alone.kind = cellFloodAlone
			for _, t := range []string{kindDaemon, kindDirect, kindDnsmasq, kindUnbound} {
				a, ok1 := qps[alone][t]
				f, ok2 := q[t]
				if !ok1 || !ok2 || a <= 0 {
					continue
				}
				line := fmt.Sprintf("- flood, %s: VM2 keeps %.0f %% of its throughput alone (%.0f of %.0f QPS)", targetNames[t], 100*f/a, f, a)
				if t == kindDaemon {
					line += fmt.Sprintf(" (want >= 90 %%): %s", verdict(f >= 0.9*a))
				}
				fmt.Println(line)
			}
		}
	}
}

// plot draws throughput and p99 latency per target and cell with
// gnuplot into a PNG. Cells at concurrency 1 are left out: there dnsperf's
// own hand-off sets the pace.
func plot(all []measured, targets []string, path string) error {
	var labels []cell
	val := map[cell]map[string]result{}
	for _, m := range all {
		if m.cell.conc == 1 && m.cell.kind == cellPlain {
			continue
		}
		if val[m.cell] == nil {
			val[m.cell] = map[string]result{}
			labels = append(labels, m.cell)
		}
		val[m.cell][m.target] = median(m.rounds)
	}
	if len(labels) == 0 {
		return nil
	}
	var data bytes.Buffer
	for _, c := range labels {
		fmt.Fprintf(&data, "%q", c.label())
		for _, field := range []func(result) float64{
			func(r result) float64 { return r.qps / 1000 },
			func(r result) float64 { return r.p99Ms },
		} {
			for _, t := range targets {
				if r, ok := val[c][t]; ok {
					fmt.Fprintf(&data, " %g", field(r))
				} else {
					data.WriteString(" -")
				}
			}
		}
		data.WriteString("\n")
	}
	dir, err := os.MkdirTemp("", "odf-bench-plot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dataPath := filepath.Join(dir, "data")
	if err := os.WriteFile(dataPath, data.Bytes(), 0o644); err != nil {
		return err
	}
	var script strings.Builder
	fmt.Fprintf(&script, `set terminal pngcairo size 1600,1100 font "DejaVu Sans,11"
set output %q
set datafile missing "-"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key outside right top vertical
set xtics rotate by -25 scale 0 font ",10"
set lmargin 10
set rmargin 28
set multiplot layout 2,1 title "ovs-dns-forwarder benchmark, %s (medians; c = outstanding queries per VM)"
set ylabel "thousand answers/s"
set yrange [0:*]
`, path, time.Now().Format("2006-01-02"))
	plotLine := func(first int) string {
		var parts []string
		for i, t := range targets {
			p := fmt.Sprintf("'%s' using %d", dataPath, first+i)
			if i == 0 {
				p += ":xtic(1)"
			}
			parts = append(parts, p+fmt.Sprintf(" title %q", targetNames[t]))
		}
		return "plot " + strings.Join(parts, ", ") + "\n"
	}
	script.WriteString(plotLine(2))
	script.WriteString("set ylabel \"p99 latency, ms (log)\"\nset logscale y\nset yrange [*:*]\n")
	script.WriteString(plotLine(2 + len(targets)))
	script.WriteString("unset multiplot\n")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	cmd := exec.Command("gnuplot")
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %v\n%s", err, out)
	}
	return nil
}
