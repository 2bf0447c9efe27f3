// The readings the page holds: sorted by seq, de-duplicated, bounded. Pure.

/** A reading as the server sends it, or null when it is not one. */
export function asReading(item) {
  if (item === null || typeof item !== "object") {
    return null;
  }
  const { seq, value, ts } = item;
  if (!Number.isInteger(seq) || !Number.isFinite(value) || !Number.isFinite(ts)) {
    return null;
  }
  return { seq, value, ts };
}

export class ReadingBuffer {
  #items = [];

  constructor(capacity) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError("capacity must be a positive integer");
    }
    this.capacity = capacity;
  }

  get size() {
    return this.#items.length;
  }

  get first() {
    return this.#items[0] ?? null;
  }

  get last() {
    return this.#items[this.#items.length - 1] ?? null;
  }

  get lastSeq() {
    return this.last?.seq ?? null;
  }

  clear() {
    this.#items = [];
  }

  /** The held reading with this seq, or null. */
  get(seq) {
    const i = this.#indexOf(seq);
    return i < this.#items.length && this.#items[i].seq === seq ? this.#items[i] : null;
  }

  /**
   * True when `reading` cannot belong to the stream held here: the same seq
   * with another value or time, or a seq below the newest that is not held
   * (a fresh server that started counting again).
   */
  conflicts(reading) {
    if (this.last === null || reading.seq > this.last.seq) {
      return false;
    }
    const held = this.get(reading.seq);
    if (held === null) {
      return reading.seq < this.first.seq;
    }
    return held.value !== reading.value || held.ts !== reading.ts;
  }

  /** Add readings (any order); returns how many were new. Oldest fall off past capacity. */
  merge(readings) {
    if (readings.length > 16) {
      return this.#mergeMany(readings);
    }
    let added = 0;
    for (const reading of readings) {
      const items = this.#items;
      if (items.length === 0 || reading.seq > items[items.length - 1].seq) {
        items.push(reading);
        added += 1;
        continue;
      }
      const i = this.#indexOf(reading.seq);
      if (i < items.length && items[i].seq === reading.seq) {
        continue;
      }
      items.splice(i, 0, reading);
      added += 1;
    }
    const excess = this.#items.length - this.capacity;
    if (excess > 0) {
      this.#items.splice(0, excess);
    }
    return added;
  }

  /** A batch (a history answer): sort it, then one pass through both lists. */
  #mergeMany(readings) {
    const incoming = [...readings].sort((a, b) => a.seq - b.seq);
    const items = this.#items;
    const merged = [];
    let i = 0;
    let j = 0;
    let added = 0;
    while (i < items.length || j < incoming.length) {
      if (j >= incoming.length || (i < items.length && items[i].seq <= incoming[j].seq)) {
        if (j < incoming.length && items[i].seq === incoming[j].seq) {
          j += 1; // already held
        }
        merged.push(items[i]);
        i += 1;
      } else {
        const reading = incoming[j];
        j += 1;
        if (merged.length === 0 || merged[merged.length - 1].seq !== reading.seq) {
          merged.push(reading);
          added += 1;
        }
      }
    }
    const excess = merged.length - this.capacity;
    this.#items = excess > 0 ? merged.slice(excess) : merged;
    return added;
  }

  /** Readings with seq <= `untilSeq` (all when null) and ts >= `fromTs`, oldest first. */
  window(fromTs, untilSeq = null) {
    const items = this.#items;
    let end = items.length;
    if (untilSeq !== null) {
      end = this.#indexOf(untilSeq + 1);
    }
    let start = end;
    while (start > 0 && items[start - 1].ts >= fromTs) {
      start -= 1;
    }
    return items.slice(start, end);
  }

  /** The newest `n` readings, oldest first. */
  latest(n) {
    return n > 0 ? this.#items.slice(-n) : [];
  }

  /** Readings with seq > `afterSeq`, oldest first. */
  after(afterSeq) {
    return this.#items.slice(this.#indexOf(afterSeq + 1));
  }

  /** The gaps inside what is held: [{after, before, missing}], oldest first. */
  gaps() {
    return findGaps(this.#items);
  }

  /** First index whose seq is >= `seq`. */
  #indexOf(seq) {
    let lo = 0;
    let hi = this.#items.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#items[mid].seq < seq) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  }
}

/** Gaps between consecutive readings (sorted by seq) whose seqs are not adjacent. */
export function findGaps(readings) {
  const gaps = [];
  for (let i = 1; i < readings.length; i += 1) {
    const before = readings[i - 1].seq;
    const after = readings[i].seq;
    if (after !== before + 1) {
      gaps.push({ after: before, before: after, missing: after - before - 1 });
    }
  }
  return gaps;
}

/**
 * Split readings (sorted by seq) into runs of consecutive seqs: one line each.
 * A run also ends where more than `maxStep` seconds pass between neighbours
 * (the server was down): nothing is missing there, but nothing happened either.
 */
export function segments(readings, maxStep = Infinity) {
  const runs = [];
  let run = [];
  for (const reading of readings) {
    const previous = run[run.length - 1];
    if (previous && (reading.seq !== previous.seq + 1 || reading.ts - previous.ts > maxStep)) {
      runs.push(run);
      run = [];
    }
    run.push(reading);
  }
  if (run.length) {
    runs.push(run);
  }
  return runs;
}
