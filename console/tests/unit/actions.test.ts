import { describe, expect, it } from 'vitest';

import { answersFor, availableActions } from '../../src/actions';
import { STATUSES, type ActionName, type Me, type Status, type Unit } from '../../src/types';
import { alert, handling } from './fixtures';

// The city: a district above two stations; `other` is elsewhere.
const units = new Map<string, Unit>(
  [
    { id: 'district', name: 'District', kind: 'command' },
    { id: 'station-1', name: 'Station 1', kind: 'fire', parent_unit: 'district' },
    { id: 'station-2', name: 'Station 2', kind: 'fire', parent_unit: 'district' },
    { id: 'other', name: 'Other', kind: 'police' },
  ].map((u) => [u.id, u]),
);
const me = (role: string, unit: string | null = null): Me => ({ username: 'u', role, unit, jurisdiction: 'city' });

// Case::apply in crates/alerts/src/lifecycle.rs: which status each action may start from.
const awaits = (s: Status) => ['new', 'assigned', 'escalated', 'transferred'].includes(s);
const open = (s: Status) => !['resolved', 'closed', 'suppressed'].includes(s);
const SERVER: Record<Exclude<ActionName, 'claim'>, (s: Status) => boolean> = {
  ack: awaits,
  dispatch: (s) => awaits(s) || s === 'acknowledged' || s === 'dispatched',
  arrive: (s) => awaits(s) || s === 'acknowledged' || s === 'dispatched',
  resolve: open,
  transfer: open,
  close: (s) => s !== 'closed',
  reopen: (s) => s === 'resolved' || s === 'suppressed',
};

describe('availableActions', () => {
  it('offers an administrator what the server accepts in each status', () => {
    for (const status of STATUSES) {
      const offered = availableActions(alert({ handling: handling(status, { owner: 'station-1' }) }), me('admin'), units);
      const accepted = (Object.keys(SERVER) as (keyof typeof SERVER)[]).filter((a) => SERVER[a](status));
      expect(new Set(offered), status).toEqual(new Set(accepted));
    }
  });

  it('offers a responder only claiming, acknowledging, arriving and resolving', () => {
    const a = alert({ handling: handling('assigned', { owner: 'station-1' }) });
    expect(new Set(availableActions(a, me('responder', 'station-1'), units))).toEqual(new Set(['ack', 'arrive', 'resolve']));
    const dispatched = alert({ handling: handling('dispatched', { owner: 'station-1' }) });
    expect(new Set(availableActions(dispatched, me('responder', 'station-1'), units))).toEqual(new Set(['arrive', 'resolve']));
  });

  it('offers nothing to roles that may not act', () => {
    const a = alert({ handling: handling('new', { owner: 'station-1' }) });
    for (const role of ['analyst', 'auditor', 'reader', 'someone']) expect(availableActions(a, me(role), units), role).toEqual([]);
  });

  it('offers nothing to a unit the alert is not with', () => {
    const a = alert({ handling: handling('new', { owner: 'station-1' }) });
    expect(availableActions(a, me('dispatcher', 'station-2'), units)).toEqual([]);
    expect(availableActions(a, me('dispatcher', 'other'), units)).toEqual([]);
    expect(availableActions(a, me('dispatcher', 'district'), units)).toContain('ack');
  });

  it('offers a claim to a candidate unit of an unclaimed alert still awaiting acknowledgement', () => {
    const boundary = { owner: 'station-1', routing: { owner: 'station-1', candidates: ['station-1', 'station-2'] } };
    const a = alert({ handling: handling('new', boundary) });
    expect(availableActions(a, me('responder', 'station-2'), units)).toContain('claim');
    expect(availableActions(a, me('admin'), units)).not.toContain('claim');
    const claimed = alert({ handling: handling('assigned', { ...boundary, claimed: { unit: 'station-1', by: 'x', at: '2030-01-01T00:00:00Z' } }) });
    expect(availableActions(claimed, me('responder', 'station-2'), units)).not.toContain('claim');
    const acked = alert({ handling: handling('acknowledged', boundary) });
    expect(availableActions(acked, me('responder', 'station-2'), units)).not.toContain('claim');
    const single = alert({ handling: handling('new', { owner: 'station-1' }) });
    expect(availableActions(single, me('responder', 'station-1'), units)).not.toContain('claim');
  });
});

describe('answersFor', () => {
  it('is the owner and every unit above it', () => {
    const a = alert({ handling: handling('new', { owner: 'station-1' }) });
    expect(answersFor(a, 'station-1', units)).toBe(true);
    expect(answersFor(a, 'district', units)).toBe(true);
    expect(answersFor(a, 'station-2', units)).toBe(false);
  });

  it('is also a candidate unit and a unit the alert was escalated to', () => {
    const a = alert({
      handling: handling('escalated', {
        owner: 'station-1',
        routing: { candidates: ['station-2'] },
        escalations: [{ unit: 'other', at: '2030-01-01T00:00:00Z', reason: 'ack deadline missed' }],
      }),
    });
    expect(answersFor(a, 'station-2', units)).toBe(true);
    expect(answersFor(a, 'other', units)).toBe(true);
  });

  it('is no one before the alert has an owner', () => {
    expect(answersFor(alert({ handling: handling('new', { owner: null }) }), 'district', units)).toBe(false);
    expect(answersFor(alert(), 'district', units)).toBe(false);
  });

  it('stops on a loop in the unit tree', () => {
    const loop = new Map<string, Unit>([
      ['a', { id: 'a', name: 'A', kind: 'x', parent_unit: 'b' }],
      ['b', { id: 'b', name: 'B', kind: 'x', parent_unit: 'a' }],
    ]);
    expect(answersFor(alert({ handling: handling('new', { owner: 'a' }) }), 'c', loop)).toBe(false);
  });
});
