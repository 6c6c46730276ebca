// The node's HTTP API: bearer token from sessionStorage, JSON errors turned into ApiError
// with the server's message, and a 401 anywhere sending the user back to the login form.

import type {
  ActionName,
  Alert,
  AlertPage,
  CityInfo,
  EventRecord,
  FeatureCollection,
  ExportResult,
  Incident,
  Job,
  LayerName,
  Me,
  Recommendations,
  RuleItem,
  SearchApproval,
  AuditEntry,
  AuditHead,
  Grant,
  LegalHold,
  Transparency,
  SearchPage,
  SearchQuery,
  Stats,
  TrialResult,
  ZoneFeature,
} from './types';

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

interface SendOptions {
  /** Sent as JSON. */
  json?: unknown;
  /** Sent as is, with `type` as its Content-Type (YAML text, an image). */
  raw?: Blob | string;
  type?: string;
  authenticated?: boolean;
}

async function send(method: string, path: string, options: SendOptions = {}): Promise<Response> {
  const { json: value, raw, type, authenticated = true } = options;
  const headers: Record<string, string> = {};
  const bearer = token();
  if (authenticated && bearer) headers.Authorization = `Bearer ${bearer}`;
  let body: BodyInit | undefined;
  if (raw !== undefined) {
    body = raw;
    headers['Content-Type'] = type ?? 'application/octet-stream';
  } else if (value !== undefined) {
    body = JSON.stringify(value);
    headers['Content-Type'] = 'application/json';
  }
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body });
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
  return (await (await send(method, path, { json: body })).json()) as T;
}

export async function login(username: string, password: string): Promise<{ token: string; role: string; expires_at: string }> {
  const response = await send('POST', '/api/v1/login', { json: { username, password }, authenticated: false });
  return (await response.json()) as { token: string; role: string; expires_at: string };
}

/** Query of `GET /api/v1/alerts`; lists become comma-separated values. */
export interface AlertQuery {
  status?: readonly string[];
  severity?: readonly string[];
  category?: readonly string[];
  region?: string;
  since?: string;
  until?: string;
  class?: string;
  limit?: number;
  cursor?: string | null;
}

const id = encodeURIComponent;

export const api = {
  me: () => json<Me>('GET', '/api/v1/me'),
  city: () => json<CityInfo>('GET', '/api/v1/city'),
  layer: (name: LayerName) => json<FeatureCollection>('GET', `/api/v1/city/layers/${name}`),
  deviceHealth: () => json<{ offline: string[]; fault: string[]; truncated: boolean }>('GET', '/api/v1/city/devices/health'),
  alerts: (query: AlertQuery) => {
    const params = new URLSearchParams();
    for (const key of ['status', 'severity', 'category'] as const) {
      const values = query[key];
      if (values?.length) params.set(key, values.join(','));
    }
    for (const key of ['region', 'since', 'until', 'class', 'cursor'] as const) {
      const value = query[key];
      if (value) params.set(key, value);
    }
    if (query.limit) params.set('limit', String(query.limit));
    return json<AlertPage>('GET', `/api/v1/alerts?${params}`);
  },
  alert: (alertId: string) => json<Alert>('GET', `/api/v1/alerts/${id(alertId)}`),
  incident: (incidentId: string) => json<Incident>('GET', `/api/v1/incidents/${id(incidentId)}`),
  recommendations: (alertId: string, k = 5) => json<Recommendations>('GET', `/api/v1/alerts/${id(alertId)}/recommendations?k=${k}`),
  act: (alertId: string, action: ActionName, body: Record<string, unknown> = {}) =>
    json<Alert>('POST', `/api/v1/alerts/${id(alertId)}/${action}`, body),
  /** The CAP XML as a blob (the download needs the token, so a plain link cannot fetch it). */
  cap: async (alertId: string) => (await send('GET', `/api/v1/alerts/${id(alertId)}/cap`)).blob(),
  /** A file the node serves only with the caller's token (a photo, an export), as a blob. */
  blob: async (url: string) => (await send('GET', url)).blob(),
  /** Attaches a photo (the raw image) to an alert. */
  photo: async (alertId: string, image: Blob) =>
    (await (await send('POST', `/api/v1/alerts/${id(alertId)}/photos`, { raw: image, type: image.type })).json()) as { id: string; url: string },
  /** The alert's evidence events the node still stores (missing ones are left out). */
  evidence: (alertId: string) => json<{ items: EventRecord[] }>('GET', `/api/v1/alerts/${id(alertId)}/evidence`),
  event: (eventId: string) => json<EventRecord>('GET', `/api/v1/events/${id(eventId)}`),

  rules: () => json<{ items: RuleItem[]; next: string | null }>('GET', '/api/v1/rules'),
  /** Creates (version 0) or replaces (the version last read) a rule from its YAML text. */
  putRule: async (ruleId: string, version: number, yaml: string) =>
    (await (await send('PUT', `/api/v1/rules/${id(ruleId)}?version=${version}`, { raw: yaml, type: 'application/yaml' })).json()) as RuleItem,
  trial: async (yaml: string) =>
    ((await (await send('POST', '/api/v1/rules/trial', { raw: yaml, type: 'application/yaml' })).json()) as { job: Job<TrialResult> }).job,
  job: <R>(jobId: string) => json<Job<R>>('GET', `/api/v1/jobs/${id(jobId)}`),
  /** Every event a search matches, as a CSV file written by a job on the node. */
  searchExport: async (query: Omit<SearchQuery, 'limit' | 'cursor'>) =>
    (await (await send('POST', '/api/v1/search/export', { json: query })).json()) as { job: Job<ExportResult> } | { approval: SearchApproval },


  putZone: (zoneId: string, zone: ZoneFeature) => json<ZoneFeature>('PUT', `/api/v1/city/zones/${id(zoneId)}`, zone),
  deleteZone: async (zoneId: string) => {
    await send('DELETE', `/api/v1/city/zones/${id(zoneId)}`);
  },
  positions: () => json<GeoJSON.FeatureCollection>('GET', '/api/v1/city/positions'),
  heat: (of: 'events' | 'alerts', since: string, until: string, res: number) =>
    json<GeoJSON.FeatureCollection>('GET', `/api/v1/city/heat?${new URLSearchParams({ of, since, until, res: String(res) })}`),

  /** A page of results, or — beyond the caller's limits — the approval request it became. */
  search: (query: SearchQuery) => json<SearchPage | { approval: SearchApproval }>('POST', '/api/v1/search', query),
  approvals: (status?: SearchApproval['status']) =>
    json<{ items: SearchApproval[]; next: string | null }>('GET', `/api/v1/search/approvals${status ? `?status=${status}` : ''}`),
  decideApproval: (approvalId: string, decision: 'approve' | 'reject', reason: string) =>
    json<SearchApproval>('POST', `/api/v1/search/approvals/${id(approvalId)}/${decision}`, { reason }),
  /** The same search as CSV text, as a blob to download. */
  searchCsv: async (query: SearchQuery) => (await send('POST', '/api/v1/search?format=csv', { json: query })).blob(),
  audit: (q: { actor?: string; action?: string; cursor?: string | null; limit: number }) => {
    const params = new URLSearchParams({ limit: String(q.limit) });
    if (q.actor) params.set('actor', q.actor);
    if (q.action) params.set('action', q.action);
    if (q.cursor) params.set('cursor', q.cursor);
    return json<{ items: AuditEntry[]; next: string | null }>('GET', `/api/v1/audit?${params}`);
  },
  auditHead: () => json<AuditHead>('GET', '/api/v1/audit/head'),
  grants: () => json<{ items: Grant[] }>('GET', '/api/v1/grants'),
  grant: (g: { owner: string; grantee: string; classes: string[]; purposes: string[]; until: string; reason: string }) => json<Grant>('POST', '/api/v1/grants', g),
  revokeGrant: (grantId: string) => json<Grant>('DELETE', `/api/v1/grants/${id(grantId)}`),
  grantAccesses: (grantId: string) => json<{ items: AuditEntry[] }>('GET', `/api/v1/grants/${id(grantId)}/accesses`),
  holds: () => json<{ items: LegalHold[] }>('GET', '/api/v1/holds'),
  placeHold: (hold: { case_number: string; reason: string; kinds: string[]; since: string; until: string }) => json<LegalHold>('POST', '/api/v1/holds', hold),
  releaseHold: (holdId: string) => json<LegalHold>('DELETE', `/api/v1/holds/${id(holdId)}`),
  transparency: () => json<Transparency>('GET', '/api/v1/audit/transparency'),
  stats: (since: string, until: string, bucket: 'hour' | 'day') =>
    json<Stats>('GET', `/api/v1/stats?${new URLSearchParams({ since, until, bucket })}`),
};

/**
 * Whether the node lacks the endpoint (an older node): its fallback's 404 ("no such path"),
 * a 404 that is not the node's JSON at all, or 405 where the path matches another route.
 * Other 404s mean the thing asked for does not exist, and their message says which.
 */
export function unavailable(error: unknown): boolean {
  if (!(error instanceof ApiError)) return false;
  if (error.status === 405 || error.status === 501) return true;
  return error.status === 404 && (error.code === 'http_404' || error.message.startsWith('no such path'));
}

/** Saves a blob under `name` through a temporary link. */
export function download(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** The message to show for any failure. */
export function messageOf(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}
