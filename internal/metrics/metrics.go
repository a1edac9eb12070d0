// Package metrics owns the Prometheus registry of one gateway process and implements the
// observer interfaces that ws, bus and api declare, so those packages never import Prometheus.
// Every name is prefixed wsgateway_.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the set of collectors of one process.
type Metrics struct {
	reg *prometheus.Registry

	connections   prometheus.Gauge
	connects      prometheus.Counter
	disconnects   *prometheus.CounterVec
	refused       *prometheus.CounterVec
	delivered     prometheus.Counter
	dropped       *prometheus.CounterVec
	offlineStored *prometheus.CounterVec
	flushed       prometheus.Counter
	slow          prometheus.Counter
	requests      *prometheus.CounterVec
	latency       prometheus.Histogram
	queueDepth    prometheus.Histogram
	reconnects    prometheus.Counter
	probeFailures prometheus.Counter
	inbound       prometheus.Counter
	inboundBytes  prometheus.Counter
}

// New registers every collector, the Go runtime and process collectors, and a build-info
// gauge labelled with node id and version.
func New(nodeID, version string) *Metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{reg: reg}
	m.connections = prometheus.NewGauge(prometheus.GaugeOpts{Name: "wsgateway_connections", Help: "WebSocket connections open on this node."})
	m.connects = prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgateway_connects_total", Help: "WebSocket connections accepted."})
	m.disconnects = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wsgateway_disconnects_total", Help: "WebSocket connections ended, by reason."}, []string{"reason"})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wsgateway_refused_total", Help: "Upgrade requests refused before the upgrade, by HTTP status."}, []string{"status"})
	m.delivered = prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgateway_messages_delivered_total", Help: "Messages written to a client socket."})
	m.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wsgateway_messages_dropped_total", Help: "Messages dropped, by reason."}, []string{"reason"})
	m.offlineStored = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wsgateway_offline_stored_total", Help: "Pushes that no node took live: they wait in the user's inbox (source push)."}, []string{"source"})
	m.flushed = prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgateway_offline_flushed_total", Help: "Messages connections read from the inbox (their start, catch-ups after a jump or an outage)."})
	m.slow = prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgateway_slow_consumers_total", Help: "Connections closed with 1013 because their send queue was full."})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wsgateway_api_requests_total", Help: "HTTP API requests, by route and status."}, []string{"route", "status"})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "wsgateway_delivery_latency_seconds",
		Help:    "Time from a message reaching this node (API push or Redis) to its write to the client socket.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
	m.queueDepth = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "wsgateway_send_queue_depth",
		Help:    "Send-queue length seen at each enqueue.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
	})
	m.reconnects = prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgateway_pubsub_reconnects_total", Help: "Redis pub/sub connections rebuilt after a failure."})
	m.probeFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgateway_pubsub_probe_failures_total", Help: "Times this node's own probe did not come back through Redis in time."})
	m.inbound = prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgateway_inbound_messages_total", Help: "Data frames received from clients."})
	m.inboundBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgateway_inbound_bytes_total", Help: "Bytes of data frames received from clients."})
	// Create the known series at 0, so dashboards and alerts see them before the first event.
	m.offlineStored.WithLabelValues("push")
	for _, r := range []string{"normal", "heartbeat_timeout", "slow_consumer", "kicked", "shutdown", "protocol", "rate_limited", "error", "token_expired", "auth_refused"} {
		m.disconnects.WithLabelValues(r)
	}
	// Client frames the upstream queue dropped: an alert on overflow should see 0 before
	// the first one.
	for _, r := range []string{"upstream_overflow", "upstream_error"} {
		m.dropped.WithLabelValues(r)
	}
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wsgateway_build_info", Help: "Always 1; labels name the node and version."}, []string{"node_id", "version"})
	info.WithLabelValues(nodeID, version).Set(1)
	for _, c := range []prometheus.Collector{
		m.connections, m.connects, m.disconnects, m.refused, m.delivered, m.dropped, m.offlineStored,
		m.flushed, m.slow, m.requests, m.latency, m.queueDepth, m.reconnects, m.probeFailures,
		m.inbound, m.inboundBytes, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		f(c)
	}
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry returns the registry, for tests that read values.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ConnOpened counts an accepted connection.
func (m *Metrics) ConnOpened() { m.connects.Inc(); m.connections.Inc() }

// ConnClosed counts an ended connection by reason.
func (m *Metrics) ConnClosed(reason string, _ time.Duration) {
	m.connections.Dec()
	m.disconnects.WithLabelValues(reason).Inc()
}

// Refused counts an upgrade refused with status.
func (m *Metrics) Refused(status int) { m.refused.WithLabelValues(strconv.Itoa(status)).Inc() }

// Delivered counts a written message and its latency since it reached the node.
func (m *Metrics) Delivered(received time.Time) {
	m.delivered.Inc()
	if !received.IsZero() {
		m.latency.Observe(time.Since(received).Seconds())
	}
}

// Dropped counts n messages dropped for reason.
func (m *Metrics) Dropped(reason string, n int) { m.dropped.WithLabelValues(reason).Add(float64(n)) }

// SlowConsumer counts a 1013 close.
func (m *Metrics) SlowConsumer() { m.slow.Inc() }

// QueueDepth records the send-queue length at an enqueue.
func (m *Metrics) QueueDepth(n int) { m.queueDepth.Observe(float64(n)) }

// FlushedOffline counts messages a connection read from the inbox (its start, a catch-up).
func (m *Metrics) FlushedOffline(n int) {
	if n > 0 {
		m.flushed.Add(float64(n))
	}
}

// StoredOffline counts pushes that found no live connection and were stored.
func (m *Metrics) StoredOffline(n int) { m.offlineStored.WithLabelValues("push").Add(float64(n)) }

// Inbound counts a data frame from a client.
func (m *Metrics) Inbound(bytes int) { m.inbound.Inc(); m.inboundBytes.Add(float64(bytes)) }

// Request counts an API request.
func (m *Metrics) Request(route string, status int) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
}

// PubSubReconnect counts a rebuilt pub/sub connection.
func (m *Metrics) PubSubReconnect() { m.reconnects.Inc() }

// ProbeFailed counts a probe that did not come back.
func (m *Metrics) ProbeFailed() { m.probeFailures.Inc() }
