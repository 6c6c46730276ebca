// The dashboard: alerts over time by category, alerts by region, how often units met
// their acknowledgement and arrival deadlines, false alarms by device type, and devices
// offline (`GET /api/v1/stats`), as SVG charts with their numbers written out.

import { api, messageOf, unavailable } from './api';
import { donut, horizontalBars, PALETTE, stackedBars, type BarRow } from './charts';
import { unitName, type Session } from './context';
import { h, option } from './dom';
import { formatBucket, formatNumber, formatPercent, t, type MessageKey } from './i18n';
import type { Stats } from './types';

type Range = '24h' | '7d' | '30d';
const RANGE_MS: Record<Range, number> = { '24h': 24 * 3600e3, '7d': 7 * 24 * 3600e3, '30d': 30 * 24 * 3600e3 };
/** Categories drawn on their own; the rest are summed as "other". */
const MAX_CATEGORIES = 9;
const MAX_ROWS = 15;
/** The series key of the categories summed together. */
export const OTHER = '\u0000other';
const COLOURS = { ack: '#3b7dd8', arrive: '#1e7a3a', falseAlarm: '#e8590c', region: '#4e79a7', offline: '#b3261e', online: '#59a14f' };

/**
 * Alerts over time as stacked series: the `max` categories with most alerts each on their
 * own, largest first, and the rest summed as `OTHER` (a lone leftover keeps its own series:
 * "other" standing for one category would hide its name). Buckets in time order.
 */
export function stackByCategory(rows: Stats['alerts_over_time'], max = MAX_CATEGORIES) {
  const totals = new Map<string, number>();
  for (const r of rows) totals.set(r.category, (totals.get(r.category) ?? 0) + r.count);
  const ranked = [...totals.entries()].sort((a, b) => b[1] - a[1]).map(([c]) => c);
  const shown = new Set(ranked.length > max + 1 ? ranked.slice(0, max) : ranked);
  const key = (category: string) => (shown.has(category) ? category : OTHER);
  const cells = new Map<string, number>();
  for (const r of rows) cells.set(`${r.bucket}|${key(r.category)}`, (cells.get(`${r.bucket}|${key(r.category)}`) ?? 0) + r.count);
  const buckets = [...new Set(rows.map((r) => r.bucket))].sort((a, b) => Date.parse(a) - Date.parse(b));
  const keys = [...shown, ...(shown.size < ranked.length ? [OTHER] : [])];
  const value = (bucket: string, k: string) => cells.get(`${bucket}|${k}`) ?? 0;
  const total = (k: string) => (k === OTHER ? ranked.filter((c) => !shown.has(c)).reduce((s, c) => s + (totals.get(c) ?? 0), 0) : (totals.get(k) ?? 0));
  return { buckets, keys, value, total };
}

export class DashboardPage {
  readonly el: HTMLElement;
  private range: Range = '24h';
  private bucket: 'hour' | 'day' = 'hour';
  private stats: Stats | null = null;
  private error: string | null = null;
  private loading = false;
  private seq = 0;
  private width = 0;
  private resizeTimer = 0;

  constructor(private readonly session: Session) {
    this.el = h('section', { className: 'dashboard-page', 'aria-labelledby': 'dashboard-heading' });
    // Charts are drawn at the size they are shown (text stays legible): again on a resize.
    new ResizeObserver(() => {
      clearTimeout(this.resizeTimer);
      this.resizeTimer = window.setTimeout(() => {
        const width = this.el.clientWidth;
        if (width && Math.abs(width - this.width) > 8 && this.stats) this.render();
      }, 150);
    }).observe(this.el);
  }

  show(): void {
    void this.load();
  }

  relabel(): void {
    this.render();
  }

  private async load(): Promise<void> {
    const seq = ++this.seq;
    this.loading = true;
    this.render();
    const until = new Date();
    const since = new Date(until.getTime() - RANGE_MS[this.range]);
    try {
      const stats = await api.stats(since.toISOString(), until.toISOString(), this.bucket);
      if (seq !== this.seq) return;
      this.stats = stats;
      this.error = null;
    } catch (e) {
      if (seq !== this.seq) return;
      this.stats = null;
      this.error = unavailable(e) ? t('dashboard_unavailable') : messageOf(e);
    } finally {
      if (seq === this.seq) this.loading = false;
    }
    this.render();
  }

  private controls(): HTMLElement {
    const range = h(
      'select',
      { name: 'range', 'aria-label': t('dashboard_range') },
      (['24h', '7d', '30d'] as Range[]).map((r) => option(r, t(`range_${r}`), this.range === r)),
    );
    const bucket = h(
      'select',
      { name: 'bucket', 'aria-label': t('dashboard_bucket') },
      option('hour', t('bucket_hour'), this.bucket === 'hour'),
      option('day', t('bucket_day'), this.bucket === 'day'),
    );
    range.addEventListener('change', () => {
      this.range = range.value as Range;
      // Hours over a month would be 720 bars: days read better from a week on.
      this.bucket = this.range === '24h' ? 'hour' : 'day';
      void this.load();
    });
    bucket.addEventListener('change', () => {
      this.bucket = bucket.value as 'hour' | 'day';
      void this.load();
    });
    return h(
      'div',
      { className: 'dashboard-controls' },
      h('label', {}, `${t('dashboard_range')} `, range),
      h('label', {}, `${t('dashboard_bucket')} `, bucket),
      h('button', { type: 'button', className: 'secondary', disabled: this.loading, onclick: () => void this.load() }, t('reload')),
    );
  }

  private render(): void {
    const stats = this.stats;
    this.el.dataset.loading = String(this.loading);
    const grid = h('div', { className: 'dash-grid' });
    this.el.replaceChildren(
      h('header', { className: 'page-header' }, h('h2', { id: 'dashboard-heading' }, t('dashboard_heading')), h('div', { className: 'spacer' }), this.controls()),
      this.error
        ? h('p', { className: 'error', role: 'alert' }, this.error)
        : h('p', { className: 'muted', role: 'status' }, this.loading ? t('loading') : stats?.truncated ? t('dashboard_truncated', { n: formatNumber(stats.alerts ?? 0) }) : ''),
      stats ? grid : '',
    );
    if (!stats) return;
    this.width = this.el.clientWidth;
    // The cards first, then each chart at its card's width.
    const cards: [string, MessageKey, (s: Stats, width: number) => Node, string][] = [
      ['alerts_over_time', 'chart_over_time', (s, w) => this.overTime(s, w), 'wide'],
      ['alerts_by_region', 'chart_by_region', (s, w) => this.byRegion(s, w), ''],
      ['deadline_compliance', 'chart_compliance', (s, w) => this.compliance(s, w), ''],
      ['false_alarm_rate', 'chart_false_alarms', (s, w) => this.falseAlarms(s, w), ''],
      ['devices', 'chart_devices', (s, w) => this.devices(s, w), ''],
    ];
    const built = cards.map(([name, heading, , wide]) => {
      const card = h('section', { className: `dash-card ${wide}`, 'data-chart': name, 'aria-label': t(heading) }, h('h3', {}, t(heading)));
      grid.appendChild(card);
      return card;
    });
    built.forEach((card, i) => card.appendChild(cards[i][2](stats, card.clientWidth - 30)));
  }

  private empty(): HTMLElement {
    return h('p', { className: 'muted empty-chart' }, t('chart_empty'));
  }

  private overTime(stats: Stats, width: number): Node {
    const rows = stats.alerts_over_time ?? [];
    if (!rows.length) return this.empty();
    const { buckets, keys, value, total } = stackByCategory(rows);
    const series = keys.map((k, i) => ({ key: k, label: k === OTHER ? t('chart_other') : k || t('chart_uncategorised'), colour: PALETTE[i % PALETTE.length] }));
    return h(
      'div',
      {},
      stackedBars({
        buckets,
        bucketLabel: (b) => formatBucket(b, this.bucket),
        series,
        value,
        xLabel: t(this.bucket === 'hour' ? 'chart_axis_hour' : 'chart_axis_day'),
        yLabel: t('chart_alerts'),
        format: (n) => formatNumber(n),
        label: t('chart_over_time'),
        width,
      }),
      h(
        'ul',
        { className: 'legend' },
        series.map((s) => h('li', {}, h('span', { className: 'swatch', style: `background:${s.colour}` }), `${s.label} `, h('strong', {}, formatNumber(total(s.key))))),
      ),
    );
  }

  private byRegion(stats: Stats, width: number): Node {
    const rows = [...(stats.alerts_by_region ?? [])].sort((a, b) => b.count - a.count);
    if (!rows.length) return this.empty();
    const shown = rows.slice(0, MAX_ROWS);
    return h(
      'div',
      {},
      horizontalBars({
        rows: shown.map((r) => ({ label: r.name || r.region, parts: [{ value: r.count, colour: COLOURS.region, text: formatNumber(r.count) }] })),
        format: (n) => formatNumber(n),
        axisLabel: t('chart_alerts'),
        label: t('chart_by_region'),
        width,
      }),
      rows.length > MAX_ROWS ? h('p', { className: 'hint' }, t('chart_top', { n: MAX_ROWS, total: rows.length })) : '',
    );
  }

  private compliance(stats: Stats, width: number): Node {
    const rows = [...(stats.deadline_compliance ?? [])].filter((u) => u.ack_total > 0 || u.arrive_total > 0);
    if (!rows.length) return this.empty();
    const share = (met: number, total: number) => (total > 0 ? met / total : 0);
    // Worst first: that is where a duty officer looks.
    rows.sort((a, b) => share(a.ack_met, a.ack_total) - share(b.ack_met, b.ack_total));
    const shown = rows.slice(0, MAX_ROWS);
    const part = (met: number, total: number, colour: string, which: MessageKey) => ({
      value: share(met, total),
      colour,
      text: total > 0 ? t('chart_share_of', { pct: formatPercent(share(met, total)), met: formatNumber(met), total: formatNumber(total) }) : t('chart_none'),
      title: `${t(which)}: ${total > 0 ? t('chart_share_of', { pct: formatPercent(share(met, total)), met: formatNumber(met), total: formatNumber(total) }) : t('chart_none')}`,
    });
    const barRows: BarRow[] = shown.map((u) => ({
      label: u.name || unitName(this.session, u.unit),
      parts: [part(u.ack_met, u.ack_total, COLOURS.ack, 'chart_ack_met'), part(u.arrive_met, u.arrive_total, COLOURS.arrive, 'chart_arrive_met')],
    }));
    return h(
      'div',
      {},
      horizontalBars({ rows: barRows, max: 1, format: (n) => formatPercent(n), axisLabel: t('chart_met_share'), label: t('chart_compliance'), width }),
      h(
        'ul',
        { className: 'legend' },
        h('li', {}, h('span', { className: 'swatch', style: `background:${COLOURS.ack}` }), t('chart_ack_met')),
        h('li', {}, h('span', { className: 'swatch', style: `background:${COLOURS.arrive}` }), t('chart_arrive_met')),
      ),
      rows.length > MAX_ROWS ? h('p', { className: 'hint' }, t('chart_top_worst', { n: MAX_ROWS, total: rows.length })) : '',
    );
  }

  private falseAlarms(stats: Stats, width: number): Node {
    const rows = [...(stats.false_alarm_rate ?? [])].filter((r) => r.closed > 0);
    if (!rows.length) return this.empty();
    const rate = (r: { closed: number; false_alarms: number }) => r.false_alarms / r.closed;
    rows.sort((a, b) => rate(b) - rate(a));
    return horizontalBars({
      rows: rows.slice(0, MAX_ROWS).map((r) => ({
        label: r.device_type,
        parts: [
          {
            value: rate(r),
            colour: COLOURS.falseAlarm,
            text: t('chart_share_of', { pct: formatPercent(rate(r)), met: formatNumber(r.false_alarms), total: formatNumber(r.closed) }),
          },
        ],
      })),
      max: 1,
      format: (n) => formatPercent(n),
      axisLabel: t('chart_false_share'),
      label: t('chart_false_alarms'),
      width,
    });
  }

  private devices(stats: Stats, width: number): Node {
    const d = stats.devices;
    if (!d || !(d.total > 0)) return this.empty();
    const online = Math.max(0, d.total - d.offline);
    const byType = [...(d.by_type ?? [])].sort((a, b) => b.offline / Math.max(1, b.total) - a.offline / Math.max(1, a.total));
    const side = width >= 640;
    return h(
      'div',
      { className: `devices-chart ${side ? 'side' : ''}` },
      h(
        'div',
        { className: 'donut-box' },
        donut(
          [
            { label: t('chart_offline'), value: d.offline, colour: COLOURS.offline },
            { label: t('chart_online'), value: online, colour: COLOURS.online },
          ],
          formatPercent(d.offline / d.total),
          t('chart_offline_of', { n: formatNumber(d.offline), total: formatNumber(d.total) }),
          t('chart_devices'),
        ),
        h(
          'ul',
          { className: 'legend' },
          h('li', {}, h('span', { className: 'swatch', style: `background:${COLOURS.offline}` }), `${t('chart_offline')} `, h('strong', {}, formatNumber(d.offline))),
          h('li', {}, h('span', { className: 'swatch', style: `background:${COLOURS.online}` }), `${t('chart_online')} `, h('strong', {}, formatNumber(online))),
        ),
      ),
      byType.length
        ? horizontalBars({
            rows: byType.slice(0, MAX_ROWS).map((r) => ({
              label: r.device_type,
              parts: [
                {
                  value: r.total > 0 ? r.offline / r.total : 0,
                  colour: COLOURS.offline,
                  text: t('chart_share_of', { pct: formatPercent(r.total > 0 ? r.offline / r.total : 0), met: formatNumber(r.offline), total: formatNumber(r.total) }),
                },
              ],
            })),
            max: 1,
            format: (n) => formatPercent(n),
            axisLabel: t('chart_offline_share'),
            label: t('chart_devices'),
            width: side ? width - 220 : width,
          })
        : '',
    );
  }
}
