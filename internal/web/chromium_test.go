package web_test

// Chromium, driven through chromedp: the browser of the page and client tests, its tabs, and
// JavaScript evaluated in them.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// --- the browser -------------------------------------------------------------------------

// chromiumPath finds Debian's chromium: on PATH, else /usr/bin/chromium. Missing, the test is
// skipped locally and fails in CI (CI set), like the redis-server and nginx helpers.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	const debian = "/usr/bin/chromium"
	if fi, err := os.Stat(debian); err == nil && !fi.IsDir() && fi.Mode().Perm()&0o111 != 0 {
		return debian
	}
	msg := "chromium not found on PATH or at " + debian + " (Debian: apt-get install chromium)"
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; CI is set, so this is a failure, not a skip", msg)
	}
	t.Skip(msg)
	return ""
}

// startBrowser launches a headless chromium with a fresh profile and returns the context of
// its first tab. The flags keep it off the network: no first-run, component, sync or
// background requests, no QUIC. Clean-up closes the browser and makes sure that no process of
// it is left (they would keep writing into the profile directory while it is removed).
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	exe := chromiumPath(t)
	profile := t.TempDir()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 800),
	)
	var done atomic.Bool // chromedp may log from its goroutines after the test ended
	logf := func(format string, args ...any) {
		if !done.Load() {
			t.Logf("chromedp: "+format, args...)
		}
	}
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithErrorf(logf))
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(ctx, patience)
		if err := chromedp.Cancel(cctx); err != nil {
			t.Logf("closing chromium: %v", err)
		}
		ccancel()
		cancel()
		cancelAlloc() // waits for the browser process
		done.Store(true)
		var left []int
		wait.For(t, patience, func() bool {
			left = processesUsing(profile)
			return len(left) == 0
		}, "chromium processes still running after close: %s", lazy(func() string { return fmt.Sprint(left) }))
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium (%s): %v", exe, err)
	}
	return ctx
}

// processesUsing lists the processes started with --user-data-dir=dir (chromium passes it to
// every child), and sends each a SIGKILL, so the next look finds them gone.
func processesUsing(dir string) []int {
	want := []byte("--user-data-dir=" + dir + "\x00")
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), string(want)) {
			continue
		}
		pids = append(pids, pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return pids
}

// tab is one browser tab and what went wrong in it.
type tab struct {
	t   *testing.T
	ctx context.Context

	mu         sync.Mutex
	exceptions []string // uncaught JavaScript exceptions
}

// newTab opens a tab in the browser of parent (parent itself is the browser's first tab when
// first is true). Uncaught exceptions in the page fail the test.
func newTab(t *testing.T, parent context.Context, first bool) *tab {
	t.Helper()
	ctx := parent
	if !first {
		var cancel context.CancelFunc
		ctx, cancel = chromedp.NewContext(parent)
		t.Cleanup(cancel)
	}
	tb := &tab{t: t, ctx: ctx}
	if err := chromedp.Listen(ctx, func(ev any) {
		if ex, ok := ev.(*runtime.EventExceptionThrown); ok {
			msg := ex.ExceptionDetails.Text
			if ex.ExceptionDetails.Exception != nil && ex.ExceptionDetails.Exception.Description != "" {
				msg += " " + ex.ExceptionDetails.Exception.Description
			}
			tb.mu.Lock()
			tb.exceptions = append(tb.exceptions, msg)
			tb.mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("listen to tab: %v", err)
	}
	t.Cleanup(func() {
		tb.mu.Lock()
		defer tb.mu.Unlock()
		for _, e := range tb.exceptions {
			t.Errorf("uncaught exception in the page: %s", e)
		}
	})
	return tb
}

// do runs actions with a deadline.
func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, patience)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression in the tab (awaiting a promise) into a T.
func eval[T any](tb *tab, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(tb.ctx, patience)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// mustEval is eval that fails the test on an error.
func mustEval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	v, err := eval[T](tb, expr)
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS polls a boolean JavaScript expression until it is true; show is evaluated for the
// failure message.
func (tb *tab) waitJS(cond, show, msg string, args ...any) {
	tb.t.Helper()
	var last string
	wait.For(tb.t, patience, func() bool {
		ok, err := eval[bool](tb, cond)
		if err != nil {
			last = "error: " + err.Error()
			return false
		}
		if !ok && show != "" {
			v, err := eval[json.RawMessage](tb, show)
			last = string(v)
			if err != nil {
				last = "error: " + err.Error()
			}
		}
		return ok
	}, "%s (last seen: %s)", fmt.Sprintf(msg, args...), lazy(func() string { return last }))
}

// consistently fails the test when cond turns false within d. It is the opposite of wait.For:
// it checks that something stays so (a stopped page does not come back).
func consistently(t *testing.T, d time.Duration, cond func() (bool, string), msg string) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(d)
	for {
		if ok, seen := cond(); !ok {
			t.Fatalf("%s: no longer true after %v (saw %s)", msg, d-time.Until(deadline), seen)
		}
		if time.Now().After(deadline) {
			return
		}
		<-tick.C
	}
}
