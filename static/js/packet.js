// Engine.IO v4 and Socket.IO v5 packets: pure encode/decode, no I/O.
//
// Over a WebSocket every text frame is one Engine.IO packet: a single digit
// type followed by its data. Engine.IO "message" packets carry one Socket.IO
// packet: type digit, optional "/namespace,", optional ack id, optional JSON.

export const ENGINE = Object.freeze({
  OPEN: 0,
  CLOSE: 1,
  PING: 2,
  PONG: 3,
  MESSAGE: 4,
  UPGRADE: 5,
  NOOP: 6,
});

export const SOCKET = Object.freeze({
  CONNECT: 0,
  DISCONNECT: 1,
  EVENT: 2,
  ACK: 3,
  CONNECT_ERROR: 4,
  BINARY_EVENT: 5,
  BINARY_ACK: 6,
});

export const ENGINE_PROTOCOL = 4;

export class PacketError extends Error {
  constructor(message) {
    super(message);
    this.name = "PacketError";
  }
}

const ENGINE_TYPES = new Set(Object.values(ENGINE));
const SOCKET_TYPES = new Set(Object.values(SOCKET));

/** The WebSocket URL of the Socket.IO endpoint for a page at `location`. */
export function socketUrl(location, path = "/socket.io/") {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}?EIO=${ENGINE_PROTOCOL}&transport=websocket`;
}

/** Decode one Engine.IO text frame into {type, data}. */
export function decodeEngine(frame) {
  if (typeof frame !== "string" || frame.length === 0) {
    throw new PacketError("empty or non-text Engine.IO frame");
  }
  const type = frame.charCodeAt(0) - 48;
  if (!ENGINE_TYPES.has(type)) {
    throw new PacketError(`unknown Engine.IO packet type ${JSON.stringify(frame[0])}`);
  }
  const data = frame.slice(1);
  if (type === ENGINE.OPEN) {
    return { type, data: decodeHandshake(data) };
  }
  return { type, data };
}

export function encodeEngine(type, data = "") {
  if (!ENGINE_TYPES.has(type)) {
    throw new PacketError(`unknown Engine.IO packet type ${type}`);
  }
  return String(type) + data;
}

function decodeHandshake(text) {
  const open = parseJson(text, "handshake");
  const ok =
    open !== null &&
    typeof open === "object" &&
    typeof open.sid === "string" &&
    Number.isFinite(open.pingInterval) &&
    Number.isFinite(open.pingTimeout);
  if (!ok) {
    throw new PacketError("handshake lacks sid, pingInterval or pingTimeout");
  }
  return {
    sid: open.sid,
    pingInterval: open.pingInterval,
    pingTimeout: open.pingTimeout,
    maxPayload: Number.isFinite(open.maxPayload) ? open.maxPayload : null,
    upgrades: Array.isArray(open.upgrades) ? open.upgrades : [],
  };
}

/**
 * Decode a Socket.IO packet (the data of an Engine.IO MESSAGE) into
 * {type, nsp, id, data}. `id` is null without an ack id, `data` is
 * undefined without a payload.
 */
export function decodeSocket(text) {
  if (typeof text !== "string" || text.length === 0) {
    throw new PacketError("empty Socket.IO packet");
  }
  const type = text.charCodeAt(0) - 48;
  if (!SOCKET_TYPES.has(type)) {
    throw new PacketError(`unknown Socket.IO packet type ${JSON.stringify(text[0])}`);
  }
  if (type === SOCKET.BINARY_EVENT || type === SOCKET.BINARY_ACK) {
    throw new PacketError("binary Socket.IO packets are not supported");
  }
  let i = 1;
  let nsp = "/";
  if (text[i] === "/") {
    const comma = text.indexOf(",", i);
    const end = comma === -1 ? text.length : comma;
    nsp = text.slice(i, end);
    i = comma === -1 ? text.length : comma + 1;
  }
  let id = null;
  const digits = /^\d+/.exec(text.slice(i));
  if (digits) {
    id = Number(digits[0]);
    i += digits[0].length;
  }
  const rest = text.slice(i);
  const data = rest.length ? parseJson(rest, "Socket.IO payload") : undefined;
  if (type === SOCKET.EVENT && !(Array.isArray(data) && typeof data[0] === "string")) {
    throw new PacketError("event payload must be an array starting with the event name");
  }
  return { type, nsp, id, data };
}

export function encodeSocket({ type, nsp = "/", id = null, data }) {
  if (!SOCKET_TYPES.has(type)) {
    throw new PacketError(`unknown Socket.IO packet type ${type}`);
  }
  let text = String(type);
  if (nsp !== "/") {
    text += nsp + ",";
  }
  if (id !== null) {
    text += String(id);
  }
  if (data !== undefined) {
    text += JSON.stringify(data);
  }
  return text;
}

/** The Engine.IO frame that carries one Socket.IO event. */
export function eventFrame(name, ...args) {
  return encodeEngine(ENGINE.MESSAGE, encodeSocket({ type: SOCKET.EVENT, data: [name, ...args] }));
}

/** The Engine.IO frame that asks to join a namespace. */
export function connectFrame(nsp = "/", auth = undefined) {
  return encodeEngine(ENGINE.MESSAGE, encodeSocket({ type: SOCKET.CONNECT, nsp, data: auth }));
}

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch {
    throw new PacketError(`${what} is not valid JSON`);
  }
}
