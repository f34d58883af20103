package upstream

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/ovs-dns-forwarder/ovs-dns-forwarder/internal/dnswire"
)

// exchangeTCP asks server again over a fresh TCP connection, with a new
// random ID, after a truncated UDP reply; the reply is appended to dst with
// the query's own ID. ex provides the buffer for the framed query.
func (c *Client) exchangeTCP(ctx context.Context, server netip.AddrPort, deadline time.Time, query []byte, q *dnswire.Query, ex *exchange, dst []byte) ([]byte, error) {
	c.stats.tcpRetries.Add(1)
	reply, id, err := c.tcp(ctx, server, deadline, query, q, ex, dst)
	if err != nil {
		var ne net.Error
		if ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout() || !time.Now().Before(deadline) {
			return dst, c.ended(ctx)
		}
		c.stats.errors.Add(1)
		return dst, fmt.Errorf("upstream %v: tcp: %w", server, err)
	}
	if err := dnswire.CheckReply(reply[len(dst):], id, q.Name, q.Type, q.Class); err != nil {
		c.countRejected(err)
		return dst, fmt.Errorf("upstream %v: tcp: %w", server, err)
	}
	c.stats.replies.Add(1)
	dnswire.SetID(reply[len(dst):], ex.origID)
	return reply, nil
}

// tcp sends the upstream form of query (see dnswire.AppendUpstreamQuery)
// under a fresh random ID over a new TCP connection to server and appends
// the message it gets back to dst. It returns the ID used. The upstream form
// fits the 2-byte length: a question and an OPT record without options.
func (c *Client) tcp(ctx context.Context, server netip.AddrPort, deadline time.Time, query []byte, q *dnswire.Query, ex *exchange, dst []byte) ([]byte, uint16, error) {
	d := net.Dialer{Deadline: deadline}
	conn, err := d.DialContext(ctx, "tcp", server.String())
	if err != nil {
		return dst, 0, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := conn.SetDeadline(deadline); err != nil {
		return dst, 0, err
	}

	var b [2]byte
	id := ex.origID
	for id == ex.origID {
		crand.Read(b[:])
		id = binary.BigEndian.Uint16(b[:])
	}
	ex.buf = dnswire.AppendUpstreamQuery(append(ex.buf[:0], 0, 0), query, q, id)
	binary.BigEndian.PutUint16(ex.buf, uint16(len(ex.buf)-2))
	if _, err := conn.Write(ex.buf); err != nil {
		return dst, 0, err
	}

	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return dst, 0, err
	}
	reply := append(dst, make([]byte, binary.BigEndian.Uint16(b[:]))...)
	if _, err := io.ReadFull(conn, reply[len(dst):]); err != nil {
		return dst, 0, err
	}
	return reply, id, nil
}
