package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/ctxsleep"
)

// rssBytes reads VmRSS of pid from /proc/<pid>/status.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(v)) // "123456 kB"
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// totalRSS sums the RSS of pids; -1 when any reading failed.
func totalRSS(pids []int) int64 {
	var sum int64
	for _, p := range pids {
		n, err := rssBytes(p)
		if err != nil {
			return -1
		}
		sum += n
	}
	return sum
}

// clockTick is USER_HZ, 100 on every Linux architecture Go supports.
const clockTick = 100

// cpuTime reads utime+stime of pid (self for 0) from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	path := "/proc/self/stat"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: count fields after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: unexpected format", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: unexpected format", path)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%s: unexpected format", path)
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// cpuMeter measures the CPU use of a set of processes over an interval, as a share of one core.
type cpuMeter struct {
	pids  []int
	start []time.Duration
	at    time.Time
}

func newCPUMeter(pids []int) *cpuMeter {
	m := &cpuMeter{pids: pids, at: time.Now()}
	for _, p := range pids {
		t, _ := cpuTime(p)
		m.start = append(m.start, t)
	}
	return m
}

// percent returns the summed CPU use since newCPUMeter in percent of one core, per pid.
func (m *cpuMeter) percent() []float64 {
	el := time.Since(m.at)
	out := make([]float64, len(m.pids))
	for i, p := range m.pids {
		t, err := cpuTime(p)
		if err != nil || el <= 0 {
			out[i] = -1
			continue
		}
		out[i] = 100 * float64(t-m.start[i]) / float64(el)
	}
	return out
}

// redisInfo returns the fields of INFO section as a map.
func redisInfo(ctx context.Context, rdb *redis.Client, section string) (map[string]string, error) {
	s, err := rdb.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string]string)
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

// redisUsedMemory reads used_memory (bytes).
func redisUsedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	m, err := redisInfo(ctx, rdb, "memory")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(m["used_memory"], 10, 64)
}

// redisCPU reads used_cpu_sys + used_cpu_user of the redis-server process.
func redisCPU(ctx context.Context, rdb *redis.Client) (time.Duration, error) {
	m, err := redisInfo(ctx, rdb, "cpu")
	if err != nil {
		return 0, err
	}
	s, err1 := strconv.ParseFloat(m["used_cpu_sys"], 64)
	u, err2 := strconv.ParseFloat(m["used_cpu_user"], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("INFO cpu: unexpected format")
	}
	return time.Duration((s + u) * float64(time.Second)), nil
}

// newRedis returns a client for host:port or a redis:// URL.
func newRedis(addr string, poolSize int) (*redis.Client, error) {
	var opt *redis.Options
	if strings.Contains(addr, "://") {
		o, err := redis.ParseURL(addr)
		if err != nil {
			return nil, err
		}
		opt = o
	} else {
		opt = &redis.Options{Addr: addr}
	}
	opt.PoolSize = poolSize
	opt.DisableIdentity = true
	return redis.NewClient(opt), nil
}

// machineBusy reads the busy time of all CPUs together from /proc/stat (user, nice, system,
// irq, softirq, steal: everything but idle and iowait).
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected format")
	}
	var busy int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTick, nil
}

// waitQuiet waits until processes other than ours (pids) use less than maxPct of one core,
// over 3 consecutive seconds, or until total passes. It returns the last foreign load seen.
// The machine may be shared (builds, tests): a benchmark taken under foreign load measures it.
func waitQuiet(ctx context.Context, pids []int, maxPct float64, total time.Duration, logf func(string, ...any)) float64 {
	deadline := time.Now().Add(total)
	quiet, last := 0, -1.0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		m := newCPUMeter(pids)
		b0, err := machineBusy()
		if err != nil {
			return -1
		}
		ctxsleep.Sleep(ctx, time.Second)
		b1, err := machineBusy()
		if err != nil {
			return -1
		}
		ours := 0.0
		for _, p := range m.percent() {
			ours += max(p, 0)
		}
		last = 100*float64(b1-b0)/float64(time.Since(m.at)) - ours
		if last < maxPct {
			quiet++
			if quiet >= 3 {
				return last
			}
			continue
		}
		quiet = 0
		logf("waiting for a quiet machine: other processes use %.0f%% of a core", last)
	}
	return last
}
