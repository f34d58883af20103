// Package ofswitch keeps an OpenFlow 1.3 session with one Open vSwitch bridge:
// it dials (and redials), installs a declared set of meters and flows and
// keeps it installed, delivers packet-ins to a callback and sends
// packet-outs in batches: answers (PacketOut) and packets handed back to
// the pipeline (Reinject).
//
// The set is a function of the bridge's ports and of whatever else
// Config.Declare reads (the daemon's State): the session learns the ports
// with a PORT_DESC request at connect and from PORT_STATUS messages
// afterwards, and when they change, or when Refresh says the rest did, it
// declares the set again, adds what the new set declares and deletes
// (strictly, by its cookie) what it no longer does. Every second it dumps the set's flows and all meters: missing
// flows or meters are reinstalled (also within the debounce after a
// FLOW_REMOVED), flows with the cookie and meters of its own id block that
// the set does not declare are deleted, and the meters' drop counts are
// summed into the meter_drops counter.
package ofswitch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/openflow"
)

// Config describes the session and the flows it keeps.
type Config struct {
	// Target is "unix:/path/br-int.mgmt" or "tcp:host:port".
	Target string
	// ControllerID is the connection's controller id, the N that the
	// flows' controller(id=N) actions send packets to.
	ControllerID uint16
	// Cookie marks every flow of the set (it overrides the flows' own
	// cookies); removal on shutdown is by this cookie.
	Cookie uint64
	// TableID is the table the set lives in, dumped to check the set.
	TableID uint8
	// Declare returns the declared set for the bridge's ports (sorted
	// physical port numbers, LOCAL excluded; nil before they are known):
	// meters (installed with add, then modify to settle one left by an
	// earlier run) and flows (installed with command add and the
	// send_flow_rem flag). Each meter's id must be unique, and flows may
	// name only meters of the set. Nil declares nothing. It runs in New
	// and then on the goroutine running Run, when the ports change and
	// after Refresh; what it reads besides ports (the daemon's State, for
	// pipeline.Spec.Declare) must be safe to read there, for example
	// behind an atomic pointer the daemon swaps before calling Refresh.
	Declare func(ports []uint32) ([]openflow.MeterMod, []openflow.FlowMod)
	// OwnsMeter reports whether a meter id belongs to the daemon: such
	// meters are deleted when the set does not declare them. Nil: only
	// declared meters are ever deleted (on shutdown and when the set drops
	// them).
	OwnsMeter func(id uint32) bool
	// Mark is the register mark Reinject sets on the packets it hands back
	// to table TableID; the declared flows that capture them must exclude
	// it, or a re-injected packet comes back (pipeline.ReinjectMark).
	// Registers start at zero, so a mark must set a bit: without one,
	// Reinject fails with ErrNoMark.
	Mark openflow.Reg
	// Logger receives the session's log lines; nil discards them.
	Logger *slog.Logger
}

// Errors of PacketOut and Run.
var (
	// ErrNotConnected is returned by PacketOut while no session is up.
	ErrNotConnected = errors.New("ofswitch: not connected")
	// ErrQueueFull is returned by PacketOut when the writer is behind.
	ErrQueueFull = errors.New("ofswitch: packet-out queue full")
	// ErrFrameTooLong is returned by PacketOut and Reinject for a frame no
	// message holds.
	ErrFrameTooLong = errors.New("ofswitch: frame too long for a packet-out")
	// ErrNoMark is returned by Reinject when Config.Mark is not a valid
	// mark: without one, the packet would be captured again.
	ErrNoMark = errors.New("ofswitch: no valid re-injection mark configured")
	// ErrVersion is returned by Run when the switch does not offer
	// OpenFlow 1.3.
	ErrVersion = errors.New("ofswitch: switch does not offer OpenFlow 1.3")
)

// Counters, indexes into Switch.counters.
const (
	cConnects = iota
	cReconnects
	cDisconnects
	cDialErrors
	cFlowInstalls
	cFlowReinstalls
	cStaleFlowsRemoved
	cPacketIns
	cPacketOuts
	cPacketOutErrors
	cPacketOutQueueFull
	cReinjects
	cOpenFlowErrors
	cEchoTimeouts
	cBadMessages
	cMeterDrops
	cPortChanges
	cStaleMetersRemoved
	gPorts
	gMeters
	gFlows
	numCounters
)

// counterNames are the Stats keys, by counter index.
var counterNames = [numCounters]string{
	cConnects:           "connects",
	cReconnects:         "reconnects",
	cDisconnects:        "disconnects",
	cDialErrors:         "dial_errors",
	cFlowInstalls:       "flow_installs",
	cFlowReinstalls:     "flow_reinstalls",
	cStaleFlowsRemoved:  "stale_flows_removed",
	cPacketIns:          "packet_ins",
	cPacketOuts:         "packet_outs",
	cPacketOutErrors:    "packet_out_errors",
	cPacketOutQueueFull: "packet_out_queue_full",
	cReinjects:          "reinjects",
	cOpenFlowErrors:     "openflow_errors",
	cEchoTimeouts:       "echo_timeouts",
	cBadMessages:        "bad_messages",
	cMeterDrops:         "meter_drops",
	cPortChanges:        "port_changes",
	cStaleMetersRemoved: "stale_meters_removed",
	gPorts:              "ports",
	gMeters:             "meters",
	gFlows:              "flows",
}

// flowKey identifies a flow within the set's table.
type flowKey struct {
	priority uint16
	match    openflow.Match
}

// Switch is the session with one bridge. Run drives it; PacketOut, Stats
// and Connected may be called from any goroutine.
type Switch struct {
	cfg    Config
	log    *slog.Logger
	target string

	// The declared set and what it depends on, owned by the goroutine
	// running Run.
	ports    []uint32
	meters   []openflow.MeterMod
	meterIdx map[uint32]int
	flows    []openflow.FlowMod
	want     map[flowKey]int
	// lastBand is the last band packet count seen per meter.
	lastBand map[uint32]uint64

	// Timing, shortened by tests.
	echoInterval     time.Duration
	checkInterval    time.Duration
	debounce         time.Duration
	backoffMin       time.Duration
	backoffMax       time.Duration
	handshakeTimeout time.Duration
	writeTimeout     time.Duration
	shutdownTimeout  time.Duration
	queueLen         int

	xid      atomic.Uint32
	cur      atomic.Pointer[conn]
	bufs     sync.Pool
	counters [numCounters]atomic.Uint64
	// refresh holds a pending Refresh for the keeper.
	refresh chan struct{}
}

// New returns a Switch for cfg; nothing happens until Run.
func New(cfg Config) *Switch {
	s := &Switch{
		cfg:              cfg,
		log:              cfg.Logger,
		target:           cfg.Target,
		lastBand:         make(map[uint32]uint64),
		echoInterval:     5 * time.Second,
		checkInterval:    time.Second,
		debounce:         50 * time.Millisecond,
		backoffMin:       100 * time.Millisecond,
		backoffMax:       5 * time.Second,
		handshakeTimeout: 5 * time.Second,
		writeTimeout:     5 * time.Second,
		shutdownTimeout:  time.Second,
		queueLen:         4096,
		refresh:          make(chan struct{}, 1),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.bufs.New = func() any {
		b := make([]byte, 0, 2048)
		return &b
	}
	s.setDeclared(s.declare(nil))
	return s
}

// declared is one declared set, normalized.
type declared struct {
	meters   []openflow.MeterMod
	meterIdx map[uint32]int
	flows    []openflow.FlowMod
	want     map[flowKey]int
}

// declare asks Config.Declare for the set of ports and normalizes it: flows
// get the cookie, command add and send_flow_rem; meters command add.
func (s *Switch) declare(ports []uint32) declared {
	d := declared{meterIdx: make(map[uint32]int), want: make(map[flowKey]int)}
	if s.cfg.Declare == nil {
		return d
	}
	meters, flows := s.cfg.Declare(ports)
	for _, mm := range meters {
		if _, dup := d.meterIdx[mm.MeterID]; dup {
			continue
		}
		mm.Command = openflow.MeterAdd
		d.meterIdx[mm.MeterID] = len(d.meters)
		d.meters = append(d.meters, mm)
	}
	for _, fm := range flows {
		fm.Command = openflow.FlowAdd
		fm.Flags |= openflow.FlagSendFlowRem
		fm.Cookie = s.cfg.Cookie
		fm.CookieMask = 0
		fm.Actions = slices.Clone(fm.Actions)
		fm.Output = slices.Clone(fm.Output)
		if fm.TableID == s.cfg.TableID {
			d.want[keyOf(fm.Priority, fm.Match)] = len(d.flows)
		}
		d.flows = append(d.flows, fm)
	}
	return d
}

// setDeclared makes d the current set.
func (s *Switch) setDeclared(d declared) {
	s.meters, s.meterIdx, s.flows, s.want = d.meters, d.meterIdx, d.flows, d.want
	s.counters[gMeters].Store(uint64(len(s.meters)))
	s.counters[gFlows].Store(uint64(len(s.flows)))
}

// ownsMeter reports whether meter id is the daemon's.
func (s *Switch) ownsMeter(id uint32) bool {
	if _, ok := s.meterIdx[id]; ok {
		return true
	}
	return s.cfg.OwnsMeter != nil && s.cfg.OwnsMeter(id)
}

// keyOf returns the key of a flow, its IPv4 addresses unmapped as encoded.
func keyOf(priority uint16, m openflow.Match) flowKey {
	m.IPv4Dst = m.IPv4Dst.Unmap()
	m.ARPTPA = m.ARPTPA.Unmap()
	return flowKey{priority: priority, match: m}
}

// Stats returns the session's counters by name: connects, reconnects,
// disconnects, dial_errors, flow_installs, flow_reinstalls,
// stale_flows_removed, stale_meters_removed, packet_ins, packet_outs
// (written, re-injections included), packet_out_errors,
// packet_out_queue_full, reinjects (queued), openflow_errors,
// echo_timeouts, bad_messages, meter_drops (packets the set's meters
// dropped, summed from their band counts), port_changes; and the gauges
// ports (the bridge's ports known), meters and flows (the declared set's
// size).
func (s *Switch) Stats() map[string]uint64 {
	m := make(map[string]uint64, numCounters)
	for i := range s.counters {
		m[counterNames[i]] = s.counters[i].Load()
	}
	return m
}

// Refresh asks the session to declare the set again (Config.Declare for
// the ports it knows) and apply what changed, as it does when the ports
// change: new and changed meters and flows are added, flows and meters no
// longer declared are deleted. Call it after changing what Declare reads
// besides the ports. It returns at once and never blocks; the running
// session applies it within milliseconds, or the next one as soon as it
// is up, and calls made before that are applied once.
func (s *Switch) Refresh() {
	select {
	case s.refresh <- struct{}{}:
	default:
	}
}

// Connected reports whether a session is up (handshake done, flows sent).
func (s *Switch) Connected() bool {
	return s.cur.Load() != nil
}

// count adds one to counter i.
func (s *Switch) count(i int) {
	s.counters[i].Add(1)
}

// nextXID returns a fresh transaction id.
func (s *Switch) nextXID() uint32 {
	return s.xid.Add(1)
}

// PacketOut sends frame out of port outPort (in_port CONTROLLER). It copies
// frame, queues the message for the writer and returns at once: an error
// means the frame was not queued.
func (s *Switch) PacketOut(outPort uint32, frame []byte) error {
	c, err := s.ready(len(frame), openflow.MaxPacketOutData)
	if err != nil {
		return err
	}
	bp := s.bufs.Get().(*[]byte)
	*bp = openflow.AppendPacketOut((*bp)[:0], s.nextXID(), openflow.PortController, outPort, frame)
	return s.enqueue(c, bp)
}

// Reinject hands frame back to the bridge as if it had just arrived on
// inPort: a packet-out with in_port=inPort whose actions set Config.Mark
// and resubmit it to table Config.TableID, where the flows that exclude
// the mark let it pass on to the rest of the pipeline. It copies frame,
// queues the message on PacketOut's path and returns at once: an error
// means the frame was not queued. Only for packets captured from inPort,
// unchanged: what the pipeline does with them is what it would have done
// without the capture.
func (s *Switch) Reinject(inPort uint32, frame []byte) error {
	if s.cfg.Mark.Value&s.cfg.Mark.Mask == 0 {
		s.count(cPacketOutErrors)
		return ErrNoMark
	}
	c, err := s.ready(len(frame), openflow.MaxResubmitData)
	if err != nil {
		return err
	}
	bp := s.bufs.Get().(*[]byte)
	*bp, err = openflow.AppendPacketOutResubmit((*bp)[:0], s.nextXID(), inPort, s.cfg.Mark, s.cfg.TableID, frame)
	if err != nil {
		s.bufs.Put(bp)
		s.count(cPacketOutErrors)
		return fmt.Errorf("%w: %w", ErrNoMark, err)
	}
	if err := s.enqueue(c, bp); err != nil {
		return err
	}
	s.count(cReinjects)
	return nil
}

// ready returns the connection a packet-out of a frame of n bytes (at
// most limit) can be queued on, or the error that says why not, counted.
func (s *Switch) ready(n, limit int) (*conn, error) {
	c := s.cur.Load()
	if c == nil {
		s.count(cPacketOutErrors)
		return nil, ErrNotConnected
	}
	if n > limit {
		s.count(cPacketOutErrors)
		return nil, ErrFrameTooLong
	}
	select {
	case <-c.done:
		s.count(cPacketOutErrors)
		return nil, ErrNotConnected
	default:
	}
	return c, nil
}

// enqueue hands the packet-out in bp to c's writer, or recycles it and
// counts the error when the queue is full.
func (s *Switch) enqueue(c *conn, bp *[]byte) error {
	select {
	case c.pkts <- bp:
		return nil
	default:
		s.bufs.Put(bp)
		s.count(cPacketOutErrors)
		s.count(cPacketOutQueueFull)
		return ErrQueueFull
	}
}

// parseTarget splits "unix:PATH" or "tcp:HOST:PORT" for net.Dial.
func parseTarget(target string) (network, addr string, err error) {
	kind, rest, ok := strings.Cut(target, ":")
	if ok && rest != "" && (kind == "unix" || kind == "tcp") {
		return kind, rest, nil
	}
	return "", "", fmt.Errorf("ofswitch: target %q: want unix:PATH or tcp:HOST:PORT", target)
}

// Run keeps the session until ctx ends: it dials (retrying with backoff
// from 100 ms to 5 s), negotiates OpenFlow 1.3, turns on asynchronous
// messages, sets the controller id, installs the meters and flows, learns
// the bridge's ports and keeps the set for them installed, answering echoes
// and checking the peer is alive. onPacketIn
// (nil: packet-ins are dropped) runs on the read loop for each packet-in:
// it must not block, and frame is valid only during the call. When ctx
// ends, Run deletes the flows by cookie and the declared meters, closes and
// returns nil. It returns an error only for a bad target, a flow it cannot
// encode (in the set declared for no ports) or a switch without OpenFlow
// 1.3.
func (s *Switch) Run(ctx context.Context, onPacketIn func(inPort uint32, frame []byte)) error {
	network, addr, err := parseTarget(s.target)
	if err != nil {
		return err
	}
	for i := range s.flows {
		if _, err := openflow.AppendFlowMod(nil, 0, &s.flows[i]); err != nil {
			return fmt.Errorf("ofswitch: flow %d: %w", i, err)
		}
	}
	backoff := s.backoffMin
	quiet := false // an outage was logged: further failures go to debug
	for ctx.Err() == nil {
		up, err := s.attempt(ctx, network, addr, onPacketIn)
		if ctx.Err() != nil {
			break
		}
		if errors.Is(err, ErrVersion) {
			return err
		}
		switch {
		case up:
			s.count(cDisconnects)
			s.log.Warn("openflow connection lost", "target", s.target, "err", err)
			backoff = s.backoffMin
			quiet = true
		case !quiet:
			s.log.Warn("openflow connect failed, retrying", "target", s.target, "err", err)
			quiet = true
		default:
			s.log.Debug("openflow connect failed", "target", s.target, "err", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		backoff = min(2*backoff, s.backoffMax)
	}
	return nil
}

// attempt dials once and runs a session; up reports whether the handshake
// completed.
func (s *Switch) attempt(ctx context.Context, network, addr string, onPacketIn func(uint32, []byte)) (up bool, err error) {
	d := net.Dialer{Timeout: s.handshakeTimeout}
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		s.count(cDialErrors)
		return false, err
	}
	return s.session(ctx, nc, onPacketIn)
}
