package ws

import (
	"slices"
	"testing"
)

// thin halves the marks and keeps the later of each pair, so a position read from what is left
// is never ahead of what the client's TCP stack confirmed.
func TestThinKeepsLaterMarks(t *testing.T) {
	var marks []sentMark
	for i := range 7 {
		marks = append(marks, sentMark{seq: int64(i + 1), end: int64(100 * (i + 1))})
	}
	got := thin(marks)
	want := []sentMark{{2, 200}, {4, 400}, {6, 600}}
	if !slices.Equal(got, want) {
		t.Fatalf("thin = %v, want %v", got, want)
	}
}
