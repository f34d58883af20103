// Package upstream exchanges DNS queries with upstream resolvers, hardened
// against off-path spoofing as RFC 5452 asks.
//
// Every exchange sends the query, rewritten with EDNS0 (a 1232-byte payload
// size, see dnswire.AppendUpstreamQuery), under a fresh random ID from one
// of a pool of UDP sockets, each bound by the kernel to a random ephemeral
// port. The sockets are connected, one pool per upstream server: the kernel
// then delivers only datagrams whose source address and port are the
// server's (a forged source never reaches user space), reports an ICMP port
// unreachable from the server as ECONNREFUSED (the exchanges waiting on that
// socket fail at once instead of at their deadline), and skips the route
// lookup on every send. Sockets are renewed: one is retired after 10000
// exchanges or 60 seconds, whichever comes first, and a fresh one takes its
// place; exchanges already in flight on it finish, then it is closed. The
// same happens to every socket of a server that Retain lets go (an
// upstream removed by a reload).
//
// Each socket has one reader goroutine, which matches every datagram to the
// exchange waiting for its ID on that socket and accepts it only if it is a
// reply to the same question. Anything else is dropped, counted by reason,
// and the exchange keeps waiting until its deadline. A reply with TC set is
// retried over TCP on a fresh connection, with a new random ID, within the
// same deadline.
//
// The exchanging goroutine is the caller's own: no goroutine, socket or
// buffer is created per exchange on the UDP path.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
)

// DefaultTimeout is the default of Config.Timeout: the Neutron
// dns_forwarder's upstream query timeout.
const DefaultTimeout = 5 * time.Second

// DefaultSockets is the number of UDP sockets kept per upstream server when
// Config.Sockets is zero. At 100 queries in flight that is about six per
// socket; the chance of an off-path spoofer hitting an exchange does not
// depend on it (each exchange is on one random port out of the kernel's
// ephemeral range with one random ID), but more sockets mean less contention
// on each socket's table of waiting exchanges.
const DefaultSockets = 16

const (
	// maxSocketUses is how many exchanges a socket starts before it is
	// retired, so that a port stays open for a few seconds at high load.
	// Being below 65535, it also bounds the exchanges in flight on one
	// socket: a free ID is always there to draw.
	maxSocketUses = 10000
	// maxSocketAge is how long a socket takes new exchanges at low load.
	maxSocketAge = 60 * time.Second
	// maxUDPSize is the largest UDP payload; the readers' buffers hold it.
	maxUDPSize = 65535
	// headerLen is the size of the DNS header.
	headerLen = 12
	// flagsTC is the TC bit in the third byte of the header.
	flagsTC = 0x02
)

// ErrTimeout is returned when an exchange reaches its deadline without a
// valid reply.
var ErrTimeout = errors.New("upstream: timeout")

// ErrClosed is returned by exchanges on a closed Client.
var ErrClosed = errors.New("upstream: client closed")

// errBadQuery is returned for a query too short to carry a header or
// without its parse.
var errBadQuery = errors.New("upstream: query too short or not parsed")

// Config configures a Client.
type Config struct {
	// Timeout bounds an exchange that is given no timeout of its own;
	// 0 means DefaultTimeout.
	Timeout time.Duration
	// Sockets is the number of UDP sockets per upstream server;
	// 0 means DefaultSockets.
	Sockets int
	// Logger receives warnings about sockets that fail; nil discards them.
	Logger *slog.Logger
}

// Client sends queries to upstream DNS servers. It is safe for concurrent
// use; its pools of sockets are created on the first exchange with each
// server.
type Client struct {
	timeout time.Duration
	sockets int
	maxUses int           // maxSocketUses; tests lower it
	maxAge  time.Duration // maxSocketAge; tests lower it
	logger  *slog.Logger

	pools     atomic.Pointer[map[netip.AddrPort]*pool]
	exchanges sync.Pool
	readers   sync.WaitGroup

	mu     sync.Mutex // guards closed, live, retained and the writes of pools
	closed bool
	live   map[*socket]struct{}
	// retained, once Retain has been called, holds the only servers
	// exchanges may go to (unmapped); nil allows any.
	retained map[netip.AddrPort]bool

	stats counters
}

// counters are the Client's statistics.
type counters struct {
	sent, replies, timeouts, unknownID, wrongQuestion, malformed atomic.Uint64
	refused, tcpRetries, errors, socketsOpened, socketsRetired   atomic.Uint64
}

// pool holds the sockets for one upstream server.
type pool struct {
	client  *Client
	server  netip.AddrPort // where the sockets are connected to
	network string         // "udp4" or "udp6"
	mu      sync.Mutex     // serializes the replacement of sockets
	socks   []atomic.Pointer[socket]
	dropped bool // Retain let the server go: no socket opens; guarded by client.mu
}

// socket is one connected UDP socket with the exchanges waiting on it.
type socket struct {
	client *Client
	server netip.AddrPort
	conn   *net.UDPConn

	mu      sync.Mutex // guards everything below
	rng     *rand.ChaCha8
	waiting map[uint16]*exchange
	uses    int
	expires time.Time
	retired bool // takes no new exchanges; closed once waiting is empty
	closed  bool
}

// exchange is the state of one exchange, reused through Client.exchanges.
// Whoever removes it from its socket's waiting table owns it until it sends
// on done; the exchanging goroutine owns it otherwise.
type exchange struct {
	id     uint16
	origID uint16         // the query's own ID: restored in the reply, never drawn
	q      *dnswire.Query // the question a reply must match
	buf    []byte         // the query as sent
	dst    []byte         // the reply is appended here
	err    error          // set instead of a reply
	done   chan struct{}
	timer  *time.Timer
}

// New returns a Client. It opens no socket until the first exchange.
func New(cfg Config) (*Client, error) {
	if cfg.Sockets < 0 || cfg.Timeout < 0 {
		return nil, fmt.Errorf("upstream: negative socket count %d or timeout %v", cfg.Sockets, cfg.Timeout)
	}
	c := &Client{
		timeout: cfg.Timeout,
		sockets: cfg.Sockets,
		maxUses: maxSocketUses,
		maxAge:  maxSocketAge,
		logger:  cfg.Logger,
		live:    make(map[*socket]struct{}),
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.sockets == 0 {
		c.sockets = DefaultSockets
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	c.exchanges.New = func() any {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return &exchange{done: make(chan struct{}, 1), timer: t, buf: make([]byte, 0, 512)}
	}
	return c, nil
}

// Timeout returns the timeout of an exchange that is given none of its
// own (Config.Timeout, or DefaultTimeout).
func (c *Client) Timeout() time.Duration { return c.timeout }

// Exchange asks server over UDP the question of query, whose parse is q,
// and returns the reply appended to dst, with the ID set back to the query's
// own. What leaves is dnswire.AppendUpstreamQuery's rewrite of query: a
// fresh random ID, the client's RD, CD and AD bits, the question, and one
// OPT record advertising dnswire.UpstreamUDPSize with the client's DO bit
// (the client's other additional records stay behind). It leaves from a
// randomly chosen socket; only a reply from server with that ID and the same
// question is accepted. The reply is passed on as the server sent it, its
// OPT record included (dnswire.AppendClientAnswer rewrites it for the
// client). A reply with
// TC set is retried over TCP with a new random ID. The exchange ends after
// timeout (Config.Timeout when it is not positive) or when ctx ends,
// whichever comes first, with ErrTimeout at the deadline. An ICMP port
// unreachable from server fails the exchange at once with an error that
// wraps syscall.ECONNREFUSED. An exchange after Close, or with a server a
// Retain let go, fails with an error wrapping ErrClosed. query is not
// modified and q must stay valid until Exchange returns. On error dst is
// returned unchanged.
func (c *Client) Exchange(ctx context.Context, server netip.AddrPort, timeout time.Duration, query []byte, q *dnswire.Query, dst []byte) ([]byte, error) {
	if len(query) < headerLen || q == nil {
		return dst, errBadQuery
	}
	if ctx.Err() != nil {
		return dst, c.ended(ctx)
	}
	if timeout <= 0 {
		timeout = c.timeout
	}
	now := time.Now()
	deadline := now.Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if !deadline.After(now) {
		return dst, c.ended(ctx)
	}
	p, err := c.pool(server)
	if err != nil {
		return dst, err
	}
	ex := c.exchanges.Get().(*exchange)
	defer c.putExchange(ex)
	ex.origID = dnswire.ID(query)
	ex.q = q
	ex.dst = dst
	s, err := p.acquire(ex, now)
	if err != nil {
		return dst, err
	}
	ex.buf = dnswire.AppendUpstreamQuery(ex.buf[:0], query, q, ex.id)

	if _, err := s.conn.Write(ex.buf); err != nil {
		if s.leave(ex) {
			if errors.Is(err, syscall.ECONNREFUSED) {
				c.stats.refused.Add(1)
			} else {
				c.stats.errors.Add(1)
			}
			return dst, fmt.Errorf("upstream %v: %w", server, err)
		}
		<-ex.done
	} else {
		c.stats.sent.Add(1)
		if !c.wait(ctx, s, ex, deadline.Sub(now)) {
			return dst, c.ended(ctx)
		}
	}
	if ex.err != nil {
		return dst, ex.err
	}
	reply := ex.dst[len(dst):]
	if reply[2]&flagsTC != 0 {
		return c.exchangeTCP(ctx, server, deadline, query, q, ex, dst)
	}
	dnswire.SetID(reply, ex.origID)
	return ex.dst, nil
}

// ended returns the error of an exchange that ended without a reply:
// ctx's error when ctx was canceled, else ErrTimeout (counted).
func (c *Client) ended(ctx context.Context) error {
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	c.stats.timeouts.Add(1)
	return ErrTimeout
}

// wait waits for ex to be answered within d or until ctx ends. It reports
// whether ex was answered (a reply or an error in ex.err); when it was not,
// ex has left s.
func (c *Client) wait(ctx context.Context, s *socket, ex *exchange, d time.Duration) bool {
	ex.timer.Reset(d)
	defer ex.timer.Stop()
	select {
	case <-ex.done:
		return true
	case <-ex.timer.C:
	case <-ctx.Done():
	}
	if s.leave(ex) {
		return false
	}
	// The reader (or Close) took ex just in time: its signal is on the way.
	<-ex.done
	return true
}

// putExchange returns ex to the pool without references to the caller's
// memory.
func (c *Client) putExchange(ex *exchange) {
	ex.q, ex.dst, ex.err = nil, nil, nil
	c.exchanges.Put(ex)
}

// pool returns the pool of sockets for server, creating it on first use.
func (c *Client) pool(server netip.AddrPort) (*pool, error) {
	if m := c.pools.Load(); m != nil {
		if p := (*m)[server]; p != nil {
			return p, nil
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	old := c.pools.Load()
	if old != nil {
		if p := (*old)[server]; p != nil {
			return p, nil
		}
	}
	addr := server.Addr().Unmap()
	if !addr.IsValid() || addr.IsUnspecified() || server.Port() == 0 {
		return nil, fmt.Errorf("upstream: invalid server address %v", server)
	}
	if c.retained != nil && !c.retained[netip.AddrPortFrom(addr, server.Port())] {
		return nil, fmt.Errorf("upstream %v: %w (no longer a server)", server, ErrClosed)
	}
	p := &pool{
		client:  c,
		server:  netip.AddrPortFrom(addr, server.Port()),
		network: "udp6",
		socks:   make([]atomic.Pointer[socket], c.sockets),
	}
	if addr.Is4() {
		p.network = "udp4"
	}
	m := make(map[netip.AddrPort]*pool, 1)
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[server] = p
	c.pools.Store(&m)
	return p, nil
}

// acquire registers ex on a random socket of p under a fresh random ID,
// replacing the socket first when it is due for renewal.
func (p *pool) acquire(ex *exchange, now time.Time) (*socket, error) {
	i := rand.IntN(len(p.socks))
	s := p.socks[i].Load()
	for s == nil || !s.register(ex, now) {
		var err error
		if s, err = p.replace(i, s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// replace puts a fresh socket in slot i unless old is no longer there, and
// returns the socket now in the slot. old, if any, has retired itself: it
// closes when its last exchange ends.
func (p *pool) replace(i int, old *socket) (*socket, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur := p.socks[i].Load(); cur != old {
		return cur, nil
	}
	s, err := p.client.open(p)
	if err != nil {
		return nil, err
	}
	p.socks[i].Store(s)
	return s, nil
}

// countRejected counts a reply CheckReply refused.
func (c *Client) countRejected(err error) {
	if errors.Is(err, dnswire.ErrWrongQuestion) {
		c.stats.wrongQuestion.Add(1)
		return
	}
	c.stats.malformed.Add(1)
}

// Stats returns the Client's counters:
//
//	sent             UDP queries sent
//	replies          replies accepted (UDP and TCP)
//	timeouts         exchanges that reached their deadline
//	unknown_id       datagrams for no waiting exchange (includes replies that came too late)
//	wrong_question   replies to another question, dropped
//	malformed        replies that are not a parsable response to one question, dropped
//	refused          ICMP port unreachable from a server (ECONNREFUSED), failing the exchanges waiting on the socket
//	tcp_retries      truncated UDP replies asked again over TCP
//	errors           other network errors
//	sockets_opened   UDP sockets opened
//	sockets_retired  UDP sockets retired for renewal, after an error or by Retain
//	sockets          UDP sockets open now (a gauge)
//
// Datagrams from a source other than the server are dropped by the kernel
// (the sockets are connected) and never counted here.
func (c *Client) Stats() map[string]uint64 {
	s := &c.stats
	c.mu.Lock()
	open := len(c.live)
	c.mu.Unlock()
	return map[string]uint64{
		"sent":            s.sent.Load(),
		"replies":         s.replies.Load(),
		"timeouts":        s.timeouts.Load(),
		"unknown_id":      s.unknownID.Load(),
		"wrong_question":  s.wrongQuestion.Load(),
		"malformed":       s.malformed.Load(),
		"refused":         s.refused.Load(),
		"tcp_retries":     s.tcpRetries.Load(),
		"errors":          s.errors.Load(),
		"sockets_opened":  s.socketsOpened.Load(),
		"sockets_retired": s.socketsRetired.Load(),
		"sockets":         uint64(open),
	}
}

// Retain keeps the sockets of servers and lets every other server go: the
// sockets of the others take no new exchange and close once the exchanges
// in flight on them end (at once when there are none), and a later
// exchange with one of them fails with ErrClosed, until a later Retain
// lists it again. It returns the servers let go that had sockets. The
// daemon calls it after a reload, so that removed upstreams keep no
// socket open.
func (c *Client) Retain(servers []netip.AddrPort) []netip.AddrPort {
	keep := make(map[netip.AddrPort]bool, len(servers))
	for _, s := range servers {
		keep[netip.AddrPortFrom(s.Addr().Unmap(), s.Port())] = true
	}
	c.mu.Lock()
	c.retained = keep
	var dropped []*pool
	m := make(map[netip.AddrPort]*pool)
	if old := c.pools.Load(); old != nil {
		for k, p := range *old {
			if keep[p.server] {
				m[k] = p
				continue
			}
			p.dropped = true
			dropped = append(dropped, p)
		}
	}
	c.pools.Store(&m)
	c.mu.Unlock()
	gone := make([]netip.AddrPort, 0, len(dropped))
	for _, p := range dropped {
		gone = append(gone, p.server)
		for i := range p.socks {
			if s := p.socks[i].Load(); s != nil {
				s.retire()
			}
		}
	}
	return gone
}

// Close ends the exchanges in flight with ErrClosed, closes every socket
// and waits for their readers to stop. Later exchanges fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	live := make([]*socket, 0, len(c.live))
	for s := range c.live {
		live = append(live, s)
	}
	c.mu.Unlock()
	for _, s := range live {
		s.shutdown()
	}
	c.readers.Wait()
	return nil
}
