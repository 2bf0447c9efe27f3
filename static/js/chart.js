// Canvas drawing for the line chart and the histogram. Colours come from CSS
// custom properties on the canvas, so light and dark themes need no code here.

import { bucketGaps, bucketRuns } from "./buckets.js";
import { formatClock, formatDate } from "./format.js";
import { findGaps, segments } from "./readings.js";

const FONT_SIZE = 12;

/** The plot's margins inside the canvas, CSS pixels (the pointer code maps with them too). */
export const MARGIN = { left: 40, right: 12, top: 10, bottom: 24 };

/** The plot area of a canvas this size, and its time axis: {left, top, width, height, x, ts}. */
export function plotArea(width, height, fromTs, toTs) {
  const plotWidth = Math.max(1, width - MARGIN.left - MARGIN.right);
  const plotHeight = Math.max(1, height - MARGIN.top - MARGIN.bottom);
  const span = Math.max(1e-9, toTs - fromTs);
  return {
    left: MARGIN.left, top: MARGIN.top, width: plotWidth, height: plotHeight,
    x: (ts) => MARGIN.left + ((ts - fromTs) / span) * plotWidth,
    ts: (px) => fromTs + ((px - MARGIN.left) / plotWidth) * span,
  };
}

/** Size the backing store to the element times devicePixelRatio; draw in CSS pixels. */
function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  const pixelWidth = Math.max(1, Math.round(width * ratio));
  const pixelHeight = Math.max(1, Math.round(height * ratio));
  if (canvas.width !== pixelWidth || canvas.height !== pixelHeight) {
    canvas.width = pixelWidth;
    canvas.height = pixelHeight;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const style = getComputedStyle(canvas);
  const colour = (name) => style.getPropertyValue(name).trim() || "currentColor";
  const palette = {
    line: colour("--chart-line"),
    grid: colour("--chart-grid"),
    text: colour("--chart-text"),
    gap: colour("--chart-gap"),
    bar: colour("--chart-bar"),
    expected: colour("--chart-expected"),
    band: colour("--chart-band"),
    envelope: colour("--chart-envelope"),
    focus: colour("--chart-focus"),
  };
  ctx.font = `${FONT_SIZE}px ${style.fontFamily || "sans-serif"}`;
  return { ctx, width, height, palette };
}

/** A few round tick values covering [lo, hi]. */
export function ticks(lo, hi, wanted = 4) {
  if (!(hi > lo)) {
    return [lo];
  }
  const raw = (hi - lo) / wanted;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  const values = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    values.push(Math.round(v * 1e6) / 1e6);
  }
  return values;
}

/** Grid lines and value labels over [lo, hi]; returns y(value). */
function valueAxis(ctx, palette, plot, lo, hi) {
  const yLo = lo;
  const yHi = hi > lo ? hi : lo + 1;
  const y = (value) => plot.top + (1 - (value - yLo) / (yHi - yLo)) * plot.height;
  ctx.lineWidth = 1;
  ctx.strokeStyle = palette.grid;
  ctx.fillStyle = palette.text;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const value of ticks(yLo, yHi)) {
    const py = Math.round(y(value)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(plot.left, py);
    ctx.lineTo(plot.left + plot.width, py);
    ctx.stroke();
    ctx.fillText(String(Number(value.toPrecision(6))), plot.left - 6, py);
  }
  return y;
}

/**
 * Time labels under the plot: seconds or minutes before "now" for a live short view (as
 * a ticker reads), else times of day (and dates) on the viewer's clock.
 */
function timeAxis(ctx, palette, plot, fromTs, toTs, relative) {
  ctx.fillStyle = palette.text;
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const labels = [];
  const span = toTs - fromTs;
  if (relative) {
    const step = relativeStep(span, plot.width);
    for (let ago = 0; ago <= span + 1e-6; ago += step) {
      labels.push({ ts: toTs - ago, label: ago === 0 ? "now" : `−${formatSpan(ago)}` });
    }
  } else {
    labels.push(...timeTicks(fromTs, toTs, plot.width));
  }
  for (const { ts, label } of labels) {
    const half = ctx.measureText(label).width / 2;
    const px = Math.min(Math.max(plot.x(ts), plot.left + half), plot.left + plot.width - half);
    ctx.fillText(label, px, plot.top + plot.height + 6);
  }
}

/** Clip drawing to the plot (a little room for the newest dot). */
function clipToPlot(ctx, plot) {
  ctx.save();
  ctx.beginPath();
  ctx.rect(plot.left, plot.top - 4, plot.width + 6, plot.height + 8);
  ctx.clip();
}

/** The focused item: a thin vertical line through it. */
function focusLine(ctx, palette, plot, px) {
  ctx.strokeStyle = palette.focus;
  ctx.lineWidth = 1;
  ctx.setLineDash([3, 3]);
  ctx.beginPath();
  ctx.moveTo(Math.round(px) + 0.5, plot.top);
  ctx.lineTo(Math.round(px) + 0.5, plot.top + plot.height);
  ctx.stroke();
  ctx.setLineDash([]);
}

/**
 * The line chart of `readings` (sorted by seq) between `fromTs` and `toTs`
 * (epoch seconds), y over [lo, hi]. Consecutive seqs are joined; where seqs
 * are missing the line stops and the missing stretch is shaded. `relative`:
 * label the time axis back from "now"; `focus`: a reading to mark.
 */
export function drawLineChart(canvas, { readings, fromTs, toTs, lo, hi, maxStep = Infinity, relative = true,
  focus = null }) {
  const { ctx, width, height, palette } = prepare(canvas);
  const plot = plotArea(width, height, fromTs, toTs);
  const { x } = plot;
  const y = valueAxis(ctx, palette, plot, lo, hi);
  timeAxis(ctx, palette, plot, fromTs, toTs, relative);

  // shade the stretches where readings are missing
  ctx.fillStyle = palette.gap;
  const tsOf = new Map(readings.map((r) => [r.seq, r.ts]));
  for (const gap of findGaps(readings)) {
    const a = x(tsOf.get(gap.after));
    const b = x(tsOf.get(gap.before));
    if (b > a) {
      ctx.fillRect(a, plot.top, b - a, plot.height);
    }
  }

  const runs = segments(readings, maxStep);

  clipToPlot(ctx, plot);
  if (focus) {
    focusLine(ctx, palette, plot, x(focus.ts));
  }
  ctx.strokeStyle = palette.line;
  ctx.fillStyle = palette.line;
  ctx.lineWidth = readings.length > plot.width ? 1 : 1.5; // dense data: thinner line
  ctx.lineJoin = "round";
  for (const run of runs) {
    if (run.length === 1) {
      dot(ctx, x(run[0].ts), y(run[0].value), 2);
      continue;
    }
    ctx.beginPath();
    run.forEach((r, i) => (i === 0 ? ctx.moveTo(x(r.ts), y(r.value)) : ctx.lineTo(x(r.ts), y(r.value))));
    ctx.stroke();
  }
  const newest = readings[readings.length - 1];
  if (newest && relative) {
    dot(ctx, x(newest.ts), y(newest.value), 3.5);
  }
  if (focus) {
    dot(ctx, x(focus.ts), y(focus.value), 4);
  }
  ctx.restore();
}

/**
 * The bucket chart: per bucket (`{t, count, min, max, mean}`, `step` seconds wide, oldest
 * first) the min–max envelope, shaded, and the mean as a line, both drawn at the
 * bucket's middle. Where no bucket is, the line and the envelope stop and the stretch is
 * shaded. `focus`: a bucket to mark; `live`: mark the newest mean with a dot.
 */
export function drawBucketChart(canvas, { buckets, step, fromTs, toTs, lo, hi, live = false, focus = null }) {
  const { ctx, width, height, palette } = prepare(canvas);
  const plot = plotArea(width, height, fromTs, toTs);
  const { x } = plot;
  const y = valueAxis(ctx, palette, plot, lo, hi);
  timeAxis(ctx, palette, plot, fromTs, toTs, false);
  const middle = (b) => x(b.t + step / 2);
  const stepWidth = Math.max(1.5, x(fromTs + step) - x(fromTs));

  clipToPlot(ctx, plot);
  ctx.fillStyle = palette.gap;
  for (const gap of bucketGaps(buckets, step)) {
    ctx.fillRect(x(gap.from), plot.top, x(gap.to) - x(gap.from), plot.height);
  }

  const runs = bucketRuns(buckets, step);
  ctx.fillStyle = palette.envelope;
  for (const run of runs) {
    if (run.length === 1) { // a lone bucket: a bar as wide as the bucket
      const [b] = run;
      ctx.fillRect(middle(b) - stepWidth / 2, y(b.max), stepWidth, Math.max(1, y(b.min) - y(b.max)));
      continue;
    }
    ctx.beginPath();
    run.forEach((b, i) => (i === 0 ? ctx.moveTo(middle(b), y(b.max)) : ctx.lineTo(middle(b), y(b.max))));
    for (let i = run.length - 1; i >= 0; i -= 1) {
      ctx.lineTo(middle(run[i]), y(run[i].min));
    }
    ctx.closePath();
    ctx.fill();
  }

  ctx.strokeStyle = palette.line;
  ctx.fillStyle = palette.line;
  ctx.lineWidth = 1.5;
  ctx.lineJoin = "round";
  for (const run of runs) {
    if (run.length === 1) {
      dot(ctx, middle(run[0]), y(run[0].mean), 2);
      continue;
    }
    ctx.beginPath();
    run.forEach((b, i) => (i === 0 ? ctx.moveTo(middle(b), y(b.mean)) : ctx.lineTo(middle(b), y(b.mean))));
    ctx.stroke();
  }
  const newest = buckets[buckets.length - 1];
  if (newest && live) {
    dot(ctx, middle(newest), y(newest.mean), 3.5);
  }
  if (focus) { // the marked bucket: its own min–max bar, stronger, and a line through it
    focusLine(ctx, palette, plot, middle(focus));
    ctx.globalAlpha = 0.45;
    ctx.fillRect(middle(focus) - Math.max(3, stepWidth) / 2, y(focus.max), Math.max(3, stepWidth),
      Math.max(1, y(focus.min) - y(focus.max)));
    ctx.globalAlpha = 1;
    dot(ctx, middle(focus), y(focus.mean), 4);
  }
  ctx.restore();
}

/**
 * The histogram of counts per value from `lo`, with the uniform expectation
 * count / bins as a line and a band of two standard deviations around it.
 */
export function drawHistogram(canvas, { histogram, lo, edges = null }) {
  // With `edges` (a source without a declared range): bins over the observed values,
  // and no uniform expectation to draw.
  const uniform = edges === null;
  const { ctx, width, height, palette } = prepare(canvas);
  const left = 48;
  const right = 12;
  const top = 10;
  const bottom = 24;
  const plotWidth = Math.max(1, width - left - right);
  const plotHeight = Math.max(1, height - top - bottom);
  const bins = histogram.length;
  const count = histogram.reduce((a, b) => a + b, 0);
  const expected = count / bins;
  const spread = 2 * Math.sqrt(count * (1 / bins) * (1 - 1 / bins));
  const peak = Math.max(1, expected + spread, ...histogram) * 1.05;
  const y = (n) => top + (1 - n / peak) * plotHeight;
  const barWidth = plotWidth / bins;

  ctx.lineWidth = 1;
  ctx.strokeStyle = palette.grid;
  ctx.fillStyle = palette.text;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const n of ticks(0, peak, 3).filter((v) => Number.isInteger(v))) {
    const py = Math.round(y(n)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, py);
    ctx.lineTo(left + plotWidth, py);
    ctx.stroke();
    ctx.fillText(n.toLocaleString("en"), left - 6, py);
  }

  if (count > 0 && uniform) {
    ctx.fillStyle = palette.band;
    const bandTop = y(expected + spread);
    const bandBottom = y(Math.max(0, expected - spread));
    ctx.fillRect(left, bandTop, plotWidth, bandBottom - bandTop);
  }

  ctx.fillStyle = palette.bar;
  const gapBetween = barWidth > 4 ? 1 : 0;
  histogram.forEach((n, i) => {
    if (n > 0) {
      const top0 = y(n);
      ctx.fillRect(left + i * barWidth, top0, Math.max(0.5, barWidth - gapBetween), top + plotHeight - top0);
    }
  });

  if (count > 0 && uniform) {
    const py = Math.round(y(expected)) + 0.5;
    ctx.strokeStyle = palette.expected;
    ctx.lineWidth = 2;
    ctx.setLineDash([6, 4]);
    ctx.beginPath();
    ctx.moveTo(left, py);
    ctx.lineTo(left + plotWidth, py);
    ctx.stroke();
    ctx.setLineDash([]);
  }

  ctx.fillStyle = palette.text;
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  if (!uniform) {
    if (edges.length >= 2) {
      const label = (v) => String(Number(v.toPrecision(4)));
      ctx.textAlign = "left";
      ctx.fillText(label(edges[0]), left, top + plotHeight + 6);
      ctx.textAlign = "right";
      ctx.fillText(label(edges[edges.length - 1]), left + plotWidth, top + plotHeight + 6);
    }
    return;
  }
  for (const value of ticks(lo, lo + bins - 1, Math.max(2, Math.min(5, Math.floor(plotWidth / 70))))) {
    if (Number.isInteger(value)) {
      const px = left + (value - lo + 0.5) * barWidth;
      ctx.fillText(String(value), px, top + plotHeight + 6);
    }
  }
}

function dot(ctx, px, py, radius) {
  ctx.beginPath();
  ctx.arc(px, py, radius, 0, 2 * Math.PI);
  ctx.fill();
}

/** Seconds between relative x labels: round steps, at least ~100 px apart. */
function relativeStep(span, plotWidth) {
  const steps = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
  const fits = steps.find((s) => (s / span) * plotWidth >= 100);
  return fits ?? span;
}

// Steps between clock labels, seconds: round on a clock or a calendar.
const CLOCK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
  86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400, 91 * 86400, 182 * 86400, 364 * 86400];

/**
 * Labels for a time axis over [from, to] on the viewer's clock, at least ~100 px apart on
 * a plot this wide: [{ts, label}]. Hours and days fall on the local clock's round hours
 * and midnights; a label at midnight (or a step of days) is the date.
 */
export function timeTicks(from, to, plotWidth, minGap = 100) {
  const span = to - from;
  if (!(span > 0)) {
    return [];
  }
  const step = CLOCK_STEPS.find((s) => (s / span) * plotWidth >= minGap) ?? CLOCK_STEPS[CLOCK_STEPS.length - 1];
  const out = [];
  const label = (ts) => {
    const d = new Date(ts * 1000);
    if (step >= 86400 || (d.getHours() === 0 && d.getMinutes() === 0 && d.getSeconds() === 0)) {
      return formatDate(ts);
    }
    return formatClock(ts, { seconds: step < 60 });
  };
  if (step < 3600) { // minutes and seconds: the same on every clock (but for odd zones)
    for (let ts = Math.ceil(from / step) * step; ts <= to + 1e-9; ts += step) {
      out.push({ ts, label: label(ts) });
    }
    return out;
  }
  const d = new Date(from * 1000);
  d.setHours(0, 0, 0, 0);
  if (step >= 7 * 86400) { // weeks and more: from a Monday
    d.setDate(d.getDate() - ((d.getDay() + 6) % 7));
  }
  while (d.getTime() / 1000 <= to + 1e-9 && out.length < 1000) {
    const ts = d.getTime() / 1000;
    if (ts >= from - 1e-9) {
      out.push({ ts, label: label(ts) });
    }
    if (step >= 86400) {
      d.setDate(d.getDate() + step / 86400);
    } else {
      d.setHours(d.getHours() + step / 3600);
    }
  }
  return out;
}

export function formatSpan(seconds) {
  if (seconds >= 60 && seconds % 60 === 0) {
    return `${seconds / 60} min`;
  }
  return `${Math.round(seconds)} s`;
}
