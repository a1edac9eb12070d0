package ws

import (
	"net/http"
	"sync"
)

// admission enforces max-conns and max-conns-per-ip before the upgrade. The remote address is
// the TCP peer: behind a load balancer every client shares its address, so set the per-IP
// cap at the load balancer there (README).
type admission struct {
	mu    sync.Mutex
	total int
	perIP map[string]int
}

// acquire reserves a slot for ip, or returns the HTTP status of the refusal.
func (a *admission) acquire(cfg *Config, ip string) (status int, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cfg.MaxConns > 0 && a.total >= cfg.MaxConns {
		return http.StatusServiceUnavailable, false
	}
	if cfg.MaxConnsPerIP > 0 {
		if a.perIP == nil {
			a.perIP = make(map[string]int)
		}
		if a.perIP[ip] >= cfg.MaxConnsPerIP {
			return http.StatusTooManyRequests, false
		}
		a.perIP[ip]++
	}
	a.total++
	return 0, true
}

func (a *admission) release(cfg *Config, ip string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if cfg.MaxConnsPerIP > 0 {
		if a.perIP[ip]--; a.perIP[ip] <= 0 {
			delete(a.perIP, ip) // keep the map as small as the set of connected addresses
		}
	}
}
