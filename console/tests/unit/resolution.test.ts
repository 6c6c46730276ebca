import type maplibregl from 'maplibre-gl';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { MotionResolution } from '../../src/resolution';

type Handler = () => void;

/** The part of a MapLibre map the resolution reads and sets. */
class FakeMap {
  readonly ratios: number[] = [];
  private readonly handlers = new Map<string, Set<Handler>>();
  constructor(private ratio: number) {}
  getPixelRatio(): number {
    return this.ratio;
  }
  setPixelRatio(ratio: number): void {
    this.ratio = ratio;
    this.ratios.push(ratio);
    // As MapLibre's own resize does.
    this.fire('movestart');
    this.fire('moveend');
  }
  on(type: string, handler: Handler): void {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type)!.add(handler);
  }
  off(type: string, handler: Handler): void {
    this.handlers.get(type)?.delete(handler);
  }
  fire(type: string): void {
    for (const handler of [...(this.handlers.get(type) ?? [])]) handler();
  }
  listening(): number {
    return [...this.handlers.values()].reduce((n, set) => n + set.size, 0);
  }
  get current(): number {
    return this.ratio;
  }
}

function setup(base = 2) {
  const map = new FakeMap(base);
  const resolution = new MotionResolution(map as unknown as maplibregl.Map);
  /** Frames `ms` apart while the map moves (the first only starts the clock after a change). */
  const frames = (count: number, ms: number) => {
    for (let i = 0; i < count; i++) {
      vi.advanceTimersByTime(ms);
      map.fire('render');
    }
  };
  return { map, resolution, frames };
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
  vi.stubGlobal('window', globalThis);
  localStorage.removeItem('cityward.resolution');
});
afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe('MotionResolution', () => {
  it('keeps full resolution while frames come fast', () => {
    const { map, resolution, frames } = setup();
    map.fire('movestart');
    frames(40, 16);
    expect(map.ratios).toEqual([]);
    expect(resolution.scale).toBe(1);
  });

  it('steps down to 3/4, then 1/2, of the pixel ratio while frames come slow, and no lower', () => {
    const { map, resolution, frames } = setup(2);
    map.fire('movestart');
    frames(9, 50);
    expect(map.current).toBe(1.5);
    expect(resolution.scale).toBe(0.75);
    // Our own resize fires movestart and moveend: the movement must go on being measured.
    frames(9, 50);
    expect(map.current).toBe(1);
    frames(30, 50);
    expect(map.ratios).toEqual([1.5, 1]);
    expect(resolution.lowest).toBe(0.5);
  });

  it('judges by the median frame, so a single hiccup does not lower it', () => {
    const { map, frames } = setup();
    map.fire('movestart');
    frames(5, 16);
    frames(1, 400);
    frames(3, 16);
    expect(map.ratios).toEqual([]);
  });

  it('is sharp again a little over a second after the map stops', () => {
    const { map, resolution, frames } = setup(1);
    map.fire('movestart');
    frames(9, 50);
    expect(map.current).toBe(0.75);
    map.fire('moveend');
    vi.advanceTimersByTime(1100);
    expect(map.current).toBe(0.75);
    vi.advanceTimersByTime(200);
    expect(map.current).toBe(1);
    expect(resolution.scale).toBe(1);
  });

  it('starts the next movement at the scale it learned, and stays there if it moves again soon', () => {
    const { map, frames } = setup(1);
    map.fire('movestart');
    frames(9, 50);
    map.fire('moveend');
    vi.advanceTimersByTime(2000);
    expect(map.current).toBe(1);
    map.fire('movestart');
    expect(map.current).toBe(0.75);
    map.fire('moveend');
    vi.advanceTimersByTime(500);
    map.fire('movestart');
    vi.advanceTimersByTime(2000);
    expect(map.current).toBe(0.75);
  });

  it('steps back up when frames come fast at a lower scale', () => {
    const { map, frames } = setup(1);
    map.fire('movestart');
    frames(18, 50);
    expect(map.current).toBe(0.5);
    frames(9, 10);
    expect(map.current).toBe(0.75);
  });

  it('does nothing when switched off for the session', () => {
    localStorage.setItem('cityward.resolution', 'full');
    const { map, frames } = setup();
    expect(map.listening()).toBe(0);
    map.fire('movestart');
    frames(30, 80);
    expect(map.ratios).toEqual([]);
  });

  it('stops listening when destroyed', () => {
    const { map, resolution } = setup();
    expect(map.listening()).toBe(3);
    resolution.destroy();
    expect(map.listening()).toBe(0);
  });
});
