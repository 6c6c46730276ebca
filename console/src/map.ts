// The live city map: the node's own GeoJSON layers (no tiles, no glyphs, no requests
// beyond the API unless the node configures a base map), alerts by severity with a pulse
// on the unacknowledged ones, live vehicles and responders, the H3 heat layer, result
// layers of a rule trial and of a search, a drawing tool, a layer switcher, and popups
// built from DOM nodes (labels live there, not in symbol layers).
//
// Everything that moves is a GeoJSON source replaced with setData, never a DOM marker.

import maplibregl from 'maplibre-gl';
import type { GeoJSONSource, MapGeoJSONFeature } from 'maplibre-gl';
import 'maplibre-gl/dist/maplibre-gl.css';

import { api } from './api';
import { awaitsAck, isOpen, statusOf } from './alerts';
import { baseStyle, fallBackOnStyleError, hasBasemap } from './basemap';
import { fixedLayer } from './cityindex';
import { unitName, type Session } from './context';
import { h, option } from './dom';
import { DeviceHealth, withHealth } from './devicehealth';
import { DrawTool } from './draw';
import { Heat, HEAT_COLOURS, HEAT_SOURCE, type HeatOf, type HeatRange, type HeatRes } from './heat';
import { formatDateTime, formatNumber, t, tCode } from './i18n';
import {
  AREA_LAYERS,
  CLICK_ORDER,
  CLUSTER_ABOVE,
  cityLayers,
  GROUP_LABELS,
  GROUP_LAYERS,
  OVERLAY_COLOURS,
  OVERLAY_LABELS,
  type Group,
  type OverlayName,
} from './layers';
import { outlines } from './mesh';
import { addHeadingArrow, Positions, POSITIONS_SOURCE, positionsFilter } from './positions';
import { MotionResolution } from './resolution';
import type { Alert, FeatureCollection, LayerName } from './types';
import { LAYER_NAMES } from './types';

const EMPTY: FeatureCollection = { type: 'FeatureCollection', features: [] };
const EMPTY_GEOJSON: GeoJSON.FeatureCollection = { type: 'FeatureCollection', features: [] };

export interface MapHooks {
  openAlert(id: string): void;
}

/** What the end-to-end tests and the frame-rate benchmark read. */
export interface MapTestHook {
  ready: boolean;
  layers: Partial<Record<LayerName, number>>;
  alertsDrawn: number;
  positions: number;
  vehicles: number;
  positionUpdates: number;
  positionsState: string;
  heatCells: number;
  heatState: string;
  /** Devices drawn as offline and as faulty (GET /api/v1/city/devices/health). */
  devicesOffline: number;
  devicesFault: number;
  overlays: Partial<Record<OverlayName, number>>;
  /** Where a place is on the page, in CSS pixels (for tests that click the map). */
  project(lon: number, lat: number): [number, number];
  /** The render scale now and the lowest used while moving (resolution.ts). */
  resolution(): { scale: number; lowest: number };
}

export class CityMap {
  readonly map: maplibregl.Map;
  readonly draw: DrawTool;
  private readonly switcher: HTMLElement;
  private readonly positions: Positions;
  private readonly heat: Heat;
  private readonly resolution: MotionResolution;
  private readonly gridRegion = new Map<string, string>();
  private readonly communities = new Set<string>();
  private readonly overlayCounts: Partial<Record<OverlayName, number>> = {};
  private readonly loadedCallbacks: (() => void)[] = [];
  private zonesData: FeatureCollection = EMPTY;
  private devicesData: FeatureCollection = EMPTY;
  private readonly health: DeviceHealth;
  private openCounts = new Map<string, number>();
  private popup: maplibregl.Popup | null = null;
  private loaded = false;
  private active = true;
  private styleNote = '';
  private pendingAlerts: Alert[] = [];
  private selectedId: string | null = null;
  private unacked = false;
  private pendingCounts: Alert[] = [];
  private pulseFrame = 0;
  private pulsing = false;
  private drawTimer = 0;
  private hoverFrame = 0;
  private hoverPoint: maplibregl.Point | null = null;
  readonly testHook: MapTestHook;

  constructor(
    private readonly container: HTMLElement,
    private readonly session: Session,
    private readonly hooks: MapHooks,
  ) {
    const city = session.city;
    const [west, south, east, north] = city.bbox;
    this.map = new maplibregl.Map({
      container,
      style: baseStyle(city.basemap),
      bounds: [
        [west, south],
        [east, north],
      ],
      fitBoundsOptions: { padding: 20 },
      attributionControl: false,
      // The console draws its own labels in popups; nothing may be fetched from outside.
      localIdeographFontFamily: 'sans-serif',
      // No fade-in of symbols after each update: it would redraw the map for 300 ms every second.
      fadeDuration: 0,
      renderWorldCopies: false,
      pitchWithRotate: false,
    });
    this.map.dragRotate.disable();
    this.map.touchZoomRotate.disableRotation();
    fallBackOnStyleError(this.map, city.basemap, () => {
      this.styleNote = t('basemap_failed');
      this.renderSwitcher();
    });
    if (hasBasemap(city.basemap)) this.map.addControl(new maplibregl.AttributionControl({ compact: true }), 'bottom-right');
    this.map.addControl(new maplibregl.NavigationControl({ showCompass: false }), 'top-right');
    this.map.addControl(new maplibregl.ScaleControl({ unit: 'metric' }), 'bottom-left');
    this.draw = new DrawTool(this.map);
    this.resolution = new MotionResolution(this.map);
    this.positions = new Positions(this.map, () => this.feedChanged());
    this.heat = new Heat(this.map, () => this.feedChanged());
    this.health = new DeviceHealth(
      () => this.map.getSource('devices') as GeoJSONSource | undefined,
      () => this.devicesData,
      () => {
        this.testHook.devicesOffline = this.health.offline;
        this.testHook.devicesFault = this.health.fault;
      },
    );
    this.testHook = {
      ready: false,
      layers: {},
      alertsDrawn: 0,
      positions: 0,
      vehicles: 0,
      positionUpdates: 0,
      positionsState: 'idle',
      heatCells: 0,
      heatState: 'idle',
      devicesOffline: 0,
      devicesFault: 0,
      overlays: {},
      project: (lon, lat) => {
        const p = this.map.project([lon, lat]);
        const box = this.map.getCanvas().getBoundingClientRect();
        return [box.left + p.x, box.top + p.y];
      },
      resolution: () => ({ scale: this.resolution.scale, lowest: this.resolution.lowest }),
    };
    this.switcher = h('fieldset', { className: 'layer-switcher' });
    container.appendChild(this.switcher);
    this.renderSwitcher();
    this.map.on('load', () => void this.loadLayers());
    this.map.on('click', (event) => this.onClick(event));
    this.map.on('mousemove', (event) => this.onHover(event.point));
    // While the map moves the pulse is hidden: a transparent circle layer is skipped by the
    // renderer, and hundreds of large translucent circles would cost a third of each frame.
    this.map.on('movestart', () => {
      if (this.map.getLayer('alerts-pulse')) this.map.setPaintProperty('alerts-pulse', 'circle-opacity', 0);
    });
  }

  /** Runs `callback` once the city's layers are on the map. */
  whenLoaded(callback: () => void): void {
    if (this.loaded) callback();
    else this.loadedCallbacks.push(callback);
  }

  private async loadLayers(): Promise<void> {
    const fetchers: Record<LayerName, () => Promise<FeatureCollection>> = {
      regions: () => fixedLayer('regions'),
      grids: () => fixedLayer('grids'),
      roads: () => fixedLayer('roads'),
      zones: () => api.layer('zones'),
      devices: () => api.layer('devices'),
    };
    const results = await Promise.allSettled(LAYER_NAMES.map((name) => fetchers[name]()));
    const data = {} as Record<LayerName, FeatureCollection>;
    LAYER_NAMES.forEach((name, i) => {
      const result = results[i];
      data[name] = result.status === 'fulfilled' ? result.value : EMPTY;
      this.testHook.layers[name] = data[name].features.length;
    });
    for (const f of data.grids.features) this.gridRegion.set(String(f.id), String(f.properties.region ?? ''));
    for (const f of data.regions.features) if (f.properties.level === 'community') this.communities.add(String(f.id));
    this.zonesData = data.zones;
    this.devicesData = data.devices;

    const map = this.map;
    const lat = map.getCenter().lat;
    map.addSource('regions', { type: 'geojson', data: data.regions as GeoJSON.FeatureCollection, promoteId: 'id' });
    map.addSource('grids', { type: 'geojson', data: data.grids as GeoJSON.FeatureCollection });
    // Outlines as lines drawn once each (see mesh.ts); grid edges on a region boundary are left
    // to the region's line.
    const RANK: Record<string, number> = { district: 3, street: 2 };
    const regionLines = outlines(data.regions.features, (f) => RANK[String(f.properties.level)] ?? 1);
    const gridLines = outlines(data.grids.features, () => 0, regionLines.keys);
    map.addSource('region-lines', { type: 'geojson', data: regionLines.lines as GeoJSON.FeatureCollection });
    map.addSource('grid-lines', { type: 'geojson', data: gridLines.lines as GeoJSON.FeatureCollection });
    map.addSource('roads', { type: 'geojson', data: data.roads as GeoJSON.FeatureCollection });
    map.addSource('zones', { type: 'geojson', data: data.zones as GeoJSON.FeatureCollection });
    const clustered = data.devices.features.length > CLUSTER_ABOVE;
    map.addSource('devices', {
      type: 'geojson',
      data: withHealth(data.devices, new Map()) as GeoJSON.FeatureCollection,
      cluster: clustered,
      // How many devices of a cluster need care: the cluster gets a ring and says so.
      clusterProperties: { needs_care: ['+', ['case', ['==', ['get', 'health'], 'ok'], 0, 1]] },
      clusterRadius: 40,
      clusterMaxZoom: 15,
      // Points need no deeper tiles: fewer to cut while zooming in.
      maxzoom: 16,
    });
    map.addSource(HEAT_SOURCE, { type: 'geojson', data: EMPTY_GEOJSON });
    map.addSource(POSITIONS_SOURCE, { type: 'geojson', data: EMPTY_GEOJSON, maxzoom: 14 });
    map.addSource('alerts', { type: 'geojson', data: EMPTY_GEOJSON, maxzoom: 16 });
    for (const name of ['trial', 'search'] as OverlayName[]) map.addSource(`${name}-points`, { type: 'geojson', data: EMPTY_GEOJSON, maxzoom: 16 });
    addHeadingArrow(map);

    for (const layer of cityLayers(lat)) map.addLayer(layer);
    if (this.selectedId) map.setFilter('alerts-selected', ['==', ['get', 'id'], this.selectedId]);
    this.loaded = true;
    this.applyVisibility();
    this.testHook.ready = true;
    this.container.dataset.layersLoaded = LAYER_NAMES.filter((n) => (this.testHook.layers[n] ?? 0) > 0).join(',');
    this.drawAlerts(this.pendingAlerts);
    this.setCommunityCounts(this.pendingCounts);
    this.updateFeeds();
    for (const callback of this.loadedCallbacks.splice(0)) callback();
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
    if (pulse !== this.unacked) {
      this.unacked = pulse;
      this.applyVisibility();
    }
    if (pulse && !this.pulsing && this.active) this.startPulse();
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
    let changedSet = counts.size !== this.openCounts.size;
    for (const region of new Set([...this.openCounts.keys(), ...counts.keys()])) {
      const n = counts.get(region) ?? 0;
      if ((this.openCounts.get(region) ?? 0) !== n) this.map.setFeatureState({ source: 'regions', id: region }, { open: n });
      if (!this.openCounts.has(region) || !counts.has(region)) changedSet = true;
    }
    if (changedSet) this.map.setFilter('regions-fill', ['in', ['get', 'id'], ['literal', [...counts.keys()]]]);
    this.openCounts = counts;
  }

  setSelected(id: string | null): void {
    this.selectedId = id;
    if (!this.loaded) return;
    this.map.setFilter('alerts-selected', ['==', ['get', 'id'], id ?? '']);
    this.applyVisibility();
  }

  focus(alert: Alert): void {
    if (typeof alert.lon !== 'number' || typeof alert.lat !== 'number') return;
    this.flyTo(alert.lon, alert.lat);
  }

  flyTo(lon: number, lat: number, zoom = 14): void {
    this.map.easeTo({ center: [lon, lat], zoom: Math.max(this.map.getZoom(), zoom), duration: 600 });
  }

  /** Fits the map to points (lon, lat pairs), if any. */
  fitPoints(points: [number, number][]): void {
    if (!points.length) return;
    const bounds = new maplibregl.LngLatBounds(points[0], points[0]);
    for (const p of points) bounds.extend(p);
    this.map.fitBounds(bounds, { padding: 60, maxZoom: 15, duration: 600 });
  }

  /** The zones as last loaded. */
  zones(): FeatureCollection {
    return this.zonesData;
  }

  /** Loads the zones layer again (after a zone was saved or deleted). */
  async reloadZones(): Promise<void> {
    const zones = await api.layer('zones');
    this.zonesData = zones;
    this.testHook.layers.zones = zones.features.length;
    (this.map.getSource('zones') as GeoJSONSource | undefined)?.setData(zones as GeoJSON.FeatureCollection);
  }

  /** Shows points of a trial or a search (null: removes them). */
  setOverlay(name: OverlayName, features: GeoJSON.Feature<GeoJSON.Point>[] | null): void {
    const apply = () => {
      (this.map.getSource(`${name}-points`) as GeoJSONSource | undefined)?.setData({ type: 'FeatureCollection', features: features ?? [] });
      if (features?.length) this.overlayCounts[name] = features.length;
      else delete this.overlayCounts[name];
      this.testHook.overlays = { ...this.overlayCounts };
      if (features?.length) this.visibleOverlays[name] = true;
      this.applyVisibility();
      this.renderSwitcher();
    };
    this.whenLoaded(apply);
  }

  /** Whether the map is on screen: live feeds and the pulse run only then. */
  setActive(active: boolean): void {
    this.active = active;
    if (active) this.map.resize();
    if (!active) this.stopPulse();
    else if (this.loaded) this.drawAlerts(this.pendingAlerts);
    this.updateFeeds();
  }

  resize(): void {
    this.map.resize();
  }

  /** Re-labels the switcher after a language change. */
  relabel(): void {
    this.renderSwitcher();
  }

  private readonly visible: Record<Group, boolean> = {
    regions: true,
    heat: false,
    grids: true,
    roads: true,
    zones: true,
    devices: true,
    vehicles: true,
    responders: true,
    alerts: true,
  };
  private readonly visibleOverlays: Record<OverlayName, boolean> = { trial: true, search: true };

  private updateFeeds(): void {
    if (!this.loaded) return;
    this.positions.setWanted(this.active && (this.visible.vehicles || this.visible.responders));
    this.heat.setWanted(this.active && this.visible.heat);
    this.health.setWanted(this.active && this.visible.devices);
  }

  private feedChanged(): void {
    this.testHook.positions = this.positions.count;
    this.testHook.vehicles = this.positions.vehicles;
    this.testHook.positionUpdates = this.positions.updates;
    this.testHook.positionsState = this.positions.state;
    this.testHook.heatCells = this.heat.cells;
    this.testHook.heatState = this.heat.state;
    // The switcher shows the feeds' states; redraw it only when one of them changes.
    const key = `${this.positions.state}|${this.heat.state}|${this.heat.cells}|${this.heat.max}`;
    if (key !== this.feedKey) {
      this.feedKey = key;
      this.renderSwitcher();
    }
  }
  private feedKey = '';

  private renderSwitcher(): void {
    const groups = Object.keys(GROUP_LAYERS) as Group[];
    const note = (group: Group): string => {
      const feed = group === 'vehicles' || group === 'responders' ? this.positions.state : group === 'heat' ? this.heat.state : 'idle';
      if (feed === 'unavailable') return t('feed_unavailable');
      if (feed === 'error') return t('feed_error');
      return '';
    };
    const box = (id: string, checked: boolean, onChange: (checked: boolean) => void) => {
      const input = h('input', { type: 'checkbox', id });
      input.checked = checked;
      input.addEventListener('change', () => onChange(input.checked));
      return input;
    };
    const rows: HTMLElement[] = groups.map((group) => {
      const input = box(`layer-${group}`, this.visible[group], (checked) => {
        this.visible[group] = checked;
        this.applyVisibility();
        this.updateFeeds();
        if (group === 'heat') this.renderSwitcher();
      });
      input.dataset.layer = group;
      const text = note(group);
      return h(
        'div',
        { className: 'layer-option' },
        input,
        h('label', { for: input.id }, t(GROUP_LABELS[group])),
        text ? h('span', { className: 'layer-note', 'data-note': group }, text) : '',
      );
    });
    const heatIndex = groups.indexOf('heat');
    if (this.visible.heat) rows.splice(heatIndex + 1, 0, this.heatControls());
    const overlays = (Object.keys(this.overlayCounts) as OverlayName[]).map((name) => {
      const input = box(`layer-${name}`, this.visibleOverlays[name], (checked) => {
        this.visibleOverlays[name] = checked;
        this.applyVisibility();
      });
      input.dataset.layer = name;
      return h(
        'div',
        { className: 'layer-option overlay' },
        input,
        h('label', { for: input.id }, h('span', { className: 'swatch', style: `background:${OVERLAY_COLOURS[name]}` }), `${t(OVERLAY_LABELS[name])} (${this.overlayCounts[name]})`),
        h(
          'button',
          { type: 'button', className: 'icon small', 'data-clear': name, title: t('layer_clear'), 'aria-label': `${t('layer_clear')}: ${t(OVERLAY_LABELS[name])}`, onclick: () => this.setOverlay(name, null) },
          '×',
        ),
      );
    });
    this.switcher.replaceChildren(
      h('legend', {}, t('layers')),
      ...rows,
      ...overlays,
      this.styleNote ? h('p', { className: 'layer-note' }, this.styleNote) : '',
    );
  }

  private heatControls(): HTMLElement {
    const o = this.heat.options;
    const of = h('select', { name: 'heat-of', 'aria-label': t('heat_of') }, option('events', t('heat_events'), o.of === 'events'), option('alerts', t('heat_alerts'), o.of === 'alerts'));
    const range = h(
      'select',
      { name: 'heat-range', 'aria-label': t('heat_range') },
      (['1h', '24h', '7d'] as HeatRange[]).map((r) => option(r, t(`time_${r}`), o.range === r)),
    );
    const res = h(
      'select',
      { name: 'heat-res', 'aria-label': t('heat_res') },
      ([7, 8, 9] as HeatRes[]).map((r) => option(String(r), t(`heat_res_${r}`), o.res === r)),
    );
    const change = () => this.heat.setOptions({ of: of.value as HeatOf, range: range.value as HeatRange, res: Number(res.value) as HeatRes });
    for (const s of [of, range, res]) s.addEventListener('change', change);
    const legend =
      this.heat.state === 'live'
        ? h(
            'div',
            { className: 'heat-legend' },
            h('span', {}, formatNumber(this.heat.min)),
            h('span', { className: 'ramp', style: `background:linear-gradient(to right,${HEAT_COLOURS.join(',')})` }),
            h('span', {}, formatNumber(this.heat.max)),
            h('span', { className: 'muted' }, t('heat_cells', { n: formatNumber(this.heat.cells) })),
          )
        : '';
    return h('div', { className: 'heat-controls' }, of, range, res, legend);
  }

  /**
   * Whether a layer is drawn: its group is switched on, and it has something to draw. A
   * layer left visible costs draw calls on every frame even when it filters out everything.
   */
  private shown(layer: string, group: Group): boolean {
    switch (layer) {
      case 'positions-circle':
        return this.visible.vehicles || this.visible.responders;
      case 'alerts-pulse':
        return this.visible.alerts && this.unacked;
      case 'alerts-selected':
        return this.visible.alerts && this.selectedId !== null;
      default:
        return this.visible[group];
    }
  }

  private applyVisibility(): void {
    if (!this.loaded) return;
    const set = (layer: string, on: boolean) => {
      const value = on ? 'visible' : 'none';
      if (this.map.getLayer(layer) && this.map.getLayoutProperty(layer, 'visibility') !== value) this.map.setLayoutProperty(layer, 'visibility', value);
    };
    for (const group of Object.keys(GROUP_LAYERS) as Group[]) {
      for (const layer of GROUP_LAYERS[group]) set(layer, this.shown(layer, group));
    }
    const filter = positionsFilter(this.visible.vehicles, this.visible.responders);
    if (JSON.stringify(filter) !== JSON.stringify(this.map.getFilter('positions-circle'))) this.map.setFilter('positions-circle', filter);
    for (const name of ['trial', 'search'] as OverlayName[]) set(`${name}-circle`, this.visibleOverlays[name] && !!this.overlayCounts[name]);
  }

  private visibleClickLayers(): string[] {
    return CLICK_ORDER.filter((id) => this.map.getLayer(id) && this.map.getLayoutProperty(id, 'visibility') !== 'none');
  }

  /** The pointer over something clickable: at most one look-up per frame, none while moving. */
  private onHover(point: maplibregl.Point): void {
    if (this.draw.active || !this.loaded) return;
    this.hoverPoint = point;
    if (this.hoverFrame) return;
    this.hoverFrame = requestAnimationFrame(() => {
      this.hoverFrame = 0;
      if (!this.hoverPoint || this.map.isMoving() || this.draw.active) return;
      const hit = this.map.queryRenderedFeatures(this.hoverPoint, { layers: this.visibleClickLayers().filter((l) => !AREA_LAYERS.has(l)) });
      this.map.getCanvas().style.cursor = hit.length ? 'pointer' : '';
    });
  }

  private onClick(event: maplibregl.MapMouseEvent): void {
    if (this.draw.active || !this.loaded) return;
    const hits = this.map.queryRenderedFeatures(event.point, { layers: this.visibleClickLayers() });
    if (!hits.length) return;
    const top = CLICK_ORDER.map((layer) => hits.find((f) => f.layer.id === layer)).find((f): f is MapGeoJSONFeature => !!f);
    if (!top) return;
    const layer = top.layer.id;
    if (layer === 'alerts-circle') {
      const id = String(top.properties.id);
      this.showPopup(event.lngLat, this.alertPopup(top));
      this.hooks.openAlert(id);
      return;
    }
    if (layer === 'devices-cluster') {
      const count = Number(top.properties.point_count);
      const care = Number(top.properties.needs_care ?? 0);
      this.showPopup(event.lngLat, h('div', {}, t('popup_cluster', { n: count }), care ? h('div', {}, t('popup_cluster_care', { n: care })) : ''));
      const source = this.map.getSource('devices') as GeoJSONSource;
      void source.getClusterExpansionZoom(Number(top.properties.cluster_id)).then((zoom) => {
        this.map.easeTo({ center: event.lngLat, zoom });
      });
      return;
    }
    if (layer === 'positions-circle') {
      this.showPopup(event.lngLat, this.positionPopup(top));
      return;
    }
    if (layer === 'trial-circle') {
      this.showPopup(event.lngLat, this.trialPopup(top));
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

  private trialPopup(feature: MapGeoJSONFeature): HTMLElement {
    const p = feature.properties;
    return h(
      'div',
      { className: 'popup' },
      h('strong', {}, String(p.title || p.id)),
      h('div', {}, `${t('layer_trial')} · ${tCode('severity', String(p.severity ?? 'medium'))}`),
      h('div', {}, formatDateTime(String(p.time ?? ''))),
      p.grid ? h('div', {}, `${t('field_grid')}: ${String(p.grid)}`) : '',
    );
  }

  private positionPopup(feature: MapGeoJSONFeature): HTMLElement {
    const p = feature.properties;
    const vehicle = p.kind === 'vehicle';
    const rows: [string, string][] = [];
    rows.push([t('field_time'), formatDateTime(String(p.time ?? ''))]);
    if (p.speed_kmh !== undefined && p.speed_kmh !== null) rows.push([t('position_speed'), t('kmh', { n: formatNumber(Number(p.speed_kmh)) })]);
    if (p.heading !== undefined && p.heading !== null) rows.push([t('position_heading'), `${formatNumber(Number(p.heading))}°`]);
    if (p.class) rows.push([t('position_class'), String(p.class)]);
    if (p.unit) rows.push([t('field_owner'), unitName(this.session, String(p.unit))]);
    if (p.available !== undefined && p.available !== null) rows.push([t('position_available'), p.available === true || p.available === 'true' ? t('yes') : t('no')]);
    return h(
      'div',
      { className: 'popup', 'data-position': String(p.id) },
      h('strong', {}, `${vehicle ? t('position_vehicle') : t('position_responder')} ${String(p.id ?? '')}`),
      h('table', {}, rows.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v)))),
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
        rows.map(([k, v]) =>
          k === 'health'
            ? h('tr', { className: `health-${String(v)}` }, h('th', { scope: 'row' }, t('field_health')), h('td', {}, tCode('health', String(v))))
            : h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, typeof v === 'object' ? JSON.stringify(v) : String(v))),
        ),
      ),
    );
    return body;
  }

  showPopup(at: maplibregl.LngLatLike, content: HTMLElement): void {
    this.popup?.remove();
    this.popup = new maplibregl.Popup({ maxWidth: '320px' }).setLngLat(at).setDOMContent(content).addTo(this.map);
  }

  /**
   * Unacknowledged alerts pulse: radius and opacity of their own layer. Each step redraws
   * the whole map, so it steps ten times a second, and not at all while the map moves
   * (it redraws anyway then, and the frames belong to panning).
   */
  private startPulse(): void {
    this.pulsing = true;
    const period = 1600;
    let last = 0;
    const frame = (now: number) => {
      if (!this.pulsing) return;
      if (now - last > 100 && !this.map.isMoving() && this.visible.alerts && this.map.getLayer('alerts-pulse')) {
        last = now;
        const phase = (now % period) / period;
        this.map.setPaintProperty('alerts-pulse', 'circle-radius', 8 + 12 * phase);
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
    this.positions.destroy();
    this.heat.destroy();
    this.draw.stop();
    this.resolution.destroy();
    clearTimeout(this.drawTimer);
    cancelAnimationFrame(this.hoverFrame);
    this.popup?.remove();
    this.map.remove();
  }
}
