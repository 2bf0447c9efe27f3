// What the chart says in words: the name of the view, the caption of a bucket view, and
// the readout of the bucket or reading under the pointer or the keyboard focus. Pure
// (times on the viewer's clock).

import { bucketGaps, extentOf } from "./buckets.js";
import { formatClock, formatCount, formatDate, formatDuration, formatFixed, formatValue, sameDay } from "./format.js";

/** "Last 5 min", "Last 7 days", "All readings", "Mon 3 Jun 22:00 to Tue 4 Jun 07:00". */
export function viewLabel(view, bounds) {
  if (view.live) {
    return view.span === null ? "All readings" : `Last ${formatDuration(view.span)}`;
  }
  const span = bounds.to - bounds.from;
  const seconds = span < 600;
  const start = formatClock(bounds.from, { date: true, seconds });
  const end = formatClock(bounds.to, { date: !sameDay(bounds.from, bounds.to), seconds });
  return `${start} to ${end} (${formatDuration(span)})`;
}

/** "Mon 3 Jun 22:00–22:30", "Mon 3 Jun" (a day's bucket), "22:05:10–22:05:20" (short ones). */
export function bucketTime(t, step, { date = true } = {}) {
  if (step >= 86400) {
    return step === 86400 ? formatDate(t) : `${formatDate(t)} – ${formatDate(t + step - 1)}`;
  }
  const seconds = step < 60 || t % 60 !== 0;
  const start = formatClock(t, { date, seconds });
  const end = formatClock(t + step, { date: !sameDay(t, t + step - 1e-3), seconds });
  return `${start}–${end}`;
}

const number = (v) => formatValue(v);

/** A bucket as a person reads it: its time, how many readings, min, max and mean. */
export function bucketReadout(bucket, step) {
  const readings = bucket.count === 1 ? "1 reading" : `${formatCount(bucket.count)} readings`;
  return `${bucketTime(bucket.t, step)}: ${readings}, min ${number(bucket.min)}, `
    + `max ${number(bucket.max)}, mean ${formatFixed(bucket.mean, 2)}`;
}

/** A reading as a person reads it: its time, value and seq. */
export function readingReadout(reading) {
  const time = formatClock(reading.ts, { date: true, seconds: true, tenths: !Number.isInteger(reading.ts) });
  return `${time}: value ${number(reading.value)} (seq ${reading.seq})`;
}

/**
 * What a bucket view shows (its caption and the canvas' label, without the final stop):
 * the view, how many readings in how many buckets of what width, their extremes and mean,
 * and the gaps (stretches with no reading). `buckets`: the shown ones, oldest first.
 */
export function seriesCaption(label, buckets, step) {
  const { count, min, max, mean } = extentOf(buckets);
  let text = `${label}: ${formatCount(count)} readings`;
  if (buckets.length) {
    const width = formatDuration(step);
    text += ` in ${formatCount(buckets.length)} ${buckets.length === 1 ? "bucket" : "buckets"} of ${width}`;
    text += `, lowest ${number(min)}, highest ${number(max)}, mean ${formatFixed(mean, 2)}`;
  }
  const gaps = bucketGaps(buckets, step);
  if (gaps.length) {
    const missing = gaps.reduce((sum, g) => sum + (g.to - g.from), 0);
    text += `; ${gaps.length === 1 ? "1 gap" : `${gaps.length} gaps`} with no readings `
      + `(${formatDuration(missing)} in all, shaded)`;
  }
  return text;
}
