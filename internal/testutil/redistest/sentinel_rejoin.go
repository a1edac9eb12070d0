package redistest

import (
	"context"
	"fmt"
	"testing"
)

// Rejoin starts a data node that KillMaster stopped again, on its address and directory, and
// waits up to 30s until it is a replica of the current master with its link up: the sentinels
// turn a returning old master into a replica of the one they promoted. Pushes that wait for a
// replica (WAIT) succeed again from then on.
func (s *Sentinel) Rejoin(tb testing.TB, addr string) {
	tb.Helper()
	var n *node
	for _, d := range s.data {
		if d.addr == addr {
			n = d
		}
	}
	if n == nil {
		tb.Fatalf("redistest: %s is none of the data nodes %v", addr, s.Addrs)
	}
	if err := n.launch(); err != nil {
		tb.Fatalf("redistest: restart %s: %v", addr, err)
	}
	master := s.MasterAddr(tb)
	err := poll(failoverWait, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), adminCmdTimeout)
		defer cancel()
		role, of, err := n.role(ctx)
		if err != nil {
			return err
		}
		if role != "slave" || of != master {
			return fmt.Errorf("%s answers ROLE %s of %q, want slave of %s", addr, role, of, master)
		}
		repl, err := n.client().Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("INFO replication on %s: %w", addr, err)
		}
		if got := infoField(repl, "master_link_status"); got != "up" {
			return fmt.Errorf("%s: master_link_status is %q", addr, got)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("redistest: %s did not rejoin as a replica of %s: %v (node logs follow at cleanup)", addr, master, err)
	}
}
