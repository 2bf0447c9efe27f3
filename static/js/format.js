// Text for people: ages, counts, statistics. Pure.

/** "4 s ago", "3 min 20 s ago", "2 h 5 min ago". */
export function formatAgo(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s} s ago`;
  }
  if (s < 3600) {
    const rest = s % 60;
    return `${Math.floor(s / 60)} min${rest ? ` ${rest} s` : ""} ago`;
  }
  if (s < 86400) {
    const rest = Math.floor((s % 3600) / 60);
    return `${Math.floor(s / 3600)} h${rest ? ` ${rest} min` : ""} ago`;
  }
  return `${Math.floor(s / 86400)} d ago`;
}

/** Whole seconds until a moment, for "next try in 3 s". */
export function formatIn(seconds) {
  return `${Math.max(0, Math.ceil(seconds))} s`;
}

export function formatCount(n) {
  return n === null || n === undefined ? "–" : n.toLocaleString("en");
}

export function formatFixed(x, digits) {
  return x === null || x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(digits);
}

export function formatPValue(p) {
  if (p === null || p === undefined || !Number.isFinite(p)) {
    return "–";
  }
  return p < 0.001 ? "< 0.001" : p.toFixed(3);
}

/** An interval in seconds as people write it: "1 s", "0.2 s", "2 min". */
export function formatInterval(seconds) {
  if (seconds >= 60 && seconds % 60 === 0) {
    return `${seconds / 60} min`;
  }
  return `${Number(seconds.toPrecision(6))} s`;
}

/** A reading's value: integers as they are, other numbers to six significant digits. */
export function formatValue(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) {
    return "–";
  }
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6)));
}

/** A stretch of time as people say it: "30 s", "5 min", "1 h 30 min", "24 h", "7 days". */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) {
    return `${s} s`;
  }
  if (s < 3600) {
    const rest = s % 60;
    return `${Math.floor(s / 60)} min${rest ? ` ${rest} s` : ""}`;
  }
  if (s < 2 * 86400) {
    const rest = Math.floor((s % 3600) / 60);
    return `${Math.floor(s / 3600)} h${rest ? ` ${rest} min` : ""}`;
  }
  const days = Math.floor(s / 86400);
  const rest = Math.floor((s % 86400) / 3600);
  return `${days} days${rest ? ` ${rest} h` : ""}`;
}

const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const two = (n) => String(n).padStart(2, "0");

/** "Mon 3 Jun", in the viewer's time zone. */
export function formatDate(ts) {
  const d = new Date(ts * 1000);
  return `${WEEKDAYS[d.getDay()]} ${d.getDate()} ${MONTHS[d.getMonth()]}`;
}

/**
 * A moment on the viewer's clock: "22:05", with seconds "22:05:13" (and tenths when the
 * seconds are not whole and `tenths`), with the date first when `date`.
 */
export function formatClock(ts, { date = false, seconds = false, tenths = false } = {}) {
  const d = new Date(ts * 1000);
  let text = `${two(d.getHours())}:${two(d.getMinutes())}`;
  if (seconds) {
    text += `:${two(d.getSeconds())}`;
    if (tenths) {
      text += `.${Math.floor(d.getMilliseconds() / 100)}`;
    }
  }
  return date ? `${formatDate(ts)} ${text}` : text;
}

/** Whether two moments fall on the same day of the viewer's calendar. */
export function sameDay(a, b) {
  return new Date(a * 1000).toDateString() === new Date(b * 1000).toDateString();
}
