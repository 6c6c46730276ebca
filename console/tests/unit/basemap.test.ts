import type maplibregl from 'maplibre-gl';
import { describe, expect, it, vi } from 'vitest';

import { baseStyle, fallBackOnStyleError, hasBasemap, ownStyle } from '../../src/basemap';

describe('ownStyle', () => {
  it('is a plain background that fetches nothing', () => {
    const style = ownStyle(null);
    expect(style.sources).toEqual({});
    expect(style.layers.map((l) => l.type)).toEqual(['background']);
    expect(ownStyle({ style_url: 'https://tiles.example/style.json' })).toEqual(style);
    expect(ownStyle({ xyz: '' })).toEqual(style);
  });

  it('draws configured XYZ tiles above the background, with their attribution', () => {
    const style = ownStyle({ xyz: 'https://tiles.example/{z}/{x}/{y}.png', attribution: '© Example' });
    expect(style.layers.map((l) => l.id)).toEqual(['background', 'basemap']);
    expect(style.sources.basemap).toMatchObject({ type: 'raster', tiles: ['https://tiles.example/{z}/{x}/{y}.png'], tileSize: 256, attribution: '© Example' });
  });
});

describe('baseStyle and hasBasemap', () => {
  it('start from a configured style URL as it is', () => {
    expect(baseStyle({ style_url: 'https://tiles.example/style.json' })).toBe('https://tiles.example/style.json');
    expect(hasBasemap({ style_url: 'https://tiles.example/style.json' })).toBe(true);
  });

  it('use the plain style for nothing or an empty setting', () => {
    for (const basemap of [null, undefined, { style_url: '' }, { xyz: '' }]) {
      expect(baseStyle(basemap)).toEqual(ownStyle(null));
      expect(hasBasemap(basemap)).toBe(false);
    }
    expect(hasBasemap({ xyz: 'https://tiles.example/{z}/{x}/{y}.png' })).toBe(true);
  });
});

describe('fallBackOnStyleError', () => {
  type Handler = (event?: unknown) => void;
  function fakeMap() {
    const on = new Map<string, Handler>();
    const once = new Map<string, Handler>();
    const map = {
      on: (type: string, h: Handler) => on.set(type, h),
      off: (type: string) => on.delete(type),
      once: (type: string, h: Handler) => once.set(type, h),
      setStyle: vi.fn(),
    };
    return { map, on, once, asMap: map as unknown as maplibregl.Map };
  }
  const URL_BASEMAP = { style_url: 'https://tiles.example/style.json' };

  it('falls back to the plain style once when the style URL fails before the map loads', () => {
    const { map, on, asMap } = fakeMap();
    const fellBack = vi.fn();
    fallBackOnStyleError(asMap, URL_BASEMAP, fellBack);
    on.get('error')?.({ error: new Error('404') });
    expect(map.setStyle).toHaveBeenCalledWith(ownStyle(null));
    expect(fellBack).toHaveBeenCalledTimes(1);
    expect(on.has('error')).toBe(false);
  });

  it('keeps the style for a failing tile or source, and for any error after loading', () => {
    const { map, on, once, asMap } = fakeMap();
    const fellBack = vi.fn();
    fallBackOnStyleError(asMap, URL_BASEMAP, fellBack);
    on.get('error')?.({ sourceId: 'roads' });
    on.get('error')?.({ tile: {} });
    once.get('load')?.();
    on.get('error')?.({ error: new Error('later') });
    expect(map.setStyle).not.toHaveBeenCalled();
    expect(fellBack).not.toHaveBeenCalled();
  });

  it('does not listen without a style URL', () => {
    const { on, once, asMap } = fakeMap();
    fallBackOnStyleError(asMap, { xyz: 'https://tiles.example/{z}/{x}/{y}.png' }, vi.fn());
    fallBackOnStyleError(asMap, null, vi.fn());
    expect(on.size + once.size).toBe(0);
  });
});
