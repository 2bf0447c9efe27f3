// The dashboard: wires the socket, the sync (sync.js: what the page holds) and the
// connection status (status.js) to the page, and draws at most once per animation frame.
// Knows the page's elements and events, not the wire format nor the sync rules.

import { drawHistogram, drawLineChart } from "./chart.js";
import { formatCount, formatFixed, formatInterval, formatPValue, formatValue } from "./format.js";
import { socketUrl } from "./packet.js";
import { connect } from "./socket.js";
import { binned } from "./stats.js";
import {
  ConnectionStatus, chartCaption, freshness, missingIn, pauseNote, statsNote, verdict,
} from "./status.js";
import { Sync, capacityFor } from "./sync.js";

const WINDOWS = [60, 300, 900];
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
    stream: data.stream || null, // the id of the stream the page was rendered from
  };
}

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
  if (!response.ok) {
    throw new Error(`HTTP ${response.status}`);
  }
  return response.json();
}

const config = readConfig(el.root.dataset);
const now = () => Date.now();

const view = {
  windowSeconds: savedWindow(),
  paused: null, // {newest, seq, toTs, stats} while the view is frozen
  lastAnnounced: { at: 0, seq: null },
};

const status = new ConnectionStatus({ now, online: () => navigator.onLine });

const sync = new Sync({
  stream: config.stream, // the rendered reading's: a snapshot of another stream replaces it
  settings: config, // lo, hi and interval change when the server says its stream differs
  capacity: capacityFor(config.history, config.interval, WINDOWS[WINDOWS.length - 1]),
  span: WINDOWS[WINDOWS.length - 1],
  send: (name, data) => socket.emit(name, data),
  isConnected: () => socket.connected,
  getStats: () => getJson(config.statsUrl),
  getHistory: (after, limit) => getJson(`${config.historyUrl}?after=${after}&limit=${limit}`),
  now,
  timers: { setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (id) => clearTimeout(id) },
  hooks: {
    changed: () => scheduleRender(),
    startOver: () => {
      if (view.paused) {
        togglePause();
      }
    },
    range: (lo, hi) => { el.range.textContent = `${lo}–${hi}`; },
    interval: (seconds) => { el.interval.textContent = formatInterval(seconds); },
  },
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
  showNotice(`The server refused the connection: ${data?.message ?? "no reason given"}`);
});

socket.on("error", (data) => {
  showNotice(`The server reported: ${data?.message ?? "an error"}`);
});

socket.on("history", (data) => sync.history(data));
socket.on("random_number", (data) => sync.reading(data));

// ---- controls ---------------------------------------------------------------

/** The window chosen last time; otherwise 5 minutes, or 1 on a phone-sized screen. */
function savedWindow() {
  const fallback = window.matchMedia("(max-width: 40rem)").matches ? 60 : 300;
  try {
    const saved = Number(window.localStorage.getItem(WINDOW_KEY));
    return WINDOWS.includes(saved) ? saved : fallback;
  } catch {
    return fallback;
  }
}

for (const input of document.querySelectorAll('input[name="window"]')) {
  input.checked = Number(input.value) === view.windowSeconds;
  input.addEventListener("change", () => {
    if (!input.checked) {
      return;
    }
    view.windowSeconds = Number(input.value);
    try {
      window.localStorage.setItem(WINDOW_KEY, String(view.windowSeconds));
    } catch {
      // private mode: the choice lasts for this page only
    }
    scheduleRender();
  });
}

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

function chartEnd() {
  const newest = sync.buffer.last;
  const serverNow = Date.now() / 1000 + sync.clockOffset;
  return newest ? Math.max(newest.ts, serverNow) : serverNow;
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

function renderChart(toTs, untilSeq) {
  const { buffer } = sync;
  const fromTs = toTs - view.windowSeconds;
  const readings = buffer.window(fromTs, untilSeq);
  const maxStep = Math.max(3 * config.interval, config.interval + 2); // longer silence: server down
  let { lo, hi } = config;
  if (config.observed) { // no declared range: the window's own, with a margin
    const values = readings.map((r) => r.value);
    lo = values.length ? Math.min(...values) : 0;
    hi = values.length ? Math.max(...values) : 1;
    const margin = hi > lo ? (hi - lo) * 0.05 : Math.max(1, Math.abs(lo) * 0.05);
    [lo, hi] = [lo - margin, hi + margin];
  }
  drawLineChart(el.chart, { readings, fromTs, toTs, lo, hi, maxStep });

  const gaps = buffer.gaps();
  const data = el.chart.dataset;
  data.firstSeq = String(buffer.first?.seq ?? "");
  data.lastSeq = String(buffer.lastSeq ?? "");
  data.held = String(buffer.size);
  data.missing = String(missingIn(gaps));

  const text = chartCaption(readings, gaps, view.windowSeconds);
  setText(el.chartSummary, `${text}.`);
  el.chart.setAttribute("aria-label", `Line chart. ${text}.`);
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
scheduleRender();
