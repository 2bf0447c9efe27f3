// Canvas drawing for the line chart and the histogram. Colours come from CSS
// custom properties on the canvas, so light and dark themes need no code here.

import { findGaps, segments } from "./readings.js";

const FONT_SIZE = 12;

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

/**
 * The line chart of `readings` (sorted by seq) between `fromTs` and `toTs`
 * (epoch seconds), y over [lo, hi]. Consecutive seqs are joined; where seqs
 * are missing the line stops and the missing stretch is shaded.
 */
export function drawLineChart(canvas, { readings, fromTs, toTs, lo, hi, maxStep = Infinity }) {
  const { ctx, width, height, palette } = prepare(canvas);
  const left = 40;
  const right = 12;
  const top = 10;
  const bottom = 24;
  const plotWidth = Math.max(1, width - left - right);
  const plotHeight = Math.max(1, height - top - bottom);
  const span = Math.max(1e-9, toTs - fromTs);
  const yLo = lo;
  const yHi = hi > lo ? hi : lo + 1;
  const x = (ts) => left + ((ts - fromTs) / span) * plotWidth;
  const y = (value) => top + (1 - (value - yLo) / (yHi - yLo)) * plotHeight;

  // grid and y labels
  ctx.lineWidth = 1;
  ctx.strokeStyle = palette.grid;
  ctx.fillStyle = palette.text;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const value of ticks(yLo, yHi)) {
    const py = Math.round(y(value)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, py);
    ctx.lineTo(left + plotWidth, py);
    ctx.stroke();
    ctx.fillText(String(Number(value.toPrecision(6))), left - 6, py);
  }

  // x labels: seconds or minutes before the right edge
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const step = timeStep(span, plotWidth);
  for (let ago = 0; ago <= span + 1e-6; ago += step) {
    const px = x(toTs - ago);
    const label = ago === 0 ? "now" : `−${formatSpan(ago)}`;
    const half = ctx.measureText(label).width / 2;
    const clamped = Math.min(Math.max(px, left + half), left + plotWidth - half);
    ctx.fillText(label, clamped, top + plotHeight + 6);
  }

  // shade the stretches where readings are missing
  ctx.fillStyle = palette.gap;
  const tsOf = new Map(readings.map((r) => [r.seq, r.ts]));
  for (const gap of findGaps(readings)) {
    const a = x(tsOf.get(gap.after));
    const b = x(tsOf.get(gap.before));
    if (b > a) {
      ctx.fillRect(a, top, b - a, plotHeight);
    }
  }

  const runs = segments(readings, maxStep);

  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top - 4, plotWidth + 6, plotHeight + 8);
  ctx.clip();
  ctx.strokeStyle = palette.line;
  ctx.fillStyle = palette.line;
  ctx.lineWidth = readings.length > plotWidth ? 1 : 1.5; // dense data: thinner line
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
  if (newest) {
    dot(ctx, x(newest.ts), y(newest.value), 3.5);
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

/** Seconds between x labels: round steps, at least ~100 px apart. */
function timeStep(span, plotWidth) {
  const steps = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
  const fits = steps.find((s) => (s / span) * plotWidth >= 100);
  return fits ?? span;
}

export function formatSpan(seconds) {
  if (seconds >= 60 && seconds % 60 === 0) {
    return `${seconds / 60} min`;
  }
  return `${Math.round(seconds)} s`;
}
