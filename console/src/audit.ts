// The audit page (`#/audit`, auditors and administrators): whether the audit log's hash
// chain holds and its head (`GET /api/v1/audit/head`), the log itself with filters by user
// and action (`GET /api/v1/audit`), and the transparency report — searches per month by
// legal basis and unit, approvals, hotlist sizes, retention deletions — in aggregate
// (`GET /api/v1/audit/transparency`).

import { api, messageOf } from './api';
import type { Session } from './context';
import { field, h } from './dom';
import { formatDateTime, formatNumber, t, tCode } from './i18n';
import type { AuditEntry, AuditHead, Transparency } from './types';

const AUDIT_ROLES = ['admin', 'auditor'];
const PAGE = 100;

export function canAudit(session: Session): boolean {
  return AUDIT_ROLES.includes(session.me.role);
}

/** One line on what an entry did: its purpose, result count, reason or note, when present. */
export function auditSummary(entry: AuditEntry): string {
  const d = entry.detail ?? {};
  const purpose = d.purpose as { case_number?: string; legal_basis?: string } | null | undefined;
  const parts: string[] = [];
  if (purpose?.case_number) parts.push(`${purpose.case_number} · ${tCode('basis', purpose.legal_basis)}`);
  if (typeof d.results === 'number') parts.push(t('audit_results', { n: formatNumber(d.results) }));
  for (const key of ['reason', 'note']) if (typeof d[key] === 'string' && d[key]) parts.push(String(d[key]));
  if (typeof d.approval === 'string') parts.push(t('audit_under_approval', { id: d.approval }));
  return parts.join(' — ');
}

export class AuditPage {
  readonly el: HTMLElement;
  private readonly chain: HTMLElement;
  private readonly actor: HTMLInputElement;
  private readonly action: HTMLInputElement;
  private readonly log: HTMLElement;
  private readonly report: HTMLElement;
  private entries: AuditEntry[] = [];
  private next: string | null = null;

  constructor() {
    this.el = h('section', { className: 'audit-page', 'aria-labelledby': 'audit-heading' });
    this.chain = h('div', { className: 'audit-chain', role: 'status' });
    this.actor = h('input', { type: 'text', name: 'actor', autocomplete: 'off' });
    this.action = h('input', { type: 'text', name: 'action', autocomplete: 'off', list: 'audit-actions' });
    this.log = h('div', { className: 'audit-log' });
    this.report = h('div', { className: 'transparency' });
  }

  show(): void {
    this.relabel();
    void this.loadChain();
    void this.loadLog(null);
    void this.loadReport();
  }

  relabel(): void {
    const form = h(
      'form',
      { className: 'audit-filters', onsubmit: (e: Event) => (e.preventDefault(), void this.loadLog(null)) },
      field(t('audit_actor'), this.actor),
      field(t('audit_action'), this.action),
      h('datalist', { id: 'audit-actions' }, ['search', 'search.', 'alert.', 'rule.', 'routing.', 'hotlist.', 'user.'].map((a) => h('option', { value: a }))),
      h('button', { type: 'submit', className: 'primary', 'data-action': 'audit-filter' }, t('audit_show')),
    );
    this.el.replaceChildren(
      h('header', { className: 'page-header' }, h('h2', { id: 'audit-heading' }, t('audit_heading'))),
      this.chain,
      h('h3', {}, t('audit_log')),
      form,
      this.log,
      h('h3', {}, t('transparency_heading')),
      this.report,
    );
    this.renderLog();
  }

  private async loadChain(): Promise<void> {
    try {
      this.renderChain(await api.auditHead());
    } catch (e) {
      this.chain.replaceChildren(h('p', { className: 'error' }, messageOf(e)));
    }
  }

  private renderChain(head: AuditHead): void {
    this.chain.dataset.intact = String(head.intact);
    this.chain.className = `audit-chain ${head.intact ? 'ok' : 'broken'}`;
    this.chain.setAttribute('role', head.intact ? 'status' : 'alert');
    this.chain.replaceChildren(
      h('strong', {}, head.intact ? t('audit_intact', { n: formatNumber(head.entries) }) : t('audit_broken', { seq: head.broken?.seq ?? 0, reason: head.broken?.reason ?? '' })),
      head.head ? h('p', { className: 'muted audit-head' }, t('audit_head', { seq: head.head.seq, at: formatDateTime(head.head.at) }), ' ', h('code', {}, head.head.hash)) : '',
    );
  }

  private async loadLog(cursor: string | null): Promise<void> {
    try {
      const page = await api.audit({ actor: this.actor.value.trim(), action: this.action.value.trim(), cursor, limit: PAGE });
      this.entries = cursor ? [...this.entries, ...page.items] : page.items;
      this.next = page.next;
    } catch (e) {
      this.log.replaceChildren(h('p', { className: 'error', role: 'alert' }, messageOf(e)));
      return;
    }
    this.renderLog();
  }

  private renderLog(): void {
    this.log.dataset.count = String(this.entries.length);
    this.log.replaceChildren(
      this.entries.length
        ? h(
            'div',
            { className: 'table-wrap' },
            h(
              'table',
              { className: 'data audit-table' },
              h('thead', {}, h('tr', {}, ['#', t('field_time'), t('audit_actor'), t('audit_action'), t('audit_target'), t('audit_detail')].map((c) => h('th', { scope: 'col' }, c)))),
              h(
                'tbody',
                {},
                this.entries.map((e) =>
                  h(
                    'tr',
                    { 'data-seq': String(e.seq) },
                    h('td', {}, String(e.seq)),
                    h('td', {}, h('time', { dateTime: e.at }, formatDateTime(e.at))),
                    h('td', {}, e.actor),
                    h('td', {}, e.action),
                    h('td', {}, e.target),
                    h('td', {}, auditSummary(e)),
                  ),
                ),
              ),
            ),
          )
        : h('p', { className: 'muted' }, t('audit_none')),
      this.next ? h('button', { type: 'button', 'data-action': 'load-more', onclick: () => void this.loadLog(this.next) }, t('queue_load_more')) : '',
    );
  }

  private async loadReport(): Promise<void> {
    try {
      this.renderReport(await api.transparency());
    } catch (e) {
      this.report.replaceChildren(h('p', { className: 'error' }, messageOf(e)));
    }
  }

  private renderReport(r: Transparency): void {
    const table = (name: string, head: string[], rows: (string | number)[][]) =>
      h(
        'section',
        { 'data-report': name },
        h('h4', {}, t(`transparency_${name}` as 'transparency_searches')),
        rows.length
          ? h(
              'table',
              { className: 'data' },
              h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
              h('tbody', {}, rows.map((row) => h('tr', {}, row.map((c) => h('td', {}, typeof c === 'number' ? formatNumber(c) : c))))),
            )
          : h('p', { className: 'muted' }, t('audit_none')),
      );
    const unit = (u: string | null | undefined) => (u ? u : t('transparency_no_unit'));
    this.report.replaceChildren(
      h('p', { className: 'muted' }, t('transparency_intro', { since: formatDateTime(r.since), until: formatDateTime(r.until) })),
      table(
        'personal_searches',
        [t('transparency_month'), t('search_legal_basis'), t('transparency_unit'), t('transparency_count'), t('transparency_results')],
        r.personal_searches.map((s) => [s.month, tCode('basis', s.legal_basis), unit(s.unit), s.count, s.results]),
      ),
      table(
        'other',
        [t('transparency_month'), t('audit_action'), t('transparency_count')],
        r.other_reads_and_decisions.map((s) => [s.month, s.action, s.count]),
      ),
      table('hotlists', [t('transparency_list'), t('transparency_active'), t('transparency_inactive')], r.hotlists.map((l) => [l.name, l.active, l.inactive])),
      table('retention', [t('transparency_month'), t('transparency_kind'), t('transparency_rule'), t('transparency_rows')], r.retention.map((d) => [d.month, d.kind, d.rule, d.rows])),
    );
  }
}
