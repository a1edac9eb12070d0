package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"

	"github.com/wsgateway/wsgateway/internal/bus"
)

// MigrateSlot moves slot, with its keys, from its current owner to the master
// at toAddr, with the standard resharding steps: CLUSTER SETSLOT IMPORTING on
// the target, SETSLOT MIGRATING on the source, MIGRATE of the keys in
// batches of 100, then SETSLOT NODE on the target, the source and every
// other live master. It returns once every live node names toAddr as the
// owner. Moving a slot to its owner does nothing.
func (c *Cluster) MigrateSlot(tb testing.TB, slot int, toAddr string) {
	tb.Helper()
	c.MigrateSlotPausing(tb, slot, toAddr, nil)
}

// MigrateSlotPausing is MigrateSlot with a pause: it calls between (when not nil) after
// SETSLOT NODE on the target and before SETSLOT NODE on the source. In between, the target
// owns the slot while the source still sends clients there with ASK and still holds the
// subscribers of the slot's shard channels; a test holds that state while it checks what
// clients see then. between runs on the test's goroutine and may call tb.Fatal.
func (c *Cluster) MigrateSlotPausing(tb testing.TB, slot int, toAddr string, between func()) {
	tb.Helper()
	if err := c.migrateSlot(slot, toAddr, between); err != nil {
		tb.Fatalf("redistest: migrate slot %d to %s: %v (node logs follow at cleanup)", slot, toAddr, err)
	}
}

func (c *Cluster) migrateSlot(slot int, toAddr string, between func()) error {
	if slot < 0 || slot >= NumSlots {
		return fmt.Errorf("slot out of range [0, %d)", NumSlots)
	}
	dst := c.byAddr[toAddr]
	if dst == nil || c.isDead(toAddr) {
		return fmt.Errorf("%s is not a live node of this cluster", toAddr)
	}
	from, err := c.settledOwner(slot)
	if err != nil {
		return err
	}
	if from == toAddr {
		return nil
	}
	src := c.byAddr[from]
	if src == nil {
		return fmt.Errorf("owner %s is not a node of this cluster", from)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*adminCmdTimeout)
	defer cancel()
	if role, _, err := dst.role(ctx); err != nil {
		return err
	} else if role != "master" {
		return fmt.Errorf("%s is a %s, not a master", toAddr, role)
	}
	srcID, err := src.client().ClusterMyID(ctx).Result()
	if err != nil {
		return fmt.Errorf("CLUSTER MYID on %s: %w", from, err)
	}
	dstID, err := dst.client().ClusterMyID(ctx).Result()
	if err != nil {
		return fmt.Errorf("CLUSTER MYID on %s: %w", toAddr, err)
	}

	setslot := func(n *node, args ...any) error {
		full := append([]any{"CLUSTER", "SETSLOT", slot}, args...)
		if err := n.client().Do(ctx, full...).Err(); err != nil {
			return fmt.Errorf("%v on %s: %w", full, n.addr, err)
		}
		return nil
	}
	// Importing first: once the source is migrating, it sends clients of
	// missing keys to the target with ASK, which must then accept them.
	if err := setslot(dst, "IMPORTING", srcID); err != nil {
		return err
	}
	if err := setslot(src, "MIGRATING", dstID); err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(toAddr)
	for {
		keys, err := src.client().ClusterGetKeysInSlot(ctx, slot, migrateBatch).Result()
		if err != nil {
			return fmt.Errorf("CLUSTER GETKEYSINSLOT %d on %s: %w", slot, from, err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, migrateTimeoutMS, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		// "NOKEY" (every key expired meanwhile) is fine too.
		if err := src.client().Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("MIGRATE %d keys from %s to %s: %w", len(keys), from, toAddr, err)
		}
	}
	// Target first, so that its config epoch is bumped and its claim wins;
	// then the source, which stops redirecting with ASK; then everyone else,
	// rather than waiting for gossip.
	if err := setslot(dst, "NODE", dstID); err != nil {
		return err
	}
	if between != nil {
		between()
	}
	if err := setslot(src, "NODE", dstID); err != nil {
		return err
	}
	for _, n := range c.liveNodes() {
		if n == src || n == dst {
			continue
		}
		role, _, err := n.role(ctx)
		if err != nil {
			return err
		}
		if role == "master" {
			if err := setslot(n, "NODE", dstID); err != nil {
				return err
			}
		}
	}
	return poll(agreeTimeout, func() error {
		owner, err := c.owner(slot)
		if err == nil && owner != toAddr {
			err = fmt.Errorf("slot %d still owned by %s", slot, owner)
		}
		return err
	})
}

// Slot returns the hash slot of key as Redis Cluster computes it (CRC16 of the hash tag, mod
// 16384). It is the gateway's own bus.Slot, so the tests against CLUSTER KEYSLOT check the
// code the Cluster bus routes with.
func Slot(key string) int { return bus.Slot(key) }

// owners returns the slot owners that every live node agrees on, or an
// error naming a disagreement or an owner that is not alive.
func (c *Cluster) owners(ctx context.Context) (*[NumSlots]string, error) {
	var ref *[NumSlots]string
	var refAddr string
	for _, n := range c.liveNodes() {
		shards, err := n.client().ClusterShards(ctx).Result()
		if err != nil {
			return nil, fmt.Errorf("CLUSTER SHARDS on %s: %w", n.addr, err)
		}
		view := new([NumSlots]string)
		for _, sh := range shards {
			var master string
			for _, sn := range sh.Nodes {
				if sn.Role == "master" {
					master = net.JoinHostPort(sn.IP, strconv.FormatInt(sn.Port, 10))
				}
			}
			for _, r := range sh.Slots {
				if master == "" || r.Start < 0 || r.End >= NumSlots || r.Start > r.End {
					return nil, fmt.Errorf("CLUSTER SHARDS on %s: odd shard %+v", n.addr, sh)
				}
				for s := r.Start; s <= r.End; s++ {
					view[s] = master
				}
			}
		}
		for s, owner := range view {
			switch {
			case owner == "":
				return nil, fmt.Errorf("%s: slot %d has no owner", n.addr, s)
			case c.isDead(owner):
				return nil, fmt.Errorf("%s: slot %d still owned by killed node %s", n.addr, s, owner)
			case ref != nil && ref[s] != owner:
				return nil, fmt.Errorf("nodes disagree on slot %d: %s says %s, %s says %s", s, refAddr, ref[s], n.addr, owner)
			}
		}
		if ref == nil {
			ref, refAddr = view, n.addr
		}
	}
	if ref == nil {
		return nil, errors.New("no live node")
	}
	return ref, nil
}

// owner returns the agreed owner of slot right now.
func (c *Cluster) owner(slot int) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), adminCmdTimeout)
	defer cancel()
	owners, err := c.owners(ctx)
	if err != nil {
		return "", err
	}
	return owners[slot], nil
}

// settledOwner waits until the live nodes agree on slot's owner.
func (c *Cluster) settledOwner(slot int) (string, error) {
	var owner string
	err := poll(agreeTimeout, func() error {
		var err error
		owner, err = c.owner(slot)
		return err
	})
	return owner, err
}
