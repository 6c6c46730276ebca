import { describe, expect, it } from 'vitest';

import { heatStops } from '../../src/heat';

// MapLibre's `interpolate` refuses stops that are not strictly increasing.
const strictlyIncreasing = (stops: number[]) => stops.every((s, i) => i === 0 || s > stops[i - 1]);

describe('heatStops', () => {
  it('is the smallest count, the quartiles and the largest', () => {
    const counts = Array.from({ length: 101 }, (_, i) => 100 - i);
    expect(heatStops(counts)).toEqual([0, 25, 50, 75, 100]);
  });

  it('has a scale for no cells', () => {
    expect(heatStops([])).toEqual([1, 2, 3, 4, 5]);
  });

  it('stays strictly increasing when counts repeat', () => {
    const same = heatStops([3, 3, 3, 3]);
    expect(strictlyIncreasing(same)).toBe(true);
    expect(same[0]).toBe(3);
    expect(same[4]).toBeCloseTo(3, 4);
    const skewed = heatStops([1, 1, 1, 1, 1, 1, 1, 1, 50]);
    expect(strictlyIncreasing(skewed)).toBe(true);
    expect(skewed[4]).toBe(50);
  });

  it('ignores counts that are not finite numbers, and leaves its input alone', () => {
    const counts = [Number.NaN, 5, Number.POSITIVE_INFINITY, 1];
    const stops = heatStops(counts);
    expect(stops[0]).toBe(1);
    expect(stops[4]).toBe(5);
    expect(strictlyIncreasing(stops)).toBe(true);
    expect(counts).toEqual([Number.NaN, 5, Number.POSITIVE_INFINITY, 1]);
  });
});
