// Live countdowns: any element made here is refreshed by one shared one-second tick, while
// it is on screen (a queue of hundreds of alerts would otherwise re-lay itself out every
// second, and that second's frame of the map with it).

import type { Deadline } from './alerts';
import { h } from './dom';
import { formatCountdown, t, type MessageKey } from './i18n';

const LABELS: Record<Deadline['kind'], MessageKey> = { ack: 'escalates_in', arrive: 'arrival_due_in', progress: 'progress_due_in' };

const onScreen = new Set<HTMLElement>();
const watcher =
  typeof IntersectionObserver === 'undefined'
    ? null
    : new IntersectionObserver((entries) => {
        const now = Date.now();
        for (const entry of entries) {
          const el = entry.target as HTMLElement;
          if (entry.isIntersecting) {
            onScreen.add(el);
            refresh(el, now);
          } else {
            onScreen.delete(el);
            if (!el.isConnected) watcher?.unobserve(el);
          }
        }
      });

export function countdown(deadline: Deadline | null): HTMLElement {
  const el = h('span', { className: 'countdown' });
  if (!deadline) return el;
  el.dataset.due = String(deadline.at);
  el.dataset.kind = deadline.kind;
  refresh(el, Date.now());
  watcher?.observe(el);
  return el;
}

/** What a countdown to `due` shows at `now` (ms): its text, and whether it is overdue or under a minute away. */
export function countdownState(kind: Deadline['kind'], due: number, now: number): { text: string; overdue: boolean; soon: boolean } {
  const left = (due - now) / 1000;
  const overdue = left <= 0;
  const text = overdue ? t('overdue') : t(LABELS[kind] ?? 'escalates_in', { t: formatCountdown(left) });
  return { text, overdue, soon: !overdue && left < 60 };
}

function refresh(el: HTMLElement, now: number): void {
  const state = countdownState(el.dataset.kind as Deadline['kind'], Number(el.dataset.due), now);
  el.textContent = state.text;
  el.classList.toggle('overdue', state.overdue);
  el.classList.toggle('soon', state.soon);
}

export function tickCountdowns(): void {
  const now = Date.now();
  if (!watcher) {
    document.querySelectorAll<HTMLElement>('.countdown[data-due]').forEach((el) => refresh(el, now));
    return;
  }
  for (const el of onScreen) {
    if (el.isConnected) refresh(el, now);
    else {
      onScreen.delete(el);
      watcher.unobserve(el);
    }
  }
}

let timer = 0;
export function startCountdownTicker(): void {
  if (timer) return;
  timer = window.setInterval(() => tickCountdowns(), 1000);
}
