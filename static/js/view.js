// What stretch of time the chart shows, and how it moves. Pure.
//
// A view is live, `{live: true, span}` (the last `span` seconds, or with span null every
// reading kept), or fixed, `{live: false, from, to}` (epoch seconds). The ranges on offer
// are live views; zooming and panning make fixed ones; a pan that reaches now is live
// again. A view goes into the URL's query (`?range=7d`, `?from=…&to=…`) and comes back
// out of it, so a link opens the same view.

export const PRESETS = [
  { key: "1m", span: 60, label: "1 min" },
  { key: "5m", span: 300, label: "5 min" },
  { key: "15m", span: 900, label: "15 min" },
  { key: "1h", span: 3600, label: "1 h" },
  { key: "6h", span: 21600, label: "6 h" },
  { key: "24h", span: 86400, label: "24 h" },
  { key: "7d", span: 604800, label: "7 d" },
  { key: "all", span: null, label: "All" },
];

// Up to this span the chart draws every reading (the page holds 15 minutes of them);
// longer views draw the server's buckets.
export const READINGS_SPAN = 900;
export const MIN_SPAN = 10; // seconds: the narrowest zoom
export const MAX_SPAN = 20 * 365 * 86400; // a view wider than any stream's tiers
export const ZOOM = 2; // + halves the span, - doubles it

export const liveView = (span) => ({ live: true, span });

/** A fixed view, in whole seconds (rounded), at least MIN_SPAN wide around its middle. */
export function fixedView(from, to) {
  const [a, b] = from <= to ? [Math.round(from), Math.round(to)] : [Math.round(to), Math.round(from)];
  if (b - a < MIN_SPAN) {
    const start = Math.round((a + b) / 2 - MIN_SPAN / 2);
    return { live: false, from: start, to: start + MIN_SPAN };
  }
  return { live: false, from: a, to: b };
}

export function sameView(a, b) {
  return a.live === b.live && (a.live ? a.span === b.span : a.from === b.from && a.to === b.to);
}

/** "7d", "24h", "90m", "45s"; "all" for every reading. */
export function spanKey(span) {
  if (span === null) {
    return "all";
  }
  if (span % 86400 === 0 && span >= 2 * 86400) {
    return `${span / 86400}d`;
  }
  if (span % 3600 === 0) {
    return `${span / 3600}h`;
  }
  return span % 60 === 0 ? `${span / 60}m` : `${span}s`;
}

const UNITS = { s: 1, m: 60, h: 3600, d: 86400 };

/** The span a `range=` value names ("all" is null), or undefined when it names none. */
export function parseSpan(text) {
  if (text === "all") {
    return null;
  }
  const match = /^(\d{1,9})([smhd])$/.exec(text ?? "");
  if (!match) {
    return undefined;
  }
  const span = Number(match[1]) * UNITS[match[2]];
  return span >= MIN_SPAN && span <= MAX_SPAN ? span : undefined;
}

/** Epoch seconds from "1717452000" or an ISO 8601 time; NaN otherwise. */
function parseTime(text) {
  if (/^\d{1,12}(\.\d+)?$/.test(text)) {
    return Number(text);
  }
  return /^\d{4}-\d\d-\d\d/.test(text) ? Date.parse(text) / 1000 : NaN;
}

/** "2024-06-03T22:00:00Z": whole seconds, UTC, readable in a link. */
export function isoTime(ts) {
  return new Date(Math.round(ts) * 1000).toISOString().replace(".000Z", "Z");
}

/** The view a URL query names, or `fallback` when it names none (or nonsense). */
export function parseView(search, fallback) {
  const params = new URLSearchParams(search);
  if (params.has("from") || params.has("to")) {
    const from = parseTime(params.get("from") ?? "");
    const to = parseTime(params.get("to") ?? "");
    return Number.isFinite(from) && Number.isFinite(to) && from < to && to - from <= MAX_SPAN
      ? fixedView(from, to) : fallback;
  }
  const span = parseSpan(params.get("range"));
  return span === undefined ? fallback : liveView(span);
}

/** `search` with the view's parameters in place of any earlier ones; the others kept. */
export function withView(search, view) {
  const params = new URLSearchParams(search);
  for (const name of ["range", "from", "to"]) {
    params.delete(name);
  }
  if (view.live) {
    params.set("range", spanKey(view.span));
  } else {
    params.set("from", isoTime(view.from));
    params.set("to", isoTime(view.to));
  }
  return `?${params.toString().replaceAll("%3A", ":")}`;
}

/**
 * The stretch a view covers now: {from, to, live}. `now` is the server's clock (seconds);
 * `start` the first reading's time, for "all" (until known, the last week).
 */
export function boundsOf(view, now, start = null) {
  if (!view.live) {
    return { from: view.from, to: view.to, live: false };
  }
  if (view.span === null) {
    const from = start !== null && start < now ? start : now - PRESETS[6].span;
    return { from, to: now, live: true };
  }
  return { from: now - view.span, to: now, live: true };
}

/** Whether the chart draws each reading (a short view the page holds) or buckets. */
export function drawsReadings(bounds, heldFrom) {
  return bounds.to - bounds.from <= READINGS_SPAN + 1e-6
    && (bounds.live || (heldFrom !== null && bounds.from >= heldFrom));
}

/** A fixed view never reaching past `now`: shifted back, keeping its span. */
function notPast(from, to, now) {
  return to > now ? fixedView(from - (to - now), now) : fixedView(from, to);
}

/**
 * Zoom by `factor` (< 1 in, > 1 out) around `at`, which stays where it is on screen.
 * The result is fixed, except zooming out of a live view: the next wider range.
 */
export function zoom(view, bounds, factor, at, now) {
  const span = bounds.to - bounds.from;
  if (view.live && factor > 1) {
    if (view.span === null) {
      return view;
    }
    const wider = PRESETS.find((p) => p.span === null || p.span > view.span);
    return liveView(wider.span);
  }
  const wanted = Math.min(MAX_SPAN, Math.max(MIN_SPAN, span * factor));
  const share = span > 0 ? (at - bounds.from) / span : 0.5;
  const from = at - share * wanted;
  return notPast(from, from + wanted, now);
}

/** Pan by `fraction` of the span (negative: back in time); reaching now, live again. */
export function pan(view, bounds, fraction, now) {
  const span = bounds.to - bounds.from;
  const shift = fraction * span;
  if (bounds.to + shift >= now) {
    return view.live ? view : liveView(Math.round(span));
  }
  return fixedView(bounds.from + shift, bounds.to + shift);
}

/** The stretch between two moments (a drag on the chart), as a fixed view. */
export function select(a, b, now) {
  return notPast(Math.min(a, b), Math.max(a, b), now);
}
