// wsgateway.js — a browser client for the wsgateway WebSocket push gateway.
//
// One file, no dependencies, no build step: copy it into your app and import it as an ES module.
//
//   import { GatewayClient } from "./wsgateway.js";
//   const gw = new GatewayClient({ token: myJWT });       // or, with --dev: { userId: "alice" }
//   gw.addEventListener("message", (e) => console.log(e.data));
//   gw.addEventListener("statechange", (e) => console.log(e.state));
//   gw.connect();
//
// What it does for you (README.md, "Browser client", has the full reference):
// - Reconnects with exponential backoff and full jitter: the n-th retry in a row waits a random
//   time in [0, min(backoff.max, backoff.initial * 2^n)), n counted from 0. The count starts
//   again when a connection that had stayed open for stableAfter ends.
// - Close codes: 1001 (node shutting down) and 1013 (slow consumer; the backlog waits offline)
//   reconnect at once, after a random [0, backoff.initial) so that a drained node's clients do
//   not all arrive in the same millisecond. 4001 (disconnected by the API) stops for good, and
//   so do 1007, 1008 and 1009: they mean this client sent something the server refuses
//   (invalid UTF-8, a policy breach such as too many messages, a frame too big), and sending it
//   again would only loop. Every other close, and every failed attempt, backs off.
// - Liveness: browsers hide WebSocket ping frames from JavaScript, so the client sends the text
//   frame "ping" every pingInterval and the gateway answers "pong". When nothing at all (no
//   message, no pong) arrives within pongTimeout after a ping — at most pingInterval +
//   pongTimeout of silence — the connection is treated as dead: a "close" event with code 1006
//   and a reason starting "liveness timeout", then a reconnect with backoff. The "pong"
//   answers are not delivered as messages.

/** The values of GatewayClient#state. */
export const State = Object.freeze({
  CONNECTING: "connecting", // the first attempt after connect() is in flight
  OPEN: "open", // connected; messages flow
  RECONNECTING: "reconnecting", // the connection was lost or an attempt failed; a retry is scheduled or in flight
  STOPPED: "stopped", // the server said not to come back (4001, 1007, 1008, 1009); connect() starts again
  CLOSED: "closed", // before connect(), and after close()
});

// Close codes that end the client instead of reconnecting (see the header comment).
const STOP_CODES = new Set([4001, 1007, 1008, 1009]);
// Close codes after which the gateway expects the client back right away.
const QUICK_CODES = new Set([1001, 1013]);

// Reported in the close event when the liveness check gives up: no close frame was received,
// which is what 1006 means in the browser's CloseEvent.
const ABNORMAL = 1006;

const DEFAULTS = {
  url: "/ws",
  pingInterval: 20000, // ms; with pongTimeout, a dead link is noticed within 30 s
  pongTimeout: 10000, // ms
  stableAfter: 10000, // ms a connection must stay open before the backoff starts again from backoff.initial
  backoff: { initial: 500, max: 30000 }, // ms
};

/**
 * A connection to a wsgateway /ws endpoint that keeps itself alive.
 *
 * Events (it is an EventTarget; listen with addEventListener):
 * - "open": a connection is established.
 * - "message": e.data is a string (text frame) or an ArrayBuffer (binary frame).
 * - "statechange": e.state is the new state (see State); e.previous the old one.
 * - "close": a connection ended; e.code, e.reason, e.wasClean as in a WebSocket CloseEvent.
 * - "retry": a reconnect is scheduled; e.delay (ms) until it, e.attempt the failures in a row
 *   that the backoff counts so far.
 * - "error": e.error, when a token function failed (the client retries with backoff) or the
 *   browser refused to open the URL (the client stops).
 */
export class GatewayClient extends EventTarget {
  #url;
  #token;
  #userId;
  #pingInterval;
  #pongTimeout;
  #stableAfter;
  #backoff;

  #state = State.CLOSED;
  #ws = null;
  #attempt = 0; // failures in a row; decides the backoff window
  #generation = 0; // bumps on connect()/close(), so a late token promise of an old run is ignored

  #retryTimer = null;
  #pingTimer = null;
  #pongTimer = null;
  #openedAt = 0; // performance.now() of the current connection's open
  #silentSince = 0; // performance.now() of the first ping since the last frame received; 0: none
  #pendingPongs = 0; // pings sent and not yet answered: only that many "pong" frames are swallowed
  #onOnline = () => this.#retryNow();

  /**
   * @param {object} [options]
   * @param {string|URL} [options.url="/ws"] the gateway's /ws endpoint; relative to the page, and
   *   http(s):// is turned into ws(s)://.
   * @param {string|(() => string|Promise<string>)} [options.token] a JWT, sent as ?token=; or a
   *   function called before every attempt, so an expired token can be refreshed.
   * @param {string} [options.userId] with a --dev gateway only, sent as ?user_id= when there is no token.
   * @param {number} [options.pingInterval=20000] ms between text "ping" frames.
   * @param {number} [options.pongTimeout=10000] ms to wait for anything after a ping before giving up.
   * @param {{initial?: number, max?: number}} [options.backoff] ms; defaults 500 and 30000.
   * @param {number} [options.stableAfter=10000] ms open after which the backoff is reset.
   */
  constructor(options = {}) {
    super();
    const o = { ...DEFAULTS, ...options };
    this.#url = o.url;
    this.#token = o.token;
    this.#userId = o.userId;
    this.#pingInterval = positive(o.pingInterval, "pingInterval");
    this.#pongTimeout = positive(o.pongTimeout, "pongTimeout");
    this.#stableAfter = positive(o.stableAfter, "stableAfter");
    const b = { ...DEFAULTS.backoff, ...options.backoff };
    this.#backoff = { initial: positive(b.initial, "backoff.initial"), max: positive(b.max, "backoff.max") };
    if (this.#backoff.max < this.#backoff.initial) {
      throw new RangeError("wsgateway: backoff.max must not be below backoff.initial");
    }
    this.#endpoint(""); // throws now on a URL that cannot work, not at the first attempt
  }

  /** The current state: one of the State values. */
  get state() {
    return this.#state;
  }

  /**
   * Starts connecting. Does nothing while connecting or open; after close() or a stop it starts
   * afresh, with the backoff reset.
   */
  connect() {
    if (this.#state !== State.CLOSED && this.#state !== State.STOPPED) return;
    this.#generation++;
    this.#attempt = 0;
    globalThis.addEventListener?.("online", this.#onOnline);
    this.#setState(State.CONNECTING);
    this.#dial();
  }

  /**
   * Closes the connection for good: no reconnect until connect() is called again. The "close"
   * event of the open connection still follows.
   * @param {number} [code=1000]
   * @param {string} [reason=""]
   */
  close(code = 1000, reason = "") {
    if (this.#state === State.CLOSED) return;
    this.#generation++;
    this.#stopLiveness();
    this.#halt(State.CLOSED);
    const ws = this.#ws;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(code, reason);
  }

  /**
   * Sends a frame to the gateway (SPEC section 7: forwarded upstream). Returns false, and
   * sends nothing, when not open.
   * @param {string|ArrayBuffer|ArrayBufferView|Blob} data
   */
  send(data) {
    if (this.#state !== State.OPEN || !this.#ws) return false;
    this.#ws.send(data);
    return true;
  }

  async #dial() {
    const gen = this.#generation;
    let token = this.#token;
    if (typeof token === "function") {
      try {
        token = await token();
      } catch (error) {
        if (gen !== this.#generation) return;
        this.dispatchEvent(event("error", { error }));
        this.#scheduleRetry(false);
        return;
      }
      if (gen !== this.#generation) return; // close() or connect() while the token was fetched
    }

    let ws;
    try {
      ws = new WebSocket(this.#endpoint(token));
    } catch (error) {
      // A URL the browser refuses (bad scheme, blocked port) will not get better by retrying.
      this.dispatchEvent(event("error", { error }));
      this.#halt(State.STOPPED);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    ws.onopen = () => this.#handleOpen(ws);
    ws.onmessage = (e) => this.#handleMessage(ws, e.data);
    ws.onclose = (e) => this.#handleClose(ws, e.code, e.reason, e.wasClean);
    // onerror is always followed by onclose, which carries what there is to know.
  }

  #endpoint(token) {
    const base = globalThis.location ? globalThis.location.href : undefined;
    const u = new URL(this.#url, base);
    if (u.protocol === "http:") u.protocol = "ws:";
    else if (u.protocol === "https:") u.protocol = "wss:";
    if (token) u.searchParams.set("token", token);
    else if (this.#userId) u.searchParams.set("user_id", this.#userId);
    return u.href;
  }

  #handleOpen(ws) {
    if (ws !== this.#ws) return;
    this.#openedAt = performance.now();
    this.#startLiveness(ws);
    this.#setState(State.OPEN);
    this.dispatchEvent(event("open"));
  }

  #handleMessage(ws, data) {
    if (ws !== this.#ws) return;
    this.#silentSince = 0;
    if (data === "pong" && this.#pendingPongs > 0) {
      this.#pendingPongs--;
      return;
    }
    this.dispatchEvent(event("message", { data }));
  }

  #handleClose(ws, code, reason, wasClean) {
    if (ws !== this.#ws) return; // a socket the liveness check already gave up on
    this.#ws = null;
    this.#ended();
    this.dispatchEvent(event("close", { code, reason, wasClean }));
    if (this.#state === State.CLOSED || this.#state === State.STOPPED) return;
    if (STOP_CODES.has(code)) {
      this.#halt(State.STOPPED);
      return;
    }
    this.#scheduleRetry(QUICK_CODES.has(code));
  }

  // The liveness check gave up: drop the socket without waiting for a close handshake that a
  // dead link would never complete, and reconnect.
  #dead() {
    const ws = this.#ws;
    if (!ws) return;
    this.#ws = null;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try {
      ws.close(4000, "liveness timeout");
    } catch {
      // already closing
    }
    this.#ended();
    const reason = `liveness timeout: nothing received within ${this.#pongTimeout} ms of a ping`;
    this.dispatchEvent(event("close", { code: ABNORMAL, reason, wasClean: false }));
    if (this.#state === State.CLOSED || this.#state === State.STOPPED) return;
    this.#scheduleRetry(false);
  }

  // A connection ended (or an attempt failed). One that had stayed open for stableAfter starts
  // the backoff afresh. Judged here rather than by a timer, which a background tab may delay.
  #ended() {
    this.#stopLiveness();
    if (this.#openedAt > 0 && performance.now() - this.#openedAt >= this.#stableAfter) this.#attempt = 0;
    this.#openedAt = 0;
  }

  #scheduleRetry(quick) {
    this.#clearRetry();
    let delay;
    if (quick) {
      delay = Math.random() * this.#backoff.initial;
    } else {
      const ceiling = Math.min(this.#backoff.max, this.#backoff.initial * 2 ** this.#attempt);
      delay = Math.random() * ceiling;
      // Stop doubling once at the cap, so the exponent cannot grow without bound.
      if (ceiling < this.#backoff.max) this.#attempt++;
    }
    this.#setState(State.RECONNECTING);
    this.dispatchEvent(event("retry", { delay, attempt: this.#attempt }));
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#dial();
    }, delay);
  }

  // The browser came back online while a retry was waiting: try now.
  #retryNow() {
    if (this.#retryTimer === null) return;
    this.#clearRetry();
    this.#dial();
  }

  // No more attempts: closed by the application, or stopped.
  #halt(state) {
    this.#clearRetry();
    globalThis.removeEventListener?.("online", this.#onOnline);
    this.#setState(state);
  }

  #clearRetry() {
    if (this.#retryTimer !== null) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
  }

  #startLiveness(ws) {
    this.#stopLiveness();
    this.#silentSince = 0;
    this.#pendingPongs = 0;
    this.#pingTimer = setInterval(() => {
      if (ws !== this.#ws || ws.readyState !== WebSocket.OPEN) return;
      ws.send("ping");
      this.#pendingPongs++;
      if (this.#silentSince === 0) this.#silentSince = performance.now();
      if (this.#pongTimer === null) this.#watch(ws, this.#pongTimeout);
    }, this.#pingInterval);
  }

  // One timer watches the first ping that nothing has arrived since. Any frame resets
  // #silentSince; a timer that finds a newer ping waits for that one's remaining time. So the
  // link is declared dead exactly pongTimeout after the first unanswered ping, which is at most
  // pingInterval + pongTimeout after the last frame. The check is by what arrived, not by the
  // clock alone: a background tab may run this timer late, and that must not count as silence.
  #watch(ws, ms) {
    this.#pongTimer = setTimeout(() => {
      this.#pongTimer = null;
      if (ws !== this.#ws || this.#silentSince === 0) return;
      const left = this.#silentSince + this.#pongTimeout - performance.now();
      if (left > 0) this.#watch(ws, left);
      else this.#dead();
    }, ms);
  }

  #stopLiveness() {
    clearInterval(this.#pingTimer);
    clearTimeout(this.#pongTimer);
    this.#pingTimer = this.#pongTimer = null;
  }

  #setState(state) {
    if (state === this.#state) return;
    const previous = this.#state;
    this.#state = state;
    this.dispatchEvent(event("statechange", { state, previous }));
  }
}

function event(type, props) {
  return Object.assign(new Event(type), props);
}

function positive(v, name) {
  if (typeof v !== "number" || !(v > 0)) {
    throw new RangeError(`wsgateway: ${name} must be a positive number of milliseconds`);
  }
  return v;
}
