// How many watch: "12 watching" beside the connection status, from the `viewers` event.
// Blank until the first count of a connection: a count from before a drop is stale, and
// the first one after a reconnect comes right after its `history`. Screen readers get
// words ("12 people watching this stream") where the eye gets the short text; it is no
// live region, so a count that changes every second interrupts no one.

import { formatCount } from "./format.js";

/** The count in a `viewers` payload, or null if it is not one. */
export function viewerCount(data) {
  const count = data?.count;
  return Number.isSafeInteger(count) && count >= 0 ? count : null;
}

export function viewersText(count) {
  return `${formatCount(count)} watching`;
}

export function viewersLabel(count) {
  return count === 1 ? "1 person watching this stream" : `${formatCount(count)} people watching this stream`;
}

/** The count's element: `box` (shown or hidden), its visible `text` and its spoken `label`. */
export class ViewerCount {
  #nodes;
  count = null;

  constructor(nodes) {
    this.#nodes = nodes;
    this.clear();
  }

  /** Show a `viewers` payload; a malformed one changes nothing. */
  show(data) {
    const count = viewerCount(data);
    if (count === null || count === this.count) {
      return;
    }
    const { box, text, label } = this.#nodes;
    this.count = count;
    text.textContent = viewersText(count);
    label.textContent = viewersLabel(count);
    box.dataset.count = String(count);
    box.hidden = false;
  }

  /** Disconnected: no count until the next connection says one. */
  clear() {
    const { box, text, label } = this.#nodes;
    this.count = null;
    box.hidden = true;
    text.textContent = "";
    label.textContent = "";
    box.dataset.count = "";
  }
}
