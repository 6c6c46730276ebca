import { describe, expect, it } from 'vitest';

import { grantInForce, isoOf, listOf } from '../../src/sharing';
import type { Grant } from '../../src/types';

const grant = (over: Partial<Grant> = {}): Grant => ({
  id: 'g1',
  owner: 'unit-c1',
  grantee: 'unit-s2',
  classes: ['plate_read'],
  purposes: ['criminal_investigation'],
  until: '2026-12-31T00:00:00Z',
  reason: 'joint operation',
  created_by: 'admin',
  created_at: '2026-12-01T00:00:00Z',
  ...over,
});

describe('grantInForce', () => {
  // Grant::in_force in crates/server/src/grants.rs: not revoked and before `until`.
  const now = new Date('2026-12-04T00:00:00Z');
  it('holds until its end, exclusive, unless revoked', () => {
    expect(grantInForce(grant(), now)).toBe(true);
    expect(grantInForce(grant({ until: '2026-12-04T00:00:00Z' }), now)).toBe(false);
    expect(grantInForce(grant({ revoked_at: '2026-12-02T00:00:00Z' }), now)).toBe(false);
  });
});

describe('listOf', () => {
  it('splits on commas and spaces and drops empty items', () => {
    expect(listOf('plate_read, vehicle_gps  sensor,')).toEqual(['plate_read', 'vehicle_gps', 'sensor']);
    expect(listOf('  ')).toEqual([]);
  });
});

describe('isoOf', () => {
  it('turns a local date-time into RFC 3339, and an empty or invalid one into "" (the node then names the field)', () => {
    const iso = isoOf('2026-01-01T00:00');
    expect(new Date(iso).getTime()).toBe(new Date('2026-01-01T00:00').getTime());
    expect(iso.endsWith('Z')).toBe(true);
    expect(isoOf('')).toBe('');
    expect(isoOf('not a time')).toBe('');
  });
});
