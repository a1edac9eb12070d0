package web_test

// Browser tests: Debian's chromium, driven through chromedp, loads the demo page from a real
// gateway booted in-process on 127.0.0.1:0, and the tests push through the real HTTP API. What
// the page shows is read from its DOM through the stable element ids of index.html.
//
// Every wait is a poll with a deadline (wait.For); the only fixed durations are the windows
// over which a state must *stay* (consistently), such as "stopped, and not reconnecting".

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// --- the cases ---------------------------------------------------------------------------

// TestPageShowsPushedMessages: the page connects as the user picked in its form and shows what
// is pushed to that user — from Go through the API, and from its own push and broadcast forms —
// with an arrival time, byte for byte, with its number (a broadcast has none), and none of it
// counted as offline.
func TestPageShowsPushedMessages(t *testing.T) {
	gw := startGateway(t, devConfig())
	page := openDemo(t, newTab(t, startBrowser(t), true), gw.URL(""), "alice")

	page.fill("user", "carol")
	page.click("connect")
	page.waitJS(`document.getElementById("state").textContent === "open" && document.getElementById("state-detail").textContent === "as carol"`,
		`[document.getElementById("state").textContent, document.getElementById("state-detail").textContent]`, "connected as carol")
	wait.For(t, patience, func() bool { return gw.online(t, "carol") && !gw.online(t, "alice") },
		"carol online and alice gone after switching user")
	page.waitOfflineWindowClosed()

	if r := gw.push(t, "carol", `{"text": "hello from Go"}`); !r.Online {
		t.Fatalf("push to carol: %+v, want online", r)
	}
	page.waitMessages(`{"text": "hello from Go"}`)

	if got := mustEval[string](page.tab, `document.getElementById("push-user").value`); got != "carol" {
		t.Errorf("#push-user = %q after connecting as carol, want it to follow the user", got)
	}
	page.fill("push-data", `{"n":  1}`)
	page.click("push")
	page.waitMessages(`{"n":  1}`, `{"text": "hello from Go"}`) // as typed, spaces and all
	page.waitJS(`document.getElementById("push-result").textContent.startsWith("200")`,
		`document.getElementById("push-result").textContent`, "push result shown")

	page.fill("push-data", `not JSON`)
	page.click("push")
	page.waitMessages(`"not JSON"`, `{"n":  1}`, `{"text": "hello from Go"}`)

	page.fill("broadcast-data", `{"all": true}`)
	page.click("broadcast")
	page.waitMessages(`{"all": true}`, `"not JSON"`, `{"n":  1}`, `{"text": "hello from Go"}`)

	times := mustEval[[]string](page.tab, `[...document.querySelectorAll("#messages li.msg time")].map((e) => e.textContent)`)
	for _, s := range times {
		if _, err := time.Parse("15:04:05.000", s); err != nil {
			t.Errorf("arrival time %q is not hh:mm:ss.mmm", s)
		}
	}
	if n := page.offlineCount(); n != 0 {
		t.Errorf("#offline-count = %d, want 0: every message was live", n)
	}
	if got := mustEval[string](page.tab, `document.getElementById("count").textContent`); got != "4" {
		t.Errorf("#count = %s, want 4", got)
	}
	if got, want := mustEval[[]string](page.tab, jsSeqs), []string{"–", "#3", "#2", "#1"}; !slices.Equal(got, want) {
		t.Errorf("numbers shown %q, want %q", got, want)
	}
	if got := mustEval[string](page.tab, `document.getElementById("last-seq").textContent`); got != "3" {
		t.Errorf("#last-seq = %s, want 3", got)
	}
}

// TestPushReachesOnlyItsUser: two tabs as two users; each push shows in its user's tab only,
// a broadcast from one tab's form in both.
func TestPushReachesOnlyItsUser(t *testing.T) {
	gw := startGateway(t, devConfig())
	browser := startBrowser(t)
	ann := openDemo(t, newTab(t, browser, true), gw.URL(""), "ann")
	ben := openDemo(t, newTab(t, browser, false), gw.URL(""), "ben")
	ann.waitOfflineWindowClosed()
	ben.waitOfflineWindowClosed()

	gw.push(t, "ben", `"for ben"`)
	gw.push(t, "ann", `"for ann"`)
	ben.waitMessages(`"for ben"`)
	ann.waitMessages(`"for ann"`)

	// A broadcast sent after the pushes arrives in both tabs after them; once it is there,
	// a misrouted push would have shown too.
	ann.fill("broadcast-data", `"to all"`)
	ann.click("broadcast")
	ann.waitMessages(`"to all"`, `"for ann"`)
	ben.waitMessages(`"to all"`, `"for ben"`)
}

// TestPageReconnectsAfterRestart: the node the page is on stops (1001) and a new one starts on
// the same address; meanwhile a backend pushes through another node. The page reconnects by
// itself, shows what was stored while it was away, oldest first, and counts it as offline;
// what is pushed after that is live. Redis keeps the offline list across the restart.
func TestPageReconnectsAfterRestart(t *testing.T) {
	rs := redistest.Start(t)
	cfg := devConfig()
	cfg.RedisURL = rs.URL()
	cfg.KeyPrefix = redistest.Prefix(t)

	backend := startGateway(t, cfg) // where the "backend" pushes; the page never talks to it
	cfg1 := cfg
	cfg1.NodeID = "node-1"
	node1 := startGateway(t, cfg1)
	addr := node1.Addr

	page := openDemo(t, newTab(t, startBrowser(t), true), node1.URL(""), "dora")
	wait.For(t, patience, func() bool { return backend.online(t, "dora") }, "dora online as seen from the other node")
	page.waitOfflineWindowClosed()
	if r := backend.push(t, "dora", `"before"`); !r.Online {
		t.Fatalf("push before the restart: %+v, want online", r)
	}
	page.waitMessages(`"before"`)

	if err := node1.Shutdown(); err != nil {
		t.Fatalf("node-1 shutdown: %v", err)
	}
	page.waitState("reconnecting")
	page.waitJS(`[...document.querySelectorAll("#messages li.event .data")].some((e) => e.textContent.startsWith("1001"))`,
		`[...document.querySelectorAll("#messages li.event .data")].map((e) => e.textContent)`, "the 1001 close shown")
	wait.For(t, patience, func() bool { return !backend.online(t, "dora") }, "dora offline once node-1 is gone")
	for _, data := range []string{`"while away 1"`, `"while away 2"`} {
		if r := backend.push(t, "dora", data); r.Online || !r.Queued {
			t.Fatalf("push %s while away: %+v, want stored offline", data, r)
		}
	}

	cfg2 := cfg
	cfg2.NodeID = "node-2"
	cfg2.Addr = addr
	startGateway(t, cfg2) // a new process on the same address

	page.waitState("open")
	page.waitMessages(`"while away 2"`, `"while away 1"`, `"before"`)
	page.waitJS(`document.getElementById("offline-count").textContent === "2"`,
		`document.getElementById("offline-count").textContent`, "#offline-count = 2")
	page.waitOfflineWindowClosed()

	if r := backend.push(t, "dora", `"after"`); !r.Online {
		t.Fatalf("push after the reconnect: %+v, want online", r)
	}
	page.waitMessages(`"after"`, `"while away 2"`, `"while away 1"`, `"before"`)
	if n := page.offlineCount(); n != 2 {
		t.Errorf("#offline-count = %d after a live push, want it to stay 2", n)
	}
	tags := mustEval[[]string](page.tab, `[...document.querySelectorAll("#messages li.msg .tag")].map((e) => e.textContent)`)
	if want := []string{"live", "offline", "offline", "live"}; !slices.Equal(tags, want) {
		t.Errorf("message tags %v, want %v", tags, want)
	}
	if got, want := mustEval[[]string](page.tab, jsSeqs), []string{"#4", "#3", "#2", "#1"}; !slices.Equal(got, want) {
		t.Errorf("numbers shown %q, want %q", got, want)
	}
	// The page resumed after what it had: the second open line says so.
	page.waitJS(`[...document.querySelectorAll("#messages li.event .data")].some((e) => e.textContent.includes("resuming after #1"))`,
		jsEvents, "the reconnect shown as resuming after #1")
}

// TestPageShowsGap: the gateway keeps 2 messages per user (offline-max). The page had #1, is
// disconnected with its button while 5 more are pushed, and connects again: it resumes after
// #1 (the position is remembered per user), shows the gap #2–#4 as a line of its own and counts
// it, then #5 and #6. A reload resumes after #6 and shows nothing again; in raw mode (the
// protocol field) messages come without numbers.
func TestPageShowsGap(t *testing.T) {
	cfg := devConfig()
	cfg.OfflineMax = 2
	gw := startGateway(t, cfg)
	tb := newTab(t, startBrowser(t), true)
	page := openDemo(t, tb, gw.URL(""), "gus")
	page.waitOfflineWindowClosed()
	gw.push(t, "gus", `"one"`)
	page.waitMessages(`"one"`)

	page.click("disconnect")
	page.waitState("closed")
	wait.For(t, patience, func() bool { return !gw.online(t, "gus") }, "gus offline")
	for i := 2; i <= 6; i++ {
		gw.push(t, "gus", fmt.Sprintf(`"m%d"`, i))
	}
	page.click("connect")
	page.waitMessages(`"m6"`, `"m5"`, `"one"`)
	if got, want := mustEval[[]string](page.tab, jsSeqs), []string{"#6", "#5", "#1"}; !slices.Equal(got, want) {
		t.Errorf("numbers shown %q, want %q", got, want)
	}
	page.waitJS(`document.getElementById("gap-count").textContent === "1"`, `document.getElementById("gap-count").textContent`, "#gap-count = 1")
	events := mustEval[[]string](page.tab, jsEvents)
	gap := slices.IndexFunc(events, func(e string) bool { return strings.HasPrefix(e, "gap: messages #2–#4 were no longer kept") })
	resumed := slices.IndexFunc(events, func(e string) bool { return strings.HasPrefix(e, "open:") && strings.Contains(e, "resuming after #1") })
	if gap < 0 || resumed < 0 || resumed < gap {
		t.Errorf("event lines %q, want an open resuming after #1, then the gap #2–#4", events)
	}
	if got := mustEval[string](page.tab, `document.getElementById("last-seq").textContent`); got != "6" {
		t.Errorf("#last-seq = %s, want 6", got)
	}

	page = openDemo(t, tb, gw.URL(""), "gus") // a reload
	page.waitJS(`[...document.querySelectorAll("#messages li.event .data")].some((e) => e.textContent.includes("resuming after #6"))`,
		jsEvents, "the reload resumes after #6")
	page.waitOfflineWindowClosed()
	gw.push(t, "gus", `"seven"`)
	page.waitMessages(`"seven"`) // only: nothing old came again
	if got := mustEval[[]string](page.tab, jsSeqs); !slices.Equal(got, []string{"#7"}) {
		t.Errorf("numbers shown after the reload %q, want [#7]", got)
	}

	// Raw mode starts with what the user has not acknowledged: the page's close() acked #7
	// before its close frame, so once the gateway saw the connection end, nothing is due.
	page.click("disconnect")
	wait.For(t, patience, func() bool { return !gw.online(t, "gus") }, "gus offline")
	page.do(chromedp.SetValue(chromedp.ID("protocol"), "raw"))
	page.click("connect")
	page.waitJS(`[...document.querySelectorAll("#messages li.event .data")].some((e) => e.textContent.endsWith("· raw"))`,
		jsEvents, "connected in raw mode")
	page.waitOfflineWindowClosed()
	gw.push(t, "gus", `"raw"`)
	page.waitMessages(`"raw"`, `"seven"`)
	if got := mustEval[[]string](page.tab, jsSeqs); !slices.Equal(got, []string{"–", "#7"}) {
		t.Errorf("numbers shown %q, want a raw message without one", got)
	}
}

// TestKickStopsThePage: DELETE /api/v1/users/{id}/connections closes the page with 4001; it
// shows "stopped" and stays so, with no new connection, while the gateway is up.
func TestKickStopsThePage(t *testing.T) {
	gw := startGateway(t, devConfig())
	page := openDemo(t, newTab(t, startBrowser(t), true), gw.URL(""), "erin")
	wait.For(t, patience, func() bool { return gw.online(t, "erin") }, "erin online")
	const jsOpens = `[...document.querySelectorAll("#messages li.event .tag")].filter((e) => e.textContent === "open").length`
	// A page on a loaded machine may have needed more than one attempt to get here; what
	// counts is that the kick adds none.
	before := mustEval[int](page.tab, jsOpens)

	if status, body := gw.call(t, http.MethodDelete, "/api/v1/users/erin/connections", ""); status != http.StatusOK {
		t.Fatalf("kick: %d %s", status, body)
	}
	page.waitState("stopped")
	if detail := mustEval[string](page.tab, `document.getElementById("state-detail").textContent`); !strings.Contains(detail, "4001") {
		t.Errorf("#state-detail = %q, want it to name 4001", detail)
	}

	// The page's fastest retry would come within backoff.initial (500 ms); watch six times that.
	consistently(t, 3*time.Second, func() (bool, string) {
		s, online := page.state(), gw.online(t, "erin")
		return s == "stopped" && !online, fmt.Sprintf("state %q, online %v", s, online)
	}, "page stopped and erin offline")
	if opens := mustEval[int](page.tab, jsOpens); opens != before {
		t.Errorf("%d connections opened, %d before the kick: the page reconnected after it", opens, before)
	}
}

// TestPageWithTokenAndAPIKey: outside --dev (with --demo), the page connects with the JWT typed
// into its token field, and its push form authenticates with the API key field as a Bearer.
func TestPageWithTokenAndAPIKey(t *testing.T) {
	const secret, apiKey = "browser-test-secret-0123456789-0123456789", "browser-test-key-0123456789"
	cfg := devConfig()
	cfg.Dev, cfg.Demo = false, true
	cfg.JWTSecret = secret
	cfg.APIKeys = []string{apiKey}
	gw := startGateway(t, cfg)
	token := jwttest.HS256(t, secret, "zoe")

	tb := newTab(t, startBrowser(t), true)
	tb.do(chromedp.Navigate(gw.URL("") + "/?user=zoe"))
	page := demo{tb}
	page.waitState("reconnecting") // ?user_id= is refused without --dev: 401 at the upgrade

	page.do(chromedp.Click(chromedp.CSS("#credentials summary"))) // open the folded credentials
	page.fill("token", token)
	page.fill("api-key", apiKey)
	page.click("connect")
	page.waitJS(`document.getElementById("state").textContent === "open" && document.getElementById("state-detail").textContent === "as zoe"`,
		`[document.getElementById("state").textContent, document.getElementById("state-detail").textContent]`, "connected with the token as zoe")
	page.waitOfflineWindowClosed()

	page.fill("push-data", `"with a key"`)
	page.click("push")
	page.waitMessages(`"with a key"`)
	page.waitJS(`document.getElementById("push-result").textContent.startsWith("200")`,
		`document.getElementById("push-result").textContent`, "push accepted with the key")

	page.fill("api-key", "")
	page.click("push")
	page.waitJS(`document.getElementById("push-result").textContent.startsWith("401")`,
		`document.getElementById("push-result").textContent`, "push refused without the key")
}

// TestScreenshots writes the page at desktop and phone width to test-artifacts/ (at the
// repository root) with a few messages in it: two stored while the user was away, after a gap
// (a third was dropped by offline-max), then live ones and a broadcast.
func TestScreenshots(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "test-artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := devConfig()
	cfg.OfflineMax = 2 // so that one of the three stored while away is gone: a gap line
	gw := startGateway(t, cfg)
	for _, data := range []string{`"dropped: offline-max is 2"`, `{"text": "sent while alice was away"}`, `{"text": "also while away"}`} {
		if r := gw.push(t, "alice", data); !r.Queued {
			t.Fatalf("push before connect: %+v, want stored offline", r)
		}
	}
	tb := newTab(t, startBrowser(t), true)
	tb.do(chromedp.EmulateViewport(1280, 800))
	page := openDemo(t, tb, gw.URL(""), "alice")
	page.waitMessages(`{"text": "also while away"}`, `{"text": "sent while alice was away"}`)
	page.waitOfflineWindowClosed()
	gw.push(t, "alice", `{"text": "hello", "n": 1}`)
	gw.push(t, "alice", `"a JSON string with a longer text, to show how the list wraps on a narrow screen"`)
	page.fill("broadcast-data", `{"notice": "maintenance at noon"}`)
	page.click("broadcast")
	page.waitJS(`document.querySelectorAll("#messages li.msg").length === 5`, jsMessages, "5 messages")
	page.waitJS(`document.querySelectorAll("#messages li.gap").length === 1`, jsEvents, "the gap #1 shown")
	page.waitJS(`document.getElementById("broadcast-result").textContent.startsWith("200")`,
		`document.getElementById("broadcast-result").textContent`, "broadcast result")

	shoot := func(name string, viewport chromedp.Action[chromedp.Void]) {
		t.Helper()
		page.do(viewport)
		ctx, cancel := context.WithTimeout(page.ctx, patience)
		defer cancel()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", path, len(png))
	}
	shoot("demo-desktop.png", chromedp.EmulateViewport(1280, 800))
	shoot("demo-phone.png", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))

	// At phone width nothing may stick out sideways.
	page.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	if w := mustEval[int](page.tab, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("page is %d px wide at a 390 px viewport: something overflows", w)
	}
}

// repoRoot is the directory of go.mod above the package.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the package directory")
		}
		dir = parent
	}
}
