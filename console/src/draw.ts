// A small drawing tool on the MapLibre map, for zones and search areas: click to add a
// point, double-click (or click the first point, or Enter, or finish()) to end, drag a
// point to move it, drag a midpoint to add one, right-click a point to remove it,
// Backspace to take back the last point while drawing, Esc to cancel. One drawing at a
// time: starting another cancels the one in progress.

import type maplibregl from 'maplibre-gl';
import type { ExpressionSpecification, GeoJSONSource, LayerSpecification } from 'maplibre-gl';

export type DrawKind = 'polygon' | 'line';
export type LngLat = [number, number];

export interface DrawHooks {
  /** A point was added, moved or removed. */
  changed?(): void;
  /** The drawing was ended; its points can still be moved. */
  finished?(): void;
  /** Esc, or another drawing started. */
  cancelled?(): void;
}

const SOURCE = 'draw';
const ACCENT = '#0b5cad';
/** Metres per pixel at zoom 0 on the equator (MapLibre's 512-pixel world). */
const METRES_PER_PIXEL_Z0 = 40_075_016.686 / 512;

/**
 * A line width in pixels that draws `metres` (a number or an expression) at the latitude
 * `lat` at every zoom: exact, since the scale doubles with each zoom level.
 */
export function metresWide(metres: number | ExpressionSpecification, lat: number): ExpressionSpecification {
  const perMetreZ0 = 1 / (METRES_PER_PIXEL_Z0 * Math.cos((lat * Math.PI) / 180));
  const at = (scale: number): number | ExpressionSpecification => (typeof metres === 'number' ? metres * scale : ['*', metres, scale]);
  return ['interpolate', ['exponential', 2], ['zoom'], 0, at(perMetreZ0), 24, at(perMetreZ0 * 2 ** 24)];
}

export class DrawTool {
  private kind: DrawKind = 'polygon';
  private points: LngLat[] = [];
  private phase: 'off' | 'drawing' | 'editing' = 'off';
  private hover: LngLat | null = null;
  private dragging: number | null = null;
  private hooks: DrawHooks = {};
  private widthM: number | null = null;
  private ready = false;
  private readonly lat: number;

  constructor(private readonly map: maplibregl.Map) {
    this.lat = map.getCenter().lat;
  }

  /** Whether a drawing is in progress or being edited. */
  get active(): boolean {
    return this.phase !== 'off';
  }

  get drawing(): boolean {
    return this.phase === 'drawing';
  }

  get count(): number {
    return this.points.length;
  }

  /** Starts drawing a new shape, or edits `initial` when given. */
  start(kind: DrawKind, hooks: DrawHooks, initial?: LngLat[]): void {
    if (this.active) this.cancel();
    this.install();
    this.kind = kind;
    this.hooks = hooks;
    this.points = initial ? initial.map((p) => [p[0], p[1]] as LngLat) : [];
    this.phase = initial && initial.length >= this.minimum() ? 'editing' : 'drawing';
    this.hover = null;
    this.map.doubleClickZoom.disable();
    this.listen(true);
    this.raise();
    this.render();
  }

  /** Ends drawing (when there are enough points); editing goes on. */
  finish(): boolean {
    if (this.phase !== 'drawing' || this.points.length < this.minimum()) return false;
    this.phase = 'editing';
    this.hover = null;
    this.render();
    this.hooks.finished?.();
    return true;
  }

  /** Drops the drawing and tells its owner. */
  cancel(): void {
    if (!this.active) return;
    const hooks = this.hooks;
    this.stop();
    hooks.cancelled?.();
  }

  /** Drops the drawing without telling anyone (its owner is done with it). */
  stop(): void {
    if (!this.active) return;
    this.phase = 'off';
    this.points = [];
    this.hover = null;
    this.dragging = null;
    this.hooks = {};
    this.listen(false);
    this.map.getCanvas().style.cursor = '';
    // After the double-click that ended a drawing, not before: else it would zoom.
    setTimeout(() => this.map.doubleClickZoom.enable(), 0);
    this.render();
  }

  /** Draws a corridor's width (metres) along the line; null: a plain line. */
  setWidth(metres: number | null): void {
    this.widthM = metres && metres > 0 ? metres : null;
    if (this.ready) this.map.setPaintProperty('draw-band', 'line-width', metresWide(this.widthM ?? 0, this.lat));
    this.render();
  }

  /** The shape as GeoJSON (a closed ring for a polygon), or null without enough points. */
  geometry(): GeoJSON.Polygon | GeoJSON.LineString | null {
    if (this.points.length < this.minimum()) return null;
    const coords = this.points.map((p) => [round(p[0]), round(p[1])]);
    if (this.kind === 'line') return { type: 'LineString', coordinates: coords };
    return { type: 'Polygon', coordinates: [[...coords, coords[0]]] };
  }

  private minimum(): number {
    return this.kind === 'polygon' ? 3 : 2;
  }

  private install(): void {
    if (this.ready) return;
    this.map.addSource(SOURCE, { type: 'geojson', data: { type: 'FeatureCollection', features: [] } });
    const layers: LayerSpecification[] = [
      { id: 'draw-fill', type: 'fill', source: SOURCE, filter: ['==', ['geometry-type'], 'Polygon'], paint: { 'fill-color': ACCENT, 'fill-opacity': 0.15 } },
      {
        id: 'draw-band',
        type: 'line',
        source: SOURCE,
        filter: ['==', ['get', 'role'], 'band'],
        layout: { 'line-cap': 'round', 'line-join': 'round' },
        paint: { 'line-color': ACCENT, 'line-opacity': 0.2, 'line-width': metresWide(0, this.lat) },
      },
      {
        id: 'draw-line',
        type: 'line',
        source: SOURCE,
        filter: ['==', ['get', 'role'], 'outline'],
        paint: { 'line-color': ACCENT, 'line-width': 2, 'line-dasharray': [3, 1.5] },
      },
      {
        id: 'draw-mid',
        type: 'circle',
        source: SOURCE,
        filter: ['==', ['get', 'role'], 'mid'],
        paint: { 'circle-radius': 4, 'circle-color': '#ffffff', 'circle-stroke-color': ACCENT, 'circle-stroke-width': 1.5, 'circle-opacity': 0.9 },
      },
      {
        id: 'draw-vertex',
        type: 'circle',
        source: SOURCE,
        filter: ['==', ['get', 'role'], 'vertex'],
        paint: {
          'circle-radius': ['case', ['get', 'first'], 8, 6],
          'circle-color': ACCENT,
          'circle-stroke-color': '#ffffff',
          'circle-stroke-width': 2,
        },
      },
    ];
    for (const layer of layers) this.map.addLayer(layer);
    this.ready = true;
  }

  /** Keeps the drawing above layers added since. */
  private raise(): void {
    for (const id of ['draw-fill', 'draw-band', 'draw-line', 'draw-mid', 'draw-vertex']) this.map.moveLayer(id);
  }

  private render(): void {
    if (!this.ready) return;
    const features: GeoJSON.Feature[] = [];
    const pts = this.phase === 'drawing' && this.hover ? [...this.points, this.hover] : this.points;
    if (this.phase !== 'off') {
      if (this.kind === 'polygon') {
        if (pts.length >= 3) features.push(feature({ type: 'Polygon', coordinates: [[...pts, pts[0]]] }, { role: 'area' }));
        if (pts.length >= 2) {
          const ring = this.phase === 'drawing' && pts.length < 3 ? pts : [...pts, pts[0]];
          features.push(feature({ type: 'LineString', coordinates: ring }, { role: 'outline' }));
        }
      } else if (pts.length >= 2) {
        if (this.widthM) features.push(feature({ type: 'LineString', coordinates: pts }, { role: 'band' }));
        features.push(feature({ type: 'LineString', coordinates: pts }, { role: 'outline' }));
      }
      this.points.forEach((p, index) => {
        features.push(feature({ type: 'Point', coordinates: p }, { role: 'vertex', index, first: index === 0 && this.phase === 'drawing' }));
      });
      if (this.phase === 'editing') {
        const closed = this.kind === 'polygon';
        const segments = closed ? this.points.length : this.points.length - 1;
        for (let i = 0; i < segments; i++) {
          const a = this.points[i];
          const b = this.points[(i + 1) % this.points.length];
          features.push(feature({ type: 'Point', coordinates: [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2] }, { role: 'mid', index: i }));
        }
      }
    }
    (this.map.getSource(SOURCE) as GeoJSONSource | undefined)?.setData({ type: 'FeatureCollection', features });
  }

  private hit(point: maplibregl.PointLike, layer: 'draw-vertex' | 'draw-mid'): number | null {
    const found = this.map.queryRenderedFeatures(point, { layers: [layer] });
    return found.length ? Number(found[0].properties.index) : null;
  }

  private readonly onClick = (event: maplibregl.MapMouseEvent) => {
    if (this.phase !== 'drawing') return;
    const vertex = this.hit(event.point, 'draw-vertex');
    if (vertex === 0 && this.points.length >= this.minimum()) {
      this.finish();
      return;
    }
    if (vertex !== null) return;
    this.points.push([event.lngLat.lng, event.lngLat.lat]);
    this.render();
    this.hooks.changed?.();
  };

  private readonly onDoubleClick = (event: maplibregl.MapMouseEvent) => {
    if (this.phase !== 'drawing') return;
    event.preventDefault();
    // The double-click's two clicks added the same point twice: keep one.
    const n = this.points.length;
    if (n >= 2) {
      const a = this.map.project(this.points[n - 1]);
      const b = this.map.project(this.points[n - 2]);
      if (Math.hypot(a.x - b.x, a.y - b.y) < 6) this.points.pop();
    }
    this.finish();
  };

  private readonly onMouseDown = (event: maplibregl.MapMouseEvent) => {
    if (event.originalEvent.button !== 0) return;
    let index = this.hit(event.point, 'draw-vertex');
    if (index === null && this.phase === 'editing') {
      const mid = this.hit(event.point, 'draw-mid');
      if (mid !== null) {
        this.points.splice(mid + 1, 0, [event.lngLat.lng, event.lngLat.lat]);
        index = mid + 1;
        this.render();
      }
    }
    if (index === null) return;
    // Keeps the map from panning while a point is dragged.
    event.preventDefault();
    this.dragging = index;
  };

  private readonly onMouseMove = (event: maplibregl.MapMouseEvent) => {
    const at: LngLat = [event.lngLat.lng, event.lngLat.lat];
    if (this.dragging !== null) {
      this.points[this.dragging] = at;
      this.render();
      return;
    }
    const overPoint = this.hit(event.point, 'draw-vertex') !== null || (this.phase === 'editing' && this.hit(event.point, 'draw-mid') !== null);
    this.map.getCanvas().style.cursor = overPoint ? 'move' : this.phase === 'drawing' ? 'crosshair' : '';
    if (this.phase === 'drawing') {
      this.hover = at;
      this.render();
    }
  };

  private readonly onMouseUp = () => {
    if (this.dragging === null) return;
    this.dragging = null;
    this.hooks.changed?.();
  };

  private readonly onContextMenu = (event: maplibregl.MapMouseEvent) => {
    const index = this.hit(event.point, 'draw-vertex');
    if (index === null) return;
    event.preventDefault();
    event.originalEvent.preventDefault();
    if (this.phase === 'editing' && this.points.length <= this.minimum()) return;
    this.points.splice(index, 1);
    this.render();
    this.hooks.changed?.();
  };

  private readonly onKey = (event: KeyboardEvent) => {
    if (!this.active) return;
    const typing = event.target instanceof HTMLElement && ['INPUT', 'TEXTAREA', 'SELECT'].includes(event.target.tagName);
    if (event.key === 'Escape') {
      event.stopPropagation();
      event.preventDefault();
      this.cancel();
    } else if (!typing && event.key === 'Enter' && this.phase === 'drawing') {
      event.preventDefault();
      this.finish();
    } else if (!typing && event.key === 'Backspace' && this.phase === 'drawing' && this.points.length) {
      event.preventDefault();
      this.points.pop();
      this.render();
      this.hooks.changed?.();
    }
  };

  private listen(on: boolean): void {
    const map = this.map;
    const handlers = [
      ['click', this.onClick],
      ['dblclick', this.onDoubleClick],
      ['mousedown', this.onMouseDown],
      ['mousemove', this.onMouseMove],
      ['mouseup', this.onMouseUp],
      ['contextmenu', this.onContextMenu],
    ] as const;
    for (const [type, handler] of handlers) {
      if (on) map.on(type, handler);
      else map.off(type, handler);
    }
    // Capture, so that Esc cancels the drawing before it closes anything else.
    if (on) document.addEventListener('keydown', this.onKey, true);
    else document.removeEventListener('keydown', this.onKey, true);
  }
}

function feature(geometry: GeoJSON.Geometry, properties: Record<string, unknown>): GeoJSON.Feature {
  return { type: 'Feature', geometry, properties };
}

/** Seven decimals: about a centimetre, and no float noise in what is saved. */
function round(x: number): number {
  return Math.round(x * 1e7) / 1e7;
}
