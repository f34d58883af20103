package upstream

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
)

// open creates a socket connected to p's server, bound by the kernel to a
// random ephemeral port, and starts its reader.
func (c *Client) open(p *pool) (*socket, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if p.dropped {
		return nil, fmt.Errorf("upstream %v: %w (no longer a server)", p.server, ErrClosed)
	}
	conn, err := net.DialUDP(p.network, nil, net.UDPAddrFromAddrPort(p.server))
	if err != nil {
		c.stats.errors.Add(1)
		return nil, fmt.Errorf("upstream %v: open socket: %w", p.server, err)
	}
	var seed [32]byte
	crand.Read(seed[:])
	s := &socket{
		client:  c,
		server:  p.server,
		conn:    conn,
		rng:     rand.NewChaCha8(seed),
		waiting: make(map[uint16]*exchange),
		expires: time.Now().Add(c.maxAge),
	}
	c.live[s] = struct{}{}
	c.stats.socketsOpened.Add(1)
	c.readers.Add(1)
	go s.read()
	return s, nil
}

// register puts ex on s under a random ID unique among the exchanges waiting
// on s and different from the client's. It fails when s takes no new
// exchanges, retiring s if it is due for renewal.
func (s *socket) register(ex *exchange, now time.Time) bool {
	s.mu.Lock()
	if s.retired {
		s.mu.Unlock()
		return false
	}
	if s.uses >= s.client.maxUses || now.After(s.expires) {
		s.retired = true
		s.client.stats.socketsRetired.Add(1)
		s.unlock()
		return false
	}
	s.uses++
	id := uint16(s.rng.Uint64())
	for id == ex.origID || s.waiting[id] != nil {
		id = uint16(s.rng.Uint64())
	}
	ex.id = id
	s.waiting[id] = ex
	s.mu.Unlock()
	return true
}

// leave takes ex off s. It reports false when ex was no longer waiting:
// someone else took it and is about to signal it.
func (s *socket) leave(ex *exchange) bool {
	s.mu.Lock()
	if s.waiting[ex.id] != ex {
		s.mu.Unlock()
		return false
	}
	delete(s.waiting, ex.id)
	s.unlock()
	return true
}

// unlock releases s.mu, closing the socket if it is retired and idle.
func (s *socket) unlock() {
	closeNow := s.retired && !s.closed && len(s.waiting) == 0
	if closeNow {
		s.closed = true
	}
	s.mu.Unlock()
	if closeNow {
		s.conn.Close()
		c := s.client
		c.mu.Lock()
		delete(c.live, s)
		c.mu.Unlock()
	}
}

// failAll ends every exchange waiting on s with err, retiring s first when
// retire is set.
func (s *socket) failAll(err error, retire bool) {
	s.mu.Lock()
	if retire && !s.retired {
		s.retired = true
		s.client.stats.socketsRetired.Add(1)
	}
	for id, ex := range s.waiting {
		delete(s.waiting, id)
		ex.err = err
		ex.done <- struct{}{}
	}
	s.unlock()
}

// read is the socket's reader: it hands each datagram to the exchange it
// answers until the socket is closed.
func (s *socket) read() {
	c := s.client
	defer c.readers.Done()
	buf := make([]byte, maxUDPSize)
	for {
		n, err := s.conn.Read(buf)
		switch {
		case err == nil:
			s.deliver(buf[:n])
		case errors.Is(err, net.ErrClosed):
			return
		case errors.Is(err, syscall.ECONNREFUSED):
			// The server's host answered an earlier datagram with ICMP
			// port unreachable: nothing listens there, fail fast.
			c.stats.refused.Add(1)
			s.failAll(fmt.Errorf("upstream %v: %w", s.server, err), false)
		default:
			c.stats.errors.Add(1)
			c.logger.Warn("upstream socket failed, replacing it", "server", s.server.String(), "error", err)
			s.failAll(fmt.Errorf("upstream %v: %w", s.server, err), true)
			return
		}
	}
}

// deliver matches one datagram to the exchange waiting for its ID and
// accepts it if it answers that exchange's question.
func (s *socket) deliver(msg []byte) {
	c := s.client
	if len(msg) < headerLen {
		c.stats.malformed.Add(1)
		return
	}
	id := dnswire.ID(msg)
	s.mu.Lock()
	ex := s.waiting[id]
	if ex == nil {
		s.mu.Unlock()
		c.stats.unknownID.Add(1)
		return
	}
	if err := dnswire.CheckReply(msg, id, ex.q.Name, ex.q.Type, ex.q.Class); err != nil {
		s.mu.Unlock()
		c.countRejected(err)
		return
	}
	delete(s.waiting, id)
	s.unlock()
	// ex is ours until the signal.
	ex.dst = append(ex.dst, msg...)
	c.stats.replies.Add(1)
	ex.done <- struct{}{}
}

// retire makes s take no new exchange; it closes once the exchanges
// waiting on it end, at once when there are none.
func (s *socket) retire() {
	s.mu.Lock()
	if !s.retired {
		s.retired = true
		s.client.stats.socketsRetired.Add(1)
	}
	s.unlock()
}

// shutdown ends every exchange on s with ErrClosed and closes s.
func (s *socket) shutdown() {
	s.failAll(ErrClosed, true)
}
