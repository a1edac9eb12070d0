// The demo page: connects through wsgateway.js, shows what arrives with its number (seq), the
// gaps the gateway reports, pushes and broadcasts through the HTTP API. Paths are relative, so
// the page also works behind a proxy prefix.
import { GatewayClient, V1 } from "./wsgateway.js";

const $ = (id) => document.getElementById(id);

// The list keeps the newest entries only; the counters count everything.
const MAX_ENTRIES = 200;

// The position is kept in localStorage under this prefix and the user id (with "Remember the
// position" ticked), so a reload resumes where the last page stopped.
const STORAGE_PREFIX = "wsgateway-demo:seq:";

// Offline counter. Nothing on the wire marks a message as stored-while-away, so the page infers
// it from the gateway's ordering guarantee: right after every (re)connect, the gateway writes the
// user's stored messages first, in one burst, before anything live. Rule: each "open" opens a
// window; a message that arrives while it is open counts as offline and keeps it open for
// OFFLINE_GAP_MS more. The window closes OFFLINE_GAP_MS after the open or after the last message
// it counted, and at once when this page sends a push or a broadcast (what follows is live).
// A live message that someone else pushes in that first half second is counted too: that is the
// price of a protocol without per-message metadata. #offline-count carries data-window="open" or
// "closed", so tests can tell when the window is over.
const OFFLINE_GAP_MS = 500;

const CLOSE_MEANINGS = {
  1000: "normal closure",
  1001: "node shutting down",
  1002: "protocol error",
  1006: "connection lost",
  1007: "invalid UTF-8 sent",
  1008: "policy violation",
  1009: "message too big",
  1011: "internal error",
  1013: "slow consumer",
  4001: "disconnected by the API",
  4002: "token expired",
};

let client = null;
let connectedUser = "";
let received = 0;
let offline = 0;
let gaps = 0;
let offlineTimer = null;
let lastClose = null;

function describeClose(code, reason) {
  const meaning = CLOSE_MEANINGS[code] || "closed";
  return `${code} ${meaning}${reason && reason !== meaning ? ` — ${reason}` : ""}`;
}

function clock() {
  const d = new Date();
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

// addEntry puts a line at the top of the list: a message (className "msg …", with its seq:
// "#17", or "–" for a message without a number) or an event (className "event …", seq null).
function addEntry(className, tag, text, seq = null) {
  const li = document.createElement("li");
  li.className = className;
  const time = document.createElement("time");
  time.textContent = clock();
  const label = document.createElement("span");
  label.className = "tag";
  label.textContent = tag;
  const body = document.createElement(className.startsWith("msg") ? "code" : "span");
  body.className = "data";
  body.textContent = text;
  li.append(time, label);
  if (seq !== null) {
    const num = document.createElement("span");
    num.className = "seq";
    num.textContent = seq;
    li.append(num);
  }
  li.append(body);
  const list = $("messages");
  list.prepend(li);
  while (list.children.length > MAX_ENTRIES) list.lastElementChild.remove();
}

function describeBinary(buf) {
  const bytes = new Uint8Array(buf);
  const hex = Array.from(bytes.subarray(0, 32), (b) => b.toString(16).padStart(2, "0")).join(" ");
  return `${bytes.length} bytes: ${hex}${bytes.length > 32 ? " …" : ""}`;
}

function setOfflineWindow(open) {
  clearTimeout(offlineTimer);
  offlineTimer = null;
  if (open) offlineTimer = setTimeout(() => setOfflineWindow(false), OFFLINE_GAP_MS);
  $("offline-count").dataset.window = open ? "open" : "closed";
}

function onMessage(e) {
  received++;
  $("count").textContent = received;
  const isOffline = $("offline-count").dataset.window === "open";
  if (isOffline) {
    offline++;
    $("offline-count").textContent = offline;
    setOfflineWindow(true); // the burst goes on
  }
  $("empty").hidden = true;
  const binary = typeof e.data !== "string";
  const tag = (isOffline ? "offline" : "live") + (binary ? " · binary" : "");
  // Numbered messages show "#seq"; broadcasts (and every message in raw mode) have no number.
  addEntry(isOffline ? "msg offline" : "msg", tag, binary ? describeBinary(e.data) : e.data, e.seq === null ? "–" : `#${e.seq}`);
  showPosition();
}

function showPosition() {
  $("last-seq").textContent = client?.lastSeq ?? "–";
}

function showState(state, detail) {
  const el = $("state");
  el.textContent = state;
  el.dataset.state = state;
  $("state-detail").textContent = detail;
}

function connect() {
  const user = $("user").value.trim();
  const token = $("token").value.trim();
  if (!token && !$("user").reportValidity()) return;
  if (client) client.close(1000, "reconnecting");

  const previous = connectedUser;
  connectedUser = token ? tokenSubject(token) : user;
  if (connectedUser && ($("push-user").value === previous || $("push-user").value === "")) {
    $("push-user").value = connectedUser;
  }
  if (!token) {
    const url = new URL(location.href);
    url.searchParams.set("user", user);
    if ($("protocol").value === "raw") url.searchParams.set("protocol", "raw");
    else url.searchParams.delete("protocol");
    history.replaceState(null, "", url);
    updateCurlHint(user);
  }

  const protocol = $("protocol").value;
  // The position belongs to one user: remembered per user id, and only when the page knows it.
  const storageKey = $("remember").checked && connectedUser ? STORAGE_PREFIX + connectedUser : undefined;
  if (!$("remember").checked && connectedUser) forget(connectedUser);
  const c = new GatewayClient({ url: new URL("ws", document.baseURI), token: token || undefined, userId: user, protocol, storageKey });
  client = c;
  showPosition();
  lastClose = null;
  // Events of a client that was replaced are ignored.
  const mine = (fn) => (e) => {
    if (client === c) fn(e);
  };
  c.addEventListener("open", mine((e) => {
    setOfflineWindow(true);
    const how = e.protocol !== V1 ? "raw" : e.since === null ? `${V1}, unacknowledged messages first` : `${V1}, resuming after #${e.since}`;
    addEntry("event", "open", `connected as ${connectedUser || "the token's user"} · ${how}`);
  }));
  c.addEventListener("message", mine(onMessage));
  c.addEventListener("gap", mine((e) => {
    gaps++;
    $("gap-count").textContent = gaps;
    const which = e.from === e.to ? `message #${e.from} was` : `messages #${e.from}–#${e.to} were`;
    addEntry("event gap", "gap", `${which} no longer kept by the gateway (offline-max or a TTL): lost`);
    showPosition();
  }));
  c.addEventListener("reset", mine((e) => {
    addEntry("event reset", "reset", `the gateway's numbering for this user started again (latest #${e.latest}): position forgotten`);
    showPosition();
  }));
  c.addEventListener("close", mine((e) => {
    lastClose = e;
    setOfflineWindow(false);
    addEntry("event", "closed", describeClose(e.code, e.reason));
  }));
  c.addEventListener("retry", mine((e) => {
    showState(c.state, `retrying in ${(e.delay / 1000).toFixed(1)} s`);
  }));
  c.addEventListener("statechange", mine((e) => {
    switch (e.state) {
      case "open":
        showState(e.state, connectedUser ? `as ${connectedUser}` : "");
        break;
      case "stopped":
        showState(e.state, lastClose ? `${describeClose(lastClose.code, lastClose.reason)}; not reconnecting` : "not reconnecting");
        break;
      case "connecting":
        showState(e.state, connectedUser ? `as ${connectedUser}…` : "");
        break;
      case "reconnecting":
        break; // the "retry" event right after says when
      default:
        showState(e.state, "");
    }
  }));
  c.connect();
}

// forget removes the remembered position of user.
function forget(user) {
  try {
    localStorage.removeItem(STORAGE_PREFIX + user);
  } catch {
    // no storage
  }
}

// tokenSubject reads the user id (sub) from a JWT for display only; the gateway verifies it.
function tokenSubject(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return String(JSON.parse(atob(payload)).sub ?? "");
  } catch {
    return "";
  }
}

function updateCurlHint(user) {
  const body = JSON.stringify({ user_id: user, data: { text: "hi" } });
  const api = new URL("api/v1/push", document.baseURI);
  $("curl-hint").textContent = `curl -s ${api.href} -d '${body}'`;
}

// dataJSON returns the body fragment for "data": the text itself when it is valid JSON (so it
// arrives byte for byte as typed), else the text as a JSON string.
function dataJSON(text) {
  try {
    JSON.parse(text);
    return { json: text.trim(), asString: false };
  } catch {
    return { json: JSON.stringify(text), asString: true };
  }
}

async function post(path, fields, dataText, out) {
  setOfflineWindow(false); // whatever arrives from now on is live
  const { json, asString } = dataJSON(dataText);
  const headers = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  // The data is spliced in as typed, not re-serialized, so its bytes are what arrives.
  const body = `{${Object.entries(fields).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)},`).join("")}"data":${json}}`;
  out.className = "";
  out.textContent = "sending…";
  try {
    const r = await fetch(new URL(path, document.baseURI), { method: "POST", headers, body });
    const text = await r.text();
    let answer = text;
    try {
      const parsed = JSON.parse(text);
      if (!r.ok && parsed.error) answer = parsed.error;
      else if (parsed.results) {
        answer = parsed.results.map((x) => `${x.user_id}: ${x.online ? "online" : x.queued ? "stored offline" : "not delivered"}`).join(", ");
      } else answer = "sent";
    } catch {
      // not JSON: show as is
    }
    out.className = r.ok ? "ok" : "err";
    out.textContent = `${r.status} · ${answer}${asString && r.ok ? " (sent as a JSON string)" : ""}`;
  } catch (err) {
    out.className = "err";
    out.textContent = `request failed: ${err.message}`;
  }
}

function init() {
  const params = new URLSearchParams(location.search);
  const user = params.get("user");
  if (user) {
    $("user").value = user;
    $("push-user").value = user;
  }
  if (params.get("protocol") === "raw") $("protocol").value = "raw";
  updateCurlHint($("user").value);

  $("connect-form").addEventListener("submit", (e) => {
    e.preventDefault();
    connect();
  });
  $("disconnect").addEventListener("click", () => client?.close(1000, "closed by the user"));
  $("push-form").addEventListener("submit", (e) => {
    e.preventDefault();
    post("api/v1/push", { user_id: $("push-user").value.trim() }, $("push-data").value, $("push-result"));
  });
  $("broadcast-form").addEventListener("submit", (e) => {
    e.preventDefault();
    post("api/v1/broadcast", {}, $("broadcast-data").value, $("broadcast-result"));
  });
  $("clear").addEventListener("click", () => {
    $("messages").replaceChildren();
    $("empty").hidden = false;
  });
  connect();
}

init();
