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
