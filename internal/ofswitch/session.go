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

	// Reader to keeper; the reader never blocks on them.
	removed chan struct{}
	stats   chan statsResult
	barrier chan uint32
}

// statsResult is one complete flow-stats dump.
type statsResult struct {
	xid   uint32
	flows []openflow.FlowStats
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
		removed: make(chan struct{}, 1),
		stats:   make(chan statsResult, 1),
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
	if s.counters[cConnects].Add(1) > 1 {
		s.count(cReconnects)
	}
	s.log.Info("openflow connected", "target", s.target, "version", "1.3",
		"controller_id", s.cfg.ControllerID, "flows", len(s.flows))
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

// install queues the whole flow set and a barrier; it returns the xid of
// the first flow-mod, after which flow dumps show the new set.
func (s *Switch) install(c *conn) uint32 {
	first := s.nextXID()
	msg := make([]byte, 0, 256*len(s.flows)+openflow.HeaderLen)
	for i := range s.flows {
		xid := first
		if i > 0 {
			xid = s.nextXID()
		}
		// Run checked every flow encodes.
		msg, _ = openflow.AppendFlowMod(msg, xid, &s.flows[i])
	}
	msg = openflow.AppendBarrierRequest(msg, s.nextXID())
	c.send(msg)
	return first
}

// keep is the keeper loop: echoes, periodic flow checks, debounced
// reinstalls and the shutdown.
func (s *Switch) keep(ctx context.Context, c *conn, installed uint32) error {
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
			c.send(openflow.AppendFlowStatsRequest(nil, s.nextXID(), s.cfg.TableID, s.cfg.Cookie, ^uint64(0)))
		case <-c.removed:
			arm("flow_removed")
		case r := <-c.stats:
			if int32(r.xid-installed) < 0 {
				continue // asked before the last install
			}
			missing, stale := s.compare(r.flows)
			if missing > 0 {
				arm("flow_stats")
			}
			if len(stale) > 0 {
				s.removeStale(c, stale)
			}
		case <-debounce:
			debounce = nil
			installed = s.install(c)
			s.count(cFlowReinstalls)
			s.log.Info("flows reinstalled", "reason", reason, "flows", len(s.flows))
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

// shutdown deletes the flows by cookie and waits briefly for the barrier
// that confirms it.
func (s *Switch) shutdown(c *conn) {
	c.closing.Store(true)
	s.cur.CompareAndSwap(c, nil)
	del := openflow.FlowMod{
		Cookie: s.cfg.Cookie, CookieMask: ^uint64(0), TableID: openflow.TableAll,
		Command: openflow.FlowDelete, OutPort: openflow.PortAny, OutGroup: openflow.GroupAny,
	}
	msg, _ := openflow.AppendFlowMod(nil, s.nextXID(), &del)
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
				s.log.Info("flows removed", "cookie", fmt.Sprintf("%#x", s.cfg.Cookie))
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

// readLoop reads and dispatches messages until the connection fails.
func (s *Switch) readLoop(c *conn, br *bufio.Reader, buf []byte, onPacketIn func(uint32, []byte)) {
	var pi openflow.PacketIn
	var dump []openflow.FlowStats
	var dumpXID uint32
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
			if fr.Cookie == s.cfg.Cookie && fr.Reason == openflow.RemovedDelete && !c.closing.Load() {
				select {
				case c.removed <- struct{}{}:
				default:
				}
			}
		case openflow.TypeMultipartReply:
			if typ, err := openflow.MultipartType(msg); err != nil || typ != openflow.MultipartFlow {
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
			s.count(cOpenFlowErrors)
			e, err := openflow.ParseError(msg)
			if err != nil {
				s.count(cBadMessages)
				continue
			}
			attrs := []any{"type", e.TypeName(), "code", e.Code, "xid", h.XID}
			if req, err := openflow.ParseHeader(e.Data); err == nil {
				attrs = append(attrs, "request_type", req.Type)
			}
			s.log.Warn("openflow error from switch", attrs...)
		}
	}
}
