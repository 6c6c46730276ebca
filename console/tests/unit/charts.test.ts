import { describe, expect, it } from 'vitest';

import { ticks } from '../../src/charts';

describe('ticks', () => {
  it('steps by 1, 2 or 5 times a power of ten, from 0 to the first tick at or above the maximum', () => {
    expect(ticks(7)).toEqual([0, 2, 4, 6, 8]);
    expect(ticks(10)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(ticks(100)).toEqual([0, 20, 40, 60, 80, 100]);
    expect(ticks(12345)).toEqual([0, 5000, 10000, 15000]);
    expect(ticks(50, 4)).toEqual([0, 20, 40, 60]);
  });

  // Counts are whole: an axis of 0, 0.2, 0.4… alerts would be nonsense.
  it('never steps by less than one', () => {
    expect(ticks(3)).toEqual([0, 1, 2, 3]);
    expect(ticks(1)).toEqual([0, 1]);
    expect(ticks(0.5)).toEqual([0, 1]);
  });

  it('gives an axis of 0 to 1 when there is nothing to draw', () => {
    expect(ticks(0)).toEqual([0, 1]);
    expect(ticks(-4)).toEqual([0, 1]);
    expect(ticks(Number.NaN)).toEqual([0, 1]);
  });

  it('covers any maximum with evenly spaced round ticks, about as many as asked', () => {
    for (const max of [1, 2, 3, 4.5, 7, 9.99, 11, 37, 99, 101, 999, 1001, 4321, 99_999, 1_000_001]) {
      for (const count of [3, 4, 5, 8]) {
        const axis = ticks(max, count);
        const step = axis[1] - axis[0];
        expect(axis[0]).toBe(0);
        expect(axis.every((v, i) => v === i * step), `${max}/${count}: ${axis}`).toBe(true);
        const mantissa = step / 10 ** Math.floor(Math.log10(step));
        expect([1, 2, 5]).toContain(Math.round(mantissa * 1e9) / 1e9);
        expect(axis.at(-1)!).toBeGreaterThanOrEqual(max);
        expect(axis.at(-2)!).toBeLessThan(max);
        expect(axis.length).toBeLessThanOrEqual(count + 1);
      }
    }
  });
});
