// One Socket.IO connection to the default namespace over a WebSocket:
// Engine.IO handshake, namespace connect, ping/pong with timeout detection,
// and reconnects with exponential backoff and jitter. Knows the wire format
// only through packet.js; reports what happens through the `hooks` object.

import {
  ENGINE,
  SOCKET,
  PacketError,
  connectFrame,
  decodeEngine,
  decodeSocket,
  encodeEngine,
  encodeSocket,
  eventFrame,
} from "./packet.js";

export const BACKOFF = Object.freeze({ base: 500, factor: 2, cap: 30000, jitter: 0.5 });

/**
 * Milliseconds to wait before reconnect attempt number `attempt` (0-based):
 * base * factor^attempt, capped, then reduced by a random share of up to
 * `jitter` so that many pages that lost the same server do not return at once.
 */
export function backoffDelay(attempt, options = BACKOFF, random = Math.random) {
  const { base, factor, cap, jitter } = { ...BACKOFF, ...options };
  const step = Math.max(0, Math.floor(attempt));
  const raw = Math.min(cap, base * factor ** step);
  return Math.round(raw * (1 - jitter * random()));
}

const HANDSHAKE_TIMEOUT = 10000;

const defaultTimers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (id) => globalThis.clearTimeout(id),
};

/**
 * States: "idle" (not started), "opening" (waiting for the Engine.IO
 * handshake), "joining" (waiting for the namespace), "open", "waiting"
 * (a retry is scheduled), "closed" (closed on purpose; no more retries).
 */
export class Connection {
  #ws = null;
  #timer = null;
  #attempt = 0;
  #everConnected = false;
  #pingDeadline = 0;

  constructor(url, { hooks = {}, WebSocket = globalThis.WebSocket, timers = defaultTimers,
    random = Math.random, backoff = BACKOFF, handshakeTimeout = HANDSHAKE_TIMEOUT,
    auth = () => undefined } = {}) {
    this.url = url;
    this.hooks = hooks;
    this.auth = auth; // () => the namespace CONNECT's payload, asked at each (re)connect
    this.WebSocket = WebSocket;
    this.timers = timers;
    this.random = random;
    this.backoff = backoff;
    this.handshakeTimeout = handshakeTimeout;
    this.state = "idle";
    this.handshake = null;
  }

  /** Start connecting now (also cuts a scheduled retry short). */
  open() {
    if (this.state === "opening" || this.state === "joining" || this.state === "open") {
      return;
    }
    this.#clearTimer();
    this.state = "opening";
    let ws;
    try {
      ws = new this.WebSocket(this.url);
    } catch (err) {
      this.#lost(`cannot open WebSocket: ${err.message}`);
      return;
    }
    this.#ws = ws;
    ws.onmessage = (event) => this.#onFrame(event.data);
    ws.onclose = (event) => this.#lost(`connection closed (code ${event.code})`);
    ws.onerror = () => {}; // a close event always follows
    this.#arm(this.handshakeTimeout, "no handshake from the server");
  }

  /** Close for good: leave the namespace, close the socket, stop retrying. */
  close() {
    if (this.state === "closed") {
      return;
    }
    const wasOpen = this.state === "open";
    if (wasOpen) {
      this.#send(encodeEngine(ENGINE.MESSAGE, encodeSocket({ type: SOCKET.DISCONNECT })));
    }
    this.state = "closed";
    this.#clearTimer();
    this.#drop(1000);
    if (wasOpen) {
      this.hooks.disconnect?.("closed by the page", false);
    }
  }

  /** While waiting to retry, retry at once (for example when the network is back). */
  retryNow() {
    if (this.state === "waiting") {
      this.open();
    }
  }

  /** Send an event to the server; false when not connected (nothing is queued). */
  send(name, ...args) {
    if (this.state !== "open") {
      return false;
    }
    return this.#send(eventFrame(name, ...args));
  }

  #onFrame(frame) {
    if (typeof frame !== "string") {
      return; // binary frames are not part of our protocol
    }
    try {
      this.#handle(decodeEngine(frame));
    } catch (err) {
      if (!(err instanceof PacketError)) {
        throw err;
      }
      this.hooks.protocolError?.(err);
    }
  }

  #handle(packet) {
    switch (packet.type) {
      case ENGINE.OPEN:
        this.handshake = packet.data;
        this.#pingDeadline = packet.data.pingInterval + packet.data.pingTimeout;
        this.state = "joining";
        this.#send(connectFrame("/", this.auth()));
        this.#arm(this.#pingDeadline, "no ping from the server");
        break;
      case ENGINE.PING:
        this.#send(encodeEngine(ENGINE.PONG));
        this.#arm(this.#pingDeadline, "no ping from the server");
        break;
      case ENGINE.CLOSE:
        this.#lost("the server closed the connection");
        break;
      case ENGINE.MESSAGE:
        this.#handleSocket(decodeSocket(packet.data));
        break;
      default:
        break; // PONG, UPGRADE and NOOP need nothing from us
    }
  }

  #handleSocket(packet) {
    if (packet.nsp !== "/") {
      return;
    }
    switch (packet.type) {
      case SOCKET.CONNECT: {
        this.state = "open";
        this.#attempt = 0;
        const reconnect = this.#everConnected;
        this.#everConnected = true;
        this.hooks.connect?.({ sid: packet.data?.sid ?? null, reconnect });
        break;
      }
      case SOCKET.EVENT:
        this.hooks.event?.(packet.data[0], packet.data.slice(1));
        break;
      case SOCKET.CONNECT_ERROR:
        this.hooks.connectError?.(packet.data ?? null);
        this.#lost(`connection refused: ${packet.data?.message ?? "no reason given"}`);
        break;
      case SOCKET.DISCONNECT:
        this.#lost("the server left the namespace");
        break;
      default:
        break; // acks: we never ask for one
    }
  }

  #lost(reason) {
    if (this.state === "closed" || this.state === "waiting") {
      return;
    }
    const wasOpen = this.state === "open";
    this.#clearTimer();
    this.#drop(4000);
    if (wasOpen) {
      this.hooks.disconnect?.(reason, true);
    }
    const delay = backoffDelay(this.#attempt, this.backoff, this.random);
    this.#attempt += 1;
    this.state = "waiting";
    this.hooks.retry?.({ attempt: this.#attempt, delay, reason });
    this.#timer = this.timers.setTimeout(() => {
      this.#timer = null;
      this.open();
    }, delay);
  }

  /** Forget the socket: a dead peer may take minutes to finish a close handshake. */
  #drop(code) {
    const ws = this.#ws;
    this.#ws = null;
    if (!ws) {
      return;
    }
    ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code);
    } catch {
      // already closing or never opened; nothing more to do
    }
  }

  #send(frame) {
    try {
      this.#ws.send(frame);
      return true;
    } catch {
      return false;
    }
  }

  #arm(ms, reason) {
    this.#clearTimer();
    this.#timer = this.timers.setTimeout(() => {
      this.#timer = null;
      this.#lost(reason);
    }, ms);
  }

  #clearTimer() {
    if (this.#timer !== null) {
      this.timers.clearTimeout(this.#timer);
      this.#timer = null;
    }
  }
}
