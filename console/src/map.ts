// The live city map: the node's own GeoJSON layers (no tiles, no glyphs, no requests
// beyond the API), alerts by severity with a pulse on the unacknowledged ones, a layer
// switcher, and popups built from DOM nodes (labels live there, not in symbol layers).

import maplibregl from 'maplibre-gl';
import type { ExpressionSpecification, GeoJSONSource, LayerSpecification, MapGeoJSONFeature, StyleSpecification } from 'maplibre-gl';
import 'maplibre-gl/dist/maplibre-gl.css';

import { api } from './api';
import { awaitsAck, isOpen, statusOf } from './alerts';
import { h } from './dom';
import { t, tCode, type MessageKey } from './i18n';
import type { Alert, CityInfo, FeatureCollection, LayerName } from './types';
import { LAYER_NAMES } from './types';

/** Above this many devices the device layer clusters points. */
const CLUSTER_ABOVE = 3000;

export const SEVERITY_COLOURS: Record<string, string> = {
  critical: '#b3261e',
  high: '#e8590c',
  medium: '#d9a400',
  low: '#3b7dd8',
};

const severityColour: ExpressionSpecification = [
  'match',
  ['get', 'severity'],
  'critical',
  SEVERITY_COLOURS.critical,
  'high',
  SEVERITY_COLOURS.high,
  'low',
  SEVERITY_COLOURS.low,
  SEVERITY_COLOURS.medium,
];

const ZONE_COLOURS: ExpressionSpecification = [
  'match',
  ['get', 'kind'],
  'restricted',
  '#c0392b',
  'depot',
  '#8e44ad',
  'school',
  '#2e86de',
  'square',
  '#16a085',
  'underpass',
  '#1f618d',
  'corridor',
  '#d35400',
  '#7f8c8d',
];

type Group = LayerName | 'alerts';
const GROUP_LAYERS: Record<Group, string[]> = {
  regions: ['regions-fill', 'regions-line'],
  grids: ['grids-line'],
  roads: ['roads-line'],
  zones: ['zones-fill', 'zones-line'],
  devices: ['devices-cluster', 'devices-point'],
  alerts: ['alerts-pulse', 'alerts-circle', 'alerts-selected'],
};
const GROUP_LABELS: Record<Group, MessageKey> = {
  regions: 'layer_regions',
  grids: 'layer_grids',
  roads: 'layer_roads',
  zones: 'layer_zones',
  devices: 'layer_devices',
  alerts: 'layer_alerts',
};
// Clicks go to the topmost kind of thing under the pointer.
const CLICK_ORDER = ['alerts-circle', 'devices-cluster', 'devices-point', 'zones-line', 'zones-fill', 'roads-line', 'grids-line', 'regions-fill'];

const EMPTY: FeatureCollection = { type: 'FeatureCollection', features: [] };

export interface MapHooks {
  openAlert(id: string): void;
}

/** What the end-to-end tests read: features loaded per layer, and the alerts drawn. */
export interface MapTestHook {
  ready: boolean;
  layers: Partial<Record<LayerName, number>>;
  alertsDrawn: number;
}

export class CityMap {
  private readonly map: maplibregl.Map;
  private readonly switcher: HTMLElement;
  private readonly gridRegion = new Map<string, string>();
  private readonly communities = new Set<string>();
  private openCounts = new Map<string, number>();
  private popup: maplibregl.Popup | null = null;
  private loaded = false;
  private pendingAlerts: Alert[] = [];
  private pendingCounts: Alert[] = [];
  private pulseFrame = 0;
  private pulsing = false;
  private drawTimer = 0;
  readonly testHook: MapTestHook = { ready: false, layers: {}, alertsDrawn: 0 };

  constructor(
    private readonly container: HTMLElement,
    city: CityInfo,
    private readonly hooks: MapHooks,
  ) {
    const [west, south, east, north] = city.bbox;
    const style: StyleSpecification = {
      version: 8,
      sources: {},
      layers: [{ id: 'background', type: 'background', paint: { 'background-color': '#eef1f4' } }],
    };
    this.map = new maplibregl.Map({
      container,
      style,
      bounds: [
        [west, south],
        [east, north],
      ],
      fitBoundsOptions: { padding: 20 },
      attributionControl: false,
      // The console draws its own labels in popups; nothing may be fetched from outside.
      localIdeographFontFamily: 'sans-serif',
    });
    this.map.addControl(new maplibregl.NavigationControl({ showCompass: false }), 'top-right');
    this.switcher = h('fieldset', { className: 'layer-switcher' });
    container.appendChild(this.switcher);
    this.renderSwitcher();
    this.map.on('load', () => void this.loadLayers());
    this.map.on('click', (event) => this.onClick(event));
    this.map.on('mousemove', (event) => {
      const hit = this.map.queryRenderedFeatures(event.point, { layers: this.visibleClickLayers() });
      this.map.getCanvas().style.cursor = hit.length ? 'pointer' : '';
    });
  }

  private async loadLayers(): Promise<void> {
    const results = await Promise.allSettled(LAYER_NAMES.map((name) => api.layer(name)));
    const data = {} as Record<LayerName, FeatureCollection>;
    LAYER_NAMES.forEach((name, i) => {
      const result = results[i];
      data[name] = result.status === 'fulfilled' ? result.value : EMPTY;
      this.testHook.layers[name] = data[name].features.length;
    });
    for (const f of data.grids.features) this.gridRegion.set(String(f.id), String(f.properties.region ?? ''));
    for (const f of data.regions.features) if (f.properties.level === 'community') this.communities.add(String(f.id));

    const map = this.map;
    map.addSource('regions', { type: 'geojson', data: data.regions as GeoJSON.FeatureCollection, promoteId: 'id' });
    map.addSource('grids', { type: 'geojson', data: data.grids as GeoJSON.FeatureCollection });
    map.addSource('roads', { type: 'geojson', data: data.roads as GeoJSON.FeatureCollection });
    map.addSource('zones', { type: 'geojson', data: data.zones as GeoJSON.FeatureCollection });
    const clustered = data.devices.features.length > CLUSTER_ABOVE;
    map.addSource('devices', {
      type: 'geojson',
      data: data.devices as GeoJSON.FeatureCollection,
      cluster: clustered,
      clusterRadius: 40,
      clusterMaxZoom: 15,
    });
    map.addSource('alerts', { type: 'geojson', data: EMPTY as GeoJSON.FeatureCollection });

    const layers: LayerSpecification[] = [
      {
        id: 'regions-fill',
        type: 'fill',
        source: 'regions',
        filter: ['==', ['get', 'level'], 'community'],
        paint: {
          // Communities coloured by their open alerts (feature-state set from the alert list).
          'fill-color': [
            'step',
            ['coalesce', ['feature-state', 'open'], 0],
            'rgba(255,255,255,0)',
            1,
            '#fde7b0',
            3,
            '#f8b35b',
            8,
            '#e4572e',
            20,
            '#a4161a',
          ],
          'fill-opacity': 0.55,
        },
      },
      {
        id: 'regions-line',
        type: 'line',
        source: 'regions',
        paint: {
          'line-color': ['match', ['get', 'level'], 'district', '#34495e', 'street', '#5d6d7e', '#95a5a6'],
          'line-width': ['match', ['get', 'level'], 'district', 2.5, 'street', 1.5, 0.8],
        },
      },
      { id: 'grids-line', type: 'line', source: 'grids', paint: { 'line-color': '#b0bec5', 'line-width': 0.5, 'line-dasharray': [2, 2] } },
      {
        id: 'roads-line',
        type: 'line',
        source: 'roads',
        layout: { 'line-cap': 'round', 'line-join': 'round' },
        paint: {
          'line-color': ['match', ['get', 'class'], ['motorway', 'trunk', 'expressway'], '#e67e22', ['primary', 'arterial'], '#f1c40f', '#ffffff'],
          'line-width': ['interpolate', ['linear'], ['zoom'], 10, 1, 15, 4],
        },
      },
      { id: 'zones-fill', type: 'fill', source: 'zones', filter: ['==', ['geometry-type'], 'Polygon'], paint: { 'fill-color': ZONE_COLOURS, 'fill-opacity': 0.2 } },
      {
        id: 'zones-line',
        type: 'line',
        source: 'zones',
        paint: {
          'line-color': ZONE_COLOURS,
          'line-width': ['match', ['geometry-type'], 'LineString', 3, 1.5],
          'line-opacity': 0.8,
        },
      },
      {
        id: 'devices-cluster',
        type: 'circle',
        source: 'devices',
        filter: ['has', 'point_count'],
        paint: {
          'circle-color': '#607d8b',
          'circle-opacity': 0.6,
          'circle-radius': ['step', ['get', 'point_count'], 8, 20, 12, 100, 16, 500, 22],
          'circle-stroke-color': '#ffffff',
          'circle-stroke-width': 1,
        },
      },
      {
        id: 'devices-point',
        type: 'circle',
        source: 'devices',
        filter: ['!', ['has', 'point_count']],
        paint: {
          'circle-color': ['match', ['get', 'kind'], 'smoke', '#d35400', 'gas', '#8e44ad', 'water_level', '#2980b9', 'camera', '#2c3e50', '#7f8c8d'],
          'circle-radius': ['interpolate', ['linear'], ['zoom'], 11, 1.5, 16, 5],
          'circle-stroke-color': '#ffffff',
          'circle-stroke-width': 0.5,
        },
      },
      {
        id: 'alerts-pulse',
        type: 'circle',
        source: 'alerts',
        filter: ['==', ['get', 'unacked'], true],
        paint: { 'circle-color': severityColour, 'circle-radius': 10, 'circle-opacity': 0.5, 'circle-stroke-width': 0 },
      },
      {
        id: 'alerts-circle',
        type: 'circle',
        source: 'alerts',
        paint: {
          'circle-color': severityColour,
          'circle-radius': ['match', ['get', 'severity'], 'critical', 8, 'high', 7, 6],
          'circle-stroke-color': ['case', ['get', 'open'], '#ffffff', '#555555'],
          'circle-stroke-width': 2,
          'circle-opacity': ['case', ['get', 'open'], 1, 0.45],
        },
      },
      {
        id: 'alerts-selected',
        type: 'circle',
        source: 'alerts',
        filter: ['==', ['get', 'id'], ''],
        paint: { 'circle-color': 'rgba(0,0,0,0)', 'circle-radius': 13, 'circle-stroke-color': '#111111', 'circle-stroke-width': 3 },
      },
    ];
    for (const layer of layers) map.addLayer(layer);
    this.applyVisibility();
    this.loaded = true;
    this.testHook.ready = true;
    this.container.dataset.layersLoaded = LAYER_NAMES.filter((n) => (this.testHook.layers[n] ?? 0) > 0).join(',');
    this.drawAlerts(this.pendingAlerts);
    this.setCommunityCounts(this.pendingCounts);
  }

  /** Draws the alerts (the queue's filtered list), at most a few times a second. */
  setAlerts(alerts: Alert[]): void {
    this.pendingAlerts = alerts;
    if (!this.loaded || this.drawTimer) return;
    // Bursts of live changes become one redraw: re-tessellating thousands of points on
    // every change would starve the map's own frames.
    this.drawTimer = window.setTimeout(() => {
      this.drawTimer = 0;
      this.drawAlerts(this.pendingAlerts);
    }, 250);
  }

  private drawAlerts(alerts: Alert[]): void {
    const features = alerts
      .filter((a) => typeof a.lon === 'number' && typeof a.lat === 'number')
      .map((a) => {
        const status = statusOf(a);
        return {
          type: 'Feature' as const,
          id: a.id,
          geometry: { type: 'Point' as const, coordinates: [a.lon as number, a.lat as number] },
          properties: { id: a.id, severity: a.severity ?? 'medium', status, open: isOpen(status), unacked: awaitsAck(status), title: a.title ?? a.category ?? a.id },
        };
      });
    (this.map.getSource('alerts') as GeoJSONSource | undefined)?.setData({ type: 'FeatureCollection', features });
    this.testHook.alertsDrawn = features.length;
    const pulse = features.some((f) => f.properties.unacked);
    if (pulse && !this.pulsing) this.startPulse();
    if (!pulse) this.stopPulse();
  }

  /** Colours each community by how many open alerts lie in its grids. */
  setCommunityCounts(alerts: Alert[]): void {
    this.pendingCounts = alerts;
    if (!this.loaded) return;
    const counts = new Map<string, number>();
    for (const alert of alerts) {
      if (!isOpen(statusOf(alert)) || !alert.grid) continue;
      const region = this.gridRegion.get(alert.grid);
      if (region && this.communities.has(region)) counts.set(region, (counts.get(region) ?? 0) + 1);
    }
    for (const region of new Set([...this.openCounts.keys(), ...counts.keys()])) {
      const n = counts.get(region) ?? 0;
      if ((this.openCounts.get(region) ?? 0) !== n) this.map.setFeatureState({ source: 'regions', id: region }, { open: n });
    }
    this.openCounts = counts;
  }

  setSelected(id: string | null): void {
    if (!this.loaded) return;
    this.map.setFilter('alerts-selected', ['==', ['get', 'id'], id ?? '']);
  }

  focus(alert: Alert): void {
    if (typeof alert.lon !== 'number' || typeof alert.lat !== 'number') return;
    this.map.easeTo({ center: [alert.lon, alert.lat], zoom: Math.max(this.map.getZoom(), 14), duration: 600 });
  }

  resize(): void {
    this.map.resize();
  }

  /** Re-labels the switcher after a language change. */
  relabel(): void {
    this.renderSwitcher();
  }

  private readonly visible: Record<Group, boolean> = { regions: true, grids: true, roads: true, zones: true, devices: true, alerts: true };

  private renderSwitcher(): void {
    const groups = Object.keys(GROUP_LAYERS) as Group[];
    this.switcher.replaceChildren(
      h('legend', {}, t('layers')),
      ...groups.map((group) => {
        const box = h('input', { type: 'checkbox', id: `layer-${group}`, 'data-layer': group });
        box.checked = this.visible[group];
        box.addEventListener('change', () => {
          this.visible[group] = box.checked;
          this.applyVisibility();
        });
        return h('div', { className: 'layer-option' }, box, h('label', { for: `layer-${group}` }, t(GROUP_LABELS[group])));
      }),
    );
  }

  private applyVisibility(): void {
    if (!this.map.isStyleLoaded() && !this.loaded) return;
    for (const group of Object.keys(GROUP_LAYERS) as Group[]) {
      for (const layer of GROUP_LAYERS[group]) {
        if (this.map.getLayer(layer)) this.map.setLayoutProperty(layer, 'visibility', this.visible[group] ? 'visible' : 'none');
      }
    }
  }

  private visibleClickLayers(): string[] {
    return CLICK_ORDER.filter((id) => this.map.getLayer(id) && this.map.getLayoutProperty(id, 'visibility') !== 'none');
  }

  private onClick(event: maplibregl.MapMouseEvent): void {
    const hits = this.map.queryRenderedFeatures(event.point, { layers: this.visibleClickLayers() });
    if (!hits.length) return;
    const top = CLICK_ORDER.map((layer) => hits.find((f) => f.layer.id === layer)).find((f): f is MapGeoJSONFeature => !!f);
    if (!top) return;
    if (top.layer.id === 'alerts-circle') {
      const id = String(top.properties.id);
      this.showPopup(event.lngLat, this.alertPopup(top));
      this.hooks.openAlert(id);
      return;
    }
    if (top.layer.id === 'devices-cluster') {
      const count = Number(top.properties.point_count);
      this.showPopup(event.lngLat, h('div', {}, t('popup_cluster', { n: count })));
      const source = this.map.getSource('devices') as GeoJSONSource;
      void source.getClusterExpansionZoom(Number(top.properties.cluster_id)).then((zoom) => {
        this.map.easeTo({ center: event.lngLat, zoom });
      });
      return;
    }
    this.showPopup(event.lngLat, this.propertiesPopup(top));
  }

  private alertPopup(feature: MapGeoJSONFeature): HTMLElement {
    const p = feature.properties;
    return h(
      'div',
      { className: 'popup' },
      h('strong', {}, String(p.title ?? p.id)),
      h('div', {}, `${tCode('severity', String(p.severity))} · ${tCode('status', String(p.status))}`),
      h('button', { type: 'button', className: 'link', onclick: () => this.hooks.openAlert(String(p.id)) }, t('popup_open_alert')),
    );
  }

  private propertiesPopup(feature: MapGeoJSONFeature): HTMLElement {
    const rows = Object.entries(feature.properties).filter(([, v]) => v !== null && v !== undefined && v !== '');
    const body = h('div', { className: 'popup' });
    const name = feature.properties.name ?? feature.properties.id ?? feature.id;
    body.appendChild(h('strong', {}, String(name)));
    if (feature.layer.id === 'regions-fill') {
      body.appendChild(h('div', {}, t('popup_open_alerts', { n: this.openCounts.get(String(feature.properties.id)) ?? 0 })));
    }
    body.appendChild(
      h(
        'table',
        {},
        rows.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, typeof v === 'object' ? JSON.stringify(v) : String(v)))),
      ),
    );
    return body;
  }

  private showPopup(at: maplibregl.LngLat, content: HTMLElement): void {
    this.popup?.remove();
    this.popup = new maplibregl.Popup({ maxWidth: '320px' }).setLngLat(at).setDOMContent(content).addTo(this.map);
  }

  /** Unacknowledged alerts pulse: radius and opacity of their own layer, frame by frame. */
  private startPulse(): void {
    this.pulsing = true;
    const period = 1600;
    let last = 0;
    const frame = (now: number) => {
      if (!this.pulsing) return;
      // About 30 updates a second is smooth enough and spares the CPU.
      if (now - last > 33 && this.map.getLayer('alerts-pulse')) {
        last = now;
        const phase = (now % period) / period;
        this.map.setPaintProperty('alerts-pulse', 'circle-radius', 8 + 16 * phase);
        this.map.setPaintProperty('alerts-pulse', 'circle-opacity', 0.55 * (1 - phase));
      }
      this.pulseFrame = requestAnimationFrame(frame);
    };
    this.pulseFrame = requestAnimationFrame(frame);
  }

  private stopPulse(): void {
    this.pulsing = false;
    cancelAnimationFrame(this.pulseFrame);
  }

  destroy(): void {
    this.stopPulse();
    clearTimeout(this.drawTimer);
    this.popup?.remove();
    this.map.remove();
  }
}
