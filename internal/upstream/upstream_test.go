package upstream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
)

const clientID = 0x4242

// udpServer is a test upstream: handle is called for every datagram, which
// is only valid during the call.
type udpServer struct {
	conn *net.UDPConn
	addr netip.AddrPort
}

func startUDP(t testing.TB, network, laddr string, handle func(s *udpServer, from netip.AddrPort, msg []byte)) *udpServer {
	t.Helper()
	conn, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(laddr)))
	if err != nil {
		t.Skipf("listen %s %s: %v", network, laddr, err)
	}
	// Bursts of a thousand queries must not overflow the default buffer.
	conn.SetReadBuffer(4 << 20)
	s := &udpServer{conn: conn, addr: conn.LocalAddr().(*net.UDPAddr).AddrPort()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65535)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			handle(s, from, buf[:n])
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		wg.Wait()
	})
	return s
}

func (s *udpServer) send(to netip.AddrPort, msg []byte) {
	s.conn.WriteToUDPAddrPort(msg, to)
}

// answer builds a reply to req with one A record per address.
func answer(t testing.TB, req []byte, addrs ...string) []byte {
	t.Helper()
	var m dns.Msg
	if err := m.Unpack(req); err != nil {
		t.Errorf("unpack query: %v", err)
		return nil
	}
	r := new(dns.Msg)
	r.SetReply(&m)
	for _, a := range addrs {
		r.Answer = append(r.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: m.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   net.ParseIP(a),
		})
	}
	out, err := r.Pack()
	if err != nil {
		t.Errorf("pack reply: %v", err)
	}
	return out
}

// echo answers every query with itself as a reply (QR set).
func echo(s *udpServer, from netip.AddrPort, msg []byte) {
	msg[2] |= 0x80
	s.send(from, msg)
}

// newQuery returns a packed A query for name with clientID and its parse.
func newQuery(t testing.TB, name string) ([]byte, *dnswire.Query) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Id = clientID
	m.SetEdns0(1232, false)
	msg, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	q := new(dnswire.Query)
	if err := dnswire.ParseQuery(msg, q); err != nil {
		t.Fatal(err)
	}
	return msg, q
}

func newClient(t testing.TB, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// unpack parses a reply and checks that it carries the client's ID.
func unpack(t testing.TB, reply []byte) *dns.Msg {
	t.Helper()
	var m dns.Msg
	if err := m.Unpack(reply); err != nil {
		t.Fatalf("unpack reply: %v", err)
	}
	if m.Id != clientID {
		t.Fatalf("reply ID %#x, want the client's %#x", m.Id, clientID)
	}
	return &m
}

func firstA(t testing.TB, m *dns.Msg) string {
	t.Helper()
	if len(m.Answer) == 0 {
		t.Fatalf("no answer in %v", m)
	}
	a, ok := m.Answer[0].(*dns.A)
	if !ok {
		t.Fatalf("answer %v is not an A record", m.Answer[0])
	}
	return a.A.String()
}

func TestExchangeAnswer(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"udp4", "127.0.0.1:0"}, {"udp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			srv := startUDP(t, tc.network, tc.addr, func(s *udpServer, from netip.AddrPort, msg []byte) {
				s.send(from, answer(t, msg, "192.0.2.1"))
			})
			c := newClient(t, Config{})
			query, q := newQuery(t, "www.example.org.")
			orig := append([]byte(nil), query...)
			prefix := []byte("prefix")
			reply, err := c.Exchange(context.Background(), srv.addr, time.Second, query, q, prefix)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(query, orig) {
				t.Error("query modified")
			}
			if !bytes.HasPrefix(reply, prefix) {
				t.Fatal("reply not appended to dst")
			}
			if got := firstA(t, unpack(t, reply[len(prefix):])); got != "192.0.2.1" {
				t.Errorf("answer %s", got)
			}
			st := c.Stats()
			if st["sent"] != 1 || st["replies"] != 1 {
				t.Errorf("stats %v", st)
			}
		})
	}
}

func TestRandomIDsAndPorts(t *testing.T) {
	var mu sync.Mutex
	ids := map[uint16]int{}
	ports := map[uint16]int{}
	srv := startUDP(t, "udp4", "127.0.0.1:0", func(s *udpServer, from netip.AddrPort, msg []byte) {
		mu.Lock()
		ids[dnswire.ID(msg)]++
		ports[from.Port()]++
		mu.Unlock()
		echo(s, from, msg)
	})
	c := newClient(t, Config{})
	query, q := newQuery(t, "example.org.")
	const n = 2000
	for range n {
		if _, err := c.Exchange(context.Background(), srv.addr, time.Second, query, q, nil); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if ids[clientID] != 0 {
		t.Errorf("the client's ID was sent upstream %d times", ids[clientID])
	}
	// 2000 draws from 65535 values repeat about 30 of them.
	if len(ids) < n-150 {
		t.Errorf("only %d distinct IDs in %d exchanges", len(ids), n)
	}
	if len(ports) < DefaultSockets/2 {
		t.Errorf("only %d distinct source ports in %d exchanges: %v", len(ports), n, ports)
	}
}

// waitStat polls c's counter name until it reaches want.
func waitStat(t testing.TB, c *Client, name string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats()[name] < want {
		if time.Now().After(deadline) {
			t.Errorf("counter %s stuck at %d, want %d", name, c.Stats()[name], want)
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func TestForgedRepliesIgnored(t *testing.T) {
	other := startUDP(t, "udp4", "127.0.0.1:0", func(*udpServer, netip.AddrPort, []byte) {})
	c := newClient(t, Config{})
	srv := startUDP(t, "udp4", "127.0.0.1:0", func(s *udpServer, from netip.AddrPort, msg []byte) {
		// The right ID and question, but from another port: the kernel
		// drops it.
		other.send(from, answer(t, msg, "203.0.113.1"))
		// Another ID.
		wrongID := answer(t, msg, "203.0.113.2")
		dnswire.SetID(wrongID, dnswire.ID(msg)+1)
		s.send(from, wrongID)
		waitStat(t, c, "unknown_id", 1)
		// Another question.
		evil, _ := newQuery(t, "evil.example.")
		wrongQ := answer(t, evil, "203.0.113.3")
		dnswire.SetID(wrongQ, dnswire.ID(msg))
		s.send(from, wrongQ)
		waitStat(t, c, "wrong_question", 1)
		// Not a response, then too short.
		s.send(from, msg)
		s.send(from, msg[:5])
		waitStat(t, c, "malformed", 2)
		s.send(from, answer(t, msg, "192.0.2.1"))
	})
	query, q := newQuery(t, "www.example.org.")
	reply, err := c.Exchange(context.Background(), srv.addr, 5*time.Second, query, q, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := firstA(t, unpack(t, reply)); got != "192.0.2.1" {
		t.Errorf("accepted forged answer %s", got)
	}
	st := c.Stats()
	if st["replies"] != 1 || st["unknown_id"] != 1 || st["wrong_question"] != 1 || st["malformed"] != 2 {
		t.Errorf("stats %v", st)
	}
}

func TestTimeout(t *testing.T) {
	srv := startUDP(t, "udp4", "127.0.0.1:0", func(*udpServer, netip.AddrPort, []byte) {})
	c := newClient(t, Config{})
	query, q := newQuery(t, "example.org.")

	start := time.Now()
	_, err := c.Exchange(context.Background(), srv.addr, 200*time.Millisecond, query, q, nil)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
		t.Errorf("timed out after %v, want 200ms", d)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = c.Exchange(ctx, srv.addr, time.Hour, query, q, nil)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 3*time.Second {
		t.Errorf("timed out after %v, want the context's 100ms", d)
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err = c.Exchange(ctx, srv.addr, time.Hour, query, q, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if _, err = c.Exchange(ctx, srv.addr, time.Hour, query, q, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v on a canceled context, want context.Canceled", err)
	}
	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err = c.Exchange(ctx, srv.addr, time.Hour, query, q, nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("err %v past the context's deadline, want ErrTimeout", err)
	}

	if st := c.Stats(); st["timeouts"] != 3 {
		t.Errorf("stats %v", st)
	}

	c = newClient(t, Config{Timeout: 100 * time.Millisecond})
	start = time.Now()
	if _, err = c.Exchange(context.Background(), srv.addr, 0, query, q, nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 3*time.Second {
		t.Errorf("timed out after %v, want Config.Timeout", d)
	}
	if st := c.Stats(); st["timeouts"] != 1 {
		t.Errorf("stats %v", st)
	}
}

func TestPortUnreachableFailsFast(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	closed := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	conn.Close()

	c := newClient(t, Config{})
	query, q := newQuery(t, "example.org.")
	for range 3 {
		start := time.Now()
		_, err := c.Exchange(context.Background(), closed, 10*time.Second, query, q, nil)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("err %v, want ECONNREFUSED", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("failed after %v, not at once", d)
		}
	}
	if st := c.Stats(); st["refused"] != 3 {
		t.Errorf("stats %v", st)
	}
}

// truncatingUpstream listens on one loopback port for UDP and TCP. Over UDP
// it answers the first query with an empty reply with TC set, and records its
// ID; the first TCP connection is handed to tcp.
func truncatingUpstream(t *testing.T, tcp func(conn net.Conn)) (addr netip.AddrPort, udpID func() uint16) {
	t.Helper()
	var u *net.UDPConn
	var l *net.TCPListener
	for range 20 {
		var err error
		if u, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		if l, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err == nil {
			break
		}
		u.Close()
		u = nil
	}
	if u == nil {
		t.Fatal("no port free for both UDP and TCP")
	}
	var id uint16
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65535)
		n, from, err := u.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		id = dnswire.ID(buf[:n])
		tc := answer(t, buf[:n])
		tc[2] |= 0x02
		u.WriteToUDPAddrPort(tc, from)
	}()
	go func() {
		defer wg.Done()
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		tcp(conn)
	}()
	t.Cleanup(func() {
		u.Close()
		l.Close()
		wg.Wait()
	})
	return u.LocalAddr().(*net.UDPAddr).AddrPort(), func() uint16 {
		wg.Wait()
		return id
	}
}

// readTCP reads one length-prefixed message.
func readTCP(t *testing.T, conn net.Conn) []byte {
	var hdr [2]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		t.Error(err)
		return nil
	}
	msg := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(conn, msg); err != nil {
		t.Error(err)
		return nil
	}
	return msg
}

func writeTCP(conn net.Conn, msg []byte) {
	conn.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...))
}

func TestTruncatedRetriesOverTCP(t *testing.T) {
	var tcpID uint16
	addr, udpID := truncatingUpstream(t, func(conn net.Conn) {
		msg := readTCP(t, conn)
		if msg == nil {
			return
		}
		tcpID = dnswire.ID(msg)
		addrs := make([]string, 200)
		for i := range addrs {
			addrs[i] = fmt.Sprintf("10.0.%d.%d", i/256, i%256)
		}
		writeTCP(conn, answer(t, msg, addrs...))
	})
	c := newClient(t, Config{})
	query, q := newQuery(t, "big.example.org.")
	reply, err := c.Exchange(context.Background(), addr, 5*time.Second, query, q, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := unpack(t, reply)
	if len(m.Answer) != 200 || m.Truncated {
		t.Errorf("got %d answers, truncated %v", len(m.Answer), m.Truncated)
	}
	if u := udpID(); tcpID == u || tcpID == clientID {
		t.Errorf("TCP retry reused an ID: udp %#x tcp %#x client %#x", u, tcpID, clientID)
	}
	if st := c.Stats(); st["tcp_retries"] != 1 || st["replies"] != 2 {
		t.Errorf("stats %v", st)
	}
}

func TestTruncatedTCPWrongQuestion(t *testing.T) {
	addr, _ := truncatingUpstream(t, func(conn net.Conn) {
		msg := readTCP(t, conn)
		if msg == nil {
			return
		}
		evil, _ := newQuery(t, "evil.example.")
		reply := answer(t, evil, "203.0.113.1")
		dnswire.SetID(reply, dnswire.ID(msg))
		writeTCP(conn, reply)
	})
	c := newClient(t, Config{})
	query, q := newQuery(t, "big.example.org.")
	if _, err := c.Exchange(context.Background(), addr, 5*time.Second, query, q, nil); !errors.Is(err, dnswire.ErrWrongQuestion) {
		t.Fatalf("err %v, want ErrWrongQuestion", err)
	}
	if st := c.Stats(); st["wrong_question"] != 1 {
		t.Errorf("stats %v", st)
	}
}

func TestTruncatedTCPTimeout(t *testing.T) {
	addr, _ := truncatingUpstream(t, func(conn net.Conn) {
		// Never answers; the client gives up at its deadline.
		io.Copy(io.Discard, conn)
	})
	c := newClient(t, Config{})
	query, q := newQuery(t, "big.example.org.")
	if _, err := c.Exchange(context.Background(), addr, 300*time.Millisecond, query, q, nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
}

func TestSocketRenewal(t *testing.T) {
	var mu sync.Mutex
	ports := map[uint16]bool{}
	srv := startUDP(t, "udp4", "127.0.0.1:0", func(s *udpServer, from netip.AddrPort, msg []byte) {
		mu.Lock()
		ports[from.Port()] = true
		mu.Unlock()
		echo(s, from, msg)
	})
	query, q := newQuery(t, "example.org.")

	t.Run("uses", func(t *testing.T) {
		c := newClient(t, Config{Sockets: 2})
		c.maxUses = 3
		for range 30 {
			if _, err := c.Exchange(context.Background(), srv.addr, time.Second, query, q, nil); err != nil {
				t.Fatal(err)
			}
		}
		st := c.Stats()
		if st["sockets_opened"] < 10 || st["sockets_retired"] < 8 {
			t.Errorf("stats %v", st)
		}
		c.mu.Lock()
		live := len(c.live)
		c.mu.Unlock()
		if live > 2 {
			t.Errorf("%d sockets open, want at most 2", live)
		}
	})
	t.Run("age", func(t *testing.T) {
		c := newClient(t, Config{Sockets: 1})
		c.maxAge = time.Millisecond
		for range 5 {
			if _, err := c.Exchange(context.Background(), srv.addr, time.Second, query, q, nil); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond)
		}
		if st := c.Stats(); st["sockets_opened"] != 5 {
			t.Errorf("stats %v", st)
		}
	})
	mu.Lock()
	if len(ports) < 10 {
		t.Errorf("only %d source ports over the renewals", len(ports))
	}
	mu.Unlock()
}

func TestRetiredSocketFinishesInFlight(t *testing.T) {
	release := make(chan struct{})
	slow := startUDP(t, "udp4", "127.0.0.1:0", func(s *udpServer, from netip.AddrPort, msg []byte) {
		reply := answer(t, msg, "192.0.2.7")
		go func() {
			<-release
			s.send(from, reply)
		}()
	})
	c := newClient(t, Config{Sockets: 1})
	c.maxUses = 1
	query, q := newQuery(t, "example.org.")

	done := make(chan error, 1)
	var reply []byte
	go func() {
		var err error
		reply, err = c.Exchange(context.Background(), slow.addr, 5*time.Second, query, q, nil)
		done <- err
	}()
	waitStat(t, c, "sent", 1)
	// The next exchange retires the socket and opens another.
	slowPool, err := c.pool(slow.addr)
	if err != nil {
		t.Fatal(err)
	}
	first := slowPool.socks[0].Load()
	go c.Exchange(context.Background(), slow.addr, 100*time.Millisecond, query, q, nil)
	waitStat(t, c, "sockets_retired", 1)
	if slowPool.socks[0].Load() == first {
		t.Fatal("socket not replaced")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("in-flight exchange on a retired socket: %v", err)
	}
	if got := firstA(t, unpack(t, reply)); got != "192.0.2.7" {
		t.Errorf("answer %s", got)
	}
	first.mu.Lock()
	closed := first.closed
	first.mu.Unlock()
	if !closed {
		t.Error("retired socket still open after its last exchange")
	}
}

func TestConcurrentExchanges(t *testing.T) {
	srv := startUDP(t, "udp4", "127.0.0.1:0", func(s *udpServer, from netip.AddrPort, msg []byte) {
		go echo(s, from, append([]byte(nil), msg...))
	})
	c := newClient(t, Config{})
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("q%d.example.org.", i)
			query, q := newQuery(t, name)
			reply, err := c.Exchange(context.Background(), srv.addr, 10*time.Second, query, q, nil)
			if err != nil {
				errs <- err
				return
			}
			var m dns.Msg
			if err := m.Unpack(reply); err != nil {
				errs <- err
				return
			}
			if m.Id != clientID || len(m.Question) != 1 || m.Question[0].Name != name {
				errs <- fmt.Errorf("query %s got reply %v", name, &m)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := c.Stats(); st["replies"] != n {
		t.Errorf("stats %v", st)
	}
}

func TestClose(t *testing.T) {
	srv := startUDP(t, "udp4", "127.0.0.1:0", func(*udpServer, netip.AddrPort, []byte) {})
	c, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	query, q := newQuery(t, "example.org.")
	done := make(chan error, 1)
	go func() {
		_, err := c.Exchange(context.Background(), srv.addr, time.Hour, query, q, nil)
		done <- err
	}()
	waitStat(t, c, "sent", 1)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("in-flight exchange: %v, want ErrClosed", err)
	}
	if _, err := c.Exchange(context.Background(), srv.addr, time.Second, query, q, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("exchange after Close: %v, want ErrClosed", err)
	}
	other := startUDP(t, "udp4", "127.0.0.1:0", echo)
	if _, err := c.Exchange(context.Background(), other.addr, time.Second, query, q, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("exchange with a new server after Close: %v, want ErrClosed", err)
	}
	c.mu.Lock()
	if len(c.live) != 0 {
		t.Errorf("%d sockets left open", len(c.live))
	}
	c.mu.Unlock()
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestBadArguments(t *testing.T) {
	c := newClient(t, Config{})
	query, q := newQuery(t, "example.org.")
	dst := []byte("keep")
	for _, tc := range []struct {
		name   string
		server netip.AddrPort
		query  []byte
		q      *dnswire.Query
	}{
		{"zero server", netip.AddrPort{}, query, q},
		{"port 0", netip.MustParseAddrPort("127.0.0.1:0"), query, q},
		{"unspecified", netip.MustParseAddrPort("0.0.0.0:53"), query, q},
		{"short query", netip.MustParseAddrPort("127.0.0.1:53"), query[:11], q},
		{"no parse", netip.MustParseAddrPort("127.0.0.1:53"), query, nil},
	} {
		got, err := c.Exchange(context.Background(), tc.server, time.Second, tc.query, tc.q, dst)
		if err == nil || string(got) != "keep" {
			t.Errorf("%s: got %q, %v", tc.name, got, err)
		}
	}
	if _, err := New(Config{Sockets: -1}); err == nil {
		t.Error("negative socket count accepted")
	}
	if _, err := New(Config{Timeout: -1}); err == nil {
		t.Error("negative timeout accepted")
	}
}

func BenchmarkExchange(b *testing.B) {
	srv := startUDP(b, "udp4", "127.0.0.1:0", echo)
	c := newClient(b, Config{})
	query, q := newQuery(b, "www.example.org.")
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			var err error
			if buf, err = c.Exchange(context.Background(), srv.addr, time.Second, query, q, buf[:0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(50)
		b.RunParallel(func(pb *testing.PB) {
			buf := make([]byte, 0, 512)
			for pb.Next() {
				var err error
				if buf, err = c.Exchange(context.Background(), srv.addr, 10*time.Second, query, q, buf[:0]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// TestUpstreamQueryShape checks what reaches the server over UDP and over
// TCP: a random ID, the client's RD/CD/AD bits, the question, and a single
// OPT record of 1232 bytes with the client's DO bit.
func TestUpstreamQueryShape(t *testing.T) {
	var mu sync.Mutex
	var seen []*dns.Msg
	record := func(msg []byte) {
		m := new(dns.Msg)
		if err := m.Unpack(msg); err != nil {
			t.Errorf("upstream got an unparsable query: %v", err)
			return
		}
		mu.Lock()
		seen = append(seen, m)
		mu.Unlock()
	}
	for _, do := range []bool{true, false} {
		addr, _ := truncatingUpstream(t, func(conn net.Conn) {
			msg := readTCP(t, conn)
			if msg == nil {
				return
			}
			record(msg)
			writeTCP(conn, answer(t, msg, "192.0.2.1"))
		})
		m := new(dns.Msg)
		m.SetQuestion("Shape.Example.ORG.", dns.TypeAAAA)
		m.Id = clientID
		m.CheckingDisabled = true
		m.SetEdns0(4096, do)
		opt := m.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
		m.Extra = append(m.Extra, &dns.TXT{
			Hdr: dns.RR_Header{Name: "extra.example.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"x"},
		})
		query, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		q := new(dnswire.Query)
		if err := dnswire.ParseQuery(query, q); err != nil {
			t.Fatal(err)
		}
		srv := startUDP(t, "udp4", "127.0.0.1:0", func(s *udpServer, from netip.AddrPort, msg []byte) {
			record(msg)
			s.send(from, answer(t, msg))
		})
		c := newClient(t, Config{})
		for _, server := range []netip.AddrPort{srv.addr, addr} {
			if _, err := c.Exchange(context.Background(), server, 5*time.Second, query, q, nil); err != nil {
				t.Fatalf("do %v, %v: %v", do, server, err)
			}
		}
		mu.Lock()
		got := seen
		seen = nil
		mu.Unlock()
		for _, u := range got {
			if u.Id == clientID || u.Question[0].Name != "Shape.Example.ORG." || u.Question[0].Qtype != dns.TypeAAAA {
				t.Errorf("id %#x question %v", u.Id, u.Question)
			}
			if !u.RecursionDesired || !u.CheckingDisabled || u.AuthenticatedData {
				t.Errorf("flags %v", u.MsgHdr)
			}
			if len(u.Extra) != 1 {
				t.Fatalf("additional %v", u.Extra)
			}
			uo := u.IsEdns0()
			if uo == nil || uo.UDPSize() != dnswire.UpstreamUDPSize || uo.Do() != do || len(uo.Option) != 0 || uo.Version() != 0 {
				t.Errorf("OPT %v", uo)
			}
		}
		if len(got) != 2 {
			t.Errorf("%d queries seen, want the UDP one and the TCP one", len(got))
		}
	}
}
