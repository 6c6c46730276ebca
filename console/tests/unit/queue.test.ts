import { describe, expect, it } from 'vitest';

import { categoriesOf, newer } from '../../src/queue';
import { alert } from './fixtures';

describe('categoriesOf', () => {
  it('splits on commas, full-width commas and spaces, dropping empty parts', () => {
    expect(categoriesOf('fire.smoke, traffic.hazmat')).toEqual(['fire.smoke', 'traffic.hazmat']);
    expect(categoriesOf('fire.smoke，traffic.hazmat')).toEqual(['fire.smoke', 'traffic.hazmat']);
    expect(categoriesOf('  fire.smoke   traffic.hazmat ,, ')).toEqual(['fire.smoke', 'traffic.hazmat']);
    expect(categoriesOf('')).toEqual([]);
    expect(categoriesOf(' , ')).toEqual([]);
  });

  it('reads back the categories the filter field is filled with', () => {
    const saved = ['fire.smoke', 'water.leak', 'traffic.hazmat'];
    expect(categoriesOf(saved.join(', '))).toEqual(saved);
  });
});

describe('newer', () => {
  const at = (s: string) => alert({ id: 'x', updated_at: `2030-01-01T00:00:${s}Z` });

  it('keeps the copy updated last, whichever comes first', () => {
    const old = at('05');
    const fresh = at('10');
    expect(newer(old, fresh)).toBe(fresh);
    expect(newer(fresh, old)).toBe(fresh);
  });

  it('takes the arriving copy when the times are equal or either is unknown', () => {
    const a = at('10');
    const b = at('10');
    expect(newer(a, b)).toBe(a);
    const unversioned = alert({ id: 'x' });
    expect(newer(unversioned, at('10'))).toBe(unversioned);
    expect(newer(a, alert({ id: 'x' }))).toBe(a);
    expect(newer(a, undefined)).toBe(a);
  });
});
