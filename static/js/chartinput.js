// The chart's pointer and keys. Pointing at the chart or focusing it marks a bucket (or a
// reading) for the readout; the arrow keys move along them, Home and End to the ends; a
// drag selects a stretch to zoom into; + and - zoom around the marked one, shift+arrows
// pan, Escape goes back to live. Knows the canvas and the selection box; the page says
// what is drawn (`drawn()`) and what each gesture does (the hooks).

import { nearestIndex } from "./buckets.js";

const DRAG_PX = 5; // a press that moves less is a click, not a selection
const REACH_PX = 8; // the pointer reads out an item at most this far away (or within its bucket)
export const PAN = 0.25; // shift+arrow pans a quarter of the view

export class ChartInput {
  focusTs = null; // the time of the marked item, or null

  /**
   * canvas: the chart; box: an element over it that shows a selection while dragging.
   * drawn(): {items, at(item) -> its time, plot (chart.js plotArea)} as drawn last.
   * hooks: changed(), announce(item), zoom(factor, at), pan(fraction), select(fromTs, toTs), live().
   */
  constructor(canvas, box, { drawn, hooks }) {
    this.canvas = canvas;
    this.box = box;
    this.drawn = drawn;
    this.hooks = hooks;
    this.drag = null; // {x0, x1, id} while the primary button is down
    canvas.addEventListener("pointermove", (e) => this.#move(e));
    canvas.addEventListener("pointerdown", (e) => this.#down(e));
    canvas.addEventListener("pointerup", (e) => this.#up(e));
    canvas.addEventListener("pointercancel", () => this.#endDrag());
    canvas.addEventListener("pointerleave", () => {
      if (this.drag === null && document.activeElement !== canvas) {
        this.#mark(null);
      }
    });
    canvas.addEventListener("keydown", (e) => this.#key(e));
    canvas.addEventListener("focus", () => {
      if (this.focusTs === null) {
        this.#step("End");
      }
    });
    canvas.addEventListener("blur", () => this.#mark(null));
  }

  /** The marked item among those drawn, or null (also when none is near the mark). */
  focused() {
    const { items, at, plot, step = 0 } = this.drawn();
    if (this.focusTs === null) {
      return null;
    }
    const i = nearestIndex(items, this.focusTs, at);
    const reach = Math.max(REACH_PX, plot.x(this.focusTs + step / 2) - plot.x(this.focusTs));
    if (i < 0 || Math.abs(plot.x(at(items[i])) - plot.x(this.focusTs)) > reach) {
      return null;
    }
    return items[i];
  }

  #x(event) {
    return event.clientX - this.canvas.getBoundingClientRect().left;
  }

  #mark(ts) {
    if (ts !== this.focusTs) {
      this.focusTs = ts;
      this.hooks.changed();
    }
  }

  #move(event) {
    const x = this.#x(event);
    const { plot } = this.drawn();
    if (this.drag !== null && event.pointerId === this.drag.id) {
      this.drag.x1 = Math.min(Math.max(x, plot.left), plot.left + plot.width);
      this.#showBox();
    }
    const inside = x >= plot.left && x <= plot.left + plot.width;
    this.#mark(inside ? plot.ts(x) : (document.activeElement === this.canvas ? this.focusTs : null));
  }

  #down(event) {
    if (event.button !== 0) {
      return;
    }
    const x = this.#x(event);
    const { plot } = this.drawn();
    if (x < plot.left || x > plot.left + plot.width) {
      return;
    }
    this.drag = { x0: x, x1: x, id: event.pointerId };
    this.canvas.setPointerCapture?.(event.pointerId);
  }

  #up(event) {
    const { drag } = this;
    if (drag === null || event.pointerId !== drag.id) {
      return;
    }
    this.#endDrag();
    if (Math.abs(drag.x1 - drag.x0) >= DRAG_PX) {
      const { plot } = this.drawn();
      this.hooks.select(plot.ts(drag.x0), plot.ts(drag.x1));
    }
  }

  #endDrag() {
    this.drag = null;
    this.box.hidden = true;
  }

  #showBox() {
    const { x0, x1 } = this.drag;
    if (Math.abs(x1 - x0) < DRAG_PX) {
      this.box.hidden = true;
      return;
    }
    // Positioned through the CSSOM, which the page's style policy allows.
    this.box.style.left = `${this.canvas.offsetLeft + Math.min(x0, x1)}px`;
    this.box.style.top = `${this.canvas.offsetTop}px`;
    this.box.style.width = `${Math.abs(x1 - x0)}px`;
    this.box.style.height = `${this.canvas.offsetHeight}px`;
    this.box.hidden = false;
  }

  /** Move the mark: "ArrowLeft", "ArrowRight", "Home", "End". */
  #step(key) {
    const { items, at } = this.drawn();
    if (items.length === 0) {
      return;
    }
    let i = this.focusTs === null ? items.length - 1 : nearestIndex(items, this.focusTs, at);
    if (key === "Home") {
      i = 0;
    } else if (key === "End") {
      i = items.length - 1;
    } else if (this.focusTs !== null) {
      i = Math.min(items.length - 1, Math.max(0, i + (key === "ArrowLeft" ? -1 : 1)));
    }
    this.#mark(at(items[i]));
    this.hooks.announce(items[i]);
  }

  #key(event) {
    if (event.altKey || event.ctrlKey || event.metaKey) {
      return;
    }
    const { key } = event;
    const at = this.focusTs ?? this.#middle();
    if ((key === "ArrowLeft" || key === "ArrowRight") && event.shiftKey) {
      this.hooks.pan(key === "ArrowLeft" ? -PAN : PAN);
    } else if (["ArrowLeft", "ArrowRight", "Home", "End"].includes(key)) {
      this.#step(key);
    } else if (key === "+" || key === "=") {
      this.hooks.zoom(0.5, at);
    } else if (key === "-" || key === "_") {
      this.hooks.zoom(2, at);
    } else if (key === "Escape") {
      this.hooks.live();
    } else {
      return;
    }
    event.preventDefault();
  }

  #middle() {
    const { plot } = this.drawn();
    return plot.ts(plot.left + plot.width / 2);
  }
}
