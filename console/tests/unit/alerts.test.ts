import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import {
  AlertStore,
  alertQuery,
  awaitsAck,
  byUrgency,
  DEFAULT_FILTERS,
  isOpen,
  loadAlerts,
  matches,
  nextDeadline,
  readFilters,
  severityRank,
  statusesOf,
  store,
  timeWindow,
  type Filters,
} from '../../src/alerts';
import { api } from '../../src/api';
import { STATUSES, type Alert, type AlertPage } from '../../src/types';
import { alert, at, handling } from './fixtures';

const NOW = Date.parse('2030-01-01T12:00:00Z');
const filters = (over: Partial<Filters>): Filters => ({ ...DEFAULT_FILTERS, ...over });

describe('statuses', () => {
  // The server's lifecycle (crates/alerts/src/lifecycle.rs): resolved, closed and
  // suppressed are the only ones not open; four statuses wait for an acknowledgement.
  it('counts every status but resolved, closed and suppressed as open', () => {
    expect(STATUSES.filter(isOpen).sort()).toEqual(['acknowledged', 'assigned', 'dispatched', 'escalated', 'new', 'on_scene', 'transferred']);
  });

  it('waits for an acknowledgement in new, assigned, escalated and transferred only', () => {
    expect(STATUSES.filter(awaitsAck).sort()).toEqual(['assigned', 'escalated', 'new', 'transferred']);
  });

  it('takes the handling status over the alert status', () => {
    const a = alert({ status: 'new', handling: handling('on_scene', { ack_due: at(NOW, 60) }) });
    expect(nextDeadline(a)).toBeNull();
    expect(matches(a, filters({ status: 'unacked' }), NOW)).toBe(false);
    expect(matches(a, filters({ status: 'on_scene' }), NOW)).toBe(true);
  });
});

describe('nextDeadline', () => {
  it('is the acknowledgement deadline while an alert waits to be acknowledged', () => {
    const a = alert({ handling: handling('assigned', { ack_due: at(NOW, 60), arrive_due: at(NOW, 600) }) });
    expect(nextDeadline(a)).toEqual({ kind: 'ack', at: NOW + 60_000 });
  });

  it('is the arrival deadline when that comes before the acknowledgement one', () => {
    const a = alert({ handling: handling('escalated', { ack_due: at(NOW, 900), arrive_due: at(NOW, 600) }) });
    expect(nextDeadline(a)).toEqual({ kind: 'arrive', at: NOW + 600_000 });
  });

  it('ignores the acknowledgement deadline once acknowledged, and runs progress then arrival', () => {
    const h = { ack_due: at(NOW, 10), progress_due: at(NOW, 300), arrive_due: at(NOW, 600) };
    expect(nextDeadline(alert({ handling: handling('acknowledged', h) }))).toEqual({ kind: 'progress', at: NOW + 300_000 });
    expect(nextDeadline(alert({ handling: handling('acknowledged', { ...h, arrive_due: at(NOW, 200) }) }))).toEqual({ kind: 'arrive', at: NOW + 200_000 });
  });

  it('runs only the arrival deadline once dispatched', () => {
    const a = alert({ handling: handling('dispatched', { ack_due: at(NOW, 5), progress_due: at(NOW, 10), arrive_due: at(NOW, 600) }) });
    expect(nextDeadline(a)).toEqual({ kind: 'arrive', at: NOW + 600_000 });
  });

  it('runs none on scene, after resolution, closing or suppression, or before routing', () => {
    const dues = { ack_due: at(NOW, 5), progress_due: at(NOW, 10), arrive_due: at(NOW, 600) };
    for (const status of ['on_scene', 'resolved', 'closed', 'suppressed'] as const) {
      expect(nextDeadline(alert({ handling: handling(status, dues) })), status).toBeNull();
    }
    expect(nextDeadline(alert({ status: 'new' }))).toBeNull();
  });

  it('skips a deadline it cannot read', () => {
    const a = alert({ handling: handling('new', { ack_due: 'soon', arrive_due: at(NOW, 600) }) });
    expect(nextDeadline(a)).toEqual({ kind: 'arrive', at: NOW + 600_000 });
  });
});

describe('byUrgency', () => {
  const sorted = (...alerts: Alert[]) => [...alerts].sort(byUrgency).map((a) => a.id);

  it('puts open alerts before resolved ones, whatever their severity', () => {
    const done = alert({ id: 'done', severity: 'critical', status: 'resolved' });
    const open = alert({ id: 'open', severity: 'low', status: 'new' });
    expect(sorted(done, open)).toEqual(['open', 'done']);
  });

  it('puts the nearest deadline first, and any deadline before none', () => {
    const later = alert({ id: 'later', handling: handling('new', { ack_due: at(NOW, 300) }) });
    const sooner = alert({ id: 'sooner', handling: handling('new', { ack_due: at(NOW, 60) }) });
    const overdue = alert({ id: 'overdue', handling: handling('new', { ack_due: at(NOW, -30) }) });
    const none = alert({ id: 'none', severity: 'critical', handling: handling('on_scene') });
    expect(sorted(none, later, sooner, overdue)).toEqual(['overdue', 'sooner', 'later', 'none']);
  });

  it('breaks a tie in deadline by severity, then by the newest', () => {
    const due = { ack_due: at(NOW, 120) };
    const low = alert({ id: 'low', severity: 'low', handling: handling('new', due) });
    const high = alert({ id: 'high', severity: 'high', handling: handling('new', due) });
    const older = alert({ id: 'older', severity: 'high', time: at(NOW, -600), handling: handling('new', due) });
    expect(sorted(low, older, high)).toEqual(['high', 'older', 'low']);
  });

  it('ranks an alert without severity as medium and an unknown one last', () => {
    expect(severityRank(undefined)).toBe(severityRank('medium'));
    const ranks = ['critical', 'high', 'medium', 'low', 'bogus'].map(severityRank);
    expect([...ranks].sort((a, b) => b - a)).toEqual(ranks);
    expect(new Set(ranks).size).toBe(5);
  });
});

describe('filters', () => {
  it('stands for the open and the unacknowledged statuses as the node lists them', () => {
    expect(new Set(statusesOf('open'))).toEqual(new Set(STATUSES.filter(isOpen)));
    expect(new Set(statusesOf('unacked'))).toEqual(new Set(STATUSES.filter(awaitsAck)));
    expect(statusesOf('all')).toEqual([]);
    expect(statusesOf('dispatched')).toEqual(['dispatched']);
  });

  it('turns a relative time window into a start before now, with no end', () => {
    const w = timeWindow(filters({ within: '6h' }), NOW);
    expect(w.since).toBe(NOW - 6 * 3600_000);
    expect(w.until).toBeNaN();
    const all = timeWindow(filters({ within: 'all', since: '2030-01-01T00:00' }), NOW);
    expect(all.since).toBeNaN();
    expect(all.until).toBeNaN();
  });

  it('reads a custom window as local time, either end left open', () => {
    const w = timeWindow(filters({ within: 'custom', since: '2030-01-01T10:30', until: '' }), NOW);
    expect(w.since).toBe(new Date(2030, 0, 1, 10, 30).getTime());
    expect(w.until).toBeNaN();
  });

  it('sends the filters as the query the node takes, leaving out what is not set', () => {
    expect(alertQuery(DEFAULT_FILTERS, NOW)).toEqual({
      status: statusesOf('open'),
      severity: [],
      category: [],
      region: undefined,
      since: undefined,
      until: undefined,
      class: undefined,
    });
    const q = alertQuery(filters({ status: 'unacked', severities: ['high'], categories: ['fire.smoke'], region: 'r1', within: '1h', alertClass: 'maintenance' }), NOW);
    expect(q).toEqual({
      status: ['new', 'assigned', 'escalated', 'transferred'],
      severity: ['high'],
      category: ['fire.smoke'],
      region: 'r1',
      since: '2030-01-01T11:00:00.000Z',
      until: undefined,
      class: 'maintenance',
    });
  });

  it('leaves out alerts whose status the filter does not name', () => {
    expect(matches(alert({ status: 'resolved' }), filters({ status: 'open' }), NOW)).toBe(false);
    expect(matches(alert({ status: 'resolved' }), filters({ status: 'all' }), NOW)).toBe(true);
    expect(matches(alert({ handling: handling('acknowledged') }), filters({ status: 'unacked' }), NOW)).toBe(false);
  });

  it('counts an alert without severity as medium', () => {
    const a = alert({ severity: undefined });
    expect(matches(a, filters({ severities: ['medium'] }), NOW)).toBe(true);
    expect(matches(a, filters({ severities: ['high', 'critical'] }), NOW)).toBe(false);
  });

  it('matches categories exactly, not by prefix', () => {
    const a = alert({ category: 'fire.smoke' });
    expect(matches(a, filters({ categories: ['traffic.hazmat', 'fire.smoke'] }), NOW)).toBe(true);
    expect(matches(a, filters({ categories: ['fire'] }), NOW)).toBe(false);
    expect(matches(alert({ category: undefined }), filters({ categories: ['fire.smoke'] }), NOW)).toBe(false);
  });

  it('checks a region only once the region index can tell', () => {
    const a = alert({ grid: 'g1' });
    const f = filters({ region: 'north' });
    expect(matches(a, f, NOW)).toBe(true);
    const asked: [string | undefined, string][] = [];
    const inRegion = (grid: string | undefined, region: string) => {
      asked.push([grid, region]);
      return grid === 'g2';
    };
    expect(matches(a, f, NOW, inRegion)).toBe(false);
    expect(matches(alert({ grid: 'g2' }), f, NOW, inRegion)).toBe(true);
    expect(asked).toEqual([
      ['g1', 'north'],
      ['g2', 'north'],
    ]);
  });

  it('counts an alert without a class as an incident', () => {
    const plain = alert({ handling: handling('new') });
    const ticket = alert({ handling: handling('new', { class: 'maintenance' }) });
    expect(matches(plain, filters({ alertClass: 'incident' }), NOW)).toBe(true);
    expect(matches(plain, filters({ alertClass: 'maintenance' }), NOW)).toBe(false);
    expect(matches(ticket, filters({ alertClass: 'maintenance' }), NOW)).toBe(true);
  });

  it('keeps a window from its start inclusive to its end exclusive, as the node does', () => {
    const hour = filters({ within: '1h' });
    expect(matches(alert({ time: at(NOW, -3600) }), hour, NOW)).toBe(true);
    expect(matches(alert({ time: at(NOW, -3601) }), hour, NOW)).toBe(false);
    const end = new Date(2030, 0, 1, 12, 0).getTime();
    const custom = filters({ within: 'custom', since: '2030-01-01T11:00', until: '2030-01-01T12:00' });
    expect(matches(alert({ time: new Date(end).toISOString() }), custom, NOW)).toBe(false);
    expect(matches(alert({ time: new Date(end - 1).toISOString() }), custom, NOW)).toBe(true);
    expect(matches(alert({ time: new Date(end - 3600_000).toISOString() }), custom, NOW)).toBe(true);
    expect(matches(alert({ time: new Date(end - 3600_001).toISOString() }), custom, NOW)).toBe(false);
  });
});

describe('readFilters', () => {
  it('gives the defaults for nothing saved or something unreadable', () => {
    expect(readFilters(null)).toEqual(DEFAULT_FILTERS);
    expect(readFilters('open')).toEqual(DEFAULT_FILTERS);
  });

  it('keeps what a saved filter got right and drops the rest', () => {
    const read = readFilters({
      status: 'bogus',
      severities: ['high', 'extreme', 3],
      categories: ['fire.smoke', 7],
      region: 5,
      within: '2h',
      since: '2030-01-01T10:00',
      alertClass: 'other',
    });
    expect(read).toEqual({ ...DEFAULT_FILTERS, severities: ['high'], categories: ['fire.smoke'], since: '2030-01-01T10:00' });
  });

  it('reads back what it saved', () => {
    const saved = filters({ status: 'transferred', severities: ['critical', 'low'], categories: ['a.b'], region: 'r', within: 'custom', since: 's', until: 'u', alertClass: 'incident' });
    expect(readFilters(JSON.parse(JSON.stringify(saved)))).toEqual(saved);
  });
});

describe('AlertStore', () => {
  it('keeps the newer copy when a late answer races the stream', () => {
    const s = new AlertStore();
    const heard: (Alert | null)[] = [];
    s.subscribe((a) => heard.push(a));
    const fresh = alert({ id: 'x', status: 'acknowledged', updated_at: at(NOW, 10) });
    const stale = { ...fresh, status: 'new' as const, updated_at: at(NOW, 5) };
    s.upsert(fresh);
    s.upsert(stale);
    expect(s.get('x')?.status).toBe('acknowledged');
    expect(heard).toEqual([fresh]);
    const newer = { ...fresh, status: 'dispatched' as const, updated_at: at(NOW, 20) };
    s.upsert(newer);
    expect(s.get('x')).toBe(newer);
    expect(heard).toEqual([fresh, newer]);
  });

  it('takes a copy without a version as it comes', () => {
    const s = new AlertStore();
    s.upsert(alert({ id: 'x', status: 'acknowledged', updated_at: at(NOW, 10) }));
    s.upsert(alert({ id: 'x', status: 'resolved' }));
    expect(s.get('x')?.status).toBe('resolved');
  });

  it('tells listeners of a wholesale change with null, until they unsubscribe', () => {
    const s = new AlertStore();
    const heard: (Alert | null)[] = [];
    const stop = s.subscribe((a) => heard.push(a));
    s.upsert(alert({ id: 'old' }));
    s.replaceAll([alert({ id: 'p' }), alert({ id: 'q' })]);
    expect(s.all().map((a) => a.id).sort()).toEqual(['p', 'q']);
    expect(s.size).toBe(2);
    expect(heard.at(-1)).toBeNull();
    stop();
    s.clear();
    expect(s.size).toBe(0);
    expect(heard).toHaveLength(2);
  });
});

describe('loadAlerts', () => {
  beforeEach(() => store.clear());
  afterEach(() => vi.restoreAllMocks());

  it('follows the pages of open alerts, then adds the recent others without replacing them', async () => {
    const open1 = alert({ id: 'o1', status: 'new' });
    const open2 = alert({ id: 'o2', status: 'dispatched' });
    const staleOpen2 = { ...open2, status: 'resolved' as const };
    const done = alert({ id: 'd', status: 'closed' });
    const pages: AlertPage[] = [
      { items: [open1], next: 'c1' },
      { items: [open2], next: null },
      { items: [staleOpen2, done], next: 'more' },
    ];
    const calls = vi.spyOn(api, 'alerts').mockImplementation(async () => pages.shift()!);
    await loadAlerts();
    expect(calls.mock.calls.map(([q]) => [q.status?.length ?? 0, q.limit, q.cursor ?? null])).toEqual([
      [7, 1000, null],
      [7, 1000, 'c1'],
      [0, 300, null],
    ]);
    expect(store.all().map((a) => a.id).sort()).toEqual(['d', 'o1', 'o2']);
    expect(store.get('o2')?.status).toBe('dispatched');
  });

  it('stops following open pages after five', async () => {
    let n = 0;
    const calls = vi.spyOn(api, 'alerts').mockImplementation(async () => ({ items: [alert({ id: `p${n++}` })], next: 'again' }));
    await loadAlerts();
    expect(calls).toHaveBeenCalledTimes(6);
    expect(store.size).toBe(6);
  });
});
