// Engine.IO v4 / Socket.IO v5 packet encoding and decoding.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  ENGINE, SOCKET, PacketError, connectFrame, decodeEngine, decodeSocket, encodeEngine,
  encodeSocket, eventFrame, socketUrl,
} from "../../static/js/packet.js";

describe("socketUrl", () => {
  test("uses ws: for http pages and keeps host and port", () => {
    assert.equal(socketUrl({ protocol: "http:", host: "127.0.0.1:5123" }),
      "ws://127.0.0.1:5123/socket.io/?EIO=4&transport=websocket");
  });

  test("uses wss: for https pages", () => {
    assert.equal(socketUrl({ protocol: "https:", host: "example.test" }),
      "wss://example.test/socket.io/?EIO=4&transport=websocket");
  });
});

describe("decodeEngine", () => {
  test("open packet carries the handshake", () => {
    const frame = '0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}';
    assert.deepEqual(decodeEngine(frame), {
      type: ENGINE.OPEN,
      data: { sid: "abc", pingInterval: 25000, pingTimeout: 20000, maxPayload: 1000000, upgrades: [] },
    });
  });

  test("ping, pong, close and noop have no data", () => {
    assert.deepEqual(decodeEngine("2"), { type: ENGINE.PING, data: "" });
    assert.deepEqual(decodeEngine("3"), { type: ENGINE.PONG, data: "" });
    assert.deepEqual(decodeEngine("1"), { type: ENGINE.CLOSE, data: "" });
    assert.deepEqual(decodeEngine("6"), { type: ENGINE.NOOP, data: "" });
  });

  test("message packet keeps its payload as text", () => {
    assert.deepEqual(decodeEngine('42["a",1]'), { type: ENGINE.MESSAGE, data: '2["a",1]' });
  });

  for (const bad of ["", "9", "x", '0{"sid":1}', "0not json", '0{"sid":"a","pingInterval":1}', null, 42]) {
    test(`rejects ${JSON.stringify(bad)}`, () => {
      assert.throws(() => decodeEngine(bad), PacketError);
    });
  }
});

describe("encodeEngine", () => {
  test("pong is a single digit", () => {
    assert.equal(encodeEngine(ENGINE.PONG), "3");
  });

  test("rejects unknown types", () => {
    assert.throws(() => encodeEngine(7), PacketError);
  });
});

describe("decodeSocket", () => {
  test("connect reply with sid", () => {
    assert.deepEqual(decodeSocket('0{"sid":"xyz"}'), { type: SOCKET.CONNECT, nsp: "/", id: null, data: { sid: "xyz" } });
  });

  test("event with object payload", () => {
    const packet = decodeSocket('2["random_number",{"seq":7,"value":42,"ts":1.5}]');
    assert.equal(packet.type, SOCKET.EVENT);
    assert.equal(packet.nsp, "/");
    assert.deepEqual(packet.data, ["random_number", { seq: 7, value: 42, ts: 1.5 }]);
  });

  test("event in another namespace with an ack id", () => {
    assert.deepEqual(decodeSocket('2/admin,13["x"]'), { type: SOCKET.EVENT, nsp: "/admin", id: 13, data: ["x"] });
  });

  test("ack id without namespace", () => {
    assert.deepEqual(decodeSocket("312[1]"), { type: SOCKET.ACK, nsp: "/", id: 12, data: [1] });
  });

  test("namespace without payload", () => {
    assert.deepEqual(decodeSocket("1/admin,"), { type: SOCKET.DISCONNECT, nsp: "/admin", id: null, data: undefined });
  });

  test("connect_error carries the reason", () => {
    assert.deepEqual(decodeSocket('4{"message":"Not allowed"}').data, { message: "Not allowed" });
  });

  test("disconnect has no data", () => {
    assert.deepEqual(decodeSocket("1"), { type: SOCKET.DISCONNECT, nsp: "/", id: null, data: undefined });
  });

  for (const bad of ["", "7", "2{}", "2[1]", "2[not json", '51-["a",{"_placeholder":true,"num":0}]']) {
    test(`rejects ${JSON.stringify(bad)}`, () => {
      assert.throws(() => decodeSocket(bad), PacketError);
    });
  }
});

describe("encodeSocket and frames", () => {
  test("round trip of an event", () => {
    const packet = { type: SOCKET.EVENT, nsp: "/", id: null, data: ["resume", { after: 41 }] };
    assert.deepEqual(decodeSocket(encodeSocket(packet)), packet);
  });

  test("namespace and id are written before the payload", () => {
    assert.equal(encodeSocket({ type: SOCKET.EVENT, nsp: "/x", id: 5, data: ["a"] }), '2/x,5["a"]');
  });

  test("eventFrame is an Engine.IO message with a Socket.IO event", () => {
    assert.equal(eventFrame("resume", { after: 41 }), '42["resume",{"after":41}]');
  });

  test("connectFrame joins the default namespace", () => {
    assert.equal(connectFrame(), "40");
  });
});
