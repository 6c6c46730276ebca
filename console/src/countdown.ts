// Live countdowns: any element made here is refreshed by one shared one-second tick.

import type { Deadline } from './alerts';
import { h } from './dom';
import { formatCountdown, t, type MessageKey } from './i18n';

const LABELS: Record<Deadline['kind'], MessageKey> = { ack: 'escalates_in', arrive: 'arrival_due_in', progress: 'progress_due_in' };

export function countdown(deadline: Deadline | null): HTMLElement {
  const el = h('span', { className: 'countdown' });
  if (!deadline) return el;
  el.dataset.due = String(deadline.at);
  el.dataset.kind = deadline.kind;
  refresh(el, Date.now());
  return el;
}

function refresh(el: HTMLElement, now: number): void {
  const due = Number(el.dataset.due);
  const kind = el.dataset.kind as Deadline['kind'];
  const left = (due - now) / 1000;
  const overdue = left <= 0;
  el.textContent = overdue ? t('overdue') : t(LABELS[kind] ?? 'escalates_in', { t: formatCountdown(left) });
  el.classList.toggle('overdue', overdue);
  el.classList.toggle('soon', !overdue && left < 60);
}

export function tickCountdowns(root: ParentNode = document): void {
  const now = Date.now();
  root.querySelectorAll<HTMLElement>('.countdown[data-due]').forEach((el) => refresh(el, now));
}

let timer = 0;
export function startCountdownTicker(): void {
  if (timer) return;
  timer = window.setInterval(() => tickCountdowns(), 1000);
}
