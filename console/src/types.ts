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

export interface FeatureCollection {
  type: 'FeatureCollection';
  features: Feature[];
}

export const LAYER_NAMES = ['regions', 'grids', 'roads', 'zones', 'devices'] as const;
export type LayerName = (typeof LAYER_NAMES)[number];
