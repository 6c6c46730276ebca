// The node's HTTP API: bearer token from sessionStorage, JSON errors turned into ApiError
// with the server's message, and a 401 anywhere sending the user back to the login form.

import type { Alert, AlertPage, CityInfo, FeatureCollection, Incident, LayerName, Me, Recommendations, ActionName } from './types';

const TOKEN_KEY = 'cityward.token';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value: string | null): void {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

let onUnauthorized: () => void = () => undefined;
export function whenUnauthorized(handler: () => void): void {
  onUnauthorized = handler;
}

async function errorOf(response: Response): Promise<ApiError> {
  let code = 'http_' + response.status;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = (await response.json()) as { error?: { code?: string; message?: string } };
    if (body.error?.message) message = body.error.message;
    if (body.error?.code) code = body.error.code;
  } catch {
    // Not JSON (a proxy's page): keep the status line.
  }
  return new ApiError(response.status, code, message);
}

async function send(method: string, path: string, body?: unknown, authenticated = true): Promise<Response> {
  const headers: Record<string, string> = {};
  const bearer = token();
  if (authenticated && bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'network', e instanceof Error ? e.message : String(e));
  }
  if (response.status === 401 && authenticated) {
    const error = await errorOf(response);
    setToken(null);
    onUnauthorized();
    throw error;
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function json<T>(method: string, path: string, body?: unknown): Promise<T> {
  return (await (await send(method, path, body)).json()) as T;
}

export async function login(username: string, password: string): Promise<{ token: string; role: string; expires_at: string }> {
  const response = await send('POST', '/api/v1/login', { username, password }, false);
  return (await response.json()) as { token: string; role: string; expires_at: string };
}

export const api = {
  me: () => json<Me>('GET', '/api/v1/me'),
  city: () => json<CityInfo>('GET', '/api/v1/city'),
  layer: (name: LayerName) => json<FeatureCollection>('GET', `/api/v1/city/layers/${name}`),
  alerts: (query: { status?: string[]; limit?: number; cursor?: string | null; class?: string }) => {
    const params = new URLSearchParams();
    if (query.status?.length) params.set('status', query.status.join(','));
    if (query.limit) params.set('limit', String(query.limit));
    if (query.cursor) params.set('cursor', query.cursor);
    if (query.class) params.set('class', query.class);
    return json<AlertPage>('GET', `/api/v1/alerts?${params}`);
  },
  alert: (id: string) => json<Alert>('GET', `/api/v1/alerts/${encodeURIComponent(id)}`),
  incident: (id: string) => json<Incident>('GET', `/api/v1/incidents/${encodeURIComponent(id)}`),
  recommendations: (id: string, k = 5) => json<Recommendations>('GET', `/api/v1/alerts/${encodeURIComponent(id)}/recommendations?k=${k}`),
  act: (id: string, action: ActionName, body: Record<string, unknown> = {}) =>
    json<Alert>('POST', `/api/v1/alerts/${encodeURIComponent(id)}/${action}`, body),
  /** The CAP XML as a blob (the download needs the token, so a plain link cannot fetch it). */
  cap: async (id: string) => (await send('GET', `/api/v1/alerts/${encodeURIComponent(id)}/cap`)).blob(),
};

/** The message to show for any failure. */
export function messageOf(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}
