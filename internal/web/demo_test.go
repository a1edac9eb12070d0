package web_test

// The demo page (index.html) as the browser tests read and drive it, through its element ids.

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"testing"

	"github.com/chromedp/chromedp"
)

// --- the demo page -----------------------------------------------------------------------

// demo is the demo page (index.html) in a tab.
type demo struct{ *tab }

// openDemo loads the page as user (it connects by itself) and waits until it is open.
func openDemo(t *testing.T, tb *tab, base, user string) demo {
	t.Helper()
	tb.do(chromedp.Navigate(base + "/?user=" + url.QueryEscape(user)))
	d := demo{tb}
	d.waitState("open")
	return d
}

func (d demo) state() string {
	return mustEval[string](d.tab, `document.getElementById("state").textContent`)
}

func (d demo) waitState(want string) {
	d.t.Helper()
	d.waitJS(fmt.Sprintf(`document.getElementById("state").textContent === %q`, want),
		`document.getElementById("state").textContent`, "page state %q", want)
}

// jsMessages lists the payloads on the page, newest first.
const jsMessages = `[...document.querySelectorAll("#messages li.msg .data")].map((e) => e.textContent)`

// jsSeqs lists the numbers shown next to the messages ("#3", or "–" for none), newest first.
const jsSeqs = `[...document.querySelectorAll("#messages li.msg .seq")].map((e) => e.textContent)`

// jsEvents lists the page's event lines as "tag: text", newest first.
const jsEvents = `[...document.querySelectorAll("#messages li.event")].map((e) => e.querySelector(".tag").textContent + ": " + e.querySelector(".data").textContent)`

// waitMessages waits until the list holds exactly want (newest first).
func (d demo) waitMessages(want ...string) {
	d.t.Helper()
	w, _ := json.Marshal(want)
	d.waitJS(fmt.Sprintf(`JSON.stringify(%s) === %q`, jsMessages, string(w)), jsMessages, "messages %s", w)
}

// waitOfflineWindowClosed waits until the page counts what arrives as live again.
func (d demo) waitOfflineWindowClosed() {
	d.t.Helper()
	d.waitJS(`document.getElementById("offline-count").dataset.window === "closed"`,
		`document.getElementById("offline-count").dataset.window`, "offline window closed")
}

func (d demo) offlineCount() int {
	n, err := strconv.Atoi(mustEval[string](d.tab, `document.getElementById("offline-count").textContent`))
	if err != nil {
		d.t.Fatalf("#offline-count: %v", err)
	}
	return n
}

// fill sets a form field's value.
func (d demo) fill(id, value string) {
	d.t.Helper()
	if value == "" {
		// chromedp's SetValue cannot set "": the empty argument reaches the page as undefined.
		mustEval[bool](d.tab, fmt.Sprintf(`(document.getElementById(%q).value = "", true)`, id))
		return
	}
	d.do(chromedp.SetValue(chromedp.ID(id), value))
}

// click clicks an element with the mouse, as a user would.
func (d demo) click(id string) {
	d.t.Helper()
	d.do(chromedp.Click(chromedp.ID(id)))
}
