import { describe, expect, it } from 'vitest';

import type { Session } from '../../src/context';
import { canSearch, localInput, searchQuery, type SearchForm } from '../../src/search';

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
