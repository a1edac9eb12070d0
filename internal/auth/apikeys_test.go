package auth

import (
	"strings"
	"testing"
)

func TestAPIKeys(t *testing.T) {
	tests := []struct {
		name    string
		keys    []string
		wantLen int
		accept  []string // Authorization header values that must pass
		refuse  []string // and those that must not
	}{
		{
			name: "one key", keys: []string{"k1"}, wantLen: 1,
			accept: []string{"Bearer k1", "bearer k1", "BEARER k1", "Bearer  k1 "},
			refuse: []string{"", "k1", "Bearer", "Bearer ", "Bearerk1", "Basic k1", "Token k1",
				"Bearer k", "Bearer k1x", "Bearer K1", "Bearer xk1", "Bearer k1 k1"},
		},
		{
			name: "several keys", keys: []string{"alpha", "bravo", "charlie"}, wantLen: 3,
			accept: []string{"Bearer alpha", "Bearer bravo", "Bearer charlie"},
			refuse: []string{"Bearer delta", "Bearer alphabravo", "Bearer alpha,bravo"},
		},
		{
			name: "rotation: old and new during the switch", keys: []string{"old-key", "new-key"}, wantLen: 2,
			accept: []string{"Bearer old-key", "Bearer new-key"},
		},
		{
			name: "rotation: old key dropped", keys: []string{"new-key"}, wantLen: 1,
			accept: []string{"Bearer new-key"},
			refuse: []string{"Bearer old-key"},
		},
		{
			name: "empty and blank keys ignored", keys: []string{"", " ", "k1", ""}, wantLen: 1,
			accept: []string{"Bearer k1"},
			refuse: []string{"Bearer ", "Bearer  ", "Bearer"},
		},
		{
			name: "whitespace around keys trimmed", keys: []string{" k1 ", "\tk2\n"}, wantLen: 2,
			accept: []string{"Bearer k1", "Bearer k2"},
		},
		{
			name: "duplicates counted once", keys: []string{"k1", "k1", " k1"}, wantLen: 1,
			accept: []string{"Bearer k1"},
		},
		{
			name: "long key", keys: []string{strings.Repeat("x", 4096)}, wantLen: 1,
			accept: []string{"Bearer " + strings.Repeat("x", 4096)},
			refuse: []string{"Bearer " + strings.Repeat("x", 4095), "Bearer " + strings.Repeat("x", 4097)},
		},
		{
			name: "no keys", keys: nil, wantLen: 0,
			refuse: []string{"", "Bearer", "Bearer ", "Bearer k1"},
		},
		{
			name: "only empty keys", keys: []string{"", ""}, wantLen: 0,
			refuse: []string{"", "Bearer", "Bearer "},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := NewAPIKeys(tt.keys)
			if got := k.Len(); got != tt.wantLen {
				t.Errorf("Len = %d; want %d", got, tt.wantLen)
			}
			for _, h := range tt.accept {
				if !k.CheckHeader(h) {
					t.Errorf("CheckHeader(%q) = false; want true", h)
				}
			}
			for _, h := range tt.refuse {
				if k.CheckHeader(h) {
					t.Errorf("CheckHeader(%q) = true; want false", h)
				}
			}
		})
	}
}

func TestAPIKeysNil(t *testing.T) {
	var k *APIKeys
	if k.Len() != 0 || k.CheckHeader("Bearer x") {
		t.Fatal("a nil *APIKeys must hold no keys and accept nothing")
	}
}

// TestAPIKeysCallerSliceReuse checks that the set does not alias the caller's slice.
func TestAPIKeysCallerSliceReuse(t *testing.T) {
	keys := []string{"k1"}
	k := NewAPIKeys(keys)
	keys[0] = "changed"
	if !k.CheckHeader("Bearer k1") || k.CheckHeader("Bearer changed") {
		t.Fatal("NewAPIKeys must copy the keys")
	}
}

func FuzzAPIKeysCheckHeader(f *testing.F) {
	keys := []string{"alpha", "bravo"}
	k := NewAPIKeys(keys)
	for _, s := range []string{"Bearer alpha", "bearer  bravo\t", "Bearer", "Basic alpha", "alpha", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, authorization string) {
		if !k.CheckHeader(authorization) {
			return
		}
		got, ok := bearer(authorization)
		if !ok || (got != "alpha" && got != "bravo") {
			t.Fatalf("CheckHeader(%q) accepted a header without a configured key", authorization)
		}
	})
}

func BenchmarkAPIKeysCheckHeader(b *testing.B) {
	k := NewAPIKeys([]string{"old-key-0123456789abcdef", "new-key-0123456789abcdef"})
	b.ReportAllocs()
	for b.Loop() {
		if !k.CheckHeader("Bearer new-key-0123456789abcdef") {
			b.Fatal("refused")
		}
	}
}
