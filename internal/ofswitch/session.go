package ofswitch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/openflow"
)

// errPeerSilent ends a session whose peer sent nothing for three echo
// intervals.
var errPeerSilent = errors.New("ofswitch: switch silent for three echo intervals")

// maxBatch bounds the messages written between two flushes.
const maxBatch = 256

// conn is one connection: the reader, the writer and the keeper (the
// goroutine running session) share it.
type conn struct {
	nc   net.Conn
	ctrl chan []byte  // control messages for the writer
	pkts chan *[]byte // packet-outs for the writer (pooled buffers)
	done chan struct{}
	once sync.Once
	err  error // why the connection ended; read after done is closed

	lastRecv atomic.Int64 // unix nanoseconds of the last message read
	closing  atomic.Bool  // shutting down: our own deletes are expected

	// Reader to keeper; the reader never blocks on them but for ports,
	// which it gives up when the connection ends.
	removed chan flowKey
	stats   chan statsResult
	meters  chan meterResult
	ports   chan portEvent
	barrier chan uint32
}

// statsResult is one complete flow-stats dump.
type statsResult struct {
	xid   uint32
	flows []openflow.FlowStats
}

// meterResult is one complete meter-stats dump.
type meterResult struct {
	xid    uint32
	meters []openflow.MeterStats
}

// portEvent is a change of the bridge's ports: the whole list (from
// PORT_DESC) or one port added or deleted (PORT_STATUS).
type portEvent struct {
	all    bool
	ports  []uint32
	reason uint8
}

// fail ends the connection with err (the first failure wins).
func (c *conn) fail(err error) {
	c.once.Do(func() {
		c.err = err
		close(c.done)
		_ = c.nc.Close()
	})
}

// send hands a control message to the writer; false if the connection ended.
func (c *conn) send(msg []byte) bool {
	select {
	case c.ctrl <- msg:
		return true
	case <-c.done:
		return false
	}
}

// session runs one connection: handshake, flows, then the loops until ctx
// ends or the connection fails. up reports whether the handshake completed.
func (s *Switch) session(ctx context.Context, nc net.Conn, onPacketIn func(uint32, []byte)) (up bool, err error) {
	c := &conn{
		nc:      nc,
		ctrl:    make(chan []byte, 256),
		pkts:    make(chan *[]byte, s.queueLen),
		done:    make(chan struct{}),
		removed: make(chan flowKey, 256),
		stats:   make(chan statsResult, 1),
		meters:  make(chan meterResult, 1),
		ports:   make(chan portEvent, 64),
		barrier: make(chan uint32, 8),
	}
	br := bufio.NewReaderSize(nc, openflow.MaxMessageLen)
	buf := make([]byte, openflow.MaxMessageLen)
	if err := s.hello(ctx, nc, br, buf); err != nil {
		_ = nc.Close()
		return false, err
	}
	c.lastRecv.Store(time.Now().UnixNano())

	var wg sync.WaitGroup
	wg.Go(func() { s.writeLoop(c) })
	wg.Go(func() { s.readLoop(c, br, buf, onPacketIn) })
	defer func() {
		wg.Wait()
		s.drop(c)
	}()

	setup := openflow.AppendSetConfig(nil, s.nextXID(), 0, openflow.MaxLenNoBuffer)
	setup = openflow.AppendSetControllerID(setup, s.nextXID(), s.cfg.ControllerID)
	c.send(setup)
	installed := s.install(c)
	s.count(cFlowInstalls)
	c.send(openflow.AppendPortDescRequest(nil, s.nextXID()))
	if s.counters[cConnects].Add(1) > 1 {
		s.count(cReconnects)
	}
	s.log.Info("openflow connected", "target", s.target, "version", "1.3",
		"controller_id", s.cfg.ControllerID, "meters", len(s.meters), "flows", len(s.flows))
	s.cur.Store(c)

	err = s.keep(ctx, c, installed)
	s.cur.CompareAndSwap(c, nil)
	c.fail(err)
	return true, err
}

// hello exchanges HELLO messages and checks that the peer offers 1.3.
func (s *Switch) hello(ctx context.Context, nc net.Conn, br *bufio.Reader, buf []byte) error {
	deadline := time.Now().Add(s.handshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := nc.Write(openflow.AppendHello(nil, s.nextXID())); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	h, msg, err := openflow.ReadMessage(br, buf)
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	if h.Type != openflow.TypeHello {
		return fmt.Errorf("first message has type %d, want HELLO", h.Type)
	}
	versions, err := openflow.ParseHello(msg)
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if versions&(1<<openflow.Version) == 0 {
		return fmt.Errorf("%w (it offers version bitmap %#x)", ErrVersion, versions)
	}
	if !stop() {
		return ctx.Err()
	}
	_ = nc.SetDeadline(time.Time{})
	return nil
}

// install queues the whole set (every meter added, then modified to
// settle one that existed already; every flow added) and a barrier; it
// returns the xid of the first message, after which dumps show the new set.
func (s *Switch) install(c *conn) uint32 {
	first := s.nextXID()
	msg := make([]byte, 0, 48*len(s.meters)+256*len(s.flows)+openflow.HeaderLen)
	xid := first
	next := func() uint32 {
		x := xid
		xid = s.nextXID()
		return x
	}
	for i := range s.meters {
		mm := s.meters[i]
		msg = openflow.AppendMeterMod(msg, next(), &mm)
		mm.Command = openflow.MeterModify
		msg = openflow.AppendMeterMod(msg, next(), &mm)
	}
	for i := range s.flows {
		msg = s.appendFlow(msg, next(), &s.flows[i])
	}
	msg = openflow.AppendBarrierRequest(msg, xid)
	c.send(msg)
	return first
}

// appendFlow appends fm, logging a flow it cannot encode.
func (s *Switch) appendFlow(msg []byte, xid uint32, fm *openflow.FlowMod) []byte {
	out, err := openflow.AppendFlowMod(msg, xid, fm)
	if err != nil {
		s.log.Error("flow not installed", "priority", fm.Priority, "err", err)
	}
	return out
}

// sameFlow reports whether two declared flows with the same key have the
// same instructions and settings.
func sameFlow(a, b *openflow.FlowMod) bool {
	return a.MeterID == b.MeterID && a.ControllerID == b.ControllerID && a.MaxLen == b.MaxLen &&
		a.Flags == b.Flags && a.IdleTimeout == b.IdleTimeout && a.HardTimeout == b.HardTimeout &&
		a.TableID == b.TableID && slices.Equal(a.Actions, b.Actions) && slices.Equal(a.Output, b.Output)
}

// update applies a change of ports or a Refresh: it declares the set for
// the known ports and queues what differs from the current one (new and changed meters,
// new and changed flows, strict deletes of flows no longer declared, then
// deletes of meters no longer declared). It returns the xid of its first
// message, or ok false when nothing changed.
func (s *Switch) update(c *conn) (first uint32, ok bool) {
	d := s.declare(s.ports)
	first = s.nextXID()
	xid := first
	next := func() uint32 {
		x := xid
		xid = s.nextXID()
		return x
	}
	var msg []byte
	for i := range d.meters {
		mm := d.meters[i]
		j, had := s.meterIdx[mm.MeterID]
		if had && s.meters[j] == mm {
			continue
		}
		if !had {
			msg = openflow.AppendMeterMod(msg, next(), &mm)
		}
		mm.Command = openflow.MeterModify
		msg = openflow.AppendMeterMod(msg, next(), &mm)
	}
	for i := range d.flows {
		fm := &d.flows[i]
		if fm.TableID == s.cfg.TableID {
			if j, had := s.want[keyOf(fm.Priority, fm.Match)]; had && sameFlow(&s.flows[j], fm) {
				continue
			}
		}
		msg = s.appendFlow(msg, next(), fm)
	}
	for i := range s.flows {
		fm := &s.flows[i]
		if _, keep := d.want[keyOf(fm.Priority, fm.Match)]; keep && fm.TableID == s.cfg.TableID {
			continue
		}
		del := openflow.FlowMod{
			Cookie: s.cfg.Cookie, CookieMask: ^uint64(0), TableID: fm.TableID,
			Command: openflow.FlowDeleteStrict, Priority: fm.Priority,
			OutPort: openflow.PortAny, OutGroup: openflow.GroupAny, Match: fm.Match,
		}
		msg = s.appendFlow(msg, next(), &del)
	}
	for _, mm := range s.meters {
		if _, keep := d.meterIdx[mm.MeterID]; keep {
			continue
		}
		msg = openflow.AppendMeterMod(msg, next(), &openflow.MeterMod{Command: openflow.MeterDelete, MeterID: mm.MeterID})
	}
	s.setDeclared(d)
	if len(msg) == 0 {
		return 0, false
	}
	c.send(msg)
	return first, true
}

// portsChanged applies a port event to the known ports and reports whether
// they changed.
func (s *Switch) portsChanged(ev portEvent) bool {
	old := s.ports
	var ports []uint32
	switch {
	case ev.all:
		ports = slices.Clone(ev.ports)
	case ev.reason == openflow.PortDeleted:
		ports = slices.DeleteFunc(slices.Clone(old), func(p uint32) bool { return slices.Contains(ev.ports, p) })
	default:
		ports = append(slices.Clone(old), ev.ports...)
	}
	ports = slices.DeleteFunc(ports, func(p uint32) bool { return p == 0 || p > openflow.PortMax })
	slices.Sort(ports)
	ports = slices.Compact(ports)
	s.counters[gPorts].Store(uint64(len(ports)))
	if slices.Equal(ports, old) {
		return false
	}
	s.ports = ports
	return true
}

// keep is the keeper loop: echoes, periodic checks of flows and meters,
// port changes, refreshes, debounced reinstalls and the shutdown. changed is the xid
// of the last change of the set: dumps asked before it are ignored.
func (s *Switch) keep(ctx context.Context, c *conn, changed uint32) error {
	echo := time.NewTicker(s.echoInterval)
	defer echo.Stop()
	check := time.NewTicker(s.checkInterval)
	defer check.Stop()
	var debounce <-chan time.Time
	reason := ""
	arm := func(why string) {
		if debounce == nil {
			debounce = time.After(s.debounce)
			reason = why
		}
	}
	before := func(xid uint32) bool { return int32(xid-changed) < 0 }
	for {
		select {
		case <-ctx.Done():
			s.shutdown(c)
			return ctx.Err()
		case <-c.done:
			return c.err
		case <-echo.C:
			if time.Since(time.Unix(0, c.lastRecv.Load())) > 3*s.echoInterval {
				s.count(cEchoTimeouts)
				return errPeerSilent
			}
			c.send(openflow.AppendEchoRequest(nil, s.nextXID(), nil))
		case <-check.C:
			msg := openflow.AppendFlowStatsRequest(nil, s.nextXID(), s.cfg.TableID, s.cfg.Cookie, ^uint64(0))
			c.send(openflow.AppendMeterStatsRequest(msg, s.nextXID(), openflow.MeterAll))
		case k := <-c.removed:
			if _, ok := s.want[k]; ok {
				arm("flow_removed")
			}
		case ev := <-c.ports:
			if !s.portsChanged(ev) {
				continue
			}
			s.count(cPortChanges)
			if xid, ok := s.update(c); ok {
				changed = xid
				s.log.Info("flows updated for ports", "ports", len(s.ports), "meters", len(s.meters), "flows", len(s.flows))
			}
		case <-s.refresh:
			if xid, ok := s.update(c); ok {
				changed = xid
				s.log.Info("flows updated for state", "ports", len(s.ports), "meters", len(s.meters), "flows", len(s.flows))
			}
		case r := <-c.stats:
			if before(r.xid) {
				continue
			}
			missing, stale := s.compare(r.flows)
			if missing > 0 {
				arm("flow_stats")
			}
			if len(stale) > 0 {
				s.removeStale(c, stale)
			}
		case r := <-c.meters:
			missing, stale := s.compareMeters(r.meters)
			if before(r.xid) {
				continue
			}
			if missing > 0 {
				arm("meter_stats")
			}
			if len(stale) > 0 {
				s.removeStaleMeters(c, stale)
			}
		case <-debounce:
			debounce = nil
			changed = s.install(c)
			s.count(cFlowReinstalls)
			s.log.Info("flows reinstalled", "reason", reason, "meters", len(s.meters), "flows", len(s.flows))
		}
	}
}

// compare checks a dump of the set's table against the declared flows: it
// returns how many are missing and the flows that are not declared.
func (s *Switch) compare(dump []openflow.FlowStats) (missing int, stale []openflow.FlowStats) {
	seen := make(map[flowKey]struct{}, len(s.want))
	for _, f := range dump {
		if f.Cookie != s.cfg.Cookie || f.TableID != s.cfg.TableID {
			continue
		}
		k := keyOf(f.Priority, f.Match)
		if _, ok := s.want[k]; ok {
			seen[k] = struct{}{}
		} else {
			stale = append(stale, f)
		}
	}
	return len(s.want) - len(seen), stale
}

// compareMeters adds the drops the daemon's meters counted since the last
// dump to meter_drops and checks the dump against the declared meters: it
// returns how many are missing and the ids of the daemon's meters that
// are not declared.
func (s *Switch) compareMeters(dump []openflow.MeterStats) (missing int, stale []uint32) {
	seen := 0
	last := make(map[uint32]uint64, len(s.lastBand))
	for _, m := range dump {
		if !s.ownsMeter(m.MeterID) {
			continue
		}
		prev, ok := s.lastBand[m.MeterID]
		if !ok || m.BandPackets < prev {
			prev = 0 // a new meter, or one re-created
		}
		s.counters[cMeterDrops].Add(m.BandPackets - prev)
		last[m.MeterID] = m.BandPackets
		if _, ok := s.meterIdx[m.MeterID]; ok {
			seen++
		} else {
			stale = append(stale, m.MeterID)
		}
	}
	s.lastBand = last
	return len(s.meters) - seen, stale
}

// removeStale deletes flows carrying the cookie that the set does not
// declare (left by an earlier run with other flows).
func (s *Switch) removeStale(c *conn, stale []openflow.FlowStats) {
	var msg []byte
	for _, f := range stale {
		fm := openflow.FlowMod{
			Cookie: s.cfg.Cookie, CookieMask: ^uint64(0), TableID: f.TableID,
			Command: openflow.FlowDeleteStrict, Priority: f.Priority,
			OutPort: openflow.PortAny, OutGroup: openflow.GroupAny, Match: f.Match,
		}
		var err error
		if msg, err = openflow.AppendFlowMod(msg, s.nextXID(), &fm); err != nil {
			continue
		}
		s.count(cStaleFlowsRemoved)
	}
	if len(msg) > 0 {
		c.send(msg)
		s.log.Info("stale flows removed", "flows", len(stale))
	}
}

// removeStaleMeters deletes meters of the daemon's id block that the set
// does not declare (left by a port that went away while disconnected, or
// by an earlier run).
func (s *Switch) removeStaleMeters(c *conn, ids []uint32) {
	var msg []byte
	for _, id := range ids {
		msg = openflow.AppendMeterMod(msg, s.nextXID(), &openflow.MeterMod{Command: openflow.MeterDelete, MeterID: id})
		s.count(cStaleMetersRemoved)
	}
	c.send(msg)
	s.log.Info("stale meters removed", "meters", len(ids))
}

// shutdown deletes the flows by cookie, then the declared meters, and waits
// briefly for the barrier that confirms it.
func (s *Switch) shutdown(c *conn) {
	c.closing.Store(true)
	s.cur.CompareAndSwap(c, nil)
	del := openflow.FlowMod{
		Cookie: s.cfg.Cookie, CookieMask: ^uint64(0), TableID: openflow.TableAll,
		Command: openflow.FlowDelete, OutPort: openflow.PortAny, OutGroup: openflow.GroupAny,
	}
	msg, _ := openflow.AppendFlowMod(nil, s.nextXID(), &del)
	for _, mm := range s.meters {
		msg = openflow.AppendMeterMod(msg, s.nextXID(), &openflow.MeterMod{Command: openflow.MeterDelete, MeterID: mm.MeterID})
	}
	xid := s.nextXID()
	msg = openflow.AppendBarrierRequest(msg, xid)
	if !c.send(msg) {
		s.log.Warn("flows not removed: connection lost", "cookie", fmt.Sprintf("%#x", s.cfg.Cookie))
		return
	}
	timeout := time.NewTimer(s.shutdownTimeout)
	defer timeout.Stop()
	for {
		select {
		case got := <-c.barrier:
			if got == xid {
				s.log.Info("flows and meters removed", "cookie", fmt.Sprintf("%#x", s.cfg.Cookie), "meters", len(s.meters))
				return
			}
		case <-c.done:
			s.log.Warn("flow removal unconfirmed: connection lost", "err", c.err)
			return
		case <-timeout.C:
			s.log.Warn("flow removal unconfirmed: no barrier reply", "timeout", s.shutdownTimeout)
			return
		}
	}
}

// drop recycles packet-outs left in the queue of an ended connection,
// counting them as errors.
func (s *Switch) drop(c *conn) {
	for {
		select {
		case bp := <-c.pkts:
			s.bufs.Put(bp)
			s.count(cPacketOutErrors)
		default:
			return
		}
	}
}

// writeLoop writes queued messages in batches, one flush per batch.
func (s *Switch) writeLoop(c *conn) {
	bw := bufio.NewWriterSize(c.nc, 64<<10)
	for {
		var first []byte
		var firstPkt *[]byte
		select {
		case <-c.done:
			return
		case first = <-c.ctrl:
		case firstPkt = <-c.pkts:
		}
		_ = c.nc.SetWriteDeadline(time.Now().Add(s.writeTimeout))
		var err error
		pkts := 0
		write := func(b []byte) {
			if err == nil {
				_, err = bw.Write(b)
			}
		}
		if first != nil {
			write(first)
		} else {
			write(*firstPkt)
			s.bufs.Put(firstPkt)
			pkts++
		}
	batch:
		for n := 1; n < maxBatch; n++ {
			select {
			case b := <-c.ctrl:
				write(b)
			case bp := <-c.pkts:
				write(*bp)
				s.bufs.Put(bp)
				pkts++
			default:
				break batch
			}
		}
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			s.counters[cPacketOutErrors].Add(uint64(pkts))
			c.fail(fmt.Errorf("write: %w", err))
			return
		}
		s.counters[cPacketOuts].Add(uint64(pkts))
	}
}

// sendPorts hands a port event to the keeper, giving up when the
// connection ends.
func (s *Switch) sendPorts(c *conn, ev portEvent) {
	select {
	case c.ports <- ev:
	case <-c.done:
	}
}

// readLoop reads and dispatches messages until the connection fails.
func (s *Switch) readLoop(c *conn, br *bufio.Reader, buf []byte, onPacketIn func(uint32, []byte)) {
	var pi openflow.PacketIn
	var dump []openflow.FlowStats
	var dumpXID uint32
	var meters []openflow.MeterStats
	var metersXID uint32
	var ports []openflow.Port
	var portsXID uint32
	for {
		h, msg, err := openflow.ReadMessage(br, buf)
		if err != nil {
			c.fail(fmt.Errorf("read: %w", err))
			return
		}
		c.lastRecv.Store(time.Now().UnixNano())
		switch h.Type {
		case openflow.TypePacketIn:
			if err := openflow.ParsePacketIn(msg, &pi); err != nil {
				s.count(cBadMessages)
				continue
			}
			s.count(cPacketIns)
			if onPacketIn != nil {
				onPacketIn(pi.InPort, pi.Data)
			}
		case openflow.TypeEchoRequest:
			data, err := openflow.EchoData(msg)
			if err != nil {
				s.count(cBadMessages)
				continue
			}
			select {
			case c.ctrl <- openflow.AppendEchoReply(nil, h.XID, data):
			default:
			}
		case openflow.TypeFlowRemoved:
			fr, err := openflow.ParseFlowRemoved(msg)
			if err != nil {
				s.count(cBadMessages)
				continue
			}
			deleted := fr.Reason == openflow.RemovedDelete || fr.Reason == openflow.RemovedMeterDelete
			if fr.Cookie == s.cfg.Cookie && fr.TableID == s.cfg.TableID && deleted && !c.closing.Load() {
				// A full queue holds deletions already; the next dump
				// finds any other.
				select {
				case c.removed <- keyOf(fr.Priority, fr.Match):
				default:
				}
			}
		case openflow.TypePortStatus:
			ps, err := openflow.ParsePortStatus(msg)
			if err != nil {
				s.count(cBadMessages)
				continue
			}
			s.sendPorts(c, portEvent{ports: []uint32{ps.Port.No}, reason: ps.Reason})
		case openflow.TypeMultipartReply:
			typ, err := openflow.MultipartType(msg)
			if err != nil {
				s.count(cBadMessages)
				continue
			}
			switch typ {
			case openflow.MultipartMeter:
				if h.XID != metersXID {
					meters, metersXID = meters[:0], h.XID
				}
				var more bool
				if meters, more, err = openflow.ParseMeterStatsReply(msg, meters); err != nil {
					s.count(cBadMessages)
					meters, metersXID = meters[:0], 0
					continue
				}
				if !more {
					select {
					case c.meters <- meterResult{xid: h.XID, meters: slices.Clone(meters)}:
					default:
					}
					meters, metersXID = meters[:0], 0
				}
				continue
			case openflow.MultipartPortDesc:
				if h.XID != portsXID {
					ports, portsXID = ports[:0], h.XID
				}
				var more bool
				if ports, more, err = openflow.ParsePortDescReply(msg, ports); err != nil {
					s.count(cBadMessages)
					ports, portsXID = ports[:0], 0
					continue
				}
				if !more {
					ev := portEvent{all: true, ports: make([]uint32, 0, len(ports))}
					for _, p := range ports {
						ev.ports = append(ev.ports, p.No)
					}
					s.sendPorts(c, ev)
					ports, portsXID = ports[:0], 0
				}
				continue
			case openflow.MultipartFlow:
			default:
				continue
			}
			if h.XID != dumpXID {
				dump, dumpXID = dump[:0], h.XID
			}
			var more bool
			dump, more, err = openflow.ParseFlowStatsReply(msg, dump)
			if err != nil {
				s.count(cBadMessages)
				dump, dumpXID = dump[:0], 0
				continue
			}
			if !more {
				select {
				case c.stats <- statsResult{xid: h.XID, flows: slices.Clone(dump)}:
				default:
				}
				dump, dumpXID = dump[:0], 0
			}
		case openflow.TypeBarrierReply:
			if !c.closing.Load() {
				continue // only the shutdown waits for a barrier
			}
			select {
			case c.barrier <- h.XID:
			default:
			}
		case openflow.TypeError:
			e, err := openflow.ParseError(msg)
			if err != nil {
				s.count(cOpenFlowErrors)
				s.count(cBadMessages)
				continue
			}
			if e.Type == openflow.ErrorTypeMeterModFailed && e.Code == openflow.MeterErrExists {
				continue // a meter add before the modify that settles it
			}
			s.count(cOpenFlowErrors)
			attrs := []any{"type", e.TypeName(), "code", e.Code, "xid", h.XID}
			if req, err := openflow.ParseHeader(e.Data); err == nil {
				attrs = append(attrs, "request_type", req.Type)
			}
			s.log.Warn("openflow error from switch", attrs...)
		}
	}
}
