// Which actions the signed-in user can take on an alert now: the server's lifecycle
// (crates/alerts/src/lifecycle.rs) and role rules, mirrored so that the console offers
// only buttons that can work. The server still decides; its refusal is shown as is.

import { awaitsAck, statusOf } from './alerts';
import type { ActionName, Alert, Me, Unit } from './types';

const RESPONDER_ACTIONS: ActionName[] = ['claim', 'ack', 'arrive', 'resolve'];

/** Whether `unit` may act on the alert: the owner or a unit above it, a candidate, a unit escalated to. */
export function answersFor(alert: Alert, unit: string, units: Map<string, Unit>): boolean {
  const handling = alert.handling;
  if (!handling?.owner) return false;
  let cursor: string | null | undefined = handling.owner;
  const seen = new Set<string>();
  while (cursor && !seen.has(cursor)) {
    if (cursor === unit) return true;
    seen.add(cursor);
    cursor = units.get(cursor)?.parent_unit;
  }
  return !!handling.routing.candidates?.includes(unit) || !!handling.escalations?.some((e) => e.unit === unit);
}

export function availableActions(alert: Alert, me: Me, units: Map<string, Unit>): ActionName[] {
  const role = me.role;
  if (role !== 'admin' && role !== 'dispatcher' && role !== 'responder') return [];
  if (me.unit && !answersFor(alert, me.unit, units)) return [];
  const status = statusOf(alert);
  const handling = alert.handling;
  const actions: ActionName[] = [];
  const waiting = awaitsAck(status);
  if (status === 'suppressed') {
    actions.push('reopen', 'close');
  } else {
    const candidates = handling?.routing.candidates ?? [];
    if (waiting && candidates.length > 0 && !handling?.claimed && me.unit && candidates.includes(me.unit)) actions.push('claim');
    if (waiting) actions.push('ack');
    if (waiting || status === 'acknowledged' || status === 'dispatched') actions.push('dispatch', 'arrive');
    if (status !== 'resolved' && status !== 'closed') actions.push('resolve', 'transfer');
    if (status === 'resolved') actions.push('reopen');
    if (status !== 'closed') actions.push('close');
  }
  return role === 'responder' ? actions.filter((a) => RESPONDER_ACTIONS.includes(a)) : actions;
}
