package auth

import (
	"regexp"
	"strings"
	"testing"
)

func TestValidUserID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		want bool
	}{
		{name: "letters", id: "alice", want: true},
		{name: "upper case and digits", id: "Alice42", want: true},
		{name: "one byte", id: "a", want: true},
		{name: "digits only", id: "123", want: true},
		{name: "128 bytes", id: strings.Repeat("a", 128), want: true},
		{name: "underscore", id: "a_b", want: true},
		{name: "dot", id: "a.b", want: true},
		{name: "colon", id: "tenant:a", want: true},
		{name: "at", id: "a@example.com", want: true},
		{name: "hyphen", id: "a-b", want: true},
		{name: "punctuation only", id: "_.:@-", want: true},

		{name: "empty", id: "", want: false},
		{name: "129 bytes", id: strings.Repeat("a", 129), want: false},
		{name: "space", id: "a b", want: false},
		{name: "tab", id: "a\tb", want: false},
		{name: "newline", id: "a\n", want: false},
		{name: "NUL", id: "a\x00", want: false},
		{name: "slash", id: "a/b", want: false},
		{name: "open brace (Redis hash tag)", id: "{a", want: false},
		{name: "close brace (Redis hash tag)", id: "a}", want: false},
		{name: "star", id: "a*", want: false},
		{name: "plus", id: "a+b", want: false},
		{name: "percent", id: "a%20", want: false},
		{name: "comma", id: "a,b", want: false},
		{name: "quote", id: `a"`, want: false},
		{name: "latin letter with diacritic", id: "zoë", want: false},
		{name: "cyrillic", id: "алиса", want: false},
		{name: "emoji", id: "a😀", want: false},
		{name: "lone high byte", id: "a\xff", want: false},
		{name: "fullwidth digit", id: "１", want: false},
		{name: "unicode 64 runes in 128 bytes", id: strings.Repeat("é", 64), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidUserID(tt.id); got != tt.want {
				t.Fatalf("ValidUserID(%q) = %v; want %v", tt.id, got, tt.want)
			}
		})
	}
}

func TestValidUserIDAllocs(t *testing.T) {
	id := strings.Repeat("a.b", 40)
	ok := false
	if n := testing.AllocsPerRun(100, func() { ok = ValidUserID(id) }); n != 0 || !ok {
		t.Fatalf("ValidUserID(%q) = %v with %v allocations per call; want true with 0", id, ok, n)
	}
}

// userIDPattern is the reference definition that ValidUserID implements by hand.
var userIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,128}$`)

func FuzzValidUserID(f *testing.F) {
	for _, s := range []string{"", "alice", "a@b.c", "zoë", "a b", "\xff", strings.Repeat("a", 128), strings.Repeat("a", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidUserID(s), userIDPattern.MatchString(s); got != want {
			t.Fatalf("ValidUserID(%q) = %v; the reference pattern says %v", s, got, want)
		}
	})
}

func BenchmarkValidUserID(b *testing.B) {
	id := "user-1234@example.com"
	b.ReportAllocs()
	for b.Loop() {
		if !ValidUserID(id) {
			b.Fatal("invalid")
		}
	}
}
