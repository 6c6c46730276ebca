// The side panel: one alert in full (what, where, who owns it and why, deadlines, the
// timeline, evidence, CAP) with the actions its status allows; or an incident's alerts.

import { api, download, messageOf } from './api';
import { availableActions } from './actions';
import { nextDeadline, statusOf, store } from './alerts';
import { unitLabel, type Session } from './context';
import { countdown } from './countdown';
import { field, h, option, uid } from './dom';
import { EvidenceView, MAX_EVIDENCE } from './evidence';
import { PhotoGallery, PhotoPicker } from './photos';
import { formatDateTime, formatDistance, formatDuration, t, tCode, type MessageKey } from './i18n';
import type { ActionName, Alert, Incident } from './types';

const DISPOSITIONS = ['confirmed_incident', 'false_alarm', 'device_fault', 'duplicate', 'referred', 'test'] as const;
const ACTION_LABELS: Record<ActionName, MessageKey> = {
  claim: 'action_claim',
  ack: 'action_ack',
  dispatch: 'action_dispatch',
  arrive: 'action_arrive',
  resolve: 'action_resolve',
  close: 'action_close',
  reopen: 'action_reopen',
  transfer: 'action_transfer',
};
/** Actions that need more than a note open a form first. */
type FormAction = 'dispatch' | 'transfer' | 'close' | 'resolve';
const FORM_ACTIONS: ActionName[] = ['dispatch', 'transfer', 'close', 'resolve'];

export interface PanelHooks {
  closed(): void;
  focusAlert(alert: Alert): void;
}

export class Panel {
  readonly el: HTMLElement;
  private alertId: string | null = null;
  private incidentId: string | null = null;
  private alert: Alert | null = null;
  private openForm: FormAction | null = null;
  private message: { text: string; error: boolean } | null = null;
  private busy = false;
  private evidence: EvidenceView | null = null;
  private evidenceKey = '';
  private photos: PhotoPicker | null = null;
  private gallery: PhotoGallery | null = null;
  private galleryOf = '';

  constructor(
    private readonly session: Session,
    private readonly hooks: PanelHooks,
  ) {
    this.el = h('aside', { className: 'panel', 'aria-label': t('alert_heading'), hidden: true });
    this.dispose = store.subscribe((changed) => {
      // A live change of the alert on show redraws it, unless a form is being filled in.
      if (!this.alertId || this.incidentId) return;
      const current = store.get(this.alertId);
      if (current && current !== this.alert && (!changed || changed.id === this.alertId)) {
        this.alert = current;
        if (!this.openForm) this.render();
      }
    });
  }

  /** Stops following the store (on sign-out). */
  readonly dispose: () => void;

  isOpen(): boolean {
    return !this.el.hidden;
  }

  currentAlertId(): string | null {
    return this.incidentId ? null : this.alertId;
  }

  /** Shows alert `id`, fetched fresh; `form` opens one of its action forms at once. */
  async open(id: string, form: FormAction | null = null): Promise<void> {
    this.alertId = id;
    this.incidentId = null;
    this.openForm = form;
    this.message = null;
    this.el.hidden = false;
    this.alert = store.get(id) ?? null;
    if (this.alert) this.render();
    else this.el.replaceChildren(h('p', {}, t('loading')));
    try {
      const fresh = await api.alert(id);
      if (this.alertId !== id) return;
      store.upsert(fresh);
      this.alert = store.get(id) ?? fresh;
      this.render();
      this.hooks.focusAlert(this.alert);
    } catch (e) {
      if (this.alertId !== id) return;
      this.message = { text: messageOf(e), error: true };
      this.render();
    }
    if (form) this.focusForm();
  }

  async openIncident(id: string): Promise<void> {
    this.incidentId = id;
    this.el.hidden = false;
    this.el.replaceChildren(h('p', {}, t('loading')));
    try {
      const incident = await api.incident(id);
      if (this.incidentId === id) this.renderIncident(incident);
    } catch (e) {
      this.el.replaceChildren(this.closeButton(), h('p', { className: 'error', role: 'alert' }, messageOf(e)));
    }
  }

  close(): void {
    this.dropEvidence();
    this.dropGallery();
    this.photos?.dispose();
    this.photos = null;
    this.el.hidden = true;
    this.alertId = null;
    this.incidentId = null;
    this.alert = null;
    this.openForm = null;
    this.hooks.closed();
  }

  /** Acts at once (the keyboard's `a`), showing the outcome in the panel. */
  async act(id: string, action: ActionName, body: Record<string, unknown> = {}): Promise<void> {
    if (this.alertId !== id || !this.isOpen()) await this.open(id);
    await this.perform(action, body);
  }

  rerender(): void {
    if (this.incidentId) void this.openIncident(this.incidentId);
    else if (this.alert) this.render();
  }

  private closeButton(): HTMLElement {
    return h('button', { type: 'button', className: 'icon close-panel', 'aria-label': t('close_panel'), title: t('close_panel'), onclick: () => this.close() }, '×');
  }

  private render(): void {
    const alert = this.alert;
    if (!alert) return;
    const status = statusOf(alert);
    const handling = alert.handling;
    const severity = alert.severity ?? 'medium';
    const headingId = uid('alert-title');
    const row = (label: string, ...value: (Node | string)[]) => [h('dt', {}, label), h('dd', {}, ...value)];
    const deadlines = handling
      ? [
          ['field_ack_due', handling.ack_due],
          ['field_arrive_due', handling.arrive_due],
          ['field_progress_due', handling.progress_due],
        ].filter(([, v]) => v)
      : [];
    const place =
      typeof alert.lat === 'number' && typeof alert.lon === 'number' ? `${alert.lat.toFixed(5)}, ${alert.lon.toFixed(5)}` : t('no_place');

    this.el.setAttribute('aria-labelledby', headingId);
    this.el.dataset.alertId = alert.id;
    this.el.dataset.status = status;
    delete this.el.dataset.incidentId;
    this.el.replaceChildren(
      h(
        'header',
        { className: 'panel-header' },
        h('h2', { id: headingId }, alert.title || alert.category || alert.id),
        this.closeButton(),
      ),
      h(
        'p',
        { className: 'panel-badges' },
        h('span', { className: `badge sev sev-${severity}` }, tCode('severity', severity)),
        ' ',
        h('span', { className: `status st-${status}`, 'data-field': 'status' }, tCode('status', status)),
        ' ',
        countdown(nextDeadline(alert)),
      ),
      this.messageBox(),
      h(
        'dl',
        { className: 'facts' },
        row(t('field_category'), alert.category ?? ''),
        row(t('field_rule'), alert.rule ?? ''),
        row(t('field_time'), h('time', { dateTime: alert.time }, formatDateTime(alert.time))),
        row(t('field_place'), place),
        alert.grid ? row(t('field_grid'), alert.grid) : [],
        alert.zone ? row(t('field_zone'), alert.zone) : [],
        alert.count && alert.count > 1 ? row(t('field_count'), String(alert.count)) : [],
        row(t('field_owner'), unitLabel(this.session, handling?.owner) || t('no_owner')),
        handling?.routing.candidates?.length ? row(t('field_candidates'), handling.routing.candidates.map((c) => unitLabel(this.session, c)).join(', ')) : [],
        handling?.claimed ? row(t('field_claimed'), `${unitLabel(this.session, handling.claimed.unit)} · ${handling.claimed.by} · ${formatDateTime(handling.claimed.at)}`) : [],
        handling
          ? row(
              t('field_routing'),
              handling.routing.reason ?? '',
              handling.routing.table_version !== undefined ? h('span', { className: 'muted' }, ` (${t('field_routing_table', { v: handling.routing.table_version })})`) : '',
            )
          : [],
        row(
          t('field_deadlines'),
          deadlines.length
            ? h('ul', { className: 'plain' }, deadlines.map(([key, at]) => h('li', {}, `${t(key as MessageKey)}: `, h('time', { dateTime: at as string }, formatDateTime(at)))))
            : t('field_no_deadline'),
        ),
        handling?.escalations?.length
          ? row(t('field_escalations'), h('ul', { className: 'plain' }, handling.escalations.map((e) => h('li', {}, `${unitLabel(this.session, e.unit)} · ${formatDateTime(e.at)} · ${e.reason}`))))
          : [],
        handling?.responders?.length ? row(t('field_responders'), handling.responders.join(', ')) : [],
        handling?.disposition ? row(t('field_disposition'), tCode('disp', handling.disposition)) : [],
        handling?.suppressed_by ? row(t('field_silence'), handling.suppressed_by) : [],
        alert.incident
          ? row(t('field_incident'), h('button', { type: 'button', className: 'link', onclick: () => void this.openIncident(alert.incident as string) }, alert.incident))
          : [],
      ),
      h('p', {}, h('button', { type: 'button', className: 'secondary', onclick: () => void this.downloadCap(alert.id) }, t('download_cap'))),
      this.actionsSection(alert),
      this.evidenceSection(alert),
      this.photoSection(alert),
      this.timeline(alert),
    );
  }

  /** The evidence map and list, kept across redraws of the same alert (it fetches events). */
  private evidenceSection(alert: Alert): HTMLElement | string {
    const ids = (alert.evidence ?? []).slice(0, MAX_EVIDENCE);
    if (!ids.length) {
      this.dropEvidence();
      return '';
    }
    const key = `${alert.id}|${ids.join(',')}`;
    if (!this.evidence || key !== this.evidenceKey) {
      this.dropEvidence();
      this.evidence = new EvidenceView(alert.id, alert, this.session.city.basemap);
      this.evidenceKey = key;
    }
    return this.evidence.el;
  }

  /** The photos attached, kept across redraws of the same alert (each is fetched once). */
  private photoSection(alert: Alert): HTMLElement | string {
    const photos = alert.photos ?? [];
    if (!photos.length || this.galleryOf !== alert.id) this.dropGallery();
    if (!photos.length) return '';
    if (!this.gallery) {
      this.gallery = new PhotoGallery(photos);
      this.galleryOf = alert.id;
    } else {
      this.gallery.update(photos);
    }
    return this.gallery.el;
  }

  private dropGallery(): void {
    this.gallery?.dispose();
    this.gallery = null;
    this.galleryOf = '';
  }

  private dropEvidence(): void {
    this.evidence?.destroy();
    this.evidence = null;
    this.evidenceKey = '';
  }

  private messageBox(): HTMLElement {
    const box = h('div', { className: 'panel-message', role: 'status', 'aria-live': 'polite' });
    if (this.message) {
      box.classList.add(this.message.error ? 'error' : 'ok');
      if (this.message.error) box.setAttribute('role', 'alert');
      box.textContent = this.message.text;
    }
    return box;
  }

  private timeline(alert: Alert): HTMLElement {
    const steps = alert.handling?.timeline ?? [];
    return h(
      'section',
      { className: 'timeline-section' },
      h('h3', {}, t('timeline_heading')),
      steps.length
        ? h(
            'ol',
            { className: 'timeline' },
            steps.map((s) =>
              h(
                'li',
                { 'data-action': s.action, 'data-actor': s.actor },
                h('time', { dateTime: s.at }, formatDateTime(s.at)),
                ' ',
                h('strong', {}, tCode('step', s.action)),
                ` ${t('timeline_by', { actor: s.actor })}`,
                ` · ${tCode('status', s.from)} → ${tCode('status', s.to)}`,
                s.unit ? ` · ${unitLabel(this.session, s.unit)}` : '',
                s.note ? h('div', { className: 'note' }, s.note) : '',
              ),
            ),
          )
        : h('p', {}, t('timeline_empty')),
    );
  }

  private actionsSection(alert: Alert): HTMLElement {
    const actions = availableActions(alert, this.session.me, this.session.units);
    const section = h('section', { className: 'actions', 'aria-label': t('actions_heading') }, h('h3', {}, t('actions_heading')));
    if (!actions.length) {
      section.appendChild(h('p', { className: 'muted' }, t('action_none')));
      return section;
    }
    const note = h('input', { type: 'text', name: 'quick-note', autocomplete: 'off' });
    const quick = actions.filter((a) => !FORM_ACTIONS.includes(a));
    if (quick.length) section.appendChild(field(t('note_optional'), note));
    const buttons = h('div', { className: 'action-buttons' });
    for (const action of actions) {
      const form = FORM_ACTIONS.includes(action);
      buttons.appendChild(
        h(
          'button',
          {
            type: 'button',
            className: action === 'ack' ? 'primary' : '',
            'data-action': action,
            'aria-expanded': form ? String(this.openForm === action) : null,
            disabled: this.busy,
            onclick: () => {
              if (form) {
                this.openForm = this.openForm === action ? null : (action as FormAction);
                this.message = null;
                this.render();
                this.focusForm();
              } else {
                void this.perform(action, note.value.trim() ? { note: note.value.trim() } : {});
              }
            },
          },
          t(ACTION_LABELS[action]),
        ),
      );
    }
    section.appendChild(buttons);
    if (this.openForm && actions.includes(this.openForm)) section.appendChild(this.actionForm(alert, this.openForm));
    return section;
  }

  private actionForm(alert: Alert, action: FormAction): HTMLElement {
    const form = h('form', { className: `action-form form-${action}`, 'data-form': action });
    const note = h('textarea', { name: 'note', rows: 2 });
    const submit = h('button', { type: 'submit', className: 'primary' }, t(ACTION_LABELS[action]));
    const cancel = h('button', {
      type: 'button',
      onclick: () => {
        this.openForm = null;
        this.render();
      },
    }, t('cancel'));
    let body: () => Record<string, unknown> = () => ({});
    if (action === 'dispatch') {
      const recommended = h('fieldset', { className: 'recommendations' }, h('legend', {}, t('dispatch_recommended')), h('p', {}, t('loading')));
      const other = h('input', { type: 'text', name: 'responders', autocomplete: 'off' });
      form.append(recommended, field(t('dispatch_other'), other));
      void this.fillRecommendations(alert.id, recommended);
      body = () => {
        const chosen = [...recommended.querySelectorAll<HTMLInputElement>('input[type=checkbox]:checked')].map((c) => c.value);
        const typed = other.value.split(',').map((s) => s.trim()).filter(Boolean);
        return { responders: [...new Set([...chosen, ...typed])] };
      };
      form.append(field(t('note_optional'), note));
    } else if (action === 'transfer') {
      const owner = alert.handling?.owner;
      const to = h(
        'select',
        { name: 'to' },
        this.session.city.units.filter((u) => u.id !== owner).map((u) => option(u.id, `${u.name} (${u.id}) · ${u.kind}`)),
      );
      form.append(field(t('transfer_to'), to), field(t('note_required'), note));
      body = () => ({ to: to.value });
    } else if (action === 'close') {
      const disposition = h('select', { name: 'disposition' }, DISPOSITIONS.map((d) => option(d, tCode('disp', d))));
      // The note is required by the server; it says so itself if it is missing.
      note.setAttribute('aria-required', 'true');
      form.append(field(t('close_disposition'), disposition), field(t('note_required'), note));
      body = () => ({ disposition: disposition.value });
    } else if (action === 'resolve') {
      // Kept while the alert stays open here, so a redraw does not lose photos on their way.
      if (this.photos?.alertId !== alert.id) {
        this.photos?.dispose();
        this.photos = new PhotoPicker(alert.id);
      }
      form.append(this.photos.el, field(t('note_optional'), note));
    } else {
      form.append(field(t('note_optional'), note));
    }
    form.append(h('div', { className: 'form-buttons' }, submit, cancel));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (action === 'resolve' && this.photos?.sending()) {
        this.message = { text: t('photo_wait'), error: true };
        this.showMessageOnly();
        return;
      }
      const payload = body();
      if (note.value.trim()) payload.note = note.value.trim();
      void this.perform(action, payload);
    });
    return form;
  }

  private async fillRecommendations(id: string, box: HTMLElement): Promise<void> {
    const legend = box.querySelector('legend');
    try {
      const result = await api.recommendations(id, 5);
      const items = result.items.map((r) => {
        const input = h('input', { type: 'checkbox', value: r.responder, id: uid('responder') });
        const eta = t('dispatch_eta', { eta: formatDuration(r.eta_s), distance: formatDistance(r.distance_m) });
        const how = r.by === 'road' ? t('dispatch_by_road') : t('dispatch_straight');
        return h('div', { className: 'recommendation' }, input, h('label', { for: input.id }, `${r.name ?? r.responder} (${r.responder}) — ${eta}, ${how}`));
      });
      box.replaceChildren(...(legend ? [legend] : []), ...(items.length ? items : [h('p', {}, t('dispatch_none'))]));
    } catch (e) {
      box.replaceChildren(...(legend ? [legend] : []), h('p', { className: 'muted' }, messageOf(e)));
    }
  }

  private focusForm(): void {
    requestAnimationFrame(() => {
      const target = this.el.querySelector<HTMLElement>('.action-form select, .action-form input, .action-form textarea');
      target?.focus();
    });
  }

  private async perform(action: ActionName, body: Record<string, unknown>): Promise<void> {
    const id = this.alertId;
    if (!id || this.busy) return;
    this.busy = true;
    try {
      const changed = await api.act(id, action, body);
      store.upsert(changed);
      this.alert = store.get(id) ?? changed;
      this.openForm = null;
      this.message = { text: t('action_done', { action: t(ACTION_LABELS[action]) }), error: false };
    } catch (e) {
      // The server's own words: it says what is wrong and what can be done instead.
      this.message = { text: t('action_refused', { message: messageOf(e) }), error: true };
    } finally {
      this.busy = false;
    }
    if (this.alertId === id) {
      // Keep what was typed in an open form when the action was refused.
      if (this.openForm && this.message?.error) this.showMessageOnly();
      else this.render();
    }
  }

  private showMessageOnly(): void {
    const old = this.el.querySelector('.panel-message');
    old?.replaceWith(this.messageBox());
  }

  private async downloadCap(id: string): Promise<void> {
    try {
      download(await api.cap(id), `${id}.cap.xml`);
    } catch (e) {
      this.message = { text: messageOf(e), error: true };
      this.showMessageOnly();
    }
  }

  private renderIncident(incident: Incident): void {
    const back = this.alertId
      ? h('button', { type: 'button', className: 'secondary', onclick: () => this.alertId && void this.open(this.alertId) }, t('back_to_queue'))
      : null;
    this.el.dataset.incidentId = incident.id;
    this.el.replaceChildren(
      h('header', { className: 'panel-header' }, h('h2', {}, t('incident_heading', { id: incident.id })), this.closeButton()),
      back ?? '',
      h('p', {}, t('incident_summary', { count: incident.count, open: incident.open, first: formatDateTime(incident.first_time), last: formatDateTime(incident.last_time) })),
      h('p', {}, incident.categories.join(', ')),
      h('h3', {}, t('incident_alerts')),
      h(
        'ul',
        { className: 'incident-alerts' },
        incident.alerts.map((a) =>
          h(
            'li',
            {},
            h('button', { type: 'button', className: 'link', onclick: () => void this.open(a.id) }, a.title || a.category || a.id),
            ` · ${tCode('severity', a.severity)} · ${tCode('status', statusOf(a))} · ${formatDateTime(a.time)}`,
          ),
        ),
      ),
    );
  }
}
