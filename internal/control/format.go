package control

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// FormatStatus writes s for a person: a header line, then one section
// per part of the daemon with aligned columns.
func FormatStatus(w io.Writer, s Status) {
	formatStatus(w, s, time.Now())
}

// formatStatus is FormatStatus with the current time given, for tests.
func formatStatus(w io.Writer, s Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format, a...) }

	p("ovs-dns-forwarder %s on bridge %s, up %s (since %s)\n",
		orDash(s.Version), orDash(s.Bridge), ago(s.Started, now), stamp(s.Started))

	of := s.OpenFlow
	p("\nOpenFlow\n")
	p("  connected\t%s\t%s\n", yesNo(of.Connected), of.Target)
	p("  flows\t%d\n", of.Flows)
	p("  meters\t%d\n", of.Meters)
	p("  ports\t%d\n", of.Ports)
	p("  reconnects\t%d\n", of.Reconnects)
	p("  flow reinstalls\t%d\n", of.FlowReinstalls)
	tw.Flush()

	p("\nUpstreams\n")
	if len(s.Upstreams) == 0 {
		p("  none\n")
	} else {
		p("  SERVER\tSTATE\tFAILURES\tAVG RTT\tLAST ERROR\n")
		for _, u := range s.Upstreams {
			state := "down"
			if u.Up {
				state = "up"
			}
			p("  %s\t%s\t%d\t%s\t%s\n", u.Server, state, u.ConsecutiveFailures, rtt(u.AvgRTT), orDash(oneLine(u.LastError)))
		}
	}
	tw.Flush()

	p("\nCache\n")
	if c := s.Cache; c == nil {
		p("  off\n")
	} else {
		p("  entries\t%d\n", c.Entries)
		p("  hits\t%d\t%s\n", c.Hits, ratio(c.Hits, c.Hits+c.Misses))
		p("  misses\t%d\n", c.Misses)
		p("  evictions\t%d\n", c.Evictions)
	}
	tw.Flush()

	inv := s.Inventory
	p("\nInventory (OVSDB)\n")
	p("  connected\t%s\n", yesNo(inv.Connected))
	p("  VM ports\t%d\n", inv.VMPorts)
	p("  networks\t%d\n", len(inv.Networks))
	tw.Flush()

	p("\nRecords (Neutron)\n")
	if r := s.Records; r == nil {
		p("  off (no Neutron API configured)\n")
	} else {
		if r.LastSync.IsZero() {
			p("  last sync\tnever\n")
		} else {
			p("  last sync\t%s (%s ago)\n", stamp(r.LastSync), ago(r.LastSync, now))
		}
		p("  sync errors\t%d\n", r.SyncErrors)
		tw.Flush()
		if len(r.Networks) > 0 {
			p("  NETWORK\tPORTS\tNAMES\n")
			nets := slices.Clone(r.Networks)
			slices.SortFunc(nets, func(a, b NetworkRecords) int { return strings.Compare(a.ID, b.ID) })
			for _, n := range nets {
				p("  %s\t%d\t%d\n", n.ID, n.Ports, n.Names)
			}
		}
	}
	tw.Flush()

	p("\nCounters\n")
	if len(s.Counters) == 0 {
		p("  none\n")
	} else {
		keys := make([]string, 0, len(s.Counters))
		for k := range s.Counters {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p("  %s\t%d\n", k, s.Counters[k])
		}
	}
	tw.Flush()

	p("\nRecent errors\n")
	if len(s.RecentErrors) == 0 {
		p("  none\n")
	} else {
		for _, e := range s.RecentErrors {
			repeat := ""
			if e.Count > 1 {
				repeat = fmt.Sprintf("(x%d)", e.Count)
			}
			p("  %s\t%s\t%s\t%s\n", stamp(e.Time), orDash(e.Level), repeat, oneLine(e.Message))
		}
	}
	tw.Flush()
}

// stamp formats t to the second, with its offset; "-" for the zero time.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

// ago is the time from t to now, to the second.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return max(now.Sub(t), 0).Round(time.Second).String()
}

// rtt formats a round-trip time in milliseconds; "-" before any sample.
func rtt(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
}

// ratio formats part/whole as a hit ratio; "" when whole is 0.
func ratio(part, whole uint64) string {
	if whole == 0 {
		return ""
	}
	return strconv.FormatFloat(100*float64(part)/float64(whole), 'f', 1, 64) + "% of lookups"
}

// yesNo spells a boolean.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// orDash returns s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps a message on one line and free of the tab that would
// break the columns.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
}
