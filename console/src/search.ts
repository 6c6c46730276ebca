// The search page: stored events by plate (whole or partial, `*` and `?` as wildcards),
// kind, time and an area drawn on the map (`POST /api/v1/search`), shown in a table and as
// a layer on the main map, with further pages and a CSV export of the same search.
//
// Searches of personal data (plates, vehicle colour and type, plate reads, private
// vehicles' GPS) carry a purpose: a case number and a legal basis from the node's list,
// recorded with the search. Without one the node searches only what is not personal and
// says so. A search beyond the role's limits becomes a request that a supervisor approves
// or rejects; the list under the form shows the caller's requests (every pending one to a
// supervisor), runs the approved ones and takes a supervisor's decisions.

import { api, download, messageOf, unavailable } from './api';
import type { Session } from './context';
import { field, h, option } from './dom';
import type { LngLat } from './draw';
import { formatDateTime, formatNumber, t, tCode } from './i18n';
import { followJob } from './jobs';
import type { CityMap } from './map';
import type { EventRecord, Me, SearchApproval, SearchQuery } from './types';

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
  caseNumber?: string;
  legalBasis?: string;
  /** Read confusable plate characters as equal. */
  ocr?: boolean;
  color?: string;
  vehicleType?: string;
}

type FormError = 'search_bad_range' | 'search_finish_area' | 'search_purpose_incomplete';

/**
 * The body of `POST /api/v1/search` for the form, or what is wrong with it. The plate goes
 * as typed (trimmed): the node reads `*` and `?` in it as wildcards.
 */
export function searchQuery(form: SearchForm, limit = PAGE): SearchQuery | { error: FormError } {
  const query: SearchQuery = { limit };
  const plate = form.plate.trim();
  const kind = form.kind.trim();
  if (plate) query.plate = plate;
  if (plate && form.ocr) query.ocr_confusions = true;
  const color = form.color?.trim();
  const vehicleType = form.vehicleType?.trim();
  if (color) query.color = color;
  if (vehicleType) query.vehicle_type = vehicleType;
  const caseNumber = form.caseNumber?.trim() ?? '';
  const legalBasis = form.legalBasis ?? '';
  if (!!caseNumber !== !!legalBasis) return { error: 'search_purpose_incomplete' };
  if (caseNumber) query.purpose = { case_number: caseNumber, legal_basis: legalBasis };
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

/** How far the caller's role searches personal data without a supervisor's approval. */
export function limitText(me: Me): string {
  const limit = me.search?.limit;
  if (!limit || (!limit.max_span && !limit.max_area_km2)) return t('search_limit_none');
  const parts = [limit.max_span ? t('search_limit_span', { span: limit.max_span }) : '', limit.max_area_km2 ? t('search_limit_area', { km2: formatNumber(limit.max_area_km2) }) : ''];
  return t('search_limit', { limits: parts.filter(Boolean).join(t('search_limit_and')) });
}

/** Whether `me` may approve or reject `approval` (a supervisor, not its requester). */
export function mayDecide(me: Me, approval: SearchApproval): boolean {
  return !!me.supervisor && approval.status === 'pending' && approval.requested_by !== me.username;
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
  private readonly color: HTMLInputElement;
  private readonly vehicleType: HTMLInputElement;
  private readonly ocr: HTMLInputElement;
  private readonly caseNumber: HTMLInputElement;
  private readonly legalBasis: HTMLSelectElement;
  private readonly areaBox: HTMLElement;
  /** Search requests waiting for (or given) a supervisor's decision. */
  private readonly requests: HTMLElement;
  private approvals: SearchApproval[] = [];
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

  constructor(
    private readonly hooks: SearchHooks,
    private readonly me: Me,
  ) {
    this.plate = h('input', { type: 'search', name: 'plate', autocomplete: 'off', spellcheck: 'false' });
    this.color = h('input', { type: 'text', name: 'color', autocomplete: 'off', size: 8 });
    this.vehicleType = h('input', { type: 'text', name: 'vehicle_type', autocomplete: 'off', size: 8 });
    this.ocr = h('input', { type: 'checkbox', name: 'ocr_confusions' });
    this.caseNumber = h('input', { type: 'text', name: 'case_number', autocomplete: 'off', maxLength: 64 });
    this.legalBasis = h('select', { name: 'legal_basis' });
    this.requests = h('div', { className: 'search-requests' });
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
    void this.loadApprovals();
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
      this.requests,
      this.status,
      this.results,
    );
    this.renderApprovals();
  }

  private renderForm(): void {
    const chosen = this.legalBasis.value;
    this.legalBasis.replaceChildren(
      option('', t('search_legal_basis_choose')),
      ...(this.me.search?.legal_bases ?? []).map((b) => option(b, tCode('basis', b), b === chosen)),
    );
    const purpose = h(
      'fieldset',
      { className: 'purpose', 'aria-describedby': 'purpose-note' },
      h('legend', {}, t('search_purpose')),
      field(t('search_case'), this.caseNumber),
      field(t('search_legal_basis'), this.legalBasis),
      h('p', { id: 'purpose-note', className: 'hint' }, t('search_purpose_note'), ' ', limitText(this.me)),
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
        field(t('search_color'), this.color),
        field(t('search_vehicle_type'), this.vehicleType),
        h('label', { className: 'check' }, this.ocr, ' ', t('search_ocr')),
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
    this.color.value = '';
    this.vehicleType.value = '';
    this.ocr.checked = false;
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
      caseNumber: this.caseNumber.value,
      legalBasis: this.legalBasis.value,
      ocr: this.ocr.checked,
      color: this.color.value,
      vehicleType: this.vehicleType.value,
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

  /** A search became a request for approval: say so, and show it in the list. */
  private waitsForApproval(approval: SearchApproval): void {
    this.message = { text: t('search_waits_approval', { id: approval.id, reasons: approval.reasons.join('; ') }), error: false };
    this.approvals = [approval, ...this.approvals.filter((a) => a.id !== approval.id)];
    this.renderApprovals();
    this.renderResults();
  }

  private async loadApprovals(): Promise<void> {
    try {
      this.approvals = (await api.approvals()).items.filter((a) => a.status === 'pending' || a.requested_by === this.me.username).slice(0, 20);
    } catch (e) {
      if (!unavailable(e)) this.message = { text: messageOf(e), error: true };
      this.approvals = [];
    }
    this.renderApprovals();
  }

  /** Runs an approved request: its filters are the approved ones. */
  private async runApproved(approval: SearchApproval): Promise<void> {
    this.query = { approval: approval.id, limit: PAGE };
    this.items = [];
    this.next = null;
    this.picked = null;
    await this.fetchPage(null);
  }

  private async decide(approval: SearchApproval, decision: 'approve' | 'reject', reason: string): Promise<void> {
    if (!reason.trim()) {
      this.message = { text: t('search_decision_reason_needed'), error: true };
      this.renderResults();
      return;
    }
    try {
      const decided = await api.decideApproval(approval.id, decision, reason.trim());
      this.approvals = this.approvals.map((a) => (a.id === decided.id ? decided : a));
      this.message = { text: t(decision === 'approve' ? 'search_approved' : 'search_rejected', { id: decided.id }), error: false };
    } catch (e) {
      this.message = { text: messageOf(e), error: true };
    }
    this.renderApprovals();
    this.renderResults();
  }

  private renderApprovals(): void {
    if (!this.approvals.length) {
      this.requests.replaceChildren();
      return;
    }
    const what = (a: SearchApproval) =>
      [a.request.plate, a.request.kind, a.request.since ? formatDateTime(a.request.since) : '', a.request.purpose?.case_number].filter(Boolean).join(' · ');
    this.requests.replaceChildren(
      h('h3', {}, t('search_requests')),
      h(
        'ul',
        { className: 'request-list' },
        this.approvals.map((a) => {
          const reason = h('input', { type: 'text', name: 'reason', placeholder: t('search_decision_reason'), 'aria-label': t('search_decision_reason') });
          return h(
            'li',
            { 'data-approval': a.id, 'data-status': a.status },
            h('span', { className: `badge approval-${a.status}` }, tCode('approval', a.status)),
            ' ',
            h('strong', {}, what(a)),
            h('span', { className: 'muted' }, ` — ${a.requested_by}, ${formatDateTime(a.requested_at)}`),
            h('div', { className: 'hint' }, a.status === 'pending' ? a.reasons.join('; ') : `${a.decided_by ?? ''}: ${a.decision_note ?? ''}`),
            a.status === 'approved' && a.requested_by === this.me.username
              ? h('button', { type: 'button', 'data-action': 'run-approved', onclick: () => void this.runApproved(a) }, t('search_run_approved'))
              : '',
            mayDecide(this.me, a)
              ? h(
                  'div',
                  { className: 'form-buttons' },
                  reason,
                  h('button', { type: 'button', 'data-action': 'approve', onclick: () => void this.decide(a, 'approve', reason.value) }, t('search_approve')),
                  h('button', { type: 'button', className: 'secondary', 'data-action': 'reject', onclick: () => void this.decide(a, 'reject', reason.value) }, t('search_reject')),
                )
              : '',
          );
        }),
      ),
    );
  }

  private async fetchPage(cursor: string | null): Promise<void> {
    if (!this.query || this.busy) return;
    this.busy = true;
    this.message = { text: t('loading'), error: false };
    this.renderResults();
    try {
      const page = await api.search(cursor ? { ...this.query, cursor } : this.query);
      if ('approval' in page) {
        this.waitsForApproval(page.approval);
      } else {
        this.items = cursor ? [...this.items, ...page.items] : page.items;
        this.next = page.next;
        this.message = page.personal_data_left_out ? { text: t('search_personal_left_out'), error: false } : null;
      }
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
      const started = await api.searchExport(query);
      if ('approval' in started) {
        this.waitsForApproval(started.approval);
        return;
      }
      const job = await followJob(started.job, (j) => this.showExportProgress(j.progress?.done ?? 0, j.progress?.total ?? 0), new AbortController().signal);
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
