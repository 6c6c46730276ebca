import { describe, expect, it } from 'vitest';

import { slug } from '../../src/zones';

// What the node takes as a zone id (ID_PATTERN in src/zones.ts).
const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

describe('slug', () => {
  it('makes lower-case ASCII words joined by dashes', () => {
    expect(slug('Main Square')).toBe('main-square');
    expect(slug('  North Gate / Bus Depot #2 ')).toBe('north-gate-bus-depot-2');
  });

  it('drops accents rather than the letters that carry them', () => {
    expect(slug('Café Zürich')).toBe('cafe-zurich');
  });

  it('makes an id of its own for a name without ASCII letters or digits', () => {
    expect(slug('人民广场')).toMatch(/^zone-[0-9a-z]+$/);
    expect(slug('---')).toMatch(/^zone-[0-9a-z]+$/);
  });

  it('keeps ids to 48 characters without a dash at the end', () => {
    const name = `${'a'.repeat(47)} b`;
    expect(slug(name)).toBe('a'.repeat(47));
    expect(slug('word '.repeat(30)).length).toBeLessThanOrEqual(48);
    for (let n = 40; n < 60; n++) {
      const id = slug(`${'x'.repeat(n)} tail words here`);
      expect(id.endsWith('-'), id).toBe(false);
      expect(id.length).toBeLessThanOrEqual(48);
    }
  });

  it('always gives an id the node takes', () => {
    for (const name of ['Main Square', '  École  ', '人民广场', '!!!', 'Ω-7', `${'long '.repeat(20)}`]) expect(slug(name), name).toMatch(ID);
  });
});
