// The search page: stored events by plate (whole or partial, `*` and `?` as wildcards),
// kind, time and an area drawn on the map (`POST /api/v1/search`), shown in a table and as
// a layer on the main map, with further pages and a CSV export of the same search.
//
// Searches of vehicle data are to carry a purpose (a case number and the legal basis). The
// node does not take them yet; the form keeps their place, disabled and labelled so, rather
// than collecting something that is not recorded.

import { api, download, messageOf, unavailable } from './api';
import type { Session } from './context';
import { field, h, option } from './dom';
import type { LngLat } from './draw';
import { formatDateTime, formatNumber, t } from './i18n';
import { followJob } from './jobs';
import type { CityMap } from './map';
import type { EventRecord, SearchQuery } from './types';

const PAGE = 500;
/** Roles the node lets search (responders see their alerts' evidence only). */
const SEARCH_ROLES = ['admin', 'analyst', 'dispatcher'];

export function canSearch(session: Session): boolean {
  return SEARCH_ROLES.includes(session.me.role);
}
const KINDS = ['plate_read', 'gps'];
const DAY_MS = 24 * 3600e3;

export interface SearchHooks {
  map(): CityMap | null;
}

/** A `datetime-local` value for a time (local time, to the minute). */
export function localInput(time: number): string {
  const d = new Date(time);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** What the search form holds: its fields as typed, and the area drawn on the map. */
export interface SearchForm {
  plate: string;
  kind: string;
  /** `datetime-local` values (local time); empty: open-ended. */
  since: string;
  until: string;
  /** A polygon's points, without the closing one. */
  area: LngLat[] | null;
  /** An area is still being drawn (its points are not final). */
  areaUnfinished: boolean;
}

/**
 * The body of `POST /api/v1/search` for the form, or what is wrong with it. The plate goes
 * as typed (trimmed): the node reads `*` and `?` in it as wildcards.
 */
export function searchQuery(form: SearchForm, limit = PAGE): SearchQuery | { error: 'search_bad_range' | 'search_finish_area' } {
  const query: SearchQuery = { limit };
  const plate = form.plate.trim();
  const kind = form.kind.trim();
  if (plate) query.plate = plate;
  if (kind) query.kind = kind;
  const since = form.since ? Date.parse(form.since) : NaN;
  const until = form.until ? Date.parse(form.until) : NaN;
  if (!Number.isNaN(since) && !Number.isNaN(until) && since >= until) return { error: 'search_bad_range' };
  if (!Number.isNaN(since)) query.since = new Date(since).toISOString();
  if (!Number.isNaN(until)) query.until = new Date(until).toISOString();
  if (form.areaUnfinished) return { error: 'search_finish_area' };
  if (form.area) {
    const ring = form.area.map((p) => [p[0], p[1]]);
    query.area = { type: 'Polygon', coordinates: [[...ring, ring[0]]] };
  }
  return query;
}

function plateOf(event: EventRecord): string {
  const plate = event.attrs?.plate;
  return typeof plate === 'string' ? plate : '';
}

export class SearchPage {
  readonly el: HTMLElement;
  private readonly form: HTMLFormElement;
  private readonly plate: HTMLInputElement;
  private readonly kind: HTMLInputElement;
  private readonly since: HTMLInputElement;
  private readonly until: HTMLInputElement;
  private readonly areaBox: HTMLElement;
  private readonly status: HTMLElement;
  private readonly results: HTMLElement;
  /** The area's points (a polygon's, without the closing one). */
  private area: LngLat[] | null = null;
  private drawing = false;
  private query: SearchQuery | null = null;
  private items: EventRecord[] = [];
  private next: string | null = null;
  private picked: string | null = null;
  private busy = false;
  /** The export under way: rows written so far of about how many. */
  private exporting: { done: number; total: number } | null = null;
  private message: { text: string; error: boolean } | null = null;

  constructor(private readonly hooks: SearchHooks) {
    this.plate = h('input', { type: 'search', name: 'plate', autocomplete: 'off', spellcheck: 'false' });
    this.kind = h('input', { type: 'text', name: 'kind', autocomplete: 'off', list: 'search-kinds' });
    this.since = h('input', { type: 'datetime-local', name: 'since' });
    this.until = h('input', { type: 'datetime-local', name: 'until' });
    // From a day ago; no end means up to now, whenever the search is made.
    this.since.value = localInput(Date.now() - DAY_MS);
    this.areaBox = h('fieldset', { className: 'search-area' });
    this.form = h('form', { className: 'search-form', role: 'search' });
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      void this.search();
    });
    this.status = h('p', { className: 'search-status', role: 'status', 'aria-live': 'polite' });
    this.results = h('div', { className: 'search-results' });
    this.el = h('section', { className: 'search-page', 'aria-labelledby': 'search-heading' });
    this.relabel();
  }

  /** The page is on screen again: the area, if any, comes back on the map. */
  show(): void {
    const map = this.hooks.map();
    if (map && this.area && !map.draw.active) map.whenLoaded(() => this.editArea(this.area as LngLat[]));
  }

  /** The page leaves the screen: its drawing leaves the map (the area is kept). */
  hide(): void {
    if (this.drawing) this.hooks.map()?.draw.stop();
    this.drawing = false;
    this.renderArea();
  }

  relabel(): void {
    this.plate.placeholder = t('search_plate_placeholder');
    this.renderForm();
    this.renderArea();
    this.renderResults();
    this.el.replaceChildren(
      h('header', { className: 'page-header' }, h('h2', { id: 'search-heading' }, t('search_heading'))),
      h('p', { className: 'muted' }, t('search_intro')),
      this.form,
      this.status,
      this.results,
    );
  }

  private renderForm(): void {
    const purpose = h(
      'fieldset',
      { className: 'purpose', disabled: true, 'aria-describedby': 'purpose-note' },
      h('legend', {}, t('search_purpose')),
      field(t('search_case'), h('input', { type: 'text', name: 'case_number', autocomplete: 'off' })),
      field(t('search_legal_basis'), h('select', { name: 'legal_basis' }, option('', t('search_legal_basis_choose')))),
      h('p', { id: 'purpose-note', className: 'hint' }, t('search_purpose_note')),
    );
    this.form.replaceChildren(
      h(
        'div',
        { className: 'search-grid' },
        h('div', { className: 'field' }, h('label', { for: (this.plate.id ||= 'search-plate') }, t('search_plate')), this.plate, h('span', { className: 'hint' }, t('search_plate_hint'))),
        h(
          'div',
          { className: 'field' },
          h('label', { for: (this.kind.id ||= 'search-kind') }, t('search_kind')),
          this.kind,
          h('datalist', { id: 'search-kinds' }, KINDS.map((k) => h('option', { value: k }))),
        ),
        field(t('filter_since'), this.since),
        h('div', { className: 'field' }, h('label', { for: (this.until.id ||= 'search-until') }, t('filter_until')), this.until, h('span', { className: 'hint' }, t('search_until_hint'))),
      ),
      this.areaBox,
      purpose,
      h(
        'div',
        { className: 'form-buttons' },
        h('button', { type: 'submit', className: 'primary', 'data-action': 'search', disabled: this.busy }, t('search_submit')),
        h('button', { type: 'button', className: 'secondary', onclick: () => this.reset() }, t('search_reset')),
      ),
    );
  }

  private renderArea(): void {
    const map = this.hooks.map();
    const points = this.drawing ? (map?.draw.count ?? 0) : (this.area?.length ?? 0);
    const text = this.drawing
      ? map?.draw.drawing
        ? t('search_area_drawing', { n: points })
        : t('search_area_editing', { n: points })
      : this.area
        ? t('search_area_set', { n: points })
        : t('search_area_none');
    this.areaBox.replaceChildren(
      h('legend', {}, t('search_area')),
      h('p', { className: 'area-state', 'data-points': String(points) }, text),
      h(
        'div',
        { className: 'form-buttons' },
        this.drawing && map?.draw.drawing
          ? h('button', { type: 'button', 'data-action': 'finish-area', onclick: () => map?.draw.finish() }, t('zones_finish'))
          : h('button', { type: 'button', 'data-action': 'draw-area', disabled: !map, onclick: () => this.drawArea() }, this.area ? t('search_area_redraw') : t('search_area_draw')),
        this.area || this.drawing ? h('button', { type: 'button', className: 'secondary', 'data-action': 'clear-area', onclick: () => this.clearArea() }, t('search_area_clear')) : '',
      ),
    );
  }

  private drawArea(): void {
    const map = this.hooks.map();
    if (!map) return;
    this.area = null;
    this.drawing = true;
    map.draw.start('polygon', this.drawHooks());
    this.renderArea();
  }

  private editArea(points: LngLat[]): void {
    const map = this.hooks.map();
    if (!map) return;
    this.drawing = true;
    map.draw.start('polygon', this.drawHooks(), points);
    this.renderArea();
  }

  private drawHooks() {
    const map = this.hooks.map() as CityMap;
    const keep = () => {
      const g = map.draw.geometry();
      this.area = g && g.type === 'Polygon' ? (g.coordinates[0].slice(0, -1) as LngLat[]) : null;
      this.renderArea();
    };
    return {
      changed: keep,
      finished: keep,
      cancelled: () => {
        this.drawing = false;
        this.renderArea();
      },
    };
  }

  private clearArea(): void {
    if (this.drawing) this.hooks.map()?.draw.stop();
    this.drawing = false;
    this.area = null;
    this.renderArea();
  }

  private reset(): void {
    this.plate.value = '';
    this.kind.value = '';
    this.since.value = localInput(Date.now() - DAY_MS);
    this.until.value = '';
    this.clearArea();
    this.items = [];
    this.next = null;
    this.query = null;
    this.message = null;
    this.hooks.map()?.setOverlay('search', null);
    this.renderResults();
  }

  private buildQuery(): SearchQuery | string {
    const query = searchQuery({
      plate: this.plate.value,
      kind: this.kind.value,
      since: this.since.value,
      until: this.until.value,
      area: this.area,
      areaUnfinished: this.drawing && !!this.hooks.map()?.draw.drawing,
    });
    return 'error' in query ? t(query.error) : query;
  }

  private async search(): Promise<void> {
    const query = this.buildQuery();
    if (typeof query === 'string') {
      this.message = { text: query, error: true };
      this.renderResults();
      return;
    }
    this.query = query;
    this.items = [];
    this.next = null;
    this.picked = null;
    await this.fetchPage(null);
    const map = this.hooks.map();
    const points = this.items.filter((e) => typeof e.lon === 'number' && typeof e.lat === 'number').map((e) => [e.lon, e.lat] as [number, number]);
    if (map && points.length && !this.area) map.fitPoints(points);
  }

  private async fetchPage(cursor: string | null): Promise<void> {
    if (!this.query || this.busy) return;
    this.busy = true;
    this.message = { text: t('loading'), error: false };
    this.renderResults();
    try {
      const page = await api.search(cursor ? { ...this.query, cursor } : this.query);
      this.items = cursor ? [...this.items, ...page.items] : page.items;
      this.next = page.next;
      this.message = null;
    } catch (e) {
      this.message = { text: unavailable(e) ? t('search_unavailable') : messageOf(e), error: true };
    } finally {
      this.busy = false;
    }
    this.showOnMap();
    this.renderResults();
    this.renderForm();
  }

  /**
   * Exports every event the search matches (not just the pages shown) through a job on
   * the node, showing its progress; a node without exports gives the shown page's CSV.
   */
  private async exportCsv(): Promise<void> {
    if (!this.query || this.exporting) return;
    const { limit, cursor, ...query } = this.query;
    const stamp = new Date().toISOString().slice(0, 16).replace(/[-:]/g, '').replace('T', '-');
    const name = `cityward-search-${stamp}.csv`;
    this.exporting = { done: 0, total: 0 };
    this.renderResults();
    try {
      let job = await api.searchExport(query);
      job = await followJob(job, (j) => this.showExportProgress(j.progress?.done ?? 0, j.progress?.total ?? 0), new AbortController().signal);
      if (job.state !== 'done' || !job.result) throw new Error(job.error ?? t('search_export_failed'));
      download(await api.blob(job.result.url), name);
      this.message = { text: t(job.result.truncated ? 'search_exported_truncated' : 'search_exported_rows', { n: formatNumber(job.result.rows) }), error: false };
    } catch (e) {
      if (unavailable(e)) {
        try {
          download(await api.searchCsv({ ...query, limit, cursor }), name);
          this.message = { text: t('search_exported'), error: false };
        } catch (page) {
          this.message = { text: unavailable(page) ? t('search_csv_unavailable') : messageOf(page), error: true };
        }
      } else {
        this.message = { text: messageOf(e), error: true };
      }
    } finally {
      this.exporting = null;
    }
    this.renderResults();
  }

  /** Updates the export's progress in place (a redraw would rebuild the whole table). */
  private showExportProgress(done: number, total: number): void {
    this.exporting = { done, total };
    const bar = this.results.querySelector<HTMLProgressElement>('progress.export-progress');
    const text = this.results.querySelector<HTMLElement>('.export-progress-text');
    if (bar) {
      bar.max = Math.max(total, 1);
      bar.value = done;
    }
    if (text) text.textContent = t('search_exporting', { done: formatNumber(done), total: formatNumber(total) });
  }

  private showOnMap(): void {
    const features = this.items
      .filter((e) => typeof e.lon === 'number' && typeof e.lat === 'number')
      .map((e) => ({
        type: 'Feature' as const,
        geometry: { type: 'Point' as const, coordinates: [e.lon as number, e.lat as number] },
        properties: { id: e.id, time: e.time, kind: e.kind, source: e.source, plate: plateOf(e), grid: e.grid ?? '', picked: e.id === this.picked },
      }));
    this.hooks.map()?.setOverlay('search', features.length ? features : null);
  }

  private pick(event: EventRecord): void {
    this.picked = event.id;
    this.showOnMap();
    if (typeof event.lon === 'number' && typeof event.lat === 'number') this.hooks.map()?.flyTo(event.lon, event.lat, 15);
    for (const row of this.results.querySelectorAll('tr[data-event-id]')) row.classList.toggle('selected', row.getAttribute('data-event-id') === event.id);
  }

  private renderResults(): void {
    this.status.textContent = this.message?.text ?? '';
    this.status.className = `search-status ${this.message?.error ? 'error' : ''}`;
    this.status.setAttribute('role', this.message?.error ? 'alert' : 'status');
    if (!this.query) {
      this.results.replaceChildren();
      return;
    }
    const place = (e: EventRecord) =>
      e.grid ? e.grid : typeof e.lat === 'number' && typeof e.lon === 'number' ? `${e.lat.toFixed(5)}, ${e.lon.toFixed(5)}` : t('no_place');
    this.results.dataset.count = String(this.items.length);
    this.results.replaceChildren(
      h(
        'div',
        { className: 'results-bar' },
        h('strong', { className: 'results-count' }, t('search_count', { n: formatNumber(this.items.length) })),
        this.next ? h('span', { className: 'muted' }, t('search_more_exist')) : '',
        h('div', { className: 'spacer' }),
        this.next ? h('button', { type: 'button', 'data-action': 'load-more', disabled: this.busy, onclick: () => void this.fetchPage(this.next) }, t('queue_load_more')) : '',
        this.items.length ? h('button', { type: 'button', 'data-action': 'export-csv', disabled: !!this.exporting, onclick: () => void this.exportCsv() }, t('search_export')) : '',
      ),
      this.exporting
        ? h(
            'div',
            { className: 'export-status', role: 'status' },
            h('progress', { className: 'export-progress', max: String(Math.max(this.exporting.total, 1)), value: String(this.exporting.done), 'aria-label': t('search_export') }),
            h('span', { className: 'export-progress-text muted' }, t('search_exporting', { done: formatNumber(this.exporting.done), total: formatNumber(this.exporting.total) })),
          )
        : '',
      this.items.length
        ? h(
            'div',
            { className: 'table-wrap' },
            h(
              'table',
              { className: 'data search-table' },
              h(
                'thead',
                {},
                h('tr', {}, [t('field_time'), t('search_kind'), t('search_source'), t('search_plate'), t('field_place')].map((c) => h('th', { scope: 'col' }, c))),
              ),
              h(
                'tbody',
                {},
                this.items.map((e) =>
                  h(
                    'tr',
                    { 'data-event-id': e.id, className: e.id === this.picked ? 'selected' : '', tabindex: '0', onclick: () => this.pick(e), onkeydown: (ev: Event) => (ev as KeyboardEvent).key === 'Enter' && this.pick(e) },
                    h('td', {}, h('time', { dateTime: e.time }, formatDateTime(e.time))),
                    h('td', {}, e.kind),
                    h('td', {}, e.source),
                    h('td', { className: 'plate' }, plateOf(e)),
                    h('td', {}, place(e)),
                  ),
                ),
              ),
            ),
          )
        : this.busy
          ? ''
          : h('p', { className: 'muted' }, t('search_none')),
    );
  }
}
