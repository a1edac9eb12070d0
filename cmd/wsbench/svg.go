package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
	"time"
)

// Chart geometry, in SVG user units.
const (
	svgW, svgH                 = 860, 460
	padL, padR, padT, padB     = 70, 70, 70, 60
	binsPerDecade              = 20
	plotW                      = svgW - padL - padR
	plotH                      = svgH - padT - padB
	histColor, cdfColor, grey  = "#9ecae1", "#08519c", "#888"
	markColor, backgroundColor = "#d62728", "#ffffff"
)

// writeSVG draws the latency distribution of s: a histogram (bars, right axis: share of
// samples per bin, bins of equal width on the log axis) and the cumulative distribution (line,
// left axis), on a logarithmic latency axis, with p50/p90/p99/p99.9/max marked. The file is
// self-contained: no scripts, fonts or links.
func writeSVG(w io.Writer, s *histSnapshot, title, subtitle string) error {
	var sb strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH, svgW, svgH)
	p(`<rect width="100%%" height="100%%" fill="%s"/>`+"\n", backgroundColor)
	p(`<text x="%d" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", padL, html.EscapeString(title))
	p(`<text x="%d" y="44" fill="#444">%s</text>`+"\n", padL, html.EscapeString(subtitle))
	if s.total == 0 {
		p(`<text x="%d" y="%d">no samples</text></svg>`+"\n", svgW/2-40, svgH/2)
		_, err := io.WriteString(w, sb.String())
		return err
	}

	// X axis: whole decades of milliseconds around the samples.
	lo := math.Floor(math.Log10(math.Max(msOf(s.Quantile(0)), 1e-3)))
	hi := math.Ceil(math.Log10(math.Max(msOf(s.Max()), 1e-3)))
	if hi <= lo {
		hi = lo + 1
	}
	x := func(v float64) float64 { // v in ms
		l := math.Log10(math.Max(v, 1e-6))
		return padL + (l-lo)/(hi-lo)*plotW
	}
	yCDF := func(f float64) float64 { return padT + (1-f)*plotH }

	// Histogram bins and the CDF polyline, from the histogram buckets.
	bins := make([]uint64, int((hi-lo)*binsPerDecade)+1)
	var cum uint64
	var pts []string
	pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(math.Pow(10, lo)), yCDF(0)))
	for i, c := range s.counts {
		if c == 0 {
			continue
		}
		low, width := bucketRange(i)
		mid := float64(low) + float64(width)/2
		v := mid / 1e6
		bi := int((math.Log10(math.Max(v, 1e-6)) - lo) * binsPerDecade)
		bi = max(0, min(bi, len(bins)-1))
		bins[bi] += c
		cum += c
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(low+width)/1e6), yCDF(float64(cum)/float64(s.total))))
	}
	var maxBin uint64
	for _, c := range bins {
		maxBin = max(maxBin, c)
	}
	// Right axis: share per bin, up to the largest bin rounded up to 5 %.
	top := math.Ceil(float64(maxBin)/float64(s.total)*20) / 20
	if top <= 0 {
		top = 0.05
	}
	yHist := func(f float64) float64 { return padT + (1-f/top)*plotH }
	bw := float64(plotW) / ((hi - lo) * binsPerDecade)
	for i, c := range bins {
		if c == 0 {
			continue
		}
		f := float64(c) / float64(s.total)
		x0 := padL + float64(i)*bw
		p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x0, yHist(f), math.Max(bw-1, 0.5), yHist(0)-yHist(f), histColor)
	}

	// Grid and axes.
	for d := lo; d <= hi; d++ {
		for m := 1; m < 10; m++ {
			v := math.Pow(10, d) * float64(m)
			if d == hi && m > 1 {
				break
			}
			xx := x(v)
			stroke := "#eee"
			if m == 1 {
				stroke = "#ccc"
				p(`<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", xx, svgH-padB+18, fmtMs(v))
			}
			p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`+"\n", xx, padT, xx, svgH-padB, stroke)
		}
	}
	for f := 0.0; f <= 1.0001; f += 0.25 {
		yy := yCDF(f)
		p(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", padL, yy, svgW-padR, yy)
		p(`<text x="%d" y="%.1f" text-anchor="end" fill="%s">%.0f%%</text>`+"\n", padL-6, yy+4, cdfColor, f*100)
		p(`<text x="%d" y="%.1f" fill="%s">%.1f%%</text>`+"\n", svgW-padR+6, yy+4, "#3182bd", f*top*100)
	}
	p(`<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="%s"/>`+"\n", padL, padT, plotW, plotH, grey)
	p(`<text x="%d" y="%d" text-anchor="middle">latency, push scheduled → message received (log scale)</text>`+"\n", padL+plotW/2, svgH-18)
	p(`<text transform="translate(18 %d) rotate(-90)" text-anchor="middle" fill="%s">cumulative share of messages (line)</text>`+"\n", padT+plotH/2, cdfColor)
	p(`<text transform="translate(%d %d) rotate(90)" text-anchor="middle" fill="#3182bd">share per bin (bars)</text>`+"\n", svgW-14, padT+plotH/2)

	p(`<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", cdfColor, strings.Join(pts, " "))

	// Percentile marks.
	marks := []struct {
		name string
		d    time.Duration
	}{
		{"p50", s.Quantile(0.5)}, {"p90", s.Quantile(0.9)}, {"p99", s.Quantile(0.99)},
		{"p99.9", s.Quantile(0.999)}, {"max", s.Max()},
	}
	for i, m := range marks {
		xx := x(msOf(m.d))
		p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-dasharray="4 3"/>`+"\n", xx, padT, xx, svgH-padB, markColor)
		// Labels inside the plot, staggered over three rows so neighbours do not overlap.
		p(`<text x="%.1f" y="%d" fill="%s">%s %s</text>`+"\n", xx+3, padT+14+14*(i%3), markColor, m.name, fmtMs(msOf(m.d)))
	}
	p("</svg>\n")
	_, err := io.WriteString(w, sb.String())
	return err
}

func msOf(d time.Duration) float64 { return float64(d) / 1e6 }

// fmtMs formats a value in milliseconds compactly for axis labels.
func fmtMs(v float64) string {
	switch {
	case v < 1:
		return fmt.Sprintf("%gµs", math.Round(v*1000*10)/10)
	case v < 1000:
		return fmt.Sprintf("%gms", math.Round(v*100)/100)
	}
	return fmt.Sprintf("%gs", math.Round(v/10)/100)
}
