// The phone view for responders: the open alerts their unit owns, with big buttons to
// acknowledge, navigate, report arrival and resolve with a note.

import { api, messageOf } from './api';
import { availableActions } from './actions';
import { byUrgency, isOpen, nextDeadline, statusOf, store } from './alerts';
import { unitName, type Session } from './context';
import { countdown } from './countdown';
import { field, h } from './dom';
import { formatDateTime, t, tCode } from './i18n';
import { PhotoPicker } from './photos';
import type { ActionName, Alert } from './types';

export class ResponderView {
  readonly el: HTMLElement;
  private readonly list: HTMLElement;
  private readonly messages = new Map<string, { text: string; error: boolean }>();
  /** Photo pickers by alert, kept across redraws (an upload may be under way). */
  private readonly pickers = new Map<string, PhotoPicker>();
  private scheduled = false;
  private active = false;

  constructor(private readonly session: Session) {
    this.list = h('ul', { className: 'my-alerts' });
    this.el = h('section', { className: 'responder', 'aria-labelledby': 'my-alerts-heading' });
    this.renderFrame();
    this.dispose = store.subscribe(() => this.schedule());
  }

  /** Stops following the store (on sign-out). */
  readonly dispose: () => void;

  setActive(active: boolean): void {
    this.active = active;
    if (active) this.render();
  }

  renderFrame(): void {
    const me = this.session.me;
    this.el.replaceChildren(
      h('h2', { id: 'my-alerts-heading' }, t('my_alerts')),
      me.unit ? h('p', { className: 'muted' }, t('my_alerts_unit', { unit: unitName(this.session, me.unit) })) : '',
      this.list,
    );
    for (const picker of this.pickers.values()) picker.render();
    this.render();
  }

  /** Open alerts owned by the user's unit (everything open for a user without a unit). */
  mine(): Alert[] {
    const unit = this.session.me.unit;
    return store
      .all()
      .filter((a) => isOpen(statusOf(a)) && (!unit || a.handling?.owner === unit))
      .sort(byUrgency);
  }

  private schedule(): void {
    if (this.scheduled || !this.active) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.render();
    });
  }

  private render(): void {
    // Keep what a responder is typing: a redraw while a note field has focus waits.
    const active = document.activeElement;
    const typing = this.el.contains(active) && active instanceof HTMLInputElement && active.type !== 'file';
    if (typing) {
      setTimeout(() => this.schedule(), 1000);
      return;
    }
    const alerts = this.mine();
    const shown = new Set(alerts.map((a) => a.id));
    for (const [id, picker] of this.pickers) {
      if (shown.has(id)) continue;
      picker.dispose();
      this.pickers.delete(id);
    }
    this.list.replaceChildren(...(alerts.length ? alerts.map((a) => this.card(a)) : [h('li', { className: 'empty' }, t('my_alerts_empty'))]));
    this.el.dataset.count = String(alerts.length);
  }

  private card(alert: Alert): HTMLElement {
    const status = statusOf(alert);
    const severity = alert.severity ?? 'medium';
    const actions = availableActions(alert, this.session.me, this.session.units);
    const hasPlace = typeof alert.lat === 'number' && typeof alert.lon === 'number';
    const coords = hasPlace ? `${(alert.lat as number).toFixed(5)},${(alert.lon as number).toFixed(5)}` : '';
    const message = this.messages.get(alert.id);
    const note = h('input', { type: 'text', name: 'note', autocomplete: 'off' });
    const button = (action: ActionName, label: string, body: () => Record<string, unknown> = () => ({})) =>
      actions.includes(action)
        ? h('button', { type: 'button', className: `big ${action === 'ack' ? 'primary' : ''}`, 'data-action': action, onclick: () => void this.perform(alert.id, action, body()) }, label)
        : null;
    return h(
      'li',
      { className: `card sev-${severity}`, 'data-alert-id': alert.id, 'data-owner': alert.handling?.owner ?? '', 'data-status': status },
      h('h3', {}, alert.title || alert.category || alert.id),
      h(
        'p',
        {},
        h('span', { className: `badge sev sev-${severity}` }, tCode('severity', severity)),
        ' ',
        h('span', { className: `status st-${status}` }, tCode('status', status)),
        ' ',
        countdown(nextDeadline(alert)),
      ),
      h('p', { className: 'muted' }, `${alert.category ?? ''} · `, h('time', { dateTime: alert.time }, formatDateTime(alert.time))),
      hasPlace ? h('p', {}, `${t('coordinates')}: `, h('span', { className: 'coords' }, coords)) : h('p', { className: 'muted' }, t('no_place')),
      message ? h('p', { className: message.error ? 'error' : 'ok', role: message.error ? 'alert' : 'status' }, message.text) : '',
      h(
        'div',
        { className: 'card-actions' },
        button('ack', t('action_ack')),
        button('claim', t('action_claim')),
        hasPlace ? h('a', { className: 'button big', href: `geo:${coords}` }, t('navigate')) : null,
        button('arrive', t('action_arrive')),
      ),
      actions.includes('resolve')
        ? h(
            'div',
            { className: 'resolve-box' },
            this.picker(alert.id).el,
            h(
              'div',
              { className: 'resolve-row' },
              field(t('resolve_note'), note),
              button('resolve', t('action_resolve'), () => (note.value.trim() ? { note: note.value.trim() } : {})),
            ),
          )
        : '',
    );
  }

  private picker(id: string): PhotoPicker {
    let picker = this.pickers.get(id);
    if (!picker) {
      picker = new PhotoPicker(id);
      this.pickers.set(id, picker);
    }
    return picker;
  }

  private async perform(id: string, action: ActionName, body: Record<string, unknown>): Promise<void> {
    if (action === 'resolve' && this.pickers.get(id)?.sending()) {
      this.messages.set(id, { text: t('photo_wait'), error: true });
      this.render();
      return;
    }
    try {
      const changed = await api.act(id, action, body);
      this.messages.set(id, { text: t('action_done', { action: t(`action_${action}`) }), error: false });
      store.upsert(changed);
    } catch (e) {
      this.messages.set(id, { text: t('action_refused', { message: messageOf(e) }), error: true });
    }
    (document.activeElement as HTMLElement | null)?.blur?.();
    this.render();
  }
}
