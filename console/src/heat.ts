// The H3 hexagon layer: how many events or alerts fell in each cell over the last hour,
// day or week (`GET /api/v1/city/heat`), as a fill coloured by count. Counts per cell
// only: nothing in it says who or what was counted.

import type maplibregl from 'maplibre-gl';
import type { ExpressionSpecification, GeoJSONSource, LayerSpecification } from 'maplibre-gl';

import { api, unavailable } from './api';
import type { FeedState } from './positions';

export const HEAT_SOURCE = 'heat';
export type HeatOf = 'events' | 'alerts';
export type HeatRange = '1h' | '24h' | '7d';
export type HeatRes = 7 | 8 | 9;
export interface HeatOptions {
  of: HeatOf;
  range: HeatRange;
  res: HeatRes;
}

const RANGE_MS: Record<HeatRange, number> = { '1h': 3600e3, '24h': 24 * 3600e3, '7d': 7 * 24 * 3600e3 };
const REFRESH_MS = 60_000;
/** Colours from few to many (ColorBrewer YlOrRd). */
export const HEAT_COLOURS = ['#ffffb2', '#fecc5c', '#fd8d3c', '#f03b20', '#bd0026'];

export const HEAT_LAYERS: LayerSpecification[] = [
  {
    id: 'heat-fill',
    type: 'fill',
    source: HEAT_SOURCE,
    paint: { 'fill-color': colourBy([1, 2, 3, 4, 5]), 'fill-opacity': 0.6, 'fill-antialias': false },
  },
];

/** A colour per count, the stops at the given (increasing) counts. */
function colourBy(stops: number[]): ExpressionSpecification {
  const pairs = stops.flatMap((s, i) => [s, HEAT_COLOURS[i]]);
  return ['interpolate', ['linear'], ['to-number', ['get', 'count'], 0], ...pairs] as ExpressionSpecification;
}

/** Five strictly increasing stops from the counts: the smallest, quartiles and the largest. */
export function heatStops(counts: number[]): number[] {
  const sorted = counts.filter((c) => Number.isFinite(c)).sort((a, b) => a - b);
  if (!sorted.length) return [1, 2, 3, 4, 5];
  const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * (sorted.length - 1)))];
  const stops = [q(0), q(0.25), q(0.5), q(0.75), q(1)];
  for (let i = 1; i < stops.length; i++) if (stops[i] <= stops[i - 1]) stops[i] = stops[i - 1] + 1e-6;
  return stops;
}

export class Heat {
  state: FeedState = 'idle';
  cells = 0;
  min = 0;
  max = 0;
  options: HeatOptions = { of: 'events', range: '24h', res: 8 };
  private wanted = false;
  private timer = 0;
  private seq = 0;

  constructor(
    private readonly map: maplibregl.Map,
    private readonly changed: () => void,
  ) {}

  setWanted(wanted: boolean): void {
    if (wanted === this.wanted) return;
    this.wanted = wanted;
    clearTimeout(this.timer);
    if (wanted) void this.load();
  }

  setOptions(options: Partial<HeatOptions>): void {
    this.options = { ...this.options, ...options };
    if (this.state === 'unavailable') this.state = 'idle';
    if (this.wanted) void this.load();
  }

  destroy(): void {
    this.wanted = false;
    clearTimeout(this.timer);
  }

  private async load(): Promise<void> {
    clearTimeout(this.timer);
    const seq = ++this.seq;
    const until = new Date();
    const since = new Date(until.getTime() - RANGE_MS[this.options.range]);
    try {
      const data = await api.heat(this.options.of, since.toISOString(), until.toISOString(), this.options.res);
      if (seq !== this.seq) return;
      const counts = data.features.map((f) => Number(f.properties?.count ?? 0));
      const stops = heatStops(counts);
      this.map.setPaintProperty('heat-fill', 'fill-color', colourBy(stops));
      (this.map.getSource(HEAT_SOURCE) as GeoJSONSource | undefined)?.setData(data);
      this.cells = data.features.length;
      this.min = counts.length ? counts.reduce((a, b) => Math.min(a, b)) : 0;
      this.max = counts.length ? counts.reduce((a, b) => Math.max(a, b)) : 0;
      this.state = 'live';
    } catch (e) {
      if (seq !== this.seq) return;
      this.state = unavailable(e) ? 'unavailable' : 'error';
    }
    this.changed();
    if (this.wanted && this.state !== 'unavailable') this.timer = window.setTimeout(() => void this.load(), REFRESH_MS);
  }
}
