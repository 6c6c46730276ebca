import { describe, expect, it } from 'vitest';

import { currentRoute, href, PAGES } from '../../src/router';

describe('currentRoute', () => {
  it('reads the page and its parameter from the hash', () => {
    expect(currentRoute('#/rules/speed-a1')).toEqual({ page: 'rules', param: 'speed-a1' });
    expect(currentRoute('#/search')).toEqual({ page: 'search', param: null });
    expect(currentRoute('#dashboard')).toEqual({ page: 'dashboard', param: null });
  });

  it('falls back to the desk for no hash, the desk itself or a page it does not know', () => {
    for (const hash of ['', '#', '#/', '#/desk', '#/nowhere/x', '#/RULES']) expect(currentRoute(hash).page, hash).toBe('desk');
  });

  it('has no parameter for a trailing slash', () => {
    expect(currentRoute('#/rules/')).toEqual({ page: 'rules', param: null });
  });

  it('decodes the parameter, slashes in it included', () => {
    expect(currentRoute('#/rules/a%2Fb%20c')).toEqual({ page: 'rules', param: 'a/b c' });
    expect(currentRoute('#/rules/a/b')).toEqual({ page: 'rules', param: 'a/b' });
  });

  // decodeURIComponent throws on a lone `%`: a hand-typed link must not stop the console starting.
  it('takes a parameter that is not valid percent-encoding as it is', () => {
    expect(currentRoute('#/rules/50%')).toEqual({ page: 'rules', param: '50%' });
  });
});

describe('href', () => {
  it('links the desk as #/ and other pages by name', () => {
    expect(href('desk')).toBe('#/');
    expect(href('search')).toBe('#/search');
    expect(href('rules', null)).toBe('#/rules');
  });

  it('reads back as the same page and parameter, whatever the parameter holds', () => {
    for (const page of PAGES) {
      for (const param of [null, 'speed.a1', 'a/b', 'with space', '100%', '#hash?x=1&y', '中文规则']) {
        const back = currentRoute(href(page, param));
        expect(back).toEqual({ page, param });
      }
    }
  });
});
