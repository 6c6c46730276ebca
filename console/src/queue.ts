// The alert queue: filters applied by the node (`GET /api/v1/alerts` with status, severity,
// category, region and time), the same filters applied here to live changes, urgency order,
// countdowns, and the selection that the keyboard moves. Rows are kept per alert and
// reused, so a live change touches one row.

import { api, messageOf } from './api';
import { alertQuery, byUrgency, matches, nextDeadline, readFilters, statusOf, store, type Filters, type TimeFilter } from './alerts';
import { regionIndex, type RegionIndex } from './cityindex';
import { unitName, type Session } from './context';
import { countdown } from './countdown';
import { field, h, option, uid } from './dom';
import { formatDateTime, t, tCode } from './i18n';
import type { Alert, Severity } from './types';
import { SEVERITIES, STATUSES } from './types';

/** More rows than this are not drawn (the filters narrow the rest). */
const MAX_ROWS = 1000;
/** Alerts asked of the node per page. */
const PAGE = 500;
const FILTER_KEY = 'cityward.filters';
const TIMES: TimeFilter[] = ['all', '1h', '6h', '24h', '7d', 'custom'];

export interface QueueHooks {
  open(id: string): void;
  selected(id: string | null): void;
  /** The filtered, ordered alerts (the map draws the same). */
  filtered(alerts: Alert[]): void;
}

/** The later of two copies of an alert (the stream and a page can race). */
export function newer(a: Alert, b: Alert | undefined): Alert {
  if (!b?.updated_at || !a.updated_at) return a;
  return Date.parse(b.updated_at) > Date.parse(a.updated_at) ? b : a;
}

/** The categories typed in the filter: separated by commas (also the full-width `，` of a Chinese keyboard) or spaces. */
export function categoriesOf(text: string): string[] {
  return text
    .split(/[,，\s]+/)
    .map((c) => c.trim())
    .filter(Boolean);
}

export class Queue {
  readonly el: HTMLElement;
  private readonly list: HTMLOListElement;
  private readonly summary: HTMLElement;
  private readonly filterBox: HTMLElement;
  private readonly more: HTMLButtonElement;
  private filters: Filters;
  /** What the node answered for the filters, kept current from the live stream. */
  private readonly results = new Map<string, Alert>();
  private next: string | null = null;
  private loading = false;
  private loadError: string | null = null;
  /** Alerts the node sent that the filters here leave out (a node that ignores a filter). */
  private outside = 0;
  private fetchSeq = 0;
  private fetchTimer = 0;
  private regions: RegionIndex | null = null;
  private rows = new Map<string, { row: HTMLLIElement; version: string }>();
  private ordered: Alert[] = [];
  private selectedId: string | null = null;
  private scheduled = false;

  constructor(
    private readonly session: Session,
    private readonly hooks: QueueHooks,
  ) {
    this.filters = loadFilters();
    this.filterBox = h('form', { className: 'filters', role: 'search' });
    this.filterBox.addEventListener('submit', (e) => e.preventDefault());
    this.summary = h('p', { className: 'queue-summary', 'aria-live': 'polite' });
    this.list = h('ol', { className: 'queue-list', 'aria-label': t('queue_heading') });
    this.more = h('button', { type: 'button', className: 'secondary load-more', onclick: () => void this.fetch(true) });
    this.el = h('section', { className: 'queue', 'aria-labelledby': 'queue-heading' });
    this.renderFrame();
    const unsubscribe = store.subscribe((changed) => this.onChange(changed));
    this.dispose = () => {
      unsubscribe();
      clearTimeout(this.fetchTimer);
    };
    this.scheduleFetch();
    void regionIndex()
      .then((index) => {
        this.regions = index;
        this.renderFilters();
        this.schedule();
      })
      .catch(() => undefined);
  }

  /** Stops following the store (on sign-out). */
  readonly dispose: () => void;

  /** Re-draws everything (after a language change). */
  renderFrame(): void {
    this.rows.clear();
    this.el.replaceChildren(
      h('h2', { id: 'queue-heading' }, t('queue_heading')),
      this.filterBox,
      this.summary,
      this.list,
      this.more,
      h('p', { className: 'hint' }, t('shortcuts_hint')),
    );
    this.list.setAttribute('aria-label', t('queue_heading'));
    this.more.textContent = t('queue_load_more');
    this.renderFilters();
    this.render();
  }

  private readonly inRegion = (grid: string | undefined, region: string) => !this.regions || this.regions.gridIn(grid, region);

  private renderFilters(): void {
    const f = this.filters;
    const status = h(
      'select',
      { name: 'status' },
      option('open', t('filter_open'), f.status === 'open'),
      option('unacked', t('filter_unacked'), f.status === 'unacked'),
      option('all', t('filter_all_statuses'), f.status === 'all'),
      STATUSES.map((s) => option(s, tCode('status', s), f.status === s)),
    );
    const severityBoxes = SEVERITIES.map((s) => {
      const box = h('input', { type: 'checkbox', name: 'severity', value: s, id: uid('severity') });
      box.checked = f.severities.includes(s);
      return { s, box };
    });
    const severity = h(
      'fieldset',
      { className: 'severity-filter' },
      h('legend', {}, t('filter_severity')),
      severityBoxes.map(({ s, box }) => h('span', { className: 'check' }, box, h('label', { for: box.id }, tCode('severity', s)))),
    );
    const categoryList = uid('categories');
    const category = h('input', {
      type: 'search',
      name: 'category',
      placeholder: t('filter_category_placeholder'),
      autocomplete: 'off',
      list: categoryList,
    });
    category.value = f.categories.join(', ');
    const known = new Set<string>();
    for (const a of [...store.all(), ...this.results.values()]) if (a.category) known.add(a.category);
    const datalist = h('datalist', { id: categoryList }, [...known].sort().map((c) => h('option', { value: c })));
    const region = h(
      'select',
      { name: 'region' },
      option('', t('filter_any'), f.region === ''),
      (this.regions?.regions ?? []).map((r) => option(r.id, `${'\u2003'.repeat(r.depth)}${r.name}`, f.region === r.id)),
    );
    if (f.region && !this.regions) region.appendChild(option(f.region, f.region, true));
    const within = h(
      'select',
      { name: 'within' },
      TIMES.map((w) => option(w, t(w === 'all' ? 'time_all' : `time_${w}`), f.within === w)),
    );
    const since = h('input', { type: 'datetime-local', name: 'since' });
    const until = h('input', { type: 'datetime-local', name: 'until' });
    since.value = f.since;
    until.value = f.until;
    const custom = h('div', { className: 'custom-range', hidden: f.within !== 'custom' }, field(t('filter_since'), since), field(t('filter_until'), until));
    const alertClass = h(
      'select',
      { name: 'class' },
      option('', t('filter_any'), f.alertClass === ''),
      option('incident', t('class_incident'), f.alertClass === 'incident'),
      option('maintenance', t('class_maintenance'), f.alertClass === 'maintenance'),
    );
    const update = () => {
      this.filters = {
        status: status.value as Filters['status'],
        severities: severityBoxes.filter(({ box }) => box.checked).map(({ s }) => s as Severity),
        categories: categoriesOf(category.value),
        region: region.value,
        within: within.value as TimeFilter,
        since: since.value,
        until: until.value,
        alertClass: alertClass.value as Filters['alertClass'],
      };
      custom.hidden = this.filters.within !== 'custom';
      sessionStorage.setItem(FILTER_KEY, JSON.stringify(this.filters));
      // What is already held narrows at once; the node's answer follows.
      this.render();
      this.scheduleFetch();
    };
    for (const control of [status, region, within, alertClass, since, until, category]) control.addEventListener('change', update);
    for (const { box } of severityBoxes) box.addEventListener('change', update);
    let typing = 0;
    category.addEventListener('input', () => {
      clearTimeout(typing);
      typing = window.setTimeout(update, 400);
    });
    this.filterBox.replaceChildren(
      field(t('filter_status'), status),
      field(t('filter_class'), alertClass),
      severity,
      h('div', { className: 'field' }, h('label', { for: (category.id ||= uid('field')) }, t('filter_category')), category, datalist),
      field(t('filter_region'), region),
      field(t('filter_time'), within),
      custom,
    );
  }

  private onChange(changed: Alert | null): void {
    if (!changed) {
      // Many changed at once (a reload after the stream fell behind): ask the node again.
      this.scheduleFetch();
      return;
    }
    const held = this.results.get(changed.id);
    const current = newer(changed, held);
    if (matches(current, this.filters, Date.now(), this.inRegion)) this.results.set(current.id, current);
    else this.results.delete(current.id);
    this.schedule();
  }

  private scheduleFetch(): void {
    clearTimeout(this.fetchTimer);
    this.fetchTimer = window.setTimeout(() => void this.fetch(false), 150);
  }

  /** Asks the node for the alerts matching the filters; `more`: the next page. */
  private async fetch(more: boolean): Promise<void> {
    if (more && !this.next) return;
    const seq = more ? this.fetchSeq : ++this.fetchSeq;
    const filters = this.filters;
    const now = Date.now();
    this.loading = true;
    this.renderSummary();
    try {
      const page = await api.alerts({ ...alertQuery(filters, now), limit: PAGE, cursor: more ? this.next : null });
      if (seq !== this.fetchSeq) return;
      if (!more) {
        this.results.clear();
        this.outside = 0;
      }
      for (const alert of page.items) {
        const current = newer(alert, store.get(alert.id));
        if (matches(current, filters, now, this.inRegion)) this.results.set(current.id, current);
        else this.outside += 1;
      }
      this.next = page.next;
      this.loadError = null;
    } catch (e) {
      if (seq !== this.fetchSeq) return;
      this.loadError = messageOf(e);
    } finally {
      if (seq === this.fetchSeq) this.loading = false;
    }
    this.render();
  }

  /** Coalesces bursts of live changes into one redraw per frame. */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.render();
    });
  }

  render(): void {
    const now = Date.now();
    // Filtered again here: time windows slide, and a region waits for the region index.
    this.ordered = [...this.results.values()].filter((a) => matches(a, this.filters, now, this.inRegion)).sort(byUrgency);
    const shown = this.ordered.slice(0, MAX_ROWS);
    const keep = new Set(shown.map((a) => a.id));
    for (const id of this.rows.keys()) if (!keep.has(id)) this.rows.delete(id);
    const rows = shown.map((alert) => this.rowFor(alert));
    this.list.replaceChildren(...rows);
    if (!shown.length && !this.loading) this.list.appendChild(h('li', { className: 'empty' }, t('queue_empty')));
    this.el.dataset.count = String(this.ordered.length);
    this.renderSummary();
    this.markSelected();
    this.hooks.filtered(this.ordered);
  }

  private renderSummary(): void {
    const parts = [t('queue_count', { shown: Math.min(this.ordered.length, MAX_ROWS), total: this.ordered.length })];
    if (this.ordered.length > MAX_ROWS) parts.push(t('queue_more', { n: MAX_ROWS }));
    if (this.next) parts.push(t('queue_more_on_node'));
    if (this.outside > 0) parts.push(t('queue_outside', { n: this.outside }));
    if (this.loading) parts.push(t('loading'));
    this.summary.textContent = parts.join(' ');
    this.summary.classList.toggle('error', !!this.loadError);
    if (this.loadError) this.summary.textContent = t('error_generic', { detail: this.loadError });
    this.el.dataset.loading = String(this.loading);
    this.more.hidden = !this.next;
    this.more.disabled = this.loading;
  }

  private rowFor(alert: Alert): HTMLLIElement {
    const version = `${alert.updated_at ?? ''}|${statusOf(alert)}|${alert.handling?.owner ?? ''}|${alert.count ?? ''}`;
    const held = this.rows.get(alert.id);
    if (held && held.version === version) return held.row;
    const status = statusOf(alert);
    const severity = alert.severity ?? 'medium';
    const row = h(
      'li',
      { className: `alert-row sev-${severity} st-${status}`, 'data-alert-id': alert.id, 'data-status': status, 'data-severity': severity },
      h(
        'button',
        { type: 'button', className: 'row-open', onclick: () => this.select(alert.id, true) },
        h('span', { className: `badge sev sev-${severity}` }, tCode('severity', severity)),
        h('span', { className: 'row-title' }, alert.title || alert.category || alert.rule || alert.id),
        h('span', { className: `status st-${status}` }, tCode('status', status)),
      ),
      h(
        'div',
        { className: 'row-meta' },
        h('span', { className: 'row-category' }, alert.category ?? ''),
        h('span', { className: 'row-owner' }, `${t('owner')}: ${unitName(this.session, alert.handling?.owner) || t('no_owner')}`),
        countdown(nextDeadline(alert)),
        h('time', { dateTime: alert.time }, formatDateTime(alert.time)),
      ),
    );
    this.rows.set(alert.id, { row, version });
    return row;
  }

  private markSelected(): void {
    for (const [id, { row }] of this.rows) {
      const selected = id === this.selectedId;
      row.classList.toggle('selected', selected);
      row.setAttribute('aria-current', selected ? 'true' : 'false');
    }
  }

  select(id: string | null, open = false): void {
    this.selectedId = id;
    this.markSelected();
    if (id) this.rows.get(id)?.row.scrollIntoView({ block: 'nearest' });
    this.hooks.selected(id);
    if (id && open) this.hooks.open(id);
  }

  /** Moves the selection down (1) or up (-1) the ordered list; from nothing, to the first. */
  move(delta: 1 | -1): void {
    const shown = this.ordered.slice(0, MAX_ROWS);
    if (!shown.length) return;
    const index = shown.findIndex((a) => a.id === this.selectedId);
    const next = index < 0 ? 0 : Math.min(shown.length - 1, Math.max(0, index + delta));
    this.select(shown[next].id);
  }

  selected(): string | null {
    return this.selectedId;
  }
}

function loadFilters(): Filters {
  try {
    return readFilters(JSON.parse(sessionStorage.getItem(FILTER_KEY) ?? 'null'));
  } catch {
    return readFilters(null);
  }
}
