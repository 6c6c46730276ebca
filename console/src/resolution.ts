// Resolution while the map moves. On a machine without a usable GPU (a thin client, a
// headless browser) WebGL runs in software and the cost of a frame is mostly the pixels it
// fills: a large city panned at full resolution falls to about 20 frames a second. While
// the map moves and its frames come slower than 30 a second, it renders at 3/4, then 1/2,
// of the screen's resolution; a little over a second after it stops, it is drawn sharp again.
// With a GPU frames stay fast and nothing changes. The scale found is kept for the next
// movement, so that it does not start slow again. `localStorage['cityward.resolution'] =
// 'full'` turns this off (to compare, or for screenshots of movement).

import type maplibregl from 'maplibre-gl';

const STEPS = [1, 0.75, 0.5];
/** Frame intervals (ms) above which the scale steps down, and below which it may step up. */
const SLOW_MS = 33;
const FAST_MS = 18;
const SAMPLE = 8;
const SETTLE_MS = 1200;

export class MotionResolution {
  /** The scale of the current frame (1: full resolution). */
  scale = 1;
  /** The lowest scale used so far (for the benchmark's report). */
  lowest = 1;
  private step = 0;
  private learned = 0;
  private moving = false;
  private last = 0;
  private intervals: number[] = [];
  private settle = 0;
  /** Set while our own resize runs: MapLibre's resize fires movestart and moveend itself. */
  private resizing = false;
  private readonly base: number;
  private readonly enabled: boolean;

  constructor(private readonly map: maplibregl.Map) {
    this.base = map.getPixelRatio();
    this.enabled = localStorage.getItem('cityward.resolution') !== 'full';
    if (!this.enabled) return;
    map.on('movestart', this.onStart);
    map.on('render', this.onRender);
    map.on('moveend', this.onEnd);
  }

  private apply(step: number): void {
    if (step === this.step) return;
    this.step = step;
    this.scale = STEPS[step];
    this.lowest = Math.min(this.lowest, this.scale);
    this.resizing = true;
    try {
      this.map.setPixelRatio(this.base * this.scale);
    } finally {
      this.resizing = false;
    }
  }

  private readonly onStart = () => {
    if (this.resizing) return;
    clearTimeout(this.settle);
    this.moving = true;
    this.last = 0;
    this.intervals = [];
    this.apply(this.learned);
  };

  private readonly onRender = () => {
    if (!this.moving) return;
    const now = performance.now();
    if (this.last) this.intervals.push(now - this.last);
    this.last = now;
    if (this.intervals.length < SAMPLE) return;
    const sorted = [...this.intervals].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    this.intervals = [];
    if (median > SLOW_MS && this.step < STEPS.length - 1) this.learned = this.step + 1;
    else if (median < FAST_MS && this.step > 0) this.learned = this.step - 1;
    if (this.learned === this.step) return;
    this.apply(this.learned);
    // The frame of the change is not a fair sample of the new scale.
    this.last = 0;
  };

  private readonly onEnd = () => {
    if (this.resizing) return;
    this.moving = false;
    clearTimeout(this.settle);
    this.settle = window.setTimeout(() => this.apply(0), SETTLE_MS);
  };

  destroy(): void {
    clearTimeout(this.settle);
    this.map.off('movestart', this.onStart);
    this.map.off('render', this.onRender);
    this.map.off('moveend', this.onEnd);
  }
}
