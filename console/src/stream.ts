// The live stream of alert changes (Server-Sent Events). EventSource cannot send headers,
// so the token rides in the query, as the node allows for this one endpoint.

import { api, token } from './api';
import { loadAlerts, store } from './alerts';
import type { Alert } from './types';

export type LiveState = 'connected' | 'disconnected' | 'reloaded';

let source: EventSource | null = null;

export function startStream(onState: (state: LiveState) => void): void {
  stopStream();
  const bearer = token();
  if (!bearer) return;
  const es = new EventSource(`/api/v1/alerts/stream?access_token=${encodeURIComponent(bearer)}`);
  source = es;
  es.addEventListener('open', () => onState('connected'));
  es.addEventListener('alert', (event) => {
    try {
      const change = JSON.parse((event as MessageEvent<string>).data) as { change: string; alert: Alert };
      if (change.alert?.id) store.upsert(change.alert);
    } catch {
      // A malformed change is skipped; the next one or a reload corrects the list.
    }
  });
  es.addEventListener('lagged', () => {
    // Changes were dropped for this client: only a fresh list is trustworthy.
    void loadAlerts().then(() => onState('reloaded'));
  });
  es.addEventListener('error', () => {
    onState('disconnected');
    if (es.readyState === EventSource.CLOSED && source === es) {
      // The browser gave up (the node answered an error, e.g. 401 for an expired token).
      // Any API call tells which: a 401 sends the user to the login form; otherwise retry.
      void api
        .me()
        .then(() => setTimeout(() => source === es && startStream(onState), 3000))
        .catch(() => undefined);
    }
  });
}

export function stopStream(): void {
  source?.close();
  source = null;
}
