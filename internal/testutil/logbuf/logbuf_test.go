package logbuf

import (
	"fmt"
	"sync"
	"testing"
)

func TestTail(t *testing.T) {
	var b Buffer
	if got := b.Tail(3); got != "" {
		t.Fatalf("Tail of an empty buffer = %q; want empty", got)
	}
	fmt.Fprint(&b, "one\ntwo\nthree\nfour\n")
	for _, tc := range []struct {
		n    int
		want string
	}{
		{1, "four"},
		{2, "three\nfour"},
		{4, "one\ntwo\nthree\nfour"},
		{10, "one\ntwo\nthree\nfour"},
	} {
		if got := b.Tail(tc.n); got != tc.want {
			t.Errorf("Tail(%d) = %q; want %q", tc.n, got, tc.want)
		}
	}
	if got, want := b.String(), "one\ntwo\nthree\nfour\n"; got != want {
		t.Errorf("String() = %q; want %q", got, want)
	}
}

func TestTailBytes(t *testing.T) {
	var b Buffer
	fmt.Fprint(&b, "abcdef")
	if got, want := b.TailBytes(3), "…def"; got != want {
		t.Errorf("TailBytes(3) = %q; want %q", got, want)
	}
	if got, want := b.TailBytes(6), "abcdef"; got != want {
		t.Errorf("TailBytes(6) = %q; want %q", got, want)
	}
}

func TestLimit(t *testing.T) {
	b := Buffer{Limit: 4}
	for _, s := range []string{"abc", "de", "fg"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v; want %d, nil", s, n, err, len(s))
		}
	}
	// "abc" (3 bytes, not over 4) lets "de" in; 5 bytes are over 4, so "fg" is dropped.
	if got, want := b.String(), "abcde"; got != want {
		t.Errorf("String() = %q; want %q", got, want)
	}
}

func TestConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprintf(&b, "writer %d\n", i)
				_ = b.Tail(2)
			}
		})
	}
	wg.Wait()
	if got := len(b.String()); got != 8*100*len("writer 0\n") {
		t.Errorf("kept %d bytes; want %d", got, 8*100*len("writer 0\n"))
	}
}
