// The sharing page (`#/sharing`): the sharing grants that concern the user's unit — whose
// data another unit may search, for which purposes, until when — each with every search
// made under it (`GET /api/v1/grants/{id}/accesses`), so that a data owner sees the use of
// its data; and, for administrators and auditors, the legal holds that keep a case's data
// past its retention. Administrators grant, revoke, place and release here.

import { api, messageOf } from './api';
import type { Session } from './context';
import { field, h } from './dom';
import { formatDateTime, formatNumber, t, tCode } from './i18n';
import { auditSummary } from './audit';
import type { AuditEntry, Grant, LegalHold, Unit } from './types';

/** Whether a grant still gives access at `now`. */
export function grantInForce(grant: Grant, now: Date = new Date()): boolean {
  return !grant.revoked_at && new Date(grant.until).getTime() > now.getTime();
}

/** A comma- or space-separated list as its items. */
export function listOf(text: string): string[] {
  return text
    .split(/[,\s]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/** A `datetime-local` input's value as an RFC 3339 time (or '' when empty or invalid). */
export function isoOf(local: string): string {
  if (!local) return '';
  const time = new Date(local);
  return Number.isNaN(time.getTime()) ? '' : time.toISOString();
}

export class SharingPage {
  readonly el: HTMLElement;
  private readonly grantsBox: HTMLElement;
  private readonly holdsBox: HTMLElement;
  /** What the last change did, or why it was refused. */
  private readonly notice: HTMLElement;
  private grants: Grant[] = [];
  private holds: LegalHold[] = [];
  private units: Unit[] = [];
  private readonly accesses = new Map<string, AuditEntry[] | string>();

  constructor(private readonly session: Session) {
    this.el = h('section', { className: 'sharing-page', 'aria-labelledby': 'sharing-heading' });
    this.grantsBox = h('div', { className: 'grants' });
    this.holdsBox = h('div', { className: 'holds' });
    this.notice = h('div', { className: 'notice', role: 'status' });
  }

  private get admin(): boolean {
    return this.session.me.role === 'admin';
  }

  private get seesHolds(): boolean {
    return this.admin || this.session.me.role === 'auditor';
  }

  show(): void {
    this.relabel();
    void this.load();
  }

  relabel(): void {
    this.el.replaceChildren(
      h('header', { className: 'page-header' }, h('h2', { id: 'sharing-heading' }, t('sharing_heading'))),
      this.notice,
      h('h3', {}, t('grants_heading')),
      h('p', { className: 'muted' }, t('grants_intro')),
      this.grantsBox,
      this.admin ? this.grantForm() : '',
      this.seesHolds ? h('h3', {}, t('holds_heading')) : '',
      this.seesHolds ? h('p', { className: 'muted' }, t('holds_intro')) : '',
      this.seesHolds ? this.holdsBox : '',
      this.admin ? this.holdForm() : '',
    );
    this.render();
  }

  private async load(): Promise<void> {
    try {
      const [grants, holds, city] = await Promise.all([
        api.grants(),
        this.seesHolds ? api.holds() : Promise.resolve({ items: [] as LegalHold[] }),
        this.admin ? api.city() : Promise.resolve(null),
      ]);
      this.grants = grants.items;
      this.holds = holds.items;
      if (city) this.units = city.units;
    } catch (e) {
      this.grantsBox.replaceChildren(h('p', { className: 'error', role: 'alert' }, messageOf(e)));
      return;
    }
    this.relabel();
  }

  private render(): void {
    this.grantsBox.dataset.count = String(this.grants.length);
    this.grantsBox.replaceChildren(
      this.grants.length
        ? h(
            'div',
            { className: 'table-wrap' },
            h(
              'table',
              { className: 'data grants-table' },
              h(
                'thead',
                {},
                h('tr', {}, [t('grant_owner'), t('grant_grantee'), t('grant_classes'), t('grant_purposes'), t('grant_until'), t('grant_reason'), ''].map((c) => h('th', { scope: 'col' }, c))),
              ),
              h('tbody', {}, this.grants.flatMap((g) => this.grantRows(g))),
            ),
          )
        : h('p', { className: 'muted' }, t('grants_none')),
    );
    this.holdsBox.dataset.count = String(this.holds.length);
    this.holdsBox.replaceChildren(
      this.holds.length
        ? h(
            'div',
            { className: 'table-wrap' },
            h(
              'table',
              { className: 'data holds-table' },
              h('thead', {}, h('tr', {}, [t('hold_case'), t('hold_reason'), t('hold_kinds'), t('hold_range'), t('hold_by'), ''].map((c) => h('th', { scope: 'col' }, c)))),
              h(
                'tbody',
                {},
                this.holds.map((hold) =>
                  h(
                    'tr',
                    { 'data-hold': hold.id, className: hold.released_at ? 'inactive' : '' },
                    h('td', {}, hold.case_number),
                    h('td', {}, hold.reason),
                    h('td', {}, hold.kinds.length ? hold.kinds.join(', ') : t('hold_all_kinds')),
                    h('td', {}, `${formatDateTime(hold.since)} – ${formatDateTime(hold.until)}`),
                    h('td', {}, hold.created_by),
                    h(
                      'td',
                      {},
                      hold.released_at
                        ? t('hold_released', { by: hold.released_by ?? '', at: formatDateTime(hold.released_at) })
                        : this.admin
                          ? h('button', { type: 'button', 'data-action': 'release-hold', onclick: () => void this.release(hold) }, t('hold_release'))
                          : t('hold_in_force'),
                    ),
                  ),
                ),
              ),
            ),
          )
        : h('p', { className: 'muted' }, t('holds_none')),
    );
  }

  private grantRows(g: Grant): HTMLElement[] {
    const inForce = grantInForce(g);
    const row = h(
      'tr',
      { 'data-grant': g.id, className: inForce ? '' : 'inactive' },
      h('td', {}, g.owner),
      h('td', {}, g.grantee),
      h('td', {}, g.classes.join(', ')),
      h('td', {}, g.purposes.length ? g.purposes.map((p) => tCode('basis', p)).join(', ') : t('grant_no_purpose')),
      h('td', {}, g.revoked_at ? t('grant_revoked', { at: formatDateTime(g.revoked_at) }) : formatDateTime(g.until)),
      h('td', {}, g.reason),
      h(
        'td',
        { className: 'actions' },
        h('button', { type: 'button', 'data-action': 'grant-accesses', 'aria-expanded': String(this.accesses.has(g.id)), onclick: () => void this.toggleAccesses(g) }, t('grant_accesses')),
        this.admin && inForce ? h('button', { type: 'button', 'data-action': 'revoke-grant', onclick: () => void this.revoke(g) }, t('grant_revoke')) : '',
      ),
    );
    const shown = this.accesses.get(g.id);
    if (shown === undefined) return [row];
    const body =
      typeof shown === 'string'
        ? h('p', { className: 'error' }, shown)
        : shown.length
          ? h(
              'ul',
              { className: 'accesses' },
              shown.map((e) => h('li', { 'data-seq': String(e.seq) }, h('time', { dateTime: e.at }, formatDateTime(e.at)), ` ${e.actor} · ${e.action} · ${auditSummary(e)}`)),
            )
          : h('p', { className: 'muted' }, t('grant_no_accesses'));
    return [row, h('tr', { className: 'accesses-row', 'data-accesses': g.id }, h('td', { colSpan: 7 }, h('strong', {}, t('grant_accesses_count', { n: formatNumber(typeof shown === 'string' ? 0 : shown.length) })), body))];
  }

  private async toggleAccesses(g: Grant): Promise<void> {
    if (this.accesses.has(g.id)) {
      this.accesses.delete(g.id);
    } else {
      try {
        this.accesses.set(g.id, (await api.grantAccesses(g.id)).items);
      } catch (e) {
        this.accesses.set(g.id, messageOf(e));
      }
    }
    this.render();
  }

  private async revoke(g: Grant): Promise<void> {
    if (!confirm(t('grant_revoke_confirm', { owner: g.owner, grantee: g.grantee }))) return;
    await this.act(() => api.revokeGrant(g.id), t('grant_revoked_done'));
  }

  private async release(hold: LegalHold): Promise<void> {
    if (!confirm(t('hold_release_confirm', { case: hold.case_number }))) return;
    await this.act(() => api.releaseHold(hold.id), t('hold_released_done'));
  }

  /** Runs a change and reloads the lists; says what happened, or why it was refused. */
  private async act(change: () => Promise<unknown>, done: string): Promise<void> {
    try {
      await change();
    } catch (e) {
      this.notice.replaceChildren(h('p', { className: 'error', role: 'alert' }, messageOf(e)));
      return;
    }
    this.notice.replaceChildren(h('p', {}, done));
    await this.load();
  }

  private grantForm(): HTMLElement {
    const unitList = h('datalist', { id: 'grant-units' }, this.units.map((u) => h('option', { value: u.id }, u.name)));
    const owner = h('input', { type: 'text', name: 'owner', required: true, list: 'grant-units', autocomplete: 'off' });
    const grantee = h('input', { type: 'text', name: 'grantee', required: true, list: 'grant-units', autocomplete: 'off' });
    const classes = h('input', { type: 'text', name: 'classes', required: true, value: 'plate_read' });
    const bases = this.session.me.search?.legal_bases ?? [];
    const purposes = bases.map((b) => h('input', { type: 'checkbox', name: 'purpose', value: b }));
    const until = h('input', { type: 'datetime-local', name: 'until', required: true });
    const reason = h('input', { type: 'text', name: 'reason', required: true });
    const submit = async (e: Event) => {
      e.preventDefault();
      await this.act(
        () =>
          api.grant({
            owner: owner.value.trim(),
            grantee: grantee.value.trim(),
            classes: listOf(classes.value),
            purposes: purposes.filter((p) => p.checked).map((p) => p.value),
            until: isoOf(until.value),
            reason: reason.value.trim(),
          }),
        t('grant_made'),
      );
    };
    return h(
      'form',
      { className: 'grant-form', 'data-form': 'grant', onsubmit: (e: Event) => void submit(e) },
      h('h4', {}, t('grant_new')),
      unitList,
      field(t('grant_owner'), owner),
      field(t('grant_grantee'), grantee),
      field(t('grant_classes'), classes),
      h(
        'fieldset',
        {},
        h('legend', {}, t('grant_purposes')),
        purposes.map((p) => h('label', {}, p, ' ', tCode('basis', p.value))),
      ),
      field(t('grant_until'), until),
      field(t('grant_reason'), reason),
      h('button', { type: 'submit', className: 'primary', 'data-action': 'make-grant' }, t('grant_make')),
    );
  }

  private holdForm(): HTMLElement {
    const caseNumber = h('input', { type: 'text', name: 'case_number', required: true });
    const reason = h('input', { type: 'text', name: 'reason', required: true });
    const kinds = h('input', { type: 'text', name: 'kinds', placeholder: 'plate_read' });
    const since = h('input', { type: 'datetime-local', name: 'since', required: true });
    const until = h('input', { type: 'datetime-local', name: 'until', required: true });
    const submit = async (e: Event) => {
      e.preventDefault();
      await this.act(
        () =>
          api.placeHold({
            case_number: caseNumber.value.trim(),
            reason: reason.value.trim(),
            kinds: listOf(kinds.value),
            since: isoOf(since.value),
            until: isoOf(until.value),
          }),
        t('hold_placed'),
      );
    };
    return h(
      'form',
      { className: 'hold-form', 'data-form': 'hold', onsubmit: (e: Event) => void submit(e) },
      h('h4', {}, t('hold_new')),
      field(t('hold_case'), caseNumber),
      field(t('hold_reason'), reason),
      field(t('hold_kinds'), kinds),
      field(t('hold_since'), since),
      field(t('hold_until'), until),
      h('button', { type: 'submit', className: 'primary', 'data-action': 'place-hold' }, t('hold_place')),
    );
  }
}
