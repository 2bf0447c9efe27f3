// Bench-only peer: Node's socket.io server with the same contract as random_stream.py's
// live stream: `random_number` {seq, value, ts} to every client each interval, and
// GET /healthz so bench/run.py can tell when it is up. Listens on 127.0.0.1 only.
//   node bench/peers/node_server.mjs --port 5000 --interval 1
import { createServer } from "node:http";
import { Server } from "socket.io";

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const port = Number(option("port", "5000"));
const interval = Number(option("interval", "1")) * 1000;

const http = createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end('{"status": "ok"}');
    return;
  }
  res.writeHead(404);
  res.end();
});
// WebSocket only, no per-message compression: the same wire as the other servers get.
const io = new Server(http, { transports: ["websocket"], perMessageDeflate: false });

let seq = 0;
const start = Date.now();
// Scheduled against the start time, not sleep-then-emit, so the period does not drift.
function tick() {
  seq += 1;
  io.emit("random_number", { seq, value: Math.floor(Math.random() * 101), ts: Date.now() / 1000 });
  setTimeout(tick, Math.max(0, start + (seq + 1) * interval - Date.now()));
}
setTimeout(tick, interval);

http.listen(port, "127.0.0.1", () => console.error(`node socket.io on 127.0.0.1:${port}`));
const stop = () => {
  io.close();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
