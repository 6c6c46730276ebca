import type maplibregl from 'maplibre-gl';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { DrawTool, metresWide, type DrawHooks, type LngLat } from '../../src/draw';

/** Where a pointer event lands: a vertex or a midpoint of the drawing, or the bare map. */
interface Point {
  x: number;
  y: number;
  vertex?: number;
  mid?: number;
}
type Handler = (event: unknown) => void;

// Pixels are 1e5 per degree: 6 pixels, the double-click tolerance, are 6e-5 degrees.
const PX = 1e5;

class FakeMap {
  readonly handlers = new Map<string, Handler>();
  readonly canvas = { style: { cursor: '' } };
  readonly doubleClickZoom = { enable: vi.fn(), disable: vi.fn() };
  drawn: GeoJSON.Feature[] = [];
  getCenter() {
    return { lat: 40 };
  }
  addSource() {}
  addLayer() {}
  moveLayer() {}
  setPaintProperty() {}
  getSource() {
    return { setData: (data: GeoJSON.FeatureCollection) => (this.drawn = data.features) };
  }
  getCanvas() {
    return this.canvas;
  }
  on(type: string, handler: Handler) {
    this.handlers.set(type, handler);
  }
  off(type: string) {
    this.handlers.delete(type);
  }
  project(p: LngLat) {
    return { x: p[0] * PX, y: p[1] * PX };
  }
  queryRenderedFeatures(point: Point, options: { layers: string[] }) {
    const index = options.layers[0] === 'draw-vertex' ? point.vertex : point.mid;
    return index === undefined ? [] : [{ properties: { index } }];
  }
  /** A pointer event at `at`, on a vertex or a midpoint when given. */
  fire(type: string, at: LngLat, on: { vertex?: number; mid?: number } = {}) {
    this.handlers.get(type)?.({
      point: { x: at[0] * PX, y: at[1] * PX, ...on },
      lngLat: { lng: at[0], lat: at[1] },
      originalEvent: { button: type === 'contextmenu' ? 2 : 0, preventDefault() {} },
      preventDefault() {},
    });
  }
  roles(role: string) {
    return this.drawn.filter((f) => f.properties?.role === role);
  }
}

// Keys reach the tool through a capturing listener on the document.
let onKey: ((event: unknown) => void) | null = null;
class FakeElement {
  constructor(readonly tagName: string) {}
}
const key = (name: string, target: unknown = null) => onKey?.({ key: name, target, stopPropagation() {}, preventDefault() {} });

beforeEach(() => {
  onKey = null;
  vi.stubGlobal('HTMLElement', FakeElement);
  vi.stubGlobal('document', {
    addEventListener: (_: string, handler: (event: unknown) => void) => (onKey = handler),
    removeEventListener: () => (onKey = null),
  });
});
afterEach(() => vi.unstubAllGlobals());

function tool() {
  const map = new FakeMap();
  const draw = new DrawTool(map as unknown as maplibregl.Map);
  const hooks = { changed: vi.fn(), finished: vi.fn(), cancelled: vi.fn() } satisfies DrawHooks;
  return { map, draw, hooks };
}
const A: LngLat = [116.1, 39.9];
const B: LngLat = [116.2, 39.9];
const C: LngLat = [116.2, 40.0];
const D: LngLat = [116.1, 40.0];

describe('metresWide', () => {
  // MapLibre's 512-pixel world: metres per pixel at zoom z and latitude φ.
  const metresPerPixel = (zoom: number, lat: number) => ((40_075_016.686 / 512) * Math.cos((lat * Math.PI) / 180)) / 2 ** zoom;
  /** The expression's value at `zoom` (exponential base 2 between its two stops). */
  const widthAt = (expression: unknown[], zoom: number) => {
    const [, , , z0, v0, z1, v1] = expression as [string, unknown, unknown, number, number, number, number];
    return v0 * (v1 / v0) ** ((zoom - z0) / (z1 - z0));
  };

  it('draws the same number of metres at every zoom and latitude', () => {
    for (const lat of [0, 39.9, 60]) {
      const expression = metresWide(25, lat);
      for (const zoom of [0, 10, 15.5, 24]) expect(widthAt(expression, zoom) * metresPerPixel(zoom, lat)).toBeCloseTo(25, 6);
    }
  });

  it('scales a width read from the feature', () => {
    const expression = metresWide(['get', 'width_m'], 0);
    const plain = metresWide(1, 0);
    expect(expression[4]).toEqual(['*', ['get', 'width_m'], plain[4]]);
    expect(expression[6]).toEqual(['*', ['get', 'width_m'], plain[6]]);
  });
});

describe('DrawTool', () => {
  it('draws a polygon by clicks and ends on a click on its first point', () => {
    const { map, draw, hooks } = tool();
    draw.start('polygon', hooks);
    map.fire('click', A);
    map.fire('click', B);
    // Two points make no polygon: a click on the first one is not the end yet.
    map.fire('click', A, { vertex: 0 });
    expect(draw.drawing).toBe(true);
    expect(draw.count).toBe(2);
    map.fire('click', C);
    map.fire('click', A, { vertex: 0 });
    expect(draw.drawing).toBe(false);
    expect(draw.active).toBe(true);
    expect(hooks.changed).toHaveBeenCalledTimes(3);
    expect(hooks.finished).toHaveBeenCalledTimes(1);
    expect(draw.geometry()).toEqual({ type: 'Polygon', coordinates: [[A, B, C, A]] });
  });

  it('keeps one point of the two a double-click adds', () => {
    const { map, draw, hooks } = tool();
    draw.start('polygon', hooks);
    for (const p of [A, B, C, [C[0] + 2e-5, C[1]] as LngLat]) map.fire('click', p);
    map.fire('dblclick', C);
    expect(draw.geometry()).toEqual({ type: 'Polygon', coordinates: [[A, B, C, A]] });
    expect(hooks.finished).toHaveBeenCalledTimes(1);
  });

  it('keeps a last point that is more than a few pixels from the one before', () => {
    const { map, draw, hooks } = tool();
    draw.start('polygon', hooks);
    for (const p of [A, B, C, D]) map.fire('click', p);
    map.fire('dblclick', D);
    expect(draw.count).toBe(4);
  });

  it('needs two points for a line and three for a polygon', () => {
    const { map, draw, hooks } = tool();
    draw.start('line', hooks);
    map.fire('click', A);
    expect(draw.geometry()).toBeNull();
    expect(draw.finish()).toBe(false);
    map.fire('click', B);
    expect(draw.finish()).toBe(true);
    expect(draw.geometry()).toEqual({ type: 'LineString', coordinates: [A, B] });
    draw.start('polygon', hooks, [A, B]);
    expect(draw.drawing).toBe(true);
    expect(draw.geometry()).toBeNull();
  });

  it('saves points to seven decimals', () => {
    const { draw, hooks } = tool();
    draw.start('polygon', hooks, [
      [116.123456789, 39.987654321],
      [116.2, 39.9],
      [0.1 + 0.2, 40],
    ]);
    const ring = (draw.geometry() as GeoJSON.Polygon).coordinates[0];
    expect(ring[0]).toEqual([116.1234568, 39.9876543]);
    expect(ring[2]).toEqual([0.3, 40]);
  });

  it('takes back the last point on Backspace, but not while typing in a field', () => {
    const { map, draw, hooks } = tool();
    draw.start('polygon', hooks);
    map.fire('click', A);
    map.fire('click', B);
    key('Backspace', new FakeElement('INPUT'));
    expect(draw.count).toBe(2);
    key('Backspace', new FakeElement('CANVAS'));
    expect(draw.count).toBe(1);
    expect(hooks.changed).toHaveBeenCalledTimes(3);
  });

  it('ends on Enter and cancels on Esc, even from a field, telling its owner', () => {
    const { map, draw, hooks } = tool();
    draw.start('line', hooks);
    map.fire('click', A);
    map.fire('click', B);
    key('Enter');
    expect(hooks.finished).toHaveBeenCalledTimes(1);
    key('Escape', new FakeElement('INPUT'));
    expect(hooks.cancelled).toHaveBeenCalledTimes(1);
    expect(draw.active).toBe(false);
    expect(draw.geometry()).toBeNull();
    expect(onKey).toBeNull();
  });

  it('cancels the drawing in progress when another starts', () => {
    const { draw, hooks } = tool();
    const next = { cancelled: vi.fn() };
    draw.start('polygon', hooks, [A, B, C]);
    draw.start('line', next);
    expect(hooks.cancelled).toHaveBeenCalledTimes(1);
    expect(next.cancelled).not.toHaveBeenCalled();
  });

  it('removes a point on right-click, but never below a shape while editing', () => {
    const { map, draw, hooks } = tool();
    draw.start('polygon', hooks, [A, B, C, D]);
    map.fire('contextmenu', B, { vertex: 1 });
    expect(draw.geometry()).toEqual({ type: 'Polygon', coordinates: [[A, C, D, A]] });
    map.fire('contextmenu', C, { vertex: 1 });
    expect(draw.count).toBe(3);
    expect(hooks.changed).toHaveBeenCalledTimes(1);
  });

  it('adds a point by dragging the midpoint of a side', () => {
    const { map, draw, hooks } = tool();
    draw.start('polygon', hooks, [A, B, C]);
    // Editing: a midpoint on each side of the polygon (the closing one too).
    expect(map.roles('mid')).toHaveLength(3);
    map.fire('mousedown', [116.2, 39.95], { mid: 1 });
    const moved: LngLat = [116.25, 39.95];
    map.fire('mousemove', moved);
    map.fire('mouseup', moved);
    expect(draw.geometry()).toEqual({ type: 'Polygon', coordinates: [[A, B, moved, C, A]] });
    expect(hooks.changed).toHaveBeenCalledTimes(1);
  });

  it('moves a point by dragging it', () => {
    const { map, draw, hooks } = tool();
    draw.start('line', hooks, [A, B]);
    expect(map.roles('mid')).toHaveLength(1);
    map.fire('mousedown', A, { vertex: 0 });
    map.fire('mousemove', D);
    map.fire('mouseup', D);
    expect(draw.geometry()).toEqual({ type: 'LineString', coordinates: [D, B] });
  });

  it('shows the side to the pointer while drawing, and marks the first point to close on', () => {
    const { map, draw, hooks } = tool();
    draw.start('polygon', hooks);
    map.fire('click', A);
    map.fire('click', B);
    map.fire('mousemove', C);
    expect(map.roles('area')).toHaveLength(1);
    expect((map.roles('area')[0].geometry as GeoJSON.Polygon).coordinates[0]).toEqual([A, B, C, A]);
    expect(map.roles('vertex').map((f) => f.properties?.first)).toEqual([true, false]);
    expect(draw.count).toBe(2);
  });
});
