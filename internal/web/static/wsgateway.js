// wsgateway.js — a browser client for the wsgateway WebSocket push gateway.
//
// One file, no dependencies, no build step: copy it into your app and import it as an ES module.
//
//   import { GatewayClient } from "./wsgateway.js";
//   const gw = new GatewayClient({ token: myJWT, storageKey: "push-seq:" + me }); // --dev: { userId: "alice" }
//   gw.addEventListener("message", (e) => console.log(e.seq, e.data));
//   gw.addEventListener("gap", (e) => console.warn(`messages ${e.from}..${e.to} are lost`));
//   gw.connect();
//
// What it does for you (README.md, "Browser client", has the full reference):
// - Speaks the wsgateway.v1 subprotocol by default: every stored message carries its per-user
//   number (seq). The client remembers the last one (optionally in localStorage, across page
//   loads), acknowledges cumulatively ("ack <seq>", batched: at most ackInterval after a
//   message, sooner after ackEvery messages, never more than 20 acks a second), resumes every
//   reconnect with ?since=<last seq> so that it gets exactly what it missed, drops a number it
//   already has, and reports the gateway's "gap" (messages no longer kept) and "reset" (the
//   user's numbering started again) as events. With protocol "raw" frames are the payloads as
//   they are, with no numbers; that is also the way to talk to a gateway that predates
//   wsgateway.v1 (Chromium fails a handshake in which the server selects no subprotocol).
// - Reconnects with exponential backoff and full jitter: the n-th retry in a row waits a random
//   time in [0, min(backoff.max, backoff.initial * 2^n)), n counted from 0. The count starts
//   again when a connection that had stayed open for stableAfter ends.
// - Sessions that outlive their token: the gateway closes a connection with 4002 when its JWT's
//   exp passes. When token is a function and the connection speaks wsgateway.v1, the client
//   reads the exp of the token it connected with (the JWT's payload, decoded, not verified)
//   and shortly before it — a quarter of the time left, at most a minute, but never sooner
//   than 2 s after the connection opened or the last refresh — calls the function again and
//   sends "auth <new token>" on the open socket; the gateway moves the connection's end to
//   the new exp, and the next refresh is planned from there. No refresh for a token without
//   exp or expiring within 2 s of the open, nor in raw mode: the gateway closes with 4002 at
//   exp and the reconnect asks the function for a token again (a string token cannot be
//   replaced: the gateway refuses it once expired, and the client backs off). A new token
//   whose exp is not later than the current one, or a token function that fails ("error"
//   event), changes nothing: the 4002 at exp brings a reconnect with a fresh token. The exp is
//   compared with this machine's clock.
// - Close codes: 1001 (node shutting down), 1013 (slow consumer; the backlog waits in the
//   inbox) and 4002 (token expired) reconnect at once, after a random [0, backoff.initial) so
//   that a drained node's clients do not all arrive in the same millisecond. 4001
//   (disconnected by the API) stops for good, and so do 1007, 1008 and 1009: they mean this
//   client sent something the server refuses (invalid UTF-8, a policy breach such as too many
//   messages or a refreshed token for another user, a frame too big), and sending it again
//   would only loop. Every other close, and every failed attempt, backs off.
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

/** The subprotocol of numbered messages, resume and acks; the value of the protocol option. */
export const V1 = "wsgateway.v1";
/** The protocol option's value for raw frames: payloads as they are, no numbers, no acks. */
export const RAW = "raw";

// Close codes that end the client instead of reconnecting (see the header comment).
const STOP_CODES = new Set([4001, 1007, 1008, 1009]);
// Close codes after which the gateway expects the client back right away (4002: with a token
// the function gives afresh).
const QUICK_CODES = new Set([1001, 1013, 4002]);

// Reported in the close event when the liveness check gives up: no close frame was received,
// which is what 1006 means in the browser's CloseEvent.
const ABNORMAL = 1006;

// Acks count toward the gateway's max-inbound-rate (50 frames a second by default, close 1008
// beyond): two acks are never closer than this, whatever ackInterval and ackEvery say, which
// keeps them at 20 a second at most and leaves the rest to pings and the application.
const MIN_ACK_GAP = 50; // ms

// In-band token refresh: a token is replaced a quarter of its remaining time before its exp, at
// most REFRESH_LEAD_MAX before; never sooner than REFRESH_MIN_WAIT after the connection opened
// or after the last refresh, so that a token function handing out very short-lived tokens
// cannot make it spin (nor use up the gateway's max-inbound-rate).
const REFRESH_LEAD_MAX = 60000; // ms
const REFRESH_MIN_WAIT = 2000; // ms
// The longest wait setTimeout keeps (a longer one fires at once): a later refresh waits in steps.
const MAX_TIMER = 2 ** 31 - 1; // ms

const DEFAULTS = {
  url: "/ws",
  protocol: V1,
  pingInterval: 20000, // ms; with pongTimeout, a dead link is noticed within 30 s
  pongTimeout: 10000, // ms
  stableAfter: 10000, // ms a connection must stay open before the backoff starts again from backoff.initial
  backoff: { initial: 500, max: 30000 }, // ms
  ackInterval: 100, // ms from a message to the ack that covers it
  ackEvery: 64, // unacknowledged messages that call for an ack at once
};

/**
 * A connection to a wsgateway /ws endpoint that keeps itself alive and, with wsgateway.v1,
 * resumes where it left off.
 *
 * Events (it is an EventTarget; listen with addEventListener):
 * - "open": a connection is established. e.protocol is "wsgateway.v1" or "raw" (what this
 *   connection speaks); e.since the position it resumed from (null: none was known, the
 *   gateway sent what the user had not acknowledged).
 * - "message": e.data is a string (text frame) or an ArrayBuffer (binary frame): the pushed
 *   bytes, without the number. e.seq is the message's number, or null for a message without
 *   one (a broadcast, a raw Redis PUBLISH, and every message in raw mode).
 * - "gap": e.from, e.to: messages from..to were asked for but the gateway no longer keeps them
 *   (its offline-max cap or a TTL dropped them). They will never arrive.
 * - "reset": e.latest: the position this client resumed from is above the user's latest number
 *   (the user's state expired on the gateway and numbering started again). The client forgot
 *   its position; the messages that follow are numbered from the start again.
 * - "statechange": e.state is the new state (see State); e.previous the old one.
 * - "close": a connection ended; e.code, e.reason, e.wasClean as in a WebSocket CloseEvent.
 * - "retry": a reconnect is scheduled; e.delay (ms) until it, e.attempt the failures in a row
 *   that the backoff counts so far.
 * - "refresh": e.exp (ms since the epoch, like Date.now()): a new token was sent in-band
 *   ("auth <token>") and the gateway will keep the connection open until then.
 * - "error": e.error, when a token function failed (before an attempt: the client retries with
 *   backoff; for an in-band refresh: nothing is sent, and the gateway's 4002 at exp brings a
 *   reconnect) or the browser refused to open the URL (the client stops).
 */
export class GatewayClient extends EventTarget {
  #url;
  #token;
  #userId;
  #protocol;
  #storageKey;
  #pingInterval;
  #pongTimeout;
  #stableAfter;
  #backoff;
  #ackInterval;
  #ackEvery;

  #state = State.CLOSED;
  #ws = null;
  #v1 = false; // the current connection speaks wsgateway.v1
  #attempt = 0; // failures in a row; decides the backoff window
  #generation = 0; // bumps on connect()/close(), so a late token promise of an old run is ignored

  #retryTimer = null;
  #pingTimer = null;
  #pongTimer = null;
  #openedAt = 0; // performance.now() of the current connection's open
  #silentSince = 0; // performance.now() of the first ping since the last frame received; 0: none
  #pendingPongs = 0; // pings sent and not yet answered: in raw mode only that many "pong" frames are swallowed

  // The position: the highest number received (or skipped by a gap); null while unknown. It
  // outlives connections, close() and stops, so that any later connect resumes from it.
  #lastSeq = null;
  #since = null; // the position the current connection resumed from
  // Acks of the current connection. The gateway takes an ack only for a number it wrote on the
  // same connection, so what was due on an earlier one is not carried over.
  #ackDue = 0; // the highest number received on this connection
  #acked = 0; // the highest number acknowledged on it
  #unacked = 0; // messages received since the last ack
  #lastAckAt = -Infinity; // performance.now() of the last ack sent
  #ackTimer = null;
  // In-band refresh of the current connection's token.
  #tokenExp = null; // the exp of the token the connection runs on, in ms (Date.now()'s clock); null: unknown, or no refresh
  #refreshTimer = null;

  #onOnline = () => this.#retryNow();
  #onPageHide = () => this.#sendAck(); // a reload or a closed tab: say what arrived before it goes

  /**
   * @param {object} [options]
   * @param {string|URL} [options.url="/ws"] the gateway's /ws endpoint; relative to the page, and
   *   http(s):// is turned into ws(s)://.
   * @param {string|(() => string|Promise<string>)} [options.token] a JWT, sent as ?token=; or a
   *   function called before every attempt, so an expired token can be replaced, and with
   *   wsgateway.v1 again shortly before the connection's token expires, to refresh it in-band.
   * @param {string} [options.userId] with a --dev gateway only, sent as ?user_id= when there is no token.
   * @param {"wsgateway.v1"|"raw"} [options.protocol="wsgateway.v1"] numbered messages, resume and
   *   acks; or raw frames (the payloads as they are, what the gateway offers every client).
   * @param {string} [options.storageKey] keep the position in localStorage under this key, so a
   *   page load resumes where the last one stopped. One key per user: a position is a number in
   *   that user's sequence.
   * @param {number} [options.since] the position to resume from on the first connect (it wins
   *   over a stored one); for applications that keep it themselves.
   * @param {number} [options.pingInterval=20000] ms between text "ping" frames.
   * @param {number} [options.pongTimeout=10000] ms to wait for anything after a ping before giving up.
   * @param {{initial?: number, max?: number}} [options.backoff] ms; defaults 500 and 30000.
   * @param {number} [options.stableAfter=10000] ms open after which the backoff is reset.
   * @param {number} [options.ackInterval=100] ms from a message to the ack that covers it.
   * @param {number} [options.ackEvery=64] unacknowledged messages after which the ack goes at
   *   once (still at most one ack per 50 ms).
   */
  constructor(options = {}) {
    super();
    const o = { ...DEFAULTS, ...options };
    this.#url = o.url;
    this.#token = o.token;
    this.#userId = o.userId;
    if (o.protocol !== V1 && o.protocol !== RAW) {
      throw new RangeError(`wsgateway: protocol must be "${V1}" or "${RAW}"`);
    }
    this.#protocol = o.protocol;
    this.#storageKey = o.storageKey;
    this.#pingInterval = positive(o.pingInterval, "pingInterval");
    this.#pongTimeout = positive(o.pongTimeout, "pongTimeout");
    this.#stableAfter = positive(o.stableAfter, "stableAfter");
    this.#ackInterval = positive(o.ackInterval, "ackInterval");
    this.#ackEvery = positive(o.ackEvery, "ackEvery");
    const b = { ...DEFAULTS.backoff, ...options.backoff };
    this.#backoff = { initial: positive(b.initial, "backoff.initial"), max: positive(b.max, "backoff.max") };
    if (this.#backoff.max < this.#backoff.initial) {
      throw new RangeError("wsgateway: backoff.max must not be below backoff.initial");
    }
    if (this.#protocol === RAW) {
      // raw frames carry no numbers: no position to resume from
    } else if (o.since !== undefined && o.since !== null) {
      if (!Number.isSafeInteger(o.since) || o.since < 0) {
        throw new RangeError("wsgateway: since must be a whole number of 0 or more");
      }
      this.#lastSeq = o.since;
    } else if (this.#storageKey !== undefined) {
      this.#lastSeq = this.#load();
    }
    this.#endpoint(""); // throws now on a URL that cannot work, not at the first attempt
  }

  /** The current state: one of the State values. */
  get state() {
    return this.#state;
  }

  /**
   * The position: the number of the last message received (or the end of the last gap), which
   * the next connection resumes from; null while none is known (raw mode, or nothing numbered
   * has arrived yet and none was stored or given).
   */
  get lastSeq() {
    return this.#lastSeq;
  }

  /**
   * Starts connecting. Does nothing while connecting or open; after close() or a stop it starts
   * afresh, with the backoff reset, and resumes from the position it had.
   */
  connect() {
    if (this.#state !== State.CLOSED && this.#state !== State.STOPPED) return;
    this.#generation++;
    this.#attempt = 0;
    globalThis.addEventListener?.("online", this.#onOnline);
    globalThis.addEventListener?.("pagehide", this.#onPageHide);
    this.#setState(State.CONNECTING);
    this.#dial();
  }

  /**
   * Closes the connection for good: no reconnect until connect() is called again. What arrived
   * is acknowledged first. The "close" event of the open connection still follows.
   * @param {number} [code=1000]
   * @param {string} [reason=""]
   */
  close(code = 1000, reason = "") {
    if (this.#state === State.CLOSED) return;
    this.#generation++;
    this.#sendAck();
    this.#stopLiveness();
    this.#stopRefresh();
    this.#halt(State.CLOSED);
    const ws = this.#ws;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(code, reason);
  }

  /**
   * Sends a frame to the gateway, which forwards it upstream to the backends. Returns false,
   * and sends nothing, when not open. With wsgateway.v1 the text frames "ping", "ack <n>" and
   * "auth <token>" are the protocol's own and are not forwarded.
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
    const v1 = this.#protocol === V1;
    try {
      ws = v1 ? new WebSocket(this.#endpoint(token), V1) : new WebSocket(this.#endpoint(token));
    } catch (error) {
      // A URL the browser refuses (bad scheme, blocked port) will not get better by retrying.
      this.dispatchEvent(event("error", { error }));
      this.#halt(State.STOPPED);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    this.#since = v1 ? this.#lastSeq : null;
    // Only a token the function gave can be replaced by calling it again.
    this.#tokenExp = typeof this.#token === "function" ? expiryOf(token) : null;
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
    if (this.#protocol === V1 && this.#lastSeq !== null) u.searchParams.set("since", String(this.#lastSeq));
    return u.href;
  }

  #handleOpen(ws) {
    if (ws !== this.#ws) return;
    // A gateway that predates wsgateway.v1 selects no subprotocol. Chromium fails such a
    // handshake (an attempt that failed, as far as this client can tell); where a browser
    // lets it through, the connection is raw.
    this.#v1 = ws.protocol === V1;
    this.#ackDue = this.#acked = this.#unacked = 0;
    this.#openedAt = performance.now();
    this.#startLiveness(ws);
    // Raw mode has no "auth" frame (it would be upstream data): its token runs out.
    if (this.#v1) this.#planRefresh(ws, Date.now());
    this.#setState(State.OPEN);
    this.dispatchEvent(event("open", { protocol: this.#v1 ? V1 : RAW, since: this.#v1 ? this.#since : null }));
  }

  #handleMessage(ws, data) {
    if (ws !== this.#ws) return;
    this.#silentSince = 0;
    if (!this.#v1) {
      if (data === "pong" && this.#pendingPongs > 0) {
        this.#pendingPongs--;
        return;
      }
      this.dispatchEvent(event("message", { data, seq: null }));
      return;
    }
    if (typeof data !== "string") {
      // A binary frame: an ASCII header ("<seq>" or "-"), a space, the pushed bytes.
      const bytes = new Uint8Array(data);
      const sp = bytes.indexOf(0x20);
      if (sp < 0) return; // not a frame of this protocol
      this.#numbered(String.fromCharCode(...bytes.subarray(0, sp)), data.slice(sp + 1));
      return;
    }
    if (data === "pong") {
      // Every data frame of wsgateway.v1 has a header, so a bare "pong" is always the answer.
      this.#pendingPongs = Math.max(0, this.#pendingPongs - 1);
      return;
    }
    const sp = data.indexOf(" ");
    const head = sp < 0 ? data : data.slice(0, sp);
    if (head === "gap") {
      let [from, to] = numbers(data.slice(sp + 1), 2);
      if (from === undefined || to < from) return;
      // The gateway counts the gap's end as sent, so acking it moves the user's acknowledged
      // position past what is lost.
      if (to > this.#ackDue) this.#ackDue = to;
      this.#planAck();
      // Only what this client does not have is lost to it.
      if (this.#lastSeq !== null) from = Math.max(from, this.#lastSeq + 1);
      if (from > to) return;
      this.#setPosition(to);
      this.dispatchEvent(event("gap", { from, to }));
    } else if (head === "reset") {
      const [latest] = numbers(data.slice(sp + 1), 1);
      if (latest === undefined) return;
      // What follows is numbered from the start again: what is due from before is void.
      clearTimeout(this.#ackTimer);
      this.#ackTimer = null;
      this.#ackDue = this.#acked = this.#unacked = 0;
      this.#setPosition(0);
      this.dispatchEvent(event("reset", { latest }));
    } else if (sp > 0) {
      this.#numbered(head, data.slice(sp + 1));
    }
    // Anything else is a frame of a newer gateway that this client does not know: ignored.
  }

  // A message of wsgateway.v1: head is its number, or "-" for one without.
  #numbered(head, data) {
    if (head === "-") {
      this.dispatchEvent(event("message", { data, seq: null }));
      return;
    }
    const [seq] = numbers(head, 1);
    if (seq === undefined) return;
    // A number at or below the position was had already (a duplicate): not delivered again,
    // but acknowledged like the rest, so the gateway learns that it arrived.
    // Counted before the listeners run, so that a close() from one of them acknowledges it.
    if (seq > this.#ackDue) this.#ackDue = seq;
    this.#unacked++;
    if (this.#lastSeq === null || seq > this.#lastSeq) {
      this.#setPosition(seq);
      this.dispatchEvent(event("message", { data, seq }));
    }
    this.#planAck();
  }

  #setPosition(seq) {
    this.#lastSeq = seq;
    if (this.#storageKey === undefined) return;
    try {
      globalThis.localStorage.setItem(this.#storageKey, String(seq));
    } catch {
      // No storage (disabled, full, a private window): the position lives in memory only.
    }
  }

  #load() {
    try {
      const v = globalThis.localStorage.getItem(this.#storageKey);
      if (v !== null && /^\d{1,15}$/.test(v)) return Number(v);
    } catch {
      // no storage: nothing stored
    }
    return null;
  }

  // An ack goes ackInterval after the first message it covers, or at once when ackEvery are
  // waiting; either way not within MIN_ACK_GAP of the previous one.
  #planAck() {
    const now = performance.now();
    const early = this.#lastAckAt + MIN_ACK_GAP - now;
    if (this.#unacked >= this.#ackEvery && early <= 0) {
      this.#sendAck();
      return;
    }
    if (this.#ackTimer !== null) return;
    this.#ackTimer = setTimeout(() => {
      this.#ackTimer = null;
      this.#sendAck();
    }, Math.max(this.#ackInterval, early));
  }

  #sendAck() {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    const ws = this.#ws;
    if (!this.#v1 || this.#ackDue <= this.#acked || !ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(`ack ${this.#ackDue}`);
    this.#acked = this.#ackDue;
    this.#unacked = 0;
    this.#lastAckAt = performance.now();
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
    this.#stopRefresh();
    clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
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
    globalThis.removeEventListener?.("pagehide", this.#onPageHide);
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

  // Plans the refresh of the connection's token, judged at from (Date.now(): the connection's
  // open, or the last refresh). Nothing when its exp is unknown, or when it is too close for a
  // refresh to go no sooner than REFRESH_MIN_WAIT from now and still before it.
  #planRefresh(ws, from) {
    this.#stopRefresh();
    const exp = this.#tokenExp;
    if (exp === null) return;
    const lead = Math.min((exp - from) / 4, REFRESH_LEAD_MAX);
    const at = Math.max(exp - lead, from + REFRESH_MIN_WAIT);
    if (at >= exp) return; // the gateway's 4002 at exp brings a reconnect with a fresh token
    this.#armRefresh(ws, at);
  }

  #armRefresh(ws, at) {
    this.#refreshTimer = setTimeout(() => {
      this.#refreshTimer = null;
      if (ws !== this.#ws) return;
      if (Date.now() < at) this.#armRefresh(ws, at); // a wait longer than MAX_TIMER, or a clock set back
      else this.#refresh(ws);
    }, Math.min(Math.max(at - Date.now(), 0), MAX_TIMER));
  }

  // Asks the token function for a new token and sends it as "auth <token>" when its exp is
  // later than the current one (and still ahead); otherwise leaves the connection to its 4002.
  async #refresh(ws) {
    const gen = this.#generation;
    let token;
    try {
      token = await this.#token();
    } catch (error) {
      if (gen === this.#generation && ws === this.#ws) this.dispatchEvent(event("error", { error }));
      return;
    }
    if (gen !== this.#generation || ws !== this.#ws || ws.readyState !== WebSocket.OPEN) return;
    const exp = expiryOf(token);
    // A token that is not later would move nothing (a token cache that has not renewed yet);
    // one without exp, or already expired, the gateway would refuse with 1008, which stops
    // the client.
    if (exp === null || exp <= this.#tokenExp || exp <= Date.now()) return;
    ws.send(`auth ${token}`);
    this.#tokenExp = exp;
    this.dispatchEvent(event("refresh", { exp }));
    if (gen === this.#generation && ws === this.#ws) this.#planRefresh(ws, Date.now()); // unless a listener closed it
  }

  #stopRefresh() {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
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
    throw new RangeError(`wsgateway: ${name} must be a positive number`);
  }
  return v;
}

// expiryOf returns a JWT's exp in ms (Date.now()'s scale), or null for anything that is not a
// JWT with a numeric exp (an opaque token is never refreshed in-band). The signature is not
// checked: the client has no key, and only wants to know when the gateway stops honouring it.
function expiryOf(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const bin = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/")); // base64url, padding optional
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
    const exp = claims?.exp;
    return typeof exp === "number" && Number.isFinite(exp) && exp > 0 ? exp * 1000 : null;
  } catch {
    return null; // not base64url, not UTF-8 JSON
  }
}

// numbers parses exactly n space-separated decimal numbers; [] when text is anything else.
function numbers(text, n) {
  const parts = text.split(" ");
  if (parts.length !== n || !parts.every((p) => /^\d{1,16}$/.test(p))) return [];
  return parts.map(Number);
}
