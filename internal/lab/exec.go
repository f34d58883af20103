package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cmdTimeout bounds every short command the harness runs (ip, ovs-vsctl,
// ovs-ofctl, ethtool, ...).
const cmdTimeout = 30 * time.Second

// stopTimeout is how long a process gets to exit after SIGTERM before it
// is killed.
const stopTimeout = 10 * time.Second

// run executes name with args under a timeout and returns its standard
// output. env nil means the current environment; stdin may be empty. A
// failure is reported with the command line and everything it printed.
func run(timeout time.Duration, env []string, stdin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.WaitDelay = time.Second
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (timed out after %v)", err, timeout)
		}
		out := strings.TrimSpace(stderr.String() + "\n" + stdout.String())
		return stdout.String(), fmt.Errorf("%s: %w: %s", cmdLine(name, args), err, out)
	}
	return stdout.String(), nil
}

// cmdLine renders a command for error messages.
func cmdLine(name string, args []string) string {
	return strings.Join(append([]string{name}, args...), " ")
}

// ip runs the ip tool in the root namespace.
func ip(args ...string) error {
	_, err := run(cmdTimeout, nil, "", "ip", args...)
	return err
}

// inNS runs name with args inside the named network namespace.
func inNS(ns string, env []string, name string, args ...string) (string, error) {
	return run(cmdTimeout, env, "", "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// poll calls check every interval until it returns true or an error, or
// until timeout passes; what describes the awaited condition in the error.
func poll(timeout time.Duration, what string, check func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := check()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("waiting %v for %s: %w", timeout, what, last)
			}
			return fmt.Errorf("waiting %v for %s: timed out", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// daemon is a process that detached itself (ovsdb-server, ovs-vswitchd):
// it is not a child of this process, so it is tracked by PID and by the
// command name the kernel reports for it, which guards against signalling
// a recycled PID.
type daemon struct {
	pid  int
	comm string
}

// readPidfile returns the daemon whose PID a pidfile holds.
func readPidfile(path, comm string) (daemon, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return daemon{}, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return daemon{}, fmt.Errorf("pidfile %s: bad content %q", path, b)
	}
	return daemon{pid: pid, comm: comm}, nil
}

// alive reports whether the daemon still runs: its PID exists, is not a
// zombie and still carries the expected command name.
func (d daemon) alive() bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(d.pid) + "/stat")
	if err != nil {
		return false
	}
	// Format: pid (comm) state ...; comm may contain spaces and parentheses.
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || end+2 >= len(s) {
		return false
	}
	return s[open+1:end] == d.comm && s[end+2] != 'Z'
}

// stop sends SIGTERM, waits up to stopTimeout, then sends SIGKILL and
// waits again. A daemon that is already gone is not an error.
func (d daemon) stop() error {
	if !d.alive() {
		return nil
	}
	if err := syscall.Kill(d.pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s (pid %d): %w", d.comm, d.pid, err)
	}
	gone := func() (bool, error) { return !d.alive(), nil }
	if poll(stopTimeout, d.comm+" to exit", gone) == nil {
		return nil
	}
	if d.alive() {
		if err := syscall.Kill(d.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill -9 %s (pid %d): %w", d.comm, d.pid, err)
		}
	}
	return poll(5*time.Second, fmt.Sprintf("%s (pid %d) to die after SIGKILL", d.comm, d.pid), gone)
}
