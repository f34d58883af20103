package control

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxMessage bounds the text kept of one record.
const maxMessage = 512

// Recorder is a slog.Handler that passes every record on to the handler it
// wraps and keeps the last warnings and errors for Status.RecentErrors.
// A record logged again right after itself (same level and text) is
// counted rather than kept twice. It is safe for concurrent use, and the
// handlers WithAttrs and WithGroup derive share its buffer.
type Recorder struct {
	next   slog.Handler
	ring   *ring
	groups string // dotted prefix of the open groups, "" or "a.b."
	attrs  string // preformatted attributes from WithAttrs, " k=v ..."
}

// NewRecorder returns a Recorder passing records on to next and keeping
// the last n warnings and errors; n <= 0 keeps none.
func NewRecorder(next slog.Handler, n int) *Recorder {
	n = max(n, 0)
	return &Recorder{next: next, ring: &ring{size: n, entries: make([]ErrorEntry, 0, n)}}
}

// Recent returns the warnings and errors kept, oldest first.
func (r *Recorder) Recent() []ErrorEntry {
	return r.ring.recent()
}

// Enabled reports whether next handles level, or it is a warning or
// worse, which the Recorder keeps whatever next's level.
func (r *Recorder) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= slog.LevelWarn || r.next.Enabled(ctx, level)
}

// Handle keeps rec when it is a warning or worse and passes it on to next
// when next handles its level.
func (r *Recorder) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= slog.LevelWarn && r.ring.size > 0 {
		t := rec.Time
		if t.IsZero() {
			t = time.Now()
		}
		r.ring.add(t, rec.Level.String(), r.text(rec))
	}
	if !r.next.Enabled(ctx, rec.Level) {
		return nil
	}
	return r.next.Handle(ctx, rec)
}

// WithAttrs returns a Recorder whose records carry attrs, sharing r's
// buffer.
func (r *Recorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return r
	}
	var b strings.Builder
	b.WriteString(r.attrs)
	for _, a := range attrs {
		appendAttr(&b, r.groups, a)
	}
	return &Recorder{next: r.next.WithAttrs(attrs), ring: r.ring, groups: r.groups, attrs: b.String()}
}

// WithGroup returns a Recorder whose later attributes are under name,
// sharing r's buffer.
func (r *Recorder) WithGroup(name string) slog.Handler {
	if name == "" {
		return r
	}
	return &Recorder{next: r.next.WithGroup(name), ring: r.ring, groups: r.groups + name + ".", attrs: r.attrs}
}

// text renders rec as "message k=v ...", at most maxMessage bytes.
func (r *Recorder) text(rec slog.Record) string {
	var b strings.Builder
	b.WriteString(rec.Message)
	b.WriteString(r.attrs)
	rec.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, r.groups, a)
		return b.Len() < maxMessage
	})
	return truncate(b.String(), maxMessage)
}

// appendAttr writes a as " key=value", groups flattened into dotted keys.
func appendAttr(b *strings.Builder, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if v.Kind() == slog.KindGroup {
		if a.Key != "" {
			prefix += a.Key + "."
		}
		for _, g := range v.Group() {
			appendAttr(b, prefix, g)
		}
		return
	}
	b.WriteByte(' ')
	b.WriteString(quote(prefix + a.Key))
	b.WriteByte('=')
	var s string
	switch v.Kind() {
	case slog.KindTime:
		s = v.Time().Format(time.RFC3339Nano)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			s = err.Error()
		} else {
			s = v.String()
		}
	default:
		s = v.String()
	}
	b.WriteString(quote(s))
}

// quote returns s as it is when it is a plain word, else Go-quoted, so
// that no space, quote or control character reaches the output bare.
func quote(s string) string {
	if s == "" {
		return `""`
	}
	for _, c := range s {
		if c == ' ' || c == '=' || c == '"' || !unicode.IsPrint(c) {
			return strconv.Quote(s)
		}
	}
	return s
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "..."
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// ring is the buffer of the last warnings and errors, shared by a
// Recorder and the handlers derived from it.
type ring struct {
	size int // how many entries it keeps; fixed

	mu      sync.Mutex
	entries []ErrorEntry // len grows to cap, then wraps at next
	next    int          // where the next entry goes once full
}

// add keeps an entry, or counts it when it repeats the newest one.
func (g *ring) add(t time.Time, level, msg string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.entries) > 0 {
		last := &g.entries[(g.next+len(g.entries)-1)%len(g.entries)]
		if last.Level == level && last.Message == msg {
			last.Count++
			last.Time = t
			return
		}
	}
	e := ErrorEntry{Time: t, Level: level, Message: msg, Count: 1}
	if len(g.entries) < cap(g.entries) {
		g.entries = append(g.entries, e)
		g.next = len(g.entries) % cap(g.entries)
		return
	}
	g.entries[g.next] = e
	g.next = (g.next + 1) % len(g.entries)
}

// recent returns a copy of the entries, oldest first; nil when none.
func (g *ring) recent() []ErrorEntry {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.entries) == 0 {
		return nil
	}
	out := make([]ErrorEntry, 0, len(g.entries))
	if len(g.entries) < cap(g.entries) {
		return append(out, g.entries...)
	}
	out = append(out, g.entries[g.next:]...)
	return append(out, g.entries[:g.next]...)
}
