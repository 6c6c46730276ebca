import { describe, expect, it } from 'vitest';

import type { Session } from '../../src/context';
import { canSearch, limitText, localInput, mayDecide, searchQuery, type SearchForm } from '../../src/search';
import type { Me, SearchApproval } from '../../src/types';

const form = (over: Partial<SearchForm>): SearchForm => ({ plate: '', kind: '', since: '', until: '', area: null, areaUnfinished: false, ...over });

describe('searchQuery', () => {
  it('sends only the page size for an empty form', () => {
    expect(searchQuery(form({}))).toEqual({ limit: 500 });
  });

  // The node turns `*` and `?` into its own pattern: the console must not touch them.
  it('sends the plate pattern as typed, trimmed, wildcards and case kept', () => {
    expect(searchQuery(form({ plate: '  京A*3?5 ' }))).toEqual({ limit: 500, plate: '京A*3?5' });
    expect(searchQuery(form({ plate: 'ab%_c' }))).toMatchObject({ plate: 'ab%_c' });
    expect(searchQuery(form({ plate: '   ', kind: ' plate_read ' }))).toEqual({ limit: 500, kind: 'plate_read' });
  });

  it('sends the times as UTC instants of the local times typed', () => {
    const q = searchQuery(form({ since: '2030-03-01T08:30', until: '2030-03-01T09:00' }));
    expect(q).toEqual({
      limit: 500,
      since: new Date(2030, 2, 1, 8, 30).toISOString(),
      until: new Date(2030, 2, 1, 9, 0).toISOString(),
    });
    expect(searchQuery(form({ until: '2030-03-01T09:00' }))).not.toHaveProperty('since');
  });

  it('refuses a window that ends before it starts, or not after', () => {
    expect(searchQuery(form({ since: '2030-03-01T09:00', until: '2030-03-01T08:00' }))).toEqual({ error: 'search_bad_range' });
    expect(searchQuery(form({ since: '2030-03-01T09:00', until: '2030-03-01T09:00' }))).toEqual({ error: 'search_bad_range' });
  });

  it('closes the drawn area into a GeoJSON polygon', () => {
    const q = searchQuery(form({ area: [[116.1, 39.9], [116.2, 39.9], [116.2, 40]] }));
    expect(q).toEqual({
      limit: 500,
      area: { type: 'Polygon', coordinates: [[[116.1, 39.9], [116.2, 39.9], [116.2, 40], [116.1, 39.9]]] },
    });
  });

  it('waits for an area still being drawn', () => {
    expect(searchQuery(form({ plate: 'A1', area: [[1, 1], [2, 2], [3, 1]], areaUnfinished: true }))).toEqual({ error: 'search_finish_area' });
  });

  it('takes the page size it is given', () => {
    expect(searchQuery(form({}), 50)).toEqual({ limit: 50 });
  });
});

describe('localInput', () => {
  it('writes a time as a datetime-local value that reads back to the same minute', () => {
    const time = new Date(2030, 0, 5, 7, 4, 33, 250).getTime();
    expect(localInput(time)).toBe('2030-01-05T07:04');
    expect(Date.parse(localInput(time))).toBe(new Date(2030, 0, 5, 7, 4).getTime());
  });
});

describe('canSearch', () => {
  // SEARCH_ROLES in crates/server/src/search.rs.
  it('lets administrators, analysts and dispatchers search, and no one else', () => {
    const as = (role: string) => ({ me: { username: 'u', role, jurisdiction: 'city' } }) as Session;
    expect(['admin', 'analyst', 'dispatcher', 'responder', 'auditor', 'reader'].filter((r) => canSearch(as(r)))).toEqual(['admin', 'analyst', 'dispatcher']);
  });
});

describe('the purpose of a search', () => {
  it('sends the case number and legal basis together, trimmed', () => {
    expect(searchQuery(form({ plate: '粤B1*', caseNumber: ' 2026-117 ', legalBasis: 'court_order' }))).toEqual({
      limit: 500,
      plate: '粤B1*',
      purpose: { case_number: '2026-117', legal_basis: 'court_order' },
    });
  });

  it('refuses one without the other rather than sending a half purpose', () => {
    expect(searchQuery(form({ caseNumber: '2026-117' }))).toEqual({ error: 'search_purpose_incomplete' });
    expect(searchQuery(form({ legalBasis: 'court_order' }))).toEqual({ error: 'search_purpose_incomplete' });
  });

  it('asks for OCR confusions only with a plate, and sends colour and type as typed', () => {
    expect(searchQuery(form({ plate: '粤B8O1', ocr: true }))).toMatchObject({ ocr_confusions: true });
    expect(searchQuery(form({ ocr: true }))).not.toHaveProperty('ocr_confusions');
    expect(searchQuery(form({ color: ' White ', vehicleType: 'sedan' }))).toEqual({ limit: 500, color: 'White', vehicle_type: 'sedan' });
  });
});

describe('search approvals', () => {
  const me = (over: Partial<Me>): Me => ({ username: 'sup', role: 'analyst', jurisdiction: 'city', ...over });
  const request = (over: Partial<SearchApproval>): SearchApproval => ({
    id: 'sa1',
    requested_by: 'duty',
    requested_at: '2026-12-04T08:00:00Z',
    request: { plate: '粤B12345' },
    reasons: ['it spans 3d'],
    status: 'pending',
    ...over,
  });

  it('lets a supervisor decide a pending request of someone else only', () => {
    expect(mayDecide(me({ supervisor: true }), request({}))).toBe(true);
    expect(mayDecide(me({ supervisor: false }), request({}))).toBe(false);
    expect(mayDecide(me({ supervisor: true }), request({ requested_by: 'sup' }))).toBe(false);
    expect(mayDecide(me({ supervisor: true }), request({ status: 'approved' }))).toBe(false);
  });

  it("states the role's limits, or that there are none", () => {
    expect(limitText(me({ search: { legal_bases: [], limit: { max_span: '1d', max_area_km2: 25 } } }))).toContain('1d');
    expect(limitText(me({ search: { legal_bases: [], limit: { max_span: '1d', max_area_km2: 25 } } }))).toContain('25');
    expect(limitText(me({ search: { legal_bases: [], limit: null } }))).toBe(limitText(me({})));
  });
});
