package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Process is a program the lab runs in its namespace as a child of this
// process. ip netns exec execs the program, so PID is the program's own
// and signals reach it directly.
type Process struct {
	// PID is the program's process ID.
	PID int
	// LogPath is the file that receives its standard output and error.
	LogPath string

	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // cmd.Wait's result, valid once done is closed
}

// StartDaemon writes config to Dir/<name>.conf and runs
// "binary --config-file Dir/<name>.conf extraArgs..." in the lab namespace
// with Env, its standard output and error going to Dir/<name>.log
// (truncated). It returns once the program runs; Close stops it if nobody
// else does.
func (l *Lab) StartDaemon(binary, name, config string, extraArgs ...string) (*Process, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") {
		return nil, fmt.Errorf("lab: bad daemon name %q", name)
	}
	conf := filepath.Join(l.Dir, name+".conf")
	if err := os.WriteFile(conf, []byte(config), 0o644); err != nil {
		return nil, fmt.Errorf("lab: daemon %s: %w", name, err)
	}
	args := append([]string{"--config-file", conf}, extraArgs...)
	p, err := l.startProcess(name, filepath.Join(l.Dir, name+".log"), binary, args...)
	if err != nil {
		return nil, fmt.Errorf("lab: daemon %s: %w", name, err)
	}
	return p, nil
}

// startProcess starts name with args in the lab namespace, output to
// logPath, and registers it for Close.
func (l *Lab) startProcess(name, logPath, binary string, args ...string) (*Process, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab is closed")
	}
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.NetNS, binary}, args...)...)
	cmd.Env = l.Env()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", cmdLine(binary, args), err)
	}
	p := &Process{PID: cmd.Process.Pid, LogPath: logPath, name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	l.procs = append(l.procs, p)
	return p, nil
}

// Signal sends sig to the process; os.ErrProcessDone once it has exited.
func (p *Process) Signal(sig os.Signal) error {
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	return p.cmd.Process.Signal(sig)
}

// Wait waits for the process to exit and returns its exit status. When a
// signal ended it, or it could not be waited for, the code is -1 and the
// error says why. It may be called several times and from several
// goroutines.
func (p *Process) Wait() (int, error) {
	<-p.done
	code := p.cmd.ProcessState.ExitCode()
	if code >= 0 {
		return code, nil
	}
	return -1, fmt.Errorf("%s (pid %d): %w", p.name, p.PID, p.err)
}

// Stop sends SIGTERM, waits up to 10 s for the process to exit, then sends
// SIGKILL. It returns nil when the process exited with status 0, else an
// error with its exit status or the signal that ended it.
func (p *Process) Stop() error {
	if err := p.terminate(); err != nil {
		return err
	}
	code, err := p.Wait()
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%s (pid %d): exit status %d", p.name, p.PID, code)
	}
	return nil
}

// terminate ends the process, SIGTERM first, SIGKILL after stopTimeout; it
// reports only a failure to end it.
func (p *Process) terminate() error {
	if err := p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s (pid %d): SIGTERM: %w", p.name, p.PID, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	if err := p.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s (pid %d): SIGKILL: %w", p.name, p.PID, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s (pid %d) still runs 5 s after SIGKILL", p.name, p.PID)
	}
}
