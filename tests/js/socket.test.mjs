// The event-emitter API the page uses.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Socket } from "../../static/js/socket.js";

class FakeSocket {
  static last = null;

  constructor() {
    this.sent = [];
    FakeSocket.last = this;
  }

  send(frame) {
    this.sent.push(frame);
  }

  close() {}

  receive(frame) {
    this.onmessage({ data: frame });
  }
}

const timers = { setTimeout: () => 0, clearTimeout: () => {} };

function joined() {
  const socket = new Socket("ws://x", { WebSocket: FakeSocket, timers, random: () => 0 });
  const log = [];
  socket.on("connect", (info) => log.push(["connect", info.reconnect]));
  socket.open();
  FakeSocket.last.receive('0{"sid":"a","pingInterval":100,"pingTimeout":100}');
  FakeSocket.last.receive("40");
  return { socket, log };
}

test("server events reach their listeners; off() removes one", () => {
  const { socket, log } = joined();
  const listener = (reading) => log.push(["reading", reading.seq]);
  socket.on("random_number", listener);
  FakeSocket.last.receive('42["random_number",{"seq":1,"value":2,"ts":3}]');
  socket.off("random_number", listener);
  FakeSocket.last.receive('42["random_number",{"seq":2,"value":2,"ts":3}]');
  assert.deepEqual(log, [["connect", false], ["reading", 1]]);
  assert.equal(socket.connected, true);
});

test("the server cannot fake lifecycle events", () => {
  const { log } = joined();
  FakeSocket.last.receive('42["connect",{"reconnect":true}]');
  assert.deepEqual(log, [["connect", false]]);
});

test("emit sends an event frame while connected", () => {
  const { socket } = joined();
  assert.equal(socket.emit("resume", { after: 9 }), true);
  assert.equal(FakeSocket.last.sent.at(-1), '42["resume",{"after":9}]');
});

test("disconnect and reconnect_attempt are reported", () => {
  const { socket } = joined();
  const log = [];
  socket.on("disconnect", (reason) => log.push(["disconnect", reason]));
  socket.on("reconnect_attempt", (info) => log.push(["retry", info.attempt, info.delay]));
  FakeSocket.last.onclose({ code: 1006 });
  assert.deepEqual(log, [["disconnect", "connection closed (code 1006)"], ["retry", 1, 500]]);
  assert.equal(socket.connected, false);
  assert.equal(socket.emit("resume", { after: 1 }), false);
});
