import { describe, expect, it } from 'vitest';

import { outlines } from '../../src/mesh';
import type { Feature } from '../../src/types';

type P = [number, number];
const polygon = (id: string, ring: P[], properties: Record<string, unknown> = {}): Feature => ({
  type: 'Feature',
  id,
  geometry: { type: 'Polygon', coordinates: [ring] },
  properties,
});
// Two grid cells side by side, sharing their edge x = 116.01 (the right cell drawn the other way round).
const X = 116;
const Y = 39.9;
const D = 0.01;
const left = polygon('left', [[X, Y], [X + D, Y], [X + D, Y + D], [X, Y + D], [X, Y]], { rank: 1, level: 'street' });
const right = polygon('right', [[X + D, Y], [X + D, Y + D], [X + 2 * D, Y + D], [X + 2 * D, Y], [X + D, Y]], { rank: 3, level: 'district' });
const rankOf = (f: Feature) => Number(f.properties.rank ?? 0);

/** A line's end points, in a fixed order, to compare lines whatever their direction. */
const ends = (f: Feature) =>
  (f.geometry.coordinates as P[])
    .map((p) => p.join(','))
    .sort()
    .join(' ');
const shared = [`${X + D},${Y}`, `${X + D},${Y + D}`].sort().join(' ');

describe('outlines', () => {
  it('draws an edge two polygons share once, whichever way each runs', () => {
    const { lines, keys } = outlines([left, right], rankOf);
    expect(lines.features).toHaveLength(7);
    expect(keys.size).toBe(7);
    expect(lines.features.filter((f) => ends(f) === shared)).toHaveLength(1);
    for (const f of lines.features) {
      expect(f.geometry.type).toBe('LineString');
      expect(f.geometry.coordinates).toHaveLength(2);
    }
  });

  it('gives a shared edge the highest rank among its polygons, with that polygon’s level', () => {
    for (const order of [[left, right], [right, left]]) {
      const line = outlines(order, rankOf).lines.features.find((f) => ends(f) === shared)!;
      expect(line.properties).toEqual({ rank: 3, level: 'district' });
    }
    const own = outlines([left, right], rankOf).lines.features.filter((f) => ends(f) !== shared);
    expect(own.map((f) => f.properties.rank).sort()).toEqual([1, 1, 1, 3, 3, 3]);
  });

  it('leaves out edges drawn by an earlier call', () => {
    const regions = outlines([right], rankOf);
    const grids = outlines([left], () => 0, regions.keys);
    expect(grids.lines.features).toHaveLength(3);
    expect(grids.lines.features.some((f) => ends(f) === shared)).toBe(false);
    expect(grids.keys.size).toBe(3);
  });

  it('merges vertices within about a centimetre, and no further', () => {
    const near = polygon('near', [[X + D + 2e-8, Y], [X + D, Y + D - 2e-8], [X + 2 * D, Y + D], [X + D + 2e-8, Y]]);
    expect(outlines([left, near], rankOf).lines.features).toHaveLength(4 + 2);
    const far = polygon('far', [[X + D + 1e-6, Y], [X + D, Y + D], [X + 2 * D, Y + D], [X + D + 1e-6, Y]]);
    expect(outlines([left, far], rankOf).lines.features).toHaveLength(4 + 3);
  });

  it('skips repeated vertices rather than drawing zero-length lines', () => {
    const repeated = polygon('r', [[X, Y], [X, Y], [X + D, Y], [X + D, Y + D], [X + D, Y + D], [X, Y]]);
    expect(outlines([repeated], rankOf).lines.features).toHaveLength(3);
  });

  it('draws the holes of polygons and every part of a multipolygon, and nothing of other shapes', () => {
    const holed = polygon('holed', [[X, Y], [X + 3 * D, Y], [X + 3 * D, Y + 3 * D], [X, Y]]);
    (holed.geometry.coordinates as P[][]).push([[X + D, Y + D], [X + 2 * D, Y + D], [X + D, Y + 2 * D], [X + D, Y + D]]);
    expect(outlines([holed], rankOf).lines.features).toHaveLength(6);
    const multi: Feature = {
      type: 'Feature',
      id: 'm',
      geometry: { type: 'MultiPolygon', coordinates: [left.geometry.coordinates, right.geometry.coordinates] },
      properties: {},
    };
    const road: Feature = { type: 'Feature', id: 'road', geometry: { type: 'LineString', coordinates: [[X, Y], [X + D, Y]] }, properties: {} };
    const { lines } = outlines([multi, road], rankOf);
    expect(lines.features).toHaveLength(7);
    // No level on the polygon: null, so that a style expression can test for it.
    expect(lines.features.every((f) => f.properties.level === null && f.properties.rank === 0)).toBe(true);
  });
});
