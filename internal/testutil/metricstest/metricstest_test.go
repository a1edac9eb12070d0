package metricstest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestSum(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total"}, []string{"reason", "node"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	reg.MustRegister(c, g)
	c.WithLabelValues("a", "1").Add(2)
	c.WithLabelValues("a", "2").Add(3)
	c.WithLabelValues("b", "1").Add(5)
	g.Set(7)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"c_total", nil, 10},
		{"c_total", []string{"reason", "a"}, 5},
		{"c_total", []string{"reason", "a", "node", "2"}, 3},
		{"c_total", []string{"reason", "z"}, 0},
		{"g", nil, 7},
		{"missing", nil, 0},
	} {
		if got := Sum(reg, tc.name, tc.labels...); got != tc.want {
			t.Errorf("Sum(%s, %v) = %v; want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}
