// The alerts the console knows: loaded once, then kept current from the live stream.
// Ordering by urgency and the filters live here so the queue, the map and the responder
// list agree on what "open" and "due" mean.

import { api, type AlertQuery } from './api';
import type { Alert, Severity, Status } from './types';
import { SEVERITIES, STATUSES } from './types';

const OPEN_STATUSES: Status[] = ['new', 'assigned', 'escalated', 'transferred', 'acknowledged', 'dispatched', 'on_scene'];

export function isOpen(status: Status): boolean {
  return status !== 'resolved' && status !== 'closed' && status !== 'suppressed';
}

/** Statuses in which the owner still has to acknowledge (mirrors the server's lifecycle). */
export function awaitsAck(status: Status): boolean {
  return status === 'new' || status === 'assigned' || status === 'escalated' || status === 'transferred';
}

export function statusOf(alert: Alert): Status {
  return alert.handling?.status ?? alert.status;
}

const SEVERITY_RANK: Record<string, number> = { critical: 4, high: 3, medium: 2, low: 1 };
export function severityRank(severity: string | undefined): number {
  return SEVERITY_RANK[severity ?? 'medium'] ?? 0;
}

export type DeadlineKind = 'ack' | 'arrive' | 'progress';
export interface Deadline {
  kind: DeadlineKind;
  at: number;
}

/** The deadline that matters next for the alert's status, or null when none runs. */
export function nextDeadline(alert: Alert): Deadline | null {
  const handling = alert.handling;
  if (!handling) return null;
  const status = statusOf(alert);
  const candidates: [DeadlineKind, string | undefined][] = awaitsAck(status)
    ? [
        ['ack', handling.ack_due],
        ['arrive', handling.arrive_due],
      ]
    : status === 'acknowledged'
      ? [
          ['progress', handling.progress_due],
          ['arrive', handling.arrive_due],
        ]
      : status === 'dispatched'
        ? [['arrive', handling.arrive_due]]
        : [];
  let best: Deadline | null = null;
  for (const [kind, iso] of candidates) {
    if (!iso) continue;
    const at = Date.parse(iso);
    if (!Number.isNaN(at) && (!best || at < best.at)) best = { kind, at };
  }
  return best;
}

/** Most urgent first: open before closed, then the nearest deadline, then severity, then newest. */
export function byUrgency(a: Alert, b: Alert): number {
  const openA = isOpen(statusOf(a)) ? 0 : 1;
  const openB = isOpen(statusOf(b)) ? 0 : 1;
  if (openA !== openB) return openA - openB;
  const dueA = nextDeadline(a)?.at ?? Infinity;
  const dueB = nextDeadline(b)?.at ?? Infinity;
  if (dueA !== dueB) return dueA < dueB ? -1 : 1;
  const severity = severityRank(b.severity) - severityRank(a.severity);
  if (severity !== 0) return severity;
  return Date.parse(b.time) - Date.parse(a.time);
}

export type StatusFilter = 'open' | 'unacked' | 'all' | Status;
export type TimeFilter = 'all' | '1h' | '6h' | '24h' | '7d' | 'custom';
export interface Filters {
  status: StatusFilter;
  /** Any of these (none: any severity). */
  severities: Severity[];
  /** Any of these categories, exactly as the rules name them (`fire.smoke`). */
  categories: string[];
  /** A region id: alerts in its grids and its sub-regions' grids. */
  region: string;
  within: TimeFilter;
  /** `datetime-local` values, read when `within` is `custom`. */
  since: string;
  until: string;
  alertClass: '' | 'incident' | 'maintenance';
}

export const DEFAULT_FILTERS: Filters = {
  status: 'open',
  severities: [],
  categories: [],
  region: '',
  within: 'all',
  since: '',
  until: '',
  alertClass: '',
};

const WITHIN_MS: Record<TimeFilter, number> = { all: Infinity, custom: Infinity, '1h': 3600e3, '6h': 6 * 3600e3, '24h': 24 * 3600e3, '7d': 7 * 24 * 3600e3 };

const UNACKED_STATUSES: Status[] = ['new', 'assigned', 'escalated', 'transferred'];

/** The statuses a status filter stands for (none: all). */
export function statusesOf(filter: StatusFilter): Status[] {
  if (filter === 'open') return OPEN_STATUSES;
  if (filter === 'unacked') return UNACKED_STATUSES;
  if (filter === 'all') return [];
  return [filter];
}

/** The time window of the filters in milliseconds since the epoch (NaN: open-ended). */
export function timeWindow(filters: Filters, now: number): { since: number; until: number } {
  if (filters.within === 'custom') {
    return { since: filters.since ? Date.parse(filters.since) : NaN, until: filters.until ? Date.parse(filters.until) : NaN };
  }
  const span = WITHIN_MS[filters.within];
  return { since: span === Infinity ? NaN : now - span, until: NaN };
}

/** The filters as `GET /api/v1/alerts` parameters. */
export function alertQuery(filters: Filters, now: number): AlertQuery {
  const { since, until } = timeWindow(filters, now);
  return {
    status: statusesOf(filters.status),
    severity: filters.severities,
    category: filters.categories,
    region: filters.region || undefined,
    since: Number.isNaN(since) ? undefined : new Date(since).toISOString(),
    until: Number.isNaN(until) ? undefined : new Date(until).toISOString(),
    class: filters.alertClass || undefined,
  };
}

/** Whether the grid lies in a region (the region index, once loaded). */
export type RegionTest = (grid: string | undefined, region: string) => boolean;

/**
 * The same filters as the node applies, for live changes and for checking what a node
 * sent: a region is only checked once `inRegion` is known.
 */
export function matches(alert: Alert, filters: Filters, now: number, inRegion?: RegionTest): boolean {
  const status = statusOf(alert);
  const statuses = statusesOf(filters.status);
  if (statuses.length && !statuses.includes(status)) return false;
  if (filters.severities.length && !filters.severities.includes((alert.severity ?? 'medium') as Severity)) return false;
  if (filters.categories.length && !filters.categories.includes(alert.category ?? '')) return false;
  if (filters.region && inRegion && !inRegion(alert.grid, filters.region)) return false;
  if (filters.alertClass && (alert.handling?.class ?? 'incident') !== filters.alertClass) return false;
  const { since, until } = timeWindow(filters, now);
  const time = Date.parse(alert.time);
  if (!Number.isNaN(since) && time < since) return false;
  // As the node has it: from `since` inclusive to `until` exclusive.
  if (!Number.isNaN(until) && time >= until) return false;
  return true;
}

/** Filters as saved by this or an earlier console, made whole. */
export function readFilters(saved: unknown): Filters {
  const s = (saved && typeof saved === 'object' ? saved : {}) as Record<string, unknown>;
  const strings = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
  const text = (v: unknown) => (typeof v === 'string' ? v : '');
  const statuses: string[] = ['open', 'unacked', 'all', ...STATUSES];
  const times: string[] = ['all', '1h', '6h', '24h', '7d', 'custom'];
  return {
    status: statuses.includes(text(s.status)) ? (s.status as StatusFilter) : DEFAULT_FILTERS.status,
    severities: strings(s.severities).filter((x): x is Severity => (SEVERITIES as readonly string[]).includes(x)),
    categories: strings(s.categories),
    region: text(s.region),
    within: times.includes(text(s.within)) ? (s.within as TimeFilter) : DEFAULT_FILTERS.within,
    since: text(s.since),
    until: text(s.until),
    alertClass: s.alertClass === 'incident' || s.alertClass === 'maintenance' ? s.alertClass : '',
  };
}

type Listener = (changed: Alert | null) => void;

/** Every alert the console holds, by id; listeners hear of each change (null: many changed). */
export class AlertStore {
  private readonly byId = new Map<string, Alert>();
  private readonly listeners = new Set<Listener>();

  get size(): number {
    return this.byId.size;
  }

  all(): Alert[] {
    return [...this.byId.values()];
  }

  get(id: string): Alert | undefined {
    return this.byId.get(id);
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Inserts or replaces one alert, unless what we hold is newer (a late HTTP answer racing the stream). */
  upsert(alert: Alert): void {
    const held = this.byId.get(alert.id);
    if (held && held.updated_at && alert.updated_at && Date.parse(held.updated_at) > Date.parse(alert.updated_at)) return;
    this.byId.set(alert.id, alert);
    this.emit(alert);
  }

  replaceAll(alerts: Alert[]): void {
    this.byId.clear();
    for (const alert of alerts) this.byId.set(alert.id, alert);
    this.emit(null);
  }

  clear(): void {
    this.byId.clear();
    this.emit(null);
  }

  private emit(changed: Alert | null): void {
    for (const listener of this.listeners) listener(changed);
  }
}

export const store = new AlertStore();

/** Loads the open alerts (all of them, up to a bound) and the most recent others. */
export async function loadAlerts(): Promise<void> {
  const collected = new Map<string, Alert>();
  let cursor: string | null = null;
  // Open alerts are what the desk works on: follow the pages, within reason.
  for (let page = 0; page < 5; page++) {
    const result = await api.alerts({ status: OPEN_STATUSES, limit: 1000, cursor });
    for (const alert of result.items) collected.set(alert.id, alert);
    cursor = result.next;
    if (!cursor) break;
  }
  const recent = await api.alerts({ limit: 300 });
  for (const alert of recent.items) if (!collected.has(alert.id)) collected.set(alert.id, alert);
  store.replaceAll([...collected.values()]);
}
