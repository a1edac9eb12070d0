// Package metricstest reads the gateway's Prometheus metrics in tests that run it
// in-process, straight from its registry.
package metricstest

import "github.com/prometheus/client_golang/prometheus"

// Sum returns the sum of the counter and gauge samples of the metric name whose labels
// include every pair of labels (label name, value, …); 0 when there is none yet, and -1
// when g fails to gather.
func Sum(g prometheus.Gatherer, name string, labels ...string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return -1
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue samples
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
