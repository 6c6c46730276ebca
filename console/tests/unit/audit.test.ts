import { describe, expect, it } from 'vitest';

import { auditSummary, canAudit } from '../../src/audit';
import type { Session } from '../../src/context';
import type { AuditEntry } from '../../src/types';

const entry = (action: string, detail: Record<string, unknown>): AuditEntry => ({
  seq: 1,
  at: '2026-12-04T08:00:00Z',
  actor: 'analyst',
  action,
  target: 'events',
  detail,
  prev_hash: '0'.repeat(64),
  hash: 'f'.repeat(64),
});

describe('canAudit', () => {
  // AUDIT_ROLES in crates/server/src/transparency.rs.
  it('shows the audit page to auditors and administrators only', () => {
    const as = (role: string) => ({ me: { username: 'u', role, jurisdiction: 'city' } }) as Session;
    expect(['admin', 'analyst', 'dispatcher', 'responder', 'auditor', 'reader'].filter((r) => canAudit(as(r)))).toEqual(['admin', 'auditor']);
  });
});

describe('auditSummary', () => {
  it('names the case, the legal basis in words, and the result count of a search', () => {
    const line = auditSummary(entry('search', { purpose: { case_number: '2026-117', legal_basis: 'court_order' }, results: 1234, approval: 'sa1' }));
    expect(line).toContain('2026-117');
    expect(line).toContain('Court order');
    expect(line).toContain('1,234');
    expect(line).toContain('sa1');
  });

  it("gives a decision's reason and is empty for an entry with nothing to say", () => {
    expect(auditSummary(entry('search.reject', { reason: 'no case file' }))).toBe('no case file');
    expect(auditSummary(entry('alert.ack', {}))).toBe('');
    expect(auditSummary({ ...entry('x', {}), detail: null })).toBe('');
  });
});
