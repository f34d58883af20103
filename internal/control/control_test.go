package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeHandler answers with a fixed status and counts flushes.
type fakeHandler struct {
	status   Status
	entries  int
	flushErr error
	flushes  atomic.Int32
}

func (h *fakeHandler) Status() Status { return h.status }

func (h *fakeHandler) FlushCache() (int, error) {
	h.flushes.Add(1)
	if h.flushErr != nil {
		return 0, h.flushErr
	}
	return h.entries, nil
}

// sampleStatus is a status with every part filled.
func sampleStatus() Status {
	started := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	return Status{
		Version: "1.2.3",
		Started: started,
		Bridge:  "br-int",
		OpenFlow: OpenFlowStatus{
			Connected: true, Target: "unix:/var/run/openvswitch/br-int.mgmt",
			Flows: 12, Meters: 9, Ports: 10, Reconnects: 2, FlowReinstalls: 1,
		},
		Upstreams: []UpstreamStatus{
			{Server: "192.0.2.1:53", Up: true, AvgRTT: 1500 * time.Microsecond},
			{Server: "[2001:db8::53]:53", Up: false, ConsecutiveFailures: 7, LastError: "read udp: i/o timeout"},
		},
		Cache:     &CacheStatus{Entries: 420, Hits: 300, Misses: 100, Evictions: 5},
		Inventory: InventoryStatus{Connected: true, VMPorts: 8, Networks: []string{"net-b", "net-a"}},
		Records: &RecordsStatus{
			LastSync:   started.Add(2 * time.Hour),
			Networks:   []NetworkRecords{{ID: "net-b", Ports: 3, Names: 6}, {ID: "net-a", Ports: 5, Names: 10}},
			SyncErrors: 1,
		},
		Counters: map[string]uint64{"answered": 1000, "rate_limited": 4, "spoofed_mac": 1},
		RecentErrors: []ErrorEntry{
			{Time: started.Add(time.Hour), Level: "WARN", Message: "upstream server down, probing it server=[2001:db8::53]:53", Count: 3},
		},
	}
}

// start listens in a temporary directory and serves h until the test ends.
// It returns the socket path and a function that stops the server and
// returns Serve's error.
func start(t *testing.T, h Handler) (string, func() error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, h, nil) }()
	var result error
	stopped := false
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not return after its context ended")
			}
		}
		return result
	}
	t.Cleanup(func() { stop() })
	return path, stop
}

func TestStatusRoundTrip(t *testing.T) {
	want := sampleStatus()
	path, _ := start(t, &fakeHandler{status: want})
	out, err := Query(path, CommandStatus, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var got Status
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("status after the round trip:\n got %+v\nwant %+v", got, want)
	}
	for _, key := range []string{`"avg_rtt_ns":1500000`, `"flow_reinstalls":1`, `"recent_errors":[`} {
		if !strings.Contains(string(out), key) {
			t.Errorf("JSON lacks %s: %s", key, out)
		}
	}
}

func TestStatusOptionalPartsOmitted(t *testing.T) {
	path, _ := start(t, &fakeHandler{status: Status{Version: "dev"}})
	out, err := Query(path, CommandStatus, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"cache"`, `"records"`} {
		if strings.Contains(string(out), key) {
			t.Errorf("JSON has %s though it is off: %s", key, out)
		}
	}
}

func TestFlushCache(t *testing.T) {
	h := &fakeHandler{entries: 42}
	path, _ := start(t, h)
	out, err := Query(path, CommandFlushCache, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != `{"flushed":42}` {
		t.Errorf("flush-cache result %s", out)
	}
	if h.flushes.Load() != 1 {
		t.Errorf("%d flushes, want 1", h.flushes.Load())
	}
}

func TestFlushCacheError(t *testing.T) {
	path, _ := start(t, &fakeHandler{flushErr: errors.New("the cache is off (cache_size = 0)")})
	_, err := Query(path, CommandFlushCache, 5*time.Second)
	if err == nil || err.Error() != "the cache is off (cache_size = 0)" {
		t.Errorf("error %v, want the handler's", err)
	}
}

func TestUnknownCommand(t *testing.T) {
	h := &fakeHandler{}
	path, _ := start(t, h)
	_, err := Query(path, "reboot", 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), `unknown command "reboot"`) {
		t.Errorf("error %v, want unknown command", err)
	}
	if h.flushes.Load() != 0 {
		t.Error("an unknown command flushed the cache")
	}
}

// exchange sends raw on a new connection to path and returns the
// response line.
func exchange(t *testing.T, path, raw string) response {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("%v after %q", err, line)
	}
	var r response
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("%v in %q", err, line)
	}
	return r
}

func TestBadRequests(t *testing.T) {
	path, _ := start(t, &fakeHandler{})
	for name, raw := range map[string]string{
		"not JSON":  "status\n",
		"truncated": `{"command":` + "\n",
		"too long":  `{"command":"` + strings.Repeat("x", 2*maxRequest) + `"}` + "\n",
	} {
		r := exchange(t, path, raw)
		if r.OK || r.Error == "" {
			t.Errorf("%s: response %+v, want an error", name, r)
		}
	}
}

func TestRequestWithoutNewline(t *testing.T) {
	path, _ := start(t, &fakeHandler{entries: 1})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(`{"command":"flush-cache"}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.UnixConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != `{"ok":true,"result":{"flushed":1}}`+"\n" {
		t.Errorf("response %q, %v", line, err)
	}
}

func TestSilentClientTimesOut(t *testing.T) {
	path, stop := start(t, &fakeHandler{})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A client that never sends must not hold up the others or shutdown.
	if _, err := Query(path, CommandStatus, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("shutdown took %v with an idle client connected", d)
	}
}

func TestServeRemovesSocket(t *testing.T) {
	path, stop := start(t, &fakeHandler{})
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != socketMode {
		t.Errorf("socket mode %o, want %o", mode, socketMode)
	}
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after shutdown: %v", err)
	}
	if _, err := Query(path, CommandStatus, time.Second); err == nil || !strings.Contains(err.Error(), "no daemon listening") {
		t.Errorf("Query after shutdown: %v", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close() // a daemon that died: its socket stays, nothing listens
	if _, err := os.Lstat(path); err != nil {
		t.Fatal(err)
	}
	if _, err := Query(path, CommandStatus, time.Second); err == nil || !strings.Contains(err.Error(), "no daemon listening") {
		t.Errorf("Query on a stale socket: %v", err)
	}
	l, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Serve(ctx, l, &fakeHandler{entries: 3}, nil)
	if out, err := Query(path, CommandFlushCache, 5*time.Second); err != nil || string(out) != `{"flushed":3}` {
		t.Errorf("Query on the new socket: %s, %v", out, err)
	}
}

func TestListenRefusesLiveSocket(t *testing.T) {
	path, _ := start(t, &fakeHandler{entries: 7})
	if l, err := Listen(path); err == nil {
		l.Close()
		t.Fatal("Listen on a live daemon's socket succeeded")
	} else if !strings.Contains(err.Error(), "another daemon is listening") {
		t.Errorf("error %q does not say a daemon is live", err)
	}
	// The live daemon is untouched.
	if out, err := Query(path, CommandFlushCache, 5*time.Second); err != nil || string(out) != `{"flushed":7}` {
		t.Errorf("live daemon after the refused Listen: %s, %v", out, err)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err := Listen(path); err == nil {
		l.Close()
		t.Fatal("Listen over a regular file succeeded")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Errorf("the file was touched: %q, %v", b, err)
	}
}

func TestListenCreatesDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "control.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}

func TestListenBadPaths(t *testing.T) {
	if _, err := Listen(""); err == nil {
		t.Error("empty path: no error")
	}
	long := filepath.Join(t.TempDir(), strings.Repeat("s", maxSocketPath))
	if _, err := Listen(long); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("long path: %v", err)
	}
}

func TestQueryTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		time.Sleep(2 * time.Second) // a hung daemon: reads nothing, answers nothing
	}()
	begin := time.Now()
	if _, err := Query(path, CommandStatus, 200*time.Millisecond); err == nil {
		t.Error("Query of a hung daemon: no error")
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("Query took %v with a 200ms timeout", d)
	}
}

func TestConcurrentQueries(t *testing.T) {
	h := &fakeHandler{status: sampleStatus(), entries: 1}
	path, _ := start(t, h)
	errs := make(chan error, 40)
	for i := range cap(errs) {
		go func() {
			command := CommandStatus
			if i%2 == 1 {
				command = CommandFlushCache
			}
			_, err := Query(path, command, 5*time.Second)
			errs <- err
		}()
	}
	failed := 0
	for range cap(errs) {
		if err := <-errs; err != nil {
			failed++
		}
	}
	// Past maxConns at once the server may turn clients away; most get through.
	if failed > cap(errs)-maxConns {
		t.Errorf("%d of %d concurrent queries failed", failed, cap(errs))
	}
}
