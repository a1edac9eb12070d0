package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
)

// runScaleChart is "wsbench scale-chart --out chart.svg RESULTS...": it reads the RESULT
// lines of scale runs (a log, or one JSON object per line) and draws latency against
// connection count, one line per setup (--label) and figure.
func runScaleChart(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("scale-chart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "scale.svg", "the SVG to write")
	title := fs.String("title", "wsgateway: latency against connections, 6 gateway nodes on 2 cores", "chart title")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var rs []scaleResult
	for _, path := range fs.Args() {
		got, err := readScaleResults(path)
		if err != nil {
			fmt.Fprintln(stderr, "scale-chart:", err)
			return 1
		}
		rs = append(rs, got...)
	}
	f, err := os.Create(*out)
	if err == nil {
		err = writeScaleSVG(f, rs, *title)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "scale-chart:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %d results\n", *out, len(rs))
	return 0
}

func readScaleResults(path string) ([]scaleResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []scaleResult
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := bytes.TrimPrefix(bytes.TrimSpace(sc.Bytes()), []byte("RESULT "))
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var r scaleResult
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if r.Push != nil {
			out = append(out, r)
		}
	}
	return out, sc.Err()
}

// scaleSeries is one line of the chart.
type scaleSeries struct {
	name  string
	color string
	dash  string
	pts   [][2]float64 // connections, ms
}

// medianLast is the middle "time until the last recipient has it" of a level's broadcasts.
func medianLast(bs []scaleBroadcast) float64 {
	var v []float64
	for _, b := range bs {
		v = append(v, b.LastMs)
	}
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

// writeScaleSVG draws, for each label, push p50 and p99 and the broadcast's time until the
// last recipient, against connections (linear axis), latency on a log axis.
func writeScaleSVG(w io.Writer, rs []scaleResult, title string) error {
	var labels []string
	for _, r := range rs {
		if !slices.Contains(labels, r.Label) {
			labels = append(labels, r.Label)
		}
	}
	colors := []string{"#08519c", "#d62728", "#2ca02c", "#9467bd"}
	var series []scaleSeries
	for li, l := range labels {
		var mine []scaleResult
		for _, r := range rs {
			if r.Label == l {
				mine = append(mine, r)
			}
		}
		slices.SortFunc(mine, func(a, b scaleResult) int { return a.Conns - b.Conns })
		c := colors[li%len(colors)]
		p50 := scaleSeries{name: l + ": push p50", color: c, dash: "2 3"}
		p99 := scaleSeries{name: l + ": push p99", color: c}
		bc := scaleSeries{name: l + ": broadcast, last recipient", color: c, dash: "8 4"}
		for _, r := range mine {
			n := float64(r.Conns)
			p50.pts = append(p50.pts, [2]float64{n, r.Push.Latency.P50})
			p99.pts = append(p99.pts, [2]float64{n, r.Push.Latency.P99})
			if len(r.Broadcasts) > 0 {
				bc.pts = append(bc.pts, [2]float64{n, medianLast(r.Broadcasts)})
			}
		}
		series = append(series, p50, p99, bc)
	}

	var sb strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH, svgW, svgH)
	p(`<rect width="100%%" height="100%%" fill="%s"/>`+"\n", backgroundColor)
	p(`<text x="%d" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", padL, html.EscapeString(title))
	if len(series) == 0 {
		p(`<text x="%d" y="%d">no results</text></svg>`+"\n", svgW/2-40, svgH/2)
		_, err := io.WriteString(w, sb.String())
		return err
	}
	maxN, lo, hi := 0.0, math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, pt := range s.pts {
			maxN = max(maxN, pt[0])
			if pt[1] > 0 {
				lo, hi = min(lo, pt[1]), max(hi, pt[1])
			}
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 1, 10
	}
	ylo, yhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if yhi <= ylo {
		yhi = ylo + 1
	}
	// The x axis ends at the next multiple of 10,000 above the largest count.
	xmax := math.Ceil(maxN/10000) * 10000
	x := func(n float64) float64 { return padL + n/xmax*plotW }
	y := func(v float64) float64 {
		return padT + (1-(math.Log10(math.Max(v, 1e-3))-ylo)/(yhi-ylo))*plotH
	}
	for d := ylo; d <= yhi; d++ {
		for m := 1; m < 10; m++ {
			if d == yhi && m > 1 {
				break
			}
			v := math.Pow(10, d) * float64(m)
			stroke := "#eee"
			if m == 1 {
				stroke = "#ccc"
				p(`<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padL-6, y(v)+4, fmtMs(v))
			}
			p(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", padL, y(v), svgW-padR, y(v), stroke)
		}
	}
	step := xmax / 10
	for n := 0.0; n <= xmax+1; n += step {
		p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>`+"\n", x(n), padT, x(n), svgH-padB)
		p(`<text x="%.1f" y="%d" text-anchor="middle">%gk</text>`+"\n", x(n), svgH-padB+18, n/1000)
	}
	p(`<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="%s"/>`+"\n", padL, padT, plotW, plotH, grey)
	p(`<text x="%d" y="%d" text-anchor="middle">open connections, spread over the nodes</text>`+"\n", padL+plotW/2, svgH-18)
	p(`<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">latency (log scale)</text>`+"\n", padT+plotH/2)
	for i, s := range series {
		var pts []string
		for _, pt := range s.pts {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(pt[0]), y(pt[1])))
			p(`<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(pt[0]), y(pt[1]), s.color)
		}
		dash := ""
		if s.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, s.dash)
		}
		p(`<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", s.color, dash, strings.Join(pts, " "))
		// Legend under the title: one row per setup, its three lines side by side.
		lx, ly := padL+(i%3)*250, 42+(i/3)*14
		p(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", lx, ly-4, lx+24, ly-4, s.color, dash)
		p(`<text x="%d" y="%d" font-size="11">%s</text>`+"\n", lx+28, ly, html.EscapeString(s.name))
	}
	p("</svg>\n")
	_, err := io.WriteString(w, sb.String())
	return err
}
