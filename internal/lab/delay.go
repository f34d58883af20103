package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Delay is a UDP relay in the lab namespace in front of a DNS server: it
// holds every query for a fixed time, then passes it on under an ID of
// its own, and returns each answer to its client at once with the
// client's ID. To its clients it is the server answering that much later;
// queries are held by timers, never in line, so a held query does not
// delay the next.
type Delay struct {
	// Port is the UDP port it listens on, on every IPv4 address of the lab
	// namespace (127.0.0.1 and Gateway4 among them).
	Port uint16

	delay  time.Duration
	client *net.UDPConn // queries in, answers out
	server *net.UDPConn // connected to the upstream

	mu      sync.Mutex
	next    uint16
	pending [1 << 16]pendingQuery
	done    sync.WaitGroup
}

// pendingQuery is a query passed upstream and not answered yet.
type pendingQuery struct {
	client netip.AddrPort
	id     uint16
}

// StartDelay starts a Delay in the lab namespace that holds queries for
// delay before sending them to upstream. Close stops it.
func (l *Lab) StartDelay(upstream netip.AddrPort, delay time.Duration) (*Delay, error) {
	port, err := l.freePort()
	if err != nil {
		return nil, fmt.Errorf("lab: delay: %w", err)
	}
	d := &Delay{Port: port, delay: delay}
	err = l.InNetNS(func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: int(port)})
		if err != nil {
			return err
		}
		s, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(upstream))
		if err != nil {
			c.Close()
			return err
		}
		d.client, d.server = c, s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lab: delay on port %s: %w", strconv.Itoa(int(port)), err)
	}
	for _, conn := range []*net.UDPConn{d.client, d.server} {
		if err := conn.SetReadBuffer(4 << 20); err != nil {
			d.Close()
			return nil, fmt.Errorf("lab: delay: %w", err)
		}
	}
	d.done.Add(2)
	go d.queries()
	go d.answers()
	return d, nil
}

// queries reads queries and schedules each to go upstream after the delay.
func (d *Delay) queries() {
	defer d.done.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := d.client.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n < 12 {
			continue
		}
		msg := append([]byte(nil), buf[:n]...)
		time.AfterFunc(d.delay, func() { d.forward(msg, from) })
	}
}

// forward sends msg upstream under a fresh ID and remembers its client.
func (d *Delay) forward(msg []byte, from netip.AddrPort) {
	d.mu.Lock()
	id := d.next
	d.next++
	d.pending[id] = pendingQuery{client: from, id: uint16(msg[0])<<8 | uint16(msg[1])}
	d.mu.Unlock()
	msg[0], msg[1] = byte(id>>8), byte(id)
	_, _ = d.server.Write(msg)
}

// answers returns the upstream's answers to the clients.
func (d *Delay) answers() {
	defer d.done.Done()
	buf := make([]byte, 65536)
	for {
		n, err := d.server.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n < 12 {
			continue
		}
		id := uint16(buf[0])<<8 | uint16(buf[1])
		d.mu.Lock()
		p := d.pending[id]
		d.pending[id] = pendingQuery{}
		d.mu.Unlock()
		if !p.client.IsValid() {
			continue
		}
		buf[0], buf[1] = byte(p.id>>8), byte(p.id)
		_, _ = d.client.WriteToUDPAddrPort(buf[:n], p.client)
	}
}

// Close stops the relay; queries still held are dropped.
func (d *Delay) Close() error {
	err := errors.Join(d.client.Close(), d.server.Close())
	d.done.Wait()
	return err
}
