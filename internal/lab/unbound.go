package lab

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
)

// Zone is a static zone unbound serves from memory.
type Zone struct {
	// Origin is the zone's name with its final dot, e.g. "example.test.".
	Origin string
	// Records are resource records in zone-file syntax, one each, e.g.
	// "www.example.test. 300 IN A 192.0.2.10".
	Records []string
}

// Server is a DNS server the lab runs in its namespace.
type Server struct {
	// Port is the UDP and TCP port it listens on at 127.0.0.1, ::1,
	// Gateway4 and Gateway6.
	Port uint16
	// PID is its process ID.
	PID int
	// LogPath is its log file.
	LogPath string

	proc *Process
}

// Stop ends the server (SIGTERM, SIGKILL after 10 s) and returns how it
// ended (nil: exit status 0).
func (s *Server) Stop() error { return s.proc.Stop() }

// StartUnbound runs unbound in the lab namespace serving only zones, from
// memory, plus local-zone "." static, so that every other name is
// NXDOMAIN and unbound never sends a query anywhere. It listens on
// 127.0.0.1, ::1, Gateway4 and Gateway6 on one free port (UDP and TCP) and
// returns once it answers there. Close stops it if nobody else does.
func (l *Lab) StartUnbound(zones ...Zone) (*Server, error) {
	port, err := l.freePort()
	if err != nil {
		return nil, fmt.Errorf("lab: unbound: %w", err)
	}
	base := filepath.Join(l.Dir, fmt.Sprintf("unbound-%d", port))
	conf, err := l.unboundConfig(base, port, zones)
	if err != nil {
		return nil, fmt.Errorf("lab: unbound: %w", err)
	}
	return l.startUnboundConfig(base, port, conf)
}

// unboundConfig renders the configuration of an unbound whose files start
// with base.
func (l *Lab) unboundConfig(base string, port uint16, zones []Zone) (string, error) {
	var b strings.Builder
	b.WriteString("server:\n")
	for _, a := range []string{"127.0.0.1", "::1", l.Gateway4.String(), l.Gateway6.String()} {
		fmt.Fprintf(&b, "\tinterface: %s\n", a)
	}
	fmt.Fprintf(&b, "\tport: %d\n", port)
	b.WriteString("\tdo-daemonize: no\n\tchroot: \"\"\n\tusername: \"\"\n")
	for _, kv := range [][2]string{{"directory", l.Dir}, {"pidfile", base + ".pid"}, {"logfile", base + ".log"}} {
		q, err := unboundQuote(kv[1])
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "\t%s: %s\n", kv[0], q)
	}
	b.WriteString(`	use-syslog: no
	access-control: 0.0.0.0/0 allow
	access-control: ::/0 allow
	module-config: "iterator"
	num-threads: 1
	msg-buffer-size: 65552
	do-not-query-localhost: yes
	outgoing-range: 16
	local-zone: "." static
`)
	for _, z := range zones {
		origin, err := unboundQuote(z.Origin)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "\tlocal-zone: %s static\n", origin)
		for _, rr := range z.Records {
			q, err := unboundQuote(rr)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "\tlocal-data: %s\n", q)
		}
	}
	b.WriteString("remote-control:\n\tcontrol-enable: no\n")
	return b.String(), nil
}

// unboundQuote quotes s for unbound.conf: with double quotes, or with
// single quotes when s holds double quotes (TXT data).
func unboundQuote(s string) (string, error) {
	switch {
	case strings.ContainsAny(s, "\n\r\x00"):
		return "", fmt.Errorf("line break in %q", s)
	case !strings.Contains(s, `"`):
		return `"` + s + `"`, nil
	case !strings.Contains(s, `'`):
		return `'` + s + `'`, nil
	}
	return "", fmt.Errorf("cannot quote %q: it holds both kinds of quotes", s)
}

// freePort returns a port free for UDP and TCP, on IPv4 and IPv6, in the
// lab namespace.
func (l *Lab) freePort() (uint16, error) {
	var port uint16
	err := l.InNetNS(func() error {
		for range 50 {
			tcp, err := net.Listen("tcp", ":0")
			if err != nil {
				return err
			}
			p := tcp.Addr().(*net.TCPAddr).Port
			udp, err := net.ListenPacket("udp", ":"+strconv.Itoa(p))
			tcp.Close()
			if err == nil {
				udp.Close()
				port = uint16(p)
				return nil
			}
		}
		return errors.New("no free port")
	})
	return port, err
}
