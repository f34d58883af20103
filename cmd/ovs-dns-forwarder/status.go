package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/control"
	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/metrics"
)

// controlTimeout bounds a status or flush-cache request.
const controlTimeout = 5 * time.Second

// talk runs the status and flush-cache commands against a running
// daemon's control socket.
func talk(command string, asJSON bool, socket string, stdout, stderr io.Writer) int {
	if socket == "" {
		fmt.Fprintln(stderr, "ovs-dns-forwarder: control_socket is empty: the daemon has no control socket")
		return exitUsage
	}
	out, err := control.Query(socket, command, controlTimeout)
	if err != nil {
		fmt.Fprintf(stderr, "ovs-dns-forwarder: %s: %v\n", command, err)
		return exitFailed
	}
	if command == "flush-cache" || asJSON {
		var b bytes.Buffer
		if json.Indent(&b, out, "", "  ") != nil {
			b.Reset()
			b.Write(out)
		}
		fmt.Fprintln(stdout, b.String())
		return exitOK
	}
	var s control.Status
	if err := json.Unmarshal(out, &s); err != nil {
		fmt.Fprintf(stderr, "ovs-dns-forwarder: status: %v\n", err)
		return exitFailed
	}
	control.FormatStatus(stdout, s)
	return exitOK
}

// Status gathers the daemon's state for `status` (control.Handler).
func (d *daemon) Status() control.Status {
	d.mu.Lock()
	cfg := d.cfg
	d.mu.Unlock()
	of := d.sw.Stats()
	s := control.Status{
		Version: version,
		Started: d.started,
		Bridge:  cfg.IntegrationBridge,
		OpenFlow: control.OpenFlowStatus{
			Connected: d.sw.Connected(), Target: cfg.OpenFlowConnection,
			Flows: int(of["flows"]), Meters: int(of["meters"]), Ports: int(of["ports"]),
			Reconnects: of["reconnects"], FlowReinstalls: of["flow_reinstalls"],
		},
		Inventory: control.InventoryStatus{
			Connected: d.inv.Ready(), VMPorts: int(d.inv.Stats()["vm_ports"]), Networks: d.inv.Networks(),
		},
		Counters:     d.resp.Stats(),
		RecentErrors: d.recorder.Recent(),
	}
	for _, h := range d.fwd.cur.Load().Health() {
		u := control.UpstreamStatus{Server: h.Server.String(), Up: h.Up, ConsecutiveFailures: h.ConsecutiveFailures, AvgRTT: h.AvgRTT}
		if h.LastError != nil {
			u.LastError = h.LastError.Error()
		}
		s.Upstreams = append(s.Upstreams, u)
	}
	if d.cache != nil {
		cs := d.cache.Stats()
		s.Cache = &control.CacheStatus{Entries: d.cache.Len(), Hits: cs["hits"], Misses: cs["misses"], Evictions: cs["evictions"]}
	}
	if d.store != nil {
		rs := d.store.Stats()
		r := &control.RecordsStatus{SyncErrors: rs["sync_errors"]}
		if last := rs["last_sync_unix"]; last > 0 {
			r.LastSync = time.Unix(int64(last), 0)
		}
		for _, id := range s.Inventory.Networks {
			if n := d.store.Network(id); n != nil {
				r.Networks = append(r.Networks, control.NetworkRecords{ID: id, Ports: n.Ports(), Names: n.Names()})
			}
		}
		s.Records = r
	}
	return s
}

// FlushCache empties the cache (control.Handler); it returns how many
// entries it held.
func (d *daemon) FlushCache() (int, error) {
	if d.cache == nil {
		return 0, fmt.Errorf("the cache is off (cache_size = 0)")
	}
	n := d.cache.Len()
	d.cache.Flush()
	d.logger.Info("cache flushed", "entries", n)
	return n, nil
}

// metricSources tells the metrics where to read the parts' counters.
func (d *daemon) metricSources() metrics.Sources {
	src := metrics.Sources{
		Responder:         func() map[string]uint64 { return d.resp.Stats() },
		Forward:           func() map[string]uint64 { return d.fwd.cur.Load().Stats() },
		Upstream:          d.client.Stats,
		OpenFlow:          d.sw.Stats,
		OVSDB:             d.inv.Stats,
		Inflight:          func() int64 { return d.resp.Inflight() },
		OpenFlowConnected: d.sw.Connected,
		OVSDBReady:        d.inv.Ready,
		UpstreamHealth: func() []metrics.Server {
			var out []metrics.Server
			for _, h := range d.fwd.cur.Load().Health() {
				out = append(out, metrics.Server{Addr: h.Server.String(), Up: h.Up, ConsecutiveFailures: h.ConsecutiveFailures})
			}
			return out
		},
	}
	if d.cache != nil {
		src.Cache = d.cache.Stats
	}
	if d.store != nil {
		src.Records = d.store.Stats
	}
	if d.local != nil {
		src.Local = d.local.Stats
	}
	return src
}
