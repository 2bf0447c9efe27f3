// The small API the page uses: `connect(url)` gives a socket with
// on(name, fn) / off(name, fn) for events and emit(name, data) to send.
// Lifecycle events: "connect" ({sid, reconnect}), "disconnect" (reason),
// "reconnect_attempt" ({attempt, delay, reason}), "connect_error" (data).

import { Connection } from "./connection.js";

const LIFECYCLE = new Set(["connect", "disconnect", "reconnect_attempt", "connect_error"]);

export class Socket {
  #listeners = new Map();
  #connection;

  constructor(url, options = {}) {
    this.#connection = new Connection(url, {
      ...options,
      hooks: {
        connect: (info) => this.#dispatch("connect", [info]),
        disconnect: (reason) => this.#dispatch("disconnect", [reason]),
        retry: (info) => this.#dispatch("reconnect_attempt", [info]),
        connectError: (data) => this.#dispatch("connect_error", [data]),
        event: (name, args) => {
          if (!LIFECYCLE.has(name)) {
            this.#dispatch(name, args);
          }
        },
      },
    });
  }

  get connected() {
    return this.#connection.state === "open";
  }

  on(name, listener) {
    if (!this.#listeners.has(name)) {
      this.#listeners.set(name, new Set());
    }
    this.#listeners.get(name).add(listener);
    return this;
  }

  off(name, listener) {
    this.#listeners.get(name)?.delete(listener);
    return this;
  }

  /** Send an event to the server. Returns false (and drops it) while disconnected. */
  emit(name, ...args) {
    return this.#connection.send(name, ...args);
  }

  open() {
    this.#connection.open();
    return this;
  }

  retryNow() {
    this.#connection.retryNow();
  }

  close() {
    this.#connection.close();
  }

  #dispatch(name, args) {
    for (const listener of [...(this.#listeners.get(name) ?? [])]) {
      try {
        listener(...args);
      } catch (err) {
        // one broken listener must not stop the others or the connection
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

export function connect(url, options) {
  return new Socket(url, options).open();
}
