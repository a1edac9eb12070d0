package client

import (
	"bytes"
	"testing"
	"time"
)

func TestParseFrame(t *testing.T) {
	good := []struct {
		in   string
		want frame
	}{
		{`17 {"text":"hi"}`, frame{kind: frameNumbered, seq: 17, payload: []byte(`{"text":"hi"}`)}},
		{"1 two words\nand a line", frame{kind: frameNumbered, seq: 1, payload: []byte("two words\nand a line")}},
		{"9223372036854775807 max", frame{kind: frameNumbered, seq: 1<<63 - 1, payload: []byte("max")}},
		{"5 ", frame{kind: frameNumbered, seq: 5, payload: []byte{}}},
		{"- broadcast", frame{kind: frameUnnumbered, payload: []byte("broadcast")}},
		{"- ", frame{kind: frameUnnumbered, payload: []byte{}}},
		{"gap 3 9", frame{kind: frameGap, from: 3, to: 9}},
		{"gap 4 4", frame{kind: frameGap, from: 4, to: 4}},
		{"reset 0", frame{kind: frameReset}},
		{"reset 12", frame{kind: frameReset, latest: 12}},
		{"pong", frame{kind: framePong}},
	}
	for _, tc := range good {
		got, err := parseFrame([]byte(tc.in))
		if err != nil {
			t.Errorf("parseFrame(%q): %v", tc.in, err)
			continue
		}
		if got.kind != tc.want.kind || got.seq != tc.want.seq || got.from != tc.want.from ||
			got.to != tc.want.to || got.latest != tc.want.latest || !bytes.Equal(got.payload, tc.want.payload) {
			t.Errorf("parseFrame(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	for _, in := range []string{
		"", " ", "0 zero", "+5 x", "-5 x", "5x y", "9223372036854775808 overflow", "hello",
		"gap", "gap 5", "gap 5 3", "gap 0 3", "gap a b", "gap 1 2 3", "reset", "reset -1",
		"reset 1 2", "pong ", "ping", "ack 3",
	} {
		if f, err := parseFrame([]byte(in)); err == nil {
			t.Errorf("parseFrame(%q) = %+v, want an error", in, f)
		}
	}
}

func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{"17 {}", "- x", "gap 1 2", "reset 3", "pong", "0 x", "gap 2 1", "\xff\xfe"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := parseFrame(data)
		if err != nil {
			return
		}
		switch fr.kind {
		case frameNumbered:
			if fr.seq <= 0 || !bytes.HasSuffix(data, fr.payload) {
				t.Fatalf("%q: %+v", data, fr)
			}
		case frameGap:
			if fr.from <= 0 || fr.to < fr.from {
				t.Fatalf("%q: %+v", data, fr)
			}
		case frameReset:
			if fr.latest < 0 {
				t.Fatalf("%q: %+v", data, fr)
			}
		}
	})
}

func TestTokenExpiry(t *testing.T) {
	exp := time.Unix(1700000000, 500_000_000)
	if got, ok := tokenExpiry(makeToken("alice", exp)); !ok || !got.Equal(exp) {
		t.Fatalf("tokenExpiry = %v, %v; want %v", got, ok, exp)
	}
	for _, tok := range []string{
		"", "opaque-token", "a.b", "a.!!!.c",
		"e30.eyJzdWIiOiJhbGljZSJ9.c2ln",     // {"sub":"alice"}: no exp
		"e30.eyJleHAiOiJzb29uIn0.c2ln",      // {"exp":"soon"}
		"e30.eyJleHAiOi0xfQ.c2ln",           // {"exp":-1}
		"e30.eyJleHAiOjFlMzAwfQ.c2ln",       // {"exp":1e300}
		"e30.eyJleHAiOjE3MDAwMDAwMDB9.c2ln", // {"exp":1700000000}: the one good one
	} {
		_, ok := tokenExpiry(tok)
		if want := tok == "e30.eyJleHAiOjE3MDAwMDAwMDB9.c2ln"; ok != want {
			t.Errorf("tokenExpiry(%q) ok = %v, want %v", tok, ok, want)
		}
	}
}

func TestRefreshTime(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		left, lead time.Duration // lead 0: no refresh
	}{
		{time.Hour, time.Minute},
		{4 * time.Second, time.Second},
		{2 * time.Minute, 30 * time.Second},
		{0, 0},
		{-time.Second, 0},
	} {
		got := refreshTime(now, now.Add(tc.left))
		if tc.lead == 0 {
			if !got.IsZero() {
				t.Errorf("left %v: refresh at %v, want none", tc.left, got)
			}
			continue
		}
		if want := now.Add(tc.left - tc.lead); !got.Equal(want) {
			t.Errorf("left %v: refresh %v before exp, want %v", tc.left, now.Add(tc.left).Sub(got), tc.lead)
		}
	}
	if !refreshTime(now, time.Time{}).IsZero() {
		t.Errorf("a token without exp got a refresh time")
	}
}
