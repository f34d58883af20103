package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"syscall"
	"time"
)

// maxResponse bounds the response a client reads.
const maxResponse = 16 << 20

// Query sends command to the daemon listening on the control socket at
// path and returns the result: a Status in JSON for CommandStatus,
// {"flushed":N} for CommandFlushCache. An error the daemon reports comes
// back as the error. timeout bounds the whole exchange.
func Query(path, command string, timeout time.Duration) ([]byte, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, dialError(path, err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	req, err := json.Marshal(request{Command: command})
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(append(req, '\n')); err != nil {
		return nil, fmt.Errorf("sending the request: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(c, maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("reading the response: %w", err)
	}
	if len(out) > maxResponse {
		return nil, fmt.Errorf("response longer than %d bytes", maxResponse)
	}
	if len(out) == 0 {
		return nil, errors.New("the daemon closed the connection without a response")
	}
	var resp struct {
		OK     bool            `json:"ok"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		return nil, fmt.Errorf("malformed response: %w", err)
	}
	if !resp.OK {
		if resp.Error == "" {
			return nil, errors.New("the daemon refused the request without a reason")
		}
		return nil, errors.New(resp.Error)
	}
	return resp.Result, nil
}

// dialError explains why the control socket could not be reached.
func dialError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no daemon listening on %s (is it running?)", path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("permission denied on %s (run as root or as a member of the socket's group)", path)
	default:
		return err
	}
}
