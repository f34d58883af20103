// Package systemd tells the service manager about the daemon's state
// (sd_notify), for units of Type=notify.
package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// Notify sends state, newline-separated assignments such as "READY=1",
// "STOPPING=1", "RELOADING=1\nMONOTONIC_USEC=..." or "STATUS=...", to the
// service manager as one datagram on the socket $NOTIFY_SOCKET names: a
// path, or an abstract socket when it starts with '@'. Without
// $NOTIFY_SOCKET (not run by systemd, or not Type=notify) it does nothing
// and returns nil.
func Notify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if state == "" {
		return errors.New("sd_notify: empty state")
	}
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@") {
		return fmt.Errorf("sd_notify: unsupported NOTIFY_SOCKET %q (want a path or an abstract socket)", addr)
	}
	// The net package maps a leading '@' to the abstract namespace's NUL.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	n, err := c.Write([]byte(state))
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	if n != len(state) {
		return fmt.Errorf("sd_notify: sent %d of %d bytes", n, len(state))
	}
	return nil
}
