package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/wsgateway/wsgateway/internal/ctxsleep"
)

// memoryResult is what the memory scenario adds to the RESULT line: Redis used_memory per
// idle connected user, per stored message and per active user with acknowledged history.
// "Fresh" figures are read right after the pushes; the others once every push id the gateway
// made up for its own retries has expired (it keeps one a minute), which is what a message
// costs for the rest of its life.
type memoryResult struct {
	Mode                 string           `json:"mode"`
	IdleBytesPerUser     float64          `json:"idle_bytes_per_user"`
	StoredUsers          int              `json:"stored_users"`
	StoredPerUser        int              `json:"stored_per_user"`
	StoredBytesPerMsg    float64          `json:"stored_bytes_per_msg"`
	StoredFreshPerMsg    float64          `json:"stored_bytes_per_msg_fresh"`
	HistoryPerUser       int              `json:"history_per_user"`
	HistoryBytesPerUser  float64          `json:"history_bytes_per_user"`
	HistoryFreshPerUser  float64          `json:"history_bytes_per_user_fresh"`
	HistoryDelivered     int64            `json:"history_delivered"`
	UsedMemory           map[string]int64 `json:"used_memory"`
	Keys                 map[string]int64 `json:"dbsize"`
	PushIDKeysWaitedSecs float64          `json:"expire_wait_s"`
}

// memory measures Redis: connected idle users, then --stored messages to each of
// --stored-users users who are not connected, then --history messages to every connected
// user, who receive and acknowledge them (the inbox keeps them for resume-ttl). mem0 is
// used_memory before anyone connected.
func (b *bench) memory(ctx context.Context, mem0 int64) error {
	cfg := b.cfg
	if b.rdb == nil {
		return fmt.Errorf("memory: needs --redis or --spawn-redis")
	}
	m := &memoryResult{Mode: cfg.Mode, StoredUsers: cfg.StoredUsers, StoredPerUser: cfg.Stored,
		HistoryPerUser: cfg.History, UsedMemory: map[string]int64{"before": mem0}, Keys: map[string]int64{},
		PushIDKeysWaitedSecs: cfg.ExpireWait.Seconds()}
	b.res.Memory = m
	read := func(name string) (int64, error) {
		used, err := redisUsedMemory(ctx, b.rdb)
		if err != nil {
			return 0, fmt.Errorf("redis INFO memory: %w", err)
		}
		keys, _ := b.rdb.DBSize(ctx).Result()
		m.UsedMemory[name], m.Keys[name] = used, keys
		b.logf("redis after %s: used_memory %d B, %d keys", name, used, keys)
		return used, nil
	}
	// expired waits until every push id of pushes made up to last has expired, then reads.
	expired := func(name string, last time.Time) (int64, error) {
		if cfg.ExpireWait > 0 {
			b.logf("waiting %s for the gateway's push ids to expire", time.Until(last.Add(cfg.ExpireWait)).Round(time.Second))
			ctxsleep.Sleep(ctx, time.Until(last.Add(cfg.ExpireWait)))
		}
		return read(name)
	}
	n := int64(b.res.Connected)
	ctxsleep.Sleep(ctx, cfg.Settle)
	idle, err := read("idle")
	if err != nil {
		return err
	}
	if b.apps.fellBack.Load() > 0 {
		m.Mode = "v1, answered raw" // the gateway does not speak wsgateway.v1
	}
	m.IdleBytesPerUser = float64(idle-mem0) / float64(n)
	b.res.RedisMemBeforeBytes, b.res.RedisMemAfterBytes = mem0, idle
	b.res.RedisBytesPerUser = m.IdleBytesPerUser

	// Stored: users nobody holds.
	if cfg.Stored > 0 && cfg.StoredUsers > 0 {
		var offline []string
		for i := range cfg.StoredUsers {
			offline = append(offline, cfg.UserPrefix+"off"+strconv.Itoa(i))
		}
		if err := b.pushRounds(ctx, offline, cfg.Stored, pubStored, 1); err != nil {
			return err
		}
		last := time.Now()
		fresh, err := read("stored")
		if err != nil {
			return err
		}
		settled, err := expired("stored, push ids expired", last)
		if err != nil {
			return err
		}
		msgs := float64(cfg.StoredUsers * cfg.Stored)
		m.StoredFreshPerMsg, m.StoredBytesPerMsg = float64(fresh-idle)/msgs, float64(settled-idle)/msgs
		idle = settled
	}

	// History: every connected user gets and acknowledges --history messages.
	if cfg.History > 0 {
		names := make([]string, len(b.apps.clients))
		for i, c := range b.apps.clients {
			names[i] = c.user
		}
		before := b.cnt.received.Load()
		if err := b.pushRounds(ctx, names, cfg.History, pubHistory, 8); err != nil {
			return err
		}
		want := before + n*int64(cfg.History)
		_ = waitFor(ctx, max(cfg.Drain, time.Minute), func() bool { return b.cnt.received.Load() >= want })
		last := time.Now()
		m.HistoryDelivered = b.cnt.received.Load() - before
		if m.HistoryDelivered < n*int64(cfg.History) {
			return fmt.Errorf("memory: %d of %d history messages arrived", m.HistoryDelivered, n*int64(cfg.History))
		}
		// The clients acknowledge within their ack delay, the gateway writes positions every
		// second.
		ctxsleep.Sleep(ctx, 3*time.Second)
		fresh, err := read("history")
		if err != nil {
			return err
		}
		settled, err := expired("history, push ids expired", last)
		if err != nil {
			return err
		}
		m.HistoryFreshPerUser, m.HistoryBytesPerUser = float64(fresh-idle)/float64(n), float64(settled-idle)/float64(n)
	}
	if ctx.Err() != nil {
		return errStopped
	}
	return nil
}

// pushRounds pushes rounds messages to every user in users, 1,000 users per request, through
// pubs publishers that each own a share of the users (so one user's messages keep their
// order).
func (b *bench) pushRounds(ctx context.Context, users []string, rounds, pub, pubs int) error {
	var wg sync.WaitGroup
	errs := make([]error, pubs)
	for p := range pubs {
		var own []string
		for i := p; i < len(users); i += pubs {
			own = append(own, users[i])
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[p] = b.pushNames(ctx, own, rounds, pub*100+p)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) pushNames(ctx context.Context, users []string, rounds, pub int) error {
	h, err := newHTTPConn(b.cfg.API, b.cfg.APIKey, 30*time.Second)
	if err != nil {
		return err
	}
	defer h.Close()
	var body, data []byte
	for r := range rounds {
		data = appendPayload(data[:0], payload{pub: pub, seq: uint64(r) + 1, ts: int64(time.Since(b.base))}, b.cfg.Payload)
		for start := 0; start < len(users); start += 1000 {
			if ctx.Err() != nil {
				return errStopped
			}
			body = append(body[:0], `{"user_ids":[`...)
			for i, u := range users[start:min(start+1000, len(users))] {
				if i > 0 {
					body = append(body, ',')
				}
				body = strconv.AppendQuote(body, u)
			}
			body = append(body, `],"data":`...)
			body = append(body, data...)
			body = append(body, '}')
			status, resp, err := h.do("POST", "/api/v1/push", body)
			if err != nil {
				return fmt.Errorf("memory push: %w", err)
			}
			if status != http.StatusOK {
				return fmt.Errorf("memory push: HTTP %d %s", status, resp)
			}
		}
	}
	return nil
}
