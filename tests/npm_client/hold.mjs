// Stay connected to URL for SECONDS with the official client; print one JSON line:
// how many readings arrived, the `viewers` counts, how many disconnects, and the reasons.
import { io } from "socket.io-client";

const [url, seconds] = [process.argv[2], Number(process.argv[3] || 15)];
const socket = io(url, { transports: ["websocket"], reconnection: false });
const result = { connected: false, readings: 0, viewers: [], disconnects: [], pings: 0 };
socket.on("connect", () => { result.connected = true; });
socket.on("random_number", () => { result.readings += 1; });
socket.on("viewers", (data) => { result.viewers.push(data.count); });
socket.on("disconnect", (reason) => { result.disconnects.push(reason); });
socket.on("connect_error", (err) => { result.disconnects.push(`connect_error: ${err.message}`); });
socket.io.on("ping", () => { result.pings += 1; });
setTimeout(() => {
  console.log(JSON.stringify(result));
  socket.close();
  process.exit(0);
}, seconds * 1000);
