package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// newTestRecorder returns a Recorder keeping n records over a text
// handler at Info level, and the buffer that handler writes.
func newTestRecorder(n int) (*Recorder, *bytes.Buffer) {
	var buf bytes.Buffer
	return NewRecorder(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}), n), &buf
}

// messages lists the messages of entries.
func messages(entries []ErrorEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Message)
	}
	return out
}

func TestRecorderKeepsWarningsAndErrors(t *testing.T) {
	r, buf := newTestRecorder(10)
	log := slog.New(r)
	log.Debug("debug")
	log.Info("info")
	log.Warn("warned", "server", "192.0.2.1:53")
	log.Error("failed", "error", errors.New("connection refused"))
	got := r.Recent()
	want := []string{"warned server=192.0.2.1:53", `failed error="connection refused"`}
	if fmt.Sprint(messages(got)) != fmt.Sprint(want) {
		t.Errorf("kept %q, want %q", messages(got), want)
	}
	if got[0].Level != "WARN" || got[1].Level != "ERROR" || got[0].Count != 1 || got[0].Time.IsZero() {
		t.Errorf("entries %+v", got)
	}
	out := buf.String()
	if strings.Contains(out, "debug") || !strings.Contains(out, "msg=info") || !strings.Contains(out, "msg=failed") {
		t.Errorf("the wrapped handler wrote:\n%s", out)
	}
}

func TestRecorderKeepsWarningsAboveNextLevel(t *testing.T) {
	var buf bytes.Buffer
	r := NewRecorder(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError}), 4)
	slog.New(r).Warn("quiet warning")
	if got := messages(r.Recent()); len(got) != 1 || got[0] != "quiet warning" {
		t.Errorf("kept %q", got)
	}
	if buf.Len() != 0 {
		t.Errorf("the wrapped handler wrote a record below its level: %s", buf.String())
	}
}

func TestRecorderRingWraps(t *testing.T) {
	r, _ := newTestRecorder(3)
	log := slog.New(r)
	for i := range 5 {
		log.Warn("warning", "n", i)
	}
	want := []string{"warning n=2", "warning n=3", "warning n=4"}
	if got := messages(r.Recent()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("kept %q, want %q", got, want)
	}
	log.Warn("warning", "n", 5)
	want = []string{"warning n=3", "warning n=4", "warning n=5"}
	if got := messages(r.Recent()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("kept %q, want %q", got, want)
	}
}

func TestRecorderCountsRepeats(t *testing.T) {
	r, _ := newTestRecorder(3)
	log := slog.New(r)
	log.Warn("openflow connect failed, retrying")
	log.Warn("openflow connect failed, retrying")
	log.Error("openflow connect failed, retrying")
	log.Error("openflow connect failed, retrying")
	log.Error("openflow connect failed, retrying")
	got := r.Recent()
	if len(got) != 2 || got[0].Count != 2 || got[1].Count != 3 || got[1].Level != "ERROR" {
		t.Errorf("kept %+v, want WARN x2 then ERROR x3", got)
	}
}

func TestRecorderNone(t *testing.T) {
	r, buf := newTestRecorder(0)
	slog.New(r).Error("failed")
	if got := r.Recent(); got != nil {
		t.Errorf("kept %+v with n = 0", got)
	}
	if !strings.Contains(buf.String(), "failed") {
		t.Error("the record did not reach the wrapped handler")
	}
}

func TestRecorderAttrsAndGroups(t *testing.T) {
	r, buf := newTestRecorder(5)
	log := slog.New(r).With("component", "ofswitch").WithGroup("conn").With("target", "unix:/run/br int.mgmt")
	log.Warn("lost", "err", "EOF", slog.Group("retry", "in", "100ms"))
	slog.New(r).Warn("plain")
	want := []string{
		`lost component=ofswitch conn.target="unix:/run/br int.mgmt" conn.err=EOF conn.retry.in=100ms`,
		"plain",
	}
	if got := messages(r.Recent()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("kept %q,\nwant %q", got, want)
	}
	if !strings.Contains(buf.String(), "conn.target=") {
		t.Errorf("the wrapped handler lost the attributes:\n%s", buf.String())
	}
}

func TestRecorderEscapesAndTruncates(t *testing.T) {
	r, _ := newTestRecorder(2)
	log := slog.New(r)
	log.Warn("odd name", "name", "evil\x1b[31m\nname")
	log.Warn("long", "value", strings.Repeat("é", maxMessage))
	got := r.Recent()
	if strings.ContainsAny(got[0].Message, "\x1b\n") {
		t.Errorf("control characters kept: %q", got[0].Message)
	}
	if len(got[1].Message) > maxMessage || !strings.HasSuffix(got[1].Message, "...") || !strings.HasPrefix(got[1].Message, "long value=é") {
		t.Errorf("long message (%d bytes) not cut: %.40q...", len(got[1].Message), got[1].Message)
	}
}

func TestRecorderConcurrent(t *testing.T) {
	r, _ := newTestRecorder(8)
	base := slog.New(r)
	var wg sync.WaitGroup
	for g := range 8 {
		log := base.With("goroutine", g)
		wg.Go(func() {
			for i := range 200 {
				log.Warn("warning", "i", i)
				if i%10 == 0 {
					_ = r.Recent()
				}
			}
		})
	}
	wg.Wait()
	got := r.Recent()
	if len(got) != 8 {
		t.Fatalf("kept %d entries, want 8", len(got))
	}
	for _, e := range got {
		if !strings.HasPrefix(e.Message, "warning goroutine=") || !strings.Contains(e.Message, " i=") || e.Count != 1 {
			t.Errorf("unexpected entry %q", e.Message)
		}
	}
	if !r.Enabled(context.Background(), slog.LevelWarn) || r.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("Enabled does not follow warnings-always, else the wrapped handler")
	}
}
