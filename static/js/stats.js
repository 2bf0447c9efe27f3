// Statistics of the whole stream, kept in step with GET /api/stats. Pure.
//
// The server's snapshot gives the histogram over [lo, hi] and the seq it
// starts at; every later reading adds one count. Everything shown (count, min,
// max, mean, population standard deviation, chi-square and its p-value) is
// derived from the histogram, so it matches the server's numbers exactly up
// to floating-point rounding.

export class StreamStats {
  constructor(lo, hi) {
    this.lo = lo;
    this.hi = hi;
    this.histogram = new Array(hi - lo + 1).fill(0);
    this.count = 0;
    this.throughSeq = null; // the newest seq counted
  }

  /** Stats from the /api/stats JSON; null when it does not have the expected shape. */
  static fromServer(json) {
    const range = json?.range;
    if (!range || !Number.isInteger(range.min) || !Number.isInteger(range.max)) {
      return null;
    }
    const stats = new StreamStats(range.min, range.max);
    if (!Array.isArray(json.histogram) || json.histogram.length !== stats.histogram.length) {
      return null;
    }
    stats.histogram = json.histogram.map((n) => (Number.isInteger(n) && n > 0 ? n : 0));
    stats.count = stats.histogram.reduce((a, b) => a + b, 0);
    stats.throughSeq = throughSeqOf(json, stats.count);
    return stats;
  }

  clone() {
    const copy = new StreamStats(this.lo, this.hi);
    copy.histogram = this.histogram.slice();
    copy.count = this.count;
    copy.throughSeq = this.throughSeq;
    return copy;
  }

  /**
   * Count `reading` if it is the next one. Returns "added", "old" (already
   * counted) or "gap" (readings are missing in between: fetch the server's stats).
   */
  add(reading) {
    if (this.throughSeq !== null && reading.seq <= this.throughSeq) {
      return "old";
    }
    if (this.throughSeq !== null && reading.seq !== this.throughSeq + 1) {
      return "gap";
    }
    const index = Math.round(reading.value) - this.lo;
    if (index >= 0 && index < this.histogram.length) {
      this.histogram[index] += 1;
      this.count += 1;
    }
    this.throughSeq = reading.seq;
    return "added";
  }

  /** Add readings in seq order until the first gap; true when all were usable. */
  catchUp(readings) {
    for (const reading of readings) {
      if (this.add(reading) === "gap") {
        return false;
      }
    }
    return true;
  }

  summary() {
    return summarize(this.histogram, this.lo);
  }
}

/**
 * Statistics of a source without a declared integer range (GET /api/stats with
 * "kind": "observed"): count, min, max, mean and standard deviation, kept in
 * step with Welford's update; no uniformity test.
 */
export class ObservedStats {
  constructor() {
    this.count = 0;
    this.mean = 0;
    this.m2 = 0;
    this.min = null;
    this.max = null;
    this.throughSeq = null;
  }

  static fromServer(json) {
    if (json?.kind !== "observed" || !Number.isInteger(json.count) || json.count < 0) {
      return null;
    }
    const stats = new ObservedStats();
    stats.count = json.count;
    if (json.count > 0) {
      if (![json.mean, json.stddev, json.min, json.max].every(Number.isFinite)) {
        return null;
      }
      stats.mean = json.mean;
      stats.m2 = json.stddev ** 2 * json.count;
      stats.min = json.min;
      stats.max = json.max;
    }
    stats.throughSeq = throughSeqOf(json, stats.count);
    return stats;
  }

  clone() {
    return Object.assign(new ObservedStats(), this);
  }

  add(reading) {
    if (this.throughSeq !== null && reading.seq <= this.throughSeq) {
      return "old";
    }
    if (this.throughSeq !== null && reading.seq !== this.throughSeq + 1) {
      return "gap";
    }
    const v = reading.value;
    if (Number.isFinite(v)) {
      this.count += 1;
      const delta = v - this.mean;
      this.mean += delta / this.count;
      this.m2 += delta * (v - this.mean);
      this.min = this.min === null ? v : Math.min(this.min, v);
      this.max = this.max === null ? v : Math.max(this.max, v);
    }
    this.throughSeq = reading.seq;
    return "added";
  }

  catchUp(readings) {
    return StreamStats.prototype.catchUp.call(this, readings);
  }

  summary() {
    const some = this.count > 0;
    return {
      count: this.count, min: this.min, max: this.max,
      mean: some ? this.mean : null, stddev: some ? Math.sqrt(Math.max(0, this.m2) / this.count) : null,
      chiSquare: null, pValue: null,
    };
  }
}

/** {edges, counts}: equal bins over the values' span (one per integer for a few integers). */
export function binned(values, bins = 20) {
  if (values.length === 0) {
    return { edges: [], counts: [] };
  }
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  let edges;
  if (values.every(Number.isInteger) && hi - lo < bins) {
    edges = Array.from({ length: hi - lo + 2 }, (_, i) => lo + i - 0.5);
  } else if (hi === lo) {
    edges = [lo - 0.5, hi + 0.5];
  } else {
    const width = (hi - lo) / bins;
    edges = Array.from({ length: bins }, (_, i) => lo + i * width).concat([hi]);
  }
  const counts = new Array(edges.length - 1).fill(0);
  const span = edges[edges.length - 1] - edges[0];
  if (!(span > 0 && span < Infinity)) {
    return { edges: [edges[0], edges[edges.length - 1]], counts: [values.length] };
  }
  for (const v of values) {
    const i = Math.floor(((v - edges[0]) / span) * counts.length);
    counts[Math.min(Math.max(i, 0), counts.length - 1)] += 1;
  }
  return { edges, counts };
}

/** The newest seq a stats snapshot covers. */
function throughSeqOf(json, count) {
  for (const key of ["through_seq", "last_seq"]) {
    if (Number.isInteger(json[key])) {
      return json[key];
    }
  }
  // The server counts every reading from since_seq on, and seqs have no holes.
  if (Number.isInteger(json.since_seq) && count > 0) {
    return json.since_seq + count - 1;
  }
  return null;
}

/** {count, min, max, mean, stddev, chiSquare, pValue} of a histogram starting at `lo`. */
export function summarize(histogram, lo) {
  let count = 0;
  let sum = 0;
  let min = null;
  let max = null;
  histogram.forEach((n, i) => {
    if (n > 0) {
      count += n;
      sum += n * (lo + i);
      min = min === null ? lo + i : min;
      max = lo + i;
    }
  });
  if (count === 0) {
    return { count, min, max, mean: null, stddev: null, chiSquare: null, pValue: null };
  }
  const mean = sum / count;
  let squares = 0;
  histogram.forEach((n, i) => {
    squares += n * (lo + i - mean) ** 2;
  });
  const result = { count, min, max, mean, stddev: Math.sqrt(squares / count), chiSquare: null, pValue: null };
  if (histogram.length >= 2) {
    const expected = count / histogram.length;
    const chi = histogram.reduce((acc, n) => acc + (n - expected) ** 2, 0) / expected;
    result.chiSquare = chi;
    result.pValue = chiSquarePValue(chi, histogram.length - 1);
  }
  return result;
}

/** P(X >= x) for X ~ chi-square with `dof` degrees of freedom. */
export function chiSquarePValue(x, dof) {
  if (!(x > 0)) {
    return 1;
  }
  return upperGammaQ(dof / 2, x / 2);
}

/** Regularized upper incomplete gamma Q(a, x): series below a + 1, continued fraction above. */
export function upperGammaQ(a, x) {
  const logPrefactor = -x + a * Math.log(x) - logGamma(a);
  if (x < a + 1) {
    let term = 1 / a;
    let total = term;
    for (let n = a + 1; n < a + 1000; n += 1) {
      term *= x / n;
      total += term;
      if (Math.abs(term) < Math.abs(total) * 1e-15) {
        break;
      }
    }
    return Math.max(0, 1 - total * Math.exp(logPrefactor));
  }
  // Modified Lentz evaluation of the continued fraction.
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 1000; i += 1) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    d = Math.abs(d) < tiny ? tiny : d;
    c = b + an / c;
    c = Math.abs(c) < tiny ? tiny : c;
    d = 1 / d;
    const step = d * c;
    h *= step;
    if (Math.abs(step - 1) < 1e-15) {
      break;
    }
  }
  return Math.min(1, Math.exp(logPrefactor) * h);
}

// Lanczos approximation (g = 7, n = 9), accurate to ~1e-15 for a > 0.
const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
  -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6,
  1.5056327351493116e-7,
];

export function logGamma(z) {
  if (z < 0.5) {
    return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * z))) - logGamma(1 - z);
  }
  const zz = z - 1;
  let series = LANCZOS[0];
  for (let i = 1; i < LANCZOS.length; i += 1) {
    series += LANCZOS[i] / (zz + i);
  }
  const t = zz + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (zz + 0.5) * Math.log(t) - t + Math.log(series);
}
