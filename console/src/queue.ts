// The alert queue: filters, urgency order, live countdowns, and the selection that the
// keyboard moves. Rows are kept per alert and reused, so a live change touches one row.

import { byUrgency, DEFAULT_FILTERS, matches, nextDeadline, statusOf, store, type Filters } from './alerts';
import { unitName, type Session } from './context';
import { countdown } from './countdown';
import { field, h, option } from './dom';
import { formatDateTime, t, tCode } from './i18n';
import type { Alert } from './types';
import { SEVERITIES, STATUSES } from './types';

/** More rows than this are not drawn (the filters narrow the rest). */
const MAX_ROWS = 500;
const FILTER_KEY = 'cityward.filters';

export interface QueueHooks {
  open(id: string): void;
  selected(id: string | null): void;
  /** The filtered, ordered alerts (the map draws the same). */
  filtered(alerts: Alert[]): void;
}

export class Queue {
  readonly el: HTMLElement;
  private readonly list: HTMLOListElement;
  private readonly summary: HTMLElement;
  private readonly filterBox: HTMLElement;
  private filters: Filters;
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
    this.el = h('section', { className: 'queue', 'aria-labelledby': 'queue-heading' });
    this.renderFrame();
    this.dispose = store.subscribe(() => this.schedule());
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
      h('p', { className: 'hint' }, t('shortcuts_hint')),
    );
    this.list.setAttribute('aria-label', t('queue_heading'));
    this.renderFilters();
    this.render();
  }

  private renderFilters(): void {
    const status = h(
      'select',
      { name: 'status' },
      option('open', t('filter_open'), this.filters.status === 'open'),
      option('unacked', t('filter_unacked'), this.filters.status === 'unacked'),
      option('all', t('filter_all_statuses'), this.filters.status === 'all'),
      STATUSES.map((s) => option(s, tCode('status', s), this.filters.status === s)),
    );
    const severity = h(
      'select',
      { name: 'severity' },
      option('', t('filter_any'), this.filters.severity === ''),
      SEVERITIES.map((s) => option(s, tCode('severity', s), this.filters.severity === s)),
    );
    const category = h('input', { type: 'search', name: 'category', placeholder: t('filter_category_placeholder'), autocomplete: 'off' });
    category.value = this.filters.category;
    const within = h(
      'select',
      { name: 'within' },
      (['all', '1h', '6h', '24h', '7d'] as const).map((w) => option(w, t(w === 'all' ? 'time_all' : `time_${w}`), this.filters.within === w)),
    );
    const alertClass = h(
      'select',
      { name: 'class' },
      option('', t('filter_any'), this.filters.alertClass === ''),
      option('incident', t('class_incident'), this.filters.alertClass === 'incident'),
      option('maintenance', t('class_maintenance'), this.filters.alertClass === 'maintenance'),
    );
    const update = () => {
      this.filters = {
        status: status.value as Filters['status'],
        severity: severity.value as Filters['severity'],
        category: category.value,
        within: within.value as Filters['within'],
        alertClass: alertClass.value as Filters['alertClass'],
      };
      sessionStorage.setItem(FILTER_KEY, JSON.stringify(this.filters));
      this.render();
    };
    for (const control of [status, severity, within, alertClass]) control.addEventListener('change', update);
    category.addEventListener('input', update);
    this.filterBox.replaceChildren(
      field(t('filter_status'), status),
      field(t('filter_severity'), severity),
      field(t('filter_category'), category),
      field(t('filter_time'), within),
      field(t('filter_class'), alertClass),
    );
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
    const all = store.all();
    this.ordered = all.filter((a) => matches(a, this.filters, now)).sort(byUrgency);
    const shown = this.ordered.slice(0, MAX_ROWS);
    const keep = new Set(shown.map((a) => a.id));
    for (const id of this.rows.keys()) if (!keep.has(id)) this.rows.delete(id);
    const rows = shown.map((alert) => this.rowFor(alert));
    this.list.replaceChildren(...rows);
    if (!shown.length) this.list.appendChild(h('li', { className: 'empty' }, t('queue_empty')));
    this.summary.textContent = t('queue_count', { shown: shown.length, total: all.length });
    if (this.ordered.length > MAX_ROWS) this.summary.textContent += ' ' + t('queue_more', { n: MAX_ROWS });
    this.el.dataset.count = String(this.ordered.length);
    this.markSelected();
    this.hooks.filtered(this.ordered);
  }

  private rowFor(alert: Alert): HTMLLIElement {
    const version = `${alert.updated_at ?? ''}|${statusOf(alert)}|${alert.handling?.owner ?? ''}|${alert.count ?? ''}`;
    const held = this.rows.get(alert.id);
    if (held && held.version === version) return held.row;
    const status = statusOf(alert);
    const severity = alert.severity ?? 'medium';
    const row = h(
      'li',
      { className: `alert-row sev-${severity} st-${status}`, 'data-alert-id': alert.id, 'data-status': status },
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
    const saved = JSON.parse(sessionStorage.getItem(FILTER_KEY) ?? 'null') as Partial<Filters> | null;
    return { ...DEFAULT_FILTERS, ...(saved ?? {}) };
  } catch {
    return { ...DEFAULT_FILTERS };
  }
}
