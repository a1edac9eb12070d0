// Package logbuf is the log sink of tests that run a gateway in-process or as a
// child process: a goroutine-safe buffer whose tail a failing test prints.
package logbuf

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer is a goroutine-safe [io.Writer] that keeps what is written to it. Its
// zero value is ready to use and keeps everything; set Limit before the first
// Write to stop keeping after that many bytes (a long soak run logs more than
// anyone reads).
type Buffer struct {
	// Limit, when positive, is how many bytes the buffer keeps: a Write that
	// finds the buffer holding more is dropped (and still reports success, so
	// the logger carries on). Set it before the first Write.
	Limit int

	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p, unless the buffer already holds more than Limit bytes.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Limit > 0 && b.buf.Len() > b.Limit {
		return len(p), nil // enough to see what went wrong
	}
	return b.buf.Write(p)
}

// String returns everything kept so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Tail returns the last n lines kept (all of them if there are fewer), without
// the final newline.
func (b *Buffer) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TailBytes returns the last n bytes kept, after "…" when that cuts some off.
func (b *Buffer) TailBytes(n int) string {
	s := b.String()
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
