// Live positions of regulated vehicles and responders (`GET /api/v1/city/positions`),
// polled every second while the map is on screen and either layer is shown, drawn from one
// GeoJSON source replaced with setData: no DOM marker per vehicle, however many there are.
// Only the latest position of each is shown; no trails are kept.

import type maplibregl from 'maplibre-gl';
import type { GeoJSONSource, LayerSpecification } from 'maplibre-gl';

import { api, unavailable } from './api';

export const POSITIONS_SOURCE = 'positions';
const POLL_MS = 1000;
const RETRY_MS = 5000;

export type FeedState = 'idle' | 'live' | 'unavailable' | 'error';

const VEHICLE_COLOUR: maplibregl.ExpressionSpecification = [
  'match',
  ['get', 'class'],
  'hazmat',
  '#c0392b',
  'school_bus',
  '#d4a000',
  'heavy',
  '#795548',
  'patrol',
  '#1565c0',
  '#37474f',
];

const RESPONDER: maplibregl.ExpressionSpecification = ['==', ['get', 'kind'], 'responder'];

/**
 * One circle layer for both kinds (every layer costs draw calls on every frame): the
 * switcher shows or hides a kind through the layer's filter (positionsFilter).
 */
export const POSITION_LAYERS: LayerSpecification[] = [
  {
    id: 'positions-circle',
    type: 'circle',
    source: POSITIONS_SOURCE,
    filter: ['in', ['get', 'kind'], ['literal', ['vehicle', 'responder']]],
    paint: {
      'circle-color': ['case', RESPONDER, ['case', ['==', ['get', 'available'], false], '#8d99a6', '#2e7d32'], VEHICLE_COLOUR],
      'circle-radius': ['interpolate', ['linear'], ['zoom'], 10, ['case', RESPONDER, 4, 2.5], 16, ['case', RESPONDER, 8, 7]],
      'circle-stroke-color': '#ffffff',
      'circle-stroke-width': ['case', RESPONDER, 2, 1],
    },
  },
  {
    // Which way a vehicle heads: an icon made in code (no sprite to fetch), turned on the map.
    id: 'positions-heading',
    type: 'symbol',
    source: POSITIONS_SOURCE,
    minzoom: 14,
    filter: ['all', ['==', ['get', 'kind'], 'vehicle'], ['has', 'heading']],
    layout: {
      'icon-image': 'heading-arrow',
      'icon-rotate': ['to-number', ['get', 'heading'], 0],
      'icon-rotation-alignment': 'map',
      'icon-allow-overlap': true,
      'icon-ignore-placement': true,
    },
  },
];

/** The filter of the circle layer for the kinds shown. */
export function positionsFilter(vehicles: boolean, responders: boolean): maplibregl.FilterSpecification {
  const kinds = [...(vehicles ? ['vehicle'] : []), ...(responders ? ['responder'] : [])];
  return ['in', ['get', 'kind'], ['literal', kinds]];
}

/** Adds the heading arrow: a chevron above the centre of a 32-pixel square, pointing north. */
export function addHeadingArrow(map: maplibregl.Map): void {
  if (map.hasImage('heading-arrow')) return;
  const size = 32;
  const canvas = document.createElement('canvas');
  canvas.width = size;
  canvas.height = size;
  const g = canvas.getContext('2d');
  if (!g) return;
  g.fillStyle = '#263238';
  g.strokeStyle = '#ffffff';
  g.lineWidth = 1.5;
  g.beginPath();
  g.moveTo(16, 1);
  g.lineTo(22, 10);
  g.lineTo(16, 8);
  g.lineTo(10, 10);
  g.closePath();
  g.fill();
  g.stroke();
  map.addImage('heading-arrow', g.getImageData(0, 0, size, size), { pixelRatio: 2 });
}

export class Positions {
  state: FeedState = 'idle';
  count = 0;
  vehicles = 0;
  updates = 0;
  private wanted = false;
  private timer = 0;
  private inFlight = false;

  constructor(
    private readonly map: maplibregl.Map,
    /** Told when the state or the count changes. */
    private readonly changed: () => void,
  ) {
    document.addEventListener('visibilitychange', this.onVisibility);
  }

  /** Polls while wanted (the map is shown with a positions layer on) and the page is visible. */
  setWanted(wanted: boolean): void {
    this.wanted = wanted;
    clearTimeout(this.timer);
    if (wanted) this.poll(0);
  }

  destroy(): void {
    this.wanted = false;
    clearTimeout(this.timer);
    document.removeEventListener('visibilitychange', this.onVisibility);
  }

  private readonly onVisibility = () => {
    if (!document.hidden && this.wanted) this.poll(0);
  };

  private poll(delay: number): void {
    clearTimeout(this.timer);
    if (!this.wanted || this.state === 'unavailable') return;
    this.timer = window.setTimeout(() => void this.fetch(), delay);
  }

  private async fetch(): Promise<void> {
    if (this.inFlight || !this.wanted || document.hidden) return;
    this.inFlight = true;
    const started = performance.now();
    let next = POLL_MS;
    try {
      const data = await api.positions();
      (this.map.getSource(POSITIONS_SOURCE) as GeoJSONSource | undefined)?.setData(data);
      this.count = data.features.length;
      this.vehicles = data.features.reduce((n, f) => (f.properties?.kind === 'vehicle' ? n + 1 : n), 0);
      this.updates += 1;
      this.state = 'live';
    } catch (e) {
      // An older node has no positions: say so once and stop asking.
      this.state = unavailable(e) ? 'unavailable' : 'error';
      next = RETRY_MS;
    } finally {
      this.inFlight = false;
    }
    this.changed();
    // A second from the start of the last request, not from its end.
    this.poll(Math.max(0, next - (performance.now() - started)));
  }
}
