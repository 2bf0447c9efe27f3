// Timers driven by hand, for the unit tests of modules that take setTimeout/clearTimeout.

/** advance(ms) fires what is due, in order; `now` (ms) moves with it. */
export class FakeTimers {
  pending = new Map();
  nextId = 1;

  constructor(now = 0) {
    this.now = now;
  }

  setTimeout = (fn, ms) => {
    const id = this.nextId++;
    this.pending.set(id, { at: this.now + ms, fn });
    return id;
  };

  clearTimeout = (id) => {
    this.pending.delete(id);
  };

  advance(ms) {
    const until = this.now + ms;
    for (;;) {
      const due = [...this.pending.entries()].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) {
        break;
      }
      this.pending.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
    }
    this.now = until;
  }

  /** When the pending timers are due, soonest first, relative to now. */
  dueIn() {
    return [...this.pending.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }
}
