// Command healthcheck is the Docker HEALTHCHECK of the gateway image. The
// distroless image has no shell and no curl, and the gateway binary stays
// free of a probe mode, so this tiny static binary GETs the liveness endpoint
// and exits 0 on 200, 1 otherwise. HEALTHCHECK_URL overrides the address
// (e.g. when GATEWAY_ADDR is not :8080).
package main

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	url := "http://127.0.0.1:8080/healthz"
	if u := os.Getenv("HEALTHCHECK_URL"); u != "" {
		url = u
	}
	// 2s: /healthz answers in microseconds while the process serves; a node
	// that cannot answer within 2s counts as unhealthy.
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "healthcheck:", url, resp.Status)
		os.Exit(1)
	}
}
