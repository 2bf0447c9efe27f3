// The dashboard: wires the socket, the reading buffer and the stats to the
// page, and draws at most once per animation frame. Knows events and
// readings, not the wire format.

import { drawHistogram, drawLineChart } from "./chart.js";
import {
  formatAgo, formatCount, formatFixed, formatIn, formatInterval, formatPValue, formatValue,
} from "./format.js";
import { socketUrl } from "./packet.js";
import { ReadingBuffer, asReading } from "./readings.js";
import { connect } from "./socket.js";
import { ObservedStats, StreamStats, binned } from "./stats.js";

const WINDOWS = [60, 300, 900];
const OFFLINE_AFTER_MS = 30000; // "reconnecting" turns "offline" after this long
const STATS_REFRESH_MS = 5 * 60000; // re-sync with the server now and then anyway
const STATS_RETRY_MS = 2000;
const ANNOUNCE_EVERY_MS = 60000; // the screen-reader readout speaks at most this often
const MAX_RESUMES_PER_CONNECTION = 50;
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
  };
}

const config = readConfig(el.root.dataset);
// Enough for the widest window at this interval, never below what the server
// sends on connect, never unbounded however small the interval.
const capacity = Math.min(50000, Math.max(config.history, Math.ceil(900 / config.interval) + 60));

const state = {
  buffer: new ReadingBuffer(capacity),
  stats: null, // StreamStats: the server's snapshot plus the readings since
  statsError: null,
  windowSeconds: savedWindow(),
  connection: "offline", // live | reconnecting | offline
  everLive: false,
  lostAt: null, // Date.now() when the connection went away
  nextTryAt: null,
  lastUpdateMs: null, // when the newest reading arrived (client clock)
  clockOffset: 0, // server ts minus client clock, seconds
  resumeFrom: null, // the last seq held when the connection went away
  asked: new Set(), // resume requests sent on this connection
  paused: null, // {seq, toTs, stats} while the view is frozen
  lastAnnounced: { at: 0, seq: null },
};

// The server renders its newest reading into the page; hold it until the snapshot comes.
if (el.value.dataset.seq) {
  const { seq, value, ts } = el.value.dataset;
  const rendered = asReading({ seq: Number(seq), value: Number(value), ts: Number(ts) });
  if (rendered) {
    state.buffer.merge([rendered]);
  }
}

// ---- socket ---------------------------------------------------------------

// Back after a drop, the CONNECT says what we hold: the server answers with the readings
// since then instead of its whole snapshot (and no `resume` round trip is needed).
const socket = connect(socketUrl(window.location), {
  auth: () => (state.resumeFrom === null ? undefined : { after: state.resumeFrom }),
});

socket.on("connect", () => {
  state.everLive = true;
  state.lostAt = null;
  state.nextTryAt = null;
  // What the CONNECT asked for counts as asked: its answer may come after live readings.
  state.asked = new Set(state.resumeFrom === null ? [] : [state.resumeFrom]);
  setConnection("live");
  fetchStats();
});

socket.on("disconnect", () => {
  state.resumeFrom = state.buffer.lastSeq;
  state.lostAt = Date.now();
});

socket.on("reconnect_attempt", ({ delay }) => {
  state.lostAt ??= Date.now();
  state.nextTryAt = Date.now() + delay;
  setConnection(lostState());
});

socket.on("connect_error", (data) => {
  showNotice(`The server refused the connection: ${data?.message ?? "no reason given"}`);
});

socket.on("error", (data) => {
  showNotice(`The server reported: ${data?.message ?? "an error"}`);
});

socket.on("history", (data) => {
  if (data?.stream) {
    applyStream(data.stream);
  }
  const readings = Array.isArray(data?.readings) ? data.readings.map(asReading).filter(Boolean) : [];
  if (readings.some((r) => state.buffer.conflicts(r))) {
    startOver();
  }
  ingest(readings, false);
  fillHoles();
  backfill();
});

socket.on("random_number", (data) => {
  const reading = asReading(data);
  if (reading === null) {
    return;
  }
  if (state.buffer.conflicts(reading)) {
    startOver();
  }
  const previous = state.buffer.lastSeq;
  ingest([reading], true);
  if (previous !== null && reading.seq > previous + 1) {
    askResume(previous); // readings went missing on the way: ask for them
  }
});

function lostState() {
  if (!navigator.onLine || !state.everLive) {
    return "offline";
  }
  return Date.now() - (state.lostAt ?? Date.now()) >= OFFLINE_AFTER_MS ? "offline" : "reconnecting";
}

/** Ask for the readings after `after`, once per connection and never unboundedly often. */
function askResume(after) {
  if (state.asked.has(after) || state.asked.size >= MAX_RESUMES_PER_CONNECTION) {
    return;
  }
  state.asked.add(after);
  socket.emit("resume", { after });
}

/**
 * Ask for the newest hole in what we hold that the server can still fill (it
 * answers from its last `history` readings); what never comes stays a gap.
 */
function fillHoles() {
  if (!socket.connected || state.buffer.lastSeq === null) {
    return;
  }
  const reachable = state.buffer.lastSeq - config.history;
  const gaps = state.buffer.gaps().filter((gap) => gap.before > reachable);
  for (let i = gaps.length - 1; i >= 0; i -= 1) {
    if (!state.asked.has(gaps[i].after)) {
      askResume(gaps[i].after);
      return;
    }
  }
}

let backfilled = false;

/**
 * The snapshot on connect holds `history` readings; with a short interval that
 * is less than the widest window. Fetch the older ones once over HTTP.
 */
async function backfill() {
  const first = state.buffer.first;
  const last = state.buffer.last;
  if (backfilled || first === null || first.seq <= 1) {
    return;
  }
  backfilled = true;
  const wanted = Math.ceil((first.ts - (last.ts - WINDOWS[WINDOWS.length - 1])) / config.interval);
  const limit = Math.min(wanted, capacity - state.buffer.size, first.seq - 1, 10000);
  if (limit <= 0) {
    return;
  }
  const after = first.seq - 1 - limit;
  try {
    const response = await fetch(`${config.historyUrl}?after=${after}&limit=${limit}`,
      { cache: "no-store", headers: { Accept: "application/json" } });
    if (response.ok) {
      const body = await response.json();
      const older = (Array.isArray(body?.readings) ? body.readings : []).map(asReading).filter(Boolean);
      if (!older.some((r) => state.buffer.conflicts(r) && r.seq >= state.buffer.first.seq)) {
        ingest(older.filter((r) => r.seq < first.seq), false);
      }
    }
  } catch {
    // older readings are a nicety: the chart shows what it has
  }
}

/** The server's stream differs from what we hold (a fresh server without the old data). */
function startOver() {
  backfilled = false;
  state.buffer.clear();
  state.stats = null;
  state.resumeFrom = null;
  if (state.paused) {
    togglePause();
  }
  fetchStats();
}

function applyStream(stream) {
  const lo = Number.isInteger(stream.min) ? stream.min : config.lo;
  const hi = Number.isInteger(stream.max) ? stream.max : config.hi;
  const interval = Number.isFinite(stream.interval) && stream.interval > 0 ? stream.interval : config.interval;
  if (!config.observed && (lo !== config.lo || hi !== config.hi)) {
    config.lo = lo;
    config.hi = hi;
    el.range.textContent = `${lo}–${hi}`;
    state.stats = null;
    fetchStats();
  }
  if (interval !== config.interval) {
    config.interval = interval;
    el.interval.textContent = formatInterval(interval);
  }
}

function ingest(readings, live) {
  const newestBefore = state.buffer.lastSeq;
  if (state.buffer.merge(readings) === 0) {
    return;
  }
  const newest = state.buffer.last;
  if (newestBefore === null || newest.seq > newestBefore) {
    const now = Date.now();
    if (live) {
      state.lastUpdateMs = now;
      state.clockOffset = newest.ts - now / 1000;
    } else {
      state.lastUpdateMs = Math.min(now, newest.ts * 1000);
    }
  }
  if (state.stats && !state.stats.catchUp(state.buffer.after(state.stats.throughSeq ?? -Infinity))) {
    fetchStats(STATS_RETRY_MS);
  }
  scheduleRender();
}

// ---- statistics from the server --------------------------------------------

let statsTimer = null;
let statsDueAt = Infinity;
let statsInFlight = false;

/** Fetch /api/stats in `delay` ms (0: now), unless a fetch is already due sooner. */
function fetchStats(delay = 0) {
  const dueAt = Date.now() + delay;
  if (statsTimer !== null) {
    if (statsDueAt <= dueAt) {
      return;
    }
    clearTimeout(statsTimer);
  }
  statsDueAt = dueAt;
  statsTimer = setTimeout(loadStats, delay);
}

async function loadStats() {
  statsTimer = null;
  statsDueAt = Infinity;
  if (statsInFlight) {
    fetchStats(STATS_RETRY_MS);
    return;
  }
  statsInFlight = true;
  try {
    const response = await fetch(config.statsUrl, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) {
      throw new Error(`HTTP ${response.status}`);
    }
    const stats = (config.observed ? ObservedStats : StreamStats).fromServer(await response.json());
    if (stats === null) {
      throw new Error("unexpected answer");
    }
    const complete = stats.catchUp(state.buffer.after(stats.throughSeq ?? -Infinity));
    state.stats = stats;
    state.statsError = null;
    fetchStats(complete ? STATS_REFRESH_MS : STATS_RETRY_MS);
  } catch (err) {
    state.statsError = err.message;
    fetchStats(socket.connected ? STATS_RETRY_MS : STATS_REFRESH_MS);
  } finally {
    statsInFlight = false;
    scheduleRender();
  }
}

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
  input.checked = Number(input.value) === state.windowSeconds;
  input.addEventListener("change", () => {
    if (!input.checked) {
      return;
    }
    state.windowSeconds = Number(input.value);
    try {
      window.localStorage.setItem(WINDOW_KEY, String(state.windowSeconds));
    } catch {
      // private mode: the choice lasts for this page only
    }
    scheduleRender();
  });
}

function togglePause() {
  if (state.paused) {
    state.paused = null;
  } else {
    const newest = state.buffer.last;
    state.paused = {
      newest,
      seq: newest?.seq ?? null,
      toTs: chartEnd(),
      stats: state.stats?.clone() ?? null,
    };
  }
  const paused = state.paused !== null;
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
  const newest = state.buffer.last;
  const serverNow = Date.now() / 1000 + state.clockOffset;
  return newest ? Math.max(newest.ts, serverNow) : serverNow;
}

function render() {
  const paused = state.paused;
  const untilSeq = paused?.seq ?? null;
  const newest = paused ? paused.newest : state.buffer.last;
  renderCurrent(newest);
  renderChart(paused ? paused.toTs : chartEnd(), untilSeq);
  renderStats(paused ? paused.stats : state.stats);
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
  const fromTs = toTs - state.windowSeconds;
  const readings = state.buffer.window(fromTs, untilSeq);
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

  const gaps = state.buffer.gaps();
  const missing = gaps.reduce((sum, gap) => sum + gap.missing, 0);
  const data = el.chart.dataset;
  data.firstSeq = String(state.buffer.first?.seq ?? "");
  data.lastSeq = String(state.buffer.lastSeq ?? "");
  data.held = String(state.buffer.size);
  data.missing = String(missing);

  const firstShown = readings[0]?.seq ?? Infinity;
  const lastShown = readings[readings.length - 1]?.seq ?? -Infinity;
  const shownGaps = gaps.filter((g) => g.after >= firstShown && g.before <= lastShown);
  const label = WINDOWS.includes(state.windowSeconds) ? formatInterval(state.windowSeconds) : "";
  let text = `Last ${label}: ${formatCount(readings.length)} readings`;
  if (readings.length) {
    text += ` (seq ${readings[0].seq}–${readings[readings.length - 1].seq})`;
    const values = readings.map((r) => r.value);
    text += `, lowest ${formatValue(Math.min(...values))}, highest ${formatValue(Math.max(...values))}`;
  }
  if (shownGaps.length) {
    const lost = shownGaps.reduce((sum, gap) => sum + gap.missing, 0);
    text += `; ${shownGaps.length === 1 ? "1 gap" : `${shownGaps.length} gaps`} (${formatCount(lost)} missing readings, shaded)`;
  }
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
  setText(el.verdict, config.observed ? "not tested: this source has no declared range" : verdict(summary?.pValue ?? null));
  el.verdict.dataset.uniformity = config.observed ? "none" : "chi-square";
  let note;
  if (stats && config.observed) {
    note = `Through seq ${stats.throughSeq ?? "–"} · no uniformity test for this source; `
      + `the histogram is of the ${formatCount(Math.min(state.buffer.size, config.history))} most recent readings`;
  } else if (stats) {
    note = `Through seq ${stats.throughSeq ?? "–"} · ${stats.hi - stats.lo} degrees of freedom`;
  } else if (state.statsError) {
    note = `Statistics are unavailable right now (${state.statsError}); trying again.`;
  } else {
    note = "Fetching statistics…";
  }
  setText(el.statsNote, note);
  const size = `${el.histogram.clientWidth}x${el.histogram.clientHeight}`;
  if (config.observed) {
    const recent = state.buffer.latest(config.history);
    const { edges, counts } = binned(recent.map((r) => r.value));
    const key = `observed:${recent[recent.length - 1]?.seq}:${recent.length}:${size}:${themeVersion}`;
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

function verdict(p) {
  if (p === null) {
    return "";
  }
  return p < 0.01 ? "unusually uneven for uniform numbers" : "consistent with uniform numbers";
}

function renderPauseNote() {
  const paused = state.paused;
  el.pauseNote.hidden = paused === null;
  if (paused) {
    const waiting = state.buffer.lastSeq === null || paused.seq === null ? state.buffer.size : state.buffer.lastSeq - paused.seq;
    setText(el.pauseNote, `Paused: the view is frozen at seq ${paused.seq ?? "–"}. `
      + `${formatCount(waiting)} newer readings are kept meanwhile; press Resume to catch up.`);
  }
}

/** Texts that age with the clock: how long ago, when the next try is. */
function renderClock() {
  const now = Date.now();
  if (state.lastUpdateMs === null) {
    setText(el.lastUpdate, "no readings yet");
    el.lastUpdate.dataset.stale = String(state.connection !== "live");
  } else {
    const age = (now - state.lastUpdateMs) / 1000;
    const stale = age > Math.max(5, 3 * config.interval);
    setText(el.lastUpdate, `updated ${formatAgo(age)}${stale ? " — no new readings" : ""}`);
    el.lastUpdate.dataset.stale = String(stale);
  }
  if (state.connection !== "live") {
    setConnection(lostState());
  }
  let detail;
  if (state.connection === "live") {
    detail = "";
  } else if (state.nextTryAt === null) {
    detail = "connecting…";
  } else if (!navigator.onLine) {
    detail = `no network · next try in ${formatIn((state.nextTryAt - now) / 1000)}`;
  } else {
    const since = state.lostAt === null ? "" : `lost ${formatAgo((now - state.lostAt) / 1000)} · `;
    detail = now >= state.nextTryAt ? `${since}trying now…` : `${since}next try in ${formatIn((state.nextTryAt - now) / 1000)}`;
  }
  setText(el.detail, detail);
  announce(now);
}

function setConnection(name) {
  state.connection = name;
  el.status.dataset.state = name;
  setText(el.status, name);
  document.documentElement.dataset.connection = name;
}

/** A polite spoken readout of the value, once a minute at most. */
function announce(now) {
  const newest = state.buffer.last;
  if (!newest || state.paused || state.connection !== "live") {
    return;
  }
  if (now - state.lastAnnounced.at < ANNOUNCE_EVERY_MS || newest.seq === state.lastAnnounced.seq) {
    return;
  }
  state.lastAnnounced = { at: now, seq: newest.seq };
  el.announcer.textContent = `Latest value ${newest.value}.`;
}

let noticeTimer = null;

function showNotice(text) {
  el.notice.textContent = text;
  el.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    el.notice.hidden = true;
  }, 15000);
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
