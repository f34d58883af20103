package systemd

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen opens a unixgram socket at addr and points NOTIFY_SOCKET at it.
func listen(t *testing.T, addr string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", addr)
	return c
}

// receive reads one datagram from c.
func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotifyPath(t *testing.T) {
	c := listen(t, filepath.Join(t.TempDir(), "notify"))
	for _, state := range []string{"READY=1", "STATUS=answering", "RELOADING=1\nMONOTONIC_USEC=123456", "STOPPING=1"} {
		if err := Notify(state); err != nil {
			t.Fatalf("Notify(%q): %v", state, err)
		}
		if got := receive(t, c); got != state {
			t.Errorf("received %q, want %q", got, state)
		}
	}
}

func TestNotifyAbstract(t *testing.T) {
	c := listen(t, fmt.Sprintf("@ovs-dns-forwarder-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := Notify("READY=1\nSTATUS=answering"); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, c); got != "READY=1\nSTATUS=answering" {
		t.Errorf("received %q", got)
	}
}

func TestNotifyUnset(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, want nil", err)
	}
}

func TestNotifyErrors(t *testing.T) {
	dir := t.TempDir()
	listen(t, filepath.Join(dir, "notify"))
	if err := Notify(""); err == nil {
		t.Error("empty state: no error")
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "missing"))
	if err := Notify("READY=1"); err == nil {
		t.Error("missing socket: no error")
	}
	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	if err := Notify("READY=1"); err == nil || !strings.Contains(err.Error(), "unsupported") {
		t.Errorf("vsock address: %v, want unsupported", err)
	}
}
