// Connect to a private dashboard at URL with the official client, the token (if any) in the
// CONNECT's auth as a script on another origin sends it; after SECONDS print one JSON line:
// whether it connected, the `history` and readings it got, and the connect_error messages.
import { io } from "socket.io-client";

const [url, seconds, token] = [process.argv[2], Number(process.argv[3] || 3), process.argv[4]];
const socket = io(url, {
  transports: ["websocket"], reconnection: false, auth: token ? { token } : {},
});
const result = { connected: false, histories: 0, readings: 0, errors: [] };
socket.on("connect", () => { result.connected = true; });
socket.on("history", () => { result.histories += 1; });
socket.on("random_number", () => { result.readings += 1; });
socket.on("connect_error", (err) => { result.errors.push(err.message); });
setTimeout(() => {
  console.log(JSON.stringify(result));
  socket.close();
  process.exit(0);
}, seconds * 1000);
