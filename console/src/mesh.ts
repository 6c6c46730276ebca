// Outlines drawn once. Neighbouring grids share their edges, and a district's boundary is
// also a street's and a community's, so drawing every polygon's outline draws most edges
// two to six times, and lines are what costs most on a slow GPU. The city generator runs
// every outline through the lattice vertices on it, so shared edges are equal segments:
// here each segment becomes one two-point line, carrying the highest rank of the polygons
// that share it. Segments that are not shared exactly are simply kept.

import type { Feature, FeatureCollection } from './types';

type Position = [number, number];

/** A segment's key, the same in both directions; about a centimetre of tolerance. */
function key(a: Position, b: Position): string {
  const p = `${Math.round(a[0] * 1e7)},${Math.round(a[1] * 1e7)}`;
  const q = `${Math.round(b[0] * 1e7)},${Math.round(b[1] * 1e7)}`;
  return p < q ? `${p}|${q}` : `${q}|${p}`;
}

function rings(geometry: Feature['geometry']): Position[][] {
  if (geometry.type === 'Polygon') return geometry.coordinates as Position[][];
  if (geometry.type === 'MultiPolygon') return (geometry.coordinates as Position[][][]).flat();
  return [];
}

/**
 * The edges of the polygons in `layers`, each once, as LineStrings with the property
 * `rank` (the highest `rankOf` among the polygons sharing it) and `level` (that polygon's
 * `level` property, if any). Edges in `skip` (keys from an earlier call) are left out.
 */
export function outlines(
  features: Feature[],
  rankOf: (f: Feature) => number,
  skip?: Set<string>,
): { lines: FeatureCollection; keys: Set<string> } {
  const best = new Map<string, { a: Position; b: Position; rank: number; level: unknown }>();
  for (const f of features) {
    const rank = rankOf(f);
    for (const ring of rings(f.geometry)) {
      for (let i = 1; i < ring.length; i++) {
        const a = ring[i - 1];
        const b = ring[i];
        if (a[0] === b[0] && a[1] === b[1]) continue;
        const k = key(a, b);
        if (skip?.has(k)) continue;
        const held = best.get(k);
        if (!held || rank > held.rank) best.set(k, { a, b, rank, level: f.properties.level });
      }
    }
  }
  const lines: Feature[] = [];
  for (const [k, s] of best) {
    lines.push({ type: 'Feature', id: k, geometry: { type: 'LineString', coordinates: [s.a, s.b] }, properties: { rank: s.rank, level: s.level ?? null } });
  }
  return { lines: { type: 'FeatureCollection', features: lines }, keys: new Set(best.keys()) };
}
