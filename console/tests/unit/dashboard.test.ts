import { describe, expect, it } from 'vitest';

import { OTHER, stackByCategory } from '../../src/dashboard';
import type { Stats } from '../../src/types';

type Rows = Stats['alerts_over_time'];
const H0 = '2030-01-01T00:00:00Z';
const H1 = '2030-01-01T01:00:00Z';
const H2 = '2030-01-01T02:00:00Z';
// Out of time order, and with a category twice in one bucket, as a node may send them.
const ROWS: Rows = [
  { bucket: H2, category: 'fire', count: 4 },
  { bucket: H0, category: 'fire', count: 6 },
  { bucket: H0, category: 'traffic', count: 6 },
  { bucket: H1, category: 'noise', count: 2 },
  { bucket: H1, category: 'noise', count: 1 },
  { bucket: H1, category: 'water', count: 1 },
  { bucket: H2, category: 'water', count: 0 },
];

describe('stackByCategory', () => {
  it('puts the buckets in time order', () => {
    expect(stackByCategory(ROWS).buckets).toEqual([H0, H1, H2]);
  });

  it('keeps the largest categories, largest first, and sums the rest as other', () => {
    const stack = stackByCategory(ROWS, 2);
    expect(stack.keys).toEqual(['fire', 'traffic', OTHER]);
    expect(stack.total('fire')).toBe(10);
    expect(stack.total('traffic')).toBe(6);
    expect(stack.total(OTHER)).toBe(4);
    expect(stack.value(H1, OTHER)).toBe(4);
    expect(stack.value(H1, 'fire')).toBe(0);
    expect(stack.value(H2, 'fire')).toBe(4);
  });

  // "Other" standing for a single category would hide its name for nothing.
  it('shows a single leftover category under its own name', () => {
    const stack = stackByCategory(ROWS, 3);
    expect(stack.keys).toEqual(['fire', 'traffic', 'noise', 'water']);
    expect(stack.keys).not.toContain(OTHER);
  });

  it('keeps nine categories by default and sums from the eleventh on', () => {
    const rows = (n: number): Rows => Array.from({ length: n }, (_, i) => ({ bucket: H0, category: `c${i}`, count: 100 - i }));
    expect(stackByCategory(rows(10)).keys).toHaveLength(10);
    const eleven = stackByCategory(rows(11));
    expect(eleven.keys).toEqual(['c0', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7', 'c8', OTHER]);
    expect(eleven.total(OTHER)).toBe(91 + 90);
  });

  it('loses no alert: each bucket’s stack adds up to its rows', () => {
    for (const max of [1, 2, 3, 9]) {
      const stack = stackByCategory(ROWS, max);
      for (const bucket of stack.buckets) {
        const stacked = stack.keys.reduce((sum, k) => sum + stack.value(bucket, k), 0);
        const sent = ROWS.filter((r) => r.bucket === bucket).reduce((sum, r) => sum + r.count, 0);
        expect(stacked, `${max} ${bucket}`).toBe(sent);
      }
      expect(stack.keys.reduce((sum, k) => sum + stack.total(k), 0)).toBe(20);
    }
  });
});
