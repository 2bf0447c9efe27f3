// Which bucket answer (GET /api/series) the chart draws for a view, and when to ask the
// server again. Pure: the fetch, the clock and the timers are handed in.
//
// A view's answer is kept (the last few views', so going back is instant); until the
// wanted one arrives, the one drawn last stays on screen. A live view's answer is fetched
// once and then kept up to date with the readings the page holds (buckets.js: cutAt,
// withReadings); it is fetched again only when the view has slid a bucket (at least a
// minute, at most 5 minutes), or when the held readings no longer reach back to its cut.
// The page asks up to the newest reading it holds, so it knows which readings the answer
// counted; when its last bucket is wider than the readings held, a second, finer answer
// counts that bucket (fold).

import { MAX_POINTS, cutAt, cutBefore, emptySeries, fold, lastEdge, seriesOf } from "./buckets.js";
import { spanKey } from "./view.js";

export const REFRESH_MIN_S = 60;
export const REFRESH_MAX_S = 300; // the page holds 15 min of readings: well within them
export const RETRY_MS = 2000;
export const KEPT = 8; // answers kept, the views visited last

/** How often a live view's answer is fetched again: a bucket's width, within bounds. */
export function refreshAfter(step) {
  return Math.min(REFRESH_MAX_S, Math.max(REFRESH_MIN_S, step));
}

/**
 * What to ask the server for, for these bounds ({from, to, live}) and this many points.
 * A live view asks up to the server's now (no `to`) and is known by its span, so its
 * answer stays the same key as time moves; "all" asks from the first reading, once known.
 */
export function requestFor(view, bounds, points) {
  if (bounds.live) {
    const all = view.live && view.span === null;
    return {
      key: `live:${all ? "all" : spanKey(Math.round(bounds.to - bounds.from))}:${points}`,
      from: all ? null : bounds.from, to: null, points, live: true,
    };
  }
  return { key: `${bounds.from}-${bounds.to}:${points}`, from: bounds.from, to: bounds.to, points, live: false };
}

export class SeriesLoader {
  start = null; // the first bucket's time, when an answer from the beginning said it
  #kept = new Map(); // key -> {series, error, retryAt, loading}
  #shown = null; // the series drawn last
  #generation = 0; // answers of an older generation (before clear()) are dropped

  /**
   * getSeries(from, to, points): Promise of the /api/series JSON; rejects with a message
   *   on failure.
   * now(): ms; timers: {setTimeout}; changed(): an answer came (or failed): draw again.
   */
  constructor({ getSeries, now, timers, changed }) {
    this.getSeries = getSeries;
    this.now = now;
    this.timers = timers;
    this.changed = changed;
  }

  /**
   * What to draw for `request` now: {series, exact, loading, error}. `series` is the
   * request's answer, or until it comes the one drawn last (or, before any, an empty one
   * from `fallbackFrom` with `fallbackStep`: the held readings go into it). Starts a
   * fetch when the answer is missing or stale. `serverNow`: seconds; `heldFrom`, `heldTo`:
   * the times of the oldest and the newest reading the page holds (null: none).
   */
  show(request, { serverNow, heldFrom, heldTo = null, fallbackFrom, fallbackStep }) {
    let entry = this.#kept.get(request.key);
    if (entry === undefined) {
      entry = { series: null, error: null, retryAt: 0, loading: false };
      this.#kept.set(request.key, entry);
      this.#trim();
    } else {
      this.#kept.delete(request.key); // most recently used last
      this.#kept.set(request.key, entry);
    }
    if (!entry.loading && this.#due(entry, request, serverNow, heldFrom)) {
      this.#fetch(request, entry, { asOf: heldTo ?? serverNow, heldFrom, serverNow });
    }
    if (entry.series !== null) {
      this.#shown = entry.series;
    }
    return {
      series: entry.series ?? this.#shown ?? emptySeries(fallbackFrom, fallbackStep),
      exact: entry.series !== null,
      loading: entry.loading,
      error: entry.error,
    };
  }

  /** Forget every answer (they are of another stream). */
  clear() {
    this.#kept.clear();
    this.#shown = null;
    this.start = null;
    this.#generation += 1;
  }

  #due(entry, request, serverNow, heldFrom) {
    if (entry.error !== null) {
      return this.now() >= entry.retryAt;
    }
    const { series } = entry;
    if (series === null) {
      return true;
    }
    if (series.cut >= (request.to ?? Infinity)) {
      return false; // the answer covers the whole stretch: it is final
    }
    const age = serverNow - series.asOf;
    if (heldFrom !== null && heldFrom > series.cut) {
      return age >= RETRY_MS / 1000; // the held readings no longer reach back to the cut
    }
    if (!series.whole && heldFrom !== null && heldFrom < series.heldFrom) {
      return true; // they reach back further than when asked: now it can be exact
    }
    return request.live && age >= refreshAfter(series.step);
  }

  /**
   * The answer up to `asOf` (the newest held reading's time, or the server's now), cut
   * where the held readings take over; a finer one for its last bucket when needed.
   */
  async #answer(request, { asOf, heldFrom, serverNow }) {
    const from = request.from ?? this.start ?? 0;
    let to = request.to === null ? asOf : Math.min(request.to, asOf);
    if (!(to > from)) { // nothing held in the stretch: up to its end, or the server's now
      to = Math.max(request.to ?? serverNow, from + 1);
    }
    const main = cutAt(await this.#get(from, to, request.points), asOf, heldFrom);
    let series = main;
    if (!main.whole) {
      const edge = lastEdge(main, asOf);
      const fine = cutAt(await this.#get(edge, asOf, MAX_POINTS), asOf, heldFrom);
      series = fold(cutBefore(main, edge), fine);
    }
    return { ...series, asOf, heldFrom, askedFrom: from };
  }

  async #get(from, to, points) {
    const series = seriesOf(await this.getSeries(from, to, points));
    if (series === null) {
      throw new Error("unexpected answer");
    }
    return series;
  }

  async #fetch(request, entry, held) {
    entry.loading = true;
    const generation = this.#generation;
    try {
      const series = await this.#answer(request, held);
      if (generation !== this.#generation) {
        return;
      }
      entry.series = series;
      entry.error = null;
      if (request.from === null && series.buckets.length) {
        // "All": the first bucket says where the stream begins. Asked from further back
        // (from 0, at first), the buckets may be far wider than its length needs: again.
        const first = series.buckets[0].t;
        this.start = first;
        if (series.askedFrom < first && series.step > ((series.asOf - first) / request.points) * 2) {
          entry.series = null;
          this.#shown = series;
        }
      }
    } catch (err) {
      if (generation === this.#generation) {
        entry.error = err?.message ?? String(err);
        entry.retryAt = this.now() + RETRY_MS;
        this.timers.setTimeout(() => this.changed(), RETRY_MS);
      }
    } finally {
      entry.loading = false;
      if (generation === this.#generation) {
        this.changed();
      }
    }
  }

  #trim() {
    while (this.#kept.size > KEPT) {
      this.#kept.delete(this.#kept.keys().next().value);
    }
  }
}
