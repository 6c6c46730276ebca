// Shapes of the node's API (crates/server/src/openapi.json), as far as the console reads them.

export type Status =
  | 'new'
  | 'assigned'
  | 'acknowledged'
  | 'dispatched'
  | 'on_scene'
  | 'resolved'
  | 'closed'
  | 'escalated'
  | 'transferred'
  | 'suppressed';

export const STATUSES: readonly Status[] = [
  'new',
  'assigned',
  'escalated',
  'transferred',
  'acknowledged',
  'dispatched',
  'on_scene',
  'resolved',
  'closed',
  'suppressed',
];

export type Severity = 'critical' | 'high' | 'medium' | 'low';
export const SEVERITIES: readonly Severity[] = ['critical', 'high', 'medium', 'low'];

export type ActionName = 'claim' | 'ack' | 'dispatch' | 'arrive' | 'resolve' | 'close' | 'reopen' | 'transfer';

export interface Step {
  at: string;
  actor: string;
  action: string;
  from: Status;
  to: Status;
  unit?: string;
  note?: string;
}

export interface Handling {
  status: Status;
  class?: 'incident' | 'maintenance';
  owner?: string | null;
  routing: { owner?: string | null; candidates?: string[]; table_version?: number; reason?: string; grid?: string };
  claimed?: { unit: string; by: string; at: string };
  escalations?: { unit: string; at: string; reason: string }[];
  responders?: string[];
  disposition?: string;
  suppressed_by?: string;
  deadlines: { ack?: string; arrive?: string; progress?: string };
  ack_due?: string;
  arrive_due?: string;
  progress_due?: string;
  timeline: Step[];
}

export interface Alert {
  id: string;
  rule?: string;
  key?: string;
  time: string;
  fired_at?: string;
  severity?: string;
  category?: string;
  title?: string;
  lon?: number;
  lat?: number;
  grid?: string;
  zone?: string;
  count?: number;
  status: Status;
  cleared_at?: string;
  evidence?: string[];
  /** Photos responders attached (`POST /api/v1/alerts/{id}/photos`). */
  photos?: AlertPhoto[];
  detail?: Record<string, unknown>;
  updated_at?: string;
  handling?: Handling;
  incident?: string;
}

export interface AlertPage {
  items: Alert[];
  next: string | null;
}

export interface Me {
  username: string;
  role: string;
  unit?: string | null;
  unit_name?: string | null;
  unit_kind?: string | null;
  jurisdiction: 'city' | string[];
  /** Approves searches beyond a role's limits. */
  supervisor?: boolean;
  /** The legal bases a search may name, and how far this role searches without approval. */
  search?: { legal_bases: string[]; limit?: { max_span?: string; max_area_km2?: number } | null };
}

export interface Unit {
  id: string;
  name: string;
  kind: string;
  region?: string | null;
  parent_unit?: string | null;
}

export interface CityInfo {
  bbox: [number, number, number, number];
  units: Unit[];
  counts: Record<string, number>;
  /** Absent or null: the city's own layers only. */
  basemap?: Basemap | null;
}

export interface Recommendation {
  responder: string;
  unit?: string;
  name?: string;
  distance_m: number;
  eta_s: number;
  by: 'road' | 'straight_line';
}

export interface Recommendations {
  alert: string;
  by?: 'road' | 'straight_line';
  items: Recommendation[];
}

export interface Incident {
  id: string;
  alerts: Alert[];
  count: number;
  open: number;
  categories: string[];
  first_time: string;
  last_time: string;
}

export interface Feature {
  type: 'Feature';
  id: string;
  geometry: { type: string; coordinates: unknown };
  properties: Record<string, unknown>;
}

/** A photo attached to an alert; `url` answers only with the caller's token. */
export interface AlertPhoto {
  id: string;
  url: string;
  content_type: string;
  bytes: number;
  by: string;
  at: string;
}

export interface FeatureCollection {
  type: 'FeatureCollection';
  features: Feature[];
}

export const LAYER_NAMES = ['regions', 'grids', 'roads', 'zones', 'devices'] as const;
export type LayerName = (typeof LAYER_NAMES)[number];

/** How the city's own layers sit on a base map, when the node configures one. */
export type Basemap = { style_url: string } | { xyz: string; attribution?: string };

/** One stored event (`GET /api/v1/events/{id}`, search results). */
export interface EventRecord {
  id: string;
  time: string;
  kind: string;
  source: string;
  lon?: number | null;
  lat?: number | null;
  grid?: string | null;
  attrs?: Record<string, unknown>;
}

export interface RuleStats {
  matched?: number;
  raised?: number;
  repeated?: number;
  cleared?: number;
  eval_errors?: number;
  out_of_order?: number;
  keys?: number;
}

/** A stored rule as `GET /api/v1/rules` lists it. */
export interface RuleItem {
  id: string;
  rule: Record<string, unknown> | string;
  yaml?: string;
  enabled: boolean;
  version: number;
  updated_at?: string;
  updated_by?: string;
  stats?: RuleStats;
  alerts?: { open: number; last_24h: number };
}

export interface Job<R = unknown> {
  id: string;
  kind: string;
  state: 'running' | 'done' | 'failed';
  progress?: { done: number; total: number };
  result?: R;
  error?: string;
}

export interface TrialItem {
  id: string;
  time: string;
  lon?: number | null;
  lat?: number | null;
  grid?: string | null;
  severity?: string;
  title?: string;
}

export interface TrialResult {
  events: number;
  alerts: number;
  /** Alerts per grid, most first; `grid` is null for alerts without a place. */
  by_grid: { grid: string | null; alerts: number }[];
  items: TrialItem[];
}

/** Why a search of personal data is made: recorded with it in the audit log. */
export interface Purpose {
  case_number: string;
  legal_basis: string;
}

export interface SearchQuery {
  plate?: string;
  /** Plate characters readers confuse (0/D/Q/O, 8/B, 1/I, 5/S, 2/Z) count as equal. */
  ocr_confusions?: boolean;
  color?: string;
  vehicle_type?: string;
  kind?: string;
  since?: string;
  until?: string;
  area?: GeoJSON.Polygon;
  purpose?: Purpose;
  /** Runs this approved request instead (with only `limit` and `cursor`). */
  approval?: string;
  limit: number;
  cursor?: string;
}

/** A search beyond the caller's limits, waiting for (or given) a supervisor's decision. */
export interface SearchApproval {
  id: string;
  requested_by: string;
  unit?: string | null;
  requested_at: string;
  request: Omit<SearchQuery, 'limit' | 'cursor'>;
  reasons: string[];
  status: 'pending' | 'approved' | 'rejected';
  decided_by?: string | null;
  decided_at?: string | null;
  decision_note?: string | null;
}

/** The result of a finished search export. */
export interface ExportResult {
  rows: number;
  truncated: boolean;
  url: string;
}

export interface SearchPage {
  items: EventRecord[];
  next: string | null;
  /** Without a purpose, personal data (plate reads, private vehicles) was not searched. */
  personal_data_left_out?: boolean;
}

export interface Stats {
  /** True when the node stopped reading alerts at its bound: the figures cover the first part. */
  truncated?: boolean;
  alerts?: number;
  alerts_over_time: { bucket: string; category: string; count: number }[];
  alerts_by_region: { region: string; name?: string; count: number }[];
  deadline_compliance: { unit: string; name?: string; ack_total: number; ack_met: number; arrive_total: number; arrive_met: number }[];
  false_alarm_rate: { device_type: string; closed: number; false_alarms: number }[];
  devices: { total: number; offline: number; by_type: { device_type: string; total: number; offline: number }[] };
}

/** A zone as `PUT /api/v1/city/zones/{id}` takes it. */
export interface ZoneFeature {
  type: 'Feature';
  id?: string;
  geometry: GeoJSON.Polygon | GeoJSON.LineString;
  properties: { name: string; kind: string; width_m?: number };
}

/** An entry of the audit log. */
export interface AuditEntry {
  seq: number;
  at: string;
  actor: string;
  action: string;
  target: string;
  detail: Record<string, unknown> | null;
  prev_hash: string;
  hash: string;
}

/** `GET /api/v1/audit/head`: whether the chain holds, and its head. */
export interface AuditHead {
  intact: boolean;
  entries: number;
  head: { seq: number; hash: string; at: string } | null;
  broken: { seq: number; reason: string } | null;
}

/** `GET /api/v1/audit/transparency`: aggregates, no plates or case numbers. */
export interface Transparency {
  since: string;
  until: string;
  searches: { month: string; legal_basis: string; unit: string | null; count: number; results: number }[];
  personal_searches: { month: string; legal_basis: string; unit: string | null; count: number; results: number }[];
  other_reads_and_decisions: { month: string; action: string; count: number }[];
  hotlists: { name: string; active: number; inactive: number }[];
  retention: { month: string; kind: string; rule: string; partitions: number; rows: number }[];
}

/** `GET /api/v1/grants`: a unit's data shared with another unit. */
export interface Grant {
  id: string;
  owner: string;
  grantee: string;
  classes: string[];
  purposes: string[];
  until: string;
  reason: string;
  created_by: string;
  created_at: string;
  revoked_at?: string | null;
}

/** `GET /api/v1/holds`: a case's data kept past its retention. */
export interface LegalHold {
  id: string;
  case_number: string;
  reason: string;
  kinds: string[];
  since: string;
  until: string;
  created_by: string;
  created_at: string;
  released_at?: string | null;
  released_by?: string | null;
}
