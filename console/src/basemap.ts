// The style a map starts from. By default a plain background under the city's own layers,
// so nothing is fetched from elsewhere; a node may configure a base map (`basemap` in
// `GET /api/v1/city`): a style URL the city's layers are drawn on top of, or XYZ raster
// tiles drawn at the bottom. Either is the operator's choice to reach that server.

import type maplibregl from 'maplibre-gl';
import type { StyleSpecification } from 'maplibre-gl';

import type { Basemap } from './types';

const BACKGROUND = '#eef1f4';

/** The plain style: a background, and XYZ raster tiles above it when configured. */
export function ownStyle(basemap: Basemap | null | undefined): StyleSpecification {
  const style: StyleSpecification = {
    version: 8,
    sources: {},
    layers: [{ id: 'background', type: 'background', paint: { 'background-color': BACKGROUND } }],
  };
  if (basemap && 'xyz' in basemap && basemap.xyz) {
    style.sources.basemap = {
      type: 'raster',
      tiles: [basemap.xyz],
      tileSize: 256,
      maxzoom: 19,
      attribution: basemap.attribution ?? '',
    };
    style.layers.push({ id: 'basemap', type: 'raster', source: 'basemap', paint: { 'raster-opacity': 0.85 } });
  }
  return style;
}

/** What to give `new maplibregl.Map({style})`: the configured style URL, else the plain style. */
export function baseStyle(basemap: Basemap | null | undefined): StyleSpecification | string {
  if (basemap && 'style_url' in basemap && basemap.style_url) return basemap.style_url;
  return ownStyle(basemap);
}

/** Whether the map shows someone else's tiles (and so needs an attribution). */
export function hasBasemap(basemap: Basemap | null | undefined): boolean {
  return !!basemap && (('style_url' in basemap && !!basemap.style_url) || ('xyz' in basemap && !!basemap.xyz));
}

/**
 * A configured style URL that cannot be loaded must not take the city's layers with it:
 * on a style error before the first load, fall back to the plain style.
 */
export function fallBackOnStyleError(map: maplibregl.Map, basemap: Basemap | null | undefined, fellBack: () => void): void {
  if (!basemap || !('style_url' in basemap)) return;
  let loaded = false;
  map.once('load', () => {
    loaded = true;
  });
  const onError = (event: maplibregl.ErrorEvent & { sourceId?: string; tile?: unknown }) => {
    if (loaded || event.sourceId || event.tile) return;
    map.off('error', onError);
    map.setStyle(ownStyle(null));
    fellBack();
  };
  map.on('error', onError);
}
