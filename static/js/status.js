// What the page says about its state, in words: the connection's one word and its detail,
// how fresh the readings are, the chart's caption, the pause note, the statistics' note
// and verdict. Pure: the clock and the network flag are handed in.

import { formatAgo, formatCount, formatIn, formatInterval, formatValue } from "./format.js";

export const OFFLINE_AFTER_MS = 30000; // "reconnecting" turns "offline" after this long

/**
 * The connection as a person sees it: "live", "reconnecting" (lost less than 30 s ago,
 * retrying) or "offline" (not connected yet, lost for 30 s or more, or no network).
 */
export class ConnectionStatus {
  name = "offline";
  lostAt = null; // ms, when the connection went away
  nextTryAt = null; // ms, when the next try is due
  #everLive = false;

  /** now(): ms; online(): whether the browser has a network (navigator.onLine). */
  constructor({ now, online }) {
    this.now = now;
    this.online = online;
  }

  connected() {
    this.#everLive = true;
    this.lostAt = null;
    this.nextTryAt = null;
    this.name = "live";
  }

  disconnected() {
    this.lostAt = this.now();
  }

  /** A reconnect is scheduled in `delay` ms. */
  retrying(delay) {
    const now = this.now();
    this.lostAt ??= now;
    this.nextTryAt = now + delay;
    this.name = this.#lostName();
  }

  /** The name as time passes: a connection lost for long enough turns "offline". */
  refresh() {
    if (this.name !== "live") {
      this.name = this.#lostName();
    }
    return this.name;
  }

  /** The line next to the name: empty while live, else when it was lost and the next try. */
  detail() {
    if (this.name === "live") {
      return "";
    }
    if (this.nextTryAt === null) {
      return "connecting…";
    }
    const now = this.now();
    if (!this.online()) {
      return `no network · next try in ${formatIn((this.nextTryAt - now) / 1000)}`;
    }
    const since = this.lostAt === null ? "" : `lost ${formatAgo((now - this.lostAt) / 1000)} · `;
    return now >= this.nextTryAt ? `${since}trying now…` : `${since}next try in ${formatIn((this.nextTryAt - now) / 1000)}`;
  }

  #lostName() {
    if (!this.online() || !this.#everLive) {
      return "offline";
    }
    const now = this.now();
    return now - (this.lostAt ?? now) >= OFFLINE_AFTER_MS ? "offline" : "reconnecting";
  }
}

/**
 * "updated 4 s ago", with "— no new readings" and stale once nothing came for 3 intervals
 * (at least 5 s). Before any reading: "no readings yet", stale unless live.
 */
export function freshness(lastUpdateMs, now, interval, live) {
  if (lastUpdateMs === null) {
    return { text: "no readings yet", stale: !live };
  }
  const age = (now - lastUpdateMs) / 1000;
  const stale = age > Math.max(5, 3 * interval);
  return { text: `updated ${formatAgo(age)}${stale ? " — no new readings" : ""}`, stale };
}

/** The missing readings in these gaps ({missing} each). */
export function missingIn(gaps) {
  return gaps.reduce((sum, gap) => sum + gap.missing, 0);
}

/**
 * What the chart shows, in words (its caption and aria-label, without the final stop):
 * the view ("Last 5 min", or its seconds), how many readings, their seqs and extremes, and
 * the gaps among them. `readings` are the shown ones, oldest first; `gaps` all the gaps held.
 */
export function chartCaption(readings, gaps, view) {
  const label = typeof view === "number" ? `Last ${formatInterval(view)}` : view;
  let text = `${label}: ${formatCount(readings.length)} readings`;
  if (readings.length) {
    text += ` (seq ${readings[0].seq}–${readings[readings.length - 1].seq})`;
    const values = readings.map((r) => r.value);
    text += `, lowest ${formatValue(Math.min(...values))}, highest ${formatValue(Math.max(...values))}`;
  }
  const firstShown = readings[0]?.seq ?? Infinity;
  const lastShown = readings[readings.length - 1]?.seq ?? -Infinity;
  const shown = gaps.filter((g) => g.after >= firstShown && g.before <= lastShown);
  if (shown.length) {
    const count = shown.length === 1 ? "1 gap" : `${shown.length} gaps`;
    text += `; ${count} (${formatCount(missingIn(shown))} missing readings, shaded)`;
  }
  return text;
}

/** While paused: the frozen seq, and how many newer readings are held meanwhile. */
export function pauseNote(pausedSeq, lastSeq, held) {
  const waiting = lastSeq === null || pausedSeq === null ? held : lastSeq - pausedSeq;
  return `Paused: the view is frozen at seq ${pausedSeq ?? "–"}. `
    + `${formatCount(waiting)} newer readings are kept meanwhile; press Resume to catch up.`;
}

/**
 * The line under the statistics: what they cover, or why there are none yet.
 * `recent`: how many readings the observed histogram is of.
 */
export function statsNote(stats, { observed, error, recent }) {
  if (stats && observed) {
    return `Through seq ${stats.throughSeq ?? "–"} · no uniformity test for this source; `
      + `the histogram is of the ${formatCount(recent)} most recent readings`;
  }
  if (stats) {
    return `Through seq ${stats.throughSeq ?? "–"} · ${stats.hi - stats.lo} degrees of freedom`;
  }
  if (error) {
    return `Statistics are unavailable right now (${error}); trying again.`;
  }
  return "Fetching statistics…";
}

/** The one-line verdict of the chi-square test's p-value. */
export function verdict(pValue, observed) {
  if (observed) {
    return "not tested: this source has no declared range";
  }
  if (pValue === null) {
    return "";
  }
  return pValue < 0.01 ? "unusually uneven for uniform numbers" : "consistent with uniform numbers";
}
