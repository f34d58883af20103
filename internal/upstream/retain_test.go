package upstream

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// openSockets returns the client's open sockets to server.
func openSockets(c *Client, server netip.AddrPort) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for s := range c.live {
		if s.server == server {
			n++
		}
	}
	return n
}

// TestRetain: the sockets of a server let go close (at once when idle,
// after the last exchange otherwise), those of a kept server stay, and the
// server let go takes no new exchange until a Retain lists it again.
func TestRetain(t *testing.T) {
	release := make(chan struct{})
	slow := startUDP(t, "udp4", "127.0.0.1:0", func(s *udpServer, from netip.AddrPort, msg []byte) {
		reply := answer(t, msg, "192.0.2.7")
		go func() {
			<-release
			s.send(from, reply)
		}()
	})
	idle := startUDP(t, "udp4", "127.0.0.1:0", echo)
	kept := startUDP(t, "udp4", "127.0.0.1:0", echo)
	c := newClient(t, Config{Sockets: 4})
	query, q := newQuery(t, "example.org.")
	for _, srv := range []*udpServer{idle, kept} {
		for range 20 {
			if _, err := c.Exchange(context.Background(), srv.addr, time.Second, query, q, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	done := make(chan error, 1)
	var reply []byte
	go func() {
		var err error
		reply, err = c.Exchange(context.Background(), slow.addr, 5*time.Second, query, q, nil)
		done <- err
	}()
	waitStat(t, c, "sent", 41)
	keptOpen := openSockets(c, kept.addr)
	if keptOpen == 0 || openSockets(c, idle.addr) == 0 || openSockets(c, slow.addr) != 1 {
		t.Fatalf("sockets before Retain: kept %d, idle %d, slow %d", keptOpen, openSockets(c, idle.addr), openSockets(c, slow.addr))
	}

	gone := c.Retain([]netip.AddrPort{kept.addr})
	if len(gone) != 2 {
		t.Errorf("let go %v, want the idle and the slow server", gone)
	}
	if n := openSockets(c, idle.addr); n != 0 {
		t.Errorf("%d idle sockets of a server let go still open", n)
	}
	if n := openSockets(c, kept.addr); n != keptOpen {
		t.Errorf("kept server: %d sockets open, want %d", n, keptOpen)
	}
	if _, err := c.Exchange(context.Background(), idle.addr, time.Second, query, q, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("exchange with a server let go: %v, want ErrClosed", err)
	}
	if _, err := c.Exchange(context.Background(), kept.addr, time.Second, query, q, nil); err != nil {
		t.Errorf("exchange with the kept server: %v", err)
	}

	// The exchange in flight on the slow server's socket ends normally,
	// then the socket closes.
	if n := openSockets(c, slow.addr); n != 1 {
		t.Errorf("slow server: %d sockets open while an exchange waits, want 1", n)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("exchange in flight across Retain: %v", err)
	}
	if got := firstA(t, unpack(t, reply)); got != "192.0.2.7" {
		t.Errorf("answer %s", got)
	}
	if n := openSockets(c, slow.addr); n != 0 {
		t.Errorf("slow server: %d sockets open after its last exchange", n)
	}
	if st := c.Stats(); st["sockets"] != uint64(keptOpen) {
		t.Errorf("stats %v, want %d sockets open", st, keptOpen)
	}

	// Listed again, it is a server again.
	c.Retain([]netip.AddrPort{kept.addr, idle.addr})
	if _, err := c.Exchange(context.Background(), idle.addr, time.Second, query, q, nil); err != nil {
		t.Errorf("exchange with a server listed again: %v", err)
	}
}

// TestRetainDroppedPoolOpensNothing: an exchange that found the pool of a
// server before a Retain let it go cannot open a socket for it afterwards.
func TestRetainDroppedPoolOpensNothing(t *testing.T) {
	srv := startUDP(t, "udp4", "127.0.0.1:0", echo)
	c := newClient(t, Config{Sockets: 1})
	p, err := c.pool(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Retain(nil)
	if _, err := c.open(p); !errors.Is(err, ErrClosed) {
		t.Errorf("open on a dropped pool: %v, want ErrClosed", err)
	}
	if n := openSockets(c, srv.addr); n != 0 {
		t.Errorf("%d sockets open", n)
	}
}
