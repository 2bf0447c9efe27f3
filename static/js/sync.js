// The readings and statistics the page holds, kept in step with the server. Pure: the
// socket's send, the two HTTP fetches, the clock and the timers are handed in; nothing
// here touches the page. The page calls one method per thing that happens (connected,
// disconnected, a `history` answer, a live reading) and reads what is held.
//
// The rules: readings are merged by seq; a seq that jumps ahead asks the server for the
// missing ones with `resume` (once per seq and connection, at most 50 per connection);
// after a drop the CONNECT's auth says what is held, `{after: last seq, stream: its id}`;
// a `history` answer is merged and the newest hole the server can still fill is asked
// for; a snapshot shorter than the widest window is filled back once over HTTP; a
// `history` of another stream (its `stream.id` is not the one held: a swapped database, a
// fresh `:memory:` server) replaces what is held, and so does a reading that cannot belong
// to it (a server from before stream ids counting again); an HTTP answer of another stream
// is dropped. The
// statistics come from the server and count each later reading; a hole in them, or a
// failed fetch, fetches them again.

import { ReadingBuffer, asReading } from "./readings.js";
import { ObservedStats, StreamStats } from "./stats.js";

export const MAX_RESUMES_PER_CONNECTION = 50;
export const STATS_REFRESH_MS = 5 * 60000; // re-sync with the server now and then anyway
export const STATS_RETRY_MS = 2000;
export const BACKFILL_LIMIT = 10000; // readings per /api/history fetch, the server's own cap

/**
 * How many readings the page holds: enough for `span` seconds (the widest window) at this
 * interval, never below what the server sends on connect, never more than 50,000 however
 * small the interval.
 */
export function capacityFor(history, interval, span) {
  return Math.min(50000, Math.max(history, Math.ceil(span / interval) + 60));
}

/** The readings in a `history` event or an /api/history answer; anything else is dropped. */
export function readingsOf(body) {
  return Array.isArray(body?.readings) ? body.readings.map(asReading).filter(Boolean) : [];
}

/** The stream id a `history` event or /api/history answer names, or null if none. */
export function streamIdOf(body) {
  const id = body?.stream?.id;
  return typeof id === "string" && id !== "" ? id : null;
}

/** Runs `task` once, at the soonest of the moments asked for. */
class Soonest {
  #timer = null;
  #dueAt = Infinity;

  constructor(task, timers, now) {
    this.task = task;
    this.timers = timers;
    this.now = now;
  }

  /** In `delay` ms, unless it is already due sooner. */
  in(delay) {
    const dueAt = this.now() + delay;
    if (this.#timer !== null) {
      if (this.#dueAt <= dueAt) {
        return;
      }
      this.timers.clearTimeout(this.#timer);
    }
    this.#dueAt = dueAt;
    this.#timer = this.timers.setTimeout(() => {
      this.#timer = null;
      this.#dueAt = Infinity;
      this.task();
    }, delay);
  }
}

/**
 * The whole stream's statistics: the server's (GET /api/stats) plus each reading held
 * since. Fetched again when a reading is missing from them, every 5 minutes anyway, and
 * after a failure (every 2 s while connected).
 */
class StatsSync {
  current = null; // StreamStats or ObservedStats, null until fetched
  error = null; // why the last fetch failed, until one succeeds
  #inFlight = false;
  #fetch;

  constructor({ buffer, observed, getStats, isConnected, now, timers, changed }) {
    this.buffer = buffer;
    this.Stats = observed ? ObservedStats : StreamStats;
    this.getStats = getStats;
    this.isConnected = isConnected;
    this.changed = changed;
    this.#fetch = new Soonest(() => this.#load(), timers, now);
  }

  /** Fetch them in `delay` ms (0: now), unless a fetch is already due sooner. */
  fetch(delay = 0) {
    this.#fetch.in(delay);
  }

  /** Forget them (they are of another stream) and fetch them now. */
  reset() {
    this.current = null;
    this.fetch();
  }

  /** Count the readings held since; a hole among them fetches the server's shortly. */
  catchUp() {
    if (this.current && !this.current.catchUp(this.buffer.after(this.current.throughSeq ?? -Infinity))) {
      this.fetch(STATS_RETRY_MS);
    }
  }

  async #load() {
    if (this.#inFlight) {
      this.fetch(STATS_RETRY_MS);
      return;
    }
    this.#inFlight = true;
    try {
      const stats = this.Stats.fromServer(await this.getStats());
      if (stats === null) {
        throw new Error("unexpected answer");
      }
      const complete = stats.catchUp(this.buffer.after(stats.throughSeq ?? -Infinity));
      this.current = stats;
      this.error = null;
      this.fetch(complete ? STATS_REFRESH_MS : STATS_RETRY_MS);
    } catch (err) {
      this.error = err.message;
      this.fetch(this.isConnected() ? STATS_RETRY_MS : STATS_REFRESH_MS);
    } finally {
      this.#inFlight = false;
      this.changed();
    }
  }
}

export class Sync {
  lastUpdateMs = null; // when the newest reading arrived (client clock, ms)
  clockOffset = 0; // server ts minus client clock, seconds (from the last live reading)
  #resumeFrom = null; // the last seq held when the connection went away
  #stream = null; // the id of the stream the held readings are of, once known
  #asked = new Set(); // the `after`s asked for on this connection
  #backfilled = false;

  /**
   * settings: {lo, hi, interval, history, observed}, the page's; a `history` event's
   *   `stream` updates lo, hi and interval in it (and says so through the hooks).
   * capacity: readings held (capacityFor); span: the widest window, seconds.
   * send(name, data): emit to the server; isConnected(): whether the socket is open.
   * getStats(): Promise of /api/stats' JSON; getHistory(after, limit): of /api/history's.
   *   Both reject on failure (the stats' note shows the error's message).
   * now(): ms; timers: {setTimeout, clearTimeout}.
   * hooks: changed() (something to draw), startOver() (what is held was dropped),
   *   range(lo, hi) and interval(seconds) (the server's stream differs from the page's).
   * stream: the id of the stream the page was rendered from (its `hold` reading's), if any.
   */
  constructor({ settings, capacity, span, send, isConnected, getStats, getHistory, now, timers, hooks = {},
    stream = null }) {
    this.settings = settings;
    this.#stream = typeof stream === "string" && stream !== "" ? stream : null;
    this.buffer = new ReadingBuffer(capacity);
    this.span = span;
    this.send = send;
    this.isConnected = isConnected;
    this.getHistory = getHistory;
    this.now = now;
    this.hooks = hooks;
    this.stats = new StatsSync({
      buffer: this.buffer, observed: settings.observed, getStats, isConnected, now, timers,
      changed: () => this.hooks.changed?.(),
    });
  }

  /** The reading the server rendered into the page: held until the snapshot comes. */
  hold(item) {
    const reading = asReading(item);
    if (reading) {
      this.buffer.merge([reading]);
    }
  }

  /** The id of the stream the held readings are of (null until a server said it). */
  get stream() {
    return this.#stream;
  }

  /**
   * The namespace CONNECT's payload: back after a drop it says what is held, and of which
   * stream, and the server answers with the readings since then instead of its whole
   * snapshot (unless it is another stream now).
   */
  auth() {
    if (this.#resumeFrom === null) {
      return undefined;
    }
    return this.#stream === null ? { after: this.#resumeFrom } : { after: this.#resumeFrom, stream: this.#stream };
  }

  connected() {
    // What the CONNECT asked for counts as asked: its answer may come after live readings.
    this.#asked = new Set(this.#resumeFrom === null ? [] : [this.#resumeFrom]);
    this.stats.fetch();
  }

  disconnected() {
    this.#resumeFrom = this.buffer.lastSeq;
  }

  /**
   * A `history` event: the snapshot on connect, or the answer to a resume. Returns the
   * promise of the backfill it may start (resolved when that is done, never rejected).
   */
  history(data) {
    const stream = streamIdOf(data);
    if (stream !== null && stream !== this.#stream) {
      if (this.#stream !== null) {
        this.#startOver(); // its seqs count another stream's readings: none of ours go with them
      }
      this.#stream = stream;
    }
    if (data?.stream) {
      this.#applyStream(data.stream);
    }
    const readings = readingsOf(data);
    // Readings older than all held are no contradiction in an answer that also holds a held
    // one unchanged (the snapshot after the reading rendered into the page).
    const first = this.buffer.first?.seq ?? null;
    const anchored = readings.some((r) => this.buffer.get(r.seq) !== null && !this.buffer.conflicts(r));
    if (readings.some((r) => this.buffer.conflicts(r) && !(anchored && r.seq < first))) {
      this.#startOver();
    }
    this.#ingest(readings, false);
    this.#fillHoles();
    return this.#backfill();
  }

  /** A live `random_number`. */
  reading(data) {
    const reading = asReading(data);
    if (reading === null) {
      return;
    }
    if (this.buffer.conflicts(reading)) {
      this.#startOver();
    }
    const previous = this.buffer.lastSeq;
    this.#ingest([reading], true);
    if (previous !== null && reading.seq > previous + 1) {
      this.#askResume(previous); // readings went missing on the way: ask for them
    }
  }

  /** The server's stream differs from what is held (a fresh server without the old data). */
  #startOver() {
    this.#backfilled = false;
    this.buffer.clear();
    this.#resumeFrom = null;
    this.stats.reset();
    this.hooks.startOver?.();
  }

  /** Ask for the readings after `after`, once per connection and never unboundedly often. */
  #askResume(after) {
    if (this.#asked.has(after) || this.#asked.size >= MAX_RESUMES_PER_CONNECTION) {
      return;
    }
    this.#asked.add(after);
    this.send("resume", { after });
  }

  /**
   * Ask for the newest hole in what is held that the server can still fill (it answers
   * from its last `history` readings); what never comes stays a gap.
   */
  #fillHoles() {
    if (!this.isConnected() || this.buffer.lastSeq === null) {
      return;
    }
    const reachable = this.buffer.lastSeq - this.settings.history;
    const gaps = this.buffer.gaps().filter((gap) => gap.before > reachable);
    for (let i = gaps.length - 1; i >= 0; i -= 1) {
      if (!this.#asked.has(gaps[i].after)) {
        this.#askResume(gaps[i].after);
        return;
      }
    }
  }

  /**
   * The snapshot on connect holds `history` readings; with a short interval that is less
   * than the widest window. Fetch the older ones once over HTTP.
   */
  async #backfill() {
    const { first, last } = this.buffer;
    if (this.#backfilled || first === null || first.seq <= 1) {
      return;
    }
    this.#backfilled = true;
    const wanted = Math.ceil((first.ts - (last.ts - this.span)) / this.settings.interval);
    const limit = Math.min(wanted, this.buffer.capacity - this.buffer.size, first.seq - 1, BACKFILL_LIMIT);
    if (limit <= 0) {
      return;
    }
    try {
      const answer = await this.getHistory(first.seq - 1 - limit, limit);
      const stream = streamIdOf(answer);
      const older = readingsOf(answer);
      // Not if they are of another stream, or contradict what is held now (the server
      // started over meanwhile).
      if ((stream === null || stream === this.#stream)
          && !older.some((r) => this.buffer.conflicts(r) && r.seq >= this.buffer.first.seq)) {
        this.#ingest(older.filter((r) => r.seq < first.seq), false);
      }
    } catch {
      // older readings are a nicety: the chart shows what it has
    }
  }

  #applyStream(stream) {
    const { settings } = this;
    const lo = Number.isInteger(stream.min) ? stream.min : settings.lo;
    const hi = Number.isInteger(stream.max) ? stream.max : settings.hi;
    const interval = Number.isFinite(stream.interval) && stream.interval > 0 ? stream.interval : settings.interval;
    if (!settings.observed && (lo !== settings.lo || hi !== settings.hi)) {
      settings.lo = lo;
      settings.hi = hi;
      this.hooks.range?.(lo, hi);
      this.stats.reset();
    }
    if (interval !== settings.interval) {
      settings.interval = interval;
      this.hooks.interval?.(interval);
    }
  }

  #ingest(readings, live) {
    const newestBefore = this.buffer.lastSeq;
    if (this.buffer.merge(readings) === 0) {
      return;
    }
    const newest = this.buffer.last;
    if (newestBefore === null || newest.seq > newestBefore) {
      const now = this.now();
      if (live) {
        this.lastUpdateMs = now;
        this.clockOffset = newest.ts - now / 1000;
      } else {
        this.lastUpdateMs = Math.min(now, newest.ts * 1000);
      }
    }
    this.stats.catchUp();
    this.hooks.changed?.();
  }
}
