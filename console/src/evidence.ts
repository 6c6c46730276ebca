// The evidence of an alert: its events (`GET /api/v1/alerts/{id}/evidence`, or one by one
// with `GET /api/v1/events/{id}` from a node without it; at most 20) listed and drawn on a
// small map of their own beside the alert's point, so the duty officer sees what the rule
// saw and where.

import maplibregl from 'maplibre-gl';

import { api, messageOf, unavailable } from './api';
import { baseStyle } from './basemap';
import { fixedLayer } from './cityindex';
import { h } from './dom';
import { formatDateTime, t } from './i18n';
import { severityColour } from './layers';
import type { Alert, Basemap, EventRecord } from './types';

/** Events fetched and drawn at most. */
export const MAX_EVIDENCE = 20;
const PARALLEL = 4;

type Loaded = { id: string; event: EventRecord | null; problem: string | null };

export class EvidenceView {
  readonly el: HTMLElement;
  private readonly mapBox: HTMLElement;
  private readonly list: HTMLElement;
  private readonly status: HTMLElement;
  private map: maplibregl.Map | null = null;
  private loaded: Loaded[] = [];
  private destroyed = false;

  constructor(
    private readonly alertId: string,
    private readonly alert: Alert,
    private readonly basemap: Basemap | null | undefined,
  ) {
    const ids = (alert.evidence ?? []).slice(0, MAX_EVIDENCE);
    this.mapBox = h('div', { className: 'evidence-map', 'aria-label': t('evidence_map') });
    this.list = h('ol', { className: 'evidence-list' });
    this.status = h('p', { className: 'muted evidence-status', role: 'status' }, t('loading'));
    const total = alert.evidence?.length ?? 0;
    this.el = h(
      'section',
      { className: 'evidence', 'data-evidence': String(ids.length) },
      h('h3', {}, t('evidence_heading', { n: total })),
      total > MAX_EVIDENCE ? h('p', { className: 'hint' }, t('evidence_first', { n: MAX_EVIDENCE, total })) : '',
      this.mapBox,
      this.status,
      this.list,
    );
    void this.load(ids);
  }

  destroy(): void {
    this.destroyed = true;
    this.map?.remove();
    this.map = null;
  }

  private async load(ids: string[]): Promise<void> {
    let results: Loaded[];
    try {
      const found = new Map((await api.evidence(this.alertId)).items.map((e) => [e.id, e]));
      results = ids.map((id) => ({ id, event: found.get(id) ?? null, problem: found.has(id) ? null : t('evidence_gone') }));
    } catch (e) {
      if (!unavailable(e)) {
        if (this.destroyed) return;
        this.status.textContent = messageOf(e);
        this.mapBox.hidden = true;
        return;
      }
      results = await this.oneByOne(ids);
    }
    if (this.destroyed) return;
    this.loaded = results;
    this.renderList();
    const placed = results.filter((r) => r.event && typeof r.event.lon === 'number' && typeof r.event.lat === 'number');
    const found = results.filter((r) => r.event).length;
    if (results.length && results.every((r) => r.problem === 'unavailable')) {
      this.status.textContent = t('evidence_unavailable');
      this.mapBox.hidden = true;
      return;
    }
    this.status.textContent = t('evidence_found', { found, total: results.length, placed: placed.length });
    if (placed.length || (typeof this.alert.lon === 'number' && typeof this.alert.lat === 'number')) await this.drawMap(placed.map((r) => r.event as EventRecord));
    else this.mapBox.hidden = true;
  }

  /** Each event on its own, a few at a time (a node without the evidence call). */
  private async oneByOne(ids: string[]): Promise<Loaded[]> {
    const results: Loaded[] = ids.map((id) => ({ id, event: null, problem: null }));
    let next = 0;
    const worker = async () => {
      while (next < ids.length && !this.destroyed) {
        const slot = results[next++];
        try {
          slot.event = await api.event(slot.id);
        } catch (e) {
          slot.problem = unavailable(e) ? 'unavailable' : messageOf(e);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, ids.length) }, worker));
    return results;
  }

  private renderList(): void {
    this.list.replaceChildren(
      ...this.loaded.map((r) => {
        const e = r.event;
        if (!e) {
          const why = r.problem === 'unavailable' ? t('evidence_unavailable_one') : r.problem ?? '';
          return h('li', { className: 'missing', 'data-event-id': r.id }, h('code', {}, r.id), ' ', h('span', { className: 'muted' }, why));
        }
        const plate = typeof e.attrs?.plate === 'string' ? e.attrs.plate : '';
        const li = h(
          'li',
          { 'data-event-id': e.id, tabindex: '0' },
          h('time', { dateTime: e.time }, formatDateTime(e.time)),
          ` · ${e.kind} · ${e.source}`,
          plate ? ` · ${plate}` : '',
          h('div', {}, h('code', {}, e.id)),
        );
        const show = (on: boolean) => this.highlight(on ? e.id : null);
        li.addEventListener('mouseenter', () => show(true));
        li.addEventListener('mouseleave', () => show(false));
        li.addEventListener('focus', () => show(true));
        li.addEventListener('blur', () => show(false));
        return li;
      }),
    );
  }

  private highlight(id: string | null): void {
    if (!this.map?.getLayer('evidence-hover')) return;
    this.map.setFilter('evidence-hover', ['==', ['get', 'id'], id ?? '']);
  }

  private async drawMap(events: EventRecord[]): Promise<void> {
    const roads = await fixedLayer('roads').catch(() => null);
    if (this.destroyed) return;
    const alert = this.alert;
    const points: [number, number][] = events.map((e) => [e.lon as number, e.lat as number]);
    const hasAlert = typeof alert.lon === 'number' && typeof alert.lat === 'number';
    if (hasAlert) points.push([alert.lon as number, alert.lat as number]);
    const bounds = new maplibregl.LngLatBounds(points[0], points[0]);
    for (const p of points) bounds.extend(p);
    const map = new maplibregl.Map({
      container: this.mapBox,
      style: baseStyle(this.basemap),
      bounds,
      fitBoundsOptions: { padding: 30, maxZoom: 16 },
      attributionControl: false,
      localIdeographFontFamily: 'sans-serif',
      cooperativeGestures: false,
    });
    this.map = map;
    map.addControl(new maplibregl.NavigationControl({ showCompass: false }), 'top-right');
    map.on('load', () => {
      if (this.destroyed) return;
      if (roads) {
        map.addSource('roads', { type: 'geojson', data: roads as GeoJSON.FeatureCollection });
        map.addLayer({ id: 'roads', type: 'line', source: 'roads', paint: { 'line-color': '#c5ccd3', 'line-width': 1.2 } });
      }
      map.addSource('evidence', {
        type: 'geojson',
        data: {
          type: 'FeatureCollection',
          features: events.map((e) => ({ type: 'Feature', geometry: { type: 'Point', coordinates: [e.lon as number, e.lat as number] }, properties: { id: e.id, kind: e.kind, source: e.source, time: e.time } })),
        },
      });
      map.addSource('alert', {
        type: 'geojson',
        data: hasAlert
          ? { type: 'Feature', geometry: { type: 'Point', coordinates: [alert.lon as number, alert.lat as number] }, properties: { severity: alert.severity ?? 'medium' } }
          : { type: 'FeatureCollection', features: [] },
      });
      map.addLayer({ id: 'alert-ring', type: 'circle', source: 'alert', paint: { 'circle-radius': 12, 'circle-color': 'rgba(0,0,0,0)', 'circle-stroke-color': severityColour, 'circle-stroke-width': 4 } });
      map.addLayer({ id: 'evidence', type: 'circle', source: 'evidence', paint: { 'circle-radius': 5, 'circle-color': '#263238', 'circle-stroke-color': '#ffffff', 'circle-stroke-width': 1.5 } });
      map.addLayer({
        id: 'evidence-hover',
        type: 'circle',
        source: 'evidence',
        filter: ['==', ['get', 'id'], ''],
        paint: { 'circle-radius': 9, 'circle-color': '#ffbf47', 'circle-stroke-color': '#263238', 'circle-stroke-width': 2 },
      });
      this.mapBox.dataset.points = String(events.length);
      map.on('click', 'evidence', (event) => {
        const f = event.features?.[0];
        if (!f) return;
        const id = String(f.properties.id);
        this.list.querySelector<HTMLElement>(`li[data-event-id="${CSS.escape(id)}"]`)?.focus();
        new maplibregl.Popup({ maxWidth: '260px' })
          .setLngLat(event.lngLat)
          .setDOMContent(h('div', { className: 'popup' }, h('strong', {}, String(f.properties.kind)), h('div', {}, String(f.properties.source)), h('div', {}, formatDateTime(String(f.properties.time)))))
          .addTo(map);
      });
    });
  }
}
