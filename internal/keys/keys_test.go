package keys_test

import (
	"testing"

	"github.com/wsgateway/wsgateway/internal/bus"
	"github.com/wsgateway/wsgateway/internal/keys"
)

// A user's names share one Cluster slot (the hash tag), and the layout matches the documented
// one (docs/protocol.md).
func TestNames(t *testing.T) {
	p := keys.Prefix("ws:")
	for _, c := range []struct{ got, want string }{
		{p.User("alice"), "ws:user:{alice}"},
		{p.Inbox("alice"), "ws:inbox:{alice}"},
		{p.Presence(17), "ws:presence:17"},
		{p.Broadcast(), "ws:broadcast"},
		{p.Control(), "ws:control"},
		{p.Probe("n1"), "ws:probe:{n1}"},
		{p.Events(), "ws:events"},
		{p.Upstream(), "ws:upstream"},
		{p.Nodes(), "ws:nodes"},
		{p.Procs(), "ws:procs"},
		{p.Reap("n1"), "ws:reap:{n1}"},
		{p.Due(), "ws:due"},
	} {
		if c.got != c.want {
			t.Errorf("%q, want %q", c.got, c.want)
		}
	}
	slot := bus.Slot(p.User("alice"))
	for _, k := range []string{p.Inbox("alice"), p.Inbox("alice") + ":state"} {
		if s := bus.Slot(k); s != slot {
			t.Errorf("%s is in slot %d, the user's channel in %d", k, s, slot)
		}
	}
}
