package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

const (
	// socketMode lets the daemon's user and group use the socket.
	socketMode = 0o660
	// maxSocketPath is the longest path a unix socket address holds
	// (sun_path is 108 bytes with its terminating NUL).
	maxSocketPath = 107
	// probeTimeout bounds the dial that tells a live socket from a stale one.
	probeTimeout = time.Second
	// connTimeout bounds a whole exchange on the server side.
	connTimeout = 5 * time.Second
	// maxRequest is the longest request line accepted.
	maxRequest = 4096
	// maxConns bounds the connections served at once.
	maxConns = 16
	// acceptBackoffMax caps the wait after a failed accept.
	acceptBackoffMax = time.Second
)

// Listen opens the control socket at path with mode 0660, creating its
// directory (0750) when missing. A socket left at path by a daemon that
// is gone is replaced; it fails when a daemon still listens there or when
// path is something other than a socket.
func Listen(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("empty control socket path")
	}
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("control socket path %s is %d bytes long: at most %d fit in a unix socket address", path, len(path), maxSocketPath)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, socketMode); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// removeStale removes the socket at path when nothing listens on it.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket: not replacing it", path)
	}
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: another daemon is listening on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: cannot tell whether another daemon listens on it: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale control socket: %w", err)
	}
	return nil
}

// request is a client's request line.
type request struct {
	Command string `json:"command"`
}

// response is the server's response line.
type response struct {
	OK     bool   `json:"ok"`
	Result any    `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

// flushResult is the result of flush-cache.
type flushResult struct {
	Flushed int `json:"flushed"`
}

// Serve answers requests on l with h until ctx ends, then closes l, which
// removes a unix socket that Listen created, waits for the requests in
// progress and returns nil. It returns an error when accepting fails for
// good. A nil logger logs nothing.
func Serve(ctx context.Context, l net.Listener, h Handler, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &server{h: h, logger: logger, conns: make(map[net.Conn]struct{})}
	stop := context.AfterFunc(ctx, func() {
		l.Close()
		s.closeAll()
	})
	defer stop()
	defer s.wg.Wait()
	defer l.Close()

	sem := make(chan struct{}, maxConns)
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return errors.New("control socket closed")
			}
			var ne net.Error
			if (errors.As(err, &ne) && ne.Timeout()) || isResourceShortage(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), acceptBackoffMax)
				logger.Warn("control socket accept failed, retrying", "error", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			return err
		}
		backoff = 0
		select {
		case sem <- struct{}{}:
		default:
			logger.Warn("control socket busy, connection refused", "max_connections", maxConns)
			refuse(c)
			continue
		}
		if !s.track(c) {
			c.Close()
			<-sem
			continue
		}
		s.wg.Go(func() {
			defer func() { <-sem }()
			defer s.untrack(c)
			s.serveConn(c)
		})
	}
}

// refuse tells a client over the connection limit to come back later and
// closes c. The line fits an empty socket buffer, so the write does not
// wait on the client; the deadline is a guard all the same.
func refuse(c net.Conn) {
	defer c.Close()
	if err := c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		return
	}
	out, err := json.Marshal(response{Error: "the daemon is busy with other control requests, try again"})
	if err != nil {
		return
	}
	_, _ = c.Write(append(out, '\n'))
}

// isResourceShortage reports whether an accept failed for want of
// descriptors or memory, which passes.
func isResourceShortage(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// server is the state of one Serve.
type server struct {
	h      Handler
	logger *slog.Logger
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// track records c as open; false once the server is shutting down.
func (s *server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// untrack closes c and forgets it.
func (s *server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// closeAll closes every open connection and refuses new ones.
func (s *server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
}

// serveConn answers the one request of c.
func (s *server) serveConn(c net.Conn) {
	if err := c.SetDeadline(time.Now().Add(connTimeout)); err != nil {
		return
	}
	r := bufio.NewReaderSize(c, maxRequest)
	line, err := r.ReadSlice('\n')
	var resp response
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		resp.Error = fmt.Sprintf("request longer than %d bytes", maxRequest)
	case err != nil && len(line) == 0:
		s.logger.Debug("control request not read", "error", err)
		return
	default:
		resp = s.answer(line)
	}
	out, err := json.Marshal(resp)
	if err != nil {
		out, _ = json.Marshal(response{Error: "encoding the response: " + err.Error()})
	}
	out = append(out, '\n')
	if _, err := c.Write(out); err != nil {
		s.logger.Debug("control response not sent", "error", err)
	}
}

// answer carries out one request line.
func (s *server) answer(line []byte) response {
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		return response{Error: "malformed request: " + err.Error()}
	}
	switch req.Command {
	case CommandStatus:
		return response{OK: true, Result: s.h.Status()}
	case CommandFlushCache:
		n, err := s.h.FlushCache()
		if err != nil {
			return response{Error: err.Error()}
		}
		return response{OK: true, Result: flushResult{Flushed: n}}
	default:
		return response{Error: fmt.Sprintf("unknown command %q (want %s or %s)", req.Command, CommandStatus, CommandFlushCache)}
	}
}
