package bus_test

import (
	"testing"

	"github.com/wsgateway/wsgateway/internal/bus"
)

// Only the inbox's own header ("\x00<seq> ") makes a payload numbered; everything else a
// publisher may send arrives as it is, unnumbered.
func TestParseNumbered(t *testing.T) {
	for _, c := range []struct {
		in   string
		seq  int64
		data string
	}{
		{"\x0017 {\"a\":1}", 17, `{"a":1}`},
		{"\x001 ", 1, ""},
		{"\x001  two spaces", 1, " two spaces"},
		{"hello", 0, "hello"},
		{"17 hello", 0, "17 hello"},
		{"\x00x hello", 0, "\x00x hello"},
		{"\x00-1 hello", 0, "\x00-1 hello"},
		{"\x000 hello", 0, "\x000 hello"},
		{"\x0099999999999999999999 x", 0, "\x0099999999999999999999 x"},
		{"\x0012", 0, "\x0012"},
		{"", 0, ""},
	} {
		seq, data := bus.ParseNumbered([]byte(c.in))
		if seq != c.seq || string(data) != c.data {
			t.Errorf("ParseNumbered(%q) = %d, %q; want %d, %q", c.in, seq, data, c.seq, c.data)
		}
	}
}

func FuzzParseNumbered(f *testing.F) {
	for _, s := range []string{"\x0017 x", "hello", "\x00 ", "\x001"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		seq, data := bus.ParseNumbered(in)
		if seq < 0 || len(data) > len(in) {
			t.Fatalf("ParseNumbered(%q) = %d, %q", in, seq, data)
		}
		if seq == 0 && string(data) != string(in) {
			t.Fatalf("unnumbered payload changed: %q → %q", in, data)
		}
	})
}
