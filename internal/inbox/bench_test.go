package inbox_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/inbox"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
)

// benchStore is a Redis store on a fresh redis-server, closed at the end of b.
func benchStore(b *testing.B) *inbox.Redis {
	srv := redistest.Start(b)
	s := inbox.NewRedis(srv.Client(b), inbox.Options{Prefix: redistest.Prefix(b), Max: 100, TTL: time.Hour})
	b.Cleanup(s.Close)
	return s
}

// BenchmarkRedisPush is a push (number, store, publish) from 64 concurrent callers (as the HTTP API with 64
// publishers), every push stored: the round trips the batcher shares.
func BenchmarkRedisPush(b *testing.B) {
	s := benchStore(b)
	data := []byte(`{"type":"notification","id":123456,"title":"You have a new message","body":"from alice, 2 min ago"}`)
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32) // 64 callers on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			// 1000 users: the lists stay short (offline-max 100).
			if _, err := s.Push(ctx, "u"+strconv.FormatInt(next.Add(1)%1000, 10), data, inbox.PushOptions{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRedisRead is the inbox read of a connect storm (64 concurrent connects), for users
// with nothing stored, as most connects are.
func BenchmarkRedisRead(b *testing.B) {
	s := benchStore(b)
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := s.Read(ctx, "u"+strconv.FormatInt(next.Add(1), 10), -1); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRedisPushSerial is one caller at a time: the latency a lone push pays (the batcher
// must not add waiting).
func BenchmarkRedisPushSerial(b *testing.B) {
	s := benchStore(b)
	data := []byte(`{"type":"notification","id":123456,"title":"You have a new message","body":"from alice, 2 min ago"}`)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Push(ctx, "u"+strconv.Itoa(i%1000), data, inbox.PushOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
