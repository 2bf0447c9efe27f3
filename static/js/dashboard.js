// The dashboard: wires the socket, the sync (sync.js: what the page holds), the long ranges'
// buckets (series.js), the view (view.js, in the URL) and the connection status (status.js)
// to the page, and draws at most once per animation frame.
// Knows the page's elements and events, not the wire format nor the sync rules.

import { toSignIn, unauthorized } from "./access.js";
import { bucketsIn, extentOf, pointsFor, withReadings } from "./buckets.js";
import { drawBucketChart, drawHistogram, drawLineChart, plotArea } from "./chart.js";
import { ChartInput } from "./chartinput.js";
import { formatClock, formatCount, formatFixed, formatInterval, formatPValue, formatValue } from "./format.js";
import { socketUrl } from "./packet.js";
import { bucketReadout, readingReadout, seriesCaption, viewLabel } from "./readout.js";
import { SeriesLoader, requestFor } from "./series.js";
import { connect } from "./socket.js";
import { binned } from "./stats.js";
import {
  ConnectionStatus, chartCaption, freshness, missingIn, pauseNote, statsNote, verdict,
} from "./status.js";
import { Sync, capacityFor } from "./sync.js";
import {
  PRESETS, READINGS_SPAN, boundsOf, drawsReadings, liveView, pan, parseView, sameView, select, spanKey,
  withView, zoom,
} from "./view.js";
import { ViewerCount } from "./viewers.js";

const ANNOUNCE_EVERY_MS = 60000; // the screen-reader readout speaks at most this often
const NOTICE_MS = 15000;
const WINDOW_KEY = "random-stream.window";

const $ = (id) => document.getElementById(id);

const el = {
  root: $("dashboard"),
  status: $("connection-status"),
  detail: $("connection-detail"),
  lastUpdate: $("last-update"),
  value: $("current-value"),
  seq: $("current-seq"),
  range: $("stream-range"),
  interval: $("stream-interval"),
  notice: $("notice"),
  chart: $("line-chart"),
  chartSummary: $("chart-summary"),
  readout: $("chart-readout"),
  selection: $("chart-selection"),
  live: $("live-button"),
  histogram: $("histogram"),
  pause: $("pause-button"),
  pauseNote: $("pause-note"),
  stats: $("stats"),
  statsNote: $("stats-note"),
  verdict: $("stat-verdict"),
  announcer: $("announcer"),
};

function readConfig(data) {
  const number = (text, fallback) => (Number.isFinite(Number(text)) && text !== "" ? Number(text) : fallback);
  const lo = number(data.min, 0);
  const hi = number(data.max, 100);
  const interval = number(data.interval, 1);
  const history = number(data.history, 900);
  return {
    lo, hi, interval: interval > 0 ? interval : 1, history,
    statsUrl: data.statsUrl || "/api/stats",
    // "observed": a source without a declared integer range (no uniformity test)
    observed: data.statsKind === "observed",
    historyUrl: data.historyUrl || "/api/history",
    seriesUrl: data.seriesUrl || "/api/series",
    stream: data.stream || null, // the id of the stream the page was rendered from
  };
}

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
  if (response.status === 401) {
    signedOut(); // a private dashboard's session ended
  }
  if (!response.ok) {
    throw new Error(`HTTP ${response.status}`);
  }
  return response.json();
}

const config = readConfig(el.root.dataset);
const now = () => Date.now();

const view = {
  shown: parseView(window.location.search, savedView()), // what the chart shows (view.js)
  lastLive: null, // the live view to go back to from a zoom
  paused: null, // {newest, seq, toTs, stats} while the view is frozen
  lastAnnounced: { at: 0, seq: null },
};

const status = new ConnectionStatus({ now, online: () => navigator.onLine });

const sync = new Sync({
  stream: config.stream, // the rendered reading's: a snapshot of another stream replaces it
  settings: config, // lo, hi and interval change when the server says its stream differs
  capacity: capacityFor(config.history, config.interval, READINGS_SPAN),
  span: READINGS_SPAN,
  send: (name, data) => socket.emit(name, data),
  isConnected: () => socket.connected,
  getStats: () => getJson(config.statsUrl),
  getHistory: (after, limit) => getJson(`${config.historyUrl}?after=${after}&limit=${limit}`),
  now,
  timers: { setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (id) => clearTimeout(id) },
  hooks: {
    changed: () => scheduleRender(),
    startOver: () => {
      series.clear();
      if (view.paused) {
        togglePause();
      }
    },
    range: (lo, hi) => { el.range.textContent = `${lo}–${hi}`; },
    interval: (seconds) => { el.interval.textContent = formatInterval(seconds); },
  },
});

// The buckets of the long views, from GET /api/series.
const series = new SeriesLoader({
  getSeries: (from, to, points) => {
    const query = [from === null ? null : `from=${from}`, to === null ? null : `to=${to}`, `points=${points}`];
    return getJson(`${config.seriesUrl}?${query.filter(Boolean).join("&")}`);
  },
  now,
  timers: { setTimeout: (fn, ms) => setTimeout(fn, ms) },
  changed: () => scheduleRender(),
});

// The server renders its newest reading into the page; hold it until the snapshot comes.
if (el.value.dataset.seq) {
  const { seq, value, ts } = el.value.dataset;
  sync.hold({ seq: Number(seq), value: Number(value), ts: Number(ts) });
}

// ---- socket ---------------------------------------------------------------

const socket = connect(socketUrl(window.location), { auth: () => sync.auth() });

socket.on("connect", () => {
  status.connected();
  sync.connected();
  setConnection(status.name);
});

socket.on("disconnect", () => {
  sync.disconnected();
  status.disconnected();
});

socket.on("reconnect_attempt", ({ delay }) => {
  status.retrying(delay);
  setConnection(status.name);
});

socket.on("connect_error", (data) => {
  if (unauthorized(data)) {
    signedOut();
    return;
  }
  showNotice(`The server refused the connection: ${data?.message ?? "no reason given"}`);
});

/** A private dashboard refused this page's session: to the sign-in form, not a retry loop. */
function signedOut() {
  socket.close();
  let storage = null;
  try {
    storage = window.sessionStorage;
  } catch {
    // storage refused: no reload (toSignIn cannot tell a loop)
  }
  if (!toSignIn({ storage, reload: () => window.location.reload(), now: Date.now() })) {
    showNotice("The server refused this page's session: reload the page to sign in again.");
  }
}

socket.on("error", (data) => {
  showNotice(`The server reported: ${data?.message ?? "an error"}`);
});

socket.on("history", (data) => sync.history(data));
socket.on("random_number", (data) => sync.reading(data));

const viewers = new ViewerCount({ box: $("viewers"), text: $("viewers-text"), label: $("viewers-label") });
socket.on("viewers", (data) => viewers.show(data));
socket.on("disconnect", () => viewers.clear());

// ---- controls ---------------------------------------------------------------

const rangeInputs = [...document.querySelectorAll('input[name="window"]')];

/** The range chosen last time; otherwise 5 minutes, or 1 on a phone-sized screen. */
function savedView() {
  const fallback = liveView(window.matchMedia("(max-width: 40rem)").matches ? 60 : 300);
  try {
    const saved = window.localStorage.getItem(WINDOW_KEY);
    const preset = PRESETS.find((p) => String(p.span ?? "all") === saved);
    return preset ? liveView(preset.span) : fallback;
  } catch {
    return fallback;
  }
}

/**
 * Show another view. `push`: a new entry in the browser's history (back returns to the
 * view before); popstate applies a view without one.
 */
function setView(next, { push = true } = {}) {
  if (sameView(next, view.shown)) {
    return;
  }
  view.shown = next;
  if (push) {
    window.history.pushState(null, "", withView(window.location.search, next));
  }
  showView();
}

/** The controls and the remembered range, as the view is. */
function showView() {
  const shown = view.shown;
  if (shown.live) {
    view.lastLive = shown;
    const preset = PRESETS.find((p) => p.span === shown.span);
    if (preset) {
      try {
        window.localStorage.setItem(WINDOW_KEY, String(preset.span ?? "all"));
      } catch {
        // private mode: the choice lasts for this page only
      }
    }
  }
  for (const radio of rangeInputs) {
    radio.checked = shown.live && radio.dataset.range === spanKey(shown.span);
  }
  el.live.hidden = shown.live;
  scheduleRender();
}

for (const radio of rangeInputs) {
  radio.addEventListener("change", () => {
    if (radio.checked) {
      setView(liveView(radio.value === "all" ? null : Number(radio.value)));
    }
  });
}

el.live.addEventListener("click", () => setView(view.lastLive ?? liveView(300)));

window.addEventListener("popstate", () => {
  setView(parseView(window.location.search, view.lastLive ?? savedView()), { push: false });
});

// The chart's pointer and keys: a readout of what is under them, zoom, pan, back to live.
const input = new ChartInput(el.chart, el.selection, {
  drawn: () => drawn,
  hooks: {
    changed: () => scheduleRender(),
    announce: (item) => { el.announcer.textContent = readoutOf(item); },
    zoom: (factor, at) => setView(zoom(view.shown, drawn.bounds, factor, at, serverNow())),
    pan: (fraction) => setView(pan(view.shown, drawn.bounds, fraction, serverNow())),
    select: (a, b) => setView(select(a, b, serverNow())),
    live: () => setView(view.lastLive ?? liveView(300)),
  },
});

function togglePause() {
  if (view.paused) {
    view.paused = null;
  } else {
    const newest = sync.buffer.last;
    view.paused = {
      newest,
      seq: newest?.seq ?? null,
      toTs: chartEnd(),
      stats: sync.stats.current?.clone() ?? null,
    };
  }
  const paused = view.paused !== null;
  el.pause.setAttribute("aria-pressed", String(paused));
  el.pause.textContent = paused ? "Resume" : "Pause";
  el.root.dataset.paused = String(paused);
  scheduleRender();
}

el.pause.addEventListener("click", togglePause);

// ---- rendering ---------------------------------------------------------------

let frameRequested = false;

function scheduleRender() {
  if (frameRequested || document.hidden) {
    return; // hidden tabs draw nothing; "visibilitychange" catches up
  }
  frameRequested = true;
  requestAnimationFrame(() => {
    frameRequested = false;
    render();
  });
}

/** The server's clock, seconds, as well as the page can tell (from the live readings). */
function serverNow() {
  return Date.now() / 1000 + sync.clockOffset;
}

function chartEnd() {
  const newest = sync.buffer.last;
  return newest ? Math.max(newest.ts, serverNow()) : serverNow();
}

function render() {
  const { paused } = view;
  renderCurrent(paused ? paused.newest : sync.buffer.last);
  renderChart(paused ? paused.toTs : chartEnd(), paused?.seq ?? null);
  renderStats(paused ? paused.stats : sync.stats.current);
  renderPauseNote();
  renderClock();
}

function setText(node, text) {
  if (node.textContent !== text) {
    node.textContent = text;
  }
}

function renderCurrent(newest) {
  setText(el.value, newest ? formatValue(newest.value) : "–");
  el.value.dataset.seq = newest ? String(newest.seq) : "";
  setText(el.seq, newest ? String(newest.seq) : "–");
}

// What the chart drew last: the pointer and keys find their items and times in it.
let drawn = { items: [], at: () => 0, plot: plotArea(1, 1, 0, 1), bounds: { from: 0, to: 1, live: true } };

function renderChart(toTs, untilSeq) {
  const bounds = boundsOf(view.shown, toTs, series.start);
  const data = el.chart.dataset;
  data.view = view.shown.live ? spanKey(view.shown.span) : `${view.shown.from}-${view.shown.to}`;
  if (drawsReadings(bounds, sync.buffer.first?.ts ?? null)) {
    renderReadings(bounds, untilSeq);
  } else {
    renderBuckets(bounds, untilSeq);
  }
  const { buffer } = sync;
  data.firstSeq = String(buffer.first?.seq ?? "");
  data.lastSeq = String(buffer.lastSeq ?? "");
  data.held = String(buffer.size);
  data.missing = String(missingIn(buffer.gaps()));
  renderReadout();
}

/** A short view the page holds: every reading, joined where the seqs are. */
function renderReadings(bounds, untilSeq) {
  const { buffer } = sync;
  const { from: fromTs, to: toTs } = bounds;
  const readings = buffer.window(fromTs, untilSeq).filter((r) => bounds.live || r.ts <= toTs);
  const maxStep = Math.max(3 * config.interval, config.interval + 2); // longer silence: server down
  const [lo, hi] = valueRange(readings.map((r) => r.value), readings.map((r) => r.value));
  const at = (r) => r.ts;
  drawn = { items: readings, at, plot: plotOf(bounds), bounds, step: 0 };
  drawLineChart(el.chart, {
    readings, fromTs, toTs, lo, hi, maxStep, relative: bounds.live, focus: input.focused(),
  });
  const text = chartCaption(readings, buffer.gaps(), viewLabel(view.shown, bounds));
  setCaption(text, { mode: "readings", drawn: readings.length, loading: false });
}

/** A longer view: the server's buckets, the newest ones kept up to date with the readings held. */
function renderBuckets(bounds, untilSeq) {
  const { buffer } = sync;
  const plot = plotOf(bounds);
  const points = pointsFor(plot.width);
  const span = bounds.to - bounds.from;
  const answer = series.show(requestFor(view.shown, bounds, points), {
    serverNow: serverNow(),
    heldFrom: buffer.first?.ts ?? null,
    heldTo: buffer.last?.ts ?? null,
    fallbackFrom: bounds.from,
    fallbackStep: Math.max(config.interval, span / points),
  });
  const held = buffer.window(answer.series.cut ?? answer.series.to, untilSeq);
  const merged = withReadings(answer.series, held, bounds.live ? Infinity : bounds.to);
  const { step } = merged;
  const buckets = bucketsIn(merged.buckets, step, bounds.from, bounds.to);
  const [lo, hi] = valueRange(buckets.map((b) => b.min), buckets.map((b) => b.max));
  drawn = { items: buckets, at: (b) => b.t + step / 2, plot, bounds, step };
  drawBucketChart(el.chart, {
    buckets, step, fromTs: bounds.from, toTs: bounds.to, lo, hi,
    live: bounds.live && !view.paused, focus: input.focused(),
  });
  let text = seriesCaption(viewLabel(view.shown, bounds), buckets, step);
  if (answer.error !== null) {
    text += `; the server's buckets are unavailable right now (${answer.error}), trying again`;
  } else if (!answer.exact) {
    text += "; loading…";
  }
  const data = el.chart.dataset;
  data.step = String(step);
  data.count = String(extentOf(buckets).count);
  const newest = buckets[buckets.length - 1];
  data.newestT = newest ? String(newest.t) : "";
  data.newestCount = newest ? String(newest.count) : "";
  setCaption(text, { mode: "buckets", drawn: buckets.length, loading: !answer.exact });
}

function plotOf(bounds) {
  return plotArea(el.chart.clientWidth, el.chart.clientHeight, bounds.from, bounds.to);
}

/** The y axis: the stream's declared range, or without one the values' own, with a margin. */
function valueRange(lows, highs) {
  if (!config.observed) {
    return [config.lo, config.hi];
  }
  let lo = lows.length ? Math.min(...lows) : 0;
  let hi = highs.length ? Math.max(...highs) : 1;
  const margin = hi > lo ? (hi - lo) * 0.05 : Math.max(1, Math.abs(lo) * 0.05);
  [lo, hi] = [lo - margin, hi + margin];
  return [lo, hi];
}

function setCaption(text, { mode, drawn: count, loading }) {
  setText(el.chartSummary, `${text}.`);
  el.chart.setAttribute("aria-label", `Line chart. ${text}.`);
  const data = el.chart.dataset;
  data.mode = mode;
  data.drawn = String(count);
  data.loading = String(loading);
}

function readoutOf(item) {
  return "seq" in item ? readingReadout(item) : bucketReadout(item, drawn.step);
}

/** The line under the chart: the bucket or reading under the pointer or the keyboard's mark. */
function renderReadout() {
  const item = input.focused();
  const data = el.readout.dataset;
  for (const key of Object.keys(data)) {
    delete data[key];
  }
  if (item === null) {
    data.kind = "";
    const at = input.focusTs;
    setText(el.readout, at === null ? "\u00a0" : `${formatClock(at, { date: true, seconds: true })}: no readings here`);
    return;
  }
  setText(el.readout, readoutOf(item));
  if ("seq" in item) {
    Object.assign(data, { kind: "reading", seq: String(item.seq), value: String(item.value), ts: String(item.ts) });
  } else {
    Object.assign(data, {
      kind: "bucket", t: String(item.t), count: String(item.count), min: String(item.min), max: String(item.max),
      mean: String(item.mean),
    });
  }
}

const STAT_FIELDS = [
  ["stat-count", "count", (v) => formatCount(v)],
  ["stat-min", "min", (v) => (Number.isInteger(v) ? formatCount(v) : formatValue(v))],
  ["stat-max", "max", (v) => (Number.isInteger(v) ? formatCount(v) : formatValue(v))],
  ["stat-mean", "mean", (v) => formatFixed(v, 2)],
  ["stat-stddev", "stddev", (v) => formatFixed(v, 2)],
  ["stat-chi-square", "chiSquare", (v) => formatFixed(v, 1)],
  ["stat-p-value", "pValue", (v) => formatPValue(v)],
];

let drawnHistogram = null;

function renderStats(stats) {
  const summary = stats ? stats.summary() : null;
  for (const [id, key, format] of STAT_FIELDS) {
    const node = $(id);
    const value = summary ? summary[key] : null;
    setText(node, format(value));
    node.dataset.value = value === null || value === undefined ? "" : String(value);
  }
  el.stats.dataset.throughSeq = String(stats?.throughSeq ?? "");
  setText(el.verdict, verdict(summary?.pValue ?? null, config.observed));
  el.verdict.dataset.uniformity = config.observed ? "none" : "chi-square";
  const recent = Math.min(sync.buffer.size, config.history);
  setText(el.statsNote, statsNote(stats, { observed: config.observed, error: sync.stats.error, recent }));
  const size = `${el.histogram.clientWidth}x${el.histogram.clientHeight}`;
  if (config.observed) {
    const latest = sync.buffer.latest(config.history);
    const { edges, counts } = binned(latest.map((r) => r.value));
    const key = `observed:${latest[latest.length - 1]?.seq}:${latest.length}:${size}:${themeVersion}`;
    if (key !== drawnHistogram) {
      drawnHistogram = key;
      drawHistogram(el.histogram, { histogram: counts, lo: edges[0] ?? 0, edges });
    }
    return;
  }
  const histogram = stats ? stats.histogram : new Array(config.hi - config.lo + 1).fill(0);
  const lo = stats ? stats.lo : config.lo;
  const key = `${lo}:${stats?.count ?? 0}:${stats?.throughSeq}:${size}:${themeVersion}`;
  if (key !== drawnHistogram) {
    drawnHistogram = key;
    drawHistogram(el.histogram, { histogram, lo });
  }
}

function renderPauseNote() {
  const { paused } = view;
  el.pauseNote.hidden = paused === null;
  if (paused) {
    setText(el.pauseNote, pauseNote(paused.seq, sync.buffer.lastSeq, sync.buffer.size));
  }
}

/** Texts that age with the clock: how long ago, when the next try is. */
function renderClock() {
  const at = now();
  const fresh = freshness(sync.lastUpdateMs, at, config.interval, status.name === "live");
  setText(el.lastUpdate, fresh.text);
  el.lastUpdate.dataset.stale = String(fresh.stale);
  if (status.name !== "live") {
    setConnection(status.refresh());
  }
  setText(el.detail, status.detail());
  announce(at);
}

function setConnection(name) {
  el.status.dataset.state = name;
  setText(el.status, name);
  document.documentElement.dataset.connection = name;
}

/** A polite spoken readout of the value, once a minute at most. */
function announce(at) {
  const newest = sync.buffer.last;
  if (!newest || view.paused || status.name !== "live") {
    return;
  }
  if (at - view.lastAnnounced.at < ANNOUNCE_EVERY_MS || newest.seq === view.lastAnnounced.seq) {
    return;
  }
  view.lastAnnounced = { at, seq: newest.seq };
  el.announcer.textContent = `Latest value ${newest.value}.`;
}

let noticeTimer = null;

function showNotice(text) {
  el.notice.textContent = text;
  el.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    el.notice.hidden = true;
  }, NOTICE_MS);
}

// ---- the page around us --------------------------------------------------------

let themeVersion = 0;

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) {
    socket.retryNow();
    scheduleRender();
  }
});

window.addEventListener("online", () => socket.retryNow());
window.addEventListener("offline", () => scheduleRender());

window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  themeVersion += 1;
  scheduleRender();
});

new ResizeObserver(() => scheduleRender()).observe(el.chart);
new ResizeObserver(() => scheduleRender()).observe(el.histogram);

// The clock texts and the chart's "now" edge move even when no reading comes.
setInterval(scheduleRender, 1000);

el.interval.textContent = formatInterval(config.interval);
window.history.replaceState(null, "", withView(window.location.search, view.shown));
showView();
