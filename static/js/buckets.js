// Readings in buckets, as GET /api/series answers them: `{from, to, step, buckets: [{t,
// count, min, max, mean}]}`, oldest first, empty buckets left out. Pure.
//
// The page draws the server's answer and counts the readings it holds since into the same
// buckets, so the newest bucket moves with every reading and the whole range is fetched
// again only now and then. Exactly: the page asks up to `asOf`, the time of the newest
// reading it holds, so every reading before that was stored when the server answered
// (the server counts in seq order). The server's `to` is snapped up to a bucket edge, so
// its last bucket may hold a few readings after `asOf`, counted or not: that bucket is
// dropped and counted again from the readings the page holds since its start (`cut`), or,
// when those do not reach back so far, from a finer answer for it (`fold`).

export const MIN_POINTS = 10;
export const MAX_POINTS = 2000; // the server's cap
export const PIXELS_PER_BUCKET = 2;

/** How many buckets to ask for, for a plot this many CSS pixels wide. */
export function pointsFor(plotWidth) {
  const points = Math.round(plotWidth / PIXELS_PER_BUCKET);
  return Math.min(MAX_POINTS, Math.max(MIN_POINTS, Number.isFinite(points) ? points : MIN_POINTS));
}

function isBucket(b) {
  return b !== null && typeof b === "object" && Number.isFinite(b.t) && Number.isInteger(b.count)
    && b.count > 0 && [b.min, b.max, b.mean].every(Number.isFinite);
}

/** A /api/series answer, checked; null when it is not one. */
export function seriesOf(json) {
  if (json === null || typeof json !== "object" || !Array.isArray(json.buckets)) {
    return null;
  }
  const { from, to, step } = json;
  if (![from, to, step].every(Number.isFinite) || !(step > 0) || !(to >= from)) {
    return null;
  }
  const buckets = json.buckets.filter(isBucket).map(({ t, count, min, max, mean }) => ({ t, count, min, max, mean }));
  buckets.sort((a, b) => a.t - b.t);
  return { from, to, step, buckets };
}

// Bucket widths for the page's own bucketing (before the server's answer), seconds.
const ROUND_STEPS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
  21600, 43200, 86400];

/** The first round bucket width at least `seconds`. */
export function roundStep(seconds) {
  return ROUND_STEPS.find((s) => s >= seconds - 1e-9) ?? Math.ceil(seconds / 86400) * 86400;
}

/** The edge where an answer asked up to `asOf` may hold readings after it: null if none. */
export function lastEdge(series, asOf) {
  return series.to > asOf ? Math.max(series.from, series.to - series.step) : null;
}

/** The answer's buckets before `edge`; the held readings count from there. */
export function cutBefore(series, edge) {
  return { ...series, buckets: series.buckets.filter((b) => b.t < edge - series.step * 1e-6), cut: edge };
}

/**
 * An answer asked up to `asOf`, with exactly the readings before its cut: the bucket
 * that may hold readings after `asOf` is dropped, if the held readings (from `heldFrom`)
 * reach back to its start. If they do not, `whole` is false: the bucket stays and the
 * readings after `asOf` count (a few may be counted twice until the next answer).
 */
export function cutAt(series, asOf, heldFrom) {
  const edge = lastEdge(series, asOf);
  if (edge === null) {
    return { ...series, cut: series.to, whole: true };
  }
  if (heldFrom !== null && heldFrom <= edge) {
    return { ...cutBefore(series, edge), whole: true };
  }
  // A reading exactly at asOf was counted: the held ones count from just after it.
  return { ...series, cut: asOf + Math.max(1e-6, Math.abs(asOf) * 2 ** -50), whole: false };
}

/**
 * `coarse` (cut before an edge) with its bucket from that edge counted from `fine`, a
 * finer answer over [edge, asOf) (cut too): the fine buckets fold into one coarse bucket,
 * and the held readings count from the fine answer's cut.
 */
export function fold(coarse, fine) {
  const { count, min, max, mean } = extentOf(fine.buckets);
  const buckets = count ? [...coarse.buckets, { t: coarse.cut, count, min, max, mean }] : coarse.buckets;
  return { ...coarse, buckets, cut: fine.cut, whole: fine.whole, origin: coarse.cut };
}

/**
 * An empty series from `from` with buckets at least `step` wide, on a round grid: what the
 * page holds goes into it while the server's answer is on its way.
 */
export function emptySeries(from, step) {
  const width = roundStep(step);
  const start = Math.floor(from / width) * width;
  return { from: start, to: start, step: width, buckets: [], cut: start };
}

/**
 * `series` with `readings` (oldest first) counted in: only those at or after its `cut`
 * (the answer counted the ones before; its `to` without a cut), and before `until`. A new
 * series; the answer stays as it came.
 */
export function withReadings(series, readings, until = Infinity) {
  const { step } = series;
  const from = series.cut ?? series.to;
  const buckets = series.buckets.slice();
  // Every bucket's start lies on the server's grid; before the first, the answer's `from`.
  const origin = series.origin ?? (buckets.length ? buckets[buckets.length - 1].t : series.from);
  let through = from;
  for (const { ts, value } of readings) {
    if (ts < from || ts >= until) {
      continue;
    }
    through = Math.max(through, ts);
    const t = origin + Math.floor((ts - origin) / step) * step;
    // Readings come by seq; a push source's times may go back a little: search then.
    let i = buckets.length - 1;
    if (i >= 0 && t < buckets[i].t - step * 1e-6) {
      i = nearestIndex(buckets, t, (b) => b.t);
    }
    const held = buckets[i];
    if (held && Math.abs(held.t - t) < step * 1e-6) {
      buckets[i] = {
        t: held.t, count: held.count + 1, min: Math.min(held.min, value), max: Math.max(held.max, value),
        mean: held.mean + (value - held.mean) / (held.count + 1),
      };
    } else {
      const at = held && held.t < t ? i + 1 : Math.max(0, i);
      buckets.splice(at, 0, { t, count: 1, min: value, max: value, mean: value });
    }
  }
  return { ...series, buckets, through };
}

/** Runs of adjacent buckets: the line and the envelope break between runs. */
export function bucketRuns(buckets, step) {
  const runs = [];
  let run = [];
  for (const bucket of buckets) {
    const previous = run[run.length - 1];
    if (previous && bucket.t - previous.t > step * 1.5) {
      runs.push(run);
      run = [];
    }
    run.push(bucket);
  }
  if (run.length) {
    runs.push(run);
  }
  return runs;
}

/** The stretches between runs where no bucket has a reading: [{from, to}], oldest first. */
export function bucketGaps(buckets, step) {
  const gaps = [];
  for (let i = 1; i < buckets.length; i += 1) {
    const end = buckets[i - 1].t + step;
    if (buckets[i].t - buckets[i - 1].t > step * 1.5) {
      gaps.push({ from: end, to: buckets[i].t });
    }
  }
  return gaps;
}

/** The buckets that overlap [from, to). */
export function bucketsIn(buckets, step, from, to) {
  return buckets.filter((b) => b.t + step > from && b.t < to);
}

/** {count, min, max, mean} over buckets (min, max, mean null when empty). */
export function extentOf(buckets) {
  let count = 0;
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (const b of buckets) {
    count += b.count;
    sum += b.mean * b.count;
    min = Math.min(min, b.min);
    max = Math.max(max, b.max);
  }
  return count ? { count, min, max, mean: sum / count } : { count, min: null, max: null, mean: null };
}

/** The index of the item whose position (`at(item)`) is nearest to `x`; -1 when none. */
export function nearestIndex(items, x, at) {
  if (items.length === 0) {
    return -1;
  }
  let lo = 0;
  let hi = items.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (at(items[mid]) < x) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo > 0 && x - at(items[lo - 1]) <= at(items[lo]) - x ? lo - 1 : lo;
}
