// Package defaults fills the unset fields of option structs, where zero means "use the
// default" and a negative count or duration is never meaningful.
package defaults

// Positive sets *v to def when *v is zero or negative.
func Positive[T ~int | ~int64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// String sets *v to def when *v is empty.
func String(v *string, def string) {
	if *v == "" {
		*v = def
	}
}
